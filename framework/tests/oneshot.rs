//! The one-shot scheduler (`framework::oneshot`, what `corral run` is) against the master
//! core's `Sim`: a real master state machine, scripted agents, a virtual clock and leader
//! changes at chosen moments, no network. The harness below is the driver: it hands the
//! scheduler every frame of its session, sends its calls, answers its output reads, and
//! turns a leader change into `Disconnected` + `Resubscribed` as `framework::Scheduler` does.

use framework::oneshot::{
    exit_code, Action, OneShotScheduler, OneShotSpec, Outcome, Progress, MAX_RELAUNCHES,
};
use framework::SchedulerEvent;
use master_core::testing::Sim;
use master_core::{MasterConfig, RegistryOp, SessionId, TaskKey};
use proto::{
    AgentId, AgentToMaster, ClientFrame, CommandInfo, FrameworkCall, FrameworkEvent, FrameworkId,
    Resources, ServerFrame, StatusReason, StatusSource, StatusUuid, TaskId, TaskInfo, TaskState,
    TaskStatus,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How often the harness hands the scheduler what arrived (virtual time).
const TICK: Duration = Duration::from_millis(5);
const FIRST_ID: &str = "job-0a1b2c3d";
const PLACEMENT: Duration = Duration::from_secs(60);

fn spec(resources: &str, placement_timeout: Duration) -> OneShotSpec {
    OneShotSpec {
        task: TaskInfo {
            task_id: TaskId::new(FIRST_ID),
            name: "job".to_owned(),
            agent_id: AgentId::new(""),
            resources: resources.parse().expect("resources"),
            command: CommandInfo::shell("echo hi"),
            container: Default::default(),
            kill_grace_ms: None,
            labels: Default::default(),
        },
        placement_timeout,
        max_relaunches: MAX_RELAUNCHES,
    }
}

fn relaunch_id(n: u32) -> TaskId {
    TaskId::new(format!("{FIRST_ID}-r{n}"))
}

/// A change to a status an agent reports.
type Edit = fn(&mut TaskStatus);

/// One `corral run` against a simulated cluster.
struct Run {
    sim: Sim,
    /// The framework's session (it changes with each leader change).
    session: SessionId,
    machine: OneShotScheduler,
    start: Instant,
    /// Every call the scheduler made, in order (sent or held).
    calls: Vec<FrameworkCall>,
    /// While true, calls wait in `held` instead of reaching the master.
    hold: bool,
    held: Vec<FrameworkCall>,
    progress: Vec<Progress>,
    outcome: Option<Outcome>,
    /// What reading the task's output returns.
    output: Result<(), String>,
    /// Each output read: the task, and whether its agent still waited for the acknowledgement
    /// of the task's final update at that moment.
    output_reads: Vec<(TaskId, bool)>,
    rescinds: usize,
    /// A leader change happened; the next `Subscribed` is the re-subscription.
    resubscribing: bool,
}

impl Run {
    /// Agents (name, resources, whether they run tasks by themselves) register, then the
    /// framework subscribes as `corral run` does (partition-aware, 60 s failover timeout).
    fn new(spec: OneShotSpec, agents: &[(&str, &str, bool)]) -> Run {
        let mut sim = Sim::new(MasterConfig::default(), Instant::now());
        for (name, resources, auto) in agents {
            sim.add_agent(name, resources, *auto);
        }
        let mut info = framework::framework_info("job");
        info.failover_timeout_ms = 60_000;
        let session = sim.add_framework_with("job", info, None);
        // Only the scheduler under test acknowledges.
        sim.frameworks
            .get_mut(&session)
            .expect("framework")
            .auto_ack = false;
        let start = sim.now;
        let mut run = Run {
            machine: OneShotScheduler::new(spec, start),
            sim,
            session,
            start,
            calls: Vec::new(),
            hold: false,
            held: Vec::new(),
            progress: Vec::new(),
            outcome: None,
            output: Ok(()),
            output_reads: Vec::new(),
            rescinds: 0,
            resubscribing: false,
        };
        run.deliver();
        assert_ne!(run.framework_id().as_str(), "?", "subscribed");
        run
    }

    fn framework_id(&self) -> FrameworkId {
        self.sim.framework_id(self.session)
    }

    fn key(&self, task_id: &TaskId) -> TaskKey {
        TaskKey {
            framework_id: self.framework_id(),
            task_id: task_id.clone(),
        }
    }

    /// Hands the scheduler every frame its session received, and its actions to the master,
    /// until both are quiet.
    fn deliver(&mut self) {
        loop {
            self.drain();
            let frames = self.sim.take(self.session);
            if frames.is_empty() {
                return;
            }
            for frame in frames {
                let now = self.sim.now;
                let event = match frame {
                    ServerFrame::Framework(FrameworkEvent::Subscribed { .. })
                        if self.resubscribing =>
                    {
                        self.resubscribing = false;
                        SchedulerEvent::Resubscribed {
                            master: "the new leader".to_owned(),
                        }
                    }
                    ServerFrame::Framework(ev) => {
                        if matches!(ev, FrameworkEvent::Rescind { .. }) {
                            self.rescinds += 1;
                        }
                        SchedulerEvent::Framework(ev)
                    }
                    ServerFrame::Error(e) => {
                        SchedulerEvent::Framework(FrameworkEvent::Error { message: e.message })
                    }
                    _ => continue,
                };
                self.machine.handle_event(now, event);
                self.drain();
            }
        }
    }

    fn drain(&mut self) {
        while let Some(action) = self.machine.poll() {
            match action {
                Action::Call(call) => {
                    self.calls.push(call.clone());
                    if self.hold {
                        self.held.push(call);
                    } else {
                        self.sim.send(self.session, ClientFrame::Framework(call));
                    }
                }
                Action::Progress(p) => self.progress.push(p),
                Action::ReadOutput { task_id } => {
                    let unacked = self.final_update_unacked(&task_id);
                    self.output_reads.push((task_id, unacked));
                    self.machine.handle_output_read(self.output.clone());
                }
                Action::Finish(outcome) => {
                    assert!(self.outcome.is_none(), "a second outcome: {outcome:?}");
                    assert!(self.machine.is_done());
                    self.outcome = Some(outcome);
                }
            }
        }
    }

    /// Whether an agent holds a final update of `task_id` it has no acknowledgement for.
    fn final_update_unacked(&self, task_id: &TaskId) -> bool {
        self.sim.agents.values().any(|a| {
            a.unacked
                .iter()
                .any(|(k, s)| k.task_id == *task_id && s.state.is_terminal())
        })
    }

    /// Sends the calls held so far, in order, and stops holding.
    fn release(&mut self) {
        self.hold = false;
        for call in std::mem::take(&mut self.held) {
            self.sim.send(self.session, ClientFrame::Framework(call));
        }
        self.deliver();
    }

    /// Lets `d` of virtual time pass (less if the run ends), firing the placement timer.
    fn advance(&mut self, d: Duration) {
        let target = self.sim.now + d;
        while self.sim.now < target && self.outcome.is_none() {
            let mut next = (self.sim.now + TICK).min(target);
            if let Some(t) = self.machine.poll_timeout() {
                next = next.min(t.max(self.sim.now));
            }
            let step = next - self.sim.now;
            self.sim.advance(step);
            self.deliver();
            if self
                .machine
                .poll_timeout()
                .is_some_and(|t| t <= self.sim.now)
            {
                self.machine.handle_timeout(self.sim.now);
                self.deliver();
            }
        }
    }

    /// Advances until `done` holds; fails naming `what` after `limit` of virtual time.
    fn until(&mut self, what: &str, limit: Duration, done: impl Fn(&Run) -> bool) {
        let end = self.sim.now + limit;
        while !done(self) {
            assert!(
                self.sim.now < end && self.outcome.is_none(),
                "{what}: not within {limit:?}; progress {:#?}\noutcome {:?}",
                self.progress,
                self.outcome
            );
            self.advance(TICK);
        }
    }

    /// A leader change (see `Sim::leader_change`): the session drops (`Disconnected`), calls
    /// in flight are lost, every client reconnects to the new leader and the framework
    /// re-subscribes (`Resubscribed`). Returns old session → new session.
    fn failover(
        &mut self,
        committed_unseen: usize,
        frameworks_first: bool,
    ) -> BTreeMap<SessionId, SessionId> {
        let now = self.sim.now;
        let reason = "the master lost its leadership".to_owned();
        self.machine
            .handle_event(now, SchedulerEvent::Disconnected { reason });
        self.drain();
        self.held.clear();
        self.hold = false;
        let _lost = self.sim.take(self.session);
        let moved = self.sim.leader_change(committed_unseen, frameworks_first);
        self.session = moved[&self.session];
        self.resubscribing = true;
        self.deliver();
        moved
    }

    fn interrupt(&mut self) {
        self.machine.handle_interrupt();
        self.deliver();
    }

    /// The agent session whose offer the first launch accepted.
    fn agent_of_offer(&self) -> SessionId {
        let Some(Progress::Launched { agent_id, .. }) = self.progress.first() else {
            panic!("no launch: {:?}", self.progress);
        };
        *self
            .sim
            .agents
            .iter()
            .find(|(_, a)| a.agent_id.as_ref() == Some(agent_id))
            .map(|(s, _)| s)
            .expect("the agent that offered")
    }

    /// The agent session that holds `task_id`.
    fn agent_of(&self, task_id: &TaskId) -> SessionId {
        *self
            .sim
            .agents
            .iter()
            .find(|(_, a)| a.tasks.keys().any(|k| k.task_id == *task_id))
            .map(|(s, _)| s)
            .unwrap_or_else(|| panic!("no agent has task {task_id}"))
    }

    /// The agent running `task_id` reports `state` (as a real agent: one unacknowledged
    /// update at a time, later ones queued), with `edit` applied to the status.
    fn agent_reports(&mut self, task_id: &TaskId, state: TaskState, edit: Edit) {
        let session = self.agent_of(task_id);
        let key = self.key(task_id);
        let agent = self.sim.agents.get_mut(&session).expect("agent");
        agent.tasks.get_mut(&key).expect("task").1 = state;
        agent.seq += 1;
        let mut status = TaskStatus::new(task_id.clone(), state, StatusSource::Executor);
        status.agent_id = agent.agent_id.clone();
        status.uuid = Some(StatusUuid(format!("test-{}", agent.seq)));
        status.seq = agent.seq;
        edit(&mut status);
        if agent.unacked.contains_key(&key) {
            agent.queued.entry(key).or_default().push_back(status);
        } else {
            agent.unacked.insert(key.clone(), status.clone());
            let framework_id = key.framework_id;
            let frame = AgentToMaster::StatusUpdate {
                framework_id,
                status,
            };
            self.sim.send(session, ClientFrame::Agent(frame));
        }
        self.deliver();
    }

    /// The states shown for `task_id`, in order.
    fn states(&self, task_id: &TaskId) -> Vec<TaskState> {
        self.progress
            .iter()
            .filter_map(|p| match p {
                Progress::StateChanged(s) if s.task_id == *task_id => Some(s.state),
                _ => None,
            })
            .collect()
    }

    fn shown(&self, task_id: &TaskId, state: TaskState) -> bool {
        self.states(task_id).contains(&state)
    }

    fn relaunches(&self) -> Vec<(TaskId, TaskId)> {
        self.progress
            .iter()
            .filter_map(|p| match p {
                Progress::Relaunching { task_id, next } => Some((task_id.clone(), next.clone())),
                _ => None,
            })
            .collect()
    }

    fn accepts(&self) -> Vec<TaskId> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                FrameworkCall::Accept { operations, .. } => Some(operations),
                _ => None,
            })
            .flat_map(|ops| ops.iter())
            .flat_map(|op| match op {
                proto::OfferOperation::Launch { tasks } => tasks.clone(),
                proto::OfferOperation::LaunchGroup { tasks, .. } => tasks.clone(),
            })
            .map(|t| t.task_id)
            .collect()
    }

    fn reconciles(&self) -> Vec<TaskId> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                FrameworkCall::Reconcile { tasks } => Some(tasks),
                _ => None,
            })
            .flat_map(|t| t.iter().map(|r| r.task_id.clone()))
            .collect()
    }

    /// `RunTasks` the agents received for `task_id`.
    fn runs(&self, task_id: &TaskId) -> u32 {
        self.sim.runs.get(&self.key(task_id)).copied().unwrap_or(0)
    }

    fn exit(&self) -> u8 {
        self.outcome.as_ref().expect("the run ended").exit_code()
    }

    /// The run ended cleanly: the last call is `Teardown`, the master removed the framework,
    /// no task was sent to an agent twice and every update the agents sent was acknowledged.
    fn check_ended(&self) {
        assert!(self.machine.is_done());
        assert_eq!(self.calls.last(), Some(&FrameworkCall::Teardown));
        let registry = self.sim.master.registry();
        assert!(registry.framework_removed(&self.framework_id()));
        self.sim.check_no_double_run().expect("no task sent twice");
        for a in self.sim.agents.values() {
            let mine: Vec<_> = a
                .unacked
                .iter()
                .filter(|(k, s)| {
                    k.framework_id == self.framework_id() && s.state != TaskState::Killed
                })
                .collect();
            assert!(mine.is_empty(), "updates never acknowledged: {mine:?}");
        }
    }
}

/// A run of a 1-cpu task on a cluster of one 2-cpu agent (that runs tasks by itself when
/// `auto`).
fn one_agent(auto: bool) -> Run {
    let task = spec("cpus:1;mem:512MiB", PLACEMENT);
    Run::new(task, &[("h1", "cpus:2;mem:2GiB", auto)])
}

fn running(run: &Run, task_id: &TaskId) -> bool {
    run.shown(task_id, TaskState::Running)
}

#[test]
fn a_task_is_launched_runs_and_finishes_with_its_output_read_before_the_last_acknowledgement() {
    let mut run = one_agent(true);
    let id = TaskId::new(FIRST_ID);
    run.until("running", Duration::from_secs(5), |r| running(r, &id));
    match &run.progress[0] {
        Progress::Launched {
            task_id,
            hostname,
            resources,
            ..
        } => {
            assert_eq!((task_id, hostname.as_str()), (&id, "h1"));
            assert_eq!(
                resources,
                &"cpus:1;mem:512MiB".parse::<Resources>().unwrap()
            );
        }
        other => panic!("first progress: {other:?}"),
    }
    assert!(
        matches!(
            run.calls[..2],
            [FrameworkCall::Accept { .. }, FrameworkCall::Suppress { .. }]
        ),
        "accept, then suppress offers: {:?}",
        run.calls
    );
    assert_eq!(run.accepts(), vec![id.clone()]);
    assert_eq!(run.runs(&id), 1);

    run.agent_reports(&id, TaskState::Finished, |s| s.exit_code = Some(0));

    assert_eq!(
        run.output_reads,
        vec![(id.clone(), true)],
        "the output is read while the agent still keeps the task"
    );
    match run.outcome.as_ref().expect("ended") {
        Outcome::Ended { status, output } => {
            assert_eq!(status.state, TaskState::Finished);
            assert_eq!(output, &Some(Ok(())));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(run.exit(), 0);
    assert_eq!(
        run.states(&id),
        vec![TaskState::Running, TaskState::Finished]
    );
    assert!(
        !run.final_update_unacked(&id),
        "acknowledged after the read"
    );
    run.check_ended();
}

#[test]
fn a_failed_or_killed_task_gives_its_exit_code_or_128_plus_its_signal() {
    let cases: [(TaskState, Edit, u8); 5] = [
        (TaskState::Failed, |s| s.exit_code = Some(3), 3),
        (TaskState::Failed, |s| s.exit_code = Some(256 + 7), 7),
        (TaskState::Failed, |s| s.signal = Some(9), 137),
        (
            TaskState::Failed,
            |s| s.reason = Some(StatusReason::MemoryLimit),
            137,
        ),
        (TaskState::Killed, |_| {}, 143),
    ];
    for (state, edit, code) in cases {
        let mut run = one_agent(true);
        let id = TaskId::new(FIRST_ID);
        run.until("running", Duration::from_secs(5), |r| running(r, &id));
        run.agent_reports(&id, state, edit);
        let case = format!("{state} -> {code}");
        assert_eq!(run.exit(), code, "{case}");
        assert_eq!(run.output_reads, vec![(id.clone(), true)], "{case}");
        let Some(Outcome::Ended { status, .. }) = &run.outcome else {
            panic!("{case}: {:?}", run.outcome);
        };
        assert_eq!((status.state, exit_code(status)), (state, code), "{case}");
        run.check_ended();
    }
}

#[test]
fn an_output_that_cannot_be_read_gives_125_and_the_update_is_still_acknowledged() {
    let mut run = one_agent(true);
    run.output = Err("no leader in time".to_owned());
    let id = TaskId::new(FIRST_ID);
    run.until("running", Duration::from_secs(5), |r| running(r, &id));
    run.agent_reports(&id, TaskState::Finished, |s| s.exit_code = Some(0));
    assert_eq!(run.exit(), 125);
    assert!(matches!(
        run.outcome,
        Some(Outcome::Ended { output: Some(Err(ref e)), .. }) if e == "no leader in time"
    ));
    run.check_ended();
}

#[test]
fn a_task_no_agent_can_hold_times_out_naming_the_largest_offer() {
    let timeout = Duration::from_secs(5);
    let mut run = Run::new(
        spec("cpus:2;mem:512MiB", timeout),
        &[("h1", "cpus:1;mem:1GiB", true)],
    );
    run.until("the outcome", Duration::from_secs(30), |r| {
        r.outcome.is_some()
    });
    let waited = run.sim.now - run.start;
    assert!(
        waited >= timeout && waited < timeout + TICK,
        "gave up after {waited:?}"
    );
    match run.outcome.as_ref().expect("ended") {
        Outcome::NotPlaced {
            task_id,
            wants,
            waited,
            largest,
        } => {
            assert_eq!(task_id.as_str(), FIRST_ID);
            assert_eq!(wants.cpus_milli, 2_000);
            assert_eq!(*waited, timeout);
            let largest = largest.as_ref().expect("an offer was seen");
            assert_eq!((largest.cpus_milli, largest.mem_bytes), (1_000, 1 << 30));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(run.exit(), 125);
    assert!(run.accepts().is_empty());
    // Declined for a second each time, so offered again while it waits.
    let declines: Vec<_> = run
        .calls
        .iter()
        .filter_map(|c| match c {
            FrameworkCall::Decline { filters, .. } => filters.as_ref()?.refuse_seconds,
            _ => None,
        })
        .collect();
    assert!(declines.len() >= 3, "{declines:?}");
    assert!(declines.iter().all(|r| *r == 1.0), "{declines:?}");
    assert!(run.sim.launches.is_empty());
    run.check_ended();
}

#[test]
fn an_accept_of_a_rescinded_offer_comes_back_dropped_and_the_task_runs_elsewhere_once() {
    let agents = [
        ("h1", "cpus:2;mem:2GiB", true),
        ("h2", "cpus:2;mem:2GiB", true),
    ];
    let mut run = Run::new(spec("cpus:1;mem:512MiB", PLACEMENT), &agents);
    let id = TaskId::new(FIRST_ID);
    run.hold = true;
    run.until("an accept", Duration::from_secs(5), |r| {
        !r.accepts().is_empty()
    });
    // The agent of the accepted offer goes away before the accept reaches the master: its
    // offers are rescinded.
    let gone = run.agent_of_offer();
    run.sim.disconnect(gone);
    run.deliver();
    assert!(run.rescinds >= 1, "the offer was rescinded");
    run.release();

    let next = relaunch_id(1);
    run.until("the relaunch runs", Duration::from_secs(5), |r| {
        running(r, &next)
    });
    let dropped: Vec<(TaskState, Option<StatusReason>)> = run
        .progress
        .iter()
        .filter_map(|p| match p {
            Progress::StateChanged(s) if s.task_id == id => Some((s.state, s.reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        dropped,
        vec![(TaskState::Dropped, Some(StatusReason::InvalidOffers))]
    );
    assert_eq!(run.relaunches(), vec![(id.clone(), next.clone())]);
    assert_eq!(run.runs(&id), 0, "the first launch ran nowhere");
    assert_eq!(run.runs(&next), 1);
    assert_ne!(run.agent_of(&next), gone);
    run.agent_reports(&next, TaskState::Finished, |_| {});
    assert_eq!(run.exit(), 0);
    run.check_ended();
}

/// Accepts an offer while the master cannot commit, so the launch awaits its commit.
fn launch_awaiting_commit(run: &mut Run, task_id: &TaskId) {
    run.sim.auto_commit = false;
    let launches = run.accepts().len();
    run.until("an accept", Duration::from_secs(5), |r| {
        r.accepts().len() > launches
    });
    assert_eq!(run.accepts().last(), Some(task_id));
    let held: Vec<&RegistryOp> = run.sim.held.iter().collect();
    assert!(
        matches!(held[..], [RegistryOp::TasksAdded { ref tasks, .. }] if tasks[0].task_id == *task_id),
        "the launch awaits its commit: {held:?}"
    );
}

#[test]
fn a_leader_change_between_a_launch_commit_and_its_send_relaunches_the_task_which_runs_once() {
    // Committed unseen (the new leader has it; the agent re-registers without it: TASK_GONE)
    // or lost (the new leader never heard of it: TASK_UNKNOWN); either side reconnects first.
    for (committed_unseen, frameworks_first) in [(1, false), (1, true), (0, false), (0, true)] {
        let case =
            format!("committed_unseen={committed_unseen} frameworks_first={frameworks_first}");
        let mut run = one_agent(true);
        let id = TaskId::new(FIRST_ID);
        launch_awaiting_commit(&mut run, &id);

        run.failover(committed_unseen, frameworks_first);
        let next = relaunch_id(1);
        run.until(&case, Duration::from_secs(10), |r| running(r, &next));

        let never = if committed_unseen == 1 {
            TaskState::Gone
        } else {
            TaskState::Unknown
        };
        assert_eq!(run.states(&id), vec![never], "{case}");
        assert_eq!(run.relaunches(), vec![(id.clone(), next.clone())], "{case}");
        assert!(
            run.reconciles().contains(&id),
            "{case}: reconciled after re-subscribing"
        );
        assert_eq!(run.accepts(), vec![id.clone(), next.clone()], "{case}");
        assert_eq!(
            (run.runs(&id), run.runs(&next)),
            (0, 1),
            "{case}: runs exactly once"
        );
        run.agent_reports(&next, TaskState::Finished, |_| {});
        assert_eq!(run.exit(), 0, "{case}");
        assert_eq!(run.output_reads, vec![(next.clone(), true)], "{case}");
        run.check_ended();
    }
}

#[test]
fn a_leader_change_after_running_is_reconciled_without_a_relaunch() {
    for frameworks_first in [false, true] {
        let case = format!("frameworks_first={frameworks_first}");
        let mut run = one_agent(true);
        let id = TaskId::new(FIRST_ID);
        run.until("running", Duration::from_secs(5), |r| running(r, &id));
        let calls_before = run.calls.len();

        run.failover(0, frameworks_first);
        run.advance(Duration::from_secs(5));

        assert_eq!(run.reconciles(), vec![id.clone()], "{case}");
        assert!(
            run.calls[calls_before..].iter().all(|c| !matches!(
                c,
                FrameworkCall::Revive { .. } | FrameworkCall::Accept { .. }
            )),
            "{case}: {:?}",
            &run.calls[calls_before..]
        );
        assert!(run.relaunches().is_empty(), "{case}");
        assert_eq!(
            run.states(&id),
            vec![TaskState::Running],
            "{case}: shown once"
        );
        assert!(run.outcome.is_none(), "{case}");
        run.agent_reports(&id, TaskState::Failed, |s| s.exit_code = Some(4));
        assert_eq!(run.exit(), 4, "{case}");
        assert_eq!(run.runs(&id), 1, "{case}");
        run.check_ended();
    }
}

/// The RUNNING update is lost with the deposed leader (its commit never happened): the new
/// leader learns the task runs from the agent's re-registration, and the scheduler from its
/// reconciliation or from the agent's resent update, whichever comes first; the other is a
/// repeat (acknowledged, not shown). Nothing is launched again.
#[test]
fn a_running_update_lost_with_the_leader_is_picked_up_by_reconciliation() {
    for frameworks_first in [false, true] {
        let case = format!("frameworks_first={frameworks_first}");
        let mut run = one_agent(false);
        // As a real agent, it resends an unacknowledged update (every 10 s here).
        run.sim.resend_unacked = Some(Duration::from_secs(10));
        let id = TaskId::new(FIRST_ID);
        run.until("sent to the agent", Duration::from_secs(5), |r| {
            r.runs(&id) == 1
        });
        run.sim.auto_commit = false;
        run.agent_reports(&id, TaskState::Running, |_| {});
        assert!(
            matches!(
                run.sim.held.front(),
                Some(RegistryOp::TaskStateChanged { .. })
            ),
            "{case}: RUNNING awaits its commit: {:?}",
            run.sim.held
        );
        assert!(run.states(&id).is_empty(), "{case}");

        run.failover(0, frameworks_first);
        run.until(&case, Duration::from_secs(5), |r| running(r, &id));
        run.advance(Duration::from_secs(5));

        assert_eq!(run.reconciles(), vec![id.clone()], "{case}");
        assert_eq!(run.states(&id), vec![TaskState::Running], "{case}");
        assert!(run.relaunches().is_empty(), "{case}");
        assert_eq!(run.accepts(), vec![id.clone()], "{case}");
        // The agent resends RUNNING until acknowledged: a repeat, acknowledged and not shown.
        run.until("RUNNING acknowledged", Duration::from_secs(30), |r| {
            r.sim.agents.values().all(|a| a.unacked.is_empty())
        });
        assert_eq!(run.states(&id), vec![TaskState::Running], "{case}");
        run.agent_reports(&id, TaskState::Finished, |_| {});
        assert_eq!(run.exit(), 0, "{case}");
        assert_eq!(run.runs(&id), 1, "{case}");
        run.check_ended();
    }
}

#[test]
fn a_task_that_never_starts_is_relaunched_at_most_the_limit_then_the_run_gives_125() {
    let mut run = one_agent(true);
    let mut id = TaskId::new(FIRST_ID);
    for n in 0..=MAX_RELAUNCHES {
        launch_awaiting_commit(&mut run, &id);
        run.failover(1, false);
        // The relaunch (if any) is proposed under the next leader; hold its commit too.
        run.sim.auto_commit = false;
        assert_eq!(run.states(&id), vec![TaskState::Gone], "launch {n}");
        if n < MAX_RELAUNCHES {
            let next = relaunch_id(n + 1);
            assert_eq!(run.relaunches().last(), Some(&(id.clone(), next.clone())));
            id = next;
        }
    }
    match run.outcome.as_ref().expect("gave up") {
        Outcome::NeverStarted {
            task_id,
            launches,
            status,
        } => {
            assert_eq!(task_id, &id);
            assert_eq!(*launches, MAX_RELAUNCHES + 1);
            assert_eq!(status.state, TaskState::Gone);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(run.exit(), 125);
    assert_eq!(run.relaunches().len(), MAX_RELAUNCHES as usize);
    assert_eq!(run.accepts().len(), MAX_RELAUNCHES as usize + 1);
    assert!(
        run.sim.runs.is_empty(),
        "nothing ever ran: {:?}",
        run.sim.runs
    );
    run.sim.auto_commit = true;
    run.sim.pump();
    run.check_ended();
}

#[test]
fn an_interrupt_before_a_launch_ends_the_run_with_130() {
    let mut run = Run::new(spec("cpus:1;mem:512MiB", PLACEMENT), &[]);
    run.advance(Duration::from_secs(1));
    assert!(run.outcome.is_none());
    run.interrupt();
    assert_eq!(run.outcome, Some(Outcome::Interrupted));
    assert_eq!(run.exit(), 130);
    run.check_ended();
}

#[test]
fn an_interrupt_kills_a_running_task_and_reports_how_it_ended() {
    let mut run = one_agent(true);
    let id = TaskId::new(FIRST_ID);
    run.until("running", Duration::from_secs(5), |r| running(r, &id));
    run.interrupt();
    assert!(run.progress.contains(&Progress::Killing {
        task_id: id.clone()
    }));
    assert!(run.calls.contains(&FrameworkCall::Kill {
        task_id: id.clone(),
        agent_id: None,
        grace_ms: Some(2_000),
    }));
    // The scripted agent reports TASK_KILLED at once.
    assert_eq!(run.states(&id), vec![TaskState::Running, TaskState::Killed]);
    assert_eq!(run.output_reads, vec![(id.clone(), true)]);
    assert_eq!(run.exit(), 143);
    run.check_ended();
}

/// Interrupted while its launch awaited a commit that a leader change then lost: the task
/// never started, and it is not launched again.
#[test]
fn an_interrupted_run_does_not_relaunch_a_task_that_never_started() {
    let mut run = one_agent(true);
    let id = TaskId::new(FIRST_ID);
    launch_awaiting_commit(&mut run, &id);
    run.interrupt();
    run.failover(0, false);
    run.until("the outcome", Duration::from_secs(5), |r| {
        r.outcome.is_some()
    });
    assert_eq!(run.states(&id), vec![TaskState::Unknown]);
    assert_eq!(run.outcome, Some(Outcome::Interrupted));
    assert!(run.relaunches().is_empty());
    assert_eq!(run.accepts(), vec![id]);
    assert!(run.sim.runs.is_empty());
    run.check_ended();
}

/// A relaunch looks for a place for the full placement timeout again, from the relaunch.
#[test]
fn a_relaunch_gets_a_fresh_placement_timeout() {
    let timeout = Duration::from_secs(5);
    let mut run = Run::new(
        spec("cpus:1;mem:512MiB", timeout),
        &[("h1", "cpus:2;mem:2GiB", true)],
    );
    let id = TaskId::new(FIRST_ID);
    run.hold = true;
    run.until("an accept", Duration::from_secs(1), |r| {
        !r.accepts().is_empty()
    });
    // The accept is slow to arrive; meanwhile the only agent leaves, so it comes back dropped.
    run.advance(Duration::from_secs(4));
    let agent = run.agent_of_offer();
    run.sim.disconnect(agent);
    run.release();
    let relaunched_at = run.sim.now;
    assert_eq!(run.relaunches(), vec![(id, relaunch_id(1))]);
    assert!(relaunched_at - run.start > timeout - Duration::from_secs(1));

    run.until("the outcome", Duration::from_secs(30), |r| {
        r.outcome.is_some()
    });
    let waited = run.sim.now - relaunched_at;
    assert!(
        waited >= timeout && waited < timeout + TICK,
        "gave up {waited:?} after the relaunch"
    );
    assert!(matches!(
        run.outcome,
        Some(Outcome::NotPlaced { ref task_id, largest: None, .. }) if *task_id == relaunch_id(1)
    ));
    assert_eq!(run.exit(), 125);
    run.check_ended();
}
