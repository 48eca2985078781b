//! The legacy read-only JSON endpoints avmesos-cli and dashboards read (`/master/state`,
//! `/slaves`, `/frameworks`, `/tasks`), built from Corral's `ClusterState` as read with the
//! gateway's operator identity (pure; unit-tested below). Shapes: `shared/reference/mesos.md`
//! §4 (Mesos's `readonly_handler.cpp`); Corral keeps no status history per task, so a task's
//! `statuses` holds its current state only.

use crate::events::MESOS_VERSION;
use proto::{AgentStatus, ClusterState, Resources, TaskSummary};
use serde_json::{json, Value};

/// The port avmesos-cli expects in an agent's `pid` (Corral agents serve no HTTP).
const AGENT_PORT: u16 = 5051;

/// `/tasks` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskQuery {
    pub task_id: Option<String>,
    /// At most this many tasks; `None` for all (Mesos clients send `limit=-1`).
    pub limit: Option<usize>,
    pub offset: usize,
    pub descending: bool,
}

impl TaskQuery {
    /// From a query string such as `order=asc&limit=-1` or `task_id=t1`; unknown keys are
    /// ignored, bad values are an error naming the parameter.
    pub fn parse(query: Option<&str>) -> Result<TaskQuery, String> {
        let mut q = TaskQuery {
            task_id: None,
            limit: Some(100),
            offset: 0,
            descending: true,
        };
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "task_id" => q.task_id = Some(percent_decode(v)),
                "limit" => {
                    let n: i64 = v
                        .parse()
                        .map_err(|_| format!("invalid 'limit' {v:?}: expected an integer"))?;
                    q.limit = usize::try_from(n).ok();
                }
                "offset" => {
                    q.offset = v.parse().map_err(|_| {
                        format!("invalid 'offset' {v:?}: expected a non-negative integer")
                    })?
                }
                "order" => {
                    q.descending = match v {
                        "asc" => false,
                        "desc" => true,
                        _ => return Err(format!("invalid 'order' {v:?}: expected asc or desc")),
                    }
                }
                _ => {}
            }
        }
        Ok(q)
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mesos's flattened resources object: cpus, mem and disk in MB, ports as `[a-b,c-d]`.
pub fn resources(r: &Resources) -> Value {
    let mb = |b: u64| b as f64 / (1u64 << 20) as f64;
    let mut v = json!({
        "cpus": r.cpus_milli as f64 / 1000.0,
        "mem": mb(r.mem_bytes),
        "disk": mb(r.disk_bytes),
        "gpus": 0.0,
    });
    if !r.ports.is_empty() {
        let ranges: Vec<String> = r
            .ports
            .iter()
            .map(|p| format!("{}-{}", p.begin, p.end))
            .collect();
        v["ports"] = json!(format!("[{}]", ranges.join(",")));
    }
    v
}

pub fn task(t: &TaskSummary, role: &str) -> Value {
    let mut status = json!({
        "state": t.state.name(),
        "timestamp": 0.0,
        "container_status": {"container_id": {"value": t.id.as_str()}},
    });
    if let Some(m) = &t.message {
        status["message"] = json!(m);
    }
    json!({
        "id": t.id.as_str(),
        "name": t.name,
        "framework_id": t.framework_id.as_str(),
        "executor_id": "",
        "slave_id": t.agent_id.as_str(),
        "agent_id": t.agent_id.as_str(),
        "state": t.state.name(),
        "resources": resources(&t.resources),
        "role": role,
        "statuses": [status],
    })
}

fn task_role(s: &ClusterState, t: &TaskSummary) -> String {
    s.frameworks
        .iter()
        .find(|f| f.id == t.framework_id)
        .map(|f| first_role(&f.roles).to_owned())
        .unwrap_or_else(|| "*".to_owned())
}

pub fn slaves(s: &ClusterState) -> Value {
    let agents: Vec<Value> = s
        .agents
        .iter()
        .map(|a| {
            json!({
                "id": a.id.as_str(),
                "hostname": a.hostname,
                "port": AGENT_PORT,
                "pid": format!("slave(1)@{}:{AGENT_PORT}", a.hostname),
                "attributes": a.attributes,
                "registered_time": 0.0,
                "resources": resources(&a.total),
                "used_resources": resources(&a.used),
                "offered_resources": resources(&a.offered),
                "reserved_resources": {},
                "unreserved_resources": resources(&a.total),
                "active": a.status == AgentStatus::Active,
                "deactivated": matches!(a.status, AgentStatus::Deactivated | AgentStatus::Draining),
                "version": if a.version.is_empty() { MESOS_VERSION } else { a.version.as_str() },
                "capabilities": [],
            })
        })
        .collect();
    json!({"slaves": agents, "recovered_slaves": []})
}

fn first_role(roles: &[String]) -> &str {
    roles.first().map(String::as_str).unwrap_or("*")
}

pub fn frameworks(s: &ClusterState) -> Value {
    let of = |id: &proto::FrameworkId, terminal: bool| -> Vec<Value> {
        s.tasks
            .iter()
            .filter(|t| &t.framework_id == id && t.state.is_terminal() == terminal)
            .map(|t| task(t, &task_role(s, t)))
            .collect()
    };
    let active: Vec<Value> = s
        .frameworks
        .iter()
        .map(|f| {
            json!({
                "id": f.id.as_str(),
                "name": f.name,
                "hostname": "",
                "user": "",
                "webui_url": "",
                "principal": f.principal,
                "role": first_role(&f.roles),
                "roles": f.roles,
                "active": f.connected,
                "connected": f.connected,
                "recovered": false,
                "used_resources": resources(&f.used),
                "offered_resources": resources(&f.offered),
                "resources": resources(&f.used.add(&f.offered)),
                "tasks": of(&f.id, false),
                "completed_tasks": of(&f.id, true),
                "unreachable_tasks": [],
                "offers": [],
            })
        })
        .collect();
    let completed: Vec<Value> = s
        .completed_frameworks
        .iter()
        .map(|f| {
            json!({
                "id": f.id.as_str(),
                "name": f.name,
                "hostname": "",
                "user": "",
                "webui_url": "",
                "principal": f.principal,
                "role": first_role(&f.roles),
                "roles": f.roles,
                "active": false,
                "connected": false,
                "unregistered_time": f.removed_at_ms as f64 / 1000.0,
                "tasks": [],
                "completed_tasks": of(&f.id, true),
                "unreachable_tasks": [],
            })
        })
        .collect();
    json!({"frameworks": active, "completed_frameworks": completed, "unregistered_frameworks": []})
}

pub fn tasks(s: &ClusterState, q: &TaskQuery) -> Value {
    let mut list: Vec<&TaskSummary> = s
        .tasks
        .iter()
        .filter(|t| q.task_id.as_deref().is_none_or(|id| t.id.as_str() == id))
        .collect();
    list.sort_by(|a, b| a.id.cmp(&b.id));
    if q.descending {
        list.reverse();
    }
    let out: Vec<Value> = list
        .into_iter()
        .skip(q.offset)
        .take(q.limit.unwrap_or(usize::MAX))
        .map(|t| task(t, &task_role(s, t)))
        .collect();
    json!({ "tasks": out })
}

/// `/master/state`: the gateway as the master, the cluster as Corral's leader sees it.
pub fn state(s: &ClusterState, master_info: &Value) -> Value {
    let mut v = json!({
        "version": MESOS_VERSION,
        "git_tag": MESOS_VERSION,
        "build_user": "corral",
        "id": master_info["id"],
        "pid": master_info["pid"],
        "hostname": master_info["hostname"],
        "leader": master_info["pid"],
        "leader_info": master_info,
        "activated_slaves": s.agents.iter().filter(|a| a.status == AgentStatus::Active).count(),
        "deactivated_slaves": s.agents.iter().filter(|a| a.status != AgentStatus::Active).count(),
        "orphan_tasks": [],
    });
    let slaves = slaves(s);
    let frameworks = frameworks(s);
    v["slaves"] = slaves["slaves"].clone();
    v["frameworks"] = frameworks["frameworks"].clone();
    v["completed_frameworks"] = frameworks["completed_frameworks"].clone();
    v["unregistered_frameworks"] = json!([]);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::*;

    fn cluster() -> ClusterState {
        let t = |id: &str, state| TaskSummary {
            id: TaskId::new(id),
            name: id.into(),
            framework_id: FrameworkId::new("F1"),
            agent_id: AgentId::new("A1"),
            state,
            resources: Resources::new(100, 32 << 20),
            reason: None,
            message: None,
            exit_code: None,
            limitation: None,
            usage: None,
        };
        ClusterState {
            agents: vec![AgentState {
                id: AgentId::new("A1"),
                hostname: "node1".into(),
                status: AgentStatus::Active,
                total: Resources::new(2000, 1 << 30).with_ports(vec![PortRange {
                    begin: 31000,
                    end: 31009,
                }]),
                used: Resources::new(200, 64 << 20),
                offered: Resources::default(),
                attributes: Default::default(),
                version: String::new(),
                pressure: None,
                reserved: Default::default(),
                reserved_dynamic: Default::default(),
            }],
            frameworks: vec![FrameworkState {
                id: FrameworkId::new("F1"),
                name: "fw".into(),
                principal: "gw".into(),
                roles: vec!["*".into()],
                connected: true,
                dominant_share: 0.1,
                used: Resources::new(200, 64 << 20),
                offered: Resources::default(),
                suppressed: false,
            }],
            tasks: vec![t("b", TaskState::Running), t("a", TaskState::Finished)],
            ..Default::default()
        }
    }

    #[test]
    fn slaves_frameworks_and_tasks_have_the_keys_avmesos_cli_reads() {
        let s = cluster();
        let sl = slaves(&s);
        assert_eq!(sl["slaves"][0]["id"], "A1");
        assert_eq!(sl["slaves"][0]["hostname"], "node1");
        assert_eq!(sl["slaves"][0]["active"], true);
        assert_eq!(sl["slaves"][0]["pid"], "slave(1)@node1:5051");
        assert_eq!(sl["slaves"][0]["resources"]["ports"], "[31000-31009]");
        let fw = frameworks(&s);
        assert_eq!(fw["frameworks"][0]["id"], "F1");
        assert_eq!(fw["frameworks"][0]["active"], true);
        assert_eq!(fw["frameworks"][0]["tasks"].as_array().unwrap().len(), 1);
        assert_eq!(fw["frameworks"][0]["completed_tasks"][0]["id"], "a");
        let q = TaskQuery::parse(Some("order=asc&limit=-1")).unwrap();
        let ts = tasks(&s, &q);
        assert_eq!(ts["tasks"][0]["id"], "a");
        assert_eq!(ts["tasks"][1]["statuses"][0]["state"], "TASK_RUNNING");
        assert_eq!(ts["tasks"][1]["slave_id"], "A1");
        assert_eq!(ts["tasks"][1]["executor_id"], "");
        assert_eq!(
            ts["tasks"][1]["statuses"][0]["container_status"]["container_id"]["value"],
            "b"
        );
        let one = tasks(&s, &TaskQuery::parse(Some("task_id=b")).unwrap());
        assert_eq!(one["tasks"].as_array().unwrap().len(), 1);
        let first = tasks(&s, &TaskQuery::parse(Some("limit=1")).unwrap());
        assert_eq!(first["tasks"][0]["id"], "b", "descending by default");
        assert!(TaskQuery::parse(Some("limit=x"))
            .unwrap_err()
            .contains("limit"));
        assert_eq!(percent_decode("a%2Fb+c%"), "a/b c%");
    }
}
