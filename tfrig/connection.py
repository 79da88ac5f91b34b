"""The run's SSH connection to a host: Fabric's, keeping facts read ahead for later tasks
(tfrig.readahead) until anything else runs on it. Imported only when a run connects somewhere, so
Fabric and paramiko load only then."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fabric import Connection

if TYPE_CHECKING:
    from tfrig.host import Fact


class ReadAheadConnection(Connection):
    def __init__(self, *args: Any, run_config: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Context attributes are config keys unless set with _set. Fabric keeps a copy of the
        # config; the chain is kept by the run's own.
        read_ahead: dict[str, tuple[int, Fact]] = {}  # command: (chain position that read it, fact)
        self._set(run_config=run_config, read_ahead=read_ahead)

    def keep_read_ahead(self, facts: Mapping[str, Fact], position: int) -> None:
        """Keep what the task at `position` of the chain read, for the tasks after it."""
        self.read_ahead.update({command: (position, fact) for command, fact in facts.items()})

    def take_read_ahead(self, commands: Mapping[str, str], position: int) -> dict[str, Fact] | None:
        """Each probe's fact if an earlier task read them all and nothing ran since; used once."""
        found: dict[str, Fact] = {}
        for name, command in commands.items():
            kept = self.read_ahead.get(command)
            if kept is None or kept[0] >= position:
                return None
            found[name] = kept[1]
        for command in commands.values():
            self.read_ahead.pop(command, None)
        return found

    def _forget(self, kwargs: dict[str, Any]) -> None:
        if not kwargs.pop("read_only", False):
            self.read_ahead.clear()

    def run(self, command: str, **kwargs: Any) -> Any:
        self._forget(kwargs)
        return super().run(command, **kwargs)

    def sudo(self, command: str, **kwargs: Any) -> Any:
        self._forget(kwargs)
        return super().sudo(command, **kwargs)

    def shell(self, **kwargs: Any) -> Any:
        self.read_ahead.clear()
        return super().shell(**kwargs)

    def close(self) -> None:  # a new login (new groups) may read differently
        self.read_ahead.clear()
        super().close()

    def sftp(self) -> Any:  # put and get go through here
        self.read_ahead.clear()
        return super().sftp()
