"""The whole driver path on stock-image hosts over real SSH, against the NVIDIA site stand-in.

What is real: SSH, sudo, apt installing gcc, make, dkms and libc6-dev from Debian's archive while
unattended-upgrades holds the dpkg lock, the checksum fetched from the site and checked, tfrig's
script choosing nvidia-installer's flags, the reboot (the container restarts) and the resume.
What is simulated (tests/testbed/nvidia_site.py, nvidia/installer.py): the `.run` installers are
stand-ins that take exactly their version's options and refuse as nvidia-installer does, but build
no module; the kernel headers come from the site's apt repository (Debian has none for this
machine's kernel); the module "loads" by writing /sys/module/nvidia/version on a GPU host, and
nvidia-smi is a stand-in that answers for the PCI tree the test gives the host.
"""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.slow

DOWNLOADS = ("470.256.02", "535.288.01", "580.159.04")
APT_WAIT = "apt-get -o DPkg::Lock::Timeout=120"


@pytest.fixture
def site(nvidia_site):
    for version in DOWNLOADS:
        nvidia_site.add(version)
    return nvidia_site


def install(tfrig, host, site, ssh_env, *args):
    return tfrig("driver.install", "--download-base", site.base_url, *args, "-H", host.spec(), env=ssh_env)


def installer_args(host) -> str:
    return host.exec("cat /var/log/nvidia-installer.log; cat /var/lib/nvidia-stand-in/module-type")[1]


def test_the_stand_in_refuses_what_nvidia_installer_refuses(sshd_factory, site):
    host = sshd_factory(boot_lock=0)
    run = "/tmp/NVIDIA-Linux-x86_64-535.288.01.run"
    code, out = host.exec(
        f"curl -fsS -o {run} {site.base_url}/XFree86/Linux-x86_64/535.288.01/NVIDIA-Linux-x86_64-535.288.01.run"
        f" && sh {run} -s --kernel-module-type=open"
    )
    assert code == 1 and 'unrecognized option: "--kernel-module-type=open"' in out  # 555 and later only
    code, out = host.exec(f"sh {run} -s --dkms --no-cc-version-check -m=kernel-open")
    assert code == 1 and "Unable to find the development tool `cc`" in out
    assert "Unable to find the development tool `cc`" in host.exec("cat /var/log/nvidia-installer.log")[1]


def test_k80_gets_r470_proprietary_checksum_verified_then_a_rerun_does_nothing(tfrig, gpu_host, site, ssh_env):
    bad = "470.239.06"
    site.add(bad)
    (site.folder / "XFree86/Linux-x86_64" / bad / f"NVIDIA-Linux-x86_64-{bad}.run.sha256sum").write_text(
        "0" * 64 + f"  NVIDIA-Linux-x86_64-{bad}.run\n"
    )
    host = gpu_host("k80")
    tampered = install(tfrig, host, site, ssh_env, "--version", bad)
    assert tampered.code == 1
    assert f"NVIDIA-Linux-x86_64-{bad}.run does not match its SHA-256 {'0' * 64}; removed it" in tampered.err
    assert host.exec("test -e /usr/bin/nvidia-smi")[0] != 0

    first = install(tfrig, host, site, ssh_env)
    assert first.code == 0, first.text
    assert "driver 470.256.02 (proprietary kernel module, NVIDIA's .run installer) for Tesla K80" in first.out
    assert "verified: driver 470.256.02, 1 GPU(s) visible" in first.out
    assert "proprietary" in installer_args(host)
    log = host.exec("cat /var/log/nvidia-installer.log")[1]
    assert "installer version: 470.256.02" in log and "is now complete" in log

    again = install(tfrig, host, site, ssh_env)
    assert again.code == 0 and "already done: driver 470.256.02 loaded" in again.out


def test_t4_branch_535_then_the_lts_open_module_in_place_then_status_and_uninstall(tfrig, gpu_host, site, ssh_env):
    host = gpu_host("t4")
    old = install(tfrig, host, site, ssh_env, "--branch", "535")
    assert old.code == 0, old.text
    assert "driver 535.288.01 (proprietary kernel module" in old.out
    assert "Kernel module type: proprietary" in installer_args(host)

    new = install(tfrig, host, site, ssh_env)
    assert new.code == 0, new.text
    assert "driver 535.288.01 is loaded now; it is replaced, and a reboot loads 580.159.04" in new.out
    # Nothing had the GPU open: nvidia-installer unloaded 535 and loaded 580, so no reboot was needed.
    assert "driver 580.159.04 is loaded in place of the old one: no reboot needed" in new.out
    assert "verified: driver 580.159.04, 1 GPU(s) visible" in new.out
    assert "Kernel module type: open" in installer_args(host)
    host.container.reload()
    assert host.container.attrs["RestartCount"] == 0

    assert "already done: driver 580.159.04 loaded" in install(tfrig, host, site, ssh_env).out
    status = tfrig("driver.status", "-H", host.spec(), env=ssh_env)
    assert status.code == 0 and "driver 580.159.04 loaded" in status.out
    assert "dkms: nvidia/580.159.04" in status.out

    # The user's container toolkit is not the driver: uninstall leaves it (dummy packages of its names).
    for package in ("nvidia-container-toolkit", "libnvidia-container1"):
        code, out = host.exec(
            f"mkdir -p /tmp/{package}/DEBIAN && printf 'Package: {package}\\nVersion: 1.17.8-1\\n"
            f"Architecture: all\\nMaintainer: t <t@t.invalid>\\nDescription: stand-in\\n' "
            f"> /tmp/{package}/DEBIAN/control && dpkg-deb -b /tmp/{package} /tmp/{package}.deb"
            f" && apt-get -o DPkg::Lock::Timeout=60 install -y -q /tmp/{package}.deb"  # the boot lock is held again
        )
        assert code == 0, out
    removed = tfrig("driver.uninstall", "--yes", "-H", host.spec(), env=ssh_env)
    assert removed.code == 0, removed.text
    assert "removed; reboot to unload the module" in removed.out
    assert host.exec("test -e /usr/bin/nvidia-smi")[0] != 0
    kept = host.exec(
        "dpkg-query -W -f='${Package} ${db:Status-Abbrev}\\n' nvidia-container-toolkit libnvidia-container1"
    )
    assert kept[1].split() == ["libnvidia-container1", "ii", "nvidia-container-toolkit", "ii"], kept


def test_v100_unpublished_checksum_needs_unverified_then_580_proprietary(tfrig, gpu_host, site, ssh_env):
    mirror_only = "550.163.01"
    site.add(mirror_only, checksum=False)  # only tesla/, no .sha256sum: like a mirror without checksums
    host = gpu_host("v100")
    refused = install(tfrig, host, site, ssh_env, "--version", mirror_only)
    assert refused.code == 1
    assert "no checksum published at" in refused.err and "--sha256" in refused.err and "--unverified" in refused.err

    unverified = install(tfrig, host, site, ssh_env, "--version", mirror_only, "--unverified")
    assert unverified.code == 0, unverified.text
    assert "verified: driver 550.163.01" in unverified.out

    lts = install(tfrig, host, site, ssh_env, "--branch", "lts")
    assert lts.code == 0, lts.text
    assert "driver 580.159.04 (proprietary kernel module" in lts.out  # Volta has no open module
    assert "Kernel module type: proprietary" in installer_args(host)


def test_apt_method_on_debian_reaches_its_fixed_point_after_one_reboot(tfrig, gpu_host, site, ssh_env):
    """NVIDIA's CUDA repository (the stand-in: signed, with 580 and 590 packages), pinned to the
    branch: the repository's 580.95.05 is the target, one reboot loads it, a rerun does nothing."""
    host = gpu_host("t4")
    env = {**ssh_env, "INVOKE_DRIVER_APT_REPO_BASE": site.cuda_repo}
    first = tfrig("driver.install", "--method", "apt", "--branch", "580", "-H", host.spec(), env=env)
    assert first.code == 0, first.text
    assert (
        "driver branch R580 (open kernel module, apt: nvidia-driver-pinning-580 nvidia-open) for Tesla T4" in first.out
    )
    assert "rebooting: the new driver's module is not loaded yet" in first.out
    assert "verified after the reboot: driver 580.95.05, 1 GPU(s) visible" in first.out
    installed = host.exec(
        "dpkg-query -W -f='${Package} ${Version}\\n' nvidia-open cuda-keyring firmware-nvidia-gsp nvidia-driver-pinning-580"
    )[1].split()
    assert installed == [  # not the newer 590, for any part of the driver
        "cuda-keyring",
        "1.1-1",
        "firmware-nvidia-gsp",
        "580.95.05-1",
        "nvidia-driver-pinning-580",
        "580.95.05-1",
        "nvidia-open",
        "580.95.05-1",
    ]
    # The driver's packages stay out of unattended upgrades (the container toolkit does not).
    kept_out = host.exec("cat /etc/apt/apt.conf.d/51tfrig-nvidia-driver")[1]
    assert '"nvidia-(?!container)";' in kept_out and '"libnvidia-(?!container)";' in kept_out
    host.container.reload()
    assert host.container.attrs["RestartCount"] == 1

    again = tfrig("driver.install", "--method", "apt", "--branch", "580", "-H", host.spec(), env=env)
    assert again.code == 0, again.text
    assert "already done: driver 580.95.05 loaded" in again.out
    host.container.reload()
    assert host.container.attrs["RestartCount"] == 1  # no second reboot, ever

    # The uninstall takes what the repository install brought beside the driver, so a later .run
    # meets no libcuda1 or GSP firmware of another version, and the unattended-upgrades file.
    removed = tfrig("driver.uninstall", "--yes", "-H", host.spec(), env=env)
    assert removed.code == 0, removed.text
    left = host.exec(
        "dpkg-query -W -f='${Package} ${db:Status-Abbrev}\\n' 'nvidia-*' libcuda1 'firmware-nvidia-gsp*' "
        "2>/dev/null | awk '$2 == \"ii\"'"
    )[1]
    assert left.strip() == ""
    assert host.exec("test -e /etc/apt/apt.conf.d/51tfrig-nvidia-driver")[0] == 1


def test_a_working_driver_that_was_there_is_kept_with_no_install_and_no_reboot(tfrig, gpu_host, site, ssh_env):
    site.add("570.211.01")
    host = gpu_host("t4")
    there = install(tfrig, host, site, ssh_env, "--branch", "570")  # someone's earlier install
    assert there.code == 0, there.text
    host.container.reload()
    restarts = host.container.attrs["RestartCount"]
    kept = install(tfrig, host, site, ssh_env)
    assert kept.code == 0, kept.text
    assert "[" in kept.out and "kept: 570.211.01 (preinstalled; " in kept.out
    assert "step install" not in kept.out and "rebooting" not in kept.out
    host.container.reload()
    assert host.container.attrs["RestartCount"] == restarts
    # Asked for by name, the lts branch replaces it.
    asked = install(tfrig, host, site, ssh_env, "--branch", "lts")
    assert asked.code == 0, asked.text
    assert "driver 570.211.01 is loaded now; it is replaced, and a reboot loads 580.159.04" in asked.out


def test_a_driver_dkms_did_not_register_is_said_not_claimed(tfrig, gpu_host, site, ssh_env):
    """From 520 nvidia-installer installs the module and then registers it with DKMS, a failed
    registration only an error in its log: the install must not pass for done, or the next kernel
    has no driver."""
    host = gpu_host("t4")
    assert tfrig("driver.prepare", "-H", host.spec(), env=ssh_env).code == 0  # gcc, make, dkms, headers
    code, out = host.exec(
        'real=$(command -v dkms) && mv "$real" "$real.real" && '
        'printf \'#!/bin/sh\\n[ "$1" = add ] && exit 1\\nexec %s.real "$@"\\n\' "$real" > "$real" && chmod +x "$real"'
    )
    assert code == 0, out
    result = install(tfrig, host, site, ssh_env)
    assert result.code == 1
    assert "the driver is installed but not registered with DKMS (dkms status has no nvidia/580.159.04)" in result.err
    assert "ERROR: Failed to load DKMS tarball" in host.exec("cat /var/log/nvidia-installer.log")[1]


def test_a_kernel_built_by_another_gcc_is_built_for_with_that_gcc(tfrig, gpu_host, site, ssh_env):
    """As GCE's jammy kernels (built with gcc-12, where jammy's cc is gcc-11): the module is built
    with the kernel's own compiler, which the build tools bring; with cc it would fail as kbuild does."""
    host = gpu_host("t4")
    assert tfrig("driver.prepare", "-H", host.spec(), env=ssh_env).code == 0
    # This host's kernel says it was built by gcc-11; Debian 12's cc is gcc-12.
    code, out = host.exec(
        "printf 'CONFIG_CC_VERSION_TEXT=\"x86_64-linux-gnu-gcc-11 (Debian 11.3.0-12) 11.3.0\"\\n' "
        '> "$(readlink -f /lib/modules/$(uname -r)/build)/include/config/auto.conf"'
    )
    assert code == 0, out
    result = install(tfrig, host, site, ssh_env)
    assert result.code == 0, result.text
    assert "step build-tools" in result.out  # gcc-11 was not there: the build tools bring it
    assert host.exec("command -v gcc-11")[0] == 0
    assert "verified: driver 580.159.04" in result.out


def test_a_kernel_update_keeps_the_driver_across_the_reboot(tfrig, gpu_host, site, ssh_env):
    """As on a Debian VM (its linux-image-cloud-amd64 meta package pulls the running kernel): the
    build tools bring the headers meta package beside it, so when an upgrade brings a new kernel its
    headers come too, DKMS builds the driver for it, and after the reboot into it the driver loads."""
    from tests.testbed import nvidia_site

    kernel = os.uname().release  # what the stand-in runs until a kernel package boots another
    nvidia_site.add_kernel_release(site.folder, kernel, "1")
    host = gpu_host("t4", boot_lock=0)
    code, out = host.exec(f"{APT_WAIT} update -q && {APT_WAIT} install -y -q linux-image-cloud-amd64")
    assert code == 0, out  # the image's own kernel meta package, as a Debian VM has
    first = install(tfrig, host, site, ssh_env)
    assert first.code == 0, first.text
    assert "note: linux-headers-cloud-amd64 keeps the kernel's headers current" in first.out
    assert "verified: driver 580.159.04" in first.out

    newer = kernel + "-update1"
    nvidia_site.add_kernel_release(site.folder, newer, "2")
    code, out = host.exec(f"{APT_WAIT} update -q && {APT_WAIT} full-upgrade -y -q")  # unattended-upgrades' part
    assert code == 0, out
    assert f"nvidia/580.159.04, {newer}, x86_64: installed" in host.exec("dkms status")[1], out
    host.container.restart()  # the reboot into the new kernel
    host.wait_for_ssh()
    assert host.exec("uname -r")[1].strip() == newer
    status = tfrig("driver.status", "-H", host.spec(), env=ssh_env)
    assert status.code == 0 and f"driver 580.159.04 loaded (kernel {newer})" in status.out, status.text
    assert "already done: driver 580.159.04 loaded" in install(tfrig, host, site, ssh_env).out


def test_a_driver_in_use_is_replaced_for_the_next_boot_and_one_not_in_use_in_place(tfrig, gpu_host, site, ssh_env):
    """nvidia-installer's silent install aborts when the loaded module can't be unloaded (a CUDA
    program, a container using the GPU): tfrig names what holds it and installs for the next boot
    (--allow-installation-with-running-driver, 545 and later); where nothing holds it the new module
    is loaded in its place and no reboot is needed."""
    site.add("570.211.01")
    host = gpu_host("t4", boot_lock=0)
    assert install(tfrig, host, site, ssh_env, "--branch", "535").code == 0
    in_place = install(tfrig, host, site, ssh_env, "--branch", "570")
    assert in_place.code == 0, in_place.text
    assert "driver 570.211.01 is loaded in place of the old one: no reboot needed" in in_place.out
    assert "rebooting" not in in_place.out
    host.container.reload()
    restarts = host.container.attrs["RestartCount"]

    code, out = host.exec("setsid sh -c 'exec sleep 3600 < /dev/nvidia0' >/dev/null 2>&1 & sleep 1; pgrep -x sleep")
    assert code == 0, out  # a program with the GPU open
    holder = out.split()[0]
    too_old = install(tfrig, host, site, ssh_env, "--branch", "535")
    assert too_old.code == 1
    assert (
        f"driver 570.211.01 is in use ({holder} (sleep)) and nvidia-installer 535.288.01 can't install" in too_old.err
    )
    assert host.exec("cat /sys/module/nvidia/version")[1].strip() == "570.211.01"  # nothing changed

    lts = install(tfrig, host, site, ssh_env, "--branch", "lts")
    assert lts.code == 0, lts.text
    assert (
        f"note: driver 570.211.01 is in use ({holder} (sleep)), so it stays loaded: 580.159.04 is installed" in lts.out
    )
    assert "rebooting: to load the new kernel module configuration" in lts.out and "back after the reboot" in lts.out
    assert "waiting for the host to come back: finished after" in lts.out  # never a silent wait
    assert "verified after the reboot: driver 580.159.04, 1 GPU(s) visible" in lts.out
    host.container.reload()
    assert host.container.attrs["RestartCount"] == restarts + 1
