"""Failover: a create that meets N stocked-out zones before one with capacity, against the fake
Compute API with a fixed latency per call.

Run: python bench/failover.py [--latency 0.05] [--zones 1 3 6]
Reports API calls, calls per zone tried, and wall time as a ratio to (calls x per-call latency) and
to (zones x per-call latency), all measured in one run. The create runs in this process (the
client library imported once), so the time is tfrig's and the API's, not Python's start-up.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakegce import FakeCompute  # noqa: E402
from tfrig import __version__  # noqa: E402
from tfrig.cli import TfrigProgram  # noqa: E402
from tfrig.tasks import ns  # noqa: E402


def one_run(stocked_out: int, latency: float, key: str) -> tuple[int, int, float]:
    zones = [f"us-east{i}-a" for i in range(1, stocked_out + 1)] + ["us-west9-a"]
    fake = FakeCompute()
    fake.page_size = 100
    fake.offer("nvidia-tesla-t4", zones)
    for zone in zones[:-1]:
        fake.scenario.stockout[zone] = []
    fake.scenario.latency = latency
    os.environ.update(
        INVOKE_GCP_ENDPOINT=fake.endpoint,
        INVOKE_GCP_CREDENTIALS="anonymous",
        INVOKE_GCP_PROJECT=fake.project,
        INVOKE_GCP_POLL_INTERVAL="0.01",
        INVOKE_TFRIG_SSH_KEY=key,
    )
    with tempfile.TemporaryDirectory() as state:
        os.environ["TFRIG_STATE_DIR"] = state
        program = TfrigProgram(namespace=ns, version=__version__, name="tfrig", binary="tfrig")
        started = time.perf_counter()
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            program.run(["tfrig", "gcp.create", "--yes", "--name", "bench", "--no-ssh-wait"], exit=False)
        elapsed = time.perf_counter() - started
    fake.close()
    inserts = len([p for p in fake.paths("POST") if p.endswith("/instances")])
    return len(fake.calls), inserts, elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--zones", type=int, nargs="+", default=[1, 3, 6])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "id"
        key.write_text("unused")
        Path(f"{key}.pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBench bench\n")
        one_run(0, 0.0, str(key))  # warm the imports
        print(f"per-call latency {args.latency * 1000:.0f} ms")
        for stocked in args.zones:
            calls, tried, elapsed = one_run(stocked, args.latency, str(key))
            fixed = calls - 2 * tried
            print(
                f"{stocked} stocked-out zones: {tried} zones tried, {calls} calls ({fixed} fixed + "
                f"{(calls - fixed) / tried:.1f} per zone tried), {elapsed:.2f} s = "
                f"{elapsed / (calls * args.latency):.2f} x (calls x latency), "
                f"{elapsed / (tried * args.latency):.1f} x (zones x latency)"
            )


if __name__ == "__main__":
    main()
