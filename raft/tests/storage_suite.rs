//! openraft's own storage conformance suite, run against tcr's RocksDB log
//! store and state machine.

use openraft::testing::{StoreBuilder, Suite};
use tcr_raft::StorageError;
use tcr_raft::{LogStore, StateMachineStore, TypeConfig};

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for RocksBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let stores = tcr_raft::open(dir.path()).expect("open stores");
        Ok((dir, stores.log, stores.state_machine))
    }
}

#[test]
fn openraft_storage_suite_passes() {
    Suite::test_all(RocksBuilder).expect("openraft storage suite");
}
