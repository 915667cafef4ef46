//! `GET /v2/<name>/referrers/<digest>`: an OCI index of the manifests whose
//! `subject` is the digest, optionally filtered by `artifactType`. Paged
//! (`n`, `last`, and a `Link` header when more follow, as the spec allows)
//! and with each entry's annotations capped, so one request on a public
//! repository cannot make the node build a response of gigabytes.

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use serde_json::{json, Map, Value};
use tcr_storage::Digest;

use super::errors::OciResult;
use super::manifest_format::OCI_INDEX;
use super::{check_name, page_size, query};
use crate::listing::{filtered_page, Step};
use crate::state::OciState;

/// Entries per page when the client asks for no `n`, and at most.
const MAX_PAGE: usize = 100;
/// Annotation bytes (keys and values) kept per entry; annotations past it
/// are left out (the manifest itself still has them all).
const MAX_ANNOTATION_BYTES: usize = 16 * 1024;
/// Digests read from the store per scan while filtering by artifact type.
const SCAN: usize = 256;

pub async fn list(st: &OciState, name: &str, digest: &str, req: Request) -> OciResult {
    check_name(name)?;
    let subject: Digest = digest.parse()?;
    let q = query(&req);
    let n = page_size(&q, MAX_PAGE)?;
    let filter = q.get("artifactType");
    let state = st.meta.read().await?;
    let subject = subject.to_string();
    let (manifests, more) = filtered_page(
        q.get("last").cloned(),
        n,
        |after| {
            let page = state.referrers(name, &subject, after, SCAN)?;
            Ok::<_, tcr_raft::ReadError>((page.items, page.more))
        },
        |d| d.clone(),
        |d| {
            let Some(rec) = state.manifest_record(name, &d)? else {
                return Ok(Step::Skip);
            };
            if filter.is_some_and(|f| rec.artifact_type.as_deref() != Some(f.as_str())) {
                return Ok(Step::Skip);
            }
            let mut desc = Map::new();
            desc.insert("mediaType".into(), json!(rec.media_type));
            desc.insert("digest".into(), json!(rec.digest));
            desc.insert("size".into(), json!(rec.size));
            if let Some(at) = &rec.artifact_type {
                desc.insert("artifactType".into(), json!(at));
            }
            if let Some(Value::Object(all)) = rec
                .annotations
                .as_deref()
                .and_then(|a| serde_json::from_str::<Value>(a).ok())
            {
                desc.insert("annotations".into(), Value::Object(capped(all)));
            }
            Ok(Step::Keep((rec.digest, Value::Object(desc))))
        },
    )?;
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(OCI_INDEX));
    if filter.is_some() {
        h.insert(
            "oci-filters-applied",
            HeaderValue::from_static("artifactType"),
        );
    }
    if let (true, Some((last, _))) = (more, manifests.last()) {
        let mut pairs = vec![("n", n.to_string()), ("last", last.clone())];
        if let Some(f) = filter {
            pairs.push(("artifactType", f.clone()));
        }
        let q = serde_urlencoded::to_string(pairs).unwrap_or_default();
        if let Ok(v) = HeaderValue::from_str(&format!(
            "</v2/{name}/referrers/{subject}?{q}>; rel=\"next\""
        )) {
            h.insert(header::LINK, v);
        }
    }
    let manifests: Vec<Value> = manifests.into_iter().map(|(_, d)| d).collect();
    let body = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    Ok((StatusCode::OK, h, body.to_string()).into_response())
}

/// The annotations that fit in `MAX_ANNOTATION_BYTES`, in key order, each
/// whole or not at all (small ones such as a signature's creation time are
/// what clients filter on; a multi-megabyte one is not).
fn capped(all: Map<String, Value>) -> Map<String, Value> {
    let mut kept = Map::new();
    let mut budget = MAX_ANNOTATION_BYTES;
    for (k, v) in all {
        let cost = k.len() + v.as_str().map_or_else(|| v.to_string().len(), str::len);
        if cost <= budget {
            budget -= cost;
            kept.insert(k, v);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn capped_annotations_fit_the_budget_and_keep_every_small_one(
            sizes in proptest::collection::vec(0usize..40_000, 0..20)
        ) {
            let all: Map<String, Value> = sizes
                .iter()
                .enumerate()
                .map(|(i, n)| (format!("k{i:02}"), json!("x".repeat(*n))))
                .collect();
            let kept = capped(all.clone());
            let bytes: usize = kept
                .iter()
                .map(|(k, v)| k.len() + v.as_str().unwrap().len())
                .sum();
            prop_assert!(bytes <= MAX_ANNOTATION_BYTES);
            for (k, v) in &kept {
                prop_assert_eq!(all.get(k), Some(v));
            }
            // Everything fits when the whole lot does.
            let total: usize = all.iter().map(|(k, v)| k.len() + v.as_str().unwrap().len()).sum();
            if total <= MAX_ANNOTATION_BYTES {
                prop_assert_eq!(kept.len(), all.len());
            }
        }
    }
}
