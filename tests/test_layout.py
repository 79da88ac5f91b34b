"""The package's shape: the import-linter contracts in pyproject.toml hold and catch each import
cycle the layout removed, and a built wheel carries every module and every host-side file."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports with `tree`'s pyproject.toml, importing tfrig from `tree`."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_layer_contracts_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 3 kept, 0 broken." in result.stdout


# The three cycles the layout cut, each put back: (module, the import it had, what must break).
CYCLES = {
    "host reaches up into provisioning": (
        "tfrig/hosts/host.py",
        "from tfrig.gce import provision",
        "tfrig.hosts is not allowed to import tfrig.gce",
    ),
    "driver and gpu import each other": (
        "tfrig/tasks/driver.py",
        "from tfrig.tasks import gpu",
        "No cycles are allowed in tfrig.tasks",
    ),
    "tf.run's job layer takes from the tf namespace": (
        "tfrig/tfrun.py",
        "from tfrig.tasks.tf import Environment",
        "tfrig.tfrun is not allowed to import tfrig.tasks",
    ),
}


@pytest.mark.parametrize("cycle", list(CYCLES), ids=list(CYCLES))
def test_the_contracts_break_on_each_removed_cycle(tmp_path, cycle):
    module, line, broken = CYCLES[cycle]
    shutil.copytree(ROOT / "tfrig", tmp_path / "tfrig", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    source = tmp_path / module
    text = source.read_text()
    # After the module's docstring and `from __future__`, as the original import stood.
    anchor = "from __future__ import annotations\n"
    source.write_text(text.replace(anchor, f"{anchor}\n{line}  # noqa\n", 1))
    result = lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout
    assert broken in " ".join(result.stdout.split()), result.stdout


def test_a_built_wheel_carries_every_module_and_host_file(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("tfrig-*.whl")
    in_wheel = {name for name in zipfile.ZipFile(wheel).namelist() if name.startswith("tfrig/")}
    tracked = subprocess.run(
        ["git", "ls-files", "tfrig"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert tracked, "git ls-files found nothing under tfrig/"
    missing = sorted(set(tracked) - in_wheel)
    assert not missing, f"the wheel lacks {missing}"
    # The idle-stop agent's systemd units, which an earlier package list left out.
    assert {"tfrig/scripts/tfrig-idle-stop.service", "tfrig/scripts/tfrig-idle-stop.timer"} <= in_wheel


def test_the_executor_name_earlier_readmes_gave_still_loads():
    from tfrig.hosts.readahead import ChainExecutor
    from tfrig.readahead import ChainExecutor as OldName

    assert OldName is ChainExecutor
