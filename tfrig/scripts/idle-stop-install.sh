#!/usr/bin/env bash
# Install (or, with OFF=1, turn off) tfrig's idle-stop agent: the script, its settings and its
# systemd timer. Idempotent; the idle window starts anew at each install. Runs as root.
#   AGENT, SERVICE, TIMER   the agent script and unit files' contents (tfrig/scripts/)
#   CONF                    the settings (IDLE_SECONDS=..., GPU_THRESHOLD=...)
#   OFF                     1: stop and disable the timer, remove the agent's files
set -euo pipefail
if [ ! -d /run/systemd/system ]; then
  echo "no systemd runs on this host, and the idle-stop agent is a systemd timer" >&2
  exit 3
fi
units=/etc/systemd/system
if [ "${OFF:-0}" = 1 ]; then
  systemctl disable --now tfrig-idle-stop.timer 2>/dev/null || true
  rm -f "$units/tfrig-idle-stop.timer" "$units/tfrig-idle-stop.service" /usr/local/lib/tfrig/idle-stop \
    /etc/tfrig/idle-stop.conf /var/lib/tfrig-idle-stop/last-busy
  systemctl daemon-reload
  exit 0
fi
install -d -m 755 /usr/local/lib/tfrig /etc/tfrig
printf '%s\n' "${AGENT:?}" >/usr/local/lib/tfrig/idle-stop.new && chmod 755 /usr/local/lib/tfrig/idle-stop.new
mv /usr/local/lib/tfrig/idle-stop.new /usr/local/lib/tfrig/idle-stop
printf '%s\n' "${CONF:?}" >/etc/tfrig/idle-stop.conf
printf '%s\n' "${SERVICE:?}" >"$units/tfrig-idle-stop.service"
printf '%s\n' "${TIMER:?}" >"$units/tfrig-idle-stop.timer"
rm -f /var/lib/tfrig-idle-stop/last-busy
systemctl daemon-reload
systemctl enable --now tfrig-idle-stop.timer
systemctl restart tfrig-idle-stop.timer
