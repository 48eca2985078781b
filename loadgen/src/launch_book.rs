//! One framework's launches, as bookkeeping (sans-IO): the offers it holds, the launches it
//! wants (each with the moment it decided to launch), the tasks under way, and what became of
//! them. [`crate::launcher`] feeds it the scheduler's events and the clock and sends the
//! accepts and declines it plans.

use crate::stats::Latencies;
use proto::{CommandInfo, Offer, OfferId, Resources, TaskId, TaskInfo, TaskState, TaskStatus};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;
use tokio::time::Instant;

/// A task label the simulated agents read: how long the task "runs", in milliseconds, before
/// it is reported `FINISHED` (the fleet's `task_duration` when absent).
pub const TASK_MS_LABEL: &str = "loadgen.task_ms";
/// Tasks in one accept (the master takes up to 1,000).
pub const MAX_TASKS_PER_ACCEPT: usize = 100;
/// Kinds of failure (state and reason) told apart.
pub const MAX_FAILURE_KINDS: usize = 16;
/// Launches wanted and not yet placed, at most; more are counted as dropped.
pub const MAX_PENDING: usize = 100_000;

/// What makes the framework want a launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Demand {
    /// Launches are submitted from outside ([`LaunchBook::submit`]). With `hold_offers`, offers
    /// are held until a submitted launch needs one; without, offers that arrive when nothing
    /// is wanted are declined (the framework revives when it wants one again).
    Submitted { hold_offers: bool },
    /// Every offer gets up to this many tasks at once (as many as fit), wanted the moment the
    /// offer arrived; an offer that fits none is declined.
    PerOffer(usize),
}

/// What each task asks for and how long it runs.
#[derive(Clone, Debug)]
pub struct TaskShape {
    pub resources: Resources,
    /// Run time, drawn uniformly from this range (inclusive), milliseconds; `None`: the fleet's.
    pub run_ms: Option<(u64, u64)>,
}

/// What became of the framework's launches so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LaunchCounts {
    pub submitted: u64,
    /// Tasks sent in accepts.
    pub sent: u64,
    pub running: u64,
    pub finished: u64,
    /// Tasks that ended in any terminal state but `FINISHED`.
    pub failed: u64,
    /// Submissions dropped because [`MAX_PENDING`] were waiting.
    pub dropped: u64,
    /// Launches wanted or under way when the counts were taken.
    pub outstanding: u64,
    /// Times the framework lost its session (and re-subscribed).
    pub disconnects: u64,
}

/// The calls a step asks for.
#[derive(Debug, Default)]
pub struct Plan {
    pub accepts: Vec<(OfferId, Vec<TaskInfo>)>,
    pub declines: Vec<OfferId>,
}

/// A task sent in an accept and not `RUNNING` yet.
#[derive(Clone, Copy, Debug)]
struct Launch {
    /// When the framework decided to launch it.
    wanted: Instant,
    /// When its accept was sent.
    sent: Instant,
    /// When its `STARTING` update arrived.
    starting: Option<Instant>,
}

/// A launch's latency split where the framework sees it: waiting for an offer (wanted →
/// accept sent); the launch's commit, `RunTasks` and the agent's first update (sent →
/// `STARTING`); that update's commit, the acknowledgement's way back to the agent, and the
/// `RUNNING` update's commit (`STARTING` → `RUNNING`). A launch with no `STARTING` seen
/// counts its whole time after the accept in the second stage.
#[derive(Clone, Debug, Default)]
pub struct Stages {
    pub to_accept: Latencies,
    pub to_starting: Latencies,
    pub to_running: Latencies,
}

impl Stages {
    fn record(&mut self, l: &Launch, running: Instant) {
        let starting = l.starting.unwrap_or(running);
        self.to_accept
            .record(l.sent.saturating_duration_since(l.wanted));
        self.to_starting
            .record(starting.saturating_duration_since(l.sent));
        self.to_running
            .record(running.saturating_duration_since(starting));
    }

    /// The first `n` launches' stages, and the rest's (as [`Latencies::split_at`]).
    pub fn split_at(&self, n: usize) -> (Stages, Stages) {
        let (a1, b1) = self.to_accept.split_at(n);
        let (a2, b2) = self.to_starting.split_at(n);
        let (a3, b3) = self.to_running.split_at(n);
        (
            Stages {
                to_accept: a1,
                to_starting: a2,
                to_running: a3,
            },
            Stages {
                to_accept: b1,
                to_starting: b2,
                to_running: b3,
            },
        )
    }
}

pub struct LaunchBook {
    prefix: String,
    shape: TaskShape,
    demand: Demand,
    /// Held offers (what is left of each) and when each arrived.
    offers: VecDeque<(Offer, Instant)>,
    pending: VecDeque<Instant>,
    /// Tasks sent and not yet `RUNNING`.
    in_flight: HashMap<TaskId, Launch>,
    running: HashSet<TaskId>,
    next_task: u64,
    pub counts: LaunchCounts,
    /// Wanted → `RUNNING`.
    pub latencies: Latencies,
    /// The same launches' latencies by stage, sample for sample.
    pub stages: Stages,
    /// Failed tasks by state and reason (the first [`MAX_FAILURE_KINDS`] kinds).
    pub failures: BTreeMap<String, u64>,
}

impl LaunchBook {
    pub fn new(prefix: &str, shape: TaskShape, demand: Demand) -> LaunchBook {
        LaunchBook {
            prefix: prefix.to_owned(),
            shape,
            demand,
            offers: VecDeque::new(),
            pending: VecDeque::new(),
            in_flight: HashMap::new(),
            running: HashSet::new(),
            next_task: 0,
            counts: LaunchCounts::default(),
            latencies: Latencies::default(),
            stages: Stages::default(),
            failures: BTreeMap::new(),
        }
    }

    /// Launches wanted or under way (sent, not yet `RUNNING`).
    pub fn outstanding(&self) -> usize {
        self.pending.len() + self.in_flight.len()
    }

    /// Launches are wanted that no offer has been found for yet.
    pub fn wants_offers(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The framework wants one more task, since `at`.
    pub fn submit(&mut self, at: Instant) {
        self.counts.submitted += 1;
        if self.pending.len() >= MAX_PENDING {
            self.counts.dropped += 1;
            return;
        }
        self.pending.push_back(at);
    }

    pub fn on_offers(&mut self, offers: Vec<Offer>, now: Instant) {
        self.offers.extend(offers.into_iter().map(|o| (o, now)));
    }

    pub fn on_rescind(&mut self, id: &OfferId) {
        self.offers.retain(|(o, _)| &o.id != id);
    }

    /// Offers made before a lost session are void.
    pub fn on_disconnected(&mut self) {
        self.offers.clear();
    }

    /// Records a status update (acknowledging it is the caller's).
    pub fn on_status(&mut self, status: &TaskStatus, now: Instant) {
        let id = &status.task_id;
        match status.state {
            TaskState::Starting => {
                if let Some(l) = self.in_flight.get_mut(id) {
                    l.starting.get_or_insert(now);
                }
            }
            TaskState::Running => {
                if let Some(launch) = self.in_flight.remove(id) {
                    self.latencies
                        .record(now.saturating_duration_since(launch.wanted));
                    self.stages.record(&launch, now);
                    self.counts.running += 1;
                    self.running.insert(id.clone());
                }
            }
            TaskState::Finished if self.forget(id) => self.counts.finished += 1,
            s if s.is_terminal() && self.forget(id) => {
                self.counts.failed += 1;
                let why = format!("{s:?} ({:?})", status.reason);
                if self.failures.len() < MAX_FAILURE_KINDS || self.failures.contains_key(&why) {
                    *self.failures.entry(why).or_default() += 1;
                }
            }
            _ => {}
        }
    }

    /// The tasks sent in accepts and not `RUNNING` (nor ended) yet.
    pub fn under_way(&self) -> Vec<TaskId> {
        let mut ids: Vec<TaskId> = self.in_flight.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Forgets an ended task; says whether it was one of ours.
    fn forget(&mut self, id: &TaskId) -> bool {
        self.running.remove(id) || self.in_flight.remove(id).is_some()
    }

    /// Matches wanted launches to held offers.
    pub fn plan(&mut self, now: Instant) -> Plan {
        let mut plan = Plan::default();
        match self.demand {
            Demand::Submitted { hold_offers } => {
                while !self.pending.is_empty() {
                    // The newest offer: the oldest are the nearest to timing out (a launch on
                    // an offer the master has just rescinded is dropped).
                    let Some((offer, _)) = self.offers.pop_back() else {
                        break;
                    };
                    let tasks = self.fill(&offer, self.pending.len(), None, now);
                    if tasks.is_empty() {
                        plan.declines.push(offer.id);
                    } else {
                        plan.accepts.push((offer.id, tasks));
                    }
                }
                if !hold_offers && self.pending.is_empty() {
                    plan.declines
                        .extend(self.offers.drain(..).map(|(o, _)| o.id));
                }
            }
            Demand::PerOffer(per_offer) => {
                while let Some((offer, arrived)) = self.offers.pop_front() {
                    let tasks = self.fill(&offer, per_offer, Some(arrived), now);
                    if tasks.is_empty() {
                        plan.declines.push(offer.id);
                    } else {
                        plan.accepts.push((offer.id, tasks));
                    }
                }
            }
        }
        plan
    }

    /// Up to `want` tasks that fit `offer` together. With `wanted_at` the tasks were wanted
    /// then; otherwise each takes the oldest pending launch's moment.
    fn fill(
        &mut self,
        offer: &Offer,
        want: usize,
        wanted_at: Option<Instant>,
        now: Instant,
    ) -> Vec<TaskInfo> {
        let mut left = offer.resources.clone();
        let mut tasks = Vec::new();
        while tasks.len() < want.min(MAX_TASKS_PER_ACCEPT) {
            let Some(rest) = left.checked_sub(&self.shape.resources) else {
                break;
            };
            let wanted = match wanted_at {
                Some(at) => at,
                None => match self.pending.pop_front() {
                    Some(at) => at,
                    None => break,
                },
            };
            left = rest;
            let task = self.task(offer);
            let launch = Launch {
                wanted: wanted.min(now),
                sent: now,
                starting: None,
            };
            self.in_flight.insert(task.task_id.clone(), launch);
            tasks.push(task);
        }
        self.counts.sent += tasks.len() as u64;
        if wanted_at.is_some() {
            self.counts.submitted += tasks.len() as u64;
        }
        tasks
    }

    fn task(&mut self, offer: &Offer) -> TaskInfo {
        self.next_task += 1;
        let mut labels = BTreeMap::new();
        if let Some((lo, hi)) = self.shape.run_ms {
            let ms = if hi > lo {
                lo + rand::random::<u64>() % (hi - lo + 1)
            } else {
                lo
            };
            labels.insert(TASK_MS_LABEL.to_owned(), ms.to_string());
        }
        TaskInfo {
            task_id: TaskId::new(format!("{}-{}", self.prefix, self.next_task)),
            name: self.prefix.clone(),
            agent_id: offer.agent_id.clone(),
            resources: self.shape.resources.clone(),
            command: CommandInfo::shell("true"),
            container: Default::default(),
            kill_grace_ms: None,
            labels,
        }
    }
}

/// Adds the failure counts of `from` to `into` (at most [`MAX_FAILURE_KINDS`] kinds).
pub fn add_failures(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (kind, n) in from {
        if into.len() < MAX_FAILURE_KINDS || into.contains_key(kind) {
            *into.entry(kind.clone()).or_default() += n;
        }
    }
}

/// `state (reason): count, ...` of failures, or "none".
pub fn failure_kinds(failures: &BTreeMap<String, u64>) -> String {
    if failures.is_empty() {
        return "none".to_owned();
    }
    let kinds: Vec<String> = failures.iter().map(|(k, n)| format!("{k}: {n}")).collect();
    kinds.join(", ")
}

/// Paces submissions at a steady rate: the `i`-th launch is wanted at `start + i / rate`.
#[derive(Clone, Debug)]
pub struct Pacer {
    start: Instant,
    period: Duration,
    issued: u64,
}

impl Pacer {
    /// `rate` launches per second (at least one per hour).
    pub fn new(start: Instant, rate: f64) -> Pacer {
        let period = Duration::try_from_secs_f64(1.0 / rate.max(1.0 / 3600.0))
            .unwrap_or(Duration::from_secs(3600));
        Pacer {
            start,
            period,
            issued: 0,
        }
    }

    /// The moments of the launches due by `now` and not yet issued.
    pub fn due(&mut self, now: Instant) -> Vec<Instant> {
        let mut out = Vec::new();
        loop {
            let at = self.start + self.period.mul_f64(self.issued as f64);
            if at > now {
                return out;
            }
            out.push(at);
            self.issued += 1;
        }
    }
}

#[cfg(test)]
mod tests;
