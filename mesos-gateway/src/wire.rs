//! The Mesos v1 scheduler `Call` as JSON clients send it (`scheduler.proto`, stout's JSON
//! mapping: proto field names, enums as name strings, bytes as base64). Only the fields the
//! gateway reads are declared; every other field is ignored, as Mesos ignores unknown fields
//! (avmesos adds `slave_id` to each TaskInfo and `credentials` to SUBSCRIBE).

use serde::Deserialize;

/// `{"value": "..."}`: every Mesos id.
#[derive(Debug, Clone, Deserialize)]
pub struct Id {
    pub value: String,
}

#[derive(Debug, Deserialize)]
pub struct Call {
    #[serde(default)]
    pub framework_id: Option<Id>,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub subscribe: Option<Subscribe>,
    #[serde(default)]
    pub accept: Option<Accept>,
    #[serde(default)]
    pub decline: Option<Decline>,
    #[serde(default)]
    pub revive: Option<Roles>,
    #[serde(default)]
    pub suppress: Option<Roles>,
    #[serde(default)]
    pub kill: Option<Kill>,
    #[serde(default)]
    pub acknowledge: Option<Acknowledge>,
    #[serde(default)]
    pub reconcile: Option<Reconcile>,
    #[serde(default)]
    pub message: Option<Message>,
    /// UPDATE_FRAMEWORK's body has SUBSCRIBE's shape (`framework_info`, `suppressed_roles`).
    #[serde(default)]
    pub update_framework: Option<Subscribe>,
}

#[derive(Debug, Deserialize)]
pub struct Subscribe {
    #[serde(default)]
    pub framework_info: Option<FrameworkInfo>,
    #[serde(default)]
    pub suppressed_roles: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct FrameworkInfo {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub id: Option<Id>,
    #[serde(default)]
    pub failover_timeout: Option<f64>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub capabilities: Vec<Capability>,
}

#[derive(Debug, Deserialize)]
pub struct Capability {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Filters {
    #[serde(default)]
    pub refuse_seconds: Option<f64>,
}

#[derive(Debug, Deserialize)]
pub struct Accept {
    #[serde(default)]
    pub offer_ids: Vec<Id>,
    #[serde(default)]
    pub operations: Vec<Operation>,
    #[serde(default)]
    pub filters: Option<Filters>,
}

#[derive(Debug, Deserialize)]
pub struct Operation {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub launch: Option<Launch>,
}

#[derive(Debug, Deserialize)]
pub struct Launch {
    #[serde(default)]
    pub task_infos: Vec<TaskInfo>,
}

#[derive(Debug, Deserialize)]
pub struct TaskInfo {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub task_id: Option<Id>,
    #[serde(default)]
    pub agent_id: Option<Id>,
    /// What pre-1.0 clients (and avmesos, beside `agent_id`) call the agent id.
    #[serde(default)]
    pub slave_id: Option<Id>,
    #[serde(default)]
    pub resources: Vec<Resource>,
    #[serde(default)]
    pub command: Option<CommandInfo>,
    #[serde(default)]
    pub executor: Option<serde_json::Value>,
    #[serde(default)]
    pub container: Option<ContainerInfo>,
    #[serde(default)]
    pub kill_policy: Option<KillPolicy>,
    #[serde(default)]
    pub labels: Option<Labels>,
}

#[derive(Debug, Deserialize)]
pub struct Resource {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub scalar: Option<Scalar>,
    #[serde(default)]
    pub ranges: Option<Ranges>,
}

#[derive(Debug, Deserialize)]
pub struct Scalar {
    pub value: f64,
}

#[derive(Debug, Deserialize)]
pub struct Ranges {
    #[serde(default)]
    pub range: Vec<Range>,
}

#[derive(Debug, Deserialize)]
pub struct Range {
    pub begin: u64,
    pub end: u64,
}

#[derive(Debug, Deserialize)]
pub struct CommandInfo {
    #[serde(default)]
    pub shell: Option<bool>,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub arguments: Vec<String>,
    #[serde(default)]
    pub environment: Option<Environment>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub uris: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub struct Environment {
    #[serde(default)]
    pub variables: Vec<Variable>,
}

#[derive(Debug, Deserialize)]
pub struct Variable {
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ContainerInfo {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub docker: Option<serde_json::Value>,
    #[serde(default)]
    pub mesos: Option<MesosContainer>,
}

#[derive(Debug, Deserialize)]
pub struct MesosContainer {
    #[serde(default)]
    pub image: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub struct KillPolicy {
    #[serde(default)]
    pub grace_period: Option<DurationInfo>,
}

#[derive(Debug, Deserialize)]
pub struct DurationInfo {
    pub nanoseconds: i64,
}

#[derive(Debug, Deserialize)]
pub struct Labels {
    #[serde(default)]
    pub labels: Vec<Label>,
}

#[derive(Debug, Deserialize)]
pub struct Label {
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Decline {
    #[serde(default)]
    pub offer_ids: Vec<Id>,
    #[serde(default)]
    pub filters: Option<Filters>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Roles {
    #[serde(default)]
    pub roles: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct Kill {
    #[serde(default)]
    pub task_id: Option<Id>,
    #[serde(default)]
    pub agent_id: Option<Id>,
    #[serde(default)]
    pub kill_policy: Option<KillPolicy>,
}

#[derive(Debug, Deserialize)]
pub struct Acknowledge {
    #[serde(default)]
    pub agent_id: Option<Id>,
    #[serde(default)]
    pub task_id: Option<Id>,
    #[serde(default)]
    pub uuid: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Reconcile {
    #[serde(default)]
    pub tasks: Vec<ReconcileTask>,
}

#[derive(Debug, Deserialize)]
pub struct ReconcileTask {
    #[serde(default)]
    pub task_id: Option<Id>,
    #[serde(default)]
    pub agent_id: Option<Id>,
}

#[derive(Debug, Deserialize)]
pub struct Message {
    #[serde(default)]
    pub agent_id: Option<Id>,
    #[serde(default)]
    pub executor_id: Option<Id>,
    #[serde(default)]
    pub data: Option<String>,
}
