//! GET, HEAD and DELETE of blobs, with single byte-range support.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use tcr_raft::Command;
use tcr_storage::Digest;

use super::check_name;
use super::errors::{OciError, OciResult};
use crate::state::OciState;

/// A parsed `Range: bytes=...` header: inclusive (start, end).
pub(crate) fn parse_range(h: &str, size: u64) -> Result<(u64, u64), ()> {
    let spec = h.trim().strip_prefix("bytes=").ok_or(())?;
    if spec.contains(',') {
        return Err(());
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let suffix: u64 = b.parse().map_err(|_| ())?;
        if suffix == 0 {
            return Err(());
        }
        (size.saturating_sub(suffix), size.checked_sub(1).ok_or(())?)
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            size.checked_sub(1).ok_or(())?
        } else {
            b.parse::<u64>()
                .map_err(|_| ())?
                .min(size.saturating_sub(1))
        };
        (start, end)
    };
    if start > end || start >= size {
        return Err(());
    }
    Ok((start, end))
}

fn blob_headers(digest: &Digest) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        "application/octet-stream".parse().expect("static"),
    );
    h.insert(
        "docker-content-digest",
        digest.to_string().parse().expect("digest is ascii"),
    );
    h.insert(header::ACCEPT_RANGES, "bytes".parse().expect("static"));
    h.insert(
        header::ETAG,
        format!("\"{digest}\"").parse().expect("digest is ascii"),
    );
    h
}

pub async fn get(st: &OciState, name: &str, digest: &str, req: Request, head: bool) -> OciResult {
    check_name(name)?;
    let d: Digest = digest.parse()?;
    let d_str = d.to_string();
    let reader = st.meta.read().await?;
    if reader.linked_blob(name, &d_str)?.is_none() {
        return Err(OciError::blob_unknown(format!(
            "blob {d} is not known in repository '{name}'"
        )));
    }
    // The committed record knows the size, wherever the copies are.
    let size = match reader.blob(&d_str)? {
        Some(rec) => rec.size,
        None => st.blobs.stat(&d).await?.unwrap_or(0),
    };
    let mut headers = blob_headers(&d);
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok());
    let (status, start, len) = match range {
        None => (StatusCode::OK, 0, size),
        Some(r) => match parse_range(r, size) {
            Ok((s, e)) => {
                headers.insert(
                    header::CONTENT_RANGE,
                    format!("bytes {s}-{e}/{size}").parse().expect("ascii"),
                );
                (StatusCode::PARTIAL_CONTENT, s, e - s + 1)
            }
            Err(()) => {
                return Err(OciError::range_invalid(format!(
                    "range '{r}' cannot be satisfied for a blob of {size} bytes"
                ))
                .with_header("content-range", format!("bytes */{size}")))
            }
        },
    };
    headers.insert(header::CONTENT_LENGTH, len.into());
    if head {
        return Ok((status, headers).into_response());
    }
    let stream = st
        .replicas
        .open(&d, start, len, size)
        .await
        .map_err(|e| OciError::unavailable(e.to_string()).with_header("retry-after", "1"))?;
    let body = Body::from_stream(stream);
    Ok((status, headers, body).into_response())
}

pub async fn delete(st: &OciState, name: &str, digest: &str) -> OciResult {
    check_name(name)?;
    let d: Digest = digest.parse()?;
    st.meta
        .write(Command::UnlinkBlob {
            repo: name.to_string(),
            digest: d.to_string(),
        })
        .await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

#[cfg(test)]
mod tests {
    use super::parse_range;
    use proptest::prelude::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Ok((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Ok((90, 99)));
        assert_eq!(parse_range("bytes=50-500", 100), Ok((50, 99)));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=5-1", 100), Err(()));
        assert_eq!(parse_range("bytes=0-1,3-4", 100), Err(()));
        assert_eq!(parse_range("items=0-1", 100), Err(()));
        assert_eq!(parse_range("bytes=0-0", 0), Err(()));
    }

    proptest! {
        #[test]
        fn accepted_ranges_lie_inside_the_blob(h in "bytes=[0-9]{0,4}-[0-9]{0,4}", size in 0u64..5000) {
            if let Ok((s, e)) = parse_range(&h, size) {
                prop_assert!(s <= e && e < size);
            }
        }
    }
}
