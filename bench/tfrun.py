"""tf.run start-up overhead on 2 and 4 hosts, against gcp.exec on one host.

Run (needs the Docker engine and tests/testbed/images.sh's images, as for the tests):
    python bench/tfrun.py [--runs 7] [--wheelhouse /var/cache/tfrig-ci/wheelhouse] [--venv DIR]

Stock-image sshd hosts on a Docker network of the bench's own, each with the same TensorFlow venv
(made once by `tfrig tf.install` on a host from the wheelhouse, or the one --venv names, mounted
read-only). Each side runs a program that prints one line and exits, so what is timed is the way
from the command to every worker running and back: gcp.exec's environment probe and one command,
against tf.run's pre-flight (TensorFlow version, port, GPUs, the run folder), the folder check
(nothing to send on a re-run) and every worker started together. Interleaved runs, medians.
Target: tf.run on 2 and on 4 hosts at most 1.5 x gcp.exec on one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import docker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.converged import wait_for_ssh  # noqa: E402  (run as a script: the repository first)

VENV = "/home/tfrig/tf-venv"  # tf.venv's default for the stand-in's user


def start_host(client: Any, index: int, key: Path, network: str, volumes: dict[str, dict[str, str]]) -> Any:
    address = f"127.0.0.{210 + index}"
    container = client.containers.run(
        "local/tfrig-stock",  # tests/testbed/stock.Dockerfile
        detach=True,
        ports={"22/tcp": (address, 22)},
        labels={"tfrig-bench": "1"},
        network=network,
        environment={"BOOT_LOCK_SECONDS": "0"},
        volumes={f"{key}.pub": {"bind": "/etc/ssh/tfrig_keys", "mode": "ro"}, **volumes},
    )
    wait_for_ssh(address, tries=150)
    container.reload()
    inner = next(iter(container.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]
    return container, address, inner


def tfrig(args: list[str], env: dict[str, str], cwd: Path = ROOT) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tfrig", *args], cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"tfrig {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--wheelhouse", default=os.environ.get("TFRIG_WHEELHOUSE", "/var/cache/tfrig-ci/wheelhouse"))
    parser.add_argument("--venv", help="a TensorFlow venv made at /home/tfrig/tf-venv on the stock image, to reuse")
    options = parser.parse_args()
    client = docker.from_env()
    network = client.networks.create(f"tfrig-bench-{os.getpid()}", labels={"tfrig-bench": "1"})
    containers: list[Any] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        key = folder / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        env = {
            **os.environ,
            "TFRIG_STATE_DIR": str(folder / "state"),
            "INVOKE_TFRIG_SSH_KEY": str(key),
            "INVOKE_TFRIG_HOST_KEYS": "accept-new",  # fresh hosts of the bench's own
            "INVOKE_TFRIG_KNOWN_HOSTS": str(folder / "known_hosts"),
        }
        try:
            venv = Path(options.venv) if options.venv else folder / "venv"
            if not (venv / "bin" / "python").exists():
                venv.mkdir(exist_ok=True)
                venv.chmod(0o777)
                print("making the TensorFlow venv (tf.install from the wheelhouse) ...", flush=True)
                maker = start_host(
                    client,
                    9,
                    key,
                    network.name,
                    {
                        options.wheelhouse: {"bind": "/wheelhouse", "mode": "ro"},
                        str(venv): {"bind": VENV, "mode": "rw"},
                    },
                )
                containers.append(maker[0])
                tfrig(["tf.install", "-H", f"tfrig@{maker[1]}", "--find-links", "/wheelhouse", "--no-index"], env)
            hosts = [
                start_host(client, i, key, network.name, {str(venv): {"bind": VENV, "mode": "ro"}}) for i in range(4)
            ]
            containers += [h[0] for h in hosts]
            os.environ["TFRIG_STATE_DIR"] = env["TFRIG_STATE_DIR"]
            from tfrig import state

            state.record_vm("bench-1", address=hosts[0][1], port=22, user="tfrig", ssh_key=str(key), status="RUNNING")
            project = folder / "project"
            project.mkdir()
            (project / "running.py").write_text("print('running')\n")

            def job(count: int) -> list[str]:
                chosen = hosts[:count]
                return [
                    "tf.run",
                    "--script",
                    "running.py",
                    "--folder",
                    str(project),
                    "-H",
                    ",".join(f"tfrig@{h[1]}" for h in chosen),
                    "--cluster-addresses",
                    ",".join(h[2] for h in chosen),
                ]

            sides = {
                "gcp.exec on 1 host": ["gcp.exec", "--name", "bench-1", "--cmd", "python -c \"print('running')\""],
                "tf.run on 2 hosts": job(2),
                "tf.run on 4 hosts": job(4),
            }
            for argv in sides.values():  # warm: the folder sent, the file cache and the hosts' keys
                tfrig(argv, env)
            times: dict[str, list[float]] = {label: [] for label in sides}
            for _ in range(options.runs):  # interleaved, so drift hits every side alike
                for label, argv in sides.items():
                    times[label].append(tfrig(argv, env))
            base = statistics.median(times["gcp.exec on 1 host"])
            print(f"gcp.exec on 1 host: {base:.2f} s (median of {options.runs})")
            for label in ("tf.run on 2 hosts", "tf.run on 4 hosts"):
                median = statistics.median(times[label])
                print(f"{label}: {median:.2f} s, ratio {median / base:.2f} to gcp.exec on 1 host (target <= 1.5)")
        finally:
            for container in containers:
                container.remove(force=True)
            network.remove()


if __name__ == "__main__":
    main()
