//! The durable raft log: an append-only, segmented write-ahead log of our own.
//!
//! **Why our own.** The registry log is small and sequential: entries are appended at the end,
//! removed from the end only on a leader conflict (truncate) and from the front after a snapshot
//! (purge). A general storage engine (RocksDB, sled) buys nothing here and costs a C++ build or an
//! unmaintained dependency; a segmented log is a few hundred lines whose every fsync we control.
//!
//! **Format.** The directory holds segments `wal-<seq>.log` (16 hex digits, increasing). Each
//! is a sequence of records `[len: u32 LE][crc32(payload): u32 LE][payload]`, the payload a
//! MessagePack [`Record`]. Every change is a record: an entry, a vote, the committed log id, a
//! truncation, a purge. A segment starts with a checkpoint record (vote, committed, purged as of
//! its creation), so older segments can be deleted once every entry in them is purged. Opening
//! the log replays all segments in order with the same code that applies a record live, so the
//! state after a restart is the state before it.
//!
//! **Memory.** All unpurged entries are also kept in memory (a `BTreeMap`), and reads are served
//! from there. The snapshot policy bounds how many that is (entries since the last snapshot plus
//! the ones kept after it), so reads never touch the disk.
//!
//! **Durability.** `append` writes the records to the segment (page cache) and returns: the
//! entries are readable at once. A flusher thread then `fdatasync`s the segment and only then
//! calls openraft's [`LogFlushed`] callback. Appends that arrive while an fsync runs are covered
//! by the next one, so N concurrent proposals cost far fewer than N fsyncs (group commit).
//! `save_vote`, `truncate` and `purge` wait for their fsync before returning. A segment is synced
//! before the next one is created, so only the last segment can end in a torn record.
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
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, oneshot};

type StorageError = crate::StorageError;

/// A new segment is started once the current one is this large.
pub const DEFAULT_SEGMENT_BYTES: u64 = 16 << 20;
/// Largest record accepted (an entry must also fit in one raft frame, so this matches the
/// protocol's maximum frame).
pub const MAX_RECORD_LEN: usize = proto::MAX_FRAME_LEN;
/// Flush requests (one per append, vote, truncate or purge) waiting for the flusher thread.
/// When full, `append` waits: openraft then stops handing us entries until the disk catches up.
pub const FLUSH_QUEUE: usize = 4096;
/// Most requests completed by one fsync.
const MAX_FLUSH_BATCH: usize = 4096;
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
    #[error("the log flusher thread of {dir} is gone", dir = dir.display())]
    FlusherGone { dir: PathBuf },
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
    Truncate { since: u64 },
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
    let hex = name.strip_prefix(SEGMENT_PREFIX)?.strip_suffix(SEGMENT_SUFFIX)?;
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

/// Completion of a flush request.
enum Done {
    Log(LogFlushed<TypeConfig>),
    Wait(oneshot::Sender<io::Result<()>>),
}

struct FlushReq {
    file: Arc<File>,
    done: Done,
}

type Poison = Arc<Mutex<Option<String>>>;

/// The log store handed to openraft. See the module doc.
pub struct LogStore {
    dir: PathBuf,
    opts: LogOptions,
    mem: Arc<Mutex<MemLog>>,
    segments: VecDeque<Segment>,
    /// The last segment, open for appending.
    file: Arc<File>,
    file_len: u64,
    flush_tx: mpsc::Sender<FlushReq>,
    poison: Poison,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("dir", &self.dir)
            .field("segments", &self.segments.len())
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
                let (f, len) = create_segment(dir, &seg.path, &mem)?;
                segments.push_back(seg);
                (f, len)
            }
        };

        let (flush_tx, flush_rx) = mpsc::channel(FLUSH_QUEUE);
        let poison: Poison = Arc::new(Mutex::new(None));
        let thread_poison = poison.clone();
        let thread_dir = dir.to_owned();
        std::thread::Builder::new()
            .name("raft-log-flush".into())
            .spawn(move || flusher(flush_rx, thread_poison, thread_dir))
            .map_err(io_err(dir))?;

        Ok(LogStore {
            dir: dir.to_owned(),
            opts,
            mem: Arc::new(Mutex::new(mem)),
            segments,
            file: Arc::new(file),
            file_len,
            flush_tx,
            poison,
        })
    }

    /// The directory of the segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of segment files (for tests of compaction).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn check_poison(&self) -> Result<(), StoreError> {
        let p = self.poison.lock().unwrap_or_else(|e| e.into_inner());
        match p.as_ref() {
            Some(reason) => Err(StoreError::Poisoned {
                dir: self.dir.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn poison_with(&self, reason: String) {
        let mut p = self.poison.lock().unwrap_or_else(|e| e.into_inner());
        if p.is_none() {
            *p = Some(reason);
        }
    }

    /// Writes encoded records at the end of the log (starting a new segment first if the
    /// current one is full). Not synced.
    fn write(&mut self, buf: &[u8]) -> Result<(), StoreError> {
        self.check_poison()?;
        if self.file_len >= self.opts.segment_bytes {
            self.roll()?;
        }
        // A small write into the page cache: microseconds, so it is done inline.
        if let Err(e) = (&*self.file).write_all(buf) {
            let path = self.current_path().to_owned();
            self.poison_with(format!("write to {} failed: {e}", path.display()));
            return Err(StoreError::Io { path, source: e });
        }
        self.file_len += buf.len() as u64;
        Ok(())
    }

    fn current_path(&self) -> &Path {
        match self.segments.back() {
            Some(s) => &s.path,
            None => &self.dir,
        }
    }

    /// Syncs the current segment and starts the next one with a checkpoint.
    fn roll(&mut self) -> Result<(), StoreError> {
        let old = self.current_path().to_owned();
        if let Err(e) = self.file.sync_data() {
            self.poison_with(format!("fsync of {} failed: {e}", old.display()));
            return Err(StoreError::Io {
                path: old,
                source: e,
            });
        }
        let seq = self.segments.back().map_or(1, |s| s.seq + 1);
        let path = self.dir.join(segment_name(seq));
        let (file, len) = {
            let mem = lock(&self.mem);
            create_segment(&self.dir, &path, &mem)?
        };
        self.segments.push_back(Segment {
            seq,
            path,
            max_index: None,
        });
        self.file = Arc::new(file);
        self.file_len = len;
        Ok(())
    }

    /// Asks the flusher for an fsync covering everything written so far and waits for it.
    async fn sync(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.flush_tx
            .send(FlushReq {
                file: self.file.clone(),
                done: Done::Wait(tx),
            })
            .await
            .map_err(|_| self.flusher_gone())?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Io {
                path: self.current_path().to_owned(),
                source: e,
            }),
            Err(_) => Err(self.flusher_gone()),
        }
    }

    fn flusher_gone(&self) -> StoreError {
        StoreError::FlusherGone {
            dir: self.dir.clone(),
        }
    }

    /// Writes one record, applies it, and waits for its fsync.
    async fn write_synced(&mut self, rec: Record) -> Result<(), StoreError> {
        let mut buf = Vec::new();
        encode_record(&rec, &mut buf)?;
        self.write(&buf)?;
        self.apply(rec);
        self.sync().await
    }

    fn apply(&self, rec: Record) {
        lock(&self.mem).apply(rec);
    }

    /// Deletes the oldest segments whose entries are all purged (never the current one).
    fn delete_purged_segments(&mut self) -> Result<(), StoreError> {
        let Some(purged) = lock(&self.mem).purged else {
            return Ok(());
        };
        let mut deleted = false;
        while self.segments.len() > 1 {
            let Some(front) = self.segments.front() else {
                break;
            };
            if front.max_index.is_some_and(|m| m > purged.index) {
                break;
            }
            fs::remove_file(&front.path).map_err(io_err(&front.path))?;
            self.segments.pop_front();
            deleted = true;
        }
        if deleted {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Writes entries at the end of the log and makes them readable (not yet synced).
    fn append_records(&mut self, entries: impl IntoIterator<Item = Entry>) -> Result<(), StoreError> {
        let mut buf = Vec::new();
        let mut recs = Vec::new();
        let mut max_index = None;
        for e in entries {
            max_index = max_index.max(Some(e.log_id.index));
            let rec = Record::Entry(e);
            encode_record(&rec, &mut buf)?;
            recs.push(rec);
        }
        self.write(&buf)?;
        if let Some(seg) = self.segments.back_mut() {
            seg.max_index = seg.max_index.max(max_index);
        }
        for rec in recs {
            self.apply(rec);
        }
        Ok(())
    }

    /// Appends and waits for the fsync (tests: openraft's callback cannot be built outside it).
    #[cfg(test)]
    pub(crate) async fn append_synced(&mut self, entries: Vec<Entry>) -> Result<(), StoreError> {
        self.append_records(entries)?;
        self.sync().await
    }

    fn reader(&self) -> LogReader {
        LogReader {
            mem: self.mem.clone(),
        }
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
                        reason: format!("{reason} (in a segment that was synced before the next one was started)"),
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

/// Creates a segment holding a checkpoint of `mem`, synced with its directory entry.
fn create_segment(dir: &Path, path: &Path, mem: &MemLog) -> Result<(File, u64), StoreError> {
    let mut buf = Vec::new();
    encode_record(
        &Record::Checkpoint {
            vote: mem.vote,
            committed: mem.committed,
            purged: mem.purged,
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

/// The flusher thread: takes every pending request, fsyncs once, completes them all.
fn flusher(mut rx: mpsc::Receiver<FlushReq>, poison: Poison, dir: PathBuf) {
    let mut batch: Vec<FlushReq> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_FLUSH_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let poisoned = poison.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let result: Result<(), String> = match poisoned {
            Some(reason) => Err(reason),
            None => {
                let mut res = Ok(());
                let mut synced: Vec<&Arc<File>> = Vec::new();
                for req in &batch {
                    if synced.iter().any(|f| Arc::ptr_eq(f, &req.file)) {
                        continue;
                    }
                    if let Err(e) = req.file.sync_data() {
                        let reason = format!("fsync in {} failed: {e}", dir.display());
                        *poison.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.clone());
                        res = Err(reason);
                        break;
                    }
                    synced.push(&req.file);
                }
                res
            }
        };
        for req in batch.drain(..) {
            let r = result.clone().map_err(io::Error::other);
            match req.done {
                Done::Log(cb) => cb.log_io_completed(r),
                Done::Wait(tx) => {
                    let _ = tx.send(r);
                }
            }
        }
    }
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
        self.write_synced(Record::Vote(*vote))
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
        let rec = Record::Committed(committed);
        let mut buf = Vec::new();
        encode_record(&rec, &mut buf).map_err(write_err)?;
        self.write(&buf).map_err(write_err)?;
        self.apply(rec);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(lock(&self.mem).committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.append_records(entries).map_err(write_err)?;
        self.flush_tx
            .send(FlushReq {
                file: self.file.clone(),
                done: Done::Log(callback),
            })
            .await
            .map_err(|_| write_err(self.flusher_gone()))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.write_synced(Record::Truncate {
            since: log_id.index,
        })
        .await
        .map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The purge record must be durable before segments go: replay of the remaining ones
        // starts from a checkpoint that may predate the purge.
        self.write_synced(Record::Purge(log_id))
            .await
            .map_err(write_err)?;
        self.delete_purged_segments().map_err(write_err)
    }
}
