//! The one-shot scheduler's state machine (see the module above for what it does).

use super::{
    Action, OneShotSpec, Outcome, Progress, INTERRUPT_KILL_GRACE_MS, REFUSE_WHEN_LAUNCHED_SECS,
    REFUSE_WHILE_PLACING_SECS,
};
use crate::SchedulerEvent;
use proto::{
    Filters, FrameworkCall, FrameworkEvent, Offer, OfferOperation, ReconcileTask, Resources,
    TaskId, TaskState, TaskStatus,
};
use std::collections::VecDeque;
use std::time::Instant;

/// Where the run is.
#[derive(Clone, Debug)]
enum Phase {
    /// Looking for an offer that fits, until `deadline` (`None`: a timeout too large to add).
    Placing { deadline: Option<Instant> },
    /// Accepted an offer for the current task id.
    Launched,
    /// The task ended with this status; waiting for its output to be read.
    ReadingOutput { status: TaskStatus },
    /// The outcome is out.
    Done,
}

/// Runs one task: accepts an offer, follows the task's updates through failovers, launches it
/// again if it never started, and ends with an [`Outcome`]. Sans-IO: see the module docs.
#[derive(Debug)]
pub struct OneShotScheduler {
    spec: OneShotSpec,
    /// The id of the current launch.
    task_id: TaskId,
    phase: Phase,
    relaunches: u32,
    /// The latest state of the current launch (`None` until its first update).
    last_state: Option<TaskState>,
    largest: Option<Resources>,
    interrupted: bool,
    actions: VecDeque<Action>,
}

impl OneShotScheduler {
    /// A scheduler for a framework that has just subscribed at `now` (the placement timer
    /// starts).
    pub fn new(spec: OneShotSpec, now: Instant) -> OneShotScheduler {
        let deadline = now.checked_add(spec.placement_timeout);
        OneShotScheduler {
            task_id: spec.task.task_id.clone(),
            spec,
            phase: Phase::Placing { deadline },
            relaunches: 0,
            last_state: None,
            largest: None,
            interrupted: false,
            actions: VecDeque::new(),
        }
    }

    /// The id of the current launch.
    pub fn task_id(&self) -> &TaskId {
        &self.task_id
    }

    /// Whether the outcome is out.
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// The next thing to do, in order. Drain it after every input: each input adds at most
    /// a few actions per offer it carries.
    pub fn poll(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`OneShotScheduler::handle_timeout`] must be called (the placement deadline).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Placing { deadline } => deadline,
            _ => None,
        }
    }

    /// Time passed: gives up placing the task once its deadline is reached.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Phase::Placing {
            deadline: Some(deadline),
        } = self.phase
        else {
            return;
        };
        if now < deadline {
            return;
        }
        self.finish(Outcome::NotPlaced {
            task_id: self.task_id.clone(),
            wants: self.spec.task.resources.clone(),
            waited: self.spec.placement_timeout,
            largest: self.largest.clone(),
        });
    }

    /// An event of the framework session. `Terminated` is the driver's to handle (the session
    /// is gone; nothing can be sent), and a `Subscribed` frame is not an event of the session
    /// (a re-subscription arrives as `Resubscribed`): both are ignored.
    pub fn handle_event(&mut self, now: Instant, event: SchedulerEvent) {
        if self.is_done() {
            return;
        }
        match event {
            SchedulerEvent::Framework(FrameworkEvent::Offers { offers }) => {
                for offer in offers {
                    self.handle_offer(offer);
                }
            }
            SchedulerEvent::Framework(FrameworkEvent::Update { status }) => {
                self.handle_update(now, status)
            }
            SchedulerEvent::Framework(FrameworkEvent::Error { message }) => {
                self.progress(Progress::MasterError { message })
            }
            // An offer it already answered: an accept of a rescinded offer comes back as
            // TASK_DROPPED, which launches the task again.
            SchedulerEvent::Framework(FrameworkEvent::Rescind { .. }) => {}
            SchedulerEvent::Framework(_) => {}
            SchedulerEvent::Disconnected { reason } => {
                self.progress(Progress::Disconnected { reason })
            }
            SchedulerEvent::Resubscribed { master } => {
                self.progress(Progress::Resubscribed { master });
                self.resubscribed();
            }
            SchedulerEvent::Terminated { .. } => {}
        }
    }

    /// Ctrl-C or SIGTERM: a launched task is killed (and reported as it ends); otherwise the
    /// run ends at once ([`Outcome::Interrupted`]).
    pub fn handle_interrupt(&mut self) {
        if self.interrupted || self.is_done() {
            return;
        }
        self.interrupted = true;
        match self.phase {
            Phase::Placing { .. } => self.finish(Outcome::Interrupted),
            Phase::Launched => {
                self.progress(Progress::Killing {
                    task_id: self.task_id.clone(),
                });
                self.call(FrameworkCall::Kill {
                    task_id: self.task_id.clone(),
                    agent_id: None,
                    grace_ms: Some(INTERRUPT_KILL_GRACE_MS),
                });
            }
            Phase::ReadingOutput { .. } | Phase::Done => {}
        }
    }

    /// The result of [`Action::ReadOutput`] (an error says why the output could not be read):
    /// acknowledges the task's last update and ends the run.
    pub fn handle_output_read(&mut self, result: Result<(), String>) {
        let Phase::ReadingOutput { status } = &self.phase else {
            return;
        };
        let status = status.clone();
        self.acknowledge(&status);
        self.finish(Outcome::Ended {
            status,
            output: Some(result),
        });
    }

    fn handle_offer(&mut self, offer: Offer) {
        let placing = matches!(self.phase, Phase::Placing { .. });
        if placing && offer.resources.contains(&self.spec.task.resources) {
            self.launch(offer);
            return;
        }
        let r = &offer.resources;
        self.largest = Some(match &self.largest {
            Some(l) => Resources::new(l.cpus_milli.max(r.cpus_milli), l.mem_bytes.max(r.mem_bytes)),
            None => Resources::new(r.cpus_milli, r.mem_bytes),
        });
        let refuse = if placing {
            REFUSE_WHILE_PLACING_SECS
        } else {
            REFUSE_WHEN_LAUNCHED_SECS
        };
        self.call(FrameworkCall::Decline {
            offer_ids: vec![offer.id],
            filters: Some(Filters {
                refuse_seconds: Some(refuse),
            }),
        });
    }

    fn launch(&mut self, offer: Offer) {
        let mut task = self.spec.task.clone();
        task.task_id = self.task_id.clone();
        task.agent_id = offer.agent_id.clone();
        self.call(FrameworkCall::Accept {
            offer_ids: vec![offer.id],
            operations: vec![OfferOperation::Launch { tasks: vec![task] }],
            filters: Some(Filters {
                refuse_seconds: Some(REFUSE_WHEN_LAUNCHED_SECS),
            }),
        });
        self.call(FrameworkCall::Suppress { roles: vec![] });
        self.phase = Phase::Launched;
        self.progress(Progress::Launched {
            task_id: self.task_id.clone(),
            agent_id: offer.agent_id,
            hostname: offer.hostname,
            resources: self.spec.task.resources.clone(),
        });
    }

    fn handle_update(&mut self, now: Instant, status: TaskStatus) {
        if status.task_id != self.task_id || !matches!(self.phase, Phase::Launched) {
            return;
        }
        let state = status.state;
        let ends_with_output = self.last_state != Some(state)
            && matches!(
                state,
                TaskState::Finished | TaskState::Failed | TaskState::Killed
            );
        if !ends_with_output {
            self.acknowledge(&status);
        }
        if self.last_state == Some(state) {
            return;
        }
        let started = self.last_state.is_some_and(|s| s != TaskState::Staging);
        self.last_state = Some(state);
        self.progress(Progress::StateChanged(status.clone()));
        let never_started = !started
            && matches!(
                state,
                TaskState::Dropped | TaskState::Gone | TaskState::Unknown
            );
        if never_started {
            if self.interrupted {
                self.finish(Outcome::Interrupted);
            } else if self.relaunches < self.spec.max_relaunches {
                self.relaunch(now);
            } else {
                self.finish(Outcome::NeverStarted {
                    task_id: self.task_id.clone(),
                    launches: self.relaunches + 1,
                    status,
                });
            }
        } else if ends_with_output {
            self.actions.push_back(Action::ReadOutput {
                task_id: self.task_id.clone(),
            });
            self.phase = Phase::ReadingOutput { status };
        } else if state.is_terminal() {
            self.finish(Outcome::Ended {
                status,
                output: None,
            });
        }
    }

    /// The launch never reached an agent: nothing ran, so a launch under a new id is safe.
    fn relaunch(&mut self, now: Instant) {
        self.relaunches += 1;
        let next = TaskId::new(format!("{}-r{}", self.spec.task.task_id, self.relaunches));
        self.progress(Progress::Relaunching {
            task_id: self.task_id.clone(),
            next: next.clone(),
        });
        self.task_id = next;
        self.last_state = None;
        self.phase = Phase::Placing {
            deadline: now.checked_add(self.spec.placement_timeout),
        };
        self.call(FrameworkCall::Revive { roles: vec![] });
    }

    fn resubscribed(&mut self) {
        match self.phase {
            Phase::Placing { .. } => self.call(FrameworkCall::Revive { roles: vec![] }),
            Phase::Launched => self.call(FrameworkCall::Reconcile {
                tasks: vec![ReconcileTask {
                    task_id: self.task_id.clone(),
                    agent_id: None,
                }],
            }),
            Phase::ReadingOutput { .. } | Phase::Done => {}
        }
    }

    /// Acknowledges an update that asks for it (from an agent: it has a uuid).
    fn acknowledge(&mut self, status: &TaskStatus) {
        if let (Some(uuid), Some(agent_id)) = (status.uuid.clone(), status.agent_id.clone()) {
            self.call(FrameworkCall::Acknowledge {
                agent_id,
                task_id: status.task_id.clone(),
                uuid,
            });
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        self.call(FrameworkCall::Teardown);
        self.actions.push_back(Action::Finish(outcome));
        self.phase = Phase::Done;
    }

    fn call(&mut self, call: FrameworkCall) {
        self.actions.push_back(Action::Call(call));
    }

    fn progress(&mut self, progress: Progress) {
        self.actions.push_back(Action::Progress(progress));
    }
}
