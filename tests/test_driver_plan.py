"""Which driver, and which steps, for a host in a given state; refusals before any change."""

from __future__ import annotations

import re

import pytest
from invoke import Result
from invoke.exceptions import Exit

from tests.plan import commands, context, probe_result
from tfrig.hosts.host import BOOT_MARK, Fact, Host
from tfrig.hosts.targets import Target
from tfrig.knowledge import driverplan
from tfrig.tasks.driver import install_driver

T4 = "0000:00:04.0 0x10de 0x1eb8 0x030200"
K80 = "0000:00:04.0 0x10de 0x102d 0x030200"
V100 = "0000:00:04.0 0x10de 0x1db1 0x030200"
B200 = "0000:00:04.0 0x10de 0x2901 0x030200"
L4 = "0000:00:03.0 0x10de 0x27b8 0x030200\n0000:00:01.0 0x8086 0x7000 0x060100"
LTS = "580.159.04"

FRESH_T4 = {
    "os": (0, "ubuntu 24.04"),
    "arch": (0, "x86_64"),
    "kernel": (0, "6.8.0-1015-gcp"),
    "pci": (0, T4),
    "secure_boot": (0, "legacy-bios"),
    "headers": (0, "available"),
    "nouveau": (1, ""),
    "loaded": (1, "cat: /sys/module/nvidia/version: No such file or directory"),
    "userspace": (127, "nvidia-smi: not found"),
    "tools": (0, ""),
    "packages": (1, ""),
    "module_license": (1, "modinfo: ERROR: Module nvidia not found."),
}


def facts(**changes: tuple[int, str]) -> dict[str, Fact]:
    merged = {**FRESH_T4, **changes}
    return {name: Fact(rc=rc, out=out) for name, (rc, out) in merged.items()}


@pytest.mark.parametrize(
    ("state", "options", "version", "module", "steps"),
    [
        ({}, {}, LTS, "open", ["build-tools", "install", "verify"]),
        (
            {"nouveau": (0, "nouveau 2MB 0 - Live")},
            {},
            LTS,
            "open",
            ["build-tools", "blacklist-nouveau", "reboot", "install", "verify"],
        ),
        (
            {"tools": (0, "gcc\nmake\ndkms\nlibc-headers\nkernel-cc\nheaders-meta"), "headers": (0, "installed")},
            {},
            LTS,
            "open",
            ["install", "verify"],
        ),
        (
            {"loaded": (0, "535.261.03"), "userspace": (0, "535.261.03")},
            {},
            LTS,
            "open",
            ["build-tools", "install", "reboot", "verify"],
        ),
        ({"pci": (0, V100)}, {}, LTS, "proprietary", ["build-tools", "install", "verify"]),
        ({"pci": (0, L4)}, {"hold_kernel": True}, LTS, "open", ["build-tools", "install", "hold-kernel", "verify"]),
        ({"pci": (0, K80)}, {}, "470.256.02", "proprietary", ["build-tools", "install", "verify"]),
        ({}, {"branch": "535"}, "535.288.01", "proprietary", ["build-tools", "install", "verify"]),
        ({}, {"branch": "prod"}, "595.84", "open", ["build-tools", "install", "verify"]),
        ({}, {"cuda": "12.5", "version": "570.172.08"}, "570.172.08", "open", ["build-tools", "install", "verify"]),
    ],
    ids=[
        "t4-fresh",
        "nouveau-loaded",
        "tools-present",
        "old-driver",
        "v100",
        "l4-hold",
        "k80",
        "branch-535",
        "branch-prod",
        "cuda-ok",
    ],
)
def test_plans(state, options, version, module, steps):
    plan = driverplan.plan(facts(**state), **options)
    assert (plan.version, plan.module, plan.steps, plan.already) == (version, module, steps, False)


def test_the_right_driver_already_loaded_is_a_no_op():
    plan = driverplan.plan(facts(loaded=(0, LTS), userspace=(0, LTS)))
    assert plan.already and plan.steps == []


@pytest.mark.parametrize(
    ("state", "options", "message"),
    [
        ({"pci": (0, "0000:00:01.0 0x8086 0x7000 0x060100")}, {}, "no NVIDIA GPU on the PCI bus"),
        (
            {"secure_boot": (0, "  6   0   0   0   1"), "os": (0, "debian 12")},
            {},
            "Secure Boot is on, and Debian has no NVIDIA module signed by its key",
        ),
        (
            {"secure_boot": (0, "  6   0   0   0   1")},
            {"version": "580.159.04"},
            "the driver comes as Ubuntu's signed prebuilt modules of a branch, not NVIDIA's .run of 580.159.04",
        ),
        (
            {"headers": (0, "missing")},
            {},
            "no kernel headers for the running kernel 6.8.0-1015-gcp in the package archive",
        ),
        ({"headers": (0, "no-lists")}, {}, "can't read the package archive (apt-get update failed)"),
        ({"os": (0, "centos 7")}, {}, "centos 7 is not supported for the driver install"),
        ({"os": (0, "ubuntu 20.04")}, {}, "ubuntu 20.04 is not supported"),
        ({"arch": (0, "aarch64")}, {}, "aarch64: NVIDIA's data-centre driver installers here are for x86_64 only"),
        (
            {"pci": (0, K80)},
            {"branch": "lts"},
            "Tesla K80 (Kepler) is driven by branch R470 at most, not 580.159.04; use --branch 470 (the K80 is also",
        ),
        (
            {"pci": (0, V100)},
            {"branch": "prod"},
            "Tesla V100 (Volta) is driven by branch R580 at most, not 595.84; use --branch 580",
        ),
        ({}, {"version": "535.261.03", "cuda": "13.0"}, "driver 535.261.03 is below 580, the minimum for CUDA 13.0"),
        ({}, {"version": "latest"}, "--version latest is not an NVIDIA driver version"),
        ({}, {"branch": "999"}, "--branch 999: choose one of"),
        (
            {"packages": (0, "nvidia-driver-535 ii \nnvidia-headless-470 rc ")},
            {},
            "driver packages from apt are installed (nvidia-driver-535)",
        ),
    ],
    ids=[
        "no-gpu",
        "secure-boot-debian",
        "secure-boot-version",
        "no-headers",
        "no-apt-lists",
        "os",
        "old-ubuntu",
        "arch",
        "k80-new-branch",
        "volta-595",
        "cuda-too-new",
        "bad-version",
        "bad-branch",
        "apt-packages",
    ],
)
def test_refusals(state, options, message):
    with pytest.raises(driverplan.Refusal) as refusal:
        driverplan.plan(facts(**state), **options)
    assert message in str(refusal.value)


SCRIPT = re.compile(r"^env .*STEP=(?P<step>[a-z-]+) bash -c ", re.S)
REBOOT = "nohup sh -c 'sleep 1; systemctl reboot 2>/dev/null || reboot' >/dev/null 2>&1 &"
SMI_OK = "0, Tesla T4, GPU-1, 580.159.04, 15360, 0, 7.5"
TABLE = "| NVIDIA-SMI 580.159.04             Driver Version: 580.159.04     CUDA Version: 13.0     |"
GPU_OK = {"query": (0, SMI_OK), "table": (0, TABLE), "pci": (0, T4)}


def steps_run(c) -> list[str]:
    ran = []
    for command in commands(c):
        match = SCRIPT.match(command)
        ran.append(match["step"] if match else ("reboot" if command == REBOOT else command))
    return ran


def vm(c) -> Host:
    return Host(c, Target(label="vm", host="10.0.0.2", user="root"))


def install(c, **options):
    """driver.install's work on a remote-like host, with the task's defaults for what is not given."""
    defaults = {
        "version": None,
        "branch": None,
        "method": "run",
        "module": None,
        "cuda": None,
        "sha256": None,
        "unverified": False,
        "installer_url": None,
        "download_base": "https://download.nvidia.com",
        "apt_repo_base": None,
        "hold_kernel": False,
    }
    return install_driver(vm(c), **{**defaults, **options})


def test_install_runs_the_steps_then_verifies(capsys):
    c = context("driver.install", probes=[FRESH_T4, GPU_OK], changes={SCRIPT: Result()})
    result = install(c, sha256="ab" * 32)
    assert steps_run(c) == ["probe", "build-tools", "install", "probe"]
    assert (
        f"SHA256={'ab' * 32}" in commands(c)[2]
        and "MODULE=open" in commands(c)[2]
        and f"VERSION={LTS}" in commands(c)[2]
    )
    assert result == {"changed": True, "driver": LTS, "module": "open", "reboots": 0}
    out = capsys.readouterr().out
    assert f"[vm] driver {LTS} (open kernel module, NVIDIA's .run installer) for Tesla T4 at 0000:00:04.0" in out
    assert "[vm] verified: driver 580.159.04, 1 GPU(s) visible" in out


def test_nouveau_means_blacklist_reboot_then_resume_from_fresh_facts(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda seconds: None)
    with_nouveau = {**FRESH_T4, "nouveau": (0, "nouveau 2232320 0 - Live")}
    after_boot = {
        **FRESH_T4,
        "tools": (0, "gcc\nmake\ndkms\nlibc-headers\nkernel-cc\nheaders-meta"),
        "headers": (0, "installed"),
    }
    c = context(
        "driver.install",
        probes=[with_nouveau, after_boot, GPU_OK],
        changes={SCRIPT: Result(), REBOOT: Result(), BOOT_MARK: [Result("boot-1 100"), Result("boot-2 5")]},
    )
    result = install(c, unverified=True)
    assert steps_run(c) == [
        "probe",
        "build-tools",
        "blacklist-nouveau",
        BOOT_MARK,
        "reboot",
        BOOT_MARK,
        "probe",
        "install",
        "probe",
    ]
    assert result["reboots"] == 1


def test_by_default_the_script_checks_nvidias_published_checksum_from_the_download_base():
    c = context("driver.install", probes=[FRESH_T4, GPU_OK], changes={SCRIPT: Result()})
    install(c, download_base="http://mirror.example/nvidia")
    install_step = commands(c)[2].split(" bash -c ")[0]
    assert "BASE=http://mirror.example/nvidia" in install_step
    assert "SHA256=" not in install_step and "UNVERIFIED" not in install_step


@pytest.mark.parametrize(
    ("version", "module", "flags"),
    [
        ("470.239.06", "proprietary", []),
        ("535.261.03", "proprietary", []),
        ("535.261.03", "open", ["-m=kernel-open"]),
        ("550.163.01", "open", ["-m=kernel-open"]),
        ("555.42.02", "open", ["--kernel-module-type=open"]),
        ("580.159.04", "proprietary", ["--kernel-module-type=proprietary"]),
    ],
)
def test_installer_flags_follow_the_versions_option_table(version, module, flags):
    assert driverplan.installer_flags(version, module) == ["-s", "--dkms", "--no-cc-version-check", *flags]


@pytest.mark.parametrize(
    ("state", "options", "message"),
    [
        ({}, {"branch": "470", "module": "open"}, "the open kernel module exists from branch R515 on, not R470"),
        ({"pci": (0, V100)}, {"module": "open"}, "drives Turing and newer only, not Tesla V100"),
        ({"pci": (0, B200)}, {"branch": "535"}, "Blackwell GPUs need driver branch R570 or newer, not R535"),
        ({"pci": (0, B200)}, {"module": "proprietary"}, "Blackwell GPUs run only the open kernel module"),
        ({}, {"method": "apt", "version": LTS}, "--method apt installs what the repository has for a branch"),
        ({"userspace": (0, "535.261.03")}, {"method": "apt"}, "is installed by NVIDIA's .run installer"),
    ],
)
def test_module_and_method_refusals(state, options, message):
    with pytest.raises(driverplan.Refusal, match=re.escape(message)):
        driverplan.plan(facts(**state), **options)


def test_debians_own_driver_package_is_seen_so_a_run_over_it_is_refused():
    assert "'nvidia-kernel-dkms'" in driverplan.PREFLIGHT["packages"]
    with pytest.raises(driverplan.Refusal, match=r"driver packages from apt are installed \(nvidia-kernel-dkms\)"):
        driverplan.plan(facts(os=(0, "debian 12"), packages=(0, "nvidia-kernel-dkms ii ")))


def test_a_t4_on_a_branch_before_560_gets_the_proprietary_module_with_no_module_flag():
    plan = driverplan.plan(facts(), branch="535")
    assert (plan.module, driverplan.installer_flags(plan.version, plan.module)[3:]) == ("proprietary", [])


def test_apt_reaches_a_fixed_point_on_the_branch_the_repository_installed():
    """The repository decides the exact version (580.95.05 here, not Google's 580.159.04): the
    branch loaded and in use is done, so no second install and no reboot."""
    loaded = facts(loaded=(0, "580.95.05"), userspace=(0, "580.95.05"), packages=(0, "nvidia-open ii "))
    plan = driverplan.plan(loaded, method="apt", branch="580")
    assert plan.already and plan.steps == [] and plan.version == "580.95.05"
    other = facts(loaded=(0, "535.261.03"), userspace=(0, "535.261.03"), packages=(0, "cuda-drivers-535 ii "))
    upgrade = driverplan.plan(other, method="apt", branch="580")
    assert upgrade.steps == ["build-tools", "install", "reboot", "verify"]


def test_apt_packages_by_distribution():
    assert driverplan.plan(facts(), method="apt", branch="580").packages == [
        "nvidia-headless-580-server-open",
        "nvidia-utils-580-server",
    ]
    debian = driverplan.plan(facts(os=(0, "debian 12"), pci=(0, V100)), method="apt", branch="580")
    assert debian.packages == ["nvidia-driver-pinning-580", "cuda-drivers"]


def test_an_install_that_leaves_another_module_loaded_after_its_reboot_stops_instead_of_looping(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda seconds: None)
    old = {**FRESH_T4, "loaded": (0, "535.261.03"), "userspace": (0, "535.261.03")}
    still_old = {
        **old,
        "tools": (0, "gcc\nmake\ndkms\nlibc-headers\nkernel-cc\nheaders-meta"),
        "headers": (0, "installed"),
    }
    c = context(
        "driver.install",
        # the old module still loaded after the install (in use), so the reboot goes ahead
        probes=[
            old,
            {"loaded": (0, "535.261.03")},
            still_old,
            {**GPU_OK, "query": (0, SMI_OK.replace(LTS, "535.261.03"))},
        ],
        changes={SCRIPT: Result(), REBOOT: Result(), BOOT_MARK: [Result("b1"), Result("b2")]},
    )
    with pytest.raises(Exit, match=r"after 1 reboot\(s\) the loaded module is 535\.261\.03, not 580\.159\.04"):
        install(c)
    assert steps_run(c).count("install") == 1 and steps_run(c).count("reboot") == 1


def test_a_new_module_loaded_in_place_of_the_old_needs_no_reboot_and_the_steps_notes_are_said(capsys):
    old = {**FRESH_T4, "loaded": (0, "535.261.03"), "userspace": (0, "535.261.03")}
    note = "note: linux-headers-cloud-amd64 keeps the kernel's headers current, so DKMS builds the driver"
    c = context(
        "driver.install",
        probes=[old, {"loaded": (0, LTS)}, GPU_OK],  # nvidia-installer unloaded 535 and loaded its own
        changes={SCRIPT: Result(stdout=f"verified NVIDIA-Linux-x86_64-{LTS}.run\n{note}\n")},
    )
    result = install(c)
    assert steps_run(c) == ["probe", "build-tools", "install", "probe", "probe"]
    assert result["reboots"] == 0
    out = capsys.readouterr().out
    assert f"[vm] driver {LTS} is loaded in place of the old one: no reboot needed" in out
    assert f"[vm] {note}" in out and "[vm] verified NVIDIA" not in out


def test_second_run_with_the_driver_loaded_changes_nothing(capsys):
    c = context("driver.install", probes=[{**FRESH_T4, "loaded": (0, LTS), "userspace": (0, LTS)}])
    result = install(c)
    assert commands(c) == ["probe"] and result["changed"] is False
    assert f"already done: driver {LTS} loaded" in capsys.readouterr().out


def test_dry_run_lists_every_step_and_changes_nothing(capsys):
    c = context("driver.install", probes=[{**FRESH_T4, "nouveau": (0, "nouveau 1 0 - Live")}], dry=True)
    install(c, unverified=True, hold_kernel=True)
    assert commands(c) == ["probe"]
    out = capsys.readouterr().out
    for step in ("build-tools", "blacklist-nouveau", "install", "hold-kernel"):
        assert f"STEP={step} scripts/nvidia-driver.sh" in out
    assert "would reboot (to load the new kernel module configuration)" in out
    assert "would check the driver with nvidia-smi" in out


def test_a_driver_that_still_fails_after_a_reboot_reports_the_diagnosis(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda seconds: None)
    broken = {
        "query": (9, "couldn't communicate with the NVIDIA driver"),
        "table": (9, "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver"),
        "pci": (0, T4),
    }
    installed = {**FRESH_T4, "tools": (0, "gcc\nmake\ndkms"), "headers": (0, "installed"), "userspace": (9, "")}
    c = context(
        "driver.install",
        probes=[FRESH_T4, broken, installed, broken],
        changes={SCRIPT: Result(), REBOOT: Result(), BOOT_MARK: [Result("b1"), Result("b2")]},
    )
    with pytest.raises(Exit, match="kernel module is not loaded"):
        install(c, unverified=True)
    assert "reboot" in steps_run(c)


def test_probe_result_helper_matches_the_real_format():
    assert "@@tfrig-rc os 0" in probe_result({"os": (0, "debian 12")}).stdout


def test_apt_method_installs_the_server_packages_of_the_branch():
    c = context("driver.install", probes=[FRESH_T4, GPU_OK], changes={SCRIPT: Result()})
    install(c, branch="570", method="apt")
    assert steps_run(c) == ["probe", "build-tools", "install", "probe"]
    assert "METHOD=apt VERSION=570.211.01 BRANCH=570 MODULE=open" in commands(c)[2]


def test_apt_method_is_not_refused_for_lack_of_a_checksum():
    plan = driverplan.plan(facts(packages=(0, "nvidia-driver-535 ii ")), method="apt")
    assert plan.steps == ["build-tools", "install", "verify"]


def test_uninstall_asks_then_removes(monkeypatch):
    from tfrig.tasks import driver

    installed = {
        "module": (0, LTS),
        "smi": (0, LTS),
        "kernel": (0, "6.8.0"),
        "dkms": (0, "nvidia/580.159.04: installed"),
    }
    c = context("driver.uninstall", probes=[installed])
    with pytest.raises(Exit, match="pass --yes"):
        driver.uninstall(c)
    c = context("driver.uninstall", probes=[installed], changes={SCRIPT: Result()})
    driver.uninstall(c, yes=True)
    assert steps_run(c) == ["probe", "uninstall"]
    nothing = {"module": (1, ""), "smi": (127, ""), "kernel": (0, "6.8.0"), "dkms": (127, "")}
    c = context("driver.uninstall", probes=[nothing])
    driver.uninstall(c, yes=True)
    assert commands(c) == ["probe"]


APT_580 = {
    "loaded": (0, "580.95.05"),
    "userspace": (0, "580.95.05"),
    "packages": (0, "nvidia-headless-580-server ii \nnvidia-utils-580-server ii "),
    "module_license": (0, "NVIDIA"),
}


def test_a_working_driver_that_was_there_is_kept_the_way_it_came():
    plan = driverplan.plan(facts(**APT_580))
    assert (plan.already, plan.kept, plan.steps) == (True, True, [])
    assert (plan.version, plan.method, plan.module) == ("580.95.05", "apt", "proprietary")
    held = driverplan.plan(facts(**APT_580), hold_kernel=True)
    assert held.kept and held.steps == ["hold-kernel"]
    two = facts(
        **{
            **APT_580,
            "pci": (0, f"{T4}\n0000:00:05.0 0x10de 0x1eb8 0x030200"),
            "userspace": (0, "580.95.05\n580.95.05"),
        }
    )
    assert driverplan.plan(two).kept
    # The open module (its licence "Dual MIT/GPL"), installed by a .run: kept as that.
    run_open = driverplan.plan(facts(loaded=(0, "595.84"), userspace=(0, "595.84"), module_license=(0, "Dual MIT/GPL")))
    assert (run_open.kept, run_open.method, run_open.module) == (True, "run", "open")


@pytest.mark.parametrize(
    "state",
    [
        {**APT_580, "loaded": (0, "535.261.03"), "userspace": (0, "535.261.03")},  # below TensorFlow's floor
        {**APT_580, "userspace": (18, "Failed to initialize NVML: Driver/library version mismatch")},
        {
            **APT_580,
            "userspace": (0, "580.95.05"),
            "pci": (0, f"{T4}\n0000:00:05.0 0x10de 0x1eb8 0x030200"),
        },  # a GPU unseen
        {**APT_580, "loaded": (0, "595.84"), "userspace": (0, "595.84"), "pci": (0, V100)},  # past Volta's last branch
    ],
    ids=["below-floor", "mismatch", "gpu-unseen", "volta-on-595"],
)
def test_a_driver_that_does_not_work_or_will_not_do_is_not_kept(state):
    assert not driverplan.working_driver(facts(**state), driverplan.gpus_on_bus(state.get("pci", (0, T4))[1]), None)


def test_a_driver_asked_for_over_packages_comes_with_apt_never_a_run():
    plan = driverplan.plan(facts(**APT_580), branch="570")
    assert plan.method == "apt" and plan.packages[0] == "nvidia-headless-570-server-open"
    assert "install" in plan.steps
    with pytest.raises(driverplan.Refusal, match=re.escape("give --branch 570 to change it with apt")):
        driverplan.plan(facts(**APT_580), version="570.211.01")


def test_a_kept_driver_is_said_and_nothing_runs(capsys):
    c = context("driver.install", probes=[{**FRESH_T4, **APT_580}])
    result = install(c)
    assert commands(c) == ["probe"] and result == {
        "changed": False,
        "driver": "580.95.05",
        "module": "proprietary",
        "reboots": 0,
    }
    assert (
        "kept: 580.95.05 (preinstalled; proprietary kernel module, apt packages) for Tesla T4 at 0000:00:04.0"
        in capsys.readouterr().out
    )


def test_driver_versions_lists_each_branch_with_what_it_drives_and_runs(tfrig):
    from tests.conftest import json_of

    result = tfrig("driver.versions", "--json")
    assert result.code == 0, result.text
    rows = {r["branch"]: r for r in json_of(result.out)}
    assert rows["470"]["version"] == "470.256.02" and "kepler" in rows["470"]["generations"]
    assert "hopper" not in rows["470"]["generations"] and rows["470"]["newest_tensorflow"] == "2.14.0"
    assert rows["580"]["name"] == "lts" and rows["580"]["version"] == driverplan.driver_versions()["lts"]
    assert "volta" in rows["580"]["generations"] and "volta" not in rows["590"]["generations"]
    assert "blackwell" in rows["570"]["generations"] and "blackwell" not in rows["535"]["generations"]
    assert all({"branch", "version", "generations", "source", "tagged"} <= set(r) for r in rows.values())


def test_secure_boot_on_ubuntu_takes_the_signed_prebuilt_modules_of_the_running_kernel():
    plan = driverplan.plan(facts(secure_boot=(0, "  6   0   0   0   1")))
    assert plan.method == "signed" and plan.steps == ["install", "verify"]
    assert plan.packages == [
        "linux-modules-nvidia-580-server-open-6.8.0-1015-gcp",
        "nvidia-headless-no-dkms-580-server-open",
        "nvidia-utils-580-server",
    ]
    volta = driverplan.plan(
        facts(secure_boot=(0, "  6   0   0   0   1"), pci=(0, V100)), branch="580", hold_kernel=True
    )
    assert volta.packages[:2] == [
        "linux-modules-nvidia-580-server-6.8.0-1015-gcp",
        "nvidia-headless-no-dkms-580-server",
    ]
    assert volta.steps == ["install", "hold-kernel", "verify"]


def test_the_signed_install_passes_its_packages_to_the_script(capsys):
    c = context(
        "driver.install",
        probes=[{**FRESH_T4, "secure_boot": (0, "  6   0   0   0   1")}, GPU_OK],
        changes={SCRIPT: Result()},
    )
    install(c)
    assert steps_run(c) == ["probe", "install", "probe"]
    assert "METHOD=signed VERSION=580.159.04 BRANCH=580 MODULE=open" in commands(c)[1]
    assert (
        "PACKAGES='linux-modules-nvidia-580-server-open-6.8.0-1015-gcp nvidia-headless-no-dkms-580-server-open"
        in commands(c)[1]
    )
    assert "signed: linux-modules-nvidia-580-server-open-6.8.0-1015-gcp" in capsys.readouterr().out


def test_dry_apt_on_debian_names_the_pinning_package_without_reading_the_repository(capsys):
    c = context("driver.install", probes=[{**FRESH_T4, "os": (0, "debian 12")}], dry=True)
    install(c, method="apt", branch="580")
    assert commands(c) == ["probe"]
    assert "apt: nvidia-driver-pinning-580 nvidia-open) for Tesla T4" in capsys.readouterr().out


def test_a_kernel_built_by_another_gcc_than_cc_needs_the_build_tools_step():
    """GCE's jammy kernels are built with gcc-12, jammy's cc is gcc-11: with gcc-12 not there the
    build-tools step installs it (the install step then builds with it)."""
    tools = (0, "gcc\nmake\ndkms\nlibc-headers")
    plan = driverplan.plan(facts(tools=tools, headers=(0, "installed")))
    assert plan.steps[0] == "build-tools"
    assert "kernel-cc" in driverplan.BUILD_TOOLS_PROBE and "CONFIG_CC_VERSION_TEXT" in driverplan.BUILD_TOOLS_PROBE
