"""What tfrig created, in one small JSON file written atomically, and the per-host command logs."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"


def state_dir() -> Path:
    """The folder for tfrig's state: `TFRIG_STATE_DIR`, else the user's state dir."""
    override = os.environ.get("TFRIG_STATE_DIR")
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_state_dir("tfrig"))


def log_dir() -> Path:
    return state_dir() / "logs"


@contextlib.contextmanager
def _locked() -> Iterator[Path]:
    """Hold an exclusive lock on the state file while reading and rewriting it."""
    folder = state_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / (STATE_FILE + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield folder / STATE_FILE


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"vms": {}}
    data.setdefault("vms", {})
    return data


def _write(path: Path, data: dict[str, Any]) -> None:
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".state-", suffix=".json")
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=2, sort_keys=True)
        out.write("\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def exists() -> bool:
    """Whether tfrig has recorded anything yet (reading creates nothing)."""
    return (state_dir() / STATE_FILE).exists()


def vms() -> dict[str, dict[str, Any]]:
    """Every VM record, keyed by VM name."""
    with _locked() as path:
        return dict(_read(path)["vms"])


def find_vm(name: str) -> dict[str, Any] | None:
    return vms().get(name)


def record_vm(name: str, **fields: Any) -> dict[str, Any]:
    """Create or update the record of a VM; returns the record as stored."""
    with _locked() as path:
        data = _read(path)
        record = {**data["vms"].get(name, {}), **fields, "name": name}
        data["vms"][name] = record
        _write(path, data)
        return record


def forget_vm(name: str) -> bool:
    """Drop a VM's record; False if there was none."""
    with _locked() as path:
        data = _read(path)
        if data["vms"].pop(name, None) is None:
            return False
        _write(path, data)
        return True
