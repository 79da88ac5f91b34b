# A fresh-VM stand-in: Debian 12 with sshd, sudo and Python; reached over SSH on a loopback port.
FROM local/debian:bookworm
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      openssh-server sudo python3 python3-venv ca-certificates procps \
 && rm -rf /var/lib/apt/lists/*
RUN useradd -m -s /bin/bash -p '*' tfrig \
 && echo 'tfrig ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/tfrig \
 && usermod -p '*' root \
 && mkdir -p /run/sshd && ssh-keygen -A \
 && printf '%s\n' 'AuthorizedKeysFile /etc/ssh/tfrig_keys' 'PasswordAuthentication no' \
      'UsePAM no' 'StrictModes no' 'PermitRootLogin prohibit-password' \
      > /etc/ssh/sshd_config.d/tfrig.conf
# A reboot stand-in for the reboot-and-resume test: ending PID 1 lets Docker's restart policy start
# the container again (same address, same host key), as a VM comes back after a reboot.
RUN printf '#!/bin/sh\nkill 1\n' > /usr/local/sbin/reboot && chmod +x /usr/local/sbin/reboot
CMD ["/usr/sbin/sshd", "-D", "-e"]
