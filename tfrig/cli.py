"""The `tfrig` command: an Invoke Program over the same collection as `inv` in this repo."""

from __future__ import annotations

import os

from invoke import Program

from tfrig import __version__, readahead
from tfrig.collection import ns


class TfrigProgram(Program):
    """Reads the same settings as `inv`: INVOKE_* env vars, ~/.invoke.yaml, ./invoke.yaml."""

    def update_config(self, merge: bool = True) -> None:
        super().update_config(merge=False)
        # With a built-in namespace Invoke loads no project file; use the current folder's.
        self.config.set_project_location(os.getcwd())
        self.config.load_project(merge=False)
        if merge:
            self.config.merge()


program = TfrigProgram(
    namespace=ns, version=__version__, name="tfrig", binary="tfrig", executor_class=readahead.ChainExecutor
)


def main() -> None:
    program.run()
