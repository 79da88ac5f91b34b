"""conda: Miniconda (or Miniforge) on a target, its environments and CUDA libraries.

Every command runs through the prefix's own `bin/conda`, so no shell initialisation is needed
over SSH.
"""

from __future__ import annotations

import json as json_module
import re
import shlex
from typing import Any

from invoke import Collection
from invoke.exceptions import Exit

from tfrig.hosts.host import Host, StepFailed, shell_path
from tfrig.hosts.runner import on_targets
from tfrig.settings import setting
from tfrig.tasks.taskdef import HOSTS_HELP, JSON_HELP, checked_name, checked_url, task

PREFIX_HELP = "conda's install prefix (default conda.prefix, ~/miniconda3)"
ENV_HELP = "environment name (default conda.env, tf)"

# compat.yaml miniconda: installer URLs, and where each distribution publishes its SHA-256s.
DISTRIBUTIONS: dict[str, dict[str, Any]] = {
    "miniconda": {
        "url": "https://repo.anaconda.com/miniconda/Miniconda3-latest-Linux-{arch}.sh",
        "sha256_url": "https://repo.anaconda.com/miniconda/",  # the index lists each installer's SHA-256
        "tos": True,
    },
    "miniforge": {
        "url": "https://github.com/conda-forge/miniforge/releases/latest/download/Miniforge3-Linux-{arch}.sh",
        "sha256_url": "{url}.sha256",  # published beside each release asset
        "tos": False,
    },
}
TOS_CHANNELS = ("https://repo.anaconda.com/pkgs/main", "https://repo.anaconda.com/pkgs/r")
TOS_ERROR = "CondaToSNonInteractiveError"


def _setting(c: Any, key: str, value: Any) -> Any:
    return setting(c, "conda", key, value)


def _checked_prefix(prefix: str) -> str:
    """Where conda lives on the target: an absolute path, or one under the user's home (~/)."""
    if not (prefix.startswith("/") or prefix == "~" or prefix.startswith("~/")) or "\n" in prefix:
        raise Exit(f"--prefix {prefix[:80]!r}: give an absolute path, or one under ~/ (the target user's home).")
    return prefix


def conda_bin(prefix: str) -> str:
    return shell_path(prefix.rstrip("/") + "/bin/conda")


def run_conda(host: Host, prefix: str, args: str, what: str) -> str:
    """A conda command that changes the target; the 2025 ToS error becomes its fix."""
    try:
        return host.change(f"{conda_bin(prefix)} {args}", what=what)
    except StepFailed as failure:
        if TOS_ERROR in str(failure):
            raise Exit(
                f"[{host.label}] conda refuses the default channels until Anaconda's Terms of Service are "
                "accepted: run `inv conda.install --accept-tos` (or set conda.accept_tos), or use conda-forge only."
            ) from None
        raise


def env_list(host: Host, prefix: str) -> list[str] | None:
    """The environments' paths, or None when there is no conda at `prefix`."""
    fact = host.fact(f"{conda_bin(prefix)} env list --json")
    if not fact.ok:
        return None
    try:
        return list(json_module.loads(fact.out[fact.out.index("{") :])["envs"])
    except (ValueError, KeyError):
        return None


def has_conda_pin(packages: dict[str, str], pin: str) -> bool:
    """Whether a conda spec (`name=version`, a prefix as conda matches it) is what the env has."""
    name, _, version = pin.partition("=")
    have = packages.get(name)
    return have is not None and (have == version or have.startswith(version + "."))


def has_env(envs: list[str], name: str) -> bool:
    return any(path.rstrip("/").rsplit("/", 1)[-1] == name and "/envs/" in path for path in envs)


@task(
    help={
        "distribution": "miniconda (default; Anaconda's channels) or miniforge (conda-forge only)",
        "prefix": PREFIX_HELP,
        "installer_url": "the installer from a mirror (https://...) or a path on the target",
        "sha256": "the installer's SHA-256 (default: read from where the distribution publishes it)",
        "sha256_url": "where to read the SHA-256 from instead",
        "unverified": "run an installer whose SHA-256 is not known, accepting the risk",
        "accept_tos": "accept Anaconda's Terms of Service for the default channels (needed since July 2025)",
        "hosts": HOSTS_HELP,
        "json": JSON_HELP,
    }
)
def install(
    c,
    distribution=None,
    prefix=None,
    installer_url=None,
    sha256=None,
    sha256_url=None,
    unverified=False,
    accept_tos=False,
    hosts=None,
    json=False,
):
    """Install Miniconda (or Miniforge) in batch mode, checked against its published SHA-256."""
    distribution = _setting(c, "distribution", distribution)
    if distribution not in DISTRIBUTIONS:
        raise Exit(f"--distribution {distribution}: choose miniconda or miniforge.")
    spec = DISTRIBUTIONS[distribution]
    where = _checked_prefix(_setting(c, "prefix", prefix))
    asked_to_accept = bool(accept_tos)
    accept_tos = asked_to_accept or bool(c.config.conda.get("accept_tos"))
    if sha256 and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise Exit("--sha256 must be 64 hex digits.")
    installer_url = _setting(c, "installer_url", installer_url)
    for flag, url in (("installer-url", installer_url), ("sha256-url", sha256_url)):
        if url:
            checked_url(flag, url, ("https", "http", "file"))  # checked by SHA-256, so a plain mirror does
    if spec["tos"] and not accept_tos:
        raise Exit(
            "Miniconda's default channels need Anaconda's Terms of Service accepted (since July 2025), and an "
            "unattended install can't answer the prompt: pass --accept-tos (or set conda.accept_tos: true), "
            "or use --distribution miniforge (conda-forge only)."
        )
    if installer_url and not (sha256 or sha256_url or unverified):
        raise Exit(
            f"--installer-url {installer_url}: tfrig can't know its SHA-256; pass --sha256 (or --sha256-url), "
            "or --unverified to accept the risk."
        )

    def work(host: Host) -> dict[str, Any]:
        facts = host.probe({"conda": f"{conda_bin(where)} --version", "arch": "uname -m"})
        if facts["conda"].ok:
            host.say(f"already done: {facts['conda'].out.strip()} at {where}")
        else:
            arch = facts["arch"].out.strip()
            if arch not in ("x86_64", "aarch64"):
                raise Exit(f"[{host.label}] {arch}: conda installers are for x86_64 and aarch64.")
            url = installer_url or spec["url"].format(arch=arch)
            env = {"PREFIX": where, "URL": url}
            if sha256:
                env["SHA256"] = sha256.lower()
            elif sha256_url or not installer_url:
                env["SHA256_URL"] = sha256_url or spec["sha256_url"].format(url=url)
            elif unverified:
                env["UNVERIFIED"] = "1"
            host.say(f"installing {distribution} into {where} from {url}")
            host.script("install-conda.sh", env, sudo=False)
        # Accept on a fresh install, or on an existing one when the flag itself says so.
        if spec["tos"] and (not facts["conda"].ok or asked_to_accept):
            for channel in TOS_CHANNELS:
                command = f"tos accept --override-channels --channel {channel}"
                run_conda(host, where, command, f"conda {command}")
        return {"prefix": where, "distribution": distribution, "changed": not facts["conda"].ok}

    on_targets(c, work, hosts=hosts, json_out=json)


@task(
    help={
        "name": ENV_HELP,
        "python": "Python version, e.g. 3.11 (default: what the TensorFlow wanted supports)",
        "tf_version": "choose the Python for this TensorFlow release (default: the newest)",
        "prefix": PREFIX_HELP,
        "hosts": HOSTS_HELP,
        "json": JSON_HELP,
    }
)
def create(c, name=None, python=None, tf_version=None, prefix=None, hosts=None, json=False):
    """Create a conda env with the Python the TensorFlow version needs."""
    from tfrig.knowledge import resolver

    name = checked_name("name", "conda env", _setting(c, "env", name))
    where = _checked_prefix(_setting(c, "prefix", prefix))
    try:
        chosen = resolver.resolve(version=tf_version or c.config.tf.get("version") or None, python=python).python
    except resolver.Refusal as refusal:
        raise Exit(str(refusal)) from None

    def work(host: Host) -> dict[str, Any]:
        envs = env_list(host, where)
        if envs is None:
            raise Exit(f"[{host.label}] no conda at {where}: run `inv conda.install` first.")
        if has_env(envs, name):
            host.say(f"already done: env {name} exists")
            return {"env": name, "changed": False}
        host.say(f"creating env {name} with Python {chosen}")
        run_conda(host, where, f"create -y -q -n {shlex.quote(name)} python={chosen}", f"conda create {name}")
        return {"env": name, "python": chosen, "changed": True}

    on_targets(c, work, hosts=hosts, json_out=json)


@task(
    help={
        "name": ENV_HELP,
        "tf_version": "the TensorFlow release the libraries are for (default tf.version or newest)",
        "prefix": PREFIX_HELP,
        "hosts": HOSTS_HELP,
        "json": JSON_HELP,
    }
)
def cuda(c, name=None, tf_version=None, prefix=None, hosts=None, json=False):
    """Install cudatoolkit and cudnn into the env, for TensorFlow releases before 2.14."""
    from tfrig.knowledge import resolver

    name = checked_name("name", "conda env", _setting(c, "env", name))
    where = _checked_prefix(_setting(c, "prefix", prefix))
    try:
        plan = resolver.resolve(version=tf_version or c.config.tf.get("version") or None, gpu=True)
    except resolver.Refusal as refusal:
        raise Exit(str(refusal)) from None

    def work(host: Host) -> dict[str, Any]:
        if not plan.conda_packages:
            host.say(f"nothing to do: TensorFlow {plan.tf} brings its CUDA libraries with tensorflow[and-cuda]")
            return {"changed": False, "packages": []}
        envs = env_list(host, where)
        if envs is None or not has_env(envs, name):
            raise Exit(f"[{host.label}] no env {name}: run `inv conda.create` first.")
        env_path = f"{where.rstrip('/')}/envs/{name}"
        facts = host.probe(
            {
                "listed": f"{conda_bin(where)} list -n {shlex.quote(name)} --json",
                "activation": f"test -e {shell_path(env_path + '/etc/conda/activate.d/tfrig-cuda.sh')}",
            }
        )
        listed = facts["listed"]
        present = {p["name"]: p["version"] for p in json_module.loads(listed.out or "[]")} if listed.ok else {}
        missing = [pin for pin in plan.conda_packages if not has_conda_pin(present, pin)]
        if not missing and facts["activation"].ok:
            host.say(f"already done: {', '.join(plan.conda_packages)} in env {name}, on its library path")
            return {"changed": False, "packages": plan.conda_packages}
        if missing:
            packages = " ".join(shlex.quote(p) for p in missing)
            run_conda(
                host,
                where,
                f"install -y -q -n {shlex.quote(name)} -c conda-forge {packages}",
                f"conda install {packages}",
            )
        host.say(f"setting LD_LIBRARY_PATH in env {name}'s activation (TensorFlow's docs for releases before 2.14)")
        host.script("conda-cuda-vars.sh", {"ENV": env_path}, sudo=False, progress="env activation")
        return {"changed": True, "packages": missing}

    on_targets(c, work, hosts=hosts, json_out=json)


@task(help={"name": ENV_HELP, "prefix": PREFIX_HELP, "yes": "don't ask", "hosts": HOSTS_HELP, "json": JSON_HELP})
def remove(c, name=None, prefix=None, yes=False, hosts=None, json=False):
    """Remove a conda env."""
    from tfrig.ui import confirm

    name = checked_name("name", "conda env", _setting(c, "env", name))
    where = _checked_prefix(_setting(c, "prefix", prefix))

    def work(host: Host) -> dict[str, Any]:
        envs = env_list(host, where)
        if envs is None or not has_env(envs, name):
            host.say(f"already done: no env {name}")
            return {"changed": False}
        if not host.dry:
            confirm(
                f"[{host.label}] Remove conda env {name} and everything installed in it?", yes or c.config.tfrig.yes
            )
        run_conda(host, where, f"env remove -y -n {shlex.quote(name)}", f"conda env remove {name}")
        return {"changed": True}

    on_targets(c, work, hosts=hosts, json_out=json)


@task(help={"prefix": PREFIX_HELP, "hosts": HOSTS_HELP, "json": JSON_HELP})
def list_(c, prefix=None, hosts=None, json=False):
    """List the conda environments on the target."""
    where = _checked_prefix(_setting(c, "prefix", prefix))

    def work(host: Host) -> dict[str, Any]:
        envs = env_list(host, where)
        if envs is None:
            raise Exit(f"[{host.label}] no conda at {where}: run `inv conda.install`.")
        if not json:
            for env in envs:
                host.say(env)
        return {"prefix": where, "envs": envs}

    on_targets(c, work, hosts=hosts, json_out=json, summary=lambda r: f"{len(r['envs'])} envs")


ns = Collection("conda", install, create, cuda, remove)
ns.add_task(list_, name="list")
ns.configure(
    {
        "conda": {
            "prefix": "~/miniconda3",
            "env": "tf",
            "distribution": "miniconda",
            "installer_url": "",
            "accept_tos": False,
        }
    }
)
