//! skopeo copy to tcr and back (byte-identical), inspect, list-tags, delete,
//! and a multi-arch index by tag and by digest.

use serde_json::Value;
use tcr_tests::harness::{node_with_namespace, run};
use tcr_tests::images::{index, layout_blob, layout_top, write_layout, Image};

fn skopeo(args: &[&str]) -> String {
    let mut all = vec!["--insecure-policy"];
    all.extend_from_slice(args);
    run("skopeo", &all)
}

#[tokio::test]
async fn copy_inspect_list_tags_delete() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_with_namespace(&dir.path().join("node")).await;
    let img = Image::new("skopeo", "amd64");
    let src = dir.path().join("src");
    write_layout(&src, &[&img], None, "v1");
    let remote = format!("docker://{}/acme/app", node.host());

    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", src.display()),
        &format!("{remote}:v1"),
    ]);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", src.display()),
        &format!("{remote}:v2"),
    ]);

    let inspect: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("{remote}:v1"),
    ]))
    .unwrap();
    assert_eq!(inspect["Digest"], img.manifest_digest().as_str());
    assert_eq!(inspect["Architecture"], "amd64");

    let tags: Value =
        serde_json::from_str(&skopeo(&["list-tags", "--tls-verify=false", &remote])).unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["v1", "v2"]));

    let back = dir.path().join("back");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("{remote}:v1"),
        &format!("oci:{}:v1", back.display()),
    ]);
    assert_eq!(layout_top(&back), img.manifest_digest());
    let d = |b: &[u8]| tcr_tests::images::digest(b);
    assert_eq!(layout_blob(&back, &img.manifest_digest()), img.manifest);
    assert_eq!(layout_blob(&back, &d(&img.config)), img.config);
    assert_eq!(layout_blob(&back, &d(&img.layer)), img.layer);

    skopeo(&[
        "delete",
        "--tls-verify=false",
        &format!("{remote}@{}", img.manifest_digest()),
    ]);
    let gone = reqwest::get(format!("{}/v2/acme/app/manifests/v1", node.url()))
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
}

#[tokio::test]
async fn multi_arch_index_by_tag_and_by_digest() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_with_namespace(&dir.path().join("node")).await;
    let amd = Image::new("multi", "amd64");
    let arm = Image::new("multi", "arm64");
    let ix = index(&[(&amd, "amd64"), (&arm, "arm64")]);
    let src = dir.path().join("src");
    write_layout(&src, &[&amd, &arm], Some(&ix), "v1");
    let remote = format!("docker://{}/acme/multi", node.host());
    skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", src.display()),
        &format!("{remote}:v1"),
    ]);

    let ix_digest = tcr_tests::images::digest(&ix);
    for (name, reference) in [
        ("by-tag", format!("{remote}:v1")),
        ("by-digest", format!("{remote}@{ix_digest}")),
    ] {
        let back = dir.path().join(name);
        skopeo(&[
            "copy",
            "--all",
            "--src-tls-verify=false",
            &reference,
            &format!("oci:{}:v1", back.display()),
        ]);
        assert_eq!(layout_top(&back), ix_digest, "{name}");
        assert_eq!(layout_blob(&back, &ix_digest), ix, "{name}");
        for img in [&amd, &arm] {
            assert_eq!(
                layout_blob(&back, &img.manifest_digest()),
                img.manifest,
                "{name}"
            );
            assert_eq!(
                layout_blob(&back, &tcr_tests::images::digest(&img.layer)),
                img.layer,
                "{name}"
            );
        }
    }
    // One platform, chosen by the client, by digest through the index.
    let arm_only = dir.path().join("arm");
    skopeo(&[
        "--override-arch",
        "arm64",
        "copy",
        "--src-tls-verify=false",
        &format!("{remote}:v1"),
        &format!("oci:{}:v1", arm_only.display()),
    ]);
    assert_eq!(layout_top(&arm_only), arm.manifest_digest());
}
