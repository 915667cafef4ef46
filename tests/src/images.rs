//! Images the tests build themselves: layer tarballs, configs, manifests,
//! indexes and OCI image layouts on disk (no registry to pull from here).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

pub fn digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// An uncompressed tar with the given files (path, contents).
pub fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append_data(&mut h, path, *data).expect("tar entry");
    }
    b.into_inner().expect("tar finish")
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip finish")
}

/// One platform image: gzip layer, config, manifest, all as bytes.
pub struct Image {
    pub layer_tar: Vec<u8>,
    pub layer: Vec<u8>,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
}

impl Image {
    /// A small image whose layer holds `marker` (so images differ).
    pub fn new(marker: &str, arch: &str) -> Image {
        let layer_tar = tar(&[
            ("hello.txt", marker.as_bytes()),
            ("etc/tcr-test", arch.as_bytes()),
        ]);
        let layer = gzip(&layer_tar);
        let diff_id = digest(&layer_tar);
        let config = serde_json::to_vec(&json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": ["/hello"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }))
        .expect("config json");
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": digest(&config), "size": config.len()},
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": digest(&layer), "size": layer.len()}],
        }))
        .expect("manifest json");
        Image {
            layer_tar,
            layer,
            config,
            manifest,
        }
    }

    pub fn manifest_digest(&self) -> String {
        digest(&self.manifest)
    }

    pub fn descriptor(&self, arch: &str) -> Value {
        json!({
            "mediaType": OCI_MANIFEST,
            "digest": self.manifest_digest(),
            "size": self.manifest.len(),
            "platform": {"architecture": arch, "os": "linux"},
        })
    }
}

/// An index over platform images.
pub fn index(entries: &[(&Image, &str)]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": entries.iter().map(|(i, a)| i.descriptor(a)).collect::<Vec<_>>(),
    }))
    .expect("index json")
}

fn write_blob(dir: &Path, b: &[u8]) {
    let d = digest(b);
    let path = dir
        .join("blobs/sha256")
        .join(d.trim_start_matches("sha256:"));
    std::fs::create_dir_all(path.parent().expect("parent")).expect("blob dir");
    std::fs::write(path, b).expect("write blob");
}

/// Write an OCI image layout holding `images` and optionally an `index` of
/// them; `tag` names the top (the index if given, else the single image).
pub fn write_layout(dir: &Path, images: &[&Image], top_index: Option<&[u8]>, tag: &str) {
    std::fs::create_dir_all(dir).expect("layout dir");
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("oci-layout");
    for i in images {
        write_blob(dir, &i.layer);
        write_blob(dir, &i.config);
        write_blob(dir, &i.manifest);
    }
    let (media_type, top) = match top_index {
        Some(ix) => {
            write_blob(dir, ix);
            (OCI_INDEX, ix.to_vec())
        }
        None => (OCI_MANIFEST, images[0].manifest.clone()),
    };
    let mut ann = BTreeMap::new();
    ann.insert("org.opencontainers.image.ref.name", tag);
    let index_json = json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": media_type, "digest": digest(&top), "size": top.len(), "annotations": ann}],
    });
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index_json).expect("json"),
    )
    .expect("index.json");
}

/// Read a blob back from an OCI layout.
pub fn layout_blob(dir: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(
        dir.join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .expect("blob in layout")
}

/// The digest `index.json` of a layout names first.
pub fn layout_top(dir: &Path) -> String {
    let v: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("index.json"))
            .expect("json");
    v["manifests"][0]["digest"]
        .as_str()
        .expect("digest")
        .to_string()
}
