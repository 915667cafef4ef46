//! Console sessions ended before they expire (signed out). A session is a
//! signed token that any node verifies on its own, so ending one early needs
//! a list that every node holds. An entry lives until the last moment a
//! token of that session could still verify, and goes with a later sign-out.

use rocksdb::IteratorMode;

use crate::model::apply::{ApplyError, Staged};
use crate::store::{cf, decode, encode, CF_ENDED_SESSIONS};

impl Staged<'_> {
    /// Session `id` ended at `at`; its tokens verify until `until` at the
    /// latest. Entries whose time has passed are dropped: the list holds
    /// the sessions ended within one session lifetime, a handful.
    pub(crate) fn end_session(&mut self, id: &str, at: u64, until: u64) -> Result<(), ApplyError> {
        let table = cf(self.db, CF_ENDED_SESSIONS);
        for item in self.db.iterator_cf(table, IteratorMode::Start) {
            let (k, v) = item.map_err(ApplyError::Db)?;
            let ends: u64 = decode(&v).map_err(ApplyError::Record)?;
            if ends < at {
                self.batch.delete_cf(table, k);
            }
        }
        if until >= at {
            self.batch.put_cf(table, id, encode(&until));
        }
        Ok(())
    }
}
