"""docker.install over real SSH on a Debian container: packages, group, idempotence, --dry."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_install_distro_over_ssh_then_rerun_changes_nothing(tfrig, sshd_factory, ssh_env, state_dir):
    host = sshd_factory()
    assert host.exec("command -v dockerd")[0] != 0

    # One run: the doctor after the install logs in anew, so it sees the docker group (the engine
    # itself can't start in this container: --no-start).
    first = tfrig("docker.install", "--method", "distro", "--no-start", "-H", host.spec(), "docker.doctor", env=ssh_env)
    assert first.code == 1, first.text  # the doctor finds no engine and no GPU here
    assert "ok   docker group: tfrig is in the docker group" in first.out, first.out
    assert f"target: {host.spec()}" in first.out
    assert "installing Docker (distro) on debian 12" in first.out
    assert "added tfrig to the docker group: that is root-equivalent" in first.out
    assert host.exec("command -v dockerd") == (0, "/usr/sbin/dockerd\n")
    assert "docker" in host.exec("id -nG tfrig")[1].split()

    log = (state_dir / "logs" / f"{host.spec()}.log").read_text()
    assert "change rc=0" in log and "install-docker.sh" in log

    again = tfrig("docker.install", "--method", "distro", "--no-start", "-H", host.spec(), env=ssh_env)
    assert again.code == 0, again.text
    assert "already done: Docker (not started) installed, tfrig in the docker group" in again.out
    assert (state_dir / "logs" / f"{host.spec()}.log").read_text().count("change rc=") == 1


def test_dry_install_probes_for_real_and_changes_nothing(tfrig, sshd_factory, ssh_env):
    host = sshd_factory()
    result = tfrig("--dry", "docker.install", "--method", "distro", "-H", host.spec(), env=ssh_env)
    assert result.code == 0, result.text
    assert "installing Docker (distro) on debian 12" in result.out
    assert "would run: sudo METHOD=distro DOCKER_USER=tfrig START=1 scripts/install-docker.sh" in result.out
    assert host.exec("command -v dockerd")[0] != 0


def test_toolkit_refuses_on_a_host_without_the_nvidia_driver(tfrig, sshd_factory, ssh_env):
    host = sshd_factory()
    result = tfrig("docker.toolkit", "-H", host.spec(), env=ssh_env)
    assert result.code == 1
    assert "no NVIDIA driver is loaded here, so containers can't get a GPU" in result.err
    assert "Traceback" not in result.text
