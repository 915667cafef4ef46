//! Real clients against a node with an admin token: `docker login`, push
//! and pull with a robot credential; anonymous pull of a public namespace;
//! a refused private pull; and a Kubernetes-style pull secret
//! (`.dockerconfigjson`) used by podman; and docker over a rate limit.

use base64::Engine;
use reqwest::StatusCode;
use tcr_tests::harness::{run, run_env, tcr_json, Node};
use tcr_tests::images::{tar, write_layout, Image};

const OPERATOR: &str = "clients-operator";

fn op(node: &Node, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--token", OPERATOR];
    all.extend_from_slice(args);
    tcr_json(&node.url(), &all)
}

/// A node with organisation `acme`, namespaces `acme-priv` (private) and
/// `acme-pub` (public), and a robot credential that may push to both.
async fn registry(dir: &std::path::Path) -> (Node, String) {
    let node = Node::start_with_env(dir, &[("TCR_ADMIN_TOKEN", OPERATOR)]).await;
    op(&node, &["orgs", "create", "acme", "--enable-registry"]);
    op(
        &node,
        &["namespaces", "create", "acme-priv", "--org", "acme"],
    );
    op(
        &node,
        &[
            "namespaces",
            "create",
            "acme-pub",
            "--org",
            "acme",
            "--visibility",
            "public",
        ],
    );
    let cred = op(
        &node,
        &[
            "credentials",
            "create",
            "--org",
            "acme",
            "--name",
            "robot",
            "--scope",
            "acme-priv:pull,push",
            "--scope",
            "acme-pub:pull,push",
        ],
    );
    (node, cred["secret"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn docker_login_push_pull_with_a_robot_credential() {
    let dir = tempfile::tempdir().unwrap();
    let (node, secret) = registry(&dir.path().join("node")).await;
    // A docker config of this test's own: logins never leak between tests.
    let cfg = dir.path().join("docker");
    std::fs::create_dir_all(&cfg).unwrap();
    let env = [("DOCKER_CONFIG", cfg.to_str().unwrap())];
    let docker = |args: &[&str]| run_env("docker", args, &env);
    let docker_fails = |args: &[&str]| {
        let out = std::process::Command::new("docker")
            .args(args)
            .env("DOCKER_CONFIG", &cfg)
            .output()
            .unwrap();
        assert!(!out.status.success(), "docker {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let rootfs = dir.path().join("rootfs.tar");
    let marker = format!("auth test {}", node.http_port);
    std::fs::write(&rootfs, tar(&[("hello.txt", marker.as_bytes())])).unwrap();
    let private = format!("{}/acme-priv/app:v1", node.host());
    let public = format!("{}/acme-pub/app:v1", node.host());

    // Without a login, a push is refused.
    docker(&["import", rootfs.to_str().unwrap(), &private]);
    docker(&["tag", &private, &public]);
    let err = docker_fails(&["push", &private]);
    assert!(
        err.contains("denied") || err.contains("unauthorized"),
        "{err}"
    );

    // `docker login` with the robot credential, then push both.
    docker_login(&cfg, &node.host(), &secret);
    let id = docker(&["image", "inspect", "--format", "{{.Id}}", &private])
        .trim()
        .to_string();
    docker(&["push", &private]);
    docker(&["push", &public]);
    docker(&["rmi", &private, &public]);
    docker(&["pull", &private]);
    let pulled = docker(&["image", "inspect", "--format", "{{.Id}}", &private]);
    assert_eq!(pulled.trim(), id);
    docker(&["rmi", &private]);

    // Logged out: the public image pulls anonymously, the private one not.
    docker(&["logout", &node.host()]);
    docker(&["pull", &public]);
    assert_eq!(
        docker(&["image", "inspect", "--format", "{{.Id}}", &public]).trim(),
        id
    );
    docker(&["rmi", &public]);
    let err = docker_fails(&["pull", &private]);
    assert!(err.contains("denied") || err.contains("login"), "{err}");
    // What docker was told: 401, a challenge naming the scope, a message.
    let r = reqwest::get(format!("{}/v2/acme-priv/app/manifests/v1", node.url()))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.contains("scope=\"repository:acme-priv/app:pull\""),
        "{challenge}"
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("authentication required"),
        "{body}"
    );
}

/// `docker login` as the robot into a docker config of the test's own.
fn docker_login(cfg: &std::path::Path, host: &str, secret: &str) {
    use std::io::Write;
    let mut login = std::process::Command::new("docker")
        .args(["login", host, "-u", "robot", "--password-stdin"])
        .env("DOCKER_CONFIG", cfg)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    login
        .stdin
        .take()
        .unwrap()
        .write_all(secret.as_bytes())
        .unwrap();
    let out = login.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn docker_over_an_organisations_rate_limit_gets_429_then_pulls_once_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let (node, secret) = registry(&dir.path().join("node")).await;
    let cfg = dir.path().join("docker");
    std::fs::create_dir_all(&cfg).unwrap();
    let env = [("DOCKER_CONFIG", cfg.to_str().unwrap())];
    let docker = |args: &[&str]| run_env("docker", args, &env);
    docker_login(&cfg, &node.host(), &secret);
    // Images of their own content: docker fetches a manifest (a counted
    // GET) only for content it does not have yet; it HEADs the rest.
    let images: Vec<String> = (0..6)
        .map(|i| {
            let rootfs = dir.path().join(format!("rootfs{i}.tar"));
            let marker = format!("rate limit test {} image {i}", node.http_port);
            std::fs::write(&rootfs, tar(&[("hello.txt", marker.as_bytes())])).unwrap();
            let image = format!("{}/acme-priv/limited:v{i}", node.host());
            docker(&["import", rootfs.to_str().unwrap(), &image]);
            docker(&["push", &image]);
            docker(&["rmi", &image]);
            image
        })
        .collect();
    let set = op(
        &node,
        &[
            "cluster",
            "set",
            "rate-limit",
            "--org",
            "acme",
            "--pulls-per-minute",
            "4",
        ],
    );
    assert_eq!(set["effective"]["pullsPerMinute"], 4);
    // Nodes read the settings again within a second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // Pull until refused: at most the allowance goes through.
    let mut pulled = 0;
    let refusal = loop {
        assert!(
            pulled < 5,
            "pull {} went through a limit of 4 a minute",
            pulled + 1
        );
        let out = std::process::Command::new("docker")
            .args(["pull", &images[pulled]])
            .env("DOCKER_CONFIG", &cfg)
            .output()
            .unwrap();
        if !out.status.success() {
            break String::from_utf8_lossy(&out.stderr).into_owned();
        }
        pulled += 1;
    };
    assert!(pulled >= 1, "the first pull was refused: {refusal}");
    assert!(refusal.contains("toomanyrequests"), "{refusal}");
    // What docker was told, as Docker Hub tells it.
    let url = format!("{}/v2/acme-priv/limited/manifests/v0", node.url());
    let c = reqwest::Client::new();
    let r = c
        .get(&url)
        .basic_auth("robot", Some(&secret))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=15).contains(&wait), "Retry-After: {wait}");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS");
    // The operator is never limited.
    for _ in 0..6 {
        let r = c.get(&url).bearer_auth(OPERATOR).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    // Once under the limit again (after Retry-After), the same pull goes
    // through.
    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    docker(&["pull", &images[pulled]]);
    // The override removed and no cluster default: no limit.
    op(
        &node,
        &["cluster", "set", "rate-limit", "--org", "acme", "--clear"],
    );
    let shown = op(
        &node,
        &["cluster", "set", "rate-limit", "--pulls-per-minute", "0"],
    );
    assert_eq!(shown["effective"]["pullsPerMinute"], 0);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for _ in 0..8 {
        let r = c
            .get(&url)
            .basic_auth("robot", Some(&secret))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    for image in &images[..=pulled] {
        docker(&["rmi", image]);
    }
}

#[tokio::test]
async fn a_pull_secret_lets_podman_pull_a_private_image() {
    let dir = tempfile::tempdir().unwrap();
    let (node, secret) = registry(&dir.path().join("node")).await;
    let img = Image::new("pull secret", "amd64");
    let src = dir.path().join("src");
    write_layout(&src, &[&img], None, "v1");
    let remote = format!("{}/acme-priv/secret:v1", node.host());
    // Push with the credential (skopeo, basic auth on the command line).
    run(
        "skopeo",
        &[
            "--insecure-policy",
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &format!("robot:{secret}"),
            &format!("oci:{}:v1", src.display()),
            &format!("docker://{remote}"),
        ],
    );
    // The imagePullSecret Kubernetes would mount: a .dockerconfigjson.
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("robot:{secret}"));
    let secret_file = dir.path().join(".dockerconfigjson");
    std::fs::write(
        &secret_file,
        serde_json::json!({"auths": {node.host(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let (root, runroot) = (dir.path().join("root"), dir.path().join("runroot"));
    let (root, runroot) = (root.to_str().unwrap(), runroot.to_str().unwrap());
    let podman = |args: &[&str]| {
        let mut all = vec![
            "--root",
            root,
            "--runroot",
            runroot,
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "none",
        ];
        all.extend_from_slice(args);
        std::process::Command::new("podman")
            .args(&all)
            .env("REGISTRY_AUTH_FILE", "/nonexistent/auth.json")
            .output()
            .unwrap()
    };
    let without = podman(&["pull", "-q", "--tls-verify=false", &remote]);
    assert!(
        !without.status.success(),
        "a private pull without the secret must fail"
    );
    let with = podman(&[
        "pull",
        "-q",
        "--tls-verify=false",
        "--authfile",
        secret_file.to_str().unwrap(),
        &remote,
    ]);
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
    let digest = podman(&["image", "inspect", "--format", "{{.Digest}}", &remote]);
    assert_eq!(
        String::from_utf8_lossy(&digest.stdout).trim(),
        img.manifest_digest()
    );
}

#[tokio::test]
async fn tcr_login_stores_the_credential_for_later_commands() {
    let dir = tempfile::tempdir().unwrap();
    let (node, secret) = registry(&dir.path().join("node")).await;
    let home = dir.path().join("config");
    let tcr = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new(tcr_tests::harness::bin("tcr"))
            .args(["--endpoint", &node.url()])
            .args(args)
            .env("XDG_CONFIG_HOME", &home)
            .env_remove("TCR_TOKEN")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let before = tcr(&["namespaces", "list"], "");
    assert!(!before.status.success());
    let bad = tcr(
        &["login", "-u", "robot", "--password-stdin"],
        "tcr_0000000000000000_nope",
    );
    assert!(!bad.status.success());
    let login = tcr(&["login", "-u", "robot", "--password-stdin"], &secret);
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );
    let stored = home.join("tcr/config.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&stored).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let listed = tcr(&["--output", "json", "namespaces", "list"], "");
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let names: Vec<&str> = v["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme-priv", "acme-pub"]);
    assert!(tcr(&["logout"], "").status.success());
    assert!(!tcr(&["namespaces", "list"], "").status.success());
}
