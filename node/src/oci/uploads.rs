//! Blob upload sessions: POST (open, monolithic, cross-repository mount),
//! PATCH (streamed or chunked), PUT (finish), GET (status), DELETE (cancel).

use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use tcr_raft::Command;
use tcr_storage::cluster::{ReplicaError, Whole};
use tcr_storage::{Digest, Layout, UploadError};

use super::errors::{OciError, OciResult};
use super::{check_name, query, require_namespace};
use crate::state::OciState;
use tcr_storage::clock::now_secs;

impl From<UploadError> for OciError {
    fn from(e: UploadError) -> Self {
        match &e {
            UploadError::Unknown(_) => OciError::blob_upload_unknown(e.to_string()),
            UploadError::OutOfOrder { expected, .. } => OciError::range_invalid(e.to_string())
                .with_header("range", format!("0-{}", expected.saturating_sub(1))),
            UploadError::TooLarge { .. } => OciError::too_large(e.to_string()),
            UploadError::DigestMismatch { .. } => OciError::digest_invalid(e.to_string()),
            UploadError::Body(_) => OciError::blob_upload_invalid(e.to_string()),
            UploadError::NoSpace(_) => OciError::insufficient_storage(e.to_string()),
            UploadError::TooManySessions { .. } => OciError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TOOMANYREQUESTS",
                e.to_string(),
            )
            .with_header("retry-after", "60"),
            UploadError::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
                OciError::insufficient_storage(format!("the disk of this node is full: {e}"))
            }
            UploadError::Io(_) => OciError::internal(e.to_string()),
        }
    }
}

fn session_headers(name: &str, id: &str, size: u64) -> HeaderMap {
    let mut h = HeaderMap::new();
    let location = format!("/v2/{name}/blobs/uploads/{id}");
    h.insert(header::LOCATION, location.parse().expect("validated name"));
    h.insert("docker-upload-uuid", id.parse().expect("ascii id"));
    h.insert(
        header::RANGE,
        format!("0-{}", size.saturating_sub(1))
            .parse()
            .expect("ascii"),
    );
    h.insert(header::CONTENT_LENGTH, 0.into());
    h
}

fn blob_created(name: &str, d: &Digest) -> Response {
    let mut h = HeaderMap::new();
    h.insert(
        header::LOCATION,
        format!("/v2/{name}/blobs/{d}")
            .parse()
            .expect("validated name"),
    );
    h.insert(
        "docker-content-digest",
        d.to_string().parse().expect("ascii"),
    );
    h.insert(header::CONTENT_LENGTH, 0.into());
    (StatusCode::CREATED, h).into_response()
}

/// Most body bytes read and thrown away to deliver a refusal.
const DRAIN_LIMIT: usize = 64 << 20;
/// Longest time spent draining.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Refuse an upload request before storing any of its body, but read (and
/// discard) the body first, up to a bound: a server that answers and closes
/// while the client is still sending makes many clients see a reset
/// connection instead of the answer.
async fn refuse_draining(req: Request, e: OciError) -> OciError {
    let mut body = req.into_body().into_data_stream();
    let mut read = 0;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(chunk)) = body.next().await {
            read += chunk.len();
            if read > DRAIN_LIMIT {
                break;
            }
        }
    })
    .await;
    e
}

/// The request body as a stream that fails when the client sends nothing
/// for `idle` (the upload is then cut back to its last good size).
fn body_stream(
    req: Request,
    idle: Duration,
) -> impl futures::Stream<Item = Result<bytes::Bytes, String>> + Unpin {
    let body = req
        .into_body()
        .into_data_stream()
        .map_err(|e| e.to_string());
    Box::pin(futures::stream::unfold(
        (Box::pin(body), false),
        move |(mut body, failed)| async move {
            if failed {
                return None;
            }
            match tokio::time::timeout(idle, body.next()).await {
                Ok(Some(item)) => Some((item, (body, false))),
                Ok(None) => None,
                Err(_) => Some((
                    Err(format!(
                        "no data for {}s; upload aborted",
                        idle.as_secs_f64()
                    )),
                    (body, true),
                )),
            }
        },
    ))
}

/// The start offset of a PATCH, from `Content-Range: <start>-<end>`.
fn content_range_start(headers: &HeaderMap) -> OciResult<Option<u64>> {
    let Some(v) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .map_err(|_| OciError::range_invalid("Content-Range is not ASCII"))?;
    let s = s.trim().strip_prefix("bytes ").unwrap_or(s.trim());
    let (a, b) = s.split_once('-').ok_or_else(|| {
        OciError::range_invalid(format!("Content-Range '{s}' is not <start>-<end>"))
    })?;
    let start: u64 = a.parse().map_err(|_| {
        OciError::range_invalid(format!("Content-Range '{s}' is not <start>-<end>"))
    })?;
    let end: u64 = b.split('/').next().unwrap_or("").parse().map_err(|_| {
        OciError::range_invalid(format!("Content-Range '{s}' is not <start>-<end>"))
    })?;
    if end < start {
        return Err(OciError::range_invalid(format!(
            "Content-Range '{s}' ends before it starts"
        )));
    }
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        // `end - start + 1` overflows for `0-18446744073709551615`.
        if (end - start).checked_add(1) != Some(len) {
            return Err(OciError::range_invalid(format!(
                "Content-Range '{s}' does not match Content-Length {len}"
            )));
        }
    }
    Ok(Some(start))
}

fn new_upload_id(st: &OciState) -> String {
    format!("{}-{}", st.node_id, uuid::Uuid::new_v4().simple())
}

/// Finish upload `id` as blob `d`: verify it, copy it to its owners (a
/// write quorum of them) while the local copy is made durable, then record
/// it in Raft.
async fn commit_blob(st: &OciState, name: &str, id: &str, d: &Digest) -> OciResult<()> {
    let size = st.writer.commit(id, d).await.map_err(replica_error)?;
    record_blob(st, name, d, size).await
}

fn replica_error(e: ReplicaError) -> OciError {
    match e {
        ReplicaError::Local(e) => e.into(),
        e => OciError::unavailable(e.to_string()).with_header("retry-after", "1"),
    }
}

/// A monolithic upload whose size is known: the owners receive their copies
/// while the body arrives (see `BlobWriter::whole`), then it is recorded.
async fn whole_upload(
    st: &OciState,
    name: &str,
    id: &str,
    d: &Digest,
    whole: Whole,
    req: Request,
) -> OciResult<()> {
    let start = content_range_start(req.headers())?;
    let body = body_stream(req, st.body_idle_timeout).map_err(std::io::Error::other);
    let size = st
        .writer
        .write_whole(id, start, body, d, whole, st.max_blob_bytes)
        .await
        .map_err(replica_error)?;
    record_blob(st, name, d, size).await
}

async fn record_blob(st: &OciState, name: &str, d: &Digest, size: u64) -> OciResult<()> {
    st.meta
        .write(Command::CommitBlob {
            repo: name.to_string(),
            digest: d.to_string(),
            size,
            created_at: now_secs(),
        })
        .await?;
    Ok(())
}

pub async fn start(st: &OciState, name: &str, req: Request) -> OciResult {
    if st.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(
            OciError::unavailable("this node is shutting down; retry on another node")
                .with_header("retry-after", "1"),
        );
    }
    check_name(name)?;
    require_namespace(st, name).await?;
    let q = query(&req);
    if let Some(mount) = q.get("mount") {
        let d: Digest = mount.parse()?;
        if let Some(from) = q.get("from") {
            if check_name(from).is_ok()
                && st
                    .meta
                    .read()
                    .await?
                    .linked_blob(from, &d.to_string())?
                    .is_some()
            {
                st.meta
                    .write(Command::MountBlob {
                        repo: name.to_string(),
                        from: from.clone(),
                        digest: d.to_string(),
                        created_at: now_secs(),
                    })
                    .await?;
                return Ok(blob_created(name, &d));
            }
        }
        // Not mountable: fall back to a regular upload, as the spec says.
    }
    let req = within_staging_quota(st, name, req).await?;
    let id = new_upload_id(st);
    let owner = req
        .extensions()
        .get::<crate::auth::Caller>()
        .and_then(|c| c.credential())
        .map(|c| c.id.clone());
    // A monolithic upload (its digest given) ends with this request.
    let layout = if q.contains_key("digest") {
        Layout::OneShot
    } else {
        Layout::Resumable
    };
    if let Err(e) = st
        .uploads
        .create_capped(&id, name, owner.as_deref(), Some(st.upload_caps), layout)
        .await
    {
        return Err(refuse_draining(req, e.into()).await);
    }
    if let Some(digest) = q.get("digest") {
        let d: Digest = match digest.parse() {
            Ok(d) => d,
            Err(e) => {
                let _ = st.uploads.cancel(&id).await;
                return Err(e.into());
            }
        };
        if let Some(whole) = content_length(&req, st).and_then(|n| st.writer.whole(&d, n)) {
            if let Err(e) = whole_upload(st, name, &id, &d, whole, req).await {
                let _ = st.writer.cancel(&id).await;
                return Err(e);
            }
            return Ok(blob_created(name, &d));
        }
        if let Err(e) = append_body(st, &id, req).await {
            let _ = st.uploads.cancel(&id).await;
            return Err(e);
        }
        commit_blob(st, name, &id, &d).await?;
        return Ok(blob_created(name, &d));
    }
    st.writer.begin(&id);
    let mut h = session_headers(name, &id, 0);
    h.insert(header::RANGE, "0-0".parse().expect("static"));
    Ok((StatusCode::ACCEPTED, h).into_response())
}

/// The namespace's quota, counting what its open uploads on this node have
/// staged and `incoming` more bytes: refused as the commit would refuse it,
/// before the bytes fill the disk rather than after.
fn check_staging_quota(st: &OciState, name: &str, incoming: u64) -> OciResult<()> {
    let ns = tcr_raft::namespace_of(name);
    let reader = st.meta.reader();
    let Some(quota) = reader.namespace(ns)?.and_then(|n| n.quota_bytes) else {
        return Ok(());
    };
    let usage = reader.namespace_usage(ns)?.map(|u| u.bytes()).unwrap_or(0);
    let needed = st.uploads.staged_bytes(ns).saturating_add(incoming);
    if usage.saturating_add(needed) > quota {
        return Err(OciError::denied(
            tcr_raft::Refusal::QuotaExceeded {
                namespace: ns.to_string(),
                usage,
                quota,
                needed,
            }
            .to_string()
                + " (counting uploads in progress)",
        ));
    }
    Ok(())
}

/// The request back if its declared body fits the namespace's quota with
/// the uploads in progress; else the refusal, after draining the body.
async fn within_staging_quota(st: &OciState, name: &str, req: Request) -> OciResult<Request> {
    match check_staging_quota(st, name, content_length(&req, st).unwrap_or(0)) {
        Ok(()) => Ok(req),
        Err(e) => Err(refuse_draining(req, e).await),
    }
}

async fn owned_session(st: &OciState, name: &str, id: &str) -> OciResult<u64> {
    check_name(name)?;
    let (info, size) = st.uploads.status(id).await?;
    if info.repo != name {
        return Err(OciError::blob_upload_unknown(format!(
            "upload '{id}' does not belong to repository '{name}'"
        )));
    }
    Ok(size)
}

/// Append the request body to the session, at its Content-Range if given.
async fn append_body(st: &OciState, id: &str, req: Request) -> OciResult<u64> {
    let start = content_range_start(req.headers())?;
    let body = body_stream(req, st.body_idle_timeout).map_err(std::io::Error::other);
    Ok(st.writer.append(id, start, body, st.max_blob_bytes).await?)
}

pub async fn patch(st: &OciState, name: &str, id: &str, req: Request) -> OciResult {
    owned_session(st, name, id).await?;
    let req = within_staging_quota(st, name, req).await?;
    let size = append_body(st, id, req).await?;
    Ok((StatusCode::ACCEPTED, session_headers(name, id, size)).into_response())
}

pub async fn put(st: &OciState, name: &str, id: &str, req: Request) -> OciResult {
    let so_far = owned_session(st, name, id).await?;
    let req = within_staging_quota(st, name, req).await?;
    let q = query(&req);
    let Some(digest) = q.get("digest") else {
        return Err(OciError::digest_invalid(
            "PUT to finish an upload needs ?digest=",
        ));
    };
    let d: Digest = digest.parse()?;
    // The whole blob in this PUT (POST, then one PUT): tee it to the owners.
    if so_far == 0 {
        if let Some(whole) = content_length(&req, st).and_then(|n| st.writer.whole(&d, n)) {
            whole_upload(st, name, id, &d, whole, req).await?;
            return Ok(blob_created(name, &d));
        }
    }
    append_body(st, id, req).await?;
    commit_blob(st, name, id, &d).await?;
    Ok(blob_created(name, &d))
}

/// The body's declared length, if it is within the blob size limit.
fn content_length(req: &Request, st: &OciState) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|n| *n <= st.max_blob_bytes)
}

pub async fn status(st: &OciState, name: &str, id: &str) -> OciResult {
    let size = owned_session(st, name, id).await?;
    Ok((StatusCode::NO_CONTENT, session_headers(name, id, size)).into_response())
}

pub async fn cancel(st: &OciState, name: &str, id: &str) -> OciResult {
    owned_session(st, name, id).await?;
    st.writer.cancel(id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn headers(range: &str, len: u64) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_RANGE, range.parse().unwrap());
        h.insert(header::CONTENT_LENGTH, len.into());
        h
    }

    fn refused(r: OciResult<Option<u64>>) -> bool {
        match r {
            Err(e) => e.into_response().status() == StatusCode::RANGE_NOT_SATISFIABLE,
            Ok(_) => false,
        }
    }

    #[test]
    fn a_range_to_the_largest_offset_is_refused_not_overflowed() {
        let r = content_range_start(&headers("0-18446744073709551615", 0));
        assert!(refused(r));
    }

    proptest! {
        // Any start, end and length: a range that starts at `start` when
        // the length is the range's, 416 otherwise; never a panic.
        #[test]
        fn content_ranges_are_checked_against_the_length(
            start in prop_oneof![any::<u64>(), 0u64..4, u64::MAX - 4..=u64::MAX],
            end in prop_oneof![any::<u64>(), 0u64..4, u64::MAX - 4..=u64::MAX],
            len in prop_oneof![any::<u64>(), 0u64..6, u64::MAX - 4..=u64::MAX],
        ) {
            let r = content_range_start(&headers(&format!("{start}-{end}"), len));
            let fits = end >= start && u128::from(end) - u128::from(start) + 1 == u128::from(len);
            if fits {
                prop_assert_eq!(r.ok(), Some(Some(start)));
            } else {
                prop_assert!(refused(r));
            }
        }

        #[test]
        fn arbitrary_content_ranges_never_panic(s in "[ -~]{0,60}") {
            let _ = content_range_start(&headers(&s, 1));
        }
    }
}
