//! The Docker Engine on this machine: import, push, remove, pull, same id.

use tcr_tests::harness::{node_with_namespace, run};
use tcr_tests::images::tar;

#[tokio::test]
async fn docker_push_and_pull_keep_the_image_id() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_with_namespace(&dir.path().join("node")).await;
    let rootfs = dir.path().join("rootfs.tar");
    let marker = format!("docker test {}", node.http_port);
    std::fs::write(
        &rootfs,
        tar(&[
            ("hello.txt", marker.as_bytes()),
            ("bin/placeholder", b"#!/bin/sh\n"),
        ]),
    )
    .unwrap();
    let image = format!("{}/acme/docker-test:v1", node.host());

    run("docker", &["import", rootfs.to_str().unwrap(), &image]);
    let id = run(
        "docker",
        &["image", "inspect", "--format", "{{.Id}}", &image],
    )
    .trim()
    .to_string();
    run("docker", &["push", &image]);
    run("docker", &["rmi", &image]);
    let absent = std::process::Command::new("docker")
        .args(["image", "inspect", &image])
        .output()
        .unwrap();
    assert!(
        !absent.status.success(),
        "image still present locally after rmi"
    );
    run("docker", &["pull", &image]);
    let pulled = run(
        "docker",
        &["image", "inspect", "--format", "{{.Id}}", &image],
    )
    .trim()
    .to_string();
    assert_eq!(pulled, id);
    run("docker", &["rmi", &image]);
}
