"""The run's SSH connection to a host: Fabric's, with its host key checked as OpenSSH checks it
(tfrig.hosts.hostkeys), keeping facts read ahead for later tasks (tfrig.hosts.readahead) until anything else
runs on it. Imported only when a run connects somewhere, so Fabric and paramiko load only then."""

from __future__ import annotations

import base64
import contextlib
import logging
import threading
import time
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


_noted: set[str] = set()


def _note_once(note: str) -> None:
    """A note about the user's files, once per run however many hosts it connects to."""
    import sys

    if note not in _noted:
        _noted.add(note)
        print(f"note: {note}", file=sys.stderr)


class CheckedKeyPolicy(paramiko.MissingHostKeyPolicy):
    """For a host whose key no known-hosts file holds: refuse it, or with `accept-new` record it
    and go on, as OpenSSH's StrictHostKeyChecking does. A changed key never gets here: paramiko
    raises BadHostKeyException, which host.describe_error turns into one line."""

    def __init__(self, checking: hostkeys.Checking, revoked: list[hostkeys.KnownKey]) -> None:
        self.checking = checking
        self.revoked = revoked

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        for bad in self.revoked:
            if bad.key_base64 == key.get_base64():
                raise hostkeys.HostKeyRefused(
                    hostkeys.revoked_message(hostname, key.get_name(), key.fingerprint, bad.where)
                )
        if not self.checking.accept_new:
            raise hostkeys.HostKeyRefused(hostkeys.unknown_message(hostname, key.get_name(), key.fingerprint))
        hostkeys.record(self.checking.record_in, hostname, key.get_name(), key.get_base64())


class LinkStalled(Exception):
    """The host stopped answering on an open SSH connection (keepalives unanswered); one line."""


class ReadAheadConnection(Connection):
    def __init__(
        self,
        host: str,
        *args: Any,
        config: Any,
        run_config: Any,
        vm_keys: list[tuple[str, str]],
        keepalive: float = 0,
        **kwargs: Any,
    ) -> None:
        # The run's Config is Invoke's; Fabric reads the user's ssh config (Host aliases, User,
        # IdentityFile, UserKnownHostsFile) only into a Fabric Config.
        from tfrig.hosts import sshconfig

        with_ssh_config = config.clone(into=fabric.Config)
        as_openssh_reads_it = sshconfig.resolved(host)
        try:
            if as_openssh_reads_it is None:  # no ssh here: paramiko reads the files (no Include)
                with_ssh_config.load_ssh_config()
            else:
                with_ssh_config._set(base_ssh_config=paramiko.SSHConfig.from_text(as_openssh_reads_it))
        except Exception as exc:  # paramiko's parser: one line, not its traceback
            raise Exit(f"your ssh config could not be read: {exc}") from None
        super().__init__(host, *args, config=with_ssh_config, **kwargs)
        checking = hostkeys.checking(run_config, self.ssh_config)
        known = self.client.get_host_keys()
        name = hostkeys.host_name(self.host, self.port)
        revoked: list[hostkeys.KnownKey] = []
        if vm_keys:
            # A VM tfrig made: only the keys pinned from its guest attributes count (as gcloud's own
            # known-hosts file), not a stale line from an earlier VM at the same address. Under
            # --dry they exist only here, never written.
            for key_type, key_base64 in vm_keys:
                known.add(name, key_type, paramiko.PKey.from_type_string(key_type, base64.b64decode(key_base64)))
        else:
            # Read here, not by paramiko's loader (which fails on an @-marker line): this host's
            # keys, less the revoked ones, matched as OpenSSH matches them.
            keys: list[hostkeys.KnownKey] = []
            for file in checking.files:
                found, revoked_here, notes = hostkeys.read_known_hosts(file)
                keys += [key for key in found if hostkeys.names_match(key.names, name)]
                revoked += [key for key in revoked_here if hostkeys.names_match(key.names, name)]
                for note in notes:
                    _note_once(note)
            for key in keys:
                if any(key.key_base64 == bad.key_base64 for bad in revoked):
                    continue
                try:
                    known.add(
                        name,
                        key.key_type,
                        paramiko.PKey.from_type_string(key.key_type, base64.b64decode(key.key_base64)),
                    )
                except Exception:  # a key type paramiko can't check, or not base64: it can't match either
                    continue
        self.client.set_missing_host_key_policy(CheckedKeyPolicy(checking, revoked))
        # Context attributes are config keys unless set with _set. Fabric keeps a copy of the
        # config; the chain is kept by the run's own.
        read_ahead: dict[str, tuple[int, Fact]] = {}  # command: (chain position that read it, fact)
        self._set(run_config=run_config, read_ahead=read_ahead, keepalive=keepalive, stalled=None)

    # --- a link that stops answering ---------------------------------------------------------------
    # OpenSSH's ServerAliveInterval/CountMax, which paramiko lacks (its set_keepalive sends without
    # asking for a reply): every `keepalive` seconds a global request that wants a reply (an OpenSSH
    # server answers an unknown one with a failure, which counts); none for three intervals closes
    # the transport, and what was waiting on it ends in LinkStalled.

    def open(self) -> Any:
        result = super().open()
        if self.keepalive and self.transport is not None:
            threading.Thread(target=self._watch_link, args=(self.transport,), daemon=True).start()
        return result

    def _watch_link(self, transport: paramiko.Transport) -> None:
        limit = 3 * self.keepalive

        def ask(answered: threading.Event) -> None:
            with contextlib.suppress(Exception):  # closed meanwhile: the loop ends
                transport.global_request("keepalive@openssh.com", wait=True)
            answered.set()

        while transport.is_active():
            answered = threading.Event()
            threading.Thread(target=ask, args=(answered,), daemon=True).start()
            if not answered.wait(limit):
                self._set(stalled=f"the SSH connection to {self.host} stalled: no answer for {limit:g} s")
                transport.close()
                return
            time.sleep(self.keepalive)

    def _checked(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        """`call`, whose failure or cut-off result becomes LinkStalled where the link stalled."""
        try:
            result = call(*args, **kwargs)
        except Exception:
            if self.stalled:
                raise LinkStalled(self.stalled) from None
            raise
        if self.stalled:
            raise LinkStalled(self.stalled)
        return result

    def put(self, *args: Any, **kwargs: Any) -> Any:
        return self._checked(super().put, *args, **kwargs)

    def get(self, *args: Any, **kwargs: Any) -> Any:
        return self._checked(super().get, *args, **kwargs)

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
        return self._checked(super().run, command, **kwargs)

    def sudo(self, command: str, **kwargs: Any) -> Any:
        self._forget(kwargs)
        return self._checked(super().sudo, command, **kwargs)

    def shell(self, **kwargs: Any) -> Any:
        self.read_ahead.clear()
        return super().shell(**kwargs)

    def close(self) -> None:  # a new login (new groups) may read differently
        self.read_ahead.clear()
        super().close()

    def sftp(self) -> Any:  # put and get go through here
        self.read_ahead.clear()
        return super().sftp()
