//! containerd from Debian's package, in its own root/state/socket:
//! `ctr images push --plain-http` and `ctr images pull --plain-http`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tcr_tests::harness::{node_with_namespace, run, wait_for};
use tcr_tests::images::{write_layout, Image};

struct Containerd(Child);

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn ctr_push_and_pull() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_with_namespace(&dir.path().join("node")).await;
    let base = dir.path().join("containerd");
    std::fs::create_dir_all(&base).unwrap();
    let sock = base.join("containerd.sock");
    let config = base.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{sock}\"\n",
            root = base.join("root").display(),
            state = base.join("state").display(),
            sock = sock.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(base.join("containerd.log")).unwrap();
    let _daemon = Containerd(
        Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("containerd from Debian's package (.ci/run installs it)"),
    );
    let sock_s = sock.to_str().unwrap().to_string();
    wait_for("containerd socket", Duration::from_secs(30), || {
        let ok = Command::new("ctr")
            .args(["-a", &sock_s, "version"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        async move { ok }
    })
    .await;
    let ctr = |args: &[&str]| {
        let mut all = vec!["-a", sock_s.as_str(), "-n", "tcr-test"];
        all.extend_from_slice(args);
        run("ctr", &all)
    };

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
