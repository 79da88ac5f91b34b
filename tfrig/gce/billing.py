"""Compute Engine's list prices from the Cloud Billing Catalog API, composed into what each GPU VM
costs per hour in each region (a tfrig.gce.prices.PriceBook).

The catalog has no machine-type-to-SKU link; the join is the SKU's description, as the public
fetchers do it (dstackai/gpuhunt providers/gcp.py, Cyclenerd/google-cloud-pricing-cost-calculator
build/mapping.csv):
- on demand: "A2 Instance Core running in Americas", "Nvidia Tesla A100 GPU running in Americas";
- Spot (usage type Preemptible): "Spot Preemptible A2 Instance Core running in ...",
  "Nvidia Tesla A100 GPU attached to Spot Preemptible VMs running in ...";
- Flex-start (Dynamic Workload Scheduler): "DWS Defined Duration A2 Core running in ...",
  "Nvidia Tesla A100 GPU attached to DWS Defined Duration VMs running in ...". These are usage
  type OnDemand too, so an ordinary VM must never take them (SkyPilot's catalog did: H100 at
  $4.20 per GPU-hour in us-central1 against a list price near $9.80);
- left out: commitments, reservations (some priced at $0), calendar mode, sole tenancy, custom
  and capacity-optimized shapes.
A VM's price: vCPUs x the family's core rate + GiB x its RAM rate + GPUs x the GPU rate + its
bundled Local SSD (GiB-month rate / 730 h). A4 is sold per "A4 Nvidia B200 (1 gpu slice)", which
covers the whole machine's share.

`python -m tfrig.gce.billing [--endpoint URL]` writes tfrig/data/gce-prices.yaml, the dated table
used when the API can't be reached.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from tfrig.gce import plan as gceplan
from tfrig.gce import prices as gceprice
from tfrig.gce.prices import PriceBook

COMPUTE_SERVICE = "services/6F81-5844-456A"  # Compute Engine's service in the catalog
HOURS_PER_MONTH = 730  # Google's pricing month (Local SSD is priced per GiB-month)
MODELS = gceprice.MODELS
CACHE_SECONDS = 24 * 3600

# Description words of prices no ordinary, Spot or Flex-start VM pays.
_LEFT_OUT = (
    "Commitment",
    "Committed",
    "Reserved",
    "Reservation",
    "Calendar Mode",
    "Sole Tenancy",
    "Custom",
    "Capacity Optimized",
    "Extended",
    "Premium",
)
_SPOT = (re.compile(r"^Spot Preemptible "), re.compile(r" attached to Spot Preemptible VMs$"))
_FLEX = (re.compile(r"^DWS Defined Duration "), re.compile(r" attached to DWS Defined Duration VMs$"))

# A machine series' vCPU/RAM SKU label (the description less " Instance Core"/" Core") and its GPU
# SKU label, by machine-type prefix; the longest prefix wins. A3 Mega bills as "A3Plus" (gpuhunt),
# A2 Ultra's vCPUs/RAM as plain A2 (Cyclenerd's mapping); A3 Ultra as "A3Ultra" and G4's GPU as
# "RTX 6000 96GB" follow public parsers of the catalog, not read in the catalog itself here.
_SERIES = {
    "n1-": ("N1 Predefined", None),
    "a2-highgpu-": ("A2", "Nvidia Tesla A100 GPU"),
    "a2-megagpu-": ("A2", "Nvidia Tesla A100 GPU"),
    "a2-ultragpu-": ("A2", "Nvidia Tesla A100 80GB GPU"),
    "a3-highgpu-": ("A3", "Nvidia H100 80GB GPU"),
    "a3-edgegpu-": ("A3", "Nvidia H100 80GB GPU"),
    "a3-megagpu-": ("A3Plus", "Nvidia H100 80GB Mega GPU"),
    "a3-ultragpu-": ("A3Ultra", "H200 141GB GPU"),
    "a4-highgpu-": (None, "A4 Nvidia B200 (1 gpu slice)"),
    "g2-": ("G2", "Nvidia L4 GPU"),
    "g4-": ("G4", "RTX 6000 96GB"),
}
# The GPUs attached to N1 machines, by accelerator type.
N1_GPU_SKUS = {
    "nvidia-tesla-t4": "Nvidia Tesla T4 GPU",
    "nvidia-tesla-p4": "Nvidia Tesla P4 GPU",
    "nvidia-tesla-p100": "Nvidia Tesla P100 GPU",
    "nvidia-tesla-v100": "Nvidia Tesla V100 GPU",
}
_LOCAL_SSD = "SSD backed Local Storage"


@dataclass(frozen=True)
class Sku:
    """One catalog entry, as much of it as prices need."""

    description: str
    usage_type: str  # OnDemand, Preemptible, Commit1Yr, ...
    regions: tuple[str, ...]
    usd: float  # per usage unit (hour, GiB-hour, GiB-month)

    @classmethod
    def from_api(cls, sku: Any) -> Sku:
        """From google.cloud.billing_v1's Sku: the newest pricing, its first rate above zero (a free
        first tier, where there is one, is not the price)."""
        rates = [rate for info in sku.pricing_info[-1:] for rate in info.pricing_expression.tiered_rates]
        amounts = [rate.unit_price.units + rate.unit_price.nanos / 1e9 for rate in rates]
        usd = next((amount for amount in amounts if amount > 0), 0.0)
        return cls(sku.description, sku.category.usage_type, tuple(sku.service_regions), usd)


def classify(sku: Sku) -> tuple[str, str] | None:
    """(model, what) for a price tfrig uses: model on-demand, spot or flex-start; what the label
    less its model words and region ("A2 Core", "Nvidia Tesla T4 GPU", "SSD backed Local Storage").
    None for anything else."""
    if sku.usage_type not in ("OnDemand", "Preemptible") or sku.usd <= 0:
        return None
    what = re.sub(r" running in .*$", "", sku.description).strip()
    if any(word in what for word in _LEFT_OUT):
        return None
    model = "spot" if sku.usage_type == "Preemptible" else "on-demand"
    for marks, name in ((_SPOT, "spot"), (_FLEX, "flex-start")):
        for mark in marks:
            if mark.search(what):
                what, model = mark.sub("", what), name
    if model == "flex-start" and sku.usage_type != "OnDemand":
        return None
    return model, what.replace(" Instance ", " ")


def rates(skus: Iterable[Sku]) -> dict[tuple[str, str, str], float]:
    """(model, region, what) -> USD per unit, from the SKUs tfrig uses."""
    found: dict[tuple[str, str, str], float] = {}
    for sku in skus:
        kind = classify(sku)
        if kind is None:
            continue
        model, what = kind
        for region in sku.regions:
            found[(model, region, what)] = sku.usd
    return found


def _series(machine: str) -> tuple[str | None, str | None]:
    prefix = max((p for p in _SERIES if machine.startswith(p)), key=len, default=None)
    if prefix is None:
        return None, None
    return _SERIES[prefix]


def machine_price(
    found: dict[tuple[str, str, str], float], machine: str, gpus: int, model: str, region: str
) -> float | None:
    """What `machine` with its `gpus` GPUs (the machine type's own) costs per hour, or None where a
    part has no price (not sold that way there)."""
    label, gpu_sku = _series(machine)
    if label is None and gpu_sku is None:
        return None  # a series whose SKUs tfrig doesn't know (A4X: reservations only)
    cpus, memory, local_ssd = gceplan.shape(machine)
    parts: list[tuple[str, float]] = []
    if label is not None:
        parts += [(f"{label} Core", cpus), (f"{label} Ram", memory)]
    if gpu_sku is not None:
        parts.append((gpu_sku, gpus))
    if local_ssd:
        # Flex-start VMs' Local SSD: its own SKU where the catalog has one, else the on-demand price.
        lssd = found.get((model, region, _LOCAL_SSD)) or found.get(("on-demand", region, _LOCAL_SSD))
        if lssd is None:
            return None
        parts_total = local_ssd * lssd / HOURS_PER_MONTH
    else:
        parts_total = 0.0
    for what, count in parts:
        rate = found.get((model, region, what))
        if rate is None:
            return None
        parts_total += rate * count
    return parts_total


def n1_rates(found: dict[tuple[str, str, str], float], model: str, region: str) -> list[float | None] | None:
    """[vCPU, GiB] hourly rates of N1 in `region`."""
    core, ram = found.get((model, region, "N1 Predefined Core")), found.get((model, region, "N1 Predefined Ram"))
    return None if core is None or ram is None else [core, ram]


def book(skus: Iterable[Sku], source: str, as_of: str) -> PriceBook:
    """The price book of every GPU machine type tfrig knows, in every region the catalog prices it."""
    found = rates(skus)
    regions = sorted({region for _, region, _ in found})
    machines: dict[str, dict[str, list[float | None]]] = {}
    for gpu in gceplan.gpu_types().values():
        for machine, count in gpu.machine_types.items():
            for region in regions:
                row = [machine_price(found, machine, count, model, region) for model in MODELS]
                if any(price is not None for price in row):
                    machines.setdefault(machine, {})[region] = [_rounded(p) for p in row]
    n1: dict[str, list[float | None]] = {}
    for region in regions:
        on_demand, spot = n1_rates(found, "on-demand", region), n1_rates(found, "spot", region)
        if on_demand:
            n1[region] = [*on_demand, *(spot or [None, None])]
    n1_gpus: dict[str, dict[str, list[float | None]]] = {}
    for gpu_name, sku_label in N1_GPU_SKUS.items():
        for region in regions:
            row = [found.get((model, region, sku_label)) for model in MODELS[:2]]
            if row[0] is not None or row[1] is not None:
                n1_gpus.setdefault(gpu_name, {})[region] = row
    return PriceBook(source=source, as_of=as_of, machines=machines, n1=n1, n1_gpus=n1_gpus)


def _rounded(price: float | None) -> float | None:
    return None if price is None else round(price, 6)


def fetch(cloud: Any) -> PriceBook:
    """The price book from the live catalog (the Billing endpoint of `cloud`)."""
    import datetime

    skus: list[Sku] = []
    token = ""
    while True:  # page by page, each request one `call` (its retries, its errors)
        request = {"parent": COMPUTE_SERVICE, "page_size": 5000, "page_token": token}
        page = cloud.call("CloudCatalogClient", "list_skus", request=request)
        skus += [Sku.from_api(sku) for sku in page.skus]
        token = page.next_page_token
        if not token:
            break
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    return book(skus, "billing-api", today)


def load(cloud: Any) -> PriceBook:
    """The live catalog's prices for this run, from the day's cache or the Billing API; the table
    where neither can be had (the reason kept in its `note`). Once per run."""
    from tfrig import state

    if gceprice.chosen() is not None:
        return gceprice.current()
    endpoint = cloud.endpoints.get("billing") or "https://cloudbilling.googleapis.com"
    cached = state.state_dir() / "prices" / f"{hashlib.sha256(endpoint.encode()).hexdigest()[:16]}.json"
    try:
        if time.time() - cached.stat().st_mtime < CACHE_SECONDS:
            return gceprice.use(PriceBook(**json.loads(cached.read_text())))
    except (OSError, ValueError, TypeError):
        pass
    from invoke.exceptions import Exit

    from tfrig.gce.cloud import ApiError

    try:
        live = fetch(cloud)
    except (ApiError, Exit) as exc:
        why = exc.message if isinstance(exc, ApiError) else str(exc)
        return gceprice.use(PriceBook(**{**asdict(gceprice.table()), "note": f"the Billing API: {why[:160]}"}))
    folder = state.private_dir(cached.parent)
    (folder / cached.name).write_text(json.dumps(asdict(live)))
    return gceprice.use(live)


def main(argv: list[str] | None = None) -> None:
    """Write tfrig/data/gce-prices.yaml from the live catalog."""
    import argparse
    from pathlib import Path

    import yaml

    from tfrig.gce.cloud import Cloud

    parser = argparse.ArgumentParser(prog="python -m tfrig.gce.billing", description=main.__doc__)
    shipped = Path(__file__).resolve().parent.parent / "data" / "gce-prices.yaml"
    parser.add_argument("--endpoint", help="the Cloud Billing API's endpoint (default: Google's)")
    parser.add_argument("--credentials", help="anonymous: for a private or test API (as gcp.credentials)")
    parser.add_argument("--project", default="tfrig-prices", help="only names the calls; the catalog is public")
    parser.add_argument("--output", type=Path, default=shipped, help=f"default {shipped}")
    args = parser.parse_args(argv)
    cloud = Cloud(args.project, args.endpoint, args.credentials, endpoints={"billing": args.endpoint})
    prices = fetch(cloud)
    path = args.output
    header = (
        "# Compute Engine list prices per GPU machine type and region (USD/h: on demand, Spot, Flex-start;\n"
        "# null: not sold that way there), N1 vCPU/GiB rates and N1 GPU rates, from the Cloud Billing\n"
        f"# Catalog API on {prices.as_of}. Written by `python -m tfrig.gce.billing`; tfrig reads the live\n"
        "# API (cached a day) and uses this table only when the API can't be reached.\n"
    )
    body = {"as_of": prices.as_of, "source": "Cloud Billing Catalog API", **prices.tables()}
    path.write_text(header + yaml.safe_dump(body, sort_keys=True, default_flow_style=None, width=120))
    print(f"wrote {path} ({len(prices.machines)} machine types)")


if __name__ == "__main__":
    main()
