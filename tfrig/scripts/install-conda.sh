#!/usr/bin/env bash
# Install Miniconda or Miniforge in batch mode into a prefix, after checking the installer's SHA-256.
# Idempotent; usable alone and as a GCE startup script. Parameters by environment:
#   PREFIX       install prefix (default ~/miniconda3; a leading ~ is the user's home)
#   URL          the installer: https://..., file://... or a path on this host
#   SHA256       the SHA-256 it must have, or
#   SHA256_URL   a published list to read it from (a `.sha256` file or Anaconda's index page, which
#                lists the SHA-256 of each installer beside its name)
#   UNVERIFIED   1 to run it without a SHA-256 (the user's choice)
# Exit 0 done, 2 bad input, 3 checksum refused or missing.
set -euo pipefail
PREFIX=${PREFIX:-~/miniconda3}
PREFIX=${PREFIX/#\~/$HOME}
URL=${URL:?URL is required}
if [ -x "${PREFIX}/bin/conda" ]; then exit 0; fi
[ ! -e "${PREFIX}" ] || [ -z "$(ls -A "${PREFIX}")" ] || {
  echo "${PREFIX} exists and is not a conda install; not touching it" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "${tmp}"' EXIT
name=$(basename "${URL}")
installer="${tmp}/${name}"
case "${URL}" in
  /*) cp "${URL}" "${installer}" ;;
  file://*) cp "${URL#file://}" "${installer}" ;;
  *) curl -fsSL --retry 3 -o "${installer}" "${URL}" ;;
esac

expected=${SHA256:-}
if [ -z "${expected}" ] && [ -n "${SHA256_URL:-}" ]; then
  published=$(curl -fsSL --retry 3 "${SHA256_URL}")
  expected=$(printf '%s\n' "${published}" | grep -A6 -F "${name}" | grep -oE '\b[0-9a-f]{64}\b' | head -n1 || true)
  [ -n "${expected}" ] || expected=$(printf '%s\n' "${published}" | grep -oE '^[0-9a-f]{64}' | head -n1 || true)
  [ -n "${expected}" ] || { echo "no SHA-256 for ${name} at ${SHA256_URL}" >&2; exit 3; }
fi
if [ -n "${expected}" ]; then
  echo "${expected}  ${installer}" | sha256sum -c --quiet - \
    || { echo "${name} does not match SHA-256 ${expected}; not running it" >&2; exit 3; }
elif [ "${UNVERIFIED:-0}" != 1 ]; then
  echo "refusing to run ${name} without a SHA-256 (UNVERIFIED=1 accepts the risk)" >&2; exit 3
fi
# -b: batch mode, no prompts (compat.yaml miniconda.installer_flags); -p: the prefix.
bash "${installer}" -b -p "${PREFIX}" </dev/null
