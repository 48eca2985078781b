//! The session with the masters: connecting (with backoff), registering, sending, usage reports.

use super::*;

impl Agent {
    pub(super) fn schedule_reconnect(&mut self) {
        // Backoff with jitter so that a fleet of agents does not reconnect in lockstep.
        let jitter = rand::random::<f64>() * 0.5 + 0.75;
        self.reconnect_at = Some(Instant::now() + self.backoff.mul_f64(jitter));
        self.backoff = (self.backoff * 2).min(Duration::from_secs(15));
    }

    pub(super) fn start_connect(&mut self) {
        self.generation += 1;
        let generation = self.generation;
        let tasks = self
            .tasks
            .values()
            .map(|t| TaskReport {
                framework_id: t.framework_id.clone(),
                task: t.info.clone(),
                state: t.state,
            })
            .collect();
        let register = ClientFrame::Agent(AgentToMaster::Register {
            agent_id: self.agent_id.clone(),
            info: self.info.clone(),
            tasks,
        });
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
                )) => Event::Registered {
                    generation,
                    session,
                    agent_id,
                    heartbeat: Duration::from_millis(heartbeat_interval_ms.max(100)),
                },
                Ok((_, other)) => Event::ConnectFailed {
                    generation,
                    error: format!("unexpected answer to registration: {other:?}"),
                },
                Err(e) => Event::ConnectFailed {
                    generation,
                    error: e.to_string(),
                },
            };
            let _ = events.send(event).await;
        });
    }

    pub(super) async fn on_registered(
        &mut self,
        session: Session,
        agent_id: AgentId,
        heartbeat: Duration,
    ) {
        if self.agent_id.as_ref() != Some(&agent_id) {
            if let Err(e) = save_agent_id(&self.config.work_dir, &agent_id) {
                tracing::error!(error = %e, path = %self.config.work_dir.join("agent_id").display(),
                    "cannot save the agent id; a restart will register as a new agent");
            }
        }
        tracing::info!(%agent_id, master = %session.master, "registered with master");
        self.agent_id = Some(agent_id);
        self.backoff = Duration::from_millis(200);
        let Session {
            connection,
            send,
            mut recv,
            master,
        } = session;
        let generation = self.generation;
        let events = self.events.clone();
        tokio::spawn(async move {
            let reason = loop {
                match recv.recv().await {
                    Ok(Some(frame)) => {
                        if events
                            .send(Event::Frame { generation, frame })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(None) => break "the master closed the session".to_owned(),
                    Err(e) => break e.to_string(),
                }
            };
            let _ = events.send(Event::Lost { generation, reason }).await;
        });
        self.conn = Some(Connected {
            master,
            send,
            connection,
            heartbeat,
            last_heartbeat: Instant::now(),
        });
        self.updates.reset_timers();
        self.flush_updates().await;
    }

    pub(super) async fn send(&mut self, msg: AgentToMaster) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if let Err(e) = conn.send.send(&ClientFrame::Agent(msg)).await {
            tracing::warn!(error = %e, "cannot write to the master");
            let generation = self.generation;
            let _ = self.events.try_send(Event::Lost {
                generation,
                reason: e.to_string(),
            });
        }
    }

    /// Each command task's container usage, and for an executor's live tasks the usage of the
    /// executor's container, which they share (Mesos reports usage per executor too); with the
    /// node's pressure, sent even when no task runs.
    pub(super) async fn send_usage(&mut self) {
        let mut per_executor: BTreeMap<ExecKey, Option<proto::ResourceUsage>> = BTreeMap::new();
        for (key, e) in &self.executors {
            per_executor.insert(key.clone(), e.handle.as_ref().and_then(|h| h.usage()));
        }
        let tasks: Vec<proto::TaskUsage> = self
            .tasks
            .iter()
            .filter(|(_, t)| !t.state.is_terminal())
            .filter_map(|(id, t)| {
                let usage = match Self::executor_key(t) {
                    Some(key) => per_executor.get(&key).cloned().flatten()?,
                    None => t.handle.as_ref()?.usage()?,
                };
                Some(proto::TaskUsage {
                    framework_id: t.framework_id.clone(),
                    task_id: id.clone(),
                    usage,
                })
            })
            .collect();
        let pressure = self.pressure.read();
        if !tasks.is_empty() || pressure.is_some() {
            self.send(AgentToMaster::Usage { tasks, pressure }).await;
        }
    }
}
