#!/usr/bin/env bash
# Runs Corral's whole test suite. On a fresh Debian machine (as root) it first installs what the
# tests need: qemu, busybox and a cgroup-v2 kernel for the VM suite, and the Debian image with
# systemd as PID 1 for the real-systemd test (built once, cached under /var/cache/corral-vm).
# Without root, the root-only tests (real cgroups, the VMs) skip with a message saying why.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then
    scripts/vm-kernel.sh
    scripts/systemd-vm-image.sh
    # The Mesos gateway's tests build a venv with pymesos from PyPI (integration::mesos_clients).
    if ! /usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null; then
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv
    fi
else
    echo "test.sh: not root: not installing packages; cgroup and VM tests will skip" >&2
fi

# The integration tests run the real `corral` binary: build it first.
cargo build --workspace --bins
cargo test --workspace --no-fail-fast
