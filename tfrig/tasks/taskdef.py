"""The task decorator every namespace uses: Invoke's, with `-H` as the short flag of `--hosts`
(`-h` is Invoke's help)."""

from __future__ import annotations

import inspect
import re
import time
from typing import Any

import invoke
from invoke.exceptions import Exit
from invoke.tasks import Task

from tfrig.hosts.runner import current_task
from tfrig.ui import one_line

HOSTS_HELP = (
    "user@host:port, a VM tfrig made, or a glob of them; comma-separated "
    "(default: the run's target, tfrig.hosts, or here)"
)
JSON_HELP = "print only JSON on stdout"


def whole_number(flag: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """`value` (a flag's text or a setting) as a whole number in [low, high], else one line."""
    wanted = f"a whole number from {low} to {high}" if low is not None and high is not None else "a whole number"
    try:
        number = int(str(value).strip())
    except ValueError:
        raise Exit(f"--{flag} {str(value)[:40]!r}: give {wanted}.") from None
    if (low is not None and number < low) or (high is not None and number > high):
        raise Exit(f"--{flag} {str(value)[:40]}: out of range; give {wanted}.")
    return number


def port_number(flag: str, value: Any) -> int:
    """A TCP port, checked before anything listens or connects."""
    return whole_number(flag, value, 1, 65535)


# What to do with a local runtime's URL (tf.jupyter --colab, docker.run --colab), as Colab's menu names it.
COLAB_PASTE = "Colab: Connect > Connect to a local runtime, paste"


def wait_for_listener(port: int, seconds: float = 10) -> None:
    """Until something accepts on 127.0.0.1:`port`, so the URL printed next already works."""
    import socket

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)


def free_local_port(flag: str, port: int) -> None:
    """Refuse a local port another program holds, before a tunnel is opened on it: Fabric binds it
    in a thread of its own and lets the tunnel seem open, while the traffic (a Jupyter token too)
    would go to that program. Bound here without SO_REUSEADDR, as a second listener would be."""
    import socket

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise Exit(
                f"--{flag} {port}: 127.0.0.1:{port} here is taken ({exc.strerror}); "
                f"give a free one with --{flag}, or stop what listens on it."
            ) from None


# Names, as the tool that owns each takes them (the source beside each):
_NAMES = {
    # shadow-utils' useradd: a letter or _, then letters, digits, _ and -, up to 32 (useradd(8)).
    "user": (re.compile(r"^[a-z_][a-z0-9_-]{0,31}$"), "give a login name such as alice"),
    # Docker's validContainerNamePattern (daemon/names): [a-zA-Z0-9][a-zA-Z0-9_.-]+.
    "container": (re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"), "use letters, digits, _ . - (Docker's rule)"),
    # conda refuses / : # and spaces in env names (conda/base/constants.py,
    # PREFIX_NAME_DISALLOWED_CHARS, checked by context.validate_prefix_name); control characters too.
    "conda env": (re.compile(r"^[^/ :#\x00-\x1f]+$"), "conda takes no / : # or spaces in one"),
}


def checked_name(flag: str, kind: str, value: Any) -> str:
    """`value` as a name of `kind` (see _NAMES), else one line."""
    pattern, wanted = _NAMES[kind]
    text = str(value)
    if not pattern.match(text):
        raise Exit(f"--{flag} {text[:60]!r}: not a {kind} name; {wanted}.")
    return text


def checked_url(flag: str, value: Any, schemes: tuple[str, ...] = ("https", "http", "file")) -> str:
    """`value` as a URL of one of `schemes`, else one line."""
    from urllib.parse import urlsplit

    text = str(value)
    parts = urlsplit(text)
    if parts.scheme not in schemes or not (parts.netloc or parts.scheme == "file") or " " in text:
        raise Exit(f"--{flag} {text[:80]!r}: give a {' or '.join(s + '://' for s in schemes)} URL.")
    return text


class TfrigTask(Task):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Numbers arrive as text (see arg_opts): bad ones are one line here, not Invoke's traceback.
        defaults = inspect.signature(self.body).parameters
        for name, value in kwargs.items():
            default = defaults[name].default if name in defaults else None
            if isinstance(value, str) and type(default) is int:
                kwargs[name] = whole_number(name.replace("_", "-"), value)  # the task checks its range
        namespace = self.body.__module__.rsplit(".", 1)[-1]
        token = current_task.set(f"{namespace}.{self.name.rstrip('_').replace('_', '-')}")
        if args:  # args[0] is the task's Context
            from tfrig import settings
            from tfrig.hosts import readahead
            from tfrig.tasks import ns

            settings.settle(args[0].config, ns.configuration())
            readahead.started(args[0].config, self)
        from tfrig.gce.cloud import ApiError, describe

        try:
            return super().__call__(*args, **kwargs)
        except ApiError as exc:  # a Compute API error no task step handled: one line, never a traceback
            raise Exit(one_line(describe(exc))) from None
        except Exit as exc:  # whatever value a message shows, it stays one line
            if exc.message is None:
                raise
            raise Exit(one_line(str(exc.message)), code=exc.code) from None
        finally:
            current_task.reset(token)

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        # `-h` stays Invoke's help for every task.
        opts = super().arg_opts(name, default, taken_names | {"h"})
        if name == "hosts":
            opts["names"] = ["hosts", "H"]
        if opts.get("kind") is int:  # Invoke's own int() would end in a traceback on `--gpus abc`
            opts["kind"] = str
        return opts


def task(*args: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("klass", TfrigTask)
    return invoke.task(*args, **kwargs)
