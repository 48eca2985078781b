use super::*;
use proto::{CommandInfo, ExecutorId, FrameworkId, Resources, TaskId};

fn framework() -> FrameworkSummary {
    FrameworkSummary {
        id: FrameworkId::new("fw"),
        name: "fw".into(),
        principal: "fw".into(),
    }
}

fn executor_cp() -> ExecutorCheckpoint {
    ExecutorCheckpoint {
        version: CHECKPOINT_VERSION,
        framework: framework(),
        info: ExecutorInfo {
            executor_id: ExecutorId::new("ex"),
            command: CommandInfo::argv(vec!["/bin/executor".into()]),
            resources: "cpus:0.1;mem:32MiB"
                .parse::<Resources>()
                .expect("resources"),
            container: Default::default(),
        },
        sandbox: PathBuf::from("/work/sandboxes/fw/executors/ex"),
        socket: PathBuf::from("/work/sandboxes/fw/executors/ex/executor.sock"),
        uid: 65534,
        gid: 65534,
        container: None,
        shutting_down: false,
    }
}

#[test]
fn executor_checkpoints_round_trip_and_a_corrupt_one_is_moved_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cps = Checkpoints::open_executors(dir.path()).expect("open");
    cps.save("fw.ex", &executor_cp()).expect("save");
    let bad = dir.path().join("meta/executors/fw.bad.json");
    std::fs::write(&bad, b"{ not json").expect("write");
    let loaded = cps.load_all::<ExecutorCheckpoint>().expect("load");
    assert_eq!(loaded.len(), 2);
    let good = loaded.iter().find(|l| l.key == "fw.ex").expect("fw.ex");
    let cp = good.result.as_ref().expect("valid");
    assert_eq!(cp.info.executor_id.as_str(), "ex");
    assert_eq!(cp.socket, executor_cp().socket);
    let corrupt = loaded.iter().find(|l| l.key == "fw.bad").expect("fw.bad");
    assert!(corrupt
        .result
        .as_ref()
        .is_err_and(|e| e.to_string().contains("corrupt")));
    assert!(dir.path().join("meta/executors/fw.bad.corrupt").exists());
    // Executor and task checkpoints live apart.
    let tasks = Checkpoints::open(dir.path()).expect("open tasks");
    assert!(tasks.load_all::<TaskCheckpoint>().expect("load").is_empty());
}

#[test]
fn a_task_checkpoint_from_before_executors_still_loads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cps = Checkpoints::open(dir.path()).expect("open");
    let cp = TaskCheckpoint {
        version: CHECKPOINT_VERSION,
        framework: framework(),
        info: proto::TaskInfo {
            task_id: TaskId::new("t"),
            name: "t".into(),
            agent_id: proto::AgentId::new("a"),
            resources: Resources::default(),
            command: CommandInfo::shell("true"),
            container: Default::default(),
            kill_grace_ms: None,
            labels: Default::default(),
        },
        state: TaskState::Running,
        sandbox: PathBuf::from("/s"),
        container: None,
        kill_requested: false,
        next_seq: 3,
        pending_updates: Vec::new(),
        executor_id: Some(ExecutorId::new("ex")),
    };
    let mut json = serde_json::to_value(&cp).expect("json");
    json.as_object_mut().expect("object").remove("executor_id");
    std::fs::write(
        dir.path().join("meta/tasks/fw.t.json"),
        serde_json::to_vec(&json).expect("bytes"),
    )
    .expect("write");
    let loaded = cps.load_all::<TaskCheckpoint>().expect("load");
    let back = loaded[0].result.as_ref().expect("loads");
    assert_eq!(back.executor_id, None);
    assert_eq!(back.next_seq, 3);
}

#[test]
fn checkpoints_are_the_agents_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    // A file left readable by an older agent is replaced by a private one on the next save.
    std::fs::create_dir_all(dir.path().join("meta/executors")).expect("mkdir");
    let old = dir.path().join("meta/executors/fw.ex.json");
    std::fs::write(&old, b"{}").expect("write");
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let cps = Checkpoints::open_executors(dir.path()).expect("open");
    cps.save("fw.ex", &executor_cp()).expect("save");
    let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o7777;
    assert_eq!(mode(&dir.path().join("meta")), 0o700);
    assert_eq!(mode(&dir.path().join("meta/executors")), 0o700);
    assert_eq!(mode(&old), 0o600);
}
