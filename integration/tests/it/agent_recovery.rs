//! The agent survives its own restart: tasks keep running, are re-attached, and their final
//! state is reported exactly once; nothing is launched twice.

use integration::{is_root, stderr, wait_child, Cluster};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

fn skip_unless_root(test: &str) -> bool {
    if !is_root() {
        eprintln!("skipping {test}: re-attaching to containers needs cgroups, which need root");
        return true;
    }
    false
}

pub(crate) fn marker_dir(c: &Cluster) -> std::path::PathBuf {
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
    c.restart_agent(a);
    reattached_and_finished_once(&c, a, run, &marker);
}

/// Agent `a` (just restarted) re-attaches the task of `run`, which then ends with "done" and is
/// reported TASK_FINISHED exactly once, having started once (a line in `marker` per start).
pub(crate) fn reattached_and_finished_once(
    c: &Cluster,
    a: usize,
    run: std::process::Child,
    marker: &std::path::Path,
) {
    c.agents[a].wait_for_log("re-attached to a running task", Duration::from_secs(10));
    let out = wait_child(run, Duration::from_secs(60));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{err}");
    assert_eq!(count(&err, "TASK_FINISHED"), 1, "stderr:\n{err}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("done"),
        "the task ran to its end"
    );
    let starts = std::fs::read_to_string(marker).expect("marker");
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
    let ended = marker_dir(&c).join("ended");
    let cmd = format!(
        "echo started >> {}; sleep 2; echo ended > {}; exit 4",
        marker.display(),
        ended.display()
    );
    let run = c.spawn_client("fw", &["run", "--", &cmd]);
    c.agents[a].wait_for_log("state=TASK_RUNNING", Duration::from_secs(30));
    c.agents[a].kill();
    // The task ends while its agent is down.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ended.exists() {
        assert!(Instant::now() < deadline, "the task never ended");
        std::thread::sleep(Duration::from_millis(50));
    }
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

/// The agent died after the task's container started but before it checkpointed the
/// container's record (the window between the clone and that write; the soak hit it): the
/// restarted agent finds the container by its id, re-attaches, and reports how the task really
/// ended, not "not started". The window is made exact by taking the record out of the checkpoint.
#[test]
fn a_container_started_before_its_record_was_saved_is_found_after_a_restart() {
    if skip_unless_root("a_container_started_before_its_record_was_saved_is_found_after_a_restart")
    {
        return;
    }
    let mut c = Cluster::start_master(&[]);
    let a = c.start_agent("a1", &["--resources", "cpus:2;mem:1GiB"]);
    let marker = marker_dir(&c).join("starts");
    let release = marker_dir(&c).join("release");
    let cmd = format!(
        "echo started >> {}; while [ ! -e {} ]; do sleep 0.1; done; echo done; exit 5",
        marker.display(),
        release.display()
    );
    let run = c.spawn_client("fw", &["run", "--", &cmd]);
    c.agents[a].wait_for_log("state=TASK_RUNNING", Duration::from_secs(30));
    c.agents[a].kill();
    let meta = c.dir.path().join("agent-a1/meta/tasks");
    let mut edited = 0;
    for entry in std::fs::read_dir(&meta).expect("checkpoints").flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "json") {
            let mut cp: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
            assert!(cp["container"].is_object(), "no container record: {cp:#}");
            cp["container"] = serde_json::Value::Null;
            std::fs::write(&path, serde_json::to_vec(&cp).expect("json")).expect("write");
            edited += 1;
        }
    }
    assert_eq!(edited, 1, "one task checkpoint in {}", meta.display());
    c.restart_agent(a);
    c.agents[a].wait_for_log(
        "found the container of a task whose record the agent never saved",
        Duration::from_secs(10),
    );
    std::fs::write(&release, "").expect("release the task");
    let out = wait_child(run, Duration::from_secs(60));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "stderr:\n{err}");
    assert_eq!(count(&err, "TASK_FAILED"), 1, "stderr:\n{err}");
    assert!(!err.contains("not started"), "stderr:\n{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("done"));
    let starts = std::fs::read_to_string(&marker).expect("marker");
    assert_eq!(
        starts.lines().count(),
        1,
        "started more than once: {starts:?}"
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

#[test]
fn changing_an_agents_resources_keeps_its_id_and_its_running_tasks() {
    if skip_unless_root("changing_an_agents_resources_keeps_its_id_and_its_running_tasks") {
        return;
    }
    let mut c = Cluster::start_master(&[]);
    let a = c.start_agent(
        "a1",
        &["--resources", "cpus:2;mem:1GiB", "--attributes", "rack:r1"],
    );
    let run = c.spawn_client(
        "fw",
        &[
            "run",
            "--name",
            "keeper",
            "--cpus",
            "1",
            "--",
            "sleep 4; echo kept",
        ],
    );
    c.agents[a].wait_for_log("state=TASK_RUNNING", Duration::from_secs(30));
    let id_before =
        std::fs::read_to_string(c.dir.path().join("agent-a1/agent_id")).expect("agent id");
    c.agents[a].kill();
    // The operator grows the node and changes an attribute: the agent re-registers.
    c.restart_agent_with(
        a,
        &[
            ("--resources", "cpus:3;mem:2GiB"),
            ("--attributes", "rack:r2"),
        ],
    );
    let id_after =
        std::fs::read_to_string(c.dir.path().join("agent-a1/agent_id")).expect("agent id");
    assert_eq!(id_before, id_after, "the agent id is stable");
    let out = wait_child(run, Duration::from_secs(60));
    assert_eq!(
        out.status.code(),
        Some(0),
        "the task kept running: {}",
        stderr(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("kept"));
    let state = c.client("op", &["state", "--json"], Duration::from_secs(30));
    let v: serde_json::Value = serde_json::from_slice(&state.stdout).expect("json");
    assert_eq!(
        v["agents"].as_array().map(|a| a.len()),
        Some(1),
        "one agent, not two: {v:#}"
    );
    assert_eq!(v["agents"][0]["total"]["cpus_milli"], 3000, "{v:#}");
    assert_eq!(v["agents"][0]["attributes"]["rack"], "r2", "{v:#}");
}

#[test]
fn an_unusable_work_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write");
    let c = Cluster::start_master(&[]);
    c.certs.issue("agent", "bad");
    let mut args: Vec<String> = vec![
        "agent".into(),
        "--master".into(),
        c.master_addr.to_string(),
        "--work-dir".into(),
        file.display().to_string(),
    ];
    args.extend(c.certs.flags("bad"));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = integration::corral(&refs, &[], Duration::from_secs(30));
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(
        err.contains("work directory") && err.contains("not-a-dir"),
        "{err}"
    );
}

#[test]
fn a_container_no_checkpoint_names_is_destroyed_when_the_agent_restarts() {
    if skip_unless_root("a_container_no_checkpoint_names_is_destroyed_when_the_agent_restarts") {
        return;
    }
    let mut c = Cluster::start_master(&[]);
    let a = c.start_agent("a1", &["--resources", "cpus:2;mem:1GiB"]);
    let run = c.spawn_client("fw", &["run", "--", "sleep 60"]);
    c.agents[a].wait_for_log("state=TASK_RUNNING", Duration::from_secs(30));
    c.agents[a].kill();
    // What an agent killed between the clone and the first checkpoint leaves: a running
    // container in its cgroup subtree and run dir that no checkpoint names. Made here through
    // the isolation API with the agent's own layout (this process shares the agent's cgroup).
    let work = c.dir.path().join("agent-a1");
    let parent = format!(
        "{}-a1",
        c.dir
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
    );
    let mut cfg = isolation::IsolatorConfig::new(integration::corral_bin(), vec!["__init".into()]);
    cfg.cgroup_parent = Some(parent);
    cfg.run_root = work.join("containers");
    cfg.sandbox_root = Some(work.join("sandboxes"));
    let iso = isolation::Isolator::new(cfg).expect("the agent's isolator layout");
    let sandbox = work.join("sandboxes/orphan");
    std::fs::create_dir_all(&sandbox).expect("sandbox");
    let mut spec = isolation::ContainerSpec::new(vec!["/bin/sleep".into(), "300".into()], sandbox);
    // As the agent's own specs: the (0700) work directory hidden, the sandbox bound back.
    spec.view.hidden = vec![work.clone()];
    let orphan = iso.launch("fw.orphan", &spec).expect("launch the orphan");
    let pid = orphan.pid();
    let cgroups: Vec<_> = orphan.cgroup_paths().into_values().collect();
    drop(orphan);
    assert!(
        iso.container_ids().expect("ids").len() >= 2,
        "task and orphan"
    );

    c.restart_agent(a);
    c.agents[a].wait_for_log("re-attached to a running task", Duration::from_secs(10));
    c.agents[a].wait_for_log(
        "destroyed a container that no checkpoint names",
        Duration::from_secs(20),
    );
    // Its init was this process's child: reap it, then nothing of it is left.
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err(),
        "the orphan's init still runs"
    );
    for cg in &cgroups {
        assert!(!cg.exists(), "cgroup {} left behind", cg.display());
    }
    assert!(
        !work.join("containers/fw.orphan").exists(),
        "the orphan's run dir is left"
    );
    // The checkpointed task was not touched.
    let ids = iso.container_ids().expect("ids");
    assert_eq!(ids.len(), 1, "only the real task is left: {ids:?}");
    let mut run = run;
    assert!(
        run.try_wait().expect("try_wait").is_none(),
        "the real task kept running"
    );
    let _ = run.kill();
    let _ = run.wait();
}

#[test]
fn an_agent_restarted_with_less_than_its_tasks_use_keeps_them_and_offers_nothing_until_they_end() {
    if skip_unless_root("an_agent_restarted_with_less_than_its_tasks_use_keeps_them") {
        return;
    }
    let mut c = Cluster::start_master(&[]);
    let a = c.start_agent("a1", &["--resources", "cpus:2;mem:1GiB"]);
    let marker = marker_dir(&c).join("go");
    let cmd = format!(
        "while [ ! -e {} ]; do sleep 0.2; done; echo kept",
        marker.display()
    );
    let big = c.spawn_client(
        "fw",
        &[
            "run", "--name", "big", "--cpus", "1", "--mem", "512MiB", "--", &cmd,
        ],
    );
    c.agents[a].wait_for_log("state=TASK_RUNNING", Duration::from_secs(30));
    c.agents[a].kill();
    // The operator shrinks the node below what already runs on it.
    c.restart_agent_with(a, &[("--resources", "cpus:0.5;mem:256MiB")]);
    c.agents[a].wait_for_log("re-attached to a running task", Duration::from_secs(10));
    c.agents[a].wait_for_log(
        "the running tasks use more than this agent now offers",
        Duration::from_secs(10),
    );
    let state = |c: &Cluster| -> serde_json::Value {
        let out = c.client("op", &["state", "--json"], Duration::from_secs(30));
        assert!(out.status.success(), "state: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("json")
    };
    let start = Instant::now();
    loop {
        let v = state(&c);
        let agent = &v["agents"][0];
        if agent["total"]["cpus_milli"] == 500 {
            // The new total, and the running task still counted in full: nothing wrapped.
            assert_eq!(agent["total"]["mem_bytes"], 256u64 << 20, "{v:#}");
            assert_eq!(agent["used"]["cpus_milli"], 1000, "{v:#}");
            assert_eq!(agent["used"]["mem_bytes"], 512u64 << 20, "{v:#}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the master never saw the new total: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Nothing is free on the node: even a small task gets no offer.
    let out = c.client(
        "fw2",
        &[
            "run",
            "--cpus",
            "0.1",
            "--mem",
            "32MiB",
            "--placement-timeout",
            "3",
            "--",
            "true",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(
        out.status.code(),
        Some(125),
        "a task was placed on a node with nothing free: {}",
        stderr(&out)
    );
    // The big task ran on to its end, once.
    std::fs::write(&marker, b"").expect("marker");
    let out = wait_child(big, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("kept"));
    // Then the smaller node is offered again, all of it.
    let out = c.client(
        "fw2",
        &["run", "--cpus", "0.5", "--mem", "256MiB", "--", "echo fits"],
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("fits"));
    // State is served from a snapshot republished every 100 ms: wait for it to show the end.
    let start = Instant::now();
    loop {
        let v = state(&c);
        if v["agents"][0]["used"]["cpus_milli"] == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the finished task's resources were never freed: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_launch_that_never_reached_its_agent_is_launched_again_by_corral_run() {
    if skip_unless_root("a_launch_that_never_reached_its_agent_is_launched_again_by_corral_run") {
        return;
    }
    let mut c = Cluster::start_master(&[]);
    let a = c.start_agent("a1", &["--resources", "cpus:2;mem:1GiB"]);
    // A stopped agent reads nothing: the launch the master sends it dies with the process.
    let pid = nix::unistd::Pid::from_raw(c.agents[a].pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP the agent");
    let marker = marker_dir(&c).join("starts");
    let cmd = format!("echo started >> {}; echo ran", marker.display());
    let run = c.spawn_client("fw", &["run", "--", &cmd]);
    // The launch is committed (so in the state) before the master sends it to the agent.
    c.wait_state("the launch committed", |v| {
        v["tasks"].as_array().is_some_and(|t| !t.is_empty())
    });
    // Sent or not, the launch dies with the stopped agent.
    c.agents[a].kill();
    c.restart_agent(a);
    // The agent re-registers without the task: the master reports it gone, and `corral run`
    // launches it again under a new id, which runs once.
    let out = wait_child(run, Duration::from_secs(60));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{err}");
    assert!(
        err.contains("never started; launching it again"),
        "stderr:\n{err}"
    );
    assert_eq!(count(&err, "TASK_FINISHED"), 1, "stderr:\n{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ran"));
    let starts = std::fs::read_to_string(&marker).expect("marker");
    assert_eq!(
        starts.lines().count(),
        1,
        "started more than once: {starts:?}"
    );
}
