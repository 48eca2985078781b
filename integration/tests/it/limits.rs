//! `corral run --local` enforces the issue's limits through the whole stack (framework → master →
//! agent → isolation → kernel): on this host's cgroup v1 hierarchies, and on a pure cgroup v2
//! kernel in a qemu VM. The same script runs in both; it finds the task's own cgroup files from
//! /proc/self/cgroup and measures with the kernel's counters.

use integration::is_root;
use std::time::Duration;
use vmtest::{GuestFile, VmRun};

/// Prints `key=value` lines for the assertions. `$CORRAL` is the binary, `$V` is 1 or 2.
const SCRIPT: &str = r#"
set -u
T=$(mktemp -d)
C="$CORRAL run --local --placement-timeout 60 --name limits-check"
CG='cg() { if [ "$V" = 2 ]; then echo /sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup); else echo /sys/fs/cgroup/$1$(grep -E "^[0-9]+:([^:]*,)?$1(,[^:]*)?:" /proc/self/cgroup | cut -d: -f3); fi; }'
CPU='usage() { if [ "$V" = 2 ]; then grep usage_usec $(cg cpu)/cpu.stat | cut -d" " -f2; else echo $(( $(cat $(cg cpuacct)/cpuacct.usage) / 1000 )); fi; }'
export V
# 1. memory: a 64 MiB limit, the task allocates 256 MiB.
$C --mem 64MiB -- 'dd if=/dev/zero of=/dev/null bs=256M count=1' > $T/oom.out 2>&1
echo "oom_exit=$?"
grep -q "memory limit" $T/oom.out && echo "oom_reported=yes" || { echo "oom_reported=no"; cat $T/oom.out; }
# 1b. OOM policy: the task's shell starts a memory hog, waits for it and goes on. kill-process:
# only the hog dies, the task finishes and its status still shows the OOM kill; kill-task (the
# default): the whole task dies with the memory-limit reason.
HOG='dd if=/dev/zero of=/dev/null bs=256M count=1 & wait; sleep 1; echo survived'
$C --mem 64MiB --oom-policy kill-process -- "$HOG" > $T/oomp.out 2>&1
echo "oomp_exit=$?"
grep -q '^survived' $T/oomp.out && echo "oomp_survived=yes" || echo "oomp_survived=no"
grep -q 'TASK_FINISHED.*oom_kill=[1-9]' $T/oomp.out && echo "oomp_evidence=yes" || { echo "oomp_evidence=no"; cat $T/oomp.out; }
$C --mem 64MiB --oom-policy kill-task -- "$HOG" > $T/oomt.out 2>&1
echo "oomt_exit=$?"
grep -q '^survived' $T/oomt.out && echo "oomt_survived=yes" || echo "oomt_survived=no"
grep -q "memory limit" $T/oomt.out && echo "oomt_reported=yes" || { echo "oomt_reported=no"; cat $T/oomt.out; }
# 2. cpu: a busy loop under 0.5 cpus for 3 s, measured from the task's own cgroup counters.
$C --cpus 0.5 -- "V=$V; $CG; $CPU; a=\$(usage); timeout 3 sh -c 'while :; do :; done'; b=\$(usage); echo cpu_used_usec=\$((b-a)); if [ \$V = 2 ]; then echo cpu_quota=\$(cat \$(cg cpu)/cpu.max | tr ' ' /); else echo cpu_quota=\$(cat \$(cg cpu)/cpu.cfs_quota_us)/\$(cat \$(cg cpu)/cpu.cfs_period_us); fi" > $T/cpu.out 2>&1
echo "cpu_exit=$?"
grep -E '^cpu_(used_usec|quota)=' $T/cpu.out || cat $T/cpu.out
# 3. pids: a fork bomb under 64 pids is contained; the host still answers.
$C --pids 64 -- "V=$V; $CG; p=\$(cg pids)/pids.current; ( i=0; while [ \$i -lt 300 ]; do sleep 31 & i=\$((i+1)); done ) 2>/dev/null; read n < \$p; echo pids_now=\$n; exit 0" > $T/pids.out 2>&1
echo "pids_exit=$?"
echo "pids_current=$(grep pids_now= $T/pids.out | cut -d= -f2)"
# Every process of the bomb went with its task's cgroup, and the host can still start one.
echo "bomb_leftovers=$(ps -eo args | grep -c '^sleep 31$')"
echo "host_forks=$(/bin/sh -c 'echo yes' 2>/dev/null || echo no)"
# 4. a pid namespace, and an unprivileged user who cannot escape or raise its limits.
$C -- "V=$V; $CG; echo task_procs=\$(ls /proc | grep -c '^[0-9]'); echo task_uid=\$(id -u); touch /etc/corral-was-here 2>/dev/null && echo etc_write=yes || echo etc_write=no; if [ $V = 2 ]; then root=/sys/fs/cgroup; else root=/sys/fs/cgroup/memory; fi; echo \$\$ > \$root/cgroup.procs 2>/dev/null && echo escape=yes || echo escape=no; if [ $V = 2 ]; then f=\$(cg memory)/memory.max; else f=\$(cg memory)/memory.limit_in_bytes; fi; echo 9999999999 > \$f 2>/dev/null && echo raise=yes || echo raise=no" > $T/ns.out 2>&1
echo "ns_exit=$?"
grep -E "^(task_procs|task_uid|etc_write|escape|raise)=" $T/ns.out || cat $T/ns.out
# 5. kill: Ctrl-C on corral run kills every process of the task, a double-forked daemon
# included, and removes its cgroup.
$CORRAL run --local --placement-timeout 60 --name killcheck -- "sh -c 'sh -c \"exec sleep 777\" & exit 0'; sleep 600" > $T/kill.out 2>&1 &
runpid=$!
# Wait (up to 20 s) until the double-forked daemon runs: RUNNING is reported before the task's
# shell has forked it.
i=0; while [ $i -lt 200 ] && [ "$(ps -eo args | grep -c '^sleep 777')" = 0 ]; do sleep 0.1; i=$((i+1)); done
echo "daemons_before=$(ps -eo args | grep -c '^sleep 777')"
kill -INT $runpid
wait $runpid
echo "kill_exit=$?"
echo "daemons_after=$(ps -eo args | grep -c '^sleep 777')"
grep -q TASK_KILLED $T/kill.out && echo "kill_reported=yes" || { echo "kill_reported=no"; cat $T/kill.out; }
echo "kill_cgroups=$(find /sys/fs/cgroup -mindepth 1 -type d -name '*.killcheck-*' 2>/dev/null | wc -l)"
# 6. nothing left behind.
rm -rf "$T"
echo "leftover_cgroups=$(find /sys/fs/cgroup -mindepth 1 -type d -name '*.limits-check-*' 2>/dev/null | wc -l)"
"#;

fn value(console: &str, key: &str) -> String {
    console
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= line in:\n{console}"))
        .trim()
        .to_owned()
}

fn check(out: &str) {
    assert_eq!(value(out, "oom_exit"), "137", "{out}");
    assert_eq!(value(out, "oom_reported"), "yes", "{out}");
    assert_eq!(value(out, "oomp_exit"), "0", "{out}");
    assert_eq!(value(out, "oomp_survived"), "yes", "{out}");
    assert_eq!(value(out, "oomp_evidence"), "yes", "{out}");
    assert_eq!(value(out, "oomt_exit"), "137", "{out}");
    assert_eq!(value(out, "oomt_survived"), "no", "{out}");
    assert_eq!(value(out, "oomt_reported"), "yes", "{out}");
    assert_eq!(value(out, "cpu_exit"), "0", "{out}");
    let used: f64 = value(out, "cpu_used_usec").parse().expect("number");
    let rate = used / 3e6;
    // The kernel holds the task to its quota (the upper bound is the enforcement); below, a
    // busy machine may give it less than its half, so only a rate far below it is a failure.
    assert_eq!(value(out, "cpu_quota"), "50000/100000", "{out}");
    assert!(
        (0.2..=0.6).contains(&rate),
        "0.5 cpus gave {rate:.2} cpu-s/s\n{out}"
    );
    let pids: u64 = value(out, "pids_current").parse().unwrap_or(u64::MAX);
    assert!(
        pids <= 64,
        "pids.current {pids} above the limit of 64\n{out}"
    );
    assert_eq!(
        value(out, "bomb_leftovers"),
        "0",
        "the fork bomb outlived its task\n{out}"
    );
    assert_eq!(value(out, "host_forks"), "yes", "{out}");
    let procs: u64 = value(out, "task_procs").parse().expect("number");
    assert!(
        procs <= 6,
        "the task sees {procs} processes, not only its own\n{out}"
    );
    assert_ne!(value(out, "task_uid"), "0", "the task ran as root");
    assert_eq!(value(out, "etc_write"), "no", "{out}");
    assert_eq!(value(out, "escape"), "no", "{out}");
    assert_eq!(value(out, "raise"), "no", "{out}");
    assert_eq!(value(out, "leftover_cgroups"), "0", "{out}");
    assert_eq!(
        value(out, "daemons_before"),
        "1",
        "the double-forked daemon ran\n{out}"
    );
    assert_eq!(
        value(out, "daemons_after"),
        "0",
        "the daemon survived the kill\n{out}"
    );
    assert_eq!(value(out, "kill_reported"), "yes", "{out}");
    assert_eq!(value(out, "kill_cgroups"), "0", "{out}");
}

#[test]
fn corral_run_local_enforces_limits_on_cgroup_v2_in_a_vm() {
    let Some(mut cfg) =
        vmtest::config_or_skip("corral_run_local_enforces_limits_on_cgroup_v2_in_a_vm")
    else {
        return;
    };
    cfg.memory_mib = 1024;
    cfg.timeout = Duration::from_secs(300);
    let run = VmRun::shell(SCRIPT)
        .env("V", "2")
        .env("CORRAL", "/usr/local/bin/corral")
        .file(GuestFile::executable(
            integration::corral_bin(),
            "/usr/local/bin/corral",
        ));
    let out = vmtest::run_in_vm(&cfg, &run).unwrap_or_else(|e| panic!("the VM run failed: {e}"));
    println!("---- guest output ----\n{}", out.console);
    assert_eq!(
        out.exit_code, 0,
        "the guest script failed:\n{}",
        out.console
    );
    check(&out.console);
}

#[test]
fn corral_run_local_enforces_limits_on_this_hosts_cgroup_v1() {
    if !is_root() {
        eprintln!(
            "skipping corral_run_local_enforces_limits_on_this_hosts_cgroup_v1: cgroups need root"
        );
        return;
    }
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        eprintln!("skipping corral_run_local_enforces_limits_on_this_hosts_cgroup_v1: this host is pure cgroup v2");
        return;
    }
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(SCRIPT)
        .env("V", "1")
        .env("CORRAL", integration::corral_bin())
        .env_remove("RUST_LOG")
        .output()
        .expect("run the script");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!(
        "---- output ----\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check(&text);
}
