//! Tenants on one agent cannot see each other's files: a task of one framework, running as the
//! same default user as a task of another, can read neither that task's sandbox (stdout, files),
//! /dev/shm or /var/tmp, nor the agent's checkpoints and other state under the work directory,
//! and sees the cgroup filesystem read-only. Its own sandbox works at the same path as before.
//! Outside any container, another user can list neither the sandboxes nor the agent's state,
//! while the task's own user still reaches its sandbox by its path (as a task started by an
//! older agent, without a view, does).

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
            "echo secret-stdout-of-alpha; echo secret-shm-of-alpha > /dev/shm/alpha-shm; \
             echo secret-var-tmp-of-alpha > /var/tmp/alpha-var-tmp; \
             chmod 644 /dev/shm/alpha-shm /var/tmp/alpha-var-tmp; \
             echo secret-file-of-alpha > \"$CORRAL_SANDBOX/secret.txt\"; \
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
try cat /dev/shm/alpha-shm
try cat /var/tmp/alpha-var-tmp
ls /dev/shm /var/tmp | grep -q alpha && echo "LEAK: alpha's files in /dev/shm or /var/tmp"
echo own-shm > /dev/shm/beta-shm && cat /dev/shm/beta-shm || echo "BROKEN: /dev/shm"
echo own-var-tmp > /var/tmp/beta-var-tmp && cat /var/tmp/beta-var-tmp || echo "BROKEN: /var/tmp"
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
    assert!(
        b_out.contains("own-shm") && b_out.contains("own-var-tmp"),
        "{b_out}"
    );
    assert!(!b_out.contains("secret"), "{b_out}");
    // Neither tenant's /dev/shm or /var/tmp files reached the host's; A's /var/tmp is in its
    // sandbox.
    for p in [
        "/dev/shm/alpha-shm",
        "/var/tmp/alpha-var-tmp",
        "/dev/shm/beta-shm",
        "/var/tmp/beta-var-tmp",
    ] {
        assert!(!std::path::Path::new(p).exists(), "{p} is on the host");
    }
    assert_eq!(
        std::fs::read_to_string(a_sandbox.join("var-tmp/alpha-var-tmp")).expect("in var-tmp"),
        "secret-var-tmp-of-alpha\n"
    );

    // B's file is on disk in its sandbox, and `corral logs` (the agent reads as root) still
    // shows a task's output.
    // (On disk: the finished task may already have left the master's state with its framework.)
    let b_sandbox = std::fs::read_dir(work.join("sandboxes"))
        .expect("sandboxes")
        .flatten()
        .flat_map(|fw| std::fs::read_dir(fw.path()).into_iter().flatten().flatten())
        .map(|sb| sb.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("beta"))
        })
        .expect("beta's sandbox");
    assert_eq!(
        std::fs::read_to_string(b_sandbox.join("var-tmp/beta-var-tmp")).expect("in var-tmp"),
        "own-var-tmp\n"
    );
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
    assert_eq!(mode(&work), 0o711, "work dir");
    assert_eq!(mode(&work.join("sandboxes")), 0o711, "sandboxes");
    assert_eq!(
        mode(&work.join("sandboxes").join(&a_fw)),
        0o711,
        "sandboxes/FW"
    );
    assert_eq!(mode(&work.join("meta")), 0o700, "meta");
    assert_eq!(mode(&work.join("containers")), 0o700, "containers");
    assert_eq!(mode(&work.join("agent_id")), 0o600, "agent_id");
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

    // Outside any container: another user lists nothing and reads no agent state; the task's
    // own user (nobody) still reaches its sandbox by its path, as a task an older agent
    // started does after an upgrade, but lists nothing either.
    let checkpoint = std::fs::read_dir(work.join("meta/tasks"))
        .expect("meta/tasks")
        .next()
        .expect("a checkpoint")
        .expect("entry")
        .path();
    let containers = std::fs::read_dir(work.join("containers"))
        .expect("containers")
        .next()
        .expect("a container run dir")
        .expect("entry")
        .path();
    // (std drops the supplementary groups when it sets the uid as root.)
    let outside = |uid: u32, script: &str| -> String {
        use std::os::unix::process::CommandExt;
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .uid(uid)
            .gid(uid)
            .current_dir("/")
            .output()
            .expect("run sh as another user");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let probes = format!(
        r#"
try() {{ if "$@" >/dev/null 2>&1; then echo "LEAK: $*"; fi; }}
try ls {w}
try ls {w}/sandboxes
try ls {w}/sandboxes/{a_fw}
try ls {w}/meta
try cat {cp}
try cat {w}/agent_id
try ls {w}/containers
try cat {ctr}/spec.json
echo probes-done
"#,
        cp = checkpoint.display(),
        ctr = containers.display(),
    );
    for uid in [nobody.uid.as_raw(), 54_321] {
        let out = outside(uid, &probes);
        assert!(out.contains("probes-done"), "uid {uid}: {out}");
        assert!(
            !out.contains("LEAK"),
            "uid {uid} outside a container: {out}"
        );
    }
    let own = outside(
        nobody.uid.as_raw(),
        &format!("cat {a_sb}/stdout && ls {a_sb} >/dev/null && echo reached"),
    );
    assert!(
        own.contains("secret-stdout-of-alpha") && own.contains("reached"),
        "the task user cannot reach its sandbox by path: {own}"
    );
    let other = outside(54_321, &format!("cat {a_sb}/stdout || echo denied"));
    assert!(
        other.contains("denied") && !other.contains("secret"),
        "{other}"
    );

    let kill = c.client("op", &["kill", &a_id], T);
    assert!(kill.status.success(), "{}", stderr(&kill));
    let _ = wait_child(a, T);
}
