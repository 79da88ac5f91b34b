"""Facts as a host gives them: one shell script runs every read-only probe, and its output splits
back into one Fact per probe. Plain text in, plain data out; the planners read these."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

_FACT_MARK = "@@tfrig-fact"
_RC_MARK = "@@tfrig-rc"


@dataclass(frozen=True)
class Fact:
    """What one read-only probe printed (stdout and stderr together) and its exit code."""

    rc: int
    out: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


def probe_script(commands: Mapping[str, str]) -> str:
    """One shell script that runs every probe and marks where each one's output begins and ends."""
    # Admin tools (dkms, modprobe) live in sbin, which a non-root user's PATH often lacks.
    parts = ['PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"']
    for name, command in commands.items():
        parts.append(
            f"printf '\\n{_FACT_MARK} %s\\n' {shlex.quote(name)}; "
            f"( {command} ) </dev/null 2>&1; "
            f"printf '\\n{_RC_MARK} %s %d\\n' {shlex.quote(name)} $?"
        )
    return "; ".join(parts)


def parse_probe(output: str) -> dict[str, Fact]:
    """Split the output of `probe_script` back into one Fact per probe."""
    facts: dict[str, Fact] = {}
    pattern = re.compile(
        rf"^{_FACT_MARK} (?P<name>\S+)\n(?P<out>.*?)\n?{_RC_MARK} (?P=name) (?P<rc>\d+)$",
        re.S | re.M,
    )
    for match in pattern.finditer(output):
        facts[match["name"]] = Fact(rc=int(match["rc"]), out=match["out"].strip("\n"))
    return facts
