use super::*;

#[test]
fn parse_own_cgroups_hybrid() {
    let text = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/ab\n2:cpu,cpuacct:/x\n0::/\n";
    let own = OwnCgroups::parse(text);
    assert_eq!(
        own.v1.get("memory").map(String::as_str),
        Some("/process_api/ab")
    );
    assert_eq!(own.v1.get("cpu").map(String::as_str), Some("/x"));
    assert_eq!(own.v1.get("cpuacct").map(String::as_str), Some("/x"));
    assert_eq!(own.v1.get("name=systemd").map(String::as_str), Some("/"));
    assert_eq!(own.unified.as_deref(), Some("/"));
    // list membership, not substring: "cpu" must not match "cpuset"
    let own = OwnCgroups::parse("3:cpuset:/a\n");
    assert!(!own.v1.contains_key("cpu"));
}

#[test]
fn flat_keyed_and_lists() {
    let ev = parse_flat_keyed("low 0\nhigh 0\nmax 35\noom 1\noom_kill 1\noom_group_kill 1\n");
    assert_eq!(ev.get("oom_kill"), Some(&1));
    assert_eq!(ev.get("max"), Some(&35));
    assert_eq!(cpu_list_count("0-3,6,8-9\n"), Some(7));
    assert_eq!(cpu_list_count("0"), Some(1));
    assert_eq!(cpu_list_count("3-1"), None);
    assert_eq!(parse_pids("12\n13\n\n"), vec![12, 13]);
}

fn limits(cpus: Option<f64>, hard: bool, mem: Option<u64>) -> Limits {
    Limits {
        oom_policy: Default::default(),
        cpus,
        cpu_hard_limit: hard,
        memory_bytes: mem,
        pids_max: 64,
    }
}

#[test]
fn v2_limit_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("memory.swap.max"), "max").unwrap();
    let m = v2::V2Manager::new(dir.path().to_path_buf());
    let files: Vec<(String, String)> = m
        .limit_files(&limits(Some(0.5), true, Some(64 << 20)))
        .into_iter()
        .map(|(p, v)| (p.file_name().unwrap().to_string_lossy().into_owned(), v))
        .collect();
    let want = [
        ("cpu.weight", "50"),
        ("cpu.max", "50000 100000"),
        ("memory.max", "67108864"),
        ("memory.swap.max", "0"),
        ("memory.oom.group", "1"),
        ("pids.max", "64"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(files, want);
    // soft share only; tiny shares clamp to the kernel's minimum quota/weight
    let f = m.limit_files(&limits(Some(0.001), false, None));
    assert_eq!(f[0].1, "1");
    assert_eq!(f[1].1, "max 100000");
    let f = m.limit_files(&limits(Some(0.001), true, None));
    assert_eq!(f[1].1, "1000 100000");
}

/// A v1 manager over plain directories, with swap accounting (a memsw file).
fn v1_fixture() -> (tempfile::TempDir, v1::V1Manager) {
    let dir = tempfile::tempdir().unwrap();
    let mut dirs = BTreeMap::new();
    for c in ["cpu", "cpuacct", "memory", "pids"] {
        let d = dir.path().join(c);
        std::fs::create_dir(&d).unwrap();
        dirs.insert(c.to_string(), d);
    }
    std::fs::write(dir.path().join("memory/memory.memsw.limit_in_bytes"), "").unwrap();
    (dir, v1::V1Manager::new(dirs))
}

#[test]
fn v1_limit_files() {
    let (dir, m) = v1_fixture();
    let files: Vec<(String, String)> = m
        .limit_files(&limits(Some(1.5), true, Some(64 << 20)))
        .into_iter()
        .map(|(p, v)| {
            (
                p.strip_prefix(dir.path())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                v,
            )
        })
        .collect();
    let want = [
        ("cpu/cpu.shares", "1536"),
        ("cpu/cpu.cfs_period_us", "100000"),
        ("cpu/cpu.cfs_quota_us", "150000"),
        ("memory/memory.limit_in_bytes", "67108864"),
        ("memory/memory.memsw.limit_in_bytes", "67108864"),
        ("pids/pids.max", "64"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(files, want);
}

#[test]
fn v1_updates_keep_memsw_at_or_above_the_limit() {
    let (_dir, m) = v1_fixture();
    let order = |old: u64, new: u64| -> Vec<String> {
        m.update_files(
            &limits(Some(1.0), true, Some(old)),
            &limits(Some(1.0), true, Some(new)),
        )
        .into_iter()
        .filter_map(|(p, _)| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            name.contains("limit_in_bytes").then_some(name)
        })
        .collect()
    };
    assert_eq!(
        order(64 << 20, 128 << 20),
        ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"],
        "a raise lifts memsw first"
    );
    assert_eq!(
        order(128 << 20, 64 << 20),
        ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"],
        "a cut lowers the limit first"
    );
}

/// A fixture tree shaped like a delegated v2 subtree (plain files stand in for cgroup files).
fn v2_fixture(own: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let own_dir = join_cgroup(root.path(), own);
    std::fs::create_dir_all(&own_dir).unwrap();
    for d in [root.path(), own_dir.as_path()] {
        std::fs::write(d.join("cgroup.controllers"), "cpuset cpu io memory pids\n").unwrap();
        std::fs::write(d.join("cgroup.subtree_control"), "").unwrap();
        std::fs::write(d.join("cgroup.procs"), "").unwrap();
    }
    root
}

#[test]
fn v2_layout_moves_self_into_supervisor_and_enables_controllers() {
    let root = v2_fixture("/system.slice/agent.service");
    // mkdir on a real cgroupfs creates the control files; the fixture needs them up front.
    let base = root.path().join("system.slice/agent.service");
    std::fs::create_dir_all(base.join("supervisor")).unwrap();
    std::fs::create_dir_all(base.join("corral")).unwrap();
    std::fs::write(base.join("supervisor/cgroup.procs"), "").unwrap();
    std::fs::write(base.join("corral/cgroup.subtree_control"), "").unwrap();
    let l =
        v2::V2Layout::prepare(root.path(), "/system.slice/agent.service", "corral", 4242).unwrap();
    assert_eq!(l.base, base);
    assert_eq!(l.supervisor, base.join("supervisor"));
    assert_eq!(l.tasks, base.join("corral"));
    assert_eq!(
        std::fs::read_to_string(base.join("supervisor/cgroup.procs")).unwrap(),
        "4242"
    );
    assert_eq!(
        std::fs::read_to_string(base.join("cgroup.subtree_control")).unwrap(),
        "+cpu +memory +pids"
    );
    assert_eq!(
        std::fs::read_to_string(base.join("corral/cgroup.subtree_control")).unwrap(),
        "+cpu +memory +pids"
    );
    // the root (and anything above the base) is never written
    assert_eq!(
        std::fs::read_to_string(root.path().join("cgroup.subtree_control")).unwrap(),
        ""
    );
    assert_eq!(l.manager("t1").path, base.join("corral/t1"));
}

#[test]
fn v2_layout_in_a_delegated_scope_moves_its_holder_and_reuses_it_after_a_restart() {
    let scope = "/system.slice/corral-agent-tasks.scope";
    let root = v2_fixture(scope);
    let base = root.path().join("system.slice/corral-agent-tasks.scope");
    std::fs::create_dir_all(base.join("supervisor")).unwrap();
    std::fs::create_dir_all(base.join("corral")).unwrap();
    std::fs::write(base.join("supervisor/cgroup.procs"), "").unwrap();
    std::fs::write(base.join("corral/cgroup.subtree_control"), "").unwrap();
    // systemd-run put the holder in the scope itself.
    std::fs::write(base.join("cgroup.procs"), "4242\n").unwrap();
    let l = v2::V2Layout::prepare_delegated(root.path(), scope, "corral").unwrap();
    assert_eq!(l.base, base);
    assert_eq!(l.supervisor, base.join("supervisor"));
    assert_eq!(l.manager("t1").path, base.join("corral/t1"));
    assert_eq!(
        std::fs::read_to_string(base.join("supervisor/cgroup.procs")).unwrap(),
        "4242"
    );
    for dir in [base.clone(), base.join("corral")] {
        assert_eq!(
            std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap(),
            "+cpu +memory +pids"
        );
    }
    // Nothing above the scope is written.
    assert_eq!(
        std::fs::read_to_string(root.path().join("cgroup.subtree_control")).unwrap(),
        ""
    );
    // A restarted agent finds the scope empty (the holder sits in supervisor/): no move.
    std::fs::write(base.join("cgroup.procs"), "").unwrap();
    std::fs::write(base.join("supervisor/cgroup.procs"), "").unwrap();
    std::fs::write(base.join("cgroup.subtree_control"), "cpu memory pids\n").unwrap();
    let again = v2::V2Layout::prepare_delegated(root.path(), scope, "corral").unwrap();
    assert_eq!(again, l);
    assert_eq!(
        std::fs::read_to_string(base.join("supervisor/cgroup.procs")).unwrap(),
        ""
    );
    // The root is never a delegated base.
    assert!(v2::V2Layout::prepare_delegated(root.path(), "/", "corral").is_err());
}

#[test]
fn v2_layout_under_delegate_subgroup_uses_parent_as_base() {
    let root = v2_fixture("/system.slice/agent.service");
    let base = root.path().join("system.slice/agent.service");
    std::fs::create_dir_all(base.join("supervisor")).unwrap();
    std::fs::create_dir_all(base.join("corral")).unwrap();
    std::fs::write(base.join("supervisor/cgroup.procs"), "").unwrap();
    std::fs::write(base.join("cgroup.subtree_control"), "cpu memory pids\n").unwrap();
    std::fs::write(base.join("corral/cgroup.subtree_control"), "").unwrap();
    let l = v2::V2Layout::prepare(
        root.path(),
        "/system.slice/agent.service/supervisor",
        "corral",
        1,
    )
    .unwrap();
    assert_eq!(l.base, base);
    // nothing moved, already-enabled controllers not rewritten
    assert_eq!(
        std::fs::read_to_string(base.join("supervisor/cgroup.procs")).unwrap(),
        ""
    );
    assert_eq!(
        std::fs::read_to_string(base.join("cgroup.subtree_control")).unwrap(),
        "cpu memory pids\n"
    );
}

#[test]
fn v2_layout_reports_missing_controller() {
    let root = v2_fixture("/a");
    std::fs::write(root.path().join("a/cgroup.controllers"), "cpu pids\n").unwrap();
    std::fs::create_dir_all(root.path().join("a/supervisor")).unwrap();
    std::fs::write(root.path().join("a/supervisor/cgroup.procs"), "").unwrap();
    let err = v2::V2Layout::prepare(root.path(), "/a", "corral", 1).unwrap_err();
    assert!(
        matches!(err, IsolationError::MissingController { ref controller, .. } if controller == "memory"),
        "{err}"
    );
}

#[test]
fn v1_layout_nests_under_own_cgroup() {
    let root = tempfile::tempdir().unwrap();
    for c in ["cpu", "cpuacct", "memory", "pids"] {
        std::fs::create_dir_all(root.path().join(c)).unwrap();
        std::fs::write(root.path().join(c).join("cgroup.procs"), "").unwrap();
    }
    std::fs::create_dir_all(root.path().join("memory/process_api/ab")).unwrap();
    let own = OwnCgroups::parse("8:pids:/\n4:memory:/process_api/ab\n2:cpuacct:/\n1:cpu:/\n0::/\n");
    let l = v1::V1Layout::prepare(root.path(), &own, "corral").unwrap();
    let canon = root.path().canonicalize().unwrap();
    assert_eq!(
        l.tasks["memory"],
        canon.join("memory/process_api/ab/corral")
    );
    assert_eq!(l.tasks["cpu"], canon.join("cpu/corral"));
    assert!(
        !l.tasks.contains_key("freezer"),
        "freezer is optional and absent here"
    );
    assert!(l.tasks["memory"].is_dir());
    let m = l.manager("t1");
    assert_eq!(m.paths()["pids"], canon.join("pids/corral/t1"));
}

#[test]
fn subtree_order_is_deepest_first() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("a/b/c")).unwrap();
    let order = subtree_post_order(&d.path().join("a"));
    assert_eq!(
        order,
        vec![
            d.path().join("a/b/c"),
            d.path().join("a/b"),
            d.path().join("a")
        ]
    );
}
