//! The operator event stream (`corral events`, Mesos's operator `SUBSCRIBE`): agent, framework
//! and task changes, each derived from one committed registry change and numbered by where that
//! change sits in the masters' replicated log ([`EventCursor`]). Every master holds the same
//! log, so a cursor means the same event at any master: a client that lost its master resumes
//! at the next leader with `SubscribeEvents { after: Some(cursor) }` and gets exactly the
//! events after the last one it processed, none lost and none twice.

use crate::{AgentId, AgentStatus, FrameworkId, Resources, TaskSummary};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A position in the event stream: event number `seq` (from 0) among the events derived from
/// the registry changes in replicated-log entry `index`. Cursors order events: later events
/// have greater cursors. `seq == u32::MAX` stands for "after every event of entry `index`"
/// (where a subscription's state snapshot was taken).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct EventCursor {
    pub index: u64,
    pub seq: u32,
}

impl EventCursor {
    /// After every event of log entry `index`.
    pub fn after_entry(index: u64) -> EventCursor {
        EventCursor {
            index,
            seq: u32::MAX,
        }
    }
}

/// `INDEX.SEQ`, or `INDEX` for [`EventCursor::after_entry`].
impl fmt::Display for EventCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.seq == u32::MAX {
            write!(f, "{}", self.index)
        } else {
            write!(f, "{}.{}", self.index, self.seq)
        }
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid event cursor {0:?}: expected INDEX or INDEX.SEQ (as `corral events --json` prints in \"cursor\")")]
pub struct CursorParseError(pub String);

impl std::str::FromStr for EventCursor {
    type Err = CursorParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CursorParseError(s.to_owned());
        match s.split_once('.') {
            None => Ok(EventCursor::after_entry(s.parse().map_err(|_| bad())?)),
            Some((i, q)) => Ok(EventCursor {
                index: i.parse().map_err(|_| bad())?,
                seq: q.parse().map_err(|_| bad())?,
            }),
        }
    }
}

/// An agent as the event stream describes it (what the registry holds; usage and pressure
/// are in `GetState`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventAgent {
    pub id: AgentId,
    pub hostname: String,
    pub status: AgentStatus,
    pub total: Resources,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub version: String,
}

/// A framework as the event stream describes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventFramework {
    pub id: FrameworkId,
    pub name: String,
    #[serde(default)]
    pub principal: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// One change (Mesos operator event names: `AGENT_ADDED`, `TASK_UPDATED`, ...). Task events
/// carry the whole task as it is after the change (state, reason, message, exit code, the
/// limitation that killed it), so a client keeps a table by `(framework_id, id)` with upserts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClusterEvent {
    AgentAdded(EventAgent),
    /// Re-registered, marked (draining, deactivated, active) or unreachable.
    AgentUpdated(EventAgent),
    AgentRemoved {
        agent_id: AgentId,
    },
    FrameworkAdded(EventFramework),
    /// Re-subscribed with new information.
    FrameworkUpdated(EventFramework),
    /// Torn down (its live tasks were killed: a `TaskUpdated` each, before this).
    FrameworkRemoved {
        framework_id: FrameworkId,
    },
    /// Launched: in `TASK_STAGING`.
    TaskAdded(TaskSummary),
    TaskUpdated(TaskSummary),
}

impl ClusterEvent {
    /// The Mesos name of the event type (`TASK_UPDATED`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            ClusterEvent::AgentAdded(_) => "AGENT_ADDED",
            ClusterEvent::AgentUpdated(_) => "AGENT_UPDATED",
            ClusterEvent::AgentRemoved { .. } => "AGENT_REMOVED",
            ClusterEvent::FrameworkAdded(_) => "FRAMEWORK_ADDED",
            ClusterEvent::FrameworkUpdated(_) => "FRAMEWORK_UPDATED",
            ClusterEvent::FrameworkRemoved { .. } => "FRAMEWORK_REMOVED",
            ClusterEvent::TaskAdded(_) => "TASK_ADDED",
            ClusterEvent::TaskUpdated(_) => "TASK_UPDATED",
        }
    }
}

/// An event with its place in the stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StampedEvent {
    pub cursor: EventCursor,
    pub event: ClusterEvent,
}

/// The first reply to `SubscribeEvents`; events with cursors after `cursor` follow in
/// `OperatorReply::Events` batches.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EventsSubscribed {
    /// Where the stream continues from.
    pub cursor: EventCursor,
    /// True when the subscription continues exactly after the cursor the client sent; `state`
    /// is then empty.
    #[serde(default)]
    pub resumed: bool,
    /// The cluster as of `cursor`, as `*Added` events (agents, frameworks, then tasks), when not
    /// resumed.
    #[serde(default)]
    pub state: Vec<ClusterEvent>,
    /// Why a resumption was not possible (the master no longer holds events that old), if one
    /// was asked for and refused.
    #[serde(default)]
    pub note: Option<String>,
}
