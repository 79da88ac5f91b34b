# Stand-in for nvidia-installer, run by the NVIDIA-Linux-x86_64-VER.run files of the test bed's
# download site (tests/testbed/nvidia_site.py). What it does as the real one does (NVIDIA/
# nvidia-installer at the version's tag): the command line (option_table.h, nvgetopt.c: an
# unknown option is "unrecognized option", "Invalid commandline", exit 1), root only, the checks
# before a build (misc.c check_development_tools: cc, make, ld, then /usr/include/stdio.h;
# kernel.c: the kernel source tree), the log at /var/log/nvidia-installer.log, exit 0 on success
# and 1 on any failure (nvidia-installer.c main).
# What it simulates: no kernel module is built (the .ko is a text file, "stand-in nvidia.ko VERSION
# TYPE") and none can load in a container; the module "loads" by writing /sys/module/nvidia/version
# where the host was given a writable /sys/module (a GPU host): at the end of the install, and at
# each boot (the stock image's boot hook loads the running kernel's nvidia.ko). A loaded module of
# another version is unloaded first (rmmod, which the stand-in refuses while the GPU is in use),
# else the silent install aborts, as kernel.c check_for_unloaded_kernel_module does (580.95.05)
# unless --allow-installation-with-running-driver (545 and later) lets it go on for the next boot.
# DKMS is the real one, over a stand-in source tree whose Makefile "builds" the module. The user
# space is an nvidia-smi stand-in for the GPUs on the PCI bus.
import datetime
import os
import pathlib
import re
import shutil
import subprocess
import sys

VERSION = os.environ["STAND_IN_VERSION"]
OPTIONS = [line.split(",") for line in os.environ["STAND_IN_OPTIONS"].split(";") if line]
PAYLOAD = os.environ["STAND_IN_PAYLOAD"]  # folder with nvidia-smi and this file
MAJOR = int(VERSION.split(".")[0])
STATE = "/var/lib/nvidia-stand-in"
log_lines = []


def fail(message):
    print(f"\nERROR: {message}\n", file=sys.stderr)
    log_lines.append(f"ERROR: {message}")
    write_log()
    sys.exit(1)


def write_log():
    if os.geteuid() != 0:
        return
    with open(settings.get("log-file-name", "/var/log/nvidia-installer.log"), "w") as log:
        log.write("nvidia-installer log file '/var/log/nvidia-installer.log'\n")
        log.write(f"creation time: {datetime.datetime.now():%a %b %d %H:%M:%S %Y}\n")
        log.write(f"installer version: {VERSION}\n(stand-in from tfrig's test bed: no module is built)\n\n")
        log.write("\n".join(log_lines) + "\n")


def parse(argv):
    longs = {name: kind for name, _, kind in OPTIONS}
    shorts = {short: name for name, short, _ in OPTIONS if short}
    found = {}
    args = iter(argv)
    for arg in args:
        name, eq, value = arg.lstrip("-").partition("=")
        option, negate = None, False
        if len(name) == 1 and arg.startswith("-"):
            option = shorts.get(name)
        elif name in longs:
            option = name
        elif name.startswith("no-") and longs.get(name[3:]) == "bool":
            option, negate = name[3:], True
        if option is None or not arg.startswith("-"):
            print(f'nvidia-installer: unrecognized option: "{arg}"', file=sys.stderr)
            print(
                "\nERROR: Invalid commandline, please run `nvidia-installer --help` for usage information.\n",
                file=sys.stderr,
            )
            sys.exit(1)
        if longs[option] == "arg" and not eq:
            value = next(args, "")
        found[option] = False if negate else (value if longs[option] == "arg" else True)
    return found


def gpus_support_open():
    """Open modules drive Turing and newer only (NVIDIA's open-gpu-kernel-modules README)."""
    old = {"0x102d", "0x1bb3", "0x15f7", "0x15f8", "0x15f9", "0x1db1", "0x1db4", "0x1db5", "0x1db6"}
    root = "/sys/bus/pci/devices"
    for entry in os.listdir(root) if os.path.isdir(root) else []:
        try:
            vendor = pathlib.Path(f"{root}/{entry}/vendor").read_text().strip()
            device = pathlib.Path(f"{root}/{entry}/device").read_text().strip()
        except OSError:
            continue
        if vendor == "0x10de" and device in old:
            return False
    return True


def module_type():
    chosen = settings.get("kernel-module-type")
    if chosen is not None and chosen not in ("open", "proprietary"):
        fail(f"Invalid kernel module type '{chosen}'; valid types are 'open' and 'proprietary'.")
    directory = settings.get("kernel-module-build-directory")
    if directory is not None:
        if directory == "kernel-open" and MAJOR < 515:  # open modules ship from R515 on
            fail("The kernel module build directory 'kernel-open' does not exist in this package.")
        if directory not in ("kernel", "kernel-open"):
            fail(f"The kernel module build directory '{directory}' does not exist in this package.")
        return "open" if directory == "kernel-open" else "proprietary"
    if chosen:
        return chosen
    # From 560 the installer picks the open module when every GPU supports it.
    return "open" if MAJOR >= 560 and gpus_support_open() else "proprietary"


def loaded_version():
    try:
        return open("/sys/module/nvidia/version").read().strip()
    except OSError:
        return None


def install_file(source, target, mode=0o755):
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copyfile(source, target)
    os.chmod(target, mode)


def uninstall():
    if not os.path.exists(f"{STATE}/version"):
        fail("No NVIDIA driver is currently installed.")
    if shutil.which("dkms"):  # unregistered first: DKMS needs the source's dkms.conf for it
        subprocess.run(
            ["dkms", "remove", "-m", "nvidia", "-v", pathlib.Path(f"{STATE}/version").read_text().strip(), "--all"],
            capture_output=True,
        )
    for path in pathlib.Path(f"{STATE}/files").read_text().split():
        if os.path.lexists(path):
            os.remove(path)
    shutil.rmtree(STATE)
    log_lines.append(
        "Uninstallation of existing driver: NVIDIA Accelerated Graphics Driver for Linux-x86_64 is complete."
    )
    write_log()


settings = {}
settings = parse(sys.argv[1:])
if os.geteuid() != 0:
    print("\nERROR: nvidia-installer must be run as root\n", file=sys.stderr)
    sys.exit(1)
if settings.get("uninstall"):
    uninstall()
    sys.exit(0)
kind = module_type()
log_lines.append(f"Kernel module type: {kind}")
skip_module_load = False
if loaded_version() is not None:
    subprocess.run(["rmmod", "nvidia"], capture_output=True)
    if loaded_version() is not None:
        warning = (
            "An NVIDIA kernel module 'nvidia' appears to be already loaded in your kernel.  This may be because it "
            "is in use (for example, by an X server, a CUDA program, or the NVIDIA Persistence Daemon), but this "
            "may also happen if your kernel was configured without support for module unloading."
        )
        print(f"\nWARNING: {warning}\n", file=sys.stderr)
        log_lines.append(f"WARNING: {warning}")
        if not settings.get("allow-installation-with-running-driver"):  # silent: the default answer, Abort
            fail(
                "Installation has failed.  Please see the file '/var/log/nvidia-installer.log' for details.  You "
                "may find suggestions on fixing installation problems in the README available on the Linux driver "
                "download page at www.nvidia.com."
            )
        log_lines.append("Continuing installation despite the presence of a loaded NVIDIA kernel module.")
        log_lines.append("Kernel module load tests will be skipped.")
        skip_module_load = True
path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
for tool, package in (("cc", "gcc"), ("make", "make"), ("ld", "binutils")):
    if not shutil.which(tool, path=path):
        fail(
            f"Unable to find the development tool `{tool}` in your path; please make sure that you have the "
            f"package '{package}' installed.  If {package} is installed on your system, then please check that "
            f"`{tool}` is in your PATH."
        )
if not os.path.exists("/usr/include/stdio.h"):
    fail(
        "You do not appear to have libc header files installed on your system.  "
        "Please install your distribution's libc development package."
    )
kernel = subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip()  # the booted one
source = settings.get("kernel-source-path") or f"/lib/modules/{kernel}/build"
if not os.path.isdir(source):
    fail(
        "Unable to find the kernel source tree for the currently running kernel.  Please make sure you have "
        "installed the kernel source files for your kernel and that they are properly configured; on Red Hat "
        "Linux systems, for example, be sure you have the 'kernel-source' or 'kernel-devel' RPM installed.  If "
        "you know the correct kernel source files are installed, you may specify the kernel source path with "
        "the '--kernel-source-path' command line option."
    )


# The build itself (kbuild, run by nvidia-installer with $CC, else cc: misc.c): a compiler other than
# the kernel's (the headers' CONFIG_CC_VERSION_TEXT) draws kbuild's warning, and then fails the build,
# as gcc-11 does on jammy's gcc-12 kernels ("unrecognized command-line option
# '-ftrivial-auto-var-init=zero'", pop-os/pop#3117). The stand-in compares the major versions.
def _major(text):
    found = re.findall(r"(\d+)\.\d+\.\d+", text or "")
    return found[-1] if found else None


config = pathlib.Path(source, "include/config/auto.conf")
built_by = re.search(r'^CONFIG_CC_VERSION_TEXT="(.*)"$', config.read_text(), re.M) if config.exists() else None
compiler = os.environ.get("CC") or "cc"
using = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
if built_by and using and _major(built_by[1]) != _major(using[0]):
    log_lines += [
        "warning: the compiler differs from the one used to build the kernel",
        f"  The kernel was built by: {built_by[1]}",
        f"  You are using:           {using[0]}",
        f"{compiler}: error: unrecognized command-line option (a flag of the kernel's compiler)",
    ]
    fail(
        'An error occurred while performing the step: "Building kernel modules". See /var/log/nvidia-installer.log for details.'
    )


def register_with_dkms():
    """The module's source for DKMS: a Makefile that "builds" the stand-in module, so that the real
    DKMS builds it for a kernel installed later (through its /etc/kernel hooks, given that kernel's
    headers). False when `dkms add` fails."""
    os.makedirs(f"/usr/src/nvidia-{VERSION}", exist_ok=True)
    with open(f"/usr/src/nvidia-{VERSION}/dkms.conf", "w") as conf:
        conf.write(
            f'PACKAGE_NAME="nvidia"\nPACKAGE_VERSION="{VERSION}"\nBUILT_MODULE_NAME[0]="nvidia"\n'
            'DEST_MODULE_LOCATION[0]="/kernel/drivers/video"\nMAKE[0]="make"\nCLEAN="true"\nAUTOINSTALL="yes"\n'
        )
    with open(f"/usr/src/nvidia-{VERSION}/Makefile", "w") as makefile:
        makefile.write(f"nvidia.ko:\n\techo stand-in nvidia.ko {VERSION} {kind} > nvidia.ko\n")
    added = subprocess.run(["dkms", "add", "-m", "nvidia", "-v", VERSION], capture_output=True, text=True)
    log_lines.append(f"dkms add: {added.stdout.strip()} {added.stderr.strip()}")
    if added.returncode != 0:
        return False
    done = subprocess.run(
        ["dkms", "install", "-m", "nvidia", "-v", VERSION, "-k", kernel], capture_output=True, text=True
    )
    log_lines.append(f"dkms install: {done.stdout.strip()} {done.stderr.strip()}")
    return True


# --dkms before 520 installs the module through DKMS, and a DKMS install that can't be done fails
# the install; from 520 on the module is installed first and then registered with DKMS (misc.c
# dkms_register_module: `dkms ldtarball`, `dkms install`): no dkms is nothing to do, a failed
# registration an error message, and the install goes on either way.
use_dkms = bool(settings.get("dkms")) and shutil.which("dkms", path=path) is not None
if settings.get("dkms") and MAJOR < 520 and not (use_dkms and register_with_dkms()):
    fail(
        "Failed to install the kernel module through DKMS. No kernel module was installed; please try "
        "installing again without DKMS, or check the DKMS logs for more information."
    )
if os.path.exists(f"{STATE}/version"):  # as nvidia-installer: the existing driver is uninstalled first
    uninstall()
    log_lines.append("Uninstalled the existing driver before installing this one.")
module = f"/lib/modules/{kernel}/kernel/drivers/video/nvidia.ko"
files = ["/usr/bin/nvidia-smi", "/usr/bin/nvidia-uninstall", module]
install_file(f"{PAYLOAD}/nvidia-smi", "/usr/bin/nvidia-smi")
install_file(f"{PAYLOAD}/installer.py", f"{STATE}/installer.py", 0o644)
os.makedirs(STATE, exist_ok=True)
with open("/usr/bin/nvidia-uninstall", "w") as uninstaller:
    options = ";".join(",".join(option) for option in OPTIONS)
    uninstaller.write(
        f"#!/bin/sh\nSTAND_IN_VERSION={VERSION} STAND_IN_OPTIONS='{options}' STAND_IN_PAYLOAD={STATE} "
        f'exec python3 {STATE}/installer.py --uninstall "$@"\n'
    )
os.chmod("/usr/bin/nvidia-uninstall", 0o755)
os.makedirs(os.path.dirname(module), exist_ok=True)
with open(module, "w") as ko:
    ko.write(f"stand-in nvidia.ko {VERSION} {kind}\n")
with open(f"{STATE}/version", "w") as record:
    record.write(VERSION + "\n")
with open(f"{STATE}/module-type", "w") as record:
    record.write(kind + "\n")
with open(f"{STATE}/files", "w") as record:
    record.write(
        "\n".join([*files, f"/usr/src/nvidia-{VERSION}/dkms.conf", f"/usr/src/nvidia-{VERSION}/Makefile"]) + "\n"
    )
if use_dkms and MAJOR >= 520 and not register_with_dkms():
    log_lines.append("ERROR: Failed to load DKMS tarball (dkms add failed)")
if skip_module_load:
    log_lines.append(f"Kernel module {loaded_version()} is loaded; {VERSION} loads at the next boot (simulated)")
elif os.access("/sys/module", os.W_OK):  # loads nvidia-drm, and with it nvidia (install-from-cwd.c)
    os.makedirs("/sys/module/nvidia", exist_ok=True)
    with open("/sys/module/nvidia/version", "w") as version:
        version.write(VERSION + "\n")
    for node in ("/dev/nvidiactl", "/dev/nvidia0"):
        open(node, "a").close()
    log_lines.append("Kernel module load: loaded (simulated)")
else:
    log_lines.append("Kernel module load: no GPU here (no writable /sys/module), not loaded (simulated)")
log_lines.append(
    f"Installation of the NVIDIA Accelerated Graphics Driver for Linux-x86_64 (version: {VERSION}) is now complete."
)
write_log()
