//! The connection to the masters: the only file that touches the session's transport types.
//! `open_session` dials every master; once registered, a reader task turns frames into events
//! and a writer task drains a bounded outbox, so the loop never awaits the network (a slow
//! master cannot stall exit handling). A full outbox counts as a lost master.

use super::*;
pub(super) use ::session::ClientOptions;
use ::session::{open_session, watch_leader, Session};
use proto::{AgentId, AgentToMaster, ClientFrame, MasterToAgent};

/// Frames queued to the master before the session counts as stuck.
const SESSION_OUTBOX: usize = 1024;

pub(super) enum SessionEvent {
    Registered {
        attempt: u64,
        session: Session,
        agent_id: AgentId,
        heartbeat: Duration,
    },
    ConnectFailed {
        attempt: u64,
        error: String,
    },
    Frame {
        attempt: u64,
        frame: ServerFrame,
    },
    Lost {
        attempt: u64,
        reason: String,
    },
    /// Another master said `leader` was elected: re-register there first.
    LeaderMoved {
        attempt: u64,
        leader: String,
        reason: String,
    },
}

pub(super) struct Connected {
    /// The master this session is with.
    master: String,
    outbox: mpsc::Sender<ClientFrame>,
    connection: transport::Connection,
    /// The last usage report sent on this session, and when.
    last_usage: Option<(agent_core::UsageReport, Instant)>,
}

/// How the agent dials the masters: all at once, following redirects to the leader.
pub(super) fn client_options(config: &Config) -> ClientOptions {
    let mut opts = ClientOptions::new(config.masters.clone(), config.identity.clone());
    opts.connect_timeout = Duration::from_secs(10);
    opts
}

impl Agent {
    pub(super) fn start_connect(&mut self, attempt: u64, register: AgentToMaster) {
        let register = ClientFrame::Agent(register);
        let opts = self.opts.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let event = match open_session(&opts, &register).await {
                Ok((
                    session,
                    ServerFrame::Agent(MasterToAgent::Registered {
                        agent_id,
                        heartbeat_interval_ms,
                    }),
                )) => SessionEvent::Registered {
                    attempt,
                    session,
                    agent_id,
                    heartbeat: Duration::from_millis(
                        heartbeat_interval_ms.max(agent_core::MIN_HEARTBEAT_MS),
                    ),
                },
                Ok((_, other)) => SessionEvent::ConnectFailed {
                    attempt,
                    error: format!("unexpected answer to registration: {other:?}"),
                },
                Err(e) => SessionEvent::ConnectFailed {
                    attempt,
                    error: e.to_string(),
                },
            };
            let _ = events.send(Event::Session(Box::new(event))).await;
        });
    }

    pub(super) fn on_session(&mut self, event: SessionEvent) {
        let current = self.core.attempt();
        match event {
            SessionEvent::Registered {
                attempt,
                session,
                agent_id,
                heartbeat,
            } if attempt == current => {
                self.registered = Some((agent_id.clone(), session.master.clone()));
                self.conn = Some(self.spawn_session(attempt, session));
                self.core
                    .handle_registered(now(), attempt, agent_id, heartbeat);
            }
            SessionEvent::ConnectFailed { attempt, error } if attempt == current => {
                tracing::warn!(%error, "cannot register with a master; retrying");
                self.core.handle_connect_failed(now(), attempt);
            }
            SessionEvent::Frame { attempt, frame } if attempt == current => self.on_frame(frame),
            SessionEvent::LeaderMoved {
                attempt,
                leader,
                reason,
            } if attempt == current && self.conn.is_some() => {
                self.session_lost(attempt, &reason, Some(leader));
            }
            SessionEvent::Lost { attempt, reason } if attempt == current && self.conn.is_some() => {
                self.session_lost(attempt, &reason, None);
            }
            // An older session's or attempt's: stale.
            _ => {}
        }
    }

    /// The session ended; re-register, first at `leader` when a master named the new one.
    fn session_lost(&mut self, attempt: u64, reason: &str, leader: Option<String>) {
        tracing::warn!(%reason, "lost the master; re-registering");
        if let Some(conn) = self.conn.take() {
            self.opts.try_last(&conn.master);
        }
        self.opts.preferred = leader;
        // At once: this is master failover time. A fleet hears of a new leader from the
        // masters' watches within milliseconds of each other, and the new leader takes their
        // registrations in batches (each one stream on an open connection); `open_session`
        // retries with jittered backoff.
        self.core.handle_disconnected(now(), attempt);
    }

    /// The reader and writer tasks of a registered session.
    fn spawn_session(&self, attempt: u64, session: Session) -> Connected {
        let Session {
            connection,
            mut send,
            mut recv,
            master,
        } = session;
        let events = self.events.clone();
        // The other masters tell us when a new leader is elected: a dead leader sends nothing.
        let mut leader_watch = watch_leader(&self.opts, &master);
        tokio::spawn(async move {
            let reason = loop {
                let frame = tokio::select! {
                    frame = recv.recv() => frame,
                    moved = leader_watch.moved() => {
                        let ev = SessionEvent::LeaderMoved {
                            attempt,
                            reason: moved.to_string(),
                            leader: moved.leader,
                        };
                        let _ = events.send(Event::Session(Box::new(ev))).await;
                        return;
                    }
                };
                match frame {
                    Ok(Some(frame)) => {
                        let ev = Event::Session(Box::new(SessionEvent::Frame { attempt, frame }));
                        if events.send(ev).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break "the master closed the session".to_owned(),
                    Err(e) => break e.to_string(),
                }
            };
            let _ = events
                .send(Event::Session(Box::new(SessionEvent::Lost {
                    attempt,
                    reason,
                })))
                .await;
        });
        let (outbox, mut rx) = mpsc::channel::<ClientFrame>(SESSION_OUTBOX);
        let events = self.events.clone();
        tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                if let Err(e) = send.send(&frame).await {
                    tracing::warn!(error = %e, "cannot write to the master");
                    let reason = e.to_string();
                    let _ = events
                        .send(Event::Session(Box::new(SessionEvent::Lost {
                            attempt,
                            reason,
                        })))
                        .await;
                    return;
                }
            }
        });
        Connected {
            master,
            outbox,
            connection,
            last_usage: None,
        }
    }

    fn on_frame(&mut self, frame: ServerFrame) {
        let attempt = self.core.attempt();
        match frame {
            ServerFrame::Agent(MasterToAgent::ReadLog {
                request_id,
                task_id,
                stream,
                offset,
                max_len,
            }) => {
                let result = self
                    .read_log(&task_id, stream, offset, max_len)
                    .map_err(|e| e.to_string());
                self.send(AgentToMaster::LogChunk { request_id, result });
            }
            ServerFrame::Agent(msg) => self.core.handle_master(now(), msg),
            ServerFrame::NotLeader { leader } => {
                let reason = format!("the master is no longer the leader (leader: {leader:?})");
                self.on_session(SessionEvent::Lost { attempt, reason });
            }
            ServerFrame::Error(e) => {
                tracing::error!(code = ?e.code, message = %e.message, "the master reported an error");
                if e.fatal {
                    let reason = e.message;
                    self.on_session(SessionEvent::Lost { attempt, reason });
                }
            }
            other => tracing::warn!(frame = ?other, "ignoring a frame not meant for an agent"),
        }
    }

    /// Queues a frame to the master; dropped when not connected (the core resends what must
    /// arrive). A full outbox means the master does not read: the session is dropped.
    pub(super) fn send(&mut self, msg: AgentToMaster) {
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        if conn.outbox.try_send(ClientFrame::Agent(msg)).is_err() {
            let attempt = self.core.attempt();
            let reason = "the master does not read what the agent sends".to_owned();
            self.on_session(SessionEvent::Lost { attempt, reason });
        }
    }

    pub(super) fn close_session(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.connection.close(0, b"agent stopping");
        }
    }

    /// Each command task's container usage, and for an executor's live tasks the usage of the
    /// executor's container, which they share (Mesos reports usage per executor too); with the
    /// node's pressure, sent even when no task runs. Sent `always` (a heartbeat), else only
    /// when it is news (`UsageReport::worth_sending`); the metrics see every measurement.
    pub(super) fn send_usage(&mut self, always: bool) {
        let pressure = self.pressure.read();
        let per_executor: BTreeMap<&ExecKey, Option<proto::ResourceUsage>> = self
            .executors
            .iter()
            .map(|(k, e)| (k, e.handle.as_ref().and_then(|h| h.usage())))
            .collect();
        let measured: Vec<(agent_core::TaskView<'_>, proto::ResourceUsage)> = self
            .core
            .tasks()
            .filter(|t| !t.state.is_terminal())
            .filter_map(|t| {
                let usage = match t.executor {
                    Some(e) => per_executor
                        .get(&(t.framework_id.clone(), e.clone()))
                        .cloned()
                        .flatten()?,
                    None => self.handles.get(t.task_id)?.usage()?,
                };
                Some((t, usage))
            })
            .collect();
        // Pressure first: a scrape that sees this report's task series sees its pressure too.
        self.metrics.observe_pressure(pressure);
        self.metrics
            .observe_usage(measured.iter().map(|(t, u)| (t, u)));
        let tasks: Vec<proto::TaskUsage> = measured
            .iter()
            .map(|(t, usage)| proto::TaskUsage {
                framework_id: t.framework_id.clone(),
                task_id: t.task_id.clone(),
                usage: usage.clone(),
            })
            .collect();
        if tasks.is_empty() && pressure.is_none() {
            return;
        }
        let report = agent_core::UsageReport { tasks, pressure };
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let last = conn.last_usage.as_ref().map(|(r, at)| (r, at.elapsed()));
        if !always && !report.worth_sending(last) {
            return;
        }
        conn.last_usage = Some((report.clone(), Instant::now()));
        self.send(AgentToMaster::Usage {
            tasks: report.tasks,
            pressure: report.pressure,
        });
    }
}
