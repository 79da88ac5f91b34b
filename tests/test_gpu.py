"""gpu.check: every real nvidia-smi capture, the failure diagnoses, and a live GPU-less host over SSH."""

from __future__ import annotations

import re

import pytest

from tests.conftest import FIXTURES, json_of
from tfrig.knowledge import nvsmi

H200 = FIXTURES / "h200-driver-580.159.04"
BUSY_USED_MIB = 1231
H200_GPU = {
    "index": 0,
    "name": "NVIDIA H200",
    "uuid": "GPU-06e541f8-b2e5-b70d-4442-3076317b2c35",
    "memory_mib": 143771,
    "memory_used_mib": 0,
    "compute_capability": "9.0",
    "bus_id": "00000000:00:06.0",
    "tf_supported": True,
}


@pytest.mark.parametrize(
    ("capture", "driver", "cuda", "gpu"),
    [
        (H200 / "nvidia-smi.txt", "580.159.04", "13.0", {**H200_GPU, "uuid": None}),
        (H200 / "query-gpu.csv", "580.159.04", None, H200_GPU),
        (H200 / "query-gpu-noheader-nounits.csv", "580.159.04", None, {**H200_GPU, "bus_id": None}),
        (H200 / "nvidia-smi-q.xml", "580.159.04", "13.0", H200_GPU),
        (H200 / "nvidia-smi-q.txt", "580.159.04", "13.0", H200_GPU),
        (
            H200 / "nvidia-smi-L.txt",
            None,
            None,
            {**H200_GPU, "memory_mib": None, "memory_used_mib": None, "bus_id": None},
        ),
        (
            FIXTURES / "h200-driver-580.159.04-busy" / "nvidia-smi-with-process.txt",
            "580.159.04",
            "13.0",
            {**H200_GPU, "uuid": None, "memory_used_mib": BUSY_USED_MIB},
        ),
    ],
    ids=["table", "csv-header-units", "csv-bare", "xml", "q-text", "list", "busy-table"],
)
def test_h200_captures(capture, driver, cuda, gpu):
    report = nvsmi.parse_capture(capture.read_text())
    assert (report.driver, report.cuda, report.diagnosis) == (driver, cuda, None)
    assert report.as_dict()["gpus"] == [gpu]


@pytest.mark.parametrize(
    ("folder", "driver", "cuda", "name", "memory", "capability", "supported"),
    [
        ("k80-driver-410.104", "410.104", "10.0", "Tesla K80", 11441, "3.7", False),
        ("p4-driver-418.67", "418.67", "10.1", "Tesla P4", 7611, "6.1", True),
    ],
    ids=["k80", "p4"],
)
def test_old_tables(folder, driver, cuda, name, memory, capability, supported):
    report = nvsmi.parse_capture((FIXTURES / folder / "nvidia-smi.txt").read_text())
    [gpu] = report.gpus
    assert (report.driver, report.cuda, gpu.name, gpu.memory_mib) == (driver, cuda, name, memory)
    assert (gpu.compute_capability, gpu.tf_supported) == (capability, supported)
    if not supported:
        assert report.diagnosis == (
            "Tesla K80 (compute capability 3.7): current TensorFlow wheels need compute capability 6.0 or newer"
        )


def test_csv_columns_in_any_order_with_a_header():
    text = "memory.total [MiB], compute_cap, name, index\n81559 MiB, 8.0, NVIDIA A100-SXM4-80GB, 3\n"
    [gpu] = nvsmi.parse_capture(text).gpus
    assert (gpu.index, gpu.name, gpu.memory_mib, gpu.compute_capability) == (3, "NVIDIA A100-SXM4-80GB", 81559, "8.0")


def test_headerless_csv_in_another_order_is_refused_with_the_order_to_use():
    busy = (FIXTURES / "h200-driver-580.159.04-busy" / "query-busy-noheader-nounits.csv").read_text()
    with pytest.raises(nvsmi.CaptureError, match=re.escape(",".join(nvsmi.QUERY_FIELDS))):
        nvsmi.parse_capture(busy)


def test_bad_field_capture_points_to_the_table():
    with pytest.raises(nvsmi.CaptureError, match="refusing a query field"):
        nvsmi.parse_capture((H200 / "query-bad-field.txt").read_text())


@pytest.mark.parametrize(
    ("output", "code", "diagnosis", "fix"),
    [
        ("sh: 1: nvidia-smi: not found", 127, "nvidia-smi is not installed", "inv driver.install"),
        (
            "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the "
            "latest NVIDIA driver is installed and running.",
            9,
            "installed but its kernel module is not loaded",
            "rebuild the module for the running kernel",
        ),
        (
            "Failed to initialize NVML: Driver/library version mismatch",
            18,
            "old kernel module is still loaded",
            "reboot",
        ),
        ("No devices were found", 6, "the driver is loaded but finds no GPU", "check that a GPU is attached"),
        ("Unable to determine the device handle for GPU0000:00:04.0: GPU is lost.", 15, "fallen off the bus", "reboot"),
        ("", 9, "kernel module is not loaded", "reboot"),
    ],
    ids=["not-installed", "not-loaded", "mismatch", "no-devices", "off-the-bus", "exit-code-only"],
)
def test_failures_become_a_diagnosis_and_a_fix(output, code, diagnosis, fix):
    report = nvsmi.diagnose_failure(output, code)
    assert diagnosis in str(report.diagnosis)
    assert fix in str(report.fix)


def test_pasted_error_is_diagnosed():
    report = nvsmi.parse_capture("Failed to initialize NVML: Driver/library version mismatch\n")
    assert report.gpus == [] and "reboot" in str(report.fix)


def test_pci_listing_finds_nvidia_controllers_only():
    listing = (
        "0000:00:04.0 0x10de 0x1eb8 0x030200\n0000:00:05.0 0x10de 0x10f0 0x040300\n0000:00:01.0 0x8086 0x7000 0x060100"
    )
    assert nvsmi.nvidia_on_pci(listing) == ["0000:00:04.0 (device 0x1eb8)"]


def test_check_input_json_shape(tfrig):
    result = tfrig("gpu.check", "--input", str(H200 / "nvidia-smi-q.xml"), "--json")
    assert result.code == 0, result.text
    assert json_of(result.out) == {
        "driver": "580.159.04",
        "cuda": "13.0",
        "gpus": [H200_GPU],
        "diagnosis": None,
        "fix": None,
    }


def test_check_input_human_and_exit_code_for_a_k80(tfrig):
    result = tfrig("gpu.check", "--input", str(FIXTURES / "k80-driver-410.104" / "nvidia-smi.txt"))
    assert result.code == 1
    assert result.out.splitlines() == [
        "GPU 0: Tesla K80, 11441 MiB, compute capability 3.7; TensorFlow can't use it",
        "driver 410.104, supports CUDA up to 10.0",
        "diagnosis: Tesla K80 (compute capability 3.7): current TensorFlow wheels need compute capability 6.0 or newer",
        "fix: use a Pascal or newer GPU (e.g. nvidia-tesla-t4, nvidia-l4); the K80 is retired on Compute Engine",
    ]


@pytest.mark.slow
def test_live_check_over_ssh_on_a_host_without_a_gpu(tfrig, sshd_factory, ssh_env):
    host = sshd_factory()
    result = tfrig("gpu.check", "-H", host.spec(), "--json", env=ssh_env)
    assert result.code == 1
    assert json_of(result.out) == {
        "driver": None,
        "cuda": None,
        "gpus": [],
        "diagnosis": "no NVIDIA GPU on the PCI bus: this host has no GPU attached",
        "fix": "use a host with a GPU (on Compute Engine: inv gcp.create --gpu TYPE)",
    }


@pytest.mark.slow
def test_several_hosts_run_in_parallel_and_one_dead_host_hides_nothing(tfrig, sshd_factory, ssh_env):
    alive, dead = sshd_factory(), sshd_factory()
    dead.container.stop(timeout=1)
    result = tfrig("driver.status", "-H", f"{alive.spec()},{dead.spec()}", "--json", env=ssh_env)
    assert result.code == 1
    results = {r["host"]: r for r in json_of(result.out)["results"]}
    assert results[alive.spec()]["ok"] is True
    assert results[alive.spec()]["loaded"] is None
    assert results[dead.spec()]["ok"] is False
    assert "can't connect" in results[dead.spec()]["error"]
    assert f"driver.status failed on 1 of 2 hosts: {dead.spec()}" in result.err


def test_check_help_names_the_field_order_tfrig_queries():
    from tfrig.tasks.gpu import CHECK_HELP

    assert ",".join(nvsmi.QUERY_FIELDS) in CHECK_HELP["input"]


def test_a_driver_too_old_for_the_newest_tensorflow_is_named_with_what_it_runs():
    from tfrig.tasks import gpu

    assert gpu.tensorflow_driver_note("535.261.03") == (
        "TensorFlow 2.21.0 on the GPU needs driver 555.42.02 or newer (CUDA 12.5); "
        "this driver runs TensorFlow up to 2.17.0: inv driver.install"
    )
    assert gpu.tensorflow_driver_note("580.159.04") is None


@pytest.mark.slow
def test_a_hung_nvidia_smi_is_a_finding_not_a_wait(tfrig, sshd_factory, ssh_env):
    """An nvidia-smi that never answers (a hung GPU leaves it waiting in the kernel, where no
    signal reaches it; here it ignores them): gpu.check ends, saying the driver does not answer."""
    host = sshd_factory(gpu="t4")
    host.exec(
        "printf '#!/bin/sh\\ntrap \"\" TERM INT HUP\\nwhile :; do sleep 1; done\\n' > /usr/bin/nvidia-smi "
        "&& chmod 755 /usr/bin/nvidia-smi"
    )
    result = tfrig("gpu.check", "-H", host.spec(), "--json", env=ssh_env)
    assert result.code == 1, result.text
    report = json_of(result.out)
    assert report["diagnosis"] == (
        f"the GPU driver does not answer: nvidia-smi gave no answer in {nvsmi.SMI_SECONDS} s (a hung GPU or driver)"
    )
    assert host.exec("pgrep -f '^/bin/sh /usr/bin/nvidia-smi'")[0] == 1  # gone: kill -9 reaches what it can
