#!/usr/bin/env bash
# The GPU checks that CI can't run: tfrig against a real NVIDIA GPU as the local target.
# Run from the repository root on a GPU machine; writes what it saw under ${OUT:-/tmp/tfrig-gpu}.
set -uo pipefail
out=${OUT:-/tmp/tfrig-gpu}
mkdir -p "$out"
export TFRIG_STATE_DIR=$out/state PYTHONPATH=$(pwd)${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
step() { echo; echo "### $*"; "$@"; echo "(exit $?)"; }
{
  step nvidia-smi
  step nvidia-smi --query-gpu=index,name,uuid,driver_version,memory.total,memory.used,compute_cap --format=csv,noheader,nounits
  step sh -c 'for d in /sys/bus/pci/devices/*; do echo "${d##*/} $(cat $d/vendor) $(cat $d/device) $(cat $d/class)"; done | grep 0x10de'
  step "$py" -m tfrig gpu.check
  step "$py" -m tfrig gpu.check --json
  step "$py" -m tfrig driver.status --json
  # No --sha256 or --unverified: the plan against the machine's real driver, with NVIDIA's checksum.
  step "$py" -m tfrig --dry driver.install
  step "$py" -m tfrig --dry gpu.setup
  step "$py" -m tfrig driver.status
  nvidia-smi >"$out/table.txt" 2>&1
  step "$py" -m tfrig gpu.check --input "$out/table.txt"
} 2>&1 | tee "$out/gpu-checks.log"
