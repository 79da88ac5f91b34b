"""Start-up: `inv --list` and `tfrig --help` against a bare Invoke collection of the same size.

Run: python bench/startup.py [--runs 15]. Prints medians and the ratios (target: <= 1.3).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bare_collection(folder: Path) -> None:
    """A tasks.py with as many namespaces and tasks as tfrig's, and nothing else."""
    sys.path.insert(0, str(ROOT))
    from tfrig.tasks import ns

    lines = ["from invoke import Collection, task", "ns = Collection()"]
    for name, sub in ns.collections.items():
        lines.append(f"{name}_ns = Collection({name!r})")
        for index, task_name in enumerate(sub.tasks):
            lines.append(f"@task\ndef t_{name}_{index}(c, hosts=None, json=False):\n    '''A task.'''")
            lines.append(f"{name}_ns.add_task(t_{name}_{index}, name={task_name!r})")
        lines.append(f"ns.add_collection({name}_ns)")
    (folder / "tasks.py").write_text("\n".join(lines) + "\n")


def timed(argv: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    inv = shutil.which("inv") or str(Path(sys.executable).with_name("inv"))
    tfrig = shutil.which("tfrig") or str(Path(sys.executable).with_name("tfrig"))
    with tempfile.TemporaryDirectory() as tmp:
        bare = Path(tmp)
        bare_collection(bare)
        # Both sides from bytecode, as an installed package runs (pip compiles it; this machine may
        # set PYTHONDONTWRITEBYTECODE, which stops writing caches, not reading them).
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", str(ROOT / "tfrig"), str(ROOT / "tasks.py"), str(bare)],
            check=True,
        )
        pairs = {
            "inv --list": ([inv, "--list"], ROOT, [inv, "--list"], bare),
            "tfrig --help": ([tfrig, "--help"], bare, [inv, "--help"], bare),
        }
        for label, (ours, ours_cwd, base, base_cwd) in pairs.items():
            timed(ours, ours_cwd), timed(base, base_cwd)  # warm the file cache
            ours_times, base_times = [], []
            for _ in range(runs):  # interleaved, so drift hits both alike
                ours_times.append(timed(ours, ours_cwd))
                base_times.append(timed(base, base_cwd))
            ours_median, base_median = statistics.median(ours_times), statistics.median(base_times)
            print(
                f"{label}: {ours_median * 1000:.0f} ms vs bare Invoke {base_median * 1000:.0f} ms, "
                f"ratio {ours_median / base_median:.2f} (target <= 1.3, {runs} runs each)"
            )


if __name__ == "__main__":
    main()
