"""From what the user asked for and what the target has, to one TensorFlow install plan, or one
clear refusal naming the conflict and the nearest combination that works.

Pure functions over compat.yaml `tensorflow_builds` and `cuda_driver_minimums`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from packaging.version import Version

from tfrig.knowledge.catalog import compat

TF_MIN_COMPUTE_CAPABILITY = Version("6.0")  # compat.yaml official_build_compute_capabilities
AND_CUDA_SINCE = Version("2.14")  # compat.yaml package_history.and_cuda_extra_since
GPU_PACKAGE_UNTIL = Version("1.15")  # tensorflow-gpu was separate up to 1.15


class Refusal(Exception):
    """What was asked can't work; the message names the conflict and what would."""


@dataclass(frozen=True)
class Build:
    """One row of TensorFlow's tested Linux GPU build configurations."""

    tf: str
    package: str
    pythons: tuple[tuple[int, int], ...]
    cuda: str
    cudnn: str

    @property
    def version(self) -> Version:
        return Version(self.tf)

    @property
    def python_range(self) -> str:
        py3 = [p for p in self.pythons if p[0] == 3]
        return f"{py3[0][0]}.{py3[0][1]}–{py3[-1][0]}.{py3[-1][1]}"

    def supports(self, python: str) -> bool:
        major, minor = (int(x) for x in python.split(".")[:2])
        return (major, minor) in self.pythons


@dataclass
class InstallPlan:
    tf: str
    python: str
    gpu: bool
    requirement: str  # what pip installs, pinned
    cuda: str | None = None
    cudnn: str | None = None
    conda_packages: list[str] = field(default_factory=list)  # CUDA libraries from conda (TF < 2.14)
    pip_packages: list[str] = field(default_factory=list)  # installed beside TensorFlow (pip's cuDNN for 2.12/2.13)
    driver_min: str | None = None
    notes: list[str] = field(default_factory=list)


def conda_route(build: Build) -> tuple[list[str], list[str]]:
    """The CUDA libraries of a TensorFlow < 2.14 GPU build: (conda-forge packages, pip packages).
    compat.yaml miniconda.tf_before_2_14_cudnn has the builds that exist and the sources."""
    cudnn = compat()["miniconda"]["tf_before_2_14_cudnn"]["by_cudnn"][build.cudnn]
    conda = [f"cudatoolkit={build.cuda}"] + ([cudnn["conda"]] if "conda" in cudnn else [])
    return conda, [cudnn["pip"]] if "pip" in cudnn else []


def _pythons(text: str) -> tuple[tuple[int, int], ...]:
    """'3.9-3.12' or '2.7, 3.3-3.7' → every (major, minor) in it."""
    found: list[tuple[int, int]] = []
    for part in (p.strip() for p in text.split(",")):
        low, _, high = part.partition("-")
        lo_major, lo_minor = (int(x) for x in low.split("."))
        hi_major, hi_minor = (int(x) for x in (high or low).split("."))
        found += [(lo_major, minor) for minor in range(lo_minor, hi_minor + 1)] if lo_major == hi_major else []
    return tuple(found)


def builds() -> list[Build]:
    """Every TensorFlow release tfrig knows, newest first."""
    return [
        Build(tf=r["tf"], package=r["package"], pythons=_pythons(r["python"]), cuda=r["cuda"], cudnn=r["cudnn"])
        for r in compat()["tensorflow_builds"]["linux_gpu"]
    ]


def find_build(version: str | None) -> Build:
    known = builds()
    if version in (None, "", "latest"):
        return known[0]
    assert version is not None
    if version.startswith("tensorflow-gpu"):
        raise Refusal(
            "tensorflow-gpu is gone from PyPI since December 2022 (its 2.12 is an empty package that fails); "
            "since TensorFlow 2.1 the `tensorflow` package has the GPU support: pass --version 2.21.0 and --gpu."
        )
    if not re.fullmatch(r"\d+\.\d+(\.\d+)?", version):
        raise Refusal(f"'{version}' is not a TensorFlow version such as 2.21.0 (`inv tf.versions` lists them).")
    wanted = Version(version)
    same_minor = [b for b in known if (b.version.major, b.version.minor) == (wanted.major, wanted.minor)]
    if not same_minor:
        raise Refusal(
            f"TensorFlow {version} is not a release tfrig knows; the newest is {known[0].tf} (`inv tf.versions`)."
        )
    released = [str(v) for v in compat()["tensorflow_releases"]["versions"]]
    if version.count(".") == 2 and version not in released:
        minor = f"{wanted.major}.{wanted.minor}"
        these = [v for v in released if v.startswith(minor + ".")]
        raise Refusal(
            f"TensorFlow {version} was never released (PyPI); {minor} has {', '.join(these)} (`inv tf.versions`)."
        )
    build = same_minor[0]
    # A patch release (2.16.2) shares its minor's configuration; pin what was asked.
    return Build(
        build.tf if version.count(".") == 1 else version, build.package, build.pythons, build.cuda, build.cudnn
    )


def _and_cuda_pythons(build: Build) -> tuple[tuple[int, int], ...]:
    """The Pythons a release's `tensorflow[and-cuda]` installs on, where narrower than its own."""
    fix = compat()["tensorflow_builds"]["and_cuda_installable"].get(f"{build.version.major}.{build.version.minor}")
    return _pythons(fix["pythons"]) if fix and "pythons" in fix else ()


def _and_cuda_version(build: Build, python: str, plan: InstallPlan) -> str:
    """The pin of `tensorflow[and-cuda]` that pip can install for this release and Python
    (compat.yaml tensorflow_builds.and_cuda_installable), or a Refusal with the reason."""
    fixes = compat()["tensorflow_builds"]["and_cuda_installable"]
    exact = fixes.get(build.tf)
    if exact and "use" in exact:
        plan.notes.append(f"installing {exact['use']} for {build.tf}: {exact['why']}")
        return str(exact["use"])
    narrower = _and_cuda_pythons(build)
    if narrower and tuple(int(x) for x in python.split(".")[:2]) not in narrower:
        minor = fixes[f"{build.version.major}.{build.version.minor}"]
        raise Refusal(
            f"TensorFlow {build.tf} with its CUDA libraries (tensorflow[and-cuda]) installs on Python "
            f"{minor['pythons']} only ({minor['why']}): use --python 3.10 in a conda env, or TensorFlow 2.15+."
        )
    return build.tf


def driver_minimum(cuda: str, tf: str | None = None) -> str:
    """The lowest Linux driver for a CUDA version: the minor-version-compatibility minimum of its
    family (11.x and later), else the toolkit's own driver (compat.yaml cuda_driver_minimums). From
    TensorFlow 2.18 on, whose own PTX kernels need the driver of the CUDA they were built with, the
    toolkit's driver (tensorflow_ptx_needs_toolkit_driver_since)."""
    minimums = compat()["cuda_driver_minimums"]
    toolkit = minimums["toolkit_ga_driver_linux"].get(cuda)
    since = minimums["tensorflow_ptx_needs_toolkit_driver_since"]
    if tf and toolkit and Version(tf) >= Version(str(since)):
        return str(toolkit)
    major = cuda.split(".")[0]
    family = minimums["family_minimums_linux"].get(f"{major}.x")
    if family:
        return str(family["min"])
    exact = minimums["family_minimums_linux"].get(cuda) or {"min": toolkit}
    return str(exact["min"])


def _nearest_for_python(python: str, build: Build) -> str:
    fitting = [b for b in builds() if b.supports(python)]
    if not fitting:
        return f"no TensorFlow release tfrig knows supports Python {python}"
    newer = [b for b in fitting if b.version > build.version]
    older = [b for b in fitting if b.version < build.version]
    near = newer[-1] if newer else older[0]
    return f"TensorFlow {near.version.major}.{near.version.minor}{'+' if newer else ''}"


def resolve(
    version: str | None = None,
    python: str | None = None,
    gpu: bool = False,
    target_python: str | None = None,
    driver: str | None = None,
    compute_capability: str | None = None,
) -> InstallPlan:
    """One install plan for TensorFlow `version` (default: newest) on a target, or a Refusal."""
    build = find_build(version)
    if python:
        if not re.fullmatch(r"\d+\.\d+", python):
            raise Refusal(f"--python {python}: give major.minor, e.g. 3.11.")
        if not build.supports(python):
            newest_python = max(p for p in build.pythons if p[0] == 3)
            raise Refusal(
                f"TensorFlow {build.tf} supports Python {build.python_range}; use --python "
                f"{newest_python[0]}.{newest_python[1]} or {_nearest_for_python(python, build)}."
            )
        chosen_python = python
    elif target_python and build.supports(target_python):
        chosen_python = ".".join(target_python.split(".")[:2])
    elif target_python:
        raise Refusal(
            f"the target's Python is {target_python}, and TensorFlow {build.tf} supports {build.python_range}: "
            "use a conda env (`inv conda.install conda.create`), --python, or "
            f"{_nearest_for_python(target_python, build)}."
        )
    else:
        usable = [p for p in build.pythons if p[0] == 3]
        if gpu and _and_cuda_pythons(build):  # the newest Python its CUDA libraries install on
            usable = [p for p in usable if p in _and_cuda_pythons(build)] or usable
        newest = max(usable)
        chosen_python = f"{newest[0]}.{newest[1]}"

    if not gpu:
        return InstallPlan(tf=build.tf, python=chosen_python, gpu=False, requirement=f"tensorflow=={build.tf}")

    if compute_capability and Version(compute_capability) < TF_MIN_COMPUTE_CAPABILITY:
        raise Refusal(
            f"this GPU's compute capability {compute_capability} is below 6.0, which TensorFlow's wheels need; "
            "use a Pascal or newer GPU, or install without --gpu for the CPU build."
        )
    plan = InstallPlan(tf=build.tf, python=chosen_python, gpu=True, requirement="", cuda=build.cuda, cudnn=build.cudnn)
    plan.driver_min = driver_minimum(build.cuda, build.tf)
    if build.version >= AND_CUDA_SINCE:
        plan.tf = _and_cuda_version(build, chosen_python, plan)
        plan.requirement = f"tensorflow[and-cuda]=={plan.tf}"
    else:
        plan.requirement = f"tensorflow=={build.tf}" if build.version.major >= 2 else f"tensorflow-gpu=={build.tf}"
        plan.conda_packages, plan.pip_packages = conda_route(build)
    if driver and Version(driver) < Version(plan.driver_min):
        workable = [b for b in builds() if Version(driver) >= Version(driver_minimum(b.cuda, b.tf))]
        instead = f" or TensorFlow {workable[0].tf} (CUDA {workable[0].cuda})" if workable else ""
        raise Refusal(
            f"driver {driver} is below {plan.driver_min}, which CUDA {build.cuda} (TensorFlow {build.tf}) needs; "
            f"update the driver (`inv driver.install`){instead}."
        )
    return plan
