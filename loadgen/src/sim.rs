//! One simulated agent: registers over its own QUIC + mTLS connection, heartbeats and reports
//! usage at the master's cadence, answers launches with status updates and runs nothing.

use crate::fleet::Shared;
use agent_core::{RetryPolicy, StatusUpdates};
use proto::{
    AgentId, AgentInfo, AgentToMaster, ClientFrame, FrameworkId, MasterToAgent, NodePressure,
    ResourceUsage, Resources, ServerFrame, StatusReason, StatusSource, StatusUuid, TaskId,
    TaskInfo, TaskReport, TaskState, TaskStatus, TaskUsage,
};
use session::{open_session, watch_leader, Backoff, ClientOptions, Session};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use transport::FramedSend;

/// What every simulated agent of a fleet shares.
pub(crate) struct SimConfig {
    pub masters: Vec<String>,
    pub resources: Resources,
    pub task_duration: Duration,
    /// Send node pressure in usage reports (a real agent does when the kernel has PSI).
    pub pressure: bool,
    pub admission: Arc<Semaphore>,
}

/// The real agent checks its timers this often (`agent/src/agent/mod.rs`, `TICK`); status
/// updates due for a resend are sent on this tick.
const TICK: Duration = Duration::from_millis(500);

struct SimTask {
    framework_id: FrameworkId,
    info: TaskInfo,
    state: TaskState,
}

pub(crate) struct SimAgent {
    index: usize,
    name: String,
    opts: ClientOptions,
    cfg: Arc<SimConfig>,
    shared: Arc<Shared>,
    agent_id: Option<AgentId>,
    tasks: BTreeMap<TaskId, SimTask>,
    /// When each running task finishes.
    ends: BTreeSet<(Instant, TaskId)>,
    updates: StatusUpdates,
}

/// Why a session ended.
enum Ended {
    Stopped,
    Lost(String),
    /// Another master said a new leader was elected: re-register there at once, as the real
    /// agent does.
    LeaderMoved(session::LeaderMoved),
}

impl SimAgent {
    pub(crate) fn new(
        index: usize,
        identity: Arc<transport::Identity>,
        links: session::MasterLinks,
        cfg: Arc<SimConfig>,
        shared: Arc<Shared>,
    ) -> SimAgent {
        let name = identity.peer().name.clone();
        let mut opts = ClientOptions::new(cfg.masters.clone(), identity);
        opts.links = links;
        opts.connect_timeout = Duration::from_secs(30);
        SimAgent {
            index,
            name,
            opts,
            cfg,
            shared,
            agent_id: None,
            tasks: BTreeMap::new(),
            ends: BTreeSet::new(),
            updates: StatusUpdates::new(RetryPolicy::default()),
        }
    }

    fn register_frame(&self) -> ClientFrame {
        ClientFrame::Agent(AgentToMaster::Register {
            agent_id: self.agent_id.clone(),
            info: AgentInfo {
                hostname: self.name.clone(),
                resources: self.cfg.resources.clone(),
                attributes: BTreeMap::new(),
                version: proto::ProtocolVersion::CURRENT,
                software_version: format!("loadgen {}", env!("CARGO_PKG_VERSION")),
                reserved: BTreeMap::new(),
            },
            tasks: self
                .tasks
                .values()
                .map(|t| TaskReport {
                    framework_id: t.framework_id.clone(),
                    task: t.info.clone(),
                    state: t.state,
                })
                .collect(),
        })
    }

    /// Registers after `delay`, then serves sessions (re-registering after a lost one, with a
    /// jittered backoff) until `stop` turns true.
    pub(crate) async fn run(mut self, delay: Duration, mut stop: watch::Receiver<bool>) {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped(&mut stop) => return,
        }
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(15));
        // A move to a new leader re-registers at once, as the real agent does (the master
        // bounds what it takes at a time); a first registration, and one after a failure,
        // waits for the fleet's admission.
        let mut admitted = false;
        loop {
            let attempt = {
                let admission = (!admitted).then(|| self.cfg.admission.clone());
                let register = self.register_frame();
                let opts = self.opts.clone();
                let connect = async move {
                    let _permit = match admission {
                        Some(a) => Some(a.acquire_owned().await),
                        None => None,
                    };
                    open_session(&opts, &register).await
                };
                tokio::select! {
                    r = connect => r,
                    _ = stopped(&mut stop) => return,
                }
            };
            let error = match attempt {
                Ok((
                    session,
                    ServerFrame::Agent(MasterToAgent::Registered {
                        agent_id,
                        heartbeat_interval_ms,
                    }),
                )) => {
                    backoff.reset();
                    self.agent_id = Some(agent_id);
                    let heartbeat = Duration::from_millis(heartbeat_interval_ms.max(100));
                    match self.serve(session, heartbeat, &mut stop).await {
                        Ended::Stopped => return,
                        Ended::LeaderMoved(moved) => {
                            tracing::debug!(agent = %self.name, %moved, "re-registering at the new leader");
                            self.opts.prefer(&moved.leader);
                            admitted = true;
                            continue;
                        }
                        Ended::Lost(reason) => {
                            self.shared.counters.lost.fetch_add(1, Ordering::Relaxed);
                            reason
                        }
                    }
                }
                Ok((_, other)) => format!("unexpected answer to registration: {other:?}"),
                Err(e) => e.to_string(),
            };
            admitted = false;
            self.opts.preferred = None;
            self.shared.failed(&error);
            tracing::debug!(agent = %self.name, %error, "simulated agent lost its session");
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_wait()) => {}
                _ = stopped(&mut stop) => return,
            }
        }
    }

    async fn serve(
        &mut self,
        session: Session,
        heartbeat: Duration,
        stop: &mut watch::Receiver<bool>,
    ) -> Ended {
        let Session {
            connection,
            mut send,
            mut recv,
            master,
        } = session;
        let mut leader_watch = watch_leader(&self.opts, &master);
        self.shared.connected(self.index, Some(connection.clone()));
        self.updates.reset_timers();
        let ended = 'session: {
            if let Err(e) = self.flush(&mut send).await {
                break 'session Ended::Lost(e);
            }
            // The real agent's first usage check after registering finds a report worth
            // sending (`UsageReport::worth_sending` with nothing sent yet), seconds before its
            // first heartbeat, which in a large cluster is minutes away.
            if let Err(e) = self.report_usage(&mut send).await {
                break 'session Ended::Lost(e);
            }
            let mut beat = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                // A far deadline when no task runs (the branch is then disabled anyway).
                let next_end = self.ends.first().map(|(t, _)| *t);
                let far = Instant::now() + Duration::from_secs(3600);
                let step = tokio::select! {
                    _ = stopped(stop) => {
                        connection.close(0, b"load generator stopping");
                        break 'session Ended::Stopped;
                    }
                    frame = recv.recv() => match frame {
                        // The master stretched the heartbeat interval (the cluster grew).
                        Ok(Some(ServerFrame::Agent(MasterToAgent::Registered {
                            heartbeat_interval_ms,
                            ..
                        }))) => {
                            let every = Duration::from_millis(heartbeat_interval_ms.max(100));
                            beat = tokio::time::interval_at(Instant::now() + every, every);
                            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                            Ok(())
                        }
                        Ok(Some(frame)) => self.on_frame(frame, &mut send).await,
                        Ok(None) => Err("the master closed the session".to_owned()),
                        Err(e) => Err(e.to_string()),
                    },
                    moved = leader_watch.moved() => break 'session Ended::LeaderMoved(moved),
                    _ = beat.tick() => self.beat(&mut send).await,
                    _ = tokio::time::sleep_until(next_end.unwrap_or(far)), if next_end.is_some() => {
                        self.finish_due(&mut send).await
                    }
                    _ = tick.tick(), if !self.updates.is_empty() => self.flush(&mut send).await,
                };
                if let Err(e) = step {
                    break 'session Ended::Lost(e);
                }
            }
        };
        self.shared.connected(self.index, None);
        ended
    }

    async fn send(
        &self,
        send: &mut FramedSend<ClientFrame>,
        msg: AgentToMaster,
    ) -> Result<(), String> {
        send.send(&ClientFrame::Agent(msg))
            .await
            .map_err(|e| e.to_string())
    }

    /// What the real agent sends every heartbeat interval: a heartbeat, then usage (its tasks'
    /// usage and the node's pressure; nothing when it has neither).
    async fn beat(&mut self, send: &mut FramedSend<ClientFrame>) -> Result<(), String> {
        self.send(send, AgentToMaster::Heartbeat).await?;
        self.report_usage(send).await
    }

    /// A usage report: the tasks' usage and the node's pressure (nothing when it has neither).
    async fn report_usage(&mut self, send: &mut FramedSend<ClientFrame>) -> Result<(), String> {
        let tasks: Vec<TaskUsage> = self
            .tasks
            .iter()
            .filter(|(_, t)| !t.state.is_terminal())
            .map(|(id, t)| TaskUsage {
                framework_id: t.framework_id.clone(),
                task_id: id.clone(),
                usage: ResourceUsage {
                    cpu_user_us: 1_000,
                    cpu_system_us: 500,
                    cpu_throttled_us: 0,
                    mem_current_bytes: 4 << 20,
                    mem_peak_bytes: Some(4 << 20),
                    pids_current: 1,
                },
            })
            .collect();
        let pressure = self.cfg.pressure.then(NodePressure::default);
        if tasks.is_empty() && pressure.is_none() {
            return Ok(());
        }
        self.send(send, AgentToMaster::Usage { tasks, pressure })
            .await
    }

    async fn flush(&mut self, send: &mut FramedSend<ClientFrame>) -> Result<(), String> {
        for (framework_id, status) in self.updates.due(std::time::Instant::now()) {
            self.send(
                send,
                AgentToMaster::StatusUpdate {
                    framework_id,
                    status,
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Records a state change of `task_id` (sent by the next flush).
    fn update(&mut self, task_id: &TaskId, state: TaskState, reason: Option<StatusReason>) {
        let Some(task) = self.tasks.get_mut(task_id) else {
            return;
        };
        task.state = state;
        let mut status = TaskStatus::new(task_id.clone(), state, StatusSource::Agent);
        status.agent_id = self.agent_id.clone();
        status.timestamp_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        status.reason = reason;
        if state == TaskState::Finished {
            status.exit_code = Some(0);
            status.message = Some("simulated task finished".into());
            self.shared
                .counters
                .finished
                .fetch_add(1, Ordering::Relaxed);
        }
        let framework_id = task.framework_id.clone();
        self.updates.record(
            &framework_id,
            status,
            StatusUuid::new(uuid::Uuid::new_v4().to_string()),
        );
    }

    async fn on_frame(
        &mut self,
        frame: ServerFrame,
        send: &mut FramedSend<ClientFrame>,
    ) -> Result<(), String> {
        match frame {
            ServerFrame::Agent(msg) => self.on_master(msg, send).await,
            ServerFrame::NotLeader { leader } => {
                Err(format!("the master no longer leads (leader: {leader:?})"))
            }
            ServerFrame::Error(e) if e.fatal => Err(e.message),
            _ => Ok(()),
        }
    }

    async fn on_master(
        &mut self,
        msg: MasterToAgent,
        send: &mut FramedSend<ClientFrame>,
    ) -> Result<(), String> {
        match msg {
            MasterToAgent::RunTasks {
                framework, tasks, ..
            } => {
                let now = Instant::now();
                for info in tasks {
                    let end = now + run_time(&info, self.cfg.task_duration);
                    let id = info.task_id.clone();
                    if self.tasks.contains_key(&id) {
                        continue;
                    }
                    self.shared
                        .counters
                        .launched
                        .fetch_add(1, Ordering::Relaxed);
                    self.tasks.insert(
                        id.clone(),
                        SimTask {
                            framework_id: framework.id.clone(),
                            info,
                            state: TaskState::Staging,
                        },
                    );
                    self.update(&id, TaskState::Starting, None);
                    self.update(&id, TaskState::Running, None);
                    self.ends.insert((end, id));
                }
            }
            MasterToAgent::KillTask { task_id, .. } => {
                self.kill(&task_id, StatusReason::KilledByFramework)
            }
            MasterToAgent::ShutdownFramework { framework_id } => {
                let ids: Vec<TaskId> = self
                    .tasks
                    .iter()
                    .filter(|(_, t)| t.framework_id == framework_id)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in ids {
                    self.kill(&id, StatusReason::FrameworkRemoved);
                }
            }
            MasterToAgent::AcknowledgeUpdate { task_id, uuid, .. } => {
                if self.updates.acknowledge(&task_id, &uuid) {
                    let ended = self
                        .tasks
                        .get(&task_id)
                        .is_some_and(|t| t.state.is_terminal());
                    if ended && self.updates.forget_if_done(&task_id) {
                        self.tasks.remove(&task_id);
                    }
                }
            }
            MasterToAgent::ReadLog { request_id, .. } => {
                let result = Err("a simulated agent keeps no logs".to_owned());
                self.send(send, AgentToMaster::LogChunk { request_id, result })
                    .await?;
            }
            MasterToAgent::Registered { .. } | MasterToAgent::FrameworkMessage { .. } => {}
        }
        self.flush(send).await
    }

    fn kill(&mut self, task_id: &TaskId, reason: StatusReason) {
        let live = self
            .tasks
            .get(task_id)
            .is_some_and(|t| !t.state.is_terminal());
        if live {
            self.ends.retain(|(_, id)| id != task_id);
            self.update(task_id, TaskState::Killed, Some(reason));
        }
    }

    async fn finish_due(&mut self, send: &mut FramedSend<ClientFrame>) -> Result<(), String> {
        let now = Instant::now();
        while let Some((at, id)) = self.ends.first().cloned() {
            if at > now {
                break;
            }
            self.ends.pop_first();
            self.update(&id, TaskState::Finished, Some(StatusReason::CommandExited));
        }
        self.flush(send).await
    }
}

/// How long a task "runs": its `loadgen.task_ms` label if it has a valid one, else `default`.
fn run_time(task: &TaskInfo, default: Duration) -> Duration {
    task.labels
        .get(crate::launch_book::TASK_MS_LABEL)
        .and_then(|ms| ms.parse::<u64>().ok())
        .map_or(default, Duration::from_millis)
}

/// Resolves once the fleet is told to stop (or the fleet is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it before returning.
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}
