"""The idle-stop agent: its systemd units checked by systemd-analyze, and its decision made for
real on a stock-image host with real SSH sessions and real tf.run process groups. Only two things
are stand-ins: `nvidia-smi` (no GPU here) reports the utilization a test chooses, and the power-off
command is replaced through the agent's POWEROFF setting."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DEADLINE, SYSTEMD_IMAGE, missing, track, wait_for
from tfrig import tfrun
from tfrig.gce import idlestop
from tfrig.hosts.host import SCRIPTS

POWERED_OFF = "/tmp/powered-off"
FAKE_NVIDIA_SMI = """#!/bin/sh
# The stand-in for nvidia-smi --query-gpu=utilization.gpu: one line per GPU, from the test.
cat /tmp/gpu-utilization
"""


def _verify(tmp_path: Path, edit: Any = lambda text: text) -> subprocess.CompletedProcess[str]:
    """systemd-analyze verify on the timer and its service, as the installer lays them out (each
    file through `edit`), in a root of their own beside the system's units."""
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        missing("systemd-analyze is not installed (apt-get install systemd)")
    root = tmp_path / "root"
    # The system's own units, which the timer's targets (timers.target, sysinit.target) are.
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    for path, content in idlestop.files(1800, 10).items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(edit(content))
        target.chmod(0o755 if path == idlestop.AGENT_PATH else 0o644)  # as the installer makes them
    return subprocess.run(
        [str(analyze), "verify", f"--root={root}", f"{idlestop.UNITS}/tfrig-idle-stop.timer"],
        capture_output=True,
        text=True,
    )


def test_the_units_pass_systemd_analyze_verify(tmp_path):
    checked = _verify(tmp_path)
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")
    service = idlestop.files(1800, 10)[f"{idlestop.UNITS}/tfrig-idle-stop.service"]
    assert f"ExecStart={idlestop.AGENT_PATH}\n" in service  # where the installer puts the agent


def test_a_unit_with_a_mistake_is_caught_by_the_check(tmp_path):
    """The check above can fail: systemd-analyze names a key systemd does not know."""
    checked = _verify(tmp_path, lambda text: text.replace("OnUnitActiveSec", "OnUnitActivSec"))
    assert "Unknown key 'OnUnitActivSec'" in checked.stderr


@pytest.fixture
def agent_host(sshd_factory: Any) -> Any:
    """A stock-image host with the agent's files as the installer writes them, a 5-minute window,
    and the two stand-ins (nvidia-smi, POWEROFF)."""
    host = sshd_factory()
    made = idlestop.files(300, 10)
    made[idlestop.CONF_PATH] += f'\nPOWEROFF="touch {POWERED_OFF}"'
    made["/usr/local/bin/nvidia-smi"] = FAKE_NVIDIA_SMI
    for path, content in made.items():
        code, out = host.exec(f"mkdir -p $(dirname {path}) && cat > {path} <<'EOF'\n{content}\nEOF\nchmod 755 {path}")
        assert code == 0, out
    host.exec("echo 3 > /tmp/gpu-utilization")
    return host


def _agent(host: Any) -> tuple[int, str]:
    """One run of the agent, as the timer's service runs it (root, no terminal)."""
    return host.exec(f"{idlestop.AGENT_PATH} 2>&1")


def _idle_since(host: Any, seconds_ago: int, boot: str | None = None) -> None:
    """The agent's record: last busy `seconds_ago`, in this boot (or another)."""
    code, out = host.exec(
        f"mkdir -p /var/lib/tfrig-idle-stop && echo {boot or '$(cat /proc/sys/kernel/random/boot_id)'} "
        f"$(( $(date +%s) - {seconds_ago} )) > /var/lib/tfrig-idle-stop/last-busy"
    )
    assert code == 0, out


def _powered_off(host: Any) -> bool:
    return host.exec(f"test -e {POWERED_OFF}")[0] == 0


def test_idle_for_the_whole_window_powers_off_and_says_why(agent_host):
    first = _agent(agent_host)
    assert first == (0, "idle for 0 s of 300 s\n") and not _powered_off(agent_host)

    _idle_since(agent_host, 400)
    code, out = _agent(agent_host)
    assert code == 0 and _powered_off(agent_host)
    # 400 s, or a second more if the clock ticked between the record and the check
    said = re.compile(
        r"idle for 6 min \(40[01] s; window 300 s\): GPUs under 10%, no SSH session, no tf.run worker; powering off"
    )
    assert said.search(out), out
    assert said.search(agent_host.exec("cat /var/log/tfrig-idle-stop.log")[1])


def test_a_busy_gpu_keeps_the_vm_and_restarts_the_window(agent_host):
    agent_host.exec("printf '3\\n85\\n' > /tmp/gpu-utilization")  # the second of two GPUs works
    _idle_since(agent_host, 400)
    assert _agent(agent_host) == (0, "busy: a GPU at 85% (threshold 10%)\n")
    assert not _powered_off(agent_host)
    agent_host.exec("echo 3 > /tmp/gpu-utilization")
    code, out = _agent(agent_host)
    idle = int(out.split()[2])
    assert code == 0 and out.startswith("idle for ") and idle < 300  # counted from the busy check, not 400 s ago


def test_an_open_ssh_session_keeps_the_vm(agent_host, ssh_key):
    session = track(
        subprocess.Popen(
            [
                "ssh",
                "-i",
                str(ssh_key),
                "-p",
                str(agent_host.port),
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                f"tfrig@{agent_host.address}",
                "sleep 60",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    try:
        wait_for(lambda: "tfrig@notty" in agent_host.exec("ps -eo args")[1], DEADLINE, "the SSH session")
        _idle_since(agent_host, 400)
        assert _agent(agent_host) == (0, "busy: 1 SSH session(s) open\n")
        assert not _powered_off(agent_host)
    finally:
        session.kill()
    wait_for(lambda: "tfrig@notty" not in agent_host.exec("ps -eo args")[1], DEADLINE, "the session to end")
    _idle_since(agent_host, 400)
    _agent(agent_host)
    assert _powered_off(agent_host)


def test_a_running_tf_run_worker_keeps_the_vm_and_a_finished_one_does_not(agent_host):
    # The command tf.run starts a worker with, run as the VM's user (without SSH, so only the job counts).
    command = tfrun.worker_command(
        run_id="test",
        index=0,
        folder="/tmp",
        env_bin="/usr/bin",
        exports="",
        interpreter="python3",
        script="-c",
        args=["import time; time.sleep(30)"],
        config=None,
    )
    agent_host.container.exec_run(["su", "-", "tfrig", "-c", command], detach=True)
    jobs = "/home/tfrig/.tfrig/jobs"
    wait_for(lambda: agent_host.exec(f"test -s {jobs}/run-test-0.pgid")[0] == 0, 60, "the worker's group file")
    assert agent_host.exec(f"stat -c %a {jobs}")[1].strip() == "700"
    _idle_since(agent_host, 400)
    code, out = _agent(agent_host)
    assert code == 0 and out.startswith("busy: a tf.run worker running (process group ")
    assert not _powered_off(agent_host)

    group = agent_host.exec(f"cat {jobs}/run-test-0.pgid")[1].strip()
    agent_host.exec(f"kill -TERM -{group}")
    wait_for(lambda: agent_host.exec(f"kill -0 -{group}")[0] != 0, 60, "the worker to end")
    agent_host.exec(f"su tfrig -c 'echo {group} > {jobs}/run-stale-0.pgid'")  # left behind: its group is gone
    _idle_since(agent_host, 400)
    code, out = _agent(agent_host)
    assert code == 0 and _powered_off(agent_host), out + agent_host.exec("ps -eo pid,pgid,stat,args")[1]


def test_a_job_file_another_user_forged_does_not_keep_the_vm_up(agent_host):
    """A group id planted where tfrig once kept them (/tmp), or in someone's folder by another
    user, or naming another user's processes, keeps nothing busy."""
    agent_host.container.exec_run(["su", "-", "tfrig", "-c", "setsid sleep 300"], detach=True)
    wait_for(lambda: agent_host.exec("pgrep -x sleep")[0] == 0, 60, "the sleeper")
    sleeper = agent_host.exec("ps -o pgid= -C sleep")[1].split()[0]
    agent_host.exec(f"echo {sleeper} > /tmp/tfrig-run-forged-0.pgid")
    agent_host.exec("mkdir -p /root/.tfrig/jobs")
    agent_host.exec(f"echo {sleeper} > /root/.tfrig/jobs/run-forged-0.pgid")  # root's folder, tfrig's group
    _idle_since(agent_host, 400)
    code, out = _agent(agent_host)
    assert code == 0 and _powered_off(agent_host), out


def test_after_a_boot_the_window_starts_again(agent_host):
    """gcp.start brings a stopped VM back with the agent set: it gets a whole window, not an
    immediate power-off from the idle time before it stopped."""
    _idle_since(agent_host, 4000, boot="an-earlier-boot")
    assert _agent(agent_host) == (0, "idle for 0 s of 300 s\n")
    assert not _powered_off(agent_host)


def test_a_failing_nvidia_smi_counts_as_idle_and_is_said(agent_host):
    agent_host.exec("printf '#!/bin/sh\\nexit 9\\n' > /usr/local/bin/nvidia-smi")
    _idle_since(agent_host, 400)
    code, out = _agent(agent_host)
    assert code == 0 and "nvidia-smi failed or did not answer: GPUs counted idle" in out and _powered_off(agent_host)


def test_the_install_script_refuses_a_host_without_systemd_before_writing(sshd_factory):
    host = sshd_factory()
    script = SCRIPTS / "idle-stop-install.sh"
    code, out = host.exec(f"AGENT=x CONF=x SERVICE=x TIMER=x bash -c {shlex.quote(script.read_text())}")
    assert (code, out.strip()) == (3, "no systemd runs on this host, and the idle-stop agent is a systemd timer")
    assert host.exec(f"test -e {idlestop.AGENT_PATH}")[0] != 0


@pytest.fixture
def systemd_host(sshd_factory: Any) -> Any:
    """A stock-image host booted by systemd, as a VM is (unprivileged: /run tmpfs, cgroups read-only)."""
    host = sshd_factory(
        image=SYSTEMD_IMAGE,
        volumes_extra={"/sys/fs/cgroup": "/sys/fs/cgroup"},
        tmpfs={"/run": "", "/run/lock": ""},
    )
    wait_for(lambda: host.exec("systemctl is-system-running")[1].strip() in ("running", "degraded"), 60, "boot")
    return host


def test_the_agent_under_systemd_checks_each_minute_and_powers_the_host_off(tfrig, systemd_host, ssh_env):
    """Installed by tfrig, started by systemd's timer, and a real power-off: the host stops, as
    Compute Engine stops a VM whose guest powers off. Nothing here is a stand-in but the GPU."""
    host = systemd_host
    spec = host.spec()
    set_up = tfrig("gcp.idle-stop", "--after", "5m", "--name", spec, env=ssh_env)
    assert set_up.code == 0, set_up.text
    assert f"[{spec}] idle stop set: powers off after 5m with GPUs under 10%" in set_up.out
    assert host.exec("systemctl is-enabled tfrig-idle-stop.timer; systemctl is-active tfrig-idle-stop.timer") == (
        0,
        "enabled\nactive\n",
    )
    assert host.exec("systemctl start tfrig-idle-stop.service")[0] == 0  # one check, as the timer starts it
    journal = host.exec("journalctl -u tfrig-idle-stop.service --no-pager -o cat")[1]
    assert "idle for " in journal and " of 300 s" in journal, journal

    _idle_since(host, 400)
    host.exec("systemctl start tfrig-idle-stop.service")
    wait_for(lambda: (host.container.reload(), host.container.status)[1] == "exited", 60, "the power-off")
    log = b"".join(host.container.get_archive("/var/log/tfrig-idle-stop.log")[0])
    assert b"GPUs under 10%, no SSH session, no tf.run worker; powering off" in log


def test_the_agent_is_turned_off_with_its_files(tfrig, systemd_host, ssh_env):
    spec = systemd_host.spec()
    assert tfrig("gcp.idle-stop", "--after", "30m", "--name", spec, env=ssh_env).code == 0
    off = tfrig("gcp.idle-stop", "--off", "--name", spec, env=ssh_env)
    assert off.code == 0, off.text
    assert f"[{spec}] idle stop off" in off.out
    _, out = systemd_host.exec(f"systemctl is-active tfrig-idle-stop.timer; ls {idlestop.AGENT_PATH}")
    # stdout and stderr come back as one stream, in either order
    assert "inactive" in out.splitlines() and "No such file" in out
