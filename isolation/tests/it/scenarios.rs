//! The acceptance scenarios through the crate API. Each `#[test]` runs on whatever cgroup
//! version the machine has (v1 here, v2 in the VM: run this binary with the filter `scenarios::`).

use std::time::{Duration, Instant};

use isolation::{ContainerSpec, IsolationError, NetworkNs, Reservation, MIN_MEMORY_BYTES};

use crate::env::{alive, Env};

macro_rules! env_or_skip {
    ($name:expr) => {
        match Env::new($name) {
            Some(e) => e,
            None => return,
        }
    };
    ($name:expr, $tweak:expr) => {
        match Env::with($name, $tweak) {
            Some(e) => e,
            None => return,
        }
    };
}

fn assert_gone(env: &Env, id: &str, paths: &[std::path::PathBuf]) {
    for p in paths {
        assert!(!p.exists(), "cgroup {} of {id} left behind", p.display());
    }
    for parent in env.iso.task_parents().values() {
        assert!(
            !parent.join(id).exists(),
            "cgroup {id} left under {}",
            parent.display()
        );
    }
    assert!(
        !env.dir.path().join("run").join(id).exists(),
        "run dir of {id} left behind"
    );
}

#[test]
fn oom_is_reported_as_memory_limitation() {
    let env = env_or_skip!("oom");
    let mut spec = env.spec("oom", &["alloc", "256"]);
    spec.memory_bytes = Some(64 << 20);
    let c = env.iso.launch("oom", &spec).unwrap();
    let exit = c.wait().unwrap();
    assert!(exit.oom_killed, "not reported as OOM: {exit:?}");
    assert_ne!(exit.code, Some(0), "{exit:?}");
    assert_oom_evidence_at_64mib(&exit);
    assert!(
        !Env::stdout(&spec).contains("allocated 256"),
        "the allocation completed"
    );
    let paths: Vec<_> = c.cgroup_paths().into_values().collect();
    c.destroy().unwrap();
    assert_gone(&env, "oom", &paths);
}

/// A memory limitation of 64 MiB with at least one OOM kill counted.
fn assert_oom_evidence_at_64mib(exit: &isolation::ExitInfo) {
    let lim = exit.limitation.clone().expect("a memory limitation");
    assert_eq!(lim.resource, proto::LimitedResource::Memory);
    assert_eq!(lim.limit, 64 << 20);
    assert!(
        lim.events.get("oom_kill").copied().unwrap_or(0) >= 1,
        "{lim:?}"
    );
}

fn destroy_and_check_gone(env: &Env, c: isolation::Container, id: &str) {
    let paths: Vec<_> = c.cgroup_paths().into_values().collect();
    c.destroy().unwrap();
    assert_gone(env, id, &paths);
}

/// A task whose main process starts a memory hog and goes on (php-fpm's master and a worker).
fn hog_child_spec(env: &Env, tag: &str, policy: isolation::OomPolicy) -> ContainerSpec {
    let mut spec = env.spec(tag, &["hog-child", "256"]);
    spec.memory_bytes = Some(64 << 20);
    spec.oom_policy = policy;
    spec
}

#[test]
fn oom_policy_kill_task_ends_the_whole_container() {
    let env = env_or_skip!("oom-task");
    let spec = hog_child_spec(&env, "oom-task", isolation::OomPolicy::KillTask);
    let c = env.iso.launch("oom-task", &spec).unwrap();
    let exit = c.wait().unwrap();
    let out = Env::stdout(&spec);
    assert!(exit.oom_killed, "not reported as OOM: {exit:?} {out}");
    assert_eq!(exit.oom_policy, isolation::OomPolicy::KillTask);
    assert_eq!(
        (exit.code, exit.signal),
        (None, Some(9)),
        "the main process was not killed with its child: {out}"
    );
    assert!(!out.contains("survived"), "the main process went on: {out}");
    let lim = exit.limitation.clone().expect("a limitation");
    assert_eq!(lim.limit, 64 << 20);
    destroy_and_check_gone(&env, c, "oom-task");
}

#[test]
fn oom_policy_kill_process_kills_only_the_hog_and_keeps_the_evidence() {
    let env = env_or_skip!("oom-proc");
    let spec = hog_child_spec(&env, "oom-proc", isolation::OomPolicy::KillProcess);
    let c = env.iso.launch("oom-proc", &spec).unwrap();
    if c.version() == isolation::CgroupVersion::V2 {
        let group = c.cgroup_paths()["unified"].join("memory.oom.group");
        assert_eq!(std::fs::read_to_string(group).unwrap().trim(), "0");
    }
    let exit = c.wait().unwrap();
    let out = Env::stdout(&spec);
    assert_eq!(
        (exit.code, exit.signal),
        (Some(0), None),
        "the main process did not survive: {exit:?} {out}"
    );
    assert!(out.contains("child ended: signal: 9"), "{out}");
    assert!(out.contains("survived"), "{out}");
    assert!(
        !exit.oom_killed,
        "the task was not ended by the OOM killer: {exit:?}"
    );
    assert!(exit.success(), "{exit:?}");
    assert_eq!(exit.oom_policy, isolation::OomPolicy::KillProcess);
    assert!(exit.oom_kills >= 1, "{exit:?}");
    assert_oom_evidence_at_64mib(&exit);
    destroy_and_check_gone(&env, c, "oom-proc");
}

#[test]
fn oom_policy_kill_process_main_process_killed_is_a_memory_limit() {
    let env = env_or_skip!("oom-main");
    let mut spec = env.spec("oom-main", &["alloc", "256"]);
    spec.memory_bytes = Some(64 << 20);
    spec.oom_policy = isolation::OomPolicy::KillProcess;
    let c = env.iso.launch("oom-main", &spec).unwrap();
    let exit = c.wait().unwrap();
    assert!(exit.oom_killed, "not reported as OOM: {exit:?}");
    assert_eq!(exit.signal, Some(9), "{exit:?}");
    assert!(exit.oom_kills >= 1, "{exit:?}");
    assert!(exit.limitation.is_some());
    c.destroy().unwrap();
}

#[test]
fn ordinary_crash_is_not_oom() {
    let env = env_or_skip!("crash");
    let mut spec = env.spec("crash", &["exit", "3"]);
    spec.memory_bytes = Some(64 << 20);
    let c = env.iso.launch("crash", &spec).unwrap();
    let exit = c.wait().unwrap();
    assert_eq!(
        (exit.code, exit.signal, exit.oom_killed, exit.oom_kills),
        (Some(3), None, false, 0)
    );
    assert!(exit.limitation.is_none());
    c.destroy().unwrap();
}

#[test]
fn half_a_cpu_gets_half_a_cpu() {
    let env = env_or_skip!("cpu");
    let mut spec = env.spec("cpu", &["spin", "30"]);
    spec.cpus = Some(0.5);
    spec.cpu_hard_limit = true;
    let c = env.iso.launch("cpu", &spec).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (u0, t0) = (c.usage().unwrap(), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let (u1, t1) = (c.usage().unwrap(), Instant::now());
    let cpu_s =
        ((u1.cpu_user_us + u1.cpu_system_us) - (u0.cpu_user_us + u0.cpu_system_us)) as f64 / 1e6;
    let rate = cpu_s / (t1 - t0).as_secs_f64();
    eprintln!(
        "cpu rate {rate:.3} cpu-s/s, throttled {} us",
        u1.cpu_throttled_us
    );
    assert!(
        (0.4..=0.6).contains(&rate),
        "0.5 cpus gave {rate:.3} cpu-s/s"
    );
    assert!(u1.cpu_throttled_us > 0, "no throttling recorded");
    c.kill(Duration::ZERO).unwrap();
    let exit = c.wait().unwrap();
    assert_eq!(exit.signal, Some(9));
    c.destroy().unwrap();
}

#[test]
fn fork_bomb_is_contained() {
    let env = env_or_skip!("forkbomb");
    let mut spec = env.spec("forkbomb", &["forkbomb", "3"]);
    spec.pids_limit = Some(64);
    spec.cpus = Some(0.5);
    spec.cpu_hard_limit = true;
    let c = env.iso.launch("forkbomb", &spec).unwrap();
    let mut max_seen = 0;
    let mut worst_spawn = Duration::ZERO;
    let deadline = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < deadline {
        max_seen = max_seen.max(c.procs().unwrap().len());
        let t = Instant::now();
        let st = std::process::Command::new(crate::env::init_program())
            .arg("true")
            .status()
            .expect("host can still fork");
        assert!(st.success());
        worst_spawn = worst_spawn.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    let usage = c.usage().unwrap();
    assert!(max_seen <= 64, "{max_seen} processes under pids.max 64");
    assert!(usage.pids_current <= 64);
    assert!(max_seen >= 32, "the bomb did not fork much ({max_seen})");
    assert!(
        worst_spawn < Duration::from_secs(2),
        "host spawn took {worst_spawn:?}"
    );
    let exit = c.wait().unwrap();
    assert_eq!(exit.code, Some(0));
    let out = Env::stdout(&spec);
    let failed: u64 = out
        .trim()
        .rsplit("failed=")
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(failed > 0, "no fork failed: {out:?}");
    c.destroy().unwrap();
}

#[test]
fn pid_namespace_shows_only_own_processes() {
    let env = env_or_skip!("pidns");
    let spec = env.spec("pidns", &["ps"]);
    let c = env.iso.launch("pidns", &spec).unwrap();
    assert!(c.wait().unwrap().success());
    c.destroy().unwrap();
    // the init is 1, the task 2
    assert_eq!(Env::stdout(&spec).trim(), "1 2");
}

#[test]
fn task_cannot_signal_host_processes() {
    // even as root inside its pid namespace
    let env = env_or_skip!("signal", |c| c.allow_root = true);
    let me = std::process::id().to_string();
    let mut spec = env.spec("signal", &["signal", &me]);
    spec.user = Some("root".into());
    let c = env.iso.launch("signal", &spec).unwrap();
    let exit = c.wait().unwrap();
    c.destroy().unwrap();
    assert_eq!(exit.code, Some(1), "{}", Env::stdout(&spec));
    assert!(
        Env::stdout(&spec).contains("No such process"),
        "{}",
        Env::stdout(&spec)
    );
}

#[test]
fn hostname_and_private_tmp() {
    let env = env_or_skip!("uts");
    let mut spec = env.spec("uts", &["hostname"]);
    spec.hostname = Some("task-42".into());
    let c = env.iso.launch("uts", &spec).unwrap();
    assert!(c.wait().unwrap().success());
    c.destroy().unwrap();
    assert_eq!(Env::stdout(&spec).trim(), "task-42");
    assert_ne!(
        nix::unistd::gethostname().unwrap().to_string_lossy(),
        "task-42"
    );

    // A probe left by an earlier, failed run would prove nothing.
    let _ = std::fs::remove_file("/tmp/corral-private-tmp-probe");
    let spec = env.spec("tmp", &["create", "/tmp/corral-private-tmp-probe"]);
    let c = env.iso.launch("tmp", &spec).unwrap();
    assert!(c.wait().unwrap().success(), "{}", Env::stdout(&spec));
    c.destroy().unwrap();
    assert!(
        spec.cwd.join("tmp/corral-private-tmp-probe").exists(),
        "not in <sandbox>/tmp"
    );
    assert!(
        !std::path::Path::new("/tmp/corral-private-tmp-probe").exists(),
        "leaked to host /tmp"
    );
}

#[test]
fn isolated_network_has_only_loopback() {
    let env = env_or_skip!("netns");
    let mut spec = env.spec("netns", &["read", "/proc/self/net/dev"]);
    spec.namespaces.network = NetworkNs::Isolated;
    let c = env.iso.launch("netns", &spec).unwrap();
    assert!(c.wait().unwrap().success());
    c.destroy().unwrap();
    let out = Env::stdout(&spec);
    let ifaces: Vec<&str> = out
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, vec!["lo"], "{out}");
}

fn kill_daemon(name: &str, pid_ns: bool) {
    let env = env_or_skip!(name);
    let mut spec = env.spec(name, &["daemon", "PIDFILE"]);
    let pidfile = spec.cwd.join("daemon.pid");
    spec.argv[2] = pidfile.to_string_lossy().into_owned();
    spec.namespaces.pid = pid_ns;
    let c = env.iso.launch(name, &spec).unwrap();
    let start = Instant::now();
    while !pidfile.exists() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(pidfile.exists(), "daemon never started");
    let procs = c.procs().unwrap();
    assert!(procs.len() >= 3, "init, task, daemon: {procs:?}");
    assert!(c.try_wait().unwrap().is_none());
    // the daemon ignores SIGTERM: the grace period must end in SIGKILL
    c.kill(Duration::from_millis(300)).unwrap();
    assert!(c.procs().unwrap().is_empty());
    // Processes leave the cgroup late in exit(): give the last ones a moment to finish dying.
    wait_dead(&procs);
    for p in &procs {
        assert!(!alive(*p) || is_zombie(*p), "process {p} survived kill");
    }
    let exit = c.wait().unwrap();
    assert!(exit.signal.is_some() || exit.code.is_some(), "{exit:?}");
    let paths: Vec<_> = c.cgroup_paths().into_values().collect();
    c.destroy().unwrap();
    // Without a pid namespace, killed orphans are zombies of the host's init for a moment.
    wait_dead(&procs);
    for p in &procs {
        assert!(
            !alive(*p) || is_zombie(*p),
            "process {p} left after destroy"
        );
    }
    assert_gone(&env, name, &paths);
}

/// Waits up to 2 s until none of `pids` is alive (zombies count as dead).
fn wait_dead(pids: &[i32]) {
    let start = Instant::now();
    while pids.iter().any(|p| alive(*p) && !is_zombie(*p))
        && start.elapsed() < Duration::from_secs(2)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

#[test]
fn kill_leaves_nothing_double_forked_daemon_in_pid_ns() {
    kill_daemon("killns", true);
}

#[test]
fn kill_leaves_nothing_double_forked_daemon_without_pid_ns() {
    kill_daemon("killhost", false);
}

#[test]
fn sigterm_is_forwarded_to_the_task() {
    let env = env_or_skip!("term");
    let spec = env.spec("term", &["sleep", "30"]);
    let c = env.iso.launch("term", &spec).unwrap();
    c.kill(Duration::from_secs(5)).unwrap();
    let exit = c.wait().unwrap();
    assert_eq!(exit.signal, Some(15), "{exit:?}");
    c.destroy().unwrap();
}

#[test]
fn unprivileged_task_is_confined() {
    let env = env_or_skip!("unpriv");
    let run = |tag: &str, args: &[&str]| -> (Option<i32>, String) {
        let spec = env.spec(tag, args);
        let c = env.iso.launch(tag, &spec).unwrap();
        let exit = c.wait().unwrap();
        c.destroy().unwrap();
        (exit.code, Env::stdout(&spec))
    };
    let (code, out) = run("id", &["id"]);
    assert_eq!((code, out.trim()), (Some(0), "uid=65534 gid=65534"));

    let (code, out) = run("etc", &["create", "/etc/corral-it-probe"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("Permission denied"), "{out}");
    assert!(!std::path::Path::new("/etc/corral-it-probe").exists());

    let (code, out) = run("caps", &["status"]);
    assert_eq!(code, Some(0));
    for want in [
        "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "NoNewPrivs:\t1",
    ] {
        assert!(out.contains(want), "missing {want:?} in {out}");
    }

    // cannot move itself out of its cgroup (into the parent, or the hierarchy's root) ...
    let (ctrl, parent) = env.iso.task_parents().into_iter().next().unwrap();
    let hierarchy_root = match env.iso.version() {
        isolation::CgroupVersion::V2 => std::path::PathBuf::from("/sys/fs/cgroup"),
        isolation::CgroupVersion::V1 => std::path::Path::new("/sys/fs/cgroup").join(&ctrl),
    };
    let targets = vec![
        parent.join("cgroup.procs"),
        hierarchy_root.join("cgroup.procs"),
    ];
    for t in targets {
        let (code, out) = run("escape", &["write", &t.to_string_lossy(), "0"]);
        assert_eq!(code, Some(1), "moved to {}: {out}", t.display());
    }
    // ... nor raise its own limits
    let mut spec = env.spec("raise", &["sleep", "30"]);
    spec.memory_bytes = Some(64 << 20);
    spec.pids_limit = Some(32);
    let c = env.iso.launch("raise", &spec).unwrap();
    let paths = c.cgroup_paths();
    let (mem_file, pids_file) = match c.version() {
        isolation::CgroupVersion::V2 => (
            paths["unified"].join("memory.max"),
            paths["unified"].join("pids.max"),
        ),
        isolation::CgroupVersion::V1 => (
            paths["memory"].join("memory.limit_in_bytes"),
            paths["pids"].join("pids.max"),
        ),
    };
    for f in [&mem_file, &pids_file] {
        let (code, out) = run("raise-try", &["write", &f.to_string_lossy(), "max"]);
        assert_eq!(code, Some(1), "raised {}: {out}", f.display());
    }
    assert!(c.check_limits().unwrap().is_empty());
    c.kill(Duration::ZERO).unwrap();
    c.destroy().unwrap();
}

fn pids_max_file(c: &isolation::Container) -> std::path::PathBuf {
    let paths = c.cgroup_paths();
    paths
        .get("pids")
        .or(paths.get("unified"))
        .expect("a pids cgroup")
        .join("pids.max")
}

#[test]
fn check_limits_restores_drift() {
    let env = env_or_skip!("drift");
    let mut spec = env.spec("drift", &["sleep", "30"]);
    spec.pids_limit = Some(50);
    let c = env.iso.launch("drift", &spec).unwrap();
    let pids_file = pids_max_file(&c);
    std::fs::write(&pids_file, "1000").unwrap();
    let drift = c.check_limits().unwrap();
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert_eq!(
        (drift[0].expected.as_str(), drift[0].found.as_str()),
        ("50", "1000")
    );
    assert_eq!(std::fs::read_to_string(&pids_file).unwrap().trim(), "50");
    assert!(c.check_limits().unwrap().is_empty());
    c.kill(Duration::ZERO).unwrap();
    c.destroy().unwrap();
}

#[test]
fn bad_inputs_are_typed_errors_and_leak_nothing() {
    let env = env_or_skip!("bad");
    let base = env.spec("bad", &["true"]);
    let check = |id: &str, spec: ContainerSpec, ok: &dyn Fn(&IsolationError) -> bool| {
        let err = env.iso.launch(id, &spec).expect_err(id);
        assert!(ok(&err), "{id}: unexpected error {err:?}");
        eprintln!("{id}: {err}");
        assert_gone(&env, id, &[]);
    };
    let with = |f: &dyn Fn(&mut ContainerSpec)| {
        let mut s = base.clone();
        f(&mut s);
        s
    };
    check("cpu0", with(&|s| s.cpus = Some(0.0)), &|e| {
        matches!(e, IsolationError::InvalidLimit { name: "cpus", .. })
    });
    check("cpuneg", with(&|s| s.cpus = Some(-1.0)), &|e| {
        matches!(e, IsolationError::InvalidLimit { .. })
    });
    check("cpunan", with(&|s| s.cpus = Some(f64::NAN)), &|e| {
        matches!(e, IsolationError::InvalidLimit { .. })
    });
    check("mem0", with(&|s| s.memory_bytes = Some(0)), &|e| {
        matches!(e, IsolationError::InvalidLimit { name: "memory", .. })
    });
    check(
        "memsmall",
        with(&|s| s.memory_bytes = Some(MIN_MEMORY_BYTES - 1)),
        &|e| matches!(e, IsolationError::MemoryTooSmall { .. }),
    );
    check("pids0", with(&|s| s.pids_limit = Some(0)), &|e| {
        matches!(e, IsolationError::InvalidLimit { name: "pids", .. })
    });
    check("nocwd", with(&|s| s.cwd = s.cwd.join("missing")), &|e| {
        matches!(e, IsolationError::MissingWorkdir(_))
    });
    check(
        "nocmd",
        with(&|s| s.argv = vec!["no-such-command-xyz".into()]),
        &|e| matches!(e, IsolationError::CommandNotFound { command, .. } if command == "no-such-command-xyz"),
    );
    check(
        "nocmdabs",
        with(&|s| s.argv = vec!["/no/such/program".into()]),
        &|e| matches!(e, IsolationError::CommandNotFound { .. }),
    );
    check(
        "nouser",
        with(&|s| s.user = Some("no-such-user-xyz".into())),
        &|e| matches!(e, IsolationError::UnknownUser(_)),
    );
    check("root", with(&|s| s.user = Some("root".into())), &|e| {
        matches!(e, IsolationError::RootNotAllowed(_))
    });
    check("../x", base.clone(), &|e| {
        matches!(e, IsolationError::InvalidId(_))
    });
    check(
        "outside",
        with(&|s| s.cwd = std::path::PathBuf::from("/")),
        &|e| matches!(e, IsolationError::InvalidSpec(m) if m.contains("sandbox root")),
    );
    check("emptyargv", with(&|s| s.argv.clear()), &|e| {
        matches!(e, IsolationError::InvalidSpec(_))
    });
    check(
        "hostnouts",
        with(&|s| {
            s.hostname = Some("h".into());
            s.namespaces.uts = false;
        }),
        &|e| matches!(e, IsolationError::InvalidSpec(_)),
    );
    // duplicate ids are refused while the first exists
    let c = env
        .iso
        .launch("dup", &env.spec("dup", &["sleep", "30"]))
        .unwrap();
    let err = env
        .iso
        .launch("dup", &env.spec("dup2", &["true"]))
        .unwrap_err();
    assert!(matches!(err, IsolationError::AlreadyExists(_)), "{err:?}");
    c.kill(Duration::ZERO).unwrap();
    c.destroy().unwrap();
}

#[test]
fn recover_after_dropping_the_handle() {
    let env = env_or_skip!("recover");
    let spec = env.spec("recover", &["sleep", "30"]);
    let c = env.iso.launch("recover", &spec).unwrap();
    let pid = c.pid();
    let json = serde_json::to_string(&c.record()).unwrap();
    drop(c);
    let record: isolation::ContainerRecord = serde_json::from_str(&json).unwrap();
    let r = env.iso.recover(&record).unwrap();
    assert_eq!(r.pid(), pid);
    assert!(
        r.try_wait().unwrap().is_none(),
        "recovered container looks exited"
    );
    let u = r.usage().unwrap();
    assert!(u.pids_current >= 2 && u.mem_current_bytes > 0, "{u:?}");
    r.kill(Duration::from_secs(5)).unwrap();
    let exit = r.wait().unwrap();
    assert_eq!(exit.signal, Some(15), "{exit:?}");
    r.destroy().unwrap();
    assert!(!alive(pid));
    assert_gone(&env, "recover", &[]);

    // a record pointing outside the agent's cgroups is refused
    let mut bad = record.clone();
    for p in bad.cgroups.values_mut() {
        *p = std::path::PathBuf::from("/sys/fs/cgroup/elsewhere");
    }
    assert!(matches!(
        env.iso.recover(&bad),
        Err(IsolationError::BadRecord { .. })
    ));
}

#[test]
fn recover_an_exited_container_reads_the_status_file() {
    let env = env_or_skip!("recover-exited");
    let spec = env.spec("rx", &["exit", "7"]);
    let c = env.iso.launch("rx", &spec).unwrap();
    let record = c.record();
    let status = record.run_dir.join("status");
    let start = Instant::now();
    while !status.exists() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(c);
    let r = env.iso.recover(&record).unwrap();
    let exit = r.wait().unwrap();
    assert_eq!((exit.code, exit.signal), (Some(7), None));
    r.destroy().unwrap();
}

/// A launcher killed between `launch` and saving the record: the container is found by its id
/// alone, running (same init, killable) or ended (its exit read from the status file).
#[test]
fn recover_by_id_without_a_record() {
    let env = env_or_skip!("recover-id");
    assert!(env.iso.recover_by_id("never-launched").unwrap().is_none());
    let c = env
        .iso
        .launch("rid", &env.spec("rid", &["sleep", "30"]))
        .unwrap();
    let (pid, limits) = (c.pid(), c.record().limits);
    drop(c);
    let r = env.iso.recover_by_id("rid").unwrap().expect("found by id");
    assert_eq!(r.pid(), pid, "the init, not one of its children");
    assert_eq!(r.record().limits, limits);
    assert!(r.try_wait().unwrap().is_none(), "looks exited");
    r.kill(Duration::from_secs(5)).unwrap();
    assert_eq!(r.wait().unwrap().signal, Some(15));
    r.destroy().unwrap();
    assert!(env.iso.recover_by_id("rid").unwrap().is_none());

    let c = env
        .iso
        .launch("rid-x", &env.spec("rid-x", &["exit", "9"]))
        .unwrap();
    let status = c.record().run_dir.join("status");
    let start = Instant::now();
    while !status.exists() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(c);
    let r = env
        .iso
        .recover_by_id("rid-x")
        .unwrap()
        .expect("found by id");
    let exit = r.wait().unwrap();
    assert_eq!((exit.code, exit.signal), (Some(9), None));
    r.destroy().unwrap();
}

#[test]
fn shell_command_with_explicit_environment() {
    if !std::path::Path::new("/bin/sh").exists() {
        crate::env::skip("shell", "no /bin/sh");
        return;
    }
    let env = env_or_skip!("shell");
    let mut spec = env.spec("shell", &[]);
    spec.argv = vec![
        "/bin/sh".into(),
        "-c".into(),
        "echo hi $FOO; echo $HOME; pwd".into(),
    ];
    spec.env.push(("FOO".into(), "bar".into()));
    let c = env.iso.launch("shell", &spec).unwrap();
    assert!(c.wait().unwrap().success());
    c.destroy().unwrap();
    let out = Env::stdout(&spec);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        vec!["hi bar", "", spec.cwd.to_str().unwrap()],
        "nothing inherited: {out}"
    );
}

#[test]
fn many_launches_leak_nothing() {
    let env = env_or_skip!("leak");
    let n: usize = std::env::var("ISOLATION_LEAK_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let fds_before = std::fs::read_dir("/proc/self/fd").unwrap().count();
    let spec = env.spec("leak", &["true"]);
    for i in 0..n {
        let id = format!("leak-{i}");
        let c = env.iso.launch(&id, &spec).unwrap();
        assert!(c.wait().unwrap().success());
        c.destroy().unwrap();
    }
    for parent in env.iso.task_parents().values() {
        let left: Vec<_> = std::fs::read_dir(parent)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .collect();
        assert!(left.is_empty(), "cgroups left: {left:?}");
    }
    let runs = std::fs::read_dir(env.dir.path().join("run"))
        .unwrap()
        .count();
    assert_eq!(runs, 0, "run dirs left");
    // other tests run in parallel threads and hold fds briefly: allow a little slack
    let fds_after = std::fs::read_dir("/proc/self/fd").unwrap().count();
    assert!(
        fds_after <= fds_before + 16,
        "fds {fds_before} -> {fds_after}"
    );
}

#[test]
fn node_resources_respect_reservation() {
    let env = env_or_skip!("node");
    let all = env.iso.node_resources(&Reservation::default()).unwrap();
    let ncpu = std::thread::available_parallelism().unwrap().get() as u64;
    assert!(
        all.cpus_milli > 0 && all.cpus_milli <= ncpu * 1000,
        "{all:?}"
    );
    let mem_total = procfs_mem_total();
    assert!(all.mem_bytes > 0 && all.mem_bytes <= mem_total, "{all:?}");
    let less = env
        .iso
        .node_resources(&Reservation {
            cpus_milli: 500,
            mem_bytes: 1 << 30,
        })
        .unwrap();
    assert_eq!(less.cpus_milli, all.cpus_milli.saturating_sub(500));
    assert_eq!(less.mem_bytes, all.mem_bytes.saturating_sub(1 << 30));
}

fn procfs_mem_total() -> u64 {
    let t = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: u64 = t
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    kb * 1024
}

#[test]
fn forcing_an_unavailable_backend_is_a_clear_error() {
    if let Some(why) = crate::env::skip_reason() {
        crate::env::skip("forcing_an_unavailable_backend", &why);
        return;
    }
    let setup = isolation::cgroup::detect(std::path::Path::new("/sys/fs/cgroup")).unwrap();
    let forced = match setup {
        isolation::CgroupSetup::Unified => isolation::Backend::Cgroup1,
        _ => isolation::Backend::Cgroup2,
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = isolation::IsolatorConfig::new(crate::env::init_program(), vec!["__init".into()]);
    cfg.backend = forced;
    cfg.cgroup_parent = Some(format!("corral-it-{}-forced", std::process::id()));
    cfg.run_root = dir.path().join("run");
    let err = isolation::Isolator::new(cfg).unwrap_err();
    eprintln!("forced {forced:?} on {setup:?}: {err}");
    assert!(
        matches!(
            err,
            IsolationError::BackendUnavailable { .. } | IsolationError::MissingController { .. }
        ),
        "{err:?}"
    );
}

#[test]
fn user_policy_is_enforced() {
    // Only root and nobody exist in the VM: make nobody a non-default user here.
    let env = env_or_skip!("users", |c| {
        c.default_user = None;
        c.allowed_users = vec!["no-such-allowed-user".into()];
    });
    let mut spec = env.spec("users", &["true"]);
    let err = env.iso.launch("nouser-default", &spec).unwrap_err();
    assert!(matches!(err, IsolationError::NoUser), "{err:?}");
    spec.user = Some("nobody".into());
    let err = env.iso.launch("notallowed", &spec).unwrap_err();
    assert!(
        matches!(err, IsolationError::UserNotAllowed(ref u) if u == "nobody"),
        "{err:?}"
    );
    spec.user = Some("root".into());
    let err = env.iso.launch("root", &spec).unwrap_err();
    assert!(matches!(err, IsolationError::RootNotAllowed(_)), "{err:?}");
    assert_gone(&env, "notallowed", &[]);
    assert_gone(&env, "root", &[]);
}

/// The memory limit, the swap limit file's value (v1 memsw, v2 swap.max; None without swap
/// accounting), pids.max and the cpu quota of a container, read from its cgroup files.
fn limit_files(c: &isolation::Container) -> (u64, Option<String>, String, String) {
    let paths = c.cgroup_paths();
    let read = |ctrl: &str, v1: &str, v2: &str| -> Option<String> {
        let (dir, name) = match paths.get("unified") {
            Some(d) => (d, v2),
            None => (paths.get(ctrl).expect("controller dir"), v1),
        };
        std::fs::read_to_string(dir.join(name))
            .ok()
            .map(|t| t.trim().to_owned())
    };
    let mem = read("memory", "memory.limit_in_bytes", "memory.max")
        .expect("memory limit file")
        .parse()
        .expect("a number");
    let swap = read("memory", "memory.memsw.limit_in_bytes", "memory.swap.max");
    let pids = read("pids", "pids.max", "pids.max").expect("pids.max");
    let cpu = match paths.get("unified") {
        Some(_) => read("cpu", "", "cpu.max").expect("cpu.max"),
        None => read("cpu", "cpu.cfs_quota_us", "").expect("cfs_quota_us"),
    };
    (mem, swap, pids, cpu)
}

#[test]
fn update_limits_raises_a_running_container_and_the_task_gets_the_room() {
    let env = env_or_skip!("update-raise");
    let mut spec = env.spec("update-raise", &[]);
    let go = spec.cwd.join("go");
    spec.argv = vec![
        env.init.display().to_string(),
        "alloc-when".into(),
        go.display().to_string(),
        "80".into(),
    ];
    spec.memory_bytes = Some(32 << 20);
    spec.pids_limit = Some(50);
    spec.cpus = Some(0.5);
    spec.cpu_hard_limit = true;
    let c = env.iso.launch("update-raise", &spec).unwrap();
    let v2 = c.version() == isolation::CgroupVersion::V2;
    let (mem, swap, pids, cpu) = limit_files(&c);
    assert_eq!((mem, pids.as_str()), (32 << 20, "50"));
    assert_eq!(cpu, if v2 { "50000 100000" } else { "50000" });
    let mut bigger = c.limits();
    bigger.memory_bytes = Some(128 << 20);
    bigger.pids_max = 100;
    bigger.cpus = Some(1.0);
    assert_eq!(c.update_limits(&bigger).unwrap(), bigger);
    let (mem, swap_after, pids, cpu) = limit_files(&c);
    assert_eq!((mem, pids.as_str()), (128 << 20, "100"));
    assert_eq!(cpu, if v2 { "100000 100000" } else { "100000" });
    match (v2, swap, swap_after) {
        // v2: swap stays off.
        (true, Some(_), Some(s)) => assert_eq!(s, "0"),
        // v1: memsw was raised with (and before) the limit.
        (false, Some(_), Some(s)) => assert_eq!(s, (128u64 << 20).to_string()),
        (_, None, None) => eprintln!("no swap accounting on this kernel"),
        other => panic!("swap file appeared or vanished: {other:?}"),
    }
    // The record (what the agent checkpoints) and the drift check use the new limits.
    assert_eq!(c.record().limits, bigger);
    assert!(c.check_limits().unwrap().is_empty(), "no false drift");
    let pids_file = pids_max_file(&c);
    std::fs::write(&pids_file, "1000").unwrap();
    let drift = c.check_limits().unwrap();
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert_eq!(std::fs::read_to_string(&pids_file).unwrap().trim(), "100");
    // 80 MiB: far over the 32 MiB it started with, within the raised 128 MiB.
    std::fs::write(&go, b"").unwrap();
    let exit = c.wait().unwrap();
    assert!(
        exit.success() && !exit.oom_killed,
        "the task did not get the raised limit: {exit:?}"
    );
    assert!(Env::stdout(&spec).contains("allocated 80 MiB"));
    c.destroy().unwrap();
}

#[test]
fn update_limits_never_cuts_memory_below_what_is_in_use() {
    let env = env_or_skip!("update-lower");
    let mut spec = env.spec("update-lower", &["hold", "48", "60"]);
    spec.memory_bytes = Some(128 << 20);
    spec.pids_limit = Some(50);
    let c = env.iso.launch("update-lower", &spec).unwrap();
    let start = Instant::now();
    while !Env::stdout(&spec).contains("holding 48 MiB") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "hold never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = c.limits();
    let mut cut = before.clone();
    cut.memory_bytes = Some(32 << 20);
    match c.update_limits(&cut) {
        Err(IsolationError::LimitBelowUsage { limit, usage, .. }) => {
            assert_eq!(limit, 32 << 20);
            assert!(usage > 32 << 20, "{usage}");
        }
        other => panic!("a cut below use was not refused: {other:?}"),
    }
    assert!(
        c.try_wait().unwrap().is_none(),
        "the refused cut killed the task"
    );
    assert_eq!(c.limits(), before, "nothing changed");
    assert_eq!(limit_files(&c).0, 128 << 20);
    // A cut that leaves room works; v1 cuts the limit before memsw.
    let mut fits = before.clone();
    fits.memory_bytes = Some(96 << 20);
    fits.pids_max = 20;
    c.update_limits(&fits).unwrap();
    let (mem, swap, pids, _) = limit_files(&c);
    assert_eq!((mem, pids.as_str()), (96 << 20, "20"));
    if c.version() == isolation::CgroupVersion::V1 {
        if let Some(s) = swap {
            assert_eq!(s, (96u64 << 20).to_string());
        }
    }
    assert!(c.check_limits().unwrap().is_empty());
    // Bad changes are typed errors and change nothing.
    let mut gone = fits.clone();
    gone.memory_bytes = None;
    assert!(matches!(
        c.update_limits(&gone),
        Err(IsolationError::LimitChange { .. })
    ));
    let mut few = fits.clone();
    few.pids_max = 1;
    assert!(matches!(
        c.update_limits(&few),
        Err(IsolationError::InvalidLimit { name: "pids", .. })
    ));
    assert_eq!(c.limits(), fits);
    assert!(c.try_wait().unwrap().is_none(), "still running");
    c.kill(Duration::ZERO).unwrap();
    c.destroy().unwrap();
}

#[test]
fn destroy_by_id_ends_a_container_nobody_holds() {
    let env = env_or_skip!("orphan");
    let mut spec = env.spec("orphan", &["daemon", "PIDFILE"]);
    let pidfile = spec.cwd.join("daemon.pid");
    spec.argv[2] = pidfile.to_string_lossy().into_owned();
    let c = env.iso.launch("orphan", &spec).unwrap();
    let start = Instant::now();
    while !pidfile.exists() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let procs = c.procs().unwrap();
    assert!(procs.len() >= 3, "init, task, daemon: {procs:?}");
    let pid = c.pid();
    let paths: Vec<_> = c.cgroup_paths().into_values().collect();
    // The handle is dropped without a record, as when an agent dies right after the clone.
    drop(c);
    assert_eq!(env.iso.container_ids().unwrap(), vec!["orphan".to_owned()]);
    // A launch cut short before its cgroup existed leaves only a run dir.
    std::fs::create_dir_all(env.dir.path().join("run").join("half")).unwrap();
    assert_eq!(
        env.iso.container_ids().unwrap(),
        vec!["half".to_owned(), "orphan".to_owned()]
    );
    env.iso.destroy_by_id("orphan").unwrap();
    env.iso.destroy_by_id("half").unwrap();
    wait_dead(&procs);
    for p in &procs {
        assert!(!alive(*p) || is_zombie(*p), "process {p} survived");
    }
    // The init was this process's child: reap it.
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    assert_gone(&env, "orphan", &paths);
    assert_gone(&env, "half", &[]);
    assert!(env.iso.container_ids().unwrap().is_empty());
    // Unknown ids are fine; bad ids are refused.
    env.iso.destroy_by_id("never-was").unwrap();
    assert!(matches!(
        env.iso.destroy_by_id("../x"),
        Err(IsolationError::InvalidId(_))
    ));
}

/// Runs the helper with `args` as container `id` (and `user`) with `root` hidden but `visible`
/// bound back; returns whether it succeeded, its output, and whether the init wrote the status
/// file (its run dir is under the hidden root too).
fn run_hidden(
    env: &Env,
    id: &str,
    user: Option<&str>,
    visible: &[std::path::PathBuf],
    args: &[&str],
) -> (bool, String, bool) {
    let mut spec = env.spec(id, args);
    spec.user = user.map(str::to_owned);
    spec.view.hidden = vec![env.dir.path().to_path_buf()];
    spec.view.visible = visible.to_vec();
    let c = env.iso.launch(id, &spec).unwrap();
    let ok = c.wait().unwrap().success();
    let status_written = env.dir.path().join("run").join(id).join("status").exists();
    c.destroy().unwrap();
    (ok, Env::stdout(&spec), status_written)
}

#[test]
fn hidden_directory_shows_only_the_sandbox_and_cgroups_are_read_only() {
    let env = env_or_skip!("view", |c: &mut isolation::IsolatorConfig| {
        c.allow_root = true
    });
    use std::os::unix::fs::PermissionsExt;
    let root = env.dir.path().to_path_buf();
    let world_readable = |p: &std::path::Path, text: &str| {
        std::fs::write(p, text).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
    };
    // Another tenant's sandbox, agent state beside the sandboxes, and a socket-like directory
    // this task may see.
    let other = env.sandbox("other");
    world_readable(&other.join("secret"), "other's secret");
    std::fs::create_dir_all(root.join("meta")).unwrap();
    world_readable(&root.join("meta/state"), "agent state");
    let shared = root.join("sockets/view-ls");
    std::fs::create_dir_all(&shared).unwrap();
    world_readable(&shared.join("hello"), "shared-ok");

    // The hidden directory holds only the mount points of what was bound back.
    let (ok, out, status) = run_hidden(
        &env,
        "view-ls",
        None,
        std::slice::from_ref(&shared),
        &["ls", root.to_str().unwrap()],
    );
    assert!(ok, "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["sandboxes", "sockets"],
        "{out}"
    );
    assert!(
        status,
        "the init wrote no status file under the hidden directory"
    );
    let (ok, out, _) = run_hidden(
        &env,
        "view-ls2",
        None,
        &[],
        &["ls", root.join("sandboxes").to_str().unwrap()],
    );
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "view-ls2", "other sandboxes are hidden: {out}");

    // Nothing of the other tenant or the agent can be read, even though the files are 0644.
    for path in [other.join("secret"), root.join("meta/state")] {
        let (ok, out, _) = run_hidden(
            &env,
            "view-read",
            None,
            &[],
            &["read", path.to_str().unwrap()],
        );
        assert!(
            !ok && out.contains("No such file"),
            "{}: {out}",
            path.display()
        );
    }
    // The visible path and the sandbox work at their own paths.
    let (ok, out, _) = run_hidden(
        &env,
        "view-shared",
        None,
        std::slice::from_ref(&shared),
        &["read", shared.join("hello").to_str().unwrap()],
    );
    assert!(ok && out.contains("shared-ok"), "{out}");
    let mine = env.dir.path().join("sandboxes/view-own/mine");
    let (ok, out, _) = run_hidden(
        &env,
        "view-own",
        None,
        &[],
        &["create", mine.to_str().unwrap()],
    );
    assert!(ok, "{out}");
    assert!(
        mine.exists(),
        "a file the task wrote in its sandbox is not on the host"
    );

    // Even root in the container cannot write the hidden tmpfs or the cgroup filesystem.
    let probe = root.join("root-probe");
    let (ok, out, _) = run_hidden(
        &env,
        "view-root",
        Some("root"),
        &[],
        &["create", probe.to_str().unwrap()],
    );
    assert!(!ok && out.contains("Read-only file system"), "{out}");
    assert!(!probe.exists());
    let cg = std::path::Path::new("/sys/fs/cgroup");
    if cg.is_dir() {
        let target = cg.join("corral-view-probe");
        let (ok, out, _) = run_hidden(
            &env,
            "view-cg",
            Some("root"),
            &[],
            &["create", target.to_str().unwrap()],
        );
        assert!(!ok && out.contains("Read-only file system"), "{out}");
        assert!(!target.exists());
        // Every cgroup mount the task sees is read-only.
        let (ok, info, _) = run_hidden(
            &env,
            "view-mi",
            None,
            &[],
            &["read", "/proc/self/mountinfo"],
        );
        assert!(ok, "{info}");
        // The topmost mount at each point (a bind stacks on the original, listed later).
        let mut top = std::collections::BTreeMap::new();
        for l in info.lines() {
            if let Some(m) = l
                .split(' ')
                .nth(4)
                .filter(|m| m.starts_with("/sys/fs/cgroup"))
            {
                top.insert(m.to_owned(), l);
            }
        }
        assert!(!top.is_empty(), "{info}");
        for l in top.values() {
            let opts = l.split(' ').nth(5).unwrap_or("");
            assert!(opts.split(',').any(|o| o == "ro"), "not read-only: {l}");
        }
        // The host's view is unchanged.
        let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let host_top = host
            .lines()
            .rfind(|l| l.split(' ').nth(4) == Some("/sys/fs/cgroup"))
            .expect("the host's /sys/fs/cgroup mount");
        assert!(
            host_top
                .split(' ')
                .nth(5)
                .is_some_and(|o| o.starts_with("rw")),
            "{host_top}"
        );
    }
}

#[test]
fn hidden_paths_need_a_mount_namespace_and_absolute_paths() {
    let env = env_or_skip!("view-bad");
    let mut spec = env.spec("view-bad", &["true"]);
    spec.view.hidden = vec!["relative".into()];
    assert!(matches!(
        env.iso.launch("view-bad", &spec),
        Err(IsolationError::InvalidSpec(_))
    ));
    spec.view.hidden = vec![env.dir.path().join("x/../y")];
    assert!(matches!(
        env.iso.launch("view-bad", &spec),
        Err(IsolationError::InvalidSpec(_))
    ));
    spec.view.hidden = vec![env.dir.path().to_path_buf()];
    spec.namespaces.mount = false;
    spec.view.read_only.clear();
    assert!(matches!(
        env.iso.launch("view-bad", &spec),
        Err(IsolationError::InvalidSpec(_))
    ));
}

/// `/var/tmp` exists on every host; the busybox VM has none until a test makes it.
fn ensure_var_tmp() {
    use std::os::unix::fs::PermissionsExt;
    let p = std::path::Path::new("/var/tmp");
    if !p.exists() {
        std::fs::create_dir_all(p).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o1777)).unwrap();
    }
}

/// A spec with a private /dev/shm and a private /var/tmp.
fn private_spec(env: &Env, tag: &str, args: &[&str]) -> ContainerSpec {
    let mut spec = env.spec(tag, args);
    spec.view.private_shm = true;
    spec.view.private_dirs = vec!["/var/tmp".into()];
    spec
}

#[test]
fn tasks_of_the_same_user_get_their_own_dev_shm_and_var_tmp() {
    let env = env_or_skip!("shm");
    ensure_var_tmp();
    let shm_probe = format!("/dev/shm/corral-shm-probe-{}", std::process::id());
    let var_probe = format!("/var/tmp/corral-var-tmp-probe-{}", std::process::id());
    for p in [&shm_probe, &var_probe] {
        let _ = std::fs::remove_file(p);
    }
    // Task A (nobody) writes in both and stays up; its files are only in its own view.
    let a = private_spec(&env, "shm-a", &["fill", &shm_probe, "1", "60"]);
    let ca = env.iso.launch("shm-a", &a).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !Env::stdout(&a).contains("filled 1 MiB") {
        assert!(
            Instant::now() < deadline,
            "A never wrote: {}",
            Env::stdout(&a)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let a_var = private_spec(&env, "shm-a-var", &["create", &var_probe]);
    let c = env.iso.launch("shm-a-var", &a_var).unwrap();
    assert!(c.wait().unwrap().success(), "{}", Env::stdout(&a_var));
    c.destroy().unwrap();
    assert!(
        a_var.cwd.join("var-tmp").join(&var_probe[9..]).exists(),
        "not in <sandbox>/var-tmp"
    );
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let md = std::fs::metadata(a_var.cwd.join("var-tmp")).unwrap();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    assert_eq!(md.uid(), nobody.uid.as_raw(), "var-tmp is the task user's");
    assert_eq!(md.permissions().mode() & 0o7777, 0o1777);

    // Neither file reached the host, and task B (same user) sees neither.
    assert!(
        !std::path::Path::new(&shm_probe).exists(),
        "A's shm file is on the host"
    );
    assert!(
        !std::path::Path::new(&var_probe).exists(),
        "A's /var/tmp file is on the host"
    );
    for (tag, path) in [("shm-b1", &shm_probe), ("shm-b2", &var_probe)] {
        let b = private_spec(&env, tag, &["read", path]);
        let c = env.iso.launch(tag, &b).unwrap();
        let exit = c.wait().unwrap();
        c.destroy().unwrap();
        let out = Env::stdout(&b);
        assert!(
            !exit.success() && out.contains("No such file"),
            "{path}: {out}"
        );
    }
    // B's /dev/shm is an empty tmpfs mounted nosuid,nodev, writable by its user.
    let b = private_spec(&env, "shm-b3", &["read", "/proc/self/mountinfo"]);
    let c = env.iso.launch("shm-b3", &b).unwrap();
    assert!(c.wait().unwrap().success());
    c.destroy().unwrap();
    let info = Env::stdout(&b);
    let shm = info
        .lines()
        .rfind(|l| l.split(' ').nth(4) == Some("/dev/shm"))
        .unwrap_or_else(|| panic!("no /dev/shm mount:\n{info}"));
    let opts = shm.split(' ').nth(5).unwrap_or("");
    assert!(opts.contains("nosuid") && opts.contains("nodev"), "{shm}");
    assert!(shm.contains(" - tmpfs "), "{shm}");
    let b = private_spec(&env, "shm-b4", &["ls", "/dev/shm"]);
    let c = env.iso.launch("shm-b4", &b).unwrap();
    assert!(c.wait().unwrap().success());
    c.destroy().unwrap();
    assert_eq!(Env::stdout(&b), "", "B's /dev/shm is not empty");

    ca.kill(Duration::from_millis(100)).unwrap();
    let _ = ca.wait();
    ca.destroy().unwrap();
}

#[test]
fn filling_a_private_dev_shm_cannot_escape_the_memory_limit() {
    let env = env_or_skip!("shm-fill");
    ensure_var_tmp();
    let limit: u64 = 64 << 20;
    let probe = format!("/dev/shm/corral-shm-fill-{}", std::process::id());
    let _ = std::fs::remove_file(&probe);
    let mut spec = private_spec(&env, "shm-fill", &["fill", &probe, "256", "0"]);
    spec.memory_bytes = Some(limit);
    let c = env.iso.launch("shm-fill", &spec).unwrap();
    let exit = c.wait().unwrap();
    let out = Env::stdout(&spec);
    // The kernel's highest charge of the container, whatever stopped the writer.
    let mut peak = None;
    for dir in c.cgroup_paths().values() {
        for f in ["memory.peak", "memory.max_usage_in_bytes"] {
            if let Ok(v) = std::fs::read_to_string(dir.join(f)) {
                peak = v.trim().parse::<u64>().ok().or(peak);
            }
        }
    }
    c.destroy().unwrap();
    assert!(!exit.success(), "256 MiB fit in a 64 MiB container: {out}");
    assert!(!out.contains("filled 256"), "{out}");
    assert!(
        exit.oom_killed || out.contains("No space left") || out.contains("Cannot allocate memory"),
        "neither OOM-killed nor refused: {exit:?} {out}"
    );
    let peak = peak.expect("the container's memory peak");
    println!(
        "shm fill: oom_killed={} peak={peak} limit={limit} {}",
        exit.oom_killed,
        out.trim()
    );
    assert!(peak <= limit, "peak {peak} above the limit {limit}");
    // The pages died with the container: nothing was written to the host's /dev/shm.
    assert!(
        !std::path::Path::new(&probe).exists(),
        "the task's shm file outlived it on the host"
    );
}

#[test]
fn private_directories_are_checked() {
    let env = env_or_skip!("priv-bad");
    let mut spec = env.spec("priv-bad", &["true"]);
    for bad in ["/", "/tmp", "relative", "/no/such/dir-corral"] {
        spec.view.private_dirs = vec![bad.into()];
        assert!(
            matches!(
                env.iso.launch("priv-bad", &spec),
                Err(IsolationError::InvalidSpec(_))
            ),
            "{bad}"
        );
    }
    ensure_var_tmp();
    spec.view.private_dirs = vec!["/var/tmp".into(), "/var//tmp/".into()];
    assert!(matches!(
        env.iso.launch("priv-bad", &spec),
        Err(IsolationError::InvalidSpec(_))
    ));
    spec.view.private_dirs.clear();
    spec.view.private_shm = true;
    spec.namespaces.mount = false;
    spec.view.read_only.clear();
    assert!(matches!(
        env.iso.launch("priv-bad", &spec),
        Err(IsolationError::InvalidSpec(_))
    ));
    assert_gone(&env, "priv-bad", &[]);
}
