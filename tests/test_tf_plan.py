"""What tf.install runs on a target in a given state (MockContext): conda env or venv, the pinned
requirement, and the refusals."""

from __future__ import annotations

import re

import pytest
from invoke import Result
from invoke.exceptions import Exit

from tests.plan import commands, context
from tfrig import tf

NOTHING = {
    "python": (0, "3.12.3"),
    "conda_py": (127, ""),
    "conda_tf": (127, ""),
    "venv_py": (127, ""),
    "venv_tf": (127, ""),
    "venv_pip": (1, ""),
    "gpu": (127, ""),
}
VENV_SCRIPT = re.compile(r"^env VENV='~/tf-venv' AS_USER=\S+ bash -c .*python-venv\.sh'?$", re.S)
PIP = re.compile(r".* -m pip install .*")


@pytest.fixture(autouse=True)
def as_root(monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 0)


def test_fresh_host_gets_a_venv_and_the_cpu_build(capsys):
    c = context(
        "tf.install",
        probes=[NOTHING],
        changes={
            VENV_SCRIPT: Result(),
            PIP: Result(),
            re.compile(r".*importlib.metadata.*"): Result("2.21.0\n"),
        },
    )
    tf.install(c)
    ran = commands(c)
    assert ran[0] == "probe" and VENV_SCRIPT.match(ran[1])
    assert ran[2] == '"$HOME"/tf-venv/bin/python -m pip install --disable-pip-version-check -q tensorflow==2.21.0'


def test_a_gpu_host_gets_and_cuda_into_its_conda_env(capsys):
    state = {**NOTHING, "conda_py": (0, "3.11.9"), "gpu": (0, "580.159.04, 8.9")}
    c = context(
        "tf.install", probes=[state], changes={PIP: Result(), re.compile(r".*importlib.metadata.*"): Result("2.21.0\n")}
    )
    tf.install(c, find_links="/wheels")
    assert (
        commands(c)[1]
        == "\"$HOME\"/miniconda3/envs/tf/bin/python -m pip install --disable-pip-version-check -q --find-links /wheels 'tensorflow[and-cuda]==2.21.0'"
    )
    assert "installing tensorflow[and-cuda]==2.21.0 into ~/miniconda3/envs/tf" in capsys.readouterr().out


def test_the_right_version_already_there_is_a_no_op(capsys):
    c = context(
        "tf.install", probes=[{**NOTHING, "venv_py": (0, "3.12.3"), "venv_tf": (0, "2.21.0"), "venv_pip": (0, "")}]
    )
    tf.install(c)
    assert commands(c) == ["probe"]
    assert "already done: TensorFlow 2.21.0 in venv ~/tf-venv" in capsys.readouterr().out


def test_an_old_release_with_a_gpu_needs_conda_for_its_cuda_libraries():
    c = context("tf.install", probes=[{**NOTHING, "python": (0, "3.10.12"), "gpu": (0, "535.261.03, 7.5")}])
    with pytest.raises(Exit, match=re.escape("takes its CUDA libraries from conda (cudatoolkit=11.8, cudnn=8.6)")):
        tf.install(c, version="2.13")
    assert commands(c) == ["probe"]


def test_the_targets_python_outside_the_range_is_refused_with_what_works():
    c = context("tf.install", probes=[NOTHING])
    with pytest.raises(Exit, match=re.escape("the target's Python is 3.12.3, and TensorFlow 2.15.0 supports 3.9–3.11")):
        tf.install(c, version="2.15")


def test_a_driver_too_old_for_the_cuda_is_refused():
    c = context("tf.install", probes=[{**NOTHING, "gpu": (0, "470.82.01, 7.5")}])
    with pytest.raises(Exit, match=re.escape("driver 470.82.01 is below 555.42.02")):
        tf.install(c)


def test_a_gpu_install_of_2_16_into_a_venv_links_the_cuda_libraries(capsys):
    state = {**NOTHING, "venv_py": (0, "3.12.3"), "venv_pip": (0, ""), "gpu": (0, "580.159.04, 7.5")}
    links = re.compile(r"^env VENV='~/tf-venv' bash -c .*tf-cuda-links\.sh'?$", re.S)
    c = context(
        "tf.install",
        probes=[state],
        changes={PIP: Result(), links: Result(), re.compile(r".*importlib.metadata.*"): Result("2.16.1\n")},
    )
    tf.install(c, version="2.16")
    ran = commands(c)
    assert ran[1].endswith("'tensorflow[and-cuda]==2.16.1'") and links.match(ran[2])
    assert "linking the pip CUDA libraries into TensorFlow's folder" in capsys.readouterr().out


def test_the_library_links_script_links_what_tensorflows_pip_page_says(tmp_path):
    """scripts/tf-cuda-links.sh on a venv laid out as pip lays out tensorflow[and-cuda]."""
    import subprocess
    import sys

    venv = tmp_path / "venv"
    site = venv / "lib" / "python3" / "site-packages"
    (site / "tensorflow").mkdir(parents=True)
    (site / "tensorflow" / "__init__.py").write_text("")
    for package, library in (("cublas", "libcublas.so.12"), ("cudnn", "libcudnn.so.8")):
        (site / "nvidia" / package / "lib").mkdir(parents=True)
        (site / "nvidia" / package / "lib" / library).write_text("")
    (site / "nvidia" / "cuda_nvcc" / "bin").mkdir(parents=True)
    (site / "nvidia" / "cuda_nvcc" / "__init__.py").write_text("")
    (site / "nvidia" / "cuda_nvcc" / "bin" / "ptxas").write_text("")
    (venv / "bin").mkdir()
    (venv / "bin" / "python").write_text(f'#!/bin/sh\nPYTHONPATH={site} exec {sys.executable} "$@"\n')
    (venv / "bin" / "python").chmod(0o755)
    from tfrig.host import SCRIPTS

    for _ in range(2):  # idempotent
        done = subprocess.run(
            ["bash", str(SCRIPTS / "tf-cuda-links.sh")], env={"VENV": str(venv), "PATH": "/usr/bin:/bin"},
            capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert (site / "tensorflow" / "libcublas.so.12").resolve() == (site / "nvidia/cublas/lib/libcublas.so.12").resolve()
    assert (site / "tensorflow" / "libcudnn.so.8").is_symlink()
    assert (venv / "bin" / "ptxas").resolve() == (site / "nvidia/cuda_nvcc/bin/ptxas").resolve()


def verify_output(ops: list[dict], gpus: list[dict], log: str = "") -> str:
    import json

    report = {
        "tensorflow": "2.21.0",
        "python": "3.12.3",
        "built_with_cuda": True,
        "cuda": "12.5.1",
        "cudnn": "9",
        "gpus": gpus,
        "ops": ops,
        "device": ops[0]["device"],
        "result_ok": all(op["ok"] for op in ops),
        "seconds": 3.2,
    }
    return log + "@@tfrig-verify " + json.dumps(report) + "\n"


GPU0 = "/job:localhost/replica:0/task:0/device:GPU:0"
CPU0 = "/job:localhost/replica:0/task:0/device:CPU:0"
T4 = [{"name": "Tesla T4", "compute_capability": "7.5"}]
WITH_TF = {
    **NOTHING,
    "venv_py": (0, "3.12.3"),
    "venv_tf": (0, "2.21.0"),
    "venv_pip": (0, ""),
    "gpu": (0, "580.159.04, 7.5"),
}


@pytest.mark.parametrize(
    ("ops", "log", "message"),
    [
        (
            [{"op": "matmul", "device": GPU0, "ok": True, "ms": 3.0},
             {"op": "reduce_sum(random.normal)", "device": CPU0, "ok": True, "ms": 1.0}],
            "",
            f"TensorFlow lists a GPU but ran reduce_sum(random.normal) on {CPU0}: the GPU did not do the work",
        ),
        (
            [{"op": "matmul", "device": GPU0, "ok": True, "ms": 3.0},
             {"op": "reduce_sum(random.normal)", "device": "/GPU:0", "ok": False,
              "error": "InternalError: 'cuLaunchKernel(...)' failed with 'CUDA_ERROR_INVALID_HANDLE'"}],
            "W tf_gpu_runtime_wrappers.cc:40] 'cuModuleLoadData(&module, data)' failed with "
            "'CUDA_ERROR_UNSUPPORTED_PTX_VERSION'\n",
            "TensorFlow's reduce_sum(random.normal) on /GPU:0 failed: InternalError",
        ),
    ],
    ids=["placed-on-cpu", "ptx-jit-fails"],
)  # fmt: skip
def test_verify_proves_the_gpu_did_the_work(ops, log, message):
    c = context("tf.verify", probes=[WITH_TF], changes={re.compile(r".* -c .*"): Result(verify_output(ops, T4, log))})
    with pytest.raises(Exit, match=re.escape(message)) as refused:
        tf.verify(c)
    if "ptx" in log.lower():
        assert "CUDA_ERROR_UNSUPPORTED_PTX_VERSION" in str(refused.value)


def test_verify_reports_each_op_its_device_and_time(capsys):
    ops = [{"op": "matmul", "device": GPU0, "ok": True, "ms": 3.0},
           {"op": "reduce_sum(random.normal)", "device": GPU0, "ok": True, "ms": 1.5}]  # fmt: skip
    c = context("tf.verify", probes=[WITH_TF], changes={re.compile(r".* -c .*"): Result(verify_output(ops, T4))})
    tf.verify(c)
    out = capsys.readouterr().out
    assert f"matmul on {GPU0}: correct in 3.0 ms" in out
    assert f"reduce_sum(random.normal) on {GPU0}: correct in 1.5 ms" in out
    assert "GPUs: Tesla T4 (compute capability 7.5)" in out
