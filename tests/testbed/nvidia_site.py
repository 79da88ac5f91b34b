"""The test bed's stand-in for NVIDIA's download site, and for the apt archive's kernel headers.

Served over HTTP inside the test network (conftest `nvidia_site`), in NVIDIA's layout
(compat.yaml nvidia_run_installer.download_url and published_checksum):

    XFree86/Linux-x86_64/VER/NVIDIA-Linux-x86_64-VER.run       the installer
    XFree86/Linux-x86_64/VER/NVIDIA-Linux-x86_64-VER.run.sha256sum   `sha256sum` output, as NVIDIA publishes
    tesla/VER/NVIDIA-Linux-x86_64-VER.run                      data-centre copies, no checksum beside them

Each `.run` is a shell archive, like NVIDIA's (makeself), around tests/testbed/nvidia/installer.py,
which accepts exactly the options of its version's option_table.h (option_tables.json).

    kernel/   a flat apt repository with linux-headers-$(uname -r): this machine's kernel is no
              distribution kernel, so Debian's archive has no headers for it; GPU test hosts get this
              source so that the driver path can go on as on a VM whose distribution kernel has its
              headers in the archive. The package holds a Makefile, not real headers. A test can
              add kernel releases (`add_kernel_release`): linux-image-K, linux-headers-K and the
              cloud flavour's meta packages that pull them, with Debian's package hooks.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent / "nvidia"
RUN_NAME = "NVIDIA-Linux-x86_64-{version}.run"


def option_table(version: str) -> list[list[str]]:
    """The options of the newest tagged nvidia-installer not newer than `version`."""
    from packaging.version import Version

    tables = json.loads((HERE / "option_tables.json").read_text())["tables"]
    tags = sorted((tag for tag in tables if Version(tag) <= Version(version)), key=Version)
    if not tags:
        raise ValueError(f"no option table at or below {version}")
    return tables[tags[-1]]


def run_file(version: str) -> bytes:
    """A `.run` stand-in for `version`: a POSIX sh header and a base64 tarball payload."""
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w:gz") as tar:
        for name, text in (
            ("installer.py", (HERE / "installer.py").read_text()),
            ("nvidia-smi", (HERE / "nvidia-smi").read_text().replace("@VERSION@", version)),
        ):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    options = ";".join(",".join(option) for option in option_table(version))
    header = (
        "#!/bin/sh\n"
        f"# Stand-in for {RUN_NAME.format(version=version)} (tfrig's test bed: tests/testbed/nvidia_site.py).\n"
        "payload=$(mktemp -d); trap 'rm -rf \"$payload\"' EXIT\n"
        'sed -n \'/^__PAYLOAD_BELOW__$/,$p\' "$0" | tail -n +2 | base64 -d | tar -xz -C "$payload"\n'
        f"STAND_IN_VERSION={version} STAND_IN_OPTIONS='{options}' STAND_IN_PAYLOAD=\"$payload\" "
        'python3 "$payload/installer.py" "$@"\n'
        "exit $?\n"
        "__PAYLOAD_BELOW__\n"
    )
    return header.encode() + base64.encodebytes(payload.getvalue())


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def add_driver(site: Path, version: str, *, checksum: bool = True, tesla: bool = True) -> Path:
    """Publish `version` on the site (its XFree86 copy and checksum, and a tesla/ copy)."""
    data = run_file(version)
    name = RUN_NAME.format(version=version)
    xfree86 = site / "XFree86" / "Linux-x86_64" / version / name
    if checksum:
        _write(xfree86, data)
        _write(xfree86.with_name(name + ".sha256sum"), f"{hashlib.sha256(data).hexdigest()}  {name}\n".encode())
    if tesla:
        _write(site / "tesla" / version / name, data)
    return xfree86


def _kernel_deb(folder: Path, package: str, kernel: str, postinst: str, make_tree: Callable[[Path], None]) -> Path:
    root = Path(tempfile.mkdtemp())
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: 1.0\nArchitecture: amd64\n"
        "Maintainer: tfrig test bed <tests@tfrig.invalid>\n"
        f"Description: stand-in of {package} for the test bed's kernel {kernel}\n"
    )
    (root / "DEBIAN" / "postinst").write_text(postinst)
    (root / "DEBIAN" / "postinst").chmod(0o755)
    make_tree(root)
    deb = folder / f"{package}_1.0_amd64.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)], check=True, capture_output=True)
    return deb


def _headers_deb(kernel: str, folder: Path) -> Path:
    """linux-headers-K: a build tree (a Makefile, the compiler kbuild compares with) and Debian's
    postinst, which runs the header hooks with K (DKMS builds its modules for K there)."""

    def tree(root: Path) -> None:
        source = root / "usr" / "src" / f"linux-headers-{kernel}"
        (source / "include" / "config").mkdir(parents=True)
        (source / "Makefile").write_text(f"# stand-in kernel build tree for {kernel}\n")
        # What kbuild compares the compiler with: this stand-in kernel was "built" by Debian 12's gcc.
        compiler = 'CONFIG_CC_VERSION_TEXT="x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0"\n'
        (source / "include" / "config" / "auto.conf").write_text(compiler)
        (source / ".config").write_text(compiler)
        modules = root / "lib" / "modules" / kernel
        modules.mkdir(parents=True)
        os.symlink(f"/usr/src/linux-headers-{kernel}", modules / "build")

    # As Debian's linux-headers-K postinst (e.g. 6.1.0-35's): run-parts over the header hooks with K.
    postinst = (
        "#!/bin/sh -e\nif [ -d /etc/kernel/header_postinst.d ]; then\n"
        f"  run-parts --report --exit-on-error --arg={kernel} /etc/kernel/header_postinst.d\nfi\n"
    )
    return _kernel_deb(folder, f"linux-headers-{kernel}", kernel, postinst, tree)


def _image_deb(kernel: str, folder: Path) -> Path:
    """linux-image-K: /boot/vmlinuz-K (the stand-in host boots the newest one) and Debian's
    postinst, which runs the kernel hooks with K and the image's path (DKMS's among them)."""

    def tree(root: Path) -> None:
        (root / "boot").mkdir()
        (root / "boot" / f"vmlinuz-{kernel}").write_text(f"stand-in kernel {kernel}\n")
        (root / "lib" / "modules" / kernel / "kernel").mkdir(parents=True)

    postinst = (
        "#!/bin/sh -e\nif [ -d /etc/kernel/postinst.d ]; then\n"
        f"  run-parts --report --exit-on-error --arg={kernel} --arg=/boot/vmlinuz-{kernel} /etc/kernel/postinst.d\n"
        "fi\n"
    )
    return _kernel_deb(folder, f"linux-image-{kernel}", kernel, postinst, tree)


def _reindex_kernel_repo(folder: Path) -> None:
    packages = _index(folder, sorted(folder.glob("*.deb")))
    (folder / "Release").write_text(
        f"Origin: tfrig-test-bed\nLabel: kernel headers\nSHA256:\n"
        f" {hashlib.sha256(packages).hexdigest()} {len(packages)} Packages\n"
    )


def add_kernel_headers(site: Path, kernel: str | None = None) -> str:
    """A flat apt repository under kernel/ with the headers package; returns its sources line path part."""
    kernel = kernel or os.uname().release
    folder = site / "kernel"
    folder.mkdir(parents=True, exist_ok=True)
    _headers_deb(kernel, folder)
    _reindex_kernel_repo(folder)
    return "kernel"


def add_kernel_release(site: Path, kernel: str, meta_version: str) -> None:
    """Kernel K in the kernel/ repository: linux-image-K and linux-headers-K, and the meta packages
    of Debian's cloud flavour at `meta_version` pulling them (linux-image-cloud-amd64 Depends
    linux-image-K, linux-headers-cloud-amd64 Depends linux-headers-K), as a kernel update publishes
    them: a higher `meta_version` is the update an upgrade takes."""
    folder = site / "kernel"
    if not (folder / f"linux-image-{kernel}_1.0_amd64.deb").exists():
        _image_deb(kernel, folder)
    if not (folder / f"linux-headers-{kernel}_1.0_amd64.deb").exists():
        _headers_deb(kernel, folder)
    for part in ("image", "headers"):
        # An epoch above Debian's own meta packages of these names (bookworm's archive has them, and
        # they pull a real kernel): the host takes the test's.
        _deb(folder, f"linux-{part}-cloud-amd64", f"99:{meta_version}", {}, depends=f"linux-{part}-{kernel}")
    _reindex_kernel_repo(folder)


def _deb(folder: Path, package: str, version: str, files: dict[str, tuple[str | bytes, int]], **fields: str) -> Path:
    """A .deb of `package` holding `files` (path -> (text, mode))."""
    root = Path(tempfile.mkdtemp())
    (root / "DEBIAN").mkdir()
    extra = "".join(f"{key.replace('_', '-').title()}: {value}\n" for key, value in fields.items())
    (root / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: {version}\nArchitecture: all\n"
        f"Maintainer: tfrig test bed <tests@tfrig.invalid>\n{extra}Description: test-bed stand-in of {package}\n"
    )
    for path, (text, mode) in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(text if isinstance(text, bytes) else text.encode())
        target.chmod(mode)
    deb = folder / f"{package}_{version.split(':')[-1]}_all.deb"  # no epoch in the name, as in Debian's pool
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)], check=True, capture_output=True)
    return deb


def _index(folder: Path, debs: list[Path]) -> bytes:
    entries = []
    for deb in debs:
        control = subprocess.run(["dpkg-deb", "-f", str(deb)], check=True, capture_output=True, text=True).stdout
        data = deb.read_bytes()
        entries.append(
            control.strip()
            + f"\nFilename: ./{deb.name}\nSize: {len(data)}\nSHA256: {hashlib.sha256(data).hexdigest()}\n"
        )
    packages = ("\n".join(entries) + "\n").encode()
    (folder / "Packages").write_bytes(packages)
    return packages


def add_cuda_repo(site: Path, gnupg_home: Path, versions: tuple[str, ...] = ("580.95.05", "590.44.01")) -> str:
    """NVIDIA's CUDA apt repository for Debian 12, as a flat repository signed with a key of the test
    run's own (NVIDIA's layout: repos/debian12/x86_64/ with cuda-keyring_1.1-1_all.deb, whose list
    names developer.download.nvidia.com and whose keyring verifies the InRelease). Its `nvidia-open`
    and `cuda-drivers` packages of each version (each with its exact-version parts, and the branch's
    `nvidia-driver-pinning-BRANCH`, whose contents here are the test bed's own: NVIDIA's package
    was not read) install the nvidia-smi stand-in and a stand-in module under updates/dkms, which
    the stock image's boot hook "loads": apt, like DKMS, loads no module, so the driver is in use
    after the next boot. Returns the repository base for `driver.apt_repo_base`."""
    folder = site / "cuda" / "repos" / "debian12" / "x86_64"
    folder.mkdir(parents=True, exist_ok=True)
    gnupg_home.mkdir(mode=0o700, parents=True, exist_ok=True)
    gpg = ["gpg", "--batch", "--homedir", str(gnupg_home)]
    subprocess.run(
        [*gpg, "--passphrase", "", "--quick-gen-key", "cudatools@tfrig.invalid", "ed25519", "sign", "never"],
        check=True,
        capture_output=True,
    )
    keyring = subprocess.run([*gpg, "--export"], check=True, capture_output=True).stdout
    kernel = os.uname().release
    debs = [
        _deb(
            folder,
            "cuda-keyring",
            "1.1-1",
            {
                "/usr/share/keyrings/cuda-archive-keyring.gpg": (keyring, 0o644),
                "/etc/apt/sources.list.d/cuda-debian12-x86_64.list": (
                    "deb [signed-by=/usr/share/keyrings/cuda-archive-keyring.gpg] "
                    "https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/ /\n",
                    0o644,
                ),
            },
        )
    ]
    smi = (HERE / "nvidia-smi").read_text()
    for version in versions:
        # The module "loads" at boot through the stock image's hook (the running kernel's nvidia.ko).
        files: dict[str, tuple[str | bytes, int]] = {
            "/usr/bin/nvidia-smi": (smi.replace("@VERSION@", version), 0o755),
            f"/lib/modules/{kernel}/updates/dkms/nvidia.ko": (f"stand-in nvidia.ko {version}\n", 0o644),
        }
        exact = f"{version}-1"
        branch = version.split(".")[0]
        # As NVIDIA's Debian packages: the driver's parts at exactly its version (nvidia-kernel-dkms
        # Depends firmware-nvidia-gsp (= V)), so a pin that misses one of them leaves apt with the
        # newest branch's for it and unmet dependencies; the branch's pinning package pins them all.
        debs.append(_deb(folder, "firmware-nvidia-gsp", exact, {}))
        debs.append(_deb(folder, "libcuda1", exact, {}))
        debs.append(_deb(folder, "nvidia-kernel-dkms", exact, {}, depends=f"firmware-nvidia-gsp (= {exact})"))
        pinned = "nvidia-open cuda-drivers nvidia-kernel-dkms firmware-nvidia-gsp libcuda1"
        pin = f"Package: {pinned}\nPin: version {branch}.*\nPin-Priority: 1000\n"
        debs.append(
            _deb(
                folder,
                f"nvidia-driver-pinning-{branch}",
                exact,
                {f"/etc/apt/preferences.d/nvidia-driver-pinning-{branch}": (pin, 0o644)},
            )
        )
        for package in ("nvidia-open", "cuda-drivers"):
            debs.append(
                _deb(
                    folder,
                    package,
                    exact,
                    files,
                    conflicts="cuda-drivers" if package == "nvidia-open" else "nvidia-open",
                    depends=f"nvidia-kernel-dkms (= {exact}), libcuda1 (= {exact})",
                )
            )
    packages = _index(folder, debs)
    (folder / "Release").write_text(
        "Origin: NVIDIA (test-bed stand-in)\nLabel: NVIDIA CUDA\nArchitecture: x86_64\n"
        f"SHA256:\n {hashlib.sha256(packages).hexdigest()} {len(packages)} Packages\n"
    )
    subprocess.run(
        [*gpg, "--yes", "--clearsign", "-o", str(folder / "InRelease"), str(folder / "Release")],
        check=True,
        capture_output=True,
    )
    subprocess.run(["gpgconf", "--homedir", str(gnupg_home), "--kill", "gpg-agent"], capture_output=True)
    return "cuda/repos"
