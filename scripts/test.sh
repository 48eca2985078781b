#!/usr/bin/env bash
# Runs Corral's whole test suite. On a fresh Debian machine (as root) it first installs what the
# tests need: qemu, busybox and a cgroup-v2 kernel for the VM suite, promtool (Debian's
# prometheus package) for the metrics test, chromium for the web UI test, the Debian image with
# systemd as PID 1 for the real-systemd test (built once, cached under /var/cache/corral-vm), and
# crun and runc, which no test needs but the launch bench of scripts/bench.sh compares with.
# Without root, the root-only tests (real cgroups, the VMs) skip with a message saying why.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then
    scripts/vm-kernel.sh
    scripts/systemd-vm-image.sh
    oci=()
    for rt in crun runc; do
        command -v "$rt" >/dev/null 2>&1 || oci+=("$rt")
    done
    if [ "${#oci[@]}" -gt 0 ]; then
        echo "test.sh: installing ${oci[*]} (the launch bench compares with them)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q --no-install-recommends "${oci[@]}" >/dev/null \
            || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${oci[@]}" >/dev/null; } \
            || echo "test.sh: could not install ${oci[*]}; the tests do not need them" >&2
    fi
    # promtool (Debian's prometheus package) checks the daemons' /metrics in the metrics test.
    if ! command -v promtool >/dev/null 2>&1; then
        echo "test.sh: installing prometheus (for promtool)" >&2
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null
        # Only its promtool is wanted: no Prometheus server left running.
        if [ -d /run/systemd/system ]; then
            systemctl disable --now prometheus.service >/dev/null 2>&1 || true
        fi
    fi
    # Headless Chromium loads `corral ui` in the web UI test (and takes its screenshot).
    if ! command -v chromium >/dev/null 2>&1; then
        echo "test.sh: installing chromium (for the web UI test)" >&2
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null
    fi
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
