"""What docker.install and docker.toolkit run on a host in a given state (MockContext)."""

from __future__ import annotations

import re

import pytest
from invoke import Result
from invoke.exceptions import Exit

from tests.plan import commands, context
from tfrig.tasks import docker

DEBIAN = (0, "debian 12")
NOT_INSTALLED = {"os": DEBIAN, "dockerd": (1, ""), "engine": (127, "docker: not found"), "groups": (0, "alice")}
INSTALLED = {"os": DEBIAN, "dockerd": (0, "/usr/bin/dockerd"), "engine": (0, "27.3.1"), "groups": (0, "alice docker")}
SCRIPT = re.compile(r"^env METHOD=.* bash -c .*install-docker\.sh'?$", re.S)


@pytest.fixture(autouse=True)
def as_root(monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 0)


def script_env(command: str) -> str:
    return command.split(" bash -c ")[0]


@pytest.mark.parametrize(
    ("method", "extra", "env"),
    [
        ("repo", {}, "env METHOD=repo DOCKER_USER=alice START=1"),
        ("distro", {}, "env METHOD=distro DOCKER_USER=alice START=1"),
        ("script", {"sha256": "AB" * 32}, f"env METHOD=script DOCKER_USER=alice START=1 SCRIPT_SHA256={'ab' * 32}"),
        ("script", {"unverified": True}, "env METHOD=script DOCKER_USER=alice START=1 UNVERIFIED=1"),
    ],
    ids=["repo", "distro", "script-sha256", "script-unverified"],
)
def test_install_on_a_fresh_host_runs_the_script_with_its_parameters(method, extra, env, capsys):
    c = context("docker.install", probes=[NOT_INSTALLED, INSTALLED], changes={SCRIPT: Result()})
    docker.install(c, method=method, user="alice", **extra)
    ran = commands(c)
    assert ran[0] == "probe" and ran[2] == "probe"
    assert script_env(ran[1]) == env
    out = capsys.readouterr().out
    assert f"installing Docker ({method}) on debian 12" in out
    assert "added alice to the docker group: that is root-equivalent" in out
    assert "Docker 27.3.1 ready" in out


def test_installed_and_running_with_the_user_in_the_group_is_a_no_op(capsys):
    c = context("docker.install", probes=[INSTALLED])
    docker.install(c, method="distro", user="alice")
    assert commands(c) == ["probe"]
    assert "already done: Docker 27.3.1 installed, alice in the docker group" in capsys.readouterr().out


def test_installed_but_user_not_in_group_only_sets_up_what_is_missing(capsys):
    outside = {**INSTALLED, "groups": (0, "alice")}
    c = context("docker.install", probes=[outside, INSTALLED], changes={SCRIPT: Result()})
    docker.install(c, method="distro", user="alice")
    assert commands(c)[0] == "probe" and SCRIPT.match(commands(c)[1])
    assert "Docker is installed; setting up what is missing" in capsys.readouterr().out


def test_service_that_does_not_start_is_reported():
    # Starting the service is the script's last step (systemd, init script or plain dockerd); the
    # real-SSH test runs with --no-start because containers here can't run a nested engine.
    c = context(
        "docker.install",
        probes=[NOT_INSTALLED, {**INSTALLED, "engine": (1, "Cannot connect")}],
        changes={SCRIPT: Result()},
    )
    with pytest.raises(Exit, match="Docker did not come up"):
        docker.install(c, method="distro", user="alice")


def test_unsupported_os_is_refused_before_any_change():
    c = context("docker.install", probes=[{**NOT_INSTALLED, "os": (0, "fedora 40")}])
    with pytest.raises(Exit, match=re.escape("fedora 40: docker.install supports Debian and Ubuntu only")):
        docker.install(c, method="distro", user="alice")
    assert commands(c) == ["probe"]


def test_dry_run_probes_and_prints_the_script_it_would_run(capsys):
    c = context("docker.install", probes=[NOT_INSTALLED], dry=True)
    docker.install(c, user="alice")
    assert commands(c) == ["probe"]
    assert "would run: METHOD=repo DOCKER_USER=alice START=1 scripts/install-docker.sh" in capsys.readouterr().out


TOOLKIT_SCRIPT = re.compile(r"^bash -c .*install-container-toolkit\.sh'?$", re.S)


def test_toolkit_refuses_without_a_driver():
    c = context("docker.toolkit", probes=[{"driver": (1, "No such file"), "ctk": (127, ""), "runtimes": (0, "{}")}])
    with pytest.raises(Exit, match="no NVIDIA driver is loaded here"):
        docker.toolkit(c)
    assert commands(c) == ["probe"]


def test_toolkit_installs_and_configures_when_missing(capsys):
    facts = {"driver": (0, "NVRM version: 580.159.04"), "ctk": (127, ""), "runtimes": (0, '{"runc":{}}')}
    c = context("docker.toolkit", probes=[facts], changes={TOOLKIT_SCRIPT: Result()})
    docker.toolkit(c)
    assert commands(c)[0] == "probe" and TOOLKIT_SCRIPT.match(commands(c)[1])


def test_toolkit_already_registered_is_a_no_op(capsys):
    facts = {
        "driver": (0, "NVRM"),
        "ctk": (0, "NVIDIA Container Toolkit CLI version 1.17.8"),
        "runtimes": (0, '{"nvidia":{}}'),
    }
    c = context("docker.toolkit", probes=[facts])
    docker.toolkit(c)
    assert commands(c) == ["probe"]
    assert "already done: NVIDIA Container Toolkit installed" in capsys.readouterr().out


def test_dry_docker_run_prints_the_request_it_would_send(capsys):
    c = context("docker.run", probes=[], dry=True)
    docker.run(c, version="2.21.0", gpu=True, cmd="python train.py", name="job")
    out = capsys.readouterr().out.strip()
    assert out == (
        'would create and start a container: {"command": ["sh", "-c", "python train.py"], "detach": false, '
        '"device_requests": [{"Capabilities": [["gpu"]], "Count": -1, "Driver": ""}], '
        '"image": "tensorflow/tensorflow:2.21.0-gpu", "name": "job"}'
    )


def test_interactive_shell_without_a_terminal_is_refused():
    c = context("docker.run", probes=[])
    with pytest.raises(Exit, match="An interactive shell needs a terminal"):
        docker.run(c)
