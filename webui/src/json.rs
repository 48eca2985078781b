//! The event stream as JSON, as `corral events --json` prints it and the UI's server-sent
//! events carry it: one object per event with the Mesos event name in `"type"`, the cursor as
//! `"INDEX.SEQ"`, and the agent, framework or task (or the removed id) under its own key.

use proto::{ClusterEvent, EventsSubscribed, StampedEvent};
use serde_json::{json, Value};

/// `{"type": "TASK_UPDATED", "task": {...}}` and the like.
pub fn event(e: &ClusterEvent) -> Value {
    let (key, body) = match e {
        ClusterEvent::AgentAdded(a) | ClusterEvent::AgentUpdated(a) => ("agent", json!(a)),
        ClusterEvent::AgentRemoved { agent_id } => ("agent_id", json!(agent_id)),
        ClusterEvent::FrameworkAdded(f) | ClusterEvent::FrameworkUpdated(f) => {
            ("framework", json!(f))
        }
        ClusterEvent::FrameworkRemoved { framework_id } => ("framework_id", json!(framework_id)),
        ClusterEvent::TaskAdded(t) | ClusterEvent::TaskUpdated(t) => ("task", json!(t)),
    };
    json!({ "type": e.kind(), key: body })
}

/// An event with its `"cursor"`.
pub fn stamped(e: &StampedEvent) -> Value {
    let mut v = event(&e.event);
    v["cursor"] = json!(e.cursor.to_string());
    v
}

/// `{"type": "SUBSCRIBED", "cursor", "resumed", "note", "state": [events]}`.
pub fn subscribed(s: &EventsSubscribed) -> Value {
    json!({
        "type": "SUBSCRIBED",
        "cursor": s.cursor.to_string(),
        "resumed": s.resumed,
        "note": s.note,
        "state": s.state.iter().map(event).collect::<Vec<_>>(),
    })
}

/// `{"type": "RESUMED", "master", "after"}`: the stream continues at another master.
pub fn resumed(master: &str, after: &proto::EventCursor) -> Value {
    json!({ "type": "RESUMED", "master": master, "after": after.to_string() })
}
