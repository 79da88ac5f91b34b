"""driver: the NVIDIA driver on a target: its state, install and removal."""

from __future__ import annotations

from typing import Any

from invoke import Collection

from tfrig.host import Host
from tfrig.runner import on_targets
from tfrig.taskdef import task

STATUS_PROBES = {
    "module": "cat /sys/module/nvidia/version",
    "proc": "head -n1 /proc/driver/nvidia/version",
    "smi": "nvidia-smi --query-gpu=driver_version --format=csv,noheader",
    "kernel": "uname -r",
    "dkms": "dkms status nvidia",
}


def driver_state(facts: dict[str, Any]) -> dict[str, Any]:
    """What the probes say: loaded module version, user-space version, DKMS, kernel."""
    module = facts["module"].out.strip() if facts["module"].ok else None
    userspace = facts["smi"].out.strip().splitlines()[0] if facts["smi"].ok and facts["smi"].out.strip() else None
    return {
        "loaded": module,
        "installed": userspace or module,
        "kernel": facts["kernel"].out.strip(),
        "dkms": facts["dkms"].out.strip() if facts["dkms"].ok else None,
        "mismatch": bool(module and userspace and module != userspace),
    }


@task(
    help={
        "hosts": "user@host:port[,...] (default: the run's target, tfrig.hosts, or here)",
        "json": "print only JSON on stdout",
    }
)
def status(c, hosts=None, json=False):
    """Show the installed and loaded NVIDIA driver, DKMS state and kernel."""

    def work(host: Host) -> dict[str, Any]:
        state = driver_state(host.probe(STATUS_PROBES))
        if not json:
            if state["loaded"]:
                host.say(f"driver {state['loaded']} loaded (kernel {state['kernel']})")
            else:
                host.say(f"no NVIDIA driver loaded (kernel {state['kernel']})")
            if state["mismatch"]:
                host.say(f"user-space {state['installed']} differs from the loaded module: reboot")
            if state["dkms"]:
                host.say(f"dkms: {state['dkms']}")
        return state

    on_targets(c, work, hosts=hosts, json_out=json, summary=lambda r: r["loaded"] or "no driver")


ns = Collection("driver", status)
ns.configure({"driver": {}})
