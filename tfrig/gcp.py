"""gcp: Compute Engine GPU VMs: created where the GPU and the quota are, found, stopped, deleted.

google-cloud-compute is imported only inside these tasks (through tfrig.cloud).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invoke import Collection
from invoke.exceptions import Exit

from tfrig import gceplan, state, targets
from tfrig.taskdef import JSON_HELP, port_number, task, whole_number
from tfrig.ui import confirm, info_stream, print_json, table

PROJECT_HELP = (
    "Google Cloud project (default gcp.project, GOOGLE_CLOUD_PROJECT, CLOUDSDK_CORE_PROJECT, gcloud's config)"
)
NAME_HELP = "VM name (default gcp.name, else tfrig-<user>)"
IMAGES = {
    "ubuntu-24.04": ("ubuntu-os-cloud", "ubuntu-2404-lts-amd64"),
    "ubuntu-22.04": ("ubuntu-os-cloud", "ubuntu-2204-lts"),
    "debian-12": ("debian-cloud", "debian-12"),
}
DLVM_PROJECT = "deeplearning-platform-release"


# --- settings -------------------------------------------------------------------------------------


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

    def cloud(self) -> Any:
        from tfrig.cloud import Cloud

        return Cloud(self.project, self.endpoint, self.credentials, retry_delay=self.retry_delay)


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
    )


def _user() -> str:
    return targets.local_user()


def vm_user() -> str:
    """The user tfrig logs in as on its VMs: yours, except root, which Compute Engine's guest agent
    does not make from ssh-keys metadata (so the VM gets a `tfrig` user instead)."""
    user = re.sub(r"[^a-z0-9_-]", "", _user().lower())[:32] or "tfrig"
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
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{_user()}@tfrig", "-f", str(path)], check=True
        )
        print(f"made an SSH key for the VMs: {path}", file=sys.stderr)
    return path, public.read_text().strip()


# What a fresh GCE image answers to tfrig's probes (for --dry over a VM not created yet).
_FRESH_IMAGES = {
    "ubuntu-24.04": ("ubuntu 24.04", "6.8.0-1015-gcp", "3.12.3"),
    "ubuntu-22.04": ("ubuntu 22.04", "6.5.0-1025-gcp", "3.10.12"),
    "debian-12": ("debian 12", "6.1.0-27-cloud-amd64", "3.11.2"),
    "dlvm": ("ubuntu 24.04", "6.8.0-1015-gcp", "3.12.3"),
}


def fresh_image_facts(image: str, gpu: gceplan.GpuType, user: str) -> dict[str, tuple[int, str]]:
    os_name, kernel, python = _FRESH_IMAGES.get(image, _FRESH_IMAGES["ubuntu-24.04"])
    device = gceplan.PCI_DEVICE_IDS.get(gpu.name, "0x0000")
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
    }


def _image(c: Any, image: str) -> tuple[str, dict[str, str]]:
    """An image name → its source image URL and any metadata it needs."""
    if image == "dlvm":
        family = c.config.gcp.dlvm_family
        return f"projects/{DLVM_PROJECT}/global/images/family/{family}", {"install-nvidia-driver": "True"}
    if image in IMAGES:
        project, family = IMAGES[image]
        return f"projects/{project}/global/images/family/{family}", {}
    if image.startswith("projects/"):
        return image, {}
    raise Exit(f"--image {image}: choose {', '.join(IMAGES)}, dlvm, or a full projects/P/global/images/... path.")


@dataclass
class CreateRequest:
    names: list[str]
    gpu: gceplan.GpuType
    gpus: int
    machine_type: str
    source_image: str
    disk_gb: int
    spot: bool
    max_run_seconds: int | None
    on_termination: str
    metadata: dict[str, str]

    @property
    def disk_type(self) -> str:
        return gceplan.family(self.machine_type).boot_disk

    def demand(self, vms: int = 1) -> gceplan.Demand:
        return gceplan.Demand(self.gpu, self.gpus, self.machine_type, self.disk_gb, self.spot, vms)

    def hourly(self, region: str) -> float | None:
        from tfrig import gceprice

        return gceprice.hourly(self.machine_type, self.gpu.name, self.gpus, self.spot, region)


def instance_body(request: CreateRequest, name: str, zone: str) -> dict[str, Any]:
    """The Compute API's Instance resource for one VM (REST field names)."""
    scheduling: dict[str, Any] = {"onHostMaintenance": "TERMINATE", "automaticRestart": not request.spot}
    if request.spot:
        scheduling.update(provisioningModel="SPOT", instanceTerminationAction=request.on_termination.upper())
    if request.max_run_seconds:
        scheduling.update(
            maxRunDuration={"seconds": str(request.max_run_seconds)},
            instanceTerminationAction=request.on_termination.upper(),
        )
    body: dict[str, Any] = {
        "name": name,
        "machineType": f"zones/{zone}/machineTypes/{request.machine_type}",
        "disks": [
            {
                "boot": True,
                "autoDelete": True,
                "initializeParams": {
                    "sourceImage": request.source_image,
                    "diskSizeGb": str(request.disk_gb),
                    # Sent explicitly: the API's default (pd-standard) is an HDD on N1, and G2
                    # and the Hyperdisk-only families refuse it (compat.yaml machine_families).
                    "diskType": f"zones/{zone}/diskTypes/{request.disk_type}",
                },
            }
        ],
        "networkInterfaces": [
            {
                "network": "global/networks/default",
                "accessConfigs": [{"name": "External NAT", "type": "ONE_TO_ONE_NAT"}],
            }
        ],
        "scheduling": scheduling,
        "labels": {"created-by": "tfrig"},
        "metadata": {"items": [{"key": k, "value": v} for k, v in request.metadata.items()]},
    }
    if request.gpu.family == "n1":  # other families come with their GPUs attached
        body["guestAccelerators"] = [
            {"acceleratorType": f"zones/{zone}/acceleratorTypes/{request.gpu.name}", "acceleratorCount": request.gpus}
        ]
    return body


def _to_instance(body: dict[str, Any]) -> Any:
    from google.cloud import compute_v1

    return compute_v1.Instance.from_json(__import__("json").dumps(body))


def _record(cfg: Settings, vm: Any, key: Path, user: str, request: CreateRequest | None = None) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "project": cfg.project,
        "zone": vm.zone,
        "address": vm.address,
        "user": user,
        "ssh_key": str(key),
        "port": 22,
        "status": vm.status,
        "machine_type": vm.machine_type,
        "gpu": vm.gpu or (request.gpu.name if request else None),
        "gpus": vm.gpus or (request.gpus if request else None),
    }
    if request:
        import datetime

        fields["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return state.record_vm(vm.name, **fields)


def wait_running(cloud: Any, zone: str, name: str, timeout: float, poll: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        vm = cloud.get_vm(zone, name)
        if vm is not None and vm.status == "RUNNING" and vm.address:
            return vm
        if time.monotonic() > deadline:
            raise Exit(
                f"{name} in {zone} is not RUNNING with an address after {timeout:.0f} s (status {vm and vm.status})."
            )
        time.sleep(poll)


def finish(c: Any, cloud: Any, zone: str, operation: str, what: str, timeout: float | None = None) -> None:
    """Wait for an operation and check its result: one line if it failed or did not end in time."""
    from tfrig.cloud import ApiError

    try:
        result = cloud.wait(zone, operation, timeout or float(c.config.gcp.operation_timeout))
    except ApiError as exc:
        if exc.reason != "TIMEOUT":
            raise
        raise Exit(f"{what}: {exc.message}; it may still finish: `inv gcp.list` shows where it stands.") from None
    if not result.ok:
        raise Exit(f"{what} failed: {result.message}")


def pin_host_keys(
    c: Any, cloud: Any, record: dict[str, Any], deadline: float, poll: float, out: Any, earlier: Any = ()
) -> list[tuple[str, str]]:
    """Pin the VM's SSH host keys in tfrig's known-hosts file from its guest attributes, as
    `gcloud compute ssh` does, so the first connection checks the key rather than trusting it
    (under --dry they are only returned). `earlier`: keys pinned for this VM before (a restarted
    VM keeps its disk and its keys)."""
    from tfrig import hostkeys

    name = hostkeys.vm_host_name(record)
    while True:
        keys = cloud.host_keys(record["zone"], record["name"]) or list(earlier)
        if keys:
            if not c.config.run.dry:
                hostkeys.pin(name, keys)
            return keys
        if time.monotonic() > deadline:
            break
        time.sleep(poll)
    if hostkeys.policy(c.config) == "accept-new":
        print(
            f"{record['name']}: its guest agent published no SSH host keys; trusting the key it shows first "
            "(tfrig.host_keys: accept-new)",
            file=out,
        )
        return []
    raise Exit(
        f"{record['name']} runs, but its guest agent published no SSH host keys (guest attributes hostkeys/), so "
        f"its key can't be checked; it is recorded: set tfrig.host_keys: accept-new to trust its first key, or "
        f"delete it with `inv gcp.delete --name {record['name']} --yes`."
    )


def vm_host_keys(c: Any, record: dict[str, Any]) -> list[tuple[str, str]]:
    """A VM's pinned host keys; if none are pinned (a VM made with --no-ssh-wait), one read of its
    guest attributes, pinned if there, with no waiting."""
    from tfrig import hostkeys
    from tfrig.cloud import ApiError

    keys = hostkeys.pinned(hostkeys.vm_host_name(record))
    if keys:
        return keys
    try:
        cloud = settings(c, record.get("project"), record.get("zone")).cloud()
        found: list[tuple[str, str]] = cloud.host_keys(record["zone"], record["name"])
    except (Exit, ApiError):  # no project or credentials here: the known-hosts files decide
        return []
    if found and not c.config.run.dry:
        hostkeys.pin(hostkeys.vm_host_name(record), found)
    return found


def _forget(name: str) -> None:
    """Drop a VM's record and its pinned host keys (its address may go to another VM)."""
    from tfrig import hostkeys

    record = state.find_vm(name)
    if record and record.get("address"):
        hostkeys.unpin(hostkeys.vm_host_name(record))
    state.forget_vm(name)


def wait_ssh(c: Any, record: dict[str, Any], timeout: float, out: Any) -> None:
    """Wait until SSH on the VM runs a command (the key may take a while to land)."""
    from tfrig.host import connect

    target = targets.vm_target(record)
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        conn = connect(c, target)
        try:
            if conn.run("true", hide=True, warn=True, in_stream=False, dry=False).ok:
                return
        except Exception as exc:  # not up yet: refused, reset, auth not ready
            if type(exc).__name__ in ("HostKeyRefused", "BadHostKeyException"):  # final: never retried
                from tfrig.host import describe_error

                raise Exit(f"{record['name']}: {describe_error(exc)}") from None
            last = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()
        time.sleep(2)
    raise Exit(
        f"{record['name']} runs but SSH to {record.get('user')}@{record['address']} did not answer in {timeout:.0f} s "
        f"({last}); it is recorded: retry with `inv gcp.ssh --name {record['name']}`, or delete it with "
        f"`inv gcp.delete --name {record['name']} --yes`."
    )


class CreateFailed(Exception):
    pass


def _interrupted(names: list[str]) -> str:
    """One line after Ctrl-C in gcp.create: what exists, recorded, and how to remove it."""
    records = state.vms()
    kept = [records[name] for name in names if name in records]
    if not kept:
        return "interrupted: no VM was left behind; nothing bills."
    where = ", ".join(
        f"{r['name']} ({r.get('zone')}{', may exist' if r.get('status') in ('UNKNOWN', 'CREATING') else ''})"
        for r in kept
    )
    deletes = " ".join(f"`inv gcp.delete --name {r['name']} --yes`" for r in kept)
    return (
        f"interrupted: {where} recorded by tfrig and billing until deleted: {deletes}; "
        "or run the same command again to go on."
    )


def _create_one(
    cloud: Any, request: CreateRequest, name: str, failover: gceplan.Failover, out: Any, timeout: float
) -> Any:
    """Try zones in failover order until one VM lands; a VM left by an interrupted attempt is deleted."""
    from tfrig.cloud import ApiError

    while (zone := failover.next_zone()) is not None:
        print(f"  {name}: trying {zone} ...", file=out, flush=True)
        # Recorded before the insert (with its requestId), so no interrupt or crash from here on can
        # leave a VM billing that tfrig does not know of.
        request_id = str(uuid.uuid4())
        state.record_vm(
            name, project=cloud.project, zone=zone, status="CREATING", request_id=request_id, since=time.time()
        )
        body = _to_instance(instance_body(request, name, zone))
        try:
            operation = cloud.insert(zone, body, request_id)
        except ApiError as exc:  # refused outright: nothing was created
            if exc.reason == "alreadyExists":  # not ours (none had the name at the start): not recorded
                _forget(name)
                raise CreateFailed(
                    f"a VM named {name} appeared in {zone} meanwhile; run the command again to adopt it"
                ) from None
            scope = failover.failed(zone, exc.reason, exc.message, exc.zones_available)
            print(f"  {name}: {zone}: {exc.reason} ({scope} blocked)", file=out, flush=True)
            continue
        except BaseException:  # cut off mid-call: the insert may have landed
            _cleanup(cloud, zone, name, out, resend=(body, request_id))
            raise
        try:
            result = cloud.wait(zone, operation, timeout)
        except BaseException as exc:  # the insert began: whatever it made must not be left billing
            _cleanup(cloud, zone, name, out)
            if isinstance(exc, ApiError):
                raise CreateFailed(f"waiting for {name} in {zone} failed: {exc.message}") from None
            raise
        if result.ok:
            failover.attempts.append(gceplan.Attempt(zone, "created"))
            return zone
        error = result.errors[0]
        scope = failover.failed(zone, error["code"], error["message"], error["zones_available"])
        print(f"  {name}: {zone}: {error['code']} ({scope} blocked)", file=out, flush=True)
    _forget(name)
    raise CreateFailed(f"no zone could take {name}: {failover.summary() or 'no zone left to try'}")


def _cleanup(cloud: Any, zone: str, name: str, out: Any, resend: tuple[Any, str] | None = None) -> None:
    """After an interrupted or failed create: delete the VM if it exists, or say exactly what may be
    left. `resend`: an insert cut off mid-call, sent again with its requestId, which the API answers
    with the first one's operation if that landed, so tfrig learns whether a VM is coming. "Nothing
    is left billing" is said only when the delete succeeded and a GET finds no VM."""
    from tfrig.cloud import ApiError

    try:
        if resend is not None:
            with contextlib.suppress(ApiError):  # refused now: the first one never landed either
                cloud.wait(zone, cloud.insert(zone, *resend), timeout=300)
        made = cloud.get_vm(zone, name) is not None
        if made:
            result = cloud.wait(zone, cloud.delete(zone, name), timeout=300)
            if not result.ok:
                raise ApiError(0, "DELETE_FAILED", f"its delete failed: {result.message}")
            left = cloud.get_vm(zone, name)
            if left is not None:
                raise ApiError(0, "STILL_THERE", f"it is still there, {left.status}")
        _forget(name)
        if made:
            print(f"  {name}: the half-created VM in {zone} was deleted; nothing is left billing", file=out)
    except BaseException as exc:
        state.record_vm(name, zone=zone, status="UNKNOWN", project=cloud.project, since=time.time())
        why = f" ({exc.message})" if isinstance(exc, ApiError) else ""
        print(
            f"  {name}: may exist in {zone}{why}; it is recorded: delete it with `inv gcp.delete --name {name} --yes`",
            file=out,
        )


CREATE_HELP = {
    "name": NAME_HELP,
    "gpu": "GPU type, e.g. nvidia-tesla-t4, nvidia-l4 (default gcp.gpu)",
    "gpus": "GPUs per VM (default 1)",
    "machine_type": "machine type (default: the smallest that fits: n1-standard-4 per T4, g2-standard-4 per L4, ...)",
    "zone": "zone (default: where the GPU and quota are; gcp.zone or gcloud's)",
    "region": "region to search in",
    "image": "ubuntu-24.04 (default), ubuntu-22.04, debian-12, dlvm (Deep Learning VM with the driver), projects/...",
    "disk_gb": "boot disk size in GB (default 100)",
    "spot": "a Spot VM (cheaper, can be preempted; uses the PREEMPTIBLE_ quota)",
    "max_run_duration": "stop or delete the VM after this long, e.g. 8h (GCE enforces it, so a forgotten VM stops)",
    "on_termination": "stop (default) or delete, for --spot and --max-run-duration",
    "count": "make N VMs, named NAME-1..NAME-N, spread over zones if one can't hold them all",
    "ssh_wait": "wait until SSH answers (default yes; --no-ssh-wait for scripts that connect later)",
    "project": PROJECT_HELP,
    "yes": "don't ask before creating (the price is still shown); tfrig.yes does the same",
    "json": JSON_HELP,
}


@task(help=CREATE_HELP)
def create(
    c,
    name=None,
    gpu=None,
    gpus=1,
    machine_type=None,
    zone=None,
    region=None,
    image=None,
    disk_gb=None,
    spot=False,
    max_run_duration=None,
    on_termination=None,
    count=1,
    ssh_wait=True,
    project=None,
    yes=False,
    json=False,
):
    """Create a GPU VM where the GPU and the quota are, wait for SSH, and make it the run's target.
    It shows the hourly price first, and asks on a terminal (--yes or tfrig.yes answers)."""
    gcp = c.config.gcp
    out = info_stream(json)
    dry = bool(c.config.run.dry)
    try:
        gpu_type = gceplan.gpu_type(gpu or gcp.gpu)
        gpus, count = whole_number("gpus", gpus, 1, 16), whole_number("count", count, 1, 64)
        chosen_machine = gceplan.machine_type(gpu_type, gpus, machine_type or gcp.machine_type or None)
        base = gceplan.check_name(name or gcp.name or gceplan.default_name(_user()))
        names = [base] if count == 1 else [gceplan.check_name(f"{base}-{i}") for i in range(1, count + 1)]
        disk = whole_number("disk-gb", disk_gb or gcp.disk_gb, 1, 65536)  # a boot disk: at most 64 TB
        if disk < 10:
            raise gceplan.Invalid(
                f"--disk-gb {disk}: boot disks need at least 10 GB (100 leaves room for CUDA and TensorFlow)."
            )
        run_seconds = gceplan.duration_seconds(max_run_duration) if max_run_duration else None
        termination = on_termination or "stop"
        if termination not in ("stop", "delete"):
            raise gceplan.Invalid(f"--on-termination {termination}: choose stop or delete.")
        gceplan.check_sold(chosen_machine, spot)
        source_image, image_metadata = _image(c, image or gcp.image)
        gceplan.check_image(chosen_machine, source_image)
    except gceplan.Invalid as invalid:
        raise Exit(str(invalid)) from None
    cfg = settings(c, project, zone, region)
    user = vm_user()
    key, public_key = ssh_key(c, dry)
    request = CreateRequest(
        names=names,
        gpu=gpu_type,
        gpus=gpus,
        machine_type=chosen_machine,
        source_image=source_image,
        disk_gb=disk,
        spot=spot,
        max_run_seconds=run_seconds,
        on_termination=termination,
        # enable-guest-attributes: the guest agent publishes the VM's SSH host keys there at first
        # boot, so tfrig pins them instead of trusting the first key it meets (tfrig.hostkeys).
        metadata={"ssh-keys": f"{user}:{public_key}", "enable-guest-attributes": "TRUE", **image_metadata},
    )
    cloud = cfg.cloud()

    # Adopt what tfrig made already (the same command twice makes no second VM); refuse anything else.
    records: list[dict[str, Any]] = []
    to_create = []
    for vm_name in names:
        found = cloud.vms(name=vm_name, tfrig_only=False)
        if not found:
            to_create.append(vm_name)
            continue
        vm = found[0]
        if not vm.created_by_tfrig:
            raise Exit(f"A VM named {vm_name} exists in {vm.zone} and tfrig did not create it; choose another --name.")
        if vm.status != "RUNNING" and not dry:
            print(f"{vm_name} exists in {vm.zone} ({vm.status}); starting it", file=out)
            finish(c, cloud, vm.zone, cloud.start(vm.zone, vm_name), f"starting {vm_name}")
            vm = wait_running(cloud, vm.zone, vm_name, gcp.running_timeout, gcp.poll_interval)
        print(f"{vm_name} exists in {vm.zone} (created by tfrig): using it", file=out)
        known = state.find_vm(vm_name) or {}
        if dry:  # --dry writes nothing, not even tfrig's own state
            records.append({**known, "name": vm_name, "address": vm.address, "user": known.get("user") or user})
        else:
            records.append(_record(cfg, vm, key, known.get("user") or user))

    if to_create:
        zones = _preflight(cloud, cfg, request, len(to_create), ssh_wait, out)
        price = _price_line(request, len(to_create), zones[0])
        print(price, file=out)
        if dry:
            import json as json_module

            for vm_name in to_create:
                print(f"would insert into {zones[0]} (then {', '.join(zones[1:4]) or 'no other zone'}):", file=out)
                print(json_module.dumps(instance_body(request, vm_name, zones[0]), indent=2), file=out)
            # The rest of the chain plans against these VMs, their facts assumed from a fresh image.
            planned = [
                targets.Target(label=n, user=user, assumed=fresh_image_facts(image or gcp.image, gpu_type, user))
                for n in to_create
            ]
            targets.carry(c.config, [targets.vm_target(r) for r in records] + planned)
            return
        confirm(f"{price[0].upper()}{price[1:]}; go ahead?", yes or c.config.tfrig.yes)
        state.check_writable()  # before anything bills: what is created must be recorded
        failover = gceplan.Failover(zones)
        try:
            for vm_name in to_create:
                try:
                    landed = _create_one(cloud, request, vm_name, failover, out, float(gcp.operation_timeout))
                except CreateFailed as failed:
                    made = ", ".join(r["name"] for r in records)
                    raise Exit(f"{failed}" + (f"; created so far: {made}" if made else "")) from None
                state.record_vm(
                    vm_name, project=cfg.project, zone=landed, status="PROVISIONING", user=user, ssh_key=str(key)
                )
                vm = wait_running(cloud, landed, vm_name, gcp.running_timeout, gcp.poll_interval)
                records.append(_record(cfg, vm, key, user, request))
                print(
                    f"created {vm_name} in {landed} ({chosen_machine}, {gpus} x {gpu_type.name}) at {vm.address}",
                    file=out,
                )
                # The next VM tries the zone that had room first.
                failover.queue.insert(0, landed)
        except KeyboardInterrupt:
            raise Exit(_interrupted(names), code=130) from None
    if ssh_wait and not dry:
        try:
            for record in records:
                deadline = time.monotonic() + float(gcp.ssh_timeout)
                pin_host_keys(c, cloud, record, deadline, float(gcp.poll_interval), out)
                wait_ssh(c, record, max(deadline - time.monotonic(), 1.0), out)
        except KeyboardInterrupt:
            raise Exit(_interrupted(names), code=130) from None
    targets.carry(c.config, [targets.vm_target(r) for r in records])
    if json:
        print_json(records[0] if len(records) == 1 else {"vms": records})
    else:
        for record in records:
            print(
                f"{record['name']}: {record['zone']}, {record['address']}; "
                "next: inv gpu.setup tf.install (or later with --name)"
            )


def _price_line(request: CreateRequest, vms: int, zone: str) -> str:
    """ "would create 2 VMs (...) in us-central1-a, about $0.54/h each, $1.08/h in all (...)"."""
    from tfrig import gceprice

    each = request.hourly(gceplan.region_of(zone))
    how = "Spot" if request.spot else "on demand"
    what = f"{request.machine_type} + {request.gpus} x {request.gpu.name}, {how}"
    total = f", {gceprice.money(each * vms)} in all" if each is not None and vms > 1 else ""
    each_text = gceprice.money(each) + (" each" if vms > 1 else "")
    return (
        f"create {vms} VM{'s' if vms > 1 else ''} ({what}) in {zone} first: {each_text}{total} "
        f"plus its disk (prices: {gceprice.as_of()})"
    )


def _preflight(cloud: Any, cfg: Settings, request: CreateRequest, vms: int, ssh_wait: bool, out: Any) -> list[str]:
    """Everything checked before any insert: SSH will work, the GPU is offered, the quota covers
    it; the zones to try, in order."""
    from tfrig import gceprice

    project_quotas, metadata = cloud.project_info()
    if metadata.get("enable-oslogin", "").upper() == "TRUE":
        # With OS Login on, the guest agent ignores ssh-keys metadata; an instance's own
        # enable-oslogin=FALSE overrides the project's (an organization policy can still force it).
        request.metadata["enable-oslogin"] = "FALSE"
        print(
            f"OS Login is on in project {cfg.project}: tfrig sets enable-oslogin=FALSE on its VMs so that the key "
            "it adds works (if an organization policy forces OS Login, SSH will be refused and tfrig says so)",
            file=out,
        )
    if ssh_wait:
        _check_ssh_firewall(cloud, out)
    offered = cloud.accelerator_zones(request.gpu.name)
    regions_offered = sorted({gceplan.region_of(z) for z in offered})
    ranked = gceprice.order_regions(
        regions_offered, request.machine_type, request.gpu.name, request.gpus, request.spot, gceprice.home()
    )
    try:
        zones = gceplan.candidate_zones(offered, request.gpus, cfg.zone, cfg.region, ranked, cfg.first)
    except gceplan.Invalid as invalid:
        raise Exit(f"{request.gpu.name}: {invalid}") from None
    regions = list(dict.fromkeys(gceplan.region_of(z) for z in zones))
    regional = {region: cloud.region_quotas(region) for region in regions}
    check = gceplan.check_quota(request.demand(vms), regions, regional, project_quotas)
    if not check.regions and not check.global_short:
        # Per VM, a region needs only one VM's share; the total matters project-wide.
        check = gceplan.check_quota(request.demand(1), regions, regional, project_quotas)
    if not check.regions:
        raise Exit(gceplan.quota_message(cfg.project, check))
    if check.unknown:
        print(f"quota not listed by the API, so not checked: {', '.join(check.unknown)}; trying anyway", file=out)
    usable = [z for z in zones if gceplan.region_of(z) in check.regions]
    skipped = sorted({q.where for q in check.short})
    if skipped:
        shorts = sorted({q.metric for q in check.short})
        print(f"skipping {', '.join(skipped)}: not enough {', '.join(shorts)} quota", file=out)
    return usable


def _check_ssh_firewall(cloud: Any, out: Any) -> None:
    """Refuse a create whose SSH wait would time out behind the firewall; a firewall tfrig may not
    read (403: no compute.firewalls.list, common) is said in one line and the create goes on."""
    from tfrig.cloud import ApiError

    try:
        verdict = cloud.ssh_access()
    except ApiError as exc:
        if exc.status != 403:
            raise
        print("couldn't check the firewall for SSH (no permission to list firewall rules); going on", file=out)
        return
    if verdict.startswith("from "):
        print(f"the firewall admits SSH only {verdict}; the SSH wait needs this machine's address among them", file=out)
    elif verdict != "open":
        raise Exit(
            f"The firewall of network default does not admit SSH (tcp:22) to tfrig's VMs: {verdict}. Create a "
            "rule (`gcloud compute firewall-rules create allow-ssh --network default --allow tcp:22`), "
            "or pass --no-ssh-wait."
        )


# --- the other lifecycle tasks ----------------------------------------------------------------------


def _record_or_exit(name: str | None, c: Any) -> dict[str, Any]:
    chosen = name or c.config.gcp.name or gceplan.default_name(_user())
    record = state.find_vm(chosen)
    if record is None:
        raise Exit(f"No VM named {chosen} in tfrig's state; `inv gcp.list` shows the ones it knows.")
    return record


@task(help={"project": PROJECT_HELP, "json": JSON_HELP})
def list_(c, project=None, json=False):
    """List tfrig's VMs: name, zone, status, GPU, address (live from the API where it answers)."""
    records = {r["name"]: r for r in state.vms().values()}
    live: dict[str, Any] = {}
    answered = False
    try:
        cfg = settings(c, project)
        live = {vm.name: vm for vm in cfg.cloud().vms()}
        answered = True
    except Exit:
        if project:
            raise
    if answered and not c.config.run.dry:
        records = _reconcile(records, live, info_stream(json))
    rows = []
    for vm_name in sorted(set(records) | set(live)):
        record, vm = records.get(vm_name, {}), live.get(vm_name)
        rows.append(
            {
                "name": vm_name,
                "zone": vm.zone if vm else record.get("zone"),
                "status": vm.status if vm else ("NOT FOUND" if answered else record.get("status")),
                "gpu": (f"{vm.gpus} x {vm.gpu}" if vm and vm.gpu else None)
                or (f"{record.get('gpus')} x {record.get('gpu')}" if record.get("gpu") else None),
                "address": (vm.address if vm else None) or record.get("address"),
                "in_state": bool(record),
                "uptime_hours": _rounded(vm.uptime_hours() if vm else None, 2),
                "hourly_usd": _rounded(vm.hourly() if vm else None, 2),
                "cost_since_start_usd": _rounded(_cost(vm) if vm else None, 2),
            }
        )
    if json:
        print_json(rows)
    elif not rows:
        print("tfrig has created no VMs that still exist.")
    else:
        from tfrig import gceprice

        table(
            ["name", "zone", "status", "gpu", "address", "up", "cost so far"],
            [
                (
                    r["name"],
                    r["zone"],
                    r["status"],
                    r["gpu"],
                    r["address"],
                    f"{r['uptime_hours']:.1f} h" if r["uptime_hours"] is not None else "",
                    f"about ${r['cost_since_start_usd']:.2f}" if r["cost_since_start_usd"] is not None else "",
                )
                for r in rows
            ],
        )
        if any(r["cost_since_start_usd"] is not None for r in rows):
            print(f"costs are estimates since each VM last started, disks not included (prices: {gceprice.as_of()})")


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _cost(vm: Any) -> float | None:
    """About what a running VM has cost since it last started (its disk not included)."""
    hours, hourly = vm.uptime_hours(), vm.hourly()
    return None if hours is None or hourly is None else hours * hourly


# How long an insert may be in flight (sent, not yet listed) before its "creating" record, with no
# VM behind it, is taken as an interrupted create that made nothing.
INSERT_SETTLE_SECONDS = 600


def _reconcile(records: dict[str, Any], live: dict[str, Any], out: Any) -> dict[str, Any]:
    """Records of creates that were cut off (CREATING, UNKNOWN) brought in line with the API: the
    VM's status and address if it exists, else the record dropped once no insert can be in flight.
    On a read-only state folder nothing is written and the list still shows."""
    records = dict(records)
    for name, record in sorted(records.items()):
        if record.get("status") not in ("CREATING", "UNKNOWN"):
            continue
        vm = live.get(name)
        try:
            if vm is not None:
                records[name] = state.record_vm(name, status=vm.status, zone=vm.zone, address=vm.address)
            elif time.time() - float(record.get("since") or 0) > INSERT_SETTLE_SECONDS:
                _forget(name)
                del records[name]
                print(f"{name}: its create was cut off and no VM exists; removed from tfrig's state", file=out)
        except Exit:
            break
    return records


def _lifecycle(c: Any, name: str | None) -> tuple[dict[str, Any], Any]:
    """The VM's state record and a client for its project."""
    record = _record_or_exit(name, c)
    return record, settings(c, record.get("project"), record.get("zone")).cloud()


@task(help={"name": NAME_HELP, "json": JSON_HELP})
def start(c, name=None, json=False):
    """Start a stopped VM (its address may change) and make it the run's target."""
    record, cloud = _lifecycle(c, name)
    if c.config.run.dry:
        print(f"would start {record['name']} in {record['zone']}")
        return
    finish(c, cloud, record["zone"], cloud.start(record["zone"], record["name"]), f"starting {record['name']}")
    vm = wait_running(cloud, record["zone"], record["name"], c.config.gcp.running_timeout, c.config.gcp.poll_interval)
    from tfrig import hostkeys

    earlier = hostkeys.pinned(hostkeys.host_name(record.get("address") or "", record.get("port")))
    if record.get("address") and record["address"] != vm.address:
        hostkeys.unpin(hostkeys.vm_host_name(record))
    record = state.record_vm(record["name"], address=vm.address, status=vm.status)
    if earlier:  # the same VM and disk, maybe at a new address: its keys move with it
        hostkeys.pin(hostkeys.host_name(vm.address, record.get("port")), earlier)
    targets.carry(c.config, [targets.vm_target(record)])
    if json:
        print_json(record)
    else:
        print(f"started {record['name']} at {vm.address}")


@task(help={"name": NAME_HELP, "json": JSON_HELP})
def stop(c, name=None, json=False):
    """Stop a VM: GPUs and vCPUs stop billing; its disk is still billed until you delete it."""
    record, cloud = _lifecycle(c, name)
    if c.config.run.dry:
        print(f"would stop {record['name']} in {record['zone']}")
        return
    finish(c, cloud, record["zone"], cloud.stop(record["zone"], record["name"]), f"stopping {record['name']}")
    record = state.record_vm(record["name"], status="TERMINATED")
    if json:
        print_json(record)
    else:
        print(f"stopped {record['name']}: its disk is still billed; `inv gcp.delete --name {record['name']}` ends that")


def delete_vm(c: Any, record: dict[str, Any], out: Any) -> None:
    """Delete a VM; "nothing billed" only once the operation succeeded and a GET says it is gone."""
    from tfrig.cloud import ApiError

    name, zone = record["name"], record["zone"]
    cloud = settings(c, record.get("project"), zone).cloud()
    try:
        finish(c, cloud, zone, cloud.delete(zone, name), f"deleting {name}")
    except ApiError as exc:
        if exc.status != 404:  # "not found" while deleting: gone already
            raise
    left = cloud.get_vm(zone, name)
    if left is not None:
        raise Exit(
            f"{name} still exists in {zone} ({left.status}) and bills: run `inv gcp.delete --name {name} --yes` "
            "again, or delete it in the console."
        )
    _forget(name)
    print(f"deleted {name} ({zone}): nothing of it is billed any more", file=out)


@task(help={"name": NAME_HELP, "yes": "don't ask", "json": JSON_HELP})
def delete(c, name=None, yes=False, json=False):
    """Delete a VM and its boot disk (asks first; --yes for scripts)."""
    record = _record_or_exit(name, c)
    if c.config.run.dry:
        print(f"would delete {record['name']} in {record['zone']} and its disk")
        return
    confirm(f"Delete VM {record['name']} in {record['zone']} and its disk?", yes or c.config.tfrig.yes)
    delete_vm(c, record, info_stream(json))
    if json:
        print_json({"deleted": record["name"], "zone": record["zone"]})


def _gpu_type(c: Any, gpu: str | None) -> gceplan.GpuType:
    try:
        return gceplan.gpu_type(gpu or c.config.gcp.gpu)
    except gceplan.Invalid as invalid:
        raise Exit(str(invalid)) from None


@task(
    help={"gpu": "GPU type (default gcp.gpu)", "region": "only this region", "project": PROJECT_HELP, "json": JSON_HELP}
)
def zones(c, gpu=None, region=None, project=None, json=False):
    """Show the zones that offer a GPU type, with the most cards per VM."""
    gpu_type = _gpu_type(c, gpu)
    cfg = settings(c, project, region=region)
    offered = cfg.cloud().accelerator_zones(gpu_type.name)
    rows = [
        {"zone": z, "region": gceplan.region_of(z), "max_per_vm": n}
        for z, n in sorted(offered.items())
        if not region or z.startswith(region + "-")
    ]
    if json:
        print_json(rows)
    elif not rows:
        print(f"{gpu_type.name} is offered in no zone{' of ' + region if region else ''} for project {cfg.project}.")
    else:
        table(["zone", "region", "max per VM"], [(r["zone"], r["region"], r["max_per_vm"]) for r in rows])


@task(
    help={"gpu": "GPU type (default gcp.gpu)", "region": "only this region", "project": PROJECT_HELP, "json": JSON_HELP}
)
def quota(c, gpu=None, region=None, project=None, json=False):
    """Show the GPU quotas that matter (on-demand, Spot, all regions) with usage, and how to get more."""
    gpu_type = _gpu_type(c, gpu)
    cfg = settings(c, project, region=region)
    cloud = cfg.cloud()
    project_quotas, _ = cloud.project_info()
    regions = [region] if region else sorted({gceplan.region_of(z) for z in cloud.accelerator_zones(gpu_type.name)})
    rows = []

    def row(where: str, metric: str, quotas: dict[str, tuple[float, float]]) -> dict[str, Any]:
        """A metric the API does not list shows as "not listed" (None in JSON), never as 0."""
        if metric not in quotas:
            return {"where": where, "metric": metric, "limit": None, "usage": None, "remaining": None}
        limit, usage = quotas[metric]
        return {"where": where, "metric": metric, "limit": limit, "usage": usage, "remaining": limit - usage}

    for metric in (gceplan.GLOBAL_METRIC, gceplan.CPU_METRIC_ALL_REGIONS):
        rows.append(row("global", metric, project_quotas))
    for where in regions:
        quotas = cloud.region_quotas(where)
        for metric in (gpu_type.quota_metric, gpu_type.preemptible_metric):
            rows.append(row(where, metric, quotas))
    if json:
        print_json(rows)
        return

    def shown(value: float | None) -> str:
        return "not listed" if value is None else f"{value:g}"

    table(
        ["where", "metric", "limit", "used", "left"],
        [(r["where"], r["metric"], shown(r["limit"]), shown(r["usage"]), shown(r["remaining"])) for r in rows],
    )
    print(
        f"more quota: https://console.cloud.google.com/iam-admin/quotas?project={cfg.project} "
        "(Spot VMs use PREEMPTIBLE_* where the region has it, else the standard quota)"
    )


def _host_key_options(c: Any) -> list[tuple[str, str]]:
    """OpenSSH options that check a VM's key against the keys tfrig pinned for it (and yours)."""
    from tfrig import hostkeys

    checking = "accept-new" if hostkeys.policy(c.config) == "accept-new" else "yes"
    files = f'"{hostkeys.pinned_file()}" ~/.ssh/known_hosts'
    return [("StrictHostKeyChecking", checking), ("UserKnownHostsFile", files)]


def _ssh_argv(c: Any, record: dict[str, Any], extra: list[str] | None = None) -> list[str]:
    argv = ["ssh", *(f"-o{key}={value}" for key, value in _host_key_options(c)), "-p", str(record.get("port") or 22)]
    if record.get("ssh_key"):
        argv += ["-i", record["ssh_key"]]
    return argv + (extra or []) + [f"{record.get('user')}@{record['address']}"]


@task(help={"name": NAME_HELP})
def ssh(c, name=None):
    """Open a shell on the VM."""
    record = _record_or_exit(name, c)
    argv = _ssh_argv(c, record)
    if c.config.run.dry:
        print("would run: " + shlex.join(argv))
        return
    os.execvp(argv[0], argv)


BLOCK_START, BLOCK_END = "# >>> tfrig {name} >>>", "# <<< tfrig {name} <<<"


def ssh_config_block(record: dict[str, Any], host_key_options: list[tuple[str, str]]) -> str:
    lines = [
        BLOCK_START.format(name=record["name"]),
        f"Host {record['name']}",
        f"    HostName {record['address']}",
        f"    User {record.get('user')}",
        f"    Port {record.get('port') or 22}",
    ]
    if record.get("ssh_key"):
        lines.append(f"    IdentityFile {record['ssh_key']}")
    lines += [f"    {key} {value}" for key, value in host_key_options]
    lines.append(BLOCK_END.format(name=record["name"]))
    return "\n".join(lines) + "\n"


def replace_block(text: str, name: str, block: str | None) -> str:
    """`text` with tfrig's block for `name` replaced (or added, or removed when `block` is None)."""
    start, end = BLOCK_START.format(name=name), BLOCK_END.format(name=name)
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        return before + (block or "") + after
    if block is None:
        return text
    return text + ("\n" if text and not text.endswith("\n") else "") + block


@task(
    help={
        "name": NAME_HELP,
        "remove": "remove the block instead",
        "file": "the SSH config file (default ~/.ssh/config)",
    }
)
def ssh_config(c, name=None, remove=False, file=None):
    """Write (or update) a managed `Host NAME` block in ~/.ssh/config, so plain `ssh NAME` works."""
    record = _record_or_exit(name, c)
    path = Path(os.path.expanduser(file or "~/.ssh/config"))
    if path.is_dir():
        raise Exit(f"--file {path} is a folder; name the ssh config file itself, e.g. {path / 'config'}.")
    if file and not path.parent.is_dir():  # ~/.ssh is made when missing; a folder you named is not
        raise Exit(f"--file {path}: the folder {path.parent} does not exist; create it first.")
    try:
        old = path.read_text() if path.exists() else ""
    except OSError as exc:
        raise Exit(f"--file {path}: {exc.strerror}.") from None
    new = replace_block(old, record["name"], None if remove else ssh_config_block(record, _host_key_options(c)))
    if new == old:
        print(f"already done: {path} {'has no' if remove else 'has the'} block for {record['name']}")
        return
    if c.config.run.dry:
        print(f"would {'remove' if remove else 'write'} the Host {record['name']} block in {path}")
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tfrig-tmp")
    temporary.write_text(new)
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)
    print(
        f"{'removed' if remove else 'wrote'} Host {record['name']} in {path}"
        + ("" if remove else f": `ssh {record['name']}`")
    )


@task(
    help={
        "port": "port on the VM (bound to its 127.0.0.1, e.g. TensorBoard 6006)",
        "local_port": "port here (default: the same)",
        "name": NAME_HELP,
    }
)
def tunnel(c, port, local_port=None, name=None):
    """Forward a local port to a port on the VM through SSH until Ctrl-C."""
    from tfrig.host import connect

    remote = port_number("port", port)
    local = port_number("local-port", local_port or port)
    record = _record_or_exit(name, c)
    if c.config.run.dry:
        print(f"would forward 127.0.0.1:{local} to {record['name']}:127.0.0.1:{port}")
        return
    conn = connect(c, targets.vm_target(record))
    with conn.forward_local(local_port=local, remote_port=remote, remote_host="127.0.0.1", local_host="127.0.0.1"):
        print(f"http://127.0.0.1:{local} -> {record['name']}:{remote} (Ctrl-C closes it)", flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            print("tunnel closed")


@task(
    help={
        "delete": "delete the VMs and their disks instead of stopping them",
        "yes": "don't ask",
        "project": PROJECT_HELP,
        "json": JSON_HELP,
    }
)
def down(c, delete=False, yes=False, project=None, json=False):
    """Stop (or --delete) every VM tfrig created in the project, listing them first and asking."""
    from concurrent.futures import ThreadPoolExecutor

    cfg = settings(c, project)
    cloud = cfg.cloud()
    # Read before listing: a record a concurrent gcp.create writes after the listing is not seen
    # here, so it is never dropped; nor is one whose insert may still be in flight.
    recorded = {n: r for n, r in state.vms().items() if r.get("project") in (None, cfg.project)}
    live = {vm.name: vm for vm in cloud.vms()}
    out = info_stream(json)
    for name in sorted(set(recorded) - set(live)):
        if recorded[name].get("status") == "CREATING":
            continue
        if c.config.run.dry:
            print(f"{name}: already gone; would remove it from tfrig's state", file=out)
            continue
        _forget(name)  # gone already: nothing bills
        print(f"{name}: already gone; removed from tfrig's state", file=out)
    chosen = [vm for vm in live.values() if delete or vm.status != "TERMINATED"]
    if not chosen:
        which = "VMs" if delete else "running VMs"
        print(f"nothing to {'delete' if delete else 'stop'}: tfrig has no {which} in {cfg.project}", file=out)
        if json:
            print_json({"changed": []})
        return
    from tfrig import gceprice

    table(
        ["name", "zone", "status", "gpu", "per hour"],
        [(vm.name, vm.zone, vm.status, vm.gpu, gceprice.money(vm.hourly()).removesuffix("/h")) for vm in chosen],
        out=out,
    )
    running = [vm.hourly() for vm in chosen if vm.status == "RUNNING"]
    if running:
        known = [price for price in running if price is not None]
        more = f" (and {len(running) - len(known)} VM(s) tfrig has no price for)" if len(known) < len(running) else ""
        print(f"this stops about ${sum(known):.2f}/h of VM and GPU charges{more}", file=out)
    verb = "Delete" if delete else "Stop"
    if c.config.run.dry:
        print(f"would {verb.lower()} {len(chosen)} VM(s)", file=out)
        return
    confirm(f"{verb} these {len(chosen)} VM(s)?", yes or c.config.tfrig.yes)

    def act(vm: Any) -> tuple[bool, str]:
        """(done, what happened) for one VM; a failure is reported, the others go on."""
        from tfrig.cloud import ApiError, describe

        verb = "deleting" if delete else "stopping"
        try:
            finish(c, cloud, vm.zone, (cloud.delete if delete else cloud.stop)(vm.zone, vm.name), f"{verb} {vm.name}")
            if delete:
                left = cloud.get_vm(vm.zone, vm.name)
                if left is not None:
                    return False, f"{vm.name}: still exists ({left.status}) and bills"
                _forget(vm.name)
                return True, f"deleted {vm.name}"
        except Exit as failed:
            return False, str(failed.message)
        except ApiError as exc:
            return False, f"{verb} {vm.name}: {describe(exc)}"
        if state.find_vm(vm.name):
            state.record_vm(vm.name, status="TERMINATED")
        return True, f"stopped {vm.name} (its disk is still billed)"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(act, chosen))
    for _done, line in outcomes:
        print(line, file=out)
    changed = [vm.name for vm, (done, _line) in zip(chosen, outcomes, strict=True) if done]
    if json:
        print_json({"changed": changed, "action": "delete" if delete else "stop"})
    failed = len(chosen) - len(changed)
    if failed:
        raise Exit(f"{failed} of {len(chosen)} VM(s) could not be {'deleted' if delete else 'stopped'}; see above.")


def _vm_hosts(c: Any, name: str | None) -> str:
    """`--name` (a VM, a comma list, or a glob) as a host spec; the VM tfrig knows by default."""
    return name or c.config.gcp.name or gceplan.default_name(_user())


@task(
    help={
        "cmd": "the command, run in the TensorFlow env (its bin first on PATH) from the home folder",
        "name": NAME_HELP + "; several comma-separated, or a glob such as 'tfrig-alice-*'",
        "json": JSON_HELP,
    }
)
def exec_(c, cmd, name=None, json=False):
    """Run a command on the VM in the TensorFlow env, streaming its output; its exit code is passed on."""
    from tfrig.host import Host, shell_path
    from tfrig.runner import on_targets
    from tfrig.tf import environment

    running: list[tuple[Host, str]] = []  # each host and the file holding its command's process group
    stopping = threading.Event()

    def work(host: Host) -> dict[str, Any]:
        env = environment(host, c)
        command = f'export PATH={shell_path(env.path.rstrip("/") + "/bin")}:"$PATH"; {env.exports}cd; {cmd}'
        if host.dry:
            host.say(f"would run: {cmd}")
            return {"exit_code": None}
        # The command leads a process group of its own (setsid), whose id it writes down, so that
        # Ctrl-C here stops it there too; without a pty nothing else would carry the interrupt.
        group = f"/tmp/tfrig-exec-{uuid.uuid4().hex}.pgid"
        # In the foreground: a background job (&) would start with SIGINT ignored, for good.
        wrapped = (
            f'setsid -w "${{SHELL:-sh}}" -c \'echo $$ > "$0"; eval "$1"\' {group} {shlex.quote(command)}; '
            f"rc=$?; rm -f {group}; exit $rc"
        )
        running.append((host, group))
        if stopping.is_set():
            return {"exit_code": 130}
        result = host.c.run(wrapped, warn=True, hide=json, in_stream=False, pty=False)
        return {"exit_code": result.exited, "stdout": result.stdout if json else None}

    def stop_everywhere() -> None:
        for host, group in list(running):
            with contextlib.suppress(Exception):  # gone already, or the host went away
                host.c.run(f'kill -INT -- -"$(cat {group})"', hide=True, warn=True, in_stream=False)

    def interrupted(signum: int, frame: Any) -> None:
        if stopping.is_set():  # a second Ctrl-C: leave now, the commands may go on there
            raise KeyboardInterrupt
        stopping.set()
        print("stopping the command on every host (Ctrl-C again to leave it running)", file=sys.stderr, flush=True)
        threading.Thread(target=stop_everywhere, daemon=True).start()

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        results = on_targets(
            c, work, hosts=_vm_hosts(c, name), json_out=json, summary=lambda r: f"exit {r['exit_code']}"
        )
    except KeyboardInterrupt:
        raise Exit("left at the second Ctrl-C; the command may still run there.", code=130) from None
    finally:
        signal.signal(signal.SIGINT, previous)
    codes = [r.get("exit_code") or 0 for r in results]
    if any(codes):
        raise Exit(code=max(codes))


def _copy(c: Any, name: str | None, source: str, destination: str | None, upload: bool, force: bool) -> None:
    import tarfile
    import tempfile

    from tfrig.host import connect

    [target] = targets.parse_hosts(_vm_hosts(c, name))[:1]
    conn = connect(c, target)
    if upload:
        local = Path(os.path.expanduser(source))
        if not local.exists():
            raise Exit(f"{source}: no such file or folder here.")
        remote = destination or local.name
        if c.config.run.dry:
            print(f"would copy {local} to {target.label}:{remote}")
            return
        there = conn.run(
            f'r={shlex.quote(remote)}; if [ -d "$r" ]; then echo folder; elif [ -e "$r" ]; then echo file; '
            f'elif [ ! -d "$(dirname -- "$r")" ]; then echo no-parent; fi',
            warn=True,
            hide=True,
            in_stream=False,
        ).stdout.strip()
        if there == "no-parent" and local.is_file():
            raise Exit(f"{target.label}:{remote}: its folder does not exist there; create it first, or name another.")
        if there == "folder" and local.is_file():
            raise Exit(f"{target.label}:{remote} is a folder; name the file, e.g. {remote.rstrip('/')}/{local.name}.")
        if there and there != "no-parent" and not force:
            raise Exit(f"{target.label}:{remote} exists; pass --force to overwrite it.")
        if local.is_file():
            conn.put(str(local), remote)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                archive = Path(tmp) / "upload.tar.gz"
                with tarfile.open(archive, "w:gz") as tar:
                    tar.add(local, arcname=".")
                conn.put(str(archive), ".tfrig-upload.tar.gz")
                conn.run(
                    f"mkdir -p {shlex.quote(remote)} && tar -xzf .tfrig-upload.tar.gz -C {shlex.quote(remote)} "
                    "&& rm -f .tfrig-upload.tar.gz",
                    hide=True,
                    in_stream=False,
                )
        print(f"copied {local} to {target.label}:{remote}")
        return
    local = Path(os.path.expanduser(destination or Path(source).name))
    if local.exists() and not force:
        raise Exit(f"{local} exists here; pass --force to overwrite it.")
    kind = conn.run(
        f"if [ -d {shlex.quote(source)} ]; then echo dir; elif [ -f {shlex.quote(source)} ]; then echo file; fi",
        hide=True,
        warn=True,
        in_stream=False,
    ).stdout.strip()
    if not kind:
        raise Exit(f"{target.label}:{source}: no such file or folder there.")
    if local.is_dir() and kind == "file":
        raise Exit(f"{local} is a folder here; --force overwrites a file, never a folder: name the file.")
    if local.exists() and not local.is_dir() and kind == "dir":
        raise Exit(f"{local} is a file here and {target.label}:{source} a folder; name another destination.")
    if not local.parent.is_dir():
        raise Exit(f"{local.parent} does not exist here; create it first, or name another destination.")
    if c.config.run.dry:
        print(f"would copy {target.label}:{source} to {local}")
        return
    if kind == "file":
        conn.get(source, str(local))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(tmp) / "download.tar.gz"
            conn.run(f"tar -czf .tfrig-download.tar.gz -C {shlex.quote(source)} .", hide=True, in_stream=False)
            conn.get(".tfrig-download.tar.gz", str(archive))
            conn.run("rm -f .tfrig-download.tar.gz", hide=True, in_stream=False)
            local.mkdir(parents=True, exist_ok=True)
            with tarfile.open(archive) as tar:
                tar.extractall(local, filter="data")
    print(f"copied {target.label}:{source} to {local}")


COPY_HELP = {"name": NAME_HELP, "force": "overwrite what is at the destination"}


@task(
    help={
        **COPY_HELP,
        "source": "a file or folder here",
        "destination": "where on the VM (default: its name, in the home folder)",
    }
)
def put(c, source, destination=None, name=None, force=False):
    """Copy a file or folder to the VM."""
    _copy(c, name, source, destination, upload=True, force=force)


@task(
    help={
        **COPY_HELP,
        "source": "a file or folder on the VM",
        "destination": "where here (default: its name, in this folder)",
    }
)
def get(c, source, destination=None, name=None, force=False):
    """Copy a file or folder from the VM."""
    _copy(c, name, source, destination, upload=False, force=force)


ns = Collection("gcp", create, start, stop, delete, down, zones, quota, ssh, tunnel, put, get)
ns.add_task(exec_, name="exec")
ns.add_task(list_, name="list")
ns.add_task(ssh_config, name="ssh-config")
ns.configure(
    {
        "gcp": {
            "project": "",
            "zone": "",
            "region": "",
            "endpoint": "",
            "credentials": "",
            "name": "",
            "gpu": "nvidia-tesla-t4",
            "machine_type": "",
            "image": "ubuntu-24.04",
            "dlvm_family": "common-cu129-ubuntu-2404-nvidia-580",
            "disk_gb": 100,
            "retry_delay": 1.0,
            "poll_interval": 2.0,
            "running_timeout": 300,
            "operation_timeout": 600,
            "ssh_timeout": 300,
        }
    }
)
