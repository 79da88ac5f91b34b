"""Plan tests: a task on a host in a given state (MockContext), and the exact commands it ran."""

from __future__ import annotations

import re
from typing import Any

from invoke import Config, MockContext, Result

from tfrig.hosts.host import probe_script
from tfrig.tasks import ns

PROBE = re.compile(r"^sh -c .*@@tfrig-fact", re.S)


def probe_result(facts: dict[str, tuple[int, str]]) -> Result:
    """What the batched probe prints for these facts (name -> (exit code, output))."""
    out = "".join(f"\n@@tfrig-fact {name}\n{text}\n@@tfrig-rc {name} {rc}\n" for name, (rc, text) in facts.items())
    return Result(stdout=out, exited=0)


def context(
    task: str, *, probes: list[dict[str, tuple[int, str]]], changes: dict[Any, Any] | None = None, dry: bool = False
) -> MockContext:
    """A MockContext configured like `inv TASK` whose host answers `probes` in order."""
    config = Config(overrides={"run": {"dry": dry}})
    config.load_collection(ns.configuration(task))
    run: dict[Any, Any] = {PROBE: [probe_result(p) for p in probes]}
    run.update(changes or {})
    return MockContext(config=config, run=run)


def commands(c: MockContext) -> list[str]:
    """Every command the task ran, probes shown as `probe`."""
    calls = c.run.call_args_list  # type: ignore[attr-defined]  # MockContext wraps run in a Mock
    return ["probe" if PROBE.match(call.args[0]) else call.args[0] for call in calls]


__all__ = ["commands", "context", "probe_result", "probe_script"]
