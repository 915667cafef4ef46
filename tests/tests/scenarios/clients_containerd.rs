//! containerd from Debian's package, in its own root/state/socket:
//! `ctr images push --plain-http` and `ctr images pull --plain-http`.

use tcr_tests::containerd::Containerd;
use tcr_tests::harness::{node_with_namespace, run};
use tcr_tests::images::{write_layout, Image};

#[tokio::test]
async fn ctr_push_and_pull() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_with_namespace(&dir.path().join("node")).await;
    let daemon = Containerd::start(&dir.path().join("containerd")).await;
    let ctr = |args: &[&str]| daemon.ctr(args);

    let img = Image::new("containerd", "amd64");
    let layout = dir.path().join("layout");
    write_layout(&layout, &[&img], None, "v1");
    let archive = dir.path().join("image.tar");
    run(
        "tar",
        &[
            "-C",
            layout.to_str().unwrap(),
            "-cf",
            archive.to_str().unwrap(),
            ".",
        ],
    );
    let name = format!("{}/acme/ctr", node.host());
    ctr(&[
        "images",
        "import",
        "--no-unpack",
        "--base-name",
        &name,
        archive.to_str().unwrap(),
    ]);
    let reference = format!("{name}:v1");
    ctr(&["images", "push", "--plain-http", &reference]);
    ctr(&["images", "rm", &reference]);
    ctr(&[
        "images",
        "pull",
        "--plain-http",
        "--snapshotter",
        "native",
        &reference,
    ]);
    let listed = ctr(&["images", "ls"]);
    let line = listed
        .lines()
        .find(|l| l.starts_with(&reference))
        .unwrap_or_else(|| panic!("{reference} not in:\n{listed}"));
    assert!(line.contains(&img.manifest_digest()), "{line}");
}
