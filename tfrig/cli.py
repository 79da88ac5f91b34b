"""The `tfrig` command: an Invoke Program over the same collection as `inv` in this repo."""

from __future__ import annotations

import os

from invoke import Program
from invoke.exceptions import Exit

from tfrig import __version__
from tfrig.hosts import readahead
from tfrig.tasks import ns


class TfrigProgram(Program):
    """Reads the same settings as `inv`: INVOKE_* env vars, ~/.invoke.yaml, ./invoke.yaml."""

    def update_config(self, merge: bool = True) -> None:
        super().update_config(merge=False)
        # With a built-in namespace Invoke loads no project file; use the current folder's.
        self.config.set_project_location(os.getcwd())
        try:
            self.config.load_project(merge=False)
        except Exception as exc:  # invalid YAML: one line naming the file, not the parser's traceback
            mark = getattr(exc, "problem_mark", None)
            file = getattr(mark, "name", None) or os.path.join(os.getcwd(), "invoke.yaml")
            line = f" line {mark.line + 1}" if mark is not None else ""
            raise Exit(f"{file}{line}: not valid YAML ({type(exc).__name__}); fix or move it.") from None
        if merge:
            self.config.merge()


program = TfrigProgram(
    namespace=ns, version=__version__, name="tfrig", binary="tfrig", executor_class=readahead.ChainExecutor
)


def main() -> None:
    program.run()
