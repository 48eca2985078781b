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

/// A framework that floods the master with calls gets "rate limited" errors (its session
/// stays), while another framework's `corral run` is served meanwhile.
#[test]
fn a_framework_over_its_call_rate_is_rate_limited_and_others_are_served() {
    use framework::{Scheduler, SchedulerEvent};
    use proto::{FrameworkCall, FrameworkEvent};
    transport::install_crypto_provider();
    let mut c = Cluster::start_master(&[
        "--framework-calls-per-second",
        "20",
        "--framework-call-burst",
        "20",
    ]);
    c.start_agent("a1", &[]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("rt");
    let mut flooder = rt.block_on(async {
        let opts = c.client_options("fw");
        let s = Scheduler::subscribe(opts, framework::framework_info("flood"))
            .await
            .expect("subscribe");
        // No offers for it: the agent's go to the other framework.
        let suppress = FrameworkCall::Suppress { roles: vec![] };
        s.call(suppress).await.expect("suppress");
        for _ in 0..200 {
            let noop = FrameworkCall::Decline {
                offer_ids: vec![],
                filters: None,
            };
            s.call(noop).await.expect("queue a call");
        }
        s
    });
    let limited = rt.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut limited = 0;
        while limited < 150 {
            let ev = tokio::time::timeout_at(deadline, flooder.next_event()).await;
            match ev {
                Ok(Some(SchedulerEvent::Framework(FrameworkEvent::Error { message }))) => {
                    assert!(message.contains("rate limited"), "{message}");
                    assert!(message.contains("principal 'fw'"), "{message}");
                    limited += 1;
                }
                Ok(Some(SchedulerEvent::Terminated { reason })) => panic!("ended: {reason}"),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        limited
    });
    // 202 calls in far less than a second at 20/s with a burst of 20: most are refused.
    assert!(limited >= 150, "only {limited} calls were rate limited");
    let out = c.client("fw2", &["run", "--", "echo", "served"], T);
    assert!(out.status.success(), "fw2: {}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "served");
    drop(flooder);
    drop(rt);
}

/// `[policy.NAME]` in the master's config file gives a new cluster its policy.
#[test]
fn the_master_config_file_seeds_the_policy() {
    let conf = shared_dir("policy-conf-");
    let file = conf.path().join("master.toml");
    std::fs::write(&file, "[policy.batch]\nroles = [\"prod\"]\n").expect("write master.toml");
    let mut c = Cluster::start_master(&["--config", file.to_str().expect("utf-8")]);
    c.certs.issue("framework", "batch");
    c.start_agent("a1", &[]);
    let out = run_as_batch(&c, &["--role", "prod"], "echo seeded");
    assert!(out.status.success(), "seeded rule: {}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "seeded");
    let shown = c.client("op", &["policy", "show"], T);
    let text = stdout(&shown);
    assert!(shown.status.success(), "{}", stderr(&shown));
    let batch = text.lines().find(|l| l.starts_with("batch")).expect(&text);
    assert!(batch.contains("prod"), "{text}");
}
