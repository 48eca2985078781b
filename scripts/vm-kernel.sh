#!/usr/bin/env bash
# Installs what the cgroup v2 test VM needs on a Debian machine, idempotently:
#   - qemu-system-x86 (qemu-system-x86_64), busybox-static, cpio, and for the rest of the
#     suite systemd (systemd-analyze) and iproute2 (ip) (apt, only if missing)
#   - the Debian cloud kernel, extracted to DIR/vmlinuz (default /var/cache/corral-vm)
# Usage: scripts/vm-kernel.sh [DIR]      (run as root; the vmtest crate reads DIR/vmlinuz
# or $CORRAL_VM_KERNEL)
set -euo pipefail

dir="${1:-/var/cache/corral-vm}"
export DEBIAN_FRONTEND=noninteractive

log() { echo "vm-kernel: $*"; }

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo_cmd=(sudo)
    else
        echo "vm-kernel: must run as root (or with sudo available)" >&2
        exit 1
    fi
fi

# 1. Packages: install only the ones whose program is missing.
missing=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || missing+=(qemu-system-x86)
if ! [ -x /bin/busybox ] && ! [ -x /usr/bin/busybox ]; then
    missing+=(busybox-static)
elif ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed'; then
    # A dynamically linked busybox would need its own libraries in the guest.
    if ldd "$(command -v busybox)" >/dev/null 2>&1; then
        missing+=(busybox-static)
    fi
fi
command -v cpio >/dev/null 2>&1 || missing+=(cpio)
# Not for the VM, but for the rest of the suite: `systemd-analyze verify` of the units and
# `ip netns` for the multi-host tests.
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)

updated=0
apt_update() {
    if [ "$updated" -eq 0 ]; then
        log "apt-get update"
        "${sudo_cmd[@]}" apt-get update -q
        updated=1
    fi
}

if [ "${#missing[@]}" -gt 0 ]; then
    apt_update
    log "installing ${missing[*]}"
    "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    log "qemu-system-x86_64, busybox (static), cpio, systemd-analyze and ip already present"
fi

# 2. Kernel.
if [ -s "$dir/vmlinuz" ]; then
    log "kernel already at $dir/vmlinuz ($(cat "$dir/kernel-package" 2>/dev/null || echo unknown package))"
    exit 0
fi

resolve_pkg() {
    apt-cache depends linux-image-cloud-amd64 2>/dev/null \
        | awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}
pkg="$(resolve_pkg || true)"
if [ -z "$pkg" ]; then
    apt_update
    pkg="$(resolve_pkg || true)"
fi
if [ -z "$pkg" ]; then
    echo "vm-kernel: cannot resolve the versioned package behind linux-image-cloud-amd64 (apt-cache depends)" >&2
    exit 1
fi
log "kernel package: $pkg"

"${sudo_cmd[@]}" mkdir -p "$dir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(
    cd "$work"
    log "apt-get download $pkg"
    # apt-get download runs as the _apt user when root; make the dir readable/writable for it.
    chmod 0777 "$work"
    apt-get download "$pkg" >/dev/null 2>&1 || { apt_update; apt-get download "$pkg"; }
)
debs=("$work"/*.deb)
deb="${debs[0]}"
if ! [ -f "$deb" ]; then
    echo "vm-kernel: apt-get download $pkg left no .deb in $work" >&2
    exit 1
fi
log "extracting $(basename "$deb")"
dpkg-deb -x "$deb" "$work/root"
images=("$work"/root/boot/vmlinuz-*)
vmlinuz="${images[0]}"
if ! [ -f "$vmlinuz" ]; then
    echo "vm-kernel: $deb contains no boot/vmlinuz-*" >&2
    exit 1
fi
"${sudo_cmd[@]}" install -m 0644 "$vmlinuz" "$dir/vmlinuz.tmp"
"${sudo_cmd[@]}" mv -f "$dir/vmlinuz.tmp" "$dir/vmlinuz"
echo "$pkg" | "${sudo_cmd[@]}" tee "$dir/kernel-package" >/dev/null
log "kernel $(basename "$vmlinuz") installed at $dir/vmlinuz"
