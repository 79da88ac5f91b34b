"""What tfrig needs to know about a target's TensorFlow envs, read from the file system in one
interpreter start (argv: conda env folder, venv folder). Prints one JSON object.

Nothing here starts an env's Python unless its version can't be read from the files: a venv's
pyvenv.cfg, a conda env's conda-meta records. Written for Python 3.6+ (old images' python3).
"""

import glob
import json
import os
import subprocess
import sys

# Distributions tfrig decides by: TensorFlow under its names, and the pip cuDNN of the conda route.
WATCHED = ("tensorflow", "tensorflow_gpu", "tensorflow_cpu", "nvidia_cudnn_cu11", "jupyterlab")
CONDA_WATCHED = ("python", "cudatoolkit", "cudnn")


def dist_infos(env):
    """name -> version of the watched distributions, from their dist-info folder names."""
    found = {}
    for path in glob.glob(os.path.join(env, "lib", "python3*", "site-packages", "*.dist-info")):
        name, _, version = os.path.basename(path)[: -len(".dist-info")].partition("-")
        name = name.lower().replace("-", "_").replace(".", "_")
        if name in WATCHED:
            found[name] = version
    return found


def conda_records(env):
    """name -> version of the watched conda packages (conda-meta/NAME-VERSION-BUILD.json)."""
    found = {}
    for path in glob.glob(os.path.join(env, "conda-meta", "*.json")):
        parts = os.path.basename(path)[: -len(".json")].rsplit("-", 2)
        if len(parts) == 3 and parts[0] in CONDA_WATCHED:
            found[parts[0]] = parts[1]
    return found


def venv_python_version(env):
    try:
        with open(os.path.join(env, "pyvenv.cfg")) as cfg:
            for line in cfg:
                key, _, value = line.partition("=")
                if key.strip() in ("version", "version_info"):
                    return value.strip()
    except OSError:
        pass
    return None


def asked_version(python):
    """The interpreter's own answer: only where no file says it."""
    try:
        out = subprocess.check_output(
            [python, "-c", "import sys; print('.'.join(str(p) for p in sys.version_info[:3]))"],
            stderr=subprocess.DEVNULL,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.decode().strip() or None


def env_facts(env, kind):
    python = os.path.join(env, "bin", "python")
    if not os.path.isdir(env):
        return None
    runs = os.access(python, os.X_OK)  # follows the link: a venv whose base Python went is not ready
    conda = conda_records(env) if kind == "conda" else {}
    version = conda.pop("python", None) if kind == "conda" else venv_python_version(env)
    if runs and not version:
        version = asked_version(python)
    return {
        "python_runs": runs,
        "python_version": version,
        "pip": os.access(os.path.join(env, "bin", "pip"), os.X_OK),
        "packages": dist_infos(env),
        "conda_packages": conda,
    }


def main():
    conda_env, venv, role = sys.argv[1:4]
    facts = {
        "system_python": ".".join(str(part) for part in sys.version_info[:3]) if role == "system" else None,
        "conda": env_facts(conda_env, "conda"),
        "venv": env_facts(venv, "venv"),
    }
    print(json.dumps(facts))


main()
