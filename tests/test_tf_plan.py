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
