"""Where tfrig's Compute Engine work happens and as whom: the project, zone and region settings
(with gcloud's configuration), the SSH key and the VM user, and the boot images."""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invoke.exceptions import Exit

from tfrig.gce import plan as gceplan
from tfrig.hosts import targets

IMAGES = {
    "ubuntu-24.04": ("ubuntu-os-cloud", "ubuntu-2404-lts-amd64"),
    "ubuntu-22.04": ("ubuntu-os-cloud", "ubuntu-2204-lts"),
    "debian-12": ("debian-cloud", "debian-12"),
}


DLVM_PROJECT = "deeplearning-platform-release"
# Ubuntu's accelerator images, with NVIDIA's R580 driver on the image: one family per CPU
# architecture (Google's "accelerator OS images" table, AI Hypercomputer docs, updated 2026-04-06:
# made for A4, A3 Ultra, A3 Mega and A3 High 8-GPU on x86, A4X and A4X Max on Arm).
ACCELERATOR_PROJECT = "ubuntu-os-accelerator-images"
ACCELERATOR_FAMILIES = {
    "x86_64": "ubuntu-accelerator-2404-amd64-with-nvidia-580",
    "arm64": "ubuntu-accelerator-2404-arm64-with-nvidia-580",
}
# Images that come with a driver (the branch their family names), and how it came: the accelerator
# images' from Ubuntu's packages, the Deep Learning VM's from Google's installer at first boot
# (its install-nvidia-driver metadata).
PREINSTALLED_DRIVER = {"accelerator": ("580", "apt"), "dlvm": ("580", "run")}


def gcloud_config() -> dict[str, str]:
    """The active gcloud configuration's core/compute settings, read from its file (gcloud need not be installed)."""
    import configparser

    folder = Path(os.environ.get("CLOUDSDK_CONFIG") or Path.home() / ".config" / "gcloud")
    active = os.environ.get("CLOUDSDK_ACTIVE_CONFIG_NAME")
    if not active:
        try:
            active = (folder / "active_config").read_text().strip() or "default"
        except OSError:
            active = "default"
    parser = configparser.ConfigParser()
    parser.read(folder / "configurations" / f"config_{active}")
    found = {}
    for section, key in (("core", "project"), ("compute", "zone"), ("compute", "region"), ("core", "account")):
        if parser.has_option(section, key):
            found[key] = parser.get(section, key)
    return found


@dataclass
class Settings:
    project: str
    zone: str | None  # --zone: the one zone to use
    region: str | None  # --region: the one region to search
    first: str | None  # a configured zone or region (gcp.zone, gcp.region, gcloud's): tried first
    endpoint: str | None
    credentials: str | None
    retry_delay: float
    endpoints: dict[str, str | None] | None = None  # the other APIs' (tfrig.gce.cloud._OTHER_APIS)

    def cloud(self) -> Any:
        from tfrig.gce.cloud import Cloud

        return Cloud(
            self.project,
            self.endpoint,
            self.credentials,
            retry_delay=self.retry_delay,
            endpoints=self.endpoints,
        )


def settings(c: Any, project: str | None = None, zone: str | None = None, region: str | None = None) -> Settings:
    """Where to work. A --zone or --region given here pins the create there; a configured one
    (gcp.zone/gcp.region, CLOUDSDK_COMPUTE_ZONE/REGION, gcloud's compute/zone and compute/region)
    is only tried first, so failover to other zones still works."""
    gcp = c.config.gcp
    gcloud = gcloud_config()
    chosen_project = (
        project
        or gcp.project
        or os.environ.get("GOOGLE_CLOUD_PROJECT")
        or os.environ.get("CLOUDSDK_CORE_PROJECT")
        or gcloud.get("project")
    )
    if not chosen_project:
        raise Exit(
            "No Google Cloud project: pass --project, set gcp.project (invoke.yaml or INVOKE_GCP_PROJECT), "
            "GOOGLE_CLOUD_PROJECT, or run `gcloud config set project PROJECT_ID`."
        )
    # 6-30 lowercase letters, digits or hyphens, a letter first, no hyphen last; older projects may
    # be domain-scoped, example.com:my-project (cloud.google.com/resource-manager/docs/creating-managing-projects).
    if not re.fullmatch(r"(?:[a-z0-9.-]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9]", chosen_project):
        raise Exit(
            f"{chosen_project[:80]!r} is not a Google Cloud project ID (6-30 lowercase letters, digits and hyphens, "
            "a letter first); `gcloud projects list` shows yours."
        )
    if zone and region:
        raise Exit("Give --zone or --region, not both.")
    configured_zone = gcp.zone or os.environ.get("CLOUDSDK_COMPUTE_ZONE") or gcloud.get("zone") or None
    configured_region = gcp.region or os.environ.get("CLOUDSDK_COMPUTE_REGION") or gcloud.get("region") or None
    try:
        for where in (zone, configured_zone):
            if where:
                gceplan.region_of(where)
        for where in (region, configured_region):
            if where and not gceplan.REGION.match(where):
                raise gceplan.Invalid(f"'{where}' is not a region name such as us-central1.")
    except gceplan.Invalid as invalid:
        raise Exit(str(invalid)) from None
    return Settings(
        project=chosen_project,
        zone=zone or None,
        region=region or None,
        first=configured_zone or configured_region,
        endpoint=gcp.endpoint or None,
        credentials=gcp.credentials or None,
        retry_delay=float(gcp.retry_delay),
        endpoints={
            api: gcp.get(f"{api}_endpoint") or None for api in ("oslogin", "resourcemanager", "orgpolicy", "billing")
        },
    )


def account(cloud: Any) -> str | None:
    """The Google account tfrig acts as: the credentials' own, else gcloud's configured account."""
    return cloud.account() or gcloud_config().get("account")


def owner(cloud: Any) -> str:
    """The value of the owner label on the VMs this user creates: the account (`account`), else
    user@host here."""
    import socket

    return gceplan.label_value(account(cloud) or f"{local_user()}@{socket.gethostname()}")


def local_user() -> str:
    return targets.local_user()


def vm_user() -> str:
    """The user tfrig logs in as on its VMs: yours, except root, which Compute Engine's guest agent
    does not make from ssh-keys metadata (so the VM gets a `tfrig` user instead)."""
    user = re.sub(r"[^a-z0-9_-]", "", local_user().lower())[:32] or "tfrig"
    return "tfrig" if user == "root" else user


def ssh_key(c: Any, dry: bool) -> tuple[Path, str]:
    """The user's SSH key (tfrig.ssh_key or ~/.ssh/id_ed25519), made if there is none; (path, public key)."""
    path = Path(os.path.expanduser(c.config.tfrig.ssh_key or "~/.ssh/id_ed25519"))
    public = path.with_name(path.name + ".pub")
    if not public.exists():
        if dry:
            return path, "(a new key tfrig would make)"
        import subprocess

        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.exists():
            raise Exit(f"{path} exists without {public.name}; make the public key with `ssh-keygen -y -f {path}`.")
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{local_user()}@tfrig", "-f", str(path)], check=True
        )
        print(f"made an SSH key for the VMs: {path}", file=sys.stderr)
    return path, public.read_text().strip()


# What a fresh GCE image answers to tfrig's probes (for --dry over a VM not created yet).
FRESH_IMAGES = {
    "ubuntu-24.04": ("ubuntu 24.04", "6.8.0-1015-gcp", "3.12.3"),
    "ubuntu-22.04": ("ubuntu 22.04", "6.5.0-1025-gcp", "3.10.12"),
    "debian-12": ("debian 12", "6.1.0-27-cloud-amd64", "3.11.2"),
    "dlvm": ("ubuntu 24.04", "6.8.0-1015-gcp", "3.12.3"),
    "accelerator": ("ubuntu 24.04", "6.8.0-1015-gcp", "3.12.3"),
}


def fresh_image_facts(image: str, gpu: gceplan.GpuType, user: str) -> dict[str, tuple[int, str]]:
    os_name, kernel, python = FRESH_IMAGES.get(image, FRESH_IMAGES["ubuntu-24.04"])
    device = gceplan.PCI_DEVICE_IDS.get(gpu.name, "0x0000")
    driver: dict[str, tuple[int, str]] = {}
    if image in PREINSTALLED_DRIVER:
        from tfrig.knowledge.driverplan import driver_versions

        branch, came = PREINSTALLED_DRIVER[image]
        version = driver_versions()[branch]  # the branch's release tfrig knows: the image's may be newer
        driver = _driver_facts(version, gpu)
        if came == "apt":
            driver["packages"] = (0, f"nvidia-headless-{branch}-server-open ii \nnvidia-utils-{branch}-server ii ")
    return {
        "os": (0, os_name),
        "arch": (0, "x86_64"),
        "kernel": (0, kernel),
        "pci": (0, f"0000:00:04.0 0x10de {device} 0x030200"),
        "secure_boot": (0, "   6   0   0   0   0"),
        "headers": (0, "available"),
        "nouveau": (1, ""),
        "loaded": (1, ""),
        "userspace": (127, ""),
        "tools": (0, ""),
        "packages": (1, ""),
        "tf_env": (0, json.dumps({"system_python": python, "conda": None, "venv": None})),
        "groups": (0, user),
        **driver,
    }


def _driver_facts(version: str, gpu: gceplan.GpuType) -> dict[str, tuple[int, str]]:
    """A loaded driver's facts: the module, its user space, nvidia-smi's answer to tf.* (tfenv)."""
    return {
        "loaded": (0, version),
        "userspace": (0, version),
        "gpu": (0, f"{version}, {gpu.compute_capability or ''}"),
    }


def baked_image_facts(
    image: str, labels: dict[str, str], gpu: gceplan.GpuType, user: str
) -> dict[str, tuple[int, str]]:
    """What a VM from a gcp.bake image answers, read from the image's labels: `image`'s fresh
    facts with its driver loaded and TensorFlow in the venv (bake's labels don't say which env;
    the venv is tf.install's default)."""
    from tfrig.gce.bake import shown

    facts = fresh_image_facts(image, gpu, user)
    driver, tensorflow = shown(labels, "driver"), shown(labels, "tensorflow")
    if driver not in ("-", "unknown"):
        facts.update(_driver_facts(driver, gpu))
    if tensorflow not in ("-", "unknown"):
        envs = json.loads(facts["tf_env"][1])
        python = envs["system_python"]
        envs["venv"] = {
            "python_runs": True,
            "python_version": python,
            "pip": True,
            "packages": {"tensorflow": tensorflow},
        }
        facts["tf_env"] = (0, json.dumps(envs))
    return facts


def machine_image(image: str, machine: str | None) -> str:
    """The image `auto` (gcp.image's default) stands for on `machine`: Ubuntu's accelerator image
    on A3, A4 and A4X, the machines Google makes it for (its "accelerator OS images" table), where
    it boots with NVIDIA's R580 driver signed for Secure Boot, sparing every VM the driver's
    download, build and reboot; the stock ubuntu-24.04 elsewhere (T4, L4, A100, G4's RTX PRO 6000,
    and P4, P100, V100, whose proprietary module the accelerator image is not known to carry), on
    which gpu.setup installs the driver. Any other image is itself."""
    if image != "auto":
        return image
    if machine and gceplan.family(machine).name.startswith(("a3", "a4")):
        return "accelerator"
    return "ubuntu-24.04"


def check_image_gpu(image: str, gpu: gceplan.GpuType) -> None:
    """Refuse an image whose driver can't drive the GPU, before any call."""
    if image == "accelerator" and gpu.compute_capability and float(gpu.compute_capability) < 7.5:
        raise gceplan.Invalid(
            f"--image accelerator is made for A3, A4 and A4X machines and its driver is not known to drive a "
            f"{gpu.model}, which needs NVIDIA's proprietary kernel module (the open one drives Turing and newer "
            "only): use the stock ubuntu-24.04 image (gpu.setup installs the proprietary module) or --image dlvm."
        )


def image_source(c: Any, image: str, arch: str = "x86_64") -> tuple[str, dict[str, str]]:
    """An image name → its source image URL and any metadata it needs (`arch`: the machine's)."""
    if image == "accelerator":
        return f"projects/{ACCELERATOR_PROJECT}/global/images/family/{ACCELERATOR_FAMILIES[arch]}", {}
    if image == "dlvm":
        family = c.config.gcp.dlvm_family
        return f"projects/{DLVM_PROJECT}/global/images/family/{family}", {"install-nvidia-driver": "True"}
    if image in IMAGES:
        project, family = IMAGES[image]
        return f"projects/{project}/global/images/family/{family}", {}
    if image.startswith("projects/"):
        return image, {}
    raise Exit(
        f"--image {image}: choose {', '.join(IMAGES)}, accelerator, dlvm, auto (by machine type), or a full "
        "projects/P/global/images/... path."
    )
