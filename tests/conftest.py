"""Shared fixtures: the real parts (Docker engine, registry, sshd hosts) and how to run tfrig."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "nvidia-smi"  # copied from shared/fixtures
IN_CI = os.environ.get("CI") == "true"


def missing(reason: str) -> None:
    """A real part is missing: a failure in CI, a skip with the reason elsewhere."""
    if IN_CI:
        pytest.fail(f"real part missing in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "state"
    monkeypatch.setenv("TFRIG_STATE_DIR", str(folder))
    return folder


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def run_cli(*argv: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300) -> Outcome:
    """Run `tfrig ARGV` as a user would: a new process, no stdin, no terminal."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "tfrig", *argv],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or ROOT,
        timeout=timeout,
    )
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


# A deadline for what a test waits on (a process, a port, a file): waits poll for the event and end
# as soon as it comes, so a generous deadline costs nothing when all is well and holds on a loaded
# 2-core machine, where fixed 10-15 s limits failed.
DEADLINE = 180.0

# Every process a test starts (start_cli, track): stopped when the test ends, pass or fail.
_started: list[subprocess.Popen[Any]] = []


def track(proc: subprocess.Popen[Any]) -> subprocess.Popen[Any]:
    """`proc`, stopped (with its process group, if it leads one) when the test ends."""
    _started.append(proc)
    return proc


@pytest.fixture(autouse=True)
def _stop_started_processes() -> Iterator[None]:
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is not None:
            continue
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(proc.pid) == proc.pid:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        with contextlib.suppress(Exception):
            proc.communicate(timeout=DEADLINE)


def start_cli(*argv: str, env: dict[str, str], stderr: int = subprocess.PIPE) -> subprocess.Popen[str]:
    """Start `tfrig ARGV` as run_cli does (no stdin, no terminal), for a test that acts while it
    runs; in a session of its own, so that it and whatever it started are stopped at the end."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfrig", *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, **env},
        cwd=ROOT,
        start_new_session=True,
    )
    track(proc)
    return proc


@pytest.fixture
def tfrig(state_dir: Path) -> Any:
    return run_cli


# --- Docker engine -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_client() -> Any:
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        missing(f"no Docker engine answers ({exc}); start one as .ci/run does")
    return client


def need_image(client: Any, name: str) -> None:
    import docker.errors

    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        missing(f"image {name} is missing; make it with tests/testbed/images.sh")


@pytest.fixture(scope="session")
def busybox(docker_client: Any) -> str:
    need_image(docker_client, "local/busybox")
    return "local/busybox"


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready after {timeout} s")


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real distribution registry on a loopback port, with filesystem storage in a temp folder."""
    import shutil
    import urllib.request

    binary = shutil.which("docker-registry")
    if not binary:
        missing("docker-registry is not installed (apt-get install docker-registry)")
    folder = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = folder / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {folder / 'data'}}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
    )
    proc = subprocess.Popen([str(binary), "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/").status == 200,
            DEADLINE,
            "registry",
        )
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(DEADLINE)


# --- SSH hosts -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ssh")
    key = folder / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


@dataclass
class SshHost:
    """A stock-image stand-in (tests/testbed/stock.Dockerfile) with sshd, reached through a port
    published on its own loopback address; on the test network, it reaches the other test hosts
    and the NVIDIA site stand-in by container name."""

    container: Any
    address: str
    port: int
    key: Path

    def spec(self, user: str = "tfrig") -> str:
        return f"{user}@{self.address}:{self.port}"

    def exec(self, command: str) -> tuple[int, str]:
        code, output = self.container.exec_run(["sh", "-c", command])
        return int(code), output.decode(errors="replace")

    def host_keys(self) -> list[str]:
        """Its SSH host public keys as known-hosts lines, read inside the host (not over SSH)."""
        name = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        code, out = self.exec("cat /etc/ssh/ssh_host_*_key.pub")
        assert code == 0, out
        return [f"{name} {' '.join(line.split()[:2])}" for line in out.splitlines() if line.strip()]

    def internal_address(self) -> str:
        """Its address on the test network, where the other test hosts reach it."""
        self.container.reload()
        networks = self.container.attrs["NetworkSettings"]["Networks"]
        return str(next(iter(networks.values()))["IPAddress"])

    def wait_for_ssh(self, timeout: float = DEADLINE) -> None:
        def banner() -> bool:
            with socket.create_connection((self.address, self.port), timeout=1) as sock:
                return sock.recv(4).startswith(b"SSH-")

        wait_for(banner, timeout, f"sshd on {self.address}:{self.port}")


STOCK_IMAGE = "local/tfrig-stock"
SYSTEMD_IMAGE = "local/tfrig-systemd"  # the same, booted by systemd (tests/testbed/systemd.Dockerfile)
# How long unattended-upgrades holds the dpkg lock after each boot of a test host (a new VM's
# holds it for minutes; a few seconds prove that every apt call waits for it).
BOOT_LOCK_SECONDS = 6
# PCI device ids (vendor 0x10de) of the GPUs a test host can pretend to have.
GPU_DEVICES = {"t4": "0x1eb8", "k80": "0x102d", "v100": "0x1db1", "l4": "0x27b8"}
_next_loopback = iter(range(20, 250))


def pci_tree(folder: Path, gpu: str) -> Path:
    """A PCI tree as /sys shows a host with one `gpu` (the container sees it in place of the real bus)."""
    device = folder / "pci" / "0000:00:04.0"
    device.mkdir(parents=True)
    for name, value in {"vendor": "0x10de", "device": GPU_DEVICES[gpu], "class": "0x030200"}.items():
        (device / name).write_text(value + "\n")
    return folder / "pci"


@pytest.fixture(scope="session")
def testnet(docker_client: Any) -> Iterator[str]:
    """A Docker network of this run's own: test hosts talk to each other there (tfrig reaches them
    only through their loopback ports)."""
    name = f"tfrig-test-{os.getpid()}"
    network = docker_client.networks.create(name, driver="bridge", labels={"tfrig-test": "net"})
    yield name
    with contextlib.suppress(Exception):
        network.remove()


@pytest.fixture(scope="session")
def known_hosts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tests' known-hosts file (tfrig.known_hosts in ssh_env): each host's keys, pinned when it
    starts, as a user who checked them would have them."""
    return tmp_path_factory.mktemp("known") / "known_hosts"


@pytest.fixture(scope="session")
def sshd_factory(
    docker_client: Any, ssh_key: Path, testnet: str, known_hosts: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    need_image(docker_client, STOCK_IMAGE)
    started: list[Any] = []

    def start(
        port: int = 22,
        volumes_extra: dict[str, str] | None = None,
        writable: dict[str, str] | None = None,
        gpu: str | None = None,
        boot_lock: int = BOOT_LOCK_SECONDS,
        pin: bool = True,
        image: str = STOCK_IMAGE,
        **options: Any,
    ) -> SshHost:
        """A new stock-image host; `gpu` gives it that GPU on its PCI bus and a writable
        /sys/module where the NVIDIA stand-ins record their module as loaded. Its host keys go to
        the tests' known-hosts file unless `pin` is False (a VM, whose keys tfrig must find)."""
        address = f"127.0.0.{next(_next_loopback)}"
        volumes = {str(ssh_key) + ".pub": {"bind": "/etc/ssh/tfrig_keys", "mode": "ro"}}
        volumes.update({source: {"bind": target, "mode": "ro"} for source, target in (volumes_extra or {}).items()})
        volumes.update({source: {"bind": target, "mode": "rw"} for source, target in (writable or {}).items()})
        if gpu:
            bus = pci_tree(tmp_path_factory.mktemp(f"bus-{gpu}"), gpu)
            volumes[str(bus)] = {"bind": "/sys/bus/pci/devices", "mode": "ro"}
            options.setdefault("tmpfs", {"/sys/module": "rw,mode=755"})
        need_image(docker_client, image)
        container = docker_client.containers.run(
            image,
            detach=True,
            ports={"22/tcp": (address, port)},
            volumes=volumes,
            environment={"BOOT_LOCK_SECONDS": str(boot_lock)},
            labels={"tfrig-test": "sshd"},
            network=testnet,
            **options,
        )
        started.append(container)
        host = SshHost(container, address, port, ssh_key)
        host.wait_for_ssh()
        if pin:
            with open(known_hosts, "a") as known:
                known.write("".join(line + "\n" for line in host.host_keys()))
        return host

    yield start
    import docker.errors

    for container in started:
        with contextlib.suppress(docker.errors.NotFound):  # a test may have removed it (gcp.delete)
            container.remove(force=True)


@dataclass
class NvidiaSite:
    """The NVIDIA download site stand-in (tests/testbed/nvidia_site.py), served on the test network."""

    base_url: str
    folder: Path
    headers_source: Path  # an apt sources file for the kernel headers repository
    cuda_repo: str  # NVIDIA's CUDA apt repositories' stand-in, for driver.apt_repo_base

    def add(self, version: str, **options: Any) -> Path:
        from tests.testbed import nvidia_site

        return nvidia_site.add_driver(self.folder, version, **options)


@pytest.fixture(scope="session")
def nvidia_site(docker_client: Any, testnet: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NvidiaSite]:
    from tests.testbed import nvidia_site

    need_image(docker_client, STOCK_IMAGE)
    folder = tmp_path_factory.mktemp("nvidia-site")
    os.chmod(folder, 0o755)
    nvidia_site.add_kernel_headers(folder)
    cuda = nvidia_site.add_cuda_repo(folder, tmp_path_factory.mktemp("gnupg"))
    name = f"nvidia-site-{os.getpid()}"
    container = docker_client.containers.run(
        STOCK_IMAGE,
        ["python3", "-m", "http.server", "80", "--directory", "/srv"],
        name=name,
        detach=True,
        volumes={str(folder): {"bind": "/srv", "mode": "ro"}},
        labels={"tfrig-test": "nvidia-site"},
        network=testnet,
    )
    sources = tmp_path_factory.mktemp("apt") / "tfrig-kernel-headers.list"
    sources.write_text(f"deb [trusted=yes] http://{name}/kernel ./\n")
    try:
        yield NvidiaSite(f"http://{name}", folder, sources, f"http://{name}/{cuda}")
    finally:
        container.remove(force=True)


@pytest.fixture
def gpu_host(sshd_factory: Any, nvidia_site: NvidiaSite) -> Any:
    """A stock-image host with a GPU on its bus whose kernel headers are in its apt sources."""

    def start(gpu: str, **options: Any) -> SshHost:
        extra = {str(nvidia_site.headers_source): "/etc/apt/sources.list.d/tfrig-kernel-headers.list"}
        options.setdefault("restart_policy", {"Name": "always"})  # it comes back after a reboot, as a VM
        return sshd_factory(gpu=gpu, volumes_extra=extra, **options)

    return start


@pytest.fixture
def gcp_env(fake: Any, tmp_path: Path, ssh_key: Path) -> dict[str, str]:
    """Settings that point tfrig at the module's fake Compute API (its `fake` fixture)."""
    return dict(fake.client_env(tmp_path, ssh_key))


@pytest.fixture
def ssh_env(ssh_key: Path, known_hosts: Path) -> dict[str, str]:
    """Settings that make tfrig use the test key and the test hosts' pinned host keys."""
    return {"INVOKE_TFRIG_SSH_KEY": str(ssh_key), "INVOKE_TFRIG_KNOWN_HOSTS": str(known_hosts)}


def read_until(proc: subprocess.Popen[str], text: str) -> str:
    """The process's output up to the line holding `text` (EOF first: an AssertionError with it)."""
    assert proc.stdout is not None
    seen = ""
    for line in proc.stdout:
        seen += line
        if text in line:
            return seen
    raise AssertionError(f"{text!r} never came; the output was:\n{seen}")


def json_of(text: str) -> Any:
    import json

    return json.loads(text)


def json_docs(text: str) -> list[Any]:
    """Every JSON document printed one after another (each task of a chain prints its own)."""
    import json

    decoder, docs, index = json.JSONDecoder(), [], 0
    while index < len(text):
        if text[index].isspace():
            index += 1
            continue
        doc, index = decoder.raw_decode(text, index)
        docs.append(doc)
    return docs


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    """TensorFlow's CPU wheels for Python 3.11, downloaded once per machine by .ci/run."""
    folder = Path(os.environ.get("TFRIG_WHEELHOUSE", "/var/cache/tfrig-ci/wheelhouse"))
    if not list(folder.glob("tensorflow-2.21.0-*.whl")):
        missing(f"no TensorFlow wheel in {folder}; .ci/run fills it with pip download")
    return folder


@pytest.fixture(scope="session")
def tf_venv(
    sshd_factory: Any, ssh_key: Path, known_hosts: Path, wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A TensorFlow CPU venv made once per run by tfrig itself (tf.install on a stock-image host,
    from the wheelhouse), for the hosts of a job: mounted read-only at the same path on the same
    image, it runs there as where it was made, without a 2 GB install per host."""
    folder = tmp_path_factory.mktemp("tf-venv")
    os.chmod(folder, 0o777)  # the host's user makes the venv in it
    host = sshd_factory(volumes_extra={str(wheelhouse): "/wheelhouse"}, writable={str(folder): TF_VENV})
    env = {
        "INVOKE_TFRIG_SSH_KEY": str(ssh_key),
        "INVOKE_TFRIG_KNOWN_HOSTS": str(known_hosts),
        "TFRIG_STATE_DIR": str(tmp_path_factory.mktemp("venv-state")),
    }
    made = run_cli("tf.install", "-H", host.spec(), "--find-links", "/wheelhouse", "--no-index", env=env, timeout=900)
    assert made.code == 0, made.text
    assert "TensorFlow 2.21.0 installed (with uv)" in made.out, made.text  # uv from the wheelhouse, pinned
    host.container.remove(force=True)
    return folder


TF_VENV = "/home/tfrig/tf-venv"  # tf.venv's default (~/tf-venv) for the stand-in's user
