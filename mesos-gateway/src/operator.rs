//! The v1 operator API (`POST /api/v1`): GET_HEALTH, GET_VERSION, GET_STATE, GET_AGENTS,
//! GET_FRAMEWORKS, GET_TASKS and GET_ROLES, built from Corral's `ClusterState` as read with
//! the gateway's operator identity (pure; unit-tested below). Shapes: Mesos's
//! `master/master.proto` `Response` in stout's JSON (nested ids, resources as lists).

use crate::events::{self, Audience, MESOS_VERSION};
use proto::{AgentStatus, ClusterState, Resources, TaskSummary};
use serde_json::{json, Value};

/// The calls answered without reading the cluster.
pub fn needs_state(kind: &str) -> Result<bool, String> {
    match kind {
        "GET_HEALTH" | "GET_VERSION" => Ok(false),
        "GET_STATE" | "GET_AGENTS" | "GET_FRAMEWORKS" | "GET_TASKS" | "GET_ROLES" => Ok(true),
        "SUBSCRIBE" => Err(
            "SUBSCRIBE: the operator event stream is not served by the Mesos gateway yet"
                .to_owned(),
        ),
        other => Err(format!(
            "{other}: not served by the Mesos gateway (it answers GET_HEALTH, GET_VERSION, \
             GET_STATE, GET_AGENTS, GET_FRAMEWORKS, GET_TASKS, GET_ROLES)"
        )),
    }
}

/// The response to `kind` (one [`needs_state`] accepted); `state` is `None` only for the calls
/// that do not need it.
pub fn respond(kind: &str, state: Option<&ClusterState>) -> Value {
    let empty = ClusterState::default();
    let s = state.unwrap_or(&empty);
    let body = match kind {
        "GET_HEALTH" => json!({"healthy": true}),
        "GET_VERSION" => json!({"version_info": {
            "version": MESOS_VERSION, "build_user": "corral", "git_tag": MESOS_VERSION,
        }}),
        "GET_AGENTS" => agents(s),
        "GET_FRAMEWORKS" => frameworks(s),
        "GET_TASKS" => tasks(s),
        "GET_ROLES" => roles(s),
        _ => json!({
            "get_tasks": tasks(s),
            "get_executors": {"executors": []},
            "get_frameworks": frameworks(s),
            "get_agents": agents(s),
        }),
    };
    let mut v = json!({ "type": kind });
    v[kind.to_ascii_lowercase()] = body;
    v
}

fn res(r: &Resources) -> Vec<Value> {
    events::resources(&Audience::default(), r, "*")
}

fn agents(s: &ClusterState) -> Value {
    let list: Vec<Value> = s
        .agents
        .iter()
        .map(|a| {
            json!({
                "agent_info": {
                    "id": {"value": a.id.as_str()},
                    "hostname": a.hostname,
                    "port": 5051,
                    "resources": res(&a.total),
                    "attributes": events::attributes(&a.attributes),
                },
                "active": a.status == AgentStatus::Active,
                "deactivated": matches!(a.status, AgentStatus::Deactivated | AgentStatus::Draining),
                "version": if a.version.is_empty() { MESOS_VERSION } else { a.version.as_str() },
                "pid": format!("slave(1)@{}:5051", a.hostname),
                "total_resources": res(&a.total),
                "allocated_resources": res(&a.used),
                "offered_resources": res(&a.offered),
                "capabilities": [],
            })
        })
        .collect();
    json!({"agents": list, "recovered_agents": []})
}

/// A `FrameworkInfo` of what Corral keeps of a framework.
fn framework_info(id: &proto::FrameworkId, name: &str, principal: &str, roles: &[String]) -> Value {
    json!({"id": {"value": id.as_str()}, "name": name, "user": "", "principal": principal, "roles": roles})
}

fn frameworks(s: &ClusterState) -> Value {
    let list: Vec<Value> = s
        .frameworks
        .iter()
        .map(|f| {
            json!({
                "framework_info": framework_info(&f.id, &f.name, &f.principal, &f.roles),
                "active": f.connected,
                "connected": f.connected,
                "recovered": false,
                "allocated_resources": res(&f.used),
                "offered_resources": res(&f.offered),
            })
        })
        .collect();
    let completed: Vec<Value> = s
        .completed_frameworks
        .iter()
        .map(|f| {
            json!({
                "framework_info": framework_info(&f.id, &f.name, &f.principal, &f.roles),
                "active": false, "connected": false, "recovered": false,
            })
        })
        .collect();
    json!({"frameworks": list, "completed_frameworks": completed})
}

fn task(t: &TaskSummary) -> Value {
    json!({
        "name": t.name,
        "task_id": {"value": t.id.as_str()},
        "framework_id": {"value": t.framework_id.as_str()},
        "agent_id": {"value": t.agent_id.as_str()},
        "state": t.state.name(),
        "resources": res(&t.resources),
        "statuses": [{
            "task_id": {"value": t.id.as_str()},
            "state": t.state.name(),
            "agent_id": {"value": t.agent_id.as_str()},
            "container_status": {"container_id": {"value": t.id.as_str()}},
        }],
    })
}

fn tasks(s: &ClusterState) -> Value {
    let (done, live): (Vec<&TaskSummary>, Vec<&TaskSummary>) =
        s.tasks.iter().partition(|t| t.state.is_terminal());
    json!({
        "tasks": live.into_iter().map(task).collect::<Vec<_>>(),
        "completed_tasks": done.into_iter().map(task).collect::<Vec<_>>(),
    })
}

fn roles(s: &ClusterState) -> Value {
    let list: Vec<Value> = s
        .roles
        .iter()
        .map(|r| {
            let frameworks: Vec<Value> = s
                .frameworks
                .iter()
                .filter(|f| f.roles.contains(&r.name))
                .map(|f| json!({"value": f.id.as_str()}))
                .collect();
            json!({"name": r.name, "weight": r.weight, "frameworks": frameworks})
        })
        .collect();
    json!({ "roles": list })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::*;

    #[test]
    fn responses_are_nested_under_the_lowercase_type() {
        let s = ClusterState {
            agents: vec![AgentState {
                id: AgentId::new("A1"),
                hostname: "n1".into(),
                status: AgentStatus::Active,
                total: Resources::new(1000, 1 << 30),
                used: Resources::default(),
                offered: Resources::default(),
                attributes: Default::default(),
                version: String::new(),
                pressure: None,
                reserved: Default::default(),
                reserved_dynamic: Default::default(),
            }],
            tasks: vec![TaskSummary {
                id: TaskId::new("t"),
                name: "t".into(),
                framework_id: FrameworkId::new("F"),
                agent_id: AgentId::new("A1"),
                state: TaskState::Finished,
                resources: Resources::new(100, 1 << 20),
                reason: None,
                message: None,
                exit_code: Some(0),
                limitation: None,
                usage: None,
            }],
            ..Default::default()
        };
        let a = respond("GET_AGENTS", Some(&s));
        assert_eq!(a["type"], "GET_AGENTS");
        assert_eq!(
            a["get_agents"]["agents"][0]["agent_info"]["id"]["value"],
            "A1"
        );
        assert_eq!(
            a["get_agents"]["agents"][0]["total_resources"][0]["name"],
            "cpus"
        );
        let t = respond("GET_TASKS", Some(&s));
        assert_eq!(
            t["get_tasks"]["completed_tasks"][0]["task_id"]["value"],
            "t"
        );
        let st = respond("GET_STATE", Some(&s));
        assert_eq!(
            st["get_state"]["get_agents"]["agents"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(respond("GET_HEALTH", None)["get_health"]["healthy"], true);
        assert_eq!(
            respond("GET_VERSION", None)["get_version"]["version_info"]["version"],
            "1.11.0"
        );
        assert_eq!(needs_state("GET_AGENTS"), Ok(true));
        assert!(needs_state("SUBSCRIBE")
            .unwrap_err()
            .starts_with("SUBSCRIBE:"));
        assert!(needs_state("DRAIN_AGENT")
            .unwrap_err()
            .starts_with("DRAIN_AGENT:"));
    }
}
