"""A target's GPUs as nvidia-smi reports them, or why it can't: what gpu.check, driver.install and
gpu.setup read."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tfrig.hosts.host import Host
    from tfrig.knowledge import nvsmi


def gpu_probes() -> dict[str, str]:
    """What `read_gpus` reads."""
    from tfrig.knowledge import nvsmi

    return {"query": nvsmi.QUERY_COMMAND, "table": nvsmi.TABLE_COMMAND, "pci": nvsmi.PCI_PROBE}


def read_gpus(host: Host) -> nvsmi.Report:
    """The target's GPUs from nvidia-smi (query CSV first, the table as fallback), else why not."""
    from tfrig.knowledge import nvsmi

    facts = host.probe(gpu_probes())
    query, table = facts["query"], facts["table"]
    if nvsmi.SMI_TIMED_OUT in (query.rc, table.rc):
        return nvsmi.diagnose_failure("", nvsmi.SMI_TIMED_OUT)
    if query.ok and query.out.strip():
        report = nvsmi.parse_csv(query.out)
        if table.ok:
            report.cuda = nvsmi.parse_table(table.out).cuda
        return report
    if table.ok:
        # Drivers whose query fields differ (compute_cap is recent) still print the table.
        return nvsmi.parse_table(table.out)
    on_bus = nvsmi.nvidia_on_pci(facts["pci"].out)
    if not on_bus:
        return nvsmi.Report(
            diagnosis="no NVIDIA GPU on the PCI bus: this host has no GPU attached",
            fix="use a host with a GPU (on Compute Engine: inv gcp.create --gpu TYPE)",
        )
    report = nvsmi.diagnose_failure(table.out, table.rc)
    report.diagnosis = f"{report.diagnosis} (NVIDIA device on the bus: {', '.join(on_bus)})"
    return report
