//! The probe framework: a real framework (the `framework` library over its own QUIC + mTLS
//! session) that launches one tiny task at a time on an offer and times it until the agent
//! reports it `RUNNING`. Re-subscribing after a failover is the library's, as for any framework.

use crate::LoadgenError;
use framework::{framework_info, ClientOptions, Scheduler, SchedulerEvent};
use proto::{
    CommandInfo, Filters, FrameworkCall, FrameworkEvent, Offer, OfferOperation, Resources, TaskId,
    TaskInfo, TaskState,
};
use std::time::Duration;
use tokio::time::Instant;

/// What each probe task asks for: small enough to fit any agent beside anything.
const PROBE_CPUS_MILLI: u64 = 10;
const PROBE_MEM: u64 = 32 << 20;

pub struct Probe {
    scheduler: Scheduler,
    launched: u64,
}

impl Probe {
    pub async fn subscribe(opts: ClientOptions) -> Result<Probe, LoadgenError> {
        let scheduler = Scheduler::subscribe(opts, framework_info("probe"))
            .await
            .map_err(|e| LoadgenError::Master(format!("the probe framework: {e}")))?;
        Ok(Probe {
            scheduler,
            launched: 0,
        })
    }

    /// Launches one task on the next offer and waits until it is `RUNNING`; a launch that ends
    /// otherwise (lost in a failover) is made again with a new task. Returns when the task ran.
    pub async fn launch_one(&mut self, timeout: Duration) -> Result<(), LoadgenError> {
        let deadline = Instant::now() + timeout;
        let mut waiting_for: Option<TaskId> = None;
        loop {
            let event = tokio::time::timeout_at(deadline, self.scheduler.next_event())
                .await
                .map_err(|_| {
                    LoadgenError::Master(format!("the probe's task did not run within {timeout:?}"))
                })?;
            match event {
                None | Some(SchedulerEvent::Terminated { .. }) => {
                    return Err(LoadgenError::Master("the probe's session ended".into()))
                }
                Some(SchedulerEvent::Framework(FrameworkEvent::Offers { offers })) => {
                    waiting_for = self.on_offers(offers, waiting_for.take()).await?;
                }
                Some(SchedulerEvent::Framework(FrameworkEvent::Update { status })) => {
                    if let (Some(agent_id), Some(uuid)) = (status.agent_id.clone(), status.uuid) {
                        let ack = FrameworkCall::Acknowledge {
                            agent_id,
                            task_id: status.task_id.clone(),
                            uuid,
                        };
                        let _ = self.scheduler.call(ack).await;
                    }
                    if waiting_for.as_ref() == Some(&status.task_id) {
                        match status.state {
                            TaskState::Running | TaskState::Finished => return Ok(()),
                            s if s.is_terminal() => waiting_for = None,
                            _ => {}
                        }
                    }
                }
                // Offers made before a failover are void; the launch may have been lost.
                Some(SchedulerEvent::Disconnected { .. }) => waiting_for = None,
                Some(_) => {}
            }
        }
    }

    /// Uses the first offer for a probe task unless one is already under way; declines the
    /// rest. Returns the task waited for.
    async fn on_offers(
        &mut self,
        offers: Vec<Offer>,
        mut waiting_for: Option<TaskId>,
    ) -> Result<Option<TaskId>, LoadgenError> {
        let mut decline = Vec::new();
        for offer in offers {
            if waiting_for.is_some() {
                decline.push(offer.id);
                continue;
            }
            self.launched += 1;
            let task_id = TaskId::new(format!("probe-{}", self.launched));
            let task = TaskInfo {
                task_id: task_id.clone(),
                name: "probe".into(),
                agent_id: offer.agent_id.clone(),
                resources: Resources::new(PROBE_CPUS_MILLI, PROBE_MEM),
                command: CommandInfo::shell("true"),
                container: Default::default(),
                kill_grace_ms: None,
                labels: Default::default(),
            };
            let accept = FrameworkCall::Accept {
                offer_ids: vec![offer.id],
                operations: vec![OfferOperation::Launch { tasks: vec![task] }],
                filters: None,
            };
            self.call(accept).await?;
            waiting_for = Some(task_id);
        }
        if !decline.is_empty() {
            // A long filter: the probe needs one agent, not offers from all of them again.
            let call = FrameworkCall::Decline {
                offer_ids: decline,
                filters: Some(Filters {
                    refuse_seconds: Some(3600.0),
                }),
            };
            self.call(call).await?;
        }
        Ok(waiting_for)
    }

    async fn call(&self, call: FrameworkCall) -> Result<(), LoadgenError> {
        self.scheduler
            .call(call)
            .await
            .map_err(|e| LoadgenError::Master(format!("the probe's call failed: {e}")))
    }
}
