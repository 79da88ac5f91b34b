"""driver tasks over real SSH on Debian containers (no GPU here; they run this machine's kernel)."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest
from fabric import Connection
from invoke import Config

from tfrig.hosts.host import BOOT_MARK, Host
from tfrig.hosts.targets import Target

pytestmark = pytest.mark.slow


def test_install_refuses_on_a_host_without_a_gpu(tfrig, sshd_factory, ssh_env):
    host = sshd_factory()
    result = tfrig("driver.install", "--unverified", "-H", host.spec(), env=ssh_env)
    assert result.code == 1
    assert result.err.strip() == (
        f"[{host.spec()}] driver.install: no NVIDIA GPU on the PCI bus: nothing to install a driver for "
        "(on Compute Engine: create the VM with --gpu)."
    )


def test_preflight_finds_no_headers_for_the_running_kernel(tfrig, sshd_factory, ssh_env):
    host = sshd_factory(gpu="t4")
    result = tfrig("driver.install", "--unverified", "-H", host.spec(), env=ssh_env)
    assert result.code == 1, result.text
    assert "refreshing the package lists to look for the kernel headers" in result.out
    assert f"no kernel headers for the running kernel {platform.release()} in the package archive" in result.err
    assert host.exec("command -v gcc")[0] != 0  # refused before any change


def test_gpu_setup_stops_with_the_no_gpu_diagnosis(tfrig, sshd_factory, ssh_env):
    host = sshd_factory()
    result = tfrig("gpu.setup", "--unverified", "-H", host.spec(), env=ssh_env)
    assert result.code == 1
    assert "no NVIDIA GPU on the PCI bus" in result.err


def test_prepare_installs_build_tools_with_apt_and_rerun_is_a_no_op(tfrig, sshd_factory, ssh_env, state_dir):
    host = sshd_factory()
    assert host.exec("command -v gcc || test -e /usr/include/stdio.h")[0] != 0  # a stock image has neither
    refused = tfrig("driver.prepare", "-H", host.spec(), env=ssh_env)
    assert refused.code == 1
    assert f"no kernel headers for the running kernel {platform.release()}" in refused.err

    # unattended-upgrades holds the dpkg lock after boot: apt waits for it instead of failing.
    first = tfrig("driver.prepare", "--no-headers", "-H", host.spec(), env=ssh_env)
    assert first.code == 0, first.text
    assert "installing gcc, make, dkms, libc6-dev" in first.out
    assert "installing build tools: finished after" in first.out  # the progress lines of a pipe
    for tool in ("gcc", "make", "dkms"):
        assert host.exec(f"command -v {tool}")[0] == 0, tool
    assert host.exec("test -e /usr/include/stdio.h")[0] == 0  # nvidia-installer needs the libc headers

    log = state_dir / "logs" / f"{host.spec()}.log"
    before = log.read_text()
    again = tfrig("driver.prepare", "--no-headers", "-H", host.spec(), env=ssh_env)
    assert again.code == 0
    assert "already done: gcc, make, dkms, libc headers installed" in again.out
    converged = log.read_text()[len(before) :]
    assert "change rc=" not in converged
    assert "apt-cache" not in converged and "apt-get" not in converged  # no archive read when converged


def test_reboot_waits_for_the_host_to_come_back_and_goes_on(sshd_factory, ssh_key, capsys):
    host = sshd_factory(restart_policy={"Name": "always"})
    connection = Connection(
        host.address, user="tfrig", port=host.port, connect_kwargs={"key_filename": str(ssh_key)}, config=Config()
    )
    remote = Host(connection, Target(label="vm", host=host.address, user="tfrig", port=host.port))
    before = remote.fact(BOOT_MARK).out
    remote.reboot("testing", timeout=60)
    after = remote.fact(BOOT_MARK).out
    assert after and after != before
    assert remote.fact("echo still here").out == "still here"
    out = capsys.readouterr().out
    assert "[vm] rebooting: testing" in out and "[vm] back after the reboot" in out
    host.container.reload()
    assert host.container.attrs["RestartCount"] == 1


def test_on_a_terminal_a_live_line_says_it_waits_for_unattended_upgrades(sshd_factory, ssh_env):
    """A long step on a terminal: rich's live line with the step, its elapsed time, and what apt is
    waiting for (read from apt's own output as it streams)."""
    import os
    import pty
    import subprocess
    import sys
    import time

    from tests.conftest import DEADLINE, track

    host = sshd_factory(boot_lock=25)
    main, child = pty.openpty()
    proc = track(
        subprocess.Popen(
            [sys.executable, "-m", "tfrig", "driver.prepare", "--no-headers", "-H", host.spec()],
            stdin=child,
            stdout=child,
            stderr=child,
            env={**os.environ, **ssh_env, "COLUMNS": "200", "TERM": "xterm"},
            cwd=Path(__file__).resolve().parents[1],
        )
    )
    os.close(child)
    screen = b""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    proc.wait(DEADLINE)
    os.close(main)
    text = screen.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "installing build tools" in text
    assert "waiting for the dpkg lock, held by unattended-upgrades (it runs after a VM boots)" in text
    assert "started" not in text  # the plain lines are for pipes
