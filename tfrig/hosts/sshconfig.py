"""The user's OpenSSH settings for one host, as OpenSSH itself resolves them.

paramiko's parser (which Fabric uses) ignores `Include` and much of `Match`, so aliases from an
included file don't resolve. Where `ssh` is installed, `ssh -G HOST` is the authority: it prints
every option after Include, Match and tokens. Its output holds the defaults too, so only what
differs from `ssh -F /dev/null -G HOST` (no config at all) is taken, and only the options tfrig's
connection uses. OpenSSH reads the home folder from the password database, Python from $HOME: where
they differ (sudo -E, a test), the config under $HOME is named with -F, as tfrig's other files are.
"""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from invoke.exceptions import Exit

# What Fabric's Connection and tfrig.hosts.hostkeys read from a host's ssh config.
USED = (
    "hostname",
    "user",
    "port",
    "identityfile",
    "proxycommand",
    "proxyjump",
    "forwardagent",
    "connecttimeout",
    "userknownhostsfile",
)


def _options(ssh: str, host: str, config: list[str]) -> dict[str, list[str]]:
    try:
        result = subprocess.run(
            [ssh, *config, "-G", "--", host],
            capture_output=True,
            text=True,
            errors="replace",
            stdin=subprocess.DEVNULL,
            timeout=60,  # a Match exec runs the user's command
        )
    except subprocess.TimeoutExpired:
        raise Exit(f"`ssh -G {host}` did not answer in 60 s: check the Match exec lines of your ssh config.") from None
    if result.returncode != 0:
        why = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
        raise Exit(f"your ssh config could not be read: {why}")
    options: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        key, _, value = line.partition(" ")
        options.setdefault(key.lower(), []).append(value)
    return options


@functools.cache
def resolved(host: str) -> str | None:
    """The host's settings from the user's ssh config as a paramiko config text (one `Host *`
    block), or None where ssh is not installed (paramiko then reads the files itself). Read once
    per host and run: the SSH wait and each task connect again, and ssh -G runs twice each time."""
    ssh = shutil.which("ssh")
    if ssh is None:
        return None
    user_config = Path(os.path.expanduser("~/.ssh/config"))
    config: list[str] = []
    if os.path.expanduser("~") != pwd.getpwuid(os.getuid()).pw_dir:
        config = ["-F", str(user_config) if user_config.is_file() else "/dev/null"]
    set_here, defaults = _options(ssh, host, config), _options(ssh, host, ["-F", "/dev/null"])
    lines = ["Host *"]
    for key in USED:
        values = set_here.get(key, [])
        if values == defaults.get(key, []) or values in ([], ["none"]):
            continue
        lines += [f"    {key} {value}" for value in values]
    return "\n".join(lines) + "\n"
