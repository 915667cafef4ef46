//! The local content-addressed store: `blobs/sha256/<2 hex>/<hex>`. A file
//! appears under its digest only after it was verified and fsynced.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::digest::Digest;
use crate::hashing::Hashes;
use crate::integrity::{ChunkIndex, CHUNK};

#[derive(Clone, Debug)]
pub struct BlobStore {
    root: PathBuf,
    uses: Arc<Mutex<Uses>>,
}

/// Who relies on local copies right now, and who did lately. One lock, so
/// a sweep's check and its unlink are one step against every claim.
#[derive(Debug)]
struct Uses {
    /// Digests an upload on this node is installing or pushing, with how
    /// many such uploads there are. `remove` leaves a held digest alone.
    holds: HashMap<Digest, usize>,
    /// When an upload last wrote a copy, found it already here, or let go
    /// of its hold: its commit may still be on its way through Raft, so
    /// `remove_unclaimed` leaves the copy alone for a grace period.
    claims: HashMap<Digest, Instant>,
    /// Claims are not kept across restarts: a node treats every copy as
    /// claimed when it starts.
    started: Instant,
}

/// Keeps the local copy of a digest from being removed while an upload
/// installs it and pushes it to its owners. Take it before the install:
/// an install that finds the copy present keeps that copy, so a removal
/// between the two would leave the upload with nothing to push.
#[derive(Debug)]
pub struct Hold {
    uses: Arc<Mutex<Uses>>,
    path: PathBuf,
    d: Digest,
}

impl BlobStore {
    pub fn open(root: &Path) -> io::Result<BlobStore> {
        std::fs::create_dir_all(root.join("blobs").join("sha256"))?;
        Ok(BlobStore {
            root: root.to_path_buf(),
            uses: Arc::new(Mutex::new(Uses {
                holds: HashMap::new(),
                claims: HashMap::new(),
                started: Instant::now(),
            })),
        })
    }

    pub fn hold(&self, d: &Digest) -> Hold {
        let mut uses = self.uses.lock().expect("uses lock");
        *uses.holds.entry(d.clone()).or_default() += 1;
        uses.claims.insert(d.clone(), Instant::now());
        Hold {
            uses: self.uses.clone(),
            path: self.path(d),
            d: d.clone(),
        }
    }

    /// Note that an upload relies on the copy of `d` (it wrote it, or a
    /// peer's push found it already here and counted it as a replica).
    /// Claim before looking: a sweep then either removed the copy before
    /// (and the caller finds none) or leaves it for the grace period.
    pub fn claim(&self, d: &Digest) {
        self.uses
            .lock()
            .expect("uses lock")
            .claims
            .insert(d.clone(), Instant::now());
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, d: &Digest) -> PathBuf {
        let hex = d.sha256_hex();
        self.root
            .join("blobs")
            .join("sha256")
            .join(&hex[..2])
            .join(hex)
    }

    /// Where the integrity index of `d`'s copy lives (beside it).
    pub fn index_path(&self, d: &Digest) -> PathBuf {
        index_path_of(&self.path(d))
    }

    /// Size of the local copy, if this node holds one.
    pub async fn stat(&self, d: &Digest) -> io::Result<Option<u64>> {
        match tokio::fs::metadata(self.path(d)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Stream `len` bytes from `start` of the local copy. The file is
    /// mapped, not read: chunks are handed to the socket straight from the
    /// page cache (one copy fewer than read(2)). Blobs are immutable and
    /// only ever replaced by rename or unlinked, which leaves a mapping valid.
    pub async fn read_stream(
        &self,
        d: &Digest,
        start: u64,
        len: u64,
    ) -> io::Result<impl futures::Stream<Item = io::Result<bytes::Bytes>> + Send + 'static> {
        let (_, map) = self.open_mapped(d).await?;
        Self::chunks(map, start, len)
    }

    /// The whole local copy as a stream, and a verdict computed on a
    /// blocking thread from the same open file: whether its bytes hash to
    /// `d`. Both read the file that was opened, so an unlink (a rebalance
    /// dropping the copy) during the read affects neither. The same pass
    /// makes the copy's integrity index when it matches (a copy from
    /// before indexes, read whole for the first time).
    pub async fn read_stream_verified(
        &self,
        d: &Digest,
    ) -> io::Result<(
        impl futures::Stream<Item = io::Result<bytes::Bytes>> + Send + 'static,
        tokio::task::JoinHandle<io::Result<bool>>,
    )> {
        let (file, map) = self.open_mapped(d).await?;
        let len = map.as_ref().map_or(0, |m| m.len() as u64);
        let (d, index_path) = (d.clone(), self.index_path(d));
        let verdict =
            tokio::task::spawn_blocking(move || Ok(hash_and_index(file, &d, &index_path)?.0));
        Ok((Self::chunks(map, 0, len)?, verdict))
    }

    /// Whether the local copy has an integrity index file (not whether it
    /// is sound: a read finds that out).
    pub async fn has_index(&self, d: &Digest) -> bool {
        tokio::fs::try_exists(self.index_path(d))
            .await
            .unwrap_or(false)
    }

    /// The local copy's integrity index, if it has a sound one for a blob
    /// of `size` bytes.
    pub(crate) async fn load_index(&self, d: &Digest, size: u64) -> Option<ChunkIndex> {
        let path = self.index_path(d);
        let bytes = tokio::fs::read(&path).await.ok()?;
        match ChunkIndex::from_bytes(&bytes, size) {
            Ok(idx) => Some(idx),
            Err(e) => {
                tracing::warn!(digest = %d, "ignoring the integrity index: {e}");
                None
            }
        }
    }

    /// Stream `len` bytes from `start` of the local copy, every chunk they
    /// touch checked against the copy's integrity index before any of its
    /// bytes go out (on blocking threads, a few chunks ahead of the send,
    /// so checking runs beside the socket on every core). A copy without an
    /// index is hashed whole first: SHA-256 against its digest, which makes
    /// the index. A chunk that fails cuts the stream with an error and
    /// quarantines the copy (the repair loop fetches a good one); a copy
    /// whose SHA-256 fails is quarantined and reported `NotFound`, so the
    /// caller reads another holder.
    pub async fn read_stream_checked(
        &self,
        d: &Digest,
        start: u64,
        len: u64,
    ) -> io::Result<impl futures::Stream<Item = io::Result<bytes::Bytes>> + Send + 'static> {
        use futures::StreamExt;
        let (file, map) = self.open_mapped(d).await?;
        let size = map.as_ref().map_or(0, |m| m.len() as u64);
        if start.saturating_add(len) > size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "blob is shorter than the requested range",
            ));
        }
        let index = Arc::new(self.sound_index(d, file, size).await?);
        let (store, bad) = (self.clone(), d.clone());
        let checks = index.chunks_for(start, len).map(move |i| {
            let (map, index) = (map.clone(), index.clone());
            async move {
                let Some(map) = map else {
                    return Ok(None);
                };
                let b = index.bounds(i);
                let whole = b.clone();
                let (ok, map) = tokio::task::spawn_blocking(move || {
                    let ok = index.check(i, &map[whole.start as usize..whole.end as usize]);
                    (ok, map)
                })
                .await
                .map_err(io::Error::other)?;
                if !ok {
                    return Err(io::Error::other(format!("chunk {i} failed verification")));
                }
                let from = b.start.max(start) as usize;
                let to = b.end.min(start + len) as usize;
                Ok(Some(bytes::Bytes::from_owner(MappedRange {
                    map,
                    from,
                    to,
                })))
            }
        });
        let lookahead = std::thread::available_parallelism().map_or(2, |n| n.get()) + 1;
        let mut failed = false;
        Ok(futures::stream::iter(checks)
            .buffered(lookahead)
            .filter_map(move |r| {
                let out = match r {
                    _ if failed => None,
                    Ok(chunk) => chunk.map(Ok),
                    Err(e) => {
                        failed = true;
                        tracing::error!(digest = %bad, "local copy failed verification ({e}); cutting the response");
                        let msg = format!("copy of {bad} failed verification: {e}");
                        store.quarantine_soon(&bad);
                        Some(Err(io::Error::other(msg)))
                    }
                };
                std::future::ready(out)
            }))
    }

    /// The integrity index of the local copy of `d` (`size` bytes, open
    /// as `file`): the stored one, else one made by hashing the whole copy,
    /// which must match `d`. A copy that does not is quarantined and
    /// reported `NotFound` (the caller reads another holder).
    async fn sound_index(
        &self,
        d: &Digest,
        file: std::fs::File,
        size: u64,
    ) -> io::Result<ChunkIndex> {
        // A blob of one chunk has no index file: hashing it whole costs
        // no more than checking its chunk, and small pushes are spared a
        // file.
        if size > CHUNK {
            if let Some(idx) = self.load_index(d, size).await {
                return Ok(idx);
            }
        }
        let (dd, index_path) = (d.clone(), self.index_path(d));
        let (matches, index) =
            tokio::task::spawn_blocking(move || hash_and_index(file, &dd, &index_path))
                .await
                .map_err(io::Error::other)??;
        if !matches {
            tracing::error!(digest = %d, "local copy failed verification; quarantined");
            self.quarantine(d).await?;
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("the local copy of {d} is corrupt"),
            ));
        }
        Ok(index)
    }

    /// The integrity index of the local copy of `d`, for a peer that
    /// checks the bytes it streams from here (see `sound_index`).
    pub async fn integrity_index(&self, d: &Digest) -> io::Result<ChunkIndex> {
        let file = tokio::fs::File::open(self.path(d)).await?.into_std().await;
        let size = file.metadata()?.len();
        self.sound_index(d, file, size).await
    }

    /// Open the local copy and map it (`None` for an empty file, which
    /// cannot be mapped).
    async fn open_mapped(
        &self,
        d: &Digest,
    ) -> io::Result<(std::fs::File, Option<std::sync::Arc<memmap2::Mmap>>)> {
        open_mapped_path(self.path(d)).await
    }

    /// The local copy of `d`, mapped.
    pub async fn map(&self, d: &Digest) -> io::Result<Mapped> {
        let (_, map) = self.open_mapped(d).await?;
        Ok(Mapped { map })
    }

    fn chunks(
        map: Option<std::sync::Arc<memmap2::Mmap>>,
        start: u64,
        len: u64,
    ) -> io::Result<impl futures::Stream<Item = io::Result<bytes::Bytes>> + Send + 'static> {
        const CHUNK: u64 = 1 << 20;
        let have = map.as_ref().map_or(0, |m| m.len() as u64);
        if start.saturating_add(len) > have {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "blob is shorter than the requested range",
            ));
        }
        let chunks = (0..len.div_ceil(CHUNK)).map(move |i| {
            let from = (start + i * CHUNK) as usize;
            let to = (start + ((i + 1) * CHUNK).min(len)) as usize;
            let map = map.clone().expect("non-empty when len > 0");
            Ok(bytes::Bytes::from_owner(MappedRange { map, from, to }))
        });
        Ok(futures::stream::iter(chunks))
    }

    /// Make a verified staging file durable, move it into place and fsync
    /// the directory, so the name survives a crash; all on one blocking
    /// thread, as a small push waits on every hop. A blob already present
    /// is kept (content addressing makes the copies identical) and the
    /// staging file goes unsynced. `index`, made from the verified bytes,
    /// goes beside it; it is not synced (one lost or torn in a crash fails
    /// its checksum and is made again).
    pub(crate) async fn install(
        &self,
        staged: &Path,
        d: &Digest,
        index: Option<&ChunkIndex>,
    ) -> io::Result<()> {
        let target = self.path(d);
        let dir = target
            .parent()
            .expect("blob path has a parent")
            .to_path_buf();
        let staged = staged.to_path_buf();
        let index = index.cloned();
        // Before the name appears, so no sweep sees it unclaimed.
        self.claim(d);
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            let index_path = index_path_of(&target);
            if target.exists() {
                std::fs::remove_file(&staged)?;
                if let Some(idx) = index.filter(|_| !index_path.exists()) {
                    write_index(&index_path, &idx);
                }
                return Ok(());
            }
            std::fs::File::open(&staged)?.sync_all()?;
            if let Some(idx) = &index {
                write_index(&index_path, idx);
            }
            std::fs::rename(&staged, &target)?;
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Quarantine `d` on a task of its own, from a stream that found its
    /// copy corrupt and cannot wait (failures are logged).
    pub fn quarantine_soon(&self, d: &Digest) {
        let (store, d) = (self.clone(), d.clone());
        tokio::spawn(async move {
            if let Err(e) = store.quarantine(&d).await {
                tracing::warn!(digest = %d, "quarantining a corrupt copy: {e}");
            }
        });
    }

    /// Move a copy found corrupt out of the store (kept for inspection
    /// under `quarantine/`); the repair loop fetches a good copy again.
    pub async fn quarantine(&self, d: &Digest) -> io::Result<bool> {
        let dir = self.root.join("quarantine");
        tokio::fs::create_dir_all(&dir).await?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| t.as_secs())
            .unwrap_or(0);
        let to = dir.join(format!("{}-{now}", d.sha256_hex()));
        match tokio::fs::rename(self.path(d), to).await {
            Ok(()) => {
                // The good copy that repair brings comes with its own.
                let _ = tokio::fs::remove_file(self.index_path(d)).await;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Re-hash the local copy on a blocking thread: `Some(true)` if it
    /// matches its name, `None` if there is no copy. Plain reads (not the
    /// mapping) so the pages do not count against this process's memory.
    /// A matching copy's integrity index is checked against the same pass
    /// and written again if it is missing or differs.
    pub async fn verify(&self, d: &Digest) -> io::Result<Option<bool>> {
        Ok(match self.verify_part(d, None, u64::MAX).await? {
            Scrub::Missing => None,
            Scrub::Done(matches) => Some(matches),
            Scrub::Partial(_) => unreachable!("no budget limit"),
        })
    }

    /// `verify` in steps: hash up to `budget` more bytes (at least one
    /// chunk) of the copy from where `from` stopped, so a scrub of a large
    /// blob spreads over several storage passes instead of re-hashing it
    /// whole in one.
    pub async fn verify_part(
        &self,
        d: &Digest,
        from: Option<ScrubState>,
        budget: u64,
    ) -> io::Result<Scrub> {
        let (path, d) = (self.path(d), d.clone());
        tokio::task::spawn_blocking(move || {
            use std::io::Seek;
            let mut f = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Scrub::Missing),
                Err(e) => return Err(e),
            };
            let mut state = from.unwrap_or_else(|| ScrubState {
                offset: 0,
                hashes: Box::new(Hashes::indexing()),
            });
            f.seek(io::SeekFrom::Start(state.offset))?;
            let (read, ended) = hash_from(&mut f, &mut state.hashes, budget.max(CHUNK))?;
            state.offset += read;
            Ok(match ended {
                true => Scrub::Done(finish_scrub(&path, &d, *state.hashes)),
                false => Scrub::Partial(state),
            })
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Every local blob file: digest and size. Names that are not digests
    /// (temporary files) are skipped.
    pub async fn list(&self) -> io::Result<Vec<(Digest, u64)>> {
        let base = self.root.join("blobs").join("sha256");
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for shard in std::fs::read_dir(&base)? {
                let shard = shard?;
                if !shard.file_type()?.is_dir() {
                    continue;
                }
                for f in std::fs::read_dir(shard.path())? {
                    let f = f?;
                    let Ok(d) =
                        format!("sha256:{}", f.file_name().to_string_lossy()).parse::<Digest>()
                    else {
                        continue;
                    };
                    let Ok(m) = f.metadata() else { continue };
                    if !m.is_file() {
                        continue;
                    }
                    out.push((d, m.len()));
                }
            }
            Ok(out)
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Delete the local copy unless an upload holds it. `Ok(false)` when
    /// there was no copy or it is held. For copies of committed blobs that
    /// are no longer needed here (every owner has one).
    pub async fn remove(&self, d: &Digest) -> io::Result<bool> {
        remove_if(self.uses.clone(), self.path(d), d.clone(), 0, None).await
    }

    /// Delete the local copy of a digest without a committed record (a
    /// collected blob, an upload that never committed) unless an upload
    /// holds it or claimed it less than `grace` ago, or this node started
    /// less than `grace` ago. So collected bytes go at the next sweep, and
    /// a copy whose commit is still on its way stays.
    pub async fn remove_unclaimed(&self, d: &Digest, grace: Duration) -> io::Result<bool> {
        remove_if(self.uses.clone(), self.path(d), d.clone(), 0, Some(grace)).await
    }

    /// Forget claims older than `grace` (they no longer keep anything).
    pub fn forget_claims(&self, grace: Duration) {
        self.uses
            .lock()
            .expect("uses lock")
            .claims
            .retain(|_, at| at.elapsed() < grace);
    }
}

impl Hold {
    /// Give up the hold and delete the copy, unless another upload holds
    /// it too (that one will decide when it finishes).
    pub async fn release_and_remove(self) -> io::Result<bool> {
        let (uses, path, d) = (self.uses.clone(), self.path.clone(), self.d.clone());
        // Our own hold is released after the removal, under the same lock.
        let removed = remove_if(uses, path, d, 1, None).await;
        drop(self);
        removed
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut uses = self.uses.lock().expect("uses lock");
        if let Some(n) = uses.holds.get_mut(&self.d) {
            *n -= 1;
            if *n == 0 {
                uses.holds.remove(&self.d);
            }
        }
        // The upload's commit may not have applied yet.
        uses.claims.insert(self.d.clone(), Instant::now());
    }
}

/// The checks and the unlink happen under one lock, so no hold or claim
/// (and so no install or push relying on the copy) can slip in between.
/// `ours`: holds the caller itself has. `grace`: also spare a copy claimed
/// (or a node started) less than this long ago.
async fn remove_if(
    uses: Arc<Mutex<Uses>>,
    path: PathBuf,
    d: Digest,
    ours: usize,
    grace: Option<Duration>,
) -> io::Result<bool> {
    tokio::task::spawn_blocking(move || {
        let uses = uses.lock().expect("uses lock");
        if uses.holds.get(&d).copied().unwrap_or(0) > ours {
            return Ok(false);
        }
        if let Some(grace) = grace {
            let recent = |at: &Instant| at.elapsed() < grace;
            if recent(&uses.started) || uses.claims.get(&d).is_some_and(recent) {
                return Ok(false);
            }
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {
                let _ = std::fs::remove_file(index_path_of(&path));
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    })
    .await
    .map_err(io::Error::other)?
}

fn index_path_of(blob: &Path) -> PathBuf {
    blob.with_extension("idx")
}

/// Whether the scrubbed bytes match `d`; the index of a matching copy is
/// written again if it is missing or differs.
fn finish_scrub(path: &Path, d: &Digest, hashes: Hashes) -> bool {
    use sha2::Digest as _;
    let matches = Digest::from_sha256_bytes(&hashes.sha.finalize()) == *d;
    if let (true, Some(chunks)) = (matches, hashes.chunks) {
        let index = chunks.finish();
        let index_path = index_path_of(path);
        let stored = std::fs::read(&index_path).ok();
        if index.size() > CHUNK && stored.as_deref() != Some(&index.to_bytes()[..]) {
            if stored.is_some() {
                tracing::warn!(digest = %d, "scrub: the integrity index was wrong; made again");
            }
            write_index(&index_path, &index);
        }
    }
    matches
}

/// A scrub of one copy in progress: the bytes hashed so far.
pub struct ScrubState {
    offset: u64,
    hashes: Box<Hashes>,
}

impl ScrubState {
    /// Bytes of the copy hashed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

/// What `BlobStore::verify_part` found.
pub enum Scrub {
    /// No local copy.
    Missing,
    /// More to hash: hand this back to the next call.
    Partial(ScrubState),
    /// The whole copy was hashed: whether it matches its digest.
    Done(bool),
}

/// Hash a whole file: whether it matches `d` (SHA-256), and its integrity
/// index from the same bytes.
fn hash_file(mut f: std::fs::File, d: &Digest) -> io::Result<(bool, ChunkIndex)> {
    use sha2::Digest as _;
    let mut hashes = Hashes::indexing();
    hash_from(&mut f, &mut hashes, u64::MAX)?;
    let chunks = hashes.chunks.take().expect("an indexing hash");
    Ok((
        Digest::from_sha256_bytes(&hashes.sha.finalize()) == *d,
        chunks.finish(),
    ))
}

/// Hash at least `budget` bytes of `f` from where it stands (whole chunks,
/// so the last read may pass the budget) into `hashes`: the bytes read, and
/// whether the file ended.
fn hash_from(f: &mut std::fs::File, hashes: &mut Hashes, budget: u64) -> io::Result<(u64, bool)> {
    use std::io::Read;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut read = 0u64;
    while read < budget {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok((read, true));
        }
        hashes.update(&buf[..n]);
        read += n as u64;
    }
    Ok((read, false))
}

/// Hash a whole copy, and keep its index when it matches `d` (a copy from
/// before indexes, or one whose index was lost).
fn hash_and_index(
    f: std::fs::File,
    d: &Digest,
    index_path: &Path,
) -> io::Result<(bool, ChunkIndex)> {
    let (matches, index) = hash_file(f, d)?;
    if matches {
        write_index(index_path, &index);
    }
    Ok((matches, index))
}

/// Write an index by write-then-rename, so a reader sees a whole one or
/// none; a blob of one chunk gets none. A failure only costs the index (reads make it again), so it is
/// logged, not returned.
fn write_index(path: &Path, index: &ChunkIndex) {
    if index.size() <= CHUNK {
        return; // checked whole against its digest instead
    }
    let tmp = path.with_extension(format!("idx.{}", uuid::Uuid::new_v4().simple()));
    let r = std::fs::write(&tmp, index.to_bytes()).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        tracing::warn!(path = %path.display(), "writing an integrity index: {e}");
    }
}

async fn open_mapped_path(
    path: PathBuf,
) -> io::Result<(std::fs::File, Option<std::sync::Arc<memmap2::Mmap>>)> {
    let (file, map) = tokio::task::spawn_blocking(move || -> io::Result<_> {
        let f = std::fs::File::open(&path)?;
        if f.metadata()?.len() == 0 {
            return Ok((f, None));
        }
        // SAFETY: blob and staging files are never rewritten or cut below
        // a length once mapped at it (a staging file only grows, or is cut
        // back to an acknowledged size, which is at least the verified one;
        // otherwise files are replaced by rename or unlinked).
        let map = unsafe { memmap2::Mmap::map(&f)? };
        let _ = map.advise(memmap2::Advice::Sequential);
        Ok((f, Some(map)))
    })
    .await
    .map_err(io::Error::other)??;
    Ok((file, map.map(std::sync::Arc::new)))
}

/// A blob's bytes mapped from one open file, a stored copy or a verified
/// staging file; the mapping stays valid when the file is renamed or
/// unlinked, so a push can run while the file is installed or dropped.
#[derive(Clone, Debug)]
pub struct Mapped {
    map: Option<std::sync::Arc<memmap2::Mmap>>,
}

impl Mapped {
    pub(crate) async fn open(path: PathBuf) -> io::Result<Mapped> {
        let (_, map) = open_mapped_path(path).await?;
        Ok(Mapped { map })
    }

    pub fn len(&self) -> u64 {
        self.map.as_ref().map_or(0, |m| m.len() as u64)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole blob in chunks of 1 MiB, straight from the page cache.
    pub fn stream(&self) -> impl futures::Stream<Item = io::Result<bytes::Bytes>> + Send + 'static {
        BlobStore::chunks(self.map.clone(), 0, self.len()).expect("the whole mapped range")
    }
}

/// A slice of a mapped blob that keeps the mapping alive.
struct MappedRange {
    map: std::sync::Arc<memmap2::Mmap>,
    from: usize,
    to: usize,
}

impl AsRef<[u8]> for MappedRange {
    fn as_ref(&self) -> &[u8] {
        &self.map[self.from..self.to]
    }
}

impl Drop for MappedRange {
    fn drop(&mut self) {
        // Sent: release these pages from our mapping, so a download's
        // resident memory stays at the chunks in flight.
        // SAFETY: the mapping is a read-only shared file mapping, for which
        // MADV_DONTNEED only drops page-table entries; any later access
        // (an overlapping range) faults the same bytes back from the file.
        let _ = unsafe {
            self.map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                self.from,
                self.to - self.from,
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_held_copy_outlives_removals_until_its_last_upload_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let d = Digest::of(b"shared layer");
        std::fs::create_dir_all(store.path(&d).parent().unwrap()).unwrap();
        std::fs::write(store.path(&d), b"shared layer").unwrap();

        // Two uploads of the same digest through this node.
        let first = store.hold(&d);
        let second = store.hold(&d);
        // A sweep or rebalance drop leaves it alone.
        assert!(!store.remove(&d).await.unwrap());
        // The first upload finishes: the second still needs the copy.
        assert!(!first.release_and_remove().await.unwrap());
        assert!(store.path(&d).exists());
        // The last one to finish removes it.
        assert!(second.release_and_remove().await.unwrap());
        assert!(!store.path(&d).exists());
        // With no hold left, removal works as before.
        std::fs::write(store.path(&d), b"shared layer").unwrap();
        drop(store.hold(&d));
        assert!(store.remove(&d).await.unwrap());
        assert!(!store.remove(&d).await.unwrap());
    }

    #[tokio::test]
    async fn a_copy_without_record_goes_at_the_next_sweep_unless_an_upload_relied_on_it_lately() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let grace = Duration::from_millis(300);
        let write = |d: &Digest, bytes: &[u8]| {
            std::fs::create_dir_all(store.path(d).parent().unwrap()).unwrap();
            std::fs::write(store.path(d), bytes).unwrap();
        };
        let (old, fresh, held) = (
            Digest::of(b"old"),
            Digest::of(b"fresh"),
            Digest::of(b"held"),
        );
        // Files found at start-up (claims of the last run are unknown) stay
        // for the grace.
        write(&old, b"old");
        assert!(!store.remove_unclaimed(&old, grace).await.unwrap());
        tokio::time::sleep(grace).await;
        // Then a copy nobody claimed goes at once, however new its file.
        write(&fresh, b"fresh");
        assert!(store.remove_unclaimed(&fresh, grace).await.unwrap());
        assert!(store.remove_unclaimed(&old, grace).await.unwrap());
        // An install claims its copy; so does a hold, for as long as it is
        // held and for the grace after it is let go.
        let staged = dir.path().join("staged");
        std::fs::write(&staged, b"fresh").unwrap();
        store.install(&staged, &fresh, None).await.unwrap();
        assert!(!store.remove_unclaimed(&fresh, grace).await.unwrap());
        write(&held, b"held");
        let hold = store.hold(&held);
        tokio::time::sleep(grace).await;
        assert!(!store.remove_unclaimed(&held, grace).await.unwrap());
        assert!(store.remove_unclaimed(&fresh, grace).await.unwrap());
        drop(hold);
        assert!(!store.remove_unclaimed(&held, grace).await.unwrap());
        // Claims past the grace are forgotten, and keep nothing.
        tokio::time::sleep(grace).await;
        store.forget_claims(grace);
        assert!(store.uses.lock().unwrap().claims.is_empty());
        assert!(store.remove_unclaimed(&held, grace).await.unwrap());
        assert!(!store.path(&held).exists());
    }
}
