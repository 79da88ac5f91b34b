#!/usr/bin/env bash
# Make the local images the tests use (no registry on the internet here):
#   local/busybox           a tiny image from the host's busybox
#   local/debian:bookworm   debootstrap minbase, cached as a tarball
#   local/tfrig-stock       a stock cloud image stand-in with sshd (tests/testbed/stock.Dockerfile),
#   local/tfrig-systemd     the same booted by systemd (tests/testbed/systemd.Dockerfile),
#                           cached with docker save
# The cache lives outside the clone (TFRIG_CI_CACHE, default /var/cache/tfrig-ci); a missing cache
# is rebuilt, never required.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${TFRIG_CI_CACHE:-/var/cache/tfrig-ci}
mirror=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)}
mirror=${mirror:-http://deb.debian.org/debian}
mkdir -p "$cache"

if ! docker image inspect local/busybox >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  mkdir -p "$tmp/bin"
  cp /bin/busybox "$tmp/bin/busybox"
  for tool in sh echo cat sleep ls env id true false; do ln -s busybox "$tmp/bin/$tool"; done
  tar -C "$tmp" -c . | docker import -c 'ENV PATH=/bin' - local/busybox >/dev/null
  rm -rf "$tmp"
fi

if ! docker image inspect local/debian:bookworm >/dev/null 2>&1; then
  tarball="$cache/debian-bookworm-minbase.tar"
  if [ ! -s "$tarball" ]; then
    rootfs=$(mktemp -d)
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 \
      || { tail -20 "$cache/debootstrap.log"; exit 1; }
    tar -C "$rootfs" -c . >"$tarball.part" && mv "$tarball.part" "$tarball"
    rm -rf "$rootfs"
  fi
  docker import - local/debian:bookworm <"$tarball" >/dev/null
fi

# An image built from a Dockerfile here, labelled with a key of its inputs: loaded from the cache
# when a save with that key is there, else built and saved (older saves of it removed).
cached_build() {  # NAME DOCKERFILE INPUT...
  local name=$1 dockerfile=$2 key saved
  shift 2
  key=$(cat "$@" | sha256sum | cut -c1-16)
  if [ "$(docker image inspect -f '{{index .Config.Labels "tfrig.key"}}' "local/$name" 2>/dev/null)" != "$key" ]; then
    saved="$cache/$name-$key.tar"
    if [ -s "$saved" ]; then
      docker load -i "$saved" >/dev/null
    else
      docker build -q --label "tfrig.key=$key" -t "local/$name" -f "$here/$dockerfile" "$here" >/dev/null
      rm -f "$cache/$name"-*.tar
      docker save "local/$name" -o "$saved.part" && mv "$saved.part" "$saved"
    fi
  fi
}
rm -f "$cache"/tfrig-sshd-*.tar  # an older image's saves
cached_build tfrig-stock stock.Dockerfile "$here/stock.Dockerfile" "$here"/stock/*
# The same stand-in booted by systemd, on top of the stock one (its inputs are in its key too).
cached_build tfrig-systemd systemd.Dockerfile "$here/stock.Dockerfile" "$here"/stock/* "$here/systemd.Dockerfile"
docker images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep '^local/'
