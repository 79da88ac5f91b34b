"""Scarce GPUs: Flex-start requests that queue before they run, reservations, and Spot VMs that
were preempted, against the fake Compute API (tests/fakegce.py), which refuses what the API does."""

from __future__ import annotations

import io
import signal
import subprocess
from collections.abc import Iterator

import pytest

from tests import fakebilling
from tests.conftest import DEADLINE, json_of, read_until, start_cli
from tests.fakegce import FakeCompute
from tfrig import state
from tfrig.gce import provision
from tfrig.gce.cloud import Cloud

H100 = ["--gpu", "nvidia-h100-80gb", "--gpus", "8"]
GB200 = ["--gpu", "nvidia-gb200", "--gpus", "4"]
ARM_IMAGE = ["--image", "projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts-arm64"]
A3_PARTS = [("A3 Core", 208), ("A3 Ram", 1872), ("Nvidia H100 80GB GPU", 8), ("SSD backed Local Storage", 6000)]


@pytest.fixture
def fake() -> Iterator[FakeCompute]:
    api = FakeCompute()
    api.offer("nvidia-tesla-t4", ["us-central1-a", "europe-west4-a"])
    api.offer(
        "nvidia-h100-80gb", ["us-central1-a", "us-central1-b", "europe-north1-b"], cards=8, quota=8, preemptible=8
    )
    api.project_quotas.update({"GPUS_ALL_REGIONS": [16, 0], "CPUS_ALL_REGIONS": [512, 0]})
    yield api
    api.close()


def create(tfrig, env, *args):
    return tfrig("gcp.create", "--yes", "--name", "tfrig-alice", "--no-ssh-wait", *args, env=env)


def inserted(fake: FakeCompute) -> list[str]:
    return [p.split("/")[2] for p in fake.paths("POST") if p.endswith("/instances")]


# --- Flex-start -----------------------------------------------------------------------------------


def test_a_flex_start_request_queues_then_runs_and_draws_preemptible_quota(tfrig, fake, gcp_env):
    fake.scenario.flex_queue_seconds = 1.0
    result = create(tfrig, gcp_env, *H100, "--flex-start", "--json")
    assert result.code == 0, result.text
    (zone,) = inserted(fake)
    body = fake.instances[zone]["tfrig-alice"]
    assert body["status"] == "RUNNING"
    assert body["scheduling"] == {
        "onHostMaintenance": "TERMINATE",
        "automaticRestart": False,
        "provisioningModel": "FLEX_START",
        "instanceTerminationAction": "DELETE",
        "maxRunDuration": {"seconds": str(7 * 86400)},
    }
    assert body["reservationAffinity"] == {"consumeReservationType": "NO_RESERVATION"}
    assert body["params"] == {"requestValidForDuration": {"seconds": "7200"}}
    region = zone.rsplit("-", 1)[0]
    assert fake.regional[region]["PREEMPTIBLE_NVIDIA_H100_GPUS"][1] == 8
    # Cheapest Flex-start region first, at the catalog's Flex-start price, never Spot's or on demand's.
    flex = {r: fakebilling.price(A3_PARTS, "flex-start", r) for r in ("us-central1", "europe-north1")}
    assert region == min(flex, key=lambda r: flex[r] or float("inf"))
    assert f"Flex-start, waits up to 2 hours for capacity) in {zone} first: about ${flex[region]:.2f}/h" in result.err
    assert f"tfrig-alice: queued in {zone} until Flex-start capacity comes, at most 2 hours" in result.err
    assert json_of(result.out)["zone"] == zone


def test_ctrl_c_while_queued_cancels_the_request_and_says_so(fake, gcp_env, state_dir):
    fake.scenario.flex_queue_seconds = None  # no capacity comes
    env = {**gcp_env, "TFRIG_STATE_DIR": str(state_dir)}
    proc = start_cli(
        "gcp.create",
        "--yes",
        "--name",
        "tfrig-alice",
        "--no-ssh-wait",
        *H100,
        "--flex-start",
        env=env,
        stderr=subprocess.STDOUT,
    )
    try:
        read_until(proc, "queued in")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=DEADLINE)
    finally:
        proc.kill()
    assert proc.returncode == 130, out
    assert "tfrig-alice: the queued Flex-start request was cancelled" in out
    assert "interrupted: no VM was left behind; nothing bills." in out
    assert all(not vms for vms in fake.instances.values()) and state.vms() == {}


def test_a_request_that_gets_no_capacity_in_its_wait_is_deleted(fake):
    fake.scenario.flex_queue_seconds = None
    fake.instances["us-central1-a"] = {}
    fake.add_instance("us-central1-a", "tfrig-alice")
    fake.instances["us-central1-a"]["tfrig-alice"]["status"] = "PENDING"
    state.record_vm("tfrig-alice", project=fake.project, zone="us-central1-a", status="PROVISIONING")
    cloud = Cloud(fake.project, fake.endpoint, "anonymous", retry_delay=0.01)
    out = io.StringIO()
    with pytest.raises(provision.CreateFailed, match="no Flex-start capacity for tfrig-alice in us-central1-a within"):
        provision.wait_queued(cloud, "us-central1-a", "tfrig-alice", 0.3, 0.05, out)
    assert fake.instances["us-central1-a"] == {} and state.vms() == {}
    assert "the half-created VM in us-central1-a was deleted; nothing is left billing" in out.getvalue()


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--flex-start"],
            "--flex-start: Compute Engine offers Flex-start on accelerator-optimized machine types (A2, A3, A4, G2), "
            "not N1 (T4, P4, P100, V100); use --spot or on demand for n1-standard-4.",
        ),
        (
            [*H100, "--flex-start", "--spot"],
            "--flex-start is a provisioning model of its own: leave out --spot and --reservation.",
        ),
        (
            [*H100, "--flex-start", "--max-run-duration", "8d"],
            "--max-run-duration: Flex-start VMs run at most 7 days (7d).",
        ),
        ([*H100, "--flex-start", "--wait", "3h"], "--wait 3h: give 1 minutes to 2 hours."),
        ([*H100, "--wait", "1h"], "--wait is how long a --flex-start request waits for capacity: add --flex-start."),
        (
            [*H100, "--reservation", "Not_A_Name"],
            "--reservation Not_A_Name: give a reservation's name, or projects/P/reservations/NAME.",
        ),
    ],
)
def test_what_flex_start_and_reservations_refuse_is_one_line_before_any_call(tfrig, fake, gcp_env, args, line):
    result = create(tfrig, gcp_env, *args)
    assert result.code == 1
    assert result.err.strip().splitlines()[-1] == line
    assert fake.calls == []


# --- reservations ---------------------------------------------------------------------------------


def test_a_reservation_create_lands_in_its_zone_only(tfrig, fake, gcp_env):
    fake.reserve("us-central1-b", "team-h100", "a3-highgpu-8g", count=2, in_use=1)
    result = create(tfrig, gcp_env, *H100, "--reservation", "team-h100")
    assert result.code == 0, result.text
    assert inserted(fake) == ["us-central1-b"]  # not the cheaper europe-north1, nor us-central1-a first
    body = fake.instances["us-central1-b"]["tfrig-alice"]
    assert body["reservationAffinity"] == {
        "consumeReservationType": "SPECIFIC_RESERVATION",
        "key": "compute.googleapis.com/reservation-name",
        "values": ["team-h100"],
    }
    assert "provisioningModel" not in body["scheduling"]
    assert "from reservation team-h100) in us-central1-b first" in result.out
    # gcp.image `auto`: an A3 boots Ubuntu's accelerator image, its driver there already
    assert body["disks"][0]["initializeParams"]["sourceImage"] == (
        "projects/ubuntu-os-accelerator-images/global/images/family/ubuntu-accelerator-2404-amd64-with-nvidia-580"
    )
    listed = json_of(tfrig("gcp.reservations", "--json", env=gcp_env).out)
    assert listed == [
        {
            "name": "team-h100",
            "zone": "us-central1-b",
            "machine_type": "a3-highgpu-8g",
            "gpu": "nvidia-h100-80gb",
            "gpus": 8,
            "in_use": 2,
            "count": 2,
            "specific_only": True,
            "dense": False,
            "status": "READY",
        }
    ]
    full = tfrig(
        "gcp.create", "--yes", "--name", "tfrig-bob", "--no-ssh-wait", *H100, "--reservation", "team-h100", env=gcp_env
    )
    assert full.code == 1
    assert (
        full.err.strip().splitlines()[-1] == "--reservation team-h100 has room for 0 more VM(s) (2 of 2 in use), not 1."
    )


def test_a_reservation_of_another_shape_or_another_project_is_named(tfrig, fake, gcp_env):
    fake.reserve("us-central1-a", "t4s", "n1-standard-4", count=4)
    wrong = create(tfrig, gcp_env, *H100, "--reservation", "t4s")
    assert wrong.code == 1 and wrong.err.strip().splitlines()[-1] == (
        "--reservation t4s holds n1-standard-4 with 1 x nvidia-tesla-t4: ask for --gpu nvidia-tesla-t4 --gpus 1 "
        "--machine-type n1-standard-4."
    )
    missing = create(tfrig, gcp_env, *H100, "--reservation", "nope")
    assert missing.code == 1 and "no such reservation in project tfrig-test" in missing.err
    fake.reserve("us-central1-a", "shared-h100", "a3-highgpu-8g", count=1, project="host-project")
    shared = create(tfrig, gcp_env, *H100, "--reservation", "projects/host-project/reservations/shared-h100")
    assert shared.code == 0, shared.text
    body = fake.instances["us-central1-a"]["tfrig-alice"]
    assert body["reservationAffinity"]["values"] == ["projects/host-project/reservations/shared-h100"]
    assert fake.reservations["host-project"]["us-central1-a"][0]["specificReservation"]["inUseCount"] == "1"


def test_a_dense_reservations_vms_are_reservation_bound(tfrig, fake, gcp_env):
    fake.reserve("europe-north1-b", "block", "a3-highgpu-8g", count=2, dense=True)
    result = create(tfrig, gcp_env, *H100, "--reservation", "block")
    assert result.code == 0, result.text
    scheduling = fake.instances["europe-north1-b"]["tfrig-alice"]["scheduling"]
    assert scheduling["provisioningModel"] == "RESERVATION_BOUND" and scheduling["instanceTerminationAction"] == "STOP"
    assert "reservation block is dense: its VMs are RESERVATION_BOUND, and end with it" in result.out


def test_a_machine_type_sold_only_by_reservation_goes_through_one(tfrig, fake, gcp_env):
    fake.offer("nvidia-gb200", ["us-central1-a"], cards=4, quota=4)
    refused = create(tfrig, gcp_env, *GB200, *ARM_IMAGE)
    assert refused.code == 1 and "sold only through a reservation: add --reservation NAME" in refused.err
    fake.reserve("us-central1-a", "gb", "a4x-highgpu-4g", count=1)
    made = create(tfrig, gcp_env, *GB200, "--reservation", "gb", *ARM_IMAGE)
    assert made.code == 0, made.text
    assert inserted(fake) == ["us-central1-a"]


# --- Spot, after the fact -------------------------------------------------------------------------


def test_a_preempted_spot_vm_is_listed_as_preempted_and_starts_again_where_there_is_room(tfrig, fake, gcp_env):
    assert create(tfrig, gcp_env, "--spot").code == 0
    (zone,) = inserted(fake)
    fake.preempt(zone, "tfrig-alice")
    (row,) = json_of(tfrig("gcp.list", "--json", env=gcp_env).out)
    assert row["status"] == "PREEMPTED"
    fake.scenario.operation_errors["start"] = (
        "ZONE_RESOURCE_POOL_EXHAUSTED",
        f"The zone 'projects/{fake.project}/zones/{zone}' does not have enough resources available to fulfill the "
        "request.",
    )
    no_room = tfrig("gcp.start", env=gcp_env)
    assert no_room.code == 1
    assert no_room.err.strip().splitlines()[-1].startswith(f"{zone} has no capacity for tfrig-alice now")
    del fake.scenario.operation_errors["start"]
    assert tfrig("gcp.start", env=gcp_env).code == 0
    (row,) = json_of(tfrig("gcp.list", "--json", env=gcp_env).out)
    assert row["status"] == "RUNNING"


# --- images that come with a driver ---------------------------------------------------------------


def test_dry_on_an_accelerator_image_plans_no_driver_install(tfrig, fake, gcp_env):
    result = tfrig("--dry", "gcp.create", "--yes", "--image", "accelerator", "gpu.setup", env=gcp_env)
    assert result.code == 0, result.text
    body = json_of(result.out[result.out.index("{") : result.out.index("\n}\n") + 2])
    assert body["disks"][0]["initializeParams"]["sourceImage"] == (
        "projects/ubuntu-os-accelerator-images/global/images/family/ubuntu-accelerator-2404-amd64-with-nvidia-580"
    )
    assert (
        "[tfrig-alice] kept: 580.159.04 (preinstalled; unknown kernel module, apt packages) for Tesla T4" in result.out
    )
    assert "STEP=install" not in result.out and "would reboot" not in result.out
    dlvm = tfrig("--dry", "gcp.create", "--yes", "--image", "dlvm", "gpu.setup", env=gcp_env)
    assert dlvm.code == 0, dlvm.text
    assert "[tfrig-alice] already done: driver 580.159.04 loaded" in dlvm.out and "STEP=install" not in dlvm.out


def test_an_accelerator_image_for_a_pre_turing_gpu_is_refused_and_arm_machines_get_the_arm_family(tfrig, fake, gcp_env):
    fake.offer("nvidia-tesla-v100", ["us-central1-a"])
    refused = create(tfrig, gcp_env, "--gpu", "nvidia-tesla-v100", "--image", "accelerator")
    assert refused.code == 1 and fake.calls == []
    assert refused.err.strip().startswith("--image accelerator is made for A3, A4 and A4X machines")
    fake.offer("nvidia-gb200", ["us-central1-a"], cards=4, quota=4)
    fake.reserve("us-central1-a", "gb", "a4x-highgpu-4g", count=1)
    # gcp.image `auto` (no --image): an A4X gets the Arm accelerator image and keeps its driver
    arm = tfrig("--dry", "gcp.create", "--yes", *GB200, "--reservation", "gb", "gpu.setup", env=gcp_env)
    assert arm.code == 0, arm.text
    assert "ubuntu-accelerator-2404-arm64-with-nvidia-580" in arm.out
    assert "[tfrig-alice] kept: 580.159.04 (preinstalled" in arm.out and "STEP=install" not in arm.out
