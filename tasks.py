"""Root collection for `inv` in this repository: the same tasks the `tfrig` command serves."""

from tfrig.tasks import ns

__all__ = ["ns"]
