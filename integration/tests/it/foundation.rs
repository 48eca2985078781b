//! The foundation's end-to-end behaviour: tasks run through a real master and agent, their exit
//! codes come back, and impossible requests fail with a clear message.

use integration::{corral, stderr, stdout, Cluster};
use std::time::Duration;

const RUN_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn exit_zero_is_task_finished_and_corral_run_exits_zero() {
    let mut c = Cluster::start_master(&[]);
    c.start_agent("a1", &["--resources", "cpus:2;mem:1GiB"]);
    let out = c.client("fw", &["run", "--", "echo hello from a task"], RUN_TIMEOUT);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{err}");
    assert!(err.contains("TASK_RUNNING"), "stderr:\n{err}");
    assert!(err.contains("TASK_FINISHED"), "stderr:\n{err}");
    assert!(
        stdout(&out).contains("hello from a task"),
        "stdout: {}",
        stdout(&out)
    );
}

#[test]
fn exit_three_is_task_failed_with_code_three() {
    let mut c = Cluster::start_master(&[]);
    c.start_agent("a1", &["--resources", "cpus:2;mem:1GiB"]);
    let out = c.client("fw", &["run", "--", "echo oops >&2; exit 3"], RUN_TIMEOUT);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "stderr:\n{err}");
    assert!(err.contains("TASK_FAILED (exit code 3)"), "stderr:\n{err}");
    assert!(err.contains("oops"), "the task's stderr is shown:\n{err}");
}

#[test]
fn argv_commands_run_without_a_shell() {
    let mut c = Cluster::start_master(&[]);
    c.start_agent("a1", &["--resources", "cpus:2;mem:1GiB"]);
    let out = c.client(
        "fw",
        &["run", "--", "/bin/echo", "a  b", "$HOME"],
        RUN_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", stderr(&out));
    assert!(
        stdout(&out).contains("a  b $HOME"),
        "stdout: {}",
        stdout(&out)
    );
}

#[test]
fn a_task_larger_than_any_agent_fails_clearly_after_the_placement_timeout() {
    let mut c = Cluster::start_master(&[]);
    c.start_agent("a1", &["--resources", "cpus:2;mem:1GiB"]);
    let out = c.client(
        "fw",
        &[
            "run",
            "--cpus",
            "64",
            "--mem",
            "1GiB",
            "--placement-timeout",
            "3",
            "--",
            "true",
        ],
        RUN_TIMEOUT,
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(125), "stderr:\n{err}");
    assert!(err.contains("cannot place task"), "stderr:\n{err}");
    assert!(
        err.contains("cpus:64"),
        "the message names what was asked:\n{err}"
    );
}

#[test]
fn state_shows_agents_frameworks_and_tasks_as_json() {
    let mut c = Cluster::start_master(&[]);
    c.start_agent("a1", &["--resources", "cpus:2;mem:1GiB"]);
    let out = c.client(
        "fw",
        &["run", "--name", "statecheck", "--", "true"],
        RUN_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", stderr(&out));
    // The snapshot is republished within 100 ms of a change: poll until it shows the agent.
    let keys = [
        "\"agents\"",
        "\"frameworks\"",
        "\"tasks\"",
        "\"masters\"",
        "\"a1\"",
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = c.client("op", &["state", "--json"], RUN_TIMEOUT);
        assert!(out.status.success(), "stderr:\n{}", stderr(&out));
        let json = stdout(&out);
        let missing: Vec<&str> = keys.into_iter().filter(|k| !json.contains(k)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "missing {missing:?} in:\n{json}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = c.client("op", &["state"], RUN_TIMEOUT);
    assert!(stdout(&out).contains("AGENTS (1)"), "{}", stdout(&out));
}

#[test]
fn run_local_runs_a_task_on_a_throwaway_cluster() {
    let out = corral(
        &["run", "--local", "--", "echo local hello"],
        &[],
        RUN_TIMEOUT,
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{err}");
    assert!(
        stdout(&out).contains("local hello"),
        "stdout: {}",
        stdout(&out)
    );
    assert!(err.contains("TASK_FINISHED"), "stderr:\n{err}");
    let out = corral(&["run", "--local", "--", "exit 7"], &[], RUN_TIMEOUT);
    assert_eq!(out.status.code(), Some(7), "stderr:\n{}", stderr(&out));
}

#[test]
fn bad_flags_get_clear_errors() {
    let out = corral(
        &["run", "--local", "--cpus", "0", "--", "true"],
        &[],
        RUN_TIMEOUT,
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("--cpus"), "{}", stderr(&out));
    let out = corral(
        &["run", "--local", "--mem", "lots", "--", "true"],
        &[],
        RUN_TIMEOUT,
    );
    assert!(stderr(&out).contains("--mem"), "{}", stderr(&out));
    let out = corral(
        &[
            "state",
            "--master",
            "127.0.0.1:1",
            "--ca",
            "/nonexistent/ca.pem",
            "--cert",
            "/x",
            "--key",
            "/y",
        ],
        &[],
        RUN_TIMEOUT,
    );
    assert!(
        stderr(&out).contains("/nonexistent/ca.pem"),
        "{}",
        stderr(&out)
    );
}

/// A scratch directory with a master certificate m1, and the master's data dir in it.
fn master_scratch() -> (tempfile::TempDir, integration::Certs, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = integration::Certs::new(&dir.path().join("certs"));
    certs.issue("master", "m1");
    let data = dir.path().join("data").display().to_string();
    (dir, certs, data)
}

/// Runs `corral master` (certificate m1) with `extra` flags, asserts it exits with an error
/// rather than a panic, and returns its stderr.
fn master_refuses(certs: &integration::Certs, data: &str, extra: &[String]) -> String {
    let mut args: Vec<String> = ["master", "--listen", "127.0.0.1:0", "--data-dir", data]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(certs.flags("m1"));
    args.extend(extra.iter().cloned());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = corral(&refs, &[], Duration::from_secs(20));
    let err = stderr(&out);
    assert!(
        !out.status.success() && out.status.code() != Some(101) && !err.contains("panicked"),
        "{extra:?}: {:?}\n{err}",
        out.status
    );
    err
}

/// Raft timers that cannot work are refused before the master starts, naming the flag (or the
/// config key) and saying why; never a panic.
#[test]
fn a_master_refuses_unworkable_raft_timers_naming_the_flag() {
    let (dir, certs, data) = master_scratch();
    let file = dir.path().join("master.toml");
    std::fs::write(&file, "raft_election_timeout_secs = \"3-1\"\n").expect("write");
    let file = file.display().to_string();
    let hb = "--raft-heartbeat-secs";
    let el = "--raft-election-timeout-secs";
    for (flags, says) in [
        (vec![format!("{hb}=0")], "positive"),
        (vec![format!("{hb}=-1")], "positive"),
        (vec![format!("{hb}=1e300")], "too many"),
        (vec![format!("{hb}=inf")], "positive"),
        (vec![format!("{hb}=7200")], "an hour"),
        (vec![format!("{hb}=0.0001")], "0.001"),
        // The heartbeat alone, against the default election timeout (0.3-0.6 s).
        (vec![format!("{hb}=1")], "several heartbeats"),
        (vec![format!("{el}=2")], "MIN-MAX"),
        (vec![format!("{el}=0-1")], "positive"),
        (vec![format!("{el}=2-1")], "below MAX"),
        (vec![format!("{el}=1-1e300")], "too many"),
        (vec![format!("{el}=1-4000")], "an hour"),
        (
            vec![format!("{hb}=1"), format!("{el}=1.5-4")],
            "several heartbeats",
        ),
        // From the config file: named the same way.
        (vec!["--config".to_owned(), file.clone()], "below MAX"),
    ] {
        let err = master_refuses(&certs, &data, &flags);
        let named = if flags.iter().any(|f| f.starts_with(el) || f == "--config") {
            &el[2..]
        } else {
            &hb[2..]
        };
        assert!(
            err.contains(named) && err.contains(says),
            "{flags:?}: the error names {named} and says '{says}': {err}"
        );
    }
}

/// Out-of-range numbers in a master's flags are clear errors, not a panic: seconds beyond what
/// a duration holds, infinite or NaN.
#[test]
fn a_master_refuses_out_of_range_timeouts_with_a_clear_error() {
    let (dir, certs, data) = master_scratch();
    for (flag, value) in [
        ("--offer-timeout-secs", "1e300"),
        ("--offer-timeout-secs", "inf"),
        ("--offer-timeout-secs", "NaN"),
        ("--agent-timeout-secs", "1e300"),
        ("--agent-timeout-secs", "-1"),
    ] {
        let err = master_refuses(&certs, &data, &[format!("{flag}={value}")]);
        assert!(
            err.contains(&flag[2..]),
            "{flag} {value}: the error names the flag: {err}"
        );
    }
    // The agent's and `corral run`'s too.
    certs.issue("agent", "a1");
    certs.issue("framework", "fw");
    let work = dir.path().join("work").display().to_string();
    let agent = [
        "agent",
        "--master",
        "127.0.0.1:9",
        "--work-dir",
        work.as_str(),
    ];
    for (cert, words, flag) in [
        ("a1", &agent[..], "--status-update-retry-secs=1e300"),
        ("a1", &agent[..], "--sandbox-gc-age-secs=inf"),
        (
            "fw",
            &["run", "--master", "127.0.0.1:9"][..],
            "--placement-timeout=1e300",
        ),
    ] {
        let mut args: Vec<String> = words.iter().map(|s| s.to_string()).collect();
        args.extend(certs.flags(cert));
        args.push(flag.to_owned());
        if cert == "fw" {
            args.extend(["--".to_owned(), "true".to_owned()]);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = corral(&refs, &[], Duration::from_secs(20));
        let err = stderr(&out);
        let name = flag
            .trim_start_matches("--")
            .split('=')
            .next()
            .unwrap_or_default();
        assert!(
            !out.status.success() && out.status.code() != Some(101) && err.contains(name),
            "{flag}: {:?}\n{err}",
            out.status
        );
    }
}

#[test]
fn state_shows_the_agents_node_pressure() {
    let mut c = Cluster::start_master(&[]);
    c.start_agent("a1", &["--resources", "cpus:2;mem:1GiB"]);
    let agent_pressure = |s: &serde_json::Value| s["agents"][0]["pressure"].clone();
    if std::fs::read_to_string("/proc/pressure/memory").is_err() {
        // PSI off in this kernel: the agent still registers and reports, without pressure.
        eprintln!("skipping the pressure check: this kernel has no readable /proc/pressure");
        let s = c.wait_state("agent a1", |s| s["agents"][0]["hostname"] == "a1");
        assert!(agent_pressure(&s).is_null(), "{s:#}");
        return;
    }
    // Sent with the usage report at every agent heartbeat, even with no task running.
    let s = c.wait_state("the agent's pressure", |s| agent_pressure(s).is_object());
    let p = agent_pressure(&s);
    for key in [
        "cpu_some_avg10",
        "memory_some_avg10",
        "memory_full_avg10",
        "io_some_avg10",
        "io_full_avg10",
    ] {
        let v = p[key].as_u64();
        assert!(
            v.is_some_and(|v| v <= 10_000),
            "{key}: hundredths of a percent, at most 100 %: {p:#}"
        );
    }
    let out = c.client("op", &["state"], RUN_TIMEOUT);
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.contains(" a1 "))
        .unwrap_or_default();
    assert!(
        line.contains("psi cpu ") && line.contains("% mem ") && line.contains("% io "),
        "{text}"
    );
}
