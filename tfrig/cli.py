"""The `tfrig` command: an Invoke Program over the same collection as `inv` in this repo."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from invoke import Config, Program
from invoke.exceptions import Exit

from tfrig import __version__, settings
from tfrig.hosts import readahead
from tfrig.tasks import ns
from tfrig.ui import refuse_special_file

SCHEMA: dict[str, dict[str, Any]] = ns.configuration()


class TfrigConfig(Config):
    """Invoke's Config, with every file and INVOKE_* variable checked against tfrig's settings
    before Invoke merges or casts them (where it would end in a traceback, or read "false" as
    true), and a folder's own file held to what can't send credentials or code elsewhere."""

    def _load_yaml(self, path: Any) -> Any:
        refuse_special_file(Path(path), "the settings file")
        return settings.checked_file(super()._load_yaml(path), str(path), SCHEMA)

    _load_yml = _load_yaml

    def _load_json(self, path: Any) -> Any:
        refuse_special_file(Path(path), "the settings file")
        return settings.checked_file(super()._load_json(path), str(path), SCHEMA)

    # Files and variables are checked as they load: settings.settle has nothing left to do.
    settings_checked = True

    def load_shell_env(self) -> None:
        checked = settings.checked_environment(SCHEMA, self._env_prefix or "INVOKE")  # before Invoke casts
        super().load_shell_env()
        settings.use_environment_booleans(self, checked)

    def load_folder_file(self, folder: str) -> None:
        """The folder's invoke.yaml (or .yml, .json, .py), less what waits for `tfrig allow`."""
        self.set_project_location(folder)
        found = settings.folder_file(Path(folder))
        if found is None:
            return
        trusted = settings.allowed(found)
        if found.suffix == ".py" and not trusted:  # Invoke would run it as Python
            _note(f"ignored {found}: a folder's invoke.py is code; read it, then `tfrig allow` to use it.")
            self._set(_project_found=False)
            return
        self.load_project(merge=False)
        held = [] if trusted else settings.held_back(self._project, SCHEMA)
        if held:
            self._set(_project=settings.without(self._project, held))
            _note(
                f"ignored {', '.join(held)} from {found}: a folder's file sets where credentials, code and "
                "host keys come from only once you allow it; read it, then `tfrig allow`."
            )


def _note(line: str) -> None:
    print(f"tfrig: {line}", file=sys.stderr)


class TfrigProgram(Program):
    """Reads the same settings as `inv`: INVOKE_* env vars, ~/.invoke.yaml, ./invoke.yaml."""

    def update_config(self, merge: bool = True) -> None:
        try:
            super().update_config(merge=False)
            # With a built-in namespace Invoke loads no project file; use the current folder's.
            assert isinstance(self.config, TfrigConfig)
            self.config.load_folder_file(os.getcwd())
        except Exit:
            raise
        except Exception as exc:  # invalid YAML: one line naming the file, not the parser's traceback
            mark = getattr(exc, "problem_mark", None)
            file = getattr(mark, "name", None) or os.path.join(os.getcwd(), "invoke.yaml")
            line = f" line {mark.line + 1}" if mark is not None else ""
            raise Exit(f"{file}{line}: not valid YAML ({type(exc).__name__}); fix or move it.") from None
        if merge:
            self.config.merge()


program = TfrigProgram(
    namespace=ns,
    version=__version__,
    name="tfrig",
    binary="tfrig",
    executor_class=readahead.ChainExecutor,
    config_class=TfrigConfig,
)


def main() -> None:
    program.run()
