"""The task decorator every namespace uses: Invoke's, with `-H` as the short flag of `--hosts`
(`-h` is Invoke's help)."""

from __future__ import annotations

import contextvars
from typing import Any

import invoke
from invoke.tasks import Task

HOSTS_HELP = (
    "user@host:port, a VM tfrig made, or a glob of them; comma-separated "
    "(default: the run's target, tfrig.hosts, or here)"
)
JSON_HELP = "print only JSON on stdout"

# The task running now, as `namespace.task`, so reports can say which step of a chain failed.
current_task: contextvars.ContextVar[str] = contextvars.ContextVar("current_task", default="")


class TfrigTask(Task):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        namespace = self.body.__module__.rsplit(".", 1)[-1]
        token = current_task.set(f"{namespace}.{self.name.rstrip('_').replace('_', '-')}")
        if args:  # args[0] is the task's Context
            from tfrig import readahead

            readahead.started(args[0].config, self)
        try:
            return super().__call__(*args, **kwargs)
        finally:
            current_task.reset(token)

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        # `-h` stays Invoke's help for every task.
        opts = super().arg_opts(name, default, taken_names | {"h"})
        if name == "hosts":
            opts["names"] = ["hosts", "H"]
        return opts


def task(*args: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("klass", TfrigTask)
    return invoke.task(*args, **kwargs)


def setting(c: Any, namespace: str, key: str, value: Any) -> Any:
    """A value given on the command line wins; else the `namespace.key` setting (invoke.yaml, INVOKE_*)."""
    return value if value not in (None, "") else c.config[namespace].get(key)
