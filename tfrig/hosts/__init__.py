"""Reaching a machine: targets, host facts and changes, the SSH connection, read-ahead, host keys,
fan-out over targets, and progress."""
