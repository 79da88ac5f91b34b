"""Prices from the Cloud Billing Catalog API (the fake serves its SKUs in the API's shape, from a
table of its own, tests/fakebilling.py): what tfrig shows must be what those SKUs say, never a
Flex-start (DWS), commitment or reservation entry for an ordinary VM."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import yaml

from tests import fakebilling
from tests.conftest import json_of
from tests.fakegce import FakeCompute
from tfrig.gce import billing
from tfrig.gce import prices as gceprice
from tfrig.gce.cloud import Cloud

LSSD = "SSD backed Local Storage"
# Each machine as the fake's table prices it: (label, count) parts.
PARTS = {
    ("n1-standard-4", 1): [("N1 Predefined Core", 4), ("N1 Predefined Ram", 15), ("Nvidia Tesla T4 GPU", 1)],
    ("g2-standard-4", 1): [("G2 Core", 4), ("G2 Ram", 16), ("Nvidia L4 GPU", 1)],
    ("g2-standard-24", 2): [("G2 Core", 24), ("G2 Ram", 96), ("Nvidia L4 GPU", 2)],
    ("a2-highgpu-1g", 1): [("A2 Core", 12), ("A2 Ram", 85), ("Nvidia Tesla A100 GPU", 1)],
    ("a3-highgpu-8g", 8): [("A3 Core", 208), ("A3 Ram", 1872), ("Nvidia H100 80GB GPU", 8), (LSSD, 6000)],
    ("a3-edgegpu-8g-nolssd", 8): [("A3 Core", 208), ("A3 Ram", 1872), ("Nvidia H100 80GB GPU", 8)],
}
GPU_OF = {"n1": "nvidia-tesla-t4", "g2": "nvidia-l4", "a2": "nvidia-tesla-a100", "a3": "nvidia-h100-80gb"}


@pytest.fixture
def fake() -> Iterator[FakeCompute]:
    api = FakeCompute()
    api.offer("nvidia-tesla-t4", ["us-central1-a", "europe-west4-a", "asia-east1-c"])
    api.offer("nvidia-h100-80gb", ["us-central1-a", "us-east4-a", "europe-north1-b"], cards=8, quota=8, preemptible=8)
    yield api
    api.close()


def sku_calls(fake: FakeCompute) -> int:
    return sum(1 for _, path in fake.calls if path.startswith("/v1/services/6F81-5844-456A/skus"))


def test_each_price_is_the_sum_of_the_catalogs_skus_for_each_model_and_region(fake):
    book = billing.fetch(Cloud(fake.project, fake.endpoint, "anonymous", endpoints={"billing": fake.endpoint}))
    assert sku_calls(fake) > 1  # the catalog came in pages
    for (machine, gpus), parts in PARTS.items():
        for model in gceprice.MODELS:
            for region in fakebilling.PLACES:
                want = fakebilling.price(parts, model, region)
                got = book.hourly(machine, GPU_OF[machine[:2]], gpus, model, region)
                assert (got is None) == (want is None), (machine, model, region)
                if want is not None:
                    assert got == pytest.approx(want, abs=1e-5), (machine, model, region)
    # The entries no ordinary VM pays were left out: the T4's on-demand price is its list price,
    # not the capacity-optimized, DWS or reservation entries beside it; N1 has no Flex-start price.
    assert book.n1_gpus["nvidia-tesla-t4"]["us-central1"] == [0.35, 0.14]
    assert book.hourly("n1-standard-4", "nvidia-tesla-t4", 1, "flex-start", "us-central1") is None
    # A series tfrig has no SKUs for (A4X: reservations) has no price, not a zero one.
    assert "a4x-highgpu-4g" not in book.machines


def test_a_sku_that_is_not_a_price_for_this_vm_is_left_out():
    def sku(description, usage="OnDemand"):
        return billing.Sku(description, usage, ("us-central1",), 1.0)

    kept = {
        "Nvidia Tesla T4 GPU running in Americas": ("on-demand", "Nvidia Tesla T4 GPU"),
        "Spot Preemptible A2 Instance Core running in Americas": ("spot", "A2 Core"),
        "Nvidia L4 GPU attached to Spot Preemptible VMs running in Americas": ("spot", "Nvidia L4 GPU"),
        "DWS Defined Duration A3 Ram running in Americas": ("flex-start", "A3 Ram"),
        "Nvidia H100 80GB GPU attached to DWS Defined Duration VMs running in Americas": (
            "flex-start",
            "Nvidia H100 80GB GPU",
        ),
    }
    for description, kind in kept.items():
        usage = "Preemptible" if "Spot" in description else "OnDemand"
        assert billing.classify(sku(description, usage)) == kind
    for description, usage in [
        ("Commitment v1: Nvidia H100 80GB GPU running in Americas for 1 Year", "Commit1Yr"),
        ("Reserved Nvidia Tesla A100 80GB GPU in Virginia", "OnDemand"),
        ("Reserved A3 Core in Calendar Mode running in Americas", "OnDemand"),
        ("Sole Tenancy Instance Core running in Americas", "OnDemand"),
        ("Capacity Optimized Nvidia Tesla T4 GPU running in Americas", "OnDemand"),
    ]:
        assert billing.classify(sku(description, usage)) is None, description
    assert billing.classify(billing.Sku("Nvidia Tesla T4 GPU running in Americas", "OnDemand", (), 0.0)) is None


def test_gcp_gpus_lists_what_is_sold_where_at_the_catalogs_prices(tfrig, fake, gcp_env):
    fake.machine_zones["a3-highgpu-8g"] = {"us-central1-a", "europe-north1-b"}  # not us-east4: A3 Edge only
    result = tfrig("gcp.gpus", "--gpu", "nvidia-h100-80gb", "--json", env=gcp_env)
    assert result.code == 0, result.err
    rows = json_of(result.out)
    eight = {r["region"]: r for r in rows if r["machine_type"] == "a3-highgpu-8g"}
    assert set(eight) == {"us-central1", "europe-north1"}
    parts = PARTS[("a3-highgpu-8g", 8)]
    for region, row in eight.items():
        assert row["zones"] == [z for z in ("us-central1-a", "europe-north1-b") if z.startswith(region)]
        assert row["price_source"] == "billing-api" and row["count"] == 8 and row["gpu"] == "nvidia-h100-80gb"
        for field, model in (
            ("on_demand_usd_hour", "on-demand"),
            ("spot_usd_hour", "spot"),
            ("flex_start_usd_hour", "flex-start"),
        ):
            assert row[field] == pytest.approx(fakebilling.price(parts, model, region), abs=1e-4)
    # A3 High with fewer than 8 GPUs is not sold on demand: no on-demand price, a Spot one.
    one = next(r for r in rows if r["machine_type"] == "a3-highgpu-1g")
    assert (
        one["on_demand_usd_hour"] is None and one["spot_usd_hour"] is not None and one["sold"] == ["Spot", "Flex-start"]
    )
    # --spot orders by the Spot price: europe-north1's 8 x H100 before us-central1's.
    spot = json_of(tfrig("gcp.gpus", "--gpu", "nvidia-h100-80gb", "--spot", "--json", env=gcp_env).out)
    spot_eight = [r["region"] for r in spot if r["machine_type"] == "a3-highgpu-8g"]
    assert spot_eight == ["europe-north1", "us-central1"]
    # The table, for people.
    shown = tfrig("gcp.gpus", "--gpu", "nvidia-tesla-t4", "--region", "europe-west4", env=gcp_env)
    assert shown.code == 0, shown.err
    assert "n1-standard-4" in shown.out and "asia-east1" not in shown.out and "prices: Cloud Billing API" in shown.out


def test_a_spot_create_goes_first_where_the_catalogs_spot_price_is_lowest(tfrig, fake, gcp_env):
    fake.project_quotas.update({"GPUS_ALL_REGIONS": [16, 0], "CPUS_ALL_REGIONS": [512, 0]})
    dry = tfrig(
        "--dry",
        "gcp.create",
        "--gpu",
        "nvidia-h100-80gb",
        "--gpus",
        "8",
        "--spot",
        "--name",
        "tfrig-alice",
        env=gcp_env,
    )
    assert dry.code == 0, dry.err
    want = fakebilling.price(PARTS[("a3-highgpu-8g", 8)], "spot", "europe-north1")
    assert want is not None
    assert f"in europe-north1-b first: about ${want:.2f}/h plus its disk (prices: Cloud Billing API, " in dry.out
    # Never the Flex-start (DWS) price for a Spot or on-demand VM:
    flex = fakebilling.price(PARTS[("a3-highgpu-8g", 8)], "flex-start", "europe-north1")
    assert f"${flex:.2f}/h" not in dry.out


def test_prices_are_cached_a_day_in_the_state_folder(tfrig, fake, gcp_env, state_dir):
    assert tfrig("gcp.gpus", "--gpu", "nvidia-tesla-t4", "--json", env=gcp_env).code == 0
    fetched = sku_calls(fake)
    assert fetched > 0
    assert tfrig("gcp.gpus", "--gpu", "nvidia-tesla-t4", "--json", env=gcp_env).code == 0
    assert sku_calls(fake) == fetched  # read from the cache
    (cached,) = (state_dir / "prices").iterdir()
    day_old = time.time() - 25 * 3600
    os.utime(cached, (day_old, day_old))
    assert tfrig("gcp.gpus", "--gpu", "nvidia-tesla-t4", "--json", env=gcp_env).code == 0
    assert sku_calls(fake) > fetched


def test_without_the_billing_api_the_dated_table_prices_and_says_so(tfrig, fake, gcp_env):
    fake.billing_error = (
        403,
        "SERVICE_DISABLED",
        "Cloud Billing API has not been used in project tfrig-test before or it is disabled.",
    )
    rows = json_of(tfrig("gcp.gpus", "--gpu", "nvidia-tesla-t4", "--json", env=gcp_env).out)
    table = gceprice.table()
    assert rows and {r["price_source"] for r in rows} == {f"table {table.as_of}"}
    dry = tfrig("--dry", "gcp.create", "--name", "tfrig-alice", env=gcp_env)
    assert dry.code == 0, dry.err
    assert f"(prices: tfrig's table of {table.as_of}; the Billing API: Cloud Billing API has not been used" in dry.out


def test_the_dated_table_is_written_by_the_code_that_prices_live(fake, tmp_path):
    written = tmp_path / "gce-prices.yaml"
    result = run_cli_module(
        "tfrig.gce.billing", "--endpoint", fake.endpoint, "--credentials", "anonymous", "--output", str(written)
    )
    assert result.returncode == 0, result.stderr
    data = yaml.safe_load(written.read_text())
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(data["as_of"])) and data["source"] == "Cloud Billing Catalog API"
    table = gceprice.PriceBook("table", str(data["as_of"]), data["machines"], data["n1"], data["n1_gpus"])
    want = fakebilling.price(PARTS[("a3-highgpu-8g", 8)], "spot", "europe-north1")
    assert table.hourly("a3-highgpu-8g", "nvidia-h100-80gb", 8, "spot", "europe-north1") == pytest.approx(
        want, abs=1e-5
    )
    # The shipped table has the same shape.
    shipped = gceprice.table()
    assert set(data) == {"as_of", "source", "machines", "n1", "n1_gpus"} and shipped.machines and shipped.n1


def run_cli_module(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120
    )


def test_gcp_check_says_where_prices_come_from_without_blocking(tfrig, fake, gcp_env):
    fake.billing_error = (403, "SERVICE_DISABLED", "Cloud Billing API has not been used in project tfrig-test before")
    result = tfrig("gcp.check", "--json", env=gcp_env)
    assert result.code == 0, result.text
    (prices,) = [c for c in json_of(result.out) if c["name"] == "prices"]
    assert not prices["ok"] and not prices["blocking"]
    assert prices["detail"].endswith(f"prices come from tfrig's table of {gceprice.table().as_of}")
    assert prices["fix"] == "`gcloud services enable cloudbilling.googleapis.com --project tfrig-test`"
