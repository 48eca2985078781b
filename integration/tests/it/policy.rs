//! The authorization policy through `corral` (issue 14): which roles a framework certificate
//! may subscribe with and which users its tasks may run as, changed with `corral policy`, kept
//! across a leader failover.

use integration::{shared_dir, stderr, stdout, Cluster};
use std::path::Path;
use std::time::Duration;

const T: Duration = Duration::from_secs(90);

/// `corral run` as the certificate `batch` with `extra` flags, running `sh -c script`.
fn run_as_batch(c: &Cluster, extra: &[&str], script: &str) -> std::process::Output {
    let mut args = vec!["run", "--placement-timeout", "20"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "/bin/sh", "-c", script]);
    c.client("batch", &args, T)
}

fn policy_set(c: &Cluster, args: &[&str]) {
    let mut full = vec!["policy", "set"];
    full.extend_from_slice(args);
    let out = c.client("op", &full, T);
    assert!(out.status.success(), "policy set: {}", stderr(&out));
}

fn assert_refused_subscribe(out: &std::process::Output, rule: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(125), "refused: {err}");
    for needle in ["principal 'batch'", "role 'prod'", rule] {
        assert!(err.contains(needle), "missing {needle:?} in: {err}");
    }
}

#[test]
fn a_framework_uses_only_the_roles_and_users_the_policy_allows() {
    let mut c = Cluster::start_master(&[]);
    c.certs.issue("framework", "batch");
    c.start_agent("a1", &[]);
    let marks = shared_dir("policy-");
    let mark = |name: &str| marks.path().join(name);
    let touch = |name: &str| format!("touch {}", mark(name).display());

    // The default rule: `*` and `batch` only.
    let out = run_as_batch(&c, &["--role", "prod"], &touch("prod-refused"));
    assert_refused_subscribe(&out, "default rule");
    assert!(!mark("prod-refused").exists());
    let out = run_as_batch(&c, &["--role", "batch"], &touch("own-role"));
    assert!(out.status.success(), "own role: {}", stderr(&out));
    assert!(mark("own-role").exists(), "a task of an allowed role ran");

    // An operator allows `prod`.
    policy_set(&c, &["batch", "--roles", "prod,batch"]);
    let shown = c.client("op", &["policy", "show", "--json"], T);
    assert!(shown.status.success(), "policy show: {}", stderr(&shown));
    let view: serde_json::Value = serde_json::from_slice(&shown.stdout).expect("JSON");
    assert_eq!(
        view["rules"]["batch"]["roles"],
        serde_json::json!(["batch", "prod"])
    );
    let out = run_as_batch(&c, &["--role", "prod"], &touch("prod-allowed"));
    assert!(out.status.success(), "allowed prod: {}", stderr(&out));
    assert!(mark("prod-allowed").exists());

    // Users: root and any user not listed are refused with TASK_ERROR, and nothing runs.
    for user in ["root", "daemon"] {
        let name = format!("as-{user}");
        let flags = ["--role", "prod", "--user", user, "--name", &name];
        let out = run_as_batch(&c, &flags, &touch(&name));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(125), "{user}: {err}");
        for needle in [
            "TASK_ERROR",
            "TaskUnauthorized",
            &format!("user '{user}'"),
            "policy rule for 'batch'",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in: {err}");
        }
        assert!(
            !mark(&name).exists(),
            "a task refused as {user} must not run"
        );
    }
    // The master recorded no task of those launches (task ids start with the name).
    let state = c.state_json();
    let tasks = state["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 2, "only the two allowed tasks: {state:#}");
    assert!(
        tasks
            .iter()
            .all(|t| !t["id"].as_str().unwrap_or("").starts_with("as-")),
        "{state:#}"
    );
    check_marks_dir(marks.path());
}

/// The marker directory held only what allowed tasks wrote.
fn check_marks_dir(dir: &Path) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read marks")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["own-role", "prod-allowed"]);
}

#[test]
fn the_policy_survives_a_leader_failover() {
    let mut c = Cluster::start_replicated(3);
    c.certs.issue("framework", "batch");
    c.start_agent("a1", &[]);
    policy_set(&c, &["batch", "--roles", "prod"]);
    let leader = c.wait_for_leader(T);
    c.master_daemon(leader).kill();
    let new = c.wait_for_leader(T);
    assert_ne!(new, leader);
    let out = run_as_batch(&c, &["--role", "prod"], "echo allowed");
    assert!(out.status.success(), "after failover: {}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "allowed");
    // The rule replaced the default for `batch`: its own role is no longer allowed.
    let out = run_as_batch(&c, &["--role", "batch"], "true");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("policy rule for 'batch'"), "{err}");
}
