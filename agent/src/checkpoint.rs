//! Durable records of what the agent runs, so that a restarted agent re-attaches to its tasks
//! instead of losing or relaunching them. One JSON file per task under
//! `WORK_DIR/meta/tasks/` and one per custom executor under `WORK_DIR/meta/executors/`
//! (its container, sandbox and socket), replaced atomically (write a temporary file, fsync, rename, fsync the
//! directory) on every change: before a launch (intent), after it (the container record), on
//! each status update and acknowledgement. A file that does not parse is moved aside to
//! `*.corrupt` with an error in the log; the other tasks recover normally. `meta/` and its
//! directories are 0700 and every file 0600: they hold each task's command and environment.

use isolation::ContainerRecord;
use proto::{ExecutorId, ExecutorInfo, FrameworkSummary, TaskInfo, TaskState, TaskStatus};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Bumped when the checkpoint format changes incompatibly.
pub const CHECKPOINT_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskCheckpoint {
    pub version: u32,
    pub framework: FrameworkSummary,
    pub info: TaskInfo,
    pub state: TaskState,
    pub sandbox: PathBuf,
    /// Set once the container exists; `None` means the launch had not completed.
    pub container: Option<ContainerRecord>,
    #[serde(default)]
    pub kill_requested: bool,
    /// Status updates not yet acknowledged, oldest first, and the next sequence number.
    pub next_seq: u64,
    pub pending_updates: Vec<TaskStatus>,
    /// The custom executor running the task (its container is the executor's); `None` for
    /// the built-in command executor.
    #[serde(default)]
    pub executor_id: Option<ExecutorId>,
}

/// A custom executor: written before its launch (intent, `container: None`) and after it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExecutorCheckpoint {
    pub version: u32,
    pub framework: FrameworkSummary,
    pub info: ExecutorInfo,
    pub sandbox: PathBuf,
    /// The unix socket the agent listens on for this executor (re-created at the same path
    /// after a restart, so the executor reconnects to it).
    pub socket: PathBuf,
    /// The uid and gid the executor runs as: only that user may connect to the socket.
    pub uid: u32,
    pub gid: u32,
    pub container: Option<ContainerRecord>,
    #[serde(default)]
    pub shutting_down: bool,
}

/// What every checkpoint file carries to be checked on load.
pub trait Versioned {
    fn version(&self) -> u32;
}

impl Versioned for TaskCheckpoint {
    fn version(&self) -> u32 {
        self.version
    }
}

impl Versioned for ExecutorCheckpoint {
    fn version(&self) -> u32 {
        self.version
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot write checkpoint {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read checkpoint directory {path}: {source}")]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Why one checkpoint file could not be used (the file is moved aside to `*.corrupt`).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path} has checkpoint version {found} (this agent reads {CHECKPOINT_VERSION})")]
    Version { path: PathBuf, found: u32 },
}

pub struct Checkpoints {
    dir: PathBuf,
}

/// One checkpoint file found at start: its key and its content, or why it could not be used.
pub struct Loaded<T = TaskCheckpoint> {
    pub key: String,
    pub result: Result<T, LoadError>,
}

impl Checkpoints {
    /// The task checkpoints (`WORK_DIR/meta/tasks`).
    pub fn open(work_dir: &Path) -> Result<Checkpoints, CheckpointError> {
        Checkpoints::open_kind(work_dir, "tasks")
    }

    /// The executor checkpoints (`WORK_DIR/meta/executors`).
    pub fn open_executors(work_dir: &Path) -> Result<Checkpoints, CheckpointError> {
        Checkpoints::open_kind(work_dir, "executors")
    }

    fn open_kind(work_dir: &Path, kind: &str) -> Result<Checkpoints, CheckpointError> {
        use std::os::unix::fs::PermissionsExt;
        let meta = work_dir.join("meta");
        let dir = meta.join(kind);
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CheckpointError::ReadDir { path, source }
        };
        std::fs::create_dir_all(&dir).map_err(err(&dir))?;
        // Task definitions and their environment: the agent's alone.
        for d in [&meta, &dir] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).map_err(err(d))?;
        }
        Ok(Checkpoints { dir })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// Atomically replaces the checkpoint of `key` (a validated, path-safe id).
    pub fn save<T: Serialize>(&self, key: &str, cp: &T) -> Result<(), CheckpointError> {
        let path = self.path(key);
        let tmp = self.dir.join(format!(".{key}.json.tmp"));
        let err = |source| CheckpointError::Write {
            path: path.clone(),
            source,
        };
        let bytes = serde_json::to_vec(cp).map_err(|e| err(std::io::Error::other(e)))?;
        let written = {
            use std::os::unix::fs::OpenOptionsExt;
            // 0600: a checkpoint holds the task's command and environment.
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .and_then(|mut f| {
                    f.write_all(&bytes)?;
                    f.sync_all()
                })
        };
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, &path)) {
            // A full disk: the previous checkpoint stays as it was, and the partial temporary
            // file must not hold on to what little space is left.
            let _ = std::fs::remove_file(&tmp);
            return Err(err(e));
        }
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
        Ok(())
    }

    pub fn remove(&self, key: &str) {
        let _ = std::fs::remove_file(self.path(key));
    }

    /// Every checkpoint on disk. Unreadable ones are renamed to `*.corrupt`.
    pub fn load_all<T: DeserializeOwned + Versioned>(
        &self,
    ) -> Result<Vec<Loaded<T>>, CheckpointError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| CheckpointError::ReadDir {
            path: self.dir.clone(),
            source,
        })?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.starts_with('.') {
                // A temporary file of an interrupted save: the previous version is intact.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let Some(key) = name.strip_suffix(".json") else {
                continue;
            };
            let result = std::fs::read(&path)
                .map_err(|source| LoadError::Read {
                    path: path.clone(),
                    source,
                })
                .and_then(|bytes| {
                    serde_json::from_slice::<T>(&bytes).map_err(|source| LoadError::Corrupt {
                        path: path.clone(),
                        source,
                    })
                })
                .and_then(|cp| match cp.version() {
                    CHECKPOINT_VERSION => Ok(cp),
                    found => Err(LoadError::Version {
                        path: path.clone(),
                        found,
                    }),
                });
            if result.is_err() {
                let _ = std::fs::rename(&path, path.with_extension("corrupt"));
            }
            out.push(Loaded {
                key: key.to_owned(),
                result,
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
