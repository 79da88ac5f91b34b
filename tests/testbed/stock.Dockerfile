# A stand-in for a stock Compute Engine Debian 12 image, reached over SSH on a loopback port.
# It has what the stock image has (python3, sudo, curl, ca-certificates, gnupg, unattended-upgrades,
# sshd) and lacks what it lacks: no python3-venv or pip, no gcc, make, dkms or libc6-dev, empty
# package lists. Login is a non-root user with passwordless sudo, made the way the guest agent
# makes it (google-sudoers group; it never makes root a login). Each host makes its own SSH host
# keys at first boot, as a VM's guest agent does, so no two hosts share a key. See TESTBED.md.
FROM local/debian:bookworm
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      openssh-server sudo python3 curl ca-certificates gnupg unattended-upgrades procps kmod iproute2 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
# The guest agent's user: groups from its default config, sudo through google-sudoers.
RUN groupadd google-sudoers \
 && echo '%google-sudoers ALL=(ALL:ALL) NOPASSWD:ALL' > /etc/sudoers.d/google_sudoers \
 && useradd -m -s /bin/bash -p '*' -G adm,dip,video,plugdev,google-sudoers tfrig \
 && mkdir -p /run/sshd \
 && printf '%s\n' 'AuthorizedKeysFile /etc/ssh/tfrig_keys' 'PasswordAuthentication no' \
      'UsePAM no' 'StrictModes no' 'PermitRootLogin no' \
      > /etc/ssh/sshd_config.d/tfrig.conf
COPY stock/boot /usr/local/sbin/tfrig-boot
COPY stock/unattended-upgrade /usr/local/lib/tfrig-boot/unattended-upgrade
# The booted kernel's release, the NVIDIA module's load at boot, its refusal to unload while in use.
COPY stock/uname /usr/local/bin/uname
COPY stock/rmmod /usr/local/sbin/rmmod
COPY stock/nvidia-module /etc/tfrig-boot.d/40-nvidia-module
# A reboot: ending PID 1 lets Docker's restart policy start the container again (same address,
# same host key), as a VM comes back after a reboot; tfrig-boot then runs the boot hooks again.
RUN printf '#!/bin/sh\nkill 1\n' > /usr/local/sbin/reboot && chmod +x /usr/local/sbin/reboot \
 && ln -s unattended-upgrade /usr/local/lib/tfrig-boot/apt-get
CMD ["/usr/local/sbin/tfrig-boot"]
