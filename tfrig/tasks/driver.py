"""driver: the NVIDIA driver on a target: pre-flight, install (with reboots), status, removal."""

from __future__ import annotations

import re
from typing import Any

from invoke import Collection
from invoke.exceptions import Exit

from tfrig.hosts.host import Host
from tfrig.hosts.runner import on_targets
from tfrig.knowledge import smirun
from tfrig.settings import setting
from tfrig.tasks.taskdef import HOSTS_HELP, JSON_HELP, task

SCRIPT = "nvidia-driver.sh"

STATUS_PROBES = {
    "module": "cat /sys/module/nvidia/version",
    "smi": smirun.VERSION_COMMAND,
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
        "dkms": "; ".join(facts["dkms"].out.split("\n")) if facts["dkms"].ok and facts["dkms"].out.strip() else None,
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


def refresh_headers_fact(host: Host, facts: dict[str, Any]) -> None:
    """Package lists are empty on some fresh images: fetch them (a read-only refresh) to look for headers."""
    from tfrig.knowledge.driverplan import HEADERS_PROBE, LISTS_UPDATE

    if facts["headers"].out.strip() == "no-lists":
        host.say("refreshing the package lists to look for the kernel headers")
        host.fact(LISTS_UPDATE, sudo=True)
        facts["headers"] = host.fact(HEADERS_PROBE)


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
    """Install what building the driver needs: gcc, make, dkms, the libc and kernel headers."""

    def work(host: Host) -> dict[str, Any]:
        from tfrig.knowledge.driverplan import BUILD_TOOLS, BUILD_TOOLS_PROBE, HEADERS_PROBE

        # Without --headers nothing here reads the package archive (apt-cache takes over a second
        # on a host with full package lists): the tools and libc headers are local facts.
        probes = {"tools": BUILD_TOOLS_PROBE, "kernel": "uname -r"}
        if headers:
            probes["headers"] = HEADERS_PROBE
        facts = host.probe(probes)
        if headers:
            refresh_headers_fact(host, facts)
        have = set(facts["tools"].out.split())
        kernel = facts["kernel"].out.strip()
        state = facts["headers"].out.strip() if headers else "not wanted"
        if state == "missing":
            raise Exit(
                f"[{host.label}] no kernel headers for the running kernel {kernel} in the package archive: "
                "boot a distribution kernel, or pass --no-headers to install only the build tools."
            )
        needs_headers = state == "available"
        if set(BUILD_TOOLS) <= have and not needs_headers:
            host.say(
                "already done: gcc, make, dkms, libc headers"
                + (f" and kernel headers for {kernel}" if headers else "")
                + " installed"
            )
            return {"changed": False, "kernel": kernel}
        host.say("installing gcc, make, dkms, libc6-dev" + (f" and linux-headers-{kernel}" if needs_headers else ""))
        host.script(
            SCRIPT, {"STEP": "build-tools", "HEADERS": "1" if headers else "0"}, progress="installing build tools"
        )
        return {"changed": True, "kernel": kernel}

    on_targets(c, work, hosts=hosts, json_out=json)


def _describe(p: Any) -> str:
    gpus = ", ".join(f"{g.name} at {g.address}" for g in p.gpus)
    if p.kept:
        how = "apt packages" if p.method == "apt" else "installed before"
        return f"kept: {p.version} (preinstalled; {p.module} kernel module, {how}) for {gpus}"
    if p.method == "run":
        return f"driver {p.version} ({p.module} kernel module, NVIDIA's .run installer) for {gpus}"
    if p.method == "signed":
        return f"driver branch R{p.branch} ({p.module} kernel module, signed: {' '.join(p.packages)}) for {gpus}"
    return f"driver branch R{p.branch} ({p.module} kernel module, apt: {' '.join(p.packages)}) for {gpus}"


def install_driver(
    host: Host,
    *,
    version: str | None,
    branch: str | None,
    method: str,
    module: str | None,
    cuda: str | None,
    sha256: str | None,
    unverified: bool,
    installer_url: str | None,
    download_base: str,
    apt_repo_base: str | None,
    hold_kernel: bool,
    c: Any = None,
) -> dict[str, Any]:
    """Converge a host on the chosen driver: pre-flight, steps, at most the reboots the plan names
    (and one to load a freshly installed module), verify. Never a reboot loop: a second install in
    one run is refused with what is loaded. With the task's context `c`, a tf.install later in the
    run gets its wheels fetched alongside the driver's steps (tf.wheel_prefetch), waited for before
    a reboot or the end."""
    from tfrig.knowledge import driverplan
    from tfrig.steps.gpus import read_gpus
    from tfrig.tasks import tf

    reboots = 0
    installed = False
    announced = False
    fetching: Any = None

    def settle() -> None:
        nonlocal fetching
        if fetching is not None:
            tf.prefetched(host, fetching)
            fetching = None

    while True:
        facts = host.probe(driverplan.PREFLIGHT)
        if driverplan.gpus_on_bus(facts["pci"].out):  # without a GPU the plan refuses anyway
            refresh_headers_fact(host, facts)
        try:
            p = driverplan.plan(
                facts,
                version=version,
                branch=branch,
                method=method,
                cuda=cuda,
                hold_kernel=hold_kernel,
                module=module,
            )
        except driverplan.Refusal as refusal:
            raise Exit(f"[{host.label}] {refusal}") from None
        if not announced:
            host.say(_describe(p))
            for note in p.notes:
                host.say(f"note: {note}")
            announced = True
        if p.already and not p.steps:
            settle()
            if not (installed or reboots):
                if not p.kept:
                    host.say(f"already done: driver {p.version} loaded")
                return {"changed": False, "driver": p.version, "module": p.module, "reboots": reboots}
            if not host.dry:
                report = read_gpus(host)
                host.say(f"verified after the reboot: driver {report.driver}, {len(report.gpus)} GPU(s) visible")
            return {"changed": True, "driver": p.version, "module": p.module, "reboots": reboots}
        if installed and "install" in p.steps:
            report = read_gpus(host)
            if report.diagnosis:
                raise Exit(f"[{host.label}] the driver is installed but: {report.diagnosis}; {report.fix}")
            loaded = facts["loaded"].out.strip() if facts["loaded"].ok else "none"
            raise Exit(
                f"[{host.label}] installed the driver, but after {reboots} reboot(s) the loaded module is {loaded}, "
                f"not {'branch R' + str(p.branch) if method == 'apt' else p.version}; see `inv driver.status` "
                "and the host log. tfrig stops here rather than reboot again."
            )
        env = {
            "METHOD": p.method,
            "VERSION": p.version,
            "BRANCH": str(p.branch),
            "MODULE": p.module,
            "BASE": download_base,
        }
        if p.method == "signed":
            env["PACKAGES"] = " ".join(p.packages)
        if installer_url:
            env["URL"] = installer_url
        if apt_repo_base:
            env["REPO_BASE"] = apt_repo_base
        if sha256:
            env["SHA256"] = sha256.lower()
        if unverified:
            env["UNVERIFIED"] = "1"
        if c is not None and not (installed or reboots) and "install" in p.steps:
            fetching = tf.wheel_prefetch(c, host)
        rebooted = False
        for step in p.steps:
            if step == "reboot" and installed and p.method == "run" and _loaded(host) == p.version:
                # nvidia-installer unloaded the old module and loaded its own: no reboot is needed.
                host.say(f"driver {p.version} is loaded in place of the old one: no reboot needed")
                continue
            if step == "reboot":
                settle()
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
                report = read_gpus(host)
                working = bool(report.driver and report.gpus)  # a diagnosis may be TensorFlow's (a K80)
                if not working and reboots == 0:
                    # The .run installer loads the module itself; when it couldn't, a boot does.
                    settle()
                    host.reboot("the new driver's module is not loaded yet")
                    reboots += 1
                    rebooted = True
                    break
                if not working:
                    raise Exit(f"[{host.label}] the driver is installed but: {report.diagnosis}; {report.fix}")
                host.say(f"verified: driver {report.driver}, {len(report.gpus)} GPU(s) visible")
                if report.diagnosis:
                    host.say(f"note: {report.diagnosis}")
            else:
                host.say(f"step {step}")
                out = host.script(SCRIPT, {**env, "STEP": step}, progress=f"driver {step}")
                for line in out.splitlines():  # what the step decided that the user should know
                    if line.startswith("note: "):
                        host.say(line)
                installed = installed or step == "install"
        if not rebooted:
            settle()
            return {"changed": True, "driver": p.version, "module": p.module, "reboots": reboots}


def _loaded(host: Host) -> str | None:
    from tfrig.knowledge.driverplan import PREFLIGHT

    loaded = host.probe({"loaded": PREFLIGHT["loaded"]})["loaded"]
    return loaded.out.strip() if loaded.ok else None


def _assume_installed(host: Host, p: Any) -> None:
    """Under --dry, on a VM not yet created: later steps see the driver this one would install."""
    from tfrig.knowledge.nvsmi import capability_from_name

    capability = capability_from_name(p.gpus[0].name) or "8.0"
    host.assume({"loaded": (0, p.version), "userspace": (0, p.version), "gpu": (0, f"{p.version}, {capability}")})


INSTALL_HELP = {
    "version": "driver version, e.g. 580.159.04 (default: the lts one Google's installer uses; R470 for a K80)",
    "branch": "a branch instead: lts, prod, nfb, or a number such as 535, 570, 580",
    "method": "run (NVIDIA's .run installer, default) or apt (Ubuntu's packages; NVIDIA's CUDA repo on Debian)",
    "module": "kernel module: open or proprietary (default: open from R560 on Turing and newer, as NVIDIA's)",
    "cuda": "refuse a driver too old for this CUDA version, e.g. 12.5",
    "sha256": "the SHA-256 the .run must have (default: the .sha256sum NVIDIA publishes beside it)",
    "unverified": "run the .run when its download site publishes no checksum (a mirror without them)",
    "installer_url": "the .run from elsewhere: a URL or a path on the target (its URL.sha256sum is checked)",
    "download_base": "NVIDIA's download site or a mirror in its layout (default https://download.nvidia.com)",
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
    module=None,
    cuda=None,
    sha256=None,
    unverified=False,
    installer_url=None,
    download_base=None,
    hold_kernel=False,
    hosts=None,
    json=False,
):
    """Install the NVIDIA driver the GPUs need, checksum-verified, rebooting as needed, and verify it."""
    options = install_options(
        c,
        version=version,
        branch=branch,
        method=method,
        module=module,
        cuda=cuda,
        sha256=sha256,
        unverified=unverified,
        installer_url=installer_url,
        download_base=download_base,
        hold_kernel=hold_kernel,
    )
    on_targets(
        c,
        lambda host: install_driver(host, **options, c=c),
        hosts=hosts,
        json_out=json,
        summary=lambda r: f"driver {r['driver']}",
    )


def install_options(c: Any, **given: Any) -> dict[str, Any]:
    """The install options from the flags, else the `driver` settings; bad values refused here."""
    method = _setting(c, "method", given.get("method"))
    if method not in ("run", "apt"):
        raise Exit(f"--method {method}: choose run or apt.")
    module = _setting(c, "module", given.get("module")) or None
    if module not in (None, "open", "proprietary"):
        raise Exit(f"--module {module}: choose open or proprietary.")
    sha256 = _setting(c, "sha256", given.get("sha256")) or None
    if sha256 and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise Exit("--sha256 must be 64 hex digits.")
    base = _setting(c, "download_base", given.get("download_base"))
    if not re.fullmatch(r"(https?|file)://\S+", base or ""):
        raise Exit(f"--download-base {base!r}: give a URL such as https://download.nvidia.com or a mirror's.")
    installer_url = _setting(c, "installer_url", given.get("installer_url")) or None
    if installer_url and not re.fullmatch(r"(https?|file)://\S+", installer_url):
        raise Exit(f"--installer-url {installer_url!r}: give an https://, http:// or file:// URL of the installer.")
    version = _setting(c, "version", given.get("version")) or None
    branch = _setting(c, "branch", given.get("branch")) or None
    from tfrig.knowledge import driverplan

    try:
        driverplan.check_choice(version, branch, given.get("cuda"))
    except driverplan.Refusal as refusal:
        raise Exit(str(refusal)) from None
    return {
        "version": version,
        "branch": branch,
        "method": method,
        "module": module,
        "cuda": given.get("cuda"),
        "sha256": sha256,
        "unverified": bool(given.get("unverified")) or bool(c.config.driver.get("unverified")),
        "installer_url": installer_url,
        "download_base": base,
        "apt_repo_base": c.config.driver.get("apt_repo_base") or None,
        "hold_kernel": bool(given.get("hold_kernel")) or bool(c.config.driver.get("hold_kernel")),
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


@task(help={"json": JSON_HELP})
def versions(c, json=False):
    """Show the driver branches tfrig offers: the release each installs, the GPU generations it
    drives, the newest CUDA and TensorFlow it runs, and where the release was read."""
    from packaging.version import Version

    from tfrig.knowledge import driverplan, resolver
    from tfrig.knowledge.catalog import compat

    catalog = compat()["nvidia_driver_branches"]
    names = {str(branch): alias for alias, branch in catalog["aliases"].items()}
    builds = resolver.builds()
    rows = []
    for row in catalog["branches"]:
        branch, version = str(row["branch"]), str(row["version"])
        tf = next((b.tf for b in builds if Version(version) >= Version(resolver.driver_minimum(b.cuda, b.tf))), None)
        rows.append(
            {
                "branch": branch,
                "name": names.get(branch),
                "version": version,
                "generations": driverplan.branch_generations(int(branch)),
                "max_cuda": str(catalog["max_cuda"][branch]),
                "newest_tensorflow": tf,
                "tagged": str(row["tagged"]),
                "source": row["source"],
            }
        )
    from tfrig.ui import print_json, table

    if json:
        print_json(rows)
        return
    table(
        ["branch", "release", "drives", "CUDA up to", "TensorFlow up to"],
        [
            (
                f"R{r['branch']}" + (f" ({r['name']})" if r["name"] else ""),
                r["version"],
                ", ".join(g.title() for g in r["generations"]),
                r["max_cuda"],
                r["newest_tensorflow"] or "none on the GPU",
            )
            for r in rows
        ],
    )


ns = Collection("driver", status, prepare, install, uninstall, versions)
ns.configure(
    {
        "driver": {
            "method": "run",
            "module": "",
            "version": "",
            "branch": "",
            "sha256": "",
            "unverified": False,
            "installer_url": "",
            # NVIDIA's site: the .run and the .sha256sum beside it (compat.yaml nvidia_run_installer)
            "download_base": "https://download.nvidia.com",
            "apt_repo_base": "",
            "hold_kernel": False,
        }
    }
)
