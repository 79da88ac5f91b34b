"""Converged re-run and fan-out, over real SSH to Debian sshd containers on loopback addresses.

Run (needs the Docker engine and tests/testbed/images.sh's images, as for the tests):
    python bench/converged.py [--hosts 8] [--runs 5] [--wheelhouse /var/cache/tfrig-ci/wheelhouse]

1. Converged re-run: `driver.prepare --no-headers tf.install` (the steps that apply on a GPU-less
   host; gpu.setup refuses there) on one host: the first run against re-runs where everything is
   done. Reports wall times, the ratio, and the SSH round trips of a re-run (from the host log).
   Target: the re-run changes nothing and takes under 1 s (the floor: one `ssh host true`).
2. Converged `tf.install --cpu gpu.check` on a host with real package lists (`apt-get update` run
   on it first, as on a VM after its first apt step), against the floor of one `ssh` running one
   script that reads the same facts (tfrig's env facts script and nvidia-smi).
   Target: at most 2 x that floor, in the same run.
3. Fan-out: the converged re-run of `driver.prepare --no-headers` on 1 and on N hosts.
   Target: N hosts take at most 1.5 x one host.
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import docker

ROOT = Path(__file__).resolve().parents[1]
READ_AHEAD_MARK = ": read ahead by an earlier task"  # tfrig.hosts.host: a probe answered without a command


def start_hosts(client: docker.DockerClient, count: int, key: Path, wheelhouse: Path) -> list[tuple[Any, str]]:
    hosts = []
    for index in range(count):
        address = f"127.0.0.{200 + index}"
        container = client.containers.run(
            "local/tfrig-stock",  # tests/testbed/stock.Dockerfile
            detach=True,
            ports={"22/tcp": (address, 22)},
            labels={"tfrig-bench": "1"},
            volumes={
                f"{key}.pub": {"bind": "/etc/ssh/tfrig_keys", "mode": "ro"},
                str(wheelhouse): {"bind": "/wheelhouse", "mode": "ro"},
            },
        )
        hosts.append((container, address))
    for _, address in hosts:
        wait_for_ssh(address, tries=100)
    return hosts


def wait_for_ssh(address: str, tries: int) -> None:
    """Until sshd on `address`:22 sends its banner, or `tries` attempts have passed."""
    for _ in range(tries):
        try:
            with socket.create_connection((address, 22), timeout=1) as sock:
                if sock.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.1)


def tfrig(args: list[str], env: dict[str, str], expect: int = 0) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tfrig", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != expect:
        raise SystemExit(f"tfrig {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return elapsed


def round_trips(log: Path, since: int) -> tuple[int, int]:
    lines = log.read_text().splitlines()[since:]
    changes = sum(1 for line in lines if " change " in line)
    commands = [line for line in lines if line[:1].isdigit() and not line.endswith(READ_AHEAD_MARK)]
    return len(commands), changes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--wheelhouse", default=os.environ.get("TFRIG_WHEELHOUSE", "/var/cache/tfrig-ci/wheelhouse"))
    args = parser.parse_args()
    client = docker.from_env()
    # tfrig from bytecode, as an installed package runs (pip compiles it; PYTHONDONTWRITEBYTECODE,
    # which this machine may set, stops writing caches, not reading them).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "tfrig")], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "id"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        env = {
            **os.environ,
            "TFRIG_STATE_DIR": str(Path(tmp) / "state"),
            "INVOKE_TFRIG_SSH_KEY": str(key),
            # the bench hosts are new each run: their keys are recorded on first use, in tmp
            "INVOKE_TFRIG_HOST_KEYS": "accept-new",
            "INVOKE_TFRIG_KNOWN_HOSTS": str(Path(tmp) / "known_hosts"),
        }
        hosts = start_hosts(client, args.hosts, key, Path(args.wheelhouse))
        try:
            specs = [f"tfrig@{address}" for _, address in hosts]

            def chain(hosts: str) -> list[str]:  # -H on the first task serves the chain
                return [
                    "driver.prepare",
                    "-H",
                    hosts,
                    "--no-headers",
                    "tf.install",
                    "--find-links",
                    "/wheelhouse",
                    "--no-index",
                ]

            first = tfrig(chain(specs[0]), env)
            log = Path(tmp) / "state" / "logs" / f"{specs[0]}.log"
            mark = len(log.read_text().splitlines())
            again = [tfrig(chain(specs[0]), env) for _ in range(args.runs)]
            trips, changes = round_trips(log, mark)
            floor = statistics.median([timed_ssh(specs[0], key, "true") for _ in range(args.runs)])
            rerun = statistics.median(again)
            print(
                f"converged re-run of driver.prepare + tf.install on 1 host: first run {first:.1f} s, "
                f"re-run {rerun:.2f} s (median of {args.runs}; ratio {rerun / first:.3f}); "
                f"{trips // args.runs} SSH commands and {changes} changes per re-run; "
                f"`ssh host true` floor {floor:.2f} s (re-run / floor {rerun / floor:.1f})"
            )

            tf_check(hosts[0][0], specs[0], key, env, args.runs)

            def prepare(hosts: str) -> list[str]:
                return ["driver.prepare", "-H", hosts, "--no-headers"]

            tfrig(prepare(",".join(specs)), env)  # converge every host
            one = statistics.median([tfrig(prepare(specs[0]), env) for _ in range(args.runs)])
            many = statistics.median([tfrig(prepare(",".join(specs)), env) for _ in range(args.runs)])
            floor_one = statistics.median([ssh_all(specs[:1], key) for _ in range(args.runs)])
            floor_many = statistics.median([ssh_all(specs, key) for _ in range(args.runs)])
            print(
                f"fan-out of the converged driver.prepare: 1 host {one:.2f} s, {len(specs)} hosts {many:.2f} s, "
                f"ratio {many / one:.2f} (target <= 1.5); `ssh host true` on all at once (OpenSSH): "
                f"{floor_one:.2f} s vs {floor_many:.2f} s, ratio {floor_many / floor_one:.2f}"
            )
        finally:
            for container, _ in hosts:
                container.remove(force=True)


def tf_check(container: Any, spec: str, key: Path, env: dict[str, str], runs: int) -> None:
    """Converged `tf.install --cpu gpu.check` against one ssh running one script, on real lists."""
    updated = container.exec_run("apt-get update -q", user="root")
    if updated.exit_code:
        raise SystemExit(f"apt-get update on the bench host failed: {updated.output.decode()[-300:]}")
    chain = ["tf.install", "-H", spec, "--cpu", "--find-links", "/wheelhouse", "--no-index", "gpu.check"]
    # The bench host has no GPU: gpu.check reads every fact, then exits 1 with "no NVIDIA GPU".
    tfrig(chain, env, expect=1)
    rerun = statistics.median([tfrig(chain, env, expect=1) for _ in range(runs)])
    facts = (ROOT / "tfrig" / "scripts" / "tf-env-facts.py").read_text()
    script = f"python3 -c {shlex.quote(facts)} ~/miniconda3/envs/tf ~/tf-venv system; nvidia-smi -L; true"
    one_script = statistics.median([timed_ssh(spec, key, script) for _ in range(runs)])
    true = statistics.median([timed_ssh(spec, key, "true") for _ in range(runs)])
    print(
        f"converged tf.install --cpu gpu.check on a host with real package lists: {rerun:.2f} s (median of {runs}); "
        f"one ssh running one script {one_script:.2f} s, `ssh host true` {true:.2f} s; "
        f"ratio to the one-script floor {rerun / one_script:.2f} (target <= 2)"
    )


def timed_ssh(spec: str, key: Path, command: str) -> float:
    started = time.perf_counter()
    subprocess.run([*_ssh(spec, key)[:-1], command], check=True, capture_output=True)
    return time.perf_counter() - started


def ssh_all(specs: list[str], key: Path) -> float:
    """`ssh host true` on every host at once: what the testbed itself allows for a fan-out."""
    started = time.perf_counter()
    procs = [subprocess.Popen(_ssh(spec, key)) for spec in specs]
    for proc in procs:
        proc.wait()
    return time.perf_counter() - started


def _ssh(spec: str, key: Path) -> list[str]:
    options = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
    return ["ssh", "-i", str(key), *options, spec, "true"]


if __name__ == "__main__":
    main()
