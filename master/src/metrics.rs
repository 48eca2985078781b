//! The master's Prometheus metrics (served by `telemetry` at `--metrics-listen`). Everything
//! the core knows is read from what it already publishes — the `ClusterState` snapshot and
//! `Master::stats` — at most every `SNAPSHOT_INTERVAL`, so metrics add no work to the core's
//! event handling; the edge counts connections and frames, and times allocation passes around
//! the core's `handle_timeout`. The list is in `docs/metrics.md`.

use master_core::Stats;
use master_raft::ReplicatedRegistry;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;
use proto::{AgentStatus, ClusterState, Role};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use telemetry::Metrics;
use tokio::sync::watch;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OfferLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectedLabel {
    connected: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The master's metrics. Clones share the same series.
#[derive(Clone)]
pub struct MasterMetrics {
    agents: Family<StateLabel, Gauge>,
    frameworks: Family<ConnectedLabel, Gauge>,
    tasks: Family<StateLabel, Gauge>,
    cpus: Family<StateLabel, FloatGauge>,
    memory: Family<StateLabel, Gauge>,
    offers_outstanding: Gauge,
    offers: Family<OfferLabel, Counter>,
    allocation_passes: Counter,
    allocations_held: Counter,
    allocation_pass: Histogram,
    launch: Histogram,
    role_share: Family<RoleLabel, FloatGauge>,
    role_weight: Family<RoleLabel, FloatGauge>,
    role_starved: Family<RoleLabel, FloatGauge>,
    raft_term: Gauge,
    raft_is_leader: Gauge,
    raft_last_log_index: Gauge,
    raft_applied_index: Gauge,
    raft_lag: Family<PeerLabel, Gauge>,
    proposals_in_flight: Gauge,
    connections: Family<RoleLabel, Gauge>,
    frames: Family<DirectionLabel, Counter>,
    metrics: Metrics,
}

const AGENT_STATES: [AgentStatus; 4] = [
    AgentStatus::Active,
    AgentStatus::Draining,
    AgentStatus::Deactivated,
    AgentStatus::Unreachable,
];

fn agent_state(s: AgentStatus) -> &'static str {
    match s {
        AgentStatus::Active => "active",
        AgentStatus::Draining => "draining",
        AgentStatus::Deactivated => "deactivated",
        AgentStatus::Unreachable => "unreachable",
    }
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Default for MasterMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl MasterMetrics {
    pub fn new() -> MasterMetrics {
        let mut r = Metrics::registry();
        let m = MasterMetrics {
            agents: Family::default(),
            frameworks: Family::default(),
            tasks: Family::default(),
            cpus: Family::default(),
            memory: Family::default(),
            offers_outstanding: Gauge::default(),
            offers: Family::default(),
            allocation_passes: Counter::default(),
            allocations_held: Counter::default(),
            allocation_pass: Histogram::new(telemetry::duration_buckets()),
            launch: Histogram::new(telemetry::duration_buckets()),
            role_share: Family::default(),
            role_weight: Family::default(),
            role_starved: Family::default(),
            raft_term: Gauge::default(),
            raft_is_leader: Gauge::default(),
            raft_last_log_index: Gauge::default(),
            raft_applied_index: Gauge::default(),
            raft_lag: Family::default(),
            proposals_in_flight: Gauge::default(),
            connections: Family::default(),
            frames: Family::default(),
            metrics: Metrics::new(Metrics::registry()),
        };
        r.register(
            "master_agents",
            "Agents in the registry by state (leader only)",
            m.agents.clone(),
        );
        r.register(
            "master_frameworks",
            "Registered frameworks, by whether connected (leader only)",
            m.frameworks.clone(),
        );
        r.register("master_tasks", "Tasks the registry holds, by state (terminal ones as kept for `corral state`; leader only)", m.tasks.clone());
        r.register(
            "master_cpus",
            "CPUs of reachable agents: total, used (launched or launching), offered (leader only)",
            m.cpus.clone(),
        );
        r.register_with_unit(
            "master_memory",
            "Memory of reachable agents: total, used, offered (leader only)",
            Unit::Bytes,
            m.memory.clone(),
        );
        r.register(
            "master_offers_outstanding",
            "Offers made and not yet accepted, declined or rescinded",
            m.offers_outstanding.clone(),
        );
        r.register(
            "master_offers",
            "Offers by outcome: made, declined by the framework, rescinded by the master",
            m.offers.clone(),
        );
        r.register(
            "master_allocation_passes",
            "Allocation passes run",
            m.allocation_passes.clone(),
        );
        r.register(
            "master_allocations_held",
            "Allocation passes held back because too many registry changes were in flight \
             (admission control: no new offers until the registry catches up)",
            m.allocations_held.clone(),
        );
        r.register_with_unit(
            "master_allocation_pass_duration",
            "Time the core spent in a timer event that ran an allocation pass",
            Unit::Seconds,
            m.allocation_pass.clone(),
        );
        r.register_with_unit(
            "master_launch_duration",
            "Time from a launch's commit (TasksAdded) to its task's TASK_RUNNING",
            Unit::Seconds,
            m.launch.clone(),
        );
        r.register(
            "master_role_dominant_share",
            "Dominant share of each role (allocated and offered over the reachable total)",
            m.role_share.clone(),
        );
        r.register(
            "master_role_weight",
            "Weight of each role",
            m.role_weight.clone(),
        );
        r.register_with_unit(
            "master_role_starved",
            "Longest time a framework of the role that wants offers has gone without one",
            Unit::Seconds,
            m.role_starved.clone(),
        );
        r.register("master_raft_term", "Current raft term", m.raft_term.clone());
        r.register(
            "master_raft_is_leader",
            "1 if this master leads and serves clients, else 0",
            m.raft_is_leader.clone(),
        );
        r.register(
            "master_raft_last_log_index",
            "Index of the last entry of this master's raft log",
            m.raft_last_log_index.clone(),
        );
        r.register(
            "master_raft_applied_index",
            "Index of the last raft entry applied to the registry (committed)",
            m.raft_applied_index.clone(),
        );
        r.register(
            "master_raft_follower_lag",
            "On the leader: log entries each other master is behind",
            m.raft_lag.clone(),
        );
        r.register(
            "master_proposals_in_flight",
            "Registry changes proposed and not yet committed",
            m.proposals_in_flight.clone(),
        );
        r.register(
            "master_connections",
            "Open client and master connections by the peer's certificate role",
            m.connections.clone(),
        );
        r.register(
            "master_frames",
            "Protocol frames received (in) and sent (out) on client streams",
            m.frames.clone(),
        );
        MasterMetrics {
            metrics: Metrics::new(r),
            ..m
        }
    }

    /// What `telemetry::serve` encodes. Before each encoding, the gauges are refreshed from the
    /// latest published snapshot and the raft status.
    pub(crate) fn served(
        &self,
        snapshot: watch::Receiver<Arc<ClusterState>>,
        registry: ReplicatedRegistry,
        is_leader: Arc<dyn Fn() -> bool + Send + Sync>,
    ) -> Metrics {
        let me = self.clone();
        self.metrics.set_refresh(Box::new(move || {
            let leads = is_leader();
            let state = snapshot.borrow().clone();
            me.refresh_cluster(leads.then_some(&*state));
            me.refresh_raft(&registry, leads);
        }));
        self.metrics.clone()
    }

    fn refresh_cluster(&self, state: Option<&ClusterState>) {
        for f in [&self.agents, &self.tasks, &self.memory] {
            f.clear();
        }
        for f in [&self.role_share, &self.role_weight, &self.role_starved] {
            f.clear();
        }
        self.cpus.clear();
        self.frameworks.clear();
        let Some(state) = state else { return };
        for s in AGENT_STATES {
            let n = state.agents.iter().filter(|a| a.status == s).count();
            self.agents
                .get_or_create(&StateLabel {
                    state: agent_state(s).into(),
                })
                .set(n as i64);
        }
        for connected in [true, false] {
            let n = state
                .frameworks
                .iter()
                .filter(|f| f.connected == connected)
                .count();
            let label = ConnectedLabel {
                connected: if connected { "true" } else { "false" },
            };
            self.frameworks.get_or_create(&label).set(n as i64);
        }
        for t in &state.tasks {
            self.tasks
                .get_or_create(&StateLabel {
                    state: t.state.name().into(),
                })
                .inc();
        }
        let (mut cpus, mut mem) = ([0u64; 3], [0u64; 3]);
        for a in state
            .agents
            .iter()
            .filter(|a| a.status != AgentStatus::Unreachable)
        {
            for (i, r) in [&a.total, &a.used, &a.offered].into_iter().enumerate() {
                cpus[i] += r.cpus_milli;
                mem[i] += r.mem_bytes;
            }
        }
        for (i, name) in ["total", "used", "offered"].into_iter().enumerate() {
            let label = StateLabel { state: name.into() };
            self.cpus.get_or_create(&label).set(cpus[i] as f64 / 1000.0);
            self.memory.get_or_create(&label).set(i64_of(mem[i]));
        }
        for role in &state.roles {
            let label = RoleLabel {
                role: role.name.clone(),
            };
            self.role_share
                .get_or_create(&label)
                .set(role.dominant_share);
            self.role_weight.get_or_create(&label).set(role.weight);
            self.role_starved
                .get_or_create(&label)
                .set(role.starved_ms as f64 / 1000.0);
        }
    }

    fn refresh_raft(&self, registry: &ReplicatedRegistry, leads: bool) {
        let status = registry.status();
        self.raft_term.set(i64_of(status.term));
        self.raft_is_leader.set(i64::from(leads));
        self.raft_last_log_index
            .set(i64_of(status.last_log_index.unwrap_or(0)));
        self.raft_applied_index
            .set(i64_of(status.last_applied_index.unwrap_or(0)));
        self.raft_lag.clear();
        for (id, lag) in &status.lag {
            self.raft_lag
                .get_or_create(&PeerLabel {
                    peer: id.to_string(),
                })
                .set(i64_of(*lag));
        }
    }

    /// Takes the core's counters: `last` is what this core reported before (zero for a core
    /// that just started), so the exported counters keep rising across leader changes.
    /// Commit → TASK_RUNNING of launches the core timed.
    pub(crate) fn launches(&self, latencies: Vec<Duration>) {
        for d in latencies {
            self.launch.observe(d.as_secs_f64());
        }
    }

    pub(crate) fn observe_core(&self, last: &mut Stats, now: Stats) {
        let delta = |a: u64, b: u64| b.saturating_sub(a);
        for (outcome, before, after) in [
            ("made", last.offers_made, now.offers_made),
            ("declined", last.offers_declined, now.offers_declined),
            ("rescinded", last.offers_rescinded, now.offers_rescinded),
        ] {
            self.offers
                .get_or_create(&OfferLabel { outcome })
                .inc_by(delta(before, after));
        }
        self.allocation_passes
            .inc_by(delta(last.allocation_passes, now.allocation_passes));
        self.allocations_held
            .inc_by(delta(last.allocations_held, now.allocations_held));
        self.offers_outstanding.set(now.outstanding_offers as i64);
        self.proposals_in_flight.set(now.in_flight_proposals as i64);
        *last = now;
    }

    /// A master that stopped leading has no offers or proposals of its own.
    pub(crate) fn core_stopped(&self) {
        self.offers_outstanding.set(0);
        self.proposals_in_flight.set(0);
    }

    pub(crate) fn allocation_pass(&self, took: Duration) {
        self.allocation_pass.observe(took.as_secs_f64());
    }

    /// Counts an open connection until the guard is dropped.
    pub(crate) fn connection(&self, role: Role) -> ConnectionGuard {
        let gauge = self
            .connections
            .get_or_create(&RoleLabel {
                role: role.as_str().into(),
            })
            .clone();
        gauge.inc();
        ConnectionGuard(gauge)
    }

    pub(crate) fn frame_in(&self) {
        self.frames
            .get_or_create(&DirectionLabel { direction: "in" })
            .inc();
    }

    pub(crate) fn frame_out(&self) {
        self.frames
            .get_or_create(&DirectionLabel { direction: "out" })
            .inc();
    }
}

pub(crate) struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
