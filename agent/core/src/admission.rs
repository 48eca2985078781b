//! What the agent accepts: safe ids (they become directory names) and launches that fit in
//! what is free; how far along its life a task's state is.

use proto::{FrameworkId, Resources, StatusReason, TaskId, TaskState};

/// Whether a command task may launch: its ids must be safe directory names and what it asks
/// for must fit in what is `free`. A refusal is the reason and message of its `TASK_ERROR`.
pub fn admit(
    task_id: &TaskId,
    framework_id: &FrameworkId,
    wants: &Resources,
    free: &Resources,
) -> Result<(), (StatusReason, String)> {
    if !valid_id(task_id.as_str()) || !valid_id(framework_id.as_str()) {
        return Err((
            StatusReason::TaskInvalid,
            "task and framework ids may use only letters, digits, '.', '_' and '-'".to_owned(),
        ));
    }
    if !free.contains(wants) {
        return Err((
            StatusReason::ResourcesUnavailable,
            format!("the task asks for {wants} but this agent has only {free} free"),
        ));
    }
    Ok(())
}

/// Task ids become directory names: only a safe alphabet is accepted.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The id of a command task's container: recovery finds a container by it when the agent died
/// before checkpointing the container's record.
pub fn container_id(framework: &FrameworkId, task: &TaskId) -> String {
    format!("{framework}.{task}")
}

/// How far along a task's life a state is: an executor may only move a task forward.
pub fn progress(state: TaskState) -> u8 {
    match state {
        TaskState::Staging => 0,
        TaskState::Starting => 1,
        TaskState::Running => 2,
        TaskState::Killing => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(s: &str) -> Resources {
        s.parse().expect("resources")
    }

    #[test]
    fn a_task_that_fits_with_safe_ids_is_admitted() {
        let (t, f) = (TaskId::new("web-1.a_b"), FrameworkId::new("fw-1"));
        assert_eq!(
            admit(&t, &f, &res("cpus:1;mem:64MiB"), &res("cpus:1;mem:64MiB")),
            Ok(())
        );
    }

    #[test]
    fn unsafe_ids_are_refused_before_resources_are_looked_at() {
        let free = res("cpus:4;mem:1GiB");
        for (task, fw) in [
            ("../x", "fw"),
            (".hidden", "fw"),
            ("", "fw"),
            ("t", "a/b"),
            ("t", "a b"),
        ] {
            let refused = admit(
                &TaskId::new(task),
                &FrameworkId::new(fw),
                &res("cpus:8"),
                &free,
            );
            let (reason, msg) = refused.expect_err(task);
            assert_eq!(reason, StatusReason::TaskInvalid, "{task:?} {fw:?}");
            assert!(msg.contains("letters, digits"), "{msg}");
        }
        let long = "a".repeat(201);
        assert!(admit(
            &TaskId::new(&long),
            &FrameworkId::new("fw"),
            &res("cpus:1"),
            &free
        )
        .is_err());
    }

    #[test]
    fn a_task_larger_than_what_is_free_is_refused_naming_both() {
        let (t, f) = (TaskId::new("t"), FrameworkId::new("fw"));
        let (reason, msg) = admit(&t, &f, &res("cpus:1;mem:128MiB"), &res("cpus:2;mem:64MiB"))
            .expect_err("too big");
        assert_eq!(reason, StatusReason::ResourcesUnavailable);
        assert!(
            msg.contains("asks for") && msg.contains("64MiB free"),
            "{msg}"
        );
    }
}
