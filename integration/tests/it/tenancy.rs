//! Tenants on one agent cannot see each other's files: a task of one framework, running as the
//! same default user as a task of another, can read neither that task's sandbox (stdout, files)
//! nor the agent's checkpoints and other state under the work directory, and sees the cgroup
//! filesystem read-only. Its own sandbox works at the same path as before.

use integration::{is_root, stderr, stdout, wait_child, Cluster};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

fn state(c: &Cluster) -> serde_json::Value {
    let out = c.client("op", &["state", "--json"], T);
    assert!(out.status.success(), "state: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("state is JSON")
}

/// The id and framework id of the task whose id starts with `prefix`, once it runs.
fn running_task(c: &Cluster, prefix: &str) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = state(c);
        let found = s["tasks"].as_array().and_then(|ts| {
            ts.iter().find(|t| {
                t["id"].as_str().is_some_and(|id| id.starts_with(prefix)) && t["state"] == "Running"
            })
        });
        if let Some(t) = found {
            return (
                t["id"].as_str().expect("id").to_owned(),
                t["framework_id"].as_str().expect("framework id").to_owned(),
            );
        }
        assert!(Instant::now() < deadline, "{prefix} never ran:\n{s:#}");
        std::thread::sleep(Duration::from_millis(150));
    }
}

#[test]
fn a_task_cannot_read_another_frameworks_sandbox_or_the_agents_state() {
    if !is_root() {
        eprintln!("skipping: tasks run as another user (and in namespaces) only as root");
        return;
    }
    let mut c = Cluster::start_master(&[]);
    c.start_agent("a1", &["--resources", "cpus:2;mem:1GiB"]);
    let work = c.dir.path().join("agent-a1");

    // Tenant A: writes a secret to its stdout and to a file in its sandbox, then stays up.
    let a = c.spawn_client(
        "fw",
        &[
            "run",
            "--name",
            "alpha",
            "--",
            "echo secret-stdout-of-alpha; echo secret-file-of-alpha > \"$CORRAL_SANDBOX/secret.txt\"; \
             chmod 644 \"$CORRAL_SANDBOX/secret.txt\"; sleep 120",
        ],
    );
    let (a_id, a_fw) = running_task(&c, "alpha");
    let a_sandbox = work.join("sandboxes").join(&a_fw).join(&a_id);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !a_sandbox.join("secret.txt").exists() {
        assert!(Instant::now() < deadline, "alpha never wrote its file");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Tenant B (another framework, same default user): every read of what is not its own must
    // fail; each success prints a LEAK line. Its own sandbox must work.
    let a_sb = a_sandbox.display().to_string();
    let w = work.display().to_string();
    let script = format!(
        r#"
try() {{ if "$@" >/dev/null 2>&1; then echo "LEAK: $*"; fi; }}
try cat {a_sb}/stdout
try cat {a_sb}/secret.txt
try ls {a_sb}
try ls {w}/sandboxes/{a_fw}
try ls {w}/meta/tasks
try cat {w}/meta/tasks/*
try ls {w}/containers
try cat {w}/agent_id
for f in {w}/sandboxes/*/*/stdout {w}/sandboxes/*/*/secret.txt; do
  case "$f" in "$CORRAL_SANDBOX"/*) ;; *) try cat "$f" ;; esac
done
try mkdir /sys/fs/cgroup/corral-tenancy-probe
top=$(awk '$5 == "/sys/fs/cgroup" {{ o = $6 }} END {{ print o }}' /proc/self/mountinfo)
case "$top" in ro,*|ro|"") ;; *) echo "LEAK: /sys/fs/cgroup is mounted $top" ;; esac
echo own-file-content > "$CORRAL_SANDBOX/mine.txt" || echo "BROKEN: cannot write own sandbox"
cat "$CORRAL_SANDBOX/mine.txt" || echo "BROKEN: cannot read own sandbox"
cd "$CORRAL_SANDBOX" && [ "$(pwd)" = "$CORRAL_SANDBOX" ] || echo "BROKEN: cwd"
echo /tmp-works > /tmp/probe && cat /tmp/probe
echo beta-done
"#
    );
    let out = c.client("fw2", &["run", "--name", "beta", "--", &script], T);
    let b_out = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}\n{b_out}", stderr(&out));
    assert!(b_out.contains("beta-done"), "{b_out}\n{}", stderr(&out));
    assert!(
        !b_out.contains("LEAK") && !b_out.contains("BROKEN"),
        "tenant B saw what is not its own:\n{b_out}"
    );
    assert!(b_out.contains("own-file-content"), "{b_out}");
    assert!(b_out.contains("/tmp-works"), "{b_out}");
    assert!(!b_out.contains("secret"), "{b_out}");

    // B's file is on disk in its sandbox, and `corral logs` (the agent reads as root) still
    // shows a task's output.
    let s = state(&c);
    let b = s["tasks"]
        .as_array()
        .and_then(|ts| {
            ts.iter()
                .find(|t| t["id"].as_str().is_some_and(|i| i.starts_with("beta")))
        })
        .expect("beta in state");
    let b_sandbox = work
        .join("sandboxes")
        .join(b["framework_id"].as_str().expect("fw"))
        .join(b["id"].as_str().expect("id"));
    assert_eq!(
        std::fs::read_to_string(b_sandbox.join("mine.txt")).expect("beta's file on disk"),
        "own-file-content\n"
    );
    // (`corral run` printed B's output above through the same ReadLog call.)
    let logs = c.client("op", &["logs", &a_id], T);
    assert!(
        stdout(&logs).contains("secret-stdout-of-alpha"),
        "{}",
        stderr(&logs)
    );

    // On disk: the work dir and checkpoints are root's alone, sandboxes the task user's.
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode(&work), 0o700, "work dir");
    assert_eq!(mode(&work.join("meta")), 0o700, "meta");
    for entry in std::fs::read_dir(work.join("meta/tasks")).expect("meta/tasks") {
        let p = entry.expect("entry").path();
        assert_eq!(mode(&p) & 0o077, 0, "checkpoint {} is 0600", p.display());
    }
    assert_eq!(
        mode(&a_sandbox) & 0o007,
        0,
        "sandbox has no access for others"
    );
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("getpwnam")
        .expect("nobody");
    let md = std::fs::metadata(&a_sandbox).expect("sandbox");
    assert_eq!(
        md.uid(),
        nobody.uid.as_raw(),
        "sandbox owned by the task user"
    );
    for f in ["stdout", "stderr"] {
        let p = a_sandbox.join(f);
        assert_eq!(mode(&p) & 0o007, 0, "{f} has no access for others");
        assert_eq!(std::fs::metadata(&p).expect(f).uid(), nobody.uid.as_raw());
    }

    let kill = c.client("op", &["kill", &a_id], T);
    assert!(kill.status.success(), "{}", stderr(&kill));
    let _ = wait_child(a, T);
}
