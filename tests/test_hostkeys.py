"""SSH host keys (tfrig.hosts.hostkeys) over real SSH to stock-image hosts, each with keys of its own made
at first boot: an unknown key is refused unless the user said accept-new, a changed key is always
refused, and each refusal is one line."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import SshHost


def other_key(tmp_path: Path, name: str = "other") -> str:
    """An ed25519 public key that is not the host's (type and base64)."""
    key = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return " ".join(key.with_suffix(".pub").read_text().split()[:2])


def check(tfrig, host: SshHost, env: dict[str, str]):
    return tfrig("driver.status", "-H", host.spec(), env=env)


def assert_one_line_refusal(outcome, *needles: str) -> None:
    assert outcome.code != 0, outcome.text
    assert "Traceback" not in outcome.text
    lines = [line for line in outcome.err.splitlines() if line.strip()]
    assert len(lines) == 1, outcome.err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_an_unknown_host_key_is_refused_by_default(tfrig, sshd_factory, ssh_key, tmp_path):
    host = sshd_factory(pin=False)
    known = tmp_path / "known_hosts"
    refused = check(tfrig, host, {"INVOKE_TFRIG_SSH_KEY": str(ssh_key), "INVOKE_TFRIG_KNOWN_HOSTS": str(known)})
    assert_one_line_refusal(refused, f"the host key of {host.address} is not known", "SHA256:", "accept-new")
    assert not known.exists()


def test_accept_new_records_the_key_and_later_runs_check_against_it(tfrig, sshd_factory, ssh_key, tmp_path):
    host = sshd_factory(pin=False)
    known = tmp_path / "known_hosts"
    env = {"INVOKE_TFRIG_SSH_KEY": str(ssh_key), "INVOKE_TFRIG_KNOWN_HOSTS": str(known)}
    first = check(tfrig, host, {**env, "INVOKE_TFRIG_HOST_KEYS": "accept-new"})
    assert first.code == 0, first.text
    (recorded,) = known.read_text().splitlines()
    assert recorded in host.host_keys()
    assert known.stat().st_mode & 0o777 == 0o600
    assert check(tfrig, host, env).code == 0  # strict now passes: the key is on record


def test_a_changed_host_key_is_refused_even_under_accept_new(tfrig, sshd_factory, ssh_key, tmp_path):
    host = sshd_factory(pin=False)
    known = tmp_path / "known_hosts"
    known.write_text(f"{host.address} {other_key(tmp_path)}\n")
    env = {"INVOKE_TFRIG_SSH_KEY": str(ssh_key), "INVOKE_TFRIG_KNOWN_HOSTS": str(known)}
    for policy in ("strict", "accept-new"):
        refused = check(tfrig, host, {**env, "INVOKE_TFRIG_HOST_KEYS": policy})
        assert_one_line_refusal(refused, f"the host key of {host.address} has CHANGED", "ssh-keygen -R")
    assert len(known.read_text().splitlines()) == 1


def test_an_alias_from_the_users_ssh_config_with_its_own_known_hosts_file(tfrig, sshd_factory, ssh_key, tmp_path):
    host = sshd_factory(pin=False)
    (tmp_path / ".ssh").mkdir()
    theirs = tmp_path / "their_known_hosts"
    theirs.write_text("".join(line + "\n" for line in host.host_keys()))
    (tmp_path / ".ssh" / "config").write_text(
        f"Host gpu-box\n    HostName {host.address}\n    Port {host.port}\n    User tfrig\n"
        f"    IdentityFile {ssh_key}\n    UserKnownHostsFile {theirs}\n"
    )
    found = tfrig("driver.status", "-H", "gpu-box", "--json", env={"HOME": str(tmp_path)})
    assert found.code == 0, found.text
    assert "target: gpu-box" in found.err


def test_a_bad_policy_is_one_line_naming_the_setting(tfrig, sshd_factory, ssh_env):
    host = sshd_factory()
    refused = check(tfrig, host, {**ssh_env, "INVOKE_TFRIG_HOST_KEYS": "maybe"})
    assert_one_line_refusal(refused, "tfrig.host_keys in INVOKE_TFRIG_HOST_KEYS is 'maybe'", "strict", "accept-new")


def test_docker_over_ssh_refuses_an_unknown_host_key_in_the_same_one_line(tfrig, sshd_factory, ssh_key, tmp_path):
    host = sshd_factory(pin=False)
    env = {"INVOKE_TFRIG_SSH_KEY": str(ssh_key), "INVOKE_TFRIG_KNOWN_HOSTS": str(tmp_path / "known_hosts")}
    refused = tfrig("docker.ps", "-H", host.spec(), env=env)
    assert_one_line_refusal(refused, f"the host key of {host.address} is not known", "accept-new")


def test_docker_over_ssh_to_a_known_host_fails_in_one_line_without_a_traceback(tfrig, sshd_factory, ssh_env, tmp_path):
    host = sshd_factory()  # key pinned in tfrig.known_hosts only; no Docker engine there either
    failed = tfrig("docker.ps", "-H", host.spec(), env={**ssh_env, "HOME": str(tmp_path)})
    assert_one_line_refusal(failed, "Docker")


def test_known_hosts_lines_openssh_accepts_are_read_and_what_tfrig_skips_is_named(
    tfrig, sshd_factory, ssh_key, tmp_path
):
    """@cert-authority is noted with its file and line, @revoked is honoured, a byte that isn't
    UTF-8 in a comment changes nothing: the host's own line still lets tfrig in."""
    host = sshd_factory(pin=False)
    known = tmp_path / "known_hosts"
    lines = [
        f"@cert-authority *.example.com {other_key(tmp_path, 'ca')}".encode(),
        f"@revoked * {other_key(tmp_path, 'revoked')}".encode(),
        f"other.example.com {other_key(tmp_path, 'another')} caf\xe9".encode("latin-1"),
        *(line.encode() + b" comment \xff" for line in host.host_keys()),
    ]
    known.write_bytes(b"\n".join(lines) + b"\n")
    found = check(tfrig, host, {"INVOKE_TFRIG_SSH_KEY": str(ssh_key), "INVOKE_TFRIG_KNOWN_HOSTS": str(known)})
    assert found.code == 0, found.text
    assert f"note: {known}:1: @cert-authority (host certificates) is not checked by tfrig; line skipped" in found.err


def test_a_revoked_host_key_is_refused_even_when_listed_as_known(tfrig, sshd_factory, ssh_key, tmp_path):
    host = sshd_factory(pin=False)
    known = tmp_path / "known_hosts"
    keys = host.host_keys()
    revoked = [f"@revoked {line}" for line in keys]
    known.write_text("".join(line + "\n" for line in [*keys, *revoked]))
    env = {"INVOKE_TFRIG_SSH_KEY": str(ssh_key), "INVOKE_TFRIG_KNOWN_HOSTS": str(known)}
    for policy in ("strict", "accept-new"):
        refused = check(tfrig, host, {**env, "INVOKE_TFRIG_HOST_KEYS": policy})
        assert_one_line_refusal(refused, f"the host key of {host.address}", f") is revoked ({known}:")
    assert len(known.read_text().splitlines()) == 2 * len(keys)


def test_an_alias_from_an_included_ssh_config_file_resolves_as_openssh_resolves_it(
    tfrig, sshd_factory, ssh_key, ssh_env, tmp_path
):
    host = sshd_factory()
    (tmp_path / ".ssh" / "conf.d").mkdir(parents=True)
    (tmp_path / ".ssh" / "conf.d" / "work").write_text(
        f"Host gpu-box\n    HostName {host.address}\n    Port {host.port}\n    User tfrig\n    IdentityFile {ssh_key}\n"
    )
    (tmp_path / ".ssh" / "config").write_text(f"Include {tmp_path}/.ssh/conf.d/*\n")
    found = tfrig("driver.status", "-H", "gpu-box", env={**ssh_env, "HOME": str(tmp_path)})
    assert found.code == 0, found.text


def test_an_unusable_key_file_is_named(tfrig, sshd_factory, tmp_path, ssh_env):
    host = sshd_factory()
    not_a_key = tmp_path / "keys"
    not_a_key.mkdir()
    failed = check(tfrig, host, {**ssh_env, "INVOKE_TFRIG_SSH_KEY": str(not_a_key)})
    assert_one_line_refusal(failed, f"can't read {not_a_key}: Is a directory")


def test_known_hosts_names_match_as_openssh_matches_them():
    from tfrig.hosts.hostkeys import names_match

    assert names_match("[127.0.0.1]:2222", "[127.0.0.1]:2222")
    assert not names_match("[127.0.0.1]:2222", "1")  # brackets are not a character class
    assert names_match("*.example.com,!bad.example.com", "gpu.example.com")
    assert not names_match("*.example.com,!bad.example.com", "bad.example.com")
    assert names_match("gpu-?", "gpu-1") and not names_match("gpu-?", "gpu-10")


def test_names_hashed_by_ssh_keygen_match_their_host(tmp_path):
    from tfrig.hosts.hostkeys import names_match, read_known_hosts

    known = tmp_path / "known_hosts"
    known.write_text(f"10.0.0.5 {other_key(tmp_path)}\n[10.0.0.5]:2222 {other_key(tmp_path, 'two')}\n")
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(known)], check=True, capture_output=True)
    keys, _, _ = read_known_hosts(known)
    assert all(key.names.startswith("|1|") for key in keys)
    assert [names_match(key.names, "10.0.0.5") for key in keys] == [True, False]
    assert [names_match(key.names, "[10.0.0.5]:2222") for key in keys] == [False, True]
