"""Links that stall: a proxy between tfrig and a real sshd host stops forwarding (no reset, no
refusal), and an API endpoint accepts and never answers. Every wait ends, or says what it waits
for, and the end is one line."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DEADLINE, start_cli
from tests.stallproxy import StallProxy


@pytest.fixture
def behind_proxy(sshd_factory, ssh_key: Path, tmp_path: Path) -> Iterator[tuple[StallProxy, str, dict[str, str]]]:
    """A stock-image host reached through a StallProxy: the proxy, the host spec, the settings."""
    host = sshd_factory()
    proxy = StallProxy((host.address, host.port))
    known = tmp_path / "known_hosts"
    known.write_text("".join(f"[127.0.0.1]:{proxy.port} {line.split(' ', 1)[1]}\n" for line in host.host_keys()))
    env = {
        "INVOKE_TFRIG_SSH_KEY": str(ssh_key),
        "INVOKE_TFRIG_KNOWN_HOSTS": str(known),
        "INVOKE_TFRIG_KEEPALIVE": "0.5",
        "HOME": str(tmp_path),
    }
    yield proxy, f"tfrig@127.0.0.1:{proxy.port}", env
    proxy.close()


def last_line(err: str) -> str:
    return err.strip().splitlines()[-1]


def test_a_copy_over_a_link_that_stalls_ends_in_one_line(tfrig, behind_proxy, tmp_path):
    proxy, spec, env = behind_proxy
    big = tmp_path / "weights.bin"
    big.write_bytes(b"\0" * (32 * 2**20))
    proxy.stall_after_upload = proxy.uploaded + 2 * 2**20  # a few MB in, the link stops
    copied = tfrig("gcp.put", str(big), "--name", spec, env=env, timeout=DEADLINE)
    assert copied.code == 1, copied.text
    assert last_line(copied.err) == f"[{spec}] the SSH connection to 127.0.0.1 stalled: no answer for 1.5 s"


def test_a_command_whose_link_stalls_ends_in_one_line(behind_proxy):
    proxy, spec, env = behind_proxy
    running = start_cli("gcp.exec", "--cmd", "echo started; sleep 120", "--name", spec, env=env)
    assert running.stdout is not None
    seen = ""
    for line in running.stdout:
        seen += line
        if "started" in line:
            break
    assert "started" in seen, seen
    proxy.stall()
    out, err = running.communicate(timeout=DEADLINE)
    assert running.returncode == 1, seen + out + err
    assert "the SSH connection to 127.0.0.1 stalled: no answer for 1.5 s" in last_line(err)


def test_a_compute_api_that_never_answers_says_what_it_waits_for(tmp_path):
    """The endpoint takes the connection and says nothing: past a few seconds tfrig says so,
    and again while it waits; it does not sit silent through its timeouts and retries."""
    silent = socket.create_server(("127.0.0.1", 0))
    try:
        env = {
            "INVOKE_GCP_ENDPOINT": f"http://127.0.0.1:{silent.getsockname()[1]}",
            "INVOKE_GCP_CREDENTIALS": "anonymous",
            "INVOKE_GCP_PROJECT": "tfrig-test",
            "HOME": str(tmp_path),
        }
        listing = start_cli("gcp.list", "--project", "tfrig-test", env=env)
        assert listing.stderr is not None
        first = listing.stderr.readline()
        assert first.startswith("waiting for the Compute API (Instances.aggregated_list): "), first
        assert first.rstrip().endswith("s so far, try 1 of 5, 60 s each"), first
    finally:
        silent.close()
