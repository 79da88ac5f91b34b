"""gcp tasks through the real google-cloud-compute client against the fake Compute API.

The order and count of API calls are asserted, not only the outcome.
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import fakebilling
from tests.conftest import DEADLINE, json_of, start_cli
from tests.fakegce import IAP_SSH_RULE, PREFIX, FakeCompute
from tfrig import state

ZONES = ["europe-west4-a", "europe-west4-b", "us-central1-a"]
LOOKUP = "GET /aggregated/instances"
# The Billing Catalog's SKUs, page by page (the fake pages them by 40), once a day.
SKU_PAGES = ["GET /v1/services/6F81-5844-456A/skus"] * -(-len(fakebilling.skus()) // 40)
PREFLIGHT = [
    "GET /",
    *SKU_PAGES,
    "GET /aggregated/acceleratorTypes",
    "GET /aggregated/acceleratorTypes",
    "GET /regions/us-central1",
    "GET /regions/europe-west4",
]


@pytest.fixture
def fake() -> Iterator[FakeCompute]:
    api = FakeCompute()
    api.offer("nvidia-tesla-t4", ZONES)
    yield api
    api.close()


def create(tfrig, env, *args):
    return tfrig("gcp.create", "--yes", "--name", "tfrig-alice", "--no-ssh-wait", *args, env=env)


def test_create_calls_in_order_and_records_the_vm(tfrig, fake, gcp_env):
    result = create(tfrig, gcp_env, "--json")
    assert result.code == 0, result.text
    assert fake.paths() == [
        LOOKUP,
        *PREFLIGHT,
        "POST /zones/us-central1-a/instances",
        f"POST /zones/us-central1-a/operations/{next(iter(fake.operations))}/wait",
        "GET /zones/us-central1-a/instances/tfrig-alice",
    ]
    record = json_of(result.out)
    assert record["zone"] == "us-central1-a" and record["address"].startswith("127.0.0.")
    assert record == state.find_vm("tfrig-alice")
    body = fake.instances["us-central1-a"]["tfrig-alice"]
    assert body["scheduling"] == {"onHostMaintenance": "TERMINATE", "automaticRestart": True}
    # No account in the credentials or gcloud's config: the owner is user@host here.
    from tfrig.gce.plan import label_value

    assert body["labels"] == {"created-by": "tfrig", "tfrig-owner": label_value(f"alice@{socket.gethostname()}")}
    assert body["guestAccelerators"] == [
        {"acceleratorType": "zones/us-central1-a/acceleratorTypes/nvidia-tesla-t4", "acceleratorCount": 1}
    ]
    assert body["machineType"] == "zones/us-central1-a/machineTypes/n1-standard-4"
    assert body["disks"][0]["initializeParams"] == {
        "sourceImage": "projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts-amd64",
        "diskSizeGb": "100",
        "diskType": "zones/us-central1-a/diskTypes/pd-balanced",  # not the API's default HDD
    }
    metadata = {item["key"]: item["value"] for item in body["metadata"]["items"]}
    assert metadata.keys() == {"ssh-keys", "enable-guest-attributes"}
    assert metadata["ssh-keys"].startswith("alice:ssh-ed25519 ") and metadata["enable-guest-attributes"] == "TRUE"
    assert "created us-central1-a" not in result.out  # stdout is only JSON


def test_the_same_command_twice_adopts_the_vm(tfrig, fake, gcp_env):
    assert create(tfrig, gcp_env).code == 0
    calls = len(fake.calls)
    again = create(tfrig, gcp_env)
    assert again.code == 0, again.text
    assert "tfrig-alice exists in us-central1-a (created by tfrig): using it" in again.err + again.out
    assert fake.paths()[calls:] == [LOOKUP]
    assert sum(len(vms) for vms in fake.instances.values()) == 1


def test_a_vm_of_that_name_tfrig_did_not_create_is_refused(tfrig, fake, gcp_env):
    fake.add_instance("europe-west4-a", "tfrig-alice", labels={"team": "ml"})
    result = create(tfrig, gcp_env)
    assert result.code == 1
    assert (
        result.err.strip()
        == "A VM named tfrig-alice exists in europe-west4-a and tfrig did not create it; choose another --name."
    )
    assert fake.paths() == [LOOKUP]


def test_stockout_moves_to_the_next_zone_only(tfrig, fake, gcp_env):
    fake.scenario.stockout["us-central1-a"] = []
    fake.scenario.stockout["europe-west4-a"] = []
    result = create(tfrig, gcp_env)
    assert result.code == 0, result.text
    inserts = [p for p in fake.paths("POST") if p.endswith("/instances")]
    assert inserts == [
        "POST /zones/us-central1-a/instances",
        "POST /zones/europe-west4-a/instances",
        "POST /zones/europe-west4-b/instances",
    ]
    assert "us-central1-a: ZONE_RESOURCE_POOL_EXHAUSTED (zone blocked)" in result.out
    assert "created tfrig-alice in europe-west4-b" in result.out


def test_a_zones_available_hint_is_followed(tfrig, fake, gcp_env):
    fake.scenario.stockout["us-central1-a"] = ["europe-west4-b"]
    result = create(tfrig, gcp_env)
    assert result.code == 0, result.text
    inserts = [p for p in fake.paths("POST") if p.endswith("/instances")]
    assert inserts == ["POST /zones/us-central1-a/instances", "POST /zones/europe-west4-b/instances"]


def test_every_zone_stocked_out_says_where_it_tried_and_why(tfrig, fake, gcp_env):
    for zone in ZONES:
        fake.scenario.stockout[zone] = []
    result = create(tfrig, gcp_env)
    assert result.code == 1
    assert result.err.startswith("no zone could take tfrig-alice: us-central1-a: ZONE_RESOURCE_POOL_EXHAUSTED")
    assert (
        "europe-west4-a: ZONE_RESOURCE_POOL_EXHAUSTED" in result.err
        and "europe-west4-b: ZONE_RESOURCE_POOL_EXHAUSTED" in result.err
    )
    assert len([p for p in fake.paths("POST") if p.endswith("/instances")]) == 3
    assert state.vms() == {}


def test_regional_quota_zero_skips_the_region_before_any_insert(tfrig, fake, gcp_env):
    fake.regional["us-central1"]["NVIDIA_T4_GPUS"] = [0, 0]
    result = create(tfrig, gcp_env)
    assert result.code == 0, result.text
    assert "skipping us-central1: not enough NVIDIA_T4_GPUS quota" in result.out
    assert [p for p in fake.paths("POST") if p.endswith("/instances")] == ["POST /zones/europe-west4-a/instances"]


def test_no_regional_quota_anywhere_is_refused_with_how_to_get_more(tfrig, fake, gcp_env):
    for region in fake.regional.values():
        region["NVIDIA_T4_GPUS"] = [1, 1]
    result = create(tfrig, gcp_env)
    assert result.code == 1
    assert (
        "not enough quota: NVIDIA_T4_GPUS in us-central1: limit 1, used 1, need 1; NVIDIA_T4_GPUS in europe-west4: "
        "limit 1, used 1, need 1." in result.err
    )
    assert "https://console.cloud.google.com/iam-admin/quotas?project=tfrig-test" in result.err
    assert fake.paths("POST") == []


def test_spot_uses_the_preemptible_quota_where_there_is_some(tfrig, fake, gcp_env):
    for region in fake.regional.values():
        region["PREEMPTIBLE_NVIDIA_T4_GPUS"] = [2, 2]
    result = create(tfrig, gcp_env, "--spot")
    assert result.code == 1
    assert "PREEMPTIBLE_NVIDIA_T4_GPUS in us-central1: limit 2, used 2, need 1" in result.err
    assert fake.paths("POST") == []


def test_spot_without_preemptible_quota_uses_the_standard_quota(tfrig, fake, gcp_env):
    """Many projects have no PREEMPTIBLE_ GPU quota: their Spot VMs draw the standard quota, and
    the fake's insert enforces that as the API does."""
    for region in fake.regional.values():
        del region["PREEMPTIBLE_NVIDIA_T4_GPUS"]
    result = create(tfrig, gcp_env, "--spot")
    assert result.code == 0, result.text
    assert fake.regional["us-central1"]["NVIDIA_T4_GPUS"] == [4, 1]  # drawn from the standard quota


def test_a_quota_metric_the_api_does_not_list_is_noted_and_tried_never_zero(tfrig, fake, gcp_env):
    del fake.regional["us-central1"]["CPUS"]
    del fake.project_quotas["CPUS_ALL_REGIONS"]
    result = create(tfrig, gcp_env)
    assert result.code == 0, result.text
    assert (
        "quota not listed by the API, so not checked: CPUS_ALL_REGIONS (all regions), CPUS in us-central1; "
        "trying anyway" in result.out
    )
    assert "created tfrig-alice in us-central1-a" in result.out
    quota = json_of(tfrig("gcp.quota", "--json", env=gcp_env).out)
    assert {"where": "global", "metric": "CPUS_ALL_REGIONS", "limit": None, "usage": None, "remaining": None} in quota
    del fake.regional["us-central1"]["PREEMPTIBLE_NVIDIA_T4_GPUS"]
    shown = tfrig("gcp.quota", env=gcp_env).out
    assert any(
        line.split()[:2] == ["us-central1", "PREEMPTIBLE_NVIDIA_T4_GPUS"] and "not listed" in line
        for line in shown.splitlines()
    )


def test_vcpu_quota_is_checked_too(tfrig, fake, gcp_env):
    fake.regional["us-central1"]["CPUS"] = [24, 22]
    result = create(tfrig, gcp_env)
    assert result.code == 0, result.text
    assert "skipping us-central1: not enough CPUS quota" in result.out
    assert "created tfrig-alice in europe-west4-a" in result.out
    fake.project_quotas["CPUS_ALL_REGIONS"] = [64, 62]
    refused = tfrig("gcp.create", "--yes", "--name", "tfrig-bob", "--no-ssh-wait", env=gcp_env)
    assert refused.code == 1
    assert "not enough quota: CPUS_ALL_REGIONS (all regions) limit 64, used 62, need 4" in refused.err


def test_global_quota_zero_is_refused(tfrig, fake, gcp_env):
    fake.project_quotas["GPUS_ALL_REGIONS"] = [0, 0]
    result = create(tfrig, gcp_env)
    assert result.code == 1
    assert (
        "not enough quota: GPUS_ALL_REGIONS (all regions) limit 0, used 0, need 1; new projects often have 0 GPUs"
        in result.err
    )
    assert fake.paths("POST") == []


def test_503s_on_the_first_calls_are_retried(tfrig, fake, gcp_env):
    fake.scenario.unavailable_first = 3
    result = create(tfrig, gcp_env)
    assert result.code == 0, result.text
    assert fake.paths()[:4] == [LOOKUP] * 4
    assert len(fake.calls) == 3 + 1 + len(PREFLIGHT) + 3


def test_quota_exceeded_at_insert_blocks_the_region(tfrig, fake, gcp_env):
    fake.offer("nvidia-tesla-t4", ["us-central1-b"])
    fake.scenario.insert_errors["us-central1-a"] = (
        403,
        "QUOTA_EXCEEDED",
        "Quota 'NVIDIA_T4_GPUS' exceeded. Limit: 0.0 in region us-central1.",
    )
    result = create(tfrig, gcp_env)
    assert result.code == 0, result.text
    inserts = [p for p in fake.paths("POST") if p.endswith("/instances")]
    assert inserts == ["POST /zones/us-central1-a/instances", "POST /zones/europe-west4-a/instances"]


def test_the_fakes_insert_enforces_quota_as_the_api_does(tfrig, fake, gcp_env):
    """Quota tfrig's pre-flight could not see (usage changed meanwhile) is refused at insert."""
    fake.regional["us-central1"]["CPUS"] = [24, 0]
    fake.pause = ("POST", r"/zones/us-central1-a/instances$")

    def use_up() -> None:
        fake.paused.wait(60)
        fake.regional["us-central1"]["CPUS"][1] = 22  # someone else started a VM
        fake.release.set()

    threading.Thread(target=use_up, daemon=True).start()
    result = create(tfrig, gcp_env)
    assert result.code == 0, result.text
    assert "us-central1-a: QUOTA_EXCEEDED (region blocked)" in result.out
    assert "created tfrig-alice in europe-west4-a" in result.out


def test_global_quota_at_insert_stops_everything(tfrig, fake, gcp_env):
    fake.scenario.insert_errors["us-central1-a"] = (
        403,
        "QUOTA_EXCEEDED",
        "Quota 'GPUS_ALL_REGIONS' exceeded. Limit: 0.0 globally.",
    )
    result = create(tfrig, gcp_env)
    assert result.code == 1
    assert len([p for p in fake.paths("POST") if p.endswith("/instances")]) == 1
    assert "GPUS_ALL_REGIONS" in result.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpu", "nvidia-tesla-k80"], "retired on Compute Engine"),
        (["--gpu", "nvidia-tesla-t4", "--gpus", "3"], "--gpus 3: nvidia-tesla-t4 comes in counts of 1, 2, 4 per VM."),
        (["--gpu", "nvidia-l4", "--machine-type", "n1-standard-8"], "nvidia-l4 comes attached to G2 machine types"),
        (["--zone", "us-central1"], "'us-central1' is not a zone name such as us-central1-a."),
        (["--name", "My_VM"], "--name My_VM: Compute Engine names are"),
        (["--disk-gb", "5"], "--disk-gb 5: boot disks need at least 10 GB"),
        (["--max-run-duration", "soon"], "--max-run-duration soon: write it like 2h"),
        (["--image", "windows"], "--image windows: choose ubuntu-24.04"),
    ],
    ids=["k80", "count", "l4-on-n1", "zone", "name", "disk", "duration", "image"],
)
def test_bad_input_is_refused_before_any_api_call(tfrig, fake, gcp_env, args, message):
    result = tfrig("gcp.create", "--yes", "--no-ssh-wait", *args, env=gcp_env)
    assert result.code == 1
    assert message in result.err and len(result.err.strip().splitlines()) == 1
    assert fake.calls == []


def test_a_zone_without_the_gpu_is_refused_after_the_lookup(tfrig, fake, gcp_env):
    result = create(tfrig, gcp_env, "--zone", "europe-west4-f")
    assert result.code == 1
    assert (
        "nvidia-tesla-t4: --zone europe-west4-f: no such zone, or it doesn't offer this GPU; it is offered in europe-west4-a, europe-west4-b"
        in result.err
    )
    assert fake.paths("POST") == []


def test_metadata_mode_turns_os_login_off_for_the_vm_with_a_note(tfrig, fake, gcp_env):
    fake.project_metadata["enable-oslogin"] = "TRUE"
    result = create(tfrig, {**gcp_env, "INVOKE_GCP_SSH_MODE": "metadata"})
    assert result.code == 0, result.text
    assert (
        "OS Login is on in project tfrig-test and gcp.ssh_mode is metadata: tfrig sets enable-oslogin=FALSE on its VMs"
        in result.out
    )
    body = fake.instances["us-central1-a"]["tfrig-alice"]
    metadata = {item["key"]: item["value"] for item in body["metadata"]["items"]}
    assert metadata["enable-oslogin"] == "FALSE"


@pytest.mark.parametrize(
    ("firewalls", "line"),
    [
        ([], "no rule that applies to every VM admits it"),
        (
            [
                {
                    "name": "ssh-tagged",
                    "network": "global/networks/default",
                    "sourceRanges": ["0.0.0.0/0"],
                    "targetTags": ["ssh"],
                    "allowed": [{"IPProtocol": "tcp", "ports": ["22"]}],
                }
            ],
            "no rule that applies to every VM admits it (rules with target tags don't",
        ),
        (
            [
                {
                    "name": "no-ssh",
                    "network": "global/networks/default",
                    "priority": 10,
                    "sourceRanges": ["0.0.0.0/0"],
                    "denied": [{"IPProtocol": "tcp", "ports": ["22"]}],
                },
                {
                    "name": "default-allow-ssh",
                    "network": "global/networks/default",
                    "sourceRanges": ["0.0.0.0/0"],
                    "allowed": [{"IPProtocol": "tcp", "ports": ["22"]}],
                },
            ],
            "the deny rule no-ssh (priority 10) blocks it",
        ),
    ],
    ids=["none", "target-tags", "deny"],
)
def test_a_firewall_closed_to_ssh_is_explained_before_creating(tfrig, fake, gcp_env, firewalls, line):
    fake.firewalls[:] = firewalls
    result = tfrig("gcp.create", "--yes", env=gcp_env)
    assert result.code == 1
    assert "The firewall of network default does not admit SSH (tcp:22) to tfrig's VMs: " + line in result.err
    assert fake.paths("POST") == []


def policy(name: str, kind: str, action: str, sources: list[str], priority: int = 100) -> dict[str, Any]:
    """A firewall policy over the network with one ingress rule for tcp:22 (REST JSON)."""
    return {
        "name": name,
        "shortName": name,
        "type": kind,
        "rules": [
            {
                "action": action,
                "direction": "INGRESS",
                "priority": priority,
                "match": {"srcIpRanges": sources, "layer4Configs": [{"ipProtocol": "tcp", "ports": ["22"]}]},
            }
        ],
    }


def test_a_hierarchical_firewall_policy_decides_before_the_vpc_rules(tfrig, fake, gcp_env):
    """The organization's deny wins over the VPC's allow; goto_next hands the decision to the VPC."""
    fake.firewall_policies = [policy("org-baseline", "HIERARCHY", "deny", ["0.0.0.0/0"])]
    refused = tfrig("gcp.create", "--yes", env=gcp_env)
    assert refused.code == 1
    assert (
        "does not admit SSH (tcp:22) to tfrig's VMs: the firewall policy rule org-baseline's rule 100 blocks it"
        in refused.err
    )
    assert "GET /global/networks/default/getEffectiveFirewalls" in fake.paths() and fake.paths("POST") == []
    fake.firewall_policies = [policy("org-baseline", "HIERARCHY", "goto_next", ["0.0.0.0/0"])]
    assert create(tfrig, gcp_env).code == 0


def test_a_firewall_policy_that_admits_iap_is_enough_for_ssh_through_iap(tfrig, fake, gcp_env):
    fake.firewalls = []
    fake.firewall_policies = [policy("org-iap", "HIERARCHY", "allow", ["35.235.240.0/20"])]
    env = {
        **gcp_env,
        "INVOKE_GCP_SSH_VIA": "iap",
        "PATH": f"{Path(__file__).parent / 'testbed' / 'bin'}:{os.environ['PATH']}",
    }
    checks = {c["name"]: c for c in json_of(tfrig("gcp.check", "--json", env=env).out)}
    assert checks["firewall"]["ok"], checks["firewall"]
    assert create(tfrig, env, "--no-external-ip").code == 0


def test_a_firewall_tfrig_may_not_read_is_one_line_and_the_create_goes_on(tfrig, fake, gcp_env):
    fake.scenario.firewalls_forbidden = True
    result = tfrig("--dry", "gcp.create", "--yes", "--name", "tfrig-alice", env=gcp_env)
    assert result.code == 0, result.text
    assert "couldn't check the firewall for SSH (no permission to list firewall rules); going on" in result.out
    assert "GET /global/firewalls" in fake.paths()


def test_dry_run_prints_the_insert_after_the_real_preflight(tfrig, fake, gcp_env):
    result = tfrig(
        "--dry",
        "gcp.create",
        "--name",
        "tfrig-alice",
        "--no-ssh-wait",
        "--spot",
        "--max-run-duration",
        "8h",
        env=gcp_env,
    )
    assert result.code == 0, result.text
    assert fake.paths() == [LOOKUP, *PREFLIGHT]
    printed = result.out[result.out.index("{") :]
    body = json.loads(printed)
    assert body["scheduling"] == {
        "onHostMaintenance": "TERMINATE",
        "automaticRestart": False,
        "provisioningModel": "SPOT",
        "instanceTerminationAction": "STOP",
        "maxRunDuration": {"seconds": "28800"},
    }
    assert "would insert into us-central1-a (then europe-west4-a, europe-west4-b)" in result.out


def test_lifecycle_list_stop_start_delete(tfrig, fake, gcp_env):
    assert create(tfrig, gcp_env).code == 0
    listed = json_of(tfrig("gcp.list", "--json", env=gcp_env).out)
    assert [(r["name"], r["status"], r["gpu"]) for r in listed] == [("tfrig-alice", "RUNNING", "1 x nvidia-tesla-t4")]
    stopped = tfrig("gcp.stop", "--name", "tfrig-alice", env=gcp_env)
    assert "its disk is still billed" in stopped.out
    assert fake.instances["us-central1-a"]["tfrig-alice"]["status"] == "TERMINATED"
    assert tfrig("gcp.start", "--name", "tfrig-alice", env=gcp_env).code == 0
    refused = tfrig("gcp.delete", "--name", "tfrig-alice", env=gcp_env)
    assert refused.code == 1 and "pass --yes" in refused.err
    assert "tfrig-alice" in fake.instances["us-central1-a"]
    deleted = tfrig("gcp.delete", "--name", "tfrig-alice", "--yes", env=gcp_env)
    assert deleted.code == 0, deleted.text
    assert "tfrig-alice" not in fake.instances["us-central1-a"]
    assert state.vms() == {}
    assert tfrig("gcp.list", env=gcp_env).out.strip() == "tfrig has created no VMs that still exist."


def test_an_image_of_a_running_vms_disk_is_refused_so_bake_stops_it_first(tfrig, fake, gcp_env):
    """The API refuses an image of a disk in use (gcloud's --force help); gcp.bake of a stopped VM
    (what is on it can't be read) images its boot disk into the family, labelled unknown, and starts
    it again; a family gcp.create can't find is refused by the API before anything is made."""
    from tfrig.gce.cloud import ApiError, Cloud

    assert create(tfrig, gcp_env).code == 0
    cloud = Cloud(fake.project, fake.endpoint, "anonymous", retry_delay=0.01)
    disk = f"projects/{fake.project}/zones/us-central1-a/disks/tfrig-alice"
    with pytest.raises(ApiError) as refused:
        cloud.create_image("early", "tf-t4", disk, {}, "")
    assert refused.value.reason == "resourceInUseByAnotherResource" and fake.images == {}

    assert tfrig("gcp.stop", "--name", "tfrig-alice", env=gcp_env).code == 0
    baked = tfrig("gcp.bake", "--name", "tfrig-alice", "--family", "tf-t4", env=gcp_env)
    assert baked.code == 0, baked.text
    (image,) = fake.images
    assert fake.images[image]["sourceDisk"].endswith(disk) and fake.images[image]["family"] == "tf-t4"
    assert fake.images[image]["labels"]["tfrig-driver"] == "unknown"
    assert f"baked {image} (family tf-t4): driver unknown" in baked.out
    assert fake.instances["us-central1-a"]["tfrig-alice"]["status"] == "RUNNING"
    assert "started tfrig-alice again at" in baked.out

    # An image the API refuses: one line, saying where the VM was left.
    assert tfrig("gcp.stop", "--name", "tfrig-alice", env=gcp_env).code == 0
    fake.image_error = (403, "forbidden", f"Required 'compute.images.create' permission for 'projects/{fake.project}'")
    refused_image = tfrig("gcp.bake", "--name", "tfrig-alice", "--family", "tf-t4", env=gcp_env)
    assert refused_image.code == 1 and "Traceback" not in refused_image.text
    assert (
        refused_image.err.strip()
        .splitlines()[-1]
        .endswith("tfrig-alice is stopped: `inv gcp.start --name tfrig-alice` starts it again")
    )
    assert "compute.images.create" in refused_image.err and len(fake.images) == 1

    missing = tfrig(
        "gcp.create", "--yes", "--name", "tfrig-bob", "--no-ssh-wait", "--image-family", "tf-l4", env=gcp_env
    )
    assert missing.code == 1 and "tfrig-bob" not in fake.instances.get("us-central1-a", {})
    assert missing.err.strip().splitlines()[-1] == (
        f"--image-family tf-l4: project {fake.project} has no image in that family; `inv gcp.images` lists yours, "
        "`inv gcp.bake --family NAME` makes one."
    )


def test_dry_over_a_baked_family_plans_from_its_labels_and_a_policy_against_the_projects_images_is_named(
    tfrig, fake, gcp_env
):
    """--dry over --image-family reads the family's newest image: what its labels say is on it
    (the driver, TensorFlow) is planned as done. A trustedImageProjects policy that leaves out the
    project itself refuses its baked images: the line says so and names what is allowed."""
    assert create(tfrig, gcp_env).code == 0
    assert tfrig("gcp.stop", "--name", "tfrig-alice", env=gcp_env).code == 0
    assert tfrig("gcp.bake", "--name", "tfrig-alice", "--family", "tf-t4", "--delete", "--yes", env=gcp_env).code == 0
    (image,) = fake.images
    fake.images[image]["labels"].update({"tfrig-driver": "580-159-04", "tfrig-tensorflow": "2-21-0"})

    planned = tfrig(
        "--dry", "gcp.create", "--yes", "--name", "tfrig-bob", "--image-family", "tf-t4", "gpu.setup", "tf.install",
        env=gcp_env,
    )  # fmt: skip
    assert planned.code == 0, planned.text
    assert "[tfrig-bob] already done: driver 580.159.04 loaded" in planned.out
    assert "[tfrig-bob] already done: TensorFlow 2.21.0" in planned.out
    assert "would run" not in planned.out and "step install" not in planned.out
    stock = tfrig("--dry", "gcp.create", "--yes", "--name", "tfrig-bob", "gpu.setup", "tf.install", env=gcp_env)
    assert "step install" in stock.out and "would run: uv (else pip) install" in stock.out  # what the labels spare
    # tf.install's wheels are fetched while the driver installs (it comes later in the chain)
    assert "[tfrig-bob] would fetch tensorflow[and-cuda]==2.21.0 for tf.install into the uv cache meanwhile" in (
        stock.out
    )
    assert stock.out.index("would fetch") < stock.out.index("step build-tools")

    fake.policies["compute.trustedImageProjects"] = ["projects/debian-cloud"]
    refused = tfrig(
        "gcp.create", "--yes", "--name", "tfrig-bob", "--no-ssh-wait", "--image-family", "tf-t4", env=gcp_env
    )
    assert refused.code == 1 and "tfrig-bob" not in fake.instances.get("us-central1-a", {})
    assert refused.err.strip().splitlines()[-1] == (
        f"the organization policy constraints/compute.trustedImageProjects does not allow boot images from project "
        f"{fake.project} itself, where gcp.bake keeps its images: ask your admin to add projects/{fake.project} to "
        "it, or give --image from a project it allows: --image ubuntu-24.04 (in ubuntu-os-cloud), --image debian-12 "
        "(in debian-cloud); tfrig tries no other zone for it."
    )


def test_deleting_a_vm_that_is_already_gone_just_forgets_it(tfrig, fake, gcp_env):
    assert create(tfrig, gcp_env).code == 0
    del fake.instances["us-central1-a"]["tfrig-alice"]
    result = tfrig("gcp.delete", "--name", "tfrig-alice", "--yes", env=gcp_env)
    assert result.code == 0, result.text
    assert state.vms() == {}


def test_zones_and_quota(tfrig, fake, gcp_env):
    zones = json_of(tfrig("gcp.zones", "--gpu", "nvidia-tesla-t4", "--json", env=gcp_env).out)
    assert [z["zone"] for z in zones] == ["europe-west4-a", "europe-west4-b", "us-central1-a"]
    quota = json_of(tfrig("gcp.quota", "--json", env=gcp_env).out)
    assert quota[0] == {"where": "global", "metric": "GPUS_ALL_REGIONS", "limit": 8.0, "usage": 0.0, "remaining": 8.0}
    assert {
        "where": "europe-west4",
        "metric": "PREEMPTIBLE_NVIDIA_T4_GPUS",
        "limit": 4.0,
        "usage": 0.0,
        "remaining": 4.0,
    } in quota


def test_project_from_the_gcloud_config_file(tfrig, fake, gcp_env, tmp_path):
    env = {**gcp_env, "INVOKE_GCP_PROJECT": ""}
    folder = tmp_path / ".config" / "gcloud"
    (folder / "configurations").mkdir(parents=True)
    (folder / "active_config").write_text("work\n")
    (folder / "configurations" / "config_work").write_text(
        f"[core]\nproject = {fake.project}\n[compute]\nzone = europe-west4-b\n"
    )
    result = tfrig("gcp.zones", "--json", env=env)
    assert result.code == 0, result.text
    assert fake.calls[0][1].startswith(f"/compute/v1/projects/{fake.project}/")
    missing = tfrig("gcp.zones", env={**env, "HOME": str(tmp_path / "nowhere")})
    assert missing.code == 1
    assert missing.err.strip().startswith("No Google Cloud project: pass --project")


def test_credentials_problems_are_one_line(tfrig, fake, gcp_env, tmp_path):
    anonymous = tfrig("gcp.zones", env={**gcp_env, "INVOKE_GCP_ENDPOINT": ""})
    assert (
        anonymous.err.strip()
        == "gcp.credentials: anonymous works only with an explicit gcp.endpoint (a private or test API)."
    )
    real = {**gcp_env, "INVOKE_GCP_CREDENTIALS": "", "GOOGLE_APPLICATION_CREDENTIALS": ""}
    # The fake speaks plain http: real credentials are never sent there, whatever they are.
    clear_text = tfrig("gcp.zones", env=real)
    assert clear_text.code == 1
    assert clear_text.err.strip().endswith(
        "is plain http, which would carry your Google token in clear text: use an https endpoint, "
        "or gcp.credentials: anonymous for a test API."
    )
    https = {**real, "INVOKE_GCP_ENDPOINT": "https://127.0.0.1:9"}
    oslogin_clear = tfrig("gcp.zones", env=https)  # the OS Login endpoint is the fake's, plain http
    assert oslogin_clear.code == 1 and oslogin_clear.err.strip().startswith(
        f"gcp.oslogin_endpoint {fake.endpoint!r} is plain http, which would carry your Google token in clear text"
    )
    no_adc = tfrig(
        "gcp.zones",
        env={
            **https,
            "INVOKE_GCP_OSLOGIN_ENDPOINT": "",
            "INVOKE_GCP_RESOURCEMANAGER_ENDPOINT": "",
            "INVOKE_GCP_ORGPOLICY_ENDPOINT": "",
            "INVOKE_GCP_BILLING_ENDPOINT": "",
        },
    )
    assert no_adc.code == 1
    assert no_adc.err.strip() == (
        "No Google Cloud credentials: run `gcloud auth application-default login`, or set "
        "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file."
    )
    assert fake.calls == []


def test_ctrl_c_during_the_create_leaves_no_vm(fake, gcp_env, state_dir):
    """Interrupt while the insert's operation is awaited: the VM that was being made is deleted."""
    fake.pause = STAGES["the operation wait"]
    env = {**gcp_env, "TFRIG_STATE_DIR": str(state_dir)}
    proc = start_cli("gcp.create", "--yes", "--name", "tfrig-alice", "--no-ssh-wait", env=env, stderr=subprocess.STDOUT)
    try:
        assert fake.paused.wait(DEADLINE), "the create never reached the operation wait"
        proc.send_signal(signal.SIGINT)
    finally:
        fake.release.set()
    out, _ = proc.communicate(timeout=DEADLINE)
    assert proc.returncode != 0
    assert "the half-created VM in us-central1-a was deleted; nothing is left billing" in out
    assert fake.instances.get("us-central1-a", {}) == {}
    assert fake.paths("DELETE") == ["DELETE /zones/us-central1-a/instances/tfrig-alice"]
    assert state.vms() == {}


def test_dry_over_the_whole_chain_plans_each_step_on_assumed_facts(tfrig, fake, gcp_env):
    # No --sha256 or --unverified: the driver step checks NVIDIA's published checksum by default.
    result = tfrig(
        "--dry", "gcp.create", "--yes", "--gpu", "nvidia-tesla-t4", "gpu.setup", "tf.install", "tf.verify", env=gcp_env
    )
    assert result.code == 0, result.text
    assert fake.paths("POST") == [] and state.vms() == {}
    out = result.out
    assert "[tfrig-alice] not created under --dry: facts below are assumed from a fresh image" in out
    assert (
        "[tfrig-alice] driver 580.159.04 (open kernel module, NVIDIA's .run installer) for Tesla T4 at 0000:00:04.0"
        in out
    )
    assert (
        "would run: METHOD=run VERSION=580.159.04 BRANCH=580 MODULE=open BASE=https://download.nvidia.com "
        "STEP=install scripts/nvidia-driver.sh" in out
    )
    # After the driver step, the plan for TensorFlow is the GPU build, as the real run would choose.
    assert "[tfrig-alice] would run: uv (else pip) install tensorflow[and-cuda]==2.21.0" in out
    assert "[tfrig-alice] would run a matrix product with TensorFlow 2.21.0" in out


def test_ssh_command_and_the_managed_ssh_config_block(tfrig, gcp_env, tmp_path):
    state.record_vm("tfrig-alice", address="127.0.0.9", user="alice", ssh_key="/k/id", port=22, zone="europe-west4-a")
    shown = tfrig("--dry", "gcp.ssh", env=gcp_env)
    argv = shlex.split(shown.out.strip().removeprefix("would run: "))
    assert argv[0] == "ssh" and argv[-3:] == ["-i", "/k/id", "alice@127.0.0.9"]
    # What OpenSSH makes of it (ssh -G resolves the options without connecting): the VM's key is
    # checked against the keys tfrig pinned from its guest attributes, then the user's own.
    checked = [
        "stricthostkeychecking true",
        f"userknownhostsfile {state.state_dir() / 'known_hosts'} {pwd.getpwuid(os.getuid()).pw_dir}/.ssh/known_hosts",
    ]
    resolved = subprocess.run(["ssh", "-G", *argv[1:]], capture_output=True, text=True, env={"HOME": str(tmp_path)})
    assert set(checked) <= set(resolved.stdout.splitlines()), resolved.stdout + resolved.stderr
    config = tmp_path / ".ssh" / "config"
    config.parent.mkdir()
    config.write_text("Host work\n    HostName work.example\n")
    assert tfrig("gcp.ssh-config", env=gcp_env).code == 0
    text = config.read_text()
    assert text.startswith("Host work\n    HostName work.example\n# >>> tfrig tfrig-alice >>>\nHost tfrig-alice\n")
    resolved = subprocess.run(
        ["ssh", "-G", "-F", str(config), "tfrig-alice"], capture_output=True, text=True, env={"HOME": str(tmp_path)}
    )
    assert set(checked) <= set(resolved.stdout.splitlines()), resolved.stdout + resolved.stderr
    state.record_vm("tfrig-alice", address="127.0.0.10")
    assert tfrig("gcp.ssh-config", env=gcp_env).code == 0
    text = config.read_text()
    assert text.count("Host tfrig-alice") == 1 and "HostName 127.0.0.10" in text
    assert tfrig("gcp.ssh-config", "--remove", env=gcp_env).code == 0
    assert config.read_text() == "Host work\n    HostName work.example\n"
    assert oct(config.stat().st_mode & 0o777) == "0o600"


def test_an_operation_that_cant_be_awaited_leaves_no_vm(tfrig, fake, gcp_env):
    """The insert went through but its operation can't be read (5xx past the retries): the VM is deleted."""
    original, failures = fake.handle, {"left": 5}

    def failing_wait(method, path, body):
        if path.endswith("/wait") and failures["left"] > 0:
            failures["left"] -= 1
            fake.calls.append((method, path))
            return 503, {
                "error": {"code": 503, "message": "backend unavailable", "errors": [{"reason": "backendError"}]}
            }
        return original(method, path, body)

    fake.handle = failing_wait
    result = create(tfrig, gcp_env)
    assert result.code == 1
    assert result.err.strip().startswith("waiting for tfrig-alice in us-central1-a failed")
    assert "the half-created VM in us-central1-a was deleted; nothing is left billing" in result.out
    assert fake.instances["us-central1-a"] == {} and state.vms() == {}
    assert fake.paths("DELETE") == ["DELETE /zones/us-central1-a/instances/tfrig-alice"]


STAGES = {
    "the insert call": ("POST", r"/zones/[^/]+/instances$"),
    "the operation wait": ("POST", r"/operations/[^/]+/wait$"),
    "the RUNNING wait": ("GET", r"/instances/tfrig-alice$"),
    "the host keys wait": ("GET", r"/instances/tfrig-alice/getGuestAttributes$"),
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_ctrl_c_at_each_stage_of_a_create_leaves_no_vm_tfrig_has_not_recorded(fake, gcp_env, state_dir, stage):
    fake.pause = STAGES[stage]
    proc = start_cli("gcp.create", "--yes", "--name", "tfrig-alice", env={**gcp_env, "TFRIG_STATE_DIR": str(state_dir)})
    try:
        assert fake.paused.wait(60), f"tfrig never reached {stage}"
        proc.send_signal(signal.SIGINT)
    finally:
        fake.release.set()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, out + err
    (line,) = err.strip().splitlines()
    assert line.startswith("interrupted: ")
    live = {name for vms in fake.instances.values() for name in vms}
    assert live <= set(state.vms()), (live, state.vms())
    if live:
        assert "`inv gcp.delete --name tfrig-alice --yes`" in line
    else:
        assert line == "interrupted: no VM was left behind; nothing bills."


def test_list_reconciles_the_records_of_creates_that_were_cut_off(tfrig, fake, gcp_env):
    import time

    fake.add_instance("europe-west4-a", "tfrig-landed", labels={"created-by": "tfrig"}, address="127.0.0.5")
    state.record_vm("tfrig-landed", zone="europe-west4-a", status="CREATING", since=time.time())
    state.record_vm("tfrig-never", zone="europe-west4-a", status="CREATING", since=time.time() - 3600)
    state.record_vm("tfrig-inflight", zone="europe-west4-a", status="CREATING", since=time.time())
    listed = tfrig("gcp.list", env=gcp_env)
    assert listed.code == 0, listed.text
    assert "tfrig-never: its create was cut off and no VM exists; removed from tfrig's state" in listed.text
    records = state.vms()
    assert records["tfrig-landed"]["status"] == "RUNNING" and records["tfrig-landed"]["address"] == "127.0.0.5"
    assert "tfrig-never" not in records
    assert records["tfrig-inflight"]["status"] == "CREATING"  # its insert may still land


def test_list_fills_in_the_internal_address_of_an_older_record(tfrig, fake, gcp_env):
    """tf.run's cluster meets at VMs' internal addresses; a record made before they were kept gets
    its own from gcp.list, as tf.run's refusal says."""
    fake.add_instance("europe-west4-a", "tfrig-old", labels={"created-by": "tfrig"}, address="127.0.0.5")
    state.record_vm("tfrig-old", zone="europe-west4-a", status="RUNNING", address="127.0.0.5", project=fake.project)
    listed = tfrig("gcp.list", env=gcp_env)
    assert listed.code == 0, listed.text
    assert state.vms()["tfrig-old"]["internal_address"] == "10.128.0.5"


def test_down_dry_changes_no_record_and_down_never_drops_a_create_in_flight(tfrig, fake, gcp_env):
    import time

    state.record_vm("tfrig-gone", zone="europe-west4-a", status="RUNNING", project=fake.project)
    state.record_vm("tfrig-inflight", zone="europe-west4-a", status="CREATING", since=time.time(), project=fake.project)
    before = state.vms()
    shown = tfrig("--dry", "gcp.down", "--delete", "--yes", env=gcp_env)
    assert shown.code == 0, shown.text
    assert "tfrig-gone: already gone; would remove it from tfrig's state" in shown.text
    assert state.vms() == before
    done = tfrig("gcp.down", "--delete", "--yes", env=gcp_env)
    assert done.code == 0, done.text
    assert set(state.vms()) == {"tfrig-inflight"}


def test_a_down_that_runs_while_a_create_is_in_flight_forgets_nothing(tfrig, fake, gcp_env, state_dir):
    """The real race, not the rule: gcp.down lists while gcp.create's insert is held in flight;
    the create then lands, and its VM is in the state."""
    fake.pause = STAGES["the insert call"]
    env = {**gcp_env, "TFRIG_STATE_DIR": str(state_dir)}
    creating = start_cli("gcp.create", "--yes", "--no-ssh-wait", "--name", "tfrig-alice", env=env)
    try:
        assert fake.paused.wait(60), "the create never sent its insert"
        assert state.vms()["tfrig-alice"]["status"] == "CREATING"
        down = tfrig("gcp.down", "--delete", "--yes", env=gcp_env)
        assert down.code == 0, down.text
        assert "tfrig-alice" in state.vms()  # its listing could not see the VM yet: the record stays
    finally:
        fake.release.set()
    out, err = creating.communicate(timeout=120)
    assert creating.returncode == 0, out + err
    assert state.vms()["tfrig-alice"]["status"] == "RUNNING"
    assert {name for vms in fake.instances.values() for name in vms} == {"tfrig-alice"}


# --- the real API's waits, operation results and errors (issue 11) ------------------------------


def test_a_slow_create_whose_wait_returns_not_done_is_awaited_not_deleted(tfrig, fake, gcp_env):
    """zoneOperations.wait returns RUNNING after its hold; the create goes on waiting to its own
    deadline and keeps the VM."""
    fake.wait_hold, fake.scenario.operation_seconds = 0.3, 1.2
    result = create(tfrig, gcp_env)
    assert result.code == 0, result.text
    waits = [p for p in fake.paths("POST") if p.endswith("/wait")]
    assert len(waits) >= 3  # not DONE at least twice, then DONE
    assert fake.paths("DELETE") == [] and "tfrig-alice" in fake.instances["us-central1-a"]
    assert (state.find_vm("tfrig-alice") or {})["status"] == "RUNNING"


def test_one_wait_call_may_take_longer_than_the_apis_hold():
    from tfrig.gce import cloud

    assert cloud.WAIT_HOLD >= 120 and cloud.WAIT_CALL_TIMEOUT > cloud.WAIT_HOLD > cloud.CALL_TIMEOUT


def test_the_operation_deadline_is_tfrigs_own_setting(tfrig, fake, gcp_env):
    """An operation still running at gcp.operation_timeout: the create is cut off and cleaned up."""
    fake.wait_hold, fake.scenario.operation_seconds = 0.2, 30
    result = create(tfrig, {**gcp_env, "INVOKE_GCP_OPERATION_TIMEOUT": "1"})
    assert result.code == 1
    assert "not done after 1 s" in result.err
    assert "tfrig-alice" not in fake.instances["us-central1-a"] and state.vms() == {}


@pytest.mark.parametrize("verb", ["stop", "start"])
def test_a_failed_stop_or_start_operation_is_reported_not_claimed(tfrig, fake, gcp_env, verb):
    assert create(tfrig, gcp_env).code == 0
    if verb == "start":
        assert tfrig("gcp.stop", "--name", "tfrig-alice", env=gcp_env).code == 0
    fake.scenario.operation_errors[verb] = ("RESOURCE_NOT_READY", "The resource is not ready")
    result = tfrig(f"gcp.{verb}", "--name", "tfrig-alice", env=gcp_env)
    assert result.code == 1
    doing = {"stop": "stopping", "start": "starting"}[verb]
    assert result.err.strip() == f"{doing} tfrig-alice failed: RESOURCE_NOT_READY: The resource is not ready"
    assert "Traceback" not in result.text
    expected = "RUNNING" if verb == "stop" else "TERMINATED"
    assert (state.find_vm("tfrig-alice") or {})["status"] == expected


def test_a_failed_delete_keeps_the_record_and_says_it_bills(tfrig, fake, gcp_env):
    assert create(tfrig, gcp_env).code == 0
    fake.scenario.operation_errors["delete"] = ("RESOURCE_IN_USE_BY_ANOTHER_RESOURCE", "in use")
    result = tfrig("gcp.delete", "--name", "tfrig-alice", "--yes", env=gcp_env)
    assert result.code == 1
    assert result.err.strip() == "deleting tfrig-alice failed: RESOURCE_IN_USE_BY_ANOTHER_RESOURCE: in use"
    assert "nothing of it is billed" not in result.out
    assert state.find_vm("tfrig-alice") and "tfrig-alice" in fake.instances["us-central1-a"]
    down = tfrig("gcp.down", "--delete", "--yes", env=gcp_env)
    assert down.code == 1
    assert "deleting tfrig-alice failed" in down.err + down.out
    assert "1 of 1 VM(s) could not be deleted" in down.err
    assert state.find_vm("tfrig-alice")


def test_a_failed_delete_during_cleanup_records_the_vm(tfrig, fake, gcp_env):
    """The create is cut off after its insert and the cleanup's delete fails: the VM stays recorded."""
    fake.wait_hold, fake.scenario.operation_seconds = 0.2, 30
    fake.scenario.operation_errors["delete"] = ("INTERNAL", "backend error")
    result = create(tfrig, {**gcp_env, "INVOKE_GCP_OPERATION_TIMEOUT": "1"})
    assert result.code == 1
    assert "tfrig-alice: may exist in us-central1-a (its delete failed" in result.out
    assert "nothing is left billing" not in result.out
    assert (state.find_vm("tfrig-alice") or {})["status"] == "UNKNOWN"


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (
            (
                403,
                "accessNotConfigured",
                "Compute Engine API has not been used in project 123 before or it is disabled.",
                "SERVICE_DISABLED",
            ),
            "The Compute Engine API is not enabled in project tfrig-test: enable it with "
            "`gcloud services enable compute.googleapis.com --project tfrig-test` and retry in a minute.",
        ),
        (
            (403, "forbidden", "Required 'compute.instances.list' permission for 'projects/tfrig-test'", ""),
            "Permission denied in project tfrig-test (it needs compute.instances.list): ask for a role that grants "
            "it, e.g. roles/compute.instanceAdmin.v1; the API said: Required 'compute.instances.list' permission for "
            "'projects/tfrig-test'",
        ),
        (
            (404, "notFound", "The resource 'projects/tfrig-test' was not found", ""),
            "Project tfrig-test was not found, or your credentials can't see it: check --project, gcp.project or "
            "`gcloud config get project`.",
        ),
        (
            (503, "backendError", "The service is currently unavailable.", ""),
            "The Compute API is unavailable now: The service is currently unavailable. (still failing after 5 tries); "
            "retry in a few minutes.",
        ),
    ],
    ids=["api-disabled", "permission", "no-project", "unavailable"],
)
@pytest.mark.parametrize("task", ["gcp.list --project tfrig-test", "gcp.zones", "gcp.quota", "gcp.down", "gcp.create"])
def test_api_errors_are_one_line_in_every_task(tfrig, fake, gcp_env, error, line, task):
    fake.scenario.every_call = error
    args = shlex.split(task) + (["--name", "tfrig-alice", "--no-ssh-wait"] if task == "gcp.create" else [])
    result = tfrig(*args, env=gcp_env)
    assert result.code == 1
    assert result.err.strip() == line
    assert "Traceback" not in result.text


def test_a_zones_available_hint_on_the_insert_error_itself_is_followed(tfrig, fake, gcp_env):
    fake.scenario.insert_errors["us-central1-a"] = (
        400,
        "ZONE_RESOURCE_POOL_EXHAUSTED",
        "The zone does not have enough resources available to fulfill the request.",
        ["europe-west4-b"],
    )
    result = create(tfrig, gcp_env)
    assert result.code == 0, result.text
    inserts = [p for p in fake.paths("POST") if p.endswith("/instances")]
    assert inserts[0] == "POST /zones/us-central1-a/instances"
    assert inserts[-1] == "POST /zones/europe-west4-b/instances" and len(inserts) == 2


# --- what is sold how, disks, images, where it tries, the price (issue 11) ----------------------


def gcloud_config(home: Path, text: str) -> None:
    folder = home / ".config" / "gcloud"
    (folder / "configurations").mkdir(parents=True, exist_ok=True)
    (folder / "active_config").write_text("work\n")
    (folder / "configurations" / "config_work").write_text(text)


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--gpu", "nvidia-h100-80gb", "--gpus", "1"],
            "a3-highgpu-1g is sold as Spot or Flex-start, not on demand: add --spot or --flex-start.",
        ),
        (
            ["--gpu", "nvidia-b200", "--gpus", "8"],
            "a4-highgpu-8g is sold as Spot, Flex-start or through a reservation, not on demand: add --spot, "
            "--flex-start or --reservation NAME.",
        ),
        (
            [
                "--gpu",
                "nvidia-tesla-t4",
                "--image",
                "projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts-arm64",
            ],
            "--image projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts-arm64 is built for arm64, and "
            "n1-standard-4 is x86_64; choose an image for x86_64.",
        ),
    ],
    ids=["a3-high-on-demand", "a4-on-demand", "arm-image-on-n1"],
)
def test_what_is_not_sold_that_way_is_refused_before_any_call(tfrig, fake, gcp_env, args, line):
    result = create(tfrig, gcp_env, *args)
    assert result.code == 1
    assert result.err.strip() == line
    assert fake.calls == []


def test_a_spot_a3_high_goes_through_and_the_fake_refuses_it_on_demand(tfrig, fake, gcp_env):
    fake.offer("nvidia-h100-80gb", ["us-central1-a"], cards=8)
    fake.regional["us-central1"]["CPUS"] = [0, 0]  # A3 draws no N1 CPUS
    result = create(tfrig, gcp_env, "--gpu", "nvidia-h100-80gb", "--spot")
    assert result.code == 0, result.text
    body = fake.instances["us-central1-a"]["tfrig-alice"]
    assert body["machineType"].endswith("/a3-highgpu-1g") and body["scheduling"]["provisioningModel"] == "SPOT"
    assert "guestAccelerators" not in body
    # The fake holds the rule itself: an on-demand insert of the same machine type is refused.
    on_demand = {**body, "name": "other", "scheduling": {"onHostMaintenance": "TERMINATE"}}
    status, answer = fake.handle("POST", f"{PREFIX}{fake.project}/zones/us-central1-a/instances", on_demand)
    assert status == 400 and "Spot or Flex-start" in answer["error"]["message"]


def test_g2_gets_a_balanced_boot_disk_which_the_fake_requires(tfrig, fake, gcp_env):
    fake.offer("nvidia-l4", ["us-central1-a"], cards=8)
    result = create(tfrig, gcp_env, "--gpu", "nvidia-l4")
    assert result.code == 0, result.text
    disk = fake.instances["us-central1-a"]["tfrig-alice"]["disks"][0]["initializeParams"]
    assert disk["diskType"] == "zones/us-central1-a/diskTypes/pd-balanced"
    # Without a disk type the API makes pd-standard, which G2 refuses: a bad request, not a stockout.
    body = {**fake.instances["us-central1-a"]["tfrig-alice"], "name": "other"}
    body["disks"] = [{"boot": True, "initializeParams": {"sourceImage": disk["sourceImage"]}}]
    status, answer = fake.handle("POST", f"{PREFIX}{fake.project}/zones/us-central1-a/instances", body)
    assert status == 400 and answer["error"]["errors"][0]["reason"] == "UNSUPPORTED_OPERATION"


def test_an_incompatible_configuration_is_not_retried_in_every_zone(tfrig, fake, gcp_env):
    fake.scenario.insert_errors["us-central1-a"] = (
        400,
        "UNSUPPORTED_OPERATION",
        "[pd-standard, n1-standard-4] features are not compatible for creating instance.",
    )
    result = create(tfrig, gcp_env)
    assert result.code == 1
    assert [p for p in fake.paths("POST") if p.endswith("/instances")] == ["POST /zones/us-central1-a/instances"]
    assert "features are not compatible" in result.err


def test_gclouds_zone_is_a_first_choice_not_a_pin(tfrig, fake, gcp_env):
    gcloud_config(Path(gcp_env["HOME"]), f"[core]\nproject = {fake.project}\n[compute]\nzone = europe-west4-b\n")
    fake.scenario.stockout["europe-west4-b"] = []
    result = create(tfrig, gcp_env)
    assert result.code == 0, result.text
    inserts = [p for p in fake.paths("POST") if p.endswith("/instances")]
    assert inserts == ["POST /zones/europe-west4-b/instances", "POST /zones/us-central1-a/instances"]
    pinned = tfrig(
        "gcp.create", "--yes", "--name", "tfrig-pin", "--no-ssh-wait", "--zone", "europe-west4-b", env=gcp_env
    )
    assert pinned.code == 1 and pinned.err.startswith("no zone could take tfrig-pin: europe-west4-b:")


def test_gclouds_region_is_tried_first(tfrig, fake, gcp_env):
    gcloud_config(Path(gcp_env["HOME"]), f"[core]\nproject = {fake.project}\n[compute]\nregion = europe-west4\n")
    result = create(tfrig, gcp_env)
    assert result.code == 0, result.text
    assert [p for p in fake.paths("POST") if p.endswith("/instances")] == ["POST /zones/europe-west4-a/instances"]


def test_the_price_shows_before_the_spend_and_nothing_is_created_unasked(tfrig, fake, gcp_env):
    asked = tfrig("gcp.create", "--name", "tfrig-alice", "--no-ssh-wait", env=gcp_env)
    assert asked.code == 1
    assert asked.out.startswith(
        "create 1 VM (n1-standard-4 + 1 x nvidia-tesla-t4, on demand) in us-central1-a first: about $0.54/h"
    )
    assert asked.err.strip().endswith("go ahead? Not asking without a terminal: pass --yes to go ahead.")
    assert fake.paths("POST") == [] and state.vms() == {}
    dry = tfrig("--dry", "gcp.create", "--name", "tfrig-alice", "--count", "2", "--spot", env=gcp_env)
    assert dry.code == 0, dry.text
    assert (
        "create 2 VMs (n1-standard-4 + 1 x nvidia-tesla-t4, Spot) in us-central1-a first: about $0.21/h each" in dry.out
    )
    assert fake.paths("POST") == []
    told = tfrig("gcp.create", "--name", "tfrig-alice", "--no-ssh-wait", env={**gcp_env, "INVOKE_TFRIG_YES": "1"})
    assert told.code == 0, told.text


def test_list_shows_uptime_and_cost_and_down_the_hourly_total(tfrig, fake, gcp_env):
    assert create(tfrig, gcp_env).code == 0
    fake.instances["us-central1-a"]["tfrig-alice"]["lastStartTimestamp"] = time.strftime(
        "%Y-%m-%dT%H:%M:%S.000-00:00", time.gmtime(time.time() - 2 * 3600)
    )
    [row] = json_of(tfrig("gcp.list", "--json", env=gcp_env).out)
    assert row["hourly_usd"] == 0.54 and 1.9 < row["uptime_hours"] < 2.1
    assert 1.0 < row["cost_since_start_usd"] < 1.2
    shown = tfrig("gcp.list", env=gcp_env).out
    assert "2.0 h" in shown and "about $1.0" in shown and "costs are estimates since each VM last started" in shown
    down = tfrig("gcp.down", "--yes", env=gcp_env)
    assert down.code == 0, down.text
    assert "this stops about $0.54/h of VM and GPU charges" in down.out


def test_as_root_the_vm_user_is_not_root(tfrig, fake, gcp_env):
    result = create(tfrig, {**gcp_env, "USER": "root", "LOGNAME": "root"}, "--json")
    assert result.code == 0, result.text
    body = fake.instances["us-central1-a"]["tfrig-alice"]
    metadata = {item["key"]: item["value"] for item in body["metadata"]["items"]}
    assert metadata["ssh-keys"].startswith("tfrig:ssh-ed25519 ")
    assert json_of(result.out)["user"] == "tfrig"


def test_a_retried_insert_whose_first_answer_was_lost_makes_one_vm(tfrig, fake, gcp_env):
    """The insert landed but its answer was a 503: the retry carries the same requestId, so the API
    answers with the first insert's operation, not a 409 and not a second VM."""
    fake.scenario.inserts_answer_lost = 1
    result = create(tfrig, gcp_env)
    assert result.code == 0, result.text
    inserts = [p for p in fake.paths("POST") if p.endswith("/instances")]
    assert inserts == ["POST /zones/us-central1-a/instances"] * 2
    ids = [
        urllib.parse.parse_qs(path.split("?", 1)[1])["requestId"] for verb, path in fake.calls if "requestId" in path
    ]
    assert len(ids) == 2 and ids[0] == ids[1]
    assert list(fake.instances["us-central1-a"]) == ["tfrig-alice"] and fake.paths("DELETE") == []


def test_address_quota_is_checked_too(tfrig, fake, gcp_env):
    fake.regional["us-central1"]["IN_USE_ADDRESSES"] = [8, 8]
    result = create(tfrig, gcp_env)
    assert result.code == 0, result.text
    assert "skipping us-central1: not enough IN_USE_ADDRESSES quota" in result.out
    assert "created tfrig-alice in europe-west4-a" in result.out


def test_a_fleet_that_runs_out_of_room_names_what_it_made(tfrig, fake, gcp_env):
    for region in fake.regional.values():
        region["NVIDIA_T4_GPUS"] = [1, 0]  # one VM's worth per region: the fake's insert enforces it
    fake.scenario.stockout.update({"europe-west4-a": [], "europe-west4-b": []})
    result = tfrig("gcp.create", "--yes", "--name", "tfrig-alice", "--count", "2", "--no-ssh-wait", env=gcp_env)
    assert result.code == 1
    assert result.err.strip().startswith("no zone could take tfrig-alice-2: us-central1-a: QUOTA_EXCEEDED")
    assert result.err.strip().endswith("; created so far: tfrig-alice-1")
    assert set(state.vms()) == {"tfrig-alice-1"} and list(fake.instances["us-central1-a"]) == ["tfrig-alice-1"]


def test_host_keys_are_read_from_guest_attributes_as_gcloud_reads_them(fake):
    """Known key types only, each value cut at its first whitespace and kept only if it is
    base64 (gcloud's ssh_utils.GetHostKeysFromGuestAttributes): a guest can't write lines of its
    own into tfrig's known-hosts file."""
    import base64

    from tfrig.gce.cloud import Cloud

    good = base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519" + bytes(36)).decode()
    fake.add_instance("us-central1-a", "tfrig-keys", labels={"created-by": "tfrig"})
    vm = fake.instances["us-central1-a"]["tfrig-keys"]
    vm["metadata"] = {"items": [{"key": "enable-guest-attributes", "value": "TRUE"}]}
    fake.vms["tfrig-keys"] = object()
    fake.vm_host_keys = lambda name: [
        ("ssh-ed25519", good + "\n@cert-authority * ssh-rsa AAAAB3Nza"),
        ("ssh-rsa", "not-base64!"),
        ("ssh-dss", good),
        ("ecdsa-sha2-nistp256", good + " trailing words"),
    ]
    cloud = Cloud(fake.project, fake.endpoint, "anonymous", retry_delay=0.01)
    assert cloud.host_keys("us-central1-a", "tfrig-keys") == [("ssh-ed25519", good), ("ecdsa-sha2-nistp256", good)]
    fake.vm_host_keys = lambda name: []
    assert cloud.host_keys("us-central1-a", "tfrig-keys") == []  # the API's 404 while nothing is published


def test_host_keys_on_the_serial_console_are_read_from_the_last_whole_block_and_must_parse(fake, tmp_path):
    """cloud-init's keys_to_console block (tools/write-ssh-key-fingerprints), perhaps behind a
    logger prefix; a key a console cut short, an unknown type and an earlier boot's block are left out."""
    from tfrig.gce.cloud import Cloud

    keys = {}
    for kind, name in (("ed25519", "ed"), ("ecdsa", "ec"), ("rsa", "rsa"), ("ed25519", "old")):
        subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(tmp_path / name)], check=True)
        keys[name] = (tmp_path / f"{name}.pub").read_text().split()[:2]
    ed, ec, rsa, old = keys["ed"], keys["ec"], keys["rsa"], keys["old"]
    fake.add_instance("us-central1-a", "tfrig-console", labels={"created-by": "tfrig"})
    fake.console["tfrig-console"] = (
        f"-----BEGIN SSH HOST KEY KEYS-----\n{' '.join(old)} root@old\n-----END SSH HOST KEY KEYS-----\n"
        "[   10.1] cloud-init[812]: Cloud-init v. 24.4.1 running 'modules:final'\n"
        "-----BEGIN SSH HOST KEY KEYS-----\n"
        f"<14>Dec  7 12:00:01 ec2: {' '.join(ed)} root@vm\n"
        f"{ec[0]} {ec[1][:60]}\n"  # cut by the console: not a key
        f"{rsa[0]} {rsa[1]} root@vm\n"
        f"ssh-dss {ed[1]} root@vm\n"
        "-----END SSH HOST KEY KEYS-----\n"
        "-----BEGIN SSH HOST KEY KEYS-----\nssh-ed25519 AAAA\n"  # a block the boot hasn't finished
    )
    cloud = Cloud(fake.project, fake.endpoint, "anonymous", retry_delay=0.01)
    found = cloud.serial_host_keys("us-central1-a", "tfrig-console")
    assert found.keys == [tuple(ed), tuple(rsa)] and found.cloud_init
    fake.console["tfrig-console"] = "google_guest_agent[601]: GCE Agent Started\n"
    assert cloud.serial_host_keys("us-central1-a", "tfrig-console").keys == []


# --- colleagues in one project (issue 25) ---------------------------------------------------------


def test_create_labels_the_vm_with_the_account_that_made_it(tfrig, fake, gcp_env, tmp_path):
    gcloud_config(tmp_path, "[core]\naccount = Alice.Smith@Example.com\n")
    assert create(tfrig, gcp_env).code == 0
    labels = fake.instances["us-central1-a"]["tfrig-alice"]["labels"]
    assert labels == {"created-by": "tfrig", "tfrig-owner": "alice_smith_example_com"}


def test_a_long_account_is_a_valid_label_that_keeps_accounts_apart():
    from tfrig.gce.plan import label_value

    first, second = (label_value(f"{'x' * 70}{n}@example.com") for n in (1, 2))
    assert first != second and all(
        len(v) == 63 and set(v) <= set("abcdefghijklmnopqrstuvwxyz0123456789_-") for v in (first, second)
    )


def test_down_acts_only_on_your_vms_and_lists_the_others(tfrig, fake, gcp_env, tmp_path):
    gcloud_config(tmp_path, "[core]\naccount = alice@example.com\n")
    assert create(tfrig, gcp_env).code == 0  # in the state, and labelled
    fake.add_instance(
        "us-central1-a", "tfrig-alice-laptop", {"created-by": "tfrig", "tfrig-owner": "alice_example_com"}
    )
    fake.add_instance("us-central1-a", "tfrig-bob", {"created-by": "tfrig", "tfrig-owner": "bob_example_com"})
    fake.add_instance("us-central1-a", "tfrig-old", {"created-by": "tfrig"})
    for vm in fake.instances["us-central1-a"].values():
        vm["status"] = "RUNNING"
    down = tfrig("gcp.down", "--delete", "--yes", env=gcp_env)
    assert down.code == 0, down.text
    assert (
        "not yours, left alone: tfrig-bob (bob_example_com), tfrig-old (owner not labelled); "
        "--all-users acts on them too" in down.out
    )
    assert set(fake.instances["us-central1-a"]) == {"tfrig-bob", "tfrig-old"}
    listed = json_of(tfrig("gcp.list", "--json", env=gcp_env).out)
    assert {(r["name"], r["owner"], r["yours"]) for r in listed} == {
        ("tfrig-bob", "bob_example_com", False),
        ("tfrig-old", None, False),
    }
    asked = tfrig("gcp.down", "--delete", "--all-users", env=gcp_env)
    assert asked.code == 1 and asked.err.strip().splitlines()[-1] == (
        "Delete these 2 VM(s), 2 of them other people's? Not asking without a terminal: pass --yes to go ahead."
    )
    assert set(fake.instances["us-central1-a"]) == {"tfrig-bob", "tfrig-old"}
    everyone = tfrig("gcp.down", "--delete", "--all-users", "--yes", env=gcp_env)
    assert everyone.code == 0, everyone.text
    assert fake.instances["us-central1-a"] == {}


def test_create_never_adopts_a_colleagues_vm_of_the_same_name(tfrig, fake, gcp_env, tmp_path):
    gcloud_config(tmp_path, "[core]\naccount = alice@example.com\n")
    fake.add_instance("europe-west4-a", "tfrig-alice", {"created-by": "tfrig", "tfrig-owner": "alice_other_org"})
    result = create(tfrig, gcp_env)
    assert result.code == 1
    assert result.err.strip() == (
        "A VM named tfrig-alice exists in europe-west4-a, created by tfrig for alice_other_org, not you; "
        "choose another --name."
    )
    assert fake.paths() == [LOOKUP]


# --- organization policies (issue 23) -------------------------------------------------------------

# Each constraint in force on the fake, what tfrig then says, and the create that works under it.
POLICIES = {
    "compute.vmExternalIpAccess": (
        True,
        "allows no external IP on VMs in project tfrig-test: pass --no-external-ip and set gcp.ssh_via: iap (SSH "
        "through IAP's tunnel) or internal",
        ["--no-external-ip"],
    ),
    "compute.requireShieldedVm": (
        True,
        "requires Shielded VMs with Secure Boot: pass --secure-boot (or set gcp.secure_boot: true)",
        ["--secure-boot"],
    ),
    "compute.trustedImageProjects": (
        ["projects/debian-cloud"],
        "does not allow boot images from project ubuntu-os-cloud: give --image from a project it allows (ask your "
        "admin which): --image debian-12 (in debian-cloud), an image in your own project "
        "(--image projects/tfrig-test/global/images/NAME)",
        ["--image", "debian-12"],
    ),
}


@pytest.mark.parametrize("constraint", sorted(POLICIES))
def test_an_organization_policy_is_named_with_what_to_do_and_the_create_it_allows_works(
    tfrig, fake, gcp_env, constraint
):
    value, advice, allowed = POLICIES[constraint]
    fake.policies[constraint] = value
    env = {**gcp_env, "INVOKE_GCP_SSH_VIA": "internal"}
    refused = create(tfrig, env)
    assert refused.code == 1, refused.text
    last = refused.err.strip().splitlines()[-1]
    assert last.startswith(f"the organization policy constraints/{constraint} {advice}"), last
    assert last.endswith("; tfrig tries no other zone for it.")
    assert len([p for p in fake.paths("POST") if p.endswith("/instances")]) == 1
    assert state.vms() == {} and not any(fake.instances.values())

    made = create(tfrig, env, *allowed)
    assert made.code == 0, made.text
    assert [vm for vms in fake.instances.values() for vm in vms] == ["tfrig-alice"]


def test_an_unknown_constraint_is_named_and_no_other_zone_is_tried(tfrig, fake, gcp_env):
    message = "Constraint constraints/compute.someNewConstraint violated for project 123456789."
    for zone in ZONES:
        fake.scenario.insert_errors[zone] = (412, "conditionNotMet", message)
    refused = create(tfrig, gcp_env)
    assert refused.code == 1
    assert refused.err.strip().splitlines()[-1] == (
        "the organization policy constraints/compute.someNewConstraint refuses this create: ask your organization's "
        "admin what it allows; tfrig tries no other zone for it."
    )
    assert len([p for p in fake.paths("POST") if p.endswith("/instances")]) == 1 and state.vms() == {}


# --- Shielded VMs and service accounts (issue 23, parts 4 and 5) ------------------------------------


def test_secure_boot_and_the_default_service_account_are_in_the_insert(tfrig, fake, gcp_env):
    assert create(tfrig, gcp_env, "--secure-boot").code == 0
    (body,) = [vm for vms in fake.instances.values() for vm in vms.values()]
    assert body["shieldedInstanceConfig"] == {
        "enableSecureBoot": True,
        "enableVtpm": True,
        "enableIntegrityMonitoring": True,
    }
    # gcloud's default: the project's default compute service account, named "default" in the API.
    assert body["serviceAccounts"] == [
        {"email": "default", "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}
    ]


def test_a_named_service_account_with_scopes_and_none(tfrig, fake, gcp_env):
    email = "trainer@tfrig-test.iam.gserviceaccount.com"
    assert create(tfrig, gcp_env, "--service-account", email, "--scopes", "storage-ro,logging-write").code == 0
    (body,) = [vm for vms in fake.instances.values() for vm in vms.values()]
    assert body["serviceAccounts"] == [
        {
            "email": email,
            "scopes": [
                "https://www.googleapis.com/auth/devstorage.read_only",
                "https://www.googleapis.com/auth/logging.write",
            ],
        }
    ]
    assert tfrig("gcp.delete", "--name", "tfrig-alice", "--yes", env=gcp_env).code == 0
    env = {**gcp_env, "INVOKE_GCP_SERVICE_ACCOUNT": "none"}
    assert create(tfrig, env).code == 0
    (body,) = [vm for vms in fake.instances.values() for vm in vms.values()]
    assert "serviceAccounts" not in body


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--service-account", "not an email"], "--service-account 'not an email': give a service account's email"),
        (["--scopes", "everything"], "--scopes: 'everything' is not a scope: give https://www.googleapis.com/auth/"),
        (["--service-account", "none", "--scopes", "cloud-platform"], "--scopes: a VM with --service-account none"),
    ],
)
def test_a_bad_service_account_or_scope_is_refused_before_any_call(tfrig, fake, gcp_env, args, said):
    refused = create(tfrig, gcp_env, *args)
    assert refused.code == 1 and refused.err.strip().splitlines()[-1].startswith(said), refused.err
    assert fake.calls == []


def test_a_service_account_the_user_may_not_attach_is_one_line_and_no_other_zone(tfrig, fake, gcp_env):
    fake.act_as = {"trainer@tfrig-test.iam.gserviceaccount.com"}
    refused = create(tfrig, gcp_env)
    assert refused.code == 1
    assert refused.err.strip().splitlines()[-1] == (
        "your account may not attach the project's default compute service account to a VM (it needs "
        "iam.serviceAccounts.actAs on it: the role roles/iam.serviceAccountUser): ask for that role, or pass "
        "--service-account none (nothing on the VM can then call Google APIs as the VM)."
    )
    assert len([p for p in fake.paths("POST") if p.endswith("/instances")]) == 1 and state.vms() == {}
    assert create(tfrig, gcp_env, "--service-account", "trainer@tfrig-test.iam.gserviceaccount.com").code == 0


# --- OS Login (issue 23, part 1) ------------------------------------------------------------------


def test_auto_takes_os_login_where_the_project_turns_it_on_and_never_turns_it_off(tfrig, fake, gcp_env, tmp_path):
    gcloud_config(tmp_path, "[core]\naccount = Alice.Smith@example.com\n")
    fake.project_metadata["enable-oslogin"] = "TRUE"
    made = create(tfrig, gcp_env)
    assert made.code == 0, made.text
    assert (
        "OS Login: your SSH key is in Alice.Smith@example.com's profile for 24 h; logging in as alice_smith_example_com"
        in made.out
    )
    (body,) = [vm for vms in fake.instances.values() for vm in vms.values()]
    metadata = {item["key"]: item["value"] for item in body["metadata"]["items"]}
    assert metadata["enable-oslogin"] == "TRUE" and "ssh-keys" not in metadata
    public = Path(gcp_env["INVOKE_TFRIG_SSH_KEY"] + ".pub").read_text().strip()
    assert list(fake.oslogin_keys["alice_smith_example_com"]) == [public]
    record = state.vms()["tfrig-alice"]
    assert record["user"] == "alice_smith_example_com" and record["ssh_mode"] == "oslogin"
    assert record["oslogin_account"] == "Alice.Smith@example.com"
    assert 23 * 3600 < record["oslogin_expires"] - time.time() <= 24 * 3600


def test_metadata_mode_turns_os_login_off_on_its_vm_and_a_policy_that_forbids_it_says_what_to_set(
    tfrig, fake, gcp_env, tmp_path
):
    gcloud_config(tmp_path, "[core]\naccount = alice@example.com\n")
    fake.project_metadata["enable-oslogin"] = "TRUE"
    fake.policies["compute.requireOsLogin"] = True
    env = {**gcp_env, "INVOKE_GCP_SSH_MODE": "metadata"}
    refused = create(tfrig, env)
    assert refused.code == 1
    assert refused.err.strip().splitlines()[-1] == (
        "the organization policy constraints/compute.requireOsLogin requires OS Login, and gcp.ssh_mode: metadata "
        "turns it off on tfrig's VMs: set gcp.ssh_mode to auto or oslogin (INVOKE_GCP_SSH_MODE=oslogin); tfrig "
        "tries no other zone for it."
    )
    assert state.vms() == {} and fake.oslogin_keys == {}


def test_auto_under_a_policy_requiring_os_login_creates_through_it_at_once(tfrig, fake, gcp_env, tmp_path):
    gcloud_config(tmp_path, "[core]\naccount = alice@example.com\n")
    fake.policies["compute.requireOsLogin"] = True
    fake.project_metadata["enable-oslogin"] = "TRUE"  # as the policy sets it on the projects it makes
    made = create(tfrig, gcp_env)
    assert made.code == 0, made.text
    assert len([p for p in fake.paths("POST") if p.endswith("/instances")]) == 1
    assert state.vms()["tfrig-alice"]["ssh_mode"] == "oslogin"


def test_os_login_with_two_factor_is_refused_before_anything_is_made(tfrig, fake, gcp_env, tmp_path):
    gcloud_config(tmp_path, "[core]\naccount = alice@example.com\n")
    fake.project_metadata.update({"enable-oslogin": "TRUE", "enable-oslogin-2fa": "TRUE"})
    refused = create(tfrig, gcp_env)
    assert refused.code == 1
    assert (
        refused.err.strip()
        .splitlines()[-1]
        .startswith(
            "OS Login in project tfrig-test asks for two-factor login (enable-oslogin-2fa), which a script can't answer"
        )
    )
    assert fake.paths("POST") == [] and fake.oslogin_keys == {}


def test_os_login_without_an_account_to_log_in_as_is_one_line(tfrig, fake, gcp_env):
    refused = create(tfrig, {**gcp_env, "INVOKE_GCP_SSH_MODE": "oslogin"})
    assert refused.code == 1
    assert (
        refused.err.strip()
        .splitlines()[-1]
        .startswith(
            "OS Login logs in as your Google account, and tfrig can't tell which: run `gcloud config set account EMAIL`"
        )
    )
    assert fake.paths("POST") == []


def test_dry_os_login_imports_nothing(tfrig, fake, gcp_env, tmp_path):
    gcloud_config(tmp_path, "[core]\naccount = alice@example.com\n")
    shown = tfrig("--dry", "gcp.create", "--name", "tfrig-alice", env={**gcp_env, "INVOKE_GCP_SSH_MODE": "oslogin"})
    assert shown.code == 0, shown.text
    assert "would import your SSH key into the OS Login profile of alice@example.com for 24 h" in shown.text
    assert '"value": "TRUE"' in shown.out and "ssh-keys" not in shown.out
    assert fake.oslogin_keys == {} and fake.paths("POST") == []


# --- gcp.check (issue 23, part 8) ------------------------------------------------------------------


def test_check_in_a_personal_project_passes_every_check(tfrig, fake, gcp_env):
    result = tfrig("gcp.check", "--json", env=gcp_env)
    assert result.code == 0, result.text
    checks = json_of(result.out)
    assert [c["name"] for c in checks] == [
        "credentials",
        "compute_api",
        "permissions",
        "policies",
        "login",
        "firewall",
        "prices",
    ]
    assert all(c["ok"] for c in checks) and all({"name", "ok", "detail", "fix"} <= set(c) for c in checks)
    # Nothing changed: the one POST is testIamPermissions, a read.
    assert fake.paths("POST") == ["POST /v3/projects/tfrig-test:testIamPermissions"] and fake.oslogin_keys == {}


def test_check_names_each_policy_in_force_against_the_settings_and_exits_non_zero(tfrig, fake, gcp_env):
    fake.project_metadata["enable-oslogin"] = "TRUE"
    fake.policies.update(
        {
            "compute.requireOsLogin": True,
            "compute.vmExternalIpAccess": True,
            "compute.disableGuestAttributesAccess": True,
            "compute.requireShieldedVm": True,
            "compute.trustedImageProjects": ["projects/debian-cloud"],
        }
    )
    fake.granted = {"compute.instances.create", "compute.instances.list"}
    env = {**gcp_env, "INVOKE_GCP_SSH_MODE": "metadata"}
    result = tfrig("gcp.check", env=env)
    assert result.code == 1
    lines = result.out.splitlines()
    assert "FAIL  permissions: missing compute.instances.setMetadata, compute.instances.delete" in "\n".join(lines)
    assert any(
        line.startswith("FAIL  policy requireOsLogin: OS Login is required: gcp.ssh_mode metadata") for line in lines
    )
    assert any(line.startswith("FAIL  policy vmExternalIpAccess: no external IPs") for line in lines)
    assert any(line.startswith("ok    policy disableGuestAttributesAccess: guest attributes are off") for line in lines)
    assert any(
        line.startswith("FAIL  policy requireShieldedVm") and "fix: set gcp.secure_boot: true" in line for line in lines
    )
    assert any(
        line.startswith("FAIL  policy trustedImageProjects: boot images only from projects/debian-cloud")
        for line in lines
    )
    assert "FAIL  login: OS Login needs your account's email; fix: `gcloud config set account EMAIL`" in lines
    assert result.err.strip().splitlines()[-1] == (
        "6 checks would stop gcp.create: permissions, policy requireOsLogin, policy vmExternalIpAccess, "
        "policy requireShieldedVm, policy trustedImageProjects, login."
    )

    # Settings that meet them (OS Login, no external IP through IAP, Secure Boot, a Debian image):
    fake.granted = None
    fake.firewalls.append(dict(IAP_SSH_RULE))
    meeting = {
        **gcp_env,
        "INVOKE_GCP_EXTERNAL_IP": "false",
        "INVOKE_GCP_SSH_VIA": "iap",
        "INVOKE_GCP_SECURE_BOOT": "true",
        "INVOKE_GCP_IMAGE": "debian-12",
        "PATH": f"{Path(__file__).parent / 'testbed' / 'bin'}:{os.environ['PATH']}",
    }
    gcloud_config(Path(gcp_env["HOME"]), "[core]\naccount = alice@example.com\n")
    ok = tfrig("gcp.check", "--json", env=meeting)
    checks = {c["name"]: c for c in json_of(ok.out)}
    assert ok.code == 1  # Debian prints no host keys for the serial console: the one left
    assert [n for n, c in checks.items() if not c["ok"]] == ["policy disableGuestAttributesAccess"]
    assert checks["login"]["detail"].startswith("OS Login as alice@example.com: no POSIX account yet")
    assert checks["firewall"]["detail"] == "SSH (tcp:22) from IAP's range 35.235.240.0/20 on default: open"


def test_check_says_unreadable_policies_instead_of_guessing(tfrig, fake, gcp_env):
    fake.orgpolicy_forbidden = True
    result = tfrig("gcp.check", "--json", env=gcp_env)
    assert result.code == 0, result.text
    (policies,) = [c for c in json_of(result.out) if c["name"] == "policies"]
    assert not policies["ok"] and not policies["blocking"]
    assert policies["detail"].startswith(
        "the organization policies could not be read (Permission 'orgpolicy.policy.get'"
    )


def test_check_without_the_compute_api_stops_there_with_the_fix(tfrig, fake, gcp_env):
    fake.scenario.every_call = (
        403,
        "accessNotConfigured",
        "Compute Engine API has not been used in project tfrig-test before or it is disabled.",
        "SERVICE_DISABLED",
    )
    result = tfrig("gcp.check", "--json", env=gcp_env)
    assert result.code == 1
    checks = json_of(result.out)
    assert [c["name"] for c in checks] == ["credentials", "compute_api"]
    assert checks[1]["fix"].startswith("The Compute Engine API is not enabled in project tfrig-test")


# --- networks without external IPs (issue 23, part 2) ---------------------------------------------


def test_a_vm_without_an_external_ip_on_a_named_network_and_subnet_is_reached_inside(tfrig, fake, gcp_env):
    fake.networks["ml-vpc"] = {"us-central1": "gpu-subnet", "europe-west4": "gpu-subnet"}
    env = {**gcp_env, "INVOKE_GCP_SSH_VIA": "internal"}
    made = create(tfrig, env, "--network", "ml-vpc", "--subnet", "gpu-subnet", "--no-external-ip", "--tags", "ssh,gpu")
    assert made.code == 0, made.text
    (zone,) = [z for z, vms in fake.instances.items() if vms]
    body = fake.instances[zone]["tfrig-alice"]
    (interface,) = body["networkInterfaces"]
    assert interface["network"] == "global/networks/ml-vpc"
    assert interface["subnetwork"] == f"regions/{zone.rsplit('-', 1)[0]}/subnetworks/gpu-subnet"
    assert "accessConfigs" not in interface and body["tags"] == {"items": ["ssh", "gpu"]}
    record = state.vms()["tfrig-alice"]
    assert record["ssh_via"] == "internal" and record["address"] is None
    shown = tfrig("--dry", "gcp.ssh", env=env)
    assert shown.out.strip().endswith(f"alice@{record['internal_address']}"), shown.text


def test_no_external_ip_without_a_way_in_is_refused_before_any_call(tfrig, fake, gcp_env):
    refused = create(tfrig, gcp_env, "--no-external-ip")
    assert refused.code == 1
    assert refused.err.strip().startswith("--no-external-ip: tfrig would have no address to reach the VM at")
    assert "set gcp.ssh_via: iap" in refused.err and "or internal when" in refused.err and fake.calls == []


def test_a_project_without_the_default_network_names_network_not_a_firewall_rule(tfrig, fake, gcp_env):
    del fake.networks["default"]
    fake.firewalls = []
    refused = tfrig("gcp.create", "--yes", "--name", "tfrig-alice", env=gcp_env)
    assert refused.code == 1
    assert refused.err.strip().splitlines()[-1] == (
        "Project tfrig-test has no network named default (organizations often skip creating it): pass --network "
        "NAME (and --subnet) of one it has; `gcloud compute networks list --project tfrig-test` shows them."
    )
    assert fake.paths("POST") == []


def test_a_network_missing_at_the_insert_is_one_line_and_no_other_zone(tfrig, fake, gcp_env):
    refused = create(tfrig, gcp_env, "--network", "no-such-vpc")
    assert refused.code == 1
    assert refused.err.strip().splitlines()[-1].startswith("Project tfrig-test has no network named no-such-vpc:")
    assert len(fake.paths("POST")) == 1 and state.vms() == {}


def test_a_subnet_a_region_lacks_blocks_that_region_only(tfrig, fake, gcp_env):
    fake.networks["ml-vpc"] = {"europe-west4": "gpu-subnet"}
    made = create(tfrig, gcp_env, "--network", "ml-vpc", "--subnet", "gpu-subnet")
    assert made.code == 0, made.text
    assert next(z for z, vms in fake.instances.items() if vms).startswith("europe-west4-")


def test_a_shared_vpc_subnet_pins_its_region_and_carries_the_network(tfrig, fake, gcp_env):
    shared = "projects/host-project/regions/europe-west4/subnetworks/shared-gpu"
    fake.shared_subnets.add(shared)
    planned = tfrig("--dry", "gcp.create", "--yes", "--subnet", shared, env=gcp_env)
    assert "the network's firewall is in project host-project: not checked for SSH" in planned.out, planned.text
    made = create(tfrig, gcp_env, "--subnet", shared)
    assert made.code == 0, made.text
    (zone,) = [z for z, vms in fake.instances.items() if vms]
    assert zone.startswith("europe-west4-")
    assert fake.instances[zone]["tfrig-alice"]["networkInterfaces"][0]["subnetwork"] == shared


def test_a_firewall_that_opens_ssh_to_a_tag_admits_a_vm_with_that_tag(tfrig, fake, gcp_env):
    fake.firewalls = [
        {
            "name": "ssh-to-tagged",
            "network": "global/networks/default",
            "direction": "INGRESS",
            "sourceRanges": ["0.0.0.0/0"],
            "targetTags": ["ssh"],
            "allowed": [{"IPProtocol": "tcp", "ports": ["22"]}],
        }
    ]
    untagged = tfrig("gcp.create", "--yes", "--name", "tfrig-alice", env=gcp_env)
    assert untagged.code == 1 and "pass --tags to match one" in untagged.err
    tagged = tfrig("gcp.create", "--yes", "--name", "tfrig-alice", "--tags", "ssh", "--no-ssh-wait", env=gcp_env)
    assert tagged.code == 0, tagged.text


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--network", "Bad Net"], "--network 'Bad Net': give a network's name"),
        (
            ["--subnet", "projects/x/regions/nowhere/sub"],
            "--subnet 'projects/x/regions/nowhere/sub': give a subnet's name",
        ),
        (["--tags", "ok,Not-OK"], "--tags: 'Not-OK' is not a network tag"),
        (
            ["--network", "vpc", "--subnet", "projects/h/regions/europe-west4/subnetworks/s"],
            "--subnet projects/...: the network is the subnet's",
        ),
        (
            ["--zone", "us-central1-a", "--subnet", "projects/h/regions/europe-west4/subnetworks/s"],
            "--zone us-central1-a is not in europe-west4",
        ),
    ],
)
def test_bad_network_flags_are_refused_before_any_call(tfrig, fake, gcp_env, args, line):
    refused = create(tfrig, gcp_env, *args)
    assert refused.code == 1 and refused.err.strip().startswith(line), refused.err
    assert fake.calls == []


def nat_router(network: str, mode: str, subnets: list[str] | None = None) -> dict[str, Any]:
    nat: dict[str, Any] = {"name": "nat", "sourceSubnetworkIpRangesToNat": mode}
    if subnets:
        nat["subnetworks"] = [{"name": f"regions/europe-west4/subnetworks/{s}"} for s in subnets]
    return {"name": "router", "network": f"global/networks/{network}", "nats": [nat]}


@pytest.mark.parametrize(
    ("routers", "missing"),
    [
        ({}, "us-central1, europe-west4"),
        ({"europe-west4": [nat_router("ml-vpc", "ALL_SUBNETWORKS_ALL_IP_RANGES")]}, "us-central1"),
        ({"europe-west4": [nat_router("ml-vpc", "LIST_OF_SUBNETWORKS", ["gpu-subnet"])]}, "us-central1"),
        ({"europe-west4": [nat_router("ml-vpc", "LIST_OF_SUBNETWORKS", ["other"])]}, "us-central1, europe-west4"),
        ({"europe-west4": [nat_router("default", "ALL_SUBNETWORKS_ALL_IP_RANGES")]}, "us-central1, europe-west4"),
    ],
)
def test_without_an_external_ip_a_region_without_cloud_nat_is_said_with_the_mirrors(
    tfrig, fake, gcp_env, routers, missing
):
    fake.networks["ml-vpc"] = {"us-central1": "gpu-subnet", "europe-west4": "gpu-subnet"}
    fake.routers = {"us-central1": [], **routers}
    env = {**gcp_env, "INVOKE_GCP_SSH_VIA": "internal"}
    planned = tfrig("--dry", "gcp.create", "--network", "ml-vpc", "--subnet", "gpu-subnet", "--no-external-ip", env=env)
    assert planned.code == 0, planned.text
    note = next(line for line in planned.out.splitlines() if line.startswith("no Cloud NAT"))
    assert note.startswith(f"no Cloud NAT for network ml-vpc in {missing}: ")
    assert "driver.download_base, tf.find_links and docker.mirror" in note


def test_with_cloud_nat_everywhere_nothing_is_said(tfrig, fake, gcp_env):
    fake.networks["ml-vpc"] = {"us-central1": "gpu-subnet", "europe-west4": "gpu-subnet"}
    fake.routers = {r: [nat_router("ml-vpc", "ALL_SUBNETWORKS_ALL_IP_RANGES")] for r in ("us-central1", "europe-west4")}
    env = {**gcp_env, "INVOKE_GCP_SSH_VIA": "internal"}
    planned = tfrig("--dry", "gcp.create", "--network", "ml-vpc", "--subnet", "gpu-subnet", "--no-external-ip", env=env)
    assert planned.code == 0 and "Cloud NAT" not in planned.out, planned.text
    read = len([p for p in fake.paths() if p.endswith("/routers")])
    routed = tfrig("--dry", "gcp.create", env=gcp_env)  # with an external IP: no router is read
    assert routed.code == 0 and len([p for p in fake.paths() if p.endswith("/routers")]) == read


# --- zones that have the machine type (issue 24, part 3) -------------------------------------------


def test_a_machine_type_absent_from_some_of_its_gpus_zones_is_never_inserted_there(tfrig, fake, gcp_env):
    fake.offer("nvidia-l4", ZONES)
    fake.machine_zones["g2-standard-4"] = {"europe-west4-b"}
    made = create(tfrig, gcp_env, "--gpu", "nvidia-l4")
    assert made.code == 0, made.text
    inserts = [p for p in fake.paths("POST") if p.endswith("/instances")]
    assert inserts == ["POST /zones/europe-west4-b/instances"]
    assert "GET /aggregated/machineTypes" in fake.paths()


def test_machine_type_missing_in_a_zone_moves_on_to_the_next_zone(tfrig, fake, gcp_env):
    fake.offer("nvidia-l4", ZONES)
    zone = "us-central1-a"  # first for this request (cheapest)
    fake.scenario.insert_errors[zone] = (
        400,
        "invalid",
        f"Invalid value for field 'resource.machineType': 'zones/{zone}/machineTypes/g2-standard-4'. Machine type "
        f"with name 'g2-standard-4' does not exist in zone '{zone}'.",
    )
    made = create(tfrig, gcp_env, "--gpu", "nvidia-l4")
    assert made.code == 0, made.text
    inserts = [p for p in fake.paths("POST") if p.endswith("/instances")]
    assert inserts[0] == f"POST /zones/{zone}/instances" and len(inserts) == 2 and zone not in inserts[1]
