"""The task decorator every namespace uses: Invoke's, with `-H` as the short flag of `--hosts`
(`-h` is Invoke's help)."""

from __future__ import annotations

from typing import Any

import invoke
from invoke.tasks import Task


class TfrigTask(Task):
    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        # `-h` stays Invoke's help for every task.
        opts = super().arg_opts(name, default, taken_names | {"h"})
        if name == "hosts":
            opts["names"] = ["hosts", "H"]
        return opts


def task(*args: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("klass", TfrigTask)
    return invoke.task(*args, **kwargs)
