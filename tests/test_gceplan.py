"""Pure Compute Engine decisions: validation, machine types, zone choice, quota arithmetic, failover."""

from __future__ import annotations

import re

import pytest

from tfrig.gce import plan as gceplan
from tfrig.gce import prices as gceprice

T4 = gceplan.gpu_type("nvidia-tesla-t4")
L4 = gceplan.gpu_type("nvidia-l4")


@pytest.mark.parametrize(
    ("gpu", "count", "requested", "expected"),
    [
        ("nvidia-tesla-t4", 1, None, "n1-standard-4"),
        ("nvidia-tesla-t4", 4, None, "n1-standard-16"),
        ("nvidia-tesla-v100", 8, None, "n1-standard-32"),
        ("nvidia-tesla-t4", 1, "n1-highmem-8", "n1-highmem-8"),
        ("nvidia-l4", 1, None, "g2-standard-4"),
        ("nvidia-l4", 2, None, "g2-standard-24"),
        ("nvidia-l4", 1, "g2-standard-16", "g2-standard-16"),
        ("nvidia-tesla-a100", 8, None, "a2-highgpu-8g"),
        ("nvidia-h100-80gb", 8, None, "a3-highgpu-8g"),
    ],
)
def test_machine_types(gpu, count, requested, expected):
    assert gceplan.machine_type(gceplan.gpu_type(gpu), count, requested) == expected


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: gceplan.machine_type(T4, 3, None), "--gpus 3: nvidia-tesla-t4 comes in counts of 1, 2, 4 per VM."),
        (lambda: gceplan.machine_type(L4, 1, "n1-standard-8"), "nvidia-l4 comes attached to G2 machine types"),
        (
            lambda: gceplan.machine_type(L4, 2, "g2-standard-4"),
            "--machine-type g2-standard-4 has 1 x nvidia-l4, not 2.",
        ),
        (lambda: gceplan.machine_type(T4, 1, "n1-standard-64"), "1 x nvidia-tesla-t4 allows at most 48 vCPUs on N1"),
        (lambda: gceplan.machine_type(T4, 1, "e2-standard-4"), "nvidia-tesla-t4 runs on N1 machine types"),
        (
            lambda: gceplan.gpu_type("nvidia-tesla-k80"),
            "retired on Compute Engine (K80s are no longer usable since May 1, 2024)",
        ),
        (
            lambda: gceplan.gpu_type("nvidia-rtx-9090"),
            "--gpu nvidia-rtx-9090: not a Compute Engine GPU type tfrig knows",
        ),
        (lambda: gceplan.check_name("Tfrig_VM"), "--name Tfrig_VM: Compute Engine names are 1-63 lowercase letters"),
        (lambda: gceplan.check_name("a" * 64), "Compute Engine names are 1-63"),
        (lambda: gceplan.region_of("us-central1"), "'us-central1' is not a zone name such as us-central1-a."),
        (lambda: gceplan.duration_seconds("forever"), "--max-run-duration forever: write it like 2h"),
        (lambda: gceplan.duration_seconds("10s"), "Compute Engine allows 30 seconds to 120 days"),
    ],
    ids=[
        "count",
        "l4-on-n1",
        "l4-count",
        "n1-cpus",
        "family",
        "k80",
        "unknown",
        "name-case",
        "name-long",
        "zone",
        "duration",
        "too-short",
    ],
)
def test_invalid_requests(call, message):
    with pytest.raises(gceplan.Invalid) as invalid:
        call()
    assert message in str(invalid.value)


def test_default_name_and_durations():
    assert gceplan.default_name("Alice.Smith") == "tfrig-alice-smith"
    assert gceplan.duration_seconds("1h30m") == 5400
    assert gceplan.duration_seconds("90m") == 5400


OFFERED = {"us-central1-a": 4, "us-central1-b": 4, "europe-west4-a": 4, "asia-east1-c": 2}


def test_candidate_zones():
    # Without a ranking, regions go by name; a pin or a narrowing wins over everything.
    assert gceplan.candidate_zones(OFFERED, 1, None, None) == [
        "asia-east1-c",
        "europe-west4-a",
        "us-central1-a",
        "us-central1-b",
    ]
    assert gceplan.candidate_zones(OFFERED, 4, None, None) == ["europe-west4-a", "us-central1-a", "us-central1-b"]
    assert gceplan.candidate_zones(OFFERED, 1, None, "us-central1") == ["us-central1-a", "us-central1-b"]
    assert gceplan.candidate_zones(OFFERED, 1, "europe-west4-a", None) == ["europe-west4-a"]
    with pytest.raises(
        gceplan.Invalid,
        match="--zone us-central1-f: no such zone, or it doesn't offer this GPU; it is offered in us-central1-a, us-central1-b",
    ):
        gceplan.candidate_zones(OFFERED, 1, "us-central1-f", None)
    with pytest.raises(
        gceplan.Invalid,
        match="--region us-west1: doesn't offer this GPU; regions that do: asia-east1, europe-west4, us-central1",
    ):
        gceplan.candidate_zones(OFFERED, 1, None, "us-west1")


def _book(monkeypatch, n1_gpus, n1=None):
    """Prices as a book says (the Billing API's or the table's), for this test."""
    host = n1 or {
        r: [0.031611, 0.004237, 0.01115, 0.001494]
        for r in ("asia-east1", "europe-west4", "us-central1", "us-east1", "us-west2", "europe-north1")
    }
    book = gceprice.PriceBook(source="billing-api", as_of="2026-12-07", n1=host, n1_gpus={T4.name: n1_gpus})
    monkeypatch.setattr(gceprice, "_book", book)
    return book


def test_regions_go_cheapest_first_then_nearest_and_a_configured_zone_only_goes_first(monkeypatch):
    _book(
        monkeypatch,
        {"us-central1": [0.35, 0.14], "us-east1": [0.35, 0.14], "europe-west4": [0.37, 0.2], "asia-east1": [0.4, 0.05]},
    )
    regions = ["asia-east1", "europe-west4", "us-central1", "us-east1"]
    from_europe = gceprice.order_regions(regions, "n1-standard-4", T4.name, 1, "on-demand", "europe")
    assert from_europe == ["us-central1", "us-east1", "europe-west4", "asia-east1"]
    # Spot is priced on its own: asia-east1's Spot T4 is the cheapest there.
    assert gceprice.order_regions(regions, "n1-standard-4", T4.name, 1, "spot", "europe")[0] == "asia-east1"
    # Same price: the nearer one first; a region the book doesn't price after those it does.
    _book(monkeypatch, {"us-west2": [0.35, 0.14], "europe-north1": [0.35, 0.14]})
    same = ["us-west2", "europe-north1", "asia-east1"]
    assert gceprice.order_regions(same, "n1-standard-4", T4.name, 1, "on-demand", "europe") == [
        "europe-north1",
        "us-west2",
        "asia-east1",
    ]
    assert gceprice.order_regions(same, "n1-standard-4", T4.name, 1, "on-demand", "americas") == [
        "us-west2",
        "europe-north1",
        "asia-east1",
    ]
    assert gceprice.home(-5 * 3600) == "americas" and gceprice.home(9 * 3600) == "asia" and gceprice.home(0) == "europe"
    ordered = gceplan.candidate_zones(OFFERED, 1, None, None, from_europe)
    assert ordered == ["us-central1-a", "us-central1-b", "europe-west4-a", "asia-east1-c"]
    # gcloud's compute/zone (or gcp.zone) first, the rest still there for failover:
    assert gceplan.candidate_zones(OFFERED, 1, None, None, from_europe, first="europe-west4-a") == [
        "europe-west4-a",
        "us-central1-a",
        "us-central1-b",
        "asia-east1-c",
    ]
    assert gceplan.candidate_zones(OFFERED, 1, None, None, from_europe, first="asia-east1")[0] == "asia-east1-c"


def test_the_hourly_price_is_composed_from_the_book(monkeypatch):
    _book(monkeypatch, {"us-central1": [0.35, 0.14]})
    t4 = gceprice.hourly("n1-standard-4", T4.name, 1, False, "us-central1")
    assert t4 is not None and round(t4, 6) == round(4 * 0.031611 + 15 * 0.004237 + 0.35, 6)  # 4 vCPUs, 15 GiB, one T4
    spot = gceprice.hourly("n1-standard-4", T4.name, 1, True, "us-central1")
    assert spot is not None and round(spot, 6) == round(4 * 0.01115 + 15 * 0.001494 + 0.14, 6)
    assert gceprice.hourly("n1-standard-4", T4.name, 1, False, "europe-west4") is None  # no T4 price there
    assert gceprice.hourly("n1-standard-4", T4.name, 1, False, "us-central1", flex=True) is None
    assert gceprice.money(None) == "price unknown" and gceprice.money(0.544) == "about $0.54/h"


def test_the_shipped_table_is_dated_and_prices_spot_by_region():
    table = gceprice.table()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", table.as_of) and table.label == f"table {table.as_of}"
    on_demand = table.hourly("n1-standard-4", T4.name, 1, "on-demand", "us-central1")
    assert on_demand is not None and round(on_demand, 2) == 0.54
    # Spot H100 is far cheaper in europe-north1 than in us-central1 (the 2026-07-30 export).
    north, central = (
        table.hourly("a3-highgpu-8g", "nvidia-h100-80gb", 8, "spot", r) for r in ("europe-north1", "us-central1")
    )
    assert north is not None and central is not None and north < central / 3
    assert table.hourly("a4x-highgpu-4g", "nvidia-gb200", 4, "on-demand", "us-central1") is None


def demand(gpu=T4, gpus=1, machine="n1-standard-4", disk=100, spot=False, vms=1):
    return gceplan.Demand(gpu, gpus, machine, disk, spot, vms)


USUAL = {"CPUS": (24, 0), "IN_USE_ADDRESSES": (8, 0), "SSD_TOTAL_GB": (2048, 0)}
PROJECT = {"GPUS_ALL_REGIONS": (8, 1), "CPUS_ALL_REGIONS": (64, 0)}


def test_quota_is_limit_minus_usage_for_every_metric_a_vm_draws():
    regional: dict[str, dict[str, tuple[float, float]]] = {
        "us-central1": {**USUAL, "NVIDIA_T4_GPUS": (4, 4)},
        "europe-west4": {**USUAL, "NVIDIA_T4_GPUS": (4, 2), "PREEMPTIBLE_NVIDIA_T4_GPUS": (0, 0)},
    }
    check = gceplan.check_quota(demand(vms=2), ["us-central1", "europe-west4"], regional, PROJECT)
    assert check.regions == ["europe-west4"] and check.unknown == []
    assert [(q.where, q.metric, q.remaining, q.need) for q in check.short] == [("us-central1", "NVIDIA_T4_GPUS", 0, 2)]
    assert "NVIDIA_T4_GPUS in us-central1: limit 4, used 4, need 2" in gceplan.quota_message("p", check)
    # vCPUs: 16 x 2 VMs don't fit in 24 CPUS.
    cpus = gceplan.check_quota(demand(machine="n1-standard-16", vms=2), ["europe-west4"], regional, PROJECT)
    assert [(q.metric, q.need) for q in cpus.short] == [("CPUS", 32)]
    # The boot disk draws SSD_TOTAL_GB (pd-balanced); addresses one per VM.
    disk = gceplan.check_quota(demand(disk=4096), ["europe-west4"], regional, PROJECT)
    assert [q.metric for q in disk.short] == ["SSD_TOTAL_GB"]


def test_a_spot_vm_draws_preemptible_quota_only_where_the_project_has_it():
    with_preemptible = {
        **USUAL,
        "NVIDIA_T4_GPUS": (0, 0),
        "PREEMPTIBLE_NVIDIA_T4_GPUS": (4, 0),
        "PREEMPTIBLE_CPUS": (8, 0),
    }
    without = {**USUAL, "NVIDIA_T4_GPUS": (4, 0), "PREEMPTIBLE_NVIDIA_T4_GPUS": (0, 0)}
    assert ("PREEMPTIBLE_NVIDIA_T4_GPUS", 1) in demand(spot=True).regional(with_preemptible)
    assert ("PREEMPTIBLE_CPUS", 4) in demand(spot=True).regional(with_preemptible)
    assert ("NVIDIA_T4_GPUS", 1) in demand(spot=True).regional(without)
    assert ("CPUS", 4) in demand(spot=True).regional(without)
    regional = {"us-central1": with_preemptible, "europe-west4": without}
    assert gceplan.check_quota(demand(spot=True), ["us-central1", "europe-west4"], regional, PROJECT).regions == [
        "us-central1",
        "europe-west4",
    ]
    exhausted = {**without, "PREEMPTIBLE_NVIDIA_T4_GPUS": (2, 2)}
    short = gceplan.check_quota(demand(spot=True), ["us-central1"], {"us-central1": exhausted}, PROJECT)
    assert short.regions == [] and short.short[0].metric == "PREEMPTIBLE_NVIDIA_T4_GPUS"


def test_a_metric_the_api_does_not_list_is_unknown_never_zero():
    regional = {"us-central1": {"NVIDIA_T4_GPUS": (4, 0)}}
    check = gceplan.check_quota(demand(), ["us-central1"], regional, {"GPUS_ALL_REGIONS": (8, 0)})
    assert check.regions == ["us-central1"]
    assert check.unknown == [
        "CPUS_ALL_REGIONS (all regions)",
        "CPUS in us-central1",
        "IN_USE_ADDRESSES in us-central1",
        "SSD_TOTAL_GB in us-central1",
    ]


def test_a_project_wide_quota_stops_the_search():
    regional = {"us-central1": {**USUAL, "NVIDIA_T4_GPUS": (4, 0)}}
    none_global = gceplan.check_quota(demand(), ["us-central1"], regional, {**PROJECT, "GPUS_ALL_REGIONS": (0, 0)})
    assert none_global.global_short is not None and none_global.regions == []
    assert "GPUS_ALL_REGIONS (all regions) limit 0, used 0, need 1; new projects often have 0" in gceplan.quota_message(
        "p", none_global
    )
    cpus = gceplan.check_quota(demand(), ["us-central1"], regional, {**PROJECT, "CPUS_ALL_REGIONS": (8, 6)})
    assert cpus.global_short is not None and cpus.global_short.metric == "CPUS_ALL_REGIONS"
    for message in ("Quota 'CPUS_ALL_REGIONS' exceeded.", "Quota 'GPUS_ALL_REGIONS' exceeded."):
        assert gceplan.scope_of("QUOTA_EXCEEDED", message) == "all"
    assert gceplan.scope_of("QUOTA_EXCEEDED", "Quota 'NVIDIA_T4_GPUS' exceeded.") == "region"


def test_a_configuration_refusal_is_a_bad_request_not_a_stockout():
    assert (
        gceplan.scope_of("UNSUPPORTED_OPERATION", "[pd-standard, g2-standard-4] features are not compatible") == "all"
    )
    assert gceplan.scope_of("UNSUPPORTED_OPERATION", "The VM was preempted during creation") == "zone"


@pytest.mark.parametrize(
    ("machine", "spot", "flex", "message"),
    [
        (
            "a3-highgpu-1g",
            False,
            False,
            "a3-highgpu-1g is sold as Spot or Flex-start, not on demand: add --spot or --flex-start.",
        ),
        (
            "a4-highgpu-8g",
            False,
            False,
            "a4-highgpu-8g is sold as Spot, Flex-start or through a reservation, not on demand",
        ),
        (
            "a4x-highgpu-4g",
            True,
            False,
            "--machine-type a4x-highgpu-4g is sold only through a reservation: add --reservation NAME",
        ),
        (
            "n1-standard-4",
            False,
            True,
            "--flex-start: Compute Engine offers Flex-start on accelerator-optimized machine types",
        ),
        ("g4-standard-48", False, True, "not G4; use --spot or on demand for g4-standard-48."),
    ],
)
def test_machine_types_not_sold_that_way_are_refused(machine, spot, flex, message):
    with pytest.raises(gceplan.Invalid, match=re.escape(message)):
        gceplan.check_sold(machine, spot, flex)


def test_sold_that_way_passes():
    for machine, spot, flex in (
        ("a3-highgpu-1g", True, False),
        ("a3-highgpu-1g", False, True),
        ("a3-highgpu-8g", False, False),
        ("a4-highgpu-8g", True, False),
        ("a4-highgpu-8g", False, True),
        ("g2-standard-4", False, True),
        ("n1-standard-4", False, False),
    ):
        gceplan.check_sold(machine, spot, flex)


def test_flex_start_runs_at_most_seven_days_and_waits_at_most_two_hours():
    assert gceplan.check_flex(None, 7200) == 7 * 86400
    assert gceplan.check_flex(gceplan.duration_seconds("36h"), 600) == 36 * 3600
    assert gceplan.duration_seconds("7d") == 7 * 86400
    with pytest.raises(gceplan.Invalid, match=re.escape("Flex-start VMs run at most 7 days")):
        gceplan.check_flex(gceplan.duration_seconds("8d"), 7200)
    with pytest.raises(gceplan.Invalid, match=re.escape("1 minute to 2 hours")):
        gceplan.check_flex(None, 3 * 3600)


def test_boot_disk_type_and_architecture_per_family():
    assert gceplan.family("n1-standard-4").boot_disk == "pd-balanced"
    assert gceplan.family("g2-standard-8").boot_disk == "pd-balanced"
    assert "pd-standard" not in gceplan.family("g2-standard-8").disks
    assert gceplan.family("a3-ultragpu-8g").boot_disk == "hyperdisk-balanced"
    assert gceplan.family("a4-highgpu-8g").boot_disk == "hyperdisk-balanced"
    assert gceplan.family("a4x-highgpu-4g").arch == "arm64"
    assert gceplan.vcpus("n1-standard-8") == 8 and gceplan.vcpus("a2-highgpu-1g") == 12
    gceplan.check_image("n1-standard-4", "projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts-amd64")
    with pytest.raises(gceplan.Invalid, match="is built for x86_64, and a4x-highgpu-4g is arm64"):
        gceplan.check_image("a4x-highgpu-4g", "projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts-amd64")
    with pytest.raises(gceplan.Invalid, match="is built for arm64, and n1-standard-4 is x86_64"):
        gceplan.check_image("n1-standard-4", "projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts-arm64")


RULE = {"network": "global/networks/default", "direction": "INGRESS", "priority": 1000}


@pytest.mark.parametrize(
    ("rules", "verdict"),
    [
        ([{**RULE, "source_ranges": ["0.0.0.0/0"], "allowed": [("tcp", ["22"])]}], "open"),
        ([{**RULE, "source_ranges": ["0.0.0.0/0"], "allowed": [("tcp", ["20-30"])]}], "open"),
        ([{**RULE, "source_ranges": ["0.0.0.0/0"], "allowed": [("all", [])]}], "open"),
        (
            [{**RULE, "source_ranges": ["0.0.0.0/0"], "target_tags": ["ssh"], "allowed": [("tcp", ["22"])]}],
            "no rule that applies to every VM admits it",
        ),
        (
            [{**RULE, "source_ranges": ["0.0.0.0/0"], "target_service_accounts": ["a@b"], "allowed": [("tcp", [])]}],
            "no rule that applies to every VM admits it",
        ),
        ([{**RULE, "source_ranges": ["35.235.240.0/20"], "allowed": [("tcp", ["22"])]}], "from 35.235.240.0/20"),
        (
            [
                {
                    **RULE,
                    "name": "no-ssh",
                    "priority": 100,
                    "source_ranges": ["0.0.0.0/0"],
                    "denied": [("tcp", ["22"])],
                },
                {**RULE, "source_ranges": ["0.0.0.0/0"], "allowed": [("tcp", ["22"])]},
            ],
            "the deny rule no-ssh (priority 100) blocks it",
        ),
        (
            [
                {
                    **RULE,
                    "name": "no-ssh",
                    "priority": 2000,
                    "source_ranges": ["0.0.0.0/0"],
                    "denied": [("tcp", ["22"])],
                },
                {**RULE, "source_ranges": ["0.0.0.0/0"], "allowed": [("tcp", ["22"])]},
            ],
            "open",
        ),
        (
            [
                {**RULE, "name": "tie", "source_ranges": ["0.0.0.0/0"], "allowed": [("tcp", ["22"])]},
                {**RULE, "name": "tie-deny", "source_ranges": ["0.0.0.0/0"], "denied": [("tcp", ["22"])]},
            ],
            "the deny rule tie-deny (priority 1000) blocks it",
        ),
        ([{**RULE, "disabled": True, "source_ranges": ["0.0.0.0/0"], "allowed": [("tcp", ["22"])]}], "no rule"),
        (
            [{**RULE, "network": "global/networks/other", "source_ranges": ["0.0.0.0/0"], "allowed": [("tcp", [])]}],
            "no rule",
        ),
        ([{**RULE, "source_tags": ["web"], "source_ranges": [], "allowed": [("tcp", ["22"])]}], "no rule"),
    ],
    ids=[
        "open",
        "port-range",
        "all-protocols",
        "target-tags",
        "target-sa",
        "ranges",
        "deny-first",
        "deny-later",
        "tie-deny-wins",
        "disabled",
        "other-network",
        "source-tags",
    ],
)
def test_the_firewall_verdict_for_ssh(rules, verdict):
    assert gceplan.ssh_verdict(rules).startswith(verdict)


def test_failover_blocks_by_scope_and_follows_hints():
    failover = gceplan.Failover(["us-central1-a", "us-central1-b", "us-east1-c", "europe-west4-a", "asia-east1-c"])
    assert failover.next_zone() == "us-central1-a"
    assert failover.failed("us-central1-a", "ZONE_RESOURCE_POOL_EXHAUSTED", "no resources") == "zone"
    assert failover.next_zone() == "us-central1-b"
    assert failover.failed("us-central1-b", "QUOTA_EXCEEDED", "Quota 'NVIDIA_T4_GPUS' exceeded") == "region"
    assert failover.next_zone() == "us-east1-c"
    failover.failed("us-east1-c", "ZONE_RESOURCE_POOL_EXHAUSTED", "stockout", zones_available=["asia-east1-c"])
    assert failover.next_zone() == "asia-east1-c"
    assert (
        failover.failed("asia-east1-c", "QUOTA_EXCEEDED", "Quota 'GPUS_ALL_REGIONS' exceeded. Limit: 0.0 globally.")
        == "all"
    )
    assert failover.next_zone() is None
    assert failover.summary().startswith(
        "us-central1-a: ZONE_RESOURCE_POOL_EXHAUSTED: no resources; us-central1-b: QUOTA_EXCEEDED"
    )


def test_a_region_blocked_skips_its_other_zones():
    failover = gceplan.Failover(["us-central1-a", "us-central1-b", "europe-west4-a"])
    failover.next_zone()
    failover.failed("us-central1-a", "quotaExceeded", "regional quota")
    assert failover.next_zone() == "europe-west4-a"


def test_unknown_errors_stop_instead_of_retrying_blindly():
    failover = gceplan.Failover(["us-central1-a", "us-central1-b"])
    failover.next_zone()
    assert failover.failed("us-central1-a", "IAM_PERMISSION_DENIED", "denied") == "all"
    assert failover.next_zone() is None


def _rule(name: str, sources: list[str], priority: int = 1000, deny: bool = False, tags: list[str] | None = None):
    action = "denied" if deny else "allowed"
    return {
        "name": name,
        "network": "global/networks/default",
        "priority": priority,
        "source_ranges": sources,
        "target_tags": tags or [],
        action: [("tcp", ["22"])],
    }


@pytest.mark.parametrize(
    ("rules", "tags", "verdict"),
    [
        ([_rule("any", ["0.0.0.0/0"])], (), "open"),
        ([_rule("iap", ["35.235.240.0/20"])], (), "open"),
        # Only part of IAP's range: IAP's forwarders come from all of it.
        ([_rule("part", ["35.235.240.0/24"])], (), "no rule that applies to every VM admits IAP's range"),
        ([_rule("iap", ["35.235.240.0/20"]), _rule("no", ["0.0.0.0/0"], 900, deny=True)], (), "the deny rule no"),
        ([_rule("iap", ["35.235.240.0/20"], tags=["ssh"])], ("gpu",), "no rule that applies to a VM tagged gpu"),
        ([_rule("iap", ["35.235.240.0/20"], tags=["ssh"])], ("ssh",), "open"),
    ],
)
def test_iap_verdict_wants_the_whole_iap_range_on_port_22(rules, tags, verdict):
    from tfrig.gce.plan import iap_verdict

    assert iap_verdict(rules, "default", tags).startswith(verdict)
