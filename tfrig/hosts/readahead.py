"""Read-ahead across a chain of tasks: in `tfrig tf.install gpu.check`, tf.install's first SSH
round trip also reads the facts gpu.check will read first, and gpu.check takes them from there.

Facts are read-only probes, so reading them early changes nothing. What was read ahead is used
once, only by a later task of the same run, and only while nothing else ran on that host: any
other command on the connection (a change, an upload, gcp.exec) drops it (see
`host.ReadAheadConnection`). A task registers the probes it starts with (`first_probes`); the
run's chain comes from `ChainExecutor`, which the `tfrig` command uses. Without it (plain `inv`
here), every task reads its own facts, as before.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from invoke import Executor

# The probes a task runs first on each target, given the config and its arguments; None when it
# will read nothing there (e.g. gpu.check --input).
FirstProbes = Callable[[Any, Mapping[str, Any]], Mapping[str, str] | None]

_first_probes: dict[Any, FirstProbes] = {}


class _Chain:
    def __init__(self, calls: list[tuple[Any, dict[str, Any]]]) -> None:
        self.calls = calls
        self.position = -1  # index of the task running now


_chains: dict[int, _Chain] = {}
_lock = threading.Lock()


def first_probes(task: Any, probes: FirstProbes) -> None:
    """Say which probes `task` runs first, so that an earlier task of a chain can read them."""
    _first_probes[task] = probes


class ChainExecutor(Executor):
    """Invoke's Executor, remembering the run's tasks in order for the read-ahead."""

    def execute(self, *tasks: Any) -> Any:
        calls = self.normalize(tasks)
        with _lock:
            if id(self.config) not in _chains:
                weakref.finalize(self.config, _chains.pop, id(self.config), None)
            _chains[id(self.config)] = _Chain([(call.task, dict(call.kwargs)) for call in calls])
        return super().execute(*tasks)


def started(config: Any, task: Any) -> None:
    """`task` starts now: it is the next call of that task in the run's chain."""
    chain = _chains.get(id(config))
    if chain is None:
        return
    for index in range(chain.position + 1, len(chain.calls)):
        if chain.calls[index][0] is task:
            chain.position = index
            return


def position(config: Any) -> int | None:
    """Where the run is in its chain; None when the chain is unknown (no read-ahead then)."""
    chain = _chains.get(id(config))
    return chain.position if chain is not None and chain.position >= 0 else None


def later_call(config: Any, task: Any) -> dict[str, Any] | None:
    """The arguments of the next call of `task` later in the run's chain, on the targets of the
    task running now (no --hosts of its own, or the same); None where there is none or the chain
    is unknown."""
    chain = _chains.get(id(config))
    if chain is None or chain.position < 0:
        return None
    hosts = chain.calls[chain.position][1].get("hosts")
    for later, kwargs in chain.calls[chain.position + 1 :]:
        if later is task and kwargs.get("hosts") in (None, hosts):
            return kwargs
    return None


def later_probes(config: Any) -> list[str]:
    """The commands the run's later tasks will probe first on targets they share with this one
    (tasks given their own --hosts are left out)."""
    chain = _chains.get(id(config))
    if chain is None or chain.position < 0:
        return []
    commands: list[str] = []
    for task, kwargs in chain.calls[chain.position + 1 :]:
        probes = _first_probes.get(task)
        if probes is None or kwargs.get("hosts"):
            continue
        for command in (probes(config, kwargs) or {}).values():
            if command not in commands:
                commands.append(command)
    return commands
