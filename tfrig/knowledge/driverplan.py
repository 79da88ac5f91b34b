"""Which NVIDIA driver a host needs and whether it can be installed: pure functions over facts.

Facts come from one pre-flight probe (`PREFLIGHT`); `plan()` turns them and the user's request into
a `DriverPlan` (what to do, in order) or raises `Refusal` with the reason and the options, before
anything on the host changes. The rules and versions are compat.yaml's `cuda_driver_minimums`,
`gce_images.google_driver_installer` and `nvidia_run_installer`.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from packaging.version import InvalidVersion, Version

from tfrig.knowledge.catalog import compat
from tfrig.knowledge.facts import Fact
from tfrig.knowledge.nvsmi import PCI_PROBE, nvidia_on_pci
from tfrig.knowledge.smirun import VERSION_COMMAND

SECURE_BOOT_EFIVAR = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"

# Installed, in the archive (needs current package lists), or missing; apt-cache only reads.
HEADERS_PROBE = (
    'k=$(uname -r); if [ -e "/lib/modules/$k/build" ]; then echo installed; '
    "elif ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then echo no-lists; "
    'elif apt-cache show "linux-headers-$k" >/dev/null 2>&1; then echo available; else echo missing; fi'
)
# `apt-get update`, waiting for the package lists' lock that a first boot's lists refresh holds
# (apt's DPkg::Lock::Timeout covers dpkg's lock only), at most 900 s, as the host scripts do.
LISTS_UPDATE = "sh -c " + shlex.quote(
    "t=0; until apt-get update -q 2>/tmp/tfrig-apt.err; do "
    "if grep -q /var/lib/apt/lists/lock /tmp/tfrig-apt.err && [ $t -lt 900 ]; then "
    "grep -m1 'Could not get lock' /tmp/tfrig-apt.err >&2; sleep 2; t=$((t+2)); "
    "else cat /tmp/tfrig-apt.err >&2; exit 1; fi; done"
)  # one command, as sudo takes it
# nvidia-installer needs a compiler, make, ld and the libc headers (NVIDIA/nvidia-installer misc.c
# check_development_tools: /usr/include/stdio.h); gcc only Recommends libc6-dev, so a stock image
# with --no-install-recommends has none (Google's installer installs libc-dev for this).
# kernel-cc: the gcc the running kernel was built with (its headers' CONFIG_CC_VERSION_TEXT, which
# kbuild compares with the compiler it is given) is there, or the kernel names none (clang, no
# headers yet): GCE's jammy kernels are built with gcc-12 where jammy's cc is gcc-11.
# headers-meta: the headers meta package twin of each kernel meta package that pulled the running
# kernel (linux-image-cloud-amd64 -> linux-headers-cloud-amd64) is installed, or the archive has
# none: a kernel update then brings its headers and DKMS builds the driver for it (the host script's
# headers_metas).
BUILD_TOOLS = ("gcc", "make", "dkms", "libc-headers", "kernel-cc", "headers-meta")
BUILD_TOOLS_PROBE = (
    "for t in gcc make dkms; do command -v $t >/dev/null && echo $t; done; "
    "[ -e /usr/include/stdio.h ] && echo libc-headers; "
    'm=$(sed -n \'s/^CONFIG_CC_VERSION_TEXT="[^"]*gcc[^"]* \\([0-9]*\\)\\.[0-9]*\\.[0-9]*"$/\\1/p\' '
    "/lib/modules/$(uname -r)/build/include/config/auto.conf 2>/dev/null); "
    '{ [ -z "$m" ] || command -v "gcc-$m" >/dev/null; } && echo kernel-cc; '
    "h=headers-meta; for p in $(apt-cache rdepends --installed linux-image-$(uname -r) 2>/dev/null "
    "| sed -n 's/^ *|\\{0,1\\}linux-image-\\([a-z][a-z0-9.+-]*\\)$/linux-headers-\\1/p'); do "
    "dpkg-query -W -f='${db:Status-Abbrev}' $p 2>/dev/null | grep -q '^ii' || ! apt-cache show $p >/dev/null 2>&1 "
    "|| h=; done; echo $h"
)

# Driver packages of every source tfrig knows: Ubuntu's (nvidia-driver-535-server, nvidia-headless-*,
# nvidia-dkms-*), Debian's (nvidia-driver, nvidia-kernel-dkms, nvidia-open-kernel-dkms) and NVIDIA's
# CUDA repository (cuda-drivers*, nvidia-open*). Never the container toolkit (nvidia-container-*,
# libnvidia-container*): it is not the driver.
DRIVER_PACKAGE_GLOBS = (
    "'nvidia-driver*'",
    "'nvidia-headless*'",
    "'nvidia-open*'",
    "'nvidia-dkms*'",
    "'nvidia-kernel-dkms'",
    "'nvidia-kernel-open-dkms'",
    "'cuda-drivers*'",
)

PREFLIGHT = {
    "os": '. /etc/os-release && echo "$ID $VERSION_ID"',
    "arch": "uname -m",
    "kernel": "uname -r",
    "pci": PCI_PROBE,
    "secure_boot": (
        f"if [ -r {SECURE_BOOT_EFIVAR} ]; then od -An -t u1 {SECURE_BOOT_EFIVAR}; "
        "elif [ -d /sys/firmware/efi ]; then echo efi-no-var; else echo legacy-bios; fi"
    ),
    "headers": HEADERS_PROBE,
    "nouveau": "grep -w '^nouveau' /proc/modules",
    "loaded": "cat /sys/module/nvidia/version",
    "userspace": VERSION_COMMAND,
    "tools": BUILD_TOOLS_PROBE,
    "packages": f"dpkg-query -W -f='${{Package}} ${{db:Status-Abbrev}}\\n' {' '.join(DRIVER_PACKAGE_GLOBS)}",
    # The loaded module's licence: "Dual MIT/GPL" for NVIDIA's open module, "NVIDIA" for the
    # proprietary one (MODULE_LICENSE in nv-frontend.c of open-gpu-kernel-modules and of the .run).
    "module_license": "modinfo -F license nvidia",
}

# GPU generations by PCI device id (0x10de vendor); names as Compute Engine offers them.
_DEVICES = {
    "0x102d": ("Tesla K80", "kepler"),
    "0x1bb3": ("Tesla P4", "pascal"),
    "0x15f7": ("Tesla P100", "pascal"),
    "0x15f8": ("Tesla P100", "pascal"),
    "0x15f9": ("Tesla P100", "pascal"),
    "0x1db1": ("Tesla V100", "volta"),
    "0x1db4": ("Tesla V100", "volta"),
    "0x1db5": ("Tesla V100", "volta"),
    "0x1db6": ("Tesla V100", "volta"),
    "0x1eb8": ("Tesla T4", "turing"),
    "0x20b0": ("A100 40GB", "ampere"),
    "0x20b2": ("A100 80GB", "ampere"),
    "0x20b5": ("A100 80GB PCIe", "ampere"),
    "0x20f1": ("A100 PCIe", "ampere"),
    "0x27b8": ("L4", "ada"),
    "0x2330": ("H100 80GB", "hopper"),
    "0x2331": ("H100 PCIe", "hopper"),
    "0x2335": ("H200", "hopper"),
    "0x2901": ("B200", "blackwell"),
}
# compat.yaml cuda_driver_minimums.architecture_drops: the last branch that drives each generation.
_LAST_BRANCH = {"kepler": 470, "maxwell": 580, "pascal": 580, "volta": 580}
_OPEN_MODULE_GENERATIONS = ("turing", "ampere", "ada", "hopper", "blackwell")
# NVIDIA/open-gpu-kernel-modules: the open modules ship from R515 and drive Turing and newer only;
# Blackwell is driven by the open module only, from R570.
_FIRST_OPEN_BRANCH = 515
_BLACKWELL_FIRST_BRANCH = 570
# nvidia-installer's option to pick the module: --kernel-module-type from 555.42.02 (option_table.h;
# 550 and older answer "unrecognized option" and exit 1); before it, -m=kernel-open picks the open
# module's build directory.
_MODULE_TYPE_OPTION_FROM = 555

SUPPORTED_OS = {"ubuntu": ("22.04", "24.04", "26.04"), "debian": ("12", "13")}


class Refusal(Exception):
    """The driver can't be installed as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Gpu:
    address: str
    device: str
    name: str
    generation: str


@dataclass
class DriverPlan:
    version: str
    branch: int
    module: str  # open | proprietary
    method: str  # run | apt
    gpus: list[Gpu]
    packages: list[str] = field(default_factory=list)  # --method apt: what apt installs
    steps: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    already: bool = False
    kept: bool = False  # a working driver that was there before (an image's, the user's) is kept


def driver_versions() -> dict[str, str]:
    """Branch numbers and Google's names for them (lts, prod, nfb) → the release tfrig installs
    (compat.yaml nvidia_driver_branches)."""
    table = compat()["nvidia_driver_branches"]
    versions = {str(row["branch"]): str(row["version"]) for row in table["branches"]}
    versions.update({alias: versions[str(branch)] for alias, branch in table["aliases"].items()})
    return versions


def branch_generations(branch: int) -> list[str]:
    """The GPU generations a branch drives, by tfrig's rules (the last branch of each old
    generation; Blackwell from R570; Ada and Hopper, newer than R470, from R525 and R520)."""
    first = {"ada": 525, "hopper": 520, "blackwell": _BLACKWELL_FIRST_BRANCH}
    order = ("kepler", "maxwell", "pascal", "volta", "turing", "ampere", "ada", "hopper", "blackwell")
    return [
        generation
        for generation in order
        if branch <= _LAST_BRANCH.get(generation, branch) and branch >= first.get(generation, 0)
    ]


def gpus_on_bus(pci: str) -> list[Gpu]:
    found = []
    for entry in nvidia_on_pci(pci):
        address, device = entry.split(" (device ")
        device = device.rstrip(")").lower()
        name, generation = _DEVICES.get(device, (f"NVIDIA device {device}", "unknown"))
        found.append(Gpu(address=address, device=device, name=name, generation=generation))
    return found


def secure_boot_on(fact: Fact) -> bool:
    numbers = fact.out.split()
    return fact.ok and bool(numbers) and numbers[-1] == "1"


def cuda_minimum(cuda: str) -> str:
    """The lowest Linux driver that runs CUDA `cuda` (minor-version compatibility, compat.yaml)."""
    families = compat()["cuda_driver_minimums"]["family_minimums_linux"]
    major, _, minor = cuda.partition(".")
    for key in (f"{major}.{minor}", f"{major}.x"):
        if key in families:
            return str(families[key]["min"])
    raise Refusal(f"CUDA {cuda} is not one tfrig knows a driver minimum for ({', '.join(families)}).")


def check_choice(version: str | None, branch: str | None, cuda: str | None) -> None:
    """The driver the user asked for, checked before any host is asked: a Refusal if it can't be."""
    choose_version([], version, branch)
    if cuda:
        if not re.fullmatch(r"\d+\.\d+", cuda):
            raise Refusal(f"--cuda {cuda}: give a CUDA version such as 12.4.")
        cuda_minimum(cuda)


def choose_version(gpus: list[Gpu], version: str | None, branch: str | None) -> str:
    known = driver_versions()
    if version and branch:
        raise Refusal("Give --version or --branch, not both.")
    if branch:
        if branch not in known:
            raise Refusal(f"--branch {branch}: choose one of {', '.join(sorted(known))}.")
        return known[branch]
    if version:
        if not re.fullmatch(r"\d{3}\.\d+(\.\d+)?", version):
            raise Refusal(f"--version {version} is not an NVIDIA driver version such as 580.159.04.")
        return version
    if any(gpu.generation == "kepler" for gpu in gpus):
        return known["470"]
    return known["lts"]


def installer_flags(version: str, module: str) -> list[str]:
    """nvidia-installer's flags for `version` and `module`, as its option_table.h has them there."""
    flags = ["-s", "--dkms", "--no-cc-version-check"]  # as Google's installer (compat.yaml)
    if int(version.split(".")[0]) >= _MODULE_TYPE_OPTION_FROM:
        flags.append(f"--kernel-module-type={module}")
    elif module == "open":
        flags.append("-m=kernel-open")
    return flags


def choose_module(gpus: list[Gpu], major: int, module: str | None) -> str:
    """The kernel module flavour: the user's, else the installer's own default (open from 560 when
    every GPU takes it, compat.yaml nvidia_run_installer.open_vs_proprietary)."""
    generations = {gpu.generation for gpu in gpus}
    open_ok = generations <= {*_OPEN_MODULE_GENERATIONS, "unknown"}  # an unknown GPU: assumed Turing or newer
    if "blackwell" in generations:
        if major < _BLACKWELL_FIRST_BRANCH:
            raise Refusal(
                f"Blackwell GPUs need driver branch R{_BLACKWELL_FIRST_BRANCH} or newer, not R{major}: "
                "use --branch lts (or 570 and newer)."
            )
        if module == "proprietary":
            raise Refusal("Blackwell GPUs run only the open kernel module: drop --module proprietary.")
    if module == "open":
        if major < _FIRST_OPEN_BRANCH:
            raise Refusal(f"the open kernel module exists from branch R{_FIRST_OPEN_BRANCH} on, not R{major}.")
        if not open_ok:
            old = ", ".join(sorted({g.name for g in gpus if g.generation not in _OPEN_MODULE_GENERATIONS}))
            raise Refusal(f"the open kernel module drives Turing and newer only, not {old}: use --module proprietary.")
        return "open"
    if module == "proprietary":
        return "proprietary"
    if module:
        raise Refusal(f"--module {module}: choose open or proprietary.")
    return "open" if open_ok and (major >= 560 or "blackwell" in generations) else "proprietary"


def apt_packages(os_id: str, branch: int, module: str) -> list[str]:
    """What `--method apt` installs for a branch: Ubuntu's own server packages, or NVIDIA's CUDA
    repository on Debian (Debian's archive has one branch per release, not the one asked for), the
    branch's pinning package first (NVIDIA's driver installation guide)."""
    if os_id == "ubuntu":
        flavour = "-open" if module == "open" else ""
        return [f"nvidia-headless-{branch}-server{flavour}", f"nvidia-utils-{branch}-server"]
    return [f"nvidia-driver-pinning-{branch}", "nvidia-open" if module == "open" else "cuda-drivers"]


def tensorflow_floor(cuda: str | None = None) -> str:
    """The lowest driver that runs the newest TensorFlow tfrig installs on the GPU (and CUDA
    `cuda`, where asked)."""
    from tfrig.knowledge import resolver

    newest = resolver.builds()[0]
    floor = resolver.driver_minimum(newest.cuda, newest.tf)
    if cuda and Version(cuda_minimum(cuda)) > Version(floor):
        return cuda_minimum(cuda)
    return floor


def working_driver(facts: dict[str, Fact], gpus: list[Gpu], cuda: str | None) -> str | None:
    """The driver there already, where it works and will do: the loaded module's version is what
    nvidia-smi reports for every GPU on the bus, it drives their generations, and it meets the
    TensorFlow floor. None otherwise."""
    loaded = facts["loaded"].out.strip() if facts["loaded"].ok else ""
    reported = facts["userspace"].out.split() if facts["userspace"].ok else []
    if not loaded or len(reported) < len(gpus) or any(version != loaded for version in reported):
        return None
    try:
        have = Version(loaded)
    except InvalidVersion:
        return None
    major = have.major
    for gpu in gpus:
        last = _LAST_BRANCH.get(gpu.generation)
        if (last is not None and major > last) or (gpu.generation == "blackwell" and major < _BLACKWELL_FIRST_BRANCH):
            return None
    return loaded if have >= Version(tensorflow_floor(cuda)) else None


def _major(version: str | None) -> int | None:
    return int(version.split(".")[0]) if version and version.split(".")[0].isdigit() else None


def plan(
    facts: dict[str, Fact],
    *,
    version: str | None = None,
    branch: str | None = None,
    method: str = "run",
    cuda: str | None = None,
    hold_kernel: bool = False,
    module: str | None = None,
) -> DriverPlan:
    """What installing the driver takes on this host, or a Refusal before anything changes."""
    os_id, _, os_version = facts["os"].out.strip().partition(" ")
    if os_version not in SUPPORTED_OS.get(os_id, ()):
        supported = "; ".join(f"{name.title()} {', '.join(v)}" for name, v in SUPPORTED_OS.items())
        raise Refusal(f"{facts['os'].out.strip() or 'this OS'} is not supported for the driver install ({supported}).")
    arch = facts["arch"].out.strip()
    if arch != "x86_64":
        raise Refusal(f"{arch}: NVIDIA's data-centre driver installers here are for x86_64 only.")
    gpus = gpus_on_bus(facts["pci"].out)
    if not gpus:
        raise Refusal(
            "no NVIDIA GPU on the PCI bus: nothing to install a driver for "
            "(on Compute Engine: create the VM with --gpu)."
        )
    generations = {gpu.generation for gpu in gpus}
    apt_installed = [line.split()[0] for line in facts["packages"].out.splitlines() if line.split()[1:2] == ["ii"]]
    kept = working_driver(facts, gpus, cuda) if not (version or branch) else None
    if kept:
        # No driver was asked for, and the one there works: keep it (no install, no reboot), the
        # way it came (apt packages, else a .run), its module as loaded.
        license_text = facts["module_license"].out.strip() if "module_license" in facts else ""
        kept_module = "open" if "GPL" in license_text else "proprietary" if "NVIDIA" in license_text else "unknown"
        result = DriverPlan(
            version=kept,
            branch=int(kept.split(".")[0]),
            module=kept_module,
            method="apt" if apt_installed else "run",
            gpus=gpus,
            already=True,
            # Not tfrig's own default .run: the image's, or the user's (packages always are).
            kept=bool(apt_installed) or kept != choose_version(gpus, None, None),
        )
        result.steps = ["hold-kernel"] if hold_kernel else []
        return result
    if (
        method == "run"
        and apt_installed
        and (version or branch)
        and not (facts["loaded"].ok and facts["loaded"].out.strip() == version)
    ):
        # Never a .run over packages: what is asked comes the way the driver there came.
        if version:
            raise Refusal(
                f"the driver there came from apt packages ({', '.join(apt_installed)}): give --branch "
                f"{version.split('.')[0]} to change it with apt, or `inv driver.uninstall` first for the .run of "
                f"{version}."
            )
        method = "apt"
    chosen = choose_version(gpus, version, branch)
    major = int(chosen.split(".")[0])
    if method == "apt" and version:
        raise Refusal("--method apt installs what the repository has for a branch: give --branch, not --version.")
    for gpu in gpus:
        last = _LAST_BRANCH.get(gpu.generation)
        if last is not None and major > last:
            raise Refusal(
                f"{gpu.name} ({gpu.generation.title()}) is driven by branch R{last} at most, not {chosen}; "
                f"use --branch {last}"
                + (" (the K80 is also retired on Compute Engine)" if gpu.generation == "kepler" else "")
                + "."
            )
    if cuda:
        minimum = cuda_minimum(cuda)
        if Version(chosen) < Version(minimum):
            raise Refusal(
                f"driver {chosen} is below {minimum}, the minimum for CUDA {cuda}; "
                "use --branch lts or a newer --version."
            )
    chosen_module = choose_module(gpus, major, module)
    result = DriverPlan(version=chosen, branch=major, module=chosen_module, method=method, gpus=gpus)
    if method == "apt":
        result.packages = apt_packages(os_id, major, chosen_module)
    if "unknown" in generations:
        result.notes.append("a GPU tfrig does not know by device id: assuming Turing or newer")
    if "kepler" in generations:
        result.notes.append("current TensorFlow wheels need compute capability 6.0: a K80 (3.7) can't run them")

    loaded = facts["loaded"].out.strip() if facts["loaded"].ok else None
    userspace = (
        facts["userspace"].out.strip().splitlines()[0]
        if facts["userspace"].ok and facts["userspace"].out.strip()
        else None
    )
    if method == "apt":
        # The repository decides the exact version: done when its branch is loaded and in use.
        done = _major(loaded) == major and _major(userspace) == major and loaded == userspace
        if done:
            result.version = str(loaded)
    else:
        done = loaded == chosen and userspace == chosen
    if done:
        result.already = True
        result.steps = ["hold-kernel"] if hold_kernel else []
        return result

    if secure_boot_on(facts["secure_boot"]):
        if os_id != "ubuntu":
            raise Refusal(
                "Secure Boot is on, and Debian has no NVIDIA module signed by its key (a module signed with "
                "a key of your own needs it enrolled as a MOK at the console, which a VM doesn't have): "
                "use an Ubuntu image (its signed prebuilt modules) or --image accelerator, or turn Secure "
                "Boot off where no policy requires Shielded VMs."
            )
        if version:
            raise Refusal(
                "Secure Boot is on: the driver comes as Ubuntu's signed prebuilt modules of a branch, "
                f"not NVIDIA's .run of {version}: give --branch {version.split('.')[0]}."
            )
        # Canonical's signed modules for the running kernel and the driver's user space without DKMS
        # (a DKMS build is unsigned). The names are as public setups use them (Google's Confidential
        # GPU steps: linux-modules-nvidia-580-server-open-gcp-6.17 with nvidia-utils-580-server;
        # `ubuntu-drivers --gpgpu`'s choice: nvidia-headless-no-dkms-595-server-open); Ubuntu's
        # archive itself was not read here.
        kernel = facts["kernel"].out.strip()
        flavour = "-open" if chosen_module == "open" else ""
        result.method = "signed"
        result.packages = [
            f"linux-modules-nvidia-{major}-server{flavour}-{kernel}",
            f"nvidia-headless-no-dkms-{major}-server{flavour}",
            f"nvidia-utils-{major}-server",
        ]
        result.notes.append("Secure Boot is on: Ubuntu's signed prebuilt modules for the running kernel")
        if loaded and _major(loaded) == major and loaded == userspace and apt_installed:
            result.already = True
            result.steps = ["hold-kernel"] if hold_kernel else []
            return result
        result.steps = ["install", *(["hold-kernel"] if hold_kernel else []), "verify"]
        return result
    headers = facts["headers"].out.strip()
    if headers == "no-lists":
        raise Refusal(
            "can't read the package archive (apt-get update failed) to find the kernel headers: "
            "fix apt's network or sources and run again."
        )
    if headers == "missing":
        raise Refusal(
            f"no kernel headers for the running kernel {facts['kernel'].out.strip()} in the package archive, "
            "so the driver module can't be built: boot a distribution kernel (e.g. linux-image-gcp or "
            "linux-image-cloud-amd64) and run again."
        )
    if method == "run" and apt_installed:
        raise Refusal(
            f"driver packages from apt are installed ({', '.join(apt_installed)}); the .run installer would "
            "fight them: run `inv driver.uninstall` first, or use --method apt."
        )
    if method == "apt" and userspace and not apt_installed:
        raise Refusal(
            f"driver {userspace} is installed by NVIDIA's .run installer; apt packages would fight it: "
            "run `inv driver.uninstall` first, or use --method run."
        )
    tools = set(facts["tools"].out.split())
    if not set(BUILD_TOOLS) <= tools or headers == "available":
        result.steps.append("build-tools")
    if facts["nouveau"].ok and facts["nouveau"].out.strip():
        result.steps += ["blacklist-nouveau", "reboot"]
    result.steps.append("install")
    if loaded and (_major(loaded) != major if method == "apt" else loaded != chosen):
        target = f"branch R{major}" if method == "apt" else chosen
        result.notes.append(f"driver {loaded} is loaded now; it is replaced, and a reboot loads {target}")
        result.steps.append("reboot")
    if hold_kernel:
        result.steps.append("hold-kernel")
    result.steps.append("verify")
    return result
