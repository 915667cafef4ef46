//! The local content-addressed store: `blobs/sha256/<2 hex>/<hex>`. A file
//! appears under its digest only after it was verified and fsynced.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::digest::Digest;

#[derive(Clone, Debug)]
pub struct BlobStore {
    root: PathBuf,
    /// Digests an upload on this node is installing or pushing, with how
    /// many such uploads there are. `remove` leaves a held digest alone.
    holds: Arc<Mutex<HashMap<Digest, usize>>>,
}

/// Keeps the local copy of a digest from being removed while an upload
/// installs it and pushes it to its owners. Take it before the install:
/// an install that finds the copy present keeps that copy, so a removal
/// between the two would leave the upload with nothing to push.
#[derive(Debug)]
pub struct Hold {
    holds: Arc<Mutex<HashMap<Digest, usize>>>,
    path: PathBuf,
    d: Digest,
}

impl BlobStore {
    pub fn open(root: &Path) -> io::Result<BlobStore> {
        std::fs::create_dir_all(root.join("blobs").join("sha256"))?;
        Ok(BlobStore {
            root: root.to_path_buf(),
            holds: Arc::default(),
        })
    }

    pub fn hold(&self, d: &Digest) -> Hold {
        *self
            .holds
            .lock()
            .expect("holds lock")
            .entry(d.clone())
            .or_default() += 1;
        Hold {
            holds: self.holds.clone(),
            path: self.path(d),
            d: d.clone(),
        }
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
    /// dropping the copy) during the read affects neither.
    pub async fn read_stream_verified(
        &self,
        d: &Digest,
    ) -> io::Result<(
        impl futures::Stream<Item = io::Result<bytes::Bytes>> + Send + 'static,
        tokio::task::JoinHandle<io::Result<bool>>,
    )> {
        use sha2::Digest as _;
        use std::io::Read;
        let (mut file, map) = self.open_mapped(d).await?;
        let len = map.as_ref().map_or(0, |m| m.len() as u64);
        let d = d.clone();
        let verdict = tokio::task::spawn_blocking(move || {
            let mut h = sha2::Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            Ok(Digest::from_sha256_bytes(&h.finalize()) == d)
        });
        Ok((Self::chunks(map, 0, len)?, verdict))
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

    /// Move a verified, fsynced staging file into place and fsync the
    /// directory, so the name survives a crash. A blob already present is
    /// kept (content addressing makes the copies identical).
    pub(crate) async fn install(&self, staged: &Path, d: &Digest) -> io::Result<()> {
        let target = self.path(d);
        let dir = target
            .parent()
            .expect("blob path has a parent")
            .to_path_buf();
        let staged = staged.to_path_buf();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            if target.exists() {
                std::fs::remove_file(&staged)?;
                return Ok(());
            }
            std::fs::rename(&staged, &target)?;
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
        .map_err(io::Error::other)?
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
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Re-hash the local copy on a blocking thread: `Some(true)` if it
    /// matches its name, `None` if there is no copy. Plain reads (not the
    /// mapping) so the pages do not count against this process's memory.
    pub async fn verify(&self, d: &Digest) -> io::Result<Option<bool>> {
        use sha2::Digest as _;
        use std::io::Read;
        let (path, d) = (self.path(d), d.clone());
        tokio::task::spawn_blocking(move || {
            let mut f = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            let mut h = sha2::Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            Ok(Some(Digest::from_sha256_bytes(&h.finalize()) == d))
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Every local blob file: digest, size, and time since it was written.
    /// Names that are not digests (temporary files) are skipped.
    pub async fn list(&self) -> io::Result<Vec<(Digest, u64, std::time::Duration)>> {
        let base = self.root.join("blobs").join("sha256");
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let now = std::time::SystemTime::now();
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
                    let age = m
                        .modified()
                        .ok()
                        .and_then(|t| now.duration_since(t).ok())
                        .unwrap_or_default();
                    out.push((d, m.len(), age));
                }
            }
            Ok(out)
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Delete the local copy unless an upload holds it. `Ok(false)` when
    /// there was no copy or it is held.
    pub async fn remove(&self, d: &Digest) -> io::Result<bool> {
        remove_unless_held(self.holds.clone(), self.path(d), d.clone(), 0).await
    }
}

impl Hold {
    /// Give up the hold and delete the copy, unless another upload holds
    /// it too (that one will decide when it finishes).
    pub async fn release_and_remove(self) -> io::Result<bool> {
        let (holds, path, d) = (self.holds.clone(), self.path.clone(), self.d.clone());
        // Our own hold is released after the removal, under the same lock.
        let removed = remove_unless_held(holds, path, d, 1).await;
        drop(self);
        removed
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut holds = self.holds.lock().expect("holds lock");
        if let Some(n) = holds.get_mut(&self.d) {
            *n -= 1;
            if *n == 0 {
                holds.remove(&self.d);
            }
        }
    }
}

/// The check and the unlink happen under the holds lock, so no hold (and
/// so no install relying on the copy) can slip in between.
async fn remove_unless_held(
    holds: Arc<Mutex<HashMap<Digest, usize>>>,
    path: PathBuf,
    d: Digest,
    ours: usize,
) -> io::Result<bool> {
    tokio::task::spawn_blocking(move || {
        let holds = holds.lock().expect("holds lock");
        if holds.get(&d).copied().unwrap_or(0) > ours {
            return Ok(false);
        }
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    })
    .await
    .map_err(io::Error::other)?
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
}
