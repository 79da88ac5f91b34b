"""tf: which TensorFlow fits, installing it, and proving it runs on the GPU."""

from __future__ import annotations

import json as json_module
import re
import shlex
import time
from typing import Any

from invoke import Collection
from invoke.exceptions import Exit

from tfrig.hosts import readahead
from tfrig.hosts.host import SCRIPTS, Alongside, Host, StepFailed, hold_tunnel, shell_path
from tfrig.hosts.runner import on_targets
from tfrig.settings import setting
from tfrig.steps.tfenv import Environment, environment, environment_probes
from tfrig.tasks.conda import has_conda_pin
from tfrig.tasks.taskdef import (
    COLAB_PASTE,
    HOSTS_HELP,
    JSON_HELP,
    checked_url,
    free_local_port,
    port_number,
    task,
    wait_for_listener,
)
from tfrig.ui import print_json, table

VERIFY_MARK = "@@tfrig-verify "


def _setting(c: Any, key: str, value: Any) -> Any:
    return setting(c, "tf", key, value)


def _needs_library_links(version: str) -> bool:
    """compat.yaml tensorflow_builds.package_history.docs_fix_applied_for: releases that find their
    pip CUDA libraries in a venv only once linked into TensorFlow's folder."""
    from tfrig.knowledge.catalog import compat

    minor = ".".join(version.split(".")[:2])
    return minor in compat()["tensorflow_builds"]["package_history"]["docs_fix_applied_for"]


def _has_pin(packages: dict[str, str], pin: str) -> bool:
    """Whether a pip pin (`name==version`) is what the env has."""
    name, _, version = pin.partition("==")
    return packages.get(re.sub(r"[-.]", "_", name.lower())) == version


def _assumed_env_facts(env: Environment, tensorflow: str) -> str:
    """Under --dry over a VM not created: the env facts once this install would have run."""
    facts = {
        "python_runs": True,
        "python_version": env.python_version or env.system_python,
        "pip": True,
        "packages": {**env.packages, "tensorflow": tensorflow},
    }
    return json_module.dumps({"system_python": env.system_python, env.kind: facts})


def _installed(env: Environment, plan: Any) -> bool:
    """The env has the plan's TensorFlow and every pip package it pins."""
    return env.tensorflow == plan.tf and all(_has_pin(env.packages, pin) for pin in plan.pip_packages)


def _want_gpu(gpu: bool, cpu: bool, env: Environment) -> bool:
    if gpu and cpu:
        raise Exit("Give --gpu or --cpu, not both.")
    return gpu or (not cpu and env.driver is not None)


def _plan(c: Any, version: str | None, python: str | None, gpu: bool, env: Environment) -> Any:
    from tfrig.knowledge import resolver

    try:
        return resolver.resolve(
            version=_setting(c, "version", version) or None,
            python=python,
            gpu=gpu,
            target_python=None if python else (env.python_version if env.exists else env.system_python),
            driver=env.driver,
            compute_capability=env.compute_capability,
        )
    except resolver.Refusal as refusal:
        raise Exit(str(refusal)) from None


@task(
    help={
        "version": "TensorFlow release, e.g. 2.21.0 (default tf.version, else the newest)",
        "python": "Python version for a new venv's check (the env's own Python is used)",
        "gpu": "install the GPU build even where no GPU is seen yet",
        "cpu": "install without the CUDA libraries even on a GPU host",
        "index_url": "package index to install from (a mirror)",
        "find_links": "a folder or URL of wheels to install from (offline hosts, a wheelhouse)",
        "no_index": "use only --find-links, never an index",
        "installer": "uv (default: faster, from the same package sources; bench/tf_install.py) or pip",
        "hosts": HOSTS_HELP,
        "json": JSON_HELP,
    }
)
def install(
    c,
    version=None,
    python=None,
    gpu=False,
    cpu=False,
    index_url=None,
    find_links=None,
    no_index=False,
    installer=None,
    hosts=None,
    json=False,
):
    """Install the TensorFlow that fits the target, pinned, into its conda env or a venv."""
    _check_index_url(c, index_url)
    installer = _setting(c, "installer", installer)
    if installer not in INSTALLERS:
        raise Exit(f"--installer {installer}: choose uv or pip.")

    def work(host: Host) -> dict[str, Any]:
        env = environment(host, c)
        plan = _plan(c, version, python, _want_gpu(gpu, cpu, env), env)
        result = {
            "tensorflow": plan.tf,
            "gpu": plan.gpu,
            "env": env.path,
            "kind": env.kind,
            "requirement": plan.requirement,
        }
        if plan.conda_packages:
            missing_conda = [pin for pin in plan.conda_packages if not has_conda_pin(env.conda_packages, pin)]
            if env.kind != "conda" or missing_conda:
                raise Exit(
                    f"[{host.label}] TensorFlow {plan.tf} takes its CUDA libraries from conda-forge "
                    f"({', '.join(missing_conda if env.kind == 'conda' else plan.conda_packages)}): "
                    "run `inv conda.install conda.create conda.cuda` first, "
                    "or use TensorFlow 2.14+ (tensorflow[and-cuda])."
                )
        if _installed(env, plan):
            host.say(f"already done: TensorFlow {plan.tf} in {env.kind} {env.path}")
            return {**result, "changed": False}
        sources = _pip_sources(c, host, index_url, find_links, no_index)
        if not env.exists:
            host.say(f"{'completing' if env.python_version else 'creating'} venv {env.path}")
            host.script(
                "python-venv.sh",
                {"VENV": env.path, "AS_USER": host.user},
                progress=f"venv {env.path}",
            )
        for note in plan.notes:
            host.say(f"note: {note}")
        requirements = [plan.requirement, *plan.pip_packages]
        host.say(
            f"installing {' '.join(requirements)} into {env.path}"
            + (" (was " + env.tensorflow + ")" if env.tensorflow else "")
        )
        out = host.change(
            _tf_install(host, env.python, requirements, sources, installer),
            what=f"{'uv (else pip)' if installer == 'uv' else 'pip'} install {' '.join(requirements)}",
            progress=f"installing {plan.requirement}",
        )
        used = installer
        for line in out.splitlines():
            if line.startswith("note: "):
                host.say(line)
            elif line.startswith("installer: "):
                used = line.split()[1]
        result["installer"] = used
        if plan.gpu and env.kind == "venv" and _needs_library_links(plan.tf):
            host.say(
                "linking the pip CUDA libraries into TensorFlow's folder (TensorFlow's pip page, for this release)"
            )
            host.script("tf-cuda-links.sh", {"VENV": env.path}, sudo=False, progress="linking CUDA libraries")
        host.assume({"tf_env": (0, _assumed_env_facts(env, plan.tf))})
        if not host.dry:
            installed = environment(host, c).tensorflow
            if installed != plan.tf:
                raise Exit(
                    f"[{host.label}] {used} finished but {env.path} has TensorFlow {installed or 'not at all'}, "
                    f"not {plan.tf}; see the log with `inv tf.install` again."
                )
            host.say(f"TensorFlow {plan.tf} installed (with {used})")
        return {**result, "changed": True}

    on_targets(c, work, hosts=hosts, json_out=json, summary=lambda r: f"TensorFlow {r['tensorflow']}")


# What TensorFlow logs when it can't use a GPU, and what that means (pattern, diagnosis, fix).
_GPU_LOG_DIAGNOSES = (
    (
        r"Could not find cuda drivers on your machine|no NVIDIA GPU device is present|CUDA_ERROR_NO_DEVICE",
        "no NVIDIA driver or GPU: TensorFlow found no CUDA driver on this host",
        "inv gpu.setup (driver), then gpu.check",
    ),
    (
        # TensorFlow >= 2.18's own kernels are PTX for its CUDA; an older driver can't JIT them
        # (tf_gpu_runtime_wrappers.cc, as logged in CY-CHENYUE/ComfyUI-Molmo#26 with TF 2.18.0 on a T4).
        r"CUDA_ERROR_UNSUPPORTED_PTX_VERSION",
        "the NVIDIA driver is older than the CUDA TensorFlow's own GPU kernels were built with, so it can't "
        "compile them (CUDA_ERROR_UNSUPPORTED_PTX_VERSION)",
        "inv driver.install (the lts branch; TensorFlow 2.18+ needs 555.42.02 or newer), or TensorFlow 2.17",
    ),
    (
        r"CUDA driver version is insufficient|CUDA_ERROR_SYSTEM_DRIVER_MISMATCH|does not match DSO version",
        "the NVIDIA driver is too old for the CUDA this TensorFlow was built with",
        "inv driver.install (a newer branch), or an older TensorFlow",
    ),
    (
        r"Cannot dlopen some GPU libraries|Could not load dynamic library|libcudnn|libcudart",
        "the CUDA or cuDNN libraries are missing or mismatched in the environment",
        "inv tf.install --gpu (tensorflow[and-cuda]), or conda.cuda for TensorFlow < 2.14",
    ),
    (
        r"Ignoring visible gpu device .* compute capability",
        "the GPU's compute capability is below what this TensorFlow build supports",
        "use a newer GPU (compute capability 6.0+)",
    ),
    (
        r"failed call to cuInit",
        "the CUDA driver failed to initialise (module not loaded, or the GPU is busy or in a bad state)",
        "inv gpu.check; a reboot often helps",
    ),
)


def diagnose_no_gpu(log: str) -> tuple[str, str]:
    """Why TensorFlow sees no GPU, read from what it logged."""
    for pattern, diagnosis, fix in _GPU_LOG_DIAGNOSES:
        if re.search(pattern, log):
            return diagnosis, fix
    return "TensorFlow logged no reason for seeing no GPU", "inv gpu.check; inv docker.doctor for containers"


def read_verify(output: str) -> dict[str, Any]:
    """The verify program's JSON line, plus the diagnosis when no GPU was used."""
    line = next((ln for ln in output.splitlines() if ln.startswith(VERIFY_MARK)), None)
    if line is None:
        lines = output.strip().splitlines()
        raise Exit(f"TensorFlow did not run: {lines[-1] if lines else 'no output'}")
    report: dict[str, Any] = json_module.loads(line[len(VERIFY_MARK) :])
    report["diagnosis"] = report["fix"] = None
    if not report["gpus"]:
        report["diagnosis"], report["fix"] = diagnose_no_gpu(output)
    return report


@task(
    help={
        "require_gpu": "fail unless TensorFlow uses a GPU (default: only where nvidia-smi sees one)",
        "hosts": HOSTS_HELP,
        "json": JSON_HELP,
    }
)
def verify(c, require_gpu=False, hosts=None, json=False):
    """Run a real computation with TensorFlow on the target and report what it used."""
    program = (SCRIPTS / "tf-verify.py").read_text()

    def work(host: Host) -> dict[str, Any]:
        env = environment(host, c)
        if not env.tensorflow:
            raise Exit(f"[{host.label}] no TensorFlow in {env.path}: run `inv tf.install` first.")
        if host.target.assumed is not None:  # --dry over a VM not created: nothing to run it on
            host.say(f"would run a matrix product with TensorFlow {env.tensorflow} and report the GPU it used")
            return {"tensorflow": env.tensorflow, "assumed": True, "device": "", "gpus": []}
        run = host.fact(f"{env.python} -c {shlex.quote(program)}")
        report = read_verify(run.out)
        failed = [op for op in report["ops"] if not op["ok"]]
        if failed:
            op = failed[0]
            cause = op.get("error") or "a wrong result"
            diagnosis, fix = diagnose_no_gpu(run.out) if op.get("error") else (None, None)
            raise Exit(
                f"[{host.label}] TensorFlow's {op['op']} on {op['device']} failed: {cause}"
                + (f"; {diagnosis}; fix: {fix}" if diagnosis else "")
            )
        off_gpu = [op for op in report["ops"] if "GPU" not in op["device"].upper()]
        if report["gpus"] and off_gpu:
            raise Exit(
                f"[{host.label}] TensorFlow lists a GPU but ran {off_gpu[0]['op']} on {off_gpu[0]['device']}: "
                "the GPU did not do the work; see TensorFlow's log with `inv tf.verify` on the host."
            )
        used = ", ".join(f"{g['name']} (compute capability {g['compute_capability']})" for g in report["gpus"])
        if not json:
            versions = f"Python {report['python']}, CUDA {report['cuda']}, cuDNN {report['cudnn']}"
            host.say(f"TensorFlow {report['tensorflow']} ({versions})")
            for op in report["ops"]:
                host.say(f"{op['op']} on {op['device']}: correct in {op['ms']} ms")
            host.say(f"GPUs: {used}" if used else f"no GPU: {report['diagnosis']}; fix: {report['fix']}")
            host.say(f"{report['seconds']} s in all, with TensorFlow's start-up")
        if not report["gpus"] and (require_gpu or env.driver):
            raise Exit(f"[{host.label}] TensorFlow sees no GPU: {report['diagnosis']}; fix: {report['fix']}")
        return report

    on_targets(c, work, hosts=hosts, json_out=json, summary=lambda r: r["device"].split("device:")[-1])


@task(
    help={
        "python": "mark the releases that support this Python version",
        "driver": "mark the releases whose CUDA this driver version runs",
        "json": JSON_HELP,
    }
)
def versions(c, python=None, driver=None, json=False):
    """Show TensorFlow releases with their Python range, CUDA, cuDNN, and what fits."""
    from packaging.version import InvalidVersion, Version

    from tfrig.knowledge import resolver

    if python and not re.fullmatch(r"\d+\.\d+", python):
        raise Exit(f"--python {python}: give major.minor, e.g. 3.11.")
    try:
        Version(driver or "0")
    except InvalidVersion:
        raise Exit(f"--driver {driver}: give a driver version such as 580.95.05 (nvidia-smi shows it).") from None
    rows = []
    for build in resolver.builds():
        minimum = resolver.driver_minimum(build.cuda, build.tf)
        fits = (not python or build.supports(python)) and (not driver or Version(driver) >= Version(minimum))
        gpu_install = (
            "tensorflow[and-cuda]"
            if build.version >= resolver.AND_CUDA_SINCE
            else ("tensorflow + conda cudatoolkit/cudnn" if build.version.major >= 2 else "tensorflow-gpu + conda")
        )
        rows.append(
            {
                "tensorflow": build.tf,
                "python": build.python_range,
                "cuda": build.cuda,
                "cudnn": build.cudnn,
                "driver_min": minimum,
                "gpu_install": gpu_install,
                "fits": fits if (python or driver) else None,
            }
        )
    if json:
        print_json(rows)
        return
    headers = ["tensorflow", "python", "cuda", "cudnn", "driver >=", "GPU install"] + (
        ["fits"] if python or driver else []
    )
    table(
        headers,
        [
            [r["tensorflow"], r["python"], r["cuda"], r["cudnn"], r["driver_min"], r["gpu_install"]]
            + (["yes" if r["fits"] else "no"] if python or driver else [])
            for r in rows
        ],
    )


def _check_index_url(c: Any, index_url: str | None) -> None:
    """A package index given (or set in tf.index_url) is a URL pip takes, checked before anything runs."""
    chosen = _setting(c, "index_url", index_url)
    if chosen:
        checked_url("index-url", chosen, ("https", "http", "file"))


def _pip_sources(
    c: Any, host: Host, index_url: str | None, find_links: str | None, no_index: bool
) -> tuple[list[str], str | None]:
    """pip's options for where packages come from, and an index URL that carries a credential
    (kept out of the options: see _pip_install). A --find-links folder is checked there on the
    target before anything changes (pip would only warn and go to the index)."""
    from urllib.parse import urlsplit

    options = ["--disable-pip-version-check", "-q"]
    index_url = _setting(c, "index_url", index_url)
    find_links = _setting(c, "find_links", find_links)
    local_links = find_links and "://" not in find_links and host.target.assumed is None
    if local_links and not host.fact(f"test -e {shell_path(str(find_links))}").ok:
        raise Exit(f"[{host.label}] --find-links {find_links}: no such folder there.")
    secret_index = index_url if index_url and urlsplit(str(index_url)).username else None
    if index_url and not secret_index:
        options += ["--index-url", shlex.quote(index_url)]
    if find_links:
        options += ["--find-links", shell_path(find_links)]
    if no_index:
        options.append("--no-index")
    return options, secret_index


def _pip_install(host: Host, python: str, packages: list[str], sources: tuple[list[str], str | None]) -> str:
    """The pip install command. An index URL with a credential goes to pip in a private config
    file (PIP_CONFIG_FILE), never as an argument, which anyone on the host can read in the
    process list; pip reads that file with RawConfigParser, so a % in the URL stays as it is."""
    options, secret_index = sources
    command = f"{python} -m pip install {' '.join(options)} {' '.join(shlex.quote(p) for p in packages)}"
    return _with_secret_index(host, command, secret_index)


def _with_secret_index(host: Host, command: str, secret_index: str | None) -> str:
    """`command` with pip's index URL, where it carries a credential, in a private PIP_CONFIG_FILE."""
    if secret_index:
        return host.with_private_file(f"[global]\nindex-url = {secret_index}\n", command, "PIP_CONFIG_FILE")
    return command


INSTALLERS = ("uv", "pip")


def _tf_install(
    host: Host,
    python: str,
    packages: list[str],
    sources: tuple[list[str], str | None],
    installer: str,
    prefetch: bool = False,
) -> str:
    """The install command: scripts/tf-install.py run by the env's Python, which installs with uv
    (pinned, checksum-verified, from the same sources; pip's own settings translated) or says why
    pip does it. An index URL with a credential reaches it as pip's would (_with_secret_index)."""
    from tfrig.knowledge.catalog import compat

    options, secret_index = sources
    pinned = compat()["uv_installer"]
    argument = json_module.dumps(
        {"installer": installer, "uv": {"version": pinned["version"], "sha256": pinned["sha256"]}, "prefetch": prefetch}
    )
    script = shlex.quote((SCRIPTS / "tf-install.py").read_text())
    words = [python, "-c", script, shlex.quote(argument), *options, "--", *(shlex.quote(p) for p in packages)]
    return _with_secret_index(host, " ".join(words), secret_index)


def wheel_prefetch(c: Any, host: Host) -> Alongside | None:
    """Where a tf.install comes later in this run on this host (`gpu.setup tf.install`), fetch the
    wheels it will install into the target's uv (or pip) cache now, alongside the driver's install:
    they don't need the driver, and the install after the reboot reads them from there. Its plan
    is tf.install's own, for the GPU the driver is for; None (nothing started) where there is no
    such tf.install, where TensorFlow is already there, or where tf.install would refuse (it says
    why in its turn); under --dry it only says what it would fetch."""
    from dataclasses import replace

    later = readahead.later_call(c.config, install)
    if later is None:
        return None
    installer = _setting(c, "installer", later.get("installer"))
    try:
        _check_index_url(c, later.get("index_url"))
        env = environment(host, c)
        # The GPU build unless --cpu: the driver tf.install will see is the one installing now,
        # not whatever is loaded before it (tf.install checks it against TensorFlow's floor).
        gpu = bool(later.get("gpu")) or not later.get("cpu")
        plan = _plan(c, later.get("version"), later.get("python"), gpu, replace(env, driver=None))
        sources = _pip_sources(c, host, later.get("index_url"), later.get("find_links"), bool(later.get("no_index")))
    except (Exit, StepFailed):  # an optimisation, never the reason a driver install fails
        return None
    if installer not in INSTALLERS or (plan.conda_packages and env.kind != "conda") or _installed(env, plan):
        return None
    requirements = [plan.requirement, *plan.pip_packages]
    if host.dry:
        host.say(f"would fetch {' '.join(requirements)} for tf.install into the {installer} cache meanwhile")
        return None
    host.say(f"meanwhile: fetching {' '.join(requirements)} for tf.install into the {installer} cache")
    commands = []
    if not env.exists:  # the venv tf.install would make; its apt waits for the driver's
        commands.append((host.script_command("python-venv.sh", {"VENV": env.path, "AS_USER": host.user}), True))
    commands.append((_tf_install(host, env.python, requirements, sources, installer, prefetch=True), False))
    return host.alongside(commands)


def prefetched(host: Host, fetching: Alongside) -> None:
    """Wait for wheel_prefetch's fetch (before a reboot, or as the driver's task ends) and say how it went."""
    from tfrig.hosts import progress

    if fetching.done:
        seconds = fetching.wait()
    else:
        with progress.step(host.label, "waiting for TensorFlow's wheels", host.out):
            seconds = fetching.wait()
    for line in fetching.output.splitlines():
        if line.startswith("note: "):
            host.say(line)
    if fetching.failure:
        host.say(f"note: fetching TensorFlow's wheels failed ({fetching.failure}): tf.install fetches them")
    else:
        host.say(
            f"TensorFlow's wheels fetched alongside the driver ({seconds:.0f} s): tf.install takes them from the cache"
        )


COLAB_ORIGIN = "https://colab.research.google.com"


def _allows_colab(python: str, port: int) -> str:
    """A probe: the server on `port` allows requests from Colab's origin (exit 0: its answer to the
    preflight names that origin in Access-Control-Allow-Origin); one without it doesn't."""
    # The CORS preflight a browser sends before Colab's requests: answered without the token.
    headers = f"{{'Origin': '{COLAB_ORIGIN}', 'Access-Control-Request-Method': 'GET'}}"
    program = (
        "import sys, urllib.request as u; "
        f"r = u.Request('http://127.0.0.1:{port}/api/status', method='OPTIONS', headers={headers}); "
        f"sys.exit(0 if u.urlopen(r, timeout=10).headers.get('Access-Control-Allow-Origin') == '{COLAB_ORIGIN}' else 1)"
    )
    return f"{python} -c {shlex.quote(program)}"


def _running_servers(host: Host, env: Environment) -> list[dict[str, Any]]:
    listed = host.fact(f"{env.python} -m jupyter server list --json")
    servers = []
    for line in listed.out.splitlines() if listed.ok else []:
        try:
            servers.append(json_module.loads(line))
        except ValueError:
            continue
    return servers


@task(
    help={
        "port": "port of JupyterLab on the target, bound to its 127.0.0.1 (default 8888)",
        "local_port": "port on this machine for the SSH tunnel (default: the same)",
        "tunnel": "hold an SSH tunnel open until Ctrl-C (default yes; --no-tunnel prints the ssh -L command)",
        "index_url": "package index for installing jupyterlab",
        "find_links": "wheels folder or URL for installing jupyterlab",
        "no_index": "use only --find-links",
        "colab": "a runtime Colab connects to (Connect > Connect to a local runtime): Colab's origin allowed",
        "hosts": "one user@host:port (default: the run's target, tfrig.hosts, or here)",
        "json": JSON_HELP,
    }
)
def jupyter(
    c,
    port=8888,
    local_port=None,
    tunnel=True,
    index_url=None,
    find_links=None,
    no_index=False,
    colab=False,
    hosts=None,
    json=False,
):
    """JupyterLab in the TensorFlow env on 127.0.0.1 of the target, reached through an SSH tunnel;
    --colab: a local runtime for Colab, on the target's GPUs."""
    port = port_number("port", port)
    local_port = port_number("local-port", local_port) if local_port not in (None, "") else None
    _check_index_url(c, index_url)
    from tfrig.hosts import targets
    from tfrig.hosts.host import connect
    from tfrig.ui import info_stream

    chosen = targets.resolve(c, hosts=hosts)
    if len(chosen) != 1:
        raise Exit("tf.jupyter serves one host at a time; give one with -H.")
    target = chosen[0]
    if tunnel and not target.is_local and not c.config.run.dry:
        free_local_port("local-port", local_port or port)  # before anything starts there
    out = info_stream(json)
    print(f"target: {target.label}", file=out)
    conn = connect(c, target)
    host = Host(conn, target, out=out)
    env = environment(host, c)
    if not env.tensorflow:
        raise Exit(f"[{host.label}] no TensorFlow in {env.path}: run `inv tf.install` first.")
    if not host.fact(f"{env.python} -m jupyter lab --version").ok:
        host.say(f"installing jupyterlab into {env.path}")
        host.change(
            _pip_install(host, env.python, ["jupyterlab"], _pip_sources(c, host, index_url, find_links, no_index)),
            what="pip install jupyterlab",
        )
    servers = [s for s in _running_servers(host, env) if int(s.get("port", 0)) == int(port)]
    if servers and colab and not host.fact(_allows_colab(env.python, int(port))).ok:
        raise Exit(
            f"[{host.label}] JupyterLab runs on port {port} there without Colab's origin: stop it "
            f"(`jupyter server stop {port}` in the env) or give another --port."
        )
    if not servers:
        log = shell_path("~/.tfrig-jupyter.log")
        # Colab's local-runtime page: the server trusts requests and WebSockets from Colab's
        # frontend (allow_origin), on a fixed port (port_retries=0).
        origin = f" --ServerApp.allow_origin={COLAB_ORIGIN}" if colab else ""
        host.change(
            f"nohup {env.python} -m jupyter lab --no-browser --ip=127.0.0.1 --port={int(port)} "
            f"--ServerApp.port_retries=0{origin} >{log} 2>&1 </dev/null &",
            what=f"start JupyterLab on 127.0.0.1:{port}" + (" for Colab" if colab else ""),
        )
        if host.dry:
            return
        for _ in range(60):
            servers = [s for s in _running_servers(host, env) if int(s.get("port", 0)) == int(port)]
            if servers:
                break
            time.sleep(1)
        else:
            raise Exit(f"[{host.label}] JupyterLab did not start on port {port}; see ~/.tfrig-jupyter.log there.")
    elif host.dry:
        return
    token = servers[0].get("token", "")
    local = int(local_port or port)
    url = f"http://127.0.0.1:{local}/lab?token={token}"
    result = {"url": url, "remote_port": int(port), "local_port": local, "host": target.label}
    if colab:  # the backend URL Colab asks for, at this machine's end of the tunnel
        result["colab_url"] = url = f"http://127.0.0.1:{local}/?token={token}"
    label = COLAB_PASTE if colab else "JupyterLab:"
    if target.is_local or not tunnel:
        if not target.is_local:
            user = f"{target.user}@" if target.user else ""
            ssh_port = f" -p {target.port}" if target.port else ""
            result["ssh"] = f"ssh -N -L {local}:127.0.0.1:{port}{ssh_port} {user}{target.host}"
            print(f"open the tunnel with: {result['ssh']}", file=out)
        if json:
            print_json(result)
        else:
            print(f"{label} {url}")
        return

    def opened() -> None:
        wait_for_listener(local)  # Fabric binds the tunnel's port in a thread of its own
        if json:
            print_json(result)
        else:
            print(f"{label} {url}  (SSH tunnel open; Ctrl-C closes it)", flush=True)

    hold_tunnel(conn, local, int(port), opened)
    print("tunnel closed; JupyterLab keeps running on the target", file=out)


@task(
    help={
        "script": "the Python program to run, a path inside --folder (e.g. train.py)",
        "args": 'its arguments, as shell words (e.g. "--epochs 3")',
        "folder": "the folder sent to every host, only what changed (default: this one; "
        ".tfrigignore or .gitignore says what stays)",
        "remote_folder": "where the folder goes on each host (default ~/tfrig-runs/<its name>)",
        "port": "the port each worker listens on for the others (default 12345)",
        "cluster_addresses": "host or host:port per target, in order, where the workers reach each other "
        "(default: a VM's internal address, else the -H host)",
        "hosts": HOSTS_HELP,
        "json": JSON_HELP,
    }
)
def run(
    c, script, args=None, folder=None, remote_folder=None, port=12345, cluster_addresses=None, hosts=None, json=False
):
    """Run one TensorFlow program on every target as one multi-worker job (TF_CONFIG), streaming its output."""
    from tfrig.tfrun import run_job

    run_job(
        c,
        script=script,
        args=args,
        folder=folder,
        remote_folder=remote_folder,
        port=port_number("port", port),
        cluster_addresses=cluster_addresses,
        hosts=hosts,
        json_out=json,
    )


for _task in (install, verify, jupyter, run):
    readahead.first_probes(_task, environment_probes)
ns = Collection("tf", install, verify, versions, jupyter, run)
ns.configure({"tf": {"version": "", "venv": "~/tf-venv", "index_url": "", "find_links": "", "installer": "uv"}})
