#!/usr/bin/env bash
# Build the lab's Debian 12 systemd image with debootstrap + `podman import`.
# Cached: the image is tagged with a hash of its inputs (this script, image-packages.txt,
# LAB_SUITE); when that tag exists nothing is done. FORCE=1 rebuilds.
LAB_SCRIPT=lab-image
# shellcheck source=lab/lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"

ref="$(image_ref)"
step "check for cached image $ref"
require_root
require_cmd podman debootstrap
if [ "${FORCE:-0}" != 1 ] && podman image exists "$ref"; then
  info "image $ref is up to date (FORCE=1 to rebuild)"
  podman tag "$ref" "$LAB_IMAGE:latest"
  exit 0
fi

step "pick a Debian mirror"
mirror="$LAB_MIRROR"
if [ -z "$mirror" ]; then
  # the host's own apt source (deb822 or one-line format), first Debian entry
  mirror="$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list \
    | grep -vE 'security|updates|nodesource|google' | grep -oE 'https?://[^ ]+/debian/?' | head -1 || true)"
fi
[ -n "$mirror" ] || die "no Debian mirror found in /etc/apt" "set LAB_MIRROR=http://<your mirror>/debian"
info "mirror: $mirror  suite: $LAB_SUITE"

pkgs="$(sed -e 's/#.*//' "$LAB_DIR/image-packages.txt" | tr -s ' \n' '\n' | grep -v '^$' | paste -sd, -)"
rootfs="$LAB_BUILD/rootfs"
step "debootstrap $LAB_SUITE into $rootfs (about a minute)"
rm -rf "$rootfs"
mkdir -p "$LAB_BUILD"
if ! debootstrap --variant=minbase --include="$pkgs" "$LAB_SUITE" "$rootfs" "$mirror" \
     >"$LAB_BUILD/debootstrap.log" 2>&1; then
  tail -20 "$LAB_BUILD/debootstrap.log" >&2
  die "debootstrap failed (log: $LAB_BUILD/debootstrap.log)" \
      "check that the mirror is reachable (apt-get update on the host) or set LAB_MIRROR"
fi

step "prepare the root filesystem for containers"
# Each container must get its own machine-id at first boot (the backends' fingerprints use it):
# an empty file makes systemd generate one and commit it to the container's disk.
: > "$rootfs/etc/machine-id"
rm -f "$rootfs/var/lib/dbus/machine-id"
# no consoles and no kernel-ish units in a container
for u in getty@tty1.service serial-getty@.service systemd-udevd.service systemd-udev-trigger.service \
         systemd-modules-load.service sys-kernel-debug.mount sys-kernel-tracing.mount \
         systemd-remount-fs.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$u"
done
# sshd: per-container host keys, made at first boot (the image ships none); root logs in with
# the lab key only (mounted as /root/.ssh/authorized_keys by lab.sh)
rm -f "$rootfs"/etc/ssh/ssh_host_*
cat > "$rootfs/etc/systemd/system/lab-ssh-hostkeys.service" <<'UNIT'
[Unit]
Description=Generate SSH host keys (lab image)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key
[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
[Install]
WantedBy=multi-user.target
UNIT
ln -sf ../lab-ssh-hostkeys.service "$rootfs/etc/systemd/system/multi-user.target.wants/lab-ssh-hostkeys.service"
printf 'PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n' > "$rootfs/etc/ssh/sshd_config.d/lab.conf"
# keepalived runs only where the keepalived role configures and enables it
rm -f "$rootfs/etc/systemd/system/multi-user.target.wants/keepalived.service"
# prometheus likewise: only on the host the tmr_monitoring role configures (the package enables it)
rm -f "$rootfs/etc/systemd/system/multi-user.target.wants/prometheus.service"
# hosts have no package mirror in the lab: apt must never try to fetch
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
       "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log
mkdir -p "$rootfs/var/lib/apt/lists/partial"
echo "tmr-lab image built $(date -u +%FT%TZ) from $LAB_SUITE" > "$rootfs/etc/tmr-lab-image"

step "podman import as $ref"
tar -C "$rootfs" --numeric-owner -c . \
  | podman import -q --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' \
      --change 'ENV container=podman' - "$ref" >/dev/null \
  || die "podman import failed" "check 'podman info' (runtime runc, storage) and free disk space"
podman tag "$ref" "$LAB_IMAGE:latest"
rm -rf "$rootfs"
info "built $ref ($(podman image inspect --format '{{.Size}}' "$ref" | awk '{printf "%d MB", $1/1e6}'))"
# drop older builds of this image
podman images --format '{{.Repository}}:{{.Tag}}' "$LAB_IMAGE" \
  | grep -vE ":($(image_inputs_hash)|latest)$" | xargs -r podman rmi >/dev/null 2>&1 || true
