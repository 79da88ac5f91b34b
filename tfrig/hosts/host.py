"""One target as steps see it: facts (read-only, run even under --dry) and changes (skipped under
--dry, printed instead), both logged per host under the state dir.

A local `invoke.Context` and a Fabric `Connection` share this interface, so a step written once
serves the laptop and the VM.
"""

from __future__ import annotations

import datetime
import os
import re
import shlex
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from invoke.exceptions import Exit

from tfrig import state
from tfrig.hosts import readahead
from tfrig.hosts.targets import Target
from tfrig.knowledge.facts import Fact, parse_probe, probe_script
from tfrig.ui import one_line, refuse_special_file

SCRIPTS = Path(__file__).parents[1] / "scripts"

# Changes when the host boots again (a VM's boot id; a container's PID 1 start time).
BOOT_MARK = "echo $(cat /proc/sys/kernel/random/boot_id) $(cut -d' ' -f22 /proc/1/stat)"
_print_lock = threading.Lock()


_unwritable_log_said = threading.Event()
# Secrets a command line or its output may carry: credentials in URLs (pip's --index-url
# https://user:token@..., and a token alone as the user, https://TOKEN@...), token= and password=
# values (Jupyter's URL), the same keys in JSON (`jupyter server list --json`: "token": "..."),
# and variables named for secrets (HF_TOKEN=..., AWS_SECRET_ACCESS_KEY=..., WANDB_API_KEY=...).
_SECRET_NAME = (
    r"[A-Za-z0-9_]*(?:token|password|passwd|secret|api[_-]?key|access[_-]?key|credentials?|auth)[A-Za-z0-9_]*"
)
_SECRETS = (
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@", re.I), r"\1***@"),
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/\s:@]+@", re.I), r"\1***@"),
    (re.compile(rf"\b({_SECRET_NAME}=)(?:\"[^\"]*\"|'[^']*'|[^&\s'\"]+)", re.I), r"\1***"),
    (re.compile(rf"(\"{_SECRET_NAME}\"\s*:\s*)\"[^\"]*\"", re.I), r'\1"***"'),
)


def redact(text: str) -> str:
    """`text` with the secrets it may carry replaced by ***, for logs."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class StepFailed(Exception):
    """A change on a host failed; the message says what and how to look closer."""


class Host:
    """A target with its connection (or local Context), its log and its reporter."""

    def __init__(self, c: Any, target: Target, out: TextIO | None = None) -> None:
        self.c = c
        self.target = target
        self.label = target.label
        self.out = out or sys.stdout
        self._log_path = state.log_dir() / (re.sub(r"[^A-Za-z0-9._@:-]", "_", self.label) + ".log")

    @property
    def dry(self) -> bool:
        return bool(self.c.config.run.dry)

    @property
    def is_root(self) -> bool:
        if self.target.is_local or self.target.assumed is not None:
            return os.geteuid() == 0
        return (self.target.user or getattr(self.c, "user", None)) == "root"

    @property
    def user(self) -> str:
        if self.target.is_local:
            from tfrig.hosts.targets import local_user

            return local_user()
        return self.target.user or str(self.c.user)

    def say(self, message: str) -> None:
        from tfrig.hosts import progress

        with _print_lock:
            progress.say(f"[{self.label}] {message}", self.out)

    def log(self, kind: str, command: str, rc: int | None, output: str = "") -> None:
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        text = f"{stamp} {kind} rc={rc} $ {command}\n"
        if output:
            text += "".join(f"    {line}\n" for line in output.rstrip("\n").splitlines()[-200:])
        try:
            state.private_dir(self._log_path.parent)
            with os.fdopen(os.open(self._log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "a") as log:
                log.write(redact(text))
        except OSError as exc:  # a read-only state folder: the work goes on, said once
            if not _unwritable_log_said.is_set():
                _unwritable_log_said.set()
                print(f"tfrig: not logging to {self._log_path} ({exc.strerror})", file=sys.stderr)

    @property
    def _read_ahead(self) -> Any:
        """The run's connection when it keeps facts read ahead for later tasks (tfrig.hosts.readahead)."""
        return self.c if hasattr(type(self.c), "take_read_ahead") else None

    def _run(self, command: str, *, sudo: bool, read_only: bool = False, **kwargs: Any) -> Any:
        options = {"hide": True, "warn": True, "in_stream": False, **kwargs}
        if read_only and self._read_ahead is not None:
            options["read_only"] = True
        if sudo and not self.is_root:
            return self.c.sudo(command, **options)
        return self.c.run(command, **options)

    def _assumed(self, names: list[str]) -> dict[str, Fact]:
        """Facts of a VM that --dry would create: assumed from a fresh image, and said so once."""
        assert self.target.assumed is not None
        if not getattr(self, "_said_assumed", False):
            self.say("not created under --dry: facts below are assumed from a fresh image")
            self._said_assumed = True
        return {name: Fact(*self.target.assumed.get(name, (1, ""))) for name in names}

    def assume(self, facts: dict[str, tuple[int, str]]) -> None:
        """Under --dry, what a planned VM's facts would be after a step that would run."""
        if self.target.assumed is not None:
            self.target.assumed.update(facts)

    def fact(self, command: str, *, sudo: bool = False) -> Fact:
        """Run a read-only probe, for real even under --dry."""
        if self.target.assumed is not None:
            return self._assumed([command])[command]
        result = self._run(command, sudo=sudo, dry=False, read_only=True)
        self.log("fact", command, result.exited, result.stdout + result.stderr)
        return Fact(rc=result.exited, out=(result.stdout + result.stderr).strip("\n"))

    def probe(self, commands: Mapping[str, str], *, sudo: bool = False) -> dict[str, Fact]:
        """Several read-only probes in one round trip."""
        if self.target.assumed is not None:
            return self._assumed(list(commands))
        # Read-ahead (tfrig.hosts.readahead): take facts an earlier task of the chain read for this one,
        # and read the later tasks' first facts along with this task's.
        connection: Any = None if sudo else self._read_ahead
        now = readahead.position(connection.run_config) if connection is not None else None
        later: dict[str, str] = {}
        if now is not None:
            found = connection.take_read_ahead(commands, now)
            if found is not None:
                self.log("probe", f"{', '.join(commands)}: read ahead by an earlier task", 0)
                return found
            wanted = set(commands.values())
            later = {
                f"read-ahead-{index}": command
                for index, command in enumerate(readahead.later_probes(connection.run_config))
                if command not in wanted
            }
        script = probe_script({**commands, **later})
        result = self._run(f"sh -c {shlex.quote(script)}", sudo=sudo, dry=False, read_only=True)
        self.log("probe", ", ".join([*commands, *later]), result.exited, result.stdout)
        facts = parse_probe(result.stdout)
        missing = set(commands) - set(facts)
        if missing:
            raise StepFailed(
                f"{self.label}: the probe did not answer ({result.stderr.strip() or 'no output'}); see {self._log_path}"
            )
        if now is not None:
            read = {command: facts[name] for name, command in {**commands, **later}.items() if name in facts}
            connection.keep_read_ahead(read, now)
        return {name: facts[name] for name in commands}

    def with_private_file(self, content: str, command: str, variable: str) -> str:
        """`command` run with `variable` (exported) naming a new file of `content` that only the
        login user can read, removed when the shell ends: a secret that would show in the host's
        process list as an argument goes there instead. Written over SFTP (or here, directly)."""
        import secrets

        name = f".tfrig/private-{secrets.token_hex(8)}"
        if self.dry:
            return f"{variable}=~/{name} {command}"
        if self.target.is_local:
            path = state.private_dir(Path.home() / ".tfrig") / name.split("/", 1)[1]
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
                out.write(content)
            where = shlex.quote(str(path))
        else:
            import io

            self._run(f'umask 077 && mkdir -p "$HOME/.tfrig" && : > "$HOME/{name}"', sudo=False)
            self.c.put(io.BytesIO(content.encode()), name)  # relative to the SFTP session's home
            where = f'"$HOME/{name}"'
        # Removed however the shell ends: the command's own `exit`, a failure, a dropped connection.
        removal = shlex.quote(f"rm -f {where}")
        return f"trap {removal} EXIT; trap 'exit 129' HUP INT TERM; export {variable}={where}; {command}"

    def change(self, command: str, *, sudo: bool = False, what: str | None = None, progress: str | None = None) -> str:
        """Run a command that changes the host; under --dry print it instead. Returns stdout.
        A long one names itself in `progress`: it is shown running with its elapsed time."""
        if self.dry:
            self.say(f"would run: {'sudo ' if sudo and not self.is_root else ''}{what or command}")
            return ""
        if progress:
            from tfrig.hosts import progress as progress_mod

            with progress_mod.step(self.label, progress, self.out) as tracker:
                result = self._run(command, sudo=sudo, watchers=[tracker.watcher()])
        else:
            result = self._run(command, sudo=sudo)
        self.log("change", command, result.exited, result.stdout + result.stderr)
        if result.failed:
            tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-5:])
            raise StepFailed(
                f"{what or command.splitlines()[0][:120]} failed (exit {result.exited}): {tail}; "
                f"full log: {self._log_path}"
            )
        return str(result.stdout)

    def alongside(self, commands: list[tuple[str, bool]]) -> Alongside:
        """Run `commands` (command, sudo), one after another, in a thread of their own while the
        task goes on: a channel of their own on the same SSH connection. Each is a change, logged;
        the caller starts none under --dry. `Alongside.wait()` joins them."""
        if hasattr(self.c, "is_connected") and not self.c.is_connected:
            self.c.open()  # here, not in both threads at once
        return Alongside(self, commands)

    def script_command(self, name: str, env: Mapping[str, str]) -> str:
        """The command that runs one of tfrig's host scripts (scripts/NAME) with `env` in its environment."""
        body = (SCRIPTS / name).read_text()
        assignments = " ".join(f"{key}={shlex.quote(value)}" for key, value in env.items())
        prefix = f"env {assignments} " if assignments else ""
        return f"{prefix}bash -c {shlex.quote(body)} {shlex.quote(name)}"

    def script(
        self,
        name: str,
        env: Mapping[str, str],
        *,
        sudo: bool = True,
        progress: str | None = None,
        what: str | None = None,
    ) -> str:
        """Run one of tfrig's host scripts (scripts/NAME) with parameters in its environment;
        `what` says what it does where the parameters are too long to show."""
        assignments = " ".join(f"{key}={shlex.quote(value)}" for key, value in env.items())
        return self.change(
            self.script_command(name, env),
            sudo=sudo,
            what=what or f"{assignments} scripts/{name}".strip(),
            progress=progress or f"scripts/{name}",
        )

    def _disconnect(self) -> None:
        close = getattr(self.c, "close", None)  # a Fabric Connection; a local Context has none
        if close is not None:
            close()

    def new_session(self) -> None:
        """Log in anew at the next command (the connection reopens itself), so a group the user was
        just added to applies to the rest of the run."""
        self._disconnect()

    def reboot(self, reason: str, timeout: float = 600) -> None:
        """Reboot the host and wait until it answers over SSH again, booted anew."""
        if self.target.is_local:
            raise Exit(f"[{self.label}] {reason}: reboot this machine, then run the same command again.")
        if self.dry:
            self.say(f"would reboot ({reason}) and wait for the host to come back")
            return
        self.say(f"rebooting: {reason}")
        before = self.fact(BOOT_MARK).out
        self.change(
            "nohup sh -c 'sleep 1; systemctl reboot 2>/dev/null || reboot' >/dev/null 2>&1 &", sudo=True, what="reboot"
        )
        self._disconnect()
        from tfrig.hosts import progress

        deadline = time.monotonic() + timeout
        with progress.step(self.label, "waiting for the host to come back", self.out):
            while time.monotonic() < deadline:
                time.sleep(2)
                try:
                    now = self.fact(BOOT_MARK).out
                except Exception:  # down, refusing, or half up: keep waiting until the deadline
                    self._disconnect()
                    continue
                if now and now != before:
                    break
            else:
                raise StepFailed(f"{self.label} did not come back within {timeout:.0f} s of the reboot")
        self.say("back after the reboot")


class Alongside:
    """Commands running on a host beside the task's own (Host.alongside)."""

    def __init__(self, host: Host, commands: list[tuple[str, bool]]) -> None:
        self.output = ""
        self.failure: str | None = None
        self._started = time.monotonic()
        self._seconds = 0.0
        self._thread = threading.Thread(target=self._work, args=(host, commands), daemon=True)
        self._thread.start()

    def _work(self, host: Host, commands: list[tuple[str, bool]]) -> None:
        try:
            for command, sudo in commands:
                result = host._run(command, sudo=sudo)
                host.log("alongside", command, result.exited, result.stdout + result.stderr)
                self.output += result.stdout
                if result.failed:
                    lines = (result.stderr or result.stdout).strip().splitlines()
                    self.failure = lines[-1] if lines else f"exit {result.exited}"
                    break
        except Exception as exc:  # the connection dropped, a sudo password refused: said by wait()
            self.failure = describe_error(exc)
        self._seconds = time.monotonic() - self._started

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self) -> float:
        """Wait for the commands to end; the seconds they took. `failure` then says why they stopped."""
        self._thread.join()
        return self._seconds


def shell_path(path: str) -> str:
    """Quote a path for the shell, leaving a leading `~/` to expand to the target user's home."""
    if path == "~" or path.startswith("~/"):
        return '"$HOME"' + (shlex.quote(path[1:]) if len(path) > 1 else "")
    return shlex.quote(path)


# Before connecting to a VM tfrig made: its login made ready (an OS Login key renewed) and its host
# keys (pinned, else from Compute Engine). The Compute Engine layer knows how, and the root
# collection hands its function down here (use_vm_access), so this layer never imports the one above it.
VmAccess = Callable[[Any, dict[str, Any]], list[tuple[str, str]]]
_vm_access: VmAccess | None = None


def use_vm_access(access: VmAccess) -> None:
    global _vm_access
    _vm_access = access


# Why a VM tfrig made stopped answering (preempted, stopped, deleted), or None: handed down likewise.
VmLost = Callable[[Any, dict[str, Any]], "str | None"]
_vm_lost: VmLost | None = None


def use_vm_lost(explain: VmLost) -> None:
    global _vm_lost
    _vm_lost = explain


def lost_reason(c: Any, target: Target) -> str | None:
    """What became of a target's VM when its connection ended (None: not a VM, or running)."""
    if target.vm is None or not target.vm.get("zone") or _vm_lost is None:
        return None
    return _vm_lost(c, target.vm)


# One SSH connection per host for a whole `inv` run, so a chain of tasks handshakes once per host.
_connections: dict[tuple[int, Target], Any] = {}
_connections_lock = threading.Lock()


def connect(c: Any, target: Target) -> Any:
    """A Context for the local target, else the run's Fabric Connection to it (carrying --dry and
    sudo config); it closes when the run's Config goes, and reopens by itself if closed."""
    if target.is_local or target.assumed is not None:
        return c
    run = id(c.config)
    with _connections_lock:
        conn = _connections.get((run, target))
        if conn is None:
            if not any(key[0] == run for key in _connections):
                weakref.finalize(c.config, _close_run, run)
            conn = _connections[(run, target)] = _new_connection(c, target)
    return conn


def _close_run(run: int) -> None:
    with _connections_lock:
        for key in [key for key in _connections if key[0] == run]:
            _connections.pop(key).close()


def _new_connection(c: Any, target: Target) -> Any:
    from tfrig.hosts.connection import ReadAheadConnection

    tfrig_config = c.config.get("tfrig", {})
    key = target.key_filename or tfrig_config.get("ssh_key") or None
    connect_kwargs: dict[str, Any] = {}
    if key:
        connect_kwargs["key_filename"] = os.path.expanduser(key)
        refuse_special_file(Path(connect_kwargs["key_filename"]), "the SSH key")
    # A VM tfrig made: its host keys, pinned from its guest attributes (tfrig.hosts.hostkeys).
    vm_keys: list[tuple[str, str]] = []
    if target.vm is not None and target.vm.get("zone") and _vm_access is not None:
        vm_keys = _vm_access(c, target.vm)
    from tfrig.settings import setting_number, setting_seconds

    timeout = setting_number(c.config, "tfrig", "connect_timeout", 1, 3600, default=15)
    keepalive = setting_seconds(c.config, "tfrig", "keepalive", 0, 3600, default=15)
    # paramiko waits 15 s for a banner by default; a port that answers and never speaks is down too
    connect_kwargs["banner_timeout"] = timeout
    assert target.host is not None  # the local target runs without a connection
    return ReadAheadConnection(
        target.host,
        user=target.user,
        port=target.port,
        config=c.config,
        connect_timeout=timeout,
        connect_kwargs=connect_kwargs,
        run_config=c.config,
        vm_keys=vm_keys,
        keepalive=keepalive,
        # Fabric runs a string gateway as paramiko's ProxyCommand (fabric.Connection, "gateway").
        gateway=target.proxy_command,
    )


def hold_tunnel(conn: Any, local: int, remote: int, opened: Callable[[], None]) -> None:
    """Forward 127.0.0.1:`local` here to 127.0.0.1:`remote` on the host, calling `opened` once it
    is up, until Ctrl-C (returns) or the SSH link ends or stalls (one line)."""
    try:
        with conn.forward_local(local_port=local, remote_port=remote, remote_host="127.0.0.1", local_host="127.0.0.1"):
            opened()
            while conn.transport is not None and conn.transport.is_active():
                time.sleep(1)
    except KeyboardInterrupt:
        return
    except Exception:  # Fabric's tunnel threads fail along with the link: the cause is said below
        pass
    raise Exit(f"the tunnel closed: {conn.stalled or 'the SSH connection ended'}; open it again.")


def describe_error(exc: BaseException) -> str:
    """One line for an error raised while working on a host (escaped and cut: tfrig.ui.one_line)."""
    return one_line(_describe_error(exc))


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, Exit):
        return str(exc.message or f"exited {exc.code}")
    if isinstance(exc, StepFailed):
        return str(exc)
    import socket

    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out connecting; is the host up and port 22 open?"
    if isinstance(exc, OSError) and exc.filename:  # a local file: a key, a config
        return f"can't read {exc.filename}: {exc.strerror}"
    if isinstance(exc, ConnectionRefusedError | OSError) and not type(exc).__module__.startswith("paramiko"):
        return f"can't connect: {exc.strerror or exc}"
    from tfrig.hosts import hostkeys

    if isinstance(exc, hostkeys.HostKeyRefused) or type(exc).__name__ == "LinkStalled":
        return str(exc)
    name = type(exc).__name__
    if name == "BadHostKeyException":  # paramiko's: the key differs from the one on record
        key, expected = exc.key, exc.expected_key  # type: ignore[attr-defined]
        return hostkeys.changed_message(exc.hostname, key.get_name(), key.fingerprint, expected.fingerprint)  # type: ignore[attr-defined]
    if name == "AuthenticationException":
        return "SSH authentication failed; check the user and key (tfrig.ssh_key or ~/.ssh/config)."
    if name == "NoValidConnectionsError":  # paramiko's: "[Errno None] Unable to connect to port 22 on ..."
        return f"can't connect: {str(exc).removeprefix('[Errno None] ')}"
    return f"{name}: {exc}"
