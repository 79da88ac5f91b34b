"""tfrig's state can't take it down: damaged, unreadable or read-only state gives one line or keeps
working where nothing needs writing; the folder is private; logs hold no secrets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tfrig import state

DAMAGE = {
    "truncated": '{"vms": {"tfrig-alice": {"zone": "us-cen',
    "garbage": "\x00\x01 not json at all",
    "a list": "[1, 2, 3]",
    "records not a mapping": '{"vms": ["tfrig-alice"]}',
    "a record not a mapping": '{"vms": {"tfrig-alice": 3}}',
}


@pytest.mark.parametrize("content", list(DAMAGE.values()), ids=list(DAMAGE))
def test_a_damaged_state_file_is_one_line_naming_it_and_the_way_back(tfrig, state_dir: Path, content: str):
    state.record_vm("tfrig-alice", zone="us-central1-a", address="127.0.0.9")
    state.record_vm("tfrig-alice", status="RUNNING")  # a second write keeps the first as .bak
    (state_dir / "state.json").write_text(content)
    listed = tfrig("gpu.check", "-H", "tfrig-alice")
    assert listed.code == 1 and "Traceback" not in listed.text
    line = listed.err.strip()
    assert "\n" not in line and str(state_dir / "state.json") in line
    assert f"cp {state_dir / 'state.json.bak'} {state_dir / 'state.json'}" in line
    assert '"address": "127.0.0.9"' in (state_dir / "state.json.bak").read_text()


def test_a_state_path_that_is_a_folder_is_one_line(tfrig, state_dir: Path):
    (state_dir / "state.json").mkdir(parents=True)
    listed = tfrig("gpu.check", "-H", "tfrig-alice")
    assert listed.code == 1 and "Traceback" not in listed.text
    assert listed.err.strip().startswith(f"tfrig's state file {state_dir / 'state.json'} can't be read")


def test_user_at_host_targets_never_read_the_state(tfrig, state_dir: Path, tmp_path: Path):
    (state_dir).mkdir(parents=True)
    (state_dir / "state.json").write_text("garbage")
    checked = tfrig("gpu.check", "--input", "/dev/null", "-H", "me@127.0.0.1:1")
    assert "state file" not in checked.text
    reached = tfrig("driver.status", "-H", "me@127.0.0.1:1")
    assert reached.code == 1 and "can't connect" in reached.err and "state file" not in reached.err


def test_reads_work_on_a_read_only_state_folder(state_dir: Path):
    """gcp.list's own read and a VM reached by name, on a state folder mounted read-only (root
    can't write there either): no lock, no log, no cache needed."""
    state.record_vm("tfrig-alice", zone="us-central1-a", address="127.0.0.1", port=1, user="alice")
    read_only = ["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$1" "$1" && shift && exec "$@"', "sh"]
    reached = subprocess.run(
        [*read_only, str(state_dir), sys.executable, "-m", "tfrig", "driver.status", "-H", "tfrig-alice"],
        capture_output=True,
        text=True,
        env={**os.environ, "TFRIG_STATE_DIR": str(state_dir)},
        timeout=120,
    )
    assert reached.returncode == 1, reached.stdout + reached.stderr
    assert (
        reached.stderr.strip() == "[tfrig-alice] driver.status: can't connect: Unable to connect to port 1 on 127.0.0.1"
    )


def test_the_state_folder_and_its_files_are_private(state_dir: Path):
    state.record_vm("tfrig-alice", zone="us-central1-a")
    state.record_vm("tfrig-alice", status="RUNNING")
    assert state_dir.stat().st_mode & 0o777 == 0o700
    for name in ("state.json", "state.json.bak"):
        assert (state_dir / name).stat().st_mode & 0o777 == 0o600, name


@pytest.mark.parametrize(
    ("text", "kept", "secret"),
    [
        (
            "pip install --index-url https://alice:s3cr3t-tok@pypi.example/simple tf",
            "https://alice:***@pypi.example",
            "s3cr3t-tok",
        ),
        ("http://127.0.0.1:8888/lab?token=abcdef0123456789", "lab?token=***", "abcdef0123456789"),
        ("curl -u x https://user:pass@host/x password=hunter2 API_KEY=k-123", "password=***", "hunter2"),
        ("export API_KEY=k-123", "API_KEY=***", "k-123"),
        # jupyter server list --json
        ('{"base_url": "/", "token": "9f8e7d6c5b4a", "port": 8888}', '"token": "***"', "9f8e7d6c5b4a"),
        ("pip install --index-url https://ghp_t0k3nvalue@pkgs.example/simple x", "https://***@pkgs", "ghp_t0k3nvalue"),
        ("HF_TOKEN=hf_abcdef python train.py", "HF_TOKEN=***", "hf_abcdef"),
        ("export WANDB_API_KEY='w4ndb k3y'", "WANDB_API_KEY=***", "w4ndb"),
        ("AWS_SECRET_ACCESS_KEY=aws/s3cr3t+x", "AWS_SECRET_ACCESS_KEY=***", "aws/s3cr3t"),
    ],
)
def test_logs_never_hold_secrets(state_dir: Path, text: str, kept: str, secret: str):
    from invoke import Config, Context

    from tfrig.hosts.host import Host
    from tfrig.hosts.targets import LOCAL

    host = Host(Context(Config()), LOCAL)
    host.log("change", text, 0, f"output mentions {text}")
    logged = host._log_path.read_text()
    assert kept in logged and secret not in logged
    assert host._log_path.stat().st_mode & 0o777 == 0o600
    assert host._log_path.parent.stat().st_mode & 0o777 == 0o700


PLANTED = {
    "a record under another VM's name": (
        {"tfrig-alice": {"name": "tfrig-prod", "zone": "us-central1-a"}},
        "'tfrig-alice': it names another VM, 'tfrig-prod'",
    ),
    "an address that is an ssh option": (
        {"tfrig-alice": {"address": "-oProxyCommand=touch /tmp/x"}},
        "'tfrig-alice': address '-oProxyCommand=touch /tmp/x' is not one",
    ),
    "a zone that is a path": ({"tfrig-alice": {"zone": "../../x"}}, "'tfrig-alice': zone '../../x' is not one"),
    "a port that is text": ({"tfrig-alice": {"port": "22"}}, "'tfrig-alice': port is not a whole number"),
    "a key that is no VM name": ({"Tfrig Alice": {}}, "'Tfrig Alice': not a VM name"),
}


@pytest.mark.parametrize(("vms", "why"), list(PLANTED.values()), ids=list(PLANTED))
def test_a_record_tfrig_did_not_write_is_refused_on_read(tfrig, state_dir: Path, vms, why):
    """A hand-edited or planted record never becomes a VM to delete or a host to reach."""
    import json

    state_dir.mkdir(parents=True)
    (state_dir / "state.json").write_text(json.dumps({"vms": vms}))
    for argv in (["gcp.delete", "--yes", "--name", "tfrig-alice"], ["gpu.check", "-H", "tfrig-alice"]):
        refused = tfrig(*argv, env={"INVOKE_GCP_PROJECT": "tfrig-test"})
        assert refused.code == 1 and "Traceback" not in refused.text, refused.text
        assert refused.err.strip() == (
            f"tfrig's state file {state_dir / 'state.json'} has a record tfrig did not write ({why}): move it "
            "away to start anew; `inv gcp.list` still finds tfrig's VMs through the Compute API."
        )
