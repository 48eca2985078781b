//! Corral's [`FrameworkEvent`]s → Mesos v1 scheduler events in the nested JSON real clients
//! read (`offers.offers`, `error.message`, `update.status` with `agent_id` and a base64 uuid),
//! framed as RecordIO (pure; unit-tested below).

use crate::calls::uuid_to_mesos;
use proto::{
    FrameworkEvent, FrameworkId, Offer, Resources, StatusReason, StatusSource, TaskStatus,
};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// The Mesos version the gateway reports: numeric, because pymesos parses each part with
/// `int` (and adds GPU_RESOURCES from 1.0.0 on, which is harmless: no offer has gpus).
pub const MESOS_VERSION: &str = "1.11.0";
/// Mesos's `DEFAULT_HEARTBEAT_INTERVAL`.
pub const DEFAULT_HEARTBEAT_SECS: u64 = 15;

/// What the translation needs to know about the subscribed framework.
#[derive(Debug, Clone, Default)]
pub struct Audience {
    /// The framework declared MULTI_ROLE: offers and resources carry `allocation_info`.
    pub multi_role: bool,
    /// The framework declared RESERVATION_REFINEMENT: resources carry `reservations: []`
    /// instead of `role: "*"`.
    pub reservation_refinement: bool,
}

/// One RecordIO record: the decimal byte length, a newline, and the JSON, with every
/// non-ASCII character escaped (avmesos slices the decoded text by the byte length) and no
/// raw newline (it reads the stream with `iter_lines`).
pub fn record(event: &Value) -> bytes::Bytes {
    let json = ascii_json(event);
    bytes::Bytes::from(format!("{}\n{}", json.len(), json))
}

/// Compact JSON with every non-ASCII character as `\uXXXX` (a non-ASCII character can only
/// stand inside a string in serde_json's output, where the escape means the same).
pub fn ascii_json(v: &Value) -> String {
    let raw = v.to_string();
    if raw.is_ascii() {
        return raw;
    }
    let mut out = String::with_capacity(raw.len() + 16);
    for ch in raw.chars() {
        if ch.is_ascii() {
            out.push(ch);
        } else {
            let mut buf = [0u16; 2];
            for unit in ch.encode_utf16(&mut buf) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

pub fn heartbeat() -> Value {
    json!({"type": "HEARTBEAT"})
}

pub fn error(message: &str) -> Value {
    json!({"type": "ERROR", "error": {"message": message}})
}

/// `SUBSCRIBED`; `master_info` describes the gateway (the master the client talks to).
pub fn subscribed(framework_id: &FrameworkId, heartbeat_secs: f64, master_info: &Value) -> Value {
    json!({
        "type": "SUBSCRIBED",
        "subscribed": {
            "framework_id": {"value": framework_id.as_str()},
            "heartbeat_interval_seconds": heartbeat_secs,
            "master_info": master_info,
        }
    })
}

/// Mesos's `MasterInfo` for the gateway's address. `ip` is the IPv4 address as Mesos packs
/// it (network byte order read as a little-endian integer: 127.0.0.1 is 16777343).
pub fn master_info(id: &str, addr: std::net::SocketAddr, hostname: &str) -> Value {
    let ip_num = match addr.ip() {
        std::net::IpAddr::V4(v4) => u32::from_le_bytes(v4.octets()),
        std::net::IpAddr::V6(_) => 0,
    };
    json!({
        "id": id,
        "ip": ip_num,
        "port": addr.port(),
        "pid": format!("master@{addr}"),
        "hostname": hostname,
        "version": MESOS_VERSION,
        "address": {"hostname": hostname, "ip": addr.ip().to_string(), "port": addr.port()},
    })
}

/// The Mesos event for a Corral event; `None` for what has no Mesos counterpart or is the
/// gateway's own business (Corral's heartbeats: the gateway sends its own on its own clock).
pub fn translate(aud: &Audience, event: &FrameworkEvent) -> Option<Value> {
    Some(match event {
        FrameworkEvent::Offers { offers } => json!({
            "type": "OFFERS",
            "offers": {"offers": offers.iter().map(|o| offer(aud, o)).collect::<Vec<_>>()},
        }),
        FrameworkEvent::Rescind { offer_id } => json!({
            "type": "RESCIND",
            "rescind": {"offer_id": {"value": offer_id.as_str()}},
        }),
        FrameworkEvent::Update { status } => json!({
            "type": "UPDATE",
            "update": {"status": task_status(status)},
        }),
        FrameworkEvent::Message {
            agent_id,
            executor_id,
            data,
        } => {
            use base64::Engine;
            json!({
                "type": "MESSAGE",
                "message": {
                    "agent_id": {"value": agent_id.as_str()},
                    "executor_id": {"value": executor_id.as_str()},
                    "data": base64::engine::general_purpose::STANDARD.encode(data),
                }
            })
        }
        FrameworkEvent::AgentLost { agent_id } => json!({
            "type": "FAILURE",
            "failure": {"agent_id": {"value": agent_id.as_str()}},
        }),
        FrameworkEvent::Error { message } => error(message),
        FrameworkEvent::Subscribed { .. } | FrameworkEvent::Heartbeat => return None,
    })
}

fn offer(aud: &Audience, o: &Offer) -> Value {
    let role = if o.role.is_empty() { "*" } else { &o.role };
    let mut v = json!({
        "id": {"value": o.id.as_str()},
        "framework_id": {"value": o.framework_id.as_str()},
        "agent_id": {"value": o.agent_id.as_str()},
        "hostname": o.hostname,
        "resources": resources(aud, &o.resources, role),
        "attributes": attributes(&o.attributes),
    });
    if aud.multi_role {
        v["allocation_info"] = json!({ "role": role });
    }
    v
}

/// An agent's attributes as Mesos `Attribute`s (all TEXT).
pub fn attributes(a: &std::collections::BTreeMap<String, String>) -> Vec<Value> {
    a.iter()
        .map(|(k, v)| json!({"name": k, "type": "TEXT", "text": {"value": v}}))
        .collect()
}

/// Mesos resources: `cpus`, `mem` and `disk` (MB) scalars and `ports` ranges, in the format
/// the framework's capabilities ask for.
pub fn resources(aud: &Audience, r: &Resources, role: &str) -> Vec<Value> {
    let mb = |bytes: u64| bytes as f64 / (1u64 << 20) as f64;
    let mut out = Vec::new();
    let mut push = |mut v: Value| {
        if aud.reservation_refinement {
            v["reservations"] = json!([]);
        } else {
            v["role"] = json!("*");
        }
        if aud.multi_role {
            v["allocation_info"] = json!({ "role": role });
        }
        out.push(v);
    };
    let scalar = |name: &str, value: f64| json!({"name": name, "type": "SCALAR", "scalar": {"value": value}});
    if r.cpus_milli > 0 {
        push(scalar("cpus", r.cpus_milli as f64 / 1000.0));
    }
    if r.mem_bytes > 0 {
        push(scalar("mem", mb(r.mem_bytes)));
    }
    if r.disk_bytes > 0 {
        push(scalar("disk", mb(r.disk_bytes)));
    }
    if !r.ports.is_empty() {
        push(json!({
            "name": "ports", "type": "RANGES",
            "ranges": {"range": r.ports.iter().map(|p| json!({"begin": p.begin, "end": p.end})).collect::<Vec<_>>()},
        }));
    }
    out
}

/// A Mesos `TaskStatus`. Updates that must be acknowledged carry `agent_id` and the uuid in
/// base64; the exit code is in `message` ("Command exited with status N"), where Mesos's
/// command executor puts it.
pub fn task_status(s: &TaskStatus) -> Value {
    let mut v = json!({
        "task_id": {"value": s.task_id.as_str()},
        "state": s.state.name(),
        "source": match s.source {
            StatusSource::Master => "SOURCE_MASTER",
            StatusSource::Agent => "SOURCE_AGENT",
            StatusSource::Executor => "SOURCE_EXECUTOR",
        },
        "timestamp": timestamp(s.timestamp_ms),
    });
    if let Some(a) = &s.agent_id {
        v["agent_id"] = json!({"value": a.as_str()});
    }
    // The command executor's id is the task's (Mesos: ExecutorID = TaskID for command tasks).
    let executor = match (&s.executor_id, s.source) {
        (Some(e), _) => Some(e.as_str()),
        (None, StatusSource::Master) => None,
        (None, _) => Some(s.task_id.as_str()),
    };
    if let Some(e) = executor {
        v["executor_id"] = json!({"value": e});
        v["container_status"] = json!({"container_id": {"value": e}});
    }
    if let Some(u) = &s.uuid {
        v["uuid"] = json!(uuid_to_mesos(u));
    }
    if let Some(r) = s.reason.and_then(|r| reason(r, s)) {
        v["reason"] = json!(r);
    }
    let mut message = Vec::new();
    if let Some(code) = s.exit_code {
        message.push(format!("Command exited with status {code}"));
    } else if let Some(sig) = s.signal {
        message.push(format!("Command terminated with signal {sig}"));
    }
    // Corral's own "exited with code N" says what the Mesos phrase above already does.
    let same = s.exit_code.map(|c| format!("exited with code {c}"));
    if let Some(m) = s
        .message
        .as_deref()
        .filter(|m| !m.is_empty() && Some(*m) != same.as_deref())
    {
        message.push(m.to_owned());
    }
    if !message.is_empty() {
        v["message"] = json!(message.join(": "));
    }
    if let Some(l) = &s.limitation {
        if l.resource == proto::LimitedResource::Memory {
            v["limitation"] = json!({"resources": [{
                "name": "mem", "type": "SCALAR",
                "scalar": {"value": l.limit as f64 / (1u64 << 20) as f64},
            }]});
        }
    }
    v
}

fn timestamp(ms: u64) -> f64 {
    if ms > 0 {
        return ms as f64 / 1000.0;
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Mesos's `TaskStatus.Reason` name for Corral's reason (v1 names: AGENT, not SLAVE).
fn reason(r: StatusReason, s: &TaskStatus) -> Option<&'static str> {
    Some(match r {
        StatusReason::CommandExited if s.state == proto::TaskState::Failed => {
            "REASON_COMMAND_EXECUTOR_FAILED"
        }
        StatusReason::CommandExited => return None,
        StatusReason::MemoryLimit => "REASON_CONTAINER_LIMITATION_MEMORY",
        StatusReason::PidsLimit => "REASON_CONTAINER_LIMITATION",
        StatusReason::KilledByFramework | StatusReason::KilledByOperator => return None,
        StatusReason::Reconciliation => "REASON_RECONCILIATION",
        StatusReason::AgentUnreachable => "REASON_AGENT_DISCONNECTED",
        StatusReason::AgentRemoved => "REASON_AGENT_REMOVED",
        StatusReason::AgentRestarted => "REASON_AGENT_RESTARTED",
        StatusReason::FrameworkRemoved => "REASON_FRAMEWORK_REMOVED",
        StatusReason::InvalidOffers => "REASON_INVALID_OFFERS",
        StatusReason::TaskInvalid => "REASON_TASK_INVALID",
        StatusReason::TaskUnauthorized => "REASON_TASK_UNAUTHORIZED",
        StatusReason::ExecutorTerminated => "REASON_EXECUTOR_TERMINATED",
        StatusReason::ContainerLaunchFailed => "REASON_CONTAINER_LAUNCH_FAILED",
        StatusReason::ResourcesUnavailable => "REASON_INVALID_OFFERS",
        // Mesos has no reason of its own for this; a Mesos scheduler launches again on a new
        // offer after REASON_INVALID_OFFERS, which is what the master asks of it.
        StatusReason::MasterOverloaded => "REASON_INVALID_OFFERS",
        StatusReason::AgentDraining => "REASON_AGENT_DRAINING",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{AgentId, OfferId, PortRange, StatusUuid, TaskId, TaskState};

    #[test]
    fn offers_are_nested_with_role_star_and_mb() {
        let o = Offer {
            id: OfferId::new("O1"),
            framework_id: FrameworkId::new("F"),
            agent_id: AgentId::new("A"),
            hostname: "node1".into(),
            resources: Resources::new(1500, 256 << 20)
                .with_disk(1 << 30)
                .with_ports(vec![PortRange {
                    begin: 31000,
                    end: 32000,
                }]),
            attributes: [("rack".to_owned(), "r1".to_owned())].into(),
            role: "*".into(),
            pressure: None,
            reserved: false,
        };
        let v = translate(
            &Audience::default(),
            &FrameworkEvent::Offers { offers: vec![o] },
        )
        .unwrap();
        let o = &v["offers"]["offers"][0];
        assert_eq!(v["type"], "OFFERS");
        assert_eq!(o["agent_id"]["value"], "A");
        assert_eq!(o["hostname"], "node1");
        assert_eq!(o["resources"][0]["name"], "cpus");
        assert_eq!(o["resources"][0]["scalar"]["value"], 1.5);
        assert_eq!(o["resources"][0]["role"], "*");
        assert_eq!(o["resources"][1]["scalar"]["value"], 256.0);
        assert_eq!(o["resources"][2]["scalar"]["value"], 1024.0);
        assert_eq!(o["resources"][3]["ranges"]["range"][0]["end"], 32000);
        assert_eq!(o["attributes"][0]["text"]["value"], "r1");
        assert!(o.get("allocation_info").is_none());
    }

    #[test]
    fn updates_carry_agent_id_executor_id_exit_code_and_a_base64_uuid() {
        let mut s = TaskStatus::new(TaskId::new("t1"), TaskState::Failed, StatusSource::Agent);
        s.agent_id = Some(AgentId::new("A"));
        s.uuid = Some(StatusUuid::new("3ddabeef-0000-4000-8000-000000000000"));
        s.exit_code = Some(3);
        s.reason = Some(StatusReason::CommandExited);
        s.timestamp_ms = 1_500;
        let v = translate(&Audience::default(), &FrameworkEvent::Update { status: s }).unwrap();
        let st = &v["update"]["status"];
        assert_eq!(st["state"], "TASK_FAILED");
        assert_eq!(st["agent_id"]["value"], "A");
        assert_eq!(st["executor_id"]["value"], "t1");
        assert_eq!(st["uuid"], "Pdq+7wAAQACAAAAAAAAAAA==");
        assert_eq!(st["message"], "Command exited with status 3");
        assert_eq!(st["reason"], "REASON_COMMAND_EXECUTOR_FAILED");
        assert_eq!(st["timestamp"], 1.5);
        // A reconciliation answer has no uuid (nothing to acknowledge).
        let mut r = TaskStatus::new(TaskId::new("t1"), TaskState::Running, StatusSource::Master);
        r.reason = Some(StatusReason::Reconciliation);
        let st = task_status(&r);
        assert!(st.get("uuid").is_none());
        assert_eq!(st["reason"], "REASON_RECONCILIATION");
        assert_eq!(st["source"], "SOURCE_MASTER");
    }

    #[test]
    fn records_are_length_prefixed_ascii_without_newlines() {
        let rec = record(&error("héllo\nwörld 🐄"));
        let text = std::str::from_utf8(&rec).unwrap();
        let (len, json) = text.split_once('\n').unwrap();
        assert!(json.is_ascii() && !json.contains('\n'), "{json}");
        assert_eq!(len.parse::<usize>().unwrap(), json.len());
        let back: Value = serde_json::from_str(json).unwrap();
        assert_eq!(back["error"]["message"], "héllo\nwörld 🐄");
    }
}
