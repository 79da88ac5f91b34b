"""The name README gave before tfrig's layout had folders (`tasks: {executor_class:
tfrig.readahead.ChainExecutor}` in an invoke.yaml); the executor lives in tfrig.hosts.readahead."""

from tfrig.hosts.readahead import ChainExecutor

__all__ = ["ChainExecutor"]
