"""What a GPU VM costs per hour, from the dated price table in compat.yaml (gce_prices), and the
order in which regions are worth trying: cheapest for the request first, then nearest. Pure: no
API calls; the table's source, date and how far it was checked are written beside it."""

from __future__ import annotations

import time
from typing import Any

from tfrig.knowledge.catalog import compat

# Where a region is, by the prefix of its name, and the UTC offsets (hours) of the people nearest it.
_CONTINENTS = {
    "americas": (("us-", "northamerica-", "southamerica-"), range(-10, -2)),
    "europe": (("europe-", "me-", "africa-"), range(-2, 5)),
    "asia": (("asia-", "australia-"), range(5, 14)),
}


def _table() -> dict[str, Any]:
    return dict(compat()["gce_prices"])


def region_factor(region: str) -> float:
    table = _table()
    return float(table["region_factor"].get(region, table["other_regions_factor"]))


def hourly(machine: str, gpu: str, gpus: int, spot: bool, region: str) -> float | None:
    """About what one VM costs per hour in `region` (USD), or None when the table has no price."""
    table = _table()
    column = 1 if spot else 0
    if machine in table["machine_types"]:
        base = float(table["machine_types"][machine][column])
    elif machine.startswith("n1-") and gpu in table["n1_gpus"]:
        cpus = int(machine.rsplit("-", 1)[1])
        memory = {"standard": 3.75, "highmem": 6.5, "highcpu": 0.9}[machine.split("-")[1]] * cpus
        n1 = table["n1"]
        cpu_price, memory_price = (n1["spot_vcpu"], n1["spot_memory_gb"]) if spot else (n1["vcpu"], n1["memory_gb"])
        base = cpus * cpu_price + memory * memory_price + gpus * float(table["n1_gpus"][gpu][column])
    else:
        return None
    return base * region_factor(region)


def as_of() -> str:
    return str(_table()["as_of"])


def home(utc_offset_seconds: int | None = None) -> str:
    """The continent nearest this machine's user, from the local clock's UTC offset."""
    offset = time.localtime().tm_gmtoff if utc_offset_seconds is None else utc_offset_seconds
    hours = round(offset / 3600)
    return next((name for name, (_, offsets) in _CONTINENTS.items() if hours in offsets), "europe")


def distance(region: str, near: str) -> int:
    """0 for a region on the user's continent, 1 elsewhere."""
    prefixes = _CONTINENTS[near][0]
    return 0 if region.startswith(prefixes) else 1


def order_regions(regions: list[str], machine: str, gpu: str, gpus: int, spot: bool, near: str) -> list[str]:
    """Regions cheapest first for this request (a region without a price after those with one),
    then nearest, then by name."""

    def key(region: str) -> tuple[float, int, str]:
        price = hourly(machine, gpu, gpus, spot, region)
        return (price if price is not None else float("inf"), distance(region, near), region)

    return sorted(regions, key=key)


def money(amount: float | None) -> str:
    return "price unknown (not in tfrig's table)" if amount is None else f"about ${amount:.2f}/h"
