"""Progress for long steps (apt installs, the driver build, pip, reboots): a live line per running
step with its elapsed time on a terminal (rich), plain timestamped lines elsewhere, never a silent
minute. A step's output is watched as it streams, so a wait on the dpkg lock is named as one."""

from __future__ import annotations

import datetime
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from invoke.watchers import StreamWatcher

HEARTBEAT_S = 30.0
# apt (apt-pkg/contrib/fileutl.cc) while DPkg::Lock::Timeout waits: "Waiting for cache lock: Could not
# get lock /var/lib/dpkg/lock-frontend. It is held by process 7 (unattended-upgr)"; without the
# timeout, the same "Could not get lock ... held by process" line comes as an error.
_LOCK_WAIT = re.compile(
    r"Could not get lock (?P<lock>\S+?)\.? It is held by process (?P<pid>\d+)(?: \((?P<name>[^)]+)\))?"
)

_lock = threading.Lock()
_live: Any = None  # the terminal's rich Live while any step runs there
_running: list[Tracker] = []


def _clock() -> str:
    return datetime.datetime.now().strftime("%H:%M:%S")


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Tracker(StreamWatcher):
    """One running step: its label, what it does, and a note from its output (a lock wait)."""

    def __init__(self, label: str, what: str) -> None:
        super().__init__()
        self.label, self.what = label, what
        self.started = time.monotonic()
        self.note = ""
        self._seen = 0

    def submit(self, stream: str) -> list[str]:
        new, self._seen = stream[self._seen :], len(stream)
        match = _LOCK_WAIT.search(new)
        if match:
            holder = match["name"] or f"process {match['pid']}"
            if holder.startswith("unattended-upgr"):
                holder = "unattended-upgrades (it runs after a VM boots)"
            self.note = f"waiting for the dpkg lock, held by {holder}"
        elif new.strip() and self.note.startswith("waiting for the dpkg lock"):
            self.note = ""
        return []

    def line(self) -> str:
        return f"[{self.label}] {self.what} {_elapsed(time.monotonic() - self.started)}" + (
            f": {self.note}" if self.note else ""
        )


def say(message: str, out: TextIO) -> None:
    """Print a line for the user; above the live lines when they are on the same terminal."""
    with _lock:
        live = _live
    if live is not None and out is live.console.file:
        live.console.print(message, markup=False, highlight=False, soft_wrap=True)
    else:
        print(message, file=out, flush=True)


def _render() -> Any:
    from rich.text import Text

    with _lock:
        return Text("\n".join(tracker.line() for tracker in _running))


@contextmanager
def step(label: str, what: str, out: TextIO) -> Iterator[Tracker]:
    """Track one long step while its body runs; the tracker watches the step's output stream."""
    global _live
    tracker = Tracker(label, what)
    if out.isatty():
        from rich.console import Console
        from rich.live import Live

        with _lock:
            _running.append(tracker)
            if _live is None:
                _live = Live(get_renderable=_render, console=Console(file=out), refresh_per_second=2, transient=True)
                _live.start()
        try:
            yield tracker
        finally:
            with _lock:
                _running.remove(tracker)
                live, stop = _live, not _running
                if stop:
                    _live = None
            if stop and live is not None:
                live.stop()
        return
    print(f"{_clock()} [{label}] {what}: started", file=out, flush=True)
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(HEARTBEAT_S):
            note = f"; {tracker.note}" if tracker.note else ""
            elapsed = _elapsed(time.monotonic() - tracker.started)
            print(
                f"{_clock()} [{label}] {what}: still running after {elapsed}{note}",
                file=out,
                flush=True,
            )

    beat = threading.Thread(target=heartbeat, daemon=True)
    beat.start()
    try:
        yield tracker
    finally:
        done.set()
        print(
            f"{_clock()} [{label}] {what}: finished after {_elapsed(time.monotonic() - tracker.started)}",
            file=out,
            flush=True,
        )
