"""A fake Compute Engine REST API (v1 JSON) for the real google-cloud-compute client.

It serves the paths tfrig uses, keeps VMs and operations in memory, logs every call, and plays
scenarios: stockouts per zone (the operation ends DONE with ZONE_RESOURCE_POOL_EXHAUSTED, with or
without a zonesAvailable hint), errors at insert time, 503s on the first calls, a fixed latency per
call. A `vm_factory` can make VMs real (an sshd container on a loopback address).

It refuses what the real API refuses in a company's project: organization policies in force
(`policies`: 412 conditionNotMet naming the constraint, guest attributes refused), a service account
the caller may not act as, a network that isn't there. On the same port it serves the other APIs
tfrig calls, each at its own endpoint setting: OS Login (import a key, read a profile; an OS Login
VM takes only the keys imported for its POSIX user), Resource Manager's testIamPermissions and the
Org Policy API's getEffectivePolicy. It also serves each VM's serial console as its image prints it.
"""

from __future__ import annotations

import http.server
import itertools
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests import fakebilling

PREFIX = "/compute/v1/projects/"
# The rule IAP's TCP forwarding needs on the default network (cloud.google.com/iap/docs/using-tcp-forwarding).
IAP_SSH_RULE = {
    "name": "allow-ssh-from-iap",
    "network": "global/networks/default",
    "direction": "INGRESS",
    "sourceRanges": ["35.235.240.0/20"],
    "allowed": [{"IPProtocol": "tcp", "ports": ["22"]}],
}

# The fake's own statement of Compute Engine's rules, each from its source, written apart from
# tfrig's catalog so that a wrong belief there fails here.
# Boot disk types each machine series takes (cloud.google.com/compute/docs/disks, "Machine series
# support"; accelerator-optimized-machines, "Supported disk types"). With no diskType the API
# makes a pd-standard disk, which G2 and the Hyperdisk-only series refuse.
DISK_TYPES = {
    "n1": {"pd-standard", "pd-balanced", "pd-ssd"},
    "a2": {"pd-standard", "pd-balanced", "pd-ssd"},
    "g2": {"pd-balanced", "pd-ssd", "hyperdisk-balanced"},
    "a3-high": {"pd-balanced", "pd-ssd", "hyperdisk-balanced"},
    "a3-mega": {"pd-balanced", "pd-ssd", "hyperdisk-balanced"},
    "a3-ultra": {"hyperdisk-balanced"},
    "a4": {"hyperdisk-balanced"},
    "a4x": {"hyperdisk-balanced"},
}
# Machine types not sold on demand (accelerator-optimized-machines, consumption options): A3 High
# below 8 GPUs is Spot or Flex-start only; A4 is Spot or reservation; A4X reservation only.
SPOT_ONLY = {"a3-highgpu-1g", "a3-highgpu-2g", "a3-highgpu-4g", "a4-highgpu-8g"}
RESERVATION_ONLY = {"a4x-highgpu-4g"}
VCPUS = {"a2-highgpu-1g": 12, "a3-highgpu-1g": 26, "a3-highgpu-8g": 208, "a4-highgpu-8g": 224, "a4x-highgpu-4g": 140}
GPU_METRICS = {
    "nvidia-tesla-t4": "NVIDIA_T4_GPUS",
    "nvidia-l4": "NVIDIA_L4_GPUS",
    "nvidia-tesla-v100": "NVIDIA_V100_GPUS",
    "nvidia-tesla-a100": "NVIDIA_A100_GPUS",
    "nvidia-h100-80gb": "NVIDIA_H100_GPUS",
    "nvidia-b200": "NVIDIA_B200_GPUS",
    "nvidia-gb200": "NVIDIA_GB200_GPUS",
}
ATTACHED = {
    "g2": "nvidia-l4",
    "a2": "nvidia-tesla-a100",
    "a3": "nvidia-h100-80gb",
    "a4": "nvidia-b200",
    "a4x": "nvidia-gb200",
}
CPU_METRICS = {"n1": "CPUS", "a2": "A2_CPUS", "g2": "G2_CPUS"}  # compute/resource-usage


def series(machine: str) -> str:
    first, _, rest = machine.partition("-")
    if first == "a3":
        return {"megagpu": "a3-mega", "ultragpu": "a3-ultra"}.get(rest.split("-")[0], "a3-high")
    return first


def vcpus(machine: str) -> int:
    return VCPUS.get(machine) or int(machine.rsplit("-", 1)[1].rstrip("g"))


@dataclass
class Scenario:
    stockout: dict[str, list[str]] = field(default_factory=dict)  # zone -> zonesAvailable hint
    # zone -> (status, reason, message[, zonesAvailable hint]): the insert call itself refused
    insert_errors: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    unavailable_first: int = 0  # answer this many first calls with 503
    # This many inserts land (the VM is made) but their answer is lost: a 503 comes back instead.
    inserts_answer_lost: int = 0
    latency: float = 0.0
    # How long an operation runs before it is DONE. zoneOperations.wait holds a request until then
    # or for `FakeCompute.wait_hold` (the real API: about 2 minutes) and returns it not DONE.
    operation_seconds: float = 0.0
    # verb (start, stop, delete) -> (code, message): that operation ends DONE with this error and
    # changes nothing, as a failed operation does.
    operation_errors: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Every call answered with this error: (status, reason, message, ErrorInfo reason or "").
    every_call: tuple[int, str, str, str] | None = None
    firewalls_forbidden: bool = False  # firewalls.list needs compute.firewalls.list, often not granted
    # A Flex-start VM waits PENDING this long for capacity (None: none comes), then runs.
    flex_queue_seconds: float | None = 0.0


class FakeCompute:
    def __init__(self, project: str = "tfrig-test") -> None:
        self.project = project
        self.scenario = Scenario()
        self.offers: dict[str, dict[str, int]] = {}  # zone -> {gpu: max cards}
        # machine type -> the zones that have it, where a test narrows it (else every zone offering
        # GPUs has every type); an insert elsewhere is refused as the API refuses it.
        self.machine_zones: dict[str, set[str]] = {}
        self.regional: dict[str, dict[str, list[float]]] = {}
        # A real project lists these (and many more); a test deletes one to play "not listed".
        self.project_quotas: dict[str, list[float]] = {"GPUS_ALL_REGIONS": [8, 0], "CPUS_ALL_REGIONS": [64, 0]}
        self.project_metadata: dict[str, str] = {}
        self.firewalls: list[dict[str, Any]] = [
            {
                "name": "default-allow-ssh",
                "network": "global/networks/default",
                "direction": "INGRESS",
                "sourceRanges": ["0.0.0.0/0"],
                "allowed": [{"IPProtocol": "tcp", "ports": ["22"]}],
            }
        ]
        # The project's VPC networks, each with its subnets by region (the auto-mode `default`
        # network has one named `default` in every region); a test removes `default` to play an
        # organization that skips it. Subnets other projects share with this one (a shared VPC's),
        # by full path.
        self.networks: dict[str, dict[str, str]] = {"default": {"*": "default"}}
        self.shared_subnets: set[str] = set()
        # Firewall policies over the project's networks (REST JSON, as getEffectiveFirewalls lists
        # them: name, type HIERARCHY or NETWORK, rules with action, priority, match.srcIpRanges,
        # match.layer4Configs, targetResources).
        self.firewall_policies: list[dict[str, Any]] = []
        self.routers: dict[str, list[dict[str, Any]]] = {}  # region -> Cloud Routers (REST JSON)
        # Organization policy constraints in force on the project, refused as the API refuses them
        # (412 conditionNotMet naming the constraint): boolean ones by name -> True;
        # compute.trustedImageProjects -> the image projects it allows, as the policy lists them
        # ("projects/debian-cloud").
        self.policies: dict[str, Any] = {}
        # The service accounts the caller may attach to a VM (iam.serviceAccounts.actAs on them);
        # None: all of them. "default" is the project's default compute service account.
        self.act_as: set[str] | None = None
        self.instances: dict[str, dict[str, dict[str, Any]]] = {}
        # Reservations (REST JSON) by project (this one and others that share theirs) and zone.
        self.reservations: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.request_ids: dict[str, str] = {}  # an insert's requestId: its operation
        # Hold the first request matching (method, path regex) until `release` is set, after
        # `paused` is: the test acts (e.g. sends Ctrl-C) while a call is in flight.
        self.pause: tuple[str, str] | None = None
        self.paused, self.release = threading.Event(), threading.Event()
        self.vm_factory: Callable[[str, str, dict[str, Any]], str] | None = None
        self.vm_cleanup: Callable[[str], None] | None = None
        # A real VM's SSH host keys, (type, base64), as its guest agent publishes them in the
        # guest attributes `hostkeys/` (only when the metadata enables guest attributes).
        self.vm_host_keys: Callable[[str], list[tuple[str, str]]] | None = None
        self.vms: dict[str, Any] = {}  # real VMs a vm_factory made, by name
        # The project's own images (REST JSON), by name. `image_factory(image, vm)` makes one real
        # from the VM's boot disk (a real VM's container, committed), returning its size in bytes;
        # a vm_factory finds what a VM's sourceImage names with `image_of`.
        self.images: dict[str, dict[str, Any]] = {}
        self.image_factory: Callable[[str, str], int] | None = None
        self.image_error: tuple[int, str, str] | None = None  # images.insert answered with this
        self.console: dict[str, str] = {}  # what a VM printed on its serial console, instead of a boot's
        # The OS Login API (oslogin.googleapis.com v1, served here too): each account's POSIX user
        # (where a test names it; else as Google derives it), the keys imported for each POSIX user
        # with their expiry (microseconds), and who has roles/compute.osAdminLogin (sudo; None: all).
        # `oslogin_sync(vm)` makes a real OS Login VM take the keys now, as its sshd asks the
        # metadata server for them at each login.
        self.oslogin_users: dict[str, str] = {}
        self.oslogin_keys: dict[str, dict[str, int]] = {}
        self.oslogin_admins: set[str] | None = None
        self.oslogin_sync: Callable[[str], None] | None = None
        # Resource Manager's testIamPermissions: what the caller holds on the project (None: all);
        # the Org Policy API answers 403 when `orgpolicy_forbidden` (no orgpolicy.policy.get).
        self.granted: set[str] | None = None
        self.orgpolicy_forbidden = False
        # The Cloud Billing Catalog API's Compute Engine SKUs (tests/fakebilling.py); an error
        # (status, reason, message) in `billing_error` answers every catalog request.
        self.skus: list[dict[str, Any]] = fakebilling.skus()
        self.billing_error: tuple[int, str, str] | None = None
        # A real VM's address on the network the VMs share (its networkIP), else 10.128.0.N
        # (the default VPC's range in us-central1), N the last part of its loopback address.
        self.vm_internal_address: Callable[[str], str] | None = None
        self.wait_hold = 2.0  # a stand-in for the real API's 2-minute hold of zoneOperations.wait
        self.page_size = 2
        self._done_at: dict[str, float] = {}
        self._draws: dict[str, list[tuple[str, str, float]]] = {}  # a VM's quota usage, given back on delete
        self._pending_until: dict[str, float] = {}  # a queued Flex-start VM: when its capacity comes
        self._ids = itertools.count(1000)
        self._addresses = itertools.cycle(range(2, 20))  # below the test hosts' 127.0.0.20 and up
        self._lock = threading.Lock()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()

    # --- set-up helpers -------------------------------------------------------------------------

    def offer(self, gpu: str, zones: list[str], cards: int = 4, quota: float = 4, preemptible: float = 4) -> None:
        """`gpu` offered in `zones`, with a region's usual quotas: the GPU's (and its PREEMPTIBLE_
        one unless `preemptible` is None: many projects have none), vCPUs, addresses, disk."""
        metric = GPU_METRICS[gpu]
        for zone in zones:
            self.offers.setdefault(zone, {})[gpu] = cards
            region = zone.rsplit("-", 1)[0]
            quotas = self.regional.setdefault(region, {})
            quotas.setdefault(metric, [quota, 0])
            if preemptible is not None:
                quotas.setdefault(f"PREEMPTIBLE_{metric}", [preemptible, 0])
            for usual, limit in (("CPUS", 24), ("A2_CPUS", 96), ("G2_CPUS", 48), ("PREEMPTIBLE_CPUS", 0)):
                quotas.setdefault(usual, [limit, 0])
            quotas.setdefault("IN_USE_ADDRESSES", [8, 0])
            quotas.setdefault("SSD_TOTAL_GB", [2048, 0])
            quotas.setdefault("HYPERDISK_BALANCED_TOTAL_GB", [2048, 0])

    def reserve(
        self,
        zone: str,
        name: str,
        machine: str,
        count: int,
        in_use: int = 0,
        dense: bool = False,
        project: str | None = None,
    ) -> dict[str, Any]:
        """A reservation of `count` VMs of `machine` in `zone` (of `project`, shared with this one)."""
        properties: dict[str, Any] = {"machineType": machine}
        if machine.startswith("n1-"):
            properties["guestAccelerators"] = [{"acceleratorType": "nvidia-tesla-t4", "acceleratorCount": 1}]
        reservation = {
            "kind": "compute#reservation",
            "name": name,
            "zone": f"{self.endpoint}{PREFIX}{project or self.project}/zones/{zone}",
            "specificReservation": {"count": str(count), "inUseCount": str(in_use), "instanceProperties": properties},
            "specificReservationRequired": True,
            "status": "READY",
            **({"deploymentType": "DENSE"} if dense else {}),
        }
        self.reservations.setdefault(project or self.project, {}).setdefault(zone, []).append(reservation)
        return reservation

    def preempt(self, zone: str, name: str) -> None:
        """Compute Engine takes a Spot VM back: TERMINATED, with its compute.instances.preempted
        operation (what `gcloud compute operations list` shows for a preemption)."""
        vm = self.instances[zone][name]
        vm["status"] = "TERMINATED"
        self._operation(zone, "compute.instances.preempted", vm["selfLink"])

    def add_instance(
        self, zone: str, name: str, labels: dict[str, str] | None = None, address: str = "127.0.0.5"
    ) -> None:
        self.instances.setdefault(zone, {})[name] = self._instance(
            zone, {"name": name, "labels": labels or {}}, address
        )

    def client_env(self, home: Path, ssh_key: Path) -> dict[str, str]:
        """The settings that point tfrig at this fake as user alice, quick to retry and poll."""
        return {
            "INVOKE_GCP_ENDPOINT": self.endpoint,
            "INVOKE_GCP_OSLOGIN_ENDPOINT": self.endpoint,
            "INVOKE_GCP_RESOURCEMANAGER_ENDPOINT": self.endpoint,
            "INVOKE_GCP_ORGPOLICY_ENDPOINT": self.endpoint,
            "INVOKE_GCP_BILLING_ENDPOINT": self.endpoint,
            "INVOKE_GCP_CREDENTIALS": "anonymous",
            "INVOKE_GCP_PROJECT": self.project,
            "INVOKE_GCP_RETRY_DELAY": "0.01",
            "INVOKE_GCP_POLL_INTERVAL": "0.05",
            "INVOKE_TFRIG_SSH_KEY": str(ssh_key),
            "HOME": str(home),
            "USER": "alice",
            "NO_GCE_CHECK": "True",  # google-auth must not probe a metadata server
        }

    def paths(self, method: str | None = None) -> list[str]:
        """The calls made, as 'METHOD path' without the project prefix or query."""
        shown = []
        for verb, path in self.calls:
            short = path.split("?")[0].removeprefix(PREFIX + self.project)
            if method is None or verb == method:
                shown.append(f"{verb} {short or '/'}")
        return shown

    # --- the API --------------------------------------------------------------------------------

    def _instance(self, zone: str, body: dict[str, Any], address: str) -> dict[str, Any]:
        instance = dict(body)
        instance.update(
            {
                "kind": "compute#instance",
                "id": str(next(self._ids)),
                "zone": f"{self.endpoint}{PREFIX}{self.project}/zones/{zone}",
                "status": "RUNNING",
                "selfLink": f"{self.endpoint}{PREFIX}{self.project}/zones/{zone}/instances/{body['name']}",
                "creationTimestamp": _now(),
                "lastStartTimestamp": _now(),
            }
        )
        instance.setdefault("machineType", f"zones/{zone}/machineTypes/n1-standard-4")
        # As the API shows them: each disk by its source (a boot disk made from initializeParams is
        # named after the instance), the first one the boot disk.
        disks = [dict(disk) for disk in instance.get("disks") or [{"initializeParams": {}}]]
        for index, disk in enumerate(disks):
            disk_name = (disk.get("initializeParams") or {}).get("diskName") or (
                body["name"] if index == 0 else f"{body['name']}-{index}"
            )
            disk.setdefault("source", f"{self.endpoint}{PREFIX}{self.project}/zones/{zone}/disks/{disk_name}")
            disk.setdefault("boot", index == 0)
            disk.setdefault("deviceName", disk_name)
            disk.setdefault("diskSizeGb", str((disk.get("initializeParams") or {}).get("diskSizeGb") or 10))
        instance["disks"] = disks
        interfaces = instance.get("networkInterfaces") or [
            {"network": "global/networks/default", "accessConfigs": [{}]}
        ]
        internal = (
            self.vm_internal_address(body["name"])
            if self.vm_internal_address
            else f"10.128.0.{address.rsplit('.', 1)[-1]}"
        )
        for interface in interfaces:
            interface["networkIP"] = internal
            for config in interface.get("accessConfigs", []):  # no access config: no external IP
                config["natIP"] = address
        instance["networkInterfaces"] = interfaces
        return instance

    def _operation(
        self, zone: str | None, kind: str, target: str, error: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A zone operation, or a global one (zone None: images)."""
        name = f"operation-{next(self._ids)}"
        operation = {
            "kind": "compute#operation",
            "name": name,
            "id": str(next(self._ids)),
            "operationType": kind,
            "targetLink": target,
            "status": "DONE",
            "progress": 100,
        }
        if zone:
            operation["zone"] = f"{self.endpoint}{PREFIX}{self.project}/zones/{zone}"
        if error:
            operation["error"] = error
        self.operations[name] = operation
        self._done_at[name] = time.monotonic() + self.scenario.operation_seconds
        return self._current(operation)

    def _current(self, operation: dict[str, Any]) -> dict[str, Any]:
        """The operation as a read sees it now: RUNNING (no error yet) until its time is up."""
        if time.monotonic() >= self._done_at.get(operation["name"], 0):
            return operation
        running = {k: v for k, v in operation.items() if k != "error"}
        running.update(status="RUNNING", progress=50)
        return running

    def _wait(self, name: str) -> None:
        """zoneOperations.wait: hold until the operation is DONE or the hold is up."""
        until = min(self._done_at.get(name, 0), time.monotonic() + self.wait_hold)
        time.sleep(max(until - time.monotonic(), 0))

    def handle(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
        parsed = urllib.parse.urlparse(path)
        query = urllib.parse.parse_qs(parsed.query)
        route = parsed.path.removeprefix(PREFIX + self.project)
        if self.pause and method == self.pause[0] and re.search(self.pause[1], parsed.path):
            self.pause = None
            self.paused.set()
            self.release.wait(60)
        if self.scenario.latency:
            time.sleep(self.scenario.latency)
        if method == "POST" and (m := re.fullmatch(r"/(?:zones/[^/]+|global)/operations/([^/]+)/wait", route)):
            self._wait(m[1])
        with self._lock:
            self.calls.append((method, path))
            if self.scenario.unavailable_first > 0:
                self.scenario.unavailable_first -= 1
                return _error(503, "backendError", "The service is currently unavailable.")
            if self.scenario.every_call:
                return _error(*self.scenario.every_call)
            if method == "POST" and (m := re.fullmatch(r"/v1/users/([^/:]+):importSshPublicKey", parsed.path)):
                status, answer = self._import_ssh_key(urllib.parse.unquote(m[1]), query, body or {})
            elif method == "GET" and (m := re.fullmatch(r"/v1/users/([^/:]+)/loginProfile", parsed.path)):
                return self._login_profile(urllib.parse.unquote(m[1]))
            elif method == "GET" and parsed.path == "/v1/services/6F81-5844-456A/skus":
                return self._skus(query)
            elif method == "POST" and parsed.path == f"/v3/projects/{self.project}:testIamPermissions":
                wanted = (body or {}).get("permissions", [])
                held = [p for p in wanted if self.granted is None or p in self.granted]
                return 200, {"permissions": held}
            elif method == "GET" and (
                m := re.fullmatch(rf"/v2/projects/{self.project}/policies/([^/:]+):getEffectivePolicy", parsed.path)
            ):
                return self._effective_policy(m[1])
            elif method == "GET" and (m := re.fullmatch(PREFIX + r"([^/]+)/aggregated/reservations", parsed.path)):
                if m[1] not in self.reservations:
                    return _error(
                        403, "forbidden", f"Required 'compute.reservations.list' permission for 'projects/{m[1]}'"
                    )
                return 200, self._reservations_of(m[1], query)
            else:
                return self._route(method, route, query, body or {})
        sync = self.oslogin_sync
        if status == 200 and sync is not None:
            for name in self.oslogin_vms():
                sync(name)
        return status, answer

    def _skus(self, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        if self.billing_error:
            return _error(*self.billing_error)
        # The real API pages at most 5000 SKUs; this one at 40, so that paging is exercised.
        size = min(int(query.get("pageSize", ["5000"])[0] or 5000), 40)
        start = int(query.get("pageToken", ["0"])[0] or 0)
        answer: dict[str, Any] = {"skus": self.skus[start : start + size]}
        answer["nextPageToken"] = str(start + size) if start + size < len(self.skus) else ""
        return 200, answer

    # --- OS Login -------------------------------------------------------------------------------

    def posix_user(self, account: str) -> str:
        """An account's POSIX user: a service account's is sa_<its unique id>, a user's its email
        with what a user name can't hold made _ (cloud.google.com/compute/docs/oslogin)."""
        if account in self.oslogin_users:
            return self.oslogin_users[account]
        if account.endswith(".gserviceaccount.com"):
            return "sa_" + str(int.from_bytes(account.encode()[:8], "big") % 10**21)
        return re.sub(r"[^a-z0-9_]", "_", account.lower())[:32]

    def oslogin_on(self, vm: dict[str, Any]) -> bool:
        """Whether a VM logs in through OS Login: its metadata's enable-oslogin, else the project's."""
        metadata = {item["key"]: item["value"] for item in (vm.get("metadata") or {}).get("items", [])}
        return {**self.project_metadata, **metadata}.get("enable-oslogin", "").upper() == "TRUE"

    def oslogin_vms(self) -> list[str]:
        return [n for vms in self.instances.values() for n, vm in vms.items() if n in self.vms and self.oslogin_on(vm)]

    def keys_of(self, user: str) -> list[str]:
        """The keys an OS Login VM takes for `user` now: those imported for it, not expired."""
        now = time.time() * 1_000_000
        return [key for key, expires in self.oslogin_keys.get(user, {}).items() if not expires or expires > now]

    def _effective_policy(self, constraint: str) -> tuple[int, dict[str, Any]]:
        """Org Policy v2 getEffectivePolicy for the project, from `policies`: a boolean constraint
        enforced; vmExternalIpAccess (a list constraint) denying all; trustedImageProjects allowing
        its list; a constraint not set has no rules (nothing enforced)."""
        if self.orgpolicy_forbidden:
            return _error(
                403, "forbidden", f"Permission 'orgpolicy.policy.get' denied on resource 'projects/{self.project}'"
            )
        name = f"projects/{self.project}/policies/{constraint}"
        value = self.policies.get(constraint)
        if value is None:
            return 200, {"name": name, "spec": {}}
        if constraint == "compute.trustedImageProjects":
            rule: dict[str, Any] = {"values": {"allowedValues": list(value)}}
        elif constraint == "compute.vmExternalIpAccess":
            rule = {"denyAll": True}
        else:
            rule = {"enforce": bool(value)}
        return 200, {"name": name, "spec": {"rules": [rule]}}

    def _login_profile(self, account: str) -> tuple[int, dict[str, Any]]:
        """users.getLoginProfile: the POSIX account once a key was imported, else none yet."""
        user = self.posix_user(account)
        accounts = [{"primary": True, "username": user}] if user in self.oslogin_keys else []
        return 200, {"name": f"users/{account}", "posixAccounts": accounts}

    def _import_ssh_key(
        self, account: str, query: dict[str, list[str]], body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        """users.importSshPublicKey (REST: POST /v1/{parent=users/*}:importSshPublicKey, the key
        in the body, projectId in the query): the login profile with the POSIX account."""
        if "@" not in account:
            return _error(400, "badRequest", f"Invalid user: {account}")
        if query.get("projectId", [""])[0] != self.project:
            return _error(403, "forbidden", f"The caller does not have permission on project {query.get('projectId')}")
        key = str(body.get("key", "")).strip()
        if not key:
            return _error(400, "badRequest", "Invalid SSH public key")
        user = self.posix_user(account)
        self.oslogin_keys.setdefault(user, {})[key] = int(body.get("expirationTimeUsec") or 0)
        profile = {
            "name": f"users/{account}",
            "posixAccounts": [
                {
                    "primary": True,
                    "username": user,
                    "uid": "1001",
                    "gid": "1001",
                    "homeDirectory": f"/home/{user}",
                    "shell": "/bin/bash",
                    "accountId": self.project,
                    "operatingSystemType": "LINUX",
                }
            ],
        }
        return 200, {"loginProfile": profile}

    def _route(
        self, method: str, route: str, query: dict[str, list[str]], body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        if method == "GET" and route == "":
            project_quotas = [{"metric": m, "limit": v[0], "usage": v[1]} for m, v in self.project_quotas.items()]
            metadata = [{"key": k, "value": v} for k, v in self.project_metadata.items()]
            return 200, {"name": self.project, "quotas": project_quotas, "commonInstanceMetadata": {"items": metadata}}
        if method == "GET" and (m := re.fullmatch(r"/regions/([^/]+)", route)):
            region_quotas = self.regional.get(m[1])
            if region_quotas is None:
                return _error(404, "notFound", f"The resource 'projects/{self.project}/regions/{m[1]}' was not found")
            return 200, {
                "name": m[1],
                "quotas": [{"metric": k, "limit": v[0], "usage": v[1]} for k, v in region_quotas.items()],
            }
        if method == "GET" and route == "/aggregated/acceleratorTypes":
            accelerators = {
                f"zones/{zone}": {
                    "acceleratorTypes": [
                        {"name": gpu, "zone": zone, "maximumCardsPerInstance": cards} for gpu, cards in gpus.items()
                    ]
                }
                for zone, gpus in sorted(self.offers.items())
            }
            return 200, self._page(accelerators, query)
        if method == "GET" and route == "/aggregated/machineTypes":
            wanted = re.search(r'name = "([^"]+)"', query.get("filter", [""])[0])
            name = wanted[1] if wanted else ""
            listed = {
                f"zones/{zone}": {"machineTypes": [{"name": name, "zone": zone}]}
                for zone in sorted(self.offers)
                if name and zone in self.machine_zones.get(name, {zone})
            }
            return 200, self._page(listed, query)
        if method == "GET" and route == "/aggregated/reservations":
            return 200, self._reservations_of(self.project, query)
        if method == "GET" and route == "/aggregated/operations":
            wanted = re.search(r'operationType = "([^"]+)"', query.get("filter", [""])[0])
            by_zone: dict[str, Any] = {}
            for op in self.operations.values():
                if not wanted or op["operationType"] == wanted[1]:
                    scope = f"zones/{op['zone'].rsplit('/', 1)[-1]}" if "zone" in op else "global"
                    by_zone.setdefault(scope, {"operations": []})["operations"].append(op)
            return 200, self._page(by_zone, query)
        if method == "GET" and route == "/aggregated/instances":
            wanted = re.search(r'name = "([^"]+)"', query.get("filter", [""])[0])
            found = {
                f"zones/{zone}": {"instances": [i for i in vms.values() if not wanted or i["name"] == wanted[1]]}
                for zone, vms in sorted(self.instances.items())
            }
            return 200, self._page({k: v for k, v in found.items() if v["instances"]}, query)
        if method == "GET" and (m := re.fullmatch(r"/regions/([^/]+)/routers", route)):
            return 200, {"items": self.routers.get(m[1], [])}
        if method == "GET" and (m := re.fullmatch(r"/global/networks/([^/]+)/getEffectiveFirewalls", route)):
            if self.scenario.firewalls_forbidden:
                return _error(
                    403, "forbidden", f"Required 'compute.networks.getEffectiveFirewalls' permission for '{m[1]}'"
                )
            if m[1] not in self.networks:
                return _error(
                    404, "notFound", f"The resource 'projects/{self.project}/global/networks/{m[1]}' was not found"
                )
            mine = [r for r in self.firewalls if r.get("network", "").rsplit("/", 1)[-1] == m[1]]
            return 200, {"firewalls": mine, "firewallPolicys": self.firewall_policies}
        if method == "GET" and (m := re.fullmatch(r"/global/networks/([^/]+)", route)):
            if m[1] not in self.networks:
                return _error(
                    404, "notFound", f"The resource 'projects/{self.project}/global/networks/{m[1]}' was not found"
                )
            return 200, {"name": m[1], "selfLink": f"{self.endpoint}{PREFIX}{self.project}/global/networks/{m[1]}"}
        if method == "GET" and route == "/global/firewalls":
            if self.scenario.firewalls_forbidden:
                return _error(
                    403, "forbidden", f"Required 'compute.firewalls.list' permission for 'projects/{self.project}'"
                )
            return 200, {"items": self.firewalls}
        imaged = self._images(method, route, query, body)
        if imaged is not None:
            return imaged
        if m := re.fullmatch(r"/global/operations/([^/]+)(?:/wait)?", route):
            operation = self.operations.get(m[1])
            return (
                (200, self._current(operation)) if operation else _error(404, "notFound", f"operation {m[1]} not found")
            )
        m = re.fullmatch(r"/zones/([^/]+)/(instances|operations)(?:/([^/]+))?(?:/([a-zA-Z]+))?", route)
        if not m:
            return _error(404, "notFound", f"no route {method} {route}")
        zone, collection, name, verb = m.groups()
        if collection == "operations":
            operation = self.operations.get(name or "")
            if not operation:
                return _error(404, "notFound", f"operation {name} not found")
            return 200, self._current(operation)
        vms = self.instances.setdefault(zone, {})
        if method == "POST" and name is None:
            request_id = query.get("requestId", [""])[0]
            if request_id in self.request_ids:  # the API's idempotent retry: the first one's operation
                return 200, self.operations[self.request_ids[request_id]]
            status, answer = self._insert(zone, body)
            if request_id and status == 200:
                self.request_ids[request_id] = answer["name"]
            if status == 200 and self.scenario.inserts_answer_lost > 0:
                self.scenario.inserts_answer_lost -= 1
                return _error(503, "backendError", "The service is currently unavailable.")
            return status, answer
        if name not in vms:
            return _error(
                404, "notFound", f"The resource 'projects/{self.project}/zones/{zone}/instances/{name}' was not found"
            )
        vm = vms[name]
        if method == "GET" and verb == "getGuestAttributes":
            if self.policies.get("compute.disableGuestAttributesAccess"):
                return self._policy_error("compute.disableGuestAttributesAccess")
            return self._guest_attributes(vm, query.get("queryPath", [""])[0])
        if method == "GET" and verb == "serialPort":
            return self._serial_port(vm)
        if name in self._pending_until and time.monotonic() >= self._pending_until[name]:
            del self._pending_until[name]
            vm["status"], vm["lastStartTimestamp"] = "RUNNING", _now()
        if method == "GET":
            return 200, vm
        action = "delete" if method == "DELETE" else verb if method == "POST" and verb in ("stop", "start") else None
        if action in self.scenario.operation_errors:
            code, message = self.scenario.operation_errors[action]
            return 200, self._operation(zone, action, vm["selfLink"], {"errors": [{"code": code, "message": message}]})
        if method == "DELETE":
            del vms[name]
            self._pending_until.pop(name, None)
            if (vm.get("reservationAffinity") or {}).get("consumeReservationType") == "SPECIFIC_RESERVATION":
                specific = self._reservation_of(zone, vm)["specificReservation"]
                specific["inUseCount"] = str(int(specific["inUseCount"]) - 1)
            for where, metric, amount in self._draws.pop(name, []):
                self._quotas(where)[metric][1] -= amount
            if self.vm_cleanup:
                self.vm_cleanup(name)
            return 200, self._operation(zone, "delete", vm["selfLink"])
        if method == "POST" and verb in ("stop", "start"):
            vm["status"] = "TERMINATED" if verb == "stop" else "RUNNING"
            if verb == "start":
                vm["lastStartTimestamp"] = _now()
            return 200, self._operation(zone, verb, vm["selfLink"])
        return _error(400, "badRequest", f"unsupported {method} {route}")

    def _reservations_of(self, project: str, query: dict[str, list[str]]) -> dict[str, Any]:
        wanted = re.search(r'name = "([^"]+)"', query.get("filter", [""])[0])
        listed = {
            f"zones/{zone}": {"reservations": [r for r in found if not wanted or r["name"] == wanted[1]]}
            for zone, found in sorted(self.reservations.get(project, {}).items())
        }
        return self._page({k: v for k, v in listed.items() if v["reservations"]}, query)

    def _reservation_refusal(self, zone: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        """A VM naming a reservation lands only in it: the same zone and machine type, room left;
        a dense one only with provisioningModel RESERVATION_BOUND, which nothing else takes
        (gcloud's --provisioning-model help). (Messages: stand-ins of the real ones' form.)"""
        affinity = body.get("reservationAffinity") or {}
        bound = (body.get("scheduling") or {}).get("provisioningModel") == "RESERVATION_BOUND"
        if affinity.get("consumeReservationType") != "SPECIFIC_RESERVATION":
            if bound:
                return _error(400, "invalid", "RESERVATION_BOUND requires a specific reservation.")
            return None
        value = (affinity.get("values") or [""])[0]
        owner, _, name = value.rpartition("/reservations/")
        project = owner.removeprefix("projects/") if owner else self.project
        found = [r for r in self.reservations.get(project, {}).get(zone, []) if r["name"] == name]
        if not found:
            return _error(
                400,
                "invalid",
                f"Invalid value for field 'resource.reservationAffinity': Reservation '{value}' "
                f"does not exist in zone '{zone}'.",
            )
        reservation = found[0]
        specific = reservation["specificReservation"]
        machine = body.get("machineType", "").rsplit("/", 1)[-1]
        if specific["instanceProperties"]["machineType"] != machine:
            return _error(400, "invalid", f"The VM's properties do not match reservation '{name}'.")
        if int(specific["inUseCount"]) >= int(specific["count"]):
            return _error(400, "invalid", f"Reservation '{name}' has no unused capacity.")
        if (reservation.get("deploymentType") == "DENSE") != bound:
            return _error(
                400,
                "invalid",
                "RESERVATION_BOUND is required for, and only allowed with, a dense or calendar-mode reservation.",
            )
        return None

    def _reservation_of(self, zone: str, body: dict[str, Any]) -> dict[str, Any]:
        owner, _, name = body["reservationAffinity"]["values"][0].rpartition("/reservations/")
        project = owner.removeprefix("projects/") if owner else self.project
        return next(r for r in self.reservations[project][zone] if r["name"] == name)

    def _flex_refusal(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        """Flex-start's rules (about-flex-start-vms): at most 7 days' run, a termination action, no
        reservation, accelerator-optimized machine types but A4X and G4."""
        scheduling = body.get("scheduling") or {}
        if scheduling.get("provisioningModel") != "FLEX_START":
            return None
        machine = body.get("machineType", "").rsplit("/", 1)[-1]
        seconds = int((scheduling.get("maxRunDuration") or {}).get("seconds") or 0)
        if machine.split("-")[0] in ("n1", "g4", "a4x"):
            return _error(400, "invalid", f"Machine type {machine} does not support the FLEX_START provisioning model.")
        if not 0 < seconds <= 7 * 86400 or not scheduling.get("instanceTerminationAction"):
            return _error(
                400, "invalid", "FLEX_START needs a maxRunDuration of at most 7 days and a termination action."
            )
        if (body.get("reservationAffinity") or {}).get("consumeReservationType") != "NO_RESERVATION":
            return _error(400, "invalid", "FLEX_START instances must not consume reservations (NO_RESERVATION).")
        return None

    def _guest_attributes(self, vm: dict[str, Any], path: str) -> tuple[int, dict[str, Any]]:
        """instances.getGuestAttributes: the guest agent publishes a VM's host keys under
        `hostkeys/` (key: key type, value: base64) at first boot, and only when the instance or the
        project metadata has enable-guest-attributes=TRUE (cloud.google.com/compute/docs/metadata/
        manage-guest-attributes). A path with nothing under it is a 404, as the API answers."""
        metadata = {item["key"]: item["value"] for item in vm.get("metadata", {}).get("items", [])}
        enabled = {**self.project_metadata, **metadata}.get("enable-guest-attributes", "").upper() == "TRUE"
        keys = self.vm_host_keys(vm["name"]) if enabled and self.vm_host_keys and vm["name"] in self.vms else []
        items = [{"namespace": "hostkeys", "key": kind, "value": value} for kind, value in keys]
        if path != "hostkeys/" or not items:
            # The real API's words, as gcloud matches them (ssh_utils.GetHostKeysFromGuestAttributes).
            return _error(404, "notFound", f"The resource '{path}' of type 'Guest Attribute' was not found.")
        return 200, {"kind": "compute#guestAttributes", "queryPath": path, "queryValue": {"items": items}}

    def _serial_port(self, vm: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """instances.getSerialPortOutput: what the VM printed on its first serial port. Ubuntu's
        images run cloud-init, whose keys_to_console prints the SSH host keys between these markers
        (canonical/cloud-init tools/write-ssh-key-fingerprints); Debian's run no cloud-init and
        print none."""
        image = ((vm.get("disks") or [{}])[0].get("initializeParams") or {}).get("sourceImage", "")
        lines = ["[    0.000000] Linux version 6.8.0-1015-gcp (buildd@lcy02-amd64-079)", "Booting..."]
        if "ubuntu" in image:
            lines.append("[   12.345678] cloud-init[812]: Cloud-init v. 24.4.1 running 'modules:config'")
            keys = self.vm_host_keys(vm["name"]) if self.vm_host_keys and vm["name"] in self.vms else []
            if keys:
                lines.append("-----BEGIN SSH HOST KEY KEYS-----")
                lines += [f"{kind} {value} root@{vm['name']}" for kind, value in keys]
                lines.append("-----END SSH HOST KEY KEYS-----")
        else:
            lines.append("google_guest_agent[601]: GCE Agent Started (version 20240701.00)")
        contents = self.console.get(vm["name"], "\n".join(lines) + "\n")
        return 200, {"kind": "compute#serialPortOutput", "contents": contents, "start": "0", "next": str(len(contents))}

    def _policy_error(self, constraint: str, detail: str = "") -> tuple[int, dict[str, Any]]:
        """The API's refusal for a constraint in force (compute-image-tools#1834 and packer#7846 show
        its form: "Constraint constraints/NAME violated for project NUMBER. DETAIL")."""
        message = f"Constraint constraints/{constraint} violated for project 123456789.{' ' + detail if detail else ''}"
        return _error(412, "conditionNotMet", message)

    def _policy_refusal(self, zone: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        """An insert the organization policies in force refuse, as the API refuses it."""
        interfaces = body.get("networkInterfaces") or [{"accessConfigs": [{}]}]
        if self.policies.get("compute.vmExternalIpAccess") and any(i.get("accessConfigs") for i in interfaces):
            return self._policy_error(
                "compute.vmExternalIpAccess",
                f"Add instance projects/{self.project}/zones/{zone}/instances/{body.get('name')} to the constraint "
                "to use external IP with it.",
            )
        metadata = {item["key"]: item["value"] for item in (body.get("metadata") or {}).get("items", [])}
        if self.policies.get("compute.requireOsLogin") and metadata.get("enable-oslogin", "").upper() == "FALSE":
            return self._policy_error("compute.requireOsLogin")
        shielded = body.get("shieldedInstanceConfig") or {}
        if self.policies.get("compute.requireShieldedVm") and not shielded.get("enableSecureBoot"):
            return self._policy_error(
                "compute.requireShieldedVm", "Secure Boot is not enabled in the 'shielded_instance_config' field."
            )
        image = ((body.get("disks") or [{}])[0].get("initializeParams") or {}).get("sourceImage", "")
        image_project = image.split("/")[1] if image.startswith("projects/") else ""
        allowed = self.policies.get("compute.trustedImageProjects")
        if allowed is not None and f"projects/{image_project}" not in allowed:
            return self._policy_error("compute.trustedImageProjects")
        for account in body.get("serviceAccounts") or []:
            if self.act_as is not None and account.get("email") not in self.act_as:
                email = account.get("email")
                return _error(
                    403,
                    "forbidden",
                    f"Required 'iam.serviceAccounts.actAs' permission for 'projects/{self.project}/serviceAccounts/{email}'",
                )
        return None

    def _insert(self, zone: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name = body.get("name", "")
        if any(name in vms for vms in self.instances.values()):
            return _error(
                409,
                "alreadyExists",
                f"The resource 'projects/{self.project}/zones/{zone}/instances/{name}' already exists",
            )
        if zone in self.scenario.insert_errors:
            status, reason, message, *hint = self.scenario.insert_errors[zone]
            return _error(status, reason, message, zones_available=hint[0] if hint else None)
        target = f"{self.endpoint}{PREFIX}{self.project}/zones/{zone}/instances/{name}"
        missing = self._missing_network(zone, body)
        if missing:
            return _error(404, "notFound", f"The resource '{missing}' was not found")
        image = ((body.get("disks") or [{}])[0].get("initializeParams") or {}).get("sourceImage", "")
        if f"projects/{self.project}/global/images/" in image and self.image_of(image) is None:
            return _error(404, "notFound", f"The resource '{image[image.index('projects/') :]}' was not found")
        refused = (
            self._refusal(zone, body)
            or self._policy_refusal(zone, body)
            or self._flex_refusal(body)
            or self._reservation_refusal(zone, body)
        )
        if refused:
            return refused
        reserved = (body.get("reservationAffinity") or {}).get("consumeReservationType") == "SPECIFIC_RESERVATION"
        # A reservation's quota was drawn when it was made; its VMs draw none.
        draws = [] if reserved else self._quota_draws(zone, body)
        for where, metric, amount in draws:
            limit, usage = self._quotas(where).get(metric, [float("inf"), 0])
            if usage + amount > limit:
                scope = "globally" if where == "global" else f"in region {where}"
                return _error(403, "QUOTA_EXCEEDED", f"Quota '{metric}' exceeded.  Limit: {limit:g} {scope}.")
        if zone in self.scenario.stockout:
            error: dict[str, Any] = {
                "code": "ZONE_RESOURCE_POOL_EXHAUSTED",
                "message": f"The zone 'projects/{self.project}/zones/{zone}' does not have enough resources available to fulfill the request.",
            }
            hint = self.scenario.stockout[zone]
            if hint:
                error["errorDetails"] = [
                    {
                        "errorInfo": {
                            "reason": "RESOURCE_AVAILABILITY",
                            "domain": "compute.googleapis.com",
                            "metadatas": {"zonesAvailable": ",".join(hint)},
                        }
                    }
                ]
            return 200, self._operation(zone, "insert", target, {"errors": [error]})
        # Loopback only: nothing a test does may reach another address range, even by mistake.
        address = self.vm_factory(name, zone, body) if self.vm_factory else f"127.0.0.{next(self._addresses)}"
        instance = self.instances.setdefault(zone, {})[name] = self._instance(zone, body, address)
        if (body.get("scheduling") or {}).get("provisioningModel") == "FLEX_START":
            queue = self.scenario.flex_queue_seconds
            instance["status"] = "PENDING"
            self._pending_until[name] = float("inf") if queue is None else time.monotonic() + queue
        if reserved:
            self._reservation_of(zone, body)["specificReservation"]["inUseCount"] = str(
                int(self._reservation_of(zone, body)["specificReservation"]["inUseCount"]) + 1
            )
        for where, metric, amount in draws:
            if metric in self._quotas(where):
                self._quotas(where)[metric][1] += amount
        self._draws[name] = draws
        return 200, self._operation(zone, "insert", target)

    def image_of(self, source: str) -> dict[str, Any] | None:
        """The project's image a sourceImage names (.../global/images/NAME or .../images/family/F:
        the family's newest), else None."""
        family = re.search(r"/global/images/family/([^/]+)$", source)
        if family:
            members = [i for i in self.images.values() if i.get("family") == family[1] and i["status"] == "READY"]
            return members[-1] if members else None  # the newest: made last
        named = re.search(r"/global/images/([^/]+)$", source)
        return self.images.get(named[1]) if named else None

    def _images(
        self, method: str, route: str, query: dict[str, list[str]], body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]] | None:
        """images.insert (from a VM's boot disk), get, getFromFamily, list, delete; None: not an image route."""
        if method == "POST" and route == "/global/images":
            return self._insert_image(body, query.get("forceCreate", ["false"])[0] == "true")
        if method == "GET" and route == "/global/images":
            return 200, {"items": sorted(self.images.values(), key=lambda i: i["name"])}
        m = re.fullmatch(r"/global/images/(family/)?([^/]+)", route)
        if not m:
            return None
        found = self.image_of(f"/global/images/{m[1] or ''}{m[2]}")
        if found is None:
            return _error(
                404,
                "notFound",
                f"The resource 'projects/{self.project}/global/images/{m[1] or ''}{m[2]}' was not found",
            )
        if method == "GET":
            return 200, found
        if method == "DELETE" and not m[1]:
            del self.images[found["name"]]
            return 200, self._operation(None, "delete", found["selfLink"])
        return _error(400, "badRequest", f"unsupported {method} {route}")

    def _insert_image(self, body: dict[str, Any], force: bool) -> tuple[int, dict[str, Any]]:
        if self.image_error:
            return _error(*self.image_error)
        name = body.get("name", "")
        if not re.fullmatch(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?", name):
            return _error(400, "invalid", f"Invalid value for field 'resource.name': '{name}'.")
        for key, value in (body.get("labels") or {}).items():  # gcloud's labels_util formats
            if not re.fullmatch(r"[a-z][-_a-z0-9]{0,62}", key) or not re.fullmatch(r"[-_a-z0-9]{0,63}", value):
                return _error(400, "invalid", f"Invalid value for field 'resource.labels': '{key}: {value}'.")
        if name in self.images:
            return _error(
                409, "alreadyExists", f"The resource 'projects/{self.project}/global/images/{name}' already exists"
            )
        source = body.get("sourceDisk", "")
        path = source[source.index("projects/") :] if "projects/" in source else f"projects/{self.project}/{source}"
        owner = next(
            (
                (zone, vm)
                for zone, vms in self.instances.items()
                for vm in vms.values()
                if any(d["source"].endswith(path) for d in vm["disks"] if d.get("boot"))
            ),
            None,
        )
        if owner is None:
            return _error(404, "notFound", f"The resource '{path}' was not found")
        zone, vm = owner
        # gcloud's --force help: "image creation fails when it is created from a disk that is
        # attached to a running instance" (the message below is the test bed's wording).
        if vm["status"] != "TERMINATED" and not force:
            return _error(
                400,
                "resourceInUseByAnotherResource",
                f"The disk resource '{path}' is already being used by "
                f"'projects/{self.project}/zones/{zone}/instances/{vm['name']}'",
            )
        size = self.image_factory(name, vm["name"]) if self.image_factory else 0
        self_link = f"{self.endpoint}{PREFIX}{self.project}/global/images/{name}"
        self.images[name] = {
            "kind": "compute#image",
            "id": str(next(self._ids)),
            "name": name,
            "family": body.get("family", ""),
            "description": body.get("description", ""),
            "labels": dict(body.get("labels") or {}),
            "sourceDisk": f"{self.endpoint}{PREFIX}{path}",
            "sourceType": "RAW",
            "status": "READY",
            "diskSizeGb": vm["disks"][0]["diskSizeGb"],
            "archiveSizeBytes": str(size),
            "creationTimestamp": _now(),
            "selfLink": self_link,
        }
        return 200, self._operation(None, "insert", self_link)

    def _quotas(self, where: str) -> dict[str, list[float]]:
        return self.project_quotas if where == "global" else self.regional.setdefault(where, {})

    def _missing_network(self, zone: str, body: dict[str, Any]) -> str | None:
        """The network or subnetwork an insert names that doesn't exist, as the API names it."""
        region = zone.rsplit("-", 1)[0]
        for interface in body.get("networkInterfaces") or [{"network": "global/networks/default"}]:
            subnet = interface.get("subnetwork", "")
            if subnet.startswith("projects/") and not subnet.startswith(f"projects/{self.project}/"):
                if subnet not in self.shared_subnets:
                    return subnet
                continue
            network = interface.get("network", "").rsplit("/", 1)[-1] or "default"
            if network not in self.networks:
                return f"projects/{self.project}/global/networks/{network}"
            if subnet:
                parts = re.fullmatch(r".*regions/([^/]+)/subnetworks/([^/]+)", subnet)
                if parts is None:
                    return subnet
                subnet_region, subnet_name = parts.groups()
                subnets = self.networks[network]
                if subnet_region != region or subnets.get(subnet_region, subnets.get("*")) != subnet_name:
                    return f"projects/{self.project}/regions/{subnet_region}/subnetworks/{subnet_name}"
        return None

    def _refusal(self, zone: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        """What the API refuses in the request itself: a disk type the series doesn't take, a
        machine type not sold that way. (Its messages here are stand-ins of the real ones' form.)"""
        # Label keys and values (cloud.google.com/compute/docs/labeling-resources, "Requirements
        # for labels"): keys a lowercase letter then [a-z0-9_-], values [a-z0-9_-], 63 at most.
        for key, value in (body.get("labels") or {}).items():
            if not re.fullmatch(r"[a-z][a-z0-9_-]{0,62}", key) or not re.fullmatch(r"[a-z0-9_-]{0,63}", value):
                return _error(400, "invalid", f"Invalid value for field 'resource.labels': '{key}: {value}'.")
        machine = body.get("machineType", "").rsplit("/", 1)[-1]
        if machine in self.machine_zones and zone not in self.machine_zones[machine]:
            return _error(
                400,
                "invalid",
                f"Invalid value for field 'resource.machineType': '{body.get('machineType')}'. Machine type with "
                f"name '{machine}' does not exist in zone '{zone}'.",
            )
        params = (body.get("disks") or [{}])[0].get("initializeParams", {})
        disk = (params.get("diskType") or "pd-standard").rsplit("/", 1)[-1]
        if disk not in DISK_TYPES.get(series(machine), {disk}):
            return _error(
                400, "UNSUPPORTED_OPERATION", f"[{disk}, {machine}] features are not compatible for creating instance."
            )
        model = (body.get("scheduling") or {}).get("provisioningModel")
        reserved = (body.get("reservationAffinity") or {}).get("consumeReservationType") == "SPECIFIC_RESERVATION"
        spot = model in ("SPOT", "FLEX_START")
        if (machine in RESERVATION_ONLY and not reserved) or (machine in SPOT_ONLY and not (spot or reserved)):
            how = "a reservation" if machine in RESERVATION_ONLY else "the Spot or Flex-start provisioning models"
            return _error(400, "UNSUPPORTED_OPERATION", f"Machine type {machine} is available only with {how}.")
        return None

    def _quota_draws(self, zone: str, body: dict[str, Any]) -> list[tuple[str, str, float]]:
        """(where, metric, amount) a VM draws: GPUs and vCPUs regionally and project-wide. A Spot
        VM draws PREEMPTIBLE_ quota where the region has some (limit > 0), else the standard
        quota (cloud.google.com/compute/docs/instances/create-use-spot)."""
        region = zone.rsplit("-", 1)[0]
        machine = body.get("machineType", "").rsplit("/", 1)[-1]
        # Flex-start VMs draw the preemptible quota as Spot VMs do (about-flex-start-vms).
        spot = (body.get("scheduling") or {}).get("provisioningModel") in ("SPOT", "FLEX_START")
        quotas = self._quotas(region)

        def chosen(metric: str) -> str:
            preemptible = f"PREEMPTIBLE_{metric}"
            return preemptible if spot and quotas.get(preemptible, [0, 0])[0] > 0 else metric

        accelerators = body.get("guestAccelerators") or []
        gpus = sum(int(a.get("acceleratorCount", 0)) for a in accelerators)
        gpu = (
            accelerators[0]["acceleratorType"].rsplit("/", 1)[-1]
            if accelerators
            else ATTACHED.get(machine.split("-")[0])
        )
        if not accelerators and gpu:
            gpus = int(machine.rsplit("-", 1)[1].rstrip("g")) if machine[-1] == "g" else 1
        draws = [("global", "CPUS_ALL_REGIONS", float(vcpus(machine)))]
        if gpu:
            draws += [("global", "GPUS_ALL_REGIONS", float(gpus)), (region, chosen(GPU_METRICS[gpu]), float(gpus))]
        if series(machine) in CPU_METRICS:
            preemptible_cpus = spot and quotas.get("PREEMPTIBLE_CPUS", [0, 0])[0] > 0
            cpu_metric = "PREEMPTIBLE_CPUS" if preemptible_cpus else CPU_METRICS[series(machine)]
            draws.append((region, cpu_metric, float(vcpus(machine))))
        return draws

    def _page(self, items: dict[str, Any], query: dict[str, list[str]]) -> dict[str, Any]:
        keys = sorted(items)
        start = int(query.get("pageToken", ["0"])[0])
        page = {k: items[k] for k in keys[start : start + self.page_size]}
        result: dict[str, Any] = {"items": page}
        if start + self.page_size < len(keys):
            result["nextPageToken"] = str(start + self.page_size)
        return result

    def _handler(self) -> type:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}") if length else None
                status, payload = fake.handle(method, self.path, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000-00:00", time.gmtime())


def _error(
    status: int, reason: str, message: str, info_reason: str = "", zones_available: list[str] | None = None
) -> tuple[int, dict[str, Any]]:
    """An error as the Compute API sends it: `errors` with the reason and, where the real one has
    them, an ErrorInfo in `details` (a disabled API: SERVICE_DISABLED) or the compute-specific
    `errorDetails` with a zonesAvailable hint."""
    item: dict[str, Any] = {"reason": reason, "message": message, "domain": "global"}
    if zones_available:
        item["errorDetails"] = [
            {
                "errorInfo": {
                    "reason": "RESOURCE_AVAILABILITY",
                    "metadatas": {"zonesAvailable": ",".join(zones_available)},
                }
            }
        ]
    error: dict[str, Any] = {"code": status, "message": message, "errors": [item]}
    if info_reason:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": info_reason,
                "domain": "googleapis.com",
                "metadata": {"service": "compute.googleapis.com"},
            }
        ]
    return status, {"error": error}
