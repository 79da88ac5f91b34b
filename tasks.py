"""Root collection for `inv` in this repository: the same tasks the `tfrig` command serves."""

from tfrig import settings
from tfrig.tasks import ns

# Invoke casts INVOKE_* variables before any task runs (an int setting given "soon" ends in its
# traceback). Loading this collection comes first: a wrong one is refused here in one line.
settings.checked_environment(ns.configuration())

__all__ = ["ns"]
