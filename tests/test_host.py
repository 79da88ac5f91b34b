"""The step engine: batched probes, dry-run changes, logs, targets and state."""

from __future__ import annotations

import json
import subprocess

import pytest
from invoke import Config, Context
from invoke.exceptions import Exit

from tfrig import state
from tfrig.hosts import targets
from tfrig.hosts.host import Host, StepFailed, parse_probe, probe_script, shell_path


def local_host(dry: bool = False) -> Host:
    return Host(Context(Config(overrides={"run": {"dry": dry}})), targets.LOCAL)


def test_probe_runs_every_command_in_one_shell_and_splits_the_answers():
    facts = local_host().probe({"ok": "echo hello; echo world", "fails": "echo oops >&2; exit 3", "empty": "true"})
    assert facts["ok"].out == "hello\nworld" and facts["ok"].ok
    assert facts["fails"].rc == 3 and facts["fails"].out == "oops"
    assert facts["empty"].out == "" and facts["empty"].rc == 0


def test_probe_output_parses_back_with_the_real_shell():
    script = probe_script({"a": "printf 'x\\n\\ny'", "b": "exit 7"})
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout
    assert {name: (f.rc, f.out) for name, f in parse_probe(out).items()} == {"a": (0, "x\n\ny"), "b": (7, "")}


def test_facts_run_under_dry_but_changes_do_not(tmp_path, capsys):
    marker = tmp_path / "changed"
    host = local_host(dry=True)
    assert host.fact("echo real").out == "real"
    host.change(f"touch {marker}")
    assert not marker.exists()
    assert f"[local] would run: touch {marker}" in capsys.readouterr().out


def test_a_failed_change_says_what_failed_and_where_the_log_is(state_dir):
    with pytest.raises(StepFailed) as failure:
        local_host().change("echo broken >&2; exit 4", what="the broken step")
    assert "the broken step failed (exit 4): broken" in str(failure.value)
    log = (state_dir / "logs" / "local.log").read_text()
    assert "change rc=4 $ echo broken >&2; exit 4" in log
    assert "    broken" in log


def test_shell_path_keeps_home_expandable():
    assert shell_path("~/miniconda3") == '"$HOME"/miniconda3'
    assert shell_path("/opt/a b") == "'/opt/a b'"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("host", [("host", None, None)]),
        ("alice@10.0.0.5:2222", [("10.0.0.5", "alice", 2222)]),
        ("a@h1, h2:22", [("h1", "a", None), ("h2", None, 22)]),
        ("[::1]:2200", [("::1", None, 2200)]),
    ],
    ids=["alias", "user-host-port", "list", "ipv6"],
)
def test_parse_hosts(spec, expected):
    assert [(t.host, t.user, t.port) for t in targets.parse_hosts(spec)] == expected


@pytest.mark.parametrize("spec", ["user@", "h:99999", "a b", " , "], ids=["no-host", "port", "space", "empty"])
def test_parse_hosts_refuses_bad_input_with_one_line(spec):
    with pytest.raises(Exit) as refused:
        targets.parse_hosts(spec)
    assert "\n" not in str(refused.value.message)


def test_target_order_flag_then_carried_then_config_then_local():
    config = Config(overrides={"tfrig": {"hosts": ""}})
    c = Context(config)
    assert targets.resolve(c) == [targets.LOCAL]
    fresh = Context(Config(overrides={"tfrig": {"hosts": "cfg@h"}}))
    assert [t.label for t in targets.resolve(fresh)] == ["cfg@h"]
    run = Context(Config(overrides={"tfrig": {"hosts": "cfg@h"}}))
    assert [t.label for t in targets.resolve(run, hosts="a@x,b@y")] == ["a@x", "b@y"]
    # A later task of the same run that names no host gets the carried one, not the config's.
    assert [t.label for t in targets.resolve(Context(run.config))] == ["a@x", "b@y"]


def test_hosts_finds_a_vm_in_the_state_by_name():
    state.record_vm("tfrig-alice", address="127.0.0.9", user="alice", zone="us-central1-a")
    c = Context(Config(overrides={"tfrig": {"hosts": ""}}))
    [target] = targets.resolve(c, hosts="tfrig-alice")
    assert (target.label, target.host, target.user) == ("tfrig-alice", "127.0.0.9", "alice")


def test_state_is_written_atomically_and_records_merge(state_dir):
    state.record_vm("vm1", zone="us-central1-a")
    state.record_vm("vm1", address="1.2.3.4")
    assert state.find_vm("vm1") == {"name": "vm1", "zone": "us-central1-a", "address": "1.2.3.4"}
    assert json.loads((state_dir / "state.json").read_text())["vms"]["vm1"]["zone"] == "us-central1-a"
    assert not list(state_dir.glob(".state-*"))
    assert state.forget_vm("vm1") and not state.forget_vm("vm1")


def test_hosts_may_name_vms_from_the_state_and_globs_of_them():
    for index in (1, 2, 3):
        state.record_vm(f"fleet-{index}", address=f"127.0.0.{index}", user="alice", port=22)
    assert [t.label for t in targets.parse_hosts("fleet-*")] == ["fleet-1", "fleet-2", "fleet-3"]
    assert [(t.host, t.user) for t in targets.parse_hosts("fleet-2,bob@other")] == [
        ("127.0.0.2", "alice"),
        ("other", "bob"),
    ]
    with pytest.raises(Exit, match="'nope-\\*' matches no VM in tfrig's state"):
        targets.parse_hosts("nope-*")


@pytest.mark.slow
def test_a_private_file_reaches_a_host_over_sftp_readable_by_its_user_only_and_is_removed(
    sshd_factory, ssh_key, known_hosts
):
    """What an index URL with a password travels in (tf.install, tf.jupyter): written over SFTP,
    never on a command line; 0600; gone once the command ends, failed or not."""
    from tfrig.hosts.host import connect

    remote = sshd_factory()
    config = Config(overrides={"tfrig": {"ssh_key": str(ssh_key), "known_hosts": str(known_hosts)}})
    target = targets.parse_hosts(remote.spec())[0]
    host = Host(connect(Context(config), target), target)
    shown = host.change(
        host.with_private_file("index-url = https://u:pw@x/simple\n", 'stat -c %a "$CONF"; cat "$CONF"', "CONF")
    )
    assert shown.splitlines() == ["600", "index-url = https://u:pw@x/simple"]
    with pytest.raises(StepFailed):
        host.change(host.with_private_file("secret\n", "exit 3", "CONF"))
    assert remote.exec("ls -A /home/tfrig/.tfrig | grep -c private")[1].strip() == "0"


@pytest.mark.slow
def test_commands_alongside_run_beside_the_tasks_own_over_one_connection_and_say_why_they_stopped(
    sshd_factory, ssh_key, known_hosts, state_dir
):
    """Host.alongside (tf.install's wheels fetched while the driver installs): its commands run
    while the task's own go on, on the same SSH connection; a failure stops the rest and is kept
    for wait() to say, never raised in its thread."""
    from tfrig.hosts.host import connect

    remote = sshd_factory()
    config = Config(overrides={"tfrig": {"ssh_key": str(ssh_key), "known_hosts": str(known_hosts)}})
    target = targets.parse_hosts(remote.spec())[0]
    host = Host(connect(Context(config), target), target)
    # The first waits for a file the task makes after starting it: run one after the other, it would time out.
    waits = "for i in $(seq 100); do [ -e /tmp/go ] && break; sleep 0.1; done; test -e /tmp/go && echo fetched"
    alongside = host.alongside([(waits, False), ("echo no index answers >&2; exit 3", False), ("echo never", False)])
    host.change("touch /tmp/go")
    alongside.wait()
    assert alongside.done and alongside.output == "fetched\n"
    assert alongside.failure == "no index answers"
    assert remote.exec("cat /tmp/never 2>/dev/null; echo $?")[1].strip() == "1"
    logged = (state.log_dir() / f"{remote.spec()}.log").read_text()
    assert logged.count(" alongside rc=") == 2  # the third never ran


def test_a_lock_wait_in_apts_output_is_named_for_its_lock_and_holder():
    from tfrig.hosts.progress import Tracker

    dpkg = Tracker("vm", "installing build tools")
    dpkg.submit("E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 812 (unattended-upgr)\n")
    assert dpkg.note == "waiting for the dpkg lock, held by unattended-upgrades (it runs after a VM boots)"
    lists = Tracker("vm", "installing build tools")
    lists.submit("E: Could not get lock /var/lib/apt/lists/lock. It is held by process 640 (apt-get)\n")
    assert lists.note == "waiting for the package lists' lock, held by apt-get"
