#!/usr/bin/env bash
# Install Docker Engine on Debian/Ubuntu, add a user to the docker group, start the service.
# Idempotent; usable alone (as root) and as a GCE startup script.
#   METHOD        repo (Docker's apt repository, default) | distro (docker.io) | script (get.docker.com)
#   DOCKER_USER   user to add to the docker group (optional; the group is root-equivalent)
#   START         1 (default) to start the service and check it answers, 0 to leave it
#   SCRIPT_SHA256 with METHOD=script: the SHA-256 the downloaded script must have
#   UNVERIFIED    1 to run the convenience script without a SHA-256 (the user accepted the risk)
set -euo pipefail
METHOD=${METHOD:-repo}
START=${START:-1}
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

. /etc/os-release
case "${ID}" in debian|ubuntu) ;; *) echo "unsupported OS '${ID}': Debian or Ubuntu only" >&2; exit 2 ;; esac

apt_install() { apt_get update -q && apt_get install -y -q --no-install-recommends "$@"; }

if ! command -v dockerd >/dev/null 2>&1; then
  case "${METHOD}" in
    distro)
      apt_install docker.io
      ;;
    repo)
      apt_install ca-certificates curl
      install -m 0755 -d /etc/apt/keyrings
      curl -fsSL "https://download.docker.com/linux/${ID}/gpg" -o /etc/apt/keyrings/docker.asc
      chmod a+r /etc/apt/keyrings/docker.asc
      echo "deb [arch=$(dpkg --print-architecture) signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/${ID} ${VERSION_CODENAME} stable" \
        > /etc/apt/sources.list.d/docker.list
      apt_install docker-ce docker-ce-cli containerd.io docker-buildx-plugin docker-compose-plugin
      ;;
    script)
      apt_install ca-certificates curl
      tmp=$(mktemp -d)
      trap 'rm -rf "${tmp}"' EXIT
      curl -fsSL https://get.docker.com -o "${tmp}/get-docker.sh"
      if [ -n "${SCRIPT_SHA256:-}" ]; then
        echo "${SCRIPT_SHA256}  ${tmp}/get-docker.sh" | sha256sum -c --quiet - \
          || { echo "get-docker.sh does not match SHA-256 ${SCRIPT_SHA256}; not running it" >&2; exit 3; }
      elif [ "${UNVERIFIED:-0}" != 1 ]; then
        echo "refusing to run get-docker.sh without SCRIPT_SHA256 (set UNVERIFIED=1 to accept the risk)" >&2
        exit 3
      fi
      sh "${tmp}/get-docker.sh"
      ;;
    *) echo "unknown METHOD '${METHOD}': repo, distro or script" >&2; exit 2 ;;
  esac
fi

getent group docker >/dev/null || groupadd --system docker
if [ -n "${DOCKER_USER:-}" ] && [ "${DOCKER_USER}" != root ]; then
  id -nG "${DOCKER_USER}" | tr ' ' '\n' | grep -qx docker || usermod -aG docker "${DOCKER_USER}"
fi

if [ "${START}" = 1 ] && ! docker info >/dev/null 2>&1; then
  if [ -d /run/systemd/system ]; then
    systemctl enable --now docker
  elif [ -x /etc/init.d/docker ]; then
    service docker start
  else
    nohup dockerd >/var/log/dockerd.log 2>&1 &
  fi
  for _ in $(seq 30); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null || { echo "the Docker engine did not start; see its log" >&2; exit 4; }
fi
