//! Allocator scenarios as data files in `testdata/`: commands, a `----` line, then the expected
//! outcome. `UPDATE_EXPECT=1 cargo test -p master-core` rewrites the expectations; review the
//! diff.
//!
//! Commands: `weight ROLE W`, `allocator drf|strict-priority`, `agent NAME RESOURCES` (with
//! static reservations such as `cpus(batch):2`), `framework NAME ROLE[,ROLE] TASK_RESOURCES
//! COUNT [per_offer=N]`, `advance SECONDS`, `quota ROLE GUARANTEE|- LIMIT|-`,
//! `reserve AGENT ROLE RESOURCES`, `finish FRAMEWORK COUNT` (its first COUNT running tasks
//! end). The outcome lists roles with a quota with what they hold and agents with their
//! reservations.

use master_core::testing::{Sim, Workload};
use master_core::{AllocatorKind, MasterConfig, SessionId, TaskKey};
use proto::{ClientFrame, OperatorCall, OperatorReply, Quota, Role, ServerFrame, TaskState};
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
    let mut agents = Vec::new();
    for (n, words) in setup {
        match words[..] {
            ["agent", name, res] => {
                agents.push((name.to_owned(), sim.add_agent(name, res, true)));
            }
            ["quota", role, guarantee, limit] => {
                let dash = |s: &str| {
                    if s == "-" {
                        String::new()
                    } else {
                        s.to_owned()
                    }
                };
                let quota = Quota {
                    guarantee: dash(guarantee)
                        .parse()
                        .map_err(|e| format!("line {n}: {e}"))?,
                    limit: dash(limit).parse().map_err(|e| format!("line {n}: {e}"))?,
                };
                let role = role.to_owned();
                operator(
                    &mut sim,
                    OperatorCall::SetQuota {
                        role,
                        quota: Some(quota),
                    },
                )
                .map_err(|e| format!("line {n}: {e}"))?;
            }
            ["reserve", agent, role, res] => {
                let s = agents
                    .iter()
                    .find(|(a, _)| a == agent)
                    .ok_or(format!("line {n}: no agent {agent}"))?
                    .1;
                let call = OperatorCall::Reserve {
                    agent_id: sim.agent_id(s),
                    role: role.to_owned(),
                    resources: res.parse().map_err(|e| format!("line {n}: {e}"))?,
                };
                operator(&mut sim, call).map_err(|e| format!("line {n}: {e}"))?;
            }
            ["finish", name, count] => {
                let count: usize = count.parse().map_err(|_| format!("line {n}: bad count"))?;
                let s = frameworks
                    .iter()
                    .find(|(f, _)| f == name)
                    .ok_or(format!("line {n}: no framework {name}"))?
                    .1;
                finish(&mut sim, s, count);
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
        let _ = write!(
            out,
            "role {} weight={} share={:.3}",
            r.name, r.weight, r.dominant_share
        );
        if let Some(q) = &r.quota {
            let _ = write!(
                out,
                " used={} guarantee={} limit={}",
                r.used, q.guarantee, q.limit
            );
        }
        out.push('\n');
    }
    for a in &state.agents {
        let _ = write!(out, "agent {} used={}", a.hostname, a.used);
        if !a.reserved.is_empty() {
            let _ = write!(out, " reserved={}", proto::format_reserved(&a.reserved));
        }
        out.push('\n');
    }
    Ok(out)
}

/// An operator call that must be answered `Done`.
fn operator(sim: &mut Sim, call: OperatorCall) -> Result<(), String> {
    let op = sim.connect(Role::Operator, "ops");
    sim.send(op, ClientFrame::Operator(call));
    match sim.take(op).as_slice() {
        [ServerFrame::Operator(OperatorReply::Done)] => Ok(()),
        other => Err(format!("operator call answered {other:?}")),
    }
}

/// The first `count` running tasks of framework `s` finish (reported by their agents).
fn finish(sim: &mut Sim, s: SessionId, count: usize) {
    let fw = sim.framework_id(s);
    let running: Vec<(SessionId, TaskKey)> = sim
        .agents
        .iter()
        .flat_map(|(a, agent)| {
            agent
                .tasks
                .iter()
                .filter(|(k, (_, st))| k.framework_id == fw && *st == TaskState::Running)
                .map(|(k, _)| (*a, k.clone()))
        })
        .take(count)
        .collect();
    for (a, k) in running {
        sim.agent_update(a, &k, TaskState::Finished);
    }
    sim.pump();
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
