//! The local content-addressed store: `blobs/sha256/<2 hex>/<hex>`. A file
//! appears under its digest only after it was verified and fsynced.

use std::io;
use std::path::{Path, PathBuf};

use crate::digest::Digest;

#[derive(Clone, Debug)]
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    pub fn open(root: &Path) -> io::Result<BlobStore> {
        std::fs::create_dir_all(root.join("blobs").join("sha256"))?;
        Ok(BlobStore {
            root: root.to_path_buf(),
        })
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

    /// Stream `len` bytes from `start` of the local copy: one blocking
    /// reader per download filling 1 MiB chunks, at most a few chunks ahead
    /// of the client (bounded memory, and it stops when the client goes).
    pub fn read_stream(
        &self,
        d: &Digest,
        start: u64,
        len: u64,
    ) -> impl futures::Stream<Item = io::Result<bytes::Bytes>> + Send + 'static {
        const CHUNK: usize = 1 << 20;
        let path = self.path(d);
        let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<bytes::Bytes>>(4);
        tokio::task::spawn_blocking(move || {
            use std::io::{Read, Seek};
            let mut f = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            if let Err(e) = f.seek(std::io::SeekFrom::Start(start)) {
                let _ = tx.blocking_send(Err(e));
                return;
            }
            let mut left = len;
            while left > 0 {
                let want = (left as usize).min(CHUNK);
                let mut buf = bytes::BytesMut::zeroed(want);
                let mut filled = 0;
                while filled < want {
                    match f.read(&mut buf[filled..]) {
                        Ok(0) => {
                            let _ = tx.blocking_send(Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "blob shorter than its record",
                            )));
                            return;
                        }
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            let _ = tx.blocking_send(Err(e));
                            return;
                        }
                    }
                }
                left -= want as u64;
                if tx.blocking_send(Ok(buf.freeze())).is_err() {
                    return; // the client went away
                }
            }
        });
        futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
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

    pub async fn remove(&self, d: &Digest) -> io::Result<bool> {
        match tokio::fs::remove_file(self.path(d)).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}
