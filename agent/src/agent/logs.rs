//! Serving `ReadLog`: a chunk of a task's stdout or stderr from its sandbox.

use super::*;

impl Agent {
    pub(super) fn read_log(
        &self,
        task_id: &TaskId,
        stream: LogStream,
        offset: u64,
        max_len: u32,
    ) -> Result<LogData, String> {
        let (sandbox, ended) = match self.tasks.get(task_id) {
            Some(t) => (t.sandbox.clone(), t.state.is_terminal()),
            None => match self.finished.iter().rev().find(|(id, _)| id == task_id) {
                Some((_, sandbox)) => (sandbox.clone(), true),
                None => return Err(format!("task {task_id} is not known to this agent")),
            },
        };
        let path = sandbox.join(match stream {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        });
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
            Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let start = offset.min(len);
        file.seek(SeekFrom::Start(start))
            .map_err(|e| format!("cannot seek {}: {e}", path.display()))?;
        let want = u64::from(max_len.min(MAX_LOG_CHUNK)).min(len - start);
        let mut data = Vec::with_capacity(want as usize);
        file.take(want)
            .read_to_end(&mut data)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let eof = ended && start + data.len() as u64 >= len;
        Ok(LogData {
            offset: start,
            data,
            eof,
        })
    }
}
