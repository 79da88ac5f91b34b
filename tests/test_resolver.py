"""The TensorFlow catalog and resolver: the whole table, and every refusal with its message."""

from __future__ import annotations

import pytest
from packaging.version import Version

from tfrig.knowledge import resolver
from tfrig.knowledge.catalog import compat


@pytest.mark.parametrize("row", compat()["tensorflow_builds"]["linux_gpu"], ids=lambda r: r["tf"])
def test_every_release_resolves_for_cpu_and_gpu(row):
    cpu = resolver.resolve(row["tf"])
    assert cpu.tf == row["tf"] and cpu.requirement == f"tensorflow=={row['tf']}" and not cpu.gpu
    gpu = resolver.resolve(row["tf"], gpu=True)
    assert (gpu.cuda, gpu.cudnn) == (row["cuda"], row["cudnn"])
    assert resolver.find_build(row["tf"]).supports(gpu.python)
    major, minor = (int(x) for x in row["tf"].split(".")[:2])
    if (major, minor) >= (2, 14):
        assert gpu.tf.startswith(row["tf"])  # 2.15.0 installs as 2.15.0.post1 (and_cuda_installable)
        assert gpu.requirement == f"tensorflow[and-cuda]=={gpu.tf}" and gpu.conda_packages == []
    else:
        assert gpu.requirement == (f"tensorflow=={row['tf']}" if major == 2 else f"tensorflow-gpu=={row['tf']}")
        assert gpu.conda_packages[0] == f"cudatoolkit={row['cuda']}"
        cudnn = [p.split("=")[-1] for p in gpu.conda_packages[1:] + gpu.pip_packages if "cudnn" in p]
        # the cuDNN that exists: the build's own major, and its minor or a higher one (cuda_dnn.cc's rule)
        assert len(cudnn) == 1 and cudnn[0].split(".")[0] == row["cudnn"].split(".")[0]
        assert Version(cudnn[0]) >= Version(row["cudnn"])


def test_tensorflow_2_13_takes_cudnn_from_pip_as_its_docs_did():
    plan = resolver.resolve("2.13", gpu=True)
    assert plan.conda_packages == ["cudatoolkit=11.8"] and plan.pip_packages == ["nvidia-cudnn-cu11==8.6.0.163"]
    assert resolver.resolve("2.10", gpu=True).conda_packages == ["cudatoolkit=11.2", "cudnn=8.1.0.77"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({}, ("2.21.0", "3.13", "tensorflow==2.21.0", None)),
        ({"version": "2.15", "gpu": True}, ("2.15.0.post1", "3.11", "tensorflow[and-cuda]==2.15.0.post1", "525.60.13")),
        ({"version": "2.16.2", "target_python": "3.12.3"}, ("2.16.2", "3.12", "tensorflow==2.16.2", None)),
        (
            {"version": "2.10", "gpu": True, "driver": "470.82.01"},
            ("2.10.0", "3.10", "tensorflow==2.10.0", "450.80.02"),
        ),
        (
            {"version": "2.21.0", "gpu": True, "driver": "580.159.04", "compute_capability": "9.0"},
            ("2.21.0", "3.13", "tensorflow[and-cuda]==2.21.0", "555.42.02"),
        ),
        ({"version": "1.15", "gpu": True, "python": "3.7"}, ("1.15.0", "3.7", "tensorflow-gpu==1.15.0", "410.48")),
    ],
    ids=["newest-cpu", "2.15-gpu", "patch-release-target-python", "cuda11-driver-470", "h200", "tf1-gpu"],
)
def test_plans(args, expected):
    plan = resolver.resolve(**args)
    assert (plan.tf, plan.python, plan.requirement, plan.driver_min) == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            {"version": "2.15", "python": "3.12"},
            "TensorFlow 2.15.0 supports Python 3.9–3.11; use --python 3.11 or TensorFlow 2.16+.",
        ),
        (
            {"version": "2.21", "python": "3.9"},
            "TensorFlow 2.21.0 supports Python 3.10–3.13; use --python 3.13 or TensorFlow 2.20.",
        ),
        (
            {"version": "2.21", "python": "3.14"},
            "TensorFlow 2.21.0 supports Python 3.10–3.13; use --python 3.13 or no TensorFlow release tfrig knows supports Python 3.14.",
        ),
        (
            {"version": "2.15", "target_python": "3.12.1"},
            "the target's Python is 3.12.1, and TensorFlow 2.15.0 supports 3.9–3.11: use a conda env",
        ),
        ({"version": "2.22"}, "TensorFlow 2.22 is not a release tfrig knows; the newest is 2.21.0"),
        ({"version": "tensorflow-gpu==2.10"}, "tensorflow-gpu is gone from PyPI since December 2022"),
        ({"version": "latest-gpu"}, "'latest-gpu' is not a TensorFlow version such as 2.21.0"),
        (
            {"version": "2.21", "gpu": True, "driver": "470.82.01"},
            "driver 470.82.01 is below 555.42.02, which CUDA 12.5 (TensorFlow 2.21.0) needs; update the driver (`inv driver.install`) or TensorFlow 2.14.0 (CUDA 11.8).",
        ),
        (
            {"version": "2.21", "gpu": True, "compute_capability": "3.7"},
            "this GPU's compute capability 3.7 is below 6.0",
        ),
        ({"python": "3"}, "--python 3: give major.minor"),
    ],
    ids=[
        "2.15-py312",
        "2.21-py39",
        "py314",
        "target-python",
        "unknown",
        "tensorflow-gpu",
        "tag-as-version",
        "old-driver",
        "k80",
        "python-format",
    ],
)
def test_refusals_name_the_conflict_and_what_works(args, message):
    with pytest.raises(resolver.Refusal) as refusal:
        resolver.resolve(**args)
    assert message in str(refusal.value)


def test_driver_minimums_follow_cuda_families():
    assert resolver.driver_minimum("12.5") == "525.60.13"
    assert resolver.driver_minimum("11.2") == "450.80.02"
    assert resolver.driver_minimum("10.1") == "418.39"
    assert resolver.driver_minimum("10.0") == "410.48"


def test_from_2_18_the_driver_must_be_cudas_own_for_tensorflows_ptx():
    assert resolver.driver_minimum("12.5", "2.18.0") == "555.42.02"
    assert resolver.driver_minimum("12.5", "2.21.0") == "555.42.02"
    assert resolver.driver_minimum("12.3", "2.17.0") == "525.60.13"  # minor-version compatibility


def test_branch_535_is_refused_for_tensorflow_2_21_on_a_gpu_with_what_works():
    with pytest.raises(resolver.Refusal) as refused:
        resolver.resolve("2.21", gpu=True, driver="535.261.03")
    assert str(refused.value) == (
        "driver 535.261.03 is below 555.42.02, which CUDA 12.5 (TensorFlow 2.21.0) needs; "
        "update the driver (`inv driver.install`) or TensorFlow 2.17.0 (CUDA 12.3)."
    )


def test_and_cuda_pins_are_what_pip_can_install():
    """compat.yaml and_cuda_installable: 2.15.0's extra can't install (its tensorrt has no wheel),
    2.15.0.post1 can; 2.14's tensorrt has wheels for Python 3.9-3.10 only."""
    plan = resolver.resolve("2.15", python="3.11", gpu=True)
    assert (plan.tf, plan.requirement) == ("2.15.0.post1", "tensorflow[and-cuda]==2.15.0.post1")
    assert "tensorrt==8.6.1.post1, which has no wheel" in plan.notes[0]
    assert resolver.resolve("2.15.1", python="3.11", gpu=True).requirement == "tensorflow[and-cuda]==2.15.1"
    assert resolver.resolve("2.14", python="3.10", gpu=True).requirement == "tensorflow[and-cuda]==2.14.0"
    with pytest.raises(resolver.Refusal, match=r"installs on Python 3\.9-3\.10 only .*tensorrt==8\.5\.3\.1"):
        resolver.resolve("2.14", python="3.11", gpu=True)
    assert resolver.resolve("2.14", python="3.11").requirement == "tensorflow==2.14.0"  # the CPU build installs


def test_the_catalog_comes_from_its_cached_copy_once_made_and_a_damaged_copy_is_made_anew(state_dir, monkeypatch):
    import yaml

    from tfrig.knowledge import catalog

    parsed = catalog._load("compat.yaml")
    (cached,) = (state_dir / "cache").glob("compat.yaml.*.marshal")
    with monkeypatch.context() as patched:
        patched.setattr(yaml, "load", lambda *args, **kwargs: pytest.fail("compat.yaml parsed again"))
        assert catalog._load("compat.yaml") == parsed
    for damage in (b"", b"garbage", b"\xe9\x01\x00\x00\x00"):  # empty, a float's header, an int
        cached.write_bytes(damage)
        assert catalog._load("compat.yaml") == parsed
        assert cached.read_bytes() != damage
