"""tfrig: composable Invoke tasks from nothing to TensorFlow on a verified GPU."""

__version__ = "0.1.0"
