"""tf.run: the cluster it forms (pure), and real multi-worker TensorFlow jobs on stock-image hosts
that reach each other on a Docker network of the test's own (tfrig reaches them only over SSH on
loopback), with TensorFlow from the run's shared venv (conftest.tf_venv)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from invoke.exceptions import Exit

from tests.conftest import DEADLINE, TF_VENV, start_cli, wait_for
from tfrig import tfrun
from tfrig.hosts.targets import Target, vm_target

# --- the cluster --------------------------------------------------------------------------------


def _vm(name: str, internal: str | None) -> Target:
    return vm_target({"name": name, "address": "127.0.0.9", "user": "u", "internal_address": internal})


def test_vm_workers_meet_at_their_internal_addresses_in_target_order_worker_0_the_chief():
    workers = tfrun.cluster([_vm("a", "10.128.0.2"), _vm("b", "10.128.0.3")], 12345, None)
    assert [w.address for w in workers] == ["10.128.0.2:12345", "10.128.0.3:12345"]
    assert json.loads(tfrun.tf_config(workers, 1)) == {
        "cluster": {"worker": ["10.128.0.2:12345", "10.128.0.3:12345"]},
        "task": {"type": "worker", "index": 1},
    }


def test_given_cluster_addresses_win_and_may_carry_their_own_ports():
    hosts = [Target("h1", host="h1"), Target("h2", host="h2"), Target("v6", host="v6")]
    workers = tfrun.cluster(hosts, 2222, "10.0.0.1, 10.0.0.2:3000, [fd00::1]:4000")
    assert [w.address for w in workers] == ["10.0.0.1:2222", "10.0.0.2:3000", "[fd00::1]:4000"]


def test_h_hosts_default_to_their_ssh_host():
    workers = tfrun.cluster([Target("a", host="gpu1.lan"), Target("b", host="gpu2.lan", port=2200)], 9, None)
    assert [w.address for w in workers] == ["gpu1.lan:9", "gpu2.lan:9"]


@pytest.mark.parametrize(
    ("targets", "addresses", "message"),
    [
        (
            [Target("a", host="127.0.0.20", port=22), Target("b", host="127.0.0.21", port=22)],
            None,
            "a: 127.0.0.20 is a loopback address, which the other hosts can't reach; give the addresses they reach each other at with --cluster-addresses.",
        ),
        (
            [Target("a", host="h1"), Target("b", host="h2")],
            "10.0.0.1",
            "--cluster-addresses names 1 address(es) for 2 target(s); give one per target, in target order.",
        ),
        (
            [Target("a", host="h1"), Target("b", host="h1", port=2200)],
            "10.0.0.1,10.0.0.1",
            "Workers 0 and 1 would both listen at 10.0.0.1:12345; two workers on one machine need two ports (--cluster-addresses host:port,...).",
        ),
        (
            [Target("a", host="h1"), Target("b", host="h2")],
            "10.0.0.1,me@10.0.0.2",
            "--cluster-addresses: 'me@10.0.0.2' is not host or host:port.",
        ),
        (
            [Target("a", host="h1"), Target("b", host="h2")],
            "10.0.0.1,10.0.0.2:70000",
            "--cluster-addresses: port 70000 in '10.0.0.2:70000' is out of range 1-65535.",
        ),
        (
            [_vm("a", "10.128.0.2"), _vm("old", None)],
            None,
            "VM old has no internal address recorded; `inv gcp.list` refreshes it, or give --cluster-addresses.",
        ),
    ],
)
def test_a_cluster_that_cannot_meet_is_one_line(targets, addresses, message):
    with pytest.raises(Exit) as refused:
        tfrun.cluster(targets, 12345, addresses)
    assert refused.value.message == message


def test_two_workers_on_one_machine_with_two_ports_is_a_cluster():
    both = [Target("a", host="127.0.0.20", port=22), Target("a", host="127.0.0.20", port=22)]
    workers = tfrun.cluster(both, 12345, "localhost:5001,localhost:5002")
    assert [w.address for w in workers] == ["localhost:5001", "localhost:5002"]


# --- the folder ---------------------------------------------------------------------------------


def _project(folder: Path) -> Path:
    (folder / "data").mkdir(parents=True)
    (folder / "train.py").write_text("print('hi')\n")
    (folder / "data" / "small.csv").write_text("1,2\n")
    (folder / "data" / "big.bin").write_bytes(b"x" * 10)
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref\n")
    (folder / ".gitignore").write_text("*.bin\ncheckpoints/\n")
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "c1").write_text("w")
    return folder


def test_the_manifest_follows_gitignore_and_never_sends_git(tmp_path):
    project = _project(tmp_path / "p")
    assert sorted(tfrun.local_manifest(project)) == [".gitignore", "data/small.csv", "train.py"]


def test_a_tfrigignore_replaces_the_gitignore(tmp_path):
    project = _project(tmp_path / "p")
    (project / ".tfrigignore").write_text("data/\n")
    assert sorted(tfrun.local_manifest(project)) == [
        ".gitignore",
        ".tfrigignore",
        "checkpoints/c1",
        "train.py",
    ]


def test_links_are_sent_as_what_they_name_and_special_files_are_left_out(tmp_path, capsys):
    """README: a link is sent as the file it names; a linked folder as its files, once (a link to a
    folder above can't loop); a FIFO would hang a reader, so it is named and left out."""
    project = _project(tmp_path / "p")
    shared = tmp_path / "shared"
    (shared / "sets").mkdir(parents=True)
    (shared / "sets" / "train.csv").write_text("5,6\n")
    (shared / "vocab.txt").write_text("a\n")
    (project / "vocab.txt").symlink_to(shared / "vocab.txt")
    (project / "datasets").symlink_to(shared / "sets")
    (project / "data" / "up").symlink_to(project)  # a loop
    os.mkfifo(project / "pipe")
    manifest = tfrun.local_manifest(project)
    assert {"vocab.txt", "datasets/train.csv"} <= set(manifest)
    assert "pipe" not in manifest and not any(path.startswith("data/up/data/up") for path in manifest)
    assert "note: pipe is not a regular file (a FIFO, socket or device); not sent" in capsys.readouterr().err


def test_what_is_sent_replaces_links_in_the_run_folder_instead_of_writing_through_them(tmp_path):
    """GNU tar, as the hosts run it: a folder link or file link already in the run folder is
    replaced, and what it pointed to is untouched."""
    project = _project(tmp_path / "p")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("secret\n")
    run_folder = tmp_path / "run"
    run_folder.mkdir()
    (run_folder / "data").symlink_to(elsewhere)
    (run_folder / "train.py").symlink_to(elsewhere / "keep")
    with tfrun.bundle(project, ["data/small.csv", "train.py"]) as archive:
        subprocess.run(["tar", "-xzf", str(archive), "-C", str(run_folder)], check=True)
    assert not (run_folder / "data").is_symlink() and (run_folder / "data" / "small.csv").read_text() == "1,2\n"
    assert not (run_folder / "train.py").is_symlink()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["keep"] and (elsewhere / "keep").read_text() == "secret\n"


def test_ignore_lines_git_takes_but_pathspec_cant_read_are_skipped_with_a_note(tmp_path, capsys):
    project = _project(tmp_path / "p")
    (project / ".gitignore").write_text("*.bin\nfoo\\\n[z-a]\n!\n[[:alpha:]]x\ncheckpoints/\n")
    assert sorted(tfrun.local_manifest(project)) == [".gitignore", "data/small.csv", "train.py"]
    err = capsys.readouterr().err
    for number in (2, 3, 4):
        assert f"note: {project / '.gitignore'}:{number}: an ignore pattern tfrig can't read; skipped" in err
    assert "Warning" not in err


def test_only_files_whose_size_or_time_differ_are_sent():
    local = {"a": (1, 100), "b": (2, 200), "c": (3, 300)}
    remote = {"a": [1, 100], "b": [2, 201]}
    assert tfrun.changed(local, remote) == ["b", "c"]


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("nope.py", None, "--script nope.py: no such file in {p}."),
        ("../x.py", None, "--script ../x.py is outside --folder {p}; the folder is what is sent to the hosts."),
        ("data/big.bin", None, "--script data/big.bin is ignored by {p}/.gitignore, so it would not be sent."),
        (
            ".git/HEAD",
            None,
            "--script .git/HEAD: tfrig never sends .git/ or .tfrig-logs/; put the script elsewhere.",
        ),
        ("train.py", "--name 'unclosed", '--args "--name \'unclosed": No closing quotation; quote as in a shell.'),
    ],
)
def test_a_script_that_cannot_be_sent_is_one_line(tmp_path, script, args, message):
    project = _project(tmp_path / "p")
    (tmp_path / "x.py").write_text("")
    with pytest.raises(Exit) as refused:
        tfrun._checked_script(str(project), script, args)
    assert refused.value.message == message.format(p=project)


def test_worker_output_is_streamed_in_whole_lines_prefixed_by_host():
    out = io.StringIO()
    stream = tfrun.PrefixedLines("vm-1", out)
    stream.write("epoch 1 ")
    stream.write("loss 0.5\nepoch 2")
    assert out.getvalue() == "[vm-1] epoch 1 loss 0.5\n"
    stream.flush()
    assert out.getvalue() == "[vm-1] epoch 1 loss 0.5\n[vm-1] epoch 2\n"


# --- real jobs ----------------------------------------------------------------------------------

# A Keras model under MultiWorkerMirroredStrategy for a few steps, in a custom training loop
# (Keras 3's model.fit fails under this strategy: keras-team/keras#20585), each worker on data of
# its own: the weights agree across workers only if the gradients were really all-reduced.
TRAIN = """
import json, os
import numpy as np
import tensorflow as tf

index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
strategy = tf.distribute.MultiWorkerMirroredStrategy()
with strategy.scope():
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1, kernel_initializer="zeros")])
    optimizer = tf.keras.optimizers.SGD(0.1)
rng = np.random.default_rng(index)
x, y = tf.constant(rng.normal(size=(16, 4)), tf.float32), tf.constant(rng.normal(size=(16, 1)), tf.float32)


@tf.function
def train_step(x, y):
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))

    strategy.run(step, args=(x, y))


for _ in range(3):
    train_step(x, y)
print("@@result " + json.dumps({"index": index, "workers": strategy.num_replicas_in_sync,
                                "steps": int(optimizer.iterations.numpy()),
                                "weights": [w.tolist() for w in model.get_weights()]}), flush=True)
# Every worker saves (the save may be collective); only the chief's copy is the model.
model.save("model.keras" if index == 0 else f"/tmp/worker{index}.keras")
"""


@pytest.fixture
def job_hosts(sshd_factory: Any, tf_venv: Path) -> Any:
    """Stock-image hosts with TensorFlow (the shared venv) on the test network."""

    def start(count: int) -> list[Any]:
        return [sshd_factory(volumes_extra={str(tf_venv): TF_VENV}) for _ in range(count)]

    return start


def _job(hosts: list[Any]) -> list[str]:
    return [
        "-H",
        ",".join(h.spec() for h in hosts),
        "--cluster-addresses",
        ",".join(h.internal_address() for h in hosts),
    ]


def _results(output: str) -> dict[str, dict[str, Any]]:
    """Each worker's @@result line, by the host prefix tf.run put before it."""
    found = {}
    for line in output.splitlines():
        if "] @@result " in line:
            prefix, _, body = line.partition("] @@result ")
            found[prefix.lstrip("[")] = json.loads(body)
    return found


@pytest.mark.slow
def test_three_hosts_train_one_model_together(tfrig, job_hosts, ssh_env, tmp_path):
    hosts = job_hosts(3)
    project = tmp_path / "mnist-ish"
    project.mkdir()
    (project / "train.py").write_text(TRAIN)
    run = tfrig("tf.run", "--script", "train.py", "--folder", str(project), *_job(hosts), env=ssh_env, timeout=600)
    assert run.code == 0, run.text
    results = _results(run.out)
    assert sorted(results) == sorted(h.spec() for h in hosts), run.out
    assert {r["index"] for r in results.values()} == {0, 1, 2}
    assert all(r["workers"] == 3 and r["steps"] == 3 for r in results.values())
    weights = [r["weights"] for r in results.values()]
    assert weights[0] == weights[1] == weights[2] and weights[0][0] != [[0.0]] * 4  # trained, and all-reduced
    chief = hosts[0].exec("test -s /home/tfrig/tfrig-runs/mnist-ish/model.keras")
    assert chief[0] == 0, "the chief wrote no model"
    # Each worker's log stays on its host.
    for index, host in enumerate(hosts):
        code, log = host.exec(f"cat /home/tfrig/tfrig-runs/mnist-ish/.tfrig-logs/*-worker{index}.log")
        assert code == 0 and "@@result" in log
    assert "worker 0 (chief) at " in run.out


def _place(label: str, tensorflow: str | None) -> tfrun.Place:
    from types import SimpleNamespace

    host = SimpleNamespace(label=label)
    return tfrun.Place(host, SimpleNamespace(tensorflow=tensorflow), "~/x", {}, [], [])


def test_workers_must_share_one_tensorflow_and_the_odd_one_is_named():
    places = {Target(n, host=n): _place(n, v) for n, v in [("a", "2.21.0"), ("b", "2.20.0"), ("c", "2.21.0")]}
    assert tfrun._odd_tensorflow(places) == (
        "every worker must run the same TensorFlow: b has 2.20.0, the others 2.21.0; "
        "run `inv tf.install --version 2.21.0 -H b`."
    )
    places[Target("d", host="d")] = _place("d", None)
    assert tfrun._odd_tensorflow(places) == (
        "no TensorFlow on d: run `inv tf.install -H d` first (the same version as the other workers)."
    )


# A worker whose script raises before it joins the cluster: the chief then waits in
# MultiWorkerMirroredStrategy's start for a worker that never comes.
RAISES = """
import json, os
import tensorflow as tf

if json.loads(os.environ["TF_CONFIG"])["task"]["index"] == 1:
    raise ValueError("bad batch in shard 1")
strategy = tf.distribute.MultiWorkerMirroredStrategy()
print("joined", flush=True)
"""


def _running(host: Any, script: str) -> str:
    """The processes of `script` still running on the host, as ps lists them."""
    return host.exec(f"ps -eo pid,pgid,args | grep -v grep | grep {script} || true")[1].strip()


@pytest.mark.slow
def test_a_worker_that_fails_stops_the_others_and_is_named(tfrig, job_hosts, ssh_env, tmp_path):
    hosts = job_hosts(2)
    (tmp_path / "raises.py").write_text(RAISES)
    run = tfrig("tf.run", "--script", "raises.py", "--folder", str(tmp_path), *_job(hosts), "--json", env=ssh_env)
    assert run.code == 1, run.text
    last = run.err.strip().splitlines()[-1]
    assert last.startswith(f"[{hosts[1].spec()}] worker 1 failed (exit 1: ")
    assert "ValueError: bad batch in shard 1); stopped the other 1 worker(s); its log: ~/tfrig-runs/" in last
    workers = json.loads(run.out)["workers"]
    assert [(w["host"], w["exit_code"] != 0, w["stopped"]) for w in workers] == [
        (hosts[0].spec(), True, True),
        (hosts[1].spec(), True, False),
    ]
    assert all(w["seconds"] > 0 for w in workers) and "joined" not in run.text
    assert _running(hosts[0], "raises.py") == ""


SLEEPS = """
import time
print("started", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_ctrl_c_stops_every_worker_on_every_host(job_hosts, ssh_env, tmp_path, state_dir):
    hosts = job_hosts(2)
    (tmp_path / "sleeps.py").write_text(SLEEPS)
    env = {**ssh_env, "TFRIG_STATE_DIR": str(state_dir)}
    proc = start_cli("tf.run", "--script", "sleeps.py", "--folder", str(tmp_path), *_job(hosts), env=env)
    assert proc.stdout is not None
    started: list[str] = []
    deadline = time.monotonic() + 120
    while len(started) < 2 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.rstrip().endswith("] started"):
            started.append(line)
    assert len(started) == 2, proc.communicate(timeout=DEADLINE)
    assert all(_running(h, "sleeps.py") for h in hosts)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert err.strip().splitlines()[-1] == "stopped every worker at Ctrl-C."
    for host in hosts:
        wait_for(lambda host=host: _running(host, "sleeps.py") == "", 10, f"no worker left on {host.address}")
        assert host.exec("ls /home/tfrig/.tfrig/jobs/run-*.pgid 2>/dev/null || true")[1].strip() == ""


@pytest.mark.slow
def test_a_lost_connection_leaves_the_job_running_and_logging_on_the_host(job_hosts, ssh_env, tmp_path, state_dir):
    (host,) = job_hosts(1)
    (tmp_path / "sleeps.py").write_text(SLEEPS)
    env = {**ssh_env, "TFRIG_STATE_DIR": str(state_dir)}
    proc = start_cli("tf.run", "--script", "sleeps.py", "--folder", str(tmp_path), "-H", host.spec(), env=env)
    assert proc.stdout is not None
    wait_for(lambda: proc.stdout is not None and proc.stdout.readline().rstrip().endswith("] started"), 120, "started")
    proc.kill()  # as a laptop that goes to sleep: no Ctrl-C, the connection just ends
    proc.wait(timeout=30)
    wait_for(lambda: "sshd: tfrig@notty" not in host.exec("ps -eo args")[1], 20, "the SSH session to end")
    assert _running(host, "sleeps.py")
    folder = f"/home/tfrig/tfrig-runs/{tmp_path.name}/.tfrig-logs"
    assert host.exec(f"cat {folder}/*-worker0.log")[1] == "started\n"
    code, out = host.exec('kill -TERM -"$(cat /home/tfrig/.tfrig/jobs/run-*-0.pgid)"')
    assert code == 0, out
    wait_for(lambda: _running(host, "sleeps.py") == "", 10, "the job to end")


SHOWS = """
import os, sys
print("args", sys.argv[1:], "TF_CONFIG", os.environ.get("TF_CONFIG"))
print("data", open("data/small.csv").read().strip())
"""


@pytest.mark.slow
def test_one_host_gets_only_what_changed_and_no_tf_config(tfrig, job_hosts, ssh_env, tmp_path):
    (host,) = job_hosts(1)
    project = _project(tmp_path / "proj")
    (project / "shows.py").write_text(SHOWS)
    command = ("tf.run", "--script", "shows.py", "--folder", str(project), "-H", host.spec())
    first = tfrig(*command, "--args", "--greeting 'hello world'", env=ssh_env)
    assert first.code == 0, first.text
    assert f"[{host.spec()}] sending 4 of 4 files" in first.out
    assert f"[{host.spec()}] args ['--greeting', 'hello world'] TF_CONFIG None" in first.out
    assert f"[{host.spec()}] data 1,2" in first.out
    listed = host.exec("cd /home/tfrig/tfrig-runs/proj && find . -type f -not -path './.tfrig-logs/*' | sort")[1]
    assert listed.split() == ["./.gitignore", "./data/small.csv", "./shows.py", "./train.py"]

    again = tfrig(*command, env=ssh_env)
    assert f"[{host.spec()}] ~/tfrig-runs/proj is up to date (4 files)" in again.out

    (project / "data" / "small.csv").write_text("3,4\n")
    os.utime(project / "data" / "small.csv", (time.time() + 5, time.time() + 5))
    edited = tfrig(*command, env=ssh_env)
    assert f"[{host.spec()}] sending 1 of 4 files" in edited.out
    assert f"[{host.spec()}] data 3,4" in edited.out


@pytest.mark.slow
def test_a_script_named_like_an_option_runs_and_links_on_the_host_are_replaced(tfrig, job_hosts, ssh_env, tmp_path):
    (host,) = job_hosts(1)
    project = _project(tmp_path / "proj")
    (project / "-W.py").write_text(SHOWS)
    host.exec("su tfrig -c 'mkdir -p /tmp/elsewhere ~/tfrig-runs/proj && ln -s /tmp/elsewhere ~/tfrig-runs/proj/data'")
    ran = tfrig("tf.run", "--script=-W.py", "--folder", str(project), "-H", host.spec(), env=ssh_env)
    assert ran.code == 0, ran.text
    assert f"[{host.spec()}] data 1,2" in ran.out
    assert host.exec("ls -A /tmp/elsewhere")[1] == ""
    assert host.exec("test -d /home/tfrig/tfrig-runs/proj/data && test ! -L /home/tfrig/tfrig-runs/proj/data")[0] == 0
    assert host.exec("stat -c %a /home/tfrig/.tfrig/jobs")[1].strip() == "700"
    assert host.exec("ls -A /home/tfrig/.tfrig/jobs /tmp | grep -c pgid")[1].strip() == "0"


@pytest.mark.slow
def test_dry_shows_each_tf_config_and_command_and_changes_nothing(tfrig, job_hosts, ssh_env, tmp_path):
    hosts = job_hosts(2)
    (tmp_path / "shows.py").write_text(SHOWS)
    inner = [h.internal_address() for h in hosts]
    run = tfrig("--dry", "tf.run", "--script", "shows.py", "--folder", str(tmp_path), *_job(hosts), env=ssh_env)
    assert run.code == 0, run.text
    for index, host in enumerate(hosts):
        config = {
            "cluster": {"worker": [f"{inner[0]}:12345", f"{inner[1]}:12345"]},
            "task": {"type": "worker", "index": index},
        }
        assert f"[{host.spec()}] TF_CONFIG={json.dumps(config, separators=(',', ':'))}" in run.out
        assert f"[{host.spec()}] would send 1 of 1 files" in run.out
        assert f"[{host.spec()}] would run: cd ~/tfrig-runs/{tmp_path.name} && python shows.py" in run.out
        assert host.exec("test -e /home/tfrig/tfrig-runs")[0] != 0


@pytest.mark.slow
def test_a_busy_port_is_refused_before_anything_starts(tfrig, job_hosts, ssh_env, tmp_path):
    hosts = job_hosts(2)
    hosts[1].container.exec_run(
        ["python3", "-c", "import socket, time; s = socket.socket(); s.bind(('', 23456)); s.listen(); time.sleep(300)"],
        detach=True,
    )
    wait_for(lambda: "5BA0" in hosts[1].exec("cat /proc/net/tcp /proc/net/tcp6")[1], 10, "the listener")
    (tmp_path / "shows.py").write_text(SHOWS)
    run = tfrig(
        "tf.run", "--script", "shows.py", "--folder", str(tmp_path), "--port", "23456", *_job(hosts), env=ssh_env
    )
    assert run.code == 1
    assert run.err.strip().splitlines() == [
        f"[{hosts[1].spec()}] port 23456 is in use there; give another --port (or --cluster-addresses host:port), "
        "or stop what listens on it."
    ]
    assert hosts[0].exec("test -e /home/tfrig/tfrig-runs")[0] != 0


def test_a_script_that_leaves_a_child_running_does_not_keep_tf_run_waiting(tmp_path):
    """The worker's own command, run by a local shell as a host runs it: the script ends, its
    child would sleep on in the group; it is stopped after the grace and the script's code comes back."""
    (tmp_path / "leaves.py").write_text(
        "import subprocess, sys\nsubprocess.Popen(['sleep', '287.125'])\nprint('started a child')\nsys.exit(3)\n"
    )
    command = tfrun.worker_command(
        run_id="local",
        index=0,
        folder=str(tmp_path),
        env_bin="/usr/bin",
        exports="",
        interpreter=sys.executable,
        script="leaves.py",
        args=[],
        config=None,
    )
    done = subprocess.run(
        ["sh", "-c", command], capture_output=True, text=True, env={**os.environ, "HOME": str(tmp_path)}, timeout=120
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert "started a child" in done.stdout
    assert "tfrig: the script ended; stopping what it left running" in done.stdout
    # A number of its own: the test hosts' processes show in this machine's process list too.
    assert subprocess.run(["pgrep", "-f", "^sleep 287.125$"], capture_output=True).returncode == 1
    assert (tmp_path / ".tfrig" / "jobs").stat().st_mode & 0o777 == 0o700
    assert list((tmp_path / ".tfrig" / "jobs").iterdir()) == []
