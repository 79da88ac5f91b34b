"""Every release `tf.versions` offers installs as tfrig pins it: pip's own resolver, against the
package index (PyPI, or PIP_INDEX_URL), for the Pythons of the images tfrig supports.

`pip install --dry-run --only-binary=:all:` with the target's Python and platform reads only the
index's metadata, so this finds a pin with no wheel (2.15.0's tensorrt) without downloading
TensorFlow. Each row, with the pip cuDNN of its conda route, is checked without its dependencies for
every supported image's Python it covers; the `[and-cuda]` dependency sets are resolved in full for
the releases whose pins the catalog changed (compat.yaml tensorflow_builds.and_cuda_installable) and for the newest.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tfrig.knowledge import resolver

pytestmark = pytest.mark.slow

# Python 3 of the images tfrig supports: Ubuntu 22.04, Debian 12, Ubuntu 24.04.
IMAGE_PYTHONS = ("3.10", "3.11", "3.12")
# glibc 2.35 (Ubuntu 22.04) and newer: every manylinux tag up to 2.28 installs there.
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
)


def dry_run(requirement: str, python: str, target: Path, *, deps: bool) -> subprocess.CompletedProcess[str]:
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    return subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
         "--only-binary=:all:", "--python-version", python, *platforms, "--target", str(target),
         *([] if deps else ["--no-deps"]), requirement],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def cases() -> list[tuple[str, str]]:
    found = []
    for build in resolver.builds():
        pythons = [p for p in IMAGE_PYTHONS if build.supports(p)]
        if not pythons:  # an old release: the newest Python it supports, in a conda env
            newest = max(p for p in build.pythons if p[0] == 3)
            pythons = [f"{newest[0]}.{newest[1]}"]
        found += [(build.tf, python) for python in pythons]
    return found


def test_the_pinned_wheel_of_every_row_is_on_the_index(tmp_path):
    """One dry run per row and image Python, eight at a time; every failure is reported."""
    from concurrent.futures import ThreadPoolExecutor

    def check(case: tuple[str, str]) -> str | None:
        tf, python = case
        try:
            plan = resolver.resolve(tf, python=python, gpu=True)
        except resolver.Refusal:  # refused with its reason (2.14 on 3.11): the CPU build must install
            plan = resolver.resolve(tf, python=python)
        for requirement in [plan.requirement, *plan.pip_packages]:  # pip's cuDNN beside 2.12/2.13
            done = dry_run(requirement, plan.python, tmp_path / f"{tf}-{python}", deps=False)
            if done.returncode != 0:
                return f"{requirement} for Python {python}: {done.stderr[-300:]}"
        return None

    with ThreadPoolExecutor(8) as pool:
        failures = [failure for failure in pool.map(check, cases()) if failure]
    assert not failures, "\n".join(failures)


def test_and_cuda_resolves_in_full_where_the_catalog_pins_it(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    def check(case: tuple[str, str]) -> str | None:
        plan = resolver.resolve(case[0], python=case[1], gpu=True)
        done = dry_run(plan.requirement, plan.python, tmp_path / case[0], deps=True)
        return None if done.returncode == 0 else f"{plan.requirement} for Python {plan.python}: {done.stderr[-500:]}"

    with ThreadPoolExecutor(3) as pool:
        failures = [f for f in pool.map(check, [("2.15", "3.11"), ("2.14", "3.10"), ("2.21", "3.12")]) if f]
    assert not failures, "\n".join(failures)


def test_the_pins_the_catalog_replaced_really_fail(tmp_path):
    """The reason behind each entry of and_cuda_installable still holds on the index."""
    broken = dry_run("tensorflow[and-cuda]==2.15.0", "3.11", tmp_path, deps=True)
    assert broken.returncode != 0 and "tensorrt==8.6.1.post1" in broken.stderr
    with pytest.raises(resolver.Refusal, match=r"tensorrt==8\.5\.3\.1"):
        resolver.resolve("2.14", python="3.11", gpu=True)
    no_wheel = dry_run("tensorrt==8.5.3.1", "3.11", tmp_path, deps=False)
    assert no_wheel.returncode != 0
