#!/usr/bin/env bash
# Build a Debian root filesystem with systemd as PID 1 for a test host and import it
# into docker. Usage: debian-rootfs.sh SUITE TAG MIRROR CA_DIR
# (called by scripts/build-test-images.sh; this file's content is part of the
# image's recipe hash, so editing it rebuilds the images).
set -euo pipefail
suite=$1 tag=$2 mirror=$3 ca_dir=$4
packages=systemd,systemd-sysv,python3,python3-apt,sudo,ca-certificates,iproute2,procps

command -v debootstrap >/dev/null 2>&1 || {
  [ "$(id -u)" -eq 0 ] || { echo "debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}
rootfs=$(mktemp -d "/var/tmp/rootfs-$suite.XXXXXX")
trap 'rm -rf "$rootfs" "$rootfs.log"' EXIT
debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" \
  >"$rootfs.log" 2>&1 || { tail -n 30 "$rootfs.log" >&2; exit 1; }
cat >"$rootfs/etc/apt/sources.list" <<SOURCES
deb $mirror $suite main
deb $mirror $suite-updates main
deb ${mirror%/debian}/debian-security $suite-security main
SOURCES
# Trust the build host's extra CA certificates inside the image.
find "$ca_dir" -type f -name '*.crt' -exec cp {} "$rootfs/usr/local/share/ca-certificates/" \; 2>/dev/null || true
chroot "$rootfs" update-ca-certificates >/dev/null 2>&1
# A container has no consoles or remountable root: keep the boot clean.
chroot "$rootfs" systemctl mask systemd-remount-fs.service getty.target \
  console-getty.service systemd-firstboot.service >/dev/null 2>&1
echo "$suite-test" >"$rootfs/etc/hostname"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
tar -C "$rootfs" -c . | docker import -c 'CMD ["/lib/systemd/systemd"]' - "$tag" >/dev/null
