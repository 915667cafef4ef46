//! Hashing a blob's bytes as they stream by: the SHA-256 its digest is
//! checked against, and (for a copy that will be kept) the chunk hashes of
//! its integrity index, made from the same bytes.
//!
//! A stream's first bytes are hashed on its own task; past `ASIDE_AFTER`
//! each hash moves to a blocking thread of its own that runs beside the
//! receive and the writes, so a large push or fetch costs the slowest of
//! those stages instead of their sum. Small blobs never pay for the
//! hand-off.

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::integrity::{ChunkHasher, ChunkIndex};
use crate::Digest;
use futures::{Stream, StreamExt};

/// Bytes of one stream hashed in line before the hashing goes aside.
const ASIDE_AFTER: u64 = 1 << 20;

/// Bytes handed to the hashing threads at once: one wake-up per batch,
/// not per network read (16 KiB each, often).
const BATCH: usize = 1 << 20;

/// Batches in flight per thread: a hasher that falls behind slows the
/// stream (back-pressure), it does not buffer it.
const IN_FLIGHT: usize = 4;

/// The hashes of the bytes so far. `chunks` is `None` where no index is
/// wanted (a read whose bytes are only checked against the digest).
#[derive(Clone, Default)]
pub(crate) struct Hashes {
    pub(crate) sha: Sha256,
    pub(crate) chunks: Option<ChunkHasher>,
}

impl Hashes {
    /// SHA-256 and the chunk hashes.
    pub(crate) fn indexing() -> Self {
        Hashes {
            sha: Sha256::new(),
            chunks: Some(ChunkHasher::new()),
        }
    }

    pub(crate) fn update(&mut self, b: &[u8]) {
        self.sha.update(b);
        if let Some(c) = &mut self.chunks {
            c.update(b);
        }
    }
}

/// The hashing of one stream.
pub(crate) enum Hashing {
    Inline {
        // Boxed: the hash states are large beside the other variant.
        hashes: Box<Hashes>,
        hashed: u64,
    },
    Aside {
        batch: Vec<Bytes>,
        batched: usize,
        sha: Worker<Sha256>,
        chunks: Option<Worker<ChunkHasher>>,
    },
}

pub(crate) struct Worker<H> {
    tx: mpsc::Sender<Vec<Bytes>>,
    done: JoinHandle<H>,
}

pub(crate) trait Update: Send + 'static {
    fn feed(&mut self, b: &[u8]);
}

impl Update for Sha256 {
    fn feed(&mut self, b: &[u8]) {
        self.update(b);
    }
}

impl Update for ChunkHasher {
    fn feed(&mut self, b: &[u8]) {
        self.update(b);
    }
}

impl<H: Update> Worker<H> {
    fn start(mut h: H) -> Self {
        let (tx, mut rx) = mpsc::channel::<Vec<Bytes>>(IN_FLIGHT);
        let done = tokio::task::spawn_blocking(move || {
            while let Some(batch) = rx.blocking_recv() {
                for b in &batch {
                    h.feed(b);
                }
            }
            h
        });
        Worker { tx, done }
    }

    async fn send(&self, batch: Vec<Bytes>) -> std::io::Result<()> {
        self.tx
            .send(batch)
            .await
            .map_err(|_| std::io::Error::other("a hashing thread ended early"))
    }

    async fn finish(self) -> std::io::Result<H> {
        drop(self.tx);
        self.done
            .await
            .map_err(|e| std::io::Error::other(format!("a hashing thread failed: {e}")))
    }
}

impl Hashing {
    pub(crate) fn new(hashes: Hashes) -> Self {
        Hashing::Inline {
            hashes: Box::new(hashes),
            hashed: 0,
        }
    }

    pub(crate) async fn update(&mut self, b: &Bytes) -> std::io::Result<()> {
        match self {
            Hashing::Inline { hashes, hashed } => {
                hashes.update(b);
                *hashed += b.len() as u64;
                if *hashed >= ASIDE_AFTER {
                    let Hashes { sha, chunks } = std::mem::take(&mut **hashes);
                    *self = Hashing::Aside {
                        batch: Vec::new(),
                        batched: 0,
                        sha: Worker::start(sha),
                        chunks: chunks.map(Worker::start),
                    };
                }
                Ok(())
            }
            Hashing::Aside {
                batch,
                batched,
                sha,
                chunks,
            } => {
                batch.push(b.clone());
                *batched += b.len();
                if *batched >= BATCH {
                    let full = std::mem::take(batch);
                    *batched = 0;
                    Self::send(sha, chunks, full).await?;
                }
                Ok(())
            }
        }
    }

    async fn send(
        sha: &Worker<Sha256>,
        chunks: &Option<Worker<ChunkHasher>>,
        batch: Vec<Bytes>,
    ) -> std::io::Result<()> {
        if let Some(c) = chunks {
            c.send(batch.clone()).await?;
        }
        sha.send(batch).await
    }

    /// The hashes of every byte given, once the threads have caught up.
    pub(crate) async fn finish(self) -> std::io::Result<Hashes> {
        match self {
            Hashing::Inline { hashes, .. } => Ok(*hashes),
            Hashing::Aside {
                batch, sha, chunks, ..
            } => {
                if !batch.is_empty() {
                    Self::send(&sha, &chunks, batch).await?;
                }
                let chunks = match chunks {
                    Some(c) => Some(c.finish().await?),
                    None => None,
                };
                Ok(Hashes {
                    sha: sha.finish().await?,
                    chunks,
                })
            }
        }
    }
}

/// Whether a stream hashed aside yields an integrity index too.
pub(crate) enum Indexing {
    None,
    /// Made by the same pass.
    Make,
    /// One the bytes were already checked against chunk by chunk (a
    /// holder's), handed on if the whole also matches the digest.
    Given(ChunkIndex),
}

/// Pass `inner` through unchanged while it is hashed beside the
/// forwarding (on threads of their own once it is large; see `Hashing`):
/// the verdict, whether the whole stream hashed to `d`, is ready soon after
/// the stream ends. With an `index`, the integrity index (made by the same
/// pass, or given) is sent only if the verdict is yes.
pub(crate) fn hashed_aside(
    inner: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    d: Digest,
    index: Indexing,
) -> (
    impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    tokio::task::JoinHandle<std::io::Result<bool>>,
    Option<tokio::sync::oneshot::Receiver<ChunkIndex>>,
) {
    let hashes = match index {
        Indexing::Make => Hashes::indexing(),
        Indexing::None | Indexing::Given(_) => Hashes::default(),
    };
    let (index_tx, index_rx) = match index {
        Indexing::None => (None, None),
        _ => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            (Some(tx), Some(rx))
        }
    };
    let given = match index {
        Indexing::Given(idx) => Some(idx),
        _ => None,
    };
    // The hashing, handed over when the stream has ended whole.
    let (ended, hashing) = tokio::sync::oneshot::channel::<Hashing>();
    let verdict = tokio::spawn(async move {
        let Ok(hashing) = hashing.await else {
            return Err(std::io::Error::other("the stream ended early"));
        };
        let h = hashing.finish().await?;
        let matches = Digest::from_sha256_bytes(&h.sha.finalize()) == d;
        let index = given.or_else(|| h.chunks.map(|c| c.finish()));
        if let (true, Some(tx), Some(index)) = (matches, index_tx, index) {
            let _ = tx.send(index);
        }
        Ok(matches)
    });
    let stream = futures::stream::unfold(
        (Box::pin(inner), Some((Hashing::new(hashes), ended))),
        |(mut inner, state)| async move {
            let (mut hashing, ended) = state?;
            match inner.next().await {
                Some(Ok(chunk)) => match hashing.update(&chunk).await {
                    Ok(()) => Some((Ok(chunk), (inner, Some((hashing, ended))))),
                    Err(e) => Some((Err(e), (inner, None))),
                },
                Some(Err(e)) => Some((Err(e), (inner, None))),
                None => {
                    let _ = ended.send(hashing);
                    None
                }
            }
        },
    )
    .fuse();
    (stream, verdict, index_rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Whether the hashing stays in line or goes aside, and however
        /// the body is cut, the hashes are those of the whole.
        #[test]
        fn hashes_aside_equal_hashes_in_line(
            len in 0usize..(9 << 20),
            cuts in proptest::collection::vec(1usize..(700 << 10), 1..40),
            seed in any::<u8>(),
        ) {
            let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let got = rt.block_on(async {
                let mut h = Hashing::new(Hashes::indexing());
                let (mut at, mut i) = (0, 0);
                while at < len {
                    let n = cuts[i % cuts.len()].min(len - at);
                    h.update(&Bytes::copy_from_slice(&data[at..at + n])).await.unwrap();
                    at += n;
                    i += 1;
                }
                h.finish().await.unwrap()
            });
            let mut want = Hashes::indexing();
            want.update(&data);
            prop_assert_eq!(got.sha.finalize(), want.sha.finalize());
            prop_assert_eq!(got.chunks.unwrap().finish(), want.chunks.unwrap().finish());
        }
    }
}
