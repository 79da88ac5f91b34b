"""The compatibility facts (tfrig/data/compat.yaml, each with its source) as data, loaded once."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import marshal
from pathlib import Path
from typing import Any

from tfrig.state import state_dir, write_atomically

DATA = Path(__file__).parents[1] / "data"


def _load(name: str) -> dict[str, Any]:
    """The data file `name`: from a copy in the state dir's cache made from the same bytes (1 ms),
    else parsed with libyaml's loader (20 ms; PyYAML's pure-Python loader takes about 120 ms, a
    fifth of a converged re-run). marshal holds YAML's plain types exactly, numeric keys included."""
    raw = (DATA / name).read_bytes()
    cached = state_dir() / "cache" / f"{name}.{hashlib.sha256(raw).hexdigest()[:16]}.marshal"
    try:
        data = marshal.loads(cached.read_bytes())
        if isinstance(data, dict):
            return data
    except (OSError, ValueError, EOFError, TypeError):
        pass  # none yet, or damaged: parse and write it anew
    import yaml

    data = yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    try:
        copy = marshal.dumps(data)
    except ValueError:  # a type marshal can't hold (a YAML date): no cached copy
        return data
    with contextlib.suppress(OSError):  # a read-only state dir only costs the parse
        cached.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(cached, copy)
    return data


@functools.cache
def compat() -> dict[str, Any]:
    return _load("compat.yaml")


@functools.cache
def gce_errors() -> dict[str, Any]:
    return _load("gce-errors.yaml")


def gce_prices() -> dict[str, Any]:
    """The dated price table (tfrig.gce.billing writes it; tfrig.gce.prices reads it)."""
    return _load("gce-prices.yaml")


def tf_versions() -> list[str]:
    """Every TensorFlow release in the tested-configurations table, newest first."""
    return [row["tf"] for row in compat()["tensorflow_builds"]["linux_gpu"]]
