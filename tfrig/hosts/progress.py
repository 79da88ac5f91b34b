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

_lock = threading.RLock()  # re-entrant: rich renders (and takes it) inside Live(...) and start()
_live: Any = None  # the terminal's rich Live while any step runs there
_running: list[Tracker] = []


def _clock() -> str:
    return datetime.datetime.now().strftime("%H:%M:%S")


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Tracker:
    """One running step: its label, what it does, and a note from its output (a lock wait).

    Invoke hands a watcher each output stream whole as it grows (stdout and stderr separately), so
    the tracker looks at each stream's tail: apt repeats its waiting line while it waits, and the
    note lapses a few seconds after the last one."""

    NOTE_LAPSES_S = 5.0

    def __init__(self, label: str, what: str) -> None:
        self.label, self.what = label, what
        self.started = time.monotonic()
        self._note = ""
        self._noted_at = 0.0
        self._lengths: set[int] = set()

    def submit(self, stream: str) -> list[str]:
        match = _LOCK_WAIT.search(stream[-400:])
        if match and len(stream) not in self._lengths:  # a new waiting line, not a stream seen before
            self._lengths.add(len(stream))
            holder = match["name"] or f"process {match['pid']}"
            if holder.startswith("unattended-upgr"):
                holder = "unattended-upgrades (it runs after a VM boots)"
            which = "the package lists' lock" if "/lists/" in match["lock"] else "the dpkg lock"
            self._note, self._noted_at = f"waiting for {which}, held by {holder}", time.monotonic()
        return []

    @property
    def note(self) -> str:
        return self._note if time.monotonic() - self._noted_at < self.NOTE_LAPSES_S else ""

    def watcher(self) -> _Watch:
        return _Watch(self)

    def line(self) -> str:
        note = self.note
        return f"[{self.label}] {self.what} {_elapsed(time.monotonic() - self.started)}" + (f": {note}" if note else "")


class _Watch(StreamWatcher):
    """Hands a step's output streams to its Tracker. Invoke's StreamWatcher is a threading.local
    (each output thread gets its own attributes), so the state lives in the shared Tracker."""

    def __init__(self, tracker: Tracker) -> None:
        super().__init__()
        self.tracker = tracker

    def submit(self, stream: str) -> list[str]:
        return self.tracker.submit(stream)


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
            live = None
            if _live is None:
                live = _live = Live(
                    get_renderable=_render, console=Console(file=out), refresh_per_second=2, transient=True
                )
        if live is not None:
            live.start()  # outside the lock: its first refresh renders, and rendering takes the lock
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
