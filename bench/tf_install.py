"""tf.install (uv) against plain `pip install` of the same requirement, cold caches, one run each.

Both on this machine, from the same index (PyPI, or --index-url), each into a fresh venv with its
own empty home, so no wheel, no cache and no uv binary is there before: tfrig's span holds creating
the venv, fetching uv (pinned, checksum-verified) and the install; pip's holds creating the venv and
the install. This machine's own pip configuration is kept out of both (PIP_CONFIG_FILE=/dev/null).

Run: python bench/tf_install.py [--gpu] [--index-url URL | --find-links WHEELHOUSE] [--runs N].
Prints both times and the ratio of each pair, and their median (target: <= 0.4). From an index
both are bound by the download where the link is slow (TensorFlow's CPU wheel alone is 572 MB):
run pairs one after the other; --find-links measures the installers' own work.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(argv: list[str], env: dict[str, str], expect: str = "") -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv[:3])} ... failed: {(done.stderr or done.stdout).strip()[-500:]}")
    if expect not in done.stdout + done.stderr:
        sys.exit(f"{' '.join(argv[:3])} ... did not say {expect!r}: {(done.stderr + done.stdout).strip()[-500:]}")
    return took


def one_pair(work: Path, base: dict[str, str], gpu: bool) -> tuple[str, float, float]:
    """tf.install in a fresh home, then venv + pip install of what it installed in another."""
    tfrig_home = work / "tfrig-home"
    tfrig_home.mkdir()
    tfrig_env = {**base, "HOME": str(tfrig_home), "TFRIG_STATE_DIR": str(work / "state")}
    kind = "--gpu" if gpu else "--cpu"
    tfrig_time = timed([sys.executable, "-m", "tfrig", "tf.install", kind], tfrig_env, "installed (with uv)")
    installed = subprocess.run(
        [str(tfrig_home / "tf-venv/bin/python"), "-m", "pip", "list", "--format=freeze"],
        env=base,
        capture_output=True,
        text=True,
    ).stdout
    pin = next(line for line in installed.splitlines() if line.lower().startswith("tensorflow=="))
    requirement = pin.replace("tensorflow==", "tensorflow[and-cuda]==") if gpu else pin
    pip_home = work / "pip-home"
    pip_home.mkdir()
    pip_env = {**base, "HOME": str(pip_home)}
    venv = pip_home / "venv"
    pip_time = timed([sys.executable, "-m", "venv", str(venv)], pip_env)
    pip_time += timed([str(venv / "bin/python"), "-m", "pip", "install", "-q", requirement], pip_env)
    return requirement, tfrig_time, pip_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="tensorflow[and-cuda] (some 3 GB) instead of the CPU build")
    parser.add_argument("--index-url", default="https://pypi.org/simple")
    parser.add_argument("--runs", type=int, default=1, help="pairs, one after the other (median ratio)")
    parser.add_argument(
        "--find-links", help="a wheelhouse instead of an index (with uv's wheel in it): the installers' own work"
    )
    args = parser.parse_args()
    source = {"PIP_FIND_LINKS": args.find_links, "PIP_NO_INDEX": "1"} if args.find_links else {}
    # This machine's way out (a proxy, its CA bundle) stays; its pip configuration files don't.
    passed = ("PIP_CERT", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "HTTPS_PROXY", "HTTP_PROXY")
    base = {
        **{k: v for k, v in os.environ.items() if k.upper() in passed or k.upper() == "NO_PROXY"},
        "PATH": os.environ["PATH"],
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_INDEX_URL": args.index_url,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        **source,
    }
    ratios = []
    for run in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory() as work:
            requirement, tfrig_time, pip_time = one_pair(Path(work), base, args.gpu)
        ratios.append(tfrig_time / pip_time)
        print(
            f"run {run}: {requirement} from {args.find_links or args.index_url}: tf.install (uv, with getting uv) "
            f"{tfrig_time:.1f} s, python -m venv + pip install {pip_time:.1f} s, ratio {ratios[-1]:.2f}",
            flush=True,
        )
    print(f"ratio: {statistics.median(ratios):.2f} (median of {len(ratios)}; target <= 0.4)")


if __name__ == "__main__":
    main()
