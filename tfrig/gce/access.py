"""Reaching a VM tfrig made: the ssh command line and the managed ~/.ssh/config block (both
checking the VM's pinned host keys), and copying files and folders to and from it."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

from invoke.exceptions import Exit

from tfrig.hosts import targets
from tfrig.ui import refuse_special_file


def ssh_options(c: Any) -> list[tuple[str, str]]:
    """OpenSSH options that check a VM's key against the keys tfrig pinned for it (and yours), and
    end a session whose link stops answering, as tfrig's own connections do (tfrig.keepalive)."""
    from tfrig.hosts import hostkeys
    from tfrig.settings import setting_seconds

    checking = "accept-new" if hostkeys.policy(c.config) == "accept-new" else "yes"
    files = f'"{hostkeys.pinned_file()}" ~/.ssh/known_hosts'
    options = [("StrictHostKeyChecking", checking), ("UserKnownHostsFile", files)]
    keepalive = setting_seconds(c.config, "tfrig", "keepalive", 0, 3600, default=15)
    if keepalive:  # ssh takes whole seconds
        options += [("ServerAliveInterval", str(max(1, round(keepalive)))), ("ServerAliveCountMax", "3")]
    return options


def ssh_argv(c: Any, record: dict[str, Any], extra: list[str] | None = None) -> list[str]:
    options = ssh_options(c) + vm_options(record)
    argv = ["ssh", *(f"-o{key}={value}" for key, value in options), "-p", str(record.get("port") or 22)]
    if record.get("ssh_key"):
        argv += ["-i", record["ssh_key"]]
    return argv + (extra or []) + [f"{record.get('user')}@{targets.vm_address(record)}"]


BLOCK_START, BLOCK_END = "# >>> tfrig {name} >>>", "# <<< tfrig {name} <<<"


def vm_options(record: dict[str, Any]) -> list[tuple[str, str]]:
    """The OpenSSH options a VM's own way in needs: IAP's tunnel as its ProxyCommand."""
    proxy = targets.iap_command(record)
    return [("ProxyCommand", proxy)] if proxy else []


def ssh_config_block(record: dict[str, Any], options: list[tuple[str, str]]) -> str:
    lines = [
        BLOCK_START.format(name=record["name"]),
        f"Host {record['name']}",
        f"    HostName {targets.vm_address(record)}",
        f"    User {record.get('user')}",
        f"    Port {record.get('port') or 22}",
    ]
    if record.get("ssh_key"):
        lines.append(f"    IdentityFile {record['ssh_key']}")
    lines += [f"    {key} {value}" for key, value in options + vm_options(record)]
    lines.append(BLOCK_END.format(name=record["name"]))
    return "\n".join(lines) + "\n"


def replace_block(text: str, name: str, block: str | None) -> str:
    """`text` with tfrig's block for `name` replaced (or added, or removed when `block` is None)."""
    start, end = BLOCK_START.format(name=name), BLOCK_END.format(name=name)
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        return before + (block or "") + after
    if block is None:
        return text
    return text + ("\n" if text and not text.endswith("\n") else "") + block


def copy_files(c: Any, hosts: str, source: str, destination: str | None, upload: bool, force: bool) -> None:
    """Copy `source` to (upload) or from the first VM of `hosts`; nothing at the destination is
    overwritten without `force`, and a folder never by a file. A failure is one line."""
    from tfrig.hosts.host import connect, describe_error

    if not source.strip():
        raise Exit(f"Name the file or folder to copy {'from here' if upload else 'from the VM'}.")
    [target] = targets.parse_hosts(hosts)[:1]
    try:
        _copy(c.config.run.dry, connect(c, target), target, source, destination, upload, force)
    except Exit:
        raise
    except Exception as exc:
        raise Exit(f"[{target.label}] {describe_error(exc)}") from None


def _copy(
    dry: bool, conn: Any, target: targets.Target, source: str, destination: str | None, upload: bool, force: bool
) -> None:
    import secrets
    import tarfile
    import tempfile

    if upload:
        local = Path(os.path.expanduser(source))
        if not local.exists():
            raise Exit(f"{source}: no such file or folder here.")
        refuse_special_file(local, "the source", devices=False)
        remote = destination or local.name
        if dry:
            print(f"would copy {local} to {target.label}:{remote}")
            return
        there = conn.run(
            f'r={shlex.quote(remote)}; if [ -d "$r" ]; then echo folder; elif [ -e "$r" ]; then echo file; '
            f'elif [ ! -d "$(dirname -- "$r")" ]; then echo no-parent; fi',
            warn=True,
            hide=True,
            in_stream=False,
        ).stdout.strip()
        if there == "no-parent" and local.is_file():
            raise Exit(f"{target.label}:{remote}: its folder does not exist there; create it first, or name another.")
        if there == "folder" and local.is_file():
            raise Exit(f"{target.label}:{remote} is a folder; name the file, e.g. {remote.rstrip('/')}/{local.name}.")
        if there and there != "no-parent" and not force:
            raise Exit(f"{target.label}:{remote} exists; pass --force to overwrite it.")
        if local.is_file():
            conn.put(str(local), remote)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                archive = Path(tmp) / "upload.tar.gz"
                with tarfile.open(archive, "w:gz") as tar:
                    tar.add(local, arcname=".")
                # A name of this copy's own: two copies at once must not take each other's archive.
                remote_archive = f".tfrig-upload-{secrets.token_hex(8)}.tar.gz"
                conn.put(str(archive), remote_archive)
                conn.run(
                    f"mkdir -p {shlex.quote(remote)} && tar -xzf {remote_archive} -C {shlex.quote(remote)}; "
                    f"status=$?; rm -f {remote_archive}; exit $status",
                    hide=True,
                    in_stream=False,
                )
        print(f"copied {local} to {target.label}:{remote}")
        return
    local = Path(os.path.expanduser(destination or Path(source).name))
    if local.exists() and not force:
        raise Exit(f"{local} exists here; pass --force to overwrite it.")
    if not local.parent.is_dir():
        raise Exit(f"{local.parent} does not exist here; create it first, or name another destination.")
    kind = conn.run(
        f"if [ -d {shlex.quote(source)} ]; then echo dir; elif [ -f {shlex.quote(source)} ]; then echo file; fi",
        hide=True,
        warn=True,
        in_stream=False,
    ).stdout.strip()
    if not kind:
        raise Exit(f"{target.label}:{source}: no such file or folder there.")
    if local.is_dir() and kind == "file":
        raise Exit(f"{local} is a folder here; --force overwrites a file, never a folder: name the file.")
    if local.exists() and not local.is_dir() and kind == "dir":
        raise Exit(f"{local} is a file here and {target.label}:{source} a folder; name another destination.")
    if dry:
        print(f"would copy {target.label}:{source} to {local}")
        return
    if kind == "file":
        conn.get(source, str(local))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(tmp) / "download.tar.gz"
            remote_archive = f".tfrig-download-{secrets.token_hex(8)}.tar.gz"
            try:
                conn.run(f"tar -czf {remote_archive} -C {shlex.quote(source)} .", hide=True, in_stream=False)
                conn.get(remote_archive, str(archive))
            finally:
                conn.run(f"rm -f {remote_archive}", hide=True, warn=True, in_stream=False)
            local.mkdir(parents=True, exist_ok=True)
            with tarfile.open(archive) as tar:
                tar.extractall(local, filter="data")
    print(f"copied {target.label}:{source} to {local}")
