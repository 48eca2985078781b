//! The state machine: the [`Registry`] with the last applied log id and membership, the
//! snapshots that compact the log, and the stream of committed ops to the daemon.
//!
//! The state machine itself lives in memory and is not written on each apply; what is durable
//! is the log and the last snapshot (openraft's "persistent snapshot" mode). After a restart the
//! registry is the last snapshot's, and openraft re-applies the log after it (up to the saved
//! committed id at once, the rest as the leader commits it).
//!
//! A snapshot is the MessagePack registry. It is written to `snapshot.bin` atomically (a
//! temporary file, fsync, rename, fsync of the directory) in the format of a log record: length,
//! crc32, payload (`StoredSnapshot`: meta and data). A snapshot is only ever replaced by a
//! newer one, so a slow build cannot overwrite a newer installed snapshot.

use crate::{
    Applied, Entry, LogId, Registry, RegistryOp, Snapshot, SnapshotMeta, StoredMembership,
    TypeConfig,
};
use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;

type StorageError = crate::StorageError;

/// Committed events buffered for the daemon before `apply` waits (see the crate doc).
pub const COMMIT_CHANNEL_CAPACITY: usize = 1024;
const SNAPSHOT_FILE: &str = "snapshot.bin";
const SNAPSHOT_TMP: &str = "snapshot.bin.tmp";
/// Largest snapshot accepted from disk (a registry of the largest cluster fits many times).
const MAX_SNAPSHOT_LEN: usize = 1 << 30;

/// What the daemon learns, in log order, after subscribing.
// `Op` is the common case and is handed on by value to the core; boxing it would cost an
// allocation per committed op to shrink a variant that is rare (`Reset`).
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum CommitEvent {
    /// The op, in the entry at `index`, was committed and applied to the registry. Ops batched
    /// in one entry share its index and come in their order within it.
    /// `id` is the tag it was submitted with ([`crate::Proposal::ids`]), if any.
    Op {
        index: u64,
        op: RegistryOp,
        id: Option<u64>,
    },
    /// A snapshot from the leader replaced the registry (this master had fallen too far
    /// behind for log entries): everything before is superseded by `registry` as of `index`.
    Reset { index: u64, registry: Box<Registry> },
}

/// The registry as of `applied_index`, plus every event after it. See the crate doc.
#[derive(Debug)]
pub struct Subscription {
    pub registry: Registry,
    /// The last applied log index the registry includes (0 before any entry); every event is
    /// from a later entry.
    pub applied_index: u64,
    pub events: mpsc::Receiver<CommitEvent>,
}

/// A snapshot as stored on disk.
#[derive(Debug, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    /// The MessagePack [`Registry`].
    data: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: corrupt snapshot: {reason}", path = path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("snapshot data does not decode to a registry: {0}")]
    BadData(String),
    #[error("cannot encode the snapshot: {0}")]
    Encode(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Debug, Default)]
struct SmState {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    registry: Registry,
    subscriber: Option<mpsc::Sender<CommitEvent>>,
    observer: ObserverSlot,
}

/// Sees every committed op, in log order, with the registry as it is just before the op is
/// applied, on whichever master this is (the daemon's operator event journal derives its
/// events here). It runs inside `apply`, under the state machine's lock: it must be quick and
/// must never block or wait.
pub trait ApplyObserver: Send {
    /// Installed when the last applied index was `applied_index`: every op of every later
    /// entry will be seen.
    fn attached(&mut self, applied_index: u64);
    /// `op`, from the log entry at `index`, is about to be applied to `registry`.
    fn before_apply(&mut self, index: u64, op: &RegistryOp, registry: &Registry);
    /// A snapshot from the leader replaced the registry as of `index`: the ops between the
    /// last one observed and `index` will never be seen here.
    fn replaced(&mut self, index: u64);
}

#[derive(Default)]
struct ObserverSlot(Option<Box<dyn ApplyObserver>>);

impl std::fmt::Debug for ObserverSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Some(observer)"
        } else {
            "None"
        })
    }
}

/// The snapshot files and the meta of the current one.
#[derive(Debug)]
struct SnapshotStore {
    dir: PathBuf,
    current: tokio::sync::Mutex<Option<SnapshotMeta>>,
    /// Distinguishes snapshots built at the same log id.
    seq: AtomicU64,
}

/// The registry state machine handed to openraft. Clones share the state.
#[derive(Clone, Debug)]
pub struct StateMachine {
    state: Arc<Mutex<SmState>>,
    snapshots: Arc<SnapshotStore>,
}

fn lock(m: &Mutex<SmState>) -> MutexGuard<'_, SmState> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl StateMachine {
    /// Opens the state machine in `dir` (created if missing), restoring the last snapshot.
    pub fn open(dir: &Path) -> Result<StateMachine, SnapshotError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let tmp = dir.join(SNAPSHOT_TMP);
        if tmp.exists() {
            fs::remove_file(&tmp).map_err(io_err(&tmp))?;
        }
        let mut state = SmState::default();
        let mut current = None;
        if let Some(stored) = read_snapshot_file(&dir.join(SNAPSHOT_FILE))? {
            state.registry = decode_registry(&stored.data)?;
            state.last_applied = stored.meta.last_log_id;
            state.membership = stored.meta.last_membership.clone();
            current = Some(stored.meta);
        }
        Ok(StateMachine {
            state: Arc::new(Mutex::new(state)),
            snapshots: Arc::new(SnapshotStore {
                dir: dir.to_owned(),
                current: tokio::sync::Mutex::new(current),
                seq: AtomicU64::new(0),
            }),
        })
    }

    /// A copy of the registry and the last applied index it includes.
    pub fn registry(&self) -> (Registry, u64) {
        let st = lock(&self.state);
        (st.registry.clone(), st.last_applied.map_or(0, |l| l.index))
    }

    /// Installs the observer of every op applied from now on (replacing any previous one) and
    /// returns the last applied index: the observer sees every op of every later entry.
    pub fn observe(&self, observer: Box<dyn ApplyObserver>) -> u64 {
        let mut st = lock(&self.state);
        let applied = st.last_applied.map_or(0, |l| l.index);
        let mut observer = observer;
        observer.attached(applied);
        st.observer = ObserverSlot(Some(observer));
        applied
    }

    /// Runs `f` on the registry and the last applied index it includes, under the lock (no op
    /// is applied meanwhile, so nothing an observer sees is missed or seen twice by `f`).
    pub fn read_registry<R>(&self, f: impl FnOnce(&Registry, u64) -> R) -> R {
        let st = lock(&self.state);
        f(&st.registry, st.last_applied.map_or(0, |l| l.index))
    }

    /// Subscribes to committed events, replacing any previous subscription. See the crate doc.
    pub fn subscribe(&self) -> Subscription {
        let (tx, rx) = mpsc::channel(COMMIT_CHANNEL_CAPACITY);
        let mut st = lock(&self.state);
        st.subscriber = Some(tx);
        Subscription {
            registry: st.registry.clone(),
            applied_index: st.last_applied.map_or(0, |l| l.index),
            events: rx,
        }
    }

    /// Ends the current subscription, if any (its stream ends after what was sent).
    pub fn unsubscribe(&self) {
        lock(&self.state).subscriber = None;
    }

    /// The directory holding the snapshot.
    pub fn dir(&self) -> &Path {
        &self.snapshots.dir
    }
}

fn decode_registry(data: &[u8]) -> Result<Registry, SnapshotError> {
    rmp_serde::from_slice(data).map_err(|e| SnapshotError::BadData(e.to_string()))
}

fn read_snapshot_file(path: &Path) -> Result<Option<StoredSnapshot>, SnapshotError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    let corrupt = |reason: String| SnapshotError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    if bytes.len() < 8 {
        return Err(corrupt(format!(
            "{} bytes, shorter than its header",
            bytes.len()
        )));
    }
    let mut len4 = [0u8; 4];
    len4.copy_from_slice(&bytes[0..4]);
    let mut crc4 = [0u8; 4];
    crc4.copy_from_slice(&bytes[4..8]);
    let len = u32::from_le_bytes(len4) as usize;
    let crc = u32::from_le_bytes(crc4);
    if len > MAX_SNAPSHOT_LEN || bytes.len() != 8 + len {
        return Err(corrupt(format!(
            "header says {len} bytes but the file holds {}",
            bytes.len() - 8
        )));
    }
    let payload = &bytes[8..];
    if crc32fast::hash(payload) != crc {
        return Err(corrupt("checksum mismatch".into()));
    }
    let stored: StoredSnapshot =
        rmp_serde::from_slice(payload).map_err(|e| corrupt(format!("undecodable: {e}")))?;
    Ok(Some(stored))
}

fn write_snapshot_file(dir: &Path, stored: &StoredSnapshot) -> Result<(), SnapshotError> {
    let payload =
        rmp_serde::to_vec_named(stored).map_err(|e| SnapshotError::Encode(e.to_string()))?;
    if payload.len() > MAX_SNAPSHOT_LEN {
        return Err(SnapshotError::Encode(format!(
            "snapshot of {} bytes exceeds the maximum of {MAX_SNAPSHOT_LEN}",
            payload.len()
        )));
    }
    let tmp = dir.join(SNAPSHOT_TMP);
    let path = dir.join(SNAPSHOT_FILE);
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    let mut header = [0u8; 8];
    header[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[4..8].copy_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    f.write_all(&header).map_err(io_err(&tmp))?;
    f.write_all(&payload).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    drop(f);
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

impl SnapshotStore {
    /// Persists `stored` unless the current snapshot is at least as new; returns whether it
    /// became the current one.
    async fn save(self: &Arc<Self>, stored: StoredSnapshot) -> Result<bool, SnapshotError> {
        let mut current = self.current.lock().await;
        if let Some(cur) = current.as_ref() {
            if cur.last_log_id > stored.meta.last_log_id {
                return Ok(false);
            }
        }
        let dir = self.dir.clone();
        let (stored, res) = tokio::task::spawn_blocking(move || {
            let res = write_snapshot_file(&dir, &stored);
            (stored, res)
        })
        .await
        .map_err(|e| SnapshotError::Io {
            path: self.dir.join(SNAPSHOT_FILE),
            source: io::Error::other(e.to_string()),
        })?;
        res?;
        *current = Some(stored.meta);
        Ok(true)
    }

    async fn load_current(&self) -> Result<Option<Snapshot>, SnapshotError> {
        let current = self.current.lock().await;
        let Some(meta) = current.as_ref() else {
            return Ok(None);
        };
        let path = self.dir.join(SNAPSHOT_FILE);
        let read_path = path.clone();
        let stored = tokio::task::spawn_blocking(move || read_snapshot_file(&read_path))
            .await
            .map_err(|e| SnapshotError::Io {
                path: path.clone(),
                source: io::Error::other(e.to_string()),
            })??;
        match stored {
            Some(s) if s.meta == *meta => Ok(Some(Snapshot {
                meta: s.meta,
                snapshot: Box::new(Cursor::new(s.data)),
            })),
            _ => Err(SnapshotError::Corrupt {
                path,
                reason: format!("missing or not the current snapshot ({meta})"),
            }),
        }
    }
}

/// Builds a snapshot from a copy of the state taken when openraft asked for the builder.
#[derive(Debug)]
pub struct SnapshotBuilder {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    registry: Registry,
    snapshots: Arc<SnapshotStore>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let data = rmp_serde::to_vec_named(&self.registry).map_err(|e| {
            StorageIOError::write_snapshot(
                None,
                AnyError::new(&SnapshotError::Encode(e.to_string())),
            )
        })?;
        let seq = self.snapshots.seq.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{seq}", l.leader_id.term, l.index),
            None => format!("0-0-{seq}"),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot { meta, data };
        let meta = stored.meta.clone();
        let data = stored.data.clone();
        self.snapshots.save(stored).await.map_err(|e| {
            StorageIOError::write_snapshot(Some(meta.signature()), AnyError::new(&e))
        })?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let st = lock(&self.state);
        Ok((st.last_applied, st.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut replies = Vec::new();
        let mut events = Vec::new();
        let subscriber = {
            let mut guard = lock(&self.state);
            let st = &mut *guard;
            for entry in entries {
                st.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => {}
                    EntryPayload::Normal(proposal) => {
                        let mut ids = proposal.ids.iter().copied();
                        // The log keeps its copy: each op is cloned once, for the core.
                        for op in proposal.ops.iter().cloned() {
                            if let Some(o) = st.observer.0.as_mut() {
                                o.before_apply(entry.log_id.index, &op, &st.registry);
                            }
                            st.registry.apply(&op);
                            events.push(CommitEvent::Op {
                                index: entry.log_id.index,
                                op,
                                id: ids.next().flatten(),
                            });
                        }
                    }
                    EntryPayload::Membership(m) => {
                        st.membership = StoredMembership::new(Some(entry.log_id), m);
                    }
                }
                replies.push(Applied);
            }
            // Events go to the subscriber of the moment the ops were applied: a subscription
            // taken after this point already includes them in its registry copy.
            st.subscriber.clone()
        };
        if let Some(tx) = subscriber {
            for ev in events {
                if tx.send(ev).await.is_err() {
                    break;
                }
            }
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let st = lock(&self.state);
        SnapshotBuilder {
            last_applied: st.last_applied,
            membership: st.membership.clone(),
            registry: st.registry.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let sig = meta.signature();
        let data = snapshot.into_inner();
        let registry = decode_registry(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(sig.clone()), AnyError::new(&e)))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.snapshots
            .save(stored)
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(sig), AnyError::new(&e)))?;
        let index = meta.last_log_id.map_or(0, |l| l.index);
        let (subscriber, copy) = {
            let mut st = lock(&self.state);
            st.last_applied = meta.last_log_id;
            st.membership = meta.last_membership.clone();
            let copy = st.subscriber.as_ref().map(|_| Box::new(registry.clone()));
            st.registry = registry;
            if let Some(o) = st.observer.0.as_mut() {
                o.replaced(index);
            }
            (st.subscriber.clone(), copy)
        };
        if let (Some(tx), Some(registry)) = (subscriber, copy) {
            let _ = tx.send(CommitEvent::Reset { index, registry }).await;
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        self.snapshots
            .load_current()
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, AnyError::new(&e)).into())
    }
}
