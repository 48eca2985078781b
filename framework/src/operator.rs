//! One-shot operator calls: one stream per call, one reply.

use crate::connect::{open_session, ClientError, ClientOptions};
use proto::{ClientFrame, LogData, LogStream, OperatorCall, OperatorReply, ServerFrame, TaskId};

/// Sends one operator call to the leading master and returns its reply.
pub async fn operator_call(
    opts: &ClientOptions,
    call: OperatorCall,
) -> Result<OperatorReply, ClientError> {
    let (session, reply) = open_session(opts, &ClientFrame::Operator(call)).await?;
    session.connection.close(0u32.into(), b"done");
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
