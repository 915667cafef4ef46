//! The Raft log in RocksDB. Appends are written at once (readable immediately)
//! and made durable by one flusher thread that fsyncs the WAL for every batch
//! of appends waiting on it: concurrent writes share one fsync (group commit).

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::mpsc;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{RaftLogReader, StorageIOError};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};

use crate::consensus::snapshot_policy::LogVolume;
use crate::consensus::types::{Entry, LogId, StorageError, TypeConfig, Vote};
use crate::store::{cf, CF_LOGS, CF_RAFT_META};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    flusher: mpsc::Sender<LogFlushed<TypeConfig>>,
    volume: Arc<LogVolume>,
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

pub(crate) fn encode_entry(e: &Entry) -> Result<Vec<u8>, bincode::error::EncodeError> {
    bincode::serde::encode_to_vec(e, bincode_config())
}

fn decode_entry(b: &[u8]) -> Result<Entry, bincode::error::DecodeError> {
    bincode::serde::decode_from_slice(b, bincode_config()).map(|(e, _)| e)
}

impl LogStore {
    pub(crate) fn new(db: Arc<DB>, volume: Arc<LogVolume>) -> Self {
        let (tx, rx) = mpsc::channel::<LogFlushed<TypeConfig>>();
        // Only a weak reference: the database must close when the stores are
        // dropped (a reopen needs its lock, and RocksDB aborts if it is still
        // open while the process exits).
        let flush_db = Arc::downgrade(&db);
        std::thread::Builder::new()
            .name("raft-log-fsync".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut waiting = vec![first];
                    waiting.extend(rx.try_iter());
                    let res = match flush_db.upgrade() {
                        Some(db) => db
                            .flush_wal(true)
                            .map_err(|e| std::io::Error::other(e.to_string())),
                        None => Err(std::io::Error::other("log store closed")),
                    };
                    for cb in waiting {
                        cb.log_io_completed(
                            res.as_ref()
                                .map(|_| ())
                                .map_err(|e| std::io::Error::new(e.kind(), e.to_string())),
                        );
                    }
                }
            })
            .expect("spawn fsync thread");
        LogStore {
            db,
            flusher: tx,
            volume,
        }
    }

    fn get_meta<T: for<'de> serde::Deserialize<'de>>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        let v = self
            .db
            .get_cf(cf(&self.db, CF_RAFT_META), key)
            .map_err(|e| StorageIOError::read(&e))?;
        match v {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| StorageIOError::read(&e).into()),
        }
    }

    fn put_meta<T: serde::Serialize>(
        &self,
        key: &[u8],
        value: &T,
        sync: bool,
    ) -> Result<(), StorageError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        let bytes = serde_json::to_vec(value).map_err(|e| StorageIOError::write(&e))?;
        self.db
            .put_cf_opt(cf(&self.db, CF_RAFT_META), key, bytes, &wo)
            .map_err(|e| StorageIOError::write(&e).into())
    }

    fn delete_range_sync(&self, from: u64, to: u64) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf(&self.db, CF_LOGS), index_key(from), index_key(to));
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db
            .write_opt(batch, &wo)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => *i + 1,
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        let it = self.db.iterator_cf(
            cf(&self.db, CF_LOGS),
            IteratorMode::From(&index_key(start), Direction::Forward),
        );
        for item in it {
            let (k, v) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let idx = u64::from_be_bytes(k.as_ref().try_into().map_err(|_| {
                StorageIOError::read_logs(&std::io::Error::other("malformed log key"))
            })?);
            if !range.contains(&idx) {
                break;
            }
            out.push(decode_entry(&v).map_err(|e| StorageIOError::read_logs(&e))?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta(KEY_LAST_PURGED)?;
        let mut it = self
            .db
            .iterator_cf(cf(&self.db, CF_LOGS), IteratorMode::End);
        let last = match it.next() {
            Some(item) => {
                let (_, v) = item.map_err(|e| StorageIOError::read_logs(&e))?;
                Some(
                    decode_entry(&v)
                        .map_err(|e| StorageIOError::read_logs(&e))?
                        .log_id,
                )
            }
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put_meta(KEY_VOTE, vote, true)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Durability of `committed` is an optimisation only (faster restart).
        self.put_meta(KEY_COMMITTED, &committed, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut batch = WriteBatch::default();
        let logs = cf(&self.db, CF_LOGS);
        for e in entries {
            let bytes = encode_entry(&e).map_err(|err| StorageIOError::write_logs(&err))?;
            self.volume.appended(bytes.len() as u64);
            batch.put_cf(logs, index_key(e.log_id.index), bytes);
        }
        // Written without fsync: readable now, durable once the flusher has
        // synced the WAL and called back.
        self.db
            .write(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        self.flusher.send(callback).map_err(|_| {
            StorageIOError::write_logs(&std::io::Error::other("log flusher stopped"))
        })?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.delete_range_sync(log_id.index, u64::MAX)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: a crash between the two steps leaves
        // extra entries, never a hole.
        self.put_meta(KEY_LAST_PURGED, &log_id, true)?;
        self.delete_range_sync(0, log_id.index + 1)
    }
}
