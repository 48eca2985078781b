#!/usr/bin/env bash
# Installs Corral for systemd: the binary to /usr/local/bin, sample configs to /etc/corral (kept
# if present), units to /etc/systemd/system, state under /var/lib/corral, and enables the units.
# DESTDIR=/some/root installs into a staging root and skips systemctl.
#   usage: systemd/install.sh [path/to/corral]   (default: target/release/corral)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-$here/../target/release/corral}"
dest="${DESTDIR:-}"
if [ ! -x "$bin" ]; then
    echo "install.sh: $bin not found: build it with 'cargo build --release' or pass its path" >&2
    exit 1
fi
install -D -m 0755 "$bin" "$dest/usr/local/bin/corral"
install -d -m 0755 "$dest/etc/corral" "$dest/etc/corral/certs"
for f in master.toml agent.toml; do
    if [ -e "$dest/etc/corral/$f" ]; then
        echo "install.sh: keeping existing $dest/etc/corral/$f"
    else
        install -m 0644 "$here/$f" "$dest/etc/corral/$f"
    fi
done
install -D -m 0644 "$here/corral-master.service" "$dest/etc/systemd/system/corral-master.service"
install -D -m 0644 "$here/corral-agent.service" "$dest/etc/systemd/system/corral-agent.service"
install -d -m 0700 "$dest/var/lib/corral/master"
install -d -m 0711 "$dest/var/lib/corral/agent"
if [ -z "$dest" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable corral-master.service corral-agent.service
    echo "install.sh: units enabled; create certificates in /etc/corral/certs, then 'systemctl start corral-master corral-agent'"
else
    echo "install.sh: installed into ${dest:-/} (systemctl not run)"
fi
