//! Upload sessions: a staging file per session under `uploads/<id>/`, written
//! as bytes arrive while SHA-256 runs over them. Sessions live on disk, so
//! they survive a restart; the hash state is rebuilt from the file then.
//! A session that cannot outlive the request that opened it (a monolithic
//! upload, a replica or cache receive) is only its staging file,
//! `uploads/<id>.part`: no directory and no info file to create and delete
//! for every small push (on ext4 the inode churn alone cost more CPU than
//! the rest of a 4 KiB push).

use crate::clock::now_secs;
use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::hashing::{Hashes, Hashing};
use crate::integrity::ChunkIndex;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};

use crate::blob_store::{BlobStore, Mapped};
use crate::digest::Digest;
use crate::disk_space::{DiskReserve, NoSpace};

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("upload session '{0}' is not known")]
    Unknown(String),
    #[error("chunk starts at {got} but the upload holds {expected} bytes")]
    OutOfOrder { expected: u64, got: u64 },
    #[error("upload would exceed the size limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("uploaded content has digest {actual}, not the expected {expected}")]
    DigestMismatch { expected: String, actual: String },
    #[error("reading the request body: {0}")]
    Body(String),
    #[error("{0}")]
    NoSpace(#[from] NoSpace),
    #[error("{what} already has {limit} open upload sessions on this node; finish or cancel some (idle ones expire)")]
    TooManySessions { what: String, limit: usize },
    #[error("storage: {0}")]
    Io(#[from] io::Error),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionInfo {
    pub id: String,
    pub repo: String,
    pub started_at: u64,
    /// Who opened it (a credential id), for the per-owner cap.
    #[serde(default)]
    pub owner: Option<String>,
}

/// Open sessions allowed at once on this node, per namespace and per
/// owner (a credential); internal sessions (replica receives) have none.
#[derive(Clone, Copy, Debug)]
pub struct SessionCaps {
    pub per_namespace: usize,
    pub per_owner: usize,
}

/// A session in the map, with what the caps count it by.
struct Open {
    session: Arc<tokio::sync::Mutex<Session>>,
    namespace: String,
    owner: Option<String>,
    layout: Layout,
}

/// How a session lies on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `uploads/<id>/data` and `uploads/<id>/info.json`: resumable, and
    /// found again after a restart.
    Resumable,
    /// `uploads/<id>.part` alone: lives as long as its request (or its
    /// process), so nothing else is worth writing. For a session that ends
    /// with the request opening it (a monolithic upload, `POST ...?digest=`
    /// with its body): cheaper to open and remove, not resumable, and
    /// forgotten by a restart (which ended its request anyway).
    OneShot,
}

/// The file name of a one-shot session's staging file.
const PART: &str = ".part";

fn namespace_of(repo: &str) -> &str {
    repo.split('/').next().unwrap_or(repo)
}

struct Session {
    info: SessionInfo,
    /// Bytes in the staging file, and their hashes so far. `None` after a
    /// restart or a failed write, until rebuilt from the file.
    progress: Option<(u64, Hashes)>,
}

/// All upload sessions of this node.
pub struct Uploads {
    dir: PathBuf,
    blobs: BlobStore,
    sessions: Mutex<HashMap<String, Open>>,
    /// New bytes stop while the disk is under its reserve.
    reserve: Option<DiskReserve>,
}

/// Bytes written between checks of the disk reserve within one body.
const RESERVE_CHECK_EVERY: u64 = 16 << 20;

const WRITE_BUFFER: usize = 1 << 20;

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl Uploads {
    pub fn open(blobs: BlobStore) -> io::Result<Uploads> {
        let dir = blobs.root().join("uploads");
        std::fs::create_dir_all(&dir)?;
        Ok(Uploads {
            dir,
            blobs,
            sessions: Mutex::new(HashMap::new()),
            reserve: None,
        })
    }

    /// Refuse new sessions and new bytes while the disk's free space is
    /// under `reserve`.
    pub fn with_reserve(mut self, reserve: DiskReserve) -> Uploads {
        self.reserve = Some(reserve);
        self
    }

    fn check_space(&self) -> Result<(), UploadError> {
        match &self.reserve {
            Some(r) => Ok(r.check()?),
            None => Ok(()),
        }
    }

    fn data_path(&self, id: &str) -> PathBuf {
        self.path_in(id, self.layout_of(id))
    }

    fn path_in(&self, id: &str, layout: Layout) -> PathBuf {
        match layout {
            Layout::Resumable => self.dir.join(id).join("data"),
            Layout::OneShot => self.dir.join(format!("{id}{PART}")),
        }
    }

    /// A session not open in this process is a resumable one from before a
    /// restart (one-shot sessions do not outlive their process).
    fn layout_of(&self, id: &str) -> Layout {
        self.sessions
            .lock()
            .expect("sessions lock")
            .get(id)
            .map_or(Layout::Resumable, |o| o.layout)
    }

    /// Remove the files of session `id` as `layout` lays them out.
    async fn remove_files(&self, id: &str, layout: Layout) -> io::Result<()> {
        match layout {
            Layout::Resumable => tokio::fs::remove_dir_all(self.dir.join(id)).await,
            Layout::OneShot => tokio::fs::remove_file(self.path_in(id, layout)).await,
        }
    }

    /// Open a new session for `repo`; `id` is chosen by the caller (it names
    /// the node holding the staging file).
    pub async fn create(&self, id: &str, repo: &str) -> Result<SessionInfo, UploadError> {
        self.create_capped(id, repo, None, None, Layout::Resumable)
            .await
    }

    /// Open a new session for `repo` on behalf of `owner`, refused when its
    /// namespace or its owner already has as many open sessions as `caps`
    /// allow.
    pub async fn create_capped(
        &self,
        id: &str,
        repo: &str,
        owner: Option<&str>,
        caps: Option<SessionCaps>,
        layout: Layout,
    ) -> Result<SessionInfo, UploadError> {
        self.open_session(id, repo, owner, caps, Hashes::indexing(), layout)
            .await
    }

    /// Open an internal session whose integrity index comes from its
    /// sender (`finish_with`): a replica of a chunked upload, whose bytes
    /// the sending node has indexed already. Only the SHA-256 is computed
    /// here as they arrive.
    pub async fn create_with_given_index(&self, id: &str) -> Result<SessionInfo, UploadError> {
        self.open_session(id, "", None, None, Hashes::default(), Layout::Resumable)
            .await
    }

    async fn open_session(
        &self,
        id: &str,
        repo: &str,
        owner: Option<&str>,
        caps: Option<SessionCaps>,
        hashes: Hashes,
        layout: Layout,
    ) -> Result<SessionInfo, UploadError> {
        self.check_space()?;
        let info = SessionInfo {
            id: id.to_string(),
            repo: repo.to_string(),
            started_at: now_secs(),
            owner: owner.map(str::to_string),
        };
        let session = Session {
            info: info.clone(),
            progress: Some((0, hashes)),
        };
        let namespace = namespace_of(repo).to_string();
        {
            // Count and insert under one lock, so concurrent opens cannot
            // both take the last place.
            let mut map = self.sessions.lock().expect("sessions lock");
            if let Some(caps) = caps {
                let (mut in_ns, mut of_owner) = (0, 0);
                for o in map.values() {
                    in_ns += usize::from(o.namespace == namespace);
                    of_owner += usize::from(owner.is_some() && o.owner.as_deref() == owner);
                }
                if in_ns >= caps.per_namespace {
                    return Err(UploadError::TooManySessions {
                        what: format!("namespace '{namespace}'"),
                        limit: caps.per_namespace,
                    });
                }
                if of_owner >= caps.per_owner {
                    return Err(UploadError::TooManySessions {
                        what: "this credential".to_string(),
                        limit: caps.per_owner,
                    });
                }
            }
            map.insert(
                id.to_string(),
                Open {
                    session: Arc::new(tokio::sync::Mutex::new(session)),
                    namespace,
                    owner: info.owner.clone(),
                    layout,
                },
            );
        }
        // One blocking hop for the files, not one per file.
        let (dir, data) = (self.dir.join(id), self.path_in(id, layout));
        // Only a resumable session keeps its info on disk.
        let json = match layout {
            Layout::Resumable => Some(serde_json::to_vec(&info).map_err(io::Error::other)?),
            Layout::OneShot => None,
        };
        let made = tokio::task::spawn_blocking(move || {
            if let Some(json) = json {
                std::fs::create_dir_all(&dir)?;
                std::fs::write(dir.join("info.json"), json)?;
            }
            std::fs::File::create(data).map(drop)
        })
        .await
        .map_err(io::Error::other)
        .and_then(|r| r);
        if let Err(e) = made {
            self.sessions.lock().expect("sessions lock").remove(id);
            let _ = self.remove_files(id, layout).await;
            return Err(e.into());
        }
        Ok(info)
    }

    async fn session(&self, id: &str) -> Result<Arc<tokio::sync::Mutex<Session>>, UploadError> {
        if !valid_id(id) {
            return Err(UploadError::Unknown(id.to_string()));
        }
        if let Some(o) = self.sessions.lock().expect("sessions lock").get(id) {
            return Ok(o.session.clone());
        }
        // Not in memory: a session from before a restart, if its files exist.
        let info_bytes = match tokio::fs::read(self.dir.join(id).join("info.json")).await {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(UploadError::Unknown(id.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        let info: SessionInfo = serde_json::from_slice(&info_bytes)
            .map_err(|_| UploadError::Unknown(id.to_string()))?;
        let mut map = self.sessions.lock().expect("sessions lock");
        Ok(map
            .entry(id.to_string())
            .or_insert_with(|| Open {
                namespace: namespace_of(&info.repo).to_string(),
                owner: info.owner.clone(),
                layout: Layout::Resumable,
                session: Arc::new(tokio::sync::Mutex::new(Session {
                    info,
                    progress: None,
                })),
            })
            .session
            .clone())
    }

    /// Rebuild (size, hashes) from the staging file.
    async fn progress(&self, s: &mut Session) -> Result<(u64, Hashes), UploadError> {
        if let Some(p) = s.progress.take() {
            return Ok(p);
        }
        let mut f = tokio::fs::File::open(self.data_path(&s.info.id))
            .await
            .map_err(|e| gone_if_missing(e, &s.info.id))?;
        let mut h = Hashes::indexing();
        let mut buf = vec![0u8; WRITE_BUFFER];
        let mut size = 0u64;
        loop {
            let n = f.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            size += n as u64;
        }
        Ok((size, h))
    }

    /// Bytes in the staging files of `namespace`'s open sessions on this
    /// node (they count against its quota while the uploads are open).
    pub fn staged_bytes(&self, namespace: &str) -> u64 {
        let ids: Vec<String> = self
            .sessions
            .lock()
            .expect("sessions lock")
            .iter()
            .filter(|(_, o)| o.namespace == namespace)
            .map(|(id, _)| id.clone())
            .collect();
        ids.iter()
            .filter_map(|id| std::fs::metadata(self.data_path(id)).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Whether session `id` is open in this process (cheap: no disk access;
    /// a session from before a restart is not counted until it is used).
    pub fn contains(&self, id: &str) -> bool {
        self.sessions
            .lock()
            .expect("sessions lock")
            .contains_key(id)
    }

    /// Session info and the number of bytes received so far.
    pub async fn status(&self, id: &str) -> Result<(SessionInfo, u64), UploadError> {
        let s = self.session(id).await?;
        let mut s = s.lock().await;
        let (size, h) = self.progress(&mut s).await?;
        s.progress = Some((size, h));
        Ok((s.info.clone(), size))
    }

    /// Append a body to the session. With `start`, the chunk must begin
    /// exactly where the upload ends. Returns the new size.
    pub async fn append<S, E>(
        &self,
        id: &str,
        start: Option<u64>,
        body: S,
        limit: u64,
    ) -> Result<u64, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let s = self.session(id).await?;
        let mut s = s.lock().await;
        let (size, hasher) = self.progress(&mut s).await?;
        if let Some(start) = start {
            if start != size {
                s.progress = Some((size, hasher));
                return Err(UploadError::OutOfOrder {
                    expected: size,
                    got: start,
                });
            }
        }
        match self
            .write_body(&s.info.id, size, Some(hasher), body, limit, 0)
            .await
        {
            Ok((size, hasher)) => {
                s.progress = hasher.map(|h| (size, h));
                Ok(size)
            }
            Err(e) => {
                // Keep what reached the file consistent with what the next
                // request sees: cut back to the last acknowledged size.
                let f = tokio::fs::OpenOptions::new()
                    .write(true)
                    .open(self.data_path(&s.info.id))
                    .await
                    .map_err(|e| gone_if_missing(e, &s.info.id))?;
                f.set_len(size).await?;
                s.progress = None;
                Err(e)
            }
        }
    }

    /// Append `body` to the session's file from `size` on, hashing it
    /// with `hasher`; at most `limit` bytes in all. The writes wait for the
    /// disk once they are more than `lag` bytes (plus a window) ahead of
    /// it (see `Writeback`).
    async fn write_body<S, E>(
        &self,
        id: &str,
        mut size: u64,
        hasher: Option<Hashes>,
        mut body: S,
        limit: u64,
        lag: u64,
    ) -> Result<(u64, Option<Hashes>), UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let file = tokio::fs::OpenOptions::new()
            .append(true)
            .open(self.data_path(id))
            .await
            .map_err(|e| gone_if_missing(e, id))?;
        let mut w = BufWriter::with_capacity(WRITE_BUFFER, file);
        let mut writeback = Writeback::from(size, lag);
        let mut next_check = size;
        let mut hashing = hasher.map(Hashing::new);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| UploadError::Body(e.to_string()))?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(UploadError::TooLarge { limit });
            }
            if size >= next_check {
                self.check_space()?;
                next_check = size + RESERVE_CHECK_EVERY;
            }
            if let Some(h) = &mut hashing {
                h.update(&chunk).await?;
            }
            w.write_all(&chunk).await?;
            if writeback.due(size) {
                w.flush().await?;
                writeback.advance(w.get_ref(), size).await;
            }
        }
        w.flush().await?;
        let hashes = match hashing {
            Some(h) => Some(h.finish().await?),
            None => None,
        };
        Ok((size, hashes))
    }

    /// Check the upload against `expected` and map its staging file, so
    /// copies can stream to other nodes while `finish` makes the local one
    /// durable. A mismatch ends the session, as in `finish`.
    pub async fn verified(&self, id: &str, expected: &Digest) -> Result<Mapped, UploadError> {
        let s = self.session(id).await?;
        let (size, _s) = self.checked(id, s.lock().await, expected).await?;
        let mapped = Mapped::open(self.data_path(id)).await?;
        if mapped.len() != size {
            return Err(UploadError::Io(io::Error::other(format!(
                "staging file holds {} bytes, the upload {size}",
                mapped.len()
            ))));
        }
        Ok(mapped)
    }

    /// The upload's size if its bytes hash to `expected`, with the session
    /// still locked; a mismatch ends the session.
    async fn checked<'a>(
        &self,
        id: &str,
        mut s: tokio::sync::MutexGuard<'a, Session>,
        expected: &Digest,
    ) -> Result<(u64, tokio::sync::MutexGuard<'a, Session>), UploadError> {
        match self.check_digest(&mut s, expected).await {
            Ok(size) => Ok((size, s)),
            Err(e @ UploadError::DigestMismatch { .. }) => {
                drop(s);
                self.cancel(id).await?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// The upload's size if its bytes hash to `expected`.
    async fn check_digest(&self, s: &mut Session, expected: &Digest) -> Result<u64, UploadError> {
        let (size, hasher) = self.progress(s).await?;
        let actual = Digest::from_sha256_bytes(&hasher.sha.clone().finalize());
        s.progress = Some((size, hasher));
        if &actual != expected {
            return Err(UploadError::DigestMismatch {
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(size)
    }

    /// The integrity index of the upload's bytes if they hash to
    /// `expected` (what a replica of it is sealed with); a mismatch ends
    /// the session, as in `finish`.
    pub async fn index_of(
        &self,
        id: &str,
        expected: &Digest,
    ) -> Result<Option<ChunkIndex>, UploadError> {
        let s = self.session(id).await?;
        let (_, s) = self.checked(id, s.lock().await, expected).await?;
        Ok(s.progress
            .as_ref()
            .and_then(|(_, h)| h.chunks.as_ref().map(|c| c.finish())))
    }

    /// Verify the upload against `expected`, make it durable and move it into
    /// the blob store. Returns the blob size. The session ends either way,
    /// except on I/O errors.
    pub async fn finish(&self, id: &str, expected: &Digest) -> Result<u64, UploadError> {
        self.finish_with(id, expected, None).await
    }

    /// `finish`, with the integrity index the sender of a replica made
    /// (`create_with_given_index`; encoded, as `ChunkIndex::to_bytes`). It
    /// is used only where this node did not index the bytes itself, and
    /// only once their SHA-256 here matched `expected`: the sender's index
    /// describes bytes that hash to the digest, and so these. One that
    /// does not decode for this size is dropped (the first read indexes
    /// the copy again).
    pub async fn finish_with(
        &self,
        id: &str,
        expected: &Digest,
        given: Option<&[u8]>,
    ) -> Result<u64, UploadError> {
        let s = self.session(id).await?;
        let (size, s) = self.checked(id, s.lock().await, expected).await?;
        // Made from the bytes whose SHA-256 was just found to match.
        let own = s
            .progress
            .as_ref()
            .and_then(|(_, h)| h.chunks.as_ref().map(|c| c.finish()));
        let index = own.or_else(|| {
            let b = given.filter(|b| !b.is_empty())?;
            ChunkIndex::from_bytes(b, size)
                .inspect_err(|e| {
                    tracing::warn!(session = id, "the sender's index is unusable: {e}")
                })
                .ok()
        });
        self.install(id, expected, index.as_ref()).await?;
        drop(s);
        self.cancel(id).await?;
        Ok(size)
    }

    /// Make session `id`'s verified bytes durable and move them into the
    /// blob store as `expected`, with `index` beside them.
    async fn install(
        &self,
        id: &str,
        expected: &Digest,
        index: Option<&ChunkIndex>,
    ) -> Result<(), UploadError> {
        let data = self.data_path(id);
        // No staging file to sync or rename: a cancel won the race.
        self.blobs
            .install(&data, expected, index)
            .await
            .map_err(|e| gone_if_missing(e, id))
    }

    /// Remove sessions whose staging file has not been written for `idle`
    /// (abandoned uploads would otherwise hold disk forever). Returns how
    /// many were removed.
    pub async fn expire(&self, idle: std::time::Duration) -> Result<usize, UploadError> {
        let mut removed = 0;
        let mut dir = tokio::fs::read_dir(&self.dir).await?;
        while let Some(entry) = dir.next_entry().await? {
            let name = entry.file_name().to_string_lossy().into_owned();
            // A one-shot session's file, or a resumable session's dir.
            let id = name.strip_suffix(PART).unwrap_or(&name).to_string();
            if !valid_id(&id) {
                continue;
            }
            let last_write = match tokio::fs::metadata(self.data_path(&id))
                .await
                .and_then(|m| m.modified())
            {
                Ok(t) => t,
                // A session dir without data is a half-created session.
                Err(_) => entry.metadata().await?.modified()?,
            };
            if last_write.elapsed().unwrap_or_default() < idle {
                continue;
            }
            // Skip sessions busy right now (a request holds their lock).
            let busy = self
                .sessions
                .lock()
                .expect("sessions lock")
                .get(&id)
                .is_some_and(|o| o.session.try_lock().is_err());
            if busy {
                continue;
            }
            match self.cancel(&id).await {
                Ok(()) | Err(UploadError::Unknown(_)) => removed += 1,
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    /// Receive a whole blob of `size` bytes from `body` into a new internal
    /// session `id` and install it as `expected`. The staging file goes on
    /// any failure, and also when this future is dropped unfinished (a
    /// caller's timeout, a peer gone): nothing is left for the janitor.
    pub async fn receive<S, E>(
        &self,
        id: &str,
        body: S,
        size: u64,
        expected: &Digest,
    ) -> Result<u64, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut staging = self.staging(id, Hashes::indexing()).await?;
        whole(self.append(id, None, body, size).await?, size)?;
        let installed = self.finish(id, expected).await?;
        staging.done = true;
        Ok(installed)
    }

    /// `receive`, from a sender that indexed the bytes itself and sends its
    /// integrity index after them (encoded, as `ChunkIndex::to_bytes`):
    /// `index` yields what it sent once `body` has ended (`None` if
    /// nothing). Only the SHA-256 is computed here; the sender's index is
    /// kept only once it matched (see `finish_with`), and a copy without
    /// one is indexed at its first read.
    pub async fn receive_indexed<S, E>(
        &self,
        id: &str,
        body: S,
        size: u64,
        expected: &Digest,
        index: impl FnOnce() -> Option<Bytes>,
    ) -> Result<u64, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut staging = self.staging(id, Hashes::default()).await?;
        whole(self.append(id, None, body, size).await?, size)?;
        let given = index();
        let installed = self.finish_with(id, expected, given.as_deref()).await?;
        staging.done = true;
        Ok(installed)
    }

    /// Like `receive`, for bytes that are hashed elsewhere as they pass (a
    /// non-owner's pull checks them against the digest for its client
    /// anyway): the copy is written as it comes, and installed only when
    /// `verified` yields the integrity index of exactly these bytes, which
    /// it does only once their SHA-256 has matched `expected`.
    pub async fn receive_verified<S, E>(
        &self,
        id: &str,
        body: S,
        size: u64,
        expected: &Digest,
        verified: tokio::sync::oneshot::Receiver<ChunkIndex>,
    ) -> Result<u64, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut staging = self.staging(id, Hashes::default()).await?;
        self.check_space()?;
        // A reader receives these bytes as they are written: the writes may
        // run ahead of the disk (up to `FILL_LAG`) instead of pacing it.
        let (got, _) = self.write_body(id, 0, None, body, size, FILL_LAG).await?;
        whole(got, size)?;
        let index = verified.await.map_err(|_| {
            UploadError::Body(format!("the bytes fetched did not hash to {expected}"))
        })?;
        if index.size() != size {
            return Err(UploadError::Io(io::Error::other(format!(
                "the index describes {} bytes, the copy has {size}",
                index.size()
            ))));
        }
        self.install(id, expected, Some(&index)).await?;
        staging.done = true;
        self.cancel(id).await?;
        Ok(size)
    }

    /// A new internal session computing `hashes`, removed again unless
    /// marked done.
    async fn staging<'a>(
        &'a self,
        id: &'a str,
        hashes: Hashes,
    ) -> Result<Staging<'a>, UploadError> {
        self.open_session(id, "", None, None, hashes, Layout::OneShot)
            .await?;
        Ok(Staging {
            uploads: self,
            id,
            done: false,
        })
    }

    /// Remove the session and its staging file.
    pub async fn cancel(&self, id: &str) -> Result<(), UploadError> {
        if !valid_id(id) {
            return Err(UploadError::Unknown(id.to_string()));
        }
        // Wait for a request on the session to finish (its PATCH ends
        // whole, not cut in the middle), but not for a stalled body: after
        // `CANCEL_WAIT` the session goes anyway, and that request ends
        // with BLOB_UPLOAD_UNKNOWN (see `gone_if_missing`).
        let session = self
            .sessions
            .lock()
            .expect("sessions lock")
            .get(id)
            .map(|o| o.session.clone());
        let _busy = match &session {
            Some(s) => tokio::time::timeout(CANCEL_WAIT, s.lock()).await.ok(),
            None => None,
        };
        let open = self
            .sessions
            .lock()
            .expect("sessions lock")
            .remove(id)
            .map(|o| o.layout);
        let existed = open.is_some();
        let removed = match open {
            Some(layout) => self.remove_files(id, layout).await,
            // Not open here: a resumable session from before a restart, or
            // a one-shot one its process left behind (found by `expire`).
            None => match self.remove_files(id, Layout::Resumable).await {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.remove_files(id, Layout::OneShot).await
                }
                r => r,
            },
        };
        match removed {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound && existed => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(UploadError::Unknown(id.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// An internal receive that got `got` of its `size` bytes: short is an error.
fn whole(got: u64, size: u64) -> Result<(), UploadError> {
    if got == size {
        return Ok(());
    }
    Err(UploadError::Io(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("got {got} of {size} bytes"),
    )))
}

/// How long a DELETE waits for a request in progress on its session.
const CANCEL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A staging file that is not there: the session was cancelled (a DELETE
/// racing this request, or the janitor), so the upload is unknown now, not
/// a storage failure.
fn gone_if_missing(e: io::Error, id: &str) -> UploadError {
    if e.kind() == io::ErrorKind::NotFound {
        UploadError::Unknown(id.to_string())
    } else {
        UploadError::Io(e)
    }
}

/// Streaming writes hand their data to the disk window by window instead
/// of leaving it all to the final fsync: each full window starts its
/// writeback, and the previous window, once written, leaves the page cache.
/// A large upload then keeps a few windows of dirty pages, not gigabytes:
/// the fsync before the 201 has little left to do, uploads do not stall on
/// the kernel's dirty-page throttle, and the cache reuses pages instead of
/// growing (fresh pages are costly, markedly so in VMs). This runs beside
/// the writes, one job at a time, and is advice only: durability still
/// comes from the fsync in `finish`.
///
/// With a `lag`, the writes do not wait for a job still running until they
/// are more than `lag` bytes past the start of its window; the next job
/// then covers everything written meanwhile. A cache fill uses this: its
/// reader receives the bytes as they are written, so on a disk slower than
/// the network it would otherwise be served at the disk's pace.
struct Writeback {
    /// Start of the span not yet handed to a job.
    from: u64,
    /// The span whose writeback was started last.
    started: Option<(u64, u64)>,
    /// A descriptor of the file of its own, for the background work.
    file: Option<Arc<std::fs::File>>,
    pending: Option<tokio::task::JoinHandle<()>>,
    /// Bytes the writes may run ahead of the last span handed to the disk.
    lag: u64,
}

const WRITEBACK_WINDOW: u64 = 16 << 20;

/// How far a cache fill's writes may run ahead of the writeback running:
/// with that job's own span, at most about twice this waits in the page
/// cache, and so for the fsync before the copy is kept (inside
/// `cache::STALLED_FILL` down to about 100 MB/s).
const FILL_LAG: u64 = 512 << 20;

impl Writeback {
    fn from(offset: u64, lag: u64) -> Self {
        Writeback {
            from: offset,
            started: None,
            file: None,
            pending: None,
            lag,
        }
    }

    /// Whether `advance` has work at `size`: a full window, and no job
    /// still running that the writes may stay ahead of. (A yes costs the
    /// caller a flush of its buffer, so it is not said of every chunk
    /// while the writes run ahead.)
    fn due(&self, size: u64) -> bool {
        if size - self.from < WRITEBACK_WINDOW {
            return false;
        }
        let running = self.pending.as_ref().is_some_and(|job| !job.is_finished());
        let ahead = size - self.started.map_or(0, |(at, _)| at);
        !(running && ahead <= self.lag)
    }

    /// `file` holds every byte up to `size` (flushed by the caller).
    async fn advance(&mut self, file: &tokio::fs::File, size: u64) {
        if let Some(job) = self.pending.take() {
            let _ = job.await;
        }
        let window = (self.from, size - self.from);
        let previous = self.started.replace(window);
        self.from = size;
        if self.file.is_none() {
            let Ok(own) = file.try_clone().await else {
                return;
            };
            self.file = Some(Arc::new(own.into_std().await));
        }
        let Some(file) = self.file.clone() else {
            return;
        };
        self.pending = Some(tokio::task::spawn_blocking(move || {
            writeback(&file, window, previous)
        }));
    }
}

#[cfg(target_os = "linux")]
fn writeback(file: &std::fs::File, window: (u64, u64), previous: Option<(u64, u64)>) {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: plain syscalls on a descriptor `file` keeps open; errors are
    // ignored because this is only advice to the kernel.
    unsafe {
        libc::sync_file_range(
            fd,
            window.0 as i64,
            window.1 as i64,
            libc::SYNC_FILE_RANGE_WRITE,
        );
        if let Some((at, len)) = previous {
            libc::sync_file_range(
                fd,
                at as i64,
                len as i64,
                libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER,
            );
            libc::posix_fadvise(fd, at as i64, len as i64, libc::POSIX_FADV_DONTNEED);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn writeback(_: &std::fs::File, _: (u64, u64), _: Option<(u64, u64)>) {}

/// Removes an internal session that did not finish. Synchronous, because
/// it runs in `Drop` (possibly outside a runtime): one small directory.
struct Staging<'a> {
    uploads: &'a Uploads,
    id: &'a str,
    done: bool,
}

impl Drop for Staging<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.uploads
            .sessions
            .lock()
            .expect("sessions lock")
            .remove(self.id);
        if let Err(e) = std::fs::remove_file(self.uploads.path_in(self.id, Layout::OneShot)) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(
                    session = self.id,
                    "removing an unfinished staging file: {e}"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, io::Error>> + Unpin {
        futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    async fn store() -> (tempfile::TempDir, Uploads, BlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path()).unwrap();
        (dir, Uploads::open(blobs.clone()).unwrap(), blobs)
    }

    #[tokio::test]
    async fn open_sessions_are_capped_per_namespace_and_per_owner() {
        let (_d, up, _blobs) = store().await;
        let caps = Some(SessionCaps {
            per_namespace: 3,
            per_owner: 2,
        });
        up.create_capped("a1", "acme/app", Some("c1"), caps, Layout::Resumable)
            .await
            .unwrap();
        up.create_capped("a2", "acme/web", Some("c1"), caps, Layout::Resumable)
            .await
            .unwrap();
        let e = up
            .create_capped("a3", "acme/app", Some("c1"), caps, Layout::Resumable)
            .await
            .unwrap_err();
        assert!(
            matches!(e, UploadError::TooManySessions { limit: 2, .. }),
            "{e}"
        );
        up.create_capped("a4", "acme/app", Some("c2"), caps, Layout::Resumable)
            .await
            .unwrap();
        let e = up
            .create_capped("a5", "acme/app", Some("c3"), caps, Layout::Resumable)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("namespace 'acme'"), "{e}");
        // Another namespace, and internal sessions, are not held back.
        up.create_capped("b1", "globex/app", Some("c3"), caps, Layout::Resumable)
            .await
            .unwrap();
        up.create("r1", "").await.unwrap();
        // A refused open leaves nothing behind; a cancel frees a place.
        assert!(!up.dir.join("a5").exists());
        up.cancel("a1").await.unwrap();
        up.create_capped("a6", "acme/app", Some("c1"), caps, Layout::Resumable)
            .await
            .unwrap();
    }

    /// DELETE of a session while a PATCH's body is still arriving: the
    /// PATCH then fails (its client went away) and finds the file gone.
    #[tokio::test]
    async fn a_cancel_racing_an_append_leaves_the_upload_unknown() {
        let (_d, up, _blobs) = store().await;
        up.create("u1", "ns/r").await.unwrap();
        let (polled_tx, polled_rx) = tokio::sync::oneshot::channel::<()>();
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let body = Box::pin(futures::stream::unfold(
            Some((polled_tx, go_rx)),
            |st| async move {
                let (polled, go) = st?;
                let _ = polled.send(());
                let _ = go.await;
                Some((Err::<Bytes, _>(io::Error::other("client went away")), None))
            },
        ));
        let up = Arc::new(up);
        let appending = tokio::spawn({
            let up = up.clone();
            async move { up.append("u1", Some(0), body, 100).await }
        });
        // The append has opened the staging file and waits for the body.
        polled_rx.await.unwrap();
        up.cancel("u1").await.unwrap();
        go_tx.send(()).unwrap();
        let r = tokio::time::timeout(std::time::Duration::from_secs(10), appending)
            .await
            .expect("the append ends")
            .unwrap();
        assert!(matches!(r, Err(UploadError::Unknown(_))), "{r:?}");
        assert!(matches!(
            up.status("u1").await,
            Err(UploadError::Unknown(_))
        ));
    }

    /// DELETE of a session while a PATCH is finishing waits for it: the
    /// PATCH completes whole, then the session is gone.
    #[tokio::test]
    async fn a_cancel_waits_for_an_append_in_progress() {
        let (_d, up, _blobs) = store().await;
        up.create("u1", "ns/r").await.unwrap();
        let (polled_tx, polled_rx) = tokio::sync::oneshot::channel::<()>();
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let body = Box::pin(futures::stream::unfold(
            Some((polled_tx, go_rx)),
            |st| async move {
                let (polled, go) = st?;
                let _ = polled.send(());
                let _ = go.await;
                Some((Ok::<_, io::Error>(Bytes::from_static(b"whole")), None))
            },
        ));
        let up = Arc::new(up);
        let appending = tokio::spawn({
            let up = up.clone();
            async move { up.append("u1", Some(0), body, 100).await }
        });
        polled_rx.await.unwrap();
        let cancelling = tokio::spawn({
            let up = up.clone();
            async move { up.cancel("u1").await }
        });
        // Removing the session takes milliseconds; the cancel is still
        // waiting for the append after far longer.
        let mut cancelling = cancelling;
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(500), &mut cancelling)
                .await
                .is_err(),
            "the cancel did not wait for the append"
        );
        go_tx.send(()).unwrap();
        let appended = appending.await.unwrap();
        assert_eq!(appended.unwrap(), 5);
        cancelling.await.unwrap().unwrap();
        assert!(matches!(
            up.status("u1").await,
            Err(UploadError::Unknown(_))
        ));
    }

    #[tokio::test]
    async fn chunks_in_order_make_the_blob() {
        let (_d, up, blobs) = store().await;
        up.create("u1", "ns/r").await.unwrap();
        assert_eq!(
            up.append("u1", Some(0), body(&[b"hello "]), 100)
                .await
                .unwrap(),
            6
        );
        assert_eq!(
            up.append("u1", Some(6), body(&[b"world"]), 100)
                .await
                .unwrap(),
            11
        );
        let d = Digest::of(b"hello world");
        assert_eq!(up.finish("u1", &d).await.unwrap(), 11);
        assert_eq!(std::fs::read(blobs.path(&d)).unwrap(), b"hello world");
        assert!(matches!(
            up.status("u1").await,
            Err(UploadError::Unknown(_))
        ));
    }

    fn staged(dir: &std::path::Path) -> Vec<String> {
        std::fs::read_dir(dir.join("uploads"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[tokio::test]
    async fn a_received_blob_is_installed_and_leaves_no_session() {
        let (dir, up, blobs) = store().await;
        let d = Digest::of(b"hello world");
        let n = up
            .receive("replica-1", body(&[b"hello ", b"world"]), 11, &d)
            .await
            .unwrap();
        assert_eq!(n, 11);
        assert_eq!(std::fs::read(blobs.path(&d)).unwrap(), b"hello world");
        assert!(staged(dir.path()).is_empty());
        // Short or wrong bodies are refused and leave nothing either.
        assert!(up
            .receive("replica-2", body(&[b"hello"]), 11, &d)
            .await
            .is_err());
        let other = Digest::of(b"other");
        assert!(up
            .receive("replica-3", body(&[b"hello world"]), 11, &other)
            .await
            .is_err());
        assert!(!blobs.path(&other).exists());
        assert!(staged(dir.path()).is_empty(), "{:?}", staged(dir.path()));
    }

    /// 2.5 chunks of bytes no two chunks share.
    fn layer() -> Vec<u8> {
        let n = (crate::integrity::CHUNK * 5 / 2) as usize;
        (0..n).map(|i| (i % 251) as u8 ^ (i >> 20) as u8).collect()
    }

    async fn read_all(
        blobs: &BlobStore,
        d: &Digest,
        start: u64,
        len: u64,
    ) -> (Vec<u8>, Option<io::Error>) {
        let mut s = match blobs.read_stream_checked(d, start, len).await {
            Ok(s) => Box::pin(s),
            // Refused before any byte (a blob checked whole failed).
            Err(e) => return (Vec::new(), Some(e)),
        };
        let mut got = Vec::new();
        while let Some(c) = s.next().await {
            match c {
                Ok(c) => got.extend_from_slice(&c),
                Err(e) => return (got, Some(e)),
            }
        }
        (got, None)
    }

    #[tokio::test]
    async fn reads_check_every_chunk_they_touch_and_stop_before_a_rotten_one() {
        let (_dir, up, blobs) = store().await;
        let b = layer();
        let d = Digest::of(&b);
        let len = b.len() as u64;
        // Received in pieces that do not line up with the chunks.
        let parts: Vec<Result<Bytes, io::Error>> = b
            .chunks(300_001)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        up.receive("r1", futures::stream::iter(parts), len, &d)
            .await
            .unwrap();
        assert!(blobs.has_index(&d).await, "the upload made the index");
        let mb = crate::integrity::CHUNK;
        let (got, err) = read_all(&blobs, &d, mb - 10, mb + 20).await;
        assert!(err.is_none());
        assert_eq!(got, &b[(mb - 10) as usize..(2 * mb + 10) as usize]);

        // One byte rots in the second chunk.
        let mut rotten = b.clone();
        rotten[(mb + 7) as usize] ^= 0x01;
        std::fs::write(blobs.path(&d), &rotten).unwrap();
        // A range inside the first chunk is still served whole.
        let (got, err) = read_all(&blobs, &d, 5, 1000).await;
        assert!(err.is_none());
        assert_eq!(got, &b[5..1005]);
        // A range into the second chunk stops where the rot starts: the
        // first chunk's bytes go, none of the second's.
        let (got, err) = read_all(&blobs, &d, mb - 4, 100).await;
        let err = err.expect("the rotten chunk is refused");
        assert!(err.to_string().contains("failed verification"), "{err}");
        assert_eq!(got, &b[(mb - 4) as usize..mb as usize]);
        // And the copy is put aside for the repair loop.
        let gone = async {
            while blobs.path(&d).exists() {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), gone)
            .await
            .expect("the rotten copy is quarantined");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// For any blob size, range and rotten byte, the checked reader
        /// returns exactly the stored bytes of a range that misses the rot,
        /// and for one that touches it, an error after at most the bytes
        /// before the rotten chunk.
        #[test]
        fn the_checked_reader_serves_exact_ranges_and_refuses_rotten_chunks(
            size in 1u64..(crate::integrity::CHUNK * 7 / 2),
            at in 0.0f64..1.0,
            span in 0.0f64..1.0,
            rot in proptest::option::of(0.0f64..1.0),
        ) {
            let start = ((size - 1) as f64 * at) as u64;
            let len = 1 + ((size - start - 1) as f64 * span) as u64;
            let rot = rot.map(|r| ((size - 1) as f64 * r) as u64);
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let (_dir, up, blobs) = store().await;
                let b: Vec<u8> = (0..size).map(|i| (i * 7 % 253) as u8).collect();
                let d = Digest::of(&b);
                up.receive("p", futures::stream::iter([Ok::<_, io::Error>(Bytes::from(b.clone()))]), size, &d)
                    .await
                    .unwrap();
                if let Some(r) = rot {
                    let mut rotten = b.clone();
                    rotten[r as usize] ^= 0x10;
                    std::fs::write(blobs.path(&d), &rotten).unwrap();
                }
                let (got, err) = read_all(&blobs, &d, start, len).await;
                let chunk = crate::integrity::CHUNK;
                let want = &b[start as usize..(start + len) as usize];
                match rot.filter(|r| r / chunk >= start / chunk && r / chunk <= (start + len - 1) / chunk) {
                    None => {
                        assert!(err.is_none(), "{err:?}");
                        assert!(got == want, "the range differs");
                    }
                    Some(r) => {
                        assert!(err.is_some(), "a range over a rotten chunk was served");
                        let clean = (r / chunk * chunk).saturating_sub(start) as usize;
                        assert!(got.len() <= clean, "bytes of the rotten chunk went out");
                        assert!(got == want[..got.len()], "the bytes served differ");
                    }
                }
            });
        }
    }

    #[tokio::test]
    async fn a_copy_without_an_index_is_hashed_whole_once_and_indexed() {
        let (_dir, _up, blobs) = store().await;
        let b = layer();
        let d = Digest::of(&b);
        std::fs::create_dir_all(blobs.path(&d).parent().unwrap()).unwrap();
        std::fs::write(blobs.path(&d), &b).unwrap();
        assert!(!blobs.has_index(&d).await);
        let (got, err) = read_all(&blobs, &d, 100, 200).await;
        assert!(err.is_none());
        assert_eq!(got, &b[100..300]);
        assert!(blobs.has_index(&d).await, "the first read made the index");

        // A torn index counts as none, and scrub writes it again.
        std::fs::write(blobs.index_path(&d), b"torn").unwrap();
        let (got, _) = read_all(&blobs, &d, 0, b.len() as u64).await;
        assert_eq!(got, b);
        std::fs::write(blobs.index_path(&d), b"torn").unwrap();
        assert_eq!(blobs.verify(&d).await.unwrap(), Some(true));
        let idx = std::fs::read(blobs.index_path(&d)).unwrap();
        assert_eq!(
            crate::integrity::ChunkIndex::from_bytes(&idx, b.len() as u64),
            Ok(crate::integrity::ChunkIndex::of(&b))
        );

        // A corrupt copy without an index is never served: it is put aside
        // and reported missing, so the caller reads another holder.
        let mut rotten = b.clone();
        rotten[7] ^= 0x80;
        let bad = Digest::of(b"some other layer");
        std::fs::create_dir_all(blobs.path(&bad).parent().unwrap()).unwrap();
        std::fs::write(blobs.path(&bad), &rotten).unwrap();
        let e = match blobs.read_stream_checked(&bad, 0, 10).await {
            Err(e) => e,
            Ok(_) => panic!("a corrupt copy was opened for reading"),
        };
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        assert!(!blobs.path(&bad).exists());
        assert!(!blobs.has_index(&bad).await);
    }

    /// Scrub hashes a blob larger than its budget over several calls,
    /// with the same verdict and index as in one: a copy of 2.5 chunks
    /// with a budget of one chunk takes three.
    #[tokio::test]
    async fn a_scrub_spreads_a_large_blob_over_passes() {
        use crate::blob_store::Scrub;
        let (_dir, _up, blobs) = store().await;
        let b = layer();
        let mut rotten = b.clone();
        *rotten.last_mut().unwrap() ^= 1;
        for (bytes, good) in [(&b, true), (&rotten, false)] {
            let d = Digest::of(&b);
            std::fs::create_dir_all(blobs.path(&d).parent().unwrap()).unwrap();
            std::fs::write(blobs.path(&d), bytes).unwrap();
            let _ = std::fs::remove_file(blobs.index_path(&d));
            let (mut state, mut calls) = (None, 0);
            let verdict = loop {
                calls += 1;
                match blobs
                    .verify_part(&d, state.take(), crate::integrity::CHUNK)
                    .await
                    .unwrap()
                {
                    Scrub::Partial(s) => {
                        assert_eq!(s.offset(), calls * crate::integrity::CHUNK);
                        state = Some(s);
                    }
                    Scrub::Done(ok) => break ok,
                    Scrub::Missing => panic!("the copy is there"),
                }
            };
            assert_eq!((verdict, calls), (good, 3));
            assert_eq!(
                blobs.has_index(&d).await,
                good,
                "indexed only if it matched"
            );
        }
    }

    #[tokio::test]
    async fn a_removed_copy_takes_its_index_with_it() {
        let (_dir, up, blobs) = store().await;
        let b = layer();
        let (d, len) = (Digest::of(&b), b.len() as u64);
        let whole = || futures::stream::iter([Ok::<_, io::Error>(Bytes::from(b.clone()))]);
        up.receive("r1", whole(), len, &d).await.unwrap();
        assert!(blobs.has_index(&d).await);
        assert!(blobs.remove(&d).await.unwrap());
        assert!(!blobs.has_index(&d).await);
        // Listing never takes an index for a blob.
        up.receive("r2", whole(), len, &d).await.unwrap();
        assert_eq!(blobs.list().await.unwrap(), vec![(d, len)]);

        // A blob of one chunk has no index file; its reads are checked
        // whole against its digest.
        let small = Digest::of(b"hello world");
        up.receive("r3", body(&[b"hello ", b"world"]), 11, &small)
            .await
            .unwrap();
        assert!(!blobs.has_index(&small).await);
        assert_eq!(read_all(&blobs, &small, 6, 5).await.0, b"world");
        std::fs::write(blobs.path(&small), b"hellO world").unwrap();
        let (got, err) = read_all(&blobs, &small, 6, 5).await;
        assert!(
            got.is_empty() && err.is_some(),
            "a rotten small blob was served"
        );
    }

    #[tokio::test]
    async fn a_receive_abandoned_by_a_timeout_removes_its_staging_file() {
        let (dir, up, _b) = store().await;
        let d = Digest::of(b"never finished");
        // A peer that sends a first chunk and then goes silent.
        let stalled = futures::stream::iter([Ok::<_, io::Error>(Bytes::from_static(b"never"))])
            .chain(futures::stream::pending());
        let r = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            up.receive("repair-1", Box::pin(stalled), 14, &d),
        )
        .await;
        assert!(r.is_err(), "the stalled receive must not finish");
        assert!(staged(dir.path()).is_empty(), "{:?}", staged(dir.path()));
        assert!(matches!(
            up.status("repair-1").await,
            Err(UploadError::Unknown(_))
        ));
    }

    #[tokio::test]
    async fn out_of_order_chunk_is_refused_and_upload_unchanged() {
        let (_d, up, _b) = store().await;
        up.create("u1", "ns/r").await.unwrap();
        up.append("u1", None, body(&[b"abc"]), 100).await.unwrap();
        let err = up
            .append("u1", Some(10), body(&[b"x"]), 100)
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            UploadError::OutOfOrder {
                expected: 3,
                got: 10
            }
        ));
        assert_eq!(up.status("u1").await.unwrap().1, 3);
    }

    #[tokio::test]
    async fn digest_mismatch_leaves_no_blob() {
        let (_d, up, blobs) = store().await;
        up.create("u1", "ns/r").await.unwrap();
        up.append("u1", None, body(&[b"abc"]), 100).await.unwrap();
        let wrong = Digest::of(b"abd");
        assert!(matches!(
            up.finish("u1", &wrong).await,
            Err(UploadError::DigestMismatch { .. })
        ));
        assert!(!blobs.path(&wrong).exists());
        assert!(!blobs.path(&Digest::of(b"abc")).exists());
    }

    #[tokio::test]
    async fn size_limit_cuts_back_to_last_good_size() {
        let (_d, up, _b) = store().await;
        up.create("u1", "ns/r").await.unwrap();
        up.append("u1", None, body(&[b"12345"]), 8).await.unwrap();
        let err = up
            .append("u1", None, body(&[b"67", b"890"]), 8)
            .await
            .unwrap_err();
        assert!(matches!(err, UploadError::TooLarge { limit: 8 }));
        assert_eq!(up.status("u1").await.unwrap().1, 5);
    }

    #[tokio::test]
    async fn idle_sessions_expire_and_active_ones_stay() {
        let (_d, up, _b) = store().await;
        up.create("old", "ns/r").await.unwrap();
        up.append("old", None, body(&[b"x"]), 100).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        up.create("new", "ns/r").await.unwrap();
        let removed = up.expire(std::time::Duration::from_secs(1)).await.unwrap();
        assert_eq!(removed, 1);
        assert!(matches!(
            up.status("old").await,
            Err(UploadError::Unknown(_))
        ));
        assert_eq!(up.status("new").await.unwrap().1, 0);
    }

    #[tokio::test]
    async fn session_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let up = Uploads::open(BlobStore::open(dir.path()).unwrap()).unwrap();
            up.create("u1", "ns/r").await.unwrap();
            up.append("u1", None, body(&[b"first "]), 100)
                .await
                .unwrap();
        }
        let blobs = BlobStore::open(dir.path()).unwrap();
        let up = Uploads::open(blobs.clone()).unwrap();
        let (info, size) = up.status("u1").await.unwrap();
        assert_eq!((info.repo.as_str(), size), ("ns/r", 6));
        up.append("u1", Some(6), body(&[b"second"]), 100)
            .await
            .unwrap();
        let d = Digest::of(b"first second");
        up.finish("u1", &d).await.unwrap();
        assert_eq!(std::fs::read(blobs.path(&d)).unwrap(), b"first second");
    }

    #[tokio::test]
    async fn a_one_shot_session_is_one_file_and_a_restart_leaves_it_to_expire() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path()).unwrap();
        let up = Uploads::open(blobs.clone()).unwrap();
        // Finished: the staging file became the blob, nothing else is left.
        up.create_capped("m1", "ns/r", None, None, Layout::OneShot)
            .await
            .unwrap();
        assert_eq!(staged(dir.path()), vec!["m1.part".to_string()]);
        up.append("m1", None, body(&[b"whole ", b"blob"]), 100)
            .await
            .unwrap();
        let d = Digest::of(b"whole blob");
        assert_eq!(up.finish("m1", &d).await.unwrap(), 10);
        assert_eq!(std::fs::read(blobs.path(&d)).unwrap(), b"whole blob");
        assert!(staged(dir.path()).is_empty(), "{:?}", staged(dir.path()));
        // Cancelled: gone too.
        up.create_capped("m2", "ns/r", None, None, Layout::OneShot)
            .await
            .unwrap();
        up.append("m2", None, body(&[b"abc"]), 100).await.unwrap();
        up.cancel("m2").await.unwrap();
        assert!(staged(dir.path()).is_empty(), "{:?}", staged(dir.path()));
        // Cut off by a restart: not resumable, and expired as any other.
        up.create_capped("m3", "ns/r", None, None, Layout::OneShot)
            .await
            .unwrap();
        up.append("m3", None, body(&[b"half"]), 100).await.unwrap();
        drop(up);
        let up = Uploads::open(blobs).unwrap();
        assert!(matches!(
            up.status("m3").await,
            Err(UploadError::Unknown(_))
        ));
        assert_eq!(up.expire(std::time::Duration::ZERO).await.unwrap(), 1);
        assert!(staged(dir.path()).is_empty(), "{:?}", staged(dir.path()));
    }
}
