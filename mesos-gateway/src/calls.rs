//! Mesos scheduler calls → Corral's [`FrameworkCall`]s (pure; unit-tested below).
//!
//! Whatever Corral cannot do is refused with a [`CallError`] naming the call (or the field) and
//! why; the HTTP layer answers it with `400 Bad Request` and that text, as Mesos answers an
//! invalid call.

use crate::wire;
use base64::Engine;
use proto::{
    AgentId, CommandInfo, ContainerSettings, ExecutorId, FrameworkCall, FrameworkCapability,
    FrameworkInfo, OfferId, OfferOperation, PortRange, ReconcileTask, Resources, StatusUuid,
    TaskId, TaskInfo,
};
use std::collections::BTreeMap;

/// Why a call was refused (the body of the 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CallError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, CallError> {
    Err(CallError(msg.into()))
}

/// What a non-SUBSCRIBE call becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Translated {
    /// Forward this to the master.
    Call(FrameworkCall),
    /// Accepted and dropped, as Mesos's own allocator drops it (REQUEST).
    Ignored,
}

/// The largest `refuse_seconds` Mesos honours (a year); larger values are capped.
const MAX_REFUSE_SECONDS: f64 = 365.0 * 24.0 * 3600.0;
/// Bytes per Mesos "MB" of `mem` and `disk`.
const MB: f64 = (1u64 << 20) as f64;

/// The framework as Corral sees it, from the `framework_info` of a SUBSCRIBE or an
/// UPDATE_FRAMEWORK (`call`, which errors name).
pub fn framework_info(call: &str, info: &wire::FrameworkInfo) -> Result<FrameworkInfo, CallError> {
    let name = match &info.name {
        Some(n) if !n.is_empty() => n.clone(),
        _ => return err(format!("{call}: 'framework_info.name' is required")),
    };
    if info.user.is_none() {
        return err(format!("{call}: 'framework_info.user' is required"));
    }
    let multi_role = has_capability(info, "MULTI_ROLE");
    let roles = if multi_role {
        info.roles.clone()
    } else {
        info.role.iter().cloned().collect()
    };
    let roles = if roles.is_empty() {
        vec!["*".to_owned()]
    } else {
        roles
    };
    let failover_timeout_ms = match info.failover_timeout {
        None => 0,
        Some(s) if s.is_finite() && s >= 0.0 => (s * 1000.0).min(u64::MAX as f64) as u64,
        Some(s) => {
            return err(format!(
                "{call}: 'framework_info.failover_timeout' must be a non-negative number of seconds, not {s}"
            ))
        }
    };
    let mut capabilities = Vec::new();
    if has_capability(info, "PARTITION_AWARE") {
        capabilities.push(FrameworkCapability::PartitionAware);
    }
    Ok(FrameworkInfo {
        id: info.id.as_ref().map(|i| i.value.as_str().into()),
        name,
        roles,
        failover_timeout_ms,
        capabilities,
        version: proto::ProtocolVersion::CURRENT,
    })
}

/// Whether the framework declared capability `kind` (e.g. `MULTI_ROLE`).
pub fn has_capability(info: &wire::FrameworkInfo, kind: &str) -> bool {
    info.capabilities
        .iter()
        .any(|c| c.kind.as_deref() == Some(kind))
}

/// Translates a call other than SUBSCRIBE. `kind` is the call's `type`.
pub fn translate(kind: &str, call: &wire::Call) -> Result<Translated, CallError> {
    let c = match kind {
        "TEARDOWN" => FrameworkCall::Teardown,
        "ACCEPT" => {
            let Some(a) = &call.accept else {
                return err("ACCEPT: expecting 'accept' to be present");
            };
            accept(a)?
        }
        "DECLINE" => {
            let Some(d) = &call.decline else {
                return err("DECLINE: expecting 'decline' to be present");
            };
            FrameworkCall::Decline {
                offer_ids: offer_ids("DECLINE", &d.offer_ids)?,
                filters: filters("DECLINE", d.filters.as_ref())?,
            }
        }
        "REVIVE" => FrameworkCall::Revive {
            roles: call
                .revive
                .as_ref()
                .map(|r| r.roles.clone())
                .unwrap_or_default(),
        },
        "SUPPRESS" => FrameworkCall::Suppress {
            roles: call
                .suppress
                .as_ref()
                .map(|r| r.roles.clone())
                .unwrap_or_default(),
        },
        "KILL" => {
            let Some(k) = &call.kill else {
                return err("KILL: expecting 'kill' to be present");
            };
            FrameworkCall::Kill {
                task_id: required_id("KILL", "kill.task_id", &k.task_id)?.into(),
                agent_id: k.agent_id.as_ref().map(|a| a.value.as_str().into()),
                grace_ms: grace_ms("KILL", k.kill_policy.as_ref())?,
            }
        }
        "ACKNOWLEDGE" => {
            let Some(a) = &call.acknowledge else {
                return err("ACKNOWLEDGE: expecting 'acknowledge' to be present");
            };
            acknowledge(a)?
        }
        "RECONCILE" => FrameworkCall::Reconcile {
            tasks: match &call.reconcile {
                Some(r) => reconcile(r)?,
                None => Vec::new(),
            },
        },
        "MESSAGE" => {
            let Some(m) = &call.message else {
                return err("MESSAGE: expecting 'message' to be present");
            };
            message(m)?
        }
        "REQUEST" => return Ok(Translated::Ignored),
        other => return Err(unsupported(other)),
    };
    Ok(Translated::Call(c))
}

/// Why a call the gateway does not translate is refused.
fn unsupported(kind: &str) -> CallError {
    CallError(match kind {
        "SUBSCRIBE" => "SUBSCRIBE: a subscription is not translated as a call".to_owned(),
        "SHUTDOWN" => "SHUTDOWN: custom executors are not supported through the Mesos gateway \
                       yet; kill the executor's tasks instead"
            .to_owned(),
        "UPDATE_FRAMEWORK" => {
            "UPDATE_FRAMEWORK: answered by the framework's session, not translated as a call"
                .to_owned()
        }
        "ACCEPT_INVERSE_OFFERS" | "DECLINE_INVERSE_OFFERS" => {
            format!("{kind}: Corral sends no inverse offers (maintenance uses `corral drain`)")
        }
        "ACKNOWLEDGE_OPERATION_STATUS" | "RECONCILE_OPERATIONS" => {
            format!("{kind}: Corral has no offer operations with feedback (only LAUNCH)")
        }
        other => format!("Unknown call type {other:?}"),
    })
}

fn acknowledge(a: &wire::Acknowledge) -> Result<FrameworkCall, CallError> {
    let uuid = match &a.uuid {
        Some(u) => uuid_from_mesos(u).ok_or_else(|| {
            CallError(format!(
                "ACKNOWLEDGE: 'acknowledge.uuid' {u:?} is not the base64 uuid of a status update"
            ))
        })?,
        None => return err("ACKNOWLEDGE: 'acknowledge.uuid' is required"),
    };
    Ok(FrameworkCall::Acknowledge {
        agent_id: required_id("ACKNOWLEDGE", "acknowledge.agent_id", &a.agent_id)?.into(),
        task_id: required_id("ACKNOWLEDGE", "acknowledge.task_id", &a.task_id)?.into(),
        uuid,
    })
}

fn reconcile(r: &wire::Reconcile) -> Result<Vec<ReconcileTask>, CallError> {
    r.tasks
        .iter()
        .map(|t| {
            Ok(ReconcileTask {
                task_id: required_id("RECONCILE", "reconcile.tasks[].task_id", &t.task_id)?.into(),
                agent_id: t.agent_id.as_ref().map(|a| AgentId::new(&a.value)),
            })
        })
        .collect()
}

fn message(m: &wire::Message) -> Result<FrameworkCall, CallError> {
    let data = base64::engine::general_purpose::STANDARD
        .decode(m.data.as_deref().unwrap_or(""))
        .map_err(|e| CallError(format!("MESSAGE: 'message.data' is not base64: {e}")))?;
    Ok(FrameworkCall::Message {
        agent_id: required_id("MESSAGE", "message.agent_id", &m.agent_id)?.into(),
        executor_id: ExecutorId::new(required_id(
            "MESSAGE",
            "message.executor_id",
            &m.executor_id,
        )?),
        data,
    })
}

fn required_id(call: &str, field: &str, id: &Option<wire::Id>) -> Result<String, CallError> {
    match id {
        Some(i) if !i.value.is_empty() => Ok(i.value.clone()),
        _ => err(format!("{call}: '{field}' is required")),
    }
}

fn offer_ids(call: &str, ids: &[wire::Id]) -> Result<Vec<OfferId>, CallError> {
    if ids.is_empty() {
        return err(format!("{call}: at least one offer id is required"));
    }
    Ok(ids.iter().map(|i| OfferId::new(&i.value)).collect())
}

fn filters(call: &str, f: Option<&wire::Filters>) -> Result<Option<proto::Filters>, CallError> {
    let Some(f) = f else { return Ok(None) };
    let refuse_seconds = match f.refuse_seconds {
        None => None,
        Some(s) if s.is_nan() || s < 0.0 => {
            return err(format!(
                "{call}: 'filters.refuse_seconds' must be a non-negative number, not {s}"
            ))
        }
        Some(s) => Some(s.min(MAX_REFUSE_SECONDS)),
    };
    Ok(Some(proto::Filters { refuse_seconds }))
}

fn grace_ms(call: &str, p: Option<&wire::KillPolicy>) -> Result<Option<u64>, CallError> {
    match p.and_then(|p| p.grace_period.as_ref()) {
        None => Ok(None),
        Some(d) if d.nanoseconds < 0 => err(format!(
            "{call}: 'kill_policy.grace_period.nanoseconds' must not be negative"
        )),
        Some(d) => Ok(Some(d.nanoseconds as u64 / 1_000_000)),
    }
}

fn accept(a: &wire::Accept) -> Result<FrameworkCall, CallError> {
    let offer_ids = offer_ids("ACCEPT", &a.offer_ids)?;
    let mut operations = Vec::new();
    for op in &a.operations {
        match op.kind.as_deref() {
            Some("LAUNCH") => {
                let Some(l) = &op.launch else {
                    return err("ACCEPT: a LAUNCH operation needs 'launch'");
                };
                let tasks = l
                    .task_infos
                    .iter()
                    .map(task_info)
                    .collect::<Result<Vec<_>, _>>()?;
                operations.push(OfferOperation::Launch { tasks });
            }
            Some("LAUNCH_GROUP") => {
                return err(
                    "ACCEPT: LAUNCH_GROUP is not supported by the Mesos gateway: a task group \
                     runs under Mesos's default executor, which Corral does not have (Corral \
                     launches task groups only under a custom executor written with its Rust \
                     SDK); launch the tasks one by one with LAUNCH",
                )
            }
            Some(other) => {
                return err(format!(
                    "ACCEPT: offer operation {other} is not supported by Corral (only LAUNCH): \
                     Corral has no reservations or volumes through this gateway"
                ))
            }
            None => return err("ACCEPT: an operation has no 'type'"),
        }
    }
    Ok(FrameworkCall::Accept {
        offer_ids,
        operations,
        filters: filters("ACCEPT", a.filters.as_ref())?,
    })
}

fn task_info(t: &wire::TaskInfo) -> Result<TaskInfo, CallError> {
    let task_id = required_id("ACCEPT", "task_infos[].task_id", &t.task_id)?;
    let at = |msg: &str| CallError(format!("ACCEPT: task {task_id:?}: {msg}"));
    let agent_id = t
        .agent_id
        .as_ref()
        .or(t.slave_id.as_ref())
        .map(|a| a.value.clone())
        .ok_or_else(|| at("'agent_id' is required"))?;
    if t.executor.is_some() {
        return Err(at(
            "an ExecutorInfo (custom executor) is not supported by the Mesos gateway yet; \
             give a CommandInfo",
        ));
    }
    let Some(cmd) = &t.command else {
        return Err(at("'command' is required (CommandInfo)"));
    };
    if !cmd.uris.is_empty() {
        return Err(at(
            "CommandInfo.uris (the fetcher) is not supported: Corral downloads nothing",
        ));
    }
    if let Some(c) = &t.container {
        let image = c.mesos.as_ref().is_some_and(|m| m.image.is_some());
        if c.kind.as_deref() == Some("DOCKER") || c.docker.is_some() || image {
            return Err(at(
                "container images (DOCKER, or MESOS with an image) are not supported: Corral \
                 runs commands on the agent's own filesystem",
            ));
        }
    }
    let shell = cmd.shell.unwrap_or(true);
    let value = cmd.value.clone().unwrap_or_default();
    if value.is_empty() && (shell || cmd.arguments.is_empty()) {
        return Err(at("'command.value' is empty"));
    }
    let mut environment = BTreeMap::new();
    for v in cmd.environment.iter().flat_map(|e| &e.variables) {
        if v.kind.as_deref().is_some_and(|k| k != "VALUE") {
            return Err(at(&format!(
                "environment variable {:?} is of type {:?}: only VALUE is supported (no secrets)",
                v.name,
                v.kind.as_deref().unwrap_or("")
            )));
        }
        environment.insert(v.name.clone(), v.value.clone().unwrap_or_default());
    }
    // Mesos: with shell=false, `value` is the program and `arguments` its argv (argv[0]
    // included); an empty `arguments` runs `value` alone.
    let arguments = if shell || !cmd.arguments.is_empty() {
        cmd.arguments.clone()
    } else {
        vec![value.clone()]
    };
    let command = CommandInfo {
        shell,
        value,
        arguments,
        environment,
        user: cmd.user.clone(),
    };
    let labels = t
        .labels
        .iter()
        .flat_map(|l| &l.labels)
        .map(|l| (l.key.clone(), l.value.clone().unwrap_or_default()))
        .collect();
    Ok(TaskInfo {
        task_id: TaskId::new(&task_id),
        name: t.name.clone().unwrap_or_else(|| task_id.clone()),
        agent_id: AgentId::new(agent_id),
        resources: resources(&t.resources).map_err(|m| at(&m))?,
        command,
        container: ContainerSettings::default(),
        kill_grace_ms: grace_ms("ACCEPT", t.kill_policy.as_ref())?,
        labels,
    })
}

/// Mesos resources (cpus, mem and disk in MB, ports) → Corral's fixed-point bundle. Entries of
/// the same name add up (Mesos lists one per role or reservation).
pub fn resources(list: &[wire::Resource]) -> Result<Resources, String> {
    let mut r = Resources::default();
    let mut ports = Vec::new();
    for res in list {
        let scalar = |unit: f64| -> Result<u64, String> {
            let v = res
                .scalar
                .as_ref()
                .ok_or_else(|| format!("resource {:?} needs a 'scalar'", res.name))?
                .value;
            let scaled = v * unit;
            if !scaled.is_finite() || scaled < 0.0 || scaled > u64::MAX as f64 / 2.0 {
                return Err(format!("resource {:?} has an invalid value {v}", res.name));
            }
            Ok(scaled.round() as u64)
        };
        match res.name.as_str() {
            "cpus" => r.cpus_milli = r.cpus_milli.saturating_add(scalar(1000.0)?),
            "mem" => r.mem_bytes = r.mem_bytes.saturating_add(scalar(MB)?),
            "disk" => r.disk_bytes = r.disk_bytes.saturating_add(scalar(MB)?),
            "ports" => {
                let ranges = res
                    .ranges
                    .as_ref()
                    .ok_or_else(|| "resource \"ports\" needs 'ranges'".to_owned())?;
                for range in &ranges.range {
                    let (Ok(begin), Ok(end)) =
                        (u16::try_from(range.begin), u16::try_from(range.end))
                    else {
                        return Err(format!(
                            "port range {}-{} is outside 0-65535",
                            range.begin, range.end
                        ));
                    };
                    if begin > end {
                        return Err(format!("port range {begin}-{end} is empty"));
                    }
                    ports.push(PortRange { begin, end });
                }
            }
            "gpus" => return Err("Corral offers no GPUs (resource \"gpus\")".to_owned()),
            other => {
                return Err(format!(
                    "unknown resource {other:?} (Corral knows cpus, mem, disk, ports)"
                ))
            }
        }
    }
    if !ports.is_empty() {
        r = r.add(&Resources {
            ports,
            ..Resources::default()
        });
    }
    Ok(r)
}

/// A Corral status uuid as Mesos carries it: base64 of the 16 bytes of the UUID (any other
/// string: base64 of its bytes).
pub fn uuid_to_mesos(u: &StatusUuid) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    match uuid::Uuid::parse_str(u.as_str()) {
        Ok(id) if id.hyphenated().to_string() == u.as_str() => b64.encode(id.as_bytes()),
        _ => b64.encode(u.as_str().as_bytes()),
    }
}

/// The inverse of [`uuid_to_mesos`]; `None` if `s` is not base64.
pub fn uuid_from_mesos(s: &str) -> Option<StatusUuid> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    if let Ok(b) = <[u8; 16]>::try_from(bytes.as_slice()) {
        return Some(StatusUuid::new(
            uuid::Uuid::from_bytes(b).hyphenated().to_string(),
        ));
    }
    String::from_utf8(bytes).ok().map(StatusUuid::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> wire::Call {
        serde_json::from_str(json).expect("a call")
    }

    fn tr(json: &str) -> Result<Translated, CallError> {
        let c = parse(json);
        let kind = c.kind.clone().unwrap_or_default();
        translate(&kind, &c)
    }

    #[test]
    fn accept_with_shell_and_argv_launches_and_ignores_unknown_fields() {
        let t = tr(r#"{"framework_id":{"value":"F"},"type":"ACCEPT","accept":{
            "offer_ids":[{"value":"O1"}],
            "operations":[{"type":"LAUNCH","launch":{"task_infos":[
              {"name":"a","task_id":{"value":"t1"},"agent_id":{"value":"A"},"slave_id":{"value":"A"},
               "resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":0.1},"role":"*"},
                            {"name":"mem","type":"SCALAR","scalar":{"value":32}},
                            {"name":"disk","type":"SCALAR","scalar":{"value":10}},
                            {"name":"ports","type":"RANGES","ranges":{"range":[{"begin":31000,"end":31001}]}}],
               "command":{"value":"echo hi","environment":{"variables":[{"name":"K","value":"V"}]}},
               "kill_policy":{"grace_period":{"nanoseconds":2000000000}},
               "some_future_field":{"x":1}},
              {"name":"b","task_id":{"value":"t2"},"agent_id":{"value":"A"},
               "resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":1}}],
               "command":{"shell":false,"value":"/bin/echo","arguments":["echo","x y"]}}]}}],
            "filters":{"refuse_seconds":7.5}}}"#)
        .expect("translates");
        let Translated::Call(FrameworkCall::Accept {
            offer_ids,
            operations,
            filters,
        }) = t
        else {
            panic!("not an accept: {t:?}")
        };
        assert_eq!(offer_ids, vec![OfferId::new("O1")]);
        assert_eq!(filters.and_then(|f| f.refuse_seconds), Some(7.5));
        let OfferOperation::Launch { tasks } = &operations[0] else {
            panic!("not a launch")
        };
        assert_eq!(tasks[0].resources.cpus_milli, 100);
        assert_eq!(tasks[0].resources.mem_bytes, 32 << 20);
        assert_eq!(tasks[0].resources.disk_bytes, 10 << 20);
        assert_eq!(
            tasks[0].resources.ports,
            vec![PortRange {
                begin: 31000,
                end: 31001
            }]
        );
        assert!(tasks[0].command.shell);
        assert_eq!(tasks[0].command.value, "echo hi");
        assert_eq!(
            tasks[0].command.environment.get("K").map(String::as_str),
            Some("V")
        );
        assert_eq!(tasks[0].kill_grace_ms, Some(2000));
        assert!(!tasks[1].command.shell);
        assert_eq!(tasks[1].command.arguments, vec!["echo", "x y"]);
    }

    #[test]
    fn unsupported_calls_and_operations_say_which_and_why() {
        let e = tr(r#"{"type":"SHUTDOWN","shutdown":{}}"#).unwrap_err();
        assert!(e.0.starts_with("SHUTDOWN:"), "{e}");
        let e = tr(r#"{"type":"ACCEPT","accept":{"offer_ids":[{"value":"O"}],"operations":[{"type":"RESERVE"}]}}"#)
            .unwrap_err();
        assert!(
            e.0.contains("RESERVE") && e.0.contains("only LAUNCH"),
            "{e}"
        );
        let e = tr(r#"{"type":"ACCEPT","accept":{"offer_ids":[{"value":"O"}],"operations":[{"type":"LAUNCH","launch":{"task_infos":[
            {"name":"a","task_id":{"value":"t"},"agent_id":{"value":"A"},"resources":[{"name":"gpus","scalar":{"value":1}}],"command":{"value":"x"}}]}}]}}"#)
            .unwrap_err();
        assert!(e.0.contains("task \"t\"") && e.0.contains("GPU"), "{e}");
        let e = tr(r#"{"type":"FROBNICATE"}"#).unwrap_err();
        assert!(e.0.contains("FROBNICATE"), "{e}");
        assert_eq!(tr(r#"{"type":"REQUEST"}"#), Ok(Translated::Ignored));
    }

    #[test]
    fn decline_kill_ack_reconcile() {
        let Ok(Translated::Call(FrameworkCall::Decline { offer_ids, filters })) = tr(
            r#"{"type":"DECLINE","decline":{"offer_ids":[{"value":"O"}],"filters":{"refuse_seconds":1e12}}}"#,
        ) else {
            panic!()
        };
        assert_eq!(offer_ids.len(), 1);
        assert_eq!(
            filters.and_then(|f| f.refuse_seconds),
            Some(MAX_REFUSE_SECONDS)
        );
        assert_eq!(
            tr(r#"{"type":"KILL","kill":{"task_id":{"value":"t"}}}"#),
            Ok(Translated::Call(FrameworkCall::Kill {
                task_id: "t".into(),
                agent_id: None,
                grace_ms: None
            }))
        );
        let uuid = StatusUuid::new(uuid::Uuid::new_v4().hyphenated().to_string());
        let b64 = uuid_to_mesos(&uuid);
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(&b64)
                .unwrap()
                .len(),
            16
        );
        let ack = format!(
            r#"{{"type":"ACKNOWLEDGE","acknowledge":{{"agent_id":{{"value":"A"}},"task_id":{{"value":"t"}},"uuid":"{b64}"}}}}"#
        );
        assert_eq!(
            tr(&ack),
            Ok(Translated::Call(FrameworkCall::Acknowledge {
                agent_id: "A".into(),
                task_id: "t".into(),
                uuid
            }))
        );
        assert!(tr(r#"{"type":"ACKNOWLEDGE","acknowledge":{"agent_id":{"value":"A"},"task_id":{"value":"t"},"uuid":"%%%"}}"#).is_err());
        assert_eq!(
            tr(r#"{"type":"RECONCILE","reconcile":{"tasks":[]}}"#),
            Ok(Translated::Call(FrameworkCall::Reconcile { tasks: vec![] }))
        );
        let other = StatusUuid::new("u1");
        assert_eq!(uuid_from_mesos(&uuid_to_mesos(&other)), Some(other));
    }

    #[test]
    fn framework_info_roles_failover_and_required_fields() {
        let info: wire::FrameworkInfo = serde_json::from_str(
            r#"{"user":"root","name":"n","failover_timeout":100,"capabilities":[{"type":"GPU_RESOURCES"},{"type":"PARTITION_AWARE"}],"hostname":"h"}"#,
        )
        .unwrap();
        let fi = framework_info("SUBSCRIBE", &info).unwrap();
        assert_eq!(fi.roles, vec!["*"]);
        assert_eq!(fi.failover_timeout_ms, 100_000);
        assert_eq!(fi.capabilities, vec![FrameworkCapability::PartitionAware]);
        let info: wire::FrameworkInfo = serde_json::from_str(
            r#"{"user":"u","name":"n","roles":["a","b"],"role":"x","capabilities":[{"type":"MULTI_ROLE"}]}"#,
        )
        .unwrap();
        assert_eq!(
            framework_info("SUBSCRIBE", &info).unwrap().roles,
            vec!["a", "b"]
        );
        let info: wire::FrameworkInfo = serde_json::from_str(r#"{"name":"n"}"#).unwrap();
        assert!(framework_info("SUBSCRIBE", &info)
            .unwrap_err()
            .0
            .contains("user"));
    }
}
