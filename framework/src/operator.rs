//! One-shot operator calls: one stream per call, one reply; and reading a task's whole output
//! with retries.

use proto::{
    ClientFrame, ErrorCode, LogData, LogStream, OperatorCall, OperatorReply, ServerFrame, TaskId,
};
use session::{open_session, Backoff, ClientError, ClientOptions};
use std::time::Duration;

/// Sends one operator call to the leading master and returns its reply. `opts` carries an
/// operator certificate (a framework certificate may read its own tasks' logs and kill its own
/// tasks, nothing else). A refusal is [`ClientError::Refused`] with the master's reason.
///
/// ```no_run
/// # async fn demo(operator: framework::ClientOptions) -> Result<(), framework::ClientError> {
/// use proto::{OperatorCall, OperatorReply, TaskState};
/// let OperatorReply::State(state) = framework::operator_call(&operator, OperatorCall::GetState).await? else {
///     unreachable!("GetState answers with the state");
/// };
/// let running = state.tasks.iter().filter(|t| t.state == TaskState::Running).count();
/// println!("{} agents, {running} running tasks, leader {:?}", state.agents.len(), state.masters.leader);
/// # Ok(()) }
/// ```
pub async fn operator_call(
    opts: &ClientOptions,
    call: OperatorCall,
) -> Result<OperatorReply, ClientError> {
    let (session, reply) = open_session(opts, &ClientFrame::Operator(call)).await?;
    session.finish().await;
    match reply {
        ServerFrame::Operator(r) => Ok(r),
        other => Err(ClientError::Unexpected(format!("{other:?}"))),
    }
}

/// Reads up to `max_len` bytes of a task's stdout or stderr from `offset`.
pub async fn read_log(
    opts: &ClientOptions,
    task_id: &TaskId,
    stream: LogStream,
    offset: u64,
    max_len: u32,
) -> Result<LogData, ClientError> {
    let call = OperatorCall::ReadLog {
        task_id: task_id.clone(),
        stream,
        offset,
        max_len,
    };
    match operator_call(opts, call).await? {
        OperatorReply::Log(data) => Ok(data),
        other => Err(ClientError::Unexpected(format!("{other:?}"))),
    }
}

/// How [`read_output`] retries reads that failed.
#[derive(Clone, Copy, Debug)]
pub struct ReadRetry {
    /// Give up once this much time has passed since the first read (an attempt under way is
    /// cut short to fit).
    pub deadline: Duration,
    /// Give up after this many failed reads.
    pub attempts: u32,
}

impl Default for ReadRetry {
    /// 30 s and 8 failed reads: a master failover (a few seconds) or an agent restart (it
    /// re-registers within seconds) fits several times over.
    fn default() -> Self {
        ReadRetry {
            deadline: Duration::from_secs(30),
            attempts: 8,
        }
    }
}

/// The wait after the first failed read; it doubles per failure up to [`MAX_READ_BACKOFF`].
const FIRST_READ_BACKOFF: Duration = Duration::from_millis(250);
const MAX_READ_BACKOFF: Duration = Duration::from_secs(2);
/// The most asked for in one read (the agent may answer with less).
const READ_CHUNK: u32 = 1 << 20;

/// A task's output that could not be read (all of it).
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot read the {stream} of task {task_id}: {failures} failed read(s) in {elapsed:.1?} \
     (after {read} bytes); the last: {last}"
)]
pub struct OutputError {
    pub task_id: TaskId,
    pub stream: &'static str,
    /// Bytes read (and handed to the sink) before giving up.
    pub read: u64,
    pub failures: u32,
    pub elapsed: Duration,
    pub last: ClientError,
}

/// `stdout` or `stderr`.
pub fn stream_name(stream: LogStream) -> &'static str {
    match stream {
        LogStream::Stdout => "stdout",
        LogStream::Stderr => "stderr",
    }
}

/// Whether a failed read can succeed when tried again, at the leader of the moment.
///
/// `NotFound` can: a master that does not lead any more (or has not yet applied the launch)
/// may not know the task, and an agent that restarted answers for its tasks again once it
/// has recovered them. Refusals of the request itself (forbidden, malformed, bad request) and
/// a refused certificate cannot.
fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Refused { code, .. } => {
            matches!(code, ErrorCode::NotFound | ErrorCode::Unavailable)
        }
        ClientError::NoMasters => false,
        ClientError::Transport(t) => !t.is_certificate_refused(),
        ClientError::NoLeader { .. } | ClientError::Closed | ClientError::Unexpected(_) => true,
    }
}

/// Reads a task's whole stdout or stderr (of a task that ended, or up to what it wrote so
/// far) from the leading master, handing each chunk to `sink` in order; `sink` returns false
/// to stop early (say its pipe closed). Returns the number of bytes read.
///
/// A read that fails (no leader reachable, a master answering for a task it does not know, an
/// agent not connected) is tried again from where it stopped, through [`open_session`] (so at
/// whichever master leads then), after a jittered backoff, until `retry` is used up. Nothing
/// is handed to `sink` twice.
///
/// ```no_run
/// # async fn demo(opts: framework::ClientOptions) -> Result<(), framework::OutputError> {
/// use proto::{LogStream, TaskId};
/// let mut out = Vec::new();
/// framework::read_output(&opts, &TaskId::new("job-7"), LogStream::Stdout, Default::default(), |chunk| {
///     out.extend_from_slice(chunk);
///     true
/// })
/// .await?;
/// # Ok(()) }
/// ```
pub async fn read_output(
    opts: &ClientOptions,
    task_id: &TaskId,
    stream: LogStream,
    retry: ReadRetry,
    mut sink: impl FnMut(&[u8]) -> bool,
) -> Result<u64, OutputError> {
    let start = tokio::time::Instant::now();
    let deadline = start + retry.deadline;
    let mut offset = 0u64;
    let mut failures = 0u32;
    let mut backoff = Backoff::new(FIRST_READ_BACKOFF, MAX_READ_BACKOFF);
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let mut attempt_opts = opts.clone();
        attempt_opts.connect_timeout = attempt_opts.connect_timeout.min(remaining);
        let result = tokio::time::timeout(
            remaining,
            read_log(&attempt_opts, task_id, stream, offset, READ_CHUNK),
        )
        .await
        .unwrap_or_else(|_| {
            Err(ClientError::NoLeader {
                tried: opts.masters.join(","),
                timeout: retry.deadline,
                last: "no answer in time".to_owned(),
            })
        });
        let error = match result {
            Ok(chunk) => {
                // The agent answers from the offset asked for; anything else is not ours to
                // print twice or skip.
                if chunk.offset != offset {
                    ClientError::Unexpected(format!(
                        "a chunk from offset {} when {offset} was asked for",
                        chunk.offset
                    ))
                } else {
                    let n = chunk.data.len() as u64;
                    if n > 0 && !sink(&chunk.data) {
                        return Ok(offset);
                    }
                    offset += n;
                    // An empty chunk that is not the end: the task is still writing, or the
                    // agent has no more for now; what was asked for is what exists.
                    if chunk.eof || n == 0 {
                        return Ok(offset);
                    }
                    continue;
                }
            }
            Err(e) => e,
        };
        failures += 1;
        let now = tokio::time::Instant::now();
        if !retryable(&error) || failures >= retry.attempts || now >= deadline {
            return Err(OutputError {
                task_id: task_id.clone(),
                stream: stream_name(stream),
                read: offset,
                failures,
                elapsed: now - start,
                last: error,
            });
        }
        let wait = backoff.next_wait();
        tracing::warn!(
            task = %task_id,
            stream = stream_name(stream),
            offset,
            failures,
            error = %error,
            "reading the task's output failed; retrying in {wait:.1?} at the leader"
        );
        tokio::time::sleep_until((now + wait).min(deadline)).await;
    }
}
