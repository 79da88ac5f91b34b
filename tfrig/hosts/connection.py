"""The run's SSH connection to a host: Fabric's, with its host key checked as OpenSSH checks it
(tfrig.hosts.hostkeys), keeping facts read ahead for later tasks (tfrig.hosts.readahead) until anything else
runs on it. Imported only when a run connects somewhere, so Fabric and paramiko load only then."""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import fabric
import paramiko
from fabric import Connection
from invoke.exceptions import Exit

from tfrig.hosts import hostkeys

# paramiko logs a failed handshake with its traceback (e.g. "Error reading SSH protocol banner"),
# which Python's last-resort handler would print; tfrig says what failed in one line instead.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

if TYPE_CHECKING:
    from tfrig.knowledge.facts import Fact


class CheckedKeyPolicy(paramiko.MissingHostKeyPolicy):
    """For a host whose key no known-hosts file holds: refuse it, or with `accept-new` record it
    and go on, as OpenSSH's StrictHostKeyChecking does. A changed key never gets here: paramiko
    raises BadHostKeyException, which host.describe_error turns into one line."""

    def __init__(self, checking: hostkeys.Checking) -> None:
        self.checking = checking

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if not self.checking.accept_new:
            raise hostkeys.HostKeyRefused(hostkeys.unknown_message(hostname, key.get_name(), key.fingerprint))
        hostkeys.record(self.checking.record_in, hostname, key.get_name(), key.get_base64())


class ReadAheadConnection(Connection):
    def __init__(self, *args: Any, config: Any, run_config: Any, vm_keys: list[tuple[str, str]], **kwargs: Any) -> None:
        # The run's Config is Invoke's; Fabric reads the user's ssh config (Host aliases, User,
        # IdentityFile, UserKnownHostsFile) only into a Fabric Config.
        with_ssh_config = config.clone(into=fabric.Config)
        try:
            with_ssh_config.load_ssh_config()
        except Exception as exc:  # paramiko's parser: one line, not its traceback
            raise Exit(f"your ssh config could not be read: {exc}") from None
        super().__init__(*args, config=with_ssh_config, **kwargs)
        checking = hostkeys.checking(run_config, self.ssh_config)
        if vm_keys:
            # A VM tfrig made: only the keys pinned from its guest attributes count (as gcloud's own
            # known-hosts file), not a stale line from an earlier VM at the same address. Under
            # --dry they exist only here, never written.
            known = self.client.get_host_keys()
            name = hostkeys.host_name(self.host, self.port)
            for key_type, key_base64 in vm_keys:
                known.add(name, key_type, paramiko.PKey.from_type_string(key_type, base64.b64decode(key_base64)))
        else:
            for file in checking.files:  # read-only for paramiko: it never rewrites a user's file
                if file.is_file():
                    self.client.load_system_host_keys(str(file))
        self.client.set_missing_host_key_policy(CheckedKeyPolicy(checking))
        # Context attributes are config keys unless set with _set. Fabric keeps a copy of the
        # config; the chain is kept by the run's own.
        read_ahead: dict[str, tuple[int, Fact]] = {}  # command: (chain position that read it, fact)
        self._set(run_config=run_config, read_ahead=read_ahead)

    def keep_read_ahead(self, facts: Mapping[str, Fact], position: int) -> None:
        """Keep what the task at `position` of the chain read, for the tasks after it."""
        self.read_ahead.update({command: (position, fact) for command, fact in facts.items()})

    def take_read_ahead(self, commands: Mapping[str, str], position: int) -> dict[str, Fact] | None:
        """Each probe's fact if an earlier task read them all and nothing ran since; used once."""
        found: dict[str, Fact] = {}
        for name, command in commands.items():
            kept = self.read_ahead.get(command)
            if kept is None or kept[0] >= position:
                return None
            found[name] = kept[1]
        for command in commands.values():
            self.read_ahead.pop(command, None)
        return found

    def _forget(self, kwargs: dict[str, Any]) -> None:
        if not kwargs.pop("read_only", False):
            self.read_ahead.clear()

    def run(self, command: str, **kwargs: Any) -> Any:
        self._forget(kwargs)
        return super().run(command, **kwargs)

    def sudo(self, command: str, **kwargs: Any) -> Any:
        self._forget(kwargs)
        return super().sudo(command, **kwargs)

    def shell(self, **kwargs: Any) -> Any:
        self.read_ahead.clear()
        return super().shell(**kwargs)

    def close(self) -> None:  # a new login (new groups) may read differently
        self.read_ahead.clear()
        super().close()

    def sftp(self) -> Any:  # put and get go through here
        self.read_ahead.clear()
        return super().sftp()
