"""Provisioning Compute Engine GPU VMs, under the gcp tasks: the pre-flight, the insert with
failover, waiting for the operation, RUNNING and SSH, pinning host keys, cleaning up what a failed
or interrupted create left, and deleting. Plain data at the boundary: a CreateRequest and state
records in, records and one-line messages out. Decisions are tfrig.gce.plan's, API calls tfrig.gce.cloud's.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from invoke.exceptions import Exit

from tfrig import state
from tfrig.gce import billing
from tfrig.gce import plan as gceplan
from tfrig.gce.config import Settings, settings
from tfrig.hosts import targets

# An SSH key imported into an OS Login profile lives this long; tfrig imports it again before it
# connects when less than OSLOGIN_RENEW is left (Airflow's ComputeEngineSSHHook imports one per
# connection, for 300 s).
OSLOGIN_KEY_SECONDS = 24 * 3600
OSLOGIN_RENEW = 3600


@dataclass
class Login:
    """How tfrig logs in to the VMs of a create: its key in their metadata, or through OS Login
    (the key imported into the account's profile, logging in as its POSIX user)."""

    setting: str  # gcp.ssh_mode: auto | metadata | oslogin
    public_key: str
    user: str  # the metadata mode's user; the POSIX user once OS Login is used
    mode: str = "metadata"
    account: str = ""
    expires: int = 0

    def record_fields(self) -> dict[str, Any]:
        if self.mode != "oslogin":
            return {"ssh_mode": "metadata"}
        return {"ssh_mode": "oslogin", "oslogin_account": self.account, "oslogin_expires": self.expires}


@dataclass
class CreateRequest:
    names: list[str]
    gpu: gceplan.GpuType
    gpus: int
    machine_type: str
    source_image: str
    disk_gb: int
    spot: bool
    max_run_seconds: int | None
    on_termination: str
    metadata: dict[str, str]
    owner: str  # the owner label's value (tfrig.gce.config.owner)
    network: gceplan.Network = field(default_factory=gceplan.Network)
    ssh_via: str = "external"  # how tfrig reaches the VM: its external or internal address, or through IAP
    service_accounts: list[dict[str, Any]] = field(default_factory=list)  # gceplan.service_accounts
    login: Login | None = None  # None: the key in metadata, as `metadata` says (tests' plain bodies)
    secure_boot: bool = False  # a Shielded VM with Secure Boot (gceplan.SHIELDED)
    flex_wait: int | None = None  # Flex-start: how long the request waits for capacity (seconds)
    reservation: str | None = None  # --reservation: NAME or projects/P/reservations/NAME
    reservation_bound: bool = False  # the reservation is consumed as a whole block (DENSE)
    zones: list[str] = field(default_factory=list)  # where to try, in order (the pre-flight's answer)

    @property
    def model(self) -> str:
        """How it is provisioned, as the prices name it: on-demand, spot or flex-start."""
        return "flex-start" if self.flex_wait else "spot" if self.spot else "on-demand"

    @property
    def disk_type(self) -> str:
        return gceplan.family(self.machine_type).boot_disk

    def demand(self, vms: int = 1) -> gceplan.Demand:
        # Flex-start VMs draw the preemptible quota, as Spot VMs do (the reading of Google's
        # Flex-start pages; the page's quota section was not read here).
        preemptible = self.spot or bool(self.flex_wait)
        return gceplan.Demand(self.gpu, self.gpus, self.machine_type, self.disk_gb, preemptible, vms)

    def hourly(self, region: str) -> float | None:
        from tfrig.gce import prices as gceprice

        flex = bool(self.flex_wait)
        return gceprice.hourly(self.machine_type, self.gpu.name, self.gpus, self.spot, region, flex=flex)


def instance_body(request: CreateRequest, name: str, zone: str) -> dict[str, Any]:
    """The Compute API's Instance resource for one VM (REST field names)."""
    scheduling: dict[str, Any] = {"onHostMaintenance": "TERMINATE", "automaticRestart": request.model == "on-demand"}
    action = request.on_termination.upper()
    extra: dict[str, Any] = {}
    if request.spot:
        scheduling.update(provisioningModel="SPOT", instanceTerminationAction=action)
    if request.flex_wait:
        # A Flex-start VM takes no reservation and waits for capacity up to requestValidForDuration.
        scheduling.update(provisioningModel="FLEX_START", instanceTerminationAction=action)
        extra["reservationAffinity"] = {"consumeReservationType": "NO_RESERVATION"}
        extra["params"] = {"requestValidForDuration": {"seconds": str(request.flex_wait)}}
    if request.reservation:
        extra["reservationAffinity"] = {
            "consumeReservationType": "SPECIFIC_RESERVATION",
            "key": gceplan.RESERVATION_KEY,
            "values": [request.reservation],
        }
        if request.reservation_bound:  # gcloud: only for a calendar-mode or dense reservation
            scheduling.update(provisioningModel="RESERVATION_BOUND", instanceTerminationAction=action)
    if request.max_run_seconds:
        scheduling.update(maxRunDuration={"seconds": str(request.max_run_seconds)}, instanceTerminationAction=action)
    body: dict[str, Any] = {
        "name": name,
        "machineType": f"zones/{zone}/machineTypes/{request.machine_type}",
        "disks": [
            {
                "boot": True,
                "autoDelete": True,
                "initializeParams": {
                    "sourceImage": request.source_image,
                    "diskSizeGb": str(request.disk_gb),
                    # Sent explicitly: the API's default (pd-standard) is an HDD on N1, and G2
                    # and the Hyperdisk-only families refuse it (compat.yaml machine_families).
                    "diskType": f"zones/{zone}/diskTypes/{request.disk_type}",
                },
            }
        ],
        "networkInterfaces": [request.network.interface(zone)],
        "scheduling": scheduling,
        "labels": {"created-by": "tfrig", gceplan.OWNER_LABEL: request.owner},
        "metadata": {"items": [{"key": k, "value": v} for k, v in request.metadata.items()]},
        **extra,
    }
    if request.service_accounts:
        body["serviceAccounts"] = request.service_accounts
    if request.secure_boot:
        body["shieldedInstanceConfig"] = dict(gceplan.SHIELDED)
    if request.network.tags:  # what firewall rules with target tags match
        body["tags"] = {"items": list(request.network.tags)}
    if request.gpu.family == "n1":  # other families come with their GPUs attached
        body["guestAccelerators"] = [
            {"acceleratorType": f"zones/{zone}/acceleratorTypes/{request.gpu.name}", "acceleratorCount": request.gpus}
        ]
    return body


def to_instance(body: dict[str, Any]) -> Any:
    from google.cloud import compute_v1

    return compute_v1.Instance.from_json(__import__("json").dumps(body))


def record_created(
    cfg: Settings, vm: Any, key: Path, user: str, request: CreateRequest | None = None
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "project": cfg.project,
        "zone": vm.zone,
        "address": vm.address,
        "internal_address": vm.internal_address,
        "user": user,
        "ssh_key": str(key),
        "port": 22,
        "status": vm.status,
        "machine_type": vm.machine_type,
        "gpu": vm.gpu or (request.gpu.name if request else None),
        "gpus": vm.gpus or (request.gpus if request else None),
    }
    if request:
        import datetime

        fields["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        fields["ssh_via"] = request.ssh_via
        if request.login:
            fields.update(request.login.record_fields())
    return state.record_vm(vm.name, **fields)


def wait_running(cloud: Any, zone: str, name: str, timeout: float, poll: float, external: bool = True) -> Any:
    """The VM once RUNNING with an address to reach it at (its external one, unless `external` is
    False: a VM reached at its internal address)."""
    deadline = time.monotonic() + timeout
    while True:
        vm = cloud.get_vm(zone, name)
        if vm is not None and vm.status == "RUNNING" and (vm.address if external else vm.internal_address):
            return vm
        if time.monotonic() > deadline:
            raise Exit(
                f"{name} in {zone} is not RUNNING with an address after {timeout:.0f} s (status {vm and vm.status})."
            )
        time.sleep(poll)


QUEUE_NOTE_EVERY = 60.0
# The zone had no room (gce-errors.yaml's stockout reasons).
STOCKOUTS = ("ZONE_RESOURCE_POOL_EXHAUSTED", "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", "insufficientCapacity")


def wait_queued(cloud: Any, zone: str, name: str, wait: float, poll: float, out: Any) -> None:
    """Wait while a Flex-start request is queued (the VM PENDING), saying how long it has been. A
    queue is not a stockout: it ends when the VM leaves PENDING. No capacity by the end of `wait`
    (the request's own limit), or Ctrl-C: the request is deleted, and the user reads so."""
    began = time.monotonic()
    told = 0.0
    print(f"  {name}: queued in {zone} until Flex-start capacity comes, at most {gceplan.span(int(wait))}", file=out)
    try:
        while True:
            vm = cloud.get_vm(zone, name)
            waited = time.monotonic() - began
            if vm is None:
                forget(name)
                raise CreateFailed(f"the Flex-start request for {name} in {zone} ended without capacity (no VM left)")
            if vm.status != "PENDING":
                return
            if waited > wait:
                cleanup(cloud, zone, name, out)
                raise CreateFailed(
                    f"no Flex-start capacity for {name} in {zone} within {gceplan.span(int(wait))}; the request was "
                    "deleted. Try again later, another region (--region), or --spot"
                )
            if waited - told >= QUEUE_NOTE_EVERY:
                told = waited
                print(f"  {name}: queued for {waited / 60:.0f} min in {zone}", file=out, flush=True)
            time.sleep(poll)
    except KeyboardInterrupt:
        cleanup(cloud, zone, name, out)
        print(f"  {name}: the queued Flex-start request was cancelled", file=out, flush=True)
        raise


def finish(
    c: Any, cloud: Any, zone: str | None, operation: str, what: str, timeout: float | None = None, no_room: str = ""
) -> None:
    """Wait for an operation (zone None: a global one) and check its result: one line if it failed
    or did not end in time (`no_room`, where given, when the zone had no capacity for it)."""
    from tfrig.gce.cloud import ApiError

    try:
        result = cloud.wait(zone, operation, timeout or Timing.of(c.config).operation)
    except ApiError as exc:
        if exc.reason != "TIMEOUT":
            raise
        raise Exit(f"{what}: {exc.message}; it may still finish: `inv gcp.list` shows where it stands.") from None
    if not result.ok:
        error = result.errors[0] if result.errors else {"code": "", "message": ""}
        if no_room and error["code"] in STOCKOUTS:
            raise Exit(no_room)
        raise Exit(f"{what} failed: {result.message}")


# How long tfrig waits for an image without cloud-init to show host keys on its console once
# guest attributes are known to be off (a boot prints the console's first lines within seconds).
CONSOLE_GRACE = 60.0
# Guest attributes empty this long (an agent that publishes nothing): the serial console is read too.
GUEST_ATTRIBUTES_GRACE = 30.0


def pin_host_keys(
    c: Any, cloud: Any, record: dict[str, Any], deadline: float, poll: float, out: Any, earlier: Any = ()
) -> list[tuple[str, str]]:
    """Pin the VM's SSH host keys in tfrig's known-hosts file from its guest attributes, as
    `gcloud compute ssh` does, so the first connection checks the key rather than trusting it
    (under --dry they are only returned). Where an organization policy turns guest attributes off
    (the API answers 412) or they stay empty, the keys its boot printed on the serial console.
    `earlier`: keys pinned for this VM before (a restarted VM keeps its disk and its keys)."""
    from tfrig.gce.cloud import ApiError, ConsoleKeys
    from tfrig.hosts import hostkeys

    name, vm = hostkeys.vm_host_name(record), record["name"]
    started = time.monotonic()
    guest_off = False  # the API answered 412: an organization policy turns guest attributes off
    console = ConsoleKeys([], cloud_init=False)
    while True:
        keys: list[tuple[str, str]] = []
        if not guest_off:
            try:
                keys = cloud.host_keys(record["zone"], vm)
            except ApiError as exc:
                if exc.status != 412:
                    raise
                guest_off = True
                print(
                    f"{vm}: guest attributes are off in project {cloud.project} (an organization policy); reading "
                    "the SSH host keys its boot printed on the serial console",
                    file=out,
                    flush=True,
                )
        waited = time.monotonic() - started
        if not keys and (guest_off or waited > GUEST_ATTRIBUTES_GRACE or time.monotonic() > deadline):
            console = cloud.serial_host_keys(record["zone"], vm)
            keys = console.keys
            if keys:
                print(f"{vm}: SSH host keys from its serial console (printed by cloud-init)", file=out, flush=True)
        keys = keys or list(earlier)
        if keys:
            if not c.config.run.dry:
                hostkeys.pin(name, keys)
            return keys
        no_cloud_init = guest_off and not console.cloud_init and waited > CONSOLE_GRACE
        if time.monotonic() > deadline or no_cloud_init:
            break
        time.sleep(poll)
    if hostkeys.policy(c.config) == "accept-new":
        print(
            f"{vm}: no SSH host keys published; trusting the key it shows first (tfrig.host_keys: accept-new)",
            file=out,
        )
        return []
    if guest_off:
        unread = f"its serial console could not be read ({console.unreadable})" if console.unreadable else ""
        why = (
            f"project {cloud.project}'s organization policy turns guest attributes off "
            "(constraints/compute.disableGuestAttributesAccess) and "
            + (unread or "its serial console showed none (Ubuntu's images print them there through cloud-init)")
        )
        choices = (
            "create it from an Ubuntu image (--image ubuntu-24.04), set tfrig.host_keys: accept-new to trust its "
            "first key,"
        )
    else:
        why = (
            "its guest agent published no SSH host keys (guest attributes hostkeys/) and its serial console showed none"
        )
        choices = "set tfrig.host_keys: accept-new to trust its first key,"
    raise Exit(
        f"{vm} runs and is billed, but {why}, so its key can't be checked; it is recorded: {choices} or delete it "
        f"with `inv gcp.delete --name {vm} --yes`."
    )


def vm_lost(c: Any, record: dict[str, Any]) -> str | None:
    """What became of a VM whose connection ended: preempted (a Spot VM with its preemption
    operation), stopped or deleted; None while it runs, or where the API can't say."""
    from tfrig.gce.cloud import ApiError

    name = record["name"]
    try:
        cloud = settings(c, record.get("project"), record.get("zone")).cloud()
        vm = cloud.get_vm(record["zone"], name)
        if vm is None:
            return f"its VM {name} is gone (deleted)"
        if vm.spot and name in cloud.preempted():
            return f"its Spot VM was preempted: `inv gcp.start --name {name}` brings it back where there is room"
        if vm.status not in ("RUNNING", "PROVISIONING", "STAGING"):
            return f"its VM is {vm.status}"
    except (Exit, ApiError):
        return None
    return None


def vm_access(c: Any, record: dict[str, Any]) -> list[tuple[str, str]]:
    """Before tfrig connects to a VM: its OS Login key renewed where it expires soon, and its
    pinned host keys; if none are pinned (a VM made with --no-ssh-wait), one read of its guest
    attributes, else of its serial console, pinned if there, with no waiting."""
    from tfrig.gce.cloud import ApiError
    from tfrig.hosts import hostkeys

    renew_oslogin_key(c, record)
    keys = hostkeys.pinned(hostkeys.vm_host_name(record))
    if keys:
        return keys
    try:
        cloud = settings(c, record.get("project"), record.get("zone")).cloud()
        try:
            found: list[tuple[str, str]] = cloud.host_keys(record["zone"], record["name"])
        except ApiError as exc:
            if exc.status != 412:  # 412: guest attributes off by policy
                raise
            found = []
        found = found or cloud.serial_host_keys(record["zone"], record["name"]).keys
    except (Exit, ApiError):  # no project or credentials here: the known-hosts files decide
        return []
    if found and not c.config.run.dry:
        hostkeys.pin(hostkeys.vm_host_name(record), found)
    return found


def forget(name: str) -> None:
    """Drop a VM's record and its pinned host keys (its address may go to another VM)."""
    from tfrig.hosts import hostkeys

    record = state.find_vm(name)
    if record and targets.vm_address(record):
        hostkeys.unpin(hostkeys.vm_host_name(record))
    state.forget_vm(name)


def wait_ssh(c: Any, record: dict[str, Any], timeout: float, out: Any) -> None:
    """Wait until SSH on the VM runs a command (the key may take a while to land); through OS Login,
    also that sudo works, which tfrig's installs need."""
    from tfrig.hosts.host import connect

    target = targets.vm_target(record)
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        conn = connect(c, target)
        answered = sudo = False
        try:
            answered = conn.run("true", hide=True, warn=True, in_stream=False, dry=False).ok
            if answered and record.get("ssh_mode") == "oslogin":
                sudo = conn.run("sudo -n true", hide=True, warn=True, in_stream=False, dry=False).ok
        except Exception as exc:  # not up yet: refused, reset, auth not ready
            if type(exc).__name__ in ("HostKeyRefused", "BadHostKeyException"):  # final: never retried
                from tfrig.hosts.host import describe_error

                raise Exit(f"{record['name']}: {describe_error(exc)}") from None
            last = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()
        if answered:
            if record.get("ssh_mode") == "oslogin" and not sudo:
                raise Exit(oslogin_sudo_refusal(record))
            return
        time.sleep(2)
    raise Exit(
        f"{record['name']} runs but SSH to {record.get('user')}@{targets.vm_address(record)} did not answer in "
        f"{timeout:.0f} s "
        f"({last}); it is recorded: retry with `inv gcp.ssh --name {record['name']}`, or delete it with "
        f"`inv gcp.delete --name {record['name']} --yes`."
    )


def oslogin_sudo_refusal(record: dict[str, Any]) -> str:
    """One line where OS Login lets the user in but sudo is refused (the guest agent gives sudo only
    to accounts with roles/compute.osAdminLogin: cloud.google.com/compute/docs/oslogin/set-up-oslogin)."""
    return (
        f"{record['name']} runs and is billed, and tfrig logs in as {record.get('user')} through OS Login, but sudo is "
        f"refused there: OS Login gives sudo only with roles/compute.osAdminLogin (on the project or the VM), which "
        f"the driver and Docker installs need: ask for it; it is recorded: or delete it with "
        f"`inv gcp.delete --name {record['name']} --yes`."
    )


class CreateFailed(Exception):
    """No zone could take a VM; `made`: the VMs of the same request created before it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.made: list[str] = []


def interrupted_message(names: list[str]) -> str:
    """One line after Ctrl-C in gcp.create: what exists, recorded, and how to remove it."""
    records = state.vms()
    kept = [records[name] for name in names if name in records]
    if not kept:
        return "interrupted: no VM was left behind; nothing bills."
    where = ", ".join(
        f"{r['name']} ({r.get('zone')}{', may exist' if r.get('status') in ('UNKNOWN', 'CREATING') else ''})"
        for r in kept
    )
    deletes = " ".join(f"`inv gcp.delete --name {r['name']} --yes`" for r in kept)
    return (
        f"interrupted: {where} recorded by tfrig and billing until deleted: {deletes}; "
        "or run the same command again to go on."
    )


@dataclass(frozen=True)
class Timing:
    """How long each wait may take (seconds), from the gcp settings."""

    operation: float
    running: float
    ssh: float
    poll: float

    @classmethod
    def of(cls, config: Any) -> Timing:
        """From the gcp settings; a bad value is one line naming the key and where it was set."""
        from tfrig.settings import setting_seconds

        def seconds(key: str, low: float, default: float) -> float:
            return setting_seconds(config, "gcp", key, low, 86400, default)

        return cls(
            seconds("operation_timeout", 1, 600),
            seconds("running_timeout", 1, 300),
            seconds("ssh_timeout", 1, 300),
            seconds("poll_interval", 0.01, 2.0),
        )


def adopt(
    c: Any, cloud: Any, cfg: Settings, names: list[str], key: Path, user: str, owner: str, timing: Timing, out: Any
) -> tuple[list[dict[str, Any]], list[str]]:
    """The VMs of `names` tfrig made already, started if stopped, as records (so the same command
    twice makes no second VM), and the names still to create. A VM of that name tfrig did not
    make, or made for someone else, is refused. Under --dry nothing is started or written."""
    dry = bool(c.config.run.dry)
    records: list[dict[str, Any]] = []
    to_create = []
    for vm_name in names:
        found = cloud.vms(name=vm_name, tfrig_only=False)
        if not found:
            to_create.append(vm_name)
            continue
        vm = found[0]
        if not vm.created_by_tfrig:
            raise Exit(f"A VM named {vm_name} exists in {vm.zone} and tfrig did not create it; choose another --name.")
        known = state.find_vm(vm_name)
        if known is None and vm.owner not in (None, owner):  # a colleague's, with the same default name
            raise Exit(
                f"A VM named {vm_name} exists in {vm.zone}, created by tfrig for {vm.owner}, not you; "
                "choose another --name."
            )
        if vm.status != "RUNNING" and not dry:
            print(f"{vm_name} exists in {vm.zone} ({vm.status}); starting it", file=out)
            finish(c, cloud, vm.zone, cloud.start(vm.zone, vm_name), f"starting {vm_name}", timing.operation)
            external = (known or {}).get("ssh_via", "external") == "external"
            vm = wait_running(cloud, vm.zone, vm_name, timing.running, timing.poll, external)
        print(f"{vm_name} exists in {vm.zone} (created by tfrig): using it", file=out)
        known = known or {}
        if dry:  # --dry writes nothing, not even tfrig's own state
            records.append({**known, "name": vm_name, "address": vm.address, "user": known.get("user") or user})
        else:
            records.append(record_created(cfg, vm, key, known.get("user") or user))
    return records, to_create


def create_vms(
    cloud: Any,
    cfg: Settings,
    request: CreateRequest,
    names: list[str],
    key: Path,
    user: str,
    timing: Timing,
    out: Any,
) -> list[dict[str, Any]]:
    """Create the VMs `names` in the zones `request.zones` in order, failing over as each error
    says, each recorded before its insert and running when returned. CreateFailed when no zone can
    take one (the ones made so far stay, recorded)."""
    state.check_writable()  # before anything bills: what is created must be recorded
    if request.login:
        import_login_key(cloud, request.login, out)
    failover = gceplan.Failover(request.zones)
    records: list[dict[str, Any]] = []
    for vm_name in names:
        try:
            landed = create_one(cloud, request, vm_name, failover, out, timing.operation)
        except CreateFailed as failed:
            failed.made = [r["name"] for r in records]
            raise
        user = request.login.user if request.login else user  # OS Login's POSIX user, once imported
        state.record_vm(
            vm_name,
            project=cfg.project,
            zone=landed,
            status="PROVISIONING",
            user=user,
            ssh_key=str(key),
            ssh_via=request.ssh_via,
            **(request.login.record_fields() if request.login else {}),
        )
        if request.flex_wait:
            wait_queued(cloud, landed, vm_name, request.flex_wait, timing.poll, out)
        vm = wait_running(cloud, landed, vm_name, timing.running, timing.poll, request.ssh_via == "external")
        records.append(record_created(cfg, vm, key, user, request))
        print(
            f"created {vm_name} in {landed} ({request.machine_type}, {request.gpus} x {request.gpu.name}) "
            f"at {targets.vm_address(records[-1])}",
            file=out,
        )
        failover.queue.insert(0, landed)  # the next VM tries the zone that had room first
    return records


def create_one(
    cloud: Any, request: CreateRequest, name: str, failover: gceplan.Failover, out: Any, timeout: float
) -> Any:
    """Try zones in failover order until one VM lands; a VM left by an interrupted attempt is deleted."""
    from tfrig.gce.cloud import ApiError

    while (zone := failover.next_zone()) is not None:
        print(f"  {name}: trying {zone} ...", file=out, flush=True)
        # Recorded before the insert (with its requestId), so no interrupt or crash from here on can
        # leave a VM billing that tfrig does not know of.
        request_id = str(uuid.uuid4())
        state.record_vm(
            name, project=cloud.project, zone=zone, status="CREATING", request_id=request_id, since=time.time()
        )
        body = to_instance(instance_body(request, name, zone))
        try:
            operation = cloud.insert(zone, body, request_id)
        except ApiError as exc:  # refused outright: nothing was created
            if exc.reason == "alreadyExists":  # not ours (none had the name at the start): not recorded
                forget(name)
                raise CreateFailed(
                    f"a VM named {name} appeared in {zone} meanwhile; run the command again to adopt it"
                ) from None
            refused = (
                gceplan.policy_refusal(exc.message, cloud.project, request.source_image)
                or gceplan.network_refusal(exc.message, cloud.project)
                or gceplan.service_account_refusal(exc.message, request.service_accounts)
            )
            if refused:  # an organization policy, a network that isn't there, actAs: no zone would do
                forget(name)
                raise CreateFailed(refused) from None
            scope = failover.failed(zone, exc.reason, exc.message, exc.zones_available)
            print(f"  {name}: {zone}: {exc.reason} ({scope} blocked)", file=out, flush=True)
            continue
        except BaseException:  # cut off mid-call: the insert may have landed
            cleanup(cloud, zone, name, out, resend=(body, request_id))
            raise
        try:
            result = cloud.wait(zone, operation, timeout)
        except BaseException as exc:  # the insert began: whatever it made must not be left billing
            cleanup(cloud, zone, name, out)
            if isinstance(exc, ApiError):
                raise CreateFailed(f"waiting for {name} in {zone} failed: {exc.message}") from None
            raise
        if result.ok:
            failover.attempts.append(gceplan.Attempt(zone, "created"))
            return zone
        error = result.errors[0]
        refused = gceplan.policy_refusal(error["message"], cloud.project, request.source_image)
        if refused:
            forget(name)
            raise CreateFailed(refused)
        scope = failover.failed(zone, error["code"], error["message"], error["zones_available"])
        print(f"  {name}: {zone}: {error['code']} ({scope} blocked)", file=out, flush=True)
    forget(name)
    raise CreateFailed(f"no zone could take {name}: {failover.summary() or 'no zone left to try'}")


def cleanup(cloud: Any, zone: str, name: str, out: Any, resend: tuple[Any, str] | None = None) -> None:
    """After an interrupted or failed create: delete the VM if it exists, or say exactly what may be
    left. `resend`: an insert cut off mid-call, sent again with its requestId, which the API answers
    with the first one's operation if that landed, so tfrig learns whether a VM is coming. "Nothing
    is left billing" is said only when the delete succeeded and a GET finds no VM."""
    from tfrig.gce.cloud import ApiError

    try:
        if resend is not None:
            with contextlib.suppress(ApiError):  # refused now: the first one never landed either
                cloud.wait(zone, cloud.insert(zone, *resend), timeout=300)
        made = cloud.get_vm(zone, name) is not None
        if made:
            result = cloud.wait(zone, cloud.delete(zone, name), timeout=300)
            if not result.ok:
                raise ApiError(0, "DELETE_FAILED", f"its delete failed: {result.message}")
            left = cloud.get_vm(zone, name)
            if left is not None:
                raise ApiError(0, "STILL_THERE", f"it is still there, {left.status}")
        forget(name)
        if made:
            print(f"  {name}: the half-created VM in {zone} was deleted; nothing is left billing", file=out)
    except BaseException as exc:
        state.record_vm(name, zone=zone, status="UNKNOWN", project=cloud.project, since=time.time())
        why = f" ({exc.message})" if isinstance(exc, ApiError) else ""
        print(
            f"  {name}: may exist in {zone}{why}; it is recorded: delete it with `inv gcp.delete --name {name} --yes`",
            file=out,
        )


def price_line(request: CreateRequest, vms: int, zone: str) -> str:
    """The price line shown before a create, e.g. "create 2 VMs (n1-standard-4 + 1 x nvidia-tesla-t4,
    on demand) in us-central1-a first: about $0.54/h each, about $1.09/h in all plus its disk (...)"."""
    from tfrig.gce import prices as gceprice

    each = request.hourly(gceplan.region_of(zone))
    how = {"spot": "Spot", "flex-start": "Flex-start", "on-demand": "on demand"}[request.model]
    if request.flex_wait:
        how += f", waits up to {gceplan.span(request.flex_wait)} for capacity"
    if request.reservation:
        how += f", from reservation {request.reservation}"
    what = f"{request.machine_type} + {request.gpus} x {request.gpu.name}, {how}"
    total = f", {gceprice.money(each * vms)} in all" if each is not None and vms > 1 else ""
    each_text = gceprice.money(each) + (" each" if vms > 1 else "")
    return (
        f"create {vms} VM{'s' if vms > 1 else ''} ({what}) in {zone} first: {each_text}{total} "
        f"plus its disk (prices: {gceprice.as_of()})"
    )


def preflight(
    cloud: Any, cfg: Settings, request: CreateRequest, vms: int, ssh_wait: bool, out: Any, dry: bool = False
) -> list[str]:
    """Everything checked before any insert: SSH will work, the GPU is offered, the quota covers
    it; the zones to try, in order."""
    from tfrig.gce import prices as gceprice

    project_quotas, metadata = cloud.project_info()
    billing.load(cloud)
    if ssh_wait:
        check_ssh_firewall(cloud, request.network, request.ssh_via, out)
    offered = cloud.accelerator_zones(request.gpu.name)
    if request.gpu.family != "n1":
        # Where the GPU comes with the machine type (A2, A3, A4, G2, ...), the type decides: a zone
        # can list the GPU for another type of its family (A3 Edge's H100 zones have no a3-highgpu).
        having = cloud.machine_type_zones(request.machine_type)
        offered = {zone: cards for zone, cards in offered.items() if zone in having}
    if request.reservation:
        usable = [reservation_zone(cloud, cfg, request, vms, out)]
    else:
        regions_offered = sorted({gceplan.region_of(z) for z in offered})
        ranked = gceprice.order_regions(
            regions_offered, request.machine_type, request.gpu.name, request.gpus, request.model, gceprice.home()
        )
        try:
            zones = gceplan.candidate_zones(offered, request.gpus, cfg.zone, cfg.region, ranked, cfg.first)
        except gceplan.Invalid as invalid:
            raise Exit(f"{request.gpu.name}: {invalid}") from None
        usable = checked_quota(cloud, cfg, request, vms, zones, project_quotas, out)
    if not request.network.external_ip:
        check_nat(cloud, request.network, list(dict.fromkeys(gceplan.region_of(z) for z in usable)), out)
    if request.login:
        choose_login(cloud, request, metadata, out, dry)
    return usable


def checked_quota(
    cloud: Any,
    cfg: Settings,
    request: CreateRequest,
    vms: int,
    zones: list[str],
    project_quotas: dict[str, tuple[float, float]],
    out: Any,
) -> list[str]:
    """The zones whose regions' quotas cover the request; one line when none do."""
    regions = list(dict.fromkeys(gceplan.region_of(z) for z in zones))
    regional = {region: cloud.region_quotas(region) for region in regions}
    check = gceplan.check_quota(request.demand(vms), regions, regional, project_quotas)
    if not check.regions and not check.global_short:
        # Per VM, a region needs only one VM's share; the total matters project-wide.
        check = gceplan.check_quota(request.demand(1), regions, regional, project_quotas)
    if not check.regions:
        raise Exit(gceplan.quota_message(cfg.project, check))
    if check.unknown:
        print(f"quota not listed by the API, so not checked: {', '.join(check.unknown)}; trying anyway", file=out)
    skipped = sorted({q.where for q in check.short})
    if skipped:
        shorts = sorted({q.metric for q in check.short})
        print(f"skipping {', '.join(skipped)}: not enough {', '.join(shorts)} quota", file=out)
    return [z for z in zones if gceplan.region_of(z) in check.regions]


def reservation_zone(cloud: Any, cfg: Settings, request: CreateRequest, vms: int, out: Any) -> str:
    """The zone of the reservation the request names, once it is known to fit: its machine type
    and GPUs, room for `vms` more VMs. The VM goes there only: a reservation is in one zone.
    (Its quota was drawn when the reservation was made.)"""
    from tfrig.gce.cloud import ApiError

    assert request.reservation is not None
    project, name = gceplan.reservation_ref(request.reservation)
    try:
        found = cloud.reservations(project, name)
    except ApiError as exc:
        raise Exit(f"--reservation {request.reservation}: can't read it ({exc.message}).") from None
    if not found:
        where = f"project {project}" if project else f"project {cloud.project}"
        raise Exit(
            f"--reservation {request.reservation}: no such reservation in {where} (`inv gcp.reservations` lists the "
            "ones this project can use)."
        )
    chosen = found[0]
    if cfg.zone and cfg.zone != chosen.zone:
        raise Exit(f"--reservation {chosen.name} is in {chosen.zone}, not --zone {cfg.zone}.")
    if (chosen.machine_type, chosen.gpu, chosen.gpus) != (request.machine_type, request.gpu.name, request.gpus):
        raise Exit(
            f"--reservation {chosen.name} holds {chosen.machine_type} with {chosen.gpus} x {chosen.gpu}: ask for "
            f"--gpu {chosen.gpu} --gpus {chosen.gpus} --machine-type {chosen.machine_type}."
        )
    if chosen.count - chosen.in_use < vms:
        raise Exit(
            f"--reservation {chosen.name} has room for {chosen.count - chosen.in_use} more VM(s) "
            f"({chosen.in_use} of {chosen.count} in use), not {vms}."
        )
    request.reservation = chosen.reference
    request.reservation_bound = chosen.dense
    if chosen.dense:
        print(f"reservation {chosen.name} is dense: its VMs are RESERVATION_BOUND, and end with it", file=out)
    return chosen.zone


def choose_login(cloud: Any, request: CreateRequest, project_metadata: dict[str, str], out: Any, dry: bool) -> None:
    """Metadata keys or OS Login for the create, as gcp.ssh_mode says: `auto` takes OS Login where
    the project turns it on, and never turns it off (constraints/compute.requireOsLogin turns it on
    in the projects it makes and refuses turning it off, so auto meets no refusal: Compute Engine's
    OS Login docs, manage-oslogin-in-an-org); `metadata` turns it off on tfrig's VMs (an instance's
    enable-oslogin=FALSE overrides the project's), which that policy refuses."""
    assert request.login is not None
    login = request.login
    project_on = project_metadata.get("enable-oslogin", "").upper() == "TRUE"
    if login.setting == "oslogin" or (login.setting == "auto" and project_on):
        if project_metadata.get("enable-oslogin-2fa", "").upper() == "TRUE":
            raise Exit(
                f"OS Login in project {cloud.project} asks for two-factor login (enable-oslogin-2fa), which a script "
                "can't answer: ask your admin for a project without it, or set gcp.ssh_mode: metadata where no policy "
                "requires OS Login."
            )
        use_oslogin(cloud, login, request.metadata, out, dry)
        return
    request.metadata["ssh-keys"] = f"{login.user}:{login.public_key}"
    if project_on:
        request.metadata["enable-oslogin"] = "FALSE"
        print(
            f"OS Login is on in project {cloud.project} and gcp.ssh_mode is metadata: tfrig sets enable-oslogin=FALSE "
            "on its VMs so that the key it adds works",
            file=out,
        )


def use_oslogin(cloud: Any, login: Login, metadata: dict[str, str], out: Any, dry: bool) -> None:
    """Log in through OS Login: the VM gets enable-oslogin=TRUE and no ssh-keys; the key goes into
    the account's profile once the create goes ahead (import_login_key)."""
    from tfrig.gce.config import account

    login.account = account(cloud) or ""
    if not login.account:
        raise Exit(
            "OS Login logs in as your Google account, and tfrig can't tell which: run `gcloud config set account "
            "EMAIL`, or use a service account's credentials."
        )
    metadata.pop("ssh-keys", None)
    metadata["enable-oslogin"] = "TRUE"
    login.mode = "oslogin"
    if dry:
        hours = OSLOGIN_KEY_SECONDS // 3600
        print(f"would import your SSH key into the OS Login profile of {login.account} for {hours} h", file=out)


def import_login_key(cloud: Any, login: Login, out: Any) -> None:
    """Through OS Login, the key imported into the account's profile for OSLOGIN_KEY_SECONDS, and
    the POSIX user the profile gives to log in as."""
    from tfrig.gce.cloud import ApiError

    if login.mode != "oslogin":
        return
    try:
        login.user = cloud.import_ssh_key(login.account, login.public_key, OSLOGIN_KEY_SECONDS)
    except ApiError as exc:
        raise Exit(oslogin_refusal(exc, login.account, cloud.project)) from None
    login.expires = int(time.time()) + OSLOGIN_KEY_SECONDS
    hours = OSLOGIN_KEY_SECONDS // 3600
    print(f"OS Login: your SSH key is in {login.account}'s profile for {hours} h; logging in as {login.user}", file=out)


def oslogin_refusal(exc: Any, account: str, project: str) -> str:
    """One line for an OS Login API call that failed."""
    if exc.service_disabled:
        return (
            f"The OS Login API is not enabled in project {project}: enable it with `gcloud services enable "
            f"oslogin.googleapis.com --project {project}`, or set gcp.ssh_mode: metadata where no policy requires "
            "OS Login."
        )
    if exc.status in (401, 403):
        return (
            f"OS Login refused to take an SSH key for {account} ({exc.message}): the account needs "
            f"roles/compute.osAdminLogin in project {project} (sudo needs that one, not roles/compute.osLogin)."
        )
    return f"OS Login could not take an SSH key for {account}: {exc.message}"


def renew_oslogin_key(c: Any, record: dict[str, Any]) -> dict[str, Any]:
    """An OS Login VM's record with its key imported again where less than OSLOGIN_RENEW is left
    (the profile's POSIX user may change too); other records as they are. Not under --dry."""
    from tfrig.gce.cloud import ApiError

    if record.get("ssh_mode") != "oslogin" or c.config.run.dry:
        return record
    if float(record.get("oslogin_expires") or 0) - time.time() > OSLOGIN_RENEW:
        return record
    key = Path(str(record.get("ssh_key") or ""))
    public = key.with_name(key.name + ".pub")
    try:
        public_key = public.read_text().strip()
    except OSError as exc:
        raise Exit(f"{record['name']}: can't read {public} to renew its OS Login key: {exc.strerror}.") from None
    cloud = settings(c, record.get("project"), record.get("zone")).cloud()
    account = str(record.get("oslogin_account") or "")
    try:
        user = cloud.import_ssh_key(account, public_key, OSLOGIN_KEY_SECONDS)
    except ApiError as exc:
        raise Exit(oslogin_refusal(exc, account, cloud.project)) from None
    expires = int(time.time()) + OSLOGIN_KEY_SECONDS
    return state.record_vm(record["name"], user=user, oslogin_expires=expires)


def check_ssh_firewall(cloud: Any, network: gceplan.Network, ssh_via: str, out: Any) -> None:
    """Refuse a create whose SSH wait would time out behind the firewall, or that names a network
    the project lacks; a firewall tfrig may not read (403: no compute.firewalls.list, common), or
    can't (a shared VPC's, in its host project), is said in one line and the create goes on."""
    from tfrig.gce.cloud import ApiError

    if ssh_via == "internal":
        print("SSH goes to the VM's internal address (gcp.ssh_via internal): the firewall is not checked", file=out)
        return
    if network.project not in (None, cloud.project) or not network.name:
        print(f"the network's firewall is in project {network.project}: not checked for SSH", file=out)
        return
    try:
        verdict, named = cloud.ssh_access(network.name, network.tags, iap=ssh_via == "iap")
    except ApiError as exc:
        if exc.status != 403:
            raise
        print("couldn't check the firewall for SSH (no permission to list firewall rules); going on", file=out)
        return
    if verdict.startswith("from "):
        print(f"the firewall admits SSH only {verdict}; the SSH wait needs this machine's address among them", file=out)
    elif verdict != "open":
        if not named and not cloud.has_network(network.name):
            raise Exit(
                f"Project {cloud.project} has no network named {network.name}"
                + (" (organizations often skip creating it)" if network.name == "default" else "")
                + f": pass --network NAME (and --subnet) of one it has; `gcloud compute networks list --project "
                f"{cloud.project}` shows them."
            )
        tagging = f" --target-tags {','.join(network.tags)}" if network.tags else ""
        if ssh_via == "iap":
            raise Exit(
                f"The firewall of network {network.name} does not admit SSH through IAP (tcp:22 from "
                f"{gceplan.IAP_RANGE}) to tfrig's VMs: {verdict}. Create a rule (`gcloud compute firewall-rules "
                f"create allow-ssh-from-iap --network {network.name} --allow tcp:22 --source-ranges "
                f"{gceplan.IAP_RANGE}{tagging}`), or pass --no-ssh-wait."
            )
        raise Exit(
            f"The firewall of network {network.name} does not admit SSH (tcp:22) to tfrig's VMs: {verdict}. Create a "
            f"rule (`gcloud compute firewall-rules create allow-ssh --network {network.name} --allow tcp:22"
            f"{tagging}`), or pass --no-ssh-wait."
        )


def check_nat(cloud: Any, network: gceplan.Network, regions: list[str], out: Any) -> None:
    """A VM with no external IP reaches the internet only through Cloud NAT: say where there is
    none, and what then fails and what to point elsewhere. A note, not a refusal: mirrors or a
    proxy may serve it."""
    from tfrig.gce.cloud import ApiError

    if network.project not in (None, cloud.project) or not network.name:
        print(f"Cloud NAT of the network in project {network.project} not checked", file=out)
        return
    subnet = network.subnet or network.name  # an auto-mode network's subnets carry its name
    try:
        missing = [region for region in regions if not cloud.has_nat(region, network.name, subnet)]
    except ApiError as exc:
        print(f"couldn't check Cloud NAT ({exc.reason}); going on", file=out)
        return
    if missing:
        print(
            f"no Cloud NAT for network {network.name} in {', '.join(missing)}: a VM there without an external IP "
            "can't reach the internet, so the NVIDIA driver download, pip and Docker Hub fail; point "
            "driver.download_base, tf.find_links and docker.mirror at what it reaches (Private Google Access "
            "reaches storage.googleapis.com), or add NAT (`gcloud compute routers nats create`)",
            file=out,
        )


# How long an insert may be in flight (sent, not yet listed) before its "creating" record, with no
# VM behind it, is taken as an interrupted create that made nothing.
INSERT_SETTLE_SECONDS = 600


def reconcile(records: dict[str, Any], live: dict[str, Any], out: Any) -> dict[str, Any]:
    """Records of creates that were cut off (CREATING, UNKNOWN) brought in line with the API: the
    VM's status and address if it exists, else the record dropped once no insert can be in flight;
    other records get the VM's internal address. On a read-only state folder nothing is written
    and the list still shows."""
    records = dict(records)
    for name, record in sorted(records.items()):
        vm = live.get(name)
        if record.get("status") not in ("CREATING", "UNKNOWN"):
            # A record from before internal addresses were kept (tf.run's cluster needs them).
            if vm is not None and vm.internal_address and record.get("internal_address") != vm.internal_address:
                with contextlib.suppress(Exit):  # a read-only state folder: shown, not kept
                    records[name] = state.record_vm(name, internal_address=vm.internal_address)
            continue
        try:
            if vm is not None:
                records[name] = state.record_vm(
                    name, status=vm.status, zone=vm.zone, address=vm.address, internal_address=vm.internal_address
                )
            elif time.time() - float(record.get("since") or 0) > INSERT_SETTLE_SECONDS:
                forget(name)
                del records[name]
                print(f"{name}: its create was cut off and no VM exists; removed from tfrig's state", file=out)
        except Exit:
            break
    return records


def delete_checked(c: Any, cloud: Any, zone: str, name: str) -> None:
    """Delete a VM and forget it once the operation succeeded and a GET says it is gone ("not
    found" while deleting: gone already); else an Exit saying what still bills."""
    from tfrig.gce.cloud import ApiError

    try:
        finish(c, cloud, zone, cloud.delete(zone, name), f"deleting {name}")
    except ApiError as exc:
        if exc.status != 404:
            raise
    left = cloud.get_vm(zone, name)
    if left is not None:
        raise Exit(
            f"{name} still exists in {zone} ({left.status}) and bills: run `inv gcp.delete --name {name} --yes` "
            "again, or delete it in the console."
        )
    forget(name)


def delete_vm(c: Any, record: dict[str, Any], out: Any) -> None:
    """Delete a recorded VM; "nothing billed" only once delete_checked found it gone."""
    name, zone = record["name"], record["zone"]
    cloud = settings(c, record.get("project"), zone).cloud()
    age = time.time() - float(record.get("since") or 0)
    cut_off = record.get("status") in ("CREATING", "UNKNOWN") and age < INSERT_SETTLE_SECONDS
    if cut_off and cloud.get_vm(zone, name) is None:  # its insert may still land: "nothing billed" can't be said
        raise Exit(
            f"{name} is not in {zone} yet, but its create was cut off {age:.0f} s ago and may still land; "
            f"tfrig keeps its record: run `inv gcp.delete --name {name}` again in a few minutes."
        )
    delete_checked(c, cloud, zone, name)
    print(f"deleted {name} ({zone}): nothing of it is billed any more", file=out)


def rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def cost_since_start(vm: Any) -> float | None:
    """About what a running VM has cost since it last started (its disk not included)."""
    hours, hourly = vm.uptime_hours(), vm.hourly()
    return None if hours is None or hourly is None else hours * hourly
