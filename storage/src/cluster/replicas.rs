//! Blob copies across the cluster: which members own a digest (placement
//! over the voters, replication factor R from Raft), pushing a finished
//! upload to its owners before the blob is committed, and reading a blob
//! this node does not hold from a node that does.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{BoxStream, FuturesUnordered};
use futures::{Stream, StreamExt};
use tonic::transport::Channel;

use super::cache::{BlobCache, Filler, Slot};
use super::peer_reads::{self, Via};
use super::replication::{self, ReplicationError};
use super::{ClusterView, Peer};
use crate::hashing::{hashed_aside, Indexing};
use crate::integrity::ChunkIndex;
use crate::placement::{self, Member};
use crate::{BlobStore, Digest, Hold, Mapped, UploadError};

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("the blob reached {acked} of the {needed} owners required ({failures})")]
    TooFewOwners {
        acked: usize,
        needed: usize,
        failures: String,
    },
    #[error("no member could serve the blob: {0}")]
    NoHolder(String),
    /// This node's own copy failed (the digest did not match, a disk error).
    #[error(transparent)]
    Local(#[from] UploadError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Cache fills running at once with no reader waiting for them.
const BACKGROUND_FILLS: usize = 2;

#[derive(Clone)]
pub struct Replicas {
    node_id: u64,
    view: Arc<dyn ClusterView>,
    store: BlobStore,
    transfers: prometheus::IntCounterVec,
    /// Check local reads too (`--verify-reads all`).
    verify_local: bool,
    /// Verified copies of blobs this node streamed from their owners.
    cache: Option<BlobCache>,
    /// Cache fills that no reader waits for (after a range missed).
    background_fills: Arc<tokio::sync::Semaphore>,
}

/// A blob's owners, best first, and the other members (for fallback reads).
pub struct Placement {
    pub owners: Vec<(u64, Peer)>,
    pub others: Vec<(u64, Peer)>,
}

impl Replicas {
    pub fn new(
        view: Arc<dyn ClusterView>,
        store: BlobStore,
        transfers: prometheus::IntCounterVec,
        verify_local: bool,
    ) -> Self {
        Replicas {
            node_id: view.node_id(),
            view,
            store,
            transfers,
            verify_local,
            cache: None,
            background_fills: Arc::new(tokio::sync::Semaphore::new(BACKGROUND_FILLS)),
        }
    }

    /// Keep verified copies of blobs streamed from other nodes in `cache`.
    pub fn with_cache(mut self, cache: BlobCache) -> Self {
        self.cache = Some(cache);
        self
    }

    pub fn cache(&self) -> Option<&BlobCache> {
        self.cache.as_ref()
    }

    fn count(&self, kind: &str, ok: bool) {
        self.transfers
            .with_label_values(&[kind, if ok { "ok" } else { "error" }])
            .inc();
    }

    /// Keep this node's copy of `d` while an upload installs and pushes it
    /// (see `Hold`); hand it to `replicate` or `finish_tee`.
    pub fn hold(&self, d: &Digest) -> Hold {
        self.store.hold(d)
    }

    /// The cluster as this node sees it.
    pub fn view(&self) -> &Arc<dyn ClusterView> {
        &self.view
    }

    /// A channel to a peer's RPC address (shared, connected on first use).
    pub fn channel(&self, addr: &str) -> Option<tonic::transport::Channel> {
        self.view.channel(addr)
    }

    /// Owners of `d` under the membership this node knows and the
    /// replication factor in its state.
    pub fn placement(&self, d: &Digest) -> Placement {
        let (members, nodes, factor) = self.members();
        let owner_ids = placement::owners(&d.to_string(), &members, factor);
        let with_info = |id: &u64| nodes.get(id).map(|n| (*id, n.clone()));
        Placement {
            owners: owner_ids.iter().filter_map(with_info).collect(),
            others: nodes
                .keys()
                .filter(|id| !owner_ids.contains(id))
                .filter_map(with_info)
                .collect(),
        }
    }

    /// The voters with their weights, every member's address, and the
    /// replication factor in effect.
    fn members(&self) -> (Vec<Member>, BTreeMap<u64, Peer>, usize) {
        let super::Membership { voters, nodes } = self.view.membership();
        let factor = match self.view.replication_factor() {
            Ok(Some(f)) => (f as usize).min(voters.len().max(1)),
            _ => placement::default_replication(voters.len()),
        };
        let members = voters
            .iter()
            .map(|id| Member::new(*id, nodes.get(id).map_or(0, |n| n.weight)))
            .collect();
        (members, nodes, factor)
    }

    /// Copy the local blob `d` (verified and installed here) to its owners:
    /// `replicate_staged` with the stored copy as the source.
    pub async fn replicate(&self, d: &Digest, hold: Hold) -> Result<(), ReplicaError> {
        let blob = self.store.map(d).await?;
        let size = blob.len();
        let index = self.store.load_index(d, size).await;
        self.replicate_staged(d, blob, index, async { Ok(size) }, hold)
            .await
            .map(|_| ())
    }

    /// Copy `blob` (the verified bytes of `d`, with this node's integrity
    /// `index` of them if it has one) to its owners while `local` makes
    /// this node's copy durable and installs it; the two overlap, so the
    /// local fsync does not delay the pushes. Returns the size `local`
    /// reports, once it is done and a write quorum of owners holds the blob
    /// (this node counts if it owns it); the other pushes finish in the
    /// background. A node that does not own the blob drops its copy once
    /// every owner has one, unless another upload of the digest holds it.
    pub async fn replicate_staged<F>(
        &self,
        d: &Digest,
        blob: Mapped,
        index: Option<ChunkIndex>,
        local: F,
        hold: Hold,
    ) -> Result<u64, ReplicaError>
    where
        F: std::future::Future<Output = Result<u64, UploadError>>,
    {
        let owners = self.placement(d).owners;
        let mine = owners.iter().any(|(id, _)| *id == self.node_id);
        let index = index.map(Arc::new);
        let mut pushes: FuturesUnordered<_> = owners
            .iter()
            .filter(|(id, _)| *id != self.node_id)
            .map(|(id, node)| {
                let (id, addr, blob, d, view, index) = (
                    *id,
                    node.rpc_addr.clone(),
                    blob.clone(),
                    d.clone(),
                    self.view.clone(),
                    index.clone(),
                );
                tokio::spawn(async move {
                    let Some(channel) = view.channel(&addr) else {
                        return (
                            id,
                            Err(ReplicationError::Peer(format!("bad address {addr}"))),
                        );
                    };
                    let index = index.as_deref();
                    (id, replication::push(channel, &d, &blob, index).await)
                })
            })
            .collect();
        drop(blob);
        // No membership yet (a single node before init): the local copy is all.
        let needed = if owners.is_empty() {
            0
        } else {
            placement::write_quorum(owners.len())
        };
        let mut local = std::pin::pin!(local);
        let mut size = None;
        let mut acked = 0;
        let mut failures = Vec::new();
        while size.is_none() || acked < needed {
            tokio::select! {
                r = &mut local, if size.is_none() => {
                    // A local failure (digest, disk) is the upload's own error.
                    size = Some(r?);
                    acked += usize::from(mine);
                }
                p = pushes.next(), if acked < needed => match p {
                    Some(Ok((_, Ok(_)))) => {
                        self.count("push", true);
                        acked += 1;
                    }
                    Some(Ok((id, Err(e)))) => {
                        self.count("push", false);
                        tracing::warn!(digest = %d, node = id, "replica push failed: {e}");
                        failures.push(format!("node {id}: {e}"));
                    }
                    Some(Err(e)) => failures.push(format!("push task: {e}")),
                    // Every push is done; only the local copy may still count.
                    None if size.is_some() => break,
                    None => {
                        size = Some((&mut local).await?);
                        acked += usize::from(mine);
                        break;
                    }
                },
            }
        }
        let size = size.expect("the local copy finished");
        if acked < needed {
            return Err(ReplicaError::TooFewOwners {
                acked,
                needed,
                failures: failures.join("; "),
            });
        }
        let d = d.clone();
        let all_so_far = failures.is_empty();
        tokio::spawn(async move {
            let mut all = all_so_far;
            while let Some(r) = pushes.next().await {
                if !matches!(r, Ok((_, Ok(_)))) {
                    all = false;
                }
            }
            // Keep a copy an owner may still need (the repair loop's job).
            if !mine && all {
                if let Err(e) = hold.release_and_remove().await {
                    tracing::warn!(digest = %d, "dropping the non-owner copy: {e}");
                }
            }
        });
        Ok(size)
    }

    /// `len` bytes of `d` from `start`: from the local copy, else from the
    /// cache, else from its owners in order, then any other member. A read
    /// from a peer is checked here chunk by chunk against the holder's
    /// integrity index before its bytes go on; a whole one also against
    /// the digest, its last chunk held back until that matches.
    pub async fn open(
        &self,
        d: &Digest,
        start: u64,
        len: u64,
        size: u64,
    ) -> Result<BoxStream<'static, std::io::Result<Bytes>>, ReplicaError> {
        // A copy dropped between the check and the open (a rebalance moved
        // it) is read from another holder instead.
        let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
        let local_index = self.verify_local && self.store.has_index(d).await;
        if self.verify_local && start == 0 && len == size && !local_index {
            // A copy from before integrity indexes, read whole: hashed on
            // another thread while it is sent, the last chunk waiting for
            // the verdict (a copy that rotted on disk is cut off and
            // quarantined; the client's retry is served by another
            // holder). The same pass makes its index.
            match self.store.read_stream_verified(d).await {
                Ok((local, verdict)) => {
                    let (store, bad) = (self.store.clone(), d.clone());
                    let on_corrupt = move || store.quarantine_soon(&bad);
                    return Ok(held_for(local, verdict, d.clone(), Box::new(on_corrupt)).boxed());
                }
                Err(e) if gone(&e) => {}
                Err(e) => return Err(e.into()),
            }
        } else if self.verify_local {
            // Every chunk the read touches is checked against the copy's
            // integrity index before its bytes go out, ranges included.
            match self.store.read_stream_checked(d, start, len).await {
                Ok(local) => return Ok(local.boxed()),
                Err(e) if gone(&e) => {}
                Err(e) => return Err(e.into()),
            }
        } else {
            match self.store.read_stream(d, start, len).await {
                Ok(local) => return Ok(local.boxed()),
                Err(e) if gone(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut filler = None;
        if let Some(cache) = &self.cache {
            if let Some(cached) = cache.read(d, start, len).await {
                self.count("cache_hit", true);
                return Ok(cached);
            }
            let whole = start == 0 && len == size;
            if !whole {
                // A range that missed (a client resuming, a lazy-pulling
                // snapshotter reading here and there) is served from a
                // holder at once, while the whole blob comes into the
                // cache beside it: later ranges through this node are
                // local and checked against this node's own index.
                self.fill_in_background(cache, d, size);
            }
            // A whole read fetches the blob into the cache; one already on
            // its way is waited for (single flight) and then read from there.
            let filled = match whole.then(|| cache.begin(d, size)) {
                Some(Some(Slot::Fill(f))) => {
                    filler = Some(f);
                    false
                }
                Some(Some(Slot::Wait(w))) => w.done().await,
                _ => false,
            };
            if filled {
                if let Some(cached) = cache.read(d, start, len).await {
                    self.count("cache_hit", true);
                    return Ok(cached);
                }
            }
        }
        self.read_from_peers(d, start, len, size, filler).await
    }

    /// Fetch `d` whole into `cache` with no reader waiting for it, unless
    /// a fill of it is already running or too many background fills are
    /// (each is a whole transfer out of an owner).
    fn fill_in_background(&self, cache: &BlobCache, d: &Digest, size: u64) {
        let Ok(permit) = self.background_fills.clone().try_acquire_owned() else {
            return;
        };
        let Some(Slot::Fill(filler)) = cache.begin(d, size) else {
            return;
        };
        let (this, d) = (self.clone(), d.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match this.read_from_peers(&d, 0, size, size, Some(filler)).await {
                Ok(mut bytes) => {
                    // The cache keeps its copy only once the last chunk has
                    // passed the digest check; a failure ends the fill.
                    while let Some(Ok(_)) = bytes.next().await {}
                }
                Err(e) => tracing::info!(digest = %d, "not cached: {e}"),
            }
        });
    }

    /// `len` bytes of `d` from `start` from its owners in order, then any
    /// other member. A whole read is checked against the digest as it
    /// streams, and with `filler` a copy goes into the cache; a range
    /// against the holder's integrity index, chunk by chunk.
    async fn read_from_peers(
        &self,
        d: &Digest,
        start: u64,
        len: u64,
        size: u64,
        mut filler: Option<Filler>,
    ) -> Result<BoxStream<'static, std::io::Result<Bytes>>, ReplicaError> {
        let p = self.placement(d);
        let mut errors = Vec::new();
        for (id, node) in p.owners.iter().chain(&p.others) {
            if *id == self.node_id {
                continue;
            }
            let whole = start == 0 && len == size;
            // Every byte is checked here before it goes on: against the
            // holder's integrity index chunk by chunk (see `fetch_checked`).
            let fetched =
                peer_reads::fetch_checked(&*self.view, &node.rpc_addr, d, start, len, size).await;
            match fetched {
                Ok((stream, via, checked_by)) => {
                    // A peer of an older version serves over gRPC only.
                    self.count(
                        match via {
                            Via::Http => "remote_read",
                            Via::Grpc => "remote_read_grpc",
                        },
                        true,
                    );
                    if !whole {
                        return Ok(stream);
                    }
                    // A whole read is also checked against the digest as
                    // it streams; a cache fill keeps the same bytes, with
                    // the index they were checked against (or one made by
                    // the same pass), once that check has passed too.
                    let indexing = match (&filler, checked_by) {
                        (None, _) => Indexing::None,
                        (Some(_), Some(index)) => Indexing::Given((*index).clone()),
                        (Some(_), None) => Indexing::Make,
                    };
                    let (stream, verdict, index) = hashed_aside(stream, d.clone(), indexing);
                    let stream = match (filler.take(), index) {
                        (Some(f), Some(index)) => {
                            self.count("cache_fill", true);
                            f.tee(stream, index).boxed()
                        }
                        _ => stream.boxed(),
                    };
                    return Ok(held_for(stream, verdict, d.clone(), Box::new(|| {})).boxed());
                }
                Err(e) => {
                    self.count("remote_read", false);
                    errors.push(format!("node {id}: {e}"));
                }
            }
        }
        Err(ReplicaError::NoHolder(errors.join("; ")))
    }
}

/// Pass `inner` through, holding back its last chunk until `verdict` says
/// the copy matches `d`; otherwise end with an error (and `on_corrupt`).
fn held_for(
    inner: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    verdict: tokio::task::JoinHandle<std::io::Result<bool>>,
    d: Digest,
    on_corrupt: Box<dyn FnOnce() + Send>,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    struct State<S> {
        inner: S,
        held: Option<Bytes>,
        verdict: Option<tokio::task::JoinHandle<std::io::Result<bool>>>,
        d: Digest,
        on_corrupt: Option<Box<dyn FnOnce() + Send>>,
    }
    let state = State {
        // Fused: after the last chunk is let go, the next poll asks the
        // inner stream again, which has already ended (HTTP/2 responses
        // are polled once more for their end).
        inner: Box::pin(inner.fuse()),
        held: None,
        verdict: Some(verdict),
        d,
        on_corrupt: Some(on_corrupt),
    };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            match s.inner.next().await {
                Some(Ok(chunk)) => {
                    if let Some(prev) = s.held.replace(chunk) {
                        return Some((Ok(prev), s));
                    }
                }
                Some(Err(e)) => {
                    s.verdict = None;
                    s.held = None;
                    return Some((Err(e), s));
                }
                None => {
                    let verdict = s.verdict.take()?.await;
                    return match verdict {
                        Ok(Ok(true)) => s.held.take().map(|last| (Ok(last), s)),
                        other => {
                            tracing::error!(digest = %s.d, ?other, "local copy failed verification; cutting the response");
                            if let (Ok(Ok(false)), Some(f)) = (&other, s.on_corrupt.take()) {
                                f();
                            }
                            s.held = None;
                            Some((
                                Err(std::io::Error::other(format!(
                                    "copy of {} failed verification",
                                    s.d
                                ))),
                                s,
                            ))
                        }
                    };
                }
            }
        }
    })
    .fuse()
}

/// Bytes gathered before a copy goes to the owners (about the chunk size
/// of every other transfer).
const TEE_CHUNK: usize = 1 << 20;

/// Transfers to peers that start while an upload's body is still arriving,
/// so the copies are written alongside the local one instead of after it:
/// whole-blob pushes to the owners (`Replicas::tee`), or appends to the
/// replica sessions of a chunked upload (`super::pipeline`). Each
/// peer verifies size and digest itself, so a body that turns out short or
/// wrong is refused by them as it is here.
pub struct Tee<T = bool> {
    senders: Vec<tokio::sync::mpsc::Sender<std::io::Result<Bytes>>>,
    handles: TeeHandles<T>,
}

/// A transfer's outcome: the peer, and what it answered.
type Transfer<T> = tokio::task::JoinHandle<(u64, Result<T, ReplicationError>)>;

/// The body of a tee'd transfer, as a peer's call consumes it.
pub type TeeBody = tokio_stream::wrappers::ReceiverStream<std::io::Result<Bytes>>;

impl<T: Send + 'static> Tee<T> {
    /// Start `call(channel, body)` for every peer; `wrap` feeds the bodies.
    pub fn start<F, Fut>(peers: Vec<(u64, Channel)>, mut call: F) -> Self
    where
        F: FnMut(Channel, TeeBody) -> Fut,
        Fut: std::future::Future<Output = Result<T, ReplicationError>> + Send + 'static,
    {
        let (mut senders, mut pushes) = (Vec::new(), Vec::new());
        for (id, channel) in peers {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let call = call(channel, tokio_stream::wrappers::ReceiverStream::new(rx));
            pushes.push(tokio::spawn(async move { (id, call.await) }));
            senders.push(tx);
        }
        Tee {
            senders,
            handles: TeeHandles {
                pushes,
                mine: false,
                owners: 0,
                complete: true,
                index_to: Vec::new(),
            },
        }
    }
}

impl Tee<()> {
    /// A tee into senders the caller keeps (their receivers outlive it).
    pub fn feeding(senders: Vec<tokio::sync::mpsc::Sender<std::io::Result<Bytes>>>) -> Self {
        Tee {
            senders,
            handles: TeeHandles {
                pushes: Vec::new(),
                mine: false,
                owners: 0,
                complete: true,
                index_to: Vec::new(),
            },
        }
    }
}

impl Replicas {
    /// Start pushes of the coming `size` bytes of `d` to its remote owners;
    /// `None` when there is no remote owner.
    pub fn tee(&self, d: &Digest, size: u64) -> Option<Tee> {
        let owners = self.placement(d).owners;
        let remote: Vec<_> = owners
            .iter()
            .filter(|(id, _)| *id != self.node_id)
            .collect();
        let reachable: Vec<_> = remote
            .iter()
            .filter_map(|(id, n)| Some((*id, self.view.channel(&n.rpc_addr)?)))
            .collect();
        if reachable.is_empty() {
            return None;
        }
        let complete = reachable.len() == remote.len();
        let d = d.clone();
        // Each push ends with this node's index of the bytes (`send_index`).
        let (index_to, mut index_from): (Vec<_>, Vec<_>) = (0..reachable.len())
            .map(|_| tokio::sync::oneshot::channel())
            .unzip();
        let mut tee = Tee::start(reachable, move |channel, body| {
            let (d, index) = (d.clone(), index_from.pop());
            async move { replication::push_stream(channel, &d, size, body, index).await }
        });
        tee.handles.index_to = index_to;
        tee.handles.mine = owners.iter().any(|(id, _)| *id == self.node_id);
        tee.handles.owners = owners.len();
        tee.handles.complete = complete;
        Some(tee)
    }

    /// The other voters, when every voter owns every blob (R is at least
    /// the number of voters): a chunked upload's owners are then known
    /// before its digest is. `None` otherwise, or with no other voter.
    pub fn all_owners_but_me(&self) -> Option<Vec<(u64, Channel)>> {
        let (members, nodes, factor) = self.members();
        // Weight 0 owns nothing (placement::owners).
        let owning: Vec<u64> = members
            .iter()
            .filter(|m| m.weight > 0)
            .map(|m| m.id)
            .collect();
        if factor < owning.len() {
            return None;
        }
        let peers: Vec<_> = owning
            .iter()
            .filter(|id| **id != self.node_id)
            .filter_map(|id| Some((*id, self.view.channel(&nodes.get(id)?.rpc_addr)?)))
            .collect();
        Some(peers).filter(|p| !p.is_empty())
    }

    /// Drop the replica sessions of chunked upload `upload` on `peers`, in
    /// the background (one that misses it leaves the session to its
    /// janitor).
    pub fn abandon(&self, upload: &str, peers: Vec<(u64, Channel)>) {
        for (_, channel) in peers {
            let upload = upload.to_string();
            tokio::spawn(async move { replication::abandon(channel, &upload).await });
        }
    }

    /// Seal the replica sessions of chunked upload `upload` on `peers` as
    /// blob `d`, while the local copy is installed; hand the result to
    /// `finish_tee`. Peers that are not owners of `d` (the membership
    /// changed during the upload) drop their session instead.
    pub fn seal(
        &self,
        d: &Digest,
        upload: &str,
        peers: Vec<(u64, Channel)>,
        index: Option<ChunkIndex>,
    ) -> TeeHandles {
        let index = index.map(Arc::new);
        let owners = self.placement(d).owners;
        let is_owner = |id: &u64| owners.iter().any(|(o, _)| o == id);
        let (sealed, strays): (Vec<_>, Vec<_>) =
            peers.into_iter().partition(|(id, _)| is_owner(id));
        self.abandon(upload, strays);
        let remote_owners = owners.iter().filter(|(id, _)| *id != self.node_id).count();
        let pushes = sealed
            .iter()
            .map(|(id, channel)| {
                let (id, channel, upload, d, index) = (
                    *id,
                    channel.clone(),
                    upload.to_string(),
                    d.clone(),
                    index.clone(),
                );
                tokio::spawn(async move {
                    let sealed = replication::seal(channel, &upload, &d, index.as_deref()).await;
                    (id, sealed)
                })
            })
            .collect();
        TeeHandles {
            pushes,
            mine: is_owner(&self.node_id),
            owners: owners.len(),
            complete: sealed.len() == remote_owners,
            index_to: Vec::new(),
        }
    }

    /// After a teed upload was verified and installed here: wait for a
    /// write quorum of owners, no more; the other pushes finish in the
    /// background. Owners the tee did not reach get the copy the usual way
    /// (`replicate`, which skips owners that have it).
    pub async fn finish_tee(
        &self,
        d: &Digest,
        tee: TeeHandles,
        hold: Hold,
    ) -> Result<(), ReplicaError> {
        let needed = placement::write_quorum(tee.owners);
        let mut acked = usize::from(tee.mine);
        let mut pushes: FuturesUnordered<_> = tee.pushes.into_iter().collect();
        // Owners the tee could not reach still need their copy.
        let mut all = tee.complete;
        while acked < needed {
            match pushes.next().await {
                Some(r) => {
                    if self.teed(d, r) {
                        acked += 1;
                    } else {
                        all = false;
                    }
                }
                None => break,
            }
        }
        if acked < needed {
            return self.replicate(d, hold).await;
        }
        let (me, d, mine) = (self.clone(), d.clone(), tee.mine);
        tokio::spawn(async move {
            while let Some(r) = pushes.next().await {
                all &= me.teed(&d, r);
            }
            if !all {
                // Also drops a non-owner's copy once every owner has one.
                if let Err(e) = me.replicate(&d, hold).await {
                    tracing::warn!(digest = %d, "re-pushing after a teed push failed: {e}");
                }
            } else if !mine {
                if let Err(e) = hold.release_and_remove().await {
                    tracing::warn!(digest = %d, "dropping the non-owner copy: {e}");
                }
            }
        });
        Ok(())
    }

    /// Count a finished teed push; whether the owner took its copy.
    fn teed(
        &self,
        d: &Digest,
        r: Result<(u64, Result<bool, ReplicationError>), tokio::task::JoinError>,
    ) -> bool {
        match r {
            Ok((_, Ok(_))) => {
                self.count("push", true);
                true
            }
            Ok((id, Err(e))) => {
                self.count("push", false);
                tracing::warn!(digest = %d, node = id, "teed push failed: {e}");
                false
            }
            Err(_) => false,
        }
    }
}

/// What is left of a `Tee` once its body stream has been consumed.
pub struct TeeHandles<T = bool> {
    pushes: Vec<Transfer<T>>,
    /// Whether this node owns the blob, of how many owners.
    mine: bool,
    owners: usize,
    /// Whether the transfers reach every remote owner.
    complete: bool,
    /// Where the pushes wait for this node's index of the bytes.
    index_to: Vec<tokio::sync::oneshot::Sender<Bytes>>,
}

impl<T> TeeHandles<T> {
    /// Send the pushes this node's integrity `index` of the bytes they
    /// carried, once the bytes matched their digest here (the owners then
    /// keep it instead of making their own); `None` ends them without one.
    pub fn send_index(&mut self, index: Option<&ChunkIndex>) {
        let index: Option<Bytes> = index.map(|i| i.to_bytes().into());
        for tx in self.index_to.drain(..) {
            if let Some(i) = &index {
                let _ = tx.send(i.clone());
            }
        }
    }
}

impl<T> Tee<T> {
    /// Pass `body` through unchanged while sending copies of it, gathered
    /// into chunks of about 1 MiB, to every peer. A peer that stops
    /// taking copies is dropped from the tee (its transfer reports why).
    pub fn wrap<S>(
        self,
        body: S,
    ) -> (
        impl Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static,
        TeeHandles<T>,
    )
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static,
    {
        let handles = self.handles;
        let state = (body, bytes::BytesMut::new(), self.senders, false);
        let stream =
            futures::stream::unfold(state, |(mut body, mut buf, mut senders, done)| async move {
                if done {
                    return None;
                }
                let item = body.next().await;
                if let Some(Ok(chunk)) = &item {
                    buf.extend_from_slice(chunk);
                }
                if (buf.len() >= TEE_CHUNK || item.is_none()) && !buf.is_empty() {
                    let out = buf.split().freeze();
                    let mut alive = Vec::with_capacity(senders.len());
                    for tx in senders {
                        if tx.send(Ok(out.clone())).await.is_ok() {
                            alive.push(tx);
                        }
                    }
                    senders = alive;
                }
                match item {
                    Some(Ok(chunk)) => Some((Ok(chunk), (body, buf, senders, false))),
                    // An error ends the upload here and, with the senders
                    // dropped, the pushes (the owners refuse a short blob).
                    Some(Err(e)) => Some((Err(e), (body, buf, Vec::new(), true))),
                    None => None,
                }
            });
        (Box::pin(stream), handles)
    }
}
