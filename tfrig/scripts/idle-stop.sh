#!/usr/bin/env bash
# tfrig's idle-stop agent: powers the VM off once it has been idle for the whole window. Run as
# root each minute by tfrig-idle-stop.timer; installed by `inv gcp.idle-stop` / `gcp.create
# --idle-stop`. Idle means, at every check of the window:
#   - every GPU's utilization under GPU_THRESHOLD percent (nvidia-smi, the peak of a few samples);
#   - no SSH session open (sshd's per-session process, "sshd: USER@pts/N" or "USER@notty");
#   - no tf.run worker running (each keeps its process group id in its user's private folder,
#     ~/.tfrig/jobs/run-*.pgid; a group counts only if it has a process of that user).
# A guest power-off stops a Compute Engine VM (TERMINATED): GPUs and vCPUs stop billing, the disk
# stays (cloud.google.com/compute/docs/instances/stop-start-instance). The window restarts at each
# boot, so `gcp.start` brings the VM back for a full window with the agent still set.
# Settings in CONF (shell assignments): IDLE_SECONDS, GPU_THRESHOLD, and POWEROFF, the command
# that powers off (replaced only by tests).
set -euo pipefail
CONF=${TFRIG_IDLE_STOP_CONF:-/etc/tfrig/idle-stop.conf}
IDLE_SECONDS=1800
GPU_THRESHOLD=10
POWEROFF="systemctl poweroff"
STATE=/var/lib/tfrig-idle-stop/last-busy
LOG=/var/log/tfrig-idle-stop.log
SAMPLES=5
# shellcheck source=/dev/null
[ -r "$CONF" ] && . "$CONF"

say() { printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" | tee -a "$LOG"; }

gpu_busy() {
  command -v nvidia-smi >/dev/null || return 1
  local peak=0 sample value
  for ((sample = 1; sample <= SAMPLES; sample++)); do
    # A hung driver must not keep the VM up and billing: nvidia-smi gets 20 s.
    if ! values=$(timeout 20 nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits 2>/dev/null); then
      echo "nvidia-smi failed or did not answer: GPUs counted idle" >&2
      return 1
    fi
    for value in $values; do
      [[ $value =~ ^[0-9]+$ ]] && ((value > peak)) && peak=$value
    done
    ((sample < SAMPLES)) && sleep 1
  done
  if ((peak >= GPU_THRESHOLD)); then
    reason="a GPU at ${peak}% (threshold ${GPU_THRESHOLD}%)"
    return 0
  fi
  return 1
}

ssh_busy() {
  local sessions
  sessions=$(ps -eo args= | grep -cE '^sshd(-session)?: [^ ]+@(pts/[0-9]+|notty)' || true)
  if ((sessions > 0)); then
    reason="${sessions} SSH session(s) open"
    return 0
  fi
  return 1
}

job_busy() {
  local home file group owner
  while IFS= read -r home; do
    for file in "$home"/.tfrig/jobs/run-*.pgid; do
      [ -f "$file" ] && [ -s "$file" ] || continue
      owner=$(stat -c %u "$file") || continue
      [ "$owner" = "$(stat -c %u "$home")" ] || continue # written by the home's own user
      group=$(head -c 20 "$file" 2>/dev/null) || continue
      if [[ $group =~ ^[0-9]+$ ]] && ((group > 1)) && pgrep -g "$group" -U "$owner" >/dev/null; then
        reason="a tf.run worker running (process group $group)"
        return 0
      fi
    done
  done < <(getent passwd | cut -d: -f6 | sort -u)
  return 1
}

now=$(date +%s)
boot=$(cat /proc/sys/kernel/random/boot_id)
mkdir -p "$(dirname "$STATE")"
last_boot="" last_busy=""
if [ -r "$STATE" ]; then read -r last_boot last_busy <"$STATE" || true; fi
if [ "${last_boot:-}" != "$boot" ] || ! [[ ${last_busy:-} =~ ^[0-9]+$ ]]; then
  last_busy=$now # a new boot (or a new install): the window starts now
fi
reason=""
if ssh_busy || job_busy || gpu_busy; then
  echo "$boot $(date +%s)" >"$STATE" # busy until the check's end (GPU samples take seconds)
  echo "busy: $reason"
  exit 0
fi
echo "$boot $last_busy" >"$STATE"
idle=$((now - last_busy))
if ((idle < IDLE_SECONDS)); then
  echo "idle for ${idle} s of ${IDLE_SECONDS} s"
  exit 0
fi
say "idle for $((idle / 60)) min (${idle} s; window ${IDLE_SECONDS} s): GPUs under ${GPU_THRESHOLD}%, no SSH session, no tf.run worker; powering off"
# shellcheck disable=SC2086
exec $POWEROFF
