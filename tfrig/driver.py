"""driver: the NVIDIA driver on a target: pre-flight, install (with reboots), status, removal."""

from __future__ import annotations

import re
from typing import Any

from invoke import Collection
from invoke.exceptions import Exit

from tfrig.host import Host
from tfrig.runner import on_targets
from tfrig.taskdef import HOSTS_HELP, JSON_HELP, setting, task

SCRIPT = "nvidia-driver.sh"
MAX_REBOOTS = 3

STATUS_PROBES = {
    "module": "cat /sys/module/nvidia/version",
    "smi": "nvidia-smi --query-gpu=driver_version --format=csv,noheader",
    "kernel": "uname -r",
    "dkms": "dkms status nvidia",
}


def driver_state(facts: dict[str, Any]) -> dict[str, Any]:
    """What the probes say: loaded module version, user-space version, DKMS, kernel."""
    module = facts["module"].out.strip() if facts["module"].ok else None
    smi = facts["smi"].out.strip()
    userspace = smi.splitlines()[0] if facts["smi"].ok and smi else None
    return {
        "loaded": module,
        "installed": userspace or module,
        "kernel": facts["kernel"].out.strip(),
        "dkms": facts["dkms"].out.strip() if facts["dkms"].ok and facts["dkms"].out.strip() else None,
        "mismatch": bool(module and userspace and module != userspace),
    }


@task(help={"hosts": HOSTS_HELP, "json": JSON_HELP})
def status(c, hosts=None, json=False):
    """Show the installed and loaded NVIDIA driver, DKMS state and kernel."""

    def work(host: Host) -> dict[str, Any]:
        state = driver_state(host.probe(STATUS_PROBES))
        if not json:
            if state["loaded"]:
                host.say(f"driver {state['loaded']} loaded (kernel {state['kernel']})")
            else:
                host.say(f"no NVIDIA driver loaded (kernel {state['kernel']})")
            if state["mismatch"]:
                host.say(f"user-space {state['installed']} differs from the loaded module: reboot")
            if state["dkms"]:
                host.say(f"dkms: {state['dkms']}")
        return state

    on_targets(c, work, hosts=hosts, json_out=json, summary=lambda r: r["loaded"] or "no driver")


def _setting(c: Any, key: str, value: Any) -> Any:
    return setting(c, "driver", key, value)


@task(
    help={
        "headers": "also install the headers of the running kernel (default yes)",
        "hosts": HOSTS_HELP,
        "json": JSON_HELP,
    }
)
def prepare(c, headers=True, hosts=None, json=False):
    """Install what building the driver needs: gcc, make, dkms and the kernel headers."""

    def work(host: Host) -> dict[str, Any]:
        from tfrig.driverplan import BUILD_TOOLS_PROBE, HEADERS_PROBE, refresh_headers_fact

        facts = host.probe({"tools": BUILD_TOOLS_PROBE, "headers": HEADERS_PROBE, "kernel": "uname -r"})
        refresh_headers_fact(host, facts)
        have = set(facts["tools"].out.split())
        kernel = facts["kernel"].out.strip()
        state = facts["headers"].out.strip()
        if headers and state == "missing":
            raise Exit(
                f"[{host.label}] no kernel headers for the running kernel {kernel} in the package archive: "
                "boot a distribution kernel, or pass --no-headers to install only the build tools."
            )
        needs_headers = headers and state == "available"
        if {"gcc", "make", "dkms"} <= have and not needs_headers:
            host.say(f"already done: gcc, make, dkms{' and headers for ' + kernel if headers else ''} installed")
            return {"changed": False, "kernel": kernel}
        host.say("installing gcc, make, dkms" + (f" and linux-headers-{kernel}" if needs_headers else ""))
        host.script(SCRIPT, {"STEP": "build-tools", "HEADERS": "1" if headers else "0"})
        return {"changed": True, "kernel": kernel}

    on_targets(c, work, hosts=hosts, json_out=json)


def _describe(p: Any) -> str:
    gpus = ", ".join(f"{g.name} at {g.address}" for g in p.gpus)
    how = "NVIDIA's .run installer" if p.method == "run" else "apt packages"
    return f"driver {p.version} ({p.module} kernel module, {how}) for {gpus}"


def install_driver(
    host: Host,
    *,
    version: str | None,
    branch: str | None,
    method: str,
    cuda: str | None,
    sha256: str | None,
    unverified: bool,
    installer_url: str | None,
    hold_kernel: bool,
) -> dict[str, Any]:
    """Converge a host on the chosen driver: pre-flight, steps, reboots as needed, verify."""
    from tfrig import driverplan, gpu

    reboots = 0
    announced = False
    while True:
        facts = host.probe(driverplan.PREFLIGHT)
        if driverplan.gpus_on_bus(facts["pci"].out):  # without a GPU the plan refuses anyway
            driverplan.refresh_headers_fact(host, facts)
        try:
            p = driverplan.plan(
                facts, version=version, branch=branch, method=method, cuda=cuda, hold_kernel=hold_kernel
            )
        except driverplan.Refusal as refusal:
            raise Exit(f"[{host.label}] {refusal}") from None
        if not announced:
            host.say(_describe(p))
            for note in p.notes:
                host.say(f"note: {note}")
            announced = True
        if p.already and not p.steps:
            host.say(f"already done: driver {p.version} loaded")
            return {"changed": reboots > 0, "driver": p.version, "module": p.module, "reboots": reboots}
        if "install" in p.steps and method == "run" and not sha256 and not unverified:
            raise Exit(
                f"[{host.label}] NVIDIA publishes no checksum tfrig can cite for "
                f"NVIDIA-Linux-x86_64-{p.version}.run: pass --sha256 of the file you checked "
                "(sha256sum NVIDIA-Linux-...run), or --unverified to accept the risk."
            )
        env = {"METHOD": method, "VERSION": p.version, "BRANCH": str(p.branch), "MODULE": p.module}
        if installer_url:
            env["URL"] = installer_url
        if sha256:
            env["SHA256"] = sha256.lower()
        elif unverified:
            env["UNVERIFIED"] = "1"
        rebooted = False
        for step in p.steps:
            if step == "reboot":
                if reboots >= MAX_REBOOTS:
                    raise Exit(f"[{host.label}] still not done after {reboots} reboots; see the host log.")
                host.reboot("to load the new kernel module configuration")
                reboots += 1
                rebooted = not host.dry
                if rebooted:
                    break
            elif step == "verify":
                if host.dry:
                    host.say("would check the driver with nvidia-smi")
                    _assume_installed(host, p)
                    continue
                report = gpu.read_gpus(host)
                if report.diagnosis and reboots == 0:
                    # The .run installer loads the module itself; when it couldn't, a boot does.
                    host.reboot("the new driver's module is not loaded yet")
                    reboots += 1
                    rebooted = True
                    break
                if report.diagnosis:
                    raise Exit(f"[{host.label}] the driver is installed but: {report.diagnosis}; {report.fix}")
                host.say(f"verified: driver {report.driver}, {len(report.gpus)} GPU(s) visible")
            else:
                host.say(f"step {step}")
                host.script(SCRIPT, {**env, "STEP": step})
        if not rebooted:
            return {"changed": True, "driver": p.version, "module": p.module, "reboots": reboots}


def _assume_installed(host: Host, p: Any) -> None:
    """Under --dry, on a VM not yet created: later steps see the driver this one would install."""
    from tfrig.nvsmi import capability_from_name

    capability = capability_from_name(p.gpus[0].name) or "8.0"
    host.assume({"loaded": (0, p.version), "userspace": (0, p.version), "gpu": (0, f"{p.version}, {capability}")})


INSTALL_HELP = {
    "version": "driver version, e.g. 580.159.04 (default: the lts one Google's installer uses; R470 for a K80)",
    "branch": "a branch instead: lts, prod, nfb, or a number such as 535, 570, 580",
    "method": "run (NVIDIA's .run installer, default) or apt (distribution packages)",
    "cuda": "refuse a driver too old for this CUDA version, e.g. 12.5",
    "sha256": "the SHA-256 of the .run installer (NVIDIA publishes none tfrig can cite)",
    "unverified": "run the .run installer without --sha256, accepting the risk",
    "installer_url": "where to get the .run (a mirror, or a path on the target)",
    "hold_kernel": "apt-mark hold the running kernel so an unattended upgrade can't break the module",
    "hosts": HOSTS_HELP,
    "json": JSON_HELP,
}


@task(help=INSTALL_HELP)
def install(
    c,
    version=None,
    branch=None,
    method=None,
    cuda=None,
    sha256=None,
    unverified=False,
    installer_url=None,
    hold_kernel=False,
    hosts=None,
    json=False,
):
    """Install the NVIDIA driver the GPUs need, rebooting as needed, and verify it."""
    options = install_options(c, version, branch, method, cuda, sha256, unverified, installer_url, hold_kernel)
    on_targets(
        c,
        lambda host: install_driver(host, **options),
        hosts=hosts,
        json_out=json,
        summary=lambda r: f"driver {r['driver']}",
    )


def install_options(
    c: Any,
    version: Any,
    branch: Any,
    method: Any,
    cuda: Any,
    sha256: Any,
    unverified: Any,
    installer_url: Any,
    hold_kernel: Any,
) -> dict[str, Any]:
    method = _setting(c, "method", method)
    if method not in ("run", "apt"):
        raise Exit(f"--method {method}: choose run or apt.")
    sha256 = _setting(c, "sha256", sha256) or None
    if sha256 and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise Exit("--sha256 must be 64 hex digits.")
    return {
        "version": _setting(c, "version", version) or None,
        "branch": _setting(c, "branch", branch) or None,
        "method": method,
        "cuda": cuda,
        "sha256": sha256,
        "unverified": unverified or bool(c.config.driver.get("unverified")),
        "installer_url": _setting(c, "installer_url", installer_url) or None,
        "hold_kernel": hold_kernel or bool(c.config.driver.get("hold_kernel")),
    }


@task(help={"yes": "don't ask", "hosts": HOSTS_HELP, "json": JSON_HELP})
def uninstall(c, yes=False, hosts=None, json=False):
    """Remove the NVIDIA driver (.run install and apt packages); a reboot unloads the module."""
    from tfrig.ui import confirm

    def work(host: Host) -> dict[str, Any]:
        state = driver_state(host.probe(STATUS_PROBES))
        if not state["installed"]:
            host.say("already done: no NVIDIA driver installed")
            return {"changed": False}
        if not host.dry:
            confirm(f"[{host.label}] Remove NVIDIA driver {state['installed']}?", yes or c.config.tfrig.yes)
        host.script(SCRIPT, {"STEP": "uninstall"})
        host.say("removed; reboot to unload the module")
        return {"changed": True, "removed": state["installed"]}

    on_targets(c, work, hosts=hosts, json_out=json)


ns = Collection("driver", status, prepare, install, uninstall)
ns.configure(
    {
        "driver": {
            "method": "run",
            "version": "",
            "branch": "",
            "sha256": "",
            "unverified": False,
            "installer_url": "",
            "hold_kernel": False,
        }
    }
)
