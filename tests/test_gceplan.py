"""Pure Compute Engine decisions: validation, machine types, zone choice, quota arithmetic, failover."""

from __future__ import annotations

import pytest

from tfrig import gceplan

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


def test_quota_is_limit_minus_usage_per_region_and_global():
    regional: dict[str, dict[str, tuple[float, float]]] = {
        "us-central1": {"NVIDIA_T4_GPUS": (4, 4)},
        "europe-west4": {"NVIDIA_T4_GPUS": (4, 2), "PREEMPTIBLE_NVIDIA_T4_GPUS": (0, 0)},
    }
    check = gceplan.check_quota(T4, 2, False, ["us-central1", "europe-west4"], regional, {"GPUS_ALL_REGIONS": (8, 1)})
    assert check.regions == ["europe-west4"]
    assert [(q.where, q.remaining) for q in check.short] == [("us-central1", 0)]
    spot = gceplan.check_quota(T4, 1, True, ["europe-west4"], regional, {"GPUS_ALL_REGIONS": (8, 0)})
    assert spot.regions == [] and spot.short[0].metric == "PREEMPTIBLE_NVIDIA_T4_GPUS"
    none_global = gceplan.check_quota(T4, 1, False, ["europe-west4"], regional, {"GPUS_ALL_REGIONS": (0, 0)})
    assert none_global.global_short is not None and none_global.regions == []
    assert "GPUS_ALL_REGIONS (all regions) limit 0, used 0, need 1; new projects often have 0" in gceplan.quota_message(
        "p", 1, none_global
    )
    assert "NVIDIA_T4_GPUS in us-central1: limit 4, used 4" in gceplan.quota_message("p", 2, check)


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
