//! The cluster under test: real `tcr-node` processes, one per host
//! namespace, formed, changed and inspected with the real `tcr` CLI.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

use tcr_tests::hosts::Hosts;

pub const HTTP_PORT: u16 = 5000;
pub const RPC_PORT: u16 = 5001;

pub struct Node {
    pub id: usize,
    child: Option<Child>,
    pub paused: bool,
}

pub struct Cluster {
    pub hosts: Hosts,
    pub dir: PathBuf,
    bins: PathBuf,
    pub token: String,
    node_args: Vec<String>,
    pub nodes: Vec<Node>,
    http: reqwest::Client,
}

impl Cluster {
    /// Start `n` nodes: node 1 initialises, the others join with `tcr
    /// members add`; returns once every node counts `n` voters.
    pub async fn start(
        n: usize,
        dir: &Path,
        bins: &Path,
        node_args: Vec<String>,
    ) -> anyhow::Result<Cluster> {
        let hosts = Hosts::create(crate::HOSTS_OWNER, n)?;
        let mut c = Cluster {
            hosts,
            dir: dir.to_path_buf(),
            bins: bins.to_path_buf(),
            token: format!("jepsen-{}", rand::random::<u64>()),
            node_args,
            nodes: (1..=n)
                .map(|id| Node {
                    id,
                    child: None,
                    paused: false,
                })
                .collect(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
        };
        c.make_certs()?;
        c.spawn(1, true)?;
        c.wait_ready(1, Duration::from_secs(60)).await?;
        for i in 2..=n {
            c.spawn(i, false)?;
            c.add_member(i).await?;
        }
        c.wait_voters(n, Duration::from_secs(90)).await?;
        Ok(c)
    }

    pub fn url(&self, i: usize) -> String {
        format!("http://{}:{HTTP_PORT}", self.hosts.ip(i))
    }

    /// Node `i`'s directory: its data and its `node.log` (the launcher's layout).
    fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("n{i}"))
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.node_dir(i).join("data")
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.node_dir(i).join("node.log")
    }

    fn certs_dir(&self) -> PathBuf {
        self.dir.join("certs")
    }

    /// Peer mutual TLS, as in production: `tcr certs init` makes a CA and
    /// a certificate for each host's address.
    fn make_certs(&self) -> anyhow::Result<()> {
        let ips: Vec<String> = (1..=self.nodes.len()).map(|i| self.hosts.ip(i)).collect();
        let out = Command::new(self.bins.join("tcr"))
            .args(["certs", "init", "--hosts", &ips.join(",")])
            .arg("--out")
            .arg(self.certs_dir())
            .stdin(Stdio::null())
            .output()
            .context("running tcr certs init")?;
        if !out.status.success() {
            bail!(
                "tcr certs init: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    fn spawn(&mut self, i: usize, init: bool) -> anyhow::Result<()> {
        let ip = self.hosts.ip(i);
        let mut args = vec![
            "--node-id".to_string(),
            i.to_string(),
            "--storage-interval-secs".into(),
            "2".into(),
        ];
        args.extend(tcr_tests::harness::peer_tls_args(&self.certs_dir(), &ip));
        args.extend(self.node_args.iter().cloned());
        if !init {
            args.push("--no-init".into());
        }
        let child = tcr_tests::launch::Launch {
            bin: &self.bins.join("tcr-node"),
            dir: &self.node_dir(i),
            netns: Some(&self.hosts.ns(i)),
            ip: &ip,
            http_port: HTTP_PORT,
            rpc_port: RPC_PORT,
            args: &args,
            env: &[("TCR_ADMIN_TOKEN".into(), self.token.clone())],
        }
        .spawn()
        .context("starting tcr-node")?;
        self.nodes[i - 1].child = Some(child);
        self.nodes[i - 1].paused = false;
        Ok(())
    }

    /// Run `tcr` against a node that answers; `tcr` follows redirects to the leader.
    fn tcr(&self, args: &[&str]) -> anyhow::Result<Value> {
        let mut last = String::new();
        for i in self.live() {
            let out = Command::new(self.bins.join("tcr"))
                .args([
                    "--endpoint",
                    &self.url(i),
                    "--token",
                    &self.token,
                    "--output",
                    "json",
                ])
                .args(args)
                .stdin(Stdio::null())
                .output()
                .context("running tcr")?;
            if out.status.success() {
                return Ok(serde_json::from_slice(&out.stdout).unwrap_or(Value::Null));
            }
            last = String::from_utf8_lossy(&out.stderr).into_owned();
        }
        bail!("tcr {}: {last}", args.join(" "))
    }

    /// Nodes running and not paused.
    pub fn live(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some() && !n.paused)
            .map(|n| n.id)
            .collect()
    }

    pub async fn add_member(&mut self, i: usize) -> anyhow::Result<()> {
        let (rpc, http) = (
            format!("{}:{RPC_PORT}", self.hosts.ip(i)),
            format!("{}:{HTTP_PORT}", self.hosts.ip(i)),
        );
        let id = i.to_string();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.tcr(&[
                "members",
                "add",
                "--id",
                &id,
                "--rpc-addr",
                &rpc,
                "--http-addr",
                &http,
            ]) {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        self.wait_ready(i, Duration::from_secs(60)).await
    }

    pub async fn remove_member(&mut self, i: usize) -> anyhow::Result<()> {
        self.tcr(&["members", "remove", "--id", &i.to_string()])?;
        Ok(())
    }

    pub async fn wait_ready(&self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let ok = self
                .http
                .get(format!("{}/readyz", self.url(i)))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "node {i} not ready after {timeout:?} (see {})",
                    self.log_path(i).display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn status(&self, i: usize) -> Option<Value> {
        let r = self
            .http
            .get(format!("{}/v1/container-registries/cluster", self.url(i)))
            .bearer_auth(&self.token)
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// The highest Raft term any live node reports.
    pub async fn max_term(&self) -> Option<u64> {
        let mut max = None;
        for i in self.live() {
            if let Some(t) = self.status(i).await.and_then(|s| s["term"].as_u64()) {
                max = max.max(Some(t));
            }
        }
        max
    }

    /// The leader as some live node sees it.
    pub async fn leader(&self) -> Option<usize> {
        for i in self.live() {
            if let Some(l) = self.status(i).await.and_then(|s| s["leader"].as_u64()) {
                return Some(l as usize);
            }
        }
        None
    }

    pub async fn wait_voters(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut all = true;
            for i in self.live() {
                let voters = self
                    .status(i)
                    .await
                    .and_then(|s| {
                        s["members"]
                            .as_array()
                            .map(|m| m.iter().filter(|m| m["role"] == "voter").count())
                    })
                    .unwrap_or(0);
                all &= voters == n;
            }
            if all {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the cluster did not reach {n} voters in {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    fn signal(&self, i: usize, sig: i32) {
        if let Some(c) = &self.nodes[i - 1].child {
            // `ip netns exec` execs tcr-node, so the child's pid is the node's.
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    pub fn kill(&mut self, i: usize) {
        self.signal(i, libc::SIGCONT);
        self.signal(i, libc::SIGKILL);
        if let Some(mut c) = self.nodes[i - 1].child.take() {
            let _ = c.wait();
        }
        self.nodes[i - 1].paused = false;
    }

    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        if self.nodes[i - 1].child.is_none() {
            self.spawn(i, false)?;
        }
        Ok(())
    }

    pub fn pause(&mut self, i: usize) {
        self.signal(i, libc::SIGSTOP);
        self.nodes[i - 1].paused = true;
    }

    pub fn resume(&mut self, i: usize) {
        self.signal(i, libc::SIGCONT);
        self.nodes[i - 1].paused = false;
    }

    /// Forget node `i`'s data (after it left the membership) and start it
    /// afresh, not yet a member.
    pub fn wipe_and_start(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(i);
        let _ = std::fs::remove_dir_all(self.data_dir(i));
        self.spawn(i, false)
    }

    /// Every fault undone: links healed, nodes resumed and running.
    pub fn heal_all(&mut self) -> anyhow::Result<()> {
        self.hosts.heal()?;
        self.hosts.unslow();
        for i in 1..=self.nodes.len() {
            if self.nodes[i - 1].paused {
                self.resume(i);
            }
            self.restart(i)?;
        }
        Ok(())
    }

    pub fn teardown(&mut self) {
        for i in 1..=self.nodes.len() {
            self.kill(i);
        }
        self.hosts.teardown();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.teardown();
    }
}
