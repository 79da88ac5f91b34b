"""Compute Engine GPU VMs as pure decisions: what is valid, which machine type, which zones, whether
quota allows it, and what a failed attempt means for the next one. No API calls here.

Facts: compat.yaml `gce_gpus`, `gce_images`; gce-errors.yaml for the failover scopes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tfrig.catalog import compat, gce_errors

NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
ZONE = re.compile(r"^(?P<region>[a-z]+-[a-z]+\d+)-[a-z]$")
REGION = re.compile(r"^[a-z]+-[a-z]+\d+$")
N1_TYPE = re.compile(r"^n1-(standard|highmem|highcpu)-(\d+)$")
GLOBAL_METRIC = "GPUS_ALL_REGIONS"
# PCI device ids of the GPUs Compute Engine attaches (the ones tfrig.driverplan knows by id).
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


def default_name(user: str) -> str:
    cleaned = re.sub(r"[^a-z0-9-]", "-", user.lower()).strip("-") or "user"
    return check_name(f"tfrig-{cleaned}"[:63].rstrip("-"))


_DURATION = re.compile(r"^(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")


def duration_seconds(text: str) -> int:
    """'90m', '2h', '1h30m', '3600s' → seconds (GCE allows 30 s to 120 days)."""
    match = _DURATION.match(text.strip())
    if not text.strip() or not match or not any(match.groupdict().values()):
        raise Invalid(f"--max-run-duration {text}: write it like 2h, 90m or 1h30m.")
    seconds = int(match["h"] or 0) * 3600 + int(match["m"] or 0) * 60 + int(match["s"] or 0)
    if not 30 <= seconds <= 120 * 86400:
        raise Invalid(f"--max-run-duration {text}: Compute Engine allows 30 seconds to 120 days.")
    return seconds


def candidate_zones(offered: dict[str, int], count: int, zone: str | None, region: str | None) -> list[str]:
    """Zones that offer the GPU (with enough cards per VM), narrowed by --zone/--region, in order."""
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
    return usable


@dataclass
class Quota:
    metric: str
    where: str  # a region, or "global"
    limit: float
    usage: float

    @property
    def remaining(self) -> float:
        return self.limit - self.usage


@dataclass
class QuotaCheck:
    regions: list[str]  # regions with enough quota, in the candidates' order
    short: list[Quota] = field(default_factory=list)
    global_short: Quota | None = None


def check_quota(
    gpu: GpuType,
    count: int,
    spot: bool,
    regions: list[str],
    regional: dict[str, dict[str, tuple[float, float]]],
    project: dict[str, tuple[float, float]],
) -> QuotaCheck:
    """Which regions have `count` GPUs of quota left (limit - usage), and the global GPUS_ALL_REGIONS."""
    metric = gpu.preemptible_metric if spot else gpu.quota_metric
    result = QuotaCheck(regions=[])
    limit, usage = project.get(GLOBAL_METRIC, (float("inf"), 0.0))
    if limit - usage < count:
        result.global_short = Quota(GLOBAL_METRIC, "global", limit, usage)
        return result
    for region in regions:
        limit, usage = regional.get(region, {}).get(metric, (0.0, 0.0))
        if limit - usage >= count:
            result.regions.append(region)
        else:
            result.short.append(Quota(metric, region, limit, usage))
    return result


def quota_message(project: str, count: int, check: QuotaCheck) -> str:
    link = f"https://console.cloud.google.com/iam-admin/quotas?project={project}"
    if check.global_short:
        q = check.global_short
        return (
            f"not enough GPU quota: {GLOBAL_METRIC} (all regions) limit {q.limit:g}, used {q.usage:g}, "
            f"need {count}; new projects often have 0: request more at {link} (metric {GLOBAL_METRIC})."
        )
    shorts = "; ".join(f"{q.metric} in {q.where}: limit {q.limit:g}, used {q.usage:g}" for q in check.short)
    return f"not enough GPU quota for {count} GPU(s): {shorts}. Request more at {link}, or try another --region."


# --- failover -------------------------------------------------------------------------------------


def error_scopes() -> dict[str, str]:
    return {row["reason"]: row["scope"] for row in gce_errors()["errors"]}


RETRY_IN_PLACE = {"RESOURCE_OPERATION_RATE_EXCEEDED", "rateLimitExceeded", "UNAVAILABLE", "INTERNAL"}


@dataclass
class Attempt:
    zone: str
    outcome: str  # created | blocked-zone | blocked-region | blocked-all | error
    reason: str = ""


def scope_of(reason: str, message: str) -> str:
    """What a failed create blocks: zone, region, or all (gce-errors.yaml)."""
    if GLOBAL_METRIC in message:
        return "all"
    return error_scopes().get(reason, "all")


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
        return "; ".join(f"{a.zone}: {a.reason}" for a in self.attempts)
