"""gpu: what GPUs a target has, whether TensorFlow can use them, and why not."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from invoke import Collection
from invoke.exceptions import Exit

from tfrig.hosts import readahead
from tfrig.hosts.runner import on_targets
from tfrig.steps.gpus import gpu_probes, read_gpus
from tfrig.tasks import driver
from tfrig.tasks.taskdef import HOSTS_HELP, JSON_HELP, task
from tfrig.ui import print_json

if TYPE_CHECKING:
    from tfrig.hosts.host import Host
    from tfrig.knowledge import nvsmi

CAPTURE_LIMIT = 8 * 2**20  # bytes: nvidia-smi -q -x for 16 GPUs is well under 1 MiB

CHECK_HELP = {
    "input": (
        "diagnose a saved capture instead of a host: the nvidia-smi table, -L, -q, -q -x XML, or a "
        "--query-gpu CSV (with a header in any field order; without one only in tfrig's order: "
        "index,name,uuid,driver_version,memory.total,memory.used,compute_cap)"  # nvsmi.QUERY_FIELDS
    ),
    "hosts": HOSTS_HELP,
    "json": JSON_HELP,
}


def describe(report: nvsmi.Report) -> list[str]:
    lines = []
    for gpu in report.gpus:
        memory = f"{gpu.memory_mib} MiB" if gpu.memory_mib is not None else "memory unknown"
        capability = (
            f"compute capability {gpu.compute_capability}" if gpu.compute_capability else "compute capability unknown"
        )
        tf = {
            True: "TensorFlow can use it",
            False: "TensorFlow can't use it",
            None: "TensorFlow support unknown",
        }[gpu.tf_supported]
        lines.append(f"GPU {gpu.index}: {gpu.name}, {memory}, {capability}; {tf}")
    if report.driver:
        lines.append(f"driver {report.driver}" + (f", supports CUDA up to {report.cuda}" if report.cuda else ""))
        newest_note = None if report.diagnosis else tensorflow_driver_note(report.driver)
        if newest_note:
            lines.append(f"note: {newest_note}")
    if report.diagnosis:
        lines.append(f"diagnosis: {report.diagnosis}")
        lines.append(f"fix: {report.fix}")
    return lines


def tensorflow_driver_note(driver: str) -> str | None:
    """What this driver holds back, if anything: the newest TensorFlow it runs on the GPU."""
    from packaging.version import InvalidVersion, Version

    from tfrig.knowledge import resolver

    try:
        have = Version(driver)
    except InvalidVersion:
        return None
    builds = resolver.builds()
    newest = builds[0]
    need = resolver.driver_minimum(newest.cuda, newest.tf)
    if have >= Version(need):
        return None
    runs = next((b for b in builds if have >= Version(resolver.driver_minimum(b.cuda, b.tf))), None)
    return (
        f"TensorFlow {newest.tf} on the GPU needs driver {need} or newer (CUDA {newest.cuda})"
        + (f"; this driver runs TensorFlow up to {runs.tf}" if runs else "")
        + ": inv driver.install"
    )


@task(help=CHECK_HELP)
def check(c, input=None, hosts=None, json=False):
    """Show the target's GPUs, driver and CUDA, and whether TensorFlow can use them."""
    from tfrig.knowledge import nvsmi

    if input:
        try:
            # Opened without waiting for a writer (a FIFO no one writes to then reads as empty),
            # read in blocking mode (a pipe on /dev/stdin), at most CAPTURE_LIMIT (/dev/zero).
            fd = os.open(input, os.O_RDONLY | os.O_NONBLOCK)
            os.set_blocking(fd, True)
            with os.fdopen(fd, "rb") as capture:
                data = capture.read(CAPTURE_LIMIT + 1)
        except OSError as exc:
            raise Exit(f"--input {input}: {exc.strerror}.") from None
        if len(data) > CAPTURE_LIMIT:
            raise Exit(f"--input {input}: over {CAPTURE_LIMIT // 2**20} MiB; nvidia-smi's captures are a few KiB.")
        text = data.decode(errors="replace")
        try:
            report = nvsmi.parse_capture(text)
        except nvsmi.CaptureError as exc:
            raise Exit(f"--input {input}: {exc}.") from None
        if json:
            print_json(report.as_dict())
        else:
            print("\n".join(describe(report)))
        if report.diagnosis:
            raise Exit(code=1)
        return

    def work(host: Host) -> dict[str, Any]:
        report = read_gpus(host)
        if not json:
            for line in describe(report):
                host.say(line)
        return report.as_dict()

    results = on_targets(
        c,
        work,
        hosts=hosts,
        json_out=json,
        summary=lambda r: r["diagnosis"] or ", ".join(g["name"] for g in r["gpus"]),
    )
    if any(r.get("diagnosis") for r in results):
        raise Exit(code=1)


@task(help={**driver.INSTALL_HELP, "docker": "also install the NVIDIA Container Toolkit for Docker"})
def setup(
    c,
    version=None,
    branch=None,
    method=None,
    module=None,
    cuda=None,
    sha256=None,
    unverified=False,
    installer_url=None,
    download_base=None,
    hold_kernel=False,
    docker=False,
    hosts=None,
    json=False,
):
    """Make the target's GPU ready: driver, (--docker) container toolkit, then check it."""
    options = driver.install_options(
        c,
        version=version,
        branch=branch,
        method=method,
        module=module,
        cuda=cuda,
        sha256=sha256,
        unverified=unverified,
        installer_url=installer_url,
        download_base=download_base,
        hold_kernel=hold_kernel,
    )

    def work(host: Host) -> dict[str, Any]:
        result = {"driver": driver.install_driver(host, **options, c=c)}
        if docker:
            from tfrig.tasks.docker import ensure_toolkit

            result["toolkit"] = ensure_toolkit(host)
        if host.dry:
            return result
        report = read_gpus(host)
        result["check"] = report.as_dict()
        if report.diagnosis:
            raise Exit(f"[{host.label}] {report.diagnosis}; fix: {report.fix}")
        names = ", ".join(f"{g.name}" for g in report.gpus)
        host.say(f"GPU ready: {names}, driver {report.driver}, CUDA up to {report.cuda}")
        return result

    on_targets(c, work, hosts=hosts, json_out=json, summary=lambda r: f"driver {r['driver']['driver']}")


readahead.first_probes(check, lambda config, kwargs: None if kwargs.get("input") else gpu_probes())
ns = Collection("gpu", check, setup)
ns.configure({"gpu": {}})
