#!/usr/bin/env bash
# Runs every Corral benchmark in release mode and prints its table: the figures README.md and
# BENCHMARKS.md quote come from this script's output. Run it as root (the launch bench makes
# cgroups and namespaces) on a quiet machine; it prints the machine, the load average before
# and after, and how long each bench took. CI does not run it.
#
#   scripts/bench.sh            every bench at full size (roughly 30 minutes on 2 cores after the build; not timed end to end)
#   scripts/bench.sh --quick    smaller sizes and shorter windows (about 6 minutes), for a smoke run
#
# The launch bench compares with crun and runc when they are installed
# (apt-get install crun runc; scripts/test.sh installs them); otherwise its table says
# "not installed". Each bench's own knobs (LAUNCH_BENCH_N, BENCH_SECS, AGENT_IDLE_SECS, ...)
# are documented in its file under */benches/ and win over the defaults set here.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
case "${1:-}" in
    "") ;;
    --quick) quick=1 ;;
    -h | --help)
        sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "bench.sh: unknown argument $1 (try --help)" >&2
        exit 2
        ;;
esac

if [ "$quick" = 1 ]; then
    export MASTER_CORE_BENCH_BUILDS="${MASTER_CORE_BENCH_BUILDS:-1}"
    export MASTER_CORE_BENCH_ROUNDS="${MASTER_CORE_BENCH_ROUNDS:-2}"
    export BENCH_SECS="${BENCH_SECS:-2}"
    export LAUNCH_BENCH_N="${LAUNCH_BENCH_N:-100}"
    export LAUNCH_BENCH_LEAK_N="${LAUNCH_BENCH_LEAK_N:-200}"
    export AGENT_IDLE_SECS="${AGENT_IDLE_SECS:-10}"
    export FAILOVER_RUNS="${FAILOVER_RUNS:-3}"
fi
# Issue 11 asks for the median over 10 failovers.
export FAILOVER_RUNS="${FAILOVER_RUNS:-10}"
export CARGO_TERM_COLOR=never

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

echo "== Corral benchmarks ($([ "$quick" = 1 ] && echo quick || echo full))"
echo "date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "commit:  $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
echo "machine: $(nproc) cpus, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r)"
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    echo "cgroups: v2 (unified)"
else
    echo "cgroups: v1$([ -d /sys/fs/cgroup/unified ] && echo ' (hybrid)')"
fi
for rt in crun runc; do
    if command -v "$rt" >/dev/null 2>&1; then
        echo "$rt:    $("$rt" --version | head -n 1)"
    else
        echo "$rt:    not installed"
    fi
done
echo "load average before the build: $(loadavg)"

echo
# Every bench is built and run with the same package set: cargo unifies features over the
# packages it is given, so `cargo bench -p ONE` would build each bench again.
pkgs=(-p master-core -p master-raft -p isolation -p integration)
echo "== building (release): corral and every bench"
build_start=$SECONDS
cargo build --release -q -p corral
cargo bench -q --no-run "${pkgs[@]}"
echo "(built in $((SECONDS - build_start)) s)"
echo "load average before the benches: $(loadavg)"

failed=()
bench() {
    local name="$1"
    shift
    echo
    echo "== $name: $*"
    local start=$SECONDS
    if "$@"; then
        echo "($name: $((SECONDS - start)) s, load average $(loadavg))"
    else
        echo "($name: FAILED after $((SECONDS - start)) s)"
        failed+=("$name")
    fi
}

benches_start=$SECONDS
bench "allocation pass" cargo bench -q "${pkgs[@]}" --bench allocator
bench "registry writes" cargo bench -q "${pkgs[@]}" --bench registry_writes
if [ "$(id -u)" = 0 ]; then
    bench "container launch" cargo bench -q "${pkgs[@]}" --bench launch
else
    echo
    echo "== container launch: skipped (needs root)"
    failed+=("container launch (not root)")
fi
bench "agent idle footprint" cargo bench -q "${pkgs[@]}" --bench agent_idle
bench "master failover" cargo bench -q "${pkgs[@]}" --bench failover
# The master at scale (loadgen): simulated agents, each its own QUIC + mTLS connection.
if [ "$quick" = 1 ]; then
    bench "master idle" target/release/corral bench idle --agents 100,1000 --window-secs 5
    bench "failover at scale (B3)" target/release/corral bench failover --agents 200
    bench "churn (B7)" target/release/corral bench churn --agents 200 --duration-secs 20
    bench "the Mesos paper's test (B1)" target/release/corral bench paper --agents 500 \
        --frameworks 50 --task-secs 10 --warmup-secs 20 --window-secs 10
    bench "sustained launches (B2)" target/release/corral bench launches --agents 200 \
        --frameworks 5 --warmup-secs 5 --window-secs 10
    bench "registration storm" target/release/corral bench storm --agents 1000
else
    bench "master idle" target/release/corral bench idle --agents 1000,10000
    bench "failover at scale (B3)" target/release/corral bench failover --agents 10000
    bench "churn (B7)" target/release/corral bench churn
    bench "the Mesos paper's test (B1)" target/release/corral bench paper
    bench "sustained launches (B2)" target/release/corral bench launches
    bench "registration storm" target/release/corral bench storm
fi

echo
echo "== done: benches took $((SECONDS - benches_start)) s; load average $(loadavg)"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "failed or skipped: ${failed[*]}" >&2
    exit 1
fi
