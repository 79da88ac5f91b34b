"""A thin adapter over google-cloud-compute (imported here only) that returns plain dataclasses.

Every client is built with the same client options (a custom endpoint included), and operations
are awaited with `ZoneOperationsClient.wait` built likewise: the library's own `operation.result()`
polls through a client without the custom endpoint. The library's automatic retries are off
(`retry=None`), so every call is one HTTP request and tfrig's own bounded retries decide.
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from invoke.exceptions import Exit

CALL_TIMEOUT = 60.0
# zoneOperations.wait holds a request until the operation is DONE or "the request approaches the
# 2 minute deadline" (Compute API reference, zoneOperations.wait), so one wait call needs a client
# timeout longer than that; the overall deadline (gcp.operation_timeout) is tfrig's own.
WAIT_HOLD = 120.0
WAIT_CALL_TIMEOUT = WAIT_HOLD + 30.0
RETRIES = 4
_RETRYABLE_REASONS = {"rateLimitExceeded", "RESOURCE_OPERATION_RATE_EXCEEDED", "UNAVAILABLE", "backendError"}


# The key types gcloud takes from guest attributes (ssh_utils.SUPPORTED_HOSTKEY_TYPES).
HOST_KEY_TYPES = ("ssh-rsa", "ssh-ed25519", "ecdsa-sha2-nistp256")


@dataclass(frozen=True)
class Image:
    """One of the project's own images, as gcp.images lists it."""

    name: str
    family: str
    labels: dict[str, str]
    status: str
    disk_size_gb: int
    archive_size_bytes: int  # what Cloud Storage bills for it
    created: str


def _image(item: Any) -> Image:
    return Image(
        name=item.name,
        family=item.family,
        labels=dict(item.labels),
        status=item.status,
        disk_size_gb=int(item.disk_size_gb),
        archive_size_bytes=int(item.archive_size_bytes),
        created=item.creation_timestamp,
    )


@dataclass
class Vm:
    name: str
    zone: str
    status: str
    machine_type: str
    address: str | None
    labels: dict[str, str] = field(default_factory=dict)
    internal_address: str | None = None  # its VPC address, where other VMs of the network reach it
    metadata: dict[str, str] = field(default_factory=dict)
    gpu: str | None = None
    gpus: int = 0
    spot: bool = False
    flex: bool = False  # Flex-start
    started: str = ""  # RFC 3339: when it last started (or was created)
    boot_disk: str = ""  # its boot disk, projects/P/zones/Z/disks/D (what gcp.bake makes an image of)

    def uptime_hours(self, now: float | None = None) -> float | None:
        """Hours since it last started, while it runs; None when stopped or unknown."""
        import datetime

        if self.status != "RUNNING" or not self.started:
            return None
        try:
            since = datetime.datetime.fromisoformat(self.started.replace("Z", "+00:00"))
        except ValueError:
            return None
        seconds = (now if now is not None else time.time()) - since.timestamp()
        return max(seconds, 0.0) / 3600

    def hourly(self) -> float | None:
        """About what it costs per hour while it runs (tfrig.gce.prices), or None if not known."""
        from tfrig.gce import prices as gceprice

        if not self.gpu:
            return None
        region = self.zone.rsplit("-", 1)[0]
        return gceprice.hourly(self.machine_type, self.gpu, self.gpus, self.spot, region, flex=self.flex)

    @property
    def created_by_tfrig(self) -> bool:
        return self.labels.get("created-by") == "tfrig"

    @property
    def owner(self) -> str | None:
        """Whose it is: the label gcp.create sets from the creating account (None: an older tfrig's)."""
        from tfrig.gce.plan import OWNER_LABEL

        return self.labels.get(OWNER_LABEL)


@dataclass
class OperationResult:
    name: str
    errors: list[dict[str, Any]]  # {"code", "message", "zones_available": [...]}

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def message(self) -> str:
        return "; ".join(f"{e['code']}: {e['message']}" for e in self.errors)


# The other Google APIs tfrig calls, by the client name it uses: (module, class, API name); each
# has its endpoint setting gcp.<API name>_endpoint.
_OTHER_APIS = {
    "OsLoginServiceClient": ("google.cloud.oslogin_v1", "OsLoginServiceClient", "oslogin"),
    "ResourceManagerClient": ("google.cloud.resourcemanager_v3", "ProjectsClient", "resourcemanager"),
    "OrgPolicyClient": ("google.cloud.orgpolicy_v2", "OrgPolicyClient", "orgpolicy"),
    "CloudCatalogClient": ("google.cloud.billing_v1", "CloudCatalogClient", "billing"),
}


@dataclass
class Policy:
    """An organization policy in force (Cloud.effective_policy): a boolean constraint's enforce; a
    list constraint's denyAll or allowed values (empty: all allowed)."""

    enforced: bool = False
    deny_all: bool = False
    allowed: list[str] = field(default_factory=list)


@dataclass
class Reservation:
    """A reservation a VM can consume (reservations.aggregatedList)."""

    name: str
    project: str
    zone: str
    machine_type: str
    gpu: str | None
    gpus: int  # per VM
    count: int
    in_use: int
    specific_only: bool  # consumed only by VMs that name it
    dense: bool  # deploymentType DENSE: its VMs are RESERVATION_BOUND
    status: str
    shared_from: bool = False  # another project's, shared with this one

    @property
    def reference(self) -> str:
        """What a VM's reservationAffinity names: NAME here, projects/P/reservations/NAME when shared."""
        return self.name if not self.shared_from else f"projects/{self.project}/reservations/{self.name}"


@dataclass
class ConsoleKeys:
    """What a VM's serial console says of its SSH host keys (Cloud.serial_host_keys)."""

    keys: list[tuple[str, str]]
    cloud_init: bool  # cloud-init ran (it prints the keys late in the boot)
    unreadable: str = ""  # the API's answer where the console could not be read


class ApiError(Exception):
    """An API call failed; `reason` is GCE's error reason, `status` the HTTP status."""

    def __init__(self, status: int, reason: str, message: str, zones_available: list[str] | None = None) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message
        self.zones_available = zones_available or []
        self.project = ""  # set by the Cloud that made the call

    @property
    def service_disabled(self) -> bool:
        """The API is not enabled in the project (its ErrorInfo reason, or its words)."""
        return self.reason in ("SERVICE_DISABLED", "accessNotConfigured") or "API has not been used" in self.message

    @property
    def retryable(self) -> bool:
        return self.status == 429 or self.status >= 500 or self.reason in _RETRYABLE_REASONS


def _last(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


class Cloud:
    def __init__(
        self,
        project: str,
        endpoint: str | None = None,
        credentials: str | None = None,
        retry_delay: float = 1.0,
        endpoints: dict[str, str | None] | None = None,
    ) -> None:
        self.project = project
        self.endpoint = _checked_endpoint(endpoint) if endpoint else None
        # The other APIs' endpoints by name (oslogin, resourcemanager, orgpolicy, billing: gcp.NAME_endpoint).
        self.endpoints = {
            api: _checked_endpoint(url, f"gcp.{api}_endpoint") for api, url in (endpoints or {}).items() if url
        }
        self.retry_delay = retry_delay
        self.anonymous = credentials == "anonymous"
        self.credentials = self._credentials(credentials)
        self._clients: dict[str, Any] = {}

    def _credentials(self, mode: str | None) -> Any:
        if mode == "anonymous":
            if not self.endpoint:
                raise Exit(
                    "gcp.credentials: anonymous works only with an explicit gcp.endpoint (a private or test API)."
                )
            from google.auth.credentials import AnonymousCredentials

            return AnonymousCredentials()
        named = [("gcp.endpoint", self.endpoint)] + [
            (f"gcp.{api}_endpoint", url) for api, url in self.endpoints.items()
        ]
        for setting, endpoint in named:
            if endpoint and endpoint.lower().startswith("http://"):
                # A bearer token in clear text is anyone's on the way: real credentials go over https only.
                raise Exit(
                    f"{setting} {endpoint[:80]!r} is plain http, which would carry your Google token in clear "
                    "text: use an https endpoint, or gcp.credentials: anonymous for a test API."
                )
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError

        try:
            credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
        except DefaultCredentialsError:
            raise Exit(
                "No Google Cloud credentials: run `gcloud auth application-default login`, or set "
                "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file."
            ) from None
        return credentials

    def account(self) -> str | None:
        """The account the credentials act as, where they say: a service account's email, or the
        user account that gcloud's application-default login recorded."""
        for attribute in ("service_account_email", "account"):
            value = getattr(self.credentials, attribute, None)
            if isinstance(value, str) and "@" in value:
                return value
        return None

    def client(self, name: str) -> Any:
        """A client of the Compute API (compute_v1's client class `name`) or of one of _OTHER_APIS."""
        if name not in self._clients:
            import importlib

            if name in _OTHER_APIS:
                module_name, class_name, api = _OTHER_APIS[name]
                endpoint = self.endpoints.get(api)
                if self.anonymous and not endpoint:
                    raise Exit(
                        f"gcp.credentials: anonymous works only with explicit endpoints: set gcp.{api}_endpoint too "
                        "(a private or test API)."
                    )
            else:
                module_name, class_name, endpoint = "google.cloud.compute_v1", name, self.endpoint
            module = importlib.import_module(module_name)
            options = {"api_endpoint": endpoint} if endpoint else None
            # REST, as compute_v1 is: one transport, the same proxies and errors, no gRPC channel.
            self._clients[name] = getattr(module, class_name)(
                credentials=self.credentials, client_options=options, transport="rest"
            )
        return self._clients[name]

    def call(
        self, client: str, method: str, *, timeout: float = CALL_TIMEOUT, retry_timeouts: bool = True, **request: Any
    ) -> Any:
        """An API request, retried with backoff on rate limits, 5xx and (unless told) timeouts, at
        most RETRIES times; then an ApiError whose message says it was retried. Past PROGRESS_AFTER
        seconds it says on stderr what it waits for (an operation's wait is its caller's to show)."""
        tries: list[int] = [1]
        with _progress(f"{client.removesuffix('Client')}.{method}", timeout, tries, quiet=method == "wait"):
            for attempt in range(RETRIES + 1):
                tries[0] = attempt + 1
                try:
                    return self._call_once(client, method, timeout, **request)
                except ApiError as exc:
                    exc.project = self.project
                    if not (exc.retryable or (retry_timeouts and exc.reason == "TIMEOUT")):
                        raise
                    if attempt == RETRIES:
                        exc.message = f"{exc.message} (still failing after {RETRIES + 1} tries)"
                        raise
                    time.sleep(self.retry_delay * 2**attempt)
        raise AssertionError("unreachable")

    def _call_once(self, client: str, method: str, timeout: float, **request: Any) -> Any:
        import requests
        from google.api_core import exceptions as api
        from google.auth.exceptions import RefreshError, TransportError

        try:
            return getattr(self.client(client), method)(**request, retry=None, timeout=timeout)
        except RefreshError:
            raise Exit(
                "Your Google Cloud credentials have expired or were revoked: run "
                "`gcloud auth application-default login` again."
            ) from None
        except TransportError as exc:
            raise ApiError(0, "UNAVAILABLE", f"can't reach the Compute API: {exc}") from None
        except api.GoogleAPICallError as exc:
            raise _api_error(exc) from None
        except requests.exceptions.Timeout:
            raise ApiError(0, "TIMEOUT", f"the Compute API did not answer within {timeout:.0f} s") from None
        except OSError as exc:  # connection refused, reset: the service is unreachable
            raise ApiError(0, "UNAVAILABLE", f"can't reach the Compute API: {exc}") from None

    # --- reads ------------------------------------------------------------------------------------

    def accelerator_zones(self, gpu: str) -> dict[str, int]:
        """Zones that offer `gpu`, with the most cards one VM can have there."""
        return self.accelerator_zones_all().get(gpu, {})

    def accelerator_zones_all(self) -> dict[str, dict[str, int]]:
        """Every accelerator type: the zones that offer it, with the most cards one VM can have there."""
        pages = self.call("AcceleratorTypesClient", "aggregated_list", project=self.project)
        offered: dict[str, dict[str, int]] = {}
        for scope, scoped in pages:
            for accelerator in scoped.accelerator_types:
                offered.setdefault(accelerator.name, {})[_last(scope)] = int(
                    accelerator.maximum_cards_per_instance or 0
                )
        return offered

    def machine_type_zones(self, machine_type: str) -> set[str]:
        """Zones that offer `machine_type` (machineTypes.aggregatedList, filtered by name)."""
        request = {"project": self.project, "filter": f'name = "{machine_type}"'}
        pages = self.call("MachineTypesClient", "aggregated_list", request=request)
        return {_last(scope) for scope, scoped in pages if any(m.name == machine_type for m in scoped.machine_types)}

    def reservations(self, project: str | None = None, name: str | None = None) -> list[Reservation]:
        """The reservations of `project` (this one by default), or the one named `name`."""
        owner = project or self.project
        request: dict[str, Any] = {"project": owner}
        if name:
            request["filter"] = f'name = "{name}"'
        pages = self.call("ReservationsClient", "aggregated_list", request=request)
        found = []
        for _, scoped in pages:
            for item in scoped.reservations:
                specific = item.specific_reservation
                properties = specific.instance_properties
                accelerators = list(properties.guest_accelerators)
                attached_gpu, attached_count = (None, 0) if accelerators else _attached(properties.machine_type)
                found.append(
                    Reservation(
                        name=item.name,
                        project=owner,
                        zone=_last(item.zone),
                        machine_type=properties.machine_type,
                        gpu=_last(accelerators[0].accelerator_type) if accelerators else attached_gpu,
                        gpus=sum(a.accelerator_count for a in accelerators) or attached_count,
                        count=int(specific.count),
                        in_use=int(specific.in_use_count),
                        specific_only=bool(item.specific_reservation_required),
                        dense=item.deployment_type == "DENSE",
                        status=item.status,
                        shared_from=owner != self.project,
                    )
                )
        return [r for r in found if not name or r.name == name]

    def preempted(self) -> set[str]:
        """The VMs of the project Compute Engine preempted, by their operations (operationType
        compute.instances.preempted, as `gcloud compute operations list` filters them)."""
        request = {"project": self.project, "filter": 'operationType = "compute.instances.preempted"'}
        pages = self.call("GlobalOperationsClient", "aggregated_list", request=request)
        return {_last(op.target_link) for _, scoped in pages for op in scoped.operations}

    def region_quotas(self, region: str) -> dict[str, tuple[float, float]]:
        found = self.call("RegionsClient", "get", project=self.project, region=region)
        return {q.metric: (q.limit, q.usage) for q in found.quotas}

    def project_info(self) -> tuple[dict[str, tuple[float, float]], dict[str, str]]:
        """Project-wide quotas (GPUS_ALL_REGIONS) and common instance metadata (enable-oslogin)."""
        found = self.call("ProjectsClient", "get", project=self.project)
        metadata = {item.key: item.value for item in found.common_instance_metadata.items}
        return {q.metric: (q.limit, q.usage) for q in found.quotas}, metadata

    def has_nat(self, region: str, network: str, subnet: str) -> bool:
        """Whether a Cloud Router in `region` gives `subnet` of `network` NAT (a Router's `nats`:
        sourceSubnetworkIpRangesToNat ALL_SUBNETWORKS_*, or LIST_OF_SUBNETWORKS naming it)."""
        for router in self.call("RoutersClient", "list", project=self.project, region=region):
            if _last(router.network) != network:
                continue
            for nat in router.nats:
                mode = nat.source_subnetwork_ip_ranges_to_nat
                if mode.startswith("ALL_SUBNETWORKS"):
                    return True
                if mode == "LIST_OF_SUBNETWORKS" and any(_last(item.name) == subnet for item in nat.subnetworks):
                    return True
        return False

    def has_network(self, network: str) -> bool:
        try:
            self.call("NetworksClient", "get", project=self.project, network=network)
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def ssh_access(self, network: str = "default", tags: tuple[str, ...] = (), iap: bool = False) -> tuple[str, bool]:
        """Whether SSH from the internet (or, with `iap`, from IAP's range) reaches tfrig's VMs on
        `network` with `tags`, and whether any firewall rule names that network. The network's
        effective firewalls (networks.getEffectiveFirewalls: its VPC rules and the firewall
        policies over it) decide (tfrig.gce.plan.effective_verdict); where those may not be read
        (compute.networks.getEffectiveFirewalls not granted) or the network isn't there, its VPC
        rules alone (firewalls.list)."""
        from tfrig.gce.plan import effective_verdict

        policies: list[dict[str, Any]] = []
        try:
            found = self.call("NetworksClient", "get_effective_firewalls", project=self.project, network=network)
            rules = [_firewall(rule) for rule in found.firewalls]
            policies = [
                {
                    "name": policy.short_name or policy.display_name or policy.name,
                    "type": policy.type_,
                    "rules": [
                        {
                            "action": rule.action,
                            "direction": rule.direction or "INGRESS",
                            "disabled": rule.disabled,
                            "priority": rule.priority,
                            "src_ranges": list(rule.match.src_ip_ranges),
                            "layer4": [(c.ip_protocol, list(c.ports)) for c in rule.match.layer4_configs],
                            "target_resources": list(rule.target_resources),
                            "target_service_accounts": list(rule.target_service_accounts),
                            "target_secure_tags": list(rule.target_secure_tags),
                        }
                        for rule in policy.rules
                    ],
                }
                for policy in found.firewall_policys
            ]
        except ApiError as exc:
            if exc.status not in (403, 404):
                raise
            rules = [_firewall(rule) for rule in self.call("FirewallsClient", "list", project=self.project)]
        named = any(rule["network"].rstrip("/").rsplit("/", 1)[-1] == network for rule in rules)
        return effective_verdict(policies, rules, network, tags, iap), named

    def vms(self, name: str | None = None, tfrig_only: bool = True) -> list[Vm]:
        """VMs across all zones: tfrig's by label, or any with a given name."""
        filters = []
        if name:
            filters.append(f'name = "{name}"')
        if tfrig_only:
            filters.append('labels.created-by = "tfrig"')
        request: dict[str, Any] = {"project": self.project}
        if filters:
            request["filter"] = " AND ".join(filters)
        found = []
        for _scope, scoped in self.call("InstancesClient", "aggregated_list", request=request):
            found += [_vm(instance) for instance in scoped.instances]
        return [vm for vm in found if (not name or vm.name == name) and (not tfrig_only or vm.created_by_tfrig)]

    def get_vm(self, zone: str, name: str) -> Vm | None:
        try:
            return _vm(self.call("InstancesClient", "get", project=self.project, zone=zone, instance=name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def host_keys(self, zone: str, name: str) -> list[tuple[str, str]]:
        """The SSH host keys the VM's guest agent published in its guest attributes (namespace
        `hostkeys`, key = key type, value = base64), read as `gcloud compute ssh` reads them
        (command_lib/compute/ssh_utils.py, GetHostKeysFromGuestAttributes): known key types only,
        each value cut at its first whitespace and kept only if it is base64, so a guest can't
        write lines of its own into a known-hosts file. [] while none are published: the API
        answers 404 ("The resource 'hostkeys/' of type 'Guest Attribute' was not found", the text
        gcloud matches). Needs `enable-guest-attributes=TRUE` in the metadata."""
        import base64
        import binascii

        request = {"project": self.project, "zone": zone, "instance": name, "query_path": "hostkeys/"}
        try:
            found = self.call("InstancesClient", "get_guest_attributes", request=request)
        except ApiError as exc:
            if exc.status in (400, 404):  # not published yet, or guest attributes off
                return []
            raise
        keys = []
        for item in found.query_value.items:
            words = item.value.split()
            if item.namespace != "hostkeys" or item.key not in HOST_KEY_TYPES or not words:
                continue
            try:
                if base64.b64encode(base64.b64decode(words[0], validate=True)).decode() == words[0]:
                    keys.append((item.key, words[0]))
            except (binascii.Error, ValueError):
                continue
        return keys

    def serial_host_keys(self, zone: str, name: str) -> ConsoleKeys:
        """The SSH host keys the VM printed on its serial console at boot (instances.
        getSerialPortOutput, port 1): cloud-init's keys_to_console prints them between
        "-----BEGIN SSH HOST KEY KEYS-----" and "-----END SSH HOST KEY KEYS-----"
        (canonical/cloud-init tools/write-ssh-key-fingerprints), which Ubuntu's images run; Debian's
        run no cloud-init. The last whole block counts (the latest boot); each key must parse as a
        key of its type (a console may wrap or cut a line). Where the console can't be read (an
        error answer), no keys and the reason."""
        import base64
        import binascii

        import paramiko

        request = {"project": self.project, "zone": zone, "instance": name, "port": 1}
        try:
            contents = str(self.call("InstancesClient", "get_serial_port_output", request=request).contents)
        except ApiError as exc:
            if exc.status in (400, 403, 404, 412):
                return ConsoleKeys([], cloud_init=False, unreadable=exc.message)
            raise
        blocks = re.findall(r"-----BEGIN SSH HOST KEY KEYS-----(.*?)-----END SSH HOST KEY KEYS-----", contents, re.S)
        keys = []
        for line in blocks[-1].splitlines() if blocks else []:
            found = re.search(r"(?:^|\s)(\S+) ([A-Za-z0-9+/]+={0,2})(?:\s|$)", line)
            if found is None or found[1] not in HOST_KEY_TYPES:
                continue
            try:
                paramiko.PKey.from_type_string(found[1], base64.b64decode(found[2], validate=True))
            except (binascii.Error, ValueError, paramiko.SSHException, TypeError):
                continue
            keys.append((found[1], found[2]))
        return ConsoleKeys(keys, cloud_init="cloud-init" in contents.lower())

    def granted(self, permissions: list[str]) -> list[str]:
        """Which of `permissions` the caller has on the project (Resource Manager v3
        projects.testIamPermissions; it needs no permission of its own)."""
        request = {"resource": f"projects/{self.project}", "permissions": permissions}
        return list(self.call("ResourceManagerClient", "test_iam_permissions", request=request).permissions)

    def effective_policy(self, constraint: str) -> Policy:
        """The organization policy in force on the project for `constraint` (Org Policy v2
        getEffectivePolicy): its rules' enforce, allowAll/denyAll and allowed values, merged."""
        name = f"projects/{self.project}/policies/{constraint}"
        found = self.call("OrgPolicyClient", "get_effective_policy", request={"name": name})
        policy = Policy()
        for rule in found.spec.rules:
            policy.enforced = policy.enforced or bool(rule.enforce)
            policy.deny_all = policy.deny_all or bool(rule.deny_all)
            if rule.values:
                policy.allowed += list(rule.values.allowed_values)
        return policy

    def login_profile_user(self, account: str) -> str | None:
        """The POSIX user of `account`'s OS Login profile in this project, if it has one yet (a read:
        OS Login API users.getLoginProfile)."""
        request = {"name": f"users/{account}", "project_id": self.project}
        found = self.call("OsLoginServiceClient", "get_login_profile", request=request)
        return _posix_user(found.posix_accounts)

    # --- changes ----------------------------------------------------------------------------------

    def import_ssh_key(self, account: str, public_key: str, seconds: int) -> str:
        """Add `public_key` to `account`'s OS Login profile for `seconds` (the OS Login API's
        users.importSshPublicKey, with the project, as gcloud and Airflow's ComputeEngineSSHHook
        do); the POSIX user to log in as: the profile's primary account, else its first. A service
        account's is sa_<its unique id>, a user's is derived from the email."""
        expires = int((time.time() + seconds) * 1_000_000)
        request = {
            "parent": f"users/{account}",
            "ssh_public_key": {"key": public_key, "expiration_time_usec": expires},
            "project_id": self.project,
        }
        found = self.call("OsLoginServiceClient", "import_ssh_public_key", request=request)
        user = _posix_user(found.login_profile.posix_accounts)
        if not user:
            raise ApiError(200, "noPosixAccount", f"the OS Login profile of {account} has no POSIX account")
        return user

    def insert(self, zone: str, body: Any, request_id: str) -> str:
        """Insert; the same `request_id` (a UUID) again returns the first insert's operation if that
        one landed, never a second VM (InsertInstanceRequest.request_id)."""
        request = {"project": self.project, "zone": zone, "instance_resource": body, "request_id": request_id}
        return str(self.call("InstancesClient", "insert_unary", request=request).name)

    def delete(self, zone: str, name: str) -> str:
        return str(self.call("InstancesClient", "delete_unary", project=self.project, zone=zone, instance=name).name)

    def stop(self, zone: str, name: str) -> str:
        return str(self.call("InstancesClient", "stop_unary", project=self.project, zone=zone, instance=name).name)

    def start(self, zone: str, name: str) -> str:
        return str(self.call("InstancesClient", "start_unary", project=self.project, zone=zone, instance=name).name)

    def create_image(self, name: str, family: str, source_disk: str, labels: dict[str, str], description: str) -> str:
        """images.insert from a boot disk (projects/P/zones/Z/disks/D) into an image family; the
        disk's VM must be stopped (gcloud's --force help: creation "fails when it is created from a
        disk that is attached to a running instance"). Returns the global operation's name."""
        image = {
            "name": name,
            "family": family,
            "source_disk": source_disk,
            "labels": labels,
            "description": description,
        }
        return str(self.call("ImagesClient", "insert_unary", project=self.project, image_resource=image).name)

    def images(self) -> list[Image]:
        """The project's own images (images.list), newest first."""
        found = [_image(item) for item in self.call("ImagesClient", "list", project=self.project)]
        return sorted(found, key=lambda image: image.created, reverse=True)

    def image_from_family(self, family: str) -> Image | None:
        """The newest image of one of the project's own families (images.getFromFamily), else None."""
        try:
            item = self.call("ImagesClient", "get_from_family", project=self.project, family=family)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return _image(item)

    def delete_image(self, name: str) -> str:
        return str(self.call("ImagesClient", "delete_unary", project=self.project, image=name).name)

    def wait(self, zone: str | None, operation: str, timeout: float = 600) -> OperationResult:
        """Await a zone operation with zoneOperations.wait (a global one, zone None, with
        globalOperations.wait), call after call (each returns when the operation is DONE or after
        about WAIT_HOLD, maybe not DONE), until `timeout` has passed: then an ApiError TIMEOUT, and
        the operation may still finish."""
        deadline = time.monotonic() + timeout
        client, where = ("ZoneOperationsClient", {"zone": zone}) if zone else ("GlobalOperationsClient", {})
        while True:
            remaining = deadline - time.monotonic()
            try:
                found = self.call(
                    client,
                    "wait",
                    timeout=max(min(WAIT_CALL_TIMEOUT, remaining), 1.0),
                    retry_timeouts=False,
                    project=self.project,
                    operation=operation,
                    **where,
                )
            except ApiError as exc:
                if exc.reason != "TIMEOUT":
                    raise
                found = None  # held past our timeout: not done yet
            if found is not None and _done(found):
                return OperationResult(name=operation, errors=_operation_errors(found))
            if time.monotonic() >= deadline:
                raise ApiError(
                    0, "TIMEOUT", f"operation {operation} in {zone or 'the project'} not done after {timeout:.0f} s"
                )


def _posix_user(accounts: Any) -> str | None:
    """The POSIX user of an OS Login profile's accounts: the primary one's, else the first's."""
    listed = list(accounts)
    chosen = next((a for a in listed if a.primary), listed[0] if listed else None)
    return str(chosen.username) if chosen is not None and chosen.username else None


def _firewall(rule: Any) -> dict[str, Any]:
    """A VPC firewall rule as tfrig.gce.plan's verdicts read it."""
    return {
        "name": rule.name,
        "network": rule.network,
        "disabled": rule.disabled,
        "direction": rule.direction or "INGRESS",
        "priority": rule.priority if "priority" in rule else 1000,
        "source_ranges": list(rule.source_ranges),
        "target_tags": list(rule.target_tags),
        "target_service_accounts": list(rule.target_service_accounts),
        "allowed": [(a.I_p_protocol, list(a.ports)) for a in rule.allowed],
        "denied": [(d.I_p_protocol, list(d.ports)) for d in rule.denied],
    }


def _checked_endpoint(endpoint: str, setting: str = "gcp.endpoint") -> str:
    """An endpoint setting as the client takes it: an http(s) URL of a host (and port), else one line."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(endpoint)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:  # a port that is not a number
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok or not endpoint.isprintable():
        raise Exit(
            f"{setting} {endpoint[:80]!r}: give the API's URL, e.g. https://compute.googleapis.com "
            "(http:// only for a test API with gcp.credentials: anonymous)."
        )
    return endpoint


PROGRESS_AFTER = 5.0  # seconds of silence before a call says what it waits for
PROGRESS_EVERY = 15.0


@contextlib.contextmanager
def _progress(what: str, timeout: float, tries: list[int], quiet: bool) -> Iterator[None]:
    """While the block runs: past PROGRESS_AFTER s, then every PROGRESS_EVERY s, one line on stderr
    saying what is awaited, for how long so far, and the try (`tries[0]`) of how many."""
    if quiet:
        yield
        return
    done = threading.Event()
    began = time.monotonic()

    def tell() -> None:
        wait = PROGRESS_AFTER
        while not done.wait(wait):
            print(
                f"waiting for the Compute API ({what}): {time.monotonic() - began:.0f} s so far, "
                f"try {tries[0]} of {RETRIES + 1}, {timeout:.0f} s each",
                file=sys.stderr,
                flush=True,
            )
            wait = PROGRESS_EVERY

    teller = threading.Thread(target=tell, daemon=True)
    teller.start()
    try:
        yield
    finally:
        done.set()
        teller.join()


def _done(operation: Any) -> bool:
    status = operation.status
    return str(status) in ("DONE", "Status.DONE") or getattr(status, "name", "") == "DONE"


def _vm(instance: Any) -> Vm:
    address = None
    for interface in instance.network_interfaces:
        for config in interface.access_configs:
            address = address or config.nat_i_p or None
    interfaces = list(instance.network_interfaces)
    accelerators = list(instance.guest_accelerators)
    attached_gpu, attached_count = (None, 0) if accelerators else _attached(instance.machine_type)
    return Vm(
        name=instance.name,
        zone=_last(instance.zone),
        status=instance.status,
        machine_type=_last(instance.machine_type),
        address=address,
        internal_address=(interfaces[0].network_i_p or None) if interfaces else None,
        labels=dict(instance.labels),
        metadata={item.key: item.value for item in instance.metadata.items},
        gpu=_last(accelerators[0].accelerator_type) if accelerators else attached_gpu,
        gpus=sum(a.accelerator_count for a in accelerators) or attached_count,
        spot=instance.scheduling.provisioning_model == "SPOT",
        flex=instance.scheduling.provisioning_model == "FLEX_START",
        started=instance.last_start_timestamp or instance.creation_timestamp,
        boot_disk=next((_resource_path(d.source) for d in instance.disks if d.boot), ""),
    )


def _resource_path(url: str) -> str:
    """projects/... of a resource's URL (selfLink), as a request names it."""
    return url[url.find("projects/") :] if "projects/" in url else url


def _attached(machine_type: str) -> tuple[str | None, int]:
    """The GPUs a machine type comes with (A2, G2, A3, ...), from the catalog."""
    from tfrig.gce.plan import gpu_types

    machine = _last(machine_type)
    for gpu in gpu_types().values():
        if machine in gpu.machine_types:
            return gpu.name, gpu.machine_types[machine]
    return None, 0


def _operation_errors(operation: Any) -> list[dict[str, Any]]:
    errors = []
    for error in operation.error.errors:
        zones: list[str] = []
        for detail in error.error_details:
            zones += _zones_hint(detail.error_info.metadatas.get("zonesAvailable", "") if detail.error_info else "")
        errors.append({"code": error.code, "message": error.message, "zones_available": zones})
    return errors


def _api_error(exc: Any) -> ApiError:
    """The library's exception as an ApiError: the API's own reason and message (without the
    library's "METHOD url: " prefix), and any zonesAvailable hint the error carries."""
    errors = [item for item in getattr(exc, "errors", None) or [] if isinstance(item, dict)]
    reason = getattr(exc, "reason", None) or next((e["reason"] for e in errors if e.get("reason")), "")
    status = int(getattr(exc, "code", 0) or 0)
    if not reason:
        reason = {403: "forbidden", 404: "notFound", 409: "alreadyExists", 429: "rateLimitExceeded"}.get(
            status, "UNAVAILABLE" if status >= 500 else "error"
        )
    message = next((e["message"] for e in errors if e.get("message")), "") or str(getattr(exc, "message", exc))
    zones = _zones_hint((getattr(exc, "metadata", None) or {}).get("zonesAvailable", ""))
    for error in errors:
        for detail in error.get("errorDetails") or []:
            zones += _zones_hint(((detail.get("errorInfo") or {}).get("metadatas") or {}).get("zonesAvailable", ""))
    return ApiError(status, reason, message, list(dict.fromkeys(zones)))


def _zones_hint(text: str) -> list[str]:
    return [zone.strip() for zone in str(text).split(",") if zone.strip()]


def describe(exc: ApiError) -> str:
    """One line for an API error a task can't handle itself: what it means and what to do."""
    text, project = exc.message, exc.project or "(unknown)"
    if exc.service_disabled:
        return (
            f"The Compute Engine API is not enabled in project {project}: enable it with "
            f"`gcloud services enable compute.googleapis.com --project {project}` and retry in a minute."
        )
    if exc.status == 404 and text.rstrip(". ").endswith(f"'projects/{project}' was not found"):
        return (
            f"Project {project} was not found, or your credentials can't see it: check --project, gcp.project "
            "or `gcloud config get project`."
        )
    if exc.status == 403:
        permission = re.search(r"[Rr]equired '([\w.]+)' permission", text)
        needed = f" (it needs {permission[1]})" if permission else ""
        return (
            f"Permission denied in project {project}{needed}: ask for a role that grants it, e.g. "
            f"roles/compute.instanceAdmin.v1; the API said: {text}"
        )
    if exc.status >= 500 or exc.status == 429:
        return f"The Compute API is unavailable now: {text}; retry in a few minutes."
    if exc.status == 0 or exc.reason in ("UNAVAILABLE", "TIMEOUT"):
        return f"The Compute API is unreachable: {text}; check your network, or gcp.endpoint, and retry."
    return f"The Compute API refused the request ({exc.status or ''} {exc.reason}): {text}".replace("( ", "(")
