"""The compatibility facts (tfrig/data/compat.yaml, each with its source) as data, loaded once."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

DATA = Path(__file__).with_name("data")


@functools.cache
def compat() -> dict[str, Any]:
    import yaml

    with open(DATA / "compat.yaml") as source:
        data: dict[str, Any] = yaml.safe_load(source)
    return data


@functools.cache
def gce_errors() -> dict[str, Any]:
    import yaml

    with open(DATA / "gce-errors.yaml") as source:
        data: dict[str, Any] = yaml.safe_load(source)
    return data


def tf_versions() -> list[str]:
    """Every TensorFlow release in the tested-configurations table, newest first."""
    return [row["tf"] for row in compat()["tensorflow_builds"]["linux_gpu"]]
