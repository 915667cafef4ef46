//! PUT, GET, HEAD and DELETE of manifests by tag or digest.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tcr_raft::{Command, ManifestPut, Refusal};
use tcr_storage::Digest;

use super::check_name;
use super::errors::{OciError, OciResult};
use super::manifest_format::{self, MANIFEST_TYPES};
use super::names::is_tag;
use crate::metadata::MetaError;
use crate::state::OciState;
use tcr_storage::clock::now_secs;

enum Reference {
    Tag(String),
    Digest(Digest),
}

/// A reference that is neither a tag nor a digest names no manifest: a
/// read or delete answers 404 MANIFEST_UNKNOWN (as Distribution and the
/// conformance suite expect), a push 400 TAG_INVALID.
fn parse_reference(
    reference: &str,
    not_a_reference: fn(String) -> OciError,
) -> OciResult<Reference> {
    if reference.contains(':') {
        return Ok(Reference::Digest(reference.parse()?));
    }
    if !is_tag(reference) {
        return Err(not_a_reference(format!(
            "'{}' is neither a tag ([A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}) nor a digest",
            reference.chars().take(150).collect::<String>()
        )));
    }
    Ok(Reference::Tag(reference.to_string()))
}

/// Bodies over the limit are still read (and dropped) up to this size, so the
/// client gets its 413 instead of a broken pipe mid-send, as Go's net/http
/// does for Distribution.
const DRAIN_CAP: u64 = 64 << 20;

/// The body if it is at most `limit` bytes, `None` if it is larger.
async fn read_limited(body: axum::body::Body, limit: usize) -> OciResult<Option<bytes::Bytes>> {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| OciError::manifest_invalid(format!("reading the manifest body: {e}")))?;
        total += chunk.len() as u64;
        if total > DRAIN_CAP {
            break;
        }
        if total <= limit as u64 {
            buf.extend_from_slice(&chunk);
        }
    }
    Ok((total <= limit as u64).then(|| buf.freeze()))
}

pub async fn put(st: &OciState, name: &str, reference: &str, req: Request) -> OciResult {
    check_name(name)?;
    let reference = parse_reference(reference, OciError::tag_invalid)?;
    let limit = st.max_manifest_bytes;
    let too_large = || OciError::too_large(format!("manifest exceeds the limit of {limit} bytes"));
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        // Far too large to be worth draining: refuse before reading.
        if len > DRAIN_CAP {
            return Err(too_large());
        }
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_string());
    let bytes = read_limited(req.into_body(), limit)
        .await?
        .ok_or_else(too_large)?;
    let digest = Digest::of(&bytes);
    if let Reference::Digest(d) = &reference {
        if d != &digest {
            return Err(OciError::digest_invalid(format!(
                "manifest content has digest {digest}, not {d}"
            )));
        }
    }
    let parsed = manifest_format::parse(content_type.as_deref(), &bytes)
        .map_err(OciError::manifest_invalid)?;
    let subject = parsed.subject.clone();
    let cmd = Command::PutManifest(Box::new(ManifestPut {
        repo: name.to_string(),
        digest: digest.to_string(),
        media_type: parsed.media_type,
        bytes: bytes.to_vec(),
        tag: match reference {
            Reference::Tag(t) => Some(t),
            Reference::Digest(_) => None,
        },
        blobs: parsed.blobs,
        manifests: parsed.manifests,
        subject: parsed.subject,
        artifact_type: parsed.artifact_type,
        annotations: parsed.annotations,
        pushed_at: now_secs(),
    }));
    st.meta.write(cmd).await.map_err(|e| match e {
        MetaError::Refused(Refusal::BlobUnknown { digest, .. }) => OciError::manifest_blob_unknown(
            format!("manifest references blob {digest}, which is not in repository '{name}'"),
        ),
        MetaError::Refused(Refusal::ManifestUnknown { digest, .. }) => OciError::manifest_unknown(
            format!("index references manifest {digest}, which is not in repository '{name}'"),
        )
        .with_status(StatusCode::BAD_REQUEST),
        other => other.into(),
    })?;
    let mut h = HeaderMap::new();
    h.insert(
        header::LOCATION,
        format!("/v2/{name}/manifests/{digest}")
            .parse()
            .expect("ascii"),
    );
    h.insert(
        "docker-content-digest",
        digest.to_string().parse().expect("ascii"),
    );
    h.insert(header::CONTENT_LENGTH, 0.into());
    if let Some(s) = subject {
        h.insert("oci-subject", s.parse().expect("ascii"));
    }
    Ok((StatusCode::CREATED, h).into_response())
}

impl OciError {
    fn with_status(mut self, status: StatusCode) -> OciError {
        self.status = status;
        self
    }
}

/// Whether the client's Accept header admits `media_type`. Clients that send
/// no manifest types at all (or a wildcard) accept anything.
fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
    let mut listed_any = false;
    for v in headers.get_all(header::ACCEPT) {
        let Ok(v) = v.to_str() else { continue };
        for item in v.split(',') {
            let t = item.split(';').next().unwrap_or("").trim();
            if t == media_type || t == "*/*" || t == "application/*" {
                return true;
            }
            if MANIFEST_TYPES.contains(&t) {
                listed_any = true;
            }
        }
    }
    !listed_any
}

pub async fn get(
    st: &OciState,
    name: &str,
    reference: &str,
    req: Request,
    head: bool,
) -> OciResult {
    check_name(name)?;
    let reference = parse_reference(reference, OciError::manifest_unknown)?;
    let state = st.meta.read().await?;
    let digest = match &reference {
        Reference::Digest(d) => d.to_string(),
        Reference::Tag(t) => match state.tag(name, t)? {
            Some(d) => d,
            None if !state.repository_exists(name)? => {
                return Err(OciError::name_unknown(format!(
                    "repository '{name}' is not known"
                )))
            }
            None => {
                return Err(OciError::manifest_unknown(format!(
                    "tag '{t}' is not known in repository '{name}'"
                )))
            }
        },
    };
    let (Some(rec), Some(bytes)) = (
        state.manifest_record(name, &digest)?,
        state.manifest_bytes(name, &digest)?,
    ) else {
        if !state.repository_exists(name)? {
            return Err(OciError::name_unknown(format!(
                "repository '{name}' is not known"
            )));
        }
        return Err(OciError::manifest_unknown(format!(
            "manifest {digest} is not known in repository '{name}'"
        )));
    };
    if !accepts(req.headers(), &rec.media_type) {
        return Err(OciError::manifest_unknown(format!(
            "manifest {digest} is a {}, which the Accept header does not admit",
            rec.media_type
        )));
    }
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        rec.media_type
            .parse()
            .map_err(|_| OciError::internal("stored media type"))?,
    );
    h.insert(header::CONTENT_LENGTH, bytes.len().into());
    h.insert("docker-content-digest", digest.parse().expect("ascii"));
    h.insert(
        header::ETAG,
        format!("\"{digest}\"").parse().expect("ascii"),
    );
    if head {
        return Ok((StatusCode::OK, h).into_response());
    }
    // A GET is a pull (a HEAD only checks); retention's pull rules see it
    // after the next flush.
    let key = match &reference {
        Reference::Tag(t) => t.to_string(),
        Reference::Digest(_) => digest.clone(),
    };
    st.retention.record_pull(name, &key);
    Ok((StatusCode::OK, h, Body::from(bytes)).into_response())
}

pub async fn delete(st: &OciState, name: &str, reference: &str) -> OciResult<Response> {
    check_name(name)?;
    let cmd = match parse_reference(reference, OciError::manifest_unknown)? {
        Reference::Digest(d) => Command::DeleteManifest {
            repo: name.to_string(),
            digest: d.to_string(),
        },
        Reference::Tag(t) => Command::DeleteTag {
            repo: name.to_string(),
            tag: t,
        },
    };
    st.meta.write(cmd).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}
