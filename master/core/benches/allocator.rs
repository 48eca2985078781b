//! Allocation pass benchmark, Mesos's `DeclineOffers` workload
//! (`src/tests/hierarchical_allocator_tests.cpp`): agents of
//! `cpus:24;mem:4096MiB;disk:4096MiB;ports:[31000-32000]` with 16 cpus in use, 1,000 frameworks
//! in role `*` that decline every offer with a long filter. Each timed pass is one
//! `handle_timeout` at the allocation deadline: build the view, run weighted DRF, create and
//! queue the offers. Mesos 1.7 needs 1,060 ms per `allocate()` at 10,000 agents x 1,000
//! frameworks (performance-anchors.md §2).
//!
//! Each size is built 3 times (`MASTER_CORE_BENCH_BUILDS`; `MASTER_CORE_BENCH_CONFIG=plain` or
//! `tenancy` runs one configuration); the table gives min, median and max
//! wall milliseconds per pass, and the mean on-CPU milliseconds of the benchmark thread, which
//! a busy shared machine disturbs less than wall time.
//!
//! The `quota+reservations` rows run the same workload with multi-tenancy configured: role `*`
//! has a guarantee (cpus 10% of the cluster) and a limit (90%), ten roles without frameworks
//! have guarantees (headroom), every tenth agent reserves `cpus(res):4;mem(res):512MiB`
//! statically and one framework (of the 1,000) is in role `res`. Every offer then goes through
//! the quota cut and the reserved pools.
//!
//! Run: `cargo bench -p master-core` (prints a table; no timing asserts).

use master_core::{Master, MasterConfig, Output, SessionId};
use proto::{
    AgentInfo, AgentToMaster, ClientFrame, CommandInfo, Filters, FrameworkCall, FrameworkEvent,
    FrameworkInfo, Offer, OfferOperation, OperatorCall, PeerIdentity, Quota, ResourceLimit,
    Resources, Role, ServerFrame, TaskId, TaskInfo,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

struct Cluster {
    master: Master,
    now: Instant,
    /// Offers received per framework session.
    offers: BTreeMap<SessionId, Vec<Offer>>,
    frameworks: Vec<SessionId>,
}

impl Cluster {
    fn drain(&mut self) -> usize {
        let mut n = 0;
        loop {
            let mut commits = Vec::new();
            while let Some(out) = self.master.poll_output() {
                match out {
                    Output::Propose { id, op } => commits.push((id, op)),
                    Output::Send {
                        to,
                        frame: ServerFrame::Framework(FrameworkEvent::Offers { offers }),
                    } => {
                        n += offers.len();
                        self.offers.entry(to).or_default().extend(offers);
                    }
                    _ => {}
                }
            }
            if commits.is_empty() {
                return n;
            }
            for (id, op) in commits {
                self.master.handle_proposal_committed(self.now, id, op);
            }
        }
    }

    /// Runs the pending allocation; returns (wall ms, on-CPU ms if known, offers made).
    fn pass(&mut self) -> (f64, Option<f64>, usize) {
        let Some(at) = self.master.poll_timeout() else {
            return (0.0, None, 0);
        };
        self.now = self.now.max(at);
        let cpu0 = thread_cpu_ns();
        let t0 = std::time::Instant::now();
        self.master.handle_timeout(self.now);
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        let cpu = match (cpu0, thread_cpu_ns()) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 1e6),
            _ => None,
        };
        (ms, cpu, self.drain())
    }

    /// Answers every offer received; returns how many.
    fn respond(&mut self, launch_cpus: Option<u64>, refuse: f64) -> u64 {
        let offers = std::mem::take(&mut self.offers);
        let mut n = 0u64;
        for (fw, offers) in offers {
            for o in offers {
                n += 1;
                let call = match launch_cpus {
                    Some(cpus) => FrameworkCall::Accept {
                        offer_ids: vec![o.id.clone()],
                        operations: vec![OfferOperation::Launch {
                            tasks: vec![TaskInfo {
                                task_id: TaskId(format!("t{n}")),
                                name: "used".into(),
                                agent_id: o.agent_id.clone(),
                                resources: proto::Resources::new(cpus * 1000, 0),
                                command: CommandInfo::shell("sleep 1000"),
                                container: Default::default(),
                                kill_grace_ms: None,
                                labels: Default::default(),
                            }],
                        }],
                        filters: Some(Filters {
                            refuse_seconds: Some(0.0),
                        }),
                    },
                    None => FrameworkCall::Decline {
                        offer_ids: vec![o.id.clone()],
                        filters: Some(Filters {
                            refuse_seconds: Some(refuse),
                        }),
                    },
                };
                self.master
                    .handle_message(self.now, fw, ClientFrame::Framework(call));
            }
        }
        self.drain();
        n
    }
}

/// The quotas of the `quota+reservations` rows (see the module doc), set by an operator call.
fn set_quotas(c: &mut Cluster, agents: usize, session: SessionId) {
    let peer = PeerIdentity {
        role: Role::Operator,
        name: "ops".into(),
    };
    c.master.handle_connected(c.now, session, peer);
    let cluster_cpus = agents as u64 * 24_000;
    let mut quotas = vec![(
        "*".to_owned(),
        Quota {
            guarantee: Resources::new(cluster_cpus / 10, 0),
            limit: ResourceLimit {
                cpus_milli: Some(cluster_cpus / 10 * 9),
                ..ResourceLimit::default()
            },
        },
    )];
    for i in 0..10 {
        quotas.push((
            format!("q{i}"),
            Quota {
                guarantee: Resources::new(1000, 1 << 30),
                limit: ResourceLimit::default(),
            },
        ));
    }
    for (role, quota) in quotas {
        let call = OperatorCall::SetQuota {
            role,
            quota: Some(quota),
        };
        c.master
            .handle_message(c.now, session, ClientFrame::Operator(call));
        c.drain();
    }
}

fn build(agents: usize, frameworks: usize, tenancy: bool) -> Cluster {
    let config = MasterConfig {
        offer_timeout: None,
        allocation_batch: Duration::from_millis(1),
        // The benchmark's virtual time stays far below these.
        agent_unreachable_timeout: Duration::from_secs(3600),
        framework_heartbeat_interval: Duration::from_secs(3600),
        // Role `res` (one framework) weighs little, so that DRF gives it about one agent of
        // every thousand besides its reservations: the workload stays the plain one's.
        role_weights: if tenancy {
            [("res".to_owned(), 0.001)].into()
        } else {
            Default::default()
        },
        ..MasterConfig::default()
    };
    let start = Instant::now();
    let mut c = Cluster {
        master: Master::new(config, start),
        now: start,
        offers: BTreeMap::new(),
        frameworks: Vec::new(),
    };
    let resources: proto::Resources = "cpus:24;mem:4096MiB;disk:4096MiB;ports:[31000-32000]"
        .parse()
        .expect("benchmark resources parse");
    let mut session: SessionId = 0;
    if tenancy {
        session += 1;
        set_quotas(&mut c, agents, session);
    }
    for i in 0..agents {
        session += 1;
        let peer = PeerIdentity {
            role: Role::Agent,
            name: format!("agent{i}"),
        };
        c.master.handle_connected(c.now, session, peer);
        let info = AgentInfo {
            hostname: format!("agent{i}"),
            resources: resources.clone(),
            attributes: Default::default(),
            version: Default::default(),
            software_version: String::new(),
            reserved: if tenancy && i % 10 == 0 {
                [("res".to_owned(), Resources::new(4000, 512 << 20))].into()
            } else {
                Default::default()
            },
        };
        c.master.handle_message(
            c.now,
            session,
            ClientFrame::Agent(AgentToMaster::Register {
                agent_id: None,
                info,
                tasks: Vec::new(),
            }),
        );
        c.drain();
    }
    for i in 0..frameworks {
        session += 1;
        let peer = PeerIdentity {
            role: Role::Framework,
            name: format!("fw{i}"),
        };
        c.master.handle_connected(c.now, session, peer);
        let info = FrameworkInfo {
            id: None,
            name: format!("fw{i}"),
            roles: vec![if tenancy && i == 0 { "res" } else { "*" }.into()],
            failover_timeout_ms: 3_600_000,
            capabilities: Vec::new(),
            version: Default::default(),
        };
        c.master.handle_message(
            c.now,
            session,
            ClientFrame::Framework(FrameworkCall::Subscribe { info }),
        );
        c.frameworks.push(session);
        c.drain();
    }
    // Round 0 (setup): every agent is offered; frameworks launch a 16-cpu task on each.
    c.pass();
    c.respond(Some(16), 0.0);
    c
}

/// Nanoseconds this thread has run on a CPU (`CLOCK_THREAD_CPUTIME_ID`): unlike wall time, it
/// does not count the time the scheduler gave to other processes of a shared machine.
fn thread_cpu_ns() -> Option<u64> {
    use nix::time::{clock_gettime, ClockId};
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).ok()?;
    let secs = u64::try_from(t.tv_sec()).ok()?;
    let nanos = u64::try_from(t.tv_nsec()).ok()?;
    Some(secs * 1_000_000_000 + nanos)
}

/// (min, median, max) of a non-empty list of milliseconds.
fn stats(ms: &mut [f64]) -> (f64, f64, f64) {
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let median = if n % 2 == 1 {
        ms[n / 2]
    } else {
        (ms[n / 2 - 1] + ms[n / 2]) / 2.0
    };
    (ms[0], median, ms[n - 1])
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too: keep it small then.
    let quick = !std::env::args().any(|a| a == "--bench");
    // `MASTER_CORE_BENCH_GRID=AxF` runs one size (for profiling).
    let custom: Vec<(usize, usize, f64)> = std::env::var("MASTER_CORE_BENCH_GRID")
        .ok()
        .and_then(|g| {
            let (a, f) = g.split_once('x')?;
            Some(vec![(a.parse().ok()?, f.parse().ok()?, f64::NAN)])
        })
        .unwrap_or_default();
    let grid: &[(usize, usize, f64)] = if !custom.is_empty() {
        &custom
    } else if quick {
        &[(1_000, 100, f64::NAN)]
    } else {
        &[(10_000, 1_000, 1_060.0), (50_000, 1_000, f64::NAN)]
    };
    // Each size is built this many times (one first pass each), each followed by decline rounds. Timings on a shared machine are noisy: read the min and median.
    let builds: usize = std::env::var("MASTER_CORE_BENCH_BUILDS")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(if quick { 1 } else { 3 });
    // `MASTER_CORE_BENCH_ROUNDS=N`: decline rounds after each first pass (with N >= frameworks,
    // every framework ends up filtering every agent).
    let rounds: usize = std::env::var("MASTER_CORE_BENCH_ROUNDS")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(5);
    println!("master-core allocation pass, DeclineOffers workload (weighted DRF)");
    println!(
        "| agents | frameworks | config | pass | passes | offers per pass | ms min | ms median | ms max | on-CPU ms mean | Mesos 1.7 ms |"
    );
    println!("|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let configs: &[bool] = match std::env::var("MASTER_CORE_BENCH_CONFIG").as_deref() {
        Ok("plain") => &[false],
        Ok("tenancy") => &[true],
        _ => &[false, true],
    };
    for &(agents, frameworks, mesos) in grid {
        for &tenancy in configs {
            run_size(agents, frameworks, mesos, tenancy, builds, rounds);
        }
    }
}

/// Builds one size `builds` times and prints its two rows.
fn run_size(
    agents: usize,
    frameworks: usize,
    mesos: f64,
    tenancy: bool,
    builds: usize,
    rounds: usize,
) {
    let config = if tenancy {
        "quota+reservations"
    } else {
        "plain"
    };
    {
        let mesos_s = if mesos.is_nan() {
            "-".to_owned()
        } else {
            format!("{mesos:.0}")
        };
        let (mut first, mut first_cpu) = (Vec::new(), Vec::new());
        let (mut after, mut after_cpu) = (Vec::new(), Vec::new());
        let (mut first_offers, mut after_offers) = (0, 0);
        for _ in 0..builds.max(1) {
            let t0 = std::time::Instant::now();
            let mut c = build(agents, frameworks, tenancy);
            eprintln!(
                "  (setup of {agents} agents x {frameworks} frameworks took {:.2?})",
                t0.elapsed()
            );
            // Pass 1: the 8 free cpus of every agent, nothing filtered yet.
            let (ms, cpu, offers) = c.pass();
            first.push(ms);
            first_cpu.extend(cpu);
            first_offers = offers;
            // Then rounds where every framework has declined what it got with a long filter.
            for _ in 0..rounds {
                // Nothing declined: no allocation is due (the next deadline is another kind).
                if c.respond(None, 1.0e9) == 0 {
                    break;
                }
                let (ms, cpu, offers) = c.pass();
                if std::env::var_os("MASTER_CORE_BENCH_TRACE").is_some() {
                    eprintln!("  round: {ms:.1} ms, {offers} offers");
                }
                after.push(ms);
                after_cpu.extend(cpu);
                after_offers = offers;
            }
        }
        for (name, ms, cpu, offers) in [
            (
                "first (no filters)",
                &mut first,
                &mut first_cpu,
                first_offers,
            ),
            ("after declines", &mut after, &mut after_cpu, after_offers),
        ] {
            let (min, median, max) = stats(ms);
            // A mean: some kernels (this VM's) count CPU time in scheduler ticks, and a mean of
            // tick-quantized samples is still unbiased where a median is not.
            let cpu = if cpu.is_empty() {
                "-".to_owned()
            } else {
                format!("{:.1}", cpu.iter().sum::<f64>() / cpu.len() as f64)
            };
            println!(
                "| {agents} | {frameworks} | {config} | {name} | {} | {offers} | {min:.1} | {median:.1} | {max:.1} | {cpu} | {mesos_s} |",
                ms.len()
            );
        }
    }
}
