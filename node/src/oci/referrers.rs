//! `GET /v2/<name>/referrers/<digest>`: an OCI index of the manifests whose
//! `subject` is the digest, optionally filtered by `artifactType`.

use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::{json, Map, Value};
use tcr_storage::Digest;

use super::errors::OciResult;
use super::manifest_format::OCI_INDEX;
use super::{check_name, query};
use crate::server::AppState;

pub async fn list(st: &AppState, name: &str, digest: &str, req: Request) -> OciResult {
    check_name(name)?;
    let subject: Digest = digest.parse()?;
    let q = query(&req);
    let filter = q.get("artifactType");
    let state = st.meta.read().await?;
    let mut manifests = Vec::new();
    for d in state.referrers(name, &subject.to_string())? {
        let Some(rec) = state.manifest_record(name, &d)? else {
            continue;
        };
        if let Some(f) = filter {
            if rec.artifact_type.as_deref() != Some(f.as_str()) {
                continue;
            }
        }
        let mut desc = Map::new();
        desc.insert("mediaType".into(), json!(rec.media_type));
        desc.insert("digest".into(), json!(rec.digest));
        desc.insert("size".into(), json!(rec.size));
        if let Some(at) = &rec.artifact_type {
            desc.insert("artifactType".into(), json!(at));
        }
        if let Some(a) = rec
            .annotations
            .as_deref()
            .and_then(|a| serde_json::from_str::<Value>(a).ok())
        {
            desc.insert("annotations".into(), a);
        }
        manifests.push(Value::Object(desc));
    }
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, OCI_INDEX.parse().expect("static"));
    if filter.is_some() {
        h.insert(
            "oci-filters-applied",
            "artifactType".parse().expect("static"),
        );
    }
    let body = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    Ok((StatusCode::OK, h, body.to_string()).into_response())
}
