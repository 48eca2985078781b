//! The agent's Prometheus metrics (served by `telemetry` at `--metrics-listen`). What the core
//! decides (task states, OOM kills, drift repairs, status update resends, the unacknowledged
//! queue) is read through its accessors after each event; timings (container launch and kill,
//! checkpoint writes) are measured here in the glue; per-task usage is taken when the agent
//! reports usage to the master (every heartbeat). The list is in `docs/metrics.md`.

use agent_core::AgentCore;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use telemetry::Metrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabel {
    framework: String,
    task: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PressureLabel {
    resource: &'static str,
    kind: &'static str,
}

type FloatCounter = Counter<f64, AtomicU64>;

/// The agent's metrics. Clones share the same series.
#[derive(Clone)]
pub(crate) struct AgentMetrics {
    tasks: Family<StateLabel, Gauge>,
    oom_kills: Counter,
    drift_repairs: Counter,
    status_resends: Counter,
    status_queue: Gauge,
    launch: Histogram,
    kill: Histogram,
    checkpoint: Histogram,
    task_cpu: Family<TaskLabel, FloatCounter>,
    task_memory: Family<TaskLabel, Gauge>,
    task_pids: Family<TaskLabel, Gauge>,
    task_cpu_limit: Family<TaskLabel, Gauge<f64, AtomicU64>>,
    task_memory_limit: Family<TaskLabel, Gauge>,
    task_pids_limit: Family<TaskLabel, Gauge>,
    pressure: Family<PressureLabel, Gauge<f64, AtomicU64>>,
    /// What the core's counters were at the last `observe_core`.
    seen: std::sync::Arc<[AtomicU64; 3]>,
    /// The tasks that have per-task series (dropped as soon as the task ends).
    with_usage: std::sync::Arc<std::sync::Mutex<Vec<TaskLabel>>>,
    metrics: Metrics,
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl AgentMetrics {
    pub(crate) fn new() -> AgentMetrics {
        let mut r = Metrics::registry();
        let m = AgentMetrics {
            tasks: Family::default(),
            oom_kills: Counter::default(),
            drift_repairs: Counter::default(),
            status_resends: Counter::default(),
            status_queue: Gauge::default(),
            launch: Histogram::new(telemetry::duration_buckets()),
            kill: Histogram::new(telemetry::duration_buckets()),
            checkpoint: Histogram::new(telemetry::duration_buckets()),
            task_cpu: Family::default(),
            task_memory: Family::default(),
            task_pids: Family::default(),
            task_cpu_limit: Family::default(),
            task_memory_limit: Family::default(),
            task_pids_limit: Family::default(),
            pressure: Family::default(),
            seen: Default::default(),
            with_usage: Default::default(),
            metrics: Metrics::new(Metrics::registry()),
        };
        r.register(
            "agent_tasks",
            "Tasks this agent holds, by state (terminal ones until acknowledged)",
            m.tasks.clone(),
        );
        r.register(
            "agent_oom_kills",
            "Tasks ended as OOM-killed at their memory limit (TASK_FAILED, reason MemoryLimit)",
            m.oom_kills.clone(),
        );
        r.register(
            "agent_limit_drift_repairs",
            "Container limits found changed from outside and restored",
            m.drift_repairs.clone(),
        );
        r.register(
            "agent_status_update_resends",
            "Status updates sent again for want of an acknowledgement",
            m.status_resends.clone(),
        );
        r.register(
            "agent_status_updates_unacknowledged",
            "Status updates waiting for the framework's acknowledgement",
            m.status_queue.clone(),
        );
        r.register_with_unit(
            "agent_container_launch_duration",
            "Time to create a task's container and start its init",
            Unit::Seconds,
            m.launch.clone(),
        );
        r.register_with_unit(
            "agent_container_kill_duration",
            "Time from a kill to the task's container having exited",
            Unit::Seconds,
            m.kill.clone(),
        );
        r.register_with_unit(
            "agent_checkpoint_write_duration",
            "Time to write and fsync one task checkpoint",
            Unit::Seconds,
            m.checkpoint.clone(),
        );
        r.register_with_unit("agent_task_cpu_usage", "CPU time (user and system) a running task's container used (its executor's for an executor's task)", Unit::Seconds, m.task_cpu.clone());
        r.register_with_unit(
            "agent_task_memory_usage",
            "Memory a running task's container uses now",
            Unit::Bytes,
            m.task_memory.clone(),
        );
        r.register(
            "agent_task_pids",
            "Processes in a running task's container",
            m.task_pids.clone(),
        );
        r.register(
            "agent_task_cpus_limit",
            "CPUs a running task asked for",
            m.task_cpu_limit.clone(),
        );
        r.register_with_unit(
            "agent_task_memory_limit",
            "Memory limit of a running task",
            Unit::Bytes,
            m.task_memory_limit.clone(),
        );
        r.register(
            "agent_task_pids_limit",
            "Pids limit of a running task",
            m.task_pids_limit.clone(),
        );
        r.register(
            "agent_node_pressure_ratio",
            "Share of the last 10 s the node stalled for lack of a resource (PSI avg10; some: at least one task, full: all non-idle tasks)",
            m.pressure.clone(),
        );
        AgentMetrics {
            metrics: Metrics::new(r),
            ..m
        }
    }

    pub(crate) fn served(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Takes the core's state after an event: task states, queue, counters.
    pub(crate) fn observe_core(&self, core: &AgentCore) {
        let _scrapes_wait = self.metrics.updating();
        self.tasks.clear();
        for t in core.tasks() {
            self.tasks
                .get_or_create(&StateLabel {
                    state: t.state.name(),
                })
                .inc();
        }
        self.status_queue.set(core.unacknowledged() as i64);
        let mut with_usage = self.with_usage.lock().unwrap_or_else(|e| e.into_inner());
        with_usage.retain(|label| {
            let live = core
                .task(&proto::TaskId::new(label.task.clone()))
                .is_some_and(|t| !t.state.is_terminal());
            if !live {
                self.remove_task_series(label);
            }
            live
        });
        for (i, (now, counter)) in [
            (core.oom_kills(), &self.oom_kills),
            (core.drifts_restored(), &self.drift_repairs),
            (core.status_resends(), &self.status_resends),
        ]
        .into_iter()
        .enumerate()
        {
            let before = self.seen[i].swap(now, Ordering::Relaxed);
            counter.inc_by(now.saturating_sub(before));
        }
    }

    /// Replaces the per-task series with `tasks` (each running task's usage and limits).
    pub(crate) fn observe_usage<'a>(
        &self,
        tasks: impl Iterator<Item = (&'a agent_core::TaskView<'a>, &'a proto::ResourceUsage)>,
    ) {
        let _scrapes_wait = self.metrics.updating();
        let mut with_usage = self.with_usage.lock().unwrap_or_else(|e| e.into_inner());
        for label in with_usage.drain(..) {
            self.remove_task_series(&label);
        }
        for (t, u) in tasks {
            let label = TaskLabel {
                framework: t.framework_id.as_str().to_owned(),
                task: t.task_id.as_str().to_owned(),
            };
            let cpu_secs = u.cpu_user_us.saturating_add(u.cpu_system_us) as f64 / 1e6;
            self.task_cpu
                .get_or_create(&label)
                .inner()
                .store(cpu_secs.to_bits(), Ordering::Relaxed);
            self.task_memory
                .get_or_create(&label)
                .set(i64_of(u.mem_current_bytes));
            self.task_pids
                .get_or_create(&label)
                .set(i64_of(u.pids_current));
            self.task_cpu_limit
                .get_or_create(&label)
                .set(t.resources.cpus_milli as f64 / 1000.0);
            self.task_memory_limit
                .get_or_create(&label)
                .set(i64_of(t.resources.mem_bytes));
            self.task_pids_limit
                .get_or_create(&label)
                .set(i64_of(t.pids_limit));
            with_usage.push(label);
        }
    }

    /// The node's pressure as last read (none: the kernel has no PSI).
    pub(crate) fn observe_pressure(&self, p: Option<proto::NodePressure>) {
        let _scrapes_wait = self.metrics.updating();
        self.pressure.clear();
        let Some(p) = p else { return };
        for (resource, kind, v) in [
            ("cpu", "some", p.cpu_some_avg10),
            ("memory", "some", p.memory_some_avg10),
            ("memory", "full", p.memory_full_avg10),
            ("io", "some", p.io_some_avg10),
            ("io", "full", p.io_full_avg10),
        ] {
            self.pressure
                .get_or_create(&PressureLabel { resource, kind })
                .set(f64::from(v) / f64::from(proto::NodePressure::MAX));
        }
    }

    fn remove_task_series(&self, label: &TaskLabel) {
        self.task_cpu.remove(label);
        self.task_memory.remove(label);
        self.task_pids.remove(label);
        self.task_cpu_limit.remove(label);
        self.task_memory_limit.remove(label);
        self.task_pids_limit.remove(label);
    }

    pub(crate) fn launched(&self, took: Duration) {
        self.launch.observe(took.as_secs_f64());
    }

    pub(crate) fn killed(&self, took: Duration) {
        self.kill.observe(took.as_secs_f64());
    }

    pub(crate) fn checkpointed(&self, took: Duration) {
        self.checkpoint.observe(took.as_secs_f64());
    }
}
