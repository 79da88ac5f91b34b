"""What tfrig created, in one small JSON file written atomically (the previous version kept as
`.bak`), and the per-host command logs; the folder is private to its user (0700, files 0600)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from invoke.exceptions import Exit

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


def private_dir(folder: Path) -> Path:
    """`folder`, made if missing, readable by its user only."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if folder.stat().st_mode & 0o077:
        folder.chmod(0o700)
    return folder


def _unusable(path: Path, why: str) -> Exit:
    backup = path.with_name(path.name + ".bak")
    restore = f"`cp {backup} {path}` restores the last good one, or move" if backup.is_file() else "move"
    return Exit(
        f"tfrig's state file {path} {why}: {restore} it away to start anew; "
        "`inv gcp.list` still finds tfrig's VMs through the Compute API."
    )


LOCK_FILE = "tfrig.lock"
# One lock for every read-modify-write of tfrig's files (state, pinned host keys, allowed folders,
# the ssh config blocks): an flock between processes, and within a process an RLock, since a
# second flock on a new descriptor would wait on the first (threads, and nested uses).
_process_lock = threading.RLock()
_held: list[Any] = []  # the open lock file while this process holds the flock


@contextlib.contextmanager
def exclusive() -> Iterator[None]:
    """Hold tfrig's one lock: no other tfrig run reads or rewrites its files meanwhile."""
    with _process_lock:
        if _held:
            yield
            return
        folder = private_dir(state_dir())
        with open(folder / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _held.append(lock)
            try:
                yield
            finally:
                _held.clear()


@contextlib.contextmanager
def vm_operation(name: str, action: str, wait: float, out: TextIO) -> Iterator[None]:
    """Hold the VM `name` for `action` (e.g. gcp.create) while the block runs: another tfrig run
    acting on the same VM waits, saying for what, at most `wait` seconds. A create and a delete of
    one VM, or two creates, so never cross (a delete can't find a VM whose insert is in flight)."""
    folder = private_dir(state_dir() / "locks")
    with open(folder / (re.sub(r"[^a-z0-9-]", "_", name) + ".lock"), "a+") as lock:
        deadline, told = time.monotonic() + wait, False
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                lock.seek(0)
                holder = lock.read().strip() or "another tfrig run"
                if time.monotonic() > deadline:
                    raise Exit(
                        f"{name}: {holder} still works on it after {wait:.0f} s; run this again once it has ended."
                    ) from None
                if not told:
                    print(f"{name}: waiting for {holder} to end (at most {wait:.0f} s)", file=out, flush=True)
                    told = True
                time.sleep(0.2)
        lock.truncate(0)
        lock.write(f"{action} (pid {os.getpid()})")
        lock.flush()
        try:
            yield
        finally:
            lock.truncate(0)


@contextlib.contextmanager
def _locked(write: bool) -> Iterator[Path]:
    """Hold the lock while reading or rewriting the state file. A folder tfrig can't write is
    still read, unlocked: read-only uses keep working there."""
    path = state_dir() / STATE_FILE
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(exclusive())
        except OSError as exc:
            if write:
                raise Exit(
                    f"tfrig can't write its state folder {path.parent} ({exc.strerror}); make it writable."
                ) from None
        yield path


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {"vms": {}}
    except OSError as exc:  # a directory, unreadable
        raise _unusable(path, f"can't be read ({exc.strerror})") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise _unusable(path, "is not JSON (truncated or overwritten?)") from None
    if not isinstance(data, dict):
        raise _unusable(path, "does not hold tfrig's records")
    data.setdefault("vms", {})
    vms = data["vms"]
    if not isinstance(vms, dict) or not all(isinstance(record, dict) for record in vms.values()):
        raise _unusable(path, "does not hold tfrig's records")
    for name, record in vms.items():
        wrong = _record_problem(name, record)
        if wrong:
            raise _unusable(path, f"has a record tfrig did not write ({shown_key(name)}: {wrong})")
    return data


# What tfrig writes in a VM record: a hand-edited or planted one is refused on read, since its
# fields become a VM to delete, an ssh command line and a host to trust.
_VM_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_FIELD_RULES: dict[str, re.Pattern[str]] = {
    "zone": re.compile(r"[a-z]+-[a-z]+\d+-[a-z]"),
    "project": re.compile(r"(?:[a-z0-9.-]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9]"),
    "address": re.compile(r"[0-9A-Za-z][0-9A-Za-z.:-]*"),  # an IP or host name, never an option
    "internal_address": re.compile(r"[0-9A-Za-z][0-9A-Za-z.:-]*"),
    "user": re.compile(r"[a-z0-9_][a-z0-9_.-]{0,31}"),
    "ssh_via": re.compile(r"external|internal|iap"),
    "ssh_mode": re.compile(r"metadata|oslogin"),
    "oslogin_account": re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*@[A-Za-z0-9.-]+"),
}
_TEXT_FIELDS = {"status", "ssh_key", "machine_type", "gpu", "request_id", "created", "idle_stop"}
_NUMBER_FIELDS = {"since", "oslogin_expires"}


def shown_key(key: str) -> str:
    return repr(key[:40] + ("..." if len(key) > 40 else ""))


def _record_problem(name: str, record: dict[str, Any]) -> str | None:
    """What is wrong with one VM record, or None."""
    if not _VM_NAME.fullmatch(name):
        return "not a VM name"
    if record.get("name", name) != name:
        return f"it names another VM, {shown_key(str(record.get('name')))}"
    for key, value in record.items():
        if value is None or key == "name":
            continue
        rule = _FIELD_RULES.get(key)
        if rule is not None and not (isinstance(value, str) and rule.fullmatch(value)):
            return f"{key} {shown_key(str(value))} is not one"
        if key in _TEXT_FIELDS and not isinstance(value, str):
            return f"{key} is not text"
        if key in _NUMBER_FIELDS and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"{key} is not a number"
        if key in ("port", "gpus") and (
            isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 65536
        ):
            return f"{key} is not a whole number"
    return None


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` in one step (a reader sees the old file or the new, whole), the
    new file private (0600)."""
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")  # mode 0600
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def _write(path: Path, data: dict[str, Any]) -> None:
    import shutil

    if path.is_file():  # the last good version, for a state file damaged later
        shutil.copy2(path, path.with_name(path.name + ".bak"))
    write_atomically(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def exists() -> bool:
    """Whether tfrig has recorded anything yet (reading creates nothing)."""
    return (state_dir() / STATE_FILE).exists()


def vms() -> dict[str, dict[str, Any]]:
    """Every VM record, keyed by VM name."""
    with _locked(write=False) as path:
        return dict(_read(path)["vms"])


def find_vm(name: str) -> dict[str, Any] | None:
    return vms().get(name)


def record_vm(name: str, **fields: Any) -> dict[str, Any]:
    """Create or update the record of a VM; returns the record as stored."""
    with _locked(write=True) as path:
        data = _read(path)
        record = {**data["vms"].get(name, {}), **fields, "name": name}
        data["vms"][name] = record
        _write(path, data)
        return record


def forget_vm(name: str) -> bool:
    """Drop a VM's record; False if there was none."""
    with _locked(write=True) as path:
        data = _read(path)
        if data["vms"].pop(name, None) is None:
            return False
        _write(path, data)
        return True


def check_writable() -> None:
    """Stop with one line, before anything bills, if tfrig could not record what it creates."""
    with _locked(write=True) as path:
        _write(path, _read(path))


@contextlib.contextmanager
def locked_file(path: Path) -> Iterator[dict[str, Any]]:
    """A small JSON file of tfrig's beside the state, read and rewritten under tfrig's lock: the
    dict yielded is written back whole when the block ends."""
    with exclusive():
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}
        if not isinstance(data, dict):
            data = {}
        yield data
        write_atomically(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
