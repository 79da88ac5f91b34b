"""docker tasks against the real engine and a real registry (TESTBED.md)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import json_of

TAG = "2.21.0"


@pytest.fixture(scope="module")
def mirror(docker_client: Any, busybox: str, registry: str) -> str:
    """The registry holds a (tiny) image as tensorflow/tensorflow:2.21.0, like a Docker Hub mirror."""
    image = docker_client.images.get(busybox)
    image.tag(f"{registry}/tensorflow/tensorflow", TAG)
    for line in docker_client.images.push(f"{registry}/tensorflow/tensorflow", tag=TAG, stream=True, decode=True):
        assert "error" not in line, line
    docker_client.images.remove(f"{registry}/tensorflow/tensorflow:{TAG}")
    return registry


@pytest.fixture
def no_local_tf(docker_client: Any) -> None:
    import docker.errors

    with contextlib.suppress(docker.errors.ImageNotFound):
        docker_client.images.remove(f"tensorflow/tensorflow:{TAG}", force=True)


@pytest.fixture
def tf_image(docker_client: Any, busybox: str) -> str:
    docker_client.images.get(busybox).tag("tensorflow/tensorflow", TAG)
    return f"tensorflow/tensorflow:{TAG}"


def test_pull_through_mirror_tags_the_image_under_its_docker_hub_name(tfrig, mirror, no_local_tf, docker_client):
    result = tfrig("docker.pull", "--version", TAG, "--mirror", mirror)
    assert result.code == 0, result.text
    assert f"pulling {mirror}/tensorflow/tensorflow:{TAG}" in result.text
    local = docker_client.images.get(f"tensorflow/tensorflow:{TAG}")
    assert f"tensorflow/tensorflow:{TAG}" in local.tags


def test_pull_mirror_from_config_and_json_output(tfrig, mirror, no_local_tf):
    result = tfrig("docker.pull", "--version", TAG, "--json", env={"INVOKE_DOCKER_MIRROR": mirror})
    assert result.code == 0, result.text
    data = json_of(result.out)
    assert data["image"] == f"tensorflow/tensorflow:{TAG}"
    assert data["source"] == f"{mirror}/tensorflow/tensorflow:{TAG}"
    assert data["id"].startswith("sha256:")


def test_pull_any_image_by_full_name(tfrig, mirror, docker_client):
    result = tfrig("docker.pull", "--image", f"{mirror}/tensorflow/tensorflow:{TAG}")
    assert result.code == 0, result.text
    docker_client.images.get(f"{mirror}/tensorflow/tensorflow:{TAG}")


def test_pull_of_a_tag_the_registry_lacks_says_so(tfrig, mirror):
    result = tfrig("docker.pull", "--version", "2.20.0", "--gpu", "--mirror", mirror)
    assert result.code == 1
    assert "tensorflow/tensorflow:2.20.0-gpu is not in its registry" in result.err
    assert "Traceback" not in result.text


def test_run_a_command_streams_its_output_and_removes_the_container(tfrig, tf_image, docker_client):
    before = {c.id for c in docker_client.containers.list(all=True)}
    result = tfrig("docker.run", "--version", TAG, "--cmd", "echo hello from tf")
    assert result.code == 0, result.text
    assert "hello from tf" in result.out
    assert {c.id for c in docker_client.containers.list(all=True)} == before


def test_run_passes_on_the_exit_code(tfrig, tf_image):
    result = tfrig("docker.run", "--version", TAG, "--cmd", "exit 3")
    assert result.code == 3


def test_run_mounts_the_workdir(tfrig, tf_image, tmp_path):
    (tmp_path / "train.txt").write_text("data in the workdir\n")
    result = tfrig("docker.run", "--version", TAG, "--workdir", str(tmp_path), "--cmd", "cat train.txt")
    assert result.code == 0, result.text
    assert "data in the workdir" in result.out


def test_detached_container_lifecycle_ps_rm_rmi(tfrig, tf_image, docker_client):
    name = f"tfrig-test-{uuid.uuid4().hex[:8]}"
    started = tfrig("docker.run", "--version", TAG, "--detach", "--name", name, "--cmd", "sleep 300")
    assert started.code == 0, started.text
    try:
        listed = json_of(tfrig("docker.ps", "--json").out)
        assert any(row["name"] == name and row["status"] == "running" for row in listed)

        refused = tfrig("docker.rm", name, "--yes")
        assert refused.code == 1
        assert f"{name} running; stop it first or pass --force. Nothing removed." in refused.err
        assert docker_client.containers.get(name).status == "running"

        in_use = tfrig("docker.rmi", tf_image, "--yes")
        assert in_use.code == 1
        assert f"Containers use these images ({name})" in in_use.err

        no_terminal = tfrig("docker.rm", name, "--force")
        assert no_terminal.code == 1
        assert "pass --yes" in no_terminal.err
        assert docker_client.containers.get(name).status == "running"

        removed = tfrig("docker.rm", name, "--force", "--yes")
        assert removed.code == 0, removed.text
        assert f"removed {name}" in removed.out
    finally:
        for container in docker_client.containers.list(all=True, filters={"name": name}):
            container.remove(force=True)
    assert not docker_client.containers.list(all=True, filters={"name": name})


def test_images_lists_tags_as_json(tfrig, tf_image):
    rows = json_of(tfrig("docker.images", "--json").out)
    assert any(tf_image in row["tags"] for row in rows)


def test_gpu_on_a_host_without_gpus_explains_why(tfrig, tf_image, docker_client):
    before = {c.id for c in docker_client.containers.list(all=True)}
    result = tfrig("docker.run", "--version", TAG, "--gpu", "--image", tf_image, "--cmd", "true")
    assert result.code == 1
    assert "The container can't get a GPU" in result.err
    assert "container toolkit: nvidia-ctk not found -> inv docker.toolkit" in result.err
    assert "driver: no NVIDIA driver loaded on the host -> inv driver.install" in result.err
    assert "Traceback" not in result.text
    assert {c.id for c in docker_client.containers.list(all=True)} == before


def test_doctor_reports_each_check_with_its_fix(tfrig, docker_client):
    result = tfrig("docker.doctor", "--json")
    assert result.code == 1
    checks = {ch["check"]: ch for ch in json_of(result.out)["checks"]}
    assert checks["engine"]["ok"] is True
    assert checks["nvidia runtime"] == {
        "check": "nvidia runtime",
        "ok": False,
        "detail": "not registered with Docker",
        "fix": "nvidia-ctk runtime configure --runtime=docker, then restart Docker (inv docker.toolkit does both)",
    }
    assert checks["driver"]["ok"] is False
    assert checks["GPU in a container"]["ok"] is None


def test_no_engine_is_one_clear_line(tfrig):
    result = tfrig("docker.images", env={"DOCKER_HOST": "unix:///tmp/no-such-docker.sock"})
    assert result.code == 1
    assert result.err.strip() == (
        "No Docker engine answers at unix:///tmp/no-such-docker.sock: start it "
        "(`sudo systemctl start docker`) or install it with `inv docker.install`."
    )


@pytest.fixture
def jupyter_image(docker_client: Any, busybox: str, tmp_path) -> Iterator[str]:
    """A stand-in for the -jupyter image: it prints the notebook URL with a token, as Jupyter does."""
    (tmp_path / "Dockerfile").write_text(
        f"FROM {busybox}\n"
        'CMD ["sh", "-c", "echo \\"    http://127.0.0.1:8888/tree?token=0123456789abcdef\\"; sleep 300"]\n'
    )
    name = f"tensorflow/tensorflow:{TAG}-jupyter"
    docker_client.images.build(path=str(tmp_path), tag=name, rm=True)
    yield name
    with contextlib.suppress(Exception):
        docker_client.images.remove(name, force=True)


def test_jupyter_publishes_on_loopback_only_and_prints_the_url_with_its_token(tfrig, jupyter_image, docker_client):
    from tests.conftest import free_port

    port = free_port()
    name = f"tfrig-jupyter-{uuid.uuid4().hex[:8]}"
    result = tfrig("docker.run", "--version", TAG, "--jupyter", "--port", str(port), "--name", name, "--json")
    try:
        assert result.code == 0, result.text
        data = json_of(result.out)
        assert data["url"] == f"http://127.0.0.1:{port}/?token=0123456789abcdef"
        bindings = docker_client.containers.get(name).attrs["HostConfig"]["PortBindings"]
        assert bindings == {"8888/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    finally:
        for container in docker_client.containers.list(all=True, filters={"name": name}):
            container.remove(force=True)


@pytest.fixture
def colab_runtime(docker_client: Any, busybox: str, registry: str, tmp_path) -> Iterator[str]:
    """A stand-in for Colab's runtime image, pushed to the test registry: it serves HTTP on 8080
    and prints the backend URL with its token, of the form Colab's local-runtimes page gives."""
    (tmp_path / "index.html").write_text("colab runtime stand-in\n")
    (tmp_path / "Dockerfile").write_text(
        f"FROM {busybox}\nCOPY index.html /www/index.html\n"
        'CMD ["sh", "-c", "echo \\"http://127.0.0.1:9000/?token=c0ffee0123456789\\"; exec httpd -f -p 8080 -h /www"]\n'
    )
    name = f"{registry}/colab-images/public/runtime"
    docker_client.images.build(path=str(tmp_path), tag=f"{name}:latest", rm=True)
    for line in docker_client.images.push(name, tag="latest", stream=True, decode=True):
        assert "error" not in line, line
    docker_client.images.remove(f"{name}:latest")
    yield f"{name}:latest"
    with contextlib.suppress(Exception):
        docker_client.images.remove(f"{name}:latest", force=True)


def test_colab_runtime_is_pulled_published_on_loopback_and_its_backend_url_printed(tfrig, colab_runtime, docker_client):
    """docker.run --colab: the runtime image pulled from its registry, detached, its port 8080 on
    127.0.0.1 only, the URL with the runtime's token for Colab's "Connect to a local runtime"; an
    engine without the NVIDIA runtime gives it no GPU and says so."""
    import urllib.request

    from tests.conftest import free_port

    port = free_port()
    name = f"tfrig-colab-{uuid.uuid4().hex[:8]}"
    result = tfrig("docker.run", "--colab", "--image", colab_runtime, "--port", str(port), "--name", name)
    try:
        assert result.code == 0, result.text
        url = f"http://127.0.0.1:{port}/?token=c0ffee0123456789"
        assert f"Colab: Connect > Connect to a local runtime, paste {url}" in result.out
        assert f"`inv docker.rm {name} --force` stops it" in result.out
        assert "note: this engine has no NVIDIA runtime (docker.toolkit): Colab's runtime gets no GPU" in result.out
        config = docker_client.containers.get(name).attrs["HostConfig"]
        assert config["PortBindings"] == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
        assert not config.get("DeviceRequests")
        assert urllib.request.urlopen(url, timeout=10).read() == b"colab runtime stand-in\n"
    finally:
        for container in docker_client.containers.list(all=True, filters={"name": name}):
            container.remove(force=True)

    both = tfrig("docker.run", "--colab", "--jupyter")
    assert both.code == 1 and both.err.strip().splitlines()[-1] == (
        "--colab runs Colab's own runtime: leave out --jupyter and --cmd."
    )
