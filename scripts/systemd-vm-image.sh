#!/usr/bin/env bash
# Builds the real-systemd test VM's root filesystem image, once, and caches it:
#   DIR/systemd-<hash>.img   ext4, Debian bookworm minbase with systemd as PID 1 (sparse)
#   DIR/systemd.img          a symlink to the current one (what the vmtest crate boots)
# <hash> covers this script and the kernel package, so a changed recipe or kernel builds a new
# image; older ones are removed. Installs mmdebstrap and e2fsprogs with apt if missing. Needs the
# kernel that scripts/vm-kernel.sh installs (DIR/vmlinuz, DIR/kernel-package): its modules are
# copied into the image (depmod run in a chroot), as systemd loads autofs4 and friends.
# The recipe is /work/shared/notes/systemd-vm.md; the guest side is vmtest/src/systemd.rs.
# Usage: scripts/systemd-vm-image.sh [DIR]     (run as root; default DIR /var/cache/corral-vm)
set -euo pipefail

dir="${1:-/var/cache/corral-vm}"
export DEBIAN_FRONTEND=noninteractive
log() { echo "systemd-vm-image: $*"; }
die() { echo "systemd-vm-image: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (mmdebstrap --mode=root, chroot)"
[ -s "$dir/vmlinuz" ] && [ -s "$dir/kernel-package" ] \
    || die "no kernel in $dir (run scripts/vm-kernel.sh $dir first)"
kpkg="$(cat "$dir/kernel-package")"

hash="$( { cat "$0"; echo "$kpkg"; } | sha256sum | cut -c1-16)"
img="$dir/systemd-$hash.img"
if [ -s "$img" ]; then
    ln -sfn "$(basename "$img")" "$dir/systemd.img"
    log "image already at $img"
    exit 0
fi

missing=()
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The host's own Debian mirror (deb822 or one-line sources).
mirror="$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
if [ -z "$mirror" ]; then
    mirror="$(awk '$1 == "deb" && $0 !~ /security/ { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)"
fi
mirror="${mirror:-http://deb.debian.org/debian}"

work="$(mktemp -d /var/tmp/corral-sysvm-image.XXXXXX)"
trap 'rm -rf "$work"' EXIT
root="$work/root"
chmod 0755 "$work"

log "kernel package $kpkg: downloading for its modules"
(
    cd "$work"
    chmod 0777 "$work"   # apt-get download runs as _apt
    apt-get download "$kpkg" >/dev/null 2>&1 || { apt-get update -q; apt-get download "$kpkg"; }
)
debs=("$work"/*.deb)
[ -f "${debs[0]}" ] || die "apt-get download $kpkg left no .deb"
dpkg-deb -x "${debs[0]}" "$work/kernel"
kver="$(ls "$work/kernel/lib/modules")"
[ -n "$kver" ] || die "${debs[0]} has no lib/modules/VERSION"
chmod 0755 "$work"

log "mmdebstrap bookworm from $mirror into $root"
mmdebstrap --variant=minbase --mode=root \
    --include=systemd,systemd-sysv,udev,dbus,kmod,iproute2,procps,python3 \
    --aptopt='Acquire::Check-Valid-Until "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    bookworm "$root" "$mirror"

log "modules $kver + depmod"
mkdir -p "$root/lib/modules"
cp -a "$work/kernel/lib/modules/$kver" "$root/lib/modules/"
chroot "$root" depmod -a "$kver"

log "configuring the guest"
echo sysvm >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tsysvm\n::1\tlocalhost\n' >"$root/etc/hosts"
echo '/dev/nvme0n1 / ext4 rw,errors=remount-ro 0 1' >"$root/etc/fstab"
# The consoles are the job's; nothing periodic may run during it.
for u in serial-getty@ttyS0.service serial-getty@ttyS1.service getty@tty1.service \
    apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
    fstrim.timer systemd-timesyncd.service; do
    ln -sfn /dev/null "$root/etc/systemd/system/$u"
done

# The job: unpack the tar on the second namespace, run its job.sh as root with output on ttyS1,
# print the end marker, power off. vmtest/src/systemd.rs parses the markers.
cat >"$root/usr/local/sbin/corral-vmjob" <<'EOF'
#!/bin/bash
out=/dev/ttyS1
mkdir -p /vmjob
if ! tar -x -f /dev/nvme0n2 -C /vmjob 2>"$out"; then
    echo "@@SYSVM-SETUP-FAILED tar -x -f /dev/nvme0n2@@" >"$out"
    systemctl --no-block poweroff
    exit 1
fi
cd /vmjob
/bin/bash /vmjob/job.sh </dev/null >"$out" 2>&1
code=$?
echo "@@SYSVM-EXIT $code@@" >"$out"
sync
systemctl --no-block poweroff
EOF
chmod 0755 "$root/usr/local/sbin/corral-vmjob"
cat >"$root/etc/systemd/system/corral-vmjob.service" <<'EOF'
[Unit]
Description=Corral VM test job (from /dev/nvme0n2)
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/corral-vmjob
TimeoutStartSec=infinity
StandardOutput=journal+console
EOF
cat >"$root/etc/systemd/system/corral-vmjob.target" <<'EOF'
[Unit]
Description=Boot to the Corral VM test job
Requires=multi-user.target corral-vmjob.service
After=multi-user.target
AllowIsolate=yes
EOF
ln -sfn corral-vmjob.target "$root/etc/systemd/system/default.target"
rm -f "$root/etc/machine-id"
: >"$root/etc/machine-id"

log "ext4 image $img"
rm -f "$work/img"
truncate -s 16G "$work/img"
mkfs.ext4 -q -F -L sysvm -d "$root" "$work/img"
mv -f "$work/img" "$img"
for old in "$dir"/systemd-*.img; do
    [ "$old" = "$img" ] || rm -f "$old"
done
ln -sfn "$(basename "$img")" "$dir/systemd.img"
log "image ready: $img ($(du -h "$img" | cut -f1) used)"
