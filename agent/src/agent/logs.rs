//! Serving `ReadLog`: a chunk of a task's stdout or stderr from its sandbox.

use super::*;
use proto::{LogData, LogStream};

/// Why a log chunk cannot be served (sent to the operator as the answer's error).
#[derive(Debug, thiserror::Error)]
pub(super) enum LogError {
    #[error("task {0} is not known to this agent")]
    UnknownTask(TaskId),
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Agent {
    pub(super) fn read_log(
        &self,
        task_id: &TaskId,
        stream: LogStream,
        offset: u64,
        max_len: u32,
    ) -> Result<LogData, LogError> {
        let work_dir = &self.config.work_dir;
        let (sandbox, ended) = match self.core.task(task_id) {
            Some(t) => (
                records::sandbox(work_dir, t.framework_id, t.task_id, t.executor),
                t.state.is_terminal(),
            ),
            None => match self.core.finished().rev().find(|(_, id, _)| id == task_id) {
                Some((f, id, e)) => (records::sandbox(work_dir, f, id, e.as_ref()), true),
                None => return Err(LogError::UnknownTask(task_id.clone())),
            },
        };
        let path = sandbox.join(match stream {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        });
        let io = |what| {
            let path = path.clone();
            move |source| LogError::Io { what, path, source }
        };
        use std::io::{Read, Seek, SeekFrom};
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(LogData {
                    offset,
                    data: Vec::new(),
                    eof: ended,
                });
            }
            Err(e) => return Err(io("open")(e)),
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let start = offset.min(len);
        file.seek(SeekFrom::Start(start)).map_err(io("seek"))?;
        let want = u64::from(max_len.min(MAX_LOG_CHUNK)).min(len - start);
        let mut data = Vec::with_capacity(want as usize);
        file.take(want).read_to_end(&mut data).map_err(io("read"))?;
        let eof = ended && start + data.len() as u64 >= len;
        Ok(LogData {
            offset: start,
            data,
            eof,
        })
    }
}
