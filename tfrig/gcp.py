"""gcp: Compute Engine GPU VMs that tfrig creates, finds, stops and deletes."""

from __future__ import annotations

from invoke import Collection

from tfrig import state
from tfrig.taskdef import task
from tfrig.ui import print_json, table


@task(help={"json": "print only JSON on stdout"})
def list_(c, json=False):
    """List the VMs tfrig created (from its state file)."""
    records = sorted(state.vms().values(), key=lambda r: r["name"])
    if json:
        print_json(records)
        return
    if not records:
        print("tfrig has created no VMs that still exist.")
        return
    table(
        ["name", "project", "zone", "gpu", "address"],
        [(r["name"], r.get("project"), r.get("zone"), r.get("gpu"), r.get("address")) for r in records],
    )


ns = Collection("gcp")
ns.add_task(list_, name="list")
ns.configure({"gcp": {"project": "", "zone": "", "region": "", "endpoint": "", "credentials": ""}})
