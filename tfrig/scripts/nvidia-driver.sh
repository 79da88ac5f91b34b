#!/usr/bin/env bash
# The NVIDIA driver on Debian/Ubuntu, one step at a time; each step is idempotent. Usable alone
# (as root) and as a GCE startup script. Parameters by environment:
#   STEP     build-tools | blacklist-nouveau | install | hold-kernel | uninstall
#   METHOD   run (NVIDIA's .run installer, default) | apt (distribution or NVIDIA's CUDA repository)
#            | signed (Ubuntu's signed prebuilt modules, under Secure Boot: PACKAGES names them)
#   VERSION  driver version, e.g. 580.159.04 (METHOD=run); BRANCH e.g. 580 (METHOD=apt)
#   MODULE   open | proprietary (kernel module flavour)
#   BASE     NVIDIA's download site or a mirror in its layout (default https://download.nvidia.com):
#            BASE/XFree86/Linux-x86_64/VER/NVIDIA-Linux-x86_64-VER.run, its .sha256sum beside it,
#            and BASE/tesla/VER/... for data-centre-only releases
#   URL      the .run from elsewhere (a URL or a path on this host) instead of BASE
#   SHA256   the SHA-256 the .run must have; without it, NVIDIA's published .sha256sum is used
#   UNVERIFIED=1  run the .run when no checksum is published (a mirror without checksum files)
#   REPO_BASE  NVIDIA's CUDA apt repositories (METHOD=apt on Debian; default NVIDIA's)
# Exit 0 done, 2 bad input, 3 checksum mismatch, 4 the install failed, 5 no checksum to check against.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# Every apt call waits for the dpkg lock, which unattended-upgrades holds for minutes after a VM
# boots, instead of failing on it (apt >= 1.9.11: DPkg::Lock::Timeout, in seconds). That option
# doesn't cover the package lists' lock, which `apt-get update` takes and a first boot's lists
# refresh holds ("Could not get lock /var/lib/apt/lists/lock"): an update is tried again, as long.
apt_get() {
  local deadline=$((SECONDS + ${APT_LOCK_TIMEOUT:-900})) rc
  if [ "$1" != update ]; then apt-get -o DPkg::Lock::Timeout="${APT_LOCK_TIMEOUT:-900}" "$@"; return; fi
  while true; do
    apt-get -o DPkg::Lock::Timeout="${APT_LOCK_TIMEOUT:-900}" "$@" 2>/tmp/tfrig-apt.err && { cat /tmp/tfrig-apt.err >&2; return 0; }
    rc=$?
    if ! grep -q /var/lib/apt/lists/lock /tmp/tfrig-apt.err || [ "${SECONDS}" -ge "${deadline}" ]; then
      cat /tmp/tfrig-apt.err >&2
      return "${rc}"
    fi
    grep -m1 'Could not get lock' /tmp/tfrig-apt.err >&2  # as apt repeats its own waiting line
    sleep 2
  done
}
STEP=${STEP:?STEP is required}
METHOD=${METHOD:-run}
MODULE=${MODULE:-open}
BASE=${BASE:-https://download.nvidia.com}
BASE=${BASE%/}
apt_install() { apt_get update -q && apt_get install -y -q --no-install-recommends "$@"; }
kernel=$(uname -r)

# Packages of the driver stay out of unattended upgrades: a new user space under the loaded module
# makes nvidia-smi say "Driver/library version mismatch" until a reboot. Package-Blacklist entries
# are regular expressions matched at the start of a name (Ubuntu's 50unattended-upgrades: "libc6$",
# "libstdc\+\+6$"); the container toolkit (libnvidia-container*) is not the driver.
UNATTENDED_FILE=/etc/apt/apt.conf.d/51tfrig-nvidia-driver
keep_from_unattended() {
  printf '%s\n' '// tfrig: the NVIDIA driver changes only through driver.install (inv driver.uninstall removes this).' \
    'Unattended-Upgrade::Package-Blacklist {' '    "nvidia-(?!container)";' '    "libnvidia-(?!container)";' \
    '    "linux-modules-nvidia-";' '    "xserver-xorg-video-nvidia";' '};' > "${UNATTENDED_FILE}"
}

# The gcc major the running kernel was built with: kbuild's CONFIG_CC_VERSION_TEXT in its headers
# ("x86_64-linux-gnu-gcc-12 (Ubuntu 12.3.0-1ubuntu1~22.04) 12.3.0"), what kbuild compares the
# compiler with; nothing without headers, or for a kernel not built by gcc. GCE's jammy kernels are
# built with gcc-12 while jammy's cc is gcc-11, whose build of the module then fails on the kernel's
# flags (pop-os/pop#3117): nvidia-installer builds with $CC, else cc.
kernel_gcc() {
  sed -n 's/^CONFIG_CC_VERSION_TEXT="[^"]*gcc[^"]* \([0-9]*\)\.[0-9]*\.[0-9]*"$/\1/p' \
    "/lib/modules/${kernel}/build/include/config/auto.conf" 2>/dev/null || true  # no headers: nothing
}

# The headers meta packages beside the image's kernel meta packages: the meta package that pulled
# the running kernel (Debian's linux-image-cloud-amd64, Ubuntu's linux-image-gcp) has a
# linux-headers- twin (Debian's kernel handbook, ch. 3 "Debian kernel packages"; Ubuntu's
# Kernel/Dev/Meta-Pkgs: "linux-headers-<flavour> depends on the kernel headers package"). With it
# a kernel update brings its headers, and DKMS (its /etc/kernel/header_postinst.d hook) builds the
# driver for the new kernel before the next boot; without it the next boot has no driver.
headers_metas() {
  apt-cache rdepends --installed "linux-image-${kernel}" 2>/dev/null \
    | sed -n 's/^ *|\{0,1\}linux-image-\([a-z][a-z0-9.+-]*\)$/linux-headers-\1/p' | sort -u
}

# Processes with an NVIDIA device open, "PID (name)" each: what keeps the loaded module in use.
gpu_users() {
  local fd pid
  for fd in /proc/[0-9]*/fd/*; do
    case "$(readlink "${fd}" 2>/dev/null)" in
      /dev/nvidia*) pid=${fd#/proc/}; pid=${pid%%/*}; echo "${pid} ($(cat "/proc/${pid}/comm" 2>/dev/null))" ;;
    esac
  done | sort -u | paste -sd, - | sed 's/,/, /g'
}

fetch() {  # fetch URL-or-path FILE: a missing file (404) is exit 22 from curl
  case "$1" in
    /*|file://*) cp "${1#file://}" "$2" ;;
    *) curl -fsSL --retry 3 -o "$2" "$1" ;;
  esac
}

case "${STEP}" in
  build-tools)
    # libc6-dev: nvidia-installer refuses without /usr/include/stdio.h (misc.c), and gcc only
    # Recommends it (Google's installer installs libc-dev for the same reason).
    pkgs=(gcc make dkms libc6-dev)
    apt_get update -q
    if [ "${HEADERS:-1}" = 1 ]; then
      if [ ! -e "/lib/modules/${kernel}/build" ]; then pkgs+=("linux-headers-${kernel}"); fi
      for meta in $(headers_metas); do
        if ! dpkg-query -W -f='${db:Status-Abbrev}' "${meta}" 2>/dev/null | grep -q '^ii' \
           && apt-cache show "${meta}" >/dev/null 2>&1; then
          pkgs+=("${meta}")
          echo "note: ${meta} keeps the kernel's headers current, so DKMS builds the driver for a kernel update"
        fi
      done
    fi
    apt_get install -y -q --no-install-recommends "${pkgs[@]}"
    # The kernel's own compiler where cc is another (the install step builds with it).
    major=$(kernel_gcc)
    if [ -n "${major}" ] && ! command -v "gcc-${major}" >/dev/null; then
      if apt-cache show "gcc-${major}" >/dev/null 2>&1; then
        apt_get install -y -q --no-install-recommends "gcc-${major}"
      else
        echo "note: the kernel was built with gcc-${major}, which this system's archive does not have" >&2
      fi
    fi
    ;;
  blacklist-nouveau)
    # The file nvidia-installer itself writes (compat.yaml nvidia_run_installer.nouveau_disable_file).
    printf '# generated by nvidia-installer\nblacklist nouveau\noptions nouveau modeset=0\n' \
      > /etc/modprobe.d/nvidia-installer-disable-nouveau.conf
    if command -v update-initramfs >/dev/null; then update-initramfs -u; fi
    ;;
  install)
    if [ "${METHOD}" = signed ]; then
      # Secure Boot: Ubuntu's signed prebuilt modules and the user space without DKMS (PACKAGES).
      # shellcheck disable=SC2086  # one word per package
      apt_install ${PACKAGES:?}
      keep_from_unattended
      modprobe nvidia 2>/dev/null || true  # else the plan's verify finds it unloaded and reboots
      exit 0
    fi
    if [ "${METHOD}" = apt ]; then
      . /etc/os-release
      if [ "${ID}" = ubuntu ]; then
        flavour=""; [ "${MODULE}" = open ] && flavour="-open"
        apt_install "nvidia-headless-${BRANCH:?}-server${flavour}" "nvidia-utils-${BRANCH}-server"
      else
        # NVIDIA's CUDA repository for Debian, its driver pinned to the branch (as Google's
        # installer does on Debian): Debian's own archive has one branch per release.
        repo="${REPO_BASE:-https://developer.download.nvidia.com/compute/cuda/repos}/debian${VERSION_ID%%.*}/x86_64"
        if ! dpkg -s cuda-keyring >/dev/null 2>&1; then
          fetch "${repo}/cuda-keyring_1.1-1_all.deb" /tmp/cuda-keyring.deb
          apt_get install -y -q /tmp/cuda-keyring.deb  # through apt: it waits for the dpkg lock, dpkg -i does not
        fi
        if [ -n "${REPO_BASE:-}" ]; then  # a mirror: the keyring's list names NVIDIA's host
          sed -i "s#https://developer.download.nvidia.com/compute/cuda/repos/debian${VERSION_ID%%.*}/x86_64#${repo}#" \
            /etc/apt/sources.list.d/cuda-debian*-x86_64.list 2>/dev/null || true
        fi
        # The branch's pinning package first, as NVIDIA's driver installation guide says: it pins every
        # part of the driver (firmware-nvidia-gsp and the GL libraries too, which the driver needs at
        # exactly its version), where a hand-written list missed some.
        rm -f /etc/apt/preferences.d/tfrig-nvidia-driver  # an older tfrig's hand-written pin
        apt_install "nvidia-driver-pinning-${BRANCH:?}"
        if [ "${MODULE}" = open ]; then apt_install nvidia-open; else apt_install cuda-drivers; fi
      fi
      keep_from_unattended
      exit 0
    fi
    [ -n "${VERSION:-}" ] || { echo "VERSION is required with METHOD=run" >&2; exit 2; }
    name="NVIDIA-Linux-x86_64-${VERSION}.run"
    dir=/var/cache/tfrig; mkdir -p "${dir}"
    file="${dir}/${name}"
    if [ -n "${URL:-}" ]; then
      sums=("${URL}.sha256sum")
      sources=("${URL}")
    else
      sums=("${BASE}/XFree86/Linux-x86_64/${VERSION}/${name}.sha256sum")
      sources=("${BASE}/XFree86/Linux-x86_64/${VERSION}/${name}" "${BASE}/tesla/${VERSION}/${name}")
    fi
    expected=${SHA256:-}
    if [ -z "${expected}" ]; then
      # NVIDIA publishes `sha256sum` output beside each .run (Google's sync_drivers.py checks each
      # driver against it); a mirror without it needs SHA256 or UNVERIFIED=1.
      if fetch "${sums[0]}" "${dir}/${name}.sha256sum" 2>/dev/null; then
        expected=$(cut -d' ' -f1 "${dir}/${name}.sha256sum")
      elif [ "${UNVERIFIED:-0}" != 1 ]; then
        echo "no checksum published at ${sums[0]}: pass SHA256 (tfrig: --sha256), or UNVERIFIED=1 (--unverified) for a mirror without checksum files" >&2
        exit 5
      fi
    fi
    if [ ! -s "${file}" ]; then
      for source in "${sources[@]}"; do
        if fetch "${source}" "${file}.part" 2>/dev/null; then mv "${file}.part" "${file}"; break; fi
      done
      [ -s "${file}" ] || { echo "can't download ${name} from ${sources[*]}" >&2; exit 4; }
    fi
    if [ -n "${expected}" ]; then
      echo "${expected}  ${file}" | sha256sum -c --quiet - >/dev/null 2>&1 \
        || { echo "${name} does not match its SHA-256 ${expected}; removed it, not running it" >&2; rm -f "${file}"; exit 3; }
      echo "verified ${name}: SHA-256 ${expected}"
    else
      echo "running ${name} unverified: no checksum published (UNVERIFIED=1)"
    fi
    # Flags by version (NVIDIA/nvidia-installer option_table.h): --kernel-module-type from 555 on;
    # before it the open module is the kernel-open build directory (-m), the proprietary one the default.
    major=$(kernel_gcc)
    if [ -n "${major}" ] && command -v "gcc-${major}" >/dev/null; then
      export CC="gcc-${major}"
      echo "building with ${CC}, the compiler the running kernel was built with"
    fi
    flags=(-s --dkms --no-cc-version-check)
    if [ "${VERSION%%.*}" -ge 555 ]; then
      flags+=("--kernel-module-type=${MODULE}")
    elif [ "${MODULE}" = open ]; then
      flags+=(-m=kernel-open)
    fi
    # A loaded module of another version goes first: nvidia-installer unloads it, and where it can't
    # (in use) its silent install aborts (kernel.c check_for_unloaded_kernel_module, 580.95.05: the
    # default answer is Abort unless --allow-installation-with-running-driver, an option from 545).
    # nvidia-persistenced, a service, is stopped for it and started again; what else has the GPU open
    # is the user's: it is named, and the driver is installed for the next boot.
    loaded=$(cat /sys/module/nvidia/version 2>/dev/null || true)
    if [ -n "${loaded}" ] && [ "${loaded}" != "${VERSION}" ]; then
      if command -v systemctl >/dev/null && systemctl is-active --quiet nvidia-persistenced 2>/dev/null; then
        systemctl stop nvidia-persistenced && trap 'systemctl start nvidia-persistenced || true' EXIT
      fi
      for m in nvidia_drm nvidia_modeset nvidia_uvm nvidia_peermem nvidia; do
        if [ -e "/sys/module/${m}" ]; then rmmod "${m}" 2>/dev/null || true; fi
      done
      if [ -e /sys/module/nvidia ]; then
        users=$(gpu_users)
        if [ "${VERSION%%.*}" -lt 545 ]; then
          echo "driver ${loaded} is in use (${users:-by the kernel}) and nvidia-installer ${VERSION} can't install under a running driver: stop what uses the GPU, or reboot, and run again" >&2
          exit 4
        fi
        flags+=(--allow-installation-with-running-driver)
        echo "note: driver ${loaded} is in use (${users:-by the kernel}), so it stays loaded: ${VERSION} is installed for the next boot"
      fi
    fi
    if ! sh "${file}" "${flags[@]}"; then
      grep -E '^ERROR' /var/log/nvidia-installer.log >&2 || tail -n 30 /var/log/nvidia-installer.log >&2 || true
      exit 4
    fi
    # Since 520 nvidia-installer registers the module with DKMS after installing it, and a failed
    # registration is only an error message (misc.c dkms_register_module): without it the next
    # kernel has no driver. So check that DKMS has it.
    if ! dkms status -m nvidia -v "${VERSION}" 2>/dev/null | grep -q .; then
      echo "the driver is installed but not registered with DKMS (dkms status has no nvidia/${VERSION}), so a kernel update would leave no driver: see /var/log/nvidia-installer.log, fix DKMS and run again, or hold the kernel (--hold-kernel)" >&2
      exit 4
    fi
    ;;
  hold-kernel)
    # The running kernel and the meta-packages that would pull a new one: Debian's cloud kernel
    # (Google's Debian installer holds linux-image-cloud-amd64 and linux-headers-cloud-amd64),
    # Ubuntu's GCE kernel (linux-gcp and its image and headers) and the generic ones.
    pkgs=("linux-image-${kernel}" "linux-headers-${kernel}")
    for meta in linux-image-cloud-amd64 linux-headers-cloud-amd64 linux-gcp linux-image-gcp linux-headers-gcp \
                linux-image-amd64 linux-headers-amd64; do
      pkgs+=("${meta}")
    done
    installed=()
    for p in "${pkgs[@]}"; do dpkg -s "${p}" >/dev/null 2>&1 && installed+=("${p}"); done
    [ "${#installed[@]}" -eq 0 ] || apt-mark -o DPkg::Lock::Timeout="${APT_LOCK_TIMEOUT:-900}" hold "${installed[@]}"
    ;;
  uninstall)
    if command -v nvidia-uninstall >/dev/null; then nvidia-uninstall -s; fi
    # The driver's packages only: never the container toolkit (nvidia-container-toolkit,
    # libnvidia-container*), which depends on no driver and is the user's.
    # What a repository install brings beside them goes too (libcuda1, the GSP firmware, the GL/EGL
    # libraries): left behind, they clash with a later .run. The CUDA toolkit's packages stay.
    mapfile -t pkgs < <(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' \
        'nvidia-*' 'libnvidia-*' 'cuda-drivers*' 'xserver-xorg-video-nvidia*' 'libcuda1' 'firmware-nvidia-gsp*' \
        'libegl-nvidia*' 'libglx-nvidia*' 'libgl1-nvidia*' 2>/dev/null \
      | awk '$2 == "ii" && $1 !~ /^(nvidia-container-|libnvidia-container)/ {print $1}')
    [ "${#pkgs[@]}" -eq 0 ] || apt_get purge -y -q "${pkgs[@]}"
    rm -f /etc/modprobe.d/nvidia-installer-disable-nouveau.conf /etc/apt/preferences.d/tfrig-nvidia-driver \
      "${UNATTENDED_FILE}"
    ;;
  *) echo "unknown STEP '${STEP}'" >&2; exit 2 ;;
esac
