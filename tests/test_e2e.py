"""The whole chain as a user types it, against the fake Compute API whose VMs are real: each insert
starts a Debian sshd container published on its own loopback address, reported as the VM's natIP,
with the user from the ssh-keys metadata made as Google's guest agent makes it."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DEADLINE, ROOT, free_port, json_of, read_until, start_cli, track
from tests.fakegce import IAP_SSH_RULE, FakeCompute
from tfrig import state

pytestmark = pytest.mark.slow
ZONES = ["us-central1-a", "us-central1-b"]


@pytest.fixture
def vm_mounts() -> dict[str, str]:
    """Folders of this machine a test mounts read-only into each VM it creates (source -> target)."""
    return {}


@pytest.fixture
def vm_options() -> dict[str, Any]:
    """How a test wants its VMs started (sshd_factory's options), e.g. booted by systemd."""
    return {}


@pytest.fixture
def cloud(
    docker_client: Any,
    ssh_key: Path,
    wheelhouse: Path,
    sshd_factory: Any,
    vm_mounts: dict[str, str],
    vm_options: dict[str, Any],
) -> Iterator[FakeCompute]:
    api = FakeCompute()
    api.offer("nvidia-tesla-t4", ZONES)
    vms = api.vms

    baked: list[str] = []

    def make_vm(name: str, zone: str, body: dict[str, Any]) -> str:
        # Its host keys are not pinned for the test: tfrig must find them in the guest attributes.
        options = dict(vm_options)
        mounts = {str(wheelhouse): "/wheelhouse", **vm_mounts, **options.pop("volumes_extra", {})}
        source = body["disks"][0]["initializeParams"].get("sourceImage", "")
        image = api.image_of(source)
        if image is not None:  # one of the project's own images: what gcp.bake's VM had on its disk
            options["image"] = f"local/tfrig-baked:{image['name']}"
        host = sshd_factory(volumes_extra=mounts, pin=False, **options)
        vms[name] = host
        if image is not None:  # a new instance: its guest agent makes it SSH host keys of its own
            code, output = host.exec("rm -f /etc/ssh/ssh_host_* && ssh-keygen -A && kill -HUP 1")
            assert code == 0, output
            host.wait_for_ssh()
        if api.oslogin_on(body):
            # Its sshd takes only the keys imported through OS Login, per POSIX user (a real one asks
            # the metadata server for them); ssh-keys metadata counts for nothing there.
            code, output = host.exec(
                "mkdir -p /etc/ssh/oslogin && echo 'AuthorizedKeysFile /etc/ssh/oslogin/%u' "
                "> /etc/ssh/sshd_config.d/00-oslogin.conf && kill -HUP 1"
            )
            assert code == 0, output
            host.wait_for_ssh()
            oslogin_sync(name)
            return host.address
        keys = next(item["value"] for item in body["metadata"]["items"] if item["key"] == "ssh-keys")
        user = keys.split(":", 1)[0]
        code, output = host.exec(  # an image baked from a VM has the user already
            f"{{ id -u {user} >/dev/null 2>&1 || useradd -m -s /bin/bash -p '*' {user}; }} "
            f"&& echo '{user} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/{user}"
        )
        assert code == 0, output
        return host.address

    def oslogin_sync(name: str) -> None:
        """The OS Login users and their unexpired keys on the VM now; sudo (google-sudoers) only
        for accounts with roles/compute.osAdminLogin."""
        admins = None if api.oslogin_admins is None else {api.posix_user(a) for a in api.oslogin_admins}
        for user in api.oslogin_keys:
            keys = "".join(key + "\n" for key in api.keys_of(user))
            groups = "-G google-sudoers " if admins is None or user in admins else ""
            code, output = vms[name].exec(
                f"id -u {user} >/dev/null 2>&1 || useradd -m -s /bin/bash -p '*' {groups}{user}; "
                f"printf %s {shlex.quote(keys)} > /etc/ssh/oslogin/{user}"
            )
            assert code == 0, output

    api.vm_factory = make_vm
    api.oslogin_sync = oslogin_sync
    # Its address on the network the VMs share, as a VPC's internal address.
    api.vm_internal_address = lambda name: vms[name].internal_address()
    api.vm_host_keys = lambda name: [tuple(line.split()[1:3]) for line in vms[name].host_keys()]
    api.vm_cleanup = lambda name: vms.pop(name).container.remove(force=True)

    def bake(image: str, vm: str) -> int:
        """The VM's disk as an image: its container committed (mounted folders are not its disk)."""
        vms[vm].container.commit(repository="local/tfrig-baked", tag=image)
        baked.append(image)
        return int(docker_client.images.get(f"local/tfrig-baked:{image}").attrs["Size"])

    api.image_factory = bake
    yield api
    api.close()
    for image in baked:
        with contextlib.suppress(Exception):  # its VMs' containers are gone with sshd_factory's teardown
            docker_client.images.remove(f"local/tfrig-baked:{image}", force=True)


@pytest.fixture
def env(cloud: FakeCompute, tmp_path: Path, ssh_key: Path) -> dict[str, str]:
    return {**cloud.client_env(tmp_path, ssh_key), "INVOKE_TF_FIND_LINKS": "/wheelhouse"}


def inserts(cloud: FakeCompute) -> list[str]:
    return [p for p in cloud.paths("POST") if p.endswith("/instances")]


def test_create_install_verify_then_work_on_the_vm(tfrig, cloud, env, tmp_path):
    result = tfrig("gcp.create", "--yes", "tf.install", "--no-index", "tf.verify", env=env)
    assert result.code == 0, result.text
    assert "created tfrig-alice in us-central1-a" in result.out
    assert "target: tfrig-alice (tf.install)" in result.out
    assert "[tfrig-alice] TensorFlow 2.21.0 installed" in result.out
    assert "[tfrig-alice] matmul on /job:localhost/replica:0/task:0/device:CPU:0: correct" in result.out
    assert "[tfrig-alice] no GPU: no NVIDIA driver or GPU: TensorFlow found no CUDA driver on this host" in result.out
    vm = cloud.vms["tfrig-alice"]
    assert vm.exec("test -x /home/alice/tf-venv/bin/python")[0] == 0

    # A later run reaches it by name: the same chain changes nothing.
    again = tfrig("gcp.create", "--yes", "tf.install", "--no-index", env=env)
    assert "tfrig-alice exists in us-central1-a (created by tfrig): using it" in again.out
    assert "already done: TensorFlow 2.21.0" in again.out
    assert len(inserts(cloud)) == 1

    ran = tfrig("gcp.exec", "--cmd", "python -c 'import tensorflow as tf; print(tf.__version__)'", env=env)
    assert ran.code == 0 and "2.21.0" in ran.out
    assert tfrig("gcp.exec", "--cmd", "exit 3", env=env).code == 3

    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "train.py").write_text("print('training')\n")
    (project / "data" / "x.csv").write_text("1,2\n")
    assert tfrig("gcp.put", str(project), "--destination", "work", env=env).code == 0
    assert tfrig("gcp.exec", "--cmd", "cd work && python train.py > out.txt", env=env).code == 0
    refused = tfrig("gcp.put", str(project), "--destination", "work", env=env)
    assert refused.code == 1 and "tfrig-alice:work exists; pass --force" in refused.err
    fetched = tmp_path / "fetched"
    assert tfrig("gcp.get", "work", "--destination", str(fetched), env=env).code == 0
    assert (fetched / "out.txt").read_text() == "training\n" and (fetched / "data" / "x.csv").read_text() == "1,2\n"
    # Two copies at once, each way: each carries its own files, and no archive is left there.
    other = tmp_path / "other"
    other.mkdir()
    (other / "mine.txt").write_text("other\n")
    puts = [
        start_cli("gcp.put", str(folder), "--destination", destination, env=env)
        for folder, destination in ((project, "work-a"), (other, "work-b"))
    ]
    assert [put.communicate(timeout=300) and put.returncode for put in puts] == [0, 0]
    assert (
        vm.exec("cd /home/alice && test -e work-a/train.py && test ! -e work-a/mine.txt && test ! -e work-b/train.py")[
            0
        ]
        == 0
    )
    gets = [
        start_cli("gcp.get", source, "--destination", str(tmp_path / f"got-{source}"), env=env)
        for source in ("work-a", "work-b")
    ]
    assert [get.communicate(timeout=300) and get.returncode for get in gets] == [0, 0]
    assert (tmp_path / "got-work-b" / "mine.txt").read_text() == "other\n"
    assert not (tmp_path / "got-work-b" / "train.py").exists() and (tmp_path / "got-work-a" / "train.py").exists()
    assert vm.exec("cd /home/alice && ls -a | grep -q tfrig-upload || ls -a | grep -q tfrig-download")[0] == 1
    # Files in the wrong place: one line each, nothing made or clobbered.
    for argv, line in [
        (
            ["gcp.put", str(project / "train.py"), "--destination", "no/such/train.py"],
            "tfrig-alice:no/such/train.py: its folder does not exist there; create it first, or name another.",
        ),
        (
            ["gcp.put", str(project / "train.py"), "--destination", "work", "--force"],
            "tfrig-alice:work is a folder; name the file, e.g. work/train.py.",
        ),
        (
            ["gcp.get", "work/out.txt", "--destination", str(fetched), "--force"],
            f"{fetched} is a folder here; --force overwrites a file, never a folder: name the file.",
        ),
        (
            ["gcp.get", "work/out.txt", "--destination", str(tmp_path / "no" / "such" / "out.txt")],
            f"{tmp_path / 'no' / 'such'} does not exist here; create it first, or name another destination.",
        ),
    ]:
        refused = tfrig(*argv, env=env)
        assert refused.code == 1 and refused.err.strip() == line, refused.text
    assert vm.exec("test -e /home/alice/no")[0] == 1 and not (tmp_path / "no").exists()

    written = tfrig("gcp.ssh-config", env=env)
    assert "wrote Host tfrig-alice" in written.out
    config = (tmp_path / ".ssh" / "config").read_text()
    assert f"Host tfrig-alice\n    HostName {vm.address}\n    User alice\n    Port 22\n" in config
    assert "already done" in tfrig("gcp.ssh-config", env=env).out

    # A tunnel to a service bound to the VM's loopback only.
    assert (
        tfrig(
            "gcp.exec",
            "--cmd",
            "nohup python -m http.server 8000 --bind 127.0.0.1 --directory work >/dev/null 2>&1 </dev/null &",
            env=env,
        ).code
        == 0
    )
    local = free_port()
    tunnel = track(
        subprocess.Popen(
            [sys.executable, "-m", "tfrig", "gcp.tunnel", "--port", "8000", "--local-port", str(local)],
            cwd=ROOT,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
    )
    try:
        assert tunnel.stdout is not None and "Ctrl-C closes it" in tunnel.stdout.readline()
        for _ in range(50):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{local}/train.py", timeout=5) as reply:
                    assert reply.read() == b"print('training')\n"
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("nothing answered through the tunnel")
    finally:
        tunnel.send_signal(signal.SIGINT)
        rest, _ = tunnel.communicate(timeout=DEADLINE)
    assert rest.strip() == "tunnel closed" and tunnel.returncode == 0  # Ctrl-C, said in one line

    down = tfrig("gcp.down", "--delete", "--yes", env=env)
    assert down.code == 0, down.text
    assert "deleted tfrig-alice" in down.out
    assert cloud.instances.get("us-central1-a") == {} and state.vms() == {}


def test_create_then_gpu_setup_stops_with_the_no_gpu_diagnosis(tfrig, cloud, env):
    result = tfrig("gcp.create", "--yes", "--name", "tfrig-gpu", "gpu.setup", env=env)
    assert result.code == 1
    assert "created tfrig-gpu in us-central1-a" in result.out
    assert result.err.strip() == (
        "[tfrig-gpu] gpu.setup: no NVIDIA GPU on the PCI bus: nothing to install a driver for "
        "(on Compute Engine: create the VM with --gpu)."
    )
    assert state.find_vm("tfrig-gpu") is not None  # recorded: nothing billable is forgotten


def test_count_three_fans_out_and_one_dead_host_hides_nothing(tfrig, cloud, env):
    created = tfrig("gcp.create", "--yes", "--count", "3", "--json", env=env)
    assert created.code == 0, created.text
    names = [vm["name"] for vm in json_of(created.out)["vms"]]
    assert names == ["tfrig-alice-1", "tfrig-alice-2", "tfrig-alice-3"]
    cloud.vms["tfrig-alice-2"].container.stop(timeout=1)

    result = tfrig("tf.install", "-H", "tfrig-alice-*", "--no-index", "--json", env=env)
    assert result.code == 1
    results = {r["host"]: r for r in json_of(result.out)["results"]}
    assert results["tfrig-alice-1"]["ok"] and results["tfrig-alice-3"]["ok"]
    assert results["tfrig-alice-1"]["tensorflow"] == "2.21.0"
    assert not results["tfrig-alice-2"]["ok"] and "can't connect" in results["tfrig-alice-2"]["error"]
    assert "tf.install failed on 1 of 3 hosts: tfrig-alice-2" in result.err


def test_interrupted_during_tf_install_then_resumed_does_nothing_twice(cloud, env, state_dir):
    command = [sys.executable, "-m", "tfrig", "gcp.create", "--yes", "tf.install", "--no-index"]
    run_env = {**os.environ, **env, "TFRIG_STATE_DIR": str(state_dir)}
    first = track(
        subprocess.Popen(
            command,
            cwd=ROOT,
            env=run_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    )
    # The point the test controls: pip is running on the VM.
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        vm = cloud.vms.get("tfrig-alice")
        if vm is not None and vm.exec("pgrep -f 'm [p]ip install'")[0] == 0:
            break
        time.sleep(0.2)
    else:
        first.kill()
        pytest.fail("pip never started on the VM")
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=DEADLINE)
    vm.exec("pkill -f 'm [p]ip install'")

    second = subprocess.run(
        command, cwd=ROOT, env=run_env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600
    )
    assert second.returncode == 0, second.stdout + second.stderr
    assert "tfrig-alice exists in us-central1-a (created by tfrig): using it" in second.stdout
    assert "creating venv" not in second.stdout  # the venv from the first run is used
    assert "installing tensorflow==2.21.0" in second.stdout and "TensorFlow 2.21.0 installed" in second.stdout
    assert len(inserts(cloud)) == 1


def test_a_vm_is_reached_only_with_the_host_keys_its_guest_agent_published(tfrig, cloud, env, state_dir):
    created = tfrig("gcp.create", "--yes", "--name", "tfrig-keys", "driver.status", env=env)
    assert created.code == 0, created.text
    vm = cloud.vms["tfrig-keys"]
    pinned = (state_dir / "known_hosts").read_text().splitlines()
    assert sorted(pinned) == sorted(vm.host_keys())  # from getGuestAttributes, before any connection
    # Created with guest attributes on, so its guest agent could publish them at first boot.
    (resource,) = [vms["tfrig-keys"] for vms in cloud.instances.values() if "tfrig-keys" in vms]
    assert {"key": "enable-guest-attributes", "value": "TRUE"} in resource["metadata"]["items"]

    deleted = tfrig("gcp.delete", "--name", "tfrig-keys", "--yes", env=env)
    assert deleted.code == 0, deleted.text
    assert not any(line.startswith(f"{vm.address} ") for line in (state_dir / "known_hosts").read_text().splitlines())


def test_a_vm_showing_another_key_than_it_published_is_refused(tfrig, cloud, env, tmp_path):
    key = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    cloud.vm_host_keys = lambda name: [tuple(key.with_suffix(".pub").read_text().split()[:2])]
    created = tfrig("gcp.create", "--yes", "--name", "tfrig-mitm", "driver.status", env=env)
    assert created.code != 0 and "Traceback" not in created.text
    assert "tfrig-mitm: the host key of" in created.err and "has CHANGED" in created.err
    assert state.find_vm("tfrig-mitm") is not None  # it bills: recorded, with the way to delete it


def test_a_vm_whose_keys_never_appear_is_refused_unless_accept_new(tfrig, cloud, env):
    cloud.vm_host_keys = lambda name: []
    quick = {**env, "INVOKE_GCP_SSH_TIMEOUT": "2"}
    refused = tfrig("gcp.create", "--yes", "--name", "tfrig-silent", env=quick)
    assert refused.code != 0 and "Traceback" not in refused.text
    assert refused.err.strip().splitlines()[-1] == (
        "tfrig-silent runs and is billed, but its guest agent published no SSH host keys (guest attributes "
        "hostkeys/) and its serial console showed none, so its key can't be checked; it is recorded: set "
        "tfrig.host_keys: accept-new to trust its first key, or delete it with `inv gcp.delete --name tfrig-silent "
        "--yes`."
    )
    trusted = tfrig(
        "gcp.create",
        "--yes",
        "--name",
        "tfrig-silent",
        "driver.status",
        env={**quick, "INVOKE_TFRIG_HOST_KEYS": "accept-new"},
    )
    assert trusted.code == 0, trusted.text
    assert "trusting the key it shows first (tfrig.host_keys: accept-new)" in trusted.text


def test_with_guest_attributes_off_by_policy_the_keys_come_from_the_serial_console(tfrig, cloud, env, state_dir):
    cloud.policies["compute.disableGuestAttributesAccess"] = True
    created = tfrig("gcp.create", "--yes", "--name", "tfrig-console", "driver.status", env=env)
    assert created.code == 0, created.text
    assert "tfrig-console: guest attributes are off in project tfrig-test (an organization policy)" in created.out
    assert "tfrig-console: SSH host keys from its serial console (printed by cloud-init)" in created.out
    pinned = (state_dir / "known_hosts").read_text().splitlines()
    assert sorted(pinned) == sorted(cloud.vms["tfrig-console"].host_keys())  # before any connection
    assert "GET /zones/us-central1-a/instances/tfrig-console/serialPort" in cloud.paths()


def test_with_guest_attributes_off_and_no_keys_on_the_console_the_vm_is_named_and_kept(tfrig, cloud, env):
    cloud.policies["compute.disableGuestAttributesAccess"] = True
    quick = {**env, "INVOKE_GCP_SSH_TIMEOUT": "3"}
    refused = tfrig("gcp.create", "--yes", "--name", "tfrig-debian", "--image", "debian-12", env=quick)
    assert refused.code != 0 and "Traceback" not in refused.text
    assert refused.err.strip().splitlines()[-1] == (
        "tfrig-debian runs and is billed, but project tfrig-test's organization policy turns guest attributes off "
        "(constraints/compute.disableGuestAttributesAccess) and its serial console showed none (Ubuntu's images "
        "print them there through cloud-init), so its key can't be checked; it is recorded: create it from an "
        "Ubuntu image (--image ubuntu-24.04), set tfrig.host_keys: accept-new to trust its first key, or delete it "
        "with `inv gcp.delete --name tfrig-debian --yes`."
    )
    assert state.find_vm("tfrig-debian") is not None


GCLOUD_STAND_IN = ROOT / "tests" / "testbed" / "bin"


def company_project(cloud: FakeCompute, env: dict[str, str], account: str) -> dict[str, str]:
    """A project under Google's foundation policies: OS Login required (and on), no external IPs,
    guest attributes off, Shielded VMs; SSH only from IAP's range; the user's gcloud account; tfrig
    reaching its VMs through IAP (the gcloud stand-in on PATH, its calls logged)."""
    cloud.project_metadata["enable-oslogin"] = "TRUE"
    cloud.firewalls = [dict(IAP_SSH_RULE)]
    cloud.policies.update(
        {
            "compute.requireOsLogin": True,
            "compute.vmExternalIpAccess": True,
            "compute.disableGuestAttributesAccess": True,
            "compute.requireShieldedVm": True,
        }
    )
    folder = Path(env["HOME"]) / ".config" / "gcloud"
    (folder / "configurations").mkdir(parents=True, exist_ok=True)
    (folder / "active_config").write_text("work\n")
    (folder / "configurations" / "config_work").write_text(f"[core]\naccount = {account}\n")
    return {
        **env,
        "INVOKE_GCP_SSH_VIA": "iap",
        "INVOKE_GCP_SECURE_BOOT": "true",
        "PATH": f"{GCLOUD_STAND_IN}:{os.environ['PATH']}",
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE": f"{cloud.endpoint}/compute/v1/",
        "TFRIG_TEST_GCLOUD_LOG": str(Path(env["HOME"]) / "gcloud.log"),
    }


def test_a_company_project_create_install_verify_through_os_login_and_iap(tfrig, cloud, env):
    company = company_project(cloud, env, "alice@example.com")
    result = tfrig("gcp.create", "--yes", "--no-external-ip", "tf.install", "--no-index", "tf.verify", env=company)
    assert result.code == 0, result.text
    assert "logging in as alice_example_com" in result.out
    assert "[tfrig-alice] TensorFlow 2.21.0 installed" in result.out
    assert "[tfrig-alice] matmul on /job:localhost/replica:0/task:0/device:CPU:0: correct" in result.out
    vm = cloud.vms["tfrig-alice"]
    assert vm.exec("test -x /home/alice_example_com/tf-venv/bin/python")[0] == 0
    record = state.vms()["tfrig-alice"]
    assert record["address"] is None and record["user"] == "alice_example_com" and record["ssh_via"] == "iap"
    tunnels = Path(company["TFRIG_TEST_GCLOUD_LOG"]).read_text().splitlines()
    assert tunnels and set(tunnels) == {
        "compute start-iap-tunnel tfrig-alice 22 --listen-on-stdin --zone=us-central1-a --project=tfrig-test "
        "--verbosity=warning"
    }
    # The VM takes only the keys imported through OS Login: once its key expires, a later run imports
    # it again before connecting.
    cloud.oslogin_keys["alice_example_com"].clear()
    cloud.oslogin_sync("tfrig-alice")
    refused = tfrig("gcp.exec", "--cmd", "id -un", env=company)  # tfrig's record still says a day
    assert refused.code != 0 and "Traceback" not in refused.text
    state.record_vm("tfrig-alice", oslogin_expires=int(time.time()) + 60)
    ran = tfrig("gcp.exec", "--cmd", "id -un", env=company)
    assert ran.code == 0 and "alice_example_com" in ran.out, ran.text
    # gcp.ssh and ~/.ssh/config go the same way.
    shown = tfrig("--dry", "gcp.ssh", env=company)
    assert "-oProxyCommand=gcloud compute start-iap-tunnel tfrig-alice 22 --listen-on-stdin" in shown.out
    assert shown.out.strip().endswith(f"alice_example_com@{record['internal_address']}")


def test_iap_without_its_firewall_rule_is_refused_before_the_create(tfrig, cloud, env):
    company = company_project(cloud, env, "alice@example.com")
    cloud.firewalls = []
    refused = tfrig("gcp.create", "--yes", "--no-external-ip", env=company)
    assert refused.code == 1
    assert (
        refused.err.strip()
        .splitlines()[-1]
        .startswith(
            "The firewall of network default does not admit SSH through IAP (tcp:22 from 35.235.240.0/20) to tfrig's "
            "VMs: no rule that applies to every VM admits IAP's range 35.235.240.0/20"
        )
    )
    assert inserts(cloud) == [] and cloud.oslogin_keys == {}


def test_iap_without_gcloud_is_one_line_before_anything_changes(tfrig, cloud, env, tmp_path):
    (tmp_path / "no-gcloud").mkdir()
    company = {**company_project(cloud, env, "alice@example.com"), "PATH": str(tmp_path / "no-gcloud")}
    refused = tfrig("gcp.create", "--yes", "--no-external-ip", env=company)
    assert refused.code == 1
    assert (
        refused.err.strip()
        .splitlines()[-1]
        .startswith("gcp.ssh_via: iap runs `gcloud compute start-iap-tunnel`, and gcloud is not on PATH")
    )
    assert cloud.calls == []


def test_a_company_project_gpu_setup_through_os_login_and_iap(tfrig, cloud, env, vm_options, nvidia_site):
    """The driver installed where OS Login is required and there are no external IPs, through IAP,
    with sudo from OS Login's admin role. (No Shielded VM here: the stand-in has no Secure Boot, and
    tfrig's .run driver is not signed for one. TensorFlow with CUDA wheels is not installed: the
    test bed's wheelhouse has the CPU ones.)"""
    nvidia_site.add("580.159.04")
    vm_options.update(
        gpu="t4",
        restart_policy={"Name": "always"},
        volumes_extra={str(nvidia_site.headers_source): "/etc/apt/sources.list.d/tfrig-kernel-headers.list"},
    )
    company = company_project(cloud, env, "alice@example.com")
    del cloud.policies["compute.requireShieldedVm"]
    company = {**company, "INVOKE_GCP_SECURE_BOOT": "false", "INVOKE_DRIVER_DOWNLOAD_BASE": nvidia_site.base_url}
    result = tfrig("gcp.create", "--yes", "--no-external-ip", "gpu.setup", env=company)
    assert result.code == 0, result.text
    assert "logging in as alice_example_com" in result.out
    assert "[tfrig-alice] GPU ready: Tesla T4, driver 580.159.04" in result.out
    assert cloud.vms["tfrig-alice"].exec("test -e /usr/bin/nvidia-smi")[0] == 0
    tunnels = Path(company["TFRIG_TEST_GCLOUD_LOG"]).read_text().splitlines()
    assert tunnels and all(line.startswith("compute start-iap-tunnel tfrig-alice 22") for line in tunnels)


def test_os_login_without_the_admin_role_is_refused_with_the_role_to_ask_for(tfrig, cloud, env):
    company = company_project(cloud, env, "bob@example.com")
    cloud.oslogin_admins = set()  # roles/compute.osLogin only: no sudo
    refused = tfrig("gcp.create", "--yes", "--name", "tfrig-bob", "--no-external-ip", env=company)
    assert refused.code != 0 and "Traceback" not in refused.text
    assert refused.err.strip().splitlines()[-1] == (
        "tfrig-bob runs and is billed, and tfrig logs in as bob_example_com through OS Login, but sudo is refused "
        "there: OS Login gives sudo only with roles/compute.osAdminLogin (on the project or the VM), which the "
        "driver and Docker installs need: ask for it; it is recorded: or delete it with "
        "`inv gcp.delete --name tfrig-bob --yes`."
    )
    assert state.find_vm("tfrig-bob") is not None


def test_ctrl_c_in_exec_stops_the_remote_command_and_passes_its_exit_code_on(tfrig, cloud, env, state_dir):
    import time

    assert tfrig("gcp.create", "--yes", "--name", "tfrig-exec", env=env).code == 0
    vm = cloud.vms["tfrig-exec"]
    proc = track(
        subprocess.Popen(
            [sys.executable, "-m", "tfrig", "gcp.exec", "--name", "tfrig-exec", "--cmd", "echo started; sleep 297"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env, "TFRIG_STATE_DIR": str(state_dir)},
        )
    )
    deadline = time.monotonic() + DEADLINE
    while vm.exec("pgrep -f '^sleep 297'")[0] != 0:
        assert time.monotonic() < deadline and proc.poll() is None, "the command never started there"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err and "started" in out
    assert err.strip() == "stopping the command on every host (Ctrl-C again to leave it running)"
    assert vm.exec("pgrep -f '^sleep 297'")[0] == 1  # nothing left running there
    assert vm.exec("ls /home/*/.tfrig/jobs/exec-* 2>/dev/null")[1] == ""


def test_a_fleet_created_in_the_chain_trains_one_model_together(tfrig, cloud, env, vm_mounts, tf_venv, tmp_path):
    from tests.test_tfrun import TRAIN, _results

    # TensorFlow is the run's shared venv (made by tf.install), where tf.venv says it is.
    vm_mounts[str(tf_venv)] = "/opt/tf-venv"
    project = tmp_path / "fleet"
    project.mkdir()
    (project / "train.py").write_text(TRAIN)
    run = tfrig(
        "gcp.create",
        "--yes",
        "--count",
        "2",
        "tf.install",
        "--no-index",
        "tf.run",
        "--script",
        "train.py",
        "--folder",
        str(project),
        env={**env, "INVOKE_TF_VENV": "/opt/tf-venv"},
        timeout=600,
    )
    assert run.code == 0, run.text
    for name in ("tfrig-alice-1", "tfrig-alice-2"):
        assert f"[{name}] already done: TensorFlow 2.21.0 in venv /opt/tf-venv" in run.out
    inner = [cloud.vms[name].internal_address() for name in ("tfrig-alice-1", "tfrig-alice-2")]
    assert (state.find_vm("tfrig-alice-2") or {}).get("internal_address") == inner[1]
    assert f"[tfrig-alice-1] worker 0 (chief) at {inner[0]}:12345" in run.out
    assert f"[tfrig-alice-2] worker 1 at {inner[1]}:12345" in run.out
    results = _results(run.out)
    assert sorted(results) == ["tfrig-alice-1", "tfrig-alice-2"]
    assert results["tfrig-alice-1"]["weights"] == results["tfrig-alice-2"]["weights"]
    assert all(r["workers"] == 2 and r["steps"] == 3 for r in results.values())
    assert cloud.vms["tfrig-alice-1"].exec("test -s /home/alice/tfrig-runs/fleet/model.keras")[0] == 0


def test_a_tf_run_worker_lost_to_a_preemption_is_reported_as_that(tfrig, cloud, env, vm_mounts, tf_venv, tmp_path):
    vm_mounts[str(tf_venv)] = "/opt/tf-venv"
    project = tmp_path / "long"
    project.mkdir()
    (project / "train.py").write_text("import time\nprint('training', flush=True)\ntime.sleep(600)\n")
    created = tfrig("gcp.create", "--yes", "--spot", env=env)
    assert created.code == 0, created.text
    zone = (state.find_vm("tfrig-alice") or {})["zone"]
    run_env = {**env, "INVOKE_TF_VENV": "/opt/tf-venv"}
    proc = start_cli(
        "tf.run",
        "--hosts",
        "tfrig-alice",
        "--script",
        "train.py",
        "--folder",
        str(project),
        env=run_env,
        stderr=subprocess.STDOUT,
    )
    try:
        read_until(proc, "training")
        # Compute Engine takes the Spot VM back: its preemption operation, and its shutdown ends sshd.
        cloud.preempt(zone, "tfrig-alice")
        cloud.vms["tfrig-alice"].exec("pkill -KILL sshd")
        out, _ = proc.communicate(timeout=DEADLINE)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert "Traceback" not in out
    assert (
        "[tfrig-alice] worker 0 failed (its Spot VM was preempted: `inv gcp.start --name tfrig-alice` brings it "
        "back where there is room)" in out
    )


def test_idle_stop_where_no_systemd_runs_is_one_line_and_the_vm_stays_recorded(tfrig, cloud, env):
    # The stand-in VM, unlike a stock image, runs no systemd: the agent (a timer) can't be set.
    created = tfrig("gcp.create", "--yes", "--idle-stop", "30m", env=env)
    assert created.code == 1
    assert (
        "[tfrig-alice] idle stop not set: no systemd runs there, and the idle-stop agent is a systemd timer: "
        "stop the VM yourself with `inv gcp.stop` when it is done." in created.err
    )
    assert created.err.strip().splitlines()[-1] == (
        "idle stop not set on 1 of 1 VM(s), which run and are recorded; `inv gcp.stop --name tfrig-alice` when done."
    )
    assert (state.find_vm("tfrig-alice") or {}).get("status") == "RUNNING"
    vm = cloud.vms["tfrig-alice"]
    assert vm.exec("test -e /usr/local/lib/tfrig/idle-stop")[0] != 0

    later = tfrig("gcp.idle-stop", "--after", "2h", env=env)
    assert later.code == 1 and later.err.strip().splitlines() == [
        "[tfrig-alice] gcp.idle-stop: no systemd runs there, and the idle-stop agent is a systemd timer: "
        "stop the VM yourself with `inv gcp.stop` when it is done."
    ]
    listed = tfrig("gcp.list", "--json", env=env)
    assert [(vm["name"], vm["idle_stop"]) for vm in json_of(listed.out)] == [("tfrig-alice", "off")]


def test_create_with_idle_stop_on_a_vm_booted_by_systemd_sets_the_agent(tfrig, cloud, env, vm_options):
    from tests.conftest import SYSTEMD_IMAGE

    vm_options.update(
        image=SYSTEMD_IMAGE, volumes_extra={"/sys/fs/cgroup": "/sys/fs/cgroup"}, tmpfs={"/run": "", "/run/lock": ""}
    )
    created = tfrig("gcp.create", "--yes", "--idle-stop", "30m", env=env)
    assert created.code == 0, created.text
    assert "[tfrig-alice] idle stop set: powers off after 30m with GPUs under 10%" in created.out
    vm = cloud.vms["tfrig-alice"]
    assert vm.exec("systemctl is-active tfrig-idle-stop.timer") == (0, "active\n")
    assert vm.exec("cat /etc/tfrig/idle-stop.conf")[1].startswith("IDLE_SECONDS=1800\nGPU_THRESHOLD=10")
    listed = tfrig("gcp.list", "--json", env=env)
    assert [(r["name"], r["idle_stop"]) for r in json_of(listed.out)] == [("tfrig-alice", "30m")]


def test_a_vm_without_an_external_ip_is_reached_at_its_internal_address(tfrig, cloud, env):
    """As from a machine inside the VPC: no access config, so no external IP; its host keys are
    pinned and SSH goes to its address on the network the VMs share, for every later task."""
    inside = {**env, "INVOKE_GCP_SSH_VIA": "internal"}
    made = tfrig("gcp.create", "--yes", "--no-external-ip", "driver.status", env=inside)
    assert made.code == 0, made.text
    vm = cloud.vms["tfrig-alice"]
    internal = vm.internal_address()
    assert f"created tfrig-alice in us-central1-a (n1-standard-4, 1 x nvidia-tesla-t4) at {internal}" in made.out
    assert "target: tfrig-alice (driver.status)" in made.out
    record = state.vms()["tfrig-alice"]
    assert record["address"] is None and record["internal_address"] == internal
    ran = tfrig("gcp.exec", "--cmd", "echo reached", env=inside)
    assert ran.code == 0 and "reached" in ran.out, ran.text
    assert tfrig("gcp.delete", "--yes", env=inside).code == 0


def test_a_baked_image_makes_vms_ready_at_boot(tfrig, cloud, env, vm_options, nvidia_site):
    """gcp.bake: the driver and TensorFlow installed once, the VM's disk made an image in a family,
    the VM deleted; a VM created from the family finds gpu.setup and tf.install done (no install,
    no reboot); gcp.images lists it with what is on it, and --delete removes it."""
    nvidia_site.add("580.159.04")
    vm_options.update(
        gpu="t4",
        boot_lock=0,
        restart_policy={"Name": "always"},
        volumes_extra={str(nvidia_site.headers_source): "/etc/apt/sources.list.d/tfrig-kernel-headers.list"},
    )
    env = {**env, "INVOKE_DRIVER_DOWNLOAD_BASE": nvidia_site.base_url}
    # The CPU build: the test bed's wheelhouse has no CUDA wheels.
    made = tfrig(
        "gcp.create", "--yes", "--name", "tfrig-bake", "gpu.setup", "tf.install", "--cpu", "--no-index", env=env
    )
    assert made.code == 0, made.text
    assert "[tfrig-bake] GPU ready: Tesla T4, driver 580.159.04" in made.out
    # tf.install comes later in the chain: its venv and wheels were made ready while the driver installed
    fetching = made.out.index("[tfrig-bake] meanwhile: fetching tensorflow==2.21.0 for tf.install into the uv cache")
    assert fetching < made.out.index("[tfrig-bake] step build-tools")
    fetched = made.out.index("[tfrig-bake] TensorFlow's wheels fetched alongside the driver (")
    assert fetched < made.out.index("[tfrig-bake] GPU ready")
    installed = made.out[made.out.index("target: tfrig-bake (tf.install)") :]
    assert "creating venv" not in installed and "TensorFlow 2.21.0 installed (with uv)" in installed

    baked = tfrig("gcp.bake", "--name", "tfrig-bake", "--family", "tf-t4", "--delete", "--yes", env=env)
    assert baked.code == 0, baked.text
    image = next(iter(cloud.images))
    assert image.startswith("tf-t4-")
    assert (
        f"baked {image} (family tf-t4): driver 580.159.04, TensorFlow 2.21.0, Docker -; "
        "`inv gcp.create --image-family tf-t4` makes VMs from it"
    ) in baked.out, baked.out
    assert cloud.images[image]["labels"] == {
        "tfrig-baked": "true",
        "tfrig-driver": "580-159-04",
        "tfrig-tensorflow": "2-21-0",
        "tfrig-docker": "none",
    }
    assert "tfrig-bake" not in cloud.vms and "deleted tfrig-bake" in baked.out

    listed = json_of(tfrig("gcp.images", "--json", env=env).out)
    assert [(r["image"], r["family"], r["driver"], r["tensorflow"]) for r in listed] == [
        (image, "tf-t4", "580.159.04", "2.21.0")
    ]
    assert listed[0]["stored_gb"] > 0

    fleet = tfrig(
        "gcp.create", "--yes", "--name", "tfrig-fleet", "--image-family", "tf-t4",
        "gpu.setup", "tf.install", "--cpu", "--no-index", env=env,
    )  # fmt: skip
    assert fleet.code == 0, fleet.text
    assert "[tfrig-fleet] already done: driver 580.159.04 loaded" in fleet.out
    assert "[tfrig-fleet] already done: TensorFlow 2.21.0" in fleet.out
    assert "step install" not in fleet.out and "rebooting" not in fleet.out and "installing" not in fleet.out
    source = cloud.instances["us-central1-a"]["tfrig-fleet"]["disks"][0]["initializeParams"]["sourceImage"]
    assert source == f"projects/{cloud.project}/global/images/family/tf-t4"

    assert tfrig("gcp.delete", "--name", "tfrig-fleet", "--yes", env=env).code == 0
    gone = tfrig("gcp.images", "--delete", image, "--yes", env=env)
    assert gone.code == 0, gone.text
    assert cloud.images == {} and f"deleted image {image}" in gone.err + gone.out
