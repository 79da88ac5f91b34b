"""Where TensorFlow lives on a target (a conda env if one is set up, else a venv), what it has, and
how to run its Python: read in one round trip by tf.*, tf.run and gcp.*."""

from __future__ import annotations

import json as json_module
import shlex
from dataclasses import dataclass, field
from typing import Any

from invoke.exceptions import Exit

from tfrig.hosts.host import SCRIPTS, Host, shell_path

TF_DISTRIBUTIONS = ("tensorflow", "tensorflow_gpu", "tensorflow_cpu")  # dist-info names, 1.x's first
# The env facts in one interpreter start: the system's python3, else either env's own Python.
_ENV_FACTS = (SCRIPTS / "tf-env-facts.py").read_text()


@dataclass
class Environment:
    """Where TensorFlow lives on the target: a conda env if one is set up, else a venv."""

    kind: str  # conda | venv
    path: str
    interpreter: str  # a shell word for its bin/python
    exists: bool  # its Python runs; a venv is ready only with its pip too
    python_version: str | None
    tensorflow: str | None
    system_python: str | None
    driver: str | None
    compute_capability: str | None
    packages: dict[str, str] = field(default_factory=dict)  # watched pip distributions -> version
    conda_packages: dict[str, str] = field(default_factory=dict)  # cudatoolkit, cudnn -> version
    library_path: str | None = None  # shell words for LD_LIBRARY_PATH, on the conda CUDA route

    @property
    def _library_assignment(self) -> str:
        return f'LD_LIBRARY_PATH={self.library_path}"${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"'

    @property
    def exports(self) -> str:
        """Shell words that set the env's variables for what runs after them (`export ...; `)."""
        return f"export {self._library_assignment}; " if self.library_path else ""

    @property
    def python(self) -> str:
        """A shell command that runs the env's Python as its activation would."""
        return f"env {self._library_assignment} {self.interpreter}" if self.library_path else self.interpreter


def _facts_command(conda_env: str, venv: str) -> str:
    args = f"{shell_path(conda_env)} {shell_path(venv)}"
    program = shlex.quote(_ENV_FACTS)
    fallbacks = " ".join(shell_path(path.rstrip("/") + "/bin/python") for path in (conda_env, venv))
    return (
        f"if command -v python3 >/dev/null; then exec python3 -c {program} {args} system; fi; "
        f'for py in {fallbacks}; do [ -x "$py" ] && exec "$py" -c {program} {args} env; done; exit 127'
    )


def conda_library_path(env: str, python_version: str | None) -> str:
    """LD_LIBRARY_PATH (shell words) for TensorFlow < 2.14 in a conda env, as TensorFlow's docs set it:
    pip's cuDNN (2.12/2.13), then the env's lib folder (cudatoolkit, conda-forge's cudnn)."""
    lib = env.rstrip("/") + "/lib"
    minor = ".".join((python_version or "3").split(".")[:2])
    return f"{shell_path(f'{lib}/python{minor}/site-packages/nvidia/cudnn/lib')}:{shell_path(lib)}"


def _conda_env(config: Any) -> str:
    return f"{config.conda.prefix.rstrip('/')}/envs/{config.conda.env}"


def environment_probes(config: Any, kwargs: Any = None) -> dict[str, str]:
    """What `environment` reads: also the first facts of tf.install, tf.verify and tf.jupyter."""
    return {
        "tf_env": _facts_command(_conda_env(config), config.tf.venv),
        "gpu": "nvidia-smi --query-gpu=driver_version,compute_cap --format=csv,noheader",
    }


def environment(host: Host, c: Any) -> Environment:
    """One round trip and one interpreter start: the target's Pythons, its TensorFlow envs, its GPU."""
    conda_env = _conda_env(c.config)
    venv = c.config.tf.venv
    facts = host.probe(environment_probes(c.config))
    try:
        found = json_module.loads(facts["tf_env"].out.strip().splitlines()[-1]) if facts["tf_env"].ok else {}
    except (ValueError, IndexError):
        raise Exit(f"[{host.label}] could not read the Python envs: {facts['tf_env'].out[-200:]}") from None
    gpu_lines = facts["gpu"].out.strip().splitlines() if facts["gpu"].ok else []
    parts = [part.strip() for part in gpu_lines[-1].split(",")] if gpu_lines else []
    driver, capability = (parts[0], parts[1]) if len(parts) == 2 else (None, None)
    common = {"system_python": found.get("system_python"), "driver": driver, "compute_capability": capability}

    def described(kind: str, path: str, env: dict[str, Any]) -> Environment:
        packages = env.get("packages", {})
        conda_packages = env.get("conda_packages", {})
        return Environment(
            kind,
            path,
            shell_path(path.rstrip("/") + "/bin/python"),
            bool(env.get("python_runs")) and (kind == "conda" or bool(env.get("pip"))),
            env.get("python_version"),
            next((packages[name] for name in TF_DISTRIBUTIONS if name in packages), None),
            packages=packages,
            conda_packages=conda_packages,
            # the conda CUDA route: the env's libraries on the path, as its activation sets them
            library_path=(
                conda_library_path(path, env.get("python_version")) if "cudatoolkit" in conda_packages else None
            ),
            **common,
        )

    conda = found.get("conda")
    if conda and conda.get("python_runs"):
        return described("conda", conda_env, conda)
    return described("venv", venv, found.get("venv") or {})
