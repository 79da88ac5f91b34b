"""tf.install (uv) against plain `pip install` of the same requirement, cold caches, one run each.

Both on this machine, from the same index (PyPI, or --index-url), each into a fresh venv with its
own empty home, so no wheel, no cache and no uv binary is there before: tfrig's span holds creating
the venv, fetching uv (pinned, checksum-verified) and the install; pip's holds creating the venv and
the install. This machine's own pip configuration is kept out of both (PIP_CONFIG_FILE=/dev/null).

Run: python bench/tf_install.py [--gpu] [--index-url URL]. Prints both times and the ratio
(target: <= 0.4).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv[:3])} ... failed: {(done.stderr or done.stdout).strip()[-500:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="tensorflow[and-cuda] (some 3 GB) instead of the CPU build")
    parser.add_argument("--index-url", default="https://pypi.org/simple")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        base = {
            "PATH": os.environ["PATH"],
            "PIP_CONFIG_FILE": os.devnull,
            "PIP_INDEX_URL": args.index_url,
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        }
        tfrig_home = Path(work, "tfrig-home")
        tfrig_home.mkdir()
        tfrig_env = {**base, "HOME": str(tfrig_home), "TFRIG_STATE_DIR": str(Path(work, "state"))}
        kind = "--gpu" if args.gpu else "--cpu"
        tfrig_time = timed([sys.executable, "-m", "tfrig", "tf.install", kind], tfrig_env)
        installed = subprocess.run(
            [str(tfrig_home / "tf-venv/bin/python"), "-m", "pip", "list", "--format=freeze"],
            env=base,
            capture_output=True,
            text=True,
        ).stdout
        pin = next(line for line in installed.splitlines() if line.lower().startswith("tensorflow=="))
        requirement = pin.replace("tensorflow==", "tensorflow[and-cuda]==") if args.gpu else pin

        pip_home = Path(work, "pip-home")
        pip_home.mkdir()
        pip_env = {**base, "HOME": str(pip_home)}
        venv = pip_home / "venv"
        pip_time = timed([sys.executable, "-m", "venv", str(venv)], pip_env)
        pip_time += timed([str(venv / "bin/python"), "-m", "pip", "install", "-q", requirement], pip_env)
    print(f"requirement: {requirement} from {args.index_url}")
    print(f"tf.install (uv, with getting uv):  {tfrig_time:6.1f} s")
    print(f"python -m venv + pip install:     {pip_time:6.1f} s")
    print(f"ratio: {tfrig_time / pip_time:.2f} (target <= 0.4)")


if __name__ == "__main__":
    main()
