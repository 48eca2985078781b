//! What `corral state` keeps after a framework is gone: `corral run` tears its framework down
//! when its task ends, and the task, its reason and its OOM forensics stay visible afterwards
//! (the master keeps the last removed frameworks with their terminal tasks).

use integration::{is_root, stderr, stdout, Cluster};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn find_task<'a>(s: &'a serde_json::Value, prefix: &str) -> Option<&'a serde_json::Value> {
    s["tasks"]
        .as_array()?
        .iter()
        .find(|t| t["id"].as_str().is_some_and(|id| id.starts_with(prefix)))
}

fn completed_ids(s: &serde_json::Value) -> Vec<String> {
    s["completed_frameworks"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn memory_cgroups() -> bool {
    std::path::Path::new("/sys/fs/cgroup/memory").is_dir()
        || std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
            .is_ok_and(|c| c.split_whitespace().any(|x| x == "memory"))
}

#[test]
fn an_oom_killed_run_stays_in_state_after_its_framework_is_gone() {
    if !is_root() || !memory_cgroups() {
        eprintln!(
            "skipping an_oom_killed_run_stays_in_state_after_its_framework_is_gone: memory \
             limits need root and the memory cgroup controller"
        );
        return;
    }
    let mut c = Cluster::start_master(&[]);
    c.start_agent("a1", &["--resources", "cpus:2;mem:1GiB"]);
    let out = c.client(
        "fw",
        &[
            "run",
            "--name",
            "hog",
            "--mem",
            "32MiB",
            "--",
            "dd if=/dev/zero of=/dev/null bs=256M count=1",
        ],
        T,
    );
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
    assert!(stderr(&out).contains("memory limit"), "{}", stderr(&out));

    // `corral run` tore its framework down; the framework and its task are still shown.
    let s = c.wait_state("the hog's framework as completed", |s| {
        find_task(s, "hog")
            .is_some_and(|t| completed_ids(s).iter().any(|id| t["framework_id"] == **id))
    });
    assert!(
        s["frameworks"].as_array().is_some_and(|f| f.is_empty()),
        "no live framework: {s:#}"
    );
    let t = find_task(&s, "hog").expect("the hog task");
    assert_eq!(t["state"], "Failed", "{t:#}");
    assert_eq!(t["reason"], "MemoryLimit", "{t:#}");
    let lim = &t["limitation"];
    assert_eq!(lim["resource"], "Memory", "{t:#}");
    assert_eq!(lim["limit"].as_u64(), Some(32 << 20), "{t:#}");
    let peak = lim["peak"]
        .as_u64()
        .unwrap_or_else(|| panic!("no peak: {t:#}"));
    assert!(
        (16 << 20..=33 << 20).contains(&peak),
        "peak {peak} is not near the 32 MiB limit: {t:#}"
    );
    assert!(
        lim["events"].as_object().is_some_and(|e| !e.is_empty()),
        "the kernel's memory counters are kept: {t:#}"
    );
    let fw = &s["completed_frameworks"][0];
    assert_eq!(fw["id"], t["framework_id"], "{s:#}");
    assert!(
        fw["removed_at_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{fw:#}"
    );

    // The text output names the cause.
    let out = c.client("op", &["state"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("COMPLETED FRAMEWORKS (1)"), "{text}");
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("hog"))
        .unwrap_or_else(|| panic!("no hog line in:\n{text}"));
    assert!(
        line.contains("TASK_FAILED") && line.contains("memory limit"),
        "{line}"
    );

    // A later run adds a second completed framework after the first; both stay.
    let out = c.client(
        "fw",
        &["run", "--name", "fine", "--", "echo fine-output"],
        T,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = c.wait_state("two completed frameworks", |s| {
        completed_ids(s).len() == 2
            && find_task(s, "fine").is_some_and(|t| t["state"] == "Finished")
    });
    assert_eq!(
        find_task(&s, "fine").map(|t| &t["framework_id"]),
        Some(&s["completed_frameworks"][1]["id"]),
        "oldest first: {s:#}"
    );
    assert!(find_task(&s, "hog").is_some(), "{s:#}");
    // Its output can still be read.
    let id = find_task(&s, "fine")
        .and_then(|t| t["id"].as_str())
        .expect("id");
    let out = c.client("op", &["logs", id], T);
    assert!(
        stdout(&out).contains("fine-output"),
        "logs: {} {}",
        stdout(&out),
        stderr(&out)
    );
}
