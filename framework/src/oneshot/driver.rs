//! The async driver: runs a [`OneShotScheduler`] over a [`Scheduler`] session.

use super::{Action, OneShotScheduler, OneShotSpec, Outcome, Progress};
use crate::{read_output, ClientError, ClientOptions, ReadRetry, Scheduler, SchedulerEvent};
use proto::{FrameworkCall, FrameworkInfo, LogStream, TaskId};
use std::future::Future;
use std::time::{Duration, Instant};

/// Where the driver shows what happens.
pub trait OneShotSink {
    /// A step of the run.
    fn progress(&mut self, progress: &Progress);
    /// A chunk of the task's output, in order (all of stdout, then all of stderr). Returns
    /// false to stop reading this stream (say its pipe closed).
    fn output(&mut self, stream: LogStream, data: &[u8]) -> bool;
}

/// Why the run ended without an outcome.
#[derive(Debug, thiserror::Error)]
pub enum OneShotError {
    /// Nothing was launched.
    #[error("cannot subscribe to the master, so nothing was run: {0}")]
    Subscribe(#[source] ClientError),
    #[error("the session with the master ended before the task did")]
    SessionEnded,
    #[error("the master ended the session: {0}")]
    Terminated(String),
}

/// Subscribes with `info`, runs `spec`'s task to its [`Outcome`] and tears the framework down.
/// Progress and the task's output go to `sink`; when `interrupt` resolves, the task is killed
/// (or the run ends, before a launch). The output is read at the leader of the moment, each
/// failed read retried within [`ReadRetry::default`].
pub async fn run(
    opts: ClientOptions,
    info: FrameworkInfo,
    spec: OneShotSpec,
    interrupt: impl Future<Output = ()>,
    sink: &mut impl OneShotSink,
) -> Result<Outcome, OneShotError> {
    let sched = Scheduler::subscribe(opts.clone(), info)
        .await
        .map_err(OneShotError::Subscribe)?;
    let mut sched = Some(sched);
    let mut machine = OneShotScheduler::new(spec, Instant::now());
    tokio::pin!(interrupt);
    let mut interrupted = false;
    loop {
        while let Some(action) = machine.poll() {
            match action {
                Action::Call(FrameworkCall::Teardown) => {
                    if let Some(s) = sched.take() {
                        let _ = s.teardown().await;
                    }
                }
                Action::Call(call) => {
                    let s = sched.as_ref().ok_or(OneShotError::SessionEnded)?;
                    s.call(call).await.map_err(|_| OneShotError::SessionEnded)?;
                }
                Action::Progress(p) => sink.progress(&p),
                Action::ReadOutput { task_id } => {
                    let read = read_all_output(&opts, &task_id, sink).await;
                    machine.handle_output_read(read);
                }
                Action::Finish(outcome) => return Ok(outcome),
            }
        }
        let s = sched.as_mut().ok_or(OneShotError::SessionEnded)?;
        let deadline = machine.poll_timeout();
        let wake = deadline.map_or_else(far_future, tokio::time::Instant::from_std);
        let event = tokio::select! {
            e = s.next_event() => e,
            _ = &mut interrupt, if !interrupted => {
                interrupted = true;
                machine.handle_interrupt();
                continue;
            }
            _ = tokio::time::sleep_until(wake), if deadline.is_some() => {
                machine.handle_timeout(Instant::now());
                continue;
            }
        };
        match event {
            None => return Err(OneShotError::SessionEnded),
            Some(SchedulerEvent::Terminated { reason }) => {
                return Err(OneShotError::Terminated(reason))
            }
            Some(event) => machine.handle_event(Instant::now(), event),
        }
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 86_400)
}

/// Reads the task's whole stdout, then its stderr, into `sink`.
async fn read_all_output(
    opts: &ClientOptions,
    task_id: &TaskId,
    sink: &mut impl OneShotSink,
) -> Result<(), String> {
    for stream in [LogStream::Stdout, LogStream::Stderr] {
        read_output(opts, task_id, stream, ReadRetry::default(), |data| {
            sink.output(stream, data)
        })
        .await
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}
