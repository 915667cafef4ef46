//! Starting one `tcr-node` process: the launcher both the integration
//! tests (`harness::Node`) and the Jepsen suite (`Cluster`) use, so a node
//! is laid out and started the same way in both.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// What a node is started with. Its data goes to `<dir>/data`, its output
/// is appended to `<dir>/node.log`.
pub struct Launch<'a> {
    /// The `tcr-node` binary.
    pub bin: &'a Path,
    pub dir: &'a Path,
    /// Network namespace to run in (`ip netns exec`), if any.
    pub netns: Option<&'a str>,
    /// Address both ports listen on.
    pub ip: &'a str,
    pub http_port: u16,
    pub rpc_port: u16,
    pub args: &'a [String],
    /// The whole node-specific environment: an admin token the runner
    /// happens to have is not passed on unless it is listed here.
    pub env: &'a [(String, String)],
}

impl Launch<'_> {
    pub fn spawn(&self) -> std::io::Result<Child> {
        std::fs::create_dir_all(self.dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("node.log"))?;
        let mut cmd = match self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(self.bin);
                c
            }
            None => Command::new(self.bin),
        };
        cmd.arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--http-addr")
            .arg(format!("{}:{}", self.ip, self.http_port))
            .arg("--rpc-addr")
            .arg(format!("{}:{}", self.ip, self.rpc_port))
            .args(self.args)
            .env_remove("TCR_ADMIN_TOKEN")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        cmd.spawn()
    }
}
