"""Reading nvidia-smi: the query CSV (with or without header and units), the text table, `-L`,
`-q -x` XML, and its failures, into one report with a diagnosis. Pure functions over text.

Formats and exit codes: compat.yaml `nvidia_smi`; real captures in shared/fixtures/nvidia-smi.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from packaging.version import Version

from tfrig.knowledge.smirun import SMI_SECONDS, SMI_TIMED_OUT, bounded

# The fields tfrig queries, in this order; a CSV without a header is read only in this order.
QUERY_FIELDS = (
    "index",
    "name",
    "uuid",
    "driver_version",
    "memory.total",
    "memory.used",
    "compute_cap",
)
QUERY_COMMAND = bounded(f"nvidia-smi --query-gpu={','.join(QUERY_FIELDS)} --format=csv,noheader,nounits")
TABLE_COMMAND = bounded("nvidia-smi")
LIST_COMMAND = bounded("nvidia-smi -L")

# Current TensorFlow wheels carry code for sm_60 and newer (compat.yaml
# tensorflow_builds.official_build_compute_capabilities).
TF_MIN_COMPUTE_CAPABILITY = Version("6.0")

# Compute capability by product name, for captures that don't carry it (tables, old drivers);
# developer.nvidia.com/cuda-gpus as gathered in compat.yaml gce_gpus, plus common data-centre parts.
_CAPABILITY_BY_NAME = (
    ("GB200", "10.0"),
    ("B200", "10.0"),
    ("H200", "9.0"),
    ("H100", "9.0"),
    ("L40S", "8.9"),
    ("L40", "8.9"),
    ("L4", "8.9"),
    ("A100", "8.0"),
    ("A10G", "8.6"),
    ("A10", "8.6"),
    ("T4", "7.5"),
    ("V100", "7.0"),
    ("P100", "6.0"),
    ("P40", "6.1"),
    ("P4", "6.1"),
    ("K80", "3.7"),
    ("K40", "3.5"),
    ("M60", "5.2"),
)

_HEADER = re.compile(
    r"NVIDIA-SMI\s+(?P<smi>[\d.]+)\s+Driver Version:\s+(?P<driver>[\d.]+)(?:\s+CUDA Version:\s+(?P<cuda>[\d.]+))?"
)
_TABLE_GPU = re.compile(
    r"^\|\s+(?P<index>\d+)\s+(?P<name>.+?)\s+(?:On|Off)\s*\|\s*(?P<bus>[0-9A-Fa-f]+:[0-9A-Fa-f]+:[0-9A-Fa-f]+\.[0-9A-Fa-f])"
)
_TABLE_MEMORY = re.compile(r"(?P<used>\d+)MiB\s*/\s*(?P<total>\d+)MiB")
_LIST_GPU = re.compile(r"^GPU (?P<index>\d+): (?P<name>.+?) \(UUID: (?P<uuid>[^)]+)\)")


@dataclass
class Gpu:
    index: int | None = None
    name: str | None = None
    uuid: str | None = None
    memory_mib: int | None = None
    memory_used_mib: int | None = None
    compute_capability: str | None = None
    bus_id: str | None = None
    tf_supported: bool | None = None


@dataclass
class Report:
    driver: str | None = None
    cuda: str | None = None
    gpus: list[Gpu] = field(default_factory=list)
    diagnosis: str | None = None
    fix: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class CaptureError(ValueError):
    """The text is not an nvidia-smi capture tfrig can read."""


def capability_from_name(name: str | None) -> str | None:
    if not name:
        return None
    for marker, capability in _CAPABILITY_BY_NAME:
        if re.search(rf"\b{marker}\b", name):
            return capability
    return None


def _finish(report: Report) -> Report:
    """Fill what follows from what was read: capability by name, TensorFlow support."""
    for gpu in report.gpus:
        if gpu.compute_capability is None:
            gpu.compute_capability = capability_from_name(gpu.name)
        if gpu.compute_capability:
            if not re.fullmatch(r"\d{1,2}\.\d{1,2}", gpu.compute_capability):
                raise CaptureError(f"compute capability {gpu.compute_capability[:20]!r} is not one such as 7.5")
            gpu.tf_supported = Version(gpu.compute_capability) >= TF_MIN_COMPUTE_CAPABILITY
    old = [g for g in report.gpus if g.tf_supported is False]
    if old and report.diagnosis is None:
        names = ", ".join(f"{g.name} (compute capability {g.compute_capability})" for g in old)
        report.diagnosis = f"{names}: current TensorFlow wheels need compute capability 6.0 or newer"
        report.fix = "use a Pascal or newer GPU (e.g. nvidia-tesla-t4, nvidia-l4); the K80 is retired on Compute Engine"
    return report


def _number(value: str | None) -> int | None:
    if value is None:
        return None
    match = re.match(r"\s*(\d+)", value)
    if match and len(match[1]) > 12:  # no GPU index or MiB count is that long
        raise CaptureError(f"a {len(match[1])}-digit number is not nvidia-smi output")
    return int(match[1]) if match else None


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return None if value in ("", "N/A", "[N/A]", "[Not Supported]") else value


def parse_table(text: str) -> Report:
    """The `nvidia-smi` box table (old 79-column and new 91-column layouts)."""
    header = _HEADER.search(text)
    if not header:
        raise CaptureError("no 'NVIDIA-SMI ... Driver Version' header")
    report = Report(driver=header["driver"], cuda=header["cuda"])
    lines = text.splitlines()
    for number, line in enumerate(lines):
        match = _TABLE_GPU.match(line)
        if not match:
            continue
        gpu = Gpu(index=int(match["index"]), name=match["name"].strip(), bus_id=match["bus"])
        following = lines[number + 1] if number + 1 < len(lines) else ""
        memory = _TABLE_MEMORY.search(following)
        if memory:
            gpu.memory_mib, gpu.memory_used_mib = int(memory["total"]), int(memory["used"])
        report.gpus.append(gpu)
    return _finish(report)


def parse_csv(text: str) -> Report:
    """`--query-gpu` CSV: with a header (any field order, units allowed) or without (tfrig's order)."""
    try:
        rows = [row for row in csv.reader(io.StringIO(text.strip()), skipinitialspace=True) if row]
    except csv.Error as exc:  # a field over csv's 128 KiB limit, a NUL byte: not nvidia-smi's CSV
        raise CaptureError(f"not nvidia-smi's CSV ({exc})") from None
    if not rows:
        raise CaptureError("empty CSV")
    first = [cell.strip() for cell in rows[0]]
    if "index" in first or "name" in first or any(cell.startswith("memory.") for cell in first):
        fields = [re.sub(r"\s*\[.*\]$", "", cell) for cell in first]
        rows = rows[1:]
    else:
        if len(first) != len(QUERY_FIELDS):
            raise CaptureError(
                f"a CSV without a header must have tfrig's {len(QUERY_FIELDS)} fields in this order: "
                f"{','.join(QUERY_FIELDS)} (this one has {len(first)}); add the header line"
            )
        fields = list(QUERY_FIELDS)
    aliases = {"gpu_name": "name", "gpu_uuid": "uuid", "gpu_bus_id": "pci.bus_id"}
    fields = [aliases.get(f, f) for f in fields]
    report = Report()
    for row in rows:
        values = dict(zip(fields, (cell.strip() for cell in row), strict=False))
        report.driver = report.driver or _clean(values.get("driver_version"))
        report.gpus.append(
            Gpu(
                index=_number(values.get("index")),
                name=_clean(values.get("name")),
                uuid=_clean(values.get("uuid")),
                memory_mib=_number(values.get("memory.total")),
                memory_used_mib=_number(values.get("memory.used")),
                compute_capability=_clean(values.get("compute_cap")),
                bus_id=_clean(values.get("pci.bus_id")),
            )
        )
    return _finish(report)


def parse_xml(text: str) -> Report:
    """`nvidia-smi -q -x`."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(re.sub(r"<!DOCTYPE[^>]*>", "", text))
    except ET.ParseError as exc:
        raise CaptureError(f"not well-formed XML: {exc}") from None
    report = Report(driver=_clean(root.findtext("driver_version")), cuda=_clean(root.findtext("cuda_version")))
    for index, node in enumerate(root.findall("gpu")):
        minor = _number(node.findtext("minor_number"))
        report.gpus.append(
            Gpu(
                index=minor if minor is not None else index,
                name=_clean(node.findtext("product_name")),
                uuid=_clean(node.findtext("uuid")),
                memory_mib=_number(node.findtext("fb_memory_usage/total")),
                memory_used_mib=_number(node.findtext("fb_memory_usage/used")),
                compute_capability=_clean(node.findtext("compute_cap")),
                bus_id=node.get("id"),
            )
        )
    return _finish(report)


def parse_query_text(text: str) -> Report:
    """`nvidia-smi -q`: the indented `Key : value` log."""
    top = dict(re.findall(r"^(Driver Version|CUDA Version)\s*:\s*(\S+)", text, re.M))
    report = Report(driver=top.get("Driver Version"), cuda=top.get("CUDA Version"))
    for number, block in enumerate(re.split(r"^GPU (?=[0-9A-Fa-f]+:)", text, flags=re.M)[1:]):
        bus_id = block.split()[0]
        values = dict(re.findall(r"^    (\S[^:\n]*?)\s*:\s*(.*)$", block, re.M))
        memory = re.search(r"FB Memory Usage\n\s+Total\s*:\s*(\d+) MiB\n(?:.*\n)*?\s+Used\s*:\s*(\d+) MiB", block)
        minor = _number(values.get("Minor Number"))
        report.gpus.append(
            Gpu(
                index=minor if minor is not None else number,
                name=_clean(values.get("Product Name")),
                uuid=_clean(values.get("GPU UUID")),
                memory_mib=int(memory[1]) if memory else None,
                memory_used_mib=int(memory[2]) if memory else None,
                bus_id=bus_id,
            )
        )
    return _finish(report)


def parse_list(text: str) -> Report:
    """`nvidia-smi -L`: names and UUIDs only."""
    report = Report()
    for line in text.splitlines():
        match = _LIST_GPU.match(line.strip())
        if match:
            report.gpus.append(Gpu(index=int(match["index"]), name=match["name"], uuid=match["uuid"]))
    if not report.gpus:
        raise CaptureError("no 'GPU N: name (UUID: ...)' lines")
    return _finish(report)


# nvidia-smi's failures: (pattern in its output, its exit code if it has its own, diagnosis, fix).
_FAILURES = (
    (
        r"(?!)",  # only its exit code: bounded() gave up waiting
        SMI_TIMED_OUT,
        f"the GPU driver does not answer: nvidia-smi gave no answer in {SMI_SECONDS} s (a hung GPU or driver)",
        "reboot; on a cloud VM, stop and start it (inv gcp.stop gcp.start) to move to other hardware",
    ),
    (
        r"nvidia-smi: (?:command )?not found|nvidia-smi: No such file or directory",
        127,
        "nvidia-smi is not installed: no NVIDIA driver on this host",
        "inv driver.install",
    ),
    (
        r"couldn't communicate with the NVIDIA driver",
        9,
        "the NVIDIA driver is installed but its kernel module is not loaded (often a kernel update "
        "without a module rebuilt for it, or a reboot still pending)",
        "reboot; if it persists, rebuild the module for the running kernel: inv driver.install (DKMS rebuilds it)",
    ),
    (
        r"Driver/library version mismatch",
        None,
        "the driver's user-space libraries were upgraded but the old kernel module is still loaded",
        "reboot (or unload and reload the nvidia modules)",
    ),
    (
        r"No devices were found",
        6,
        "the driver is loaded but finds no GPU",
        "check that a GPU is attached (on Compute Engine: --gpu when creating the VM) and `dmesg | grep -i nvrm`",
    ),
    (
        r"NVML Shared Library Not Found|couldn't find libnvidia-ml",
        12,
        "the NVML library is missing: the driver install is incomplete",
        "inv driver.install",
    ),
    (
        r"infoROM is corrupted",
        14,
        "the GPU's infoROM is corrupted",
        "the GPU needs service; on a cloud VM, stop and start it to move to other hardware",
    ),
    (
        r"fallen off the bus|GPU is lost",
        15,
        "the GPU has fallen off the bus",
        "reboot; on a cloud VM, stop and start it to move to other hardware",
    ),
)


def diagnose_failure(output: str, exit_code: int | None) -> Report:
    """What a failed nvidia-smi run means, and the fix."""
    for pattern, code, diagnosis, fix in _FAILURES:
        if re.search(pattern, output, re.M) or (code is not None and exit_code == code):
            return Report(diagnosis=diagnosis, fix=fix)
    return Report(
        diagnosis=f"nvidia-smi failed (exit {exit_code}): {output.strip()[:200]}",
        fix="read its message; inv gpu.check --json for details",
    )


def parse_capture(text: str) -> Report:
    """Any capture a user might paste: table, CSV, XML, -L, or an error message."""
    report = _parse_capture(text)
    if not report.gpus and report.diagnosis is None:
        raise CaptureError("no GPUs in this capture")
    return report


def _parse_capture(text: str) -> Report:
    stripped = text.strip()
    if not stripped:
        raise CaptureError("the capture is empty")
    if stripped.startswith("<?xml") or stripped.startswith("<nvidia_smi_log"):
        return parse_xml(stripped)
    if _HEADER.search(stripped):
        return parse_table(stripped)
    if "NVSMI LOG" in stripped:
        return parse_query_text(stripped)
    if _LIST_GPU.match(stripped):
        return parse_list(stripped)
    for pattern, _code, _diagnosis, _fix in _FAILURES:
        if re.search(pattern, stripped):
            return diagnose_failure(stripped, None)
    if "is not a valid field to query" in stripped:
        raise CaptureError("this is nvidia-smi refusing a query field; capture `nvidia-smi` (the table) instead")
    if "," in stripped:
        return parse_csv(stripped)
    raise CaptureError("not a table, query CSV, -L list or -q -x XML from nvidia-smi")


def nvidia_on_pci(listing: str) -> list[str]:
    """NVIDIA display/3D controllers from `address vendor device class` lines read off /sys."""
    found = []
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[1].lower() == "0x10de" and parts[3].lower().startswith("0x03"):
            found.append(f"{parts[0]} (device {parts[2]})")
    return found


PCI_PROBE = (
    'for d in /sys/bus/pci/devices/*; do [ -r "$d/vendor" ] && '
    'echo "${d##*/} $(cat "$d/vendor") $(cat "$d/device") $(cat "$d/class")"; done; true'
)
