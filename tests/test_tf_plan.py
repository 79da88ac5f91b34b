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
