//! What tcr reads out of a manifest before storing it: its media type, the
//! blobs and child manifests it references, and its referrer fields.

use std::collections::BTreeMap;

use serde::Deserialize;
use tcr_storage::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MANIFEST_TYPES: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: Option<String>,
    digest: String,
    size: i64,
    #[serde(default)]
    urls: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<i64>,
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    artifact_type: Option<String>,
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Parsed {
    pub media_type: String,
    pub blobs: Vec<String>,
    pub manifests: Vec<String>,
    pub subject: Option<String>,
    pub artifact_type: Option<String>,
    pub annotations: Option<String>,
}

fn check_descriptor(d: &Descriptor, what: &str) -> Result<String, String> {
    let digest: Digest = d.digest.parse().map_err(|e| format!("{what}: {e}"))?;
    if d.size < 0 {
        return Err(format!("{what}: size {} is negative", d.size));
    }
    if let Some(mt) = &d.media_type {
        if mt.is_empty() {
            return Err(format!("{what}: mediaType is empty"));
        }
    }
    Ok(digest.to_string())
}

/// Parse and validate a manifest body. `content_type` is the request's
/// Content-Type without parameters, if any.
pub fn parse(content_type: Option<&str>, bytes: &[u8]) -> Result<Parsed, String> {
    let raw: Raw =
        serde_json::from_slice(bytes).map_err(|e| format!("manifest is not valid JSON: {e}"))?;
    let declared = raw.media_type.as_deref();
    let header = content_type.filter(|ct| MANIFEST_TYPES.contains(ct));
    let media_type = match (header, declared) {
        (Some(h), Some(d)) if h != d => {
            return Err(format!(
                "Content-Type {h} does not match the manifest's mediaType {d}"
            ))
        }
        (Some(h), _) => h.to_string(),
        (None, Some(d)) => d.to_string(),
        (None, None) => {
            if let Some(ct) =
                content_type.filter(|ct| ct.contains("manifest") || ct.contains("index"))
            {
                return Err(format!("unsupported manifest media type {ct}"));
            }
            if raw.manifests.is_some() {
                OCI_INDEX.to_string()
            } else {
                OCI_MANIFEST.to_string()
            }
        }
    };
    if !MANIFEST_TYPES.contains(&media_type.as_str()) {
        return Err(format!(
            "unsupported manifest media type {media_type} (supported: {})",
            MANIFEST_TYPES.join(", ")
        ));
    }
    if raw.schema_version != Some(2) {
        return Err("schemaVersion must be 2".into());
    }
    let mut blobs = Vec::new();
    let mut manifests = Vec::new();
    let is_index = media_type == OCI_INDEX || media_type == DOCKER_LIST;
    if is_index {
        let list = raw
            .manifests
            .as_ref()
            .ok_or("an index must have a manifests list")?;
        if raw.config.is_some() || raw.layers.is_some() {
            return Err("an index must not have config or layers".into());
        }
        for (i, d) in list.iter().enumerate() {
            manifests.push(check_descriptor(d, &format!("manifests[{i}]"))?);
        }
    } else {
        let config = raw
            .config
            .as_ref()
            .ok_or("an image manifest must have a config")?;
        blobs.push(check_descriptor(config, "config")?);
        let layers = raw
            .layers
            .as_ref()
            .ok_or("an image manifest must have a layers list")?;
        for (i, d) in layers.iter().enumerate() {
            let digest = check_descriptor(d, &format!("layers[{i}]"))?;
            // Foreign layers (with urls) are fetched from elsewhere, not pushed.
            if d.urls.is_empty() {
                blobs.push(digest);
            }
        }
        if raw.manifests.is_some() {
            return Err("an image manifest must not have a manifests list".into());
        }
    }
    let subject = match &raw.subject {
        Some(s) => Some(check_descriptor(s, "subject")?),
        None => None,
    };
    let artifact_type = raw.artifact_type.clone().or_else(|| {
        (!is_index)
            .then(|| raw.config.as_ref().and_then(|c| c.media_type.clone()))
            .flatten()
    });
    blobs.sort();
    blobs.dedup();
    manifests.sort();
    manifests.dedup();
    Ok(Parsed {
        media_type,
        blobs,
        manifests,
        subject,
        artifact_type,
        annotations: raw
            .annotations
            .map(|a| serde_json::to_string(&a).expect("string map serialises")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn image_manifest_references_config_and_layers() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"x","digest":"{}","size":3}}]}}"#,
            d('a'),
            d('b')
        );
        let p = parse(Some(OCI_MANIFEST), m.as_bytes()).unwrap();
        assert_eq!(p.blobs, vec![d('a'), d('b')]);
        assert_eq!(
            p.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
    }

    #[test]
    fn mismatched_content_type_is_invalid() {
        let m = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[]}}"#);
        assert!(parse(Some(OCI_MANIFEST), m.as_bytes()).is_err());
        assert!(parse(Some(OCI_INDEX), m.as_bytes()).is_ok());
    }

    #[test]
    fn schema1_and_bad_digests_are_invalid() {
        let s1 = r#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        assert!(parse(
            Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
            s1.as_bytes()
        )
        .is_err());
        let m = r#"{"schemaVersion":2,"config":{"digest":"sha256:zz","size":1},"layers":[]}"#;
        assert!(parse(None, m.as_bytes()).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(Some(OCI_MANIFEST), &b);
            let _ = parse(None, &b);
        }
    }
}
