#!/usr/bin/env bash
# Install the NVIDIA Container Toolkit from NVIDIA's apt repository and register the `nvidia`
# runtime with Docker (compat.yaml tf_docker_tags.container_toolkit_install_apt).
# Idempotent; usable alone (as root). Needs the NVIDIA driver loaded first.
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

if [ ! -e /proc/driver/nvidia/version ]; then
  echo "no NVIDIA driver is loaded on this host; install one first (tfrig: inv driver.install)" >&2
  exit 2
fi

if ! command -v nvidia-ctk >/dev/null 2>&1; then
  apt_get update -q
  apt_get install -y -q --no-install-recommends ca-certificates curl gnupg2
  curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey \
    | gpg --batch --yes --dearmor -o /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg
  curl -fsSL https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list \
    | sed 's#deb https://#deb [signed-by=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg] https://#g' \
    > /etc/apt/sources.list.d/nvidia-container-toolkit.list
  apt_get update -q
  apt_get install -y -q nvidia-container-toolkit
fi

if ! docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"nvidia"'; then
  nvidia-ctk runtime configure --runtime=docker
  if [ -d /run/systemd/system ]; then
    systemctl restart docker
  elif [ -x /etc/init.d/docker ]; then
    service docker restart
  else
    echo "restart the Docker engine by hand: no systemd or init script here" >&2
    exit 4
  fi
fi
docker info --format '{{json .Runtimes}}' | grep -q '"nvidia"'
