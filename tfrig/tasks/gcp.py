"""gcp: Compute Engine GPU VMs: created where the GPU and the quota are, found, stopped, deleted.

The tasks: flags and settings in, one line or JSON out. The work is in tfrig.gce.provision (create,
failover, waits, cleanup), tfrig.gce.config (where and as whom) and tfrig.gce.access (ssh, copy);
google-cloud-compute is imported only inside tfrig.gce.cloud.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from invoke import Collection
from invoke.exceptions import Exit

from tfrig import state
from tfrig.gce import billing, idlestop
from tfrig.gce import plan as gceplan
from tfrig.gce.access import copy_files, replace_block, ssh_argv, ssh_config_block, ssh_options
from tfrig.gce.config import (
    baked_image_facts,
    check_image_gpu,
    fresh_image_facts,
    image_source,
    local_user,
    machine_image,
    owner,
    settings,
    ssh_key,
    vm_user,
)
from tfrig.gce.provision import (
    CreateFailed,
    CreateRequest,
    Login,
    Timing,
    adopt,
    cost_since_start,
    create_vms,
    delete_checked,
    delete_vm,
    finish,
    forget,
    instance_body,
    interrupted_message,
    pin_host_keys,
    preflight,
    price_line,
    reconcile,
    renew_oslogin_key,
    rounded,
    wait_running,
    wait_ssh,
)
from tfrig.hosts import targets
from tfrig.tasks.taskdef import JSON_HELP, free_local_port, port_number, task, whole_number
from tfrig.ui import confirm, info_stream, print_json, refuse_special_file, table

PROJECT_HELP = (
    "Google Cloud project (default gcp.project, GOOGLE_CLOUD_PROJECT, CLOUDSDK_CORE_PROJECT, gcloud's config)"
)
NAME_HELP = "VM name (default gcp.name, else tfrig-<user>)"


# --- settings -------------------------------------------------------------------------------------


CREATE_HELP = {
    "name": NAME_HELP,
    "gpu": "GPU type, e.g. nvidia-tesla-t4, nvidia-l4 (default gcp.gpu)",
    "gpus": "GPUs per VM (default 1)",
    "machine_type": "machine type (default: the smallest that fits: n1-standard-4 per T4, g2-standard-4 per L4, ...)",
    "zone": "use only this zone (default: where the GPU and quota are, cheapest first; gcp.zone or gcloud's first)",
    "region": "search only this region",
    "image": "auto (default: accelerator on A3, A4, A4X; ubuntu-24.04 elsewhere), ubuntu-24.04, ubuntu-22.04, "
    "debian-12, accelerator (Ubuntu's, with NVIDIA's R580 driver), dlvm (Deep Learning VM with the driver), "
    "projects/...",
    "image_family": "your own image family (one gcp.bake made): the VM starts from its newest image",
    "disk_gb": "boot disk size in GB (default 100)",
    "spot": "a Spot VM (cheaper, can be preempted; uses PREEMPTIBLE_ quota where the project has it)",
    "max_run_duration": "stop or delete the VM after this long, e.g. 8h (GCE enforces it, so a forgotten VM stops)",
    "on_termination": "stop (default; delete for --flex-start) or delete, for --spot, --flex-start and "
    "--max-run-duration",
    "flex_start": "a Flex-start VM (Dynamic Workload Scheduler: cheaper scarce GPUs, queued until there is "
    "capacity, runs at most 7 days; A2, A3, A4, G2)",
    "wait": "how long a --flex-start request waits for capacity, 1m to 2h (default 2h)",
    "reservation": "consume this reservation: NAME, or projects/P/reservations/NAME for a shared one "
    "(the VM goes to its zone; `inv gcp.reservations` lists them)",
    "count": "make N VMs, named NAME-1..NAME-N, spread over zones if one can't hold them all",
    "ssh_wait": "wait until SSH answers (default yes; --no-ssh-wait for scripts that connect later)",
    "idle_stop": "power the VM off by itself once its GPUs, SSH and tf.run have been idle this long, e.g. 30m",
    "network": "the VPC network: a name, or projects/P/global/networks/N (default gcp.network, else default)",
    "subnet": "a subnet's name in the region tfrig creates in, or projects/HOST/regions/R/subnetworks/S "
    "(a shared VPC's: the create stays in R)",
    "external_ip": "give the VM an external IP (default yes; --no-external-ip where a policy forbids one: "
    "then set gcp.ssh_via internal or iap)",
    "tags": "network tags, comma-separated (firewall rules may target them)",
    "service_account": "the VM's service account: an email, default (the project's default compute one; "
    "default gcp.service_account) or none",
    "scopes": "its OAuth scopes, comma-separated: cloud-platform (default: IAM roles decide), storage-ro, ...",
    "secure_boot": "a Shielded VM with Secure Boot, vTPM and integrity monitoring (default gcp.secure_boot); "
    "gpu.setup then installs Ubuntu's signed driver modules (Debian has none)",
    "project": PROJECT_HELP,
    "yes": "don't ask before creating (the price is still shown); tfrig.yes does the same",
    "json": JSON_HELP,
}


@task(help=CREATE_HELP)
def create(
    c,
    name=None,
    gpu=None,
    gpus=1,
    machine_type=None,
    zone=None,
    region=None,
    image=None,
    image_family=None,
    disk_gb=None,
    spot=False,
    max_run_duration=None,
    on_termination=None,
    flex_start=False,
    wait=None,
    reservation=None,
    count=1,
    ssh_wait=True,
    idle_stop=None,
    network=None,
    subnet=None,
    external_ip=True,
    tags=None,
    service_account=None,
    scopes=None,
    secure_boot=False,
    project=None,
    yes=False,
    json=False,
):
    """Create a GPU VM where the GPU and the quota are, wait for SSH, and make it the run's target.
    It shows the hourly price first, and asks on a terminal (--yes or tfrig.yes answers)."""
    gcp = c.config.gcp
    out = info_stream(json)
    dry = bool(c.config.run.dry)
    try:
        gpu_type = gceplan.gpu_type(gpu or gcp.gpu)
        gpus, count = whole_number("gpus", gpus, 1, 16), whole_number("count", count, 1, 64)
        chosen_machine = gceplan.machine_type(gpu_type, gpus, machine_type or gcp.machine_type or None)
        base = gceplan.check_name(name or gcp.name or gceplan.default_name(local_user()))
        names = [base] if count == 1 else [gceplan.check_name(f"{base}-{i}") for i in range(1, count + 1)]
        disk = whole_number("disk-gb", disk_gb or gcp.disk_gb, 1, 65536)  # a boot disk: at most 64 TB
        if disk < 10:
            raise gceplan.Invalid(
                f"--disk-gb {disk}: boot disks need at least 10 GB (100 leaves room for CUDA and TensorFlow)."
            )
        run_seconds = gceplan.duration_seconds(max_run_duration) if max_run_duration else None
        termination = on_termination or ("delete" if flex_start else "stop")
        if termination not in ("stop", "delete"):
            raise gceplan.Invalid(f"--on-termination {termination}: choose stop or delete.")
        flex_wait = None
        if wait and not flex_start:
            raise gceplan.Invalid("--wait is how long a --flex-start request waits for capacity: add --flex-start.")
        if flex_start:
            if spot or reservation:
                raise gceplan.Invalid(
                    "--flex-start is a provisioning model of its own: leave out --spot and --reservation."
                )
            flex_wait = gceplan.duration_seconds(wait or "2h", "wait", 60, gceplan.FLEX_MAX_WAIT)
            run_seconds = gceplan.check_flex(run_seconds, flex_wait)
        if reservation:
            gceplan.reservation_ref(reservation)
        gceplan.check_sold(chosen_machine, spot, flex_start, bool(reservation))
        arch = gceplan.family(chosen_machine).arch
        if image_family:
            from tfrig.gce import bake as baking

            if image:
                raise gceplan.Invalid("give --image or --image-family, not both.")
            try:
                baking.check_family(image_family)
            except baking.Invalid as invalid:
                raise gceplan.Invalid(str(invalid).replace("--family", "--image-family")) from None
        chosen_image = machine_image(image or gcp.image, chosen_machine)
        source_image, image_metadata = image_source(c, chosen_image, arch)
        gceplan.check_image(chosen_machine, source_image)
        check_image_gpu(chosen_image, gpu_type)
        where = gceplan.network_choice(
            network or gcp.network, subnet or gcp.subnet, external_ip and bool(gcp.external_ip), tags or gcp.tags
        )
        if where.region and zone and gceplan.region_of(zone) != where.region:
            raise gceplan.Invalid(f"--zone {zone} is not in {where.region}, the region of --subnet {subnet}.")
        account = service_account or gcp.service_account
        accounts = gceplan.service_accounts(account, scopes if scopes or account == "none" else gcp.scopes)
    except gceplan.Invalid as invalid:
        raise Exit(str(invalid)) from None
    from tfrig.settings import setting_text

    ssh_via = setting_text(c.config, "gcp", "ssh_via")
    if not where.external_ip and ssh_via == "external":
        raise Exit(
            "--no-external-ip: tfrig would have no address to reach the VM at over SSH; set gcp.ssh_via: iap (SSH "
            "through IAP's tunnel, INVOKE_GCP_SSH_VIA=iap), or internal when this machine is inside the VPC or on a "
            "VPN to it."
        )
    if ssh_via == "iap" and ssh_wait and not targets.has_gcloud():
        raise Exit(f"gcp.ssh_via: iap {targets.GCLOUD_MISSING}")
    idle_seconds = idlestop.window_seconds(idle_stop, "idle-stop") if idle_stop else None
    if idle_stop and not ssh_wait:
        raise Exit(
            "--idle-stop installs its agent over SSH: leave out --no-ssh-wait, or set it later with gcp.idle-stop."
        )
    timing = Timing.of(c.config)  # a bad setting is refused before anything is made (the SSH key)
    cfg = settings(c, project, zone, region or (None if zone else where.region))
    user = vm_user()
    key, public_key = ssh_key(c, dry)
    cloud = cfg.cloud()
    baked_labels = None
    if image_family:  # the project's own family, whose newest image's labels say what is on it
        source_image, image_metadata = f"projects/{cfg.project}/global/images/family/{image_family}", {}
        newest = cloud.image_from_family(image_family)
        if newest is None:
            raise Exit(
                f"--image-family {image_family}: project {cfg.project} has no image in that family; "
                "`inv gcp.images` lists yours, `inv gcp.bake --family NAME` makes one."
            )
        baked_labels = newest.labels
    request = CreateRequest(
        names=names,
        gpu=gpu_type,
        gpus=gpus,
        machine_type=chosen_machine,
        source_image=source_image,
        disk_gb=disk,
        spot=spot,
        max_run_seconds=run_seconds,
        on_termination=termination,
        # enable-guest-attributes: the guest agent publishes the VM's SSH host keys there at first
        # boot, so tfrig pins them instead of trusting the first key it meets (tfrig.hosts.hostkeys).
        # The login (ssh-keys, or OS Login's enable-oslogin) is the pre-flight's (choose_login).
        metadata={"enable-guest-attributes": "TRUE", **image_metadata},
        owner=owner(cloud),
        network=where,
        ssh_via=ssh_via,
        service_accounts=accounts,
        secure_boot=bool(secure_boot or gcp.secure_boot),
        login=Login(setting_text(c.config, "gcp", "ssh_mode"), public_key, user),
        flex_wait=flex_wait,
        reservation=reservation or None,
    )
    # Each VM is held from the lookup to its record, so that a second create of the name waits and
    # then adopts it, and a delete waits for the insert (tfrig.state.vm_operation).
    held = contextlib.ExitStack()
    for vm_name in [] if dry else sorted(names):
        held.enter_context(state.vm_operation(vm_name, "gcp.create", timing.operation + timing.running, out))
    with held:
        records, to_create = adopt(c, cloud, cfg, names, key, user, request.owner, timing, out)

        if to_create:
            zones = request.zones = preflight(cloud, cfg, request, len(to_create), ssh_wait, out, dry)
            price = price_line(request, len(to_create), zones[0])
            print(price, file=out)
            if request.gpu.note:
                print(f"note: {request.gpu.note}", file=out)
            if dry:
                import json as json_module

                for vm_name in to_create:
                    print(f"would insert into {zones[0]} (then {', '.join(zones[1:4]) or 'no other zone'}):", file=out)
                    print(json_module.dumps(instance_body(request, vm_name, zones[0]), indent=2), file=out)
                # The rest of the chain plans against these VMs, their facts assumed from a fresh image.
                facts = (
                    baked_image_facts("ubuntu-24.04", baked_labels, gpu_type, user)
                    if baked_labels is not None
                    else fresh_image_facts(chosen_image, gpu_type, user)
                )
                planned = [targets.Target(label=n, user=user, assumed=dict(facts)) for n in to_create]
                targets.carry(c.config, [targets.vm_target(r) for r in records] + planned)
                if idle_stop:
                    print(f"would install the idle-stop agent on {', '.join(to_create)} ({idle_stop})", file=out)
                return
            confirm(f"{price[0].upper()}{price[1:]}; go ahead?", yes or c.config.tfrig.yes)
            try:
                records += create_vms(cloud, cfg, request, to_create, key, user, timing, out)
            except CreateFailed as failed:
                made = ", ".join([r["name"] for r in records] + failed.made)
                raise Exit(f"{failed}" + (f"; created so far: {made}" if made else "")) from None
            except KeyboardInterrupt:
                raise Exit(interrupted_message(names), code=130) from None
    if ssh_wait and not dry:
        try:
            for record in records:
                deadline = time.monotonic() + timing.ssh
                pin_host_keys(c, cloud, record, deadline, timing.poll, out)
                wait_ssh(c, record, max(deadline - time.monotonic(), 1.0), out)
        except KeyboardInterrupt:
            raise Exit(interrupted_message(names), code=130) from None
    targets.carry(c.config, [targets.vm_target(r) for r in records])
    if idle_seconds is not None and idle_stop:
        records = _set_idle_stop(c, records, idle_seconds, idle_stop, out)
    if json:
        print_json(records[0] if len(records) == 1 else {"vms": records})
    else:
        for record in records:
            print(
                f"{record['name']}: {record['zone']}, {targets.vm_address(record)}; "
                "next: inv gpu.setup tf.install (or later with --name)"
            )


def _set_idle_stop(c: Any, records: list[dict[str, Any]], seconds: int, shown: str, out: Any) -> list[dict[str, Any]]:
    """The idle-stop agent on each new VM; where it can't be set, the VM stays (running, recorded)
    and the run ends saying so."""
    from tfrig.hosts.host import Host, connect, describe_error

    failed = []
    for record in records:
        target = targets.vm_target(record)
        host = Host(connect(c, target), target, out=out)
        try:
            idlestop.install(host, seconds, idlestop.DEFAULT_THRESHOLD, shown)
            idlestop.record(host, shown)
        except Exception as exc:
            failed.append(record["name"])
            reason = describe_error(exc).removeprefix(f"[{host.label}] ")
            print(f"[{record['name']}] idle stop not set: {reason}", file=sys.stderr)
    if failed:
        names = ",".join(failed)
        raise Exit(
            f"idle stop not set on {len(failed)} of {len(records)} VM(s), which run and are recorded; "
            f"`inv gcp.stop --name {names}` when done."
        )
    return [state.find_vm(r["name"]) or r for r in records]


@task(
    help={
        "after": "power off once idle this long, e.g. 30m or 2h (5 minutes to 30 days)",
        "off": "turn the agent off (the VM then runs until you stop it)",
        "threshold": f"GPU utilization (%) under which a GPU counts as idle (default {idlestop.DEFAULT_THRESHOLD})",
        "name": NAME_HELP + "; several comma-separated, or a glob",
        "json": JSON_HELP,
    }
)
def idle_stop(c, after=None, off=False, threshold=idlestop.DEFAULT_THRESHOLD, name=None, json=False):
    """Make a VM power itself off (stop billing for GPUs and vCPUs) once its GPUs, SSH and tf.run are idle."""
    from tfrig.hosts.runner import on_targets

    if bool(after) == bool(off):
        raise Exit("Give --after (e.g. --after 30m) to set idle stop, or --off to turn it off.")
    seconds = idlestop.window_seconds(after) if after else 0
    percent = whole_number("threshold", threshold, 1, 100)

    def work(host: Any) -> dict[str, Any]:
        if off:
            idlestop.turn_off(host)
        else:
            idlestop.install(host, seconds, percent, after)
        idlestop.record(host, after or "off")
        return {"idle_stop": after or "off", "threshold": None if off else percent}

    on_targets(c, work, hosts=_vm_hosts(c, name), json_out=json, summary=lambda r: f"idle stop {r['idle_stop']}")


# --- the other lifecycle tasks ----------------------------------------------------------------------


def _record_or_exit(name: str | None, c: Any) -> dict[str, Any]:
    chosen = name or c.config.gcp.name or gceplan.default_name(local_user())
    record = state.find_vm(chosen)
    if record is None:
        raise Exit(f"No VM named {chosen} in tfrig's state; `inv gcp.list` shows the ones it knows.")
    return record


@task(help={"project": PROJECT_HELP, "json": JSON_HELP})
def list_(c, project=None, json=False):
    """List tfrig's VMs: name, zone, status, GPU, address (live from the API where it answers)."""
    records = {r["name"]: r for r in state.vms().values()}
    live: dict[str, Any] = {}
    preempted: set[str] = set()
    answered = False
    me = None
    try:
        cloud = settings(c, project).cloud()
        live = {vm.name: vm for vm in cloud.vms()}
        me = owner(cloud)
        answered = True
        if any(vm.gpu for vm in live.values()):
            billing.load(cloud)
        if any(vm.spot and vm.status == "TERMINATED" for vm in live.values()):
            # Shown as PREEMPTED (tfrig's state keeps the API's status): Compute Engine took it back.
            preempted = {n for n in cloud.preempted() if n in live and live[n].spot and live[n].status == "TERMINATED"}
    except Exit:
        if project:
            raise
    if answered and not c.config.run.dry:
        records = reconcile(records, live, info_stream(json))
    rows = []
    for vm_name in sorted(set(records) | set(live)):
        record, vm = records.get(vm_name, {}), live.get(vm_name)
        rows.append(
            {
                "name": vm_name,
                "zone": vm.zone if vm else record.get("zone"),
                "status": ("PREEMPTED" if vm_name in preempted else vm.status)
                if vm
                else ("NOT FOUND" if answered else record.get("status")),
                "gpu": (f"{vm.gpus} x {vm.gpu}" if vm and vm.gpu else None)
                or (f"{record.get('gpus')} x {record.get('gpu')}" if record.get("gpu") else None),
                "address": (vm.address if vm else None) or record.get("address"),
                "in_state": bool(record),
                "owner": vm.owner if vm else None,
                "yours": bool(record) or (vm is not None and vm.owner == me),
                "idle_stop": record.get("idle_stop") or "off",
                "uptime_hours": rounded(vm.uptime_hours() if vm else None, 2),
                "hourly_usd": rounded(vm.hourly() if vm else None, 2),
                "cost_since_start_usd": rounded(cost_since_start(vm) if vm else None, 2),
            }
        )
    if json:
        print_json(rows)
    elif not rows:
        print("tfrig has created no VMs that still exist.")
    else:
        from tfrig.gce import prices as gceprice

        table(
            ["name", "zone", "status", "gpu", "address", "idle stop", "up", "cost so far", "owner"],
            [
                (
                    r["name"],
                    r["zone"],
                    r["status"],
                    r["gpu"],
                    r["address"],
                    r["idle_stop"],
                    f"{r['uptime_hours']:.1f} h" if r["uptime_hours"] is not None else "",
                    f"about ${r['cost_since_start_usd']:.2f}" if r["cost_since_start_usd"] is not None else "",
                    "you" if r["yours"] else (r["owner"] or "not labelled"),
                )
                for r in rows
            ],
        )
        if any(r["cost_since_start_usd"] is not None for r in rows):
            print(f"costs are estimates since each VM last started, disks not included (prices: {gceprice.as_of()})")


@contextlib.contextmanager
def _holding(c: Any, name: str | None, action: str, out: Any) -> Iterator[dict[str, Any]]:
    """The VM's record, read again once no other tfrig run acts on the VM (a create in flight is
    waited for, as long as a create may take), and held for `action` until the block ends."""
    chosen = _record_or_exit(name, c)["name"]
    if c.config.run.dry:
        yield _record_or_exit(chosen, c)
        return
    timing = Timing.of(c.config)
    with state.vm_operation(chosen, action, timing.operation + timing.running, out):
        yield _record_or_exit(chosen, c)


@task(help={"name": NAME_HELP, "json": JSON_HELP})
def start(c, name=None, json=False):
    """Start a stopped VM (its address may change) and make it the run's target."""
    record = _start(c, name, info_stream(json))
    if record is None:
        return
    if json:
        print_json(record)
    else:
        print(f"started {record['name']} at {targets.vm_address(record)}")


def _start(c: Any, name: str | None, out: Any) -> dict[str, Any] | None:
    """Start the VM, wait until it runs, keep its host keys if its address changed, and make it
    the run's target; its record (None under --dry)."""
    with _holding(c, name, "gcp.start", out) as record:
        cloud = settings(c, record.get("project"), record.get("zone")).cloud()
        if c.config.run.dry:
            print(f"would start {record['name']} in {record['zone']}")
            return None
        no_room = (
            f"{record['zone']} has no capacity for {record['name']} now (a preempted Spot VM comes back only where "
            f"there is room): start it again later, or `inv gcp.delete --name {record['name']}` and create one "
            "elsewhere"
        )
        operation = cloud.start(record["zone"], record["name"])
        finish(c, cloud, record["zone"], operation, f"starting {record['name']}", no_room=no_room)
        timing = Timing.of(c.config)
        external = record.get("ssh_via", "external") == "external"
        vm = wait_running(cloud, record["zone"], record["name"], timing.running, timing.poll, external)
        from tfrig.hosts import hostkeys

        before = targets.vm_address(record)
        earlier = hostkeys.pinned(hostkeys.vm_host_name(record)) if before else []
        record = state.record_vm(
            record["name"], address=vm.address, internal_address=vm.internal_address, status=vm.status
        )
        if before and before != targets.vm_address(record):  # a new address may have been another VM's
            hostkeys.unpin(hostkeys.host_name(before, record.get("port")))
        if earlier:  # the same VM and disk, maybe at a new address: its keys move with it
            hostkeys.pin(hostkeys.vm_host_name(record), earlier)
    targets.carry(c.config, [targets.vm_target(record)])
    return record


@task(help={"name": NAME_HELP, "json": JSON_HELP})
def stop(c, name=None, json=False):
    """Stop a VM: GPUs and vCPUs stop billing; its disk is still billed until you delete it."""
    with _holding(c, name, "gcp.stop", info_stream(json)) as record:
        cloud = settings(c, record.get("project"), record.get("zone")).cloud()
        if c.config.run.dry:
            print(f"would stop {record['name']} in {record['zone']}")
            return
        finish(c, cloud, record["zone"], cloud.stop(record["zone"], record["name"]), f"stopping {record['name']}")
        record = state.record_vm(record["name"], status="TERMINATED")
    if json:
        print_json(record)
    else:
        print(f"stopped {record['name']}: its disk is still billed; `inv gcp.delete --name {record['name']}` ends that")


@task(help={"name": NAME_HELP, "yes": "don't ask", "json": JSON_HELP})
def delete(c, name=None, yes=False, json=False):
    """Delete a VM and its boot disk (asks first; --yes for scripts)."""
    record = _record_or_exit(name, c)
    if c.config.run.dry:
        print(f"would delete {record['name']} in {record['zone']} and its disk")
        return
    confirm(f"Delete VM {record['name']} in {record['zone']} and its disk?", yes or c.config.tfrig.yes)
    with _holding(c, record["name"], "gcp.delete", info_stream(json)) as record:
        delete_vm(c, record, info_stream(json))
    if json:
        print_json({"deleted": record["name"], "zone": record["zone"]})


# What gcp.bake reads on a running VM for its image's labels (one round trip): the loaded NVIDIA
# module, Docker's version, and TensorFlow (read through tfrig.steps.tfenv's env facts).
_BAKE_FACTS = {
    "driver": "cat /sys/module/nvidia/version",
    "docker": "command -v docker >/dev/null && docker --version | sed -n 's/^Docker version \\([^,]*\\).*/\\1/p'",
}


def _what_is_on(c: Any, record: dict[str, Any], out: Any) -> dict[str, str | None]:
    """The driver, TensorFlow and Docker versions on a running VM (None: not there)."""
    from tfrig.hosts.host import Host, connect
    from tfrig.steps.tfenv import environment

    target = targets.vm_target(record)
    host = Host(connect(c, target), target, out=out)
    facts = host.probe(_BAKE_FACTS)
    found = {what: (fact.out.strip() or None) if fact.ok else None for what, fact in facts.items()}
    return {**found, "tensorflow": environment(host, c).tensorflow}


@task(
    help={
        "name": NAME_HELP,
        "family": "the image family to bake into (e.g. tf-t4); `gcp.create --image-family` takes its newest",
        "delete": "delete the VM once its image is made (default: start it again)",
        "yes": "don't ask before --delete",
        "json": JSON_HELP,
    }
)
def bake(c, family, name=None, delete=False, yes=False, json=False):
    """Make an image of a VM's boot disk in an image family (stopping the VM for it), labelled with
    what is on it, so VMs made from it are ready at boot; then start the VM again, or --delete it."""
    from tfrig.gce import bake as baking
    from tfrig.gce.cloud import ApiError, describe

    out = info_stream(json)
    try:
        baking.check_family(family)
    except baking.Invalid as invalid:
        raise Exit(str(invalid)) from None
    image = baking.image_name(family)
    if delete and not c.config.run.dry:
        confirm(f"Bake {image} and then delete the VM?", yes or c.config.tfrig.yes)
    with _holding(c, name, "gcp.bake", out) as record:
        cloud = settings(c, record.get("project"), record.get("zone")).cloud()
        vm = cloud.get_vm(record["zone"], record["name"])
        if vm is None:
            raise Exit(f"{record['name']} is not in {record['zone']} any more: nothing to bake.")
        if c.config.run.dry:
            print(
                f"would read what is on {vm.name}, stop it, make {image} (family {family}) of its boot disk", file=out
            )
            print(f"then {'delete it' if delete else 'start it again'}", file=out)
            return
        if vm.status == "RUNNING":
            on_it = _what_is_on(c, record, out)
            print(f"stopping {vm.name} so that its disk is imaged whole", file=out)
            finish(c, cloud, vm.zone, cloud.stop(vm.zone, vm.name), f"stopping {vm.name}")
            state.record_vm(vm.name, status="TERMINATED")
        else:  # stopped already: what is on it can't be read without starting it
            on_it = {"driver": "unknown", "tensorflow": "unknown", "docker": "unknown"}
        labels = baking.labels(on_it["driver"], on_it["tensorflow"], on_it["docker"])
        print(f"making {image} of {vm.boot_disk} (minutes: the whole disk is copied)", file=out)
        try:
            operation = cloud.create_image(
                image, family, vm.boot_disk, labels, f"baked by tfrig from {vm.name} ({vm.zone})"
            )
            timeout = max(Timing.of(c.config).operation, 3600)
            finish(c, cloud, None, operation, f"making image {image}", timeout=timeout)
        except (Exit, ApiError) as failed:  # one line, and where the VM was left
            said = failed.message if isinstance(failed, Exit) else describe(failed)
            raise Exit(f"{said}; {vm.name} is stopped: `inv gcp.start --name {vm.name}` starts it again") from None
    made = next((i for i in cloud.images() if i.name == image), None)
    shown = {what: baking.shown(labels, what) for what in baking.WHAT}
    result = {
        "image": image,
        "family": family,
        **shown,
        "disk_size_gb": made.disk_size_gb if made else None,
        "stored_bytes": made.archive_size_bytes if made else None,
        "vm": record["name"],
    }
    print(
        f"baked {image} (family {family}): driver {shown['driver']}, TensorFlow {shown['tensorflow']}, "
        f"Docker {shown['docker']}; `inv gcp.create --image-family {family}` makes VMs from it",
        file=out,
    )
    if delete:
        with _holding(c, record["name"], "gcp.delete", out) as current:
            delete_vm(c, current, out)
    else:
        started = _start(c, record["name"], out)
        print(f"started {record['name']} again at {targets.vm_address(started or record)}", file=out)
    if json:
        print_json(result)


@task(
    help={
        "delete": "delete this image (its storage stops being billed)",
        "yes": "don't ask before --delete",
        "project": PROJECT_HELP,
        "json": JSON_HELP,
    }
)
def images(c, delete=None, yes=False, project=None, json=False):
    """The images gcp.bake made: family, what is on each, size and stored size (billed as storage)."""
    from tfrig.gce import bake as baking

    if delete:
        try:
            baking.check_image_name(delete)
        except baking.Invalid as invalid:
            raise Exit(str(invalid)) from None
    cloud = settings(c, project).cloud()
    out = info_stream(json)
    if delete:
        found = next((i for i in cloud.images() if i.name == delete), None)
        if found is None:
            raise Exit(f"--delete {delete}: no such image in the project; `inv gcp.images` lists them.")
        if c.config.run.dry:
            print(f"would delete image {delete}", file=out)
            return
        confirm(f"Delete image {delete} (family {found.family or '-'})?", yes or c.config.tfrig.yes)
        finish(c, cloud, None, cloud.delete_image(delete), f"deleting image {delete}")
        print(f"deleted image {delete}: its storage is no longer billed", file=out)
        if json:
            print_json({"deleted": delete})
        return
    rows = [
        {
            "image": i.name,
            "family": i.family,
            **{what: baking.shown(i.labels, what) for what in baking.WHAT},
            "disk_size_gb": i.disk_size_gb,
            "stored_gb": round(i.archive_size_bytes / 1e9, 2),
            "created": i.created,
            "status": i.status,
        }
        for i in cloud.images()
        if i.labels.get(baking.BAKED) == "true"
    ]
    if json:
        print_json(rows)
        return
    if not rows:
        print("no images baked by tfrig in this project: `inv gcp.bake --family NAME` makes one", file=out)
        return
    table(
        ["image", "family", "driver", "TensorFlow", "Docker", "disk GB", "stored GB", "created"],
        [
            [
                r["image"],
                r["family"],
                r["driver"],
                r["tensorflow"],
                r["docker"],
                r["disk_size_gb"],
                r["stored_gb"],
                r["created"],
            ]
            for r in rows
        ],
    )


def _gpu_type(c: Any, gpu: str | None) -> gceplan.GpuType:
    try:
        return gceplan.gpu_type(gpu or c.config.gcp.gpu)
    except gceplan.Invalid as invalid:
        raise Exit(str(invalid)) from None


@task(
    help={"gpu": "GPU type (default gcp.gpu)", "region": "only this region", "project": PROJECT_HELP, "json": JSON_HELP}
)
def zones(c, gpu=None, region=None, project=None, json=False):
    """Show the zones that offer a GPU type, with the most cards per VM."""
    gpu_type = _gpu_type(c, gpu)
    cfg = settings(c, project, region=region)
    offered = cfg.cloud().accelerator_zones(gpu_type.name)
    rows = [
        {"zone": z, "region": gceplan.region_of(z), "max_per_vm": n}
        for z, n in sorted(offered.items())
        if not region or z.startswith(region + "-")
    ]
    if json:
        print_json(rows)
    elif not rows:
        print(f"{gpu_type.name} is offered in no zone{' of ' + region if region else ''} for project {cfg.project}.")
    else:
        table(["zone", "region", "max per VM"], [(r["zone"], r["region"], r["max_per_vm"]) for r in rows])


@task(
    help={
        "gpu": "only this GPU type (default: all that Compute Engine still sells)",
        "spot": "cheapest Spot price first",
        "region": "only this region",
        "project": PROJECT_HELP,
        "json": JSON_HELP,
    }
)
def gpus(c, gpu=None, spot=False, region=None, project=None, json=False):
    """What GPUs are sold where, at what price: each GPU type, the machine types that carry it,
    the regions and zones that have them, per hour on demand, Spot and Flex-start, cheapest first."""
    from concurrent.futures import ThreadPoolExecutor

    from tfrig.gce import prices as gceprice

    chosen = [_gpu_type(c, gpu)] if gpu else [g for g in gceplan.gpu_types().values() if not g.retired]
    cfg = settings(c, project, region=region)
    cloud = cfg.cloud()
    book = billing.load(cloud)
    offered = cloud.accelerator_zones_all()
    # The machine types each GPU comes with (N1: the one gcp.create picks for each count); where
    # the GPU comes with the machine type, the zones that have that type.
    wanted: list[tuple[gceplan.GpuType, str, int]] = []
    for g in chosen:
        pairs = (
            [(gceplan.machine_type(g, n, None), n) for n in g.counts] if g.family == "n1" else g.machine_types.items()
        )
        wanted += [(g, machine, count) for machine, count in pairs]
    with_type = sorted({machine for g, machine, _ in wanted if g.family != "n1"})
    with ThreadPoolExecutor(max_workers=8) as pool:
        having = dict(zip(with_type, pool.map(cloud.machine_type_zones, with_type), strict=True))
    zones_of: dict[tuple[str, str, int], list[str]] = {}
    for g, machine, count in wanted:
        zones = [z for z, cards in offered.get(g.name, {}).items() if cards >= count]
        if machine in having:
            zones = [z for z in zones if z in having[machine]]
        zones = [z for z in zones if not region or gceplan.region_of(z) == region]
        if zones:
            zones_of[(g.name, machine, count)] = zones
    rows = gceprice.offers(book, zones_of, spot_first=spot)
    if json:
        print_json(rows)
        return
    if not rows:
        print(f"No {gpu or 'GPU'} is offered{' in ' + region if region else ''} to project {cfg.project}.")
        return

    def money(amount: float | None) -> str:
        return "" if amount is None else f"${amount:.2f}"

    table(
        ["gpu", "count", "machine type", "region", "zones", "on demand /h", "Spot /h", "Flex-start /h"],
        [
            (
                r["gpu"],
                r["count"],
                r["machine_type"],
                r["region"],
                " ".join(z.rsplit("-", 1)[1] for z in r["zones"]),
                money(r["on_demand_usd_hour"]),
                money(r["spot_usd_hour"]),
                money(r["flex_start_usd_hour"]),
            )
            for r in rows
        ],
    )
    notes = {gceplan.gpu_types()[r["gpu"]].note for r in rows} - {""}
    print(f"prices: {gceprice.as_of()}; blank: not sold that way there, or not priced", *sorted(notes), sep="\n")


@task(help={"project": PROJECT_HELP, "json": JSON_HELP})
def reservations(c, project=None, json=False):
    """List the project's reservations a VM can consume: machine type, GPUs, zone, in use of total
    (gcp.create --reservation NAME uses one)."""
    cfg = settings(c, project)
    found = cfg.cloud().reservations()
    rows = [
        {
            "name": r.name,
            "zone": r.zone,
            "machine_type": r.machine_type,
            "gpu": r.gpu,
            "gpus": r.gpus,
            "in_use": r.in_use,
            "count": r.count,
            "specific_only": r.specific_only,
            "dense": r.dense,
            "status": r.status,
        }
        for r in sorted(found, key=lambda r: (r.zone, r.name))
    ]
    if json:
        print_json(rows)
    elif not rows:
        print(
            f"Project {cfg.project} has no reservations (a shared one from another project: --reservation "
            "projects/P/reservations/NAME)."
        )
    else:
        table(
            ["name", "zone", "machine type", "gpus", "in use", "how"],
            [
                (
                    r["name"],
                    r["zone"],
                    r["machine_type"],
                    f"{r['gpus']} x {r['gpu']}" if r["gpu"] else "",
                    f"{r['in_use']} of {r['count']}",
                    ", ".join(w for w, on in (("by name only", r["specific_only"]), ("dense", r["dense"])) if on)
                    or "any VM",
                )
                for r in rows
            ],
        )


@task(
    help={"gpu": "GPU type (default gcp.gpu)", "region": "only this region", "project": PROJECT_HELP, "json": JSON_HELP}
)
def quota(c, gpu=None, region=None, project=None, json=False):
    """Show the GPU quotas that matter (on-demand, Spot, all regions) with usage, and how to get more."""
    gpu_type = _gpu_type(c, gpu)
    cfg = settings(c, project, region=region)
    cloud = cfg.cloud()
    project_quotas, _ = cloud.project_info()
    regions = [region] if region else sorted({gceplan.region_of(z) for z in cloud.accelerator_zones(gpu_type.name)})
    rows = []

    def row(where: str, metric: str, quotas: dict[str, tuple[float, float]]) -> dict[str, Any]:
        """A metric the API does not list shows as "not listed" (None in JSON), never as 0."""
        if metric not in quotas:
            return {"where": where, "metric": metric, "limit": None, "usage": None, "remaining": None}
        limit, usage = quotas[metric]
        return {"where": where, "metric": metric, "limit": limit, "usage": usage, "remaining": limit - usage}

    for metric in (gceplan.GLOBAL_METRIC, gceplan.CPU_METRIC_ALL_REGIONS):
        rows.append(row("global", metric, project_quotas))
    for where in regions:
        quotas = cloud.region_quotas(where)
        for metric in (gpu_type.quota_metric, gpu_type.preemptible_metric):
            rows.append(row(where, metric, quotas))
    if json:
        print_json(rows)
        return

    def shown(value: float | None) -> str:
        return "not listed" if value is None else f"{value:g}"

    table(
        ["where", "metric", "limit", "used", "left"],
        [(r["where"], r["metric"], shown(r["limit"]), shown(r["usage"]), shown(r["remaining"])) for r in rows],
    )
    print(
        f"more quota: https://console.cloud.google.com/iam-admin/quotas?project={cfg.project} "
        "(Spot VMs use PREEMPTIBLE_* where the region has it, else the standard quota)"
    )


@task(help={"project": PROJECT_HELP, "json": JSON_HELP})
def check(c, project=None, json=False):
    """What a create in the project needs, checked before anything is spent: credentials, the
    Compute API, permissions, organization policies against your settings, OS Login, the SSH route.
    Exits non-zero when a check fails that would stop gcp.create."""
    from tfrig.gce import checks

    found = checks.run(c, settings(c, project))
    if json:
        print_json([check.as_dict() for check in found])
    else:
        for item in found:
            mark = "ok  " if item.ok else ("FAIL" if item.blocking else "note")
            print(f"{mark}  {item.name}: {item.detail}" + (f"; fix: {item.fix}" if item.fix and not item.ok else ""))
    failing = [item.name for item in found if not item.ok and item.blocking]
    if failing:
        raise Exit(
            f"{len(failing)} check{'s' if len(failing) > 1 else ''} would stop gcp.create: {', '.join(failing)}."
        )


@task(help={"name": NAME_HELP})
def ssh(c, name=None):
    """Open a shell on the VM."""
    record = renew_oslogin_key(c, _record_or_exit(name, c))
    argv = ssh_argv(c, record)
    if c.config.run.dry:
        print("would run: " + shlex.join(argv))
        return
    os.execvp(argv[0], argv)


@task(
    help={
        "name": NAME_HELP,
        "remove": "remove the block instead",
        "file": "the SSH config file (default ~/.ssh/config)",
    }
)
def ssh_config(c, name=None, remove=False, file=None):
    """Write (or update) a managed `Host NAME` block in ~/.ssh/config, so plain `ssh NAME` works."""
    record = renew_oslogin_key(c, _record_or_exit(name, c))
    path = Path(os.path.expanduser(file or "~/.ssh/config"))
    if path.is_dir():
        raise Exit(f"--file {path} is a folder; name the ssh config file itself, e.g. {path / 'config'}.")
    refuse_special_file(path, "--file")
    if file and not path.parent.is_dir():  # ~/.ssh is made when missing; a folder you named is not
        raise Exit(f"--file {path}: the folder {path.parent} does not exist; create it first.")
    block = None if remove else ssh_config_block(record, ssh_options(c))
    # Read, changed and written under tfrig's lock: two runs at once each keep the other's block.
    with contextlib.nullcontext() if c.config.run.dry else state.exclusive():
        try:
            old = path.read_text() if path.exists() else ""
        except OSError as exc:
            raise Exit(f"--file {path}: {exc.strerror}.") from None
        new = replace_block(old, record["name"], block)
        if new == old:
            print(f"already done: {path} {'has no' if remove else 'has the'} block for {record['name']}")
            return
        if c.config.run.dry:
            print(f"would {'remove' if remove else 'write'} the Host {record['name']} block in {path}")
            return
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        state.write_atomically(path.resolve(), new.encode())  # private; a link (dotfiles) stays a link
    print(
        f"{'removed' if remove else 'wrote'} Host {record['name']} in {path}"
        + ("" if remove else f": `ssh {record['name']}`")
    )
    if record.get("ssh_mode") == "oslogin" and not remove:
        print(
            f"{record['name']} logs in through OS Login with a key that expires in a day: any tfrig command on it "
            "(or this one again) renews it"
        )


@task(
    help={
        "port": "port on the VM (bound to its 127.0.0.1, e.g. TensorBoard 6006)",
        "local_port": "port here (default: the same)",
        "name": NAME_HELP,
    }
)
def tunnel(c, port, local_port=None, name=None):
    """Forward a local port to a port on the VM through SSH until Ctrl-C."""
    from tfrig.hosts.host import connect, hold_tunnel

    remote = port_number("port", port)
    local = port_number("local-port", local_port or port)
    record = _record_or_exit(name, c)
    if c.config.run.dry:
        print(f"would forward 127.0.0.1:{local} to {record['name']}:127.0.0.1:{port}")
        return
    free_local_port("local-port", local)
    conn = connect(c, targets.vm_target(record))
    hold_tunnel(
        conn,
        local,
        remote,
        lambda: print(f"http://127.0.0.1:{local} -> {record['name']}:{remote} (Ctrl-C closes it)", flush=True),
    )
    print("tunnel closed")


@task(
    help={
        "delete": "delete the VMs and their disks instead of stopping them",
        "all_users": "also the VMs tfrig created for other people in the project (asks; --yes answers)",
        "yes": "don't ask",
        "project": PROJECT_HELP,
        "json": JSON_HELP,
    }
)
def down(c, delete=False, all_users=False, yes=False, project=None, json=False):
    """Stop (or --delete) every VM tfrig created for you in the project, listing them first and
    asking. Yours: in your tfrig state, or labelled with your account; others' are listed, not touched."""
    from concurrent.futures import ThreadPoolExecutor

    cfg = settings(c, project)
    cloud = cfg.cloud()
    # Read before listing: a record a concurrent gcp.create writes after the listing is not seen
    # here, so it is never dropped; nor is one whose insert may still be in flight.
    recorded = {n: r for n, r in state.vms().items() if r.get("project") in (None, cfg.project)}
    live = {vm.name: vm for vm in cloud.vms()}
    out = info_stream(json)
    for name in sorted(set(recorded) - set(live)):
        if recorded[name].get("status") == "CREATING":
            continue
        if c.config.run.dry:
            print(f"{name}: already gone; would remove it from tfrig's state", file=out)
            continue
        forget(name)  # gone already: nothing bills
        print(f"{name}: already gone; removed from tfrig's state", file=out)
    me = owner(cloud)
    theirs = {name for name, vm in live.items() if name not in recorded and vm.owner != me}
    if theirs and not all_users:
        others = ", ".join(f"{name} ({live[name].owner or 'owner not labelled'})" for name in sorted(theirs))
        print(f"not yours, left alone: {others}; --all-users acts on them too", file=out)
    chosen = [
        vm for vm in live.values() if (all_users or vm.name not in theirs) and (delete or vm.status != "TERMINATED")
    ]
    if not chosen:
        which = "VMs" if delete else "running VMs"
        print(f"nothing to {'delete' if delete else 'stop'}: tfrig has no {which} in {cfg.project}", file=out)
        if json:
            print_json({"changed": []})
        return
    from tfrig.gce import prices as gceprice

    billing.load(cloud)
    table(
        ["name", "zone", "status", "gpu", "per hour", "owner"],
        [
            (
                vm.name,
                vm.zone,
                vm.status,
                vm.gpu,
                gceprice.money(vm.hourly()).removesuffix("/h"),
                (vm.owner or "not labelled") if vm.name in theirs else "you",
            )
            for vm in chosen
        ],
        out=out,
    )
    running = [vm.hourly() for vm in chosen if vm.status == "RUNNING"]
    if running:
        known = [price for price in running if price is not None]
        more = f" (and {len(running) - len(known)} VM(s) tfrig has no price for)" if len(known) < len(running) else ""
        print(f"this stops about ${sum(known):.2f}/h of VM and GPU charges{more}", file=out)
    verb = "Delete" if delete else "Stop"
    if c.config.run.dry:
        print(f"would {verb.lower()} {len(chosen)} VM(s)", file=out)
        return
    not_yours = sum(vm.name in theirs for vm in chosen)
    confirm(
        f"{verb} these {len(chosen)} VM(s)" + (f", {not_yours} of them other people's?" if not_yours else "?"),
        yes or c.config.tfrig.yes,
    )
    timing = Timing.of(c.config)

    def act(vm: Any) -> tuple[bool, str]:
        """(done, what happened) for one VM; a failure is reported, the others go on."""
        from tfrig.gce.cloud import ApiError, describe

        verb = "deleting" if delete else "stopping"
        try:
            with state.vm_operation(vm.name, "gcp.down", timing.operation + timing.running, out):
                if delete:
                    delete_checked(c, cloud, vm.zone, vm.name)
                    return True, f"deleted {vm.name}"
                finish(c, cloud, vm.zone, cloud.stop(vm.zone, vm.name), f"stopping {vm.name}")
        except Exit as failed:
            return False, str(failed.message)
        except ApiError as exc:
            return False, f"{verb} {vm.name}: {describe(exc)}"
        if state.find_vm(vm.name):
            state.record_vm(vm.name, status="TERMINATED")
        return True, f"stopped {vm.name} (its disk is still billed)"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(act, chosen))
    for _done, line in outcomes:
        print(line, file=out)
    changed = [vm.name for vm, (done, _line) in zip(chosen, outcomes, strict=True) if done]
    if json:
        print_json({"changed": changed, "action": "delete" if delete else "stop"})
    failed = len(chosen) - len(changed)
    if failed:
        raise Exit(f"{failed} of {len(chosen)} VM(s) could not be {'deleted' if delete else 'stopped'}; see above.")


def _vm_hosts(c: Any, name: str | None) -> str:
    """`--name` (a VM, a comma list, or a glob) as a host spec; the VM tfrig knows by default."""
    return name or c.config.gcp.name or gceplan.default_name(local_user())


@task(
    help={
        "cmd": "the command, run in the TensorFlow env (its bin first on PATH) from the home folder",
        "name": NAME_HELP + "; several comma-separated, or a glob such as 'tfrig-alice-*'",
        "json": JSON_HELP,
    }
)
def exec_(c, cmd, name=None, json=False):
    """Run a command on the VM in the TensorFlow env, streaming its output; its exit code is passed on."""
    if not cmd.strip():
        raise Exit('Give the command to run: --cmd "python train.py".')
    from tfrig import tfrun
    from tfrig.hosts.host import Host, shell_path
    from tfrig.hosts.runner import on_targets
    from tfrig.steps.tfenv import environment

    running: list[tuple[Host, str]] = []  # each host and the file holding its command's process group
    stopping = threading.Event()

    def work(host: Host) -> dict[str, Any]:
        env = environment(host, c)
        command = f'export PATH={shell_path(env.path.rstrip("/") + "/bin")}:"$PATH"; {env.exports}cd; {cmd}'
        if host.dry:
            host.say(f"would run: {cmd}")
            return {"exit_code": None}
        # The command leads a process group of its own (setsid), whose id it writes down, so that
        # Ctrl-C here stops it there too; without a pty nothing else would carry the interrupt.
        group = f"{tfrun.JOBS_FOLDER}/exec-{uuid.uuid4().hex}.pgid"  # the user's own folder, not /tmp
        # In the foreground: a background job (&) would start with SIGINT ignored, for good.
        wrapped = (
            f"{tfrun.MAKE_JOBS_FOLDER} || exit $?; "
            f'setsid -w "${{SHELL:-sh}}" -c \'echo $$ > "$0"; eval "$1"\' {group} {shlex.quote(command)}; '
            f"rc=$?; rm -f {group}; exit $rc"
        )
        running.append((host, group))
        if stopping.is_set():
            return {"exit_code": 130}
        result = host.c.run(wrapped, warn=True, hide=json, in_stream=False, pty=False)
        return {"exit_code": result.exited, "stdout": result.stdout if json else None}

    def stop_everywhere() -> None:
        for host, group in list(running):
            with contextlib.suppress(Exception):  # gone already, or the host went away
                host.c.run(
                    f'g=$(cat {group}); {tfrun.group_id_only("g")}; [ -n "$g" ] && kill -INT -"$g"',
                    hide=True,
                    warn=True,
                    in_stream=False,
                )

    def interrupted(signum: int, frame: Any) -> None:
        if stopping.is_set():  # a second Ctrl-C: leave now, the commands may go on there
            raise KeyboardInterrupt
        stopping.set()
        print("stopping the command on every host (Ctrl-C again to leave it running)", file=sys.stderr, flush=True)
        threading.Thread(target=stop_everywhere, daemon=True).start()

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        results = on_targets(
            c, work, hosts=_vm_hosts(c, name), json_out=json, summary=lambda r: f"exit {r['exit_code']}"
        )
    except KeyboardInterrupt:
        raise Exit("left at the second Ctrl-C; the command may still run there.", code=130) from None
    finally:
        signal.signal(signal.SIGINT, previous)
    codes = [r.get("exit_code") or 0 for r in results]
    if any(codes):
        raise Exit(code=max(codes))


COPY_HELP = {"name": NAME_HELP, "force": "overwrite what is at the destination"}


@task(
    help={
        **COPY_HELP,
        "source": "a file or folder here",
        "destination": "where on the VM (default: its name, in the home folder)",
    }
)
def put(c, source, destination=None, name=None, force=False):
    """Copy a file or folder to the VM."""
    copy_files(c, _vm_hosts(c, name), source, destination, upload=True, force=force)


@task(
    help={
        **COPY_HELP,
        "source": "a file or folder on the VM",
        "destination": "where here (default: its name, in this folder)",
    }
)
def get(c, source, destination=None, name=None, force=False):
    """Copy a file or folder from the VM."""
    copy_files(c, _vm_hosts(c, name), source, destination, upload=False, force=force)


ns = Collection(
    "gcp",
    create,
    check,
    start,
    stop,
    delete,
    down,
    zones,
    gpus,
    reservations,
    quota,
    ssh,
    tunnel,
    put,
    get,
    bake,
    images,
)
ns.add_task(exec_, name="exec")
ns.add_task(list_, name="list")
ns.add_task(ssh_config, name="ssh-config")
ns.add_task(idle_stop, name="idle-stop")
ns.configure(
    {
        "gcp": {
            "project": "",
            "zone": "",
            "region": "",
            "endpoint": "",
            "credentials": "",
            "name": "",
            "gpu": "nvidia-tesla-t4",
            "machine_type": "",
            "image": "auto",  # tfrig.gce.config.machine_image
            "dlvm_family": "common-cu129-ubuntu-2404-nvidia-580",
            "disk_gb": 100,
            "network": "",
            "subnet": "",
            "tags": "",
            "external_ip": True,  # false: as --no-external-ip, where a policy forbids them
            # How tfrig logs in: auto (OS Login where the project turns it on, else a key in the VM's
            # metadata; never turns it off), metadata, or oslogin.
            "ssh_mode": "auto",
            # The other Google APIs' endpoints (a private or test API), as gcp.endpoint is the Compute API's.
            "oslogin_endpoint": "",
            "resourcemanager_endpoint": "",
            "orgpolicy_endpoint": "",
            "billing_endpoint": "",  # the Cloud Billing Catalog API's, for prices
            "service_account": "default",  # the VM's: an email, default or none
            "scopes": "cloud-platform",
            "secure_boot": False,
            # How tfrig reaches its VMs: external (their external IP) or internal (their VPC
            # address, from a machine inside the VPC or on a VPN to it).
            "ssh_via": "external",
            "retry_delay": 1.0,
            "poll_interval": 2.0,
            "running_timeout": 300,
            "operation_timeout": 600,
            "ssh_timeout": 300,
        }
    }
)
