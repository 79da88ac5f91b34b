"""Run one piece of work on every target: in parallel, each host to the end, one summary."""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from invoke.exceptions import Exit

from tfrig.hosts import targets as targets_mod
from tfrig.hosts.host import Host, connect, describe_error
from tfrig.hosts.targets import Target
from tfrig.ui import info_stream, print_json, table

Work = Callable[[Host], dict[str, Any]]

# The task running now, as `namespace.task`, so reports can say which step of a chain failed.
current_task: contextvars.ContextVar[str] = contextvars.ContextVar("current_task", default="")


def _run_one(c: Any, target: Target, work: Work, json_out: bool) -> dict[str, Any]:
    return work(Host(connect(c, target), target, out=info_stream(json_out)))


def on_targets(
    c: Any,
    work: Work,
    *,
    hosts: str | None = None,
    json_out: bool = False,
    summary: Callable[[dict[str, Any]], str] | None = None,
) -> list[dict[str, Any]]:
    """Resolve the task's targets, run `work` on each, report, and fail if any host failed.

    `work` returns the task's result object for one host; `summary` turns it into the short text
    of the per-host summary line.
    """
    targets = targets_mod.resolve(c, hosts=hosts)
    out = info_stream(json_out)
    step = current_task.get()
    print(f"target: {', '.join(t.label for t in targets)}{f' ({step})' if step else ''}", file=out, flush=True)
    if len(targets) == 1:
        label = targets[0].label
        try:
            result = _run_one(c, targets[0], work, json_out)
        except Exit as exit_:
            message = str(exit_.message or "")
            if step and message.startswith(f"[{label}] "):  # say which step of a chain failed
                raise Exit(f"[{label}] {step}: {message[len(label) + 3 :]}", code=exit_.code) from None
            raise
        except Exception as exc:
            raise Exit(f"[{label}] {step + ': ' if step else ''}{describe_error(exc)}") from None
        if json_out:
            print_json(result)
        return [result]

    def attempt(target: Target) -> dict[str, Any]:
        try:
            result = _run_one(c, target, work, json_out)
            return {"host": target.label, "ok": True, "error": None, **result}
        except Exception as exc:
            return {"host": target.label, "ok": False, "error": describe_error(exc)}

    with ThreadPoolExecutor(max_workers=min(16, len(targets))) as pool:
        results = list(pool.map(attempt, targets))
    if json_out:
        print_json({"results": results})
    else:
        rows = [
            (
                r["host"],
                "ok" if r["ok"] else "FAILED",
                r["error"] if not r["ok"] else (summary(r) if summary else ""),
            )
            for r in results
        ]
        table(["host", "result", "detail"], rows, out=out)
    failed = [r["host"] for r in results if not r["ok"]]
    if failed:
        print(
            f"{step or 'the step'} failed on {len(failed)} of {len(results)} hosts: {', '.join(failed)}",
            file=sys.stderr,
        )
        raise Exit(code=1)
    return results
