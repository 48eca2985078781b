//! The durable raft log: an append-only, segmented write-ahead log of our own.
//!
//! **Why our own.** The registry log is small and sequential: entries are appended at the end,
//! removed from the end only on a leader conflict (truncate) and from the front after a snapshot
//! (purge). A general storage engine (RocksDB, sled) buys nothing here and costs a C++ build or an
//! unmaintained dependency; a segmented log is a few hundred lines whose every fsync we control.
//!
//! **Format.** The directory holds segments `wal-<seq>.log` (16 hex digits, increasing). Each
//! is a sequence of records `[len: u32 LE][crc32(payload): u32 LE][payload]`, the payload a
//! MessagePack `Record`. Every change is a record: an entry, a vote, the committed log id, a
//! truncation, a purge. A segment starts with a checkpoint record (vote, committed, purged as of
//! its creation), so older segments can be deleted once every entry in them is purged. Opening
//! the log replays all segments in order with the same code that applies a record live, so the
//! state after a restart is the state before it.
//!
//! **Memory.** All unpurged entries are also kept in memory (a `BTreeMap`), and reads are served
//! from there. The snapshot policy bounds how many that is (entries since the last snapshot plus
//! the ones kept after it), so reads never touch the disk.
//!
//! **Durability.** `append` encodes the records, makes the entries readable in memory and
//! hands the bytes to the log thread, which owns the files: it takes every pending request,
//! writes them all, `fdatasync`s once, and only then calls openraft's [`LogFlushed`] callbacks.
//! Appends that arrive while an fsync runs are covered by the next one, so N concurrent
//! proposals cost far fewer than N fsyncs (group commit), and raft's task never blocks on the
//! disk. `save_vote`, `truncate` and `purge` wait for their fsync before returning. A segment is
//! synced before the next one is created, so only the last segment can end in a torn record.
//!
//! **Crash safety.** A record cut short by power loss fails its length or checksum; if it is at
//! the end of the last segment it is dropped (it was never acknowledged) and the file is
//! truncated there. A bad record anywhere else (followed by a good one, or in an older segment)
//! is corruption: opening fails with an error naming the file and offset. A failed write or
//! fsync poisons the store: every later write fails, and openraft stops the node (after a failed
//! fsync the kernel may have dropped the dirty pages, so retrying could acknowledge lost data).

use crate::{Entry, LogId, TypeConfig, Vote};
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{AnyError, OptionalSend, StorageIOError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, oneshot};

type StorageError = crate::StorageError;

/// A new segment is started once the current one is this large.
pub const DEFAULT_SEGMENT_BYTES: u64 = 16 << 20;
/// Largest record accepted (an entry must also fit in one raft frame, so this matches the
/// protocol's maximum frame).
pub const MAX_RECORD_LEN: usize = proto::MAX_FRAME_LEN;
/// Requests (one per append, vote, committed id, truncate or purge) waiting for the log
/// thread. When full, `append` waits: openraft then stops handing us entries until the disk
/// catches up.
pub const IO_QUEUE: usize = 4096;
/// Most requests written and completed by one fsync.
const MAX_IO_BATCH: usize = 4096;
const RECORD_HEADER_LEN: usize = 8;
const SEGMENT_PREFIX: &str = "wal-";
const SEGMENT_SUFFIX: &str = ".log";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: corrupt record at byte {offset}: {reason}", path = path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("the raft log in {dir} is inconsistent: {reason}", dir = dir.display())]
    Inconsistent { dir: PathBuf, reason: String },
    #[error("cannot encode a log record: {0}")]
    Encode(String),
    #[error("the raft log in {dir} failed an earlier write or fsync and accepts no more writes: {reason}", dir = dir.display())]
    Poisoned { dir: PathBuf, reason: String },
    #[error("the log thread of {dir} is gone", dir = dir.display())]
    IoThreadGone { dir: PathBuf },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One change to the log. Replaying the records in order rebuilds the log.
#[derive(Debug, Serialize, Deserialize)]
enum Record {
    Checkpoint {
        vote: Option<Vote>,
        committed: Option<LogId>,
        purged: Option<LogId>,
    },
    Entry(Entry),
    Vote(Vote),
    Committed(Option<LogId>),
    /// Entries at and after `since` are gone.
    Truncate {
        since: u64,
    },
    /// Entries up to and including this id are gone (they are in a snapshot).
    Purge(LogId),
}

/// The log as the records so far describe it.
#[derive(Debug, Default)]
struct MemLog {
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    entries: BTreeMap<u64, Entry>,
}

impl MemLog {
    fn last_log_id(&self) -> Option<LogId> {
        match self.entries.last_key_value() {
            Some((_, e)) => Some(e.log_id),
            None => self.purged,
        }
    }

    /// Applies one record. Used both live and on replay, so both give the same log.
    fn apply(&mut self, rec: Record) {
        match rec {
            Record::Checkpoint {
                vote,
                committed,
                purged,
            } => {
                self.vote = vote;
                self.committed = committed;
                if let Some(p) = purged {
                    self.purge(p);
                }
            }
            Record::Entry(e) => {
                let idx = e.log_id.index;
                if self.purged.is_some_and(|p| idx <= p.index) {
                    return;
                }
                // An entry replaces any at or after its index (openraft truncates first; this
                // only keeps replay total).
                self.entries.split_off(&idx);
                self.entries.insert(idx, e);
            }
            Record::Vote(v) => self.vote = Some(v),
            Record::Committed(c) => self.committed = c,
            Record::Truncate { since } => {
                self.entries.split_off(&since);
            }
            Record::Purge(p) => self.purge(p),
        }
    }

    /// Checks that the entries have no hole and follow the purged id. Run after replay: in the
    /// middle of it a hole is normal (the first kept segment's entries may start past its
    /// checkpoint's purged id; the purge that allowed deleting the older segments comes later).
    fn validate(&self) -> Result<(), String> {
        let mut expected = self.purged.map(|p| p.index + 1);
        for &idx in self.entries.keys() {
            if let Some(want) = expected {
                if idx != want {
                    return Err(format!(
                        "the log has a hole: entry {idx} follows entry {} (purged up to {:?})",
                        want.saturating_sub(1),
                        self.purged.map(|p| p.index)
                    ));
                }
            }
            expected = Some(idx + 1);
        }
        Ok(())
    }

    fn purge(&mut self, p: LogId) {
        if self.purged.is_some_and(|old| old.index >= p.index) {
            return;
        }
        self.purged = Some(p);
        self.entries = self.entries.split_off(&(p.index + 1));
    }
}

fn lock(m: &Mutex<MemLog>) -> MutexGuard<'_, MemLog> {
    // A panic while holding the lock cannot leave MemLog half-updated in a way that matters
    // more than stopping would; keep serving rather than cascade the panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn encode_record(rec: &Record, out: &mut Vec<u8>) -> Result<(), StoreError> {
    let start = out.len();
    out.extend_from_slice(&[0u8; RECORD_HEADER_LEN]);
    rmp_serde::encode::write_named(out, rec).map_err(|e| StoreError::Encode(e.to_string()))?;
    let len = out.len() - start - RECORD_HEADER_LEN;
    if len > MAX_RECORD_LEN {
        out.truncate(start);
        return Err(StoreError::Encode(format!(
            "record of {len} bytes exceeds the maximum of {MAX_RECORD_LEN}"
        )));
    }
    let crc = crc32fast::hash(&out[start + RECORD_HEADER_LEN..]);
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Why a record could not be read.
enum ParseError {
    /// Incomplete or failing its checksum: what a write cut short by a crash looks like.
    Torn(String),
    /// The checksum holds but the payload does not decode: never a crash, always an error.
    Bad(String),
}

/// Reads the record at `off`: `Ok(None)` at the end of the data.
fn parse_record(data: &[u8], off: usize) -> Result<Option<(Record, usize)>, ParseError> {
    let rest = &data[off..];
    if rest.is_empty() {
        return Ok(None);
    }
    let Some((len, crc)) = record_header(rest) else {
        return Err(ParseError::Torn(format!(
            "{} bytes left, less than a record header",
            rest.len()
        )));
    };
    if len == 0 || len > MAX_RECORD_LEN {
        return Err(ParseError::Torn(format!("implausible record length {len}")));
    }
    let Some(payload) = rest.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + len) else {
        return Err(ParseError::Torn(format!(
            "record of {len} bytes runs past the end of the file"
        )));
    };
    if crc32fast::hash(payload) != crc {
        return Err(ParseError::Torn("checksum mismatch".into()));
    }
    let rec: Record = rmp_serde::from_slice(payload)
        .map_err(|e| ParseError::Bad(format!("undecodable record: {e}")))?;
    Ok(Some((rec, off + RECORD_HEADER_LEN + len)))
}

fn record_header(rest: &[u8]) -> Option<(usize, u32)> {
    let len = u32::from_le_bytes(rest.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(rest.get(4..8)?.try_into().ok()?);
    Some((len, crc))
}

/// Whether a complete, valid record follows the (bad) record at `off`: then the bad one is
/// damage in the middle of the log, not a torn tail.
fn valid_record_follows(data: &[u8], off: usize) -> bool {
    let Some((len, _)) = record_header(&data[off..]) else {
        return false;
    };
    if len == 0 || len > MAX_RECORD_LEN {
        return false;
    }
    let next = off + RECORD_HEADER_LEN + len;
    next < data.len() && matches!(parse_record(data, next), Ok(Some(_)))
}

fn segment_name(seq: u64) -> String {
    format!("{SEGMENT_PREFIX}{seq:016x}{SEGMENT_SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name
        .strip_prefix(SEGMENT_PREFIX)?
        .strip_suffix(SEGMENT_SUFFIX)?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    path: PathBuf,
    /// Highest entry index ever written to it (truncation does not lower it: deleting later
    /// is always safe).
    max_index: Option<u64>,
}

/// Knobs for tests; production uses [`LogOptions::default`].
#[derive(Clone, Copy, Debug)]
pub struct LogOptions {
    pub segment_bytes: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
        }
    }
}

/// Completion of a request to the log thread, after the fsync that covers it.
enum Done {
    Log(LogFlushed<TypeConfig>),
    Wait(oneshot::Sender<io::Result<()>>),
}

impl Done {
    fn complete(self, r: Result<(), String>) {
        let r = r.map_err(io::Error::other);
        match self {
            Done::Log(cb) => cb.log_io_completed(r),
            Done::Wait(tx) => {
                let _ = tx.send(r);
            }
        }
    }
}

/// What a write changes in the state a new segment's checkpoint records.
#[derive(Clone, Copy, Debug)]
enum CheckpointChange {
    None,
    Vote(Vote),
    Committed(Option<LogId>),
    Purged(LogId),
}

/// Work for the log thread, in the order the store was called.
enum IoReq {
    /// Append encoded records; complete `done` (if any) once they are synced.
    Write {
        buf: Vec<u8>,
        max_index: Option<u64>,
        change: CheckpointChange,
        done: Option<Done>,
    },
    /// Delete the oldest segments whose entries are all at or below `upto`, once everything
    /// written before (the purge record) is synced.
    DeletePurged { upto: u64, done: Done },
}

type Poison = Arc<Mutex<Option<String>>>;

fn read_poison(p: &Poison) -> Option<String> {
    p.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn set_poison(p: &Poison, reason: &str) {
    let mut g = p.lock().unwrap_or_else(|e| e.into_inner());
    if g.is_none() {
        *g = Some(reason.to_owned());
    }
}

/// The log store handed to openraft. See the module doc.
pub struct LogStore {
    dir: PathBuf,
    mem: Arc<Mutex<MemLog>>,
    io_tx: mpsc::Sender<IoReq>,
    poison: Poison,
    segment_count: Arc<AtomicUsize>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// A reader of the log for openraft's replication tasks: reads only memory.
#[derive(Clone, Debug)]
pub struct LogReader {
    mem: Arc<Mutex<MemLog>>,
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, replaying every segment.
    pub fn open(dir: &Path) -> Result<LogStore, StoreError> {
        Self::open_with(dir, LogOptions::default())
    }

    pub fn open_with(dir: &Path, opts: LogOptions) -> Result<LogStore, StoreError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut seqs = Vec::new();
        for ent in fs::read_dir(dir).map_err(io_err(dir))? {
            let ent = ent.map_err(io_err(dir))?;
            if let Some(seq) = ent.file_name().to_str().and_then(parse_segment_name) {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();

        let mut mem = MemLog::default();
        let mut segments = VecDeque::new();
        let mut last_len = 0u64;
        for (i, &seq) in seqs.iter().enumerate() {
            let path = dir.join(segment_name(seq));
            let is_last = i + 1 == seqs.len();
            let (max_index, len) = replay_segment(&path, is_last, &mut mem)?;
            last_len = len;
            segments.push_back(Segment {
                seq,
                path,
                max_index,
            });
        }
        if let Err(reason) = mem.validate() {
            return Err(StoreError::Inconsistent {
                dir: dir.to_owned(),
                reason,
            });
        }
        let checkpoint = Checkpoint {
            vote: mem.vote,
            committed: mem.committed,
            purged: mem.purged,
        };

        let (file, file_len) = match segments.back() {
            Some(seg) => {
                let f = OpenOptions::new()
                    .append(true)
                    .open(&seg.path)
                    .map_err(io_err(&seg.path))?;
                (f, last_len)
            }
            None => {
                let seg = Segment {
                    seq: 1,
                    path: dir.join(segment_name(1)),
                    max_index: None,
                };
                let (f, len) = create_segment(dir, &seg.path, &checkpoint)?;
                segments.push_back(seg);
                (f, len)
            }
        };

        let (io_tx, io_rx) = mpsc::channel(IO_QUEUE);
        let poison: Poison = Arc::new(Mutex::new(None));
        let segment_count = Arc::new(AtomicUsize::new(segments.len()));
        let writer = Writer {
            dir: dir.to_owned(),
            opts,
            segments,
            file,
            file_len,
            dirty: false,
            checkpoint,
            poison: poison.clone(),
            segment_count: segment_count.clone(),
        };
        std::thread::Builder::new()
            .name("raft-log-io".into())
            .spawn(move || writer.run(io_rx))
            .map_err(io_err(dir))?;

        Ok(LogStore {
            dir: dir.to_owned(),
            mem: Arc::new(Mutex::new(mem)),
            io_tx,
            poison,
            segment_count,
        })
    }

    /// The directory of the segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of segment files (for tests of compaction).
    pub fn segment_count(&self) -> usize {
        self.segment_count.load(Ordering::Relaxed)
    }

    fn check_poison(&self) -> Result<(), StoreError> {
        match read_poison(&self.poison) {
            Some(reason) => Err(StoreError::Poisoned {
                dir: self.dir.clone(),
                reason,
            }),
            None => Ok(()),
        }
    }

    fn io_gone(&self) -> StoreError {
        StoreError::IoThreadGone {
            dir: self.dir.clone(),
        }
    }

    async fn send(&self, req: IoReq) -> Result<(), StoreError> {
        self.check_poison()?;
        self.io_tx.send(req).await.map_err(|_| self.io_gone())
    }

    async fn wait(&self, rx: oneshot::Receiver<io::Result<()>>) -> Result<(), StoreError> {
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Io {
                path: self.dir.clone(),
                source: e,
            }),
            Err(_) => Err(self.io_gone()),
        }
    }

    /// Applies `rec` to the in-memory log and hands its bytes to the log thread.
    async fn record(
        &mut self,
        rec: Record,
        change: CheckpointChange,
        done: Option<Done>,
    ) -> Result<(), StoreError> {
        let mut buf = Vec::new();
        encode_record(&rec, &mut buf)?;
        self.check_poison()?;
        lock(&self.mem).apply(rec);
        self.send(IoReq::Write {
            buf,
            max_index: None,
            change,
            done,
        })
        .await
    }

    /// Writes one record and waits until it is synced.
    async fn record_synced(
        &mut self,
        rec: Record,
        change: CheckpointChange,
    ) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.record(rec, change, Some(Done::Wait(tx))).await?;
        self.wait(rx).await
    }

    /// Encodes entries and makes them readable; the bytes still have to go to the log thread.
    fn prepare_entries(
        &mut self,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Result<(Vec<u8>, Option<u64>), StoreError> {
        let mut buf = Vec::new();
        let mut recs = Vec::new();
        let mut max_index = None;
        for e in entries {
            max_index = max_index.max(Some(e.log_id.index));
            let rec = Record::Entry(e);
            encode_record(&rec, &mut buf)?;
            recs.push(rec);
        }
        self.check_poison()?;
        let mut mem = lock(&self.mem);
        for rec in recs {
            mem.apply(rec);
        }
        Ok((buf, max_index))
    }

    /// Appends and waits for the fsync (tests: openraft's callback cannot be built outside it).
    #[cfg(test)]
    pub(crate) async fn append_synced(&mut self, entries: Vec<Entry>) -> Result<(), StoreError> {
        let (buf, max_index) = self.prepare_entries(entries)?;
        let (tx, rx) = oneshot::channel();
        self.send(IoReq::Write {
            buf,
            max_index,
            change: CheckpointChange::None,
            done: Some(Done::Wait(tx)),
        })
        .await?;
        self.wait(rx).await
    }

    fn reader(&self) -> LogReader {
        LogReader {
            mem: self.mem.clone(),
        }
    }
}

/// The state a segment's first record records.
#[derive(Clone, Copy, Debug)]
struct Checkpoint {
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
}

/// The log thread's side: the files. Everything that touches them runs on this one thread, in
/// request order, so the async side never blocks on the disk (a `write` into a page that an
/// fsync is writing back waits for that fsync on many devices).
struct Writer {
    dir: PathBuf,
    opts: LogOptions,
    segments: VecDeque<Segment>,
    /// The last segment, open for appending.
    file: File,
    file_len: u64,
    /// Written since the last fsync.
    dirty: bool,
    /// As of the last record written, for the next segment's first record.
    checkpoint: Checkpoint,
    poison: Poison,
    segment_count: Arc<AtomicUsize>,
}

impl Writer {
    /// Takes every pending request, writes them, fsyncs once, completes them all.
    fn run(mut self, mut rx: mpsc::Receiver<IoReq>) {
        let mut batch = Vec::new();
        let mut done = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_IO_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let mut result = match read_poison(&self.poison) {
                Some(reason) => Err(reason),
                None => Ok(()),
            };
            for req in batch.drain(..) {
                match req {
                    IoReq::Write {
                        buf,
                        max_index,
                        change,
                        done: d,
                    } => {
                        if result.is_ok() {
                            result = self.write(&buf, max_index, change);
                        }
                        done.extend(d);
                    }
                    IoReq::DeletePurged { upto, done: d } => {
                        if result.is_ok() {
                            result = self.sync().and_then(|()| self.delete_purged(upto));
                        }
                        done.push(d);
                    }
                }
            }
            if result.is_ok() {
                result = self.sync();
            }
            if let Err(reason) = &result {
                set_poison(&self.poison, reason);
            }
            for d in done.drain(..) {
                d.complete(result.clone());
            }
        }
    }

    fn current_path(&self) -> PathBuf {
        self.segments
            .back()
            .map_or_else(|| self.dir.clone(), |s| s.path.clone())
    }

    fn write(
        &mut self,
        buf: &[u8],
        max_index: Option<u64>,
        change: CheckpointChange,
    ) -> Result<(), String> {
        if self.file_len >= self.opts.segment_bytes {
            self.roll()?;
        }
        if let Err(e) = self.file.write_all(buf) {
            return Err(format!(
                "write to {} failed: {e}",
                self.current_path().display()
            ));
        }
        self.dirty = true;
        self.file_len += buf.len() as u64;
        if let Some(seg) = self.segments.back_mut() {
            seg.max_index = seg.max_index.max(max_index);
        }
        match change {
            CheckpointChange::None => {}
            CheckpointChange::Vote(v) => self.checkpoint.vote = Some(v),
            CheckpointChange::Committed(c) => self.checkpoint.committed = c,
            CheckpointChange::Purged(p) => {
                if self.checkpoint.purged.is_none_or(|old| old.index < p.index) {
                    self.checkpoint.purged = Some(p);
                }
            }
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), String> {
        if !self.dirty {
            return Ok(());
        }
        self.file
            .sync_data()
            .map_err(|e| format!("fsync of {} failed: {e}", self.current_path().display()))?;
        self.dirty = false;
        Ok(())
    }

    /// Syncs the current segment and starts the next one with a checkpoint.
    fn roll(&mut self) -> Result<(), String> {
        self.sync()?;
        let seq = self.segments.back().map_or(1, |s| s.seq + 1);
        let path = self.dir.join(segment_name(seq));
        let (file, len) =
            create_segment(&self.dir, &path, &self.checkpoint).map_err(|e| e.to_string())?;
        self.segments.push_back(Segment {
            seq,
            path,
            max_index: None,
        });
        self.file = file;
        self.file_len = len;
        self.segment_count
            .store(self.segments.len(), Ordering::Relaxed);
        Ok(())
    }

    /// Deletes the oldest segments whose entries are all at or below `upto` (never the
    /// current one). Everything written before is already synced.
    fn delete_purged(&mut self, upto: u64) -> Result<(), String> {
        let mut deleted = false;
        while self.segments.len() > 1 {
            let Some(front) = self.segments.front() else {
                break;
            };
            if front.max_index.is_some_and(|m| m > upto) {
                break;
            }
            fs::remove_file(&front.path)
                .map_err(|e| format!("cannot delete {}: {e}", front.path.display()))?;
            self.segments.pop_front();
            deleted = true;
        }
        if deleted {
            sync_dir(&self.dir).map_err(|e| e.to_string())?;
        }
        self.segment_count
            .store(self.segments.len(), Ordering::Relaxed);
        Ok(())
    }
}

/// Replays one segment into `mem`; returns the highest entry index in it and its valid length.
fn replay_segment(
    path: &Path,
    is_last: bool,
    mem: &mut MemLog,
) -> Result<(Option<u64>, u64), StoreError> {
    let data = fs::read(path).map_err(io_err(path))?;
    let mut off = 0usize;
    let mut max_index = None;
    loop {
        match parse_record(&data, off) {
            Ok(None) => break,
            Ok(Some((rec, next))) => {
                if let Record::Entry(e) = &rec {
                    max_index = max_index.max(Some(e.log_id.index));
                }
                mem.apply(rec);
                off = next;
            }
            Err(ParseError::Bad(reason)) => {
                return Err(StoreError::Corrupt {
                    path: path.to_owned(),
                    offset: off as u64,
                    reason,
                })
            }
            Err(ParseError::Torn(reason)) => {
                if !is_last {
                    return Err(StoreError::Corrupt {
                        path: path.to_owned(),
                        offset: off as u64,
                        reason: format!(
                            "{reason} (in a segment that was synced before the next one was started)"
                        ),
                    });
                }
                if valid_record_follows(&data, off) {
                    return Err(StoreError::Corrupt {
                        path: path.to_owned(),
                        offset: off as u64,
                        reason: format!("{reason}, and valid records follow it"),
                    });
                }
                tracing::warn!(
                    path = %path.display(),
                    offset = off,
                    dropped_bytes = data.len() - off,
                    %reason,
                    "dropping the torn tail of the raft log (a write cut short by a crash)"
                );
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io_err(path))?;
                f.set_len(off as u64).map_err(io_err(path))?;
                f.sync_all().map_err(io_err(path))?;
                break;
            }
        }
    }
    Ok((max_index, off as u64))
}

/// Creates a segment holding `checkpoint`, synced with its directory entry.
fn create_segment(
    dir: &Path,
    path: &Path,
    checkpoint: &Checkpoint,
) -> Result<(File, u64), StoreError> {
    let mut buf = Vec::new();
    encode_record(
        &Record::Checkpoint {
            vote: checkpoint.vote,
            committed: checkpoint.committed,
            purged: checkpoint.purged,
        },
        &mut buf,
    )?;
    let mut f = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(&buf).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))?;
    sync_dir(dir)?;
    Ok((f, buf.len() as u64))
}

fn write_err(e: StoreError) -> StorageError {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let mem = lock(&self.mem);
        Ok(mem.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.reader().try_get_log_entries(range).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let mem = lock(&self.mem);
        Ok(LogState {
            last_purged_log_id: mem.purged,
            last_log_id: mem.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.record_synced(Record::Vote(*vote), CheckpointChange::Vote(*vote))
            .await
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(lock(&self.mem).vote)
    }

    /// Written without waiting for an fsync: the committed id is a hint that lets a restarted
    /// master re-apply entries before hearing from a leader; it becomes durable with the next
    /// flush, and a crash that loses it loses nothing else (it follows the entries it covers in
    /// the file, and a torn tail drops everything after the tear).
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.record(
            Record::Committed(committed),
            CheckpointChange::Committed(committed),
            None,
        )
        .await
        .map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(lock(&self.mem).committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let (buf, max_index) = self.prepare_entries(entries).map_err(write_err)?;
        self.send(IoReq::Write {
            buf,
            max_index,
            change: CheckpointChange::None,
            done: Some(Done::Log(callback)),
        })
        .await
        .map_err(write_err)
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.record_synced(
            Record::Truncate {
                since: log_id.index,
            },
            CheckpointChange::None,
        )
        .await
        .map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The purge record must be durable before segments go: replay of the remaining ones
        // starts from a checkpoint that may predate the purge. The log thread syncs it first.
        self.record(
            Record::Purge(log_id),
            CheckpointChange::Purged(log_id),
            None,
        )
        .await
        .map_err(write_err)?;
        let (tx, rx) = oneshot::channel();
        self.send(IoReq::DeletePurged {
            upto: log_id.index,
            done: Done::Wait(tx),
        })
        .await
        .map_err(write_err)?;
        self.wait(rx).await.map_err(write_err)
    }
}
