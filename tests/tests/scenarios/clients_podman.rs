//! podman push and pull with --tls-verify=false, in its own storage.

use tcr_tests::harness::{node_with_namespace, run};
use tcr_tests::images::{write_layout, Image};

#[tokio::test]
async fn podman_push_and_pull() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_with_namespace(&dir.path().join("node")).await;
    let img = Image::new("podman", "amd64");
    let src = dir.path().join("src");
    write_layout(&src, &[&img], None, "v1");
    let root = dir.path().join("root");
    let runroot = dir.path().join("runroot");
    let (root, runroot) = (
        root.to_str().unwrap().to_string(),
        runroot.to_str().unwrap().to_string(),
    );
    let podman = |args: &[&str]| {
        let mut all = vec![
            "--root",
            &root,
            "--runroot",
            &runroot,
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "none",
        ];
        all.extend_from_slice(args);
        run("podman", &all)
    };
    let remote = format!("{}/acme/pod:v1", node.host());
    // Put the image into podman's storage under its remote name.
    run(
        "skopeo",
        &[
            "--insecure-policy",
            "copy",
            &format!("oci:{}:v1", src.display()),
            &format!("containers-storage:[vfs@{root}+{runroot}]{remote}"),
        ],
    );
    let local_id = podman(&["image", "inspect", "--format", "{{.Id}}", &remote]);
    let local_id = local_id.trim().to_string();
    podman(&["push", "-q", "--tls-verify=false", &remote]);
    podman(&["rmi", "-a", "-f"]);
    podman(&["pull", "-q", "--tls-verify=false", &remote]);
    let pulled = podman(&["image", "inspect", "--format", "{{.Id}}", &remote]);
    assert_eq!(pulled.trim(), local_id);
    let digest = podman(&["image", "inspect", "--format", "{{.Digest}}", &remote]);
    assert!(!digest.trim().is_empty());
}
