//! The registry port over HTTPS with a private CA (made by `tcr certs
//! init`), with each real client configured the way its users do it:
//! docker (`/etc/docker/certs.d`), containerd (`ctr --hosts-dir`), skopeo
//! and podman (`--cert-dir`), oras (the CA bundle). Pushes and pulls are
//! byte-identical; a client that does not trust the CA fails with a
//! certificate error instead of falling back to plain HTTP. The token
//! realm comes from --public-url, never from the Host header.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tcr_tests::containerd::Containerd;
use tcr_tests::harness::{bin, certs, free_port, run, run_env, Node};
use tcr_tests::images::{layout_blob, layout_top, tar, write_layout, Image};

/// A node serving HTTPS with a certificate for 127.0.0.1, namespace
/// `acme`, and a directory holding only the CA (what --cert-dir wants).
async fn https_node(dir: &Path) -> (Node, PathBuf) {
    let certs = certs(&dir.join("certs"), &["127.0.0.1"]);
    let node = Node::start_https(&dir.join("node"), &certs, "127.0.0.1", &[], &[]).await;
    node.create_namespace("acme", "private").await;
    let ca_dir = dir.join("ca");
    std::fs::create_dir_all(&ca_dir).unwrap();
    std::fs::copy(certs.join("ca.crt"), ca_dir.join("ca.crt")).unwrap();
    (node, ca_dir)
}

/// Run a program that must fail; returns its stderr and stdout.
fn fails(program: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        !out.status.success(),
        "{program} {args:?} succeeded: {text}"
    );
    text
}

fn is_certificate_error(text: &str) -> bool {
    let t = text.to_lowercase();
    t.contains("x509") || t.contains("certificate")
}

#[tokio::test]
async fn skopeo_and_podman_with_cert_dir() {
    let dir = tempfile::tempdir().unwrap();
    let (node, ca_dir) = https_node(dir.path()).await;
    let ca_dir = ca_dir.to_str().unwrap();
    let img = Image::new("https-skopeo", "amd64");
    let src = dir.path().join("src");
    write_layout(&src, &[&img], None, "v1");
    let remote = format!("docker://{}/acme/app", node.host());
    let skopeo = |args: &[&str]| {
        let mut all = vec!["--insecure-policy"];
        all.extend_from_slice(args);
        run("skopeo", &all)
    };
    skopeo(&[
        "copy",
        "--dest-cert-dir",
        ca_dir,
        &format!("oci:{}:v1", src.display()),
        &format!("{remote}:v1"),
    ]);
    let back = dir.path().join("back");
    skopeo(&[
        "copy",
        "--src-cert-dir",
        ca_dir,
        &format!("{remote}:v1"),
        &format!("oci:{}:v1", back.display()),
    ]);
    assert_eq!(layout_top(&back), img.manifest_digest());
    let d = |b: &[u8]| tcr_tests::images::digest(b);
    assert_eq!(layout_blob(&back, &img.manifest_digest()), img.manifest);
    assert_eq!(layout_blob(&back, &d(&img.layer)), img.layer);
    // Without the CA: a certificate error, not a fallback to HTTP.
    let err = fails(
        "skopeo",
        &["--insecure-policy", "inspect", &format!("{remote}:v1")],
        &[],
    );
    assert!(is_certificate_error(&err), "{err}");

    // podman, in storage of its own.
    let (root, runroot) = (
        dir.path().join("root").display().to_string(),
        dir.path().join("runroot").display().to_string(),
    );
    let podman_args = |args: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = [
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
        ]
        .map(String::from)
        .to_vec();
        all.extend(args.iter().map(|s| s.to_string()));
        all
    };
    let podman = |args: &[&str]| {
        let a = podman_args(args);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        run("podman", &a)
    };
    let tagged = format!("{}/acme/pod:v1", node.host());
    skopeo(&[
        "copy",
        &format!("oci:{}:v1", src.display()),
        &format!("containers-storage:[vfs@{root}+{runroot}]{tagged}"),
    ]);
    let local_id = podman(&["image", "inspect", "--format", "{{.Id}}", &tagged]);
    podman(&["push", "-q", "--cert-dir", ca_dir, &tagged]);
    podman(&["rmi", "-a", "-f"]);
    let a = podman_args(&["pull", "-q", &tagged]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let err = fails("podman", &a, &[]);
    assert!(is_certificate_error(&err), "{err}");
    podman(&["pull", "-q", "--cert-dir", ca_dir, &tagged]);
    let pulled = podman(&["image", "inspect", "--format", "{{.Id}}", &tagged]);
    assert_eq!(pulled.trim(), local_id.trim());
}

/// Removes a directory on drop (the docker daemon's certs.d entry).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn docker_with_certs_d() {
    let dir = tempfile::tempdir().unwrap();
    let (node, ca_dir) = https_node(dir.path()).await;
    let certs_d = PathBuf::from("/etc/docker/certs.d").join(node.host());
    std::fs::create_dir_all(&certs_d).unwrap();
    let _cleanup = RemoveOnDrop(certs_d.clone());
    std::fs::copy(ca_dir.join("ca.crt"), certs_d.join("ca.crt")).unwrap();
    let rootfs = dir.path().join("rootfs.tar");
    let marker = format!("docker https test {}", node.http_port);
    std::fs::write(&rootfs, tar(&[("hello.txt", marker.as_bytes())])).unwrap();
    let image = format!("{}/acme/docker-https:v1", node.host());
    run("docker", &["import", rootfs.to_str().unwrap(), &image]);
    let id = run(
        "docker",
        &["image", "inspect", "--format", "{{.Id}}", &image],
    );
    run("docker", &["push", &image]);
    run("docker", &["rmi", &image]);
    run("docker", &["pull", &image]);
    let pulled = run(
        "docker",
        &["image", "inspect", "--format", "{{.Id}}", &image],
    );
    assert_eq!(pulled.trim(), id.trim());
    run("docker", &["rmi", &image]);
    // The pushes went over TLS: the node's port speaks nothing else.
    let plain = reqwest::get(format!("http://{}/v2/", node.host())).await;
    assert!(plain.map_or(true, |r| !r.status().is_success()));
}

#[tokio::test]
async fn containerd_with_hosts_dir() {
    let dir = tempfile::tempdir().unwrap();
    let (node, ca_dir) = https_node(dir.path()).await;
    let daemon = Containerd::start(&dir.path().join("containerd")).await;
    // hosts.toml for the node, naming the CA or not.
    let hosts_dir = |name: &str, ca: Option<&Path>| -> String {
        let hosts = dir.path().join(name);
        let host_dir = hosts.join(node.host());
        std::fs::create_dir_all(&host_dir).unwrap();
        let mut toml = format!(
            "server = \"https://{h}\"\n\n[host.\"https://{h}\"]\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n",
            h = node.host()
        );
        if let Some(ca) = ca {
            toml.push_str(&format!("  ca = \"{}\"\n", ca.display()));
        }
        std::fs::write(host_dir.join("hosts.toml"), toml).unwrap();
        hosts.to_str().unwrap().to_string()
    };
    let hosts = hosts_dir("hosts", Some(&ca_dir.join("ca.crt")));
    let hosts = hosts.as_str();
    let untrusted_hosts = hosts_dir("untrusted", None);
    let img = Image::new("https-containerd", "amd64");
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
    daemon.ctr(&[
        "images",
        "import",
        "--no-unpack",
        "--base-name",
        &name,
        archive.to_str().unwrap(),
    ]);
    let reference = format!("{name}:v1");
    let untrusted = daemon.ctr_output(&[
        "images",
        "push",
        "--hosts-dir",
        &untrusted_hosts,
        &reference,
    ]);
    assert!(!untrusted.status.success());
    let err = String::from_utf8_lossy(&untrusted.stderr);
    assert!(is_certificate_error(&err), "{err}");
    daemon.ctr(&["images", "push", "--hosts-dir", hosts, &reference]);
    daemon.ctr(&["images", "rm", &reference]);
    daemon.ctr(&[
        "images",
        "pull",
        "--hosts-dir",
        hosts,
        "--snapshotter",
        "native",
        &reference,
    ]);
    let listed = daemon.ctr(&["images", "ls"]);
    let line = listed
        .lines()
        .find(|l| l.starts_with(&reference))
        .unwrap_or_else(|| panic!("{reference} not in:\n{listed}"));
    assert!(line.contains(&img.manifest_digest()), "{line}");
}

const ORAS: &str = r#"
import os, sys
import oras.client
host, work = sys.argv[1], sys.argv[2]
os.chdir(work)
client = oras.client.OrasClient(hostname=host, insecure=False)
with open("report.txt", "w") as f:
    f.write("an artifact over https\n")
client.push(target=f"{host}/acme/artifacts:v1", files=["report.txt:text/plain"])
os.makedirs("out")
client.pull(target=f"{host}/acme/artifacts:v1", outdir="out")
assert open("out/report.txt").read() == "an artifact over https\n"
print("ok")
"#;

#[tokio::test]
async fn oras_with_the_ca_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let (node, ca_dir) = https_node(dir.path()).await;
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let script = dir.path().join("oras_https.py");
    std::fs::write(&script, ORAS).unwrap();
    let ca = ca_dir.join("ca.crt");
    let args = [
        script.to_str().unwrap(),
        &node.host(),
        work.to_str().unwrap(),
    ];
    let out = run_env(
        "python3",
        &args,
        &[("REQUESTS_CA_BUNDLE", ca.to_str().unwrap())],
    );
    assert_eq!(out.lines().last(), Some("ok"));
    // With the system's roots only, the private CA is not trusted.
    let other = dir.path().join("work2");
    std::fs::create_dir_all(&other).unwrap();
    let err = fails(
        "python3",
        &[
            script.to_str().unwrap(),
            &node.host(),
            other.to_str().unwrap(),
        ],
        &[("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")],
    );
    assert!(is_certificate_error(&err), "{err}");
}

#[tokio::test]
async fn tcr_over_https_with_cacert() {
    let dir = tempfile::tempdir().unwrap();
    let (node, ca_dir) = https_node(dir.path()).await;
    let ca = ca_dir.join("ca.crt");
    let out = Command::new(bin("tcr"))
        .args([
            "--endpoint",
            &node.url(),
            "--output",
            "json",
            "namespaces",
            "list",
        ])
        .arg("--cacert")
        .arg(&ca)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("acme"));
    // Without it, the system roots do not know the CA: a clear refusal.
    let out = Command::new(bin("tcr"))
        .args(["--endpoint", &node.url(), "namespaces", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--cacert"), "{err}");
}

#[tokio::test]
async fn the_token_realm_comes_from_public_url_not_the_host_header() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(&dir.path().join("certs"), &["127.0.0.1"]);
    let node = Node::start_https(
        &dir.path().join("node"),
        &certs,
        "127.0.0.1",
        &[("TCR_ADMIN_TOKEN", "realm-token")],
        &["--public-url", "https://registry.example/"],
    )
    .await;
    let c = node.client_builder().build().unwrap();
    for host in [None, Some("evil.example\",x=\"y"), Some("attacker.example")] {
        let mut req = c.get(format!("{}/v2/", node.url()));
        if let Some(h) = host {
            req = req.header("host", h);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401);
        let challenge = r.headers()["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.starts_with("Bearer realm=\"https://registry.example/v2/token\",service=\""),
            "{host:?}: {challenge}"
        );
        assert!(!challenge.contains("evil") && !challenge.contains("attacker"));
    }
    // A URL that could break out of the header is refused at start.
    for bad in ["registry.example", "https://reg\"istry", "https://a b"] {
        let out = Command::new(bin("tcr-node"))
            .args(["--data-dir", dir.path().join("bad").to_str().unwrap()])
            .args(["--http-addr", &format!("127.0.0.1:{}", free_port())])
            .args(["--rpc-addr", &format!("127.0.0.1:{}", free_port())])
            .args(["--public-url", bad])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad} accepted");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--public-url"));
    }
}
