//! openraft's own storage test suite, run on a fresh on-disk store per case.

use master_raft::{LogStore, StateMachine, StorageError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

struct DiskStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for DiskStoreBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = LogStore::open(&dir.path().join("log")).expect("open log");
        let sm = StateMachine::open(&dir.path().join("snapshot")).expect("open state machine");
        Ok((dir, log, sm))
    }
}

/// Takes about 8 s: the suite itself sleeps a second after each purge.
#[test]
fn store_passes_openraft_suite() {
    Suite::test_all(DiskStoreBuilder).expect("openraft storage suite");
}
