"""What a GPU VM costs per hour, and the order in which regions are worth trying: cheapest for the
request first, then nearest. Pure: no API calls.

Prices come from a PriceBook: the Cloud Billing Catalog API's, cached a day in the state folder, or,
where the API can't be reached, the dated table tfrig/data/gce-prices.yaml that the same code wrote
(tfrig.gce.billing.load picks the book for the run); every price shown (gcp.create, gcp.list,
gcp.down, gcp.gpus) comes from it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cache
from typing import Any

MODELS = ("on-demand", "spot", "flex-start")

# Where a region is, by the prefix of its name, and the UTC offsets (hours) of the people nearest it.
_CONTINENTS = {
    "americas": (("us-", "northamerica-", "southamerica-"), range(-10, -2)),
    "europe": (("europe-", "me-", "africa-"), range(-2, 5)),
    "asia": (("asia-", "australia-"), range(5, 14)),
}


@dataclass
class PriceBook:
    """USD per hour: machines[machine][region] = [on demand, Spot, Flex-start] for the whole VM
    with its GPUs; n1[region] = [vCPU, GiB, Spot vCPU, Spot GiB]; n1_gpus[gpu][region] = [on
    demand, Spot] per GPU. None where it isn't sold that way (or isn't priced)."""

    source: str  # billing-api or table
    as_of: str  # YYYY-MM-DD
    machines: dict[str, dict[str, list[float | None]]] = field(default_factory=dict)
    n1: dict[str, list[float | None]] = field(default_factory=dict)
    n1_gpus: dict[str, dict[str, list[float | None]]] = field(default_factory=dict)
    note: str = ""  # why the table stands in for the API, where it does

    def tables(self) -> dict[str, Any]:
        return {"machines": self.machines, "n1": self.n1, "n1_gpus": self.n1_gpus}

    @property
    def label(self) -> str:
        """billing-api, or table YYYY-MM-DD (the price_source of gcp.gpus --json)."""
        return "billing-api" if self.source == "billing-api" else f"table {self.as_of}"

    def hourly(self, machine: str, gpu: str, gpus: int, model: str, region: str) -> float | None:
        column = MODELS.index(model)
        if machine in self.machines:
            row = self.machines[machine].get(region)
            return row[column] if row else None
        if not machine.startswith("n1-") or column > 1:
            return None
        host, card = self.n1.get(region), self.n1_gpus.get(gpu, {}).get(region)
        if host is None or card is None:
            return None
        from tfrig.gce.plan import shape

        cpus, memory, _ = shape(machine)
        cpu_rate, memory_rate, gpu_rate = host[2 * column], host[2 * column + 1], card[column]
        if cpu_rate is None or memory_rate is None or gpu_rate is None:
            return None
        return cpus * cpu_rate + memory * memory_rate + gpus * gpu_rate


@cache
def table() -> PriceBook:
    """The dated table shipped with tfrig."""
    from tfrig.knowledge.catalog import gce_prices

    data = gce_prices()
    return PriceBook(
        source="table", as_of=str(data["as_of"]), machines=data["machines"], n1=data["n1"], n1_gpus=data["n1_gpus"]
    )


_book: PriceBook | None = None


def current() -> PriceBook:
    """The book this run uses: the one chosen (`use`), else the table."""
    return _book or table()


def chosen() -> PriceBook | None:
    return _book


def use(book: PriceBook) -> PriceBook:
    """Make `book` the one this run prices with (tfrig.gce.billing.load chooses it)."""
    global _book
    _book = book
    return book


def hourly(machine: str, gpu: str, gpus: int, spot: bool, region: str, flex: bool = False) -> float | None:
    """About what one VM costs per hour in `region` (USD), or None when the book has no price."""
    model = "flex-start" if flex else "spot" if spot else "on-demand"
    return current().hourly(machine, gpu, gpus, model, region)


def as_of() -> str:
    """Where the prices come from, for the price line: "Billing API, 2026-12-07" or "table of
    2026-07-30 (the Billing API: ...)"."""
    book = current()
    if book.source == "billing-api":
        return f"Cloud Billing API, {book.as_of}"
    return f"tfrig's table of {book.as_of}" + (f"; {book.note}" if book.note else "")


def home(utc_offset_seconds: int | None = None) -> str:
    """The continent nearest this machine's user, from the local clock's UTC offset."""
    offset = time.localtime().tm_gmtoff if utc_offset_seconds is None else utc_offset_seconds
    hours = round(offset / 3600)
    return next((name for name, (_, offsets) in _CONTINENTS.items() if hours in offsets), "europe")


def distance(region: str, near: str) -> int:
    """0 for a region on the user's continent, 1 elsewhere."""
    prefixes = _CONTINENTS[near][0]
    return 0 if region.startswith(prefixes) else 1


def order_regions(regions: list[str], machine: str, gpu: str, gpus: int, model: str, near: str) -> list[str]:
    """Regions cheapest first for this request (`model`: on-demand, spot or flex-start; a region
    without a price after those with one), then nearest, then by name."""

    def key(region: str) -> tuple[float, int, str]:
        price = current().hourly(machine, gpu, gpus, model, region)
        return (price if price is not None else float("inf"), distance(region, near), region)

    return sorted(regions, key=key)


def money(amount: float | None) -> str:
    return "price unknown" if amount is None else f"about ${amount:.2f}/h"


def offers(
    book: PriceBook, zones_of: dict[tuple[str, str, int], list[str]], spot_first: bool = False
) -> list[dict[str, Any]]:
    """One row per GPU type, machine type and region where that machine type is offered
    (`zones_of[(gpu, machine, count)]`: its zones), with the book's hourly prices (None where it
    is not sold that way), cheapest first (Spot's price first with `spot_first`)."""
    from tfrig.gce.plan import sold_as

    rows = []
    for (gpu, machine, count), zones in zones_of.items():
        by_region: dict[str, list[str]] = {}
        for zone in sorted(zones):
            by_region.setdefault(zone.rsplit("-", 1)[0], []).append(zone)
        how = sold_as(machine)
        for region, region_zones in sorted(by_region.items()):
            priced = {
                model: book.hourly(machine, gpu, count, model, region) if shown in how else None
                for model, shown in zip(MODELS, ("on demand", "Spot", "Flex-start"), strict=True)
            }
            rows.append(
                {
                    "gpu": gpu,
                    "count": count,
                    "machine_type": machine,
                    "region": region,
                    "zones": region_zones,
                    "on_demand_usd_hour": _cents(priced["on-demand"]),
                    "spot_usd_hour": _cents(priced["spot"]),
                    "flex_start_usd_hour": _cents(priced["flex-start"]),
                    "sold": how,
                    "price_source": book.label,
                }
            )
    first, second = ("spot_usd_hour", "on_demand_usd_hour") if spot_first else ("on_demand_usd_hour", "spot_usd_hour")

    def key(row: dict[str, Any]) -> tuple[float, float, str, int, str]:
        none = float("inf")
        return (
            row[first] if row[first] is not None else none,
            row[second] if row[second] is not None else none,
            row["gpu"],
            row["count"],
            row["region"],
        )

    return sorted(rows, key=key)


def _cents(price: float | None) -> float | None:
    return None if price is None else round(price, 4)
