//! Start, wait for, kill and restart real `tcr-node` processes.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the workspace's binaries are: `TCR_BIN_DIR`, or `target/debug`.
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("TCR_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("workspace root")
                .join("target")
                .join("debug")
        });
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: run `cargo build --workspace --bins` first (or set TCR_BIN_DIR)",
        path.display()
    );
    path
}

/// A port that was free a moment ago. Taken below the kernel's ephemeral
/// range (32768 and up): a port the OS handed out and we released could be
/// taken by an outgoing connection before the node binds it. Each test
/// process counts through its own slice of 10000-32000: under nextest the
/// slice is the test's slot, which no two tests running at once share (a
/// port a test freed by stopping a node stays its own for the restart);
/// otherwise it comes from the pid.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let slot = std::env::var("NEXTEST_TEST_GLOBAL_SLOT")
        .ok()
        .and_then(|s| s.parse::<u32>().ok());
    let slice = slot.unwrap_or_else(std::process::id) % 44 * 500;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 10_000 + (slice + n % 500) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
        assert!(n < 5000, "no free port in 10000-32000");
    }
}

/// Poll `cond` until it holds or `timeout` passes.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub struct Node {
    pub dir: PathBuf,
    pub http_port: u16,
    pub rpc_port: u16,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    /// Address the node listens on (127.0.0.1, or its namespace's address).
    pub ip: String,
    /// Network namespace to run in, if any.
    pub netns: Option<String>,
    /// Admin token (required off loopback).
    pub token: Option<String>,
    /// The CA of the registry port's certificate, when it serves HTTPS
    /// (`--tls-cert-file` among the args): URLs are then `https://`.
    pub ca: Option<PathBuf>,
    child: Option<Child>,
}

/// `tcr certs init --out <dir> --hosts <hosts>`: `ca.crt` and, per host,
/// `<host>.crt` and `<host>.key` (a second call reuses the CA).
pub fn certs(dir: &Path, hosts: &[&str]) -> PathBuf {
    let tcr = bin("tcr");
    run(
        tcr.to_str().expect("utf-8 path"),
        &[
            "certs",
            "init",
            "--out",
            dir.to_str().expect("utf-8 path"),
            "--hosts",
            &hosts.join(","),
        ],
    );
    dir.to_path_buf()
}

/// The flags of peer mutual TLS with `host`'s certificate from `dir`.
pub fn peer_tls_args(dir: &Path, host: &str) -> Vec<String> {
    let f = |name: String| dir.join(name).display().to_string();
    vec![
        "--peer-ca-file".into(),
        f("ca.crt".into()),
        "--peer-cert-file".into(),
        f(format!("{host}.crt")),
        "--peer-key-file".into(),
        f(format!("{host}.key")),
    ]
}

/// The flags of HTTPS on the registry port with `host`'s certificate.
pub fn registry_tls_args(dir: &Path, host: &str) -> Vec<String> {
    let f = |name: String| dir.join(name).display().to_string();
    vec![
        "--tls-cert-file".into(),
        f(format!("{host}.crt")),
        "--tls-key-file".into(),
        f(format!("{host}.key")),
    ]
}

/// With `--tls-cert-file <dir>/<host>.crt` among `args` (a `tcr certs
/// init` directory): that directory's CA, which the node's URLs need.
fn registry_ca(args: &[&str]) -> Option<PathBuf> {
    let i = args.iter().position(|a| *a == "--tls-cert-file")?;
    Some(Path::new(args.get(i + 1)?).parent()?.join("ca.crt"))
}

/// A client trusting `ca` (PEM) only.
pub fn https_client(ca: &Path) -> reqwest::ClientBuilder {
    let pem = std::fs::read(ca).expect("read CA");
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA PEM"))
}

impl Node {
    /// Start a node with its data in `dir` (created if needed) and wait
    /// until it is ready.
    pub async fn start(dir: &Path) -> Node {
        Node::start_with_env(dir, &[]).await
    }

    pub async fn start_with_env(dir: &Path, env: &[(&str, &str)]) -> Node {
        Node::start_with(dir, env, &[]).await
    }

    /// Start with extra environment and arguments (e.g. `--join`, `--node-id`).
    pub async fn start_with(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Node {
        let mut node = Node::start_unready(dir, env, args);
        node.wait_ready().await;
        node
    }

    /// Start and return at once (for `--no-init` nodes, ready only once added).
    pub fn start_unready(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Node {
        let token = env
            .iter()
            .find(|(k, _)| *k == "TCR_ADMIN_TOKEN")
            .map(|(_, v)| v.to_string());
        let mut node = Node {
            dir: dir.to_path_buf(),
            http_port: free_port(),
            rpc_port: free_port(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            args: args.iter().map(|a| a.to_string()).collect(),
            ip: "127.0.0.1".into(),
            netns: None,
            token,
            ca: registry_ca(args),
            child: None,
        };
        node.spawn();
        node
    }

    /// Start with HTTPS on the registry port (certificate `host` from the
    /// `tcr certs init` directory `certs`) and wait until it is ready.
    pub async fn start_https(
        dir: &Path,
        certs: &Path,
        host: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Node {
        let mut all = registry_tls_args(certs, host);
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        Node::start_with(dir, env, &all).await
    }

    /// Start again without waiting until it is ready.
    pub fn restart_no_wait(&mut self) {
        self.spawn();
    }

    /// Start host `i` of `net` inside its namespace, with an admin token.
    pub async fn start_in(
        net: &crate::hosts::Hosts,
        i: usize,
        dir: &Path,
        token: &str,
        args: &[&str],
    ) -> Node {
        let mut node = Node {
            dir: dir.to_path_buf(),
            http_port: 5000,
            rpc_port: 5001,
            env: vec![("TCR_ADMIN_TOKEN".into(), token.into())],
            args: args.iter().map(|a| a.to_string()).collect(),
            ip: net.ip(i),
            netns: Some(net.ns(i)),
            token: Some(token.into()),
            ca: None,
            child: None,
        };
        node.spawn();
        node.wait_ready().await;
        node
    }

    /// An HTTP client that sends this node's token, if any.
    pub fn client(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = &self.token {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {t}").parse().expect("token is ascii"),
            );
        }
        self.client_builder()
            .default_headers(headers)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client")
    }

    /// A client builder that trusts this node's registry certificate.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        match &self.ca {
            Some(ca) => https_client(ca),
            None => reqwest::Client::builder(),
        }
    }

    fn spawn(&mut self) {
        let child = crate::launch::Launch {
            bin: &bin("tcr-node"),
            dir: &self.dir,
            netns: self.netns.as_deref(),
            ip: &self.ip,
            http_port: self.http_port,
            rpc_port: self.rpc_port,
            args: &self.args,
            env: &self.env,
        }
        .spawn()
        .expect("spawn tcr-node");
        self.child = Some(child);
    }

    /// `<ip>:<rpc port>`, what `--join` takes.
    pub fn rpc(&self) -> String {
        format!("{}:{}", self.ip, self.rpc_port)
    }

    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.ip, self.http_port)
    }

    /// `<ip>:<port>`, as image references want it.
    pub fn host(&self) -> String {
        format!("{}:{}", self.ip, self.http_port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    pub async fn wait_ready(&mut self) {
        let url = format!("{}/readyz", self.url());
        let client = self.client_builder().build().expect("client");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "tcr-node exited with {status} while starting:\n{}",
                    self.log()
                );
            }
            if let Ok(r) = client.get(&url).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "tcr-node not ready in 60 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same ports and data.
    pub async fn restart(&mut self) {
        self.spawn();
        self.wait_ready().await;
    }

    /// Peak resident memory of the node process so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmHWM in /proc status")
            * 1024
    }

    /// Create a namespace through the management API.
    pub async fn create_namespace(&self, name: &str, visibility: &str) {
        let resp = self
            .client()
            .post(format!("{}/v1/container-registries/namespaces", self.url()))
            .json(&serde_json::json!({"name": name, "visibility": visibility}))
            .send()
            .await
            .expect("create namespace request");
        assert_eq!(
            resp.status(),
            201,
            "create namespace {name}: {:?}",
            resp.text().await
        );
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Run a program to completion; panic with its output when it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    run_env(program, args, &[])
}

pub fn run_env(program: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {program} (is it installed? .ci/run installs it): {e}")
    });
    assert!(
        out.status.success(),
        "{program} {} failed ({}):\nstdout: {}\nstderr: {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh node with namespace `acme`, for client tests.
pub async fn node_with_namespace(dir: &Path) -> Node {
    let node = Node::start(dir).await;
    node.create_namespace("acme", "private").await;
    node
}

/// Run `tcr --endpoint <endpoint> <args>` and return its output, whatever
/// the exit status (for tests of refusals).
pub fn tcr(endpoint: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin("tcr"))
        .args(["--endpoint", endpoint])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run tcr")
}

/// Run `tcr --output json` and parse what it prints; panic if it fails.
pub fn tcr_json(endpoint: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    let out = tcr(endpoint, &all);
    assert!(
        out.status.success(),
        "tcr {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("tcr prints JSON")
}

/// `size` fresh nodes made one cluster with the `tcr` CLI: node 1
/// initialises itself, the others start with `--no-init` and are added with
/// `tcr members add` (with the admin token when `env` sets one). Returns
/// once every node reports `size` voters.
pub async fn cluster(dir: &Path, size: usize, env: &[(&str, &str)], args: &[&str]) -> Vec<Node> {
    let with = |id: usize, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = vec!["--node-id".into(), id.to_string()];
        a.extend(extra.iter().map(|s| s.to_string()));
        a.extend(args.iter().map(|s| s.to_string()));
        a
    };
    let first_args = with(1, &[]);
    let first_args: Vec<&str> = first_args.iter().map(String::as_str).collect();
    let first = Node::start_with(&dir.join("n1"), env, &first_args).await;
    let mut nodes = vec![first];
    for id in 2..=size {
        let a = with(id, &["--no-init"]);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let mut n = Node::start_unready(&dir.join(format!("n{id}")), env, &a);
        let mut cmd = vec![];
        if let Some(t) = &nodes[0].token {
            cmd.extend(["--token".to_string(), t.clone()]);
        }
        if let Some(ca) = &nodes[0].ca {
            cmd.extend(["--cacert".to_string(), ca.display().to_string()]);
        }
        cmd.extend(
            [
                "members",
                "add",
                "--id",
                &id.to_string(),
                "--rpc-addr",
                &n.rpc(),
                "--http-addr",
                &n.host(),
            ]
            .map(String::from),
        );
        let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
        let out = tcr(&nodes[0].url(), &cmd);
        assert!(
            out.status.success(),
            "tcr members add {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        n.wait_ready().await;
        nodes.push(n);
    }
    for n in &nodes {
        wait_for(
            &format!("{size} voters"),
            Duration::from_secs(60),
            || async { voters(n).await == size },
        )
        .await;
    }
    nodes
}

/// `GET /v1/container-registries/cluster` through `node` (Null when it
/// does not answer).
pub async fn cluster_status(node: &Node) -> serde_json::Value {
    let Ok(r) = node
        .client()
        .get(format!("{}/v1/container-registries/cluster", node.url()))
        .send()
        .await
    else {
        return serde_json::Value::Null;
    };
    r.json().await.unwrap_or_default()
}

/// How many voters `node` reports (0 when it does not answer).
pub async fn voters(node: &Node) -> usize {
    let Ok(r) = node
        .client()
        .get(format!("{}/v1/container-registries/cluster", node.url()))
        .send()
        .await
    else {
        return 0;
    };
    let s: serde_json::Value = r.json().await.unwrap_or_default();
    s["members"]
        .as_array()
        .map(|m| m.iter().filter(|m| m["role"] == "voter").count())
        .unwrap_or(0)
}
