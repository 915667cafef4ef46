//! kill -9 in the middle of a stream of pushes loses nothing that was
//! acknowledged (DESIGN.md invariant 3, on one node).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use tcr_tests::harness::{wait_for, Node};
use tcr_tests::images::{digest, Image, OCI_MANIFEST};
use tcr_tests::oci::Oci;

/// (repository, tag, manifest bytes) of a push that got its 201.
type Acked = (String, String, Vec<u8>);

#[tokio::test]
async fn kill9_under_pushes_loses_no_acknowledged_push() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path()).await;
    node.create_namespace("acme", "private").await;
    let url = node.url();
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();

    let mut writers = Vec::new();
    for w in 0..4 {
        let acked = acked.clone();
        let url = url.clone();
        writers.push(tokio::spawn(async move {
            let oci = Oci::new(&url);
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            for i in 0.. {
                let img = Image::new(&format!("w{w}-i{i}"), "amd64");
                let repo = format!("acme/w{w}");
                let mut ok = true;
                for blob in [&img.layer, &img.config] {
                    let d = digest(blob);
                    let r = client
                        .post(oci.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")))
                        .body(blob.clone())
                        .send()
                        .await;
                    ok &= matches!(r, Ok(ref r) if r.status() == StatusCode::CREATED);
                }
                if !ok {
                    return;
                }
                let tag = format!("i{i}");
                let r = client
                    .put(oci.url(&format!("/v2/{repo}/manifests/{tag}")))
                    .header("content-type", OCI_MANIFEST)
                    .body(img.manifest.clone())
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == StatusCode::CREATED => {
                        acked
                            .lock()
                            .unwrap()
                            .push((repo, tag, img.manifest.clone()));
                    }
                    _ => return,
                }
            }
        }));
    }
    // Let a good number of pushes through, then pull the plug.
    wait_for("40 acknowledged pushes", Duration::from_secs(60), || {
        let n = acked.lock().unwrap().len();
        async move { n >= 40 }
    })
    .await;
    node.kill9();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    node.restart().await;

    let oci = Oci::new(&node.url());
    for (repo, tag, manifest) in &acked {
        let resp = oci.get(&format!("/v2/{repo}/manifests/{tag}")).await;
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "{repo}:{tag} lost after kill -9"
        );
        assert_eq!(resp.bytes().await.unwrap().as_ref(), manifest.as_slice());
        let m: serde_json::Value = serde_json::from_slice(manifest).unwrap();
        for d in [&m["config"]["digest"], &m["layers"][0]["digest"]] {
            let d = d.as_str().unwrap();
            let blob = oci.get(&format!("/v2/{repo}/blobs/{d}")).await;
            assert_eq!(
                blob.status(),
                StatusCode::OK,
                "blob {d} of {repo}:{tag} lost"
            );
            assert_eq!(digest(&blob.bytes().await.unwrap()), d, "blob {d} corrupt");
        }
    }
    eprintln!(
        "{} acknowledged pushes all present after kill -9",
        acked.len()
    );
}
