"""The compatibility facts (tfrig/data/compat.yaml, each with its source) as data, loaded once."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

DATA = Path(__file__).with_name("data")


def _load(name: str) -> dict[str, Any]:
    import yaml

    # libyaml's loader (in PyYAML's wheels) reads compat.yaml in about 10 ms; the pure-Python one
    # takes about 120 ms, a fifth of a converged re-run.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(DATA / name) as source:
        data: dict[str, Any] = yaml.load(source, Loader=loader)
    return data


@functools.cache
def compat() -> dict[str, Any]:
    return _load("compat.yaml")


@functools.cache
def gce_errors() -> dict[str, Any]:
    return _load("gce-errors.yaml")


def tf_versions() -> list[str]:
    """Every TensorFlow release in the tested-configurations table, newest first."""
    return [row["tf"] for row in compat()["tensorflow_builds"]["linux_gpu"]]
