# The stock-image stand-in booted by systemd, as a Compute Engine VM is: for what needs a real
# init (the idle-stop agent's timer, a guest power-off). Everything else as local/tfrig-stock;
# sshd is systemd's ssh.service, after the host keys made at first boot (as the guest agent does).
# Runs unprivileged with tmpfs /run and /run/lock and /sys/fs/cgroup mounted read-only.
FROM local/tfrig-stock
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends systemd systemd-sysv dbus \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && printf '%s\n' '[Unit]' 'Description=SSH host keys at first boot' 'Before=ssh.service' \
      '[Service]' 'Type=oneshot' 'ExecStart=/usr/bin/ssh-keygen -A' \
      '[Install]' 'WantedBy=multi-user.target' > /etc/systemd/system/tfrig-hostkeys.service \
 && systemctl enable tfrig-hostkeys.service ssh.service
STOPSIGNAL SIGRTMIN+3
CMD ["/sbin/init"]
