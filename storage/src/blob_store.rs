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

    pub async fn open_blob(&self, d: &Digest) -> io::Result<Option<(tokio::fs::File, u64)>> {
        match tokio::fs::File::open(self.path(d)).await {
            Ok(f) => {
                let len = f.metadata().await?.len();
                Ok(Some((f, len)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
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
