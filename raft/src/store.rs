//! The RocksDB instance shared by the log store and the state machine: one
//! column family per table, so a single WAL orders log appends and applies.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Options, DB};
use serde::{Deserialize, Serialize};

use crate::model::command::Visibility;

pub(crate) const CF_LOGS: &str = "logs";
pub(crate) const CF_RAFT_META: &str = "raft_meta";
pub(crate) const CF_SM_META: &str = "sm_meta";
pub(crate) const CF_NAMESPACES: &str = "namespaces";
pub(crate) const CF_REPOS: &str = "repos";
pub(crate) const CF_TAGS: &str = "tags";
pub(crate) const CF_TAGS_BY_DIGEST: &str = "tags_by_digest";
pub(crate) const CF_MANIFESTS: &str = "manifests";
pub(crate) const CF_MANIFEST_BYTES: &str = "manifest_bytes";
pub(crate) const CF_BLOBS: &str = "blobs";
pub(crate) const CF_REPO_BLOBS: &str = "repo_blobs";
pub(crate) const CF_REFERRERS: &str = "referrers";
/// Request id -> (log index, result) of recently applied proposals.
pub(crate) const CF_REQUESTS: &str = "requests";
/// Log index ++ request id, to forget old request ids in order.
pub(crate) const CF_REQUESTS_BY_INDEX: &str = "requests_by_index";
/// Cluster settings (replication factor, ...), by name.
pub(crate) const CF_SETTINGS: &str = "settings";
pub(crate) const KEY_REPLICATION_FACTOR: &str = "replication_factor";
pub(crate) const KEY_REBALANCE_BYTES_PER_SEC: &str = "rebalance_bytes_per_sec";
pub(crate) const KEY_GC_GRACE_SECS: &str = "gc_grace_secs";

/// The settings key of the cluster's rate limits, or of one organisation's.
pub(crate) fn rate_limits_key(organisation: Option<&str>) -> Vec<u8> {
    match organisation {
        None => b"rate_limits".to_vec(),
        Some(org) => format!("rate_limits\0{org}").into_bytes(),
    }
}
pub(crate) const CF_ORGS: &str = "organisations";
/// organisation \0 project -> ProjectRecord
pub(crate) const CF_PROJECTS: &str = "projects";
/// credential id -> CredentialRecord
pub(crate) const CF_CREDENTIALS: &str = "credentials";
/// organisation \0 credential name -> credential id
pub(crate) const CF_CREDENTIALS_BY_ORG: &str = "credentials_by_org";
/// key id -> SigningKeyRecord
pub(crate) const CF_SIGNING_KEYS: &str = "signing_keys";
/// digest \0 repository \0 manifest: manifests that reference a blob
pub(crate) const CF_BLOB_REFS: &str = "blob_refs";
/// digest \0 repository: repositories a blob is linked to
pub(crate) const CF_BLOB_LINKS: &str = "blob_links";
/// namespace -> NamespaceUsage
pub(crate) const CF_NS_USAGE: &str = "namespace_usage";
/// namespace \0 b|m \0 digest -> how many of its repositories hold it
pub(crate) const CF_NS_REFS: &str = "namespace_refs";

/// repository \0 tag -> PushRecord (when the tag was last pushed)
pub(crate) const CF_TAG_ACTIVITY: &str = "tag_activity";
/// repository \0 tag-or-digest -> last pull (ms), flushed in batches
pub(crate) const CF_PULLS: &str = "pulls";
/// namespace \0 run id -> RetentionRun (the audit record)
pub(crate) const CF_RETENTION_RUNS: &str = "retention_runs";
/// run id -> namespace, for runs not finished
pub(crate) const CF_RETENTION_PENDING: &str = "retention_pending";
pub(crate) const KEY_RETENTION_LAST_SCHEDULED: &str = "retention_last_scheduled";
pub(crate) const KEY_TAG_PUSH_SEQ: &str = "tag_push_seq";
pub(crate) const KEY_RETENTION_INTERVAL_SECS: &str = "retention_interval_secs";
/// time ms ++ log index ++ sequence (big-endian) -> AuditEvent (see `audit`)
pub(crate) const CF_AUDIT: &str = "audit";
/// namespace \0 day (big-endian u64, days since the epoch) -> UsageSample:
/// the namespace's usage at the first metering tick of that day (UTC).
pub(crate) const CF_NS_USAGE_DAYS: &str = "namespace_usage_days";
/// console session id -> until (seconds): sessions signed out early
pub(crate) const CF_ENDED_SESSIONS: &str = "ended_sessions";

/// The state machine's tables, in the fixed order used by snapshots and the
/// state digest. `sm_meta` comes first so its keys are installed with the rest.
/// New tables go at the end: a snapshot names tables by position.
pub(crate) const SM_CFS: [&str; 29] = [
    CF_SM_META,
    CF_NAMESPACES,
    CF_REPOS,
    CF_TAGS,
    CF_TAGS_BY_DIGEST,
    CF_MANIFESTS,
    CF_MANIFEST_BYTES,
    CF_BLOBS,
    CF_REPO_BLOBS,
    CF_REFERRERS,
    CF_REQUESTS,
    CF_REQUESTS_BY_INDEX,
    CF_SETTINGS,
    CF_ORGS,
    CF_PROJECTS,
    CF_CREDENTIALS,
    CF_CREDENTIALS_BY_ORG,
    CF_SIGNING_KEYS,
    CF_NS_USAGE,
    CF_NS_REFS,
    CF_BLOB_REFS,
    CF_BLOB_LINKS,
    CF_TAG_ACTIVITY,
    CF_PULLS,
    CF_RETENTION_RUNS,
    CF_RETENTION_PENDING,
    CF_AUDIT,
    CF_NS_USAGE_DAYS,
    CF_ENDED_SESSIONS,
];

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("finishing an interrupted snapshot install: {0}")]
    Snapshot(#[from] crate::consensus::snapshot::SnapshotError),
    #[error("opening RocksDB at {path}: {source}")]
    RocksDb {
        path: String,
        source: rocksdb::Error,
    },
}

/// How a node's metadata store is sized. The defaults fit the StatefulSet's
/// memory request (256 MiB) with room for the rest of the process.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// RocksDB's memory, all column families together: half for one block
    /// cache (data, index and filter blocks), half for the memtables, so
    /// both stay bounded however large the state grows.
    pub memory_bytes: usize,
    /// How many log entries a request id is remembered for (retried
    /// proposals inside this window apply once).
    pub request_window: u64,
    /// This node's id: it writes the log line of each audit event it
    /// proposed (0: every event, as when no node proposes).
    pub node_id: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            memory_bytes: DEFAULT_MEMORY_BYTES,
            request_window: crate::state_machine::REQUEST_WINDOW,
            node_id: 0,
        }
    }
}

pub const DEFAULT_MEMORY_BYTES: usize = 128 << 20;
/// Below this, memtables would flush every few hundred writes.
pub const MIN_MEMORY_BYTES: usize = 16 << 20;

pub(crate) fn open_db(path: &Path, options: &StoreOptions) -> Result<Arc<DB>, OpenError> {
    let memory = options.memory_bytes.max(MIN_MEMORY_BYTES);
    // Half for one block cache shared by every table (data, index and
    // filter blocks), half for all memtables together. RocksDB's defaults
    // give each of the ~30 column families its own cache and up to 2 x 64
    // MiB of memtables, and keep every SST's index and filter blocks
    // outside any cache, so memory grew with the state. (Memtables are not
    // charged to the cache: their dummy entries crowd the cache's shards,
    // and a hot manifest's block was then read and decompressed per GET.)
    let cache = block_cache(memory / 2);
    let buffers = rocksdb::WriteBufferManager::new_write_buffer_manager(memory / 2, false);
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // Metadata is small; keep background work modest on 2-core machines.
    opts.increase_parallelism(2);
    opts.set_write_buffer_manager(&buffers);
    // A table written rarely (settings, organisations) would otherwise keep
    // every WAL file since its last write alive: flush it once the WALs
    // pass this, so the WAL on disk stays bounded.
    opts.set_max_total_wal_size(64 << 20);
    let cfs = [CF_LOGS, CF_RAFT_META]
        .into_iter()
        .chain(SM_CFS)
        .map(|name| ColumnFamilyDescriptor::new(name, table_options(name, &cache, memory)));
    let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|source| OpenError::RocksDb {
        path: path.display().to_string(),
        source,
    })?;
    Ok(Arc::new(db))
}

/// One LRU cache for every table, in few shards. RocksDB's default splits
/// a 64 MiB cache into 64 shards of 1 MiB: a block larger than its shard
/// is evicted as soon as it is used, and at a million manifests a table
/// file's index (2 MiB) and filter (1 MiB) were larger, so every point
/// lookup read and decompressed them again (manifest GET fell from 16,500
/// to 2,000 req/s, and each apply paid the same).
fn block_cache(bytes: usize) -> rocksdb::Cache {
    let mut o = rocksdb::LruCacheOptions::default();
    o.set_capacity(bytes);
    o.set_num_shard_bits(CACHE_SHARD_BITS);
    rocksdb::Cache::new_lru_cache_opts(&o)
}

/// 16 shards: a few threads touch the cache at once here (the apply task,
/// a handful of request workers, two compaction threads).
const CACHE_SHARD_BITS: i32 = 4;

/// L0 files that start a compaction in the state tables (RocksDB: 4).
const L0_COMPACTION_TRIGGER: i32 = 12;

/// Per-table options over the shared cache.
fn table_options(name: &str, cache: &rocksdb::Cache, memory: usize) -> Options {
    let mut blocks = rocksdb::BlockBasedOptions::default();
    blocks.set_block_cache(cache);
    blocks.set_cache_index_and_filter_blocks(true);
    blocks.set_cache_index_and_filter_blocks_with_high_priority(true);
    blocks.set_pin_l0_filter_and_index_blocks_in_cache(true);
    // Index and filter in 4 KiB partitions under a small pinned top level:
    // a lookup loads the partitions it needs, not a whole file's index and
    // filter (megabytes for a 64 MiB file), so both stay cacheable however
    // large the files grow.
    blocks.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
    blocks.set_partition_filters(true);
    blocks.set_metadata_block_size(4096);
    blocks.set_pin_top_level_index_and_filter(true);
    // Most reads are point lookups (does this tag, manifest, blob link,
    // request id exist?): a bloom filter answers most misses from memory.
    blocks.set_bloom_filter(10.0, false);
    blocks.set_format_version(6);
    let mut o = Options::default();
    o.set_block_based_table_factory(&blocks);
    // LZ4 at every level: zstd at the bottom saved little disk and took
    // 15% of a busy node's CPU in compactions.
    o.set_compression_type(rocksdb::DBCompressionType::Lz4);
    // Memtables: the write buffer manager flushes the largest when they
    // reach its budget together; the log takes the most bytes.
    let buffer = if name == CF_LOGS {
        memory / 8
    } else {
        memory / 16
    };
    o.set_write_buffer_size(buffer.max(1 << 20));
    if name != CF_LOGS {
        // Manifests, their bytes and blob references are keyed by digest,
        // so they arrive in random key order: every L0 file overlaps the
        // whole bottom level, and each L0 compaction rewrites all of it.
        // Compacting 12 files at a time instead of 4 cut compaction output
        // for a million manifests from 6.6 to 1.9 GiB (3.6x the flushed
        // bytes instead of 13x for the largest table). L0's filters stay
        // pinned, so a lookup over the extra files costs memory probes.
        o.set_level_zero_file_num_compaction_trigger(L0_COMPACTION_TRIGGER);
        o.set_level_zero_slowdown_writes_trigger(L0_COMPACTION_TRIGGER * 3);
        o.set_level_zero_stop_writes_trigger(L0_COMPACTION_TRIGGER * 5);
    }
    o.set_max_write_buffer_number(2);
    o.set_level_compaction_dynamic_level_bytes(true);
    // Files dense with deletes (pruned request ids, moved tags, purged log
    // entries) are compacted soon, so tombstones do not pile up in front
    // of scans and on disk.
    o.add_compact_on_deletion_collector_factory(10_000, 4_000, 0.4);
    o
}

pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    db.cf_handle(name)
        .expect("column family is created when the database is opened")
}

/// `a \0 b`: NUL never occurs in names, tags or digests, and sorts before
/// every other byte so a repository's keys are contiguous and ordered.
pub(crate) fn key2(a: &str, b: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + b.len() + 1);
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(b.as_bytes());
    k
}

pub(crate) fn key3(a: &str, b: &str, c: &str) -> Vec<u8> {
    let mut k = key2(a, b);
    k.push(0);
    k.extend_from_slice(c.as_bytes());
    k
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceRecord {
    pub name: String,
    pub visibility: Visibility,
    pub created_at: u64,
    /// None: managed by the bootstrap admin only.
    #[serde(default)]
    pub organisation: Option<String>,
    #[serde(default)]
    pub project: Option<String>,
    /// Tags matching these patterns (`*`, `?`) never move once set.
    #[serde(default)]
    pub immutable_tags: Vec<String>,
    /// Pushes that would store more than this many bytes are refused.
    #[serde(default)]
    pub quota_bytes: Option<u64>,
    #[serde(default)]
    pub retention: Option<crate::model::retention::RetentionPolicy>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepositoryRecord {
    pub name: String,
    pub created_at: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    pub size: u64,
    pub created_at: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRecord {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub pushed_at: u64,
    pub blobs: Vec<String>,
    pub manifests: Vec<String>,
    pub subject: Option<String>,
    pub artifact_type: Option<String>,
    pub annotations: Option<String>,
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialise")
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rocksdb::perf::{set_perf_stats, PerfContext, PerfMetric, PerfStatsLevel};

    /// A point lookup in a large table file reads its data block and at most
    /// a few metadata blocks from the file once, then finds them in the
    /// cache. At a million manifests a file's index (2 MiB) and filter
    /// (1 MiB) outgrew a cache shard and were read and decompressed again by
    /// every lookup. This builds a file whose index is that large (one data
    /// block per 4 KiB value, and long keys that differ only at their end,
    /// so every index entry is a kilobyte) and counts the blocks repeated
    /// lookups read from it.
    #[test]
    fn lookups_in_a_large_table_file_are_served_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path(), &StoreOptions::default()).unwrap();
        let table = cf(&db, CF_MANIFEST_BYTES);
        let prefix = "r".repeat(1000);
        let key = |i: u32| format!("{prefix}{:08x}", i.wrapping_mul(2_654_435_761));
        const KEYS: u32 = 2_000;
        for first in (0..KEYS).step_by(100) {
            let mut batch = rocksdb::WriteBatch::default();
            for i in first..first + 100 {
                batch.put_cf(table, key(i), vec![i as u8; 4096]);
            }
            db.write(batch).unwrap();
        }
        // Into one bottom-level file, as compaction leaves a large table.
        db.compact_range_cf(table, None::<&[u8]>, None::<&[u8]>);
        let levels: Vec<i32> = db
            .live_files()
            .unwrap()
            .iter()
            .filter(|f| f.column_family_name == CF_MANIFEST_BYTES)
            .map(|f| f.level)
            .collect();
        assert!(
            !levels.is_empty() && levels.iter().all(|&l| l > 0),
            "the table is out of L0, where metadata is pinned: levels {levels:?}"
        );

        set_perf_stats(PerfStatsLevel::EnableCount);
        let mut ctx = PerfContext::default();
        // Ten present and ten absent keys, looked up `rounds` times.
        let lookups = |rounds: usize| {
            for round in 0..rounds {
                for i in 0..10 {
                    assert!(db.get_cf(table, key(i)).unwrap().is_some(), "round {round}");
                    let missing = format!("{prefix}missing{i}");
                    assert!(db.get_cf(table, missing).unwrap().is_none());
                }
            }
        };
        // Warm up: the first lookups load what they need.
        lookups(1);
        ctx.reset();
        lookups(200);
        let read = ctx.metric(PerfMetric::BlockReadCount);
        set_perf_stats(PerfStatsLevel::Disable);
        assert!(
            read <= 20,
            "4,000 repeated lookups read {read} blocks from the file (the index or \
             filter does not stay in the cache)"
        );
    }
}
