"""Read-ahead across a chain (tfrig.readahead), over real SSH to a stock-image sshd host: a later
task's first facts come in an earlier task's round trip, and never once anything ran in between."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from invoke import Collection, Config

from tfrig import state
from tfrig.hosts import readahead
from tfrig.hosts.host import Host
from tfrig.hosts.runner import on_targets
from tfrig.tasks.taskdef import task

MARKER = {"marker": "cat /tmp/marker 2>/dev/null || echo none"}


@task
def first(c, change=False, hosts=None):
    def work(host: Host) -> dict[str, Any]:
        seen = host.probe(MARKER)["marker"].out
        if change:
            host.change("echo changed > /tmp/marker")
        return {"seen": seen}

    return on_targets(c, work, hosts=hosts)[0]


@task
def second(c, hosts=None):
    return on_targets(c, lambda host: {"seen": host.probe(MARKER)["marker"].out}, hosts=hosts)[0]


@task
def twice(c, hosts=None):
    """Probes, lets the test change the host behind tfrig's back, and probes again."""

    def work(host: Host) -> dict[str, Any]:
        before = host.probe(MARKER)["marker"].out
        c.config.between()
        return {"before": before, "after": host.probe(MARKER)["marker"].out}

    return on_targets(c, work, hosts=hosts)[0]


readahead.first_probes(second, lambda config, kwargs: MARKER)
readahead.first_probes(twice, lambda config, kwargs: MARKER)
chain_ns = Collection(first, second, twice)


def run_chain(host: Any, known_hosts: Path, *calls: Any, between: Any = None) -> dict[str, Any]:
    config = Config(
        overrides={
            "tfrig": {"hosts": host.spec(), "ssh_key": str(host.key), "known_hosts": str(known_hosts)},
            "between": between or (lambda: None),
        }
    )
    results = readahead.ChainExecutor(chain_ns, config).execute(*calls)
    return {called.name: result for called, result in results.items()}


def log_lines(host: Any) -> list[str]:
    log = state.log_dir() / f"{host.spec()}.log"
    return [line for line in log.read_text().splitlines() if line[:1].isdigit()]


def test_a_later_task_takes_its_first_facts_from_the_earlier_round_trip(
    sshd_factory, known_hosts: Path, state_dir: Path
):
    host = sshd_factory()
    host.exec("echo start > /tmp/marker")
    results = run_chain(host, known_hosts, "first", "second")
    assert results["first"]["seen"] == "start" and results["second"]["seen"] == "start"
    lines = log_lines(host)
    assert len(lines) == 2, lines
    assert " probe rc=0 $ marker" in lines[0]
    assert lines[1].endswith("$ marker: read ahead by an earlier task")


def test_a_change_in_between_drops_what_was_read_ahead(sshd_factory, known_hosts: Path, state_dir: Path):
    host = sshd_factory()
    results = run_chain(host, known_hosts, ("first", {"change": True}), "second")
    assert results["first"]["seen"] == "none"
    assert results["second"]["seen"] == "changed"
    assert not any("read ahead" in line for line in log_lines(host))


def test_a_task_never_takes_its_own_facts_back(sshd_factory, known_hosts: Path, state_dir: Path):
    host = sshd_factory()
    results = run_chain(host, known_hosts, "twice", "second", between=lambda: host.exec("echo moved > /tmp/marker"))
    assert results["twice"] == {"before": "none", "after": "moved"}
    assert results["second"]["seen"] == "moved"  # read ahead by twice's second probe


def test_a_later_task_with_its_own_hosts_is_not_read_for(sshd_factory, known_hosts: Path, state_dir: Path):
    host = sshd_factory()
    other = sshd_factory()
    results = run_chain(host, known_hosts, "first", ("second", {"hosts": other.spec()}))
    assert results["second"]["seen"] == "none"
    assert len(log_lines(host)) == 1 and "read ahead" not in log_lines(other)[0]


@task
def later(c, hosts=None):
    """A task looked for by an earlier one; it does nothing itself."""


@task
def looking_ahead(c, hosts=None):
    """The arguments of `later` further on in the chain on these targets (a driver install asks
    so for tf.install)."""
    return readahead.later_call(c.config, later)


def test_a_task_finds_a_later_task_of_the_chain_on_its_own_targets_only():
    ns = Collection(looking_ahead, later)
    config = Config(overrides={"tfrig": {"hosts": "nowhere"}})

    def chain(*calls: Any) -> Any:
        return next(iter(readahead.ChainExecutor(ns, config).execute(*calls).values()))

    assert chain("looking-ahead") is None
    assert chain("looking-ahead", ("later", {"hosts": "elsewhere"})) is None
    assert chain(("looking-ahead", {"hosts": "vm"}), ("later", {"hosts": "vm"})) == {"hosts": "vm"}
    # `later` without --hosts runs where the chain's target is: the same as the task asking
    assert chain("looking-ahead", ("later", {"hosts": "elsewhere"}), "later") == {}
