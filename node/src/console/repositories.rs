//! A repository's tags (paginated with the API's cursor, so a repository of
//! 500,000 tags reads as fast as one of ten) and an artifact's detail:
//! manifest, layers, config summary, platforms and referrers.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use axum::Extension;
use futures::future::join_all;
use minijinja::context;
use serde::Deserialize;
use serde_json::{json, Value as Json};

use super::client::{query, seg, Refused, API};
use super::render::ser;
use super::{namespace_crumbs, Console, Viewer};
use crate::oci::names::check_repository;

/// Tags per page.
const PAGE: usize = 50;
/// Largest config blob summarised (image configs are a few KiB).
const MAX_CONFIG: u64 = 1 << 20;

const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.oci.artifact.manifest.v1+json";

#[derive(Deserialize)]
pub struct TagsQuery {
    name: String,
    last: Option<String>,
    prefix: Option<String>,
}

/// `os/arch[/variant]` of each manifest an index lists.
fn platforms(index: &Json) -> Vec<String> {
    index["manifests"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter_map(|m| {
                    let p = &m["platform"];
                    let os = p["os"].as_str()?;
                    let arch = p["architecture"].as_str()?;
                    Some(match p["variant"].as_str() {
                        Some(v) => format!("{os}/{arch}/{v}"),
                        None => format!("{os}/{arch}"),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

pub async fn tags(
    State(c): State<Arc<Console>>,
    Extension(v): Extension<Viewer>,
    Query(q): Query<TagsQuery>,
) -> Response {
    let repo = q.name;
    if let Err(e) = check_repository(&repo) {
        return c.pages.refused(&v, &Refused::bad_request(e.to_string()));
    }
    let n = PAGE.to_string();
    let prefix = q.prefix.as_deref().filter(|p| !p.is_empty());
    let path = format!(
        "{API}/repositories/{}/tags{}",
        seg(&repo),
        query(&[
            ("n", Some(&n)),
            ("last", q.last.as_deref()),
            ("prefix", prefix)
        ])
    );
    let page: Json = match v.client.get(&path).await {
        Ok(p) => p,
        Err(r) => return c.pages.refused(&v, &r),
    };
    let tags = page["tags"].as_array().cloned().unwrap_or_default();
    // Platforms of the page's indexes: one manifest read each, at most a
    // page's worth.
    let rows = join_all(tags.into_iter().map(|t| {
        let repo = repo.clone();
        let v = v.clone();
        async move {
            let is_index = t["mediaType"]
                .as_str()
                .is_some_and(|m| INDEX_TYPES.contains(&m));
            let platforms = if is_index {
                let digest = t["digest"].as_str().unwrap_or_default();
                match v
                    .client
                    .oci(&format!("/v2/{repo}/manifests/{digest}"), ACCEPT)
                    .await
                {
                    Ok(b) => serde_json::from_slice::<Json>(&b)
                        .map(|j| platforms(&j))
                        .unwrap_or_default(),
                    Err(_) => vec![],
                }
            } else {
                vec![]
            };
            json!({ "tag": t, "platforms": platforms })
        }
    }))
    .await;
    let next = (page["more"].as_bool() == Some(true))
        .then(|| {
            rows.last()
                .and_then(|r| r["tag"]["name"].as_str())
                .map(str::to_string)
        })
        .flatten();
    let ns = tcr_raft::namespace_of(&repo).to_string();
    c.pages.page(
        &v,
        "repository.html",
        context! {
            title => repo.clone(),
            nav => "namespaces",
            crumbs => ser(namespace_crumbs(&ns)),
            repo => repo.clone(),
            rows => ser(&rows),
            next => next,
            paged => q.last.is_some(),
            prefix => prefix,
            registry_host => c.registry_host.clone(),
        },
    )
}

#[derive(Deserialize)]
pub struct ArtifactQuery {
    repository: String,
    digest: String,
}

fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }) || d.strip_prefix("sha512:").is_some_and(|h| {
        h.len() == 128
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// OS, architecture, creation time and entrypoint of an image config.
fn config_summary(config: &Json) -> Json {
    let run = &config["config"];
    let join = |v: &Json| {
        v.as_array().map(|a| {
            a.iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
    };
    json!({
        "os": config["os"],
        "architecture": config["architecture"],
        "variant": config["variant"],
        "created": config["created"],
        "entrypoint": join(&run["Entrypoint"]),
        "cmd": join(&run["Cmd"]),
        "user": run["User"],
        "workingDir": run["WorkingDir"],
        "env": run["Env"].as_array().map_or(0, Vec::len),
        "history": config["history"].as_array().map_or(0, Vec::len),
    })
}

pub async fn artifact(
    State(c): State<Arc<Console>>,
    Extension(v): Extension<Viewer>,
    Query(q): Query<ArtifactQuery>,
) -> Response {
    let repo = q.repository;
    if let Err(e) = check_repository(&repo) {
        return c.pages.refused(&v, &Refused::bad_request(e.to_string()));
    }
    if !valid_digest(&q.digest) {
        return c.pages.refused(
            &v,
            &Refused::bad_request(format!("'{}' is not a digest", q.digest)),
        );
    }
    let digest = q.digest;
    let manifest_path = format!("/v2/{repo}/manifests/{digest}");
    let referrers_path = format!("/v2/{repo}/referrers/{digest}");
    let (manifest, referrers) = futures::join!(
        v.client.oci(&manifest_path, ACCEPT),
        v.client
            .oci(&referrers_path, "application/vnd.oci.image.index.v1+json")
    );
    let raw = match manifest {
        Ok(b) => b,
        Err(r) => return c.pages.refused(&v, &r),
    };
    let parsed: Json = serde_json::from_slice(&raw).unwrap_or(Json::Null);
    let pretty = serde_json::to_string_pretty(&parsed)
        .unwrap_or_else(|_| String::from_utf8_lossy(&raw).into_owned());
    let config = &parsed["config"];
    let summary = match (config["digest"].as_str(), config["size"].as_u64()) {
        (Some(d), Some(size)) if size <= MAX_CONFIG && valid_digest(d) => v
            .client
            .oci(&format!("/v2/{repo}/blobs/{d}"), "*/*")
            .await
            .ok()
            .and_then(|b| serde_json::from_slice::<Json>(&b).ok())
            .filter(|j| j.get("architecture").is_some() || j.get("os").is_some())
            .map(|j| config_summary(&j)),
        _ => None,
    };
    let referrers: Vec<Json> = referrers
        .ok()
        .and_then(|b| serde_json::from_slice::<Json>(&b).ok())
        .and_then(|j| j["manifests"].as_array().cloned())
        .unwrap_or_default();
    let ns = tcr_raft::namespace_of(&repo).to_string();
    let layers_total: u64 = parsed["layers"]
        .as_array()
        .map_or(0, |ls| ls.iter().filter_map(|l| l["size"].as_u64()).sum());
    c.pages.page(
        &v,
        "artifact.html",
        context! {
            title => format!("{repo}@{}", &digest[..digest.len().min(19)]),
            nav => "namespaces",
            crumbs => ser([
                namespace_crumbs(&ns),
                vec![(repo.clone(), format!("/console/repository?name={}", seg(&repo)))],
            ]
            .concat()),
            repo => repo.clone(),
            digest => digest.clone(),
            size => raw.len(),
            manifest => ser(&parsed),
            pretty => pretty,
            layers_total => layers_total,
            platforms => platforms(&parsed),
            config => summary.map(|s| ser(&s)),
            referrers => ser(&referrers),
            registry_host => c.registry_host.clone(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_lists_its_platforms_and_a_config_reads_as_a_summary() {
        let index = json!({"manifests": [
            {"platform": {"os": "linux", "architecture": "amd64"}},
            {"platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"annotations": {}}
        ]});
        assert_eq!(platforms(&index), vec!["linux/amd64", "linux/arm64/v8"]);
        let s = config_summary(&json!({"os": "linux", "architecture": "amd64",
            "config": {"Entrypoint": ["/bin/sh", "-c"], "Env": ["A=1"]}}));
        assert_eq!(s["entrypoint"], "/bin/sh -c");
        assert_eq!(s["env"], 1);
        assert!(valid_digest(&format!("sha256:{}", "a".repeat(64))));
        assert!(!valid_digest("sha256:../../x"));
    }
}
