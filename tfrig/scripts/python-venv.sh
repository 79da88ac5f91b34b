#!/usr/bin/env bash
# A Python venv at VENV (a path; ~ is the target user's home when run by tfrig), on a stock
# Debian/Ubuntu image too: `python3 -m venv` needs ensurepip, which those images leave out of
# python3 (it ships in python3-venv), so install that first. A half-made venv (bin/python there,
# no pip, from a venv made before ensurepip was there) is completed in place. Idempotent.
#   VENV     the venv's folder; a leading ~ is AS_USER's home
#   AS_USER  whose venv it is (the script runs as root for apt; the venv belongs to AS_USER)
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
VENV=${VENV:?VENV is required}
AS_USER=${AS_USER:-$(id -un)}
if [ "$(id -un)" = "${AS_USER}" ]; then home=${HOME}; else home=$(getent passwd "${AS_USER}" | cut -d: -f6); fi
case "${VENV}" in "~") VENV=${home} ;; "~/"*) VENV=${home}/${VENV#"~/"} ;; esac
if ! python3 -c 'import ensurepip' 2>/dev/null; then
  apt_get update -q
  apt_get install -y -q --no-install-recommends python3-venv
fi
if [ ! -e "${VENV}/bin/pip" ]; then
  if [ "$(id -un)" = "${AS_USER}" ]; then python3 -m venv "${VENV}"; else sudo -u "${AS_USER}" -H python3 -m venv "${VENV}"; fi
fi
