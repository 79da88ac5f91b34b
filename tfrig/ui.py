"""Talking to the user: questions, tables, JSON. Rich is imported only where a table is drawn."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from invoke.exceptions import Exit

LONG_WORD = 200  # characters without a space: past this, a message shows a value cut


def one_line(message: str) -> str:
    """A message as the one line it must be: control characters escaped (a newline in a value
    can't start a second line) and any run of over LONG_WORD characters without a space (a
    100,000-character value) cut, saying how long it was."""
    escaped = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in message)
    return re.sub(rf"\S{{{LONG_WORD + 1},}}", lambda long: f"{long[0][:80]}... ({len(long[0])} characters)", escaped)


def info_stream(json_out: bool) -> TextIO:
    """Human lines go to stderr when stdout must carry only JSON."""
    return sys.stderr if json_out else sys.stdout


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
    sys.stdout.flush()


def confirm(question: str, yes: bool) -> None:
    """Ask before destroying something; `--yes` skips, no terminal without `--yes` stops."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise Exit(f"{question} Not asking without a terminal: pass --yes to go ahead.")
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise Exit("Nothing changed.", code=1)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO | None = None) -> None:
    """A table: drawn with rich on a terminal, plain tab-separated columns elsewhere."""
    out = out or sys.stdout
    cells = [["" if value is None else str(value) for value in row] for row in rows]
    if out.isatty():
        from rich.console import Console
        from rich.table import Table

        drawn = Table(*headers)
        for row in cells:
            drawn.add_row(*row)
        Console(file=out).print(drawn)
        return
    widths = [max([len(str(h)), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]  # rows may be none
    for row in [list(headers), *cells]:
        print(
            "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip(),
            file=out,
        )


def refuse_special_file(path: Path, what: str, devices: bool = False) -> None:
    """One line for a FIFO or socket (and a device unless `devices`) named where tfrig reads a file:
    opening a FIFO no one writes to waits for good. A missing path is left to the caller."""
    import stat

    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode) or (devices and (stat.S_ISCHR(mode) or stat.S_ISBLK(mode))):
        return
    kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    raise Exit(f"{what} {path} is {kind}, not a file; name a regular file.")
