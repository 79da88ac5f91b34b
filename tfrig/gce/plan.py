"""Compute Engine GPU VMs as pure decisions: what is valid, which machine type, which zones, whether
quota allows it, and what a failed attempt means for the next one. No API calls here.

Facts: compat.yaml `gce_gpus`, `gce_images`; gce-errors.yaml for the failover scopes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tfrig.knowledge.catalog import compat, gce_errors

NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
ZONE = re.compile(r"^(?P<region>[a-z]+-[a-z]+\d+)-[a-z]$")
REGION = re.compile(r"^[a-z]+-[a-z]+\d+$")
N1_TYPE = re.compile(r"^n1-(standard|highmem|highcpu)-(\d+)$")
GLOBAL_METRIC = "GPUS_ALL_REGIONS"
# PCI device ids of the GPUs Compute Engine attaches (the ones tfrig.knowledge.driverplan knows by id).
PCI_DEVICE_IDS = {
    "nvidia-tesla-k80": "0x102d",
    "nvidia-tesla-p4": "0x1bb3",
    "nvidia-tesla-p100": "0x15f8",
    "nvidia-tesla-v100": "0x1db1",
    "nvidia-tesla-t4": "0x1eb8",
    "nvidia-tesla-a100": "0x20b0",
    "nvidia-a100-80gb": "0x20b2",
    "nvidia-l4": "0x27b8",
    "nvidia-h100-80gb": "0x2330",
    "nvidia-h100-mega-80gb": "0x2330",
    "nvidia-h200-141gb": "0x2335",
    "nvidia-b200": "0x2901",
    "nvidia-rtx-pro-6000": "0x2bb5",  # RTX PRO 6000 Blackwell Server Edition (public PCI id tables)
}


class Invalid(Exception):
    """A request Compute Engine would refuse, or that can't work; the message says what to do."""


@dataclass(frozen=True)
class GpuType:
    name: str
    model: str
    family: str  # n1, a2, g2, a3, a4, ...
    counts: tuple[int, ...]
    machine_types: dict[str, int]  # for families whose GPUs come with the machine type
    n1_limits: dict[int, tuple[int, int]]  # count -> (max vCPUs, max memory GB) on N1
    quota_metric: str
    preemptible_metric: str
    retired: str | None = None
    note: str = ""  # what a user should know before choosing it
    compute_capability: str = ""


def _value(item: Any) -> Any:
    return item["value"] if isinstance(item, dict) and "value" in item else item


def gpu_types() -> dict[str, GpuType]:
    found = {}
    for row in compat()["gce_gpus"]["gpus"]:
        machine_types = {str(k): int(v) for k, v in (row.get("machine_types") or {}).items()}
        counts = tuple(sorted(int(k) for k in row.get("counts", {}))) or tuple(sorted(set(machine_types.values())))
        family = "n1" if str(row["machine_family"]).startswith("N1") else next(iter(machine_types)).split("-")[0]
        status = row.get("status", "")
        found[row["accelerator_type"]] = GpuType(
            name=row["accelerator_type"],
            model=row["model"],
            family=family,
            counts=counts,
            machine_types=machine_types,
            n1_limits={int(k): (int(v[0]), int(v[1])) for k, v in (row.get("counts") or {}).items()},
            quota_metric=str(_value(row["quota_metric"])),
            preemptible_metric=str(
                _value(row.get("preemptible_quota_metric") or f"PREEMPTIBLE_{_value(row['quota_metric'])}")
            ),
            retired=status if "END OF SUPPORT" in status else None,
            note=str(row.get("note", "")),
            compute_capability=str(row.get("compute_capability", "")),
        )
    return found


def gpu_type(name: str) -> GpuType:
    known = gpu_types()
    if name not in known:
        offered = ", ".join(n for n, g in known.items() if not g.retired)
        raise Invalid(f"--gpu {name}: not a Compute Engine GPU type tfrig knows; choose one of {offered}.")
    gpu = known[name]
    if gpu.retired:
        raise Invalid(
            f"--gpu {name}: retired on Compute Engine (K80s are no longer usable since May 1, 2024); "
            "use nvidia-tesla-t4 or nvidia-l4."
        )
    return gpu


def machine_type(gpu: GpuType, count: int, requested: str | None) -> str:
    """The machine type for `count` GPUs: the one asked for if it fits, else the smallest that does."""
    if count not in gpu.counts:
        raise Invalid(f"--gpus {count}: {gpu.name} comes in counts of {', '.join(map(str, gpu.counts))} per VM.")
    if gpu.family == "n1":
        max_cpus = gpu.n1_limits[count][0]
        if requested is None:
            return f"n1-standard-{min(4 * count, max_cpus)}"  # 4 vCPUs per GPU feed it well
        match = N1_TYPE.match(requested)
        if not match:
            raise Invalid(f"--machine-type {requested}: {gpu.name} runs on N1 machine types (e.g. n1-standard-8).")
        if int(match[2]) > max_cpus:
            raise Invalid(f"--machine-type {requested}: {count} x {gpu.name} allows at most {max_cpus} vCPUs on N1.")
        return requested
    fitting = [name for name, cards in gpu.machine_types.items() if cards == count]
    if requested is None:
        return fitting[0]
    if requested not in gpu.machine_types:
        raise Invalid(
            f"--machine-type {requested}: {gpu.name} comes attached to {gpu.family.upper()} machine types "
            f"({', '.join(gpu.machine_types)}), not {requested}."
        )
    if gpu.machine_types[requested] != count:
        raise Invalid(f"--machine-type {requested} has {gpu.machine_types[requested]} x {gpu.name}, not {count}.")
    return requested


def region_of(zone: str) -> str:
    match = ZONE.match(zone)
    if not match:
        raise Invalid(f"'{zone}' is not a zone name such as us-central1-a.")
    return match["region"]


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise Invalid(
            f"--name {name}: Compute Engine names are 1-63 lowercase letters, digits and hyphens, "
            "starting with a letter and not ending with a hyphen."
        )
    return name


OWNER_LABEL = "tfrig-owner"


def label_value(text: str) -> str:
    """`text` as a Compute Engine label value: at most 63 of [a-z0-9_-] (cloud.google.com/compute/docs/
    labeling-resources, "Requirements for labels"); a longer one keeps a digest of the whole, so two
    long accounts stay apart."""
    import hashlib

    value = re.sub(r"[^a-z0-9_-]", "_", text.lower())
    if len(value) <= 63:
        return value
    return value[:54] + "-" + hashlib.sha256(text.encode()).hexdigest()[:8]


_NAME_PART = r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?"
_NETWORK_PATH = re.compile(rf"^projects/(?P<project>[^/\s]+)/global/networks/(?P<name>{_NAME_PART})$")
_SUBNET_PATH = re.compile(
    rf"^projects/(?P<project>[^/\s]+)/regions/(?P<region>[a-z]+-[a-z]+\d+)/subnetworks/(?P<name>{_NAME_PART})$"
)
SSH_VIA = ("external", "internal", "iap")
# Where IAP's TCP forwarding connects from: a VM reached through IAP needs ingress from it on port 22
# (cloud.google.com/iap/docs/using-tcp-forwarding, "Create a firewall rule").
IAP_RANGE = "35.235.240.0/20"


@dataclass(frozen=True)
class Network:
    """Where a VM's one interface goes (the Instance resource's networkInterfaces[0] and tags)."""

    name: str = "default"  # the VPC's name: its firewall rules are read by it
    project: str | None = None  # the VPC's project, when another (a shared VPC's host project)
    subnet: str | None = None  # a subnet's name in the create's region, or its full path
    region: str | None = None  # the region of a subnet given by its full path: the create stays there
    external_ip: bool = True
    tags: tuple[str, ...] = ()

    def interface(self, zone: str) -> dict[str, Any]:
        interface: dict[str, Any] = {}
        if self.subnet and self.subnet.startswith("projects/"):
            interface["subnetwork"] = self.subnet  # its network is the subnet's (a shared VPC's)
        else:
            owner = f"projects/{self.project}/" if self.project else ""
            interface["network"] = f"{owner}global/networks/{self.name}"
            if self.subnet:
                interface["subnetwork"] = f"regions/{region_of(zone)}/subnetworks/{self.subnet}"
        if self.external_ip:
            interface["accessConfigs"] = [{"name": "External NAT", "type": "ONE_TO_ONE_NAT"}]
        return interface


def network_choice(network: str, subnet: str, external_ip: bool, tags: str) -> Network:
    """--network (a name, or projects/P/global/networks/N), --subnet (a name in the create's region,
    or projects/HOST/regions/R/subnetworks/S for a shared VPC's), --no-external-ip, --tags a,b.
    Names as Compute Engine takes them (RFC 1035 labels; network tags the same, 63 at most:
    cloud.google.com/vpc/docs/add-remove-network-tags)."""
    name, project = network or "default", None
    if network and (path := _NETWORK_PATH.match(network)):
        name, project = path["name"], path["project"]
    elif network and not NAME.match(network):
        raise Invalid(f"--network {network[:80]!r}: give a network's name, or projects/PROJECT/global/networks/NAME.")
    region = None
    if subnet and (path := _SUBNET_PATH.match(subnet)):
        if network:
            raise Invalid("--subnet projects/...: the network is the subnet's; leave out --network.")
        name, project, region = "", path["project"], path["region"]
    elif subnet and not NAME.match(subnet):
        raise Invalid(
            f"--subnet {subnet[:80]!r}: give a subnet's name (in the region tfrig creates in), or "
            "projects/HOST/regions/REGION/subnetworks/NAME for a shared VPC's."
        )
    tag_list = tuple(tag.strip() for tag in tags.split(",") if tag.strip()) if tags else ()
    for tag in tag_list:
        if not NAME.match(tag):
            raise Invalid(f"--tags: {tag[:80]!r} is not a network tag (lowercase letters, digits, -, 63 at most).")
    return Network(name, project, subnet or None, region, external_ip, tag_list)


def default_name(user: str) -> str:
    cleaned = re.sub(r"[^a-z0-9-]", "-", user.lower()).strip("-") or "user"
    return check_name(f"tfrig-{cleaned}"[:63].rstrip("-"))


_DURATION = re.compile(r"^(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")


def duration_seconds(text: str, flag: str = "max-run-duration", low: int = 30, high: int = 120 * 86400) -> int:
    """'90m', '2h', '1h30m', '3600s' → seconds in [low, high] (for --max-run-duration, what GCE
    allows: 30 s to 120 days)."""
    match = _DURATION.match(text.strip())
    if not text.strip() or not match or not any(match.groupdict().values()):
        raise Invalid(f"--{flag} {text}: write it like 2h, 90m, 1h30m or 7d.")
    seconds = int(match["d"] or 0) * 86400 + int(match["h"] or 0) * 3600 + int(match["m"] or 0) * 60
    seconds += int(match["s"] or 0)
    if not low <= seconds <= high:
        allowed = (
            "Compute Engine allows 30 seconds to 120 days"
            if flag == "max-run-duration"
            else f"give {span(low)} to {span(high)}"
        )
        raise Invalid(f"--{flag} {text}: {allowed}.")
    return seconds


def span(seconds: int) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} seconds"


def candidate_zones(
    offered: dict[str, int],
    count: int,
    zone: str | None,
    region: str | None,
    ranked_regions: list[str] | None = None,
    first: str | None = None,
) -> list[str]:
    """Zones that offer the GPU (with enough cards per VM), in the order to try them.

    `zone` (--zone) pins one zone and `region` (--region) narrows to one region. Otherwise regions
    go in `ranked_regions` order (cheapest, then nearest: tfrig.gce.prices), and `first` (a
    configured zone or region: gcp.zone, gcloud's compute/zone or compute/region) goes first
    without disabling failover to the others."""
    usable = sorted(z for z, most in offered.items() if most >= count)
    if zone:
        if zone not in offered:
            elsewhere = [z for z in usable if z.startswith(region_of(zone) + "-")] or usable[:5]
            where = f"; it is offered in {', '.join(elsewhere)}" if elsewhere else ""
            raise Invalid(f"--zone {zone}: no such zone, or it doesn't offer this GPU{where}.")
        return [zone]
    if region:
        in_region = [z for z in usable if z.startswith(region + "-")]
        if not in_region:
            regions = sorted({region_of(z) for z in usable})
            raise Invalid(
                f"--region {region}: doesn't offer this GPU; regions that do: {', '.join(regions) or 'none'}."
            )
        return in_region
    if not usable:
        raise Invalid("this GPU type is offered in no zone of this project.")
    rank = {r: i for i, r in enumerate(ranked_regions or [])}
    ordered = sorted(usable, key=lambda z: (rank.get(region_of(z), len(rank)), z))
    if first:
        preferred = [z for z in ordered if z == first or region_of(z) == first]
        ordered = preferred + [z for z in ordered if z not in preferred]
    return ordered


# --- what a machine type is, and how it is sold -----------------------------------------------------


@dataclass(frozen=True)
class Family:
    name: str
    boot_disk: str
    disks: tuple[str, ...]
    arch: str
    cpu_quota: str | None


def family(machine: str) -> Family:
    """The machine family of a machine type, with its rules (compat.yaml gce_gpus.machine_families)."""
    series, _, rest = machine.partition("-")
    key = series
    if series == "a3":
        key = {"megagpu": "a3-mega", "ultragpu": "a3-ultra"}.get(rest.split("-")[0], "a3-high")
    row = compat()["gce_gpus"]["machine_families"].get(key)
    if row is None:
        raise Invalid(f"--machine-type {machine}: not a GPU machine family tfrig knows.")
    return Family(key, row["boot_disk"], tuple(row["disks"]), row["arch"], row.get("cpu_quota"))


def shape(machine: str) -> tuple[int, float, int]:
    """A machine type's vCPUs, memory (GiB) and bundled Local SSD (GiB): from the catalog, else
    from the name for N1 (3.75, 6.5 or 0.9 GiB per vCPU) and G2 (4 GiB per vCPU)."""
    table = compat()["gce_gpus"]["shapes"]
    if machine in table:
        cpus, memory, local_ssd = table[machine]
        return int(cpus), float(memory), int(local_ssd)
    series, kind, count = machine.split("-")
    per_cpu = {"g2": {"standard": 4.0}, "n1": {"standard": 3.75, "highmem": 6.5, "highcpu": 0.9}}[series][kind]
    return int(count), int(count) * per_cpu, 0


def vcpus(machine: str) -> int:
    return shape(machine)[0]


def sold_only(machine: str) -> str | None:
    """How a machine type is sold where not on demand: spot (Spot or Flex-start),
    spot-or-reservation, reservation; None: on demand too."""
    how = _value(compat()["gce_gpus"]["sold_only"].get(machine))
    return None if how is None else str(how)


# Flex-start (cloud.google.com/compute/docs/instances/about-flex-start-vms): VMs "run for up to seven
# days"; "all accelerator-optimized machine types (except A4X and G4)" (so not N1); the request
# waits for capacity up to its requestValidForDuration (compute_v1 InstanceParams: "Relative
# deadline for waiting for capacity. Relevant only for Instances.Insert API"), the VM PENDING
# meanwhile (compute_v1 Instance.Status.PENDING: "For Flex Start provisioning instance is waiting
# for available capacity from Dynamic Workload Scheduler (DWS)"). Two hours as the longest wait is
# the issue's figure and gcloud users' usual value, not read in Google's reference.
FLEX_MAX_RUN = 7 * 86400
FLEX_MAX_WAIT = 2 * 3600
_NO_FLEX = {"n1": "N1 (T4, P4, P100, V100)", "g4": "G4", "a4x": "A4X"}


def sold_as(machine: str) -> list[str]:
    """The ways Compute Engine sells a machine type: on demand, Spot, Flex-start, reservation
    (every type can also be reserved; named here where it is the only other way)."""
    how = sold_only(machine)
    flex = ["Flex-start"] if machine.split("-")[0] not in _NO_FLEX else []
    if how == "reservation":
        return ["reservation"]
    if how == "spot":
        return ["Spot", *flex]
    if how == "spot-or-reservation":
        return ["Spot", *flex, "reservation"]
    return ["on demand", "Spot", *flex]


def check_sold(machine: str, spot: bool, flex: bool = False, reserved: bool = False) -> None:
    """Refuse a machine type Compute Engine doesn't sell the way it is asked for, before any call."""
    how = sold_only(machine)
    if reserved:
        return  # a reservation holds what it holds (reservation_zone checks the match)
    if flex and machine.split("-")[0] in _NO_FLEX:
        raise Invalid(
            f"--flex-start: Compute Engine offers Flex-start on accelerator-optimized machine types (A2, A3, "
            f"A4, G2), not {_NO_FLEX[machine.split('-')[0]]}; use --spot or on demand for {machine}."
        )
    if how == "reservation":
        raise Invalid(
            f"--machine-type {machine} is sold only through a reservation: add --reservation NAME "
            "(`inv gcp.reservations` lists the ones this project can use)."
        )
    if how == "spot" and not (spot or flex):
        raise Invalid(f"{machine} is sold as Spot or Flex-start, not on demand: add --spot or --flex-start.")
    if how == "spot-or-reservation" and not (spot or flex):
        raise Invalid(
            f"{machine} is sold as Spot, Flex-start or through a reservation, not on demand: add --spot, "
            "--flex-start or --reservation NAME."
        )


# Targeting a reservation by name (compute_v1 ReservationAffinity: SPECIFIC_RESERVATION with this
# key, gcloud's _RESERVATION_AFFINITY_KEY in api_lib/compute/instance_utils.py; a shared one by
# "projects/P/reservations/NAME").
RESERVATION_KEY = "compute.googleapis.com/reservation-name"
_RESERVATION = re.compile(
    r"^(?:projects/(?P<project>[a-z][-a-z0-9.:]{4,61})/reservations/)?(?P<name>[a-z]([-a-z0-9]{0,61}[a-z0-9])?)$"
)


def reservation_ref(text: str) -> tuple[str | None, str]:
    """(project or None for this one, name) of --reservation NAME or projects/P/reservations/NAME."""
    match = _RESERVATION.match(text.strip())
    if not match:
        raise Invalid(f"--reservation {text[:80]}: give a reservation's name, or projects/P/reservations/NAME.")
    return match["project"], match["name"]


def check_flex(max_run_seconds: int | None, wait_seconds: int) -> int:
    """A Flex-start request's run limit (default and at most 7 days) once its wait is checked."""
    if max_run_seconds is not None and max_run_seconds > FLEX_MAX_RUN:
        raise Invalid("--max-run-duration: Flex-start VMs run at most 7 days (7d).")
    if not 60 <= wait_seconds <= FLEX_MAX_WAIT:
        raise Invalid("--wait: a Flex-start request waits for capacity 1 minute to 2 hours (2h).")
    return max_run_seconds or FLEX_MAX_RUN


def image_arch(source_image: str) -> str:
    """The CPU architecture of an image, from its family or name (…-arm64 is Arm, else x86_64)."""
    return "arm64" if "arm64" in source_image.rsplit("/", 1)[-1] else "x86_64"


def check_image(machine: str, source_image: str) -> None:
    machine_arch, wanted = family(machine).arch, image_arch(source_image)
    if machine_arch != wanted:
        raise Invalid(
            f"--image {source_image} is built for {wanted}, and {machine} is {machine_arch}; "
            f"choose an image for {machine_arch}."
        )


# --- quota -------------------------------------------------------------------------------------------

CPU_METRIC_ALL_REGIONS = "CPUS_ALL_REGIONS"


@dataclass(frozen=True)
class Demand:
    """What VMs of one request draw from quota."""

    gpu: GpuType
    gpus: int  # per VM
    machine: str
    disk_gb: int
    spot: bool
    vms: int = 1

    def times(self, vms: int) -> Demand:
        return Demand(self.gpu, self.gpus, self.machine, self.disk_gb, self.spot, vms)

    def regional(self, quotas: Mapping[str, tuple[float, float]]) -> list[tuple[str, float]]:
        """(metric, amount) this demand draws in a region. A Spot VM draws the PREEMPTIBLE_
        metric where the region has that quota (limit > 0), else the standard one (compute docs,
        create-use-spot)."""

        def chosen(standard: str, preemptible: str) -> str:
            if self.spot and quotas.get(preemptible, (0.0, 0.0))[0] > 0:
                return preemptible
            return standard

        machine_family = family(self.machine)
        needs = [(chosen(self.gpu.quota_metric, self.gpu.preemptible_metric), float(self.gpus * self.vms))]
        if machine_family.cpu_quota:
            needs.append((chosen(machine_family.cpu_quota, "PREEMPTIBLE_CPUS"), float(vcpus(self.machine) * self.vms)))
        needs.append(("IN_USE_ADDRESSES", float(self.vms)))  # each VM has an external address
        disk_metric = compat()["gce_gpus"]["disk_quota"][machine_family.boot_disk]
        needs.append((disk_metric, float(self.disk_gb * self.vms)))
        return needs

    def project_wide(self) -> list[tuple[str, float]]:
        return [
            (GLOBAL_METRIC, float(self.gpus * self.vms)),
            (CPU_METRIC_ALL_REGIONS, float(vcpus(self.machine) * self.vms)),
        ]


@dataclass
class Quota:
    metric: str
    where: str  # a region, or "global"
    limit: float
    usage: float
    need: float = 0.0

    @property
    def remaining(self) -> float:
        return self.limit - self.usage


@dataclass
class QuotaCheck:
    regions: list[str]  # regions with enough quota, in the candidates' order
    short: list[Quota] = field(default_factory=list)
    global_short: Quota | None = None
    unknown: list[str] = field(default_factory=list)  # metrics the API does not list: "METRIC in where"


def check_quota(
    demand: Demand,
    regions: list[str],
    regional: Mapping[str, Mapping[str, tuple[float, float]]],
    project: Mapping[str, tuple[float, float]],
) -> QuotaCheck:
    """Which regions have quota left (limit - usage) for every metric the demand draws, and the
    project-wide ones. A metric the API does not list is unknown: noted, never taken as 0."""
    result = QuotaCheck(regions=[])
    for metric, amount in demand.project_wide():
        if metric not in project:
            result.unknown.append(f"{metric} (all regions)")
            continue
        limit, usage = project[metric]
        if limit - usage < amount:
            result.global_short = Quota(metric, "global", limit, usage, amount)
            return result
    for region in regions:
        quotas = regional.get(region, {})
        short = []
        for metric, amount in demand.regional(quotas):
            if metric not in quotas:
                result.unknown.append(f"{metric} in {region}")
                continue
            limit, usage = quotas[metric]
            if limit - usage < amount:
                short.append(Quota(metric, region, limit, usage, amount))
        if short:
            result.short += short
        else:
            result.regions.append(region)
    return result


def quota_message(project: str, check: QuotaCheck) -> str:
    link = f"https://console.cloud.google.com/iam-admin/quotas?project={project}"
    if check.global_short:
        q = check.global_short
        return (
            f"not enough quota: {q.metric} (all regions) limit {q.limit:g}, used {q.usage:g}, need {q.need:g}; "
            f"new projects often have 0 GPUs: request more at {link} (metric {q.metric})."
        )
    shorts = "; ".join(
        f"{q.metric} in {q.where}: limit {q.limit:g}, used {q.usage:g}, need {q.need:g}" for q in check.short
    )
    return f"not enough quota: {shorts}. Request more at {link}, or try another --region."


# --- SSH through the firewall ----------------------------------------------------------------------


def _covers_ssh(entries: list[tuple[str, list[str]]]) -> bool:
    for protocol, ports in entries:
        if protocol in ("all", "tcp") and (not ports or any(_port_range_has(22, item) for item in ports)):
            return True
    return False


def _port_range_has(port: int, item: str) -> bool:
    low, _, high = str(item).partition("-")
    return int(low) <= port <= int(high or low)


def _applicable(rules: list[dict[str, Any]], network: str, tags: tuple[str, ...]) -> list[dict[str, Any]]:
    """Enabled ingress rules of `network` that apply to a VM tfrig creates (no targetTags, or one of
    its tags; no targetServiceAccounts) with source ranges, by priority (lower first), a deny
    before an allow of equal priority."""
    applicable = [
        r
        for r in rules
        if not r.get("disabled")
        and r.get("direction", "INGRESS") == "INGRESS"
        and r.get("network", "").rstrip("/").rsplit("/", 1)[-1] == network
        and (not r.get("target_tags") or set(r["target_tags"]) & set(tags))
        and not r.get("target_service_accounts")
        and r.get("source_ranges")  # rules with only source tags admit other VMs, not you
    ]
    return sorted(applicable, key=lambda r: (int(r.get("priority", 1000)), 0 if r.get("denied") else 1))


def _closed(tags: tuple[str, ...], what: str = "it") -> str:
    if tags:
        return f"no rule that applies to a VM tagged {', '.join(tags)} admits {what}"
    return f"no rule that applies to every VM admits {what} (rules with target tags don't: pass --tags to match one)"


def ssh_verdict(rules: list[dict[str, Any]], network: str = "default", tags: tuple[str, ...] = ()) -> str:
    """Whether ingress tcp:22 from the internet reaches a VM tfrig creates (network tags `tags`, no
    service account) on `network`, as VPC firewall rules decide: the rules that apply to it
    (_applicable) in order, and the implied deny at the end.

    "open"; "from RANGES" (allowed only from some source ranges); or why it is closed."""
    some: list[str] = []
    for rule in _applicable(rules, network, tags):
        everywhere = any(source in ("0.0.0.0/0", "::/0") for source in rule["source_ranges"])
        if rule.get("denied") and _covers_ssh(rule["denied"]):
            if everywhere:
                if some:
                    break
                return f"the deny rule {rule.get('name')} (priority {rule.get('priority', 1000)}) blocks it"
            continue
        if rule.get("allowed") and _covers_ssh(rule["allowed"]):
            if everywhere:
                return "open"
            some += [source for source in rule["source_ranges"] if source not in some]
    if some:
        return "from " + ", ".join(some)
    return _closed(tags)


def iap_verdict(rules: list[dict[str, Any]], network: str = "default", tags: tuple[str, ...] = ()) -> str:
    """Whether ingress tcp:22 from IAP's range (IAP_RANGE) reaches a VM tfrig creates: the first
    rule that applies and whose source ranges hold the whole range decides. "open", or why not."""
    for rule in _applicable(rules, network, tags):
        if not any(_holds(source, IAP_RANGE) for source in rule["source_ranges"]):
            continue
        if rule.get("denied") and _covers_ssh(rule["denied"]):
            return f"the deny rule {rule.get('name')} (priority {rule.get('priority', 1000)}) blocks it"
        if rule.get("allowed") and _covers_ssh(rule["allowed"]):
            return "open"
    return _closed(tags, f"IAP's range {IAP_RANGE}")


def _holds(source: str, wanted: str) -> bool:
    """Whether the range `source` holds all of `wanted` (0.0.0.0/0 holds every IPv4 range)."""
    import ipaddress

    try:
        wide, narrow = ipaddress.ip_network(source, strict=False), ipaddress.ip_network(wanted)
    except ValueError:
        return False
    return wide.version == narrow.version and narrow.subnet_of(wide)  # type: ignore[arg-type]


def _policy_decision(policy: dict[str, Any], network: str, iap: bool) -> tuple[str, list[str]] | None:
    """What one firewall policy decides for ingress tcp:22 to a VM tfrig creates (no secure tags,
    no service account targeted): ("allow" | "deny", rule name), ("from", ranges) where it allows
    only some sources, or None where it passes (goto_next, or no rule that applies). Its rules go by
    priority, lower first (cloud.google.com/firewall/docs/firewall-policies-rule-details)."""
    some: list[str] = []
    rules = [
        r
        for r in policy.get("rules", [])
        if not r.get("disabled")
        and r.get("direction", "INGRESS") == "INGRESS"
        and _covers_ssh(r.get("layer4", []))
        and (
            not r.get("target_resources")
            or any(t.rstrip("/").endswith(f"/networks/{network}") for t in r["target_resources"])
        )
        and not r.get("target_service_accounts")
        and not r.get("target_secure_tags")
    ]
    for rule in sorted(rules, key=lambda r: int(r.get("priority", 0))):
        sources = rule.get("src_ranges", [])
        whole = any(_holds(source, IAP_RANGE if iap else "0.0.0.0/0") for source in sources)
        label = f"{policy.get('name')}'s rule {rule.get('priority')}"
        if rule.get("action") == "deny" and whole:
            return "deny", [label]
        if rule.get("action") == "allow":
            if whole:
                return "allow", [label]
            if not iap:
                some += [source for source in sources if source not in some]
        if rule.get("action") == "goto_next" and whole:
            break
    return ("from", some) if some else None


def effective_verdict(
    policies: list[dict[str, Any]], rules: list[dict[str, Any]], network: str, tags: tuple[str, ...], iap: bool
) -> str:
    """Whether ingress tcp:22 (from the internet, or from IAP's range) reaches a VM tfrig creates, as
    networks.getEffectiveFirewalls' answer decides it, in the default order: hierarchical firewall
    policies (organization, then folders), the VPC's rules, then network firewall policies
    (cloud.google.com/firewall/docs/firewall-policies-overview, "Policy and rule evaluation order")."""
    vpc = (iap_verdict if iap else ssh_verdict)(rules, network, tags)
    for stage in ("HIERARCHY", "VPC", "NETWORK"):
        if stage == "VPC":
            if vpc == "open" or vpc.startswith(("from ", "the deny rule")):
                return vpc
            continue
        for policy in [p for p in policies if p.get("type", "").startswith(stage)]:
            decided = _policy_decision(policy, network, iap)
            if decided is None:
                continue
            action, said = decided
            if action == "allow":
                return "open"
            if action == "deny":
                return f"the firewall policy rule {said[0]} blocks it"
            return "from " + ", ".join(said)
    return vpc


# --- failover -------------------------------------------------------------------------------------


def error_scopes() -> dict[str, str]:
    return {row["reason"]: row["scope"] for row in gce_errors()["errors"]}


RETRY_IN_PLACE = {"RESOURCE_OPERATION_RATE_EXCEEDED", "rateLimitExceeded", "UNAVAILABLE", "INTERNAL"}


@dataclass
class Attempt:
    zone: str
    outcome: str  # created | blocked-zone | blocked-region | blocked-all | error
    reason: str = ""


# UNSUPPORTED_OPERATION also says a configuration can't be had anywhere ("[pd-standard,
# g2-standard-4] features are not compatible for creating instance"): a bad request, not a
# stockout, so no other zone is tried.
_BAD_REQUEST_MESSAGES = ("features are not compatible", "is not supported for", "not supported by machine type")


def scope_of(reason: str, message: str) -> str:
    """What a failed create blocks: zone, region, or all (gce-errors.yaml). A project-wide quota
    (GPUS_ALL_REGIONS, CPUS_ALL_REGIONS, any *_ALL_REGIONS) stops the search; a subnet that a
    region lacks ("The resource '.../regions/R/subnetworks/S' was not found") blocks that region."""
    if "_ALL_REGIONS" in message or any(text in message for text in _BAD_REQUEST_MESSAGES):
        return "all"
    if reason == "notFound" and "/subnetworks/" in message:
        return "region"
    # "Invalid value for field 'resource.machineType': '...'. Machine type with name 'X' does not
    # exist in zone 'Z'." (the form gcloud matches, command_lib/compute/instances/create): that zone
    # lacks the machine type, another may have it.
    if "does not exist in zone" in message and "Machine type with name" in message:
        return "zone"
    return error_scopes().get(reason, "all")


# Organization policy constraints a create meets in company projects (Google's foundation
# blueprint enforces them: terraform-example-foundation 1-org/envs/shared/org_policy.tf). The API
# refuses with 412 conditionNotMet, its message naming the constraint; tfrig says what it means for
# its VM and what to do ({project}: the project, {image_project}: the boot image's project).
_CONSTRAINT = re.compile(r"constraints/([A-Za-z0-9_.]+)")
_POLICY_ADVICE = {
    "compute.vmExternalIpAccess": (
        "allows no external IP on VMs in project {project}: pass --no-external-ip and set gcp.ssh_via: iap (SSH "
        "through IAP's tunnel) or internal (from a machine inside the VPC or on a VPN to it)"
    ),
    "compute.requireOsLogin": (
        "requires OS Login, and gcp.ssh_mode: metadata turns it off on tfrig's VMs: set gcp.ssh_mode to auto or "
        "oslogin (INVOKE_GCP_SSH_MODE=oslogin)"
    ),
    "compute.requireShieldedVm": (
        "requires Shielded VMs with Secure Boot: pass --secure-boot (or set gcp.secure_boot: true); the NVIDIA "
        "driver must then be a signed one, as on an image that carries it"
    ),
    "compute.trustedImageProjects": (
        "does not allow boot images from project {image_project}: give --image from a project it allows (ask your "
        "admin which): {choices}"
    ),
}
# Google's public image projects, and a stock image of each (cloud.google.com/compute/docs/images/os-details).
_STOCK_IMAGES = {"ubuntu-os-cloud": "ubuntu-24.04", "debian-cloud": "debian-12"}


def network_refusal(message: str, project: str) -> str | None:
    """One line for an insert naming a network the project lacks (None for any other error)."""
    match = re.search(r"global/networks/([a-z0-9-]+)' was not found", message)
    if match is None:
        return None
    return (
        f"Project {project} has no network named {match[1]}: pass --network NAME (and --subnet) of one it has; "
        f"`gcloud compute networks list --project {project}` shows them."
    )


def policy_refusal(message: str, project: str, source_image: str) -> str | None:
    """One line for an insert an organization policy refused (None if the message names none)."""
    match = _CONSTRAINT.search(message)
    if match is None:
        return None
    image_project = source_image.split("/")[1] if source_image.startswith("projects/") else "of the image"
    choices = [f"--image {image} (in {where})" for where, image in _STOCK_IMAGES.items() if where != image_project]
    advice = _POLICY_ADVICE.get(match[1], "refuses this create: ask your organization's admin what it allows")
    if match[1] == "compute.trustedImageProjects" and image_project == project:
        # The project's own images (gcp.bake's) are refused too: only the admin can change that.
        advice = (
            "does not allow boot images from project {project} itself, where gcp.bake keeps its images: ask your "
            "admin to add projects/{project} to it, or give --image from a project it allows: {choices}"
        )
    else:
        choices.append(f"an image in your own project (--image projects/{project}/global/images/NAME)")
    shown = advice.format(project=project, image_project=image_project, choices=", ".join(choices))
    return f"the organization policy constraints/{match[1]} {shown}; tfrig tries no other zone for it."


def service_account_refusal(message: str, accounts: list[dict[str, Any]]) -> str | None:
    """One line for an insert refused because the caller may not attach the VM's service account
    (the API: "Required 'iam.serviceAccounts.actAs' permission for '.../serviceAccounts/EMAIL'")."""
    if "iam.serviceAccounts.actAs" not in message:
        return None
    email = accounts[0]["email"] if accounts else "the service account"
    shown = "the project's default compute service account" if email == "default" else email
    return (
        f"your account may not attach {shown} to a VM (it needs iam.serviceAccounts.actAs on it: the role "
        "roles/iam.serviceAccountUser): ask for that role, or pass --service-account none (nothing on the VM can "
        "then call Google APIs as the VM)."
    )


# Scope aliases as gcloud expands them (googlecloudsdk/command_lib/compute/constants.py, SCOPES).
_SCOPE_ALIASES = {
    "cloud-platform": "https://www.googleapis.com/auth/cloud-platform",
    "storage-ro": "https://www.googleapis.com/auth/devstorage.read_only",
    "storage-rw": "https://www.googleapis.com/auth/devstorage.read_write",
    "storage-full": "https://www.googleapis.com/auth/devstorage.full_control",
    "logging-write": "https://www.googleapis.com/auth/logging.write",
    "monitoring-write": "https://www.googleapis.com/auth/monitoring.write",
}
_SCOPE_URL = re.compile(r"^https://www\.googleapis\.com/auth/[a-z0-9._-]+$")
_EMAIL = re.compile(r"^[a-z0-9][a-z0-9._+-]{0,63}@[a-z0-9-]+(\.[a-z0-9-]+)+$")


def service_accounts(account: str, scopes: str) -> list[dict[str, Any]]:
    """The Instance resource's serviceAccounts for --service-account (an email, `default`: the
    project's default compute service account, which the API takes by that name as gcloud sends
    it (api_lib/compute/instance_utils.py, CreateServiceAccountMessages), or `none`) and --scopes
    (comma-separated aliases or URLs; default cloud-platform, access then decided by IAM roles)."""
    account = (account or "default").strip()
    if account == "none":
        if scopes:
            raise Invalid("--scopes: a VM with --service-account none has no scopes; leave out --scopes.")
        return []
    if account != "default" and not _EMAIL.match(account.lower()):
        raise Invalid(f"--service-account {account[:80]!r}: give a service account's email, default or none.")
    urls = []
    for scope in (s.strip() for s in (scopes or "cloud-platform").split(",")):
        url = _SCOPE_ALIASES.get(scope, scope)
        if not _SCOPE_URL.match(url):
            raise Invalid(
                f"--scopes: {scope[:80]!r} is not a scope: give https://www.googleapis.com/auth/... or one of "
                f"{', '.join(_SCOPE_ALIASES)}."
            )
        urls.append(url)
    return [{"email": account, "scopes": sorted(set(urls))}]


# Shielded VM options (the Instance resource's shieldedInstanceConfig; compute_v1
# ShieldedInstanceConfig): all three on, as constraints/compute.requireShieldedVm wants Secure Boot.
SHIELDED = {"enableSecureBoot": True, "enableVtpm": True, "enableIntegrityMonitoring": True}


class Failover:
    """The zones still worth trying, in order, as attempts fail."""

    def __init__(self, zones: list[str]) -> None:
        self.queue = list(zones)
        self.blocked_zones: set[str] = set()
        self.blocked_regions: set[str] = set()
        self.attempts: list[Attempt] = []
        self.stopped = False

    def next_zone(self) -> str | None:
        while self.queue and not self.stopped:
            zone = self.queue.pop(0)
            if zone in self.blocked_zones or region_of(zone) in self.blocked_regions:
                continue
            return zone
        return None

    def failed(self, zone: str, reason: str, message: str, zones_available: list[str] | None = None) -> str:
        scope = scope_of(reason, message)
        if scope == "zone":
            self.blocked_zones.add(zone)
        elif scope == "region":
            self.blocked_regions.add(region_of(zone))
        else:
            self.stopped = True
        self.attempts.append(Attempt(zone, f"blocked-{scope}", f"{reason}: {message}"))
        if zones_available:
            # The error names where capacity is: go there first.
            hinted = [z for z in zones_available if z in self.queue]
            self.queue = hinted + [z for z in self.queue if z not in hinted]
        return scope

    def summary(self) -> str:
        return "; ".join(f"{a.zone}: {a.reason}" for a in self.attempts if a.outcome != "created")
