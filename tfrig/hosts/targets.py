"""Where a step runs: hosts from the task's flag, a VM by name, the run's carried target, config, or here.

A target chosen by one task carries on to the later tasks of the same `inv` run (they share one
Config object); it is never remembered across runs.
"""

from __future__ import annotations

import os
import re
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from invoke.exceptions import Exit

from tfrig import state

_HOST_SPEC = re.compile(
    r"^(?:(?P<user>[A-Za-z0-9._-]+)@)?(?P<host>[A-Za-z0-9._-]+|\[[0-9a-fA-F:]+\])(?::(?P<port>\d{1,5}))?$"
)


# A Compute Engine instance name (RFC 1035 label), or a glob of them.
_VM_NAME_OR_GLOB = re.compile(r"^[a-z*?][-a-z0-9*?]*$")


@dataclass(frozen=True)
class Target:
    """One place to run steps. `host` is None for the local machine."""

    label: str
    host: str | None = None
    user: str | None = None
    port: int | None = None
    key_filename: str | None = None
    # A command whose stdin and stdout reach the host's SSH port (OpenSSH's ProxyCommand): IAP's tunnel.
    proxy_command: str | None = None
    vm: dict[str, Any] | None = field(default=None, compare=False)
    # A VM that --dry would create: no host to ask, so its facts are assumed (name -> (rc, output)).
    assumed: dict[str, tuple[int, str]] | None = field(default=None, compare=False)

    @property
    def is_local(self) -> bool:
        return self.host is None and self.assumed is None


LOCAL = Target(label="local")

# Targets carried within one run, keyed by the id of the run's Config (freed with it).
_carried: dict[int, list[Target]] = {}


def parse_hosts(spec: str) -> list[Target]:
    """`user@host:port,alias,vm-name,vm-glob-*` → targets: names of VMs tfrig created (globs too)
    come from its state; anything else is an SSH host, ssh-config aliases resolved later by Fabric."""
    import fnmatch

    targets = []
    items = [part.strip() for part in spec.split(",") if part.strip()]
    # Only a word that could be a VM name (or a glob) needs the state: user@host:port never reads it.
    could_be_vm = [item for item in items if _VM_NAME_OR_GLOB.match(item)]
    known = state.vms() if could_be_vm and state.exists() else {}
    for item in items:
        vms = sorted(name for name in known if fnmatch.fnmatchcase(name, item))
        if vms:
            targets += [vm_target(known[name]) for name in vms]
            continue
        if "*" in item or "?" in item:
            raise Exit(f"'{item}' matches no VM in tfrig's state; `inv gcp.list` shows the ones it knows.")
        match = _HOST_SPEC.match(item)
        if not match or len(match["host"]) > 253 or any(len(label) > 63 for label in match["host"].split(".")):
            shown = item if len(item) <= 80 else f"{item[:60]}... ({len(item)} characters)"
            raise Exit(f"'{shown}' is not a host; write user@host:port (user and port optional).")
        port = match["port"]
        if port is not None and not 0 < int(port) < 65536:
            raise Exit(f"'{item}': port {port} is out of range 1-65535.")
        targets.append(
            Target(
                label=item,
                host=match["host"].strip("[]"),
                user=match["user"],
                port=int(port) if port else None,
            )
        )
    if not targets:
        raise Exit("--hosts is empty; give user@host:port, comma-separated.")
    return targets


def vm_address(record: Mapping[str, Any]) -> str | None:
    """Where tfrig reaches a VM it created: its external address, or its internal one where it was
    created to be reached that way (gcp.ssh_via internal, a VM with no external IP; through IAP the
    internal address names the host, its keys pinned under it, and the tunnel reaches it)."""
    if record.get("ssh_via") in ("internal", "iap"):
        return record.get("internal_address")
    return record.get("address")


def has_gcloud() -> bool:
    import shutil

    return shutil.which("gcloud") is not None


GCLOUD_MISSING = (
    "runs `gcloud compute start-iap-tunnel`, and gcloud is not on PATH: install the Google Cloud CLI "
    "(cloud.google.com/sdk/docs/install), or set gcp.ssh_via: internal from inside the VPC."
)


def iap_command(record: Mapping[str, Any]) -> str | None:
    """For a VM reached through IAP (gcp.ssh_via iap), the ProxyCommand that carries SSH there:
    `gcloud compute start-iap-tunnel NAME 22 --listen-on-stdin --zone Z --project P`, as Airflow's
    ComputeEngineSSHHook does; one line if gcloud is not on PATH. None for any other VM."""
    if record.get("ssh_via") != "iap":
        return None
    if not has_gcloud():
        raise Exit(f"{record['name']} is reached through IAP (gcp.ssh_via iap), which {GCLOUD_MISSING}")
    return (
        f"gcloud compute start-iap-tunnel {record['name']} {record.get('port') or 22} --listen-on-stdin "
        f"--zone={record['zone']} --project={record['project']} --verbosity=warning"
    )


def vm_target(record: dict[str, Any]) -> Target:
    """The SSH target of a VM that tfrig created (a state record)."""
    address = vm_address(record)
    if not address:
        raise Exit(
            f"VM {record['name']} has no address recorded; start it with `inv gcp.start --name {record['name']}`."
        )
    return Target(
        label=record["name"],
        host=address,
        user=record.get("user"),
        port=record.get("port"),
        key_filename=record.get("ssh_key"),
        proxy_command=iap_command(record),
        vm=record,
    )


def carry(config: Any, targets: list[Target]) -> None:
    """Make `targets` the default for the rest of this run."""
    key = id(config)
    if key not in _carried:
        weakref.finalize(config, _carried.pop, key, None)
    _carried[key] = list(targets)


def carried(config: Any) -> list[Target] | None:
    return _carried.get(id(config))


def resolve(c: Any, hosts: str | None = None) -> list[Target]:
    """The targets of a task, in the order DESIGN.md gives (its --hosts, which may name VMs tfrig
    created; the run's carried target; tfrig.hosts; here); sets the run's carried target."""
    if hosts is not None:  # `-H ''` is a mistake, never "this machine"
        targets = parse_hosts(hosts)
    else:
        found = carried(c.config)
        if found is not None:
            return found
        from tfrig.settings import setting_text

        configured = setting_text(c.config, "tfrig", "hosts")
        targets = parse_hosts(configured) if configured.strip() else [LOCAL]
    carry(c.config, targets)
    return targets


def local_user() -> str:
    import getpass

    return os.environ.get("SUDO_USER") or getpass.getuser()
