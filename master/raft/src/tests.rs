//! Unit tests of the log store and the state machine on real files in a temporary directory.

use crate::log_store::{LogOptions, LogStore, StoreError};
use crate::state_machine::{CommitEvent, StateMachine};
use crate::{Entry, LogId, Proposal, RegistryOp, Vote};
use openraft::storage::{RaftLogReader, RaftLogStorage, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, RaftSnapshotBuilder};
use proto::{FrameworkId, FrameworkInfo, ProtocolVersion};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn fw_op(i: u64) -> RegistryOp {
    RegistryOp::FrameworkAdded {
        framework_id: FrameworkId::new(format!("fw-{i}")),
        info: FrameworkInfo {
            id: None,
            name: format!("framework {i}"),
            roles: vec![],
            failover_timeout_ms: 1000,
            capabilities: vec![],
            version: ProtocolVersion::CURRENT,
        },
        principal: Some(format!("fw-{i}")),
    }
}

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Proposal::new(vec![fw_op(index)], vec![Some(index * 10)])),
    }
}

fn entries(term: u64, range: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
    range.map(|i| entry(term, i)).collect()
}

async fn indexes(store: &mut LogStore) -> Vec<u64> {
    store
        .try_get_log_entries(..)
        .await
        .unwrap()
        .iter()
        .map(|e| e.log_id.index)
        .collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn log_survives_reopen_with_vote_and_committed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = LogStore::open(dir.path()).unwrap();
        store.append_synced(entries(1, 1..=5)).await.unwrap();
        store.save_vote(&Vote::new(3, 2)).await.unwrap();
        store.save_committed(Some(log_id(1, 4))).await.unwrap();
        store.append_synced(entries(1, 6..=7)).await.unwrap();
    }
    let mut store = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&mut store).await, vec![1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 4)));
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(1, 7)));
    assert_eq!(state.last_purged_log_id, None);
    let got = store.try_get_log_entries(3..5).await.unwrap();
    assert_eq!(got.len(), 2);
    assert!(matches!(&got[0].payload, EntryPayload::Normal(p) if *p.ops == vec![fw_op(3)]));
}

#[tokio::test]
async fn truncate_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = LogStore::open(dir.path()).unwrap();
        store.append_synced(entries(1, 1..=10)).await.unwrap();
        store.truncate(log_id(1, 6)).await.unwrap();
        // The leader's entries replace the truncated ones.
        store.append_synced(entries(2, 6..=7)).await.unwrap();
    }
    let mut store = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&mut store).await, vec![1, 2, 3, 4, 5, 6, 7]);
    let last = store.get_log_state().await.unwrap().last_log_id;
    assert_eq!(last, Some(log_id(2, 7)));
}

#[tokio::test]
async fn purge_deletes_old_segments_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogOptions { segment_bytes: 512 };
    {
        let mut store = LogStore::open_with(dir.path(), opts).unwrap();
        for i in 1..=60 {
            store.append_synced(vec![entry(1, i)]).await.unwrap();
        }
        store.save_vote(&Vote::new(1, 1)).await.unwrap();
        let before = store.segment_count();
        assert!(before > 5, "small segments roll often, got {before}");
        store.purge(log_id(1, 50)).await.unwrap();
        let after = store.segment_count();
        assert!(
            after < before,
            "purge deleted no segment ({before} -> {after})"
        );
        assert_eq!(segments(dir.path()).len(), after);
        assert_eq!(indexes(&mut store).await, (51..=60).collect::<Vec<_>>());
    }
    let mut store = LogStore::open_with(dir.path(), opts).unwrap();
    assert_eq!(indexes(&mut store).await, (51..=60).collect::<Vec<_>>());
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 50)));
    assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(1, 1)));
    // Purging everything leaves the purged id as the last log id.
    store.purge(log_id(1, 60)).await.unwrap();
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(1, 60)));
    store.append_synced(vec![entry(1, 61)]).await.unwrap();
    drop(store);
    let mut store = LogStore::open_with(dir.path(), opts).unwrap();
    assert_eq!(indexes(&mut store).await, vec![61]);
}

#[tokio::test]
async fn torn_tail_is_dropped_and_the_log_continues() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = LogStore::open(dir.path()).unwrap();
        store.append_synced(entries(1, 1..=3)).await.unwrap();
    }
    let seg = segments(dir.path()).pop().unwrap();
    let good_len = fs::metadata(&seg).unwrap().len();
    // A record whose header promises 200 bytes, of which only 5 reached the disk.
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&200u32.to_le_bytes()).unwrap();
    f.write_all(&[7, 7, 7, 7, 1, 2, 3, 4, 5]).unwrap();
    drop(f);

    let mut store = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&mut store).await, vec![1, 2, 3]);
    assert_eq!(fs::metadata(&seg).unwrap().len(), good_len, "tail cut off");
    store.append_synced(entries(1, 4..=4)).await.unwrap();
    drop(store);
    let mut store = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&mut store).await, vec![1, 2, 3, 4]);
}

#[tokio::test]
async fn last_record_with_bad_checksum_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = LogStore::open(dir.path()).unwrap();
        store.append_synced(entries(1, 1..=3)).await.unwrap();
    }
    let seg = segments(dir.path()).pop().unwrap();
    let mut data = fs::read(&seg).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    fs::write(&seg, &data).unwrap();
    let mut store = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&mut store).await, vec![1, 2]);
}

#[tokio::test]
async fn damage_in_the_middle_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = LogStore::open(dir.path()).unwrap();
        store.append_synced(entries(1, 1..=5)).await.unwrap();
    }
    let seg = segments(dir.path()).pop().unwrap();
    let mut data = fs::read(&seg).unwrap();
    // Flip a byte in the middle of the file: a record with good ones after it.
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    fs::write(&seg, &data).unwrap();
    let err = LogStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&seg.display().to_string()), "{msg}");
}

#[tokio::test]
async fn garbage_file_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let seg = dir.path().join("wal-0000000000000001.log");
    for garbage in [
        vec![0u8; 0],
        vec![0u8; 3],
        vec![0u8; 64],
        vec![0xffu8; 64],
        (0..=255u8).cycle().take(4096).collect::<Vec<u8>>(),
    ] {
        fs::write(&seg, &garbage).unwrap();
        // Either a clean (empty) log or an error; never a panic.
        if let Ok(mut store) = LogStore::open(dir.path()) {
            assert!(indexes(&mut store).await.is_empty());
        }
    }
}

#[tokio::test]
async fn subscription_sees_every_later_op_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::open(dir.path()).unwrap();
    sm.apply(entries(1, 1..=3)).await.unwrap();
    let mut sub = sm.subscribe();
    assert_eq!(sub.applied_index, 3);
    assert_eq!(sub.registry.frameworks().len(), 3);
    sm.apply(entries(1, 4..=5)).await.unwrap();
    let mut got = Vec::new();
    while let Ok(ev) = sub.events.try_recv() {
        got.push(ev);
    }
    assert_eq!(
        got,
        vec![
            CommitEvent::Op {
                index: 4,
                op: fw_op(4),
                id: Some(40),
            },
            CommitEvent::Op {
                index: 5,
                op: fw_op(5),
                id: Some(50),
            },
        ]
    );
    // A new subscription replaces the old one: the old stream ends, the new one starts after
    // what its registry copy holds.
    let mut sub2 = sm.subscribe();
    assert_eq!(sub2.applied_index, 5);
    assert_eq!(sub2.registry.frameworks().len(), 5);
    sm.apply(entries(1, 6..=6)).await.unwrap();
    assert!(sub.events.recv().await.is_none());
    assert_eq!(
        sub2.events.recv().await,
        Some(CommitEvent::Op {
            index: 6,
            op: fw_op(6),
            id: Some(60),
        })
    );
}

#[tokio::test]
async fn snapshot_persists_and_installs_elsewhere() {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let mut a = StateMachine::open(dir_a.path()).unwrap();
    a.apply(entries(1, 1..=4)).await.unwrap();
    let snap = a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(snap.meta.last_log_id, Some(log_id(1, 4)));
    let registry = a.registry().0;
    drop(a);

    // Reopened from disk: the registry and applied id are the snapshot's.
    let mut a = StateMachine::open(dir_a.path()).unwrap();
    assert_eq!(a.registry(), (registry.clone(), 4));
    assert_eq!(a.applied_state().await.unwrap().0, Some(log_id(1, 4)));
    let current = a.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, snap.meta);

    // Installed on another master: its subscriber is told to start over.
    let mut b = StateMachine::open(dir_b.path()).unwrap();
    b.apply(entries(1, 1..=1)).await.unwrap();
    let mut sub = b.subscribe();
    b.install_snapshot(&current.meta, current.snapshot)
        .await
        .unwrap();
    match sub.events.recv().await {
        Some(CommitEvent::Reset { index, registry: r }) => {
            assert_eq!(index, 4);
            assert_eq!(*r, registry);
        }
        other => panic!("expected a reset, got {other:?}"),
    }
    assert_eq!(b.registry(), (registry, 4));
}

#[tokio::test]
async fn corrupt_snapshot_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut sm = StateMachine::open(dir.path()).unwrap();
        sm.apply(entries(1, 1..=2)).await.unwrap();
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
    }
    let path = dir.path().join("snapshot.bin");
    let mut data = fs::read(&path).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x55;
    fs::write(&path, &data).unwrap();
    let err = StateMachine::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("snapshot.bin"), "{err}");
}

/// The proposers' ids are a field entries written before it lack, and omitted when no op has
/// one: old entries load, and untagged ones are written as before.
#[test]
fn proposal_ids_are_optional_in_the_log_format() {
    #[derive(serde::Serialize)]
    struct OldProposal {
        ops: Vec<RegistryOp>,
    }
    let old = rmp_serde::to_vec_named(&OldProposal {
        ops: vec![fw_op(1)],
    })
    .unwrap();
    let read: Proposal = rmp_serde::from_slice(&old).unwrap();
    assert_eq!(*read.ops, vec![fw_op(1)]);
    assert!(read.ids.is_empty());
    let untagged = Proposal::new(vec![fw_op(1)], Vec::new());
    assert_eq!(rmp_serde::to_vec_named(&untagged).unwrap(), old);
    let tagged = Proposal::new(vec![fw_op(1), fw_op(2)], vec![Some(7), None]);
    let bytes = rmp_serde::to_vec_named(&tagged).unwrap();
    assert_eq!(rmp_serde::from_slice::<Proposal>(&bytes).unwrap(), tagged);
}
