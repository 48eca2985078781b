//! Which usage reports are worth sending ([`UsageReport::worth_sending`]).
//!
//! The agent measures its tasks and the node's pressure every
//! [`crate::core::USAGE_CHECK_INTERVAL`] but sends a report only at a heartbeat, or between
//! heartbeats when it differs from the last one sent beyond the thresholds below, or when the
//! last one is older than [`MAX_REPORT_AGE`] while tasks run. An idle node with steady pressure
//! sends nothing between heartbeats (whose interval the master stretches as the cluster grows),
//! which is most of a large cluster's idle traffic saved; a task starting, ending, growing or a
//! node coming under pressure is reported within a check interval.

use proto::{NodePressure, TaskUsage};
use std::time::Duration;

/// A change of this much in any pressure figure is news: 5 percentage points (the figures are
/// hundredths of a percent).
pub const PRESSURE_STEP: u32 = 500;
/// A task's memory or process count changing by more than this share (and [`MEMORY_STEP`] for
/// memory) is news.
pub const RELATIVE_STEP: f64 = 0.10;
/// The least memory change that is news, so small tasks do not report every page.
pub const MEMORY_STEP: u64 = 4 << 20;
/// While tasks run, a report at least this often (cpu time accrues; frameworks and `corral
/// state` show it).
pub const MAX_REPORT_AGE: Duration = Duration::from_secs(30);

/// What one usage report says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UsageReport {
    pub tasks: Vec<TaskUsage>,
    pub pressure: Option<NodePressure>,
}

impl UsageReport {
    /// Whether this report should go out between heartbeats, given the last one sent and how
    /// long ago (`None`: nothing sent yet on this session).
    pub fn worth_sending(&self, last: Option<(&UsageReport, Duration)>) -> bool {
        let Some((last, age)) = last else {
            return true;
        };
        if !self.tasks.is_empty() && age >= MAX_REPORT_AGE {
            return true;
        }
        self.pressure_moved(last) || self.tasks_changed(last)
    }

    fn pressure_moved(&self, last: &UsageReport) -> bool {
        match (&self.pressure, &last.pressure) {
            (None, None) => false,
            (Some(a), Some(b)) => {
                let fields = |p: &NodePressure| {
                    [
                        p.cpu_some_avg10,
                        p.memory_some_avg10,
                        p.memory_full_avg10,
                        p.io_some_avg10,
                        p.io_full_avg10,
                    ]
                };
                fields(a)
                    .iter()
                    .zip(fields(b))
                    .any(|(x, y)| x.abs_diff(y) >= PRESSURE_STEP)
            }
            _ => true,
        }
    }

    fn tasks_changed(&self, last: &UsageReport) -> bool {
        if self.tasks.len() != last.tasks.len() {
            return true;
        }
        self.tasks.iter().any(|t| {
            let Some(before) = last
                .tasks
                .iter()
                .find(|b| b.task_id == t.task_id && b.framework_id == t.framework_id)
            else {
                return true;
            };
            let (now, then) = (&t.usage, &before.usage);
            let mem = now.mem_current_bytes.abs_diff(then.mem_current_bytes);
            (mem >= MEMORY_STEP && moved(now.mem_current_bytes, then.mem_current_bytes))
                || moved(now.pids_current, then.pids_current)
        })
    }
}

/// Whether `a` and `b` differ by more than [`RELATIVE_STEP`] of the larger.
fn moved(a: u64, b: u64) -> bool {
    let larger = a.max(b) as f64;
    a.abs_diff(b) as f64 > larger * RELATIVE_STEP
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{FrameworkId, ResourceUsage, TaskId};

    fn task(id: &str, mem_mib: u64, pids: u64) -> TaskUsage {
        TaskUsage {
            framework_id: FrameworkId::new("f"),
            task_id: TaskId::new(id),
            usage: ResourceUsage {
                mem_current_bytes: mem_mib << 20,
                pids_current: pids,
                ..Default::default()
            },
        }
    }

    fn report(tasks: Vec<TaskUsage>, cpu_pressure: Option<u32>) -> UsageReport {
        UsageReport {
            tasks,
            pressure: cpu_pressure.map(|c| NodePressure {
                cpu_some_avg10: c,
                ..Default::default()
            }),
        }
    }

    const SOON: Duration = Duration::from_secs(5);

    #[test]
    fn the_first_report_goes_out_and_a_steady_idle_node_sends_nothing_more() {
        let idle = report(vec![], Some(120));
        assert!(idle.worth_sending(None));
        let later = report(vec![], Some(120 + PRESSURE_STEP - 1));
        assert!(!later.worth_sending(Some((&idle, SOON))));
        assert!(!later.worth_sending(Some((&idle, Duration::from_secs(3600)))));
    }

    #[test]
    fn pressure_moving_a_step_or_appearing_is_news() {
        let idle = report(vec![], Some(100));
        assert!(report(vec![], Some(100 + PRESSURE_STEP)).worth_sending(Some((&idle, SOON))));
        assert!(report(vec![], None).worth_sending(Some((&idle, SOON))));
        assert!(idle.worth_sending(Some((&report(vec![], None), SOON))));
    }

    #[test]
    fn a_task_starting_ending_or_growing_is_news_and_small_changes_are_not() {
        let one = report(vec![task("t1", 100, 4)], None);
        let two = report(vec![task("t1", 100, 4), task("t2", 1, 1)], None);
        assert!(two.worth_sending(Some((&one, SOON))), "a task started");
        assert!(one.worth_sending(Some((&two, SOON))), "a task ended");
        let other = report(vec![task("t3", 100, 4)], None);
        assert!(
            other.worth_sending(Some((&one, SOON))),
            "one replaced another"
        );
        let grown = report(vec![task("t1", 120, 4)], None);
        assert!(grown.worth_sending(Some((&one, SOON))));
        let jitter = report(vec![task("t1", 105, 4)], None);
        assert!(!jitter.worth_sending(Some((&one, SOON))));
        let forked = report(vec![task("t1", 100, 8)], None);
        assert!(forked.worth_sending(Some((&one, SOON))));
        // A tiny task doubling its few pages is not news.
        let tiny = report(vec![task("t1", 1, 4)], None);
        let tiny2 = report(vec![task("t1", 2, 4)], None);
        assert!(!tiny2.worth_sending(Some((&tiny, SOON))));
    }

    #[test]
    fn running_tasks_are_reported_at_least_every_max_report_age() {
        let one = report(vec![task("t1", 100, 4)], None);
        assert!(!one.worth_sending(Some((&one, MAX_REPORT_AGE - Duration::from_millis(1)))));
        assert!(one.worth_sending(Some((&one, MAX_REPORT_AGE))));
    }
}
