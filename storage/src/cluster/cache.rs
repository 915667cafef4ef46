//! A verified cache of hot blobs on the nodes that do not own them.
//!
//! A pull through a non-owner streams the blob from an owner. With the
//! cache on, the same bytes also go into a copy under `<data>/cache/`,
//! checked against the digest (SHA-256) and indexed like any other copy
//! before it is kept, so the next pull of that blob through this node is
//! local and chunk-checked. Pulls of a blob that is being fetched wait for
//! that one transfer instead of starting their own (single flight): N
//! pulls through M non-owners cost the owners M transfers, not N. A range
//! read that misses is served from an owner and starts the same whole
//! fetch in the background, so ranges are local from then on too.
//!
//! The cache is bounded (`--cache-bytes`; least recently used out first)
//! and is never a replica: it is another directory than the blob store, so
//! placement, repair, rebalance, inventories and peer reads never see it.
//! Each storage pass drops cached blobs that are no longer committed (GC)
//! and, while the disk is under its reserve, cached blobs before anything
//! else.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use serde::Serialize;
use tokio::sync::watch;

use super::{ClusterView, ViewError};
use crate::disk_space::{DiskReserve, Reserve};
use crate::integrity::ChunkIndex;
use crate::{BlobStore, Digest, UploadError, Uploads};

/// A waiter gives up on a fill that has not moved for this long and
/// fetches the blob itself.
const STALLED_FILL: Duration = Duration::from_secs(15);

/// What `tcr storage status` shows of a node's cache.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CacheReport {
    pub blobs: u64,
    pub bytes: u64,
    pub limit: u64,
    /// Totals since the node started: reads served from the cache, blobs
    /// fetched into it, blobs evicted or dropped.
    pub hits: u64,
    pub fills: u64,
    pub evicted: u64,
}

#[derive(Clone)]
pub struct BlobCache {
    inner: Arc<Inner>,
}

struct Inner {
    store: BlobStore,
    uploads: Uploads,
    limit: u64,
    reserve: Option<DiskReserve>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    tick: u64,
    /// Cached blobs: size and last use.
    entries: HashMap<Digest, (u64, u64)>,
    bytes: u64,
    /// Fills in progress: bytes so far, and the outcome once known.
    filling: HashMap<Digest, watch::Receiver<Progress>>,
    hits: u64,
    fills: u64,
    evicted: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Progress {
    bytes: u64,
    done: Option<bool>,
}

/// What a whole-blob read that missed the cache does.
pub enum Slot {
    /// Fetch it and tee the bytes into the cache (`Filler::tee`).
    Fill(Filler),
    /// Another read is fetching it: wait for that (`Wait::done`).
    Wait(Wait),
}

impl BlobCache {
    /// The cache under `root`, holding at most `limit` bytes. Fills left
    /// over from before a restart are dropped; cached blobs are kept, the
    /// oldest files counted least recently used.
    pub fn open(root: &Path, limit: u64, reserve: Option<Reserve>) -> io::Result<BlobCache> {
        let store = BlobStore::open(root)?;
        let _ = std::fs::remove_dir_all(root.join("uploads"));
        let mut uploads = Uploads::open(store.clone())?;
        if let Some(r) = reserve {
            uploads = uploads.with_reserve(DiskReserve::new(root, r));
        }
        let mut found: Vec<(std::time::SystemTime, Digest, u64)> = Vec::new();
        let base = root.join("blobs").join("sha256");
        for shard in std::fs::read_dir(&base)?.flatten() {
            let Ok(files) = std::fs::read_dir(shard.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = format!("sha256:{}", f.file_name().to_string_lossy());
                let (Ok(d), Ok(m)) = (name.parse::<Digest>(), f.metadata()) else {
                    continue;
                };
                if m.is_file() {
                    found.push((m.modified()?, d, m.len()));
                }
            }
        }
        found.sort();
        let mut state = State::default();
        for (_, d, size) in found {
            state.tick += 1;
            state.bytes += size;
            state.entries.insert(d, (size, state.tick));
        }
        let cache = BlobCache {
            inner: Arc::new(Inner {
                store,
                uploads,
                limit,
                reserve: reserve.map(|r| DiskReserve::new(root, r)),
                state: Mutex::new(state),
            }),
        };
        cache.evict_to(limit);
        Ok(cache)
    }

    pub fn report(&self) -> CacheReport {
        let s = self.inner.state.lock().expect("cache lock");
        CacheReport {
            blobs: s.entries.len() as u64,
            bytes: s.bytes,
            limit: self.inner.limit,
            hits: s.hits,
            fills: s.fills,
            evicted: s.evicted,
        }
    }

    /// The size of `d` if the cache holds it.
    pub fn size_of(&self, d: &Digest) -> Option<u64> {
        let st = self.inner.state.lock().expect("cache lock");
        st.entries.get(d).map(|(size, _)| *size)
    }

    /// `len` bytes of `d` from `start` if the cache holds it, every chunk
    /// checked against its index (a rotten cached copy is cut off and
    /// dropped, like any copy).
    pub async fn read(
        &self,
        d: &Digest,
        start: u64,
        len: u64,
    ) -> Option<BoxStream<'static, io::Result<Bytes>>> {
        if !self
            .inner
            .state
            .lock()
            .expect("cache lock")
            .entries
            .contains_key(d)
        {
            return None;
        }
        match self.inner.store.read_stream_checked(d, start, len).await {
            Ok(s) => {
                let mut st = self.inner.state.lock().expect("cache lock");
                st.tick += 1;
                let tick = st.tick;
                if let Some(e) = st.entries.get_mut(d) {
                    e.1 = tick;
                }
                st.hits += 1;
                Some(s.boxed())
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(digest = %d, "reading the cached copy: {e}");
                }
                self.forget(d);
                None
            }
        }
    }

    /// This node became an owner of `d`: install the cached copy in the
    /// blob store instead of pulling it from a peer. The bytes go in like
    /// a repair pull's (every chunk checked on the way out of the cache,
    /// SHA-256 against the digest on the way in, fsynced before they
    /// appear), so the cache is trusted no more than a peer. Whether the
    /// store now holds the blob; the cached copy leaves the cache either
    /// way unless the store could not take it (a full disk, say).
    pub async fn promote(&self, d: &Digest, size: u64, into: &Uploads) -> bool {
        if self.size_of(d) != Some(size) {
            return false;
        }
        let read = match self.inner.store.read_stream_checked(d, 0, size).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(digest = %d, "reading the cached copy to keep it: {e}");
                self.drop_blob(d).await;
                return false;
            }
        };
        let id = format!("promote-{}", uuid::Uuid::new_v4().simple());
        match into.receive(&id, Box::pin(read), size, d).await {
            Ok(_) => {
                self.drop_blob(d).await;
                true
            }
            Err(e @ (UploadError::Body(_) | UploadError::DigestMismatch { .. })) => {
                tracing::warn!(digest = %d, "the cached copy is not good: {e}");
                self.drop_blob(d).await;
                false
            }
            Err(e) => {
                tracing::info!(digest = %d, "the cached copy could not be kept: {e}");
                false
            }
        }
    }

    /// A read of `d` (`size` bytes) missed: fetch it into the cache, or
    /// wait for the read already doing so. `None` when it cannot be
    /// cached (larger than the whole cache).
    pub fn begin(&self, d: &Digest, size: u64) -> Option<Slot> {
        if size > self.inner.limit {
            return None;
        }
        let mut st = self.inner.state.lock().expect("cache lock");
        if let Some(rx) = st.filling.get(d) {
            return Some(Slot::Wait(Wait { rx: rx.clone() }));
        }
        if st.entries.contains_key(d) {
            // A fill ended between the caller's miss and now.
            let done = Progress {
                bytes: size,
                done: Some(true),
            };
            return Some(Slot::Wait(Wait {
                rx: watch::channel(done).1,
            }));
        }
        let (tx, rx) = watch::channel(Progress::default());
        st.filling.insert(d.clone(), rx);
        Some(Slot::Fill(Filler {
            cache: self.clone(),
            d: d.clone(),
            size,
            tx: Some(tx),
        }))
    }

    /// Drop cached blobs that are no longer committed (collected by GC),
    /// and, while the disk is under its reserve, every other cached blob
    /// from the least recently used until it is not.
    pub async fn sweep(&self, view: &dyn ClusterView) -> Result<(), ViewError> {
        let cached: Vec<Digest> = {
            let st = self.inner.state.lock().expect("cache lock");
            st.entries.keys().cloned().collect()
        };
        for d in cached {
            if view.committed_size(&d.to_string())?.is_none() {
                tracing::info!(digest = %d, "dropping a cached blob with no committed record");
                self.drop_blob(&d).await;
            }
        }
        if let Some(reserve) = &self.inner.reserve {
            while reserve.check().is_err() {
                let Some(d) = self.least_recent() else { break };
                tracing::info!(digest = %d, "disk under its reserve: dropping a cached blob");
                self.drop_blob(&d).await;
            }
        }
        Ok(())
    }

    fn least_recent(&self) -> Option<Digest> {
        let st = self.inner.state.lock().expect("cache lock");
        st.entries
            .iter()
            .min_by_key(|(_, (_, tick))| *tick)
            .map(|(d, _)| d.clone())
    }

    async fn drop_blob(&self, d: &Digest) {
        self.forget(d);
        if let Err(e) = self.inner.store.remove(d).await {
            tracing::warn!(digest = %d, "removing a cached blob: {e}");
        }
    }

    fn forget(&self, d: &Digest) {
        let mut st = self.inner.state.lock().expect("cache lock");
        if let Some((size, _)) = st.entries.remove(d) {
            st.bytes -= size;
            st.evicted += 1;
        }
    }

    /// Evict least recently used blobs until at most `limit` bytes remain
    /// (reads already open keep their mapping of the file).
    fn evict_to(&self, limit: u64) {
        let mut gone = Vec::new();
        {
            let mut st = self.inner.state.lock().expect("cache lock");
            while st.bytes > limit {
                let Some((d, size)) = st
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, tick))| *tick)
                    .map(|(d, (size, _))| (d.clone(), *size))
                else {
                    break;
                };
                st.entries.remove(&d);
                st.bytes -= size;
                st.evicted += 1;
                gone.push(d);
            }
        }
        for d in gone {
            let path = self.inner.store.path(&d);
            let index = self.inner.store.index_path(&d);
            let _ = std::fs::remove_file(index);
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(digest = %d, "evicting a cached blob: {e}");
            }
        }
    }

    fn finish_fill(&self, d: &Digest, size: u64, ok: bool) {
        {
            let mut st = self.inner.state.lock().expect("cache lock");
            st.filling.remove(d);
            if ok {
                st.tick += 1;
                let tick = st.tick;
                if st.entries.insert(d.clone(), (size, tick)).is_none() {
                    st.bytes += size;
                }
                st.fills += 1;
            }
        }
        if ok {
            // Never the blob just filled: it is the most recent.
            self.evict_to(self.inner.limit);
        }
    }
}

/// The right to fetch one blob into the cache. Dropped without `tee`
/// (every holder failed), it tells the waiters to fetch for themselves.
pub struct Filler {
    cache: BlobCache,
    d: Digest,
    size: u64,
    tx: Option<watch::Sender<Progress>>,
}

impl Filler {
    /// Pass `inner` (the blob, whole, from a peer) through unchanged while
    /// a copy of every chunk goes into the cache. The copy is kept only
    /// when `verified` yields its integrity index, which the caller sends
    /// once the same bytes have hashed to the digest. A reader that stops
    /// early leaves the copy short: nothing is kept and the waiters fetch
    /// the blob themselves.
    pub fn tee(
        mut self,
        inner: impl Stream<Item = io::Result<Bytes>> + Send + 'static,
        verified: tokio::sync::oneshot::Receiver<ChunkIndex>,
    ) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        let tx = self.tx.take().expect("a filler tees once");
        let (chunks, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        let (cache, d, size) = (self.cache.clone(), self.d.clone(), self.size);
        tokio::spawn(async move {
            let id = format!("fill-{}", uuid::Uuid::new_v4().simple());
            let progress = tx.clone();
            let body = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(move |b| {
                progress.send_modify(|p| p.bytes += b.len() as u64);
                Ok::<_, io::Error>(b)
            });
            let r = cache
                .inner
                .uploads
                .receive_verified(&id, body, size, &d, verified)
                .await;
            if let Err(e) = &r {
                tracing::info!(digest = %d, "not cached: {e}");
            }
            cache.finish_fill(&d, size, r.is_ok());
            tx.send_modify(|p| p.done = Some(r.is_ok()));
        });
        futures::stream::unfold(
            (Box::pin(inner), Some(chunks)),
            |(mut inner, chunks)| async move {
                match inner.next().await {
                    Some(Ok(b)) => {
                        // A cache that gave up (a full disk) only loses the copy.
                        let chunks = match chunks {
                            Some(c) if c.send(b.clone()).await.is_ok() => Some(c),
                            _ => None,
                        };
                        Some((Ok(b), (inner, chunks)))
                    }
                    // The copy is short, and so is not kept.
                    Some(Err(e)) => Some((Err(e), (inner, None))),
                    None => None,
                }
            },
        )
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            self.cache
                .inner
                .state
                .lock()
                .expect("cache lock")
                .filling
                .remove(&self.d);
            tx.send_modify(|p| p.done = Some(false));
        }
    }
}

/// Another read's fill of the same blob.
pub struct Wait {
    rx: watch::Receiver<Progress>,
}

impl Wait {
    /// Whether the fill put the blob in the cache; `false` as soon as it
    /// fails, or stops moving for `STALLED_FILL`.
    pub async fn done(mut self) -> bool {
        loop {
            if let Some(ok) = self.rx.borrow_and_update().done {
                return ok;
            }
            match tokio::time::timeout(STALLED_FILL, self.rx.changed()).await {
                Ok(Ok(())) => {}
                // The filler is gone without a word, or stalled.
                Ok(Err(_)) | Err(_) => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::{hashed_aside, Indexing};

    fn blob(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
    }

    async fn fill(cache: &BlobCache, b: &[u8]) -> Digest {
        let d = Digest::of(b);
        let Some(Slot::Fill(f)) = cache.begin(&d, b.len() as u64) else {
            panic!("expected to fill");
        };
        let source = futures::stream::iter(
            b.chunks(100_000)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        );
        let (source, _verdict, index) = hashed_aside(source, d.clone(), Indexing::Make);
        let got: Vec<u8> = f
            .tee(source, index.unwrap())
            .map(|c| c.unwrap().to_vec())
            .concat()
            .await;
        assert_eq!(got, b, "the tee passes the bytes through unchanged");
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        while cache.inner.state.lock().unwrap().filling.contains_key(&d) {
            assert!(tokio::time::Instant::now() < until, "the fill never ended");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        d
    }

    /// The whole blob from the cache: `None` if it is not cached or the
    /// read fails.
    async fn read_whole(cache: &BlobCache, d: &Digest, len: u64) -> Option<Vec<u8>> {
        let mut s = cache.read(d, 0, len).await?;
        let mut got = Vec::new();
        while let Some(c) = s.next().await {
            got.extend_from_slice(&c.ok()?);
        }
        Some(got)
    }

    #[tokio::test]
    async fn a_filled_blob_is_read_back_checked_and_the_oldest_goes_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path(), 5_000_000, None).unwrap();
        let (a, b, c) = (blob(2_000_000, 1), blob(2_000_000, 2), blob(2_000_000, 3));
        let da = fill(&cache, &a).await;
        let db = fill(&cache, &b).await;
        assert_eq!(read_whole(&cache, &da, a.len() as u64).await.unwrap(), a);
        // b is now the least recently used: the third blob evicts it.
        let dc = fill(&cache, &c).await;
        assert!(read_whole(&cache, &db, b.len() as u64).await.is_none());
        assert_eq!(read_whole(&cache, &da, a.len() as u64).await.unwrap(), a);
        assert_eq!(read_whole(&cache, &dc, c.len() as u64).await.unwrap(), c);
        let r = cache.report();
        assert_eq!((r.blobs, r.bytes, r.fills, r.evicted), (2, 4_000_000, 3, 1));
        // Larger than the whole cache: never cached.
        assert!(cache.begin(&Digest::of(b"x"), 6_000_000).is_none());

        // After a restart the cache keeps what it held.
        drop(cache);
        let cache = BlobCache::open(dir.path(), 5_000_000, None).unwrap();
        assert_eq!(cache.report().bytes, 4_000_000);
        assert_eq!(read_whole(&cache, &dc, c.len() as u64).await.unwrap(), c);
    }

    #[tokio::test]
    async fn one_fill_at_a_time_and_waiters_learn_its_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path(), 10_000_000, None).unwrap();
        let b = blob(1_500_000, 7);
        let d = Digest::of(&b);
        let Some(Slot::Fill(filler)) = cache.begin(&d, b.len() as u64) else {
            panic!("the first miss fills");
        };
        let waiters: Vec<Wait> = (0..16)
            .map(|_| match cache.begin(&d, b.len() as u64) {
                Some(Slot::Wait(w)) => w,
                _ => panic!("later misses wait for the fill"),
            })
            .collect();
        let source = futures::stream::iter([Ok(Bytes::from(b.clone()))]);
        let (source, _verdict, index) = hashed_aside(source, d.clone(), Indexing::Make);
        let _: Vec<_> = filler.tee(source, index.unwrap()).collect().await;
        for w in waiters {
            assert!(w.done().await, "the waiters see the blob cached");
        }
        assert_eq!(cache.report().fills, 1);

        // Bytes that do not match the digest are never kept, and a filler
        // dropped unused releases its waiters at once.
        let other = blob(1_000, 9);
        let wrong = Digest::of(b"not these bytes");
        let Some(Slot::Fill(f)) = cache.begin(&wrong, other.len() as u64) else {
            panic!("fill");
        };
        let Some(Slot::Wait(w)) = cache.begin(&wrong, other.len() as u64) else {
            panic!("wait");
        };
        let source = futures::stream::iter([Ok(Bytes::from(other.clone()))]);
        let (source, _verdict, index) = hashed_aside(source, wrong.clone(), Indexing::Make);
        let _: Vec<_> = f.tee(source, index.unwrap()).collect().await;
        assert!(!w.done().await, "a mismatched fill is not cached");
        assert!(read_whole(&cache, &wrong, other.len() as u64)
            .await
            .is_none());
        let Some(Slot::Fill(f)) = cache.begin(&wrong, 10) else {
            panic!("fill");
        };
        let Some(Slot::Wait(w)) = cache.begin(&wrong, 10) else {
            panic!("wait");
        };
        drop(f);
        assert!(!w.done().await);
    }

    #[tokio::test]
    async fn a_rotten_cached_copy_is_cut_off_and_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path(), 10_000_000, None).unwrap();
        let b = blob(3 << 20, 5);
        let d = fill(&cache, &b).await;
        let mut rotten = b.clone();
        rotten[(2 << 20) + 9] ^= 0x40;
        std::fs::write(cache.inner.store.path(&d), &rotten).unwrap();
        let mut s = cache.read(&d, 0, b.len() as u64).await.unwrap();
        let mut got = Vec::new();
        let mut failed = false;
        while let Some(c) = s.next().await {
            match c {
                Ok(c) => got.extend_from_slice(&c),
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        assert!(failed, "the rotten chunk is refused");
        assert!(got.len() <= 2 << 20 && got == b[..got.len()]);
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        while read_whole(&cache, &d, b.len() as u64).await.is_some() {
            assert!(
                tokio::time::Instant::now() < until,
                "the rotten copy is still served"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Promoted when this node becomes the blob's owner: the store holds
    /// the same bytes and the cache no longer does; a rotten cached copy
    /// is refused on the way in and dropped.
    #[tokio::test]
    async fn a_cached_copy_moves_into_the_store_checked_and_a_rotten_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(&dir.path().join("cache"), 20_000_000, None).unwrap();
        let store = BlobStore::open(&dir.path().join("store")).unwrap();
        let uploads = Uploads::open(store.clone()).unwrap();
        let b = blob(3 << 20, 11);
        let d = fill(&cache, &b).await;
        assert!(cache.promote(&d, b.len() as u64, &uploads).await);
        assert_eq!(store.stat(&d).await.unwrap(), Some(b.len() as u64));
        let mut s = store
            .read_stream_checked(&d, 0, b.len() as u64)
            .await
            .unwrap();
        let mut got = Vec::new();
        while let Some(c) = s.next().await {
            got.extend_from_slice(&c.unwrap());
        }
        assert!(got == b, "the promoted copy differs");
        assert!(read_whole(&cache, &d, b.len() as u64).await.is_none());
        assert_eq!(cache.report().bytes, 0);
        // Not cached (any more): nothing to promote.
        assert!(!cache.promote(&d, b.len() as u64, &uploads).await);

        let c = blob(3 << 20, 12);
        let dc = fill(&cache, &c).await;
        let mut rotten = c.clone();
        rotten[(1 << 20) + 77] ^= 1;
        std::fs::write(cache.inner.store.path(&dc), &rotten).unwrap();
        assert!(!cache.promote(&dc, c.len() as u64, &uploads).await);
        assert_eq!(store.stat(&dc).await.unwrap(), None);
        assert!(
            !cache.inner.store.path(&dc).exists(),
            "the rotten copy stays cached"
        );
        assert_eq!(cache.report().blobs, 0);
    }

    /// A disk under its reserve: the next storage pass empties the cache
    /// (it gives way before anything else), and a pull through the node
    /// still gets every byte while the copy beside it is not kept.
    #[tokio::test]
    async fn a_full_disk_empties_the_cache_and_stops_new_fills() {
        // Every blob committed: GC has collected nothing.
        let view = crate::cluster::PlainChannels {
            committed_size: Some(2_000_000),
        };
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path(), 20_000_000, None).unwrap();
        let (a, b) = (blob(2_000_000, 21), blob(2_000_000, 22));
        let (da, db) = (fill(&cache, &a).await, fill(&cache, &b).await);
        // A sweep with room on the disk keeps committed blobs.
        cache.sweep(&view).await.unwrap();
        assert_eq!(cache.report().blobs, 2);
        drop(cache);

        // The same cache, now with a reserve the disk cannot meet.
        let full = Reserve::Percent(100.0);
        let cache = BlobCache::open(dir.path(), 20_000_000, Some(full)).unwrap();
        assert_eq!(cache.report().blobs, 2, "a restart keeps the cache");
        cache.sweep(&view).await.unwrap();
        let r = cache.report();
        assert_eq!((r.blobs, r.bytes), (0, 0), "{r:?}");
        for d in [&da, &db] {
            assert!(!cache.inner.store.path(d).exists(), "{d} still on disk");
        }
        // The reader gets every byte (`fill` checks), the cache keeps none.
        let d = fill(&cache, &blob(2_000_000, 23)).await;
        assert_eq!(cache.report().blobs, 0, "a fill was kept on a full disk");
        assert!(!cache.inner.store.path(&d).exists());
    }
}
