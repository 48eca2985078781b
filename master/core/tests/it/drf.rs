//! Allocation fairness: the DRF paper's example, weighted roles, strict priority.

use crate::{sim, sim_with};
use master_core::testing::Workload;
use master_core::{AllocatorKind, MasterConfig};
use std::time::Duration;

fn running(sim: &master_core::testing::Sim, fw: u64) -> usize {
    sim.framework(fw).running()
}

/// NSDI'11 DRF paper: 9 CPUs, 18 GB; A's tasks <1 CPU, 4 GB>, B's <3 CPUs, 1 GB>.
#[test]
fn drf_paper_example_a_runs_3_and_b_runs_2() {
    let mut sim = sim();
    sim.add_agent("big", "cpus:9;mem:18GiB", true);
    let a = sim.add_framework("A", &[], Some(Workload::new("cpus:1;mem:4GiB", 100)));
    let b = sim.add_framework("B", &[], Some(Workload::new("cpus:3;mem:1GiB", 100)));
    sim.advance(Duration::from_secs(30));
    assert_eq!(running(&sim, a), 3, "A runs 3 tasks");
    assert_eq!(running(&sim, b), 2, "B runs 2 tasks");
    // Dominant shares are equal: A 12/18 mem, B 6/9 cpu.
    let state = sim.master.snapshot();
    let shares: Vec<f64> = state.frameworks.iter().map(|f| f.dominant_share).collect();
    assert!((shares[0] - 2.0 / 3.0).abs() < 1e-9, "{shares:?}");
    sim.check_no_overcommit().unwrap();
}

#[test]
fn weighted_roles_get_shares_in_proportion_to_weights() {
    let mut config = MasterConfig::default();
    config.role_weights.insert("low".into(), 1.0);
    config.role_weights.insert("high".into(), 2.0);
    let mut sim = sim_with(config);
    for i in 0..30 {
        sim.add_agent(&format!("h{i}"), "cpus:1;mem:1GiB", true);
    }
    let low = sim.add_framework("low", &["low"], Some(Workload::new("cpus:1;mem:1GiB", 100)));
    let high = sim.add_framework(
        "high",
        &["high"],
        Some(Workload::new("cpus:1;mem:1GiB", 100)),
    );
    sim.advance(Duration::from_secs(10));
    assert_eq!(running(&sim, low), 10);
    assert_eq!(running(&sim, high), 20);
    let roles = sim.master.snapshot().roles;
    let share = |n: &str| roles.iter().find(|r| r.name == n).unwrap().dominant_share;
    assert!((share("high") / share("low") - 2.0).abs() < 1e-9);
}

#[test]
fn strict_priority_serves_the_heavier_role_first() {
    let mut config = MasterConfig {
        allocator: AllocatorKind::StrictPriority,
        ..MasterConfig::default()
    };
    config.role_weights.insert("prod".into(), 10.0);
    config.role_weights.insert("batch".into(), 1.0);
    let mut sim = sim_with(config);
    for i in 0..10 {
        sim.add_agent(&format!("h{i}"), "cpus:1;mem:1GiB", true);
    }
    let batch = sim.add_framework(
        "batch",
        &["batch"],
        Some(Workload::new("cpus:1;mem:1GiB", 100)),
    );
    let prod = sim.add_framework("prod", &["prod"], Some(Workload::new("cpus:1;mem:1GiB", 7)));
    sim.advance(Duration::from_secs(10));
    assert_eq!(running(&sim, prod), 7, "prod takes all it wants");
    assert_eq!(running(&sim, batch), 3, "batch gets the rest");
}

#[test]
fn starvation_is_reported_per_role_and_suppress_stops_it() {
    let mut sim = sim();
    sim.add_agent("h", "cpus:1;mem:1GiB", true);
    // `hog` takes the whole agent; `late` wants offers and gets none.
    let _hog = sim.add_framework("hog", &["hog"], Some(Workload::new("cpus:1;mem:1GiB", 1)));
    sim.advance(Duration::from_secs(1));
    let late = sim.add_framework("late", &["late"], None);
    sim.advance(Duration::from_secs(20));
    let starved = |sim: &master_core::testing::Sim| {
        sim.master
            .snapshot()
            .roles
            .iter()
            .find(|r| r.name == "late")
            .map(|r| r.starved_ms)
            .unwrap()
    };
    assert!(starved(&sim) >= 20_000, "late starved {} ms", starved(&sim));
    sim.send(
        late,
        proto::ClientFrame::Framework(proto::FrameworkCall::Suppress { roles: vec![] }),
    );
    assert_eq!(
        starved(&sim),
        0,
        "a suppressed framework has no pending work"
    );
}
