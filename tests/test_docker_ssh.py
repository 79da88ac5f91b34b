"""docker.install over real SSH on a Debian container: packages, group, idempotence, --dry."""

from __future__ import annotations

import os
import shutil
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import json_of, missing

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


@pytest.fixture
def engine_host(sshd_factory: Any, docker_client: Any) -> Any:
    """A stock-image host with an engine: this machine's, its socket mounted there, and this
    machine's docker CLI (for `docker system dial-stdio`); its user may use the socket."""
    cli = shutil.which("docker")
    socket_path = urlsplit(os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")).path
    if not cli or not os.path.exists(socket_path):
        missing("no docker CLI or engine socket on this machine")
    host = sshd_factory(volumes_extra={cli: "/usr/local/bin/docker"}, writable={socket_path: "/var/run/docker.sock"})
    gid = os.stat(socket_path).st_gid
    code, out = host.exec(
        f"getent group {gid} >/dev/null || groupadd -g {gid} hostdocker; usermod -aG $(getent group {gid} | cut -d: -f1) tfrig"
    )
    assert code == 0, out
    return host


def test_docker_tasks_reach_a_hosts_engine_over_tfrigs_own_ssh_connection(tfrig, engine_host, ssh_env, tmp_path):
    # Only tfrig's key and known-hosts file: this HOME has no ~/.ssh, where the SDK's ssh:// looks.
    env = {**ssh_env, "HOME": str(tmp_path)}
    listed = tfrig("docker.images", "-H", engine_host.spec(), "--json", env=env)
    assert listed.code == 0, listed.text
    tags = [tag for image in json_of(listed.out) for tag in image["tags"]]
    assert "local/tfrig-stock:latest" in tags
    ran = tfrig(
        "docker.run", "--image", "local/busybox", "--cmd", "echo from the engine", "-H", engine_host.spec(), env=env
    )
    assert ran.code == 0, ran.text
    assert "from the engine" in ran.out


def test_a_host_without_an_engine_is_one_line(tfrig, sshd_factory, ssh_env):
    host = sshd_factory()
    listed = tfrig("docker.ps", "-H", host.spec(), env=ssh_env)
    assert listed.code == 1
    assert listed.err.strip().splitlines() == [
        f"[{host.spec()}] no Docker engine answers there (bash: line 1: docker: command not found); "
        f"`inv docker.install -H {host.spec()}` installs it and adds you to the docker group."
    ]
