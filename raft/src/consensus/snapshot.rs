//! Snapshots: every state-machine table, framed as `[table u8][klen u32][key]
//! [vlen u32][value]` records, taken from a RocksDB snapshot so the image is
//! consistent while applies continue.
//!
//! Snapshots live in files and are streamed, never held whole in memory:
//! built record by record into `data-<index>-<n>`, sent and received by
//! openraft in chunks straight from and into files, and installed by reading
//! the file in bounded batches. `current.json` names the current snapshot's
//! meta and data file (written atomically; it is the commit point).
//!
//! Installing replaces the state in several RocksDB writes, so it is not
//! atomic by itself: a durable marker in `raft_meta` names the snapshot
//! being installed before the state is touched, and opening the store
//! finishes an install that a crash interrupted (`resume_install`).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rocksdb::{IteratorMode, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};

use crate::consensus::snapshot_policy::LogVolume;
use crate::consensus::types::{LogId, Snapshot, SnapshotMeta, StoredMembership};
use crate::state_machine::{KEY_LAST_APPLIED, KEY_MEMBERSHIP};
use crate::store::{cf, decode, CF_RAFT_META, CF_SM_META, SM_CFS};

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

/// Key in `raft_meta` naming the snapshot whose install is under way.
const KEY_INSTALLING: &[u8] = b"installing_snapshot";
const CURRENT: &str = "current.json";
/// Bytes of records per RocksDB write while installing.
const BATCH_BYTES: usize = 4 << 20;
/// Memtables are flushed to SST files after this many bytes, so an install
/// holds at most this much of the state in memory.
const FLUSH_BYTES: usize = 32 << 20;
/// A snapshot being written is synced every this many bytes: small enough
/// that a log fsync queued behind one waits for little.
const SYNC_BYTES: usize = 8 << 20;
/// No key or value in the state is near this; a larger length is corruption.
const MAX_FIELD: usize = 64 << 20;

/// The current snapshot: its meta and the data file (in the snapshot dir).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Current {
    meta: SnapshotMeta,
    data: String,
}

/// A fresh file name for the data of a snapshot up to `index`; the index
/// comes first so older snapshots can be recognised and removed.
fn data_name(index: u64) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "data-{index:020}-{nanos}-{}",
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

fn index_of(name: &str) -> Option<u64> {
    name.strip_prefix("data-")?.get(..20)?.parse().ok()
}

pub struct Builder {
    db: Arc<DB>,
    dir: PathBuf,
    volume: Arc<LogVolume>,
}

impl Builder {
    pub(crate) fn new(db: Arc<DB>, dir: PathBuf, volume: Arc<LogVolume>) -> Self {
        Builder { db, dir, volume }
    }

    pub(crate) async fn build(&self) -> Result<Snapshot, SnapshotError> {
        let started = std::time::Instant::now();
        let mark = self.volume.mark();
        // Writing out the whole state takes seconds of a core and gigabytes
        // of writes at scale, on every node at about the same time: on a
        // thread of its own that yields CPU and disk to the requests.
        let (db, dir) = (self.db.clone(), self.dir.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("tcr-snapshot".into())
            .spawn(move || {
                background_priority();
                let _ = tx.send(write_out(&db, &dir));
            })?;
        let (current, bytes) = rx
            .await
            .map_err(|_| SnapshotError::Io(std::io::Error::other("snapshot thread died")))??;
        // Entries appended while the file was written count towards the next.
        self.volume.snapshot_taken(mark, bytes);
        tracing::info!(
            index = current.meta.last_log_id.map_or(0, |l| l.index),
            bytes,
            seconds = started.elapsed().as_secs_f64(),
            "snapshot built"
        );
        open_current(&self.dir, current).await
    }
}

/// Lower the calling thread's CPU and I/O priority (Linux keeps both per
/// thread). Best effort: a refusal leaves the snapshot at normal priority.
fn background_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread; no memory is shared.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        // Nice 10 weighs a tenth of a request thread when CPU is short, and
        // still finishes a snapshot while the node serves a steady load.
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
        // Best-effort class, lowest level: the log's fsyncs go first where
        // the disk scheduler honours levels (bfq); never starved (not idle).
        const IOPRIO_WHO_PROCESS: libc::c_int = 1;
        const IOPRIO_BEST_EFFORT_LOWEST: libc::c_int = (2 << 13) | 7;
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0,
            IOPRIO_BEST_EFFORT_LOWEST,
        );
    }
}

/// Write every state table, as of one RocksDB snapshot, to a new data file
/// and make it the current snapshot; returns it and its size.
fn write_out(db: &DB, dir: &Path) -> Result<(Current, u64), SnapshotError> {
    // The state machine writes without fsync; make what this snapshot
    // covers durable before the log behind it may be purged.
    db.flush_wal(true)?;
    let snap = db.snapshot();
    let meta_cf = cf(db, CF_SM_META);
    let last_applied: Option<LogId> = match snap.get_cf(meta_cf, KEY_LAST_APPLIED)? {
        Some(b) => decode(&b)?,
        None => None,
    };
    let membership: StoredMembership = match snap.get_cf(meta_cf, KEY_MEMBERSHIP)? {
        Some(b) => decode(&b)?,
        None => StoredMembership::default(),
    };
    let index = last_applied.map(|l| l.index).unwrap_or(0);
    let name = data_name(index);
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
    let mut unsynced = 0usize;
    for (i, table) in SM_CFS.iter().enumerate() {
        // A full scan: keep it from evicting the working set from the cache.
        let mut opts = rocksdb::ReadOptions::default();
        opts.fill_cache(false);
        opts.set_readahead_size(2 << 20);
        for item in snap.iterator_cf_opt(cf(db, table), opts, IteratorMode::Start) {
            let (k, v) = item?;
            write_record(&mut out, i as u8, &k, &v)?;
            unsynced += 9 + k.len() + v.len();
            // Hand the file to the disk as it grows: one fsync of a
            // gigabyte at the end stalls the log's fsyncs behind it.
            if unsynced >= SYNC_BYTES {
                out.flush()?;
                out.get_ref().sync_data()?;
                unsynced = 0;
            }
        }
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let bytes = file.metadata()?.len();
    drop(file);
    std::fs::rename(&tmp, dir.join(&name))?;
    let meta = SnapshotMeta {
        last_log_id: last_applied,
        last_membership: membership,
        snapshot_id: name.trim_start_matches("data-").to_string(),
    };
    let current = Current { meta, data: name };
    set_current(dir, &current)?;
    Ok((current, bytes))
}

fn write_record(out: &mut impl Write, table: u8, k: &[u8], v: &[u8]) -> std::io::Result<()> {
    out.write_all(&[table])?;
    out.write_all(&(k.len() as u32).to_be_bytes())?;
    out.write_all(k)?;
    out.write_all(&(v.len() as u32).to_be_bytes())?;
    out.write_all(v)
}

/// One record, or `None` at the end of the file.
/// A snapshot record: table index, key, value.
type Record = (usize, Vec<u8>, Vec<u8>);

fn read_record(r: &mut impl Read) -> Result<Option<Record>, SnapshotError> {
    let mut table = [0u8; 1];
    if r.read(&mut table)? == 0 {
        return Ok(None);
    }
    let mut field = || -> Result<Vec<u8>, SnapshotError> {
        let mut len = [0u8; 4];
        r.read_exact(&mut len)
            .map_err(|_| SnapshotError::Malformed("truncated record"))?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FIELD {
            return Err(SnapshotError::Malformed("field length out of range"));
        }
        let mut buf = vec![0u8; len];
        r.read_exact(&mut buf)
            .map_err(|_| SnapshotError::Malformed("truncated record"))?;
        Ok(buf)
    };
    let k = field()?;
    let v = field()?;
    Ok(Some((table[0] as usize, k, v)))
}

/// Make `current` the current snapshot (atomically), then remove the data
/// of older snapshots. A file being sent stays readable: it is open.
fn set_current(dir: &Path, current: &Current) -> Result<(), SnapshotError> {
    write_atomic(&dir.join(CURRENT), &serde_json::to_vec(current)?)?;
    let index = index_of(&current.data).unwrap_or(0);
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let older = index_of(&name).is_some_and(|i| i < index) || name.ends_with(".tmp");
        if older && name != current.data {
            let _ = std::fs::remove_file(dir.join(&name));
        }
    }
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), std::io::Error> {
    let tmp = path.with_extension("json.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

async fn open_current(dir: &Path, current: Current) -> Result<Snapshot, SnapshotError> {
    let file = tokio::fs::File::open(dir.join(&current.data)).await?;
    Ok(Snapshot {
        meta: current.meta,
        snapshot: Box::new(file),
    })
}

pub(crate) async fn load(dir: &Path) -> Result<Option<Snapshot>, SnapshotError> {
    match read_current(dir)? {
        Some(current) => open_current(dir, current).await.map(Some),
        None => Ok(None),
    }
}

fn read_current(dir: &Path) -> Result<Option<Current>, SnapshotError> {
    match std::fs::read(dir.join(CURRENT)) {
        Ok(b) => Ok(Some(serde_json::from_slice(&b)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The size of the current snapshot's data file (0: none).
pub(crate) fn current_bytes(dir: &Path) -> Result<u64, SnapshotError> {
    Ok(read_current(dir)?
        .and_then(|c| std::fs::metadata(dir.join(c.data)).ok())
        .map_or(0, |m| m.len()))
}

/// A new file to receive a snapshot into; files of abandoned transfers go.
pub(crate) async fn incoming(dir: &Path) -> Result<(PathBuf, tokio::fs::File), SnapshotError> {
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if name.to_string_lossy().starts_with("incoming-") {
            let _ = std::fs::remove_file(dir.join(name));
        }
    }
    let path = dir.join(format!("incoming-{}", data_name(0)));
    let file = tokio::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .await?;
    Ok((path, file))
}

/// Install the snapshot received into `received` (a file in `dir`): it
/// becomes the current snapshot and replaces the state machine's tables.
pub(crate) fn install(
    db: &DB,
    dir: &Path,
    meta: &SnapshotMeta,
    received: &Path,
) -> Result<(), SnapshotError> {
    let index = meta.last_log_id.map(|l| l.index).unwrap_or(0);
    let current = Current {
        meta: meta.clone(),
        data: data_name(index),
    };
    File::open(received)?.sync_all()?;
    std::fs::rename(received, dir.join(&current.data))?;
    File::open(dir)?.sync_all()?;
    // Durable before the state is touched: from here a crash resumes.
    let mut sync = WriteOptions::default();
    sync.set_sync(true);
    db.put_cf_opt(
        cf(db, CF_RAFT_META),
        KEY_INSTALLING,
        serde_json::to_vec(&current)?,
        &sync,
    )?;
    finish_install(db, dir, &current, None)
}

/// Finish an install that a crash interrupted; called when the store opens.
pub(crate) fn resume_install(db: &DB, dir: &Path) -> Result<(), SnapshotError> {
    let Some(marker) = db.get_cf(cf(db, CF_RAFT_META), KEY_INSTALLING)? else {
        return Ok(());
    };
    let current: Current = serde_json::from_slice(&marker)?;
    tracing::warn!(snapshot = %current.meta.snapshot_id, "finishing a snapshot install interrupted by a crash");
    finish_install(db, dir, &current, None)
}

/// Replace the tables with the records of `current`'s data file, in bounded
/// batches, then make it the current snapshot and clear the marker.
/// `fail_after` (tests) stops after that many batches, as a crash would.
fn finish_install(
    db: &DB,
    dir: &Path,
    current: &Current,
    fail_after: Option<usize>,
) -> Result<(), SnapshotError> {
    clear_tables(db)?;
    let mut reader = BufReader::with_capacity(1 << 20, File::open(dir.join(&current.data))?);
    let mut batch = WriteBatch::default();
    let (mut batches, mut unflushed) = (0usize, 0usize);
    while let Some((t, k, v)) = read_record(&mut reader)? {
        let table = SM_CFS
            .get(t)
            .ok_or(SnapshotError::Malformed("unknown table"))?;
        batch.put_cf(cf(db, table), &k, &v);
        if batch.size_in_bytes() >= BATCH_BYTES {
            unflushed += batch.size_in_bytes();
            db.write(std::mem::take(&mut batch))?;
            batches += 1;
            if fail_after == Some(batches) {
                return Err(SnapshotError::Malformed("install stopped (test)"));
            }
            if unflushed >= FLUSH_BYTES {
                flush_tables(db)?;
                unflushed = 0;
            }
        }
    }
    db.write(batch)?;
    flush_tables(db)?;
    set_current(dir, current)?;
    let mut sync = WriteOptions::default();
    sync.set_sync(true);
    db.delete_cf_opt(cf(db, CF_RAFT_META), KEY_INSTALLING, &sync)?;
    Ok(())
}

/// Delete every key of the state machine's tables (range deletes: no need
/// to read the old state).
fn clear_tables(db: &DB) -> Result<(), SnapshotError> {
    let mut batch = WriteBatch::default();
    for table in SM_CFS {
        let handle = cf(db, table);
        let first = db.iterator_cf(handle, IteratorMode::Start).next();
        let last = db.iterator_cf(handle, IteratorMode::End).next();
        if let (Some(first), Some(last)) = (first, last) {
            let (first, last) = (first?.0, last?.0);
            batch.delete_range_cf(handle, &first, &last);
            batch.delete_cf(handle, &last);
        }
    }
    db.write(batch)?;
    Ok(())
}

fn flush_tables(db: &DB) -> Result<(), SnapshotError> {
    let handles: Vec<_> = SM_CFS.iter().map(|t| cf(db, t)).collect();
    db.flush_cfs_opt(&handles, &rocksdb::FlushOptions::default())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::storage::RaftStateMachine;
    use openraft::{CommittedLeaderId, EntryPayload, RaftSnapshotBuilder};

    use crate::consensus::types::Entry;
    use crate::model::command::{Command, Visibility};

    fn entries(n: u64) -> Vec<Entry> {
        (1..=n)
            .map(|i| Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
                payload: EntryPayload::Normal(
                    Command::CreateNamespace {
                        name: format!("ns{i:06}-{}", "x".repeat(200)),
                        visibility: Visibility::Private,
                        created_at: i,
                        organisation: None,
                        project: None,
                    }
                    .into(),
                ),
            })
            .collect()
    }

    /// A crash in the middle of an install (after some batches are in the
    /// tables) is finished when the store opens again: the state is the
    /// snapshot's, not a mix of old and new.
    #[tokio::test]
    async fn an_interrupted_install_is_finished_on_open() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut source = crate::open(d1.path()).unwrap();
        source.state_machine.apply(entries(60_000)).await.unwrap();
        let want = source.reader.state_digest().unwrap();
        let snap = source
            .state_machine
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let data = d1
            .path()
            .join("snapshots")
            .join(format!("data-{}", snap.meta.snapshot_id));

        let dir = d2.path().join("snapshots");
        {
            let mut target = crate::open(d2.path()).unwrap();
            // State of its own that the install must replace.
            target.state_machine.apply(entries(10)).await.unwrap();
            let before = target.reader.state_digest().unwrap();
            std::fs::create_dir_all(&dir).unwrap();
            let current = Current {
                meta: snap.meta.clone(),
                data: data_name(60_000),
            };
            std::fs::copy(&data, dir.join(&current.data)).unwrap();
            let db = target.reader.db();
            db.put_cf(
                cf(db, CF_RAFT_META),
                KEY_INSTALLING,
                serde_json::to_vec(&current).unwrap(),
            )
            .unwrap();
            let crashed = finish_install(db, &dir, &current, Some(1));
            assert!(crashed.is_err());
            let partial = target.reader.state_digest().unwrap();
            assert_ne!(partial, before, "the first batch reached the tables");
            assert_ne!(partial, want, "the install stopped part way");
        }
        let mut reopened = crate::open(d2.path()).unwrap();
        assert_eq!(reopened.reader.state_digest().unwrap(), want);
        let (applied, _) = reopened.state_machine.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(60_000));
        let current = reopened
            .state_machine
            .get_current_snapshot()
            .await
            .unwrap()
            .expect("the installed snapshot is current");
        assert_eq!(current.meta.last_log_id, snap.meta.last_log_id);
    }
}
