//! Reliable status updates: every state change of a task gets a uuid and a per-task sequence
//! number, and is resent with exponential backoff until the framework acknowledges it. Updates
//! of one task go out one at a time, in order: the next is sent only after the previous one was
//! acknowledged (as Mesos's status update manager does), so a framework never sees them reordered.
//!
//! This type does no I/O and reads no clock: the agent passes `now` in.

use proto::{FrameworkId, StatusUuid, TaskId, TaskStatus};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Updates kept per task before the oldest non-terminal ones are dropped. A task has at most a
/// handful of state changes, so this only bounds a misbehaving executor.
pub const MAX_UPDATES_PER_TASK: usize = 64;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    /// Mesos's: first resend after 10 s, doubling up to 10 min.
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(600),
        }
    }
}

#[derive(Debug)]
struct TaskStream {
    framework_id: FrameworkId,
    next_seq: u64,
    queue: VecDeque<TaskStatus>,
    /// When the head of the queue is due to be (re)sent; `None` if never sent yet.
    next_send: Option<Instant>,
    backoff: Duration,
}

#[derive(Debug, Default)]
pub struct StatusUpdates {
    streams: BTreeMap<TaskId, TaskStream>,
    policy: RetryPolicy,
    /// Updates sent again for want of an acknowledgement.
    resends: u64,
}

impl StatusUpdates {
    pub fn new(policy: RetryPolicy) -> Self {
        StatusUpdates {
            streams: BTreeMap::new(),
            policy,
            resends: 0,
        }
    }

    /// Records a new update (giving it its uuid and sequence number).
    pub fn record(&mut self, framework_id: &FrameworkId, mut status: TaskStatus, uuid: StatusUuid) {
        let initial = self.policy.initial;
        let stream = self
            .streams
            .entry(status.task_id.clone())
            .or_insert_with(|| TaskStream {
                framework_id: framework_id.clone(),
                next_seq: 1,
                queue: VecDeque::new(),
                next_send: None,
                backoff: initial,
            });
        status.uuid = Some(uuid);
        status.seq = stream.next_seq;
        stream.next_seq += 1;
        if stream.queue.len() >= MAX_UPDATES_PER_TASK {
            // Keep the head (in flight) and drop the oldest queued non-terminal update.
            if let Some(pos) = stream
                .queue
                .iter()
                .skip(1)
                .position(|s| !s.state.is_terminal())
            {
                stream.queue.remove(pos + 1);
            }
        }
        stream.queue.push_back(status);
    }

    /// Restores a stream from a checkpoint (the agent restarted).
    pub fn restore(
        &mut self,
        framework_id: &FrameworkId,
        task_id: &TaskId,
        next_seq: u64,
        queue: Vec<TaskStatus>,
    ) {
        self.streams.insert(
            task_id.clone(),
            TaskStream {
                framework_id: framework_id.clone(),
                next_seq,
                queue: queue.into(),
                next_send: None,
                backoff: self.policy.initial,
            },
        );
    }

    /// The framework acknowledged `uuid`. Returns true if it was the head of its task's queue.
    pub fn acknowledge(&mut self, task_id: &TaskId, uuid: &StatusUuid) -> bool {
        let Some(stream) = self.streams.get_mut(task_id) else {
            return false;
        };
        let matches = stream.queue.front().and_then(|s| s.uuid.as_ref()) == Some(uuid);
        if matches {
            stream.queue.pop_front();
            stream.next_send = None;
            stream.backoff = self.policy.initial;
            if stream.queue.is_empty() {
                // Keep the sequence counter while the task may still change state.
            }
        }
        matches
    }

    /// Forgets a task whose updates are all acknowledged and that will not change again.
    pub fn forget_if_done(&mut self, task_id: &TaskId) -> bool {
        if self
            .streams
            .get(task_id)
            .is_some_and(|s| s.queue.is_empty())
        {
            self.streams.remove(task_id);
            return true;
        }
        false
    }

    pub fn is_acknowledged(&self, task_id: &TaskId) -> bool {
        self.streams.get(task_id).is_none_or(|s| s.queue.is_empty())
    }

    /// Updates sent again because their acknowledgement did not come in time.
    pub fn resends(&self) -> u64 {
        self.resends
    }

    /// Updates to send now: each task's head if it was never sent or its retry is due.
    /// Marks them sent at `now` and backs off their next retry.
    pub fn due(&mut self, now: Instant) -> Vec<(FrameworkId, TaskStatus)> {
        let max = self.policy.max;
        let mut out = Vec::new();
        for stream in self.streams.values_mut() {
            let Some(head) = stream.queue.front() else {
                continue;
            };
            if stream.next_send.is_some_and(|t| t > now) {
                continue;
            }
            out.push((stream.framework_id.clone(), head.clone()));
            let wait = if stream.next_send.is_none() {
                stream.backoff
            } else {
                self.resends += 1;
                stream.backoff = (stream.backoff * 2).min(max);
                stream.backoff
            };
            stream.next_send = Some(now + wait);
        }
        out
    }

    /// When the earliest resend is due; `None` when no sent update waits for its
    /// acknowledgement (a head never sent is sent by the next `due`, whatever the time).
    pub fn next_resend(&self) -> Option<Instant> {
        self.streams
            .values()
            .filter(|s| !s.queue.is_empty())
            .filter_map(|s| s.next_send)
            .min()
    }

    /// After reconnecting: send every head again now.
    pub fn reset_timers(&mut self) {
        for stream in self.streams.values_mut() {
            stream.next_send = None;
        }
    }

    /// The updates not yet acknowledged, per task, for checkpointing.
    pub fn pending(&self, task_id: &TaskId) -> (u64, Vec<TaskStatus>) {
        self.streams
            .get(task_id)
            .map(|s| (s.next_seq, s.queue.iter().cloned().collect()))
            .unwrap_or((1, Vec::new()))
    }

    pub fn len(&self) -> usize {
        self.streams.values().map(|s| s.queue.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{StatusSource, TaskState};

    fn st(task: &str, state: TaskState) -> TaskStatus {
        TaskStatus::new(TaskId::new(task), state, StatusSource::Agent)
    }

    #[test]
    fn one_update_in_flight_per_task_in_order_until_acked() {
        let fw = FrameworkId::new("f");
        let mut u = StatusUpdates::new(RetryPolicy {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(40),
        });
        let t0 = Instant::now();
        u.record(&fw, st("t", TaskState::Starting), StatusUuid::new("u1"));
        u.record(&fw, st("t", TaskState::Running), StatusUuid::new("u2"));
        let d = u.due(t0);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].1.state, TaskState::Starting);
        assert_eq!(d[0].1.seq, 1);
        // Not acknowledged: nothing before the retry, then the same update again, backing off.
        assert!(u.due(t0 + Duration::from_secs(9)).is_empty());
        assert_eq!(
            u.due(t0 + Duration::from_secs(10))[0].1.state,
            TaskState::Starting
        );
        assert!(u.due(t0 + Duration::from_secs(29)).is_empty());
        assert_eq!(u.due(t0 + Duration::from_secs(30)).len(), 1);
        // A wrong uuid does not advance the stream.
        assert!(!u.acknowledge(&TaskId::new("t"), &StatusUuid::new("u2")));
        assert!(u.acknowledge(&TaskId::new("t"), &StatusUuid::new("u1")));
        let d = u.due(t0 + Duration::from_secs(31));
        assert_eq!(d[0].1.state, TaskState::Running);
        assert_eq!(d[0].1.seq, 2);
        assert!(u.acknowledge(&TaskId::new("t"), &StatusUuid::new("u2")));
        assert!(u.due(t0 + Duration::from_secs(100)).is_empty());
        assert!(u.forget_if_done(&TaskId::new("t")));
    }
}
