"""The Cloud Billing Catalog API's Compute Engine SKUs, as the fake serves them
(GET /v1/services/6F81-5844-456A/skus, REST JSON as cloudbilling.googleapis.com v1 answers).

The fake's own dated table, not tfrig's: us-central1 on-demand rates are the public list prices
(N1 and A2 vCPU 0.031611, GiB 0.004237; T4 0.35; L4 0.56; A100 2.933908; G2 0.024988/0.002928);
the other figures are chosen to be near the Billing API export of 2026-07-30 (Cyclenerd
pricing.yml @ fd66b26) and to differ by region the way Spot does (europe-north1's Spot H100 a
fifth of us-central1's). Beside them, the entries an ordinary VM must never be priced from: a
commitment, reservations (one at $0), calendar mode, sole tenancy, a capacity-optimized core, and
the Flex-start ("DWS Defined Duration") entries, priced below the list price as the real ones are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

AS_OF = "2026-07-30"
PLACES = {
    "us-central1": "Americas",
    "us-east1": "Americas",
    "us-east4": "Virginia",
    "europe-west4": "Netherlands",
    "europe-north1": "Finland",
    "asia-east1": "Taiwan",
}

# What is priced: the description's label, its resource group, per region (on demand, Spot,
# Flex-start) in USD per unit (hour; GiB-hour for RAM; GiB-month for Local SSD); None: no entry.
_US = {"us-central1", "us-east1"}


def _by_region(us: tuple, east4: tuple, eu_west4: tuple, eu_north1: tuple, asia: tuple) -> dict[str, tuple]:
    rows = {region: us for region in _US}
    rows.update({"us-east4": east4, "europe-west4": eu_west4, "europe-north1": eu_north1, "asia-east1": asia})
    return rows


RATES: dict[str, tuple[str, dict[str, tuple]]] = {
    "N1 Predefined Core": (
        "N1Standard",
        _by_region(
            (0.031611, 0.01115, None),
            (0.035605, 0.0121, None),
            (0.034802, 0.02022, None),
            (0.034806, 0.0093, None),
            (0.036602, 0.0095, None),
        ),
    ),
    "N1 Predefined Ram": (
        "N1Standard",
        _by_region(
            (0.004237, 0.001494, None),
            (0.004771, 0.00162, None),
            (0.004664, 0.00271, None),
            (0.004664, 0.00125, None),
            (0.004906, 0.00127, None),
        ),
    ),
    "Nvidia Tesla T4 GPU": (
        "GPU",
        _by_region(
            (0.35, 0.14, None), (0.35, 0.069, None), (0.35, 0.088, None), (0.41, 0.16, None), (0.35, 0.12, None)
        ),
    ),
    "G2 Core": (
        "CPU",
        _by_region(
            (0.024988, 0.011, 0.0125),
            (0.024915, 0.0099, 0.0125),
            (0.026237, 0.0118, 0.0131),
            (0.027501, 0.0052, 0.0138),
            (0.028931, 0.0127, 0.0145),
        ),
    ),
    "G2 Ram": (
        "RAM",
        _by_region(
            (0.002928, 0.00129, 0.00146),
            (0.002919, 0.00116, 0.00146),
            (0.003074, 0.00138, 0.00154),
            (0.003222, 0.00061, 0.00161),
            (0.00339, 0.00149, 0.0017),
        ),
    ),
    "Nvidia L4 GPU": (
        "GPU",
        _by_region(
            (0.56004, 0.2512, 0.28),
            (0.55827, 0.2233, 0.279),
            (0.588, 0.2649, 0.294),
            (0.6164, 0.1181, 0.308),
            (0.6484, 0.2868, 0.324),
        ),
    ),
    "A2 Core": (
        "CPU",
        _by_region(
            (0.031611, 0.01655, 0.0158),
            (0.035605, 0.0154, 0.0178),
            (0.034802, 0.0127, 0.0174),
            (0.034806, 0.0061, 0.0174),
            (0.036602, 0.0145, 0.0183),
        ),
    ),
    "A2 Ram": (
        "RAM",
        _by_region(
            (0.004237, 0.00222, 0.00212),
            (0.004771, 0.00206, 0.00239),
            (0.004664, 0.0017, 0.00233),
            (0.004664, 0.00082, 0.00233),
            (0.004906, 0.00194, 0.00245),
        ),
    ),
    "Nvidia Tesla A100 GPU": (
        "GPU",
        _by_region(
            (2.933908, 1.5452, 1.4669),
            (3.2272, 1.4361, 1.6136),
            (2.9926, 1.1889, 1.4963),
            (3.0, 0.5722, 1.5),
            (3.1986, 1.3551, 1.5993),
        ),
    ),
    "A3 Core": (
        "CPU",
        _by_region(
            (0.021, 0.012, 0.0105),
            (0.021, 0.0055, 0.0105),
            (0.0267, 0.0072, 0.0134),
            (0.0231, 0.0024, 0.0116),
            (0.0243, 0.0113, 0.0122),
        ),
    ),
    "A3 Ram": (
        "RAM",
        _by_region(
            (0.0027214, 0.00156, 0.00136),
            (0.0027214, 0.00071, 0.00136),
            (0.0034606, 0.00093, 0.00173),
            (0.0029935, 0.00031, 0.0015),
            (0.0031493, 0.00147, 0.00157),
        ),
    ),
    "Nvidia H100 80GB GPU": (
        "GPU",
        _by_region(
            (9.79616, 5.6, 4.2),
            (9.79616, 2.6, 4.2),
            (12.4622, 3.3, 5.34),
            (10.7758, 1.12, 4.62),
            (11.3313, 5.2, 4.86),
        ),
    ),
    "SSD backed Local Storage": (
        "LocalSSD",
        _by_region(
            (0.08, 0.048, None),
            (0.088, 0.0528, None),
            (0.088, 0.0528, None),
            (0.088, 0.0528, None),
            (0.088, 0.0528, None),
        ),
    ),
}

# Never a price for an ordinary, Spot or Flex-start VM: (description, usage type, group, region, USD).
DECOYS = [
    ("Commitment v1: Nvidia H100 80GB GPU running in Americas for 1 Year", "Commit1Yr", "GPU", "us-central1", 6.2),
    ("Reserved Nvidia Tesla A100 GPU in Americas", "OnDemand", "GPU", "us-central1", 0.0),
    ("Reserved Nvidia H100 80GB GPU running in Americas", "OnDemand", "GPU", "us-central1", 3.1),
    ("Reserved A3 Core in Calendar Mode running in Americas", "OnDemand", "CPU", "us-central1", 0.001),
    ("Sole Tenancy Instance Core running in Americas", "OnDemand", "CPU", "us-central1", 0.0001),
    ("Capacity Optimized Nvidia Tesla T4 GPU running in Americas", "OnDemand", "GPU", "us-central1", 0.01),
    ("Commitment v1: G2 Cpu in Americas for 3 Year", "Commit3Yr", "CPU", "us-central1", 0.001),
    (
        "Nvidia Tesla T4 GPU attached to DWS Defined Duration VMs running in Americas",
        "OnDemand",
        "GPU",
        "us-central1",
        0.05,
    ),
    ("Custom Instance Core running in Americas", "OnDemand", "CPU", "us-central1", 0.0001),
]


def _money(usd: float) -> dict[str, Any]:
    units = int(usd)
    return {"currencyCode": "USD", "units": str(units), "nanos": round((usd - units) * 1e9)}


def _sku(number: int, description: str, usage: str, group: str, region: str, usd: float) -> dict[str, Any]:
    family = "Storage" if group == "LocalSSD" else "Compute"
    unit = {"LocalSSD": "GiBy.mo", "RAM": "GiBy.h"}.get(group, "h")
    if group == "N1Standard" and description.endswith("Ram"):
        unit = "GiBy.h"
    sku_id = f"F{number:03d}-{number * 7 % 10000:04d}-{number * 13 % 10000:04d}"
    return {
        "name": f"services/6F81-5844-456A/skus/{sku_id}",
        "skuId": sku_id,
        "description": description,
        "category": {
            "serviceDisplayName": "Compute Engine",
            "resourceFamily": family,
            "resourceGroup": group,
            "usageType": usage,
        },
        "serviceRegions": [region],
        "pricingInfo": [
            {
                "effectiveTime": f"{AS_OF}T00:00:00Z",
                "pricingExpression": {
                    "usageUnit": unit,
                    "displayQuantity": 1,
                    # A free first tier, as some SKUs have, before the price.
                    "tieredRates": [
                        {"startUsageAmount": 0, "unitPrice": _money(0)},
                        {"startUsageAmount": 0.001, "unitPrice": _money(usd)},
                    ]
                    if number % 5 == 0
                    else [{"startUsageAmount": 0, "unitPrice": _money(usd)}],
                },
                "currencyConversionRate": 1,
            }
        ],
        "serviceProviderName": "Google",
        "geoTaxonomy": {"type": "REGIONAL", "regions": [region]},
    }


def _described(label: str, model: str, group: str, place: str) -> str:
    """The catalog's wording: "A2 Instance Core running in X", "Spot Preemptible A2 Instance
    Core ...", "DWS Defined Duration A2 Core ...", "Nvidia L4 GPU attached to Spot Preemptible VMs ..."."""
    if group in ("GPU", "LocalSSD"):
        tail = {
            "on-demand": "",
            "spot": " attached to Spot Preemptible VMs",
            "flex": " attached to DWS Defined Duration VMs",
        }
        return f"{label}{tail[model]} running in {place}"
    series, resource = label.rsplit(" ", 1)
    if model == "flex":
        return f"DWS Defined Duration {series} {resource} running in {place}"
    spot = "Spot Preemptible " if model == "spot" else ""
    return f"{spot}{series} Instance {resource} running in {place}"


def skus() -> list[dict[str, Any]]:
    found = []
    for label, (group, regions) in RATES.items():
        for region, prices in sorted(regions.items()):
            for model, usd in zip(("on-demand", "spot", "flex"), prices, strict=True):
                if usd is not None:
                    usage = "Preemptible" if model == "spot" else "OnDemand"
                    description = _described(label, model, group, PLACES[region])
                    found.append((description, usage, group, region, usd))
    found += DECOYS
    return [_sku(number, *row) for number, row in enumerate(found, 1)]


def price(parts: Sequence[tuple[str, float]], model: str, region: str) -> float | None:
    """The fake's own sum for a VM made of `parts` (label, count; Local SSD in GiB), as its table
    says: what tfrig must show."""
    column = {"on-demand": 0, "spot": 1, "flex-start": 2}[model]
    total = 0.0
    for label, count in parts:
        rate = RATES[label][1].get(region, (None, None, None))[column]
        if label == "SSD backed Local Storage" and rate is None:
            rate = RATES[label][1][region][0]
        if rate is None:
            return None
        total += rate * count / (730 if label == "SSD backed Local Storage" else 1)
    return total
