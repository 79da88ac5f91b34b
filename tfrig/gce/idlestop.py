"""The idle-stop agent on a VM (scripts/idle-stop.sh and its systemd timer): its files, installing
it, turning it off."""

from __future__ import annotations

from typing import Any

from invoke.exceptions import Exit

from tfrig.hosts.host import SCRIPTS, Host

AGENT_PATH = "/usr/local/lib/tfrig/idle-stop"  # the service's ExecStart
CONF_PATH = "/etc/tfrig/idle-stop.conf"
UNITS = "/etc/systemd/system"
DEFAULT_THRESHOLD = 10  # percent GPU utilization; under it a GPU counts as idle


def window_seconds(text: str, flag: str = "after") -> int:
    """'30m', '2h', '1h30m' → seconds: at least 5 minutes (a VM must have time to be used after
    it boots), at most 30 days."""
    from tfrig.gce import plan as gceplan

    try:
        seconds = gceplan.duration_seconds(text, flag=flag, low=300, high=30 * 86400)
    except gceplan.Invalid as invalid:
        raise Exit(str(invalid)) from None
    return seconds


def conf_text(seconds: int, threshold: int) -> str:
    return f"IDLE_SECONDS={seconds}\nGPU_THRESHOLD={threshold}"


def files(seconds: int, threshold: int) -> dict[str, str]:
    """What the agent is on the VM: path → content."""
    return {
        AGENT_PATH: (SCRIPTS / "idle-stop.sh").read_text(),
        CONF_PATH: conf_text(seconds, threshold),
        f"{UNITS}/tfrig-idle-stop.service": (SCRIPTS / "tfrig-idle-stop.service").read_text(),
        f"{UNITS}/tfrig-idle-stop.timer": (SCRIPTS / "tfrig-idle-stop.timer").read_text(),
    }


def _needs_systemd(host: Host, what: str) -> None:
    if host.target.assumed is None and not host.fact("test -d /run/systemd/system").ok:
        raise Exit(f"[{host.label}] no systemd runs there, and the idle-stop agent is a systemd timer: {what}.")


def install(host: Host, seconds: int, threshold: int, shown: str) -> None:
    """Install the agent (again: the window starts anew) with this window and GPU threshold."""
    _needs_systemd(host, "stop the VM yourself with `inv gcp.stop` when it is done")
    made = files(seconds, threshold)
    host.script(
        "idle-stop-install.sh",
        {
            "AGENT": made[AGENT_PATH],
            "CONF": made[CONF_PATH],
            "SERVICE": made[f"{UNITS}/tfrig-idle-stop.service"],
            "TIMER": made[f"{UNITS}/tfrig-idle-stop.timer"],
        },
        what=f"install the idle-stop agent (power off after {shown} idle, GPUs under {threshold}%)",
    )
    host.say(f"idle stop set: powers off after {shown} with GPUs under {threshold}%, no SSH session, no tf.run")


def turn_off(host: Host) -> None:
    _needs_systemd(host, "there is no agent to turn off")
    host.script("idle-stop-install.sh", {"OFF": "1"}, what="turn the idle-stop agent off")
    host.say("idle stop off")


def record(host: Host, setting: str) -> None:
    """Note the setting in the VM's state record, which gcp.list shows."""
    from tfrig import state

    vm: dict[str, Any] | None = host.target.vm
    if vm is not None and not host.dry:
        state.record_vm(vm["name"], idle_stop=setting)
