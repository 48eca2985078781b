//! Allocator scenarios as data files in `testdata/`: commands, a `----` line, then the expected
//! outcome. `UPDATE_EXPECT=1 cargo test -p master-core` rewrites the expectations; review the
//! diff.
//!
//! Commands: `weight ROLE W`, `allocator drf|strict-priority`, `agent NAME RESOURCES`,
//! `framework NAME ROLE[,ROLE] TASK_RESOURCES COUNT [per_offer=N]`, `advance SECONDS`.

use master_core::testing::{Sim, Workload};
use master_core::{AllocatorKind, MasterConfig};
use std::fmt::Write;
use std::path::Path;
use std::time::{Duration, Instant};

fn run_scenario(input: &str) -> Result<String, String> {
    let mut config = MasterConfig::default();
    let mut setup = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            ["weight", role, w] => {
                let w: f64 = w
                    .parse()
                    .map_err(|_| format!("line {}: bad weight", n + 1))?;
                config.role_weights.insert(role.to_owned(), w);
            }
            ["allocator", "drf"] => config.allocator = AllocatorKind::Drf,
            ["allocator", "strict-priority"] => config.allocator = AllocatorKind::StrictPriority,
            _ => setup.push((n + 1, words)),
        }
    }
    let mut sim = Sim::new(config, Instant::now());
    let mut frameworks = Vec::new();
    for (n, words) in setup {
        match words[..] {
            ["agent", name, res] => {
                sim.add_agent(name, res, true);
            }
            ["framework", name, roles, task, count, ref rest @ ..] => {
                let count: u64 = count.parse().map_err(|_| format!("line {n}: bad count"))?;
                let mut w = Workload::new(task, count);
                for opt in rest {
                    if let Some(v) = opt.strip_prefix("per_offer=") {
                        w.per_offer = v.parse().map_err(|_| format!("line {n}: bad per_offer"))?;
                    }
                }
                let roles: Vec<&str> = roles.split(',').collect();
                frameworks.push((name.to_owned(), sim.add_framework(name, &roles, Some(w))));
            }
            ["advance", secs] => {
                let s: f64 = secs.parse().map_err(|_| format!("line {n}: bad seconds"))?;
                sim.advance(Duration::from_secs_f64(s));
            }
            _ => return Err(format!("line {n}: unknown command {words:?}")),
        }
    }
    sim.check_no_overcommit()?;
    let state = sim.master.snapshot();
    let mut out = String::new();
    for (name, s) in &frameworks {
        let f = state
            .frameworks
            .iter()
            .find(|f| f.id == sim.framework_id(*s))
            .ok_or("framework missing")?;
        let _ = writeln!(
            out,
            "framework {name} running={} share={:.3} used={}",
            sim.framework(*s).running(),
            f.dominant_share,
            f.used
        );
    }
    for r in &state.roles {
        let _ = writeln!(
            out,
            "role {} weight={} share={:.3}",
            r.name, r.weight, r.dominant_share
        );
    }
    for a in &state.agents {
        let _ = writeln!(out, "agent {} used={}", a.hostname, a.used);
    }
    Ok(out)
}

#[test]
fn allocator_scenarios() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("testdata dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no scenarios in {}", dir.display());
    let mut failures = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read scenario");
        let (input, expected) = text.split_once("\n----\n").unwrap_or((text.as_str(), ""));
        let actual = run_scenario(input).unwrap_or_else(|e| format!("error: {e}\n"));
        if actual != expected {
            if update {
                std::fs::write(&path, format!("{input}\n----\n{actual}")).expect("rewrite");
            } else {
                failures.push(format!(
                    "{}:\n--- expected\n{expected}--- actual\n{actual}",
                    path.display()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "scenario mismatches (UPDATE_EXPECT=1 to accept):\n{}",
        failures.join("\n")
    );
}
