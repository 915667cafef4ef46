//! containerd from Debian's package, in its own root, state and socket,
//! and `ctr` against it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{run, wait_for};

/// A running containerd, killed on drop.
pub struct Containerd {
    child: Child,
    pub socket: String,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Containerd {
    /// Start containerd with everything under `base`; returns once `ctr`
    /// reaches it.
    pub async fn start(base: &Path) -> Containerd {
        std::fs::create_dir_all(base).unwrap();
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
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("containerd from Debian's package (.ci/run installs it)");
        let socket = sock.to_str().unwrap().to_string();
        let d = Containerd { child, socket };
        wait_for("containerd socket", Duration::from_secs(30), || {
            let ok = Command::new("ctr")
                .args(["-a", &d.socket, "version"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            async move { ok }
        })
        .await;
        d
    }

    /// `ctr -a <socket> -n tcr-test <args>`; panics when it fails.
    pub fn ctr(&self, args: &[&str]) -> String {
        let mut all = vec!["-a", self.socket.as_str(), "-n", "tcr-test"];
        all.extend_from_slice(args);
        run("ctr", &all)
    }

    /// The same, returning the output whatever the exit status.
    pub fn ctr_output(&self, args: &[&str]) -> std::process::Output {
        Command::new("ctr")
            .args(["-a", &self.socket, "-n", "tcr-test"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("ctr")
    }
}
