"""Time from `gcp.create` to `tf.verify`, step by step, on the test bed: a stock image, an image
that has the driver (baked with the driver only: the stand-in for Ubuntu's accelerator image and
the Deep Learning VM), and an image baked with the driver and TensorFlow.

Run (the Docker engine and the tests' images, the wheelhouse, as for the tests):
    python -m pytest -p tests.conftest bench/time_to_gpu.py -s -q

It runs the test bed's parts for real: the fake Compute API with the real Google client, VMs that
are stock-image sshd containers with a T4 on their PCI bus booting with unattended-upgrades holding
the dpkg lock (6 s), apt and Debian's archive for the build tools, the NVIDIA site stand-in for the
driver (its `.run` builds no module), uv from the wheelhouse for TensorFlow's CPU build (the
wheelhouse has no CUDA wheels). Each task of the chain is timed alone; the images are made by
gcp.bake first (not counted). tf.verify exits 1 on the stand-in (TensorFlow sees no GPU there): its
time is the computation's all the same. Then the stock chain as one command, where tf.install's
wheels are fetched while the driver installs (tf.wheel_prefetch), against its steps one by one.
What the stand-in can't show (a real create, a DKMS build, a real first boot's lock, PyPI's
bandwidth) is in bench/README.md, cited, not measured.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.test_e2e import cloud, env, vm_mounts, vm_options  # noqa: F401  (the e2e test bed's fixtures)

CHAIN = (
    ("gcp.create", ["gcp.create", "--yes"]),
    ("gpu.setup", ["gpu.setup"]),
    ("tf.install", ["tf.install", "--cpu", "--no-index"]),
    ("tf.verify", ["tf.verify"]),
)


def timed_chain(tfrig: Any, settings: dict[str, str], name: str, image: list[str]) -> dict[str, float]:
    """Each task of the chain alone, on the VM `name`, its seconds."""
    times = {}
    for task, argv in CHAIN:
        args = [*argv, "--name", name, *image] if task == "gcp.create" else [*argv, "-H", name]
        started = time.perf_counter()
        done = tfrig(*args, env=settings, timeout=900)
        times[task] = time.perf_counter() - started
        if done.code != 0 and task != "tf.verify":  # tf.verify: TensorFlow sees no GPU on the stand-in
            pytest.fail(f"{task} on {name}: {done.text}")
    return times


def test_time_to_a_verified_gpu(tfrig, cloud, env, vm_options, nvidia_site):  # noqa: F811
    nvidia_site.add("580.159.04")
    vm_options.update(
        gpu="t4",
        restart_policy={"Name": "always"},
        volumes_extra={str(nvidia_site.headers_source): "/etc/apt/sources.list.d/tfrig-kernel-headers.list"},
    )
    settings = {**env, "INVOKE_DRIVER_DOWNLOAD_BASE": nvidia_site.base_url}
    paths = {"stock image": timed_chain(tfrig, settings, "ttg-stock", [])}

    # The same chain as one command: tf.install's wheels are fetched while the driver installs.
    started = time.perf_counter()
    chained = tfrig(
        "gcp.create", "--yes", "--name", "ttg-chain",
        *(word for task, argv in CHAIN[1:] for word in argv), env=settings, timeout=1800,
    )  # fmt: skip
    chain_seconds = time.perf_counter() - started
    assert "TensorFlow's wheels fetched alongside the driver" in chained.out, chained.text
    assert tfrig("gcp.delete", "--name", "ttg-chain", "--yes", env=settings).code == 0

    # The images: one with the driver only, one with the driver and TensorFlow (gcp.bake, not timed).
    made = tfrig("gcp.create", "--yes", "--name", "ttg-drv", "gpu.setup", env=settings, timeout=900)
    assert made.code == 0, made.text
    for vm, family in (("ttg-drv", "ttg-driver"), ("ttg-stock", "ttg-baked")):
        baked = tfrig("gcp.bake", "--name", vm, "--family", family, "--delete", "--yes", env=settings, timeout=900)
        assert baked.code == 0, baked.text
    paths["driver image"] = timed_chain(tfrig, settings, "ttg-driver", ["--image-family", "ttg-driver"])
    paths["baked image"] = timed_chain(tfrig, settings, "ttg-baked", ["--image-family", "ttg-baked"])

    print("\n\n| path | " + " | ".join(task for task, _ in CHAIN) + " | total |")
    print("|---|" + "---|" * (len(CHAIN) + 1))
    for path, times in paths.items():
        cells = " | ".join(f"{times[task]:.1f} s" for task, _ in CHAIN)
        print(f"| {path} | {cells} | {sum(times.values()):.1f} s |")
    stock, driver, ready = (sum(paths[p].values()) for p in ("stock image", "driver image", "baked image"))
    print(f"\nratios to the stock image: driver image {driver / stock:.2f}, baked image {ready / stock:.2f}")
    print(
        f"stock image, the chain in one command (wheels fetched alongside the driver): {chain_seconds:.1f} s "
        f"against {stock:.1f} s for its steps one by one: ratio {chain_seconds / stock:.2f}"
    )
