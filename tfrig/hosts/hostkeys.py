"""SSH host keys, checked on every connection as OpenSSH checks them.

Known keys come from the user's known-hosts files (those their ssh config names for the host with
UserKnownHostsFile, else ~/.ssh/known_hosts and known_hosts2; and /etc/ssh/ssh_known_hosts), the
file `tfrig.known_hosts` names, and tfrig's own file of keys pinned for the VMs it creates (read
from the guest attributes Compute Engine's guest agent publishes: never trusted on first use).

`tfrig.host_keys`, like OpenSSH's StrictHostKeyChecking:
- `strict` (default): a host whose key no file holds is refused;
- `accept-new`: its key is recorded (in tfrig.known_hosts if set, else the first user file) and used.
A key that differs from the one on record is refused under both.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invoke.exceptions import Exit

from tfrig import state
from tfrig.ui import refuse_special_file

POLICIES = ("strict", "accept-new")


class HostKeyRefused(Exception):
    """The host's key is not on record and the policy says not to trust it; one line."""


@dataclass(frozen=True)
class Checking:
    files: tuple[Path, ...]  # every known-hosts file to read
    accept_new: bool
    record_in: Path  # where accept-new writes a new host's key


def pinned_file() -> Path:
    """tfrig's known-hosts file: the keys of VMs it created, from their guest attributes."""
    return state.state_dir() / "known_hosts"


def policy(config: Any) -> str:
    value = str(config.get("tfrig", {}).get("host_keys") or "strict")
    if value not in POLICIES:
        raise Exit(
            f"tfrig.host_keys is {value!r}: use strict (refuse a host whose key is not known) or "
            "accept-new (record a new host's key on first use, as OpenSSH's StrictHostKeyChecking=accept-new)."
        )
    return value


def checking(config: Any, ssh_config: Mapping[str, Any]) -> Checking:
    """The files and the policy for one host (`ssh_config`: its entries from ~/.ssh/config)."""
    named = str(ssh_config.get("userknownhostsfile") or "~/.ssh/known_hosts ~/.ssh/known_hosts2").split()
    user_files = [Path(os.path.expanduser(name)) for name in named if name != "/dev/null"]
    own = str(config.get("tfrig", {}).get("known_hosts") or "")
    own_file = [Path(os.path.expanduser(own))] if own else []
    files = (*user_files, Path("/etc/ssh/ssh_known_hosts"), *own_file, pinned_file())
    record_in = (own_file or user_files or [Path.home() / ".ssh" / "known_hosts"])[0]
    return Checking(files=files, accept_new=policy(config) == "accept-new", record_in=record_in)


@dataclass(frozen=True)
class KnownKey:
    names: str  # the line's host patterns, comma-separated (hashed |1|... names too)
    key_type: str
    key_base64: str
    where: str  # file:line, for a note


def read_known_hosts(path: Path) -> tuple[list[KnownKey], list[KnownKey], list[str]]:
    """A known-hosts file as OpenSSH reads it (sshd(8), SSH_KNOWN_HOSTS FILE FORMAT): its keys,
    its `@revoked` keys, and notes naming the file and line of what tfrig skips (`@cert-authority`:
    host certificates, which tfrig does not check). Bytes that aren't UTF-8 (a comment's) are
    read as OpenSSH reads them: they don't matter to host names or keys. An unreadable file is one
    line naming it."""
    refuse_special_file(path, "the known-hosts file", devices=True)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], [], []
    except OSError as exc:
        raise Exit(f"can't read the known-hosts file {path}: {exc.strerror}; fix it or leave it out.") from None
    keys: list[KnownKey] = []
    revoked: list[KnownKey] = []
    notes: list[str] = []
    for number, raw in enumerate(data.splitlines(), 1):
        fields = raw.decode(errors="replace").split()
        if not fields or fields[0].startswith("#"):
            continue
        where = f"{path}:{number}"
        marker = fields.pop(0) if fields[0].startswith("@") else None
        if marker == "@cert-authority":
            notes.append(f"{where}: @cert-authority (host certificates) is not checked by tfrig; line skipped")
            continue
        if marker not in (None, "@revoked") or len(fields) < 3:
            notes.append(f"{where}: not a known-hosts line tfrig understands; skipped")
            continue
        (revoked if marker else keys).append(KnownKey(fields[0], fields[1], fields[2], where))
    return keys, revoked, notes


def names_match(names: str, host: str) -> bool:
    """Whether a known-hosts line's patterns name `host` (a host_name()): wildcards, a `!`
    negation that wins, hashed names (sshd(8), SSH_KNOWN_HOSTS FILE FORMAT)."""
    import base64
    import hashlib
    import hmac

    matched = False
    for pattern in names.split(","):  # lowered below: a hashed name's base64 is case-sensitive
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!")
        if pattern.startswith("|1|"):
            try:
                salt, digest = (base64.b64decode(part) for part in pattern[3:].split("|", 1))
            except ValueError:
                continue
            hit = hmac.compare_digest(hmac.new(salt, host.encode(), hashlib.sha1).digest(), digest)
        else:  # only * and ? are wildcards ([host]:port is literal)
            wildcards = re.escape(pattern.lower()).replace(r"\*", ".*").replace(r"\?", ".")
            hit = re.fullmatch(wildcards, host.lower()) is not None
        if hit and negated:
            return False
        matched = matched or hit
    return matched


def revoked_message(name: str, key_type: str, fingerprint: str, where: str) -> str:
    return (
        f"the host key of {name} ({key_type} {fingerprint}) is revoked ({where}): tfrig does not connect with it; "
        "ask the host's owner for its new key."
    )


def host_name(host: str, port: int | None) -> str:
    """The name a known-hosts line uses: `host`, or `[host]:port` off port 22."""
    return host if port in (None, 22) else f"[{host}]:{port}"


def vm_host_name(record: Mapping[str, Any]) -> str:
    """The known-hosts name of a VM tfrig made, from its state record."""
    from tfrig.hosts.targets import vm_address

    return host_name(vm_address(record) or "", record.get("port"))


def record(path: Path, name: str, key_type: str, key_base64: str) -> None:
    """Add one host key line to a known-hosts file (made private if new), as ssh does."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as out:
        out.write(f"{name} {key_type} {key_base64}\n")


def unknown_message(name: str, key_type: str, fingerprint: str) -> str:
    return (
        f"the host key of {name} is not known ({key_type} {fingerprint}): check that fingerprint with the "
        "host's owner or console and add it to ~/.ssh/known_hosts (connecting once with ssh does), or set "
        "tfrig.host_keys: accept-new to trust a new host's key on first use."
    )


def changed_message(name: str, key_type: str, fingerprint: str, expected: str) -> str:
    return (
        f"the host key of {name} has CHANGED (now {key_type} {fingerprint}, on record {expected}): someone "
        "may be intercepting the connection, or the host was rebuilt. If you know it was rebuilt, remove the "
        f"old key (ssh-keygen -R '{name}', or from {pinned_file()} for a VM tfrig made) and connect again."
    )


def pin(name: str, keys: list[tuple[str, str]]) -> None:
    """Make `keys` ((type, base64) pairs) the only keys on record for `name` in tfrig's file: a
    new VM may get an address an earlier one had."""
    _rewrite(name, [f"{name} {key_type} {key_base64}" for key_type, key_base64 in keys])


def unpin(name: str) -> None:
    """Drop `name` from tfrig's file (its VM is deleted)."""
    _rewrite(name, [])


def pinned(name: str) -> list[tuple[str, str]]:
    try:
        lines = pinned_file().read_text().splitlines()
    except FileNotFoundError:
        return []
    return [
        (fields[1], fields[2]) for fields in (line.split() for line in lines) if len(fields) >= 3 and fields[0] == name
    ]


def _rewrite(name: str, lines: list[str]) -> None:
    path = pinned_file()
    with state.exclusive():
        try:
            kept = [line for line in path.read_text().splitlines() if line.split(" ", 1)[0] != name]
        except FileNotFoundError:
            if not lines:
                return
            kept = []
        state.write_atomically(path, "".join(line + "\n" for line in kept + lines).encode())
