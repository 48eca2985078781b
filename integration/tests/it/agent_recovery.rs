//! The agent survives its own restart: tasks keep running, are re-attached, and their final
//! state is reported exactly once; nothing is launched twice.

use integration::{is_root, stderr, wait_child, Cluster};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

fn skip_unless_root(test: &str) -> bool {
    if !is_root() {
        eprintln!("skipping {test}: re-attaching to containers needs cgroups, which need root");
        return true;
    }
    false
}

fn marker_dir(c: &Cluster) -> std::path::PathBuf {
    let dir = c.dir.path().join("markers");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    dir
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn a_task_survives_kill_9_of_its_agent_and_finishes_once() {
    if skip_unless_root("a_task_survives_kill_9_of_its_agent_and_finishes_once") {
        return;
    }
    let mut c = Cluster::start_master(&[]);
    let a = c.start_agent("a1", &["--resources", "cpus:2;mem:1GiB"]);
    let marker = marker_dir(&c).join("starts");
    let cmd = format!("echo started >> {}; sleep 6; echo done", marker.display());
    let run = c.spawn_client("fw", &["run", "--", &cmd]);
    c.agents[a].wait_for_log("state=TASK_RUNNING", Duration::from_secs(30));
    c.agents[a].kill();
    std::thread::sleep(Duration::from_millis(500));
    c.restart_agent(a);
    c.agents[a].wait_for_log("re-attached to a running task", Duration::from_secs(10));
    let out = wait_child(run, Duration::from_secs(60));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{err}");
    assert_eq!(count(&err, "TASK_FINISHED"), 1, "stderr:\n{err}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("done"),
        "the task ran to its end"
    );
    let starts = std::fs::read_to_string(&marker).expect("marker");
    assert_eq!(
        starts.lines().count(),
        1,
        "the task was launched more than once: {starts:?}"
    );
}

#[test]
fn a_task_that_ends_while_its_agent_is_down_is_reported_after_the_restart() {
    if skip_unless_root("a_task_that_ends_while_its_agent_is_down_is_reported_after_the_restart") {
        return;
    }
    let mut c = Cluster::start_master(&[]);
    let a = c.start_agent(
        "a1",
        &[
            "--resources",
            "cpus:2;mem:1GiB",
            "--status-update-retry-secs",
            "1",
        ],
    );
    let marker = marker_dir(&c).join("starts");
    let cmd = format!("echo started >> {}; sleep 2; exit 4", marker.display());
    let run = c.spawn_client("fw", &["run", "--", &cmd]);
    c.agents[a].wait_for_log("state=TASK_RUNNING", Duration::from_secs(30));
    c.agents[a].kill();
    // Longer than the task and than several status-update retries.
    std::thread::sleep(Duration::from_secs(5));
    c.restart_agent(a);
    let out = wait_child(run, Duration::from_secs(60));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "stderr:\n{err}");
    assert_eq!(count(&err, "TASK_FAILED"), 1, "stderr:\n{err}");
    let starts = std::fs::read_to_string(&marker).expect("marker");
    assert_eq!(
        starts.lines().count(),
        1,
        "the task was launched more than once: {starts:?}"
    );
}

#[test]
fn a_corrupt_checkpoint_is_set_aside_and_the_agent_keeps_running() {
    let mut c = Cluster::start_master(&[]);
    let a = c.start_agent("a1", &["--resources", "cpus:2;mem:1GiB"]);
    let meta = c.dir.path().join("agent-a1/meta/tasks");
    std::fs::create_dir_all(&meta).expect("mkdir");
    std::fs::write(meta.join("fw.bogus.json"), b"{ this is not json").expect("write");
    c.restart_agent(a);
    c.agents[a].wait_for_log("skipping a corrupt checkpoint", Duration::from_secs(10));
    assert!(
        meta.join("fw.bogus.corrupt").exists(),
        "the corrupt file was set aside"
    );
    let out = c.client("fw", &["run", "--", "true"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", stderr(&out));
}

/// Finds the memory cgroup directory of the task whose id starts with `name` (v1 or v2).
fn memory_limit_file(name: &str) -> Option<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, needle: &str, depth: usize) -> Option<std::path::PathBuf> {
        if depth > 8 {
            return None;
        }
        for e in std::fs::read_dir(dir).ok()?.flatten() {
            let p = e.path();
            if !p.is_dir() {
                continue;
            }
            let n = e.file_name().to_string_lossy().into_owned();
            if n.contains(needle) {
                for f in ["memory.max", "memory.limit_in_bytes"] {
                    if p.join(f).exists() {
                        return Some(p.join(f));
                    }
                }
            }
            if let Some(found) = walk(&p, needle, depth + 1) {
                return Some(found);
            }
        }
        None
    }
    let root = std::path::Path::new("/sys/fs/cgroup");
    let mem = if root.join("memory").is_dir() {
        root.join("memory")
    } else {
        root.to_path_buf()
    };
    walk(&mem, &format!(".{name}-"), 0)
}

#[test]
fn limits_changed_while_the_agent_was_down_are_restored_after_its_restart() {
    if skip_unless_root("limits_changed_while_the_agent_was_down_are_restored_after_its_restart") {
        return;
    }
    let mut c = Cluster::start_master(&[]);
    let a = c.start_agent("a1", &["--resources", "cpus:2;mem:1GiB"]);
    // A name no other run (or leftover) has.
    let name = format!("drift{}", std::process::id());
    let run = c.spawn_client(
        "fw",
        &["run", "--name", &name, "--mem", "64MiB", "--", "sleep 5"],
    );
    c.agents[a].wait_for_log("state=TASK_RUNNING", Duration::from_secs(30));
    let file = memory_limit_file(&name).expect("the task's memory limit file");
    let before = std::fs::read_to_string(&file).expect("read limit");
    assert_eq!(before.trim(), (64u64 << 20).to_string());
    c.agents[a].kill();
    // Something else (systemd's daemon-reload, an operator) resets the limit meanwhile.
    std::fs::write(&file, "33554432").expect("change the limit");
    c.restart_agent(a);
    c.agents[a].wait_for_log("restored it", Duration::from_secs(20));
    let after = std::fs::read_to_string(&file).expect("read limit");
    assert_eq!(after.trim(), before.trim(), "the agent restored the limit");
    let out = wait_child(run, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", stderr(&out));
}
