//! Recovery's decisions, pure: what to do with each task checkpoint, and which containers
//! found on the node nobody holds.

use proto::{ExecutorId, TaskState};

/// What recovery does with one task's checkpoint.
#[derive(Debug, PartialEq)]
pub enum TaskRecovery<C> {
    /// The task ended before the agent stopped: kept for its unacknowledged updates.
    Ended,
    /// The task runs in an executor that was re-attached: the executor reconnects and reports it.
    InExecutor,
    /// The task cannot be recovered: it fails with `AgentRestarted` and this message.
    Fail {
        message: String,
        executor_id: Option<ExecutorId>,
    },
    /// The task's container is re-attached.
    Reattach(C),
    /// The agent stopped between the task's checkpoint and its container's record: the
    /// container may have started, and even ended; it is looked for by its id, and the task
    /// fails as not started only if there is none.
    FindById,
}

/// Why a task whose container was never created fails after an agent restart.
pub(crate) const NOT_STARTED: &str =
    "the agent restarted while launching the task; it was not started";

/// Recovery's plan for a task checkpointed in `state`, run by `executor` (re-attached or not
/// by the executors' recovery, which runs first) or in its own `container` (`None`: the agent
/// stopped between the checkpoint and saving the container's record, before or after the
/// launch).
pub fn plan_task_recovery<C>(
    state: TaskState,
    executor: Option<&ExecutorId>,
    executor_recovered: bool,
    container: Option<C>,
) -> TaskRecovery<C> {
    if state.is_terminal() {
        return TaskRecovery::Ended;
    }
    match (executor, container) {
        (Some(_), _) if executor_recovered => TaskRecovery::InExecutor,
        (Some(executor_id), _) => TaskRecovery::Fail {
            message: format!(
                "the agent restarted and could not re-attach to executor {executor_id}"
            ),
            executor_id: Some(executor_id.clone()),
        },
        (None, None) => TaskRecovery::FindById,
        (None, Some(container)) => TaskRecovery::Reattach(container),
    }
}

/// The containers `found` under the agent's subtree that no recovered task or executor holds.
pub fn orphans(found: Vec<String>, held: &std::collections::BTreeSet<String>) -> Vec<String> {
    found.into_iter().filter(|id| !held.contains(id)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_task_is_kept_whatever_else_the_checkpoint_says() {
        for state in [TaskState::Finished, TaskState::Failed, TaskState::Killed] {
            let ex = ExecutorId::new("ex");
            assert_eq!(
                plan_task_recovery(state, Some(&ex), false, Some(1)),
                TaskRecovery::Ended
            );
            assert_eq!(
                plan_task_recovery::<u8>(state, None, false, None),
                TaskRecovery::Ended
            );
        }
    }

    #[test]
    fn a_crash_before_the_container_record_looks_for_the_container_by_id() {
        for state in [TaskState::Staging, TaskState::Starting] {
            let plan = plan_task_recovery::<u8>(state, None, false, None);
            assert_eq!(plan, TaskRecovery::FindById);
        }
    }

    #[test]
    fn a_launched_task_is_reattached_to_its_container() {
        for state in [TaskState::Starting, TaskState::Running, TaskState::Killing] {
            assert_eq!(
                plan_task_recovery(state, None, false, Some("c1")),
                TaskRecovery::Reattach("c1")
            );
        }
    }

    #[test]
    fn an_executors_task_follows_its_executor() {
        let ex = ExecutorId::new("ex");
        assert_eq!(
            plan_task_recovery::<u8>(TaskState::Running, Some(&ex), true, None),
            TaskRecovery::InExecutor
        );
        match plan_task_recovery::<u8>(TaskState::Running, Some(&ex), false, None) {
            TaskRecovery::Fail {
                message,
                executor_id,
            } => {
                assert_eq!(executor_id, Some(ex));
                assert!(
                    message.contains("could not re-attach to executor ex"),
                    "{message}"
                );
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn orphans_are_the_containers_nobody_holds_in_found_order() {
        let held = ["b", "d"].map(str::to_owned).into_iter().collect();
        let found = ["a", "b", "c", "d"].map(str::to_owned).to_vec();
        assert_eq!(orphans(found, &held), vec!["a".to_owned(), "c".to_owned()]);
        assert!(orphans(Vec::new(), &held).is_empty());
    }
}
