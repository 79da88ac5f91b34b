"""Two tfrig runs at once, as a user's scripts and terminals start them: real processes against the
fake Compute API and one state folder. A run that must wait for another is seen waiting (its line,
or the kernel's lock table), never guessed from a sleep."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DEADLINE, read_until, start_cli
from tests.fakegce import FakeCompute
from tfrig import state

INSERT_CALL = ("POST", r"/zones/[^/]+/instances$")


@pytest.fixture
def fake() -> Iterator[FakeCompute]:
    api = FakeCompute()
    api.offer("nvidia-tesla-t4", ["us-central1-a"])
    yield api
    api.close()


@pytest.fixture
def env(fake: FakeCompute, tmp_path: Path, ssh_key: Path, state_dir: Path) -> dict[str, str]:
    return {**fake.client_env(tmp_path, ssh_key), "TFRIG_STATE_DIR": str(state_dir)}


def start(env: dict[str, str], *argv: str) -> subprocess.Popen[str]:
    """A tfrig run going on beside the test (stopped at its end, as every start_cli is)."""
    return start_cli(*argv, env=env, stderr=subprocess.STDOUT)


def vms_in(fake: FakeCompute) -> set[str]:
    return {name for vms in fake.instances.values() for name in vms}


def beside_a_create_in_flight(fake: FakeCompute, env: dict[str, str], *argv: str) -> tuple[Any, str, Any, str]:
    """A create of tfrig-alice held at its insert, and `argv` started beside it and seen waiting
    for it; then the insert goes on. Both runs, ended, with their output."""
    fake.pause = INSERT_CALL
    creating = start(env, "gcp.create", "--yes", "--no-ssh-wait", "--name", "tfrig-alice")
    assert fake.paused.wait(DEADLINE), "the create never sent its insert"
    other = start(env, *argv)
    try:
        read_until(other, "tfrig-alice: waiting for gcp.create (pid")
    finally:
        fake.release.set()
    created, _ = creating.communicate(timeout=DEADLINE)
    other_out, _ = other.communicate(timeout=DEADLINE)
    return creating, created, other, other_out


def test_two_creates_of_one_name_make_one_vm_and_keep_its_record(fake, env):
    """The second waits for the first, then adopts its VM: the record is never dropped."""
    first, first_out, second, second_out = beside_a_create_in_flight(
        fake, env, "gcp.create", "--yes", "--no-ssh-wait", "--name", "tfrig-alice"
    )
    assert first.returncode == 0, first_out
    assert second.returncode == 0, second_out
    assert "exists in us-central1-a (created by tfrig): using it" in second_out
    assert vms_in(fake) == {"tfrig-alice"}
    assert state.vms()["tfrig-alice"]["status"] == "RUNNING"
    assert [p for p in fake.paths("POST") if p.endswith("/instances")] == ["POST /zones/us-central1-a/instances"]


def test_a_delete_waits_for_the_create_in_flight_then_deletes_what_it_made(fake, env):
    creating, created, deleting, deleted = beside_a_create_in_flight(
        fake, env, "gcp.delete", "--yes", "--name", "tfrig-alice"
    )
    assert creating.returncode == 0, created
    assert deleting.returncode == 0, deleted
    assert "deleted tfrig-alice (us-central1-a): nothing of it is billed any more" in deleted
    assert vms_in(fake) == set() and state.vms() == {}


def test_a_delete_that_waited_too_long_says_who_holds_the_vm(fake, env):
    fake.pause = INSERT_CALL
    creating = start(env, "gcp.create", "--yes", "--no-ssh-wait", "--name", "tfrig-alice")
    try:
        assert fake.paused.wait(DEADLINE), "the create never sent its insert"
        short = {**env, "INVOKE_GCP_OPERATION_TIMEOUT": "1", "INVOKE_GCP_RUNNING_TIMEOUT": "1"}
        deleting = start(short, "gcp.delete", "--yes", "--name", "tfrig-alice")
        out, _ = deleting.communicate(timeout=DEADLINE)
    finally:
        fake.release.set()
    assert deleting.returncode == 1, out
    last = out.strip().splitlines()[-1]
    assert last.startswith("tfrig-alice: gcp.create (pid ") and last.endswith(
        "still works on it after 2 s; run this again once it has ended."
    ), out
    assert creating.communicate(timeout=DEADLINE)[0] and creating.returncode == 0
    assert vms_in(fake) == {"tfrig-alice"} and "tfrig-alice" in state.vms()


def test_a_delete_after_a_create_cut_off_moments_ago_keeps_the_record(fake, env, tfrig):
    """No run holds the VM (its create was killed), no VM is there yet, but its insert may land:
    tfrig can't say "nothing billed", so it keeps the record and says when to look again."""
    state.record_vm(
        "tfrig-alice", project=fake.project, zone="us-central1-a", status="CREATING", since=time.time() - 30
    )
    deleted = tfrig("gcp.delete", "--yes", "--name", "tfrig-alice", env=env)
    assert deleted.code == 1, deleted.text
    assert (
        deleted.err.strip()
        .splitlines()[-1]
        .startswith("tfrig-alice is not in us-central1-a yet, but its create was cut off 30 s ago and may still land;")
    )
    assert state.vms()["tfrig-alice"]["status"] == "CREATING"
    state.record_vm("tfrig-alice", since=time.time() - 3600)  # long settled: gone, and forgotten
    assert tfrig("gcp.delete", "--yes", "--name", "tfrig-alice", env=env).code == 0
    assert state.vms() == {}


def blocked_on_a_lock(pid: int) -> bool:
    """Whether the process waits for an flock (a `->` line of /proc/locks names the waiter)."""
    return any(
        "->" in line and line.split()[2] == "FLOCK" and line.split()[5] == str(pid)
        for line in Path("/proc/locks").read_text().splitlines()
    )


def test_ssh_config_reads_and_writes_under_tfrigs_lock(env, tmp_path):
    """While another run holds the lock, ssh-config waits; what that run wrote meanwhile is kept."""
    config = tmp_path / ".ssh" / "config"
    config.parent.mkdir()
    config.write_text("Host work\n    HostName work.example\n")
    state.record_vm("tfrig-alice", address="127.0.0.9", user="alice", ssh_key="/k/id", port=22, zone="us-central1-a")
    with state.exclusive():
        writing = start(env, "gcp.ssh-config", "--name", "tfrig-alice")
        deadline = time.monotonic() + DEADLINE
        while not blocked_on_a_lock(writing.pid):
            assert writing.poll() is None, writing.communicate()[0]
            assert time.monotonic() < deadline, "ssh-config never waited for the lock"
            time.sleep(0.05)
        config.write_text(config.read_text() + "Host other\n    HostName other.example\n")
    out, _ = writing.communicate(timeout=DEADLINE)
    assert writing.returncode == 0, out
    text = config.read_text()
    assert "Host other\n" in text and "Host work\n" in text and "Host tfrig-alice\n" in text


def test_parallel_ssh_config_runs_keep_every_block(env, tmp_path):
    names = [f"tfrig-vm{i}" for i in range(8)]
    for i, name in enumerate(names):
        state.record_vm(name, address=f"127.0.0.{i + 2}", user="alice", ssh_key="/k/id", port=22, zone="us-central1-a")
    runs = [start(env, "gcp.ssh-config", "--name", name) for name in names]
    for run in runs:
        out, _ = run.communicate(timeout=DEADLINE)
        assert run.returncode == 0, out
    text = (tmp_path / ".ssh" / "config").read_text()
    assert [name for name in names if f"Host {name}\n" not in text] == []


def test_a_linked_ssh_config_stays_a_link(env, tfrig, tmp_path):
    dotfiles = tmp_path / "dotfiles" / "ssh_config"
    dotfiles.parent.mkdir()
    dotfiles.write_text("Host work\n")
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").symlink_to(dotfiles)
    state.record_vm("tfrig-alice", address="127.0.0.9", user="alice", ssh_key="/k/id", port=22, zone="us-central1-a")
    assert tfrig("gcp.ssh-config", env=env).code == 0
    assert (tmp_path / ".ssh" / "config").is_symlink()
    assert "Host tfrig-alice\n" in dotfiles.read_text()


def test_a_tunnel_refuses_a_local_port_another_program_holds(env, tfrig):
    """Else the tunnel would say it is open while the traffic, and Jupyter's token, go to that program."""
    import socket

    state.record_vm("tfrig-alice", address="127.0.0.9", user="alice", ssh_key="/k/id", port=22, zone="us-central1-a")
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = other.getsockname()[1]
        for argv in (
            ["gcp.tunnel", "--port", "6006", "--local-port", str(taken)],
            ["tf.jupyter", "-H", "alice@127.0.0.1:1", "--local-port", str(taken)],
        ):
            refused = tfrig(*argv, env=env)
            assert refused.code == 1, refused.text
            assert refused.err.strip().splitlines()[-1] == (
                f"--local-port {taken}: 127.0.0.1:{taken} here is taken (Address already in use); "
                "give a free one with --local-port, or stop what listens on it."
            )
