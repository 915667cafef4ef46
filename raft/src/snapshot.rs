//! Snapshots: every state-machine table, framed as `[table u8][klen u32][key]
//! [vlen u32][value]` records, taken from a RocksDB snapshot so the image is
//! consistent while applies continue. The current snapshot is kept on disk.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rocksdb::{IteratorMode, WriteBatch, WriteOptions, DB};

use crate::state_machine::{KEY_LAST_APPLIED, KEY_MEMBERSHIP};
use crate::store::{cf, decode, CF_SM_META, SM_CFS};
use crate::types::{LogId, Snapshot, SnapshotMeta, StoredMembership};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("rocksdb: {0}")]
    RocksDb(#[from] rocksdb::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("snapshot is malformed: {0}")]
    Malformed(&'static str),
    #[error("record: {0}")]
    Json(#[from] serde_json::Error),
}

pub struct Builder {
    db: Arc<DB>,
    dir: PathBuf,
}

impl Builder {
    pub(crate) fn new(db: Arc<DB>, dir: PathBuf) -> Self {
        Builder { db, dir }
    }

    pub(crate) fn build(&self) -> Result<Snapshot, SnapshotError> {
        // The state machine writes without fsync; make what this snapshot
        // covers durable before the log behind it may be purged.
        self.db.flush_wal(true)?;
        let snap = self.db.snapshot();
        let meta_cf = cf(&self.db, CF_SM_META);
        let last_applied: Option<LogId> = match snap.get_cf(meta_cf, KEY_LAST_APPLIED)? {
            Some(b) => decode(&b)?,
            None => None,
        };
        let membership: StoredMembership = match snap.get_cf(meta_cf, KEY_MEMBERSHIP)? {
            Some(b) => decode(&b)?,
            None => StoredMembership::default(),
        };
        let mut data = Vec::new();
        for (i, table) in SM_CFS.iter().enumerate() {
            for item in snap.iterator_cf(cf(&self.db, table), IteratorMode::Start) {
                let (k, v) = item?;
                write_record(&mut data, i as u8, &k, &v);
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id: format!("{}-{}", last_applied.map(|l| l.index).unwrap_or(0), now),
        };
        save(&self.dir, &meta, &data)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

fn write_record(out: &mut Vec<u8>, table: u8, k: &[u8], v: &[u8]) {
    out.push(table);
    out.extend_from_slice(&(k.len() as u32).to_be_bytes());
    out.extend_from_slice(k);
    out.extend_from_slice(&(v.len() as u32).to_be_bytes());
    out.extend_from_slice(v);
}

fn take<'a>(data: &mut &'a [u8], n: usize) -> Result<&'a [u8], SnapshotError> {
    if data.len() < n {
        return Err(SnapshotError::Malformed("truncated record"));
    }
    let (head, rest) = data.split_at(n);
    *data = rest;
    Ok(head)
}

fn take_len(data: &mut &[u8]) -> Result<usize, SnapshotError> {
    let b = take(data, 4)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// Replace the whole state machine with the snapshot's tables, atomically.
pub(crate) fn install(db: &DB, mut data: &[u8]) -> Result<(), SnapshotError> {
    let mut batch = WriteBatch::default();
    for table in SM_CFS {
        let handle = cf(db, table);
        for item in db.iterator_cf(handle, IteratorMode::Start) {
            let (k, _) = item?;
            batch.delete_cf(handle, k);
        }
    }
    while !data.is_empty() {
        let t = take(&mut data, 1)?[0] as usize;
        let table = SM_CFS
            .get(t)
            .ok_or(SnapshotError::Malformed("unknown table"))?;
        let klen = take_len(&mut data)?;
        let k = take(&mut data, klen)?;
        let vlen = take_len(&mut data)?;
        let v = take(&mut data, vlen)?;
        batch.put_cf(cf(db, table), k, v);
    }
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    db.write_opt(batch, &wo)?;
    Ok(())
}

fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join("snapshot.bin")
}

/// Persist a snapshot as one file, `[meta_len u32][meta json][data]`, written
/// to a temporary name and renamed, so meta and data never disagree.
pub(crate) fn save(dir: &Path, meta: &SnapshotMeta, data: &[u8]) -> Result<(), SnapshotError> {
    std::fs::create_dir_all(dir)?;
    let meta_json = serde_json::to_vec(meta)?;
    let mut file = Vec::with_capacity(4 + meta_json.len() + data.len());
    file.extend_from_slice(&(meta_json.len() as u32).to_be_bytes());
    file.extend_from_slice(&meta_json);
    file.extend_from_slice(data);
    write_atomic(&snapshot_path(dir), &file)?;
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), std::io::Error> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

pub(crate) fn load(dir: &Path) -> Result<Option<Snapshot>, SnapshotError> {
    let file = match std::fs::read(snapshot_path(dir)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut rest = file.as_slice();
    let meta_len = take_len(&mut rest)?;
    let meta: SnapshotMeta = serde_json::from_slice(take(&mut rest, meta_len)?)?;
    Ok(Some(Snapshot {
        meta,
        snapshot: Box::new(Cursor::new(rest.to_vec())),
    }))
}
