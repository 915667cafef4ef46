//! Hosts of their own for the nodes, for the integration tests and the
//! Jepsen suite alike: one network namespace per node, each joined by a
//! veth pair to a bridge in the runner's namespace. The runner reaches
//! every node as a client would (through the bridge); partitions are
//! iptables rules inside the namespaces, so they cut node-to-node paths
//! only; slow links are `tc netem` where the kernel has it.
//!
//! Every name starts with the owner's tag and the runner's pid, so a run
//! can find and remove what an interrupted run of the same owner left
//! (`remove_leftovers`).

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context};

fn sh(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args[0]))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn quiet(args: &[&str]) {
    let _ = Command::new(args[0]).args(&args[1..]).output();
}

pub struct Hosts {
    pub prefix: String,
    bridge: String,
    subnet: String,
    pub n: usize,
    torn_down: bool,
}

impl Hosts {
    /// `n` namespaces `<prefix>-<i>` with addresses `<subnet>.<i>`; the
    /// runner is `<subnet>.254` on the bridge. `owner` (4 characters at
    /// most, so interface names fit) starts every name.
    pub fn create(owner: &str, n: usize) -> anyhow::Result<Hosts> {
        // The runner's pid in every name: `remove_leftovers` spares the
        // names of runs still alive. A second set in one process gets a
        // sequence number after it.
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed) % 10;
        let pid = std::process::id();
        let prefix = match seq {
            0 => format!("{owner}{pid}"),
            _ => format!("{owner}{pid}x{seq}"),
        };
        let tag = pid.wrapping_mul(10).wrapping_add(seq);
        let subnet = format!("10.{}.{}", 180 + (tag / 256) % 60, tag % 256);
        let mut hosts = Hosts {
            bridge: format!("{prefix}br"),
            prefix,
            subnet,
            n: 0,
            torn_down: false,
        };
        sh(&["ip", "link", "add", &hosts.bridge, "type", "bridge"])?;
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{}.254/24", hosts.subnet),
            "dev",
            &hosts.bridge,
        ])?;
        sh(&["ip", "link", "set", &hosts.bridge, "up"])?;
        // Docker sets FORWARD to DROP; bridged frames pass through it.
        sh(&[
            "iptables",
            "-I",
            "FORWARD",
            "-i",
            &hosts.bridge,
            "-o",
            &hosts.bridge,
            "-j",
            "ACCEPT",
        ])?;
        for i in 1..=n {
            hosts.n = i;
            let ns = hosts.ns(i);
            let (outside, inside) = (hosts.veth_out(i), hosts.veth_in(i));
            sh(&["ip", "netns", "add", &ns])?;
            sh(&[
                "ip", "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ])?;
            sh(&["ip", "link", "set", &inside, "netns", &ns])?;
            sh(&["ip", "link", "set", &outside, "master", &hosts.bridge])?;
            sh(&["ip", "link", "set", &outside, "up"])?;
            let addr = format!("{}/24", hosts.ip(i));
            sh(&[
                "ip", "netns", "exec", &ns, "ip", "addr", "add", &addr, "dev", &inside,
            ])?;
            sh(&[
                "ip", "netns", "exec", &ns, "ip", "link", "set", &inside, "up",
            ])?;
            sh(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
        }
        Ok(hosts)
    }

    pub fn ns(&self, i: usize) -> String {
        format!("{}-{i}", self.prefix)
    }

    pub fn ip(&self, i: usize) -> String {
        format!("{}.{i}", self.subnet)
    }

    fn veth_out(&self, i: usize) -> String {
        format!("{}h{i}", self.prefix)
    }

    fn veth_in(&self, i: usize) -> String {
        format!("{}n{i}", self.prefix)
    }

    /// Cut every (a, b) pair in both directions; hosts are 1-based.
    pub fn partition(&self, cuts: &[(usize, usize)]) -> anyhow::Result<()> {
        for &(a, b) in cuts {
            for (x, y) in [(a, b), (b, a)] {
                let (ns, peer) = (self.ns(x), self.ip(y));
                sh(&[
                    "ip", "netns", "exec", &ns, "iptables", "-A", "INPUT", "-s", &peer, "-j",
                    "DROP",
                ])?;
                sh(&[
                    "ip", "netns", "exec", &ns, "iptables", "-A", "OUTPUT", "-d", &peer, "-j",
                    "DROP",
                ])?;
            }
        }
        Ok(())
    }

    /// Cut host `i` off from every other host (the runner can still reach
    /// it, as a client in its own partition would).
    pub fn isolate(&self, i: usize) -> anyhow::Result<()> {
        let cuts: Vec<_> = (1..=self.n).filter(|j| *j != i).map(|j| (i, j)).collect();
        self.partition(&cuts)
    }

    pub fn heal(&self) -> anyhow::Result<()> {
        for i in 1..=self.n {
            sh(&["ip", "netns", "exec", &self.ns(i), "iptables", "-F"])?;
        }
        Ok(())
    }

    /// Whether `tc netem` works here (the module may be missing).
    pub fn netem_available(&self) -> bool {
        let (ns, dev) = (self.ns(1), self.veth_in(1));
        let ok = Command::new("ip")
            .args([
                "netns", "exec", &ns, "tc", "qdisc", "add", "dev", &dev, "root", "netem", "delay",
                "1ms",
            ])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            quiet(&[
                "ip", "netns", "exec", &ns, "tc", "qdisc", "del", "dev", &dev, "root",
            ]);
        }
        ok
    }

    /// Delay and drop packets leaving every node.
    pub fn slow(&self, delay_ms: u32, loss_pct: u32) -> anyhow::Result<()> {
        for i in 1..=self.n {
            sh(&[
                "ip",
                "netns",
                "exec",
                &self.ns(i),
                "tc",
                "qdisc",
                "add",
                "dev",
                &self.veth_in(i),
                "root",
                "netem",
                "delay",
                &format!("{delay_ms}ms"),
                "loss",
                &format!("{loss_pct}%"),
            ])?;
        }
        Ok(())
    }

    pub fn unslow(&self) {
        for i in 1..=self.n {
            quiet(&[
                "ip",
                "netns",
                "exec",
                &self.ns(i),
                "tc",
                "qdisc",
                "del",
                "dev",
                &self.veth_in(i),
                "root",
            ]);
        }
    }

    pub fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        for i in 1..=self.n {
            kill_namespace_processes(&self.ns(i));
            quiet(&["ip", "link", "del", &self.veth_out(i)]);
            quiet(&["ip", "netns", "del", &self.ns(i)]);
        }
        quiet(&[
            "iptables",
            "-D",
            "FORWARD",
            "-i",
            &self.bridge,
            "-o",
            &self.bridge,
            "-j",
            "ACCEPT",
        ]);
        quiet(&["ip", "link", "del", &self.bridge]);
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn kill_namespace_processes(ns: &str) {
    if let Ok(pids) = sh(&["ip", "netns", "pids", ns]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: kill(2) with a pid from `ip netns pids`; no memory involved.
            unsafe {
                libc::kill(pid, libc::SIGCONT);
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// Whether `name` was made by a runner of `owner` that is gone (its pid
/// follows the tag; a live `runner` process keeps its names).
fn orphaned(owner: &str, runner: &str, name: &str) -> bool {
    let Some(rest) = name.strip_prefix(owner) else {
        return false;
    };
    let pid: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let alive = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| comm.trim() == runner);
    !pid.is_empty() && !alive
}

/// Remove what earlier runs of `owner`, whose process is called `runner`,
/// left behind (a runner killed with SIGKILL cannot clean up after
/// itself): their namespaces and the processes in them, their links, and
/// their FORWARD rules. Returns what was removed.
pub fn remove_leftovers(owner: &str, runner: &str) -> Vec<String> {
    let orphaned = |name: &str| orphaned(owner, runner, name);
    let mut removed = Vec::new();
    let netns = sh(&["ip", "netns", "list"]).unwrap_or_default();
    for name in netns.lines().filter_map(|l| l.split_whitespace().next()) {
        if orphaned(name) {
            kill_namespace_processes(name);
            quiet(&["ip", "netns", "del", name]);
            removed.push(format!("netns {name}"));
        }
    }
    let links = sh(&["ip", "-o", "link", "show"]).unwrap_or_default();
    for line in links.lines() {
        let Some(name) = line
            .split(':')
            .nth(1)
            .map(|s| s.trim().split('@').next().unwrap_or("").to_string())
        else {
            continue;
        };
        if orphaned(&name) {
            quiet(&["ip", "link", "del", &name]);
            removed.push(format!("link {name}"));
        }
    }
    let rules = sh(&["iptables", "-S", "FORWARD"]).unwrap_or_default();
    for rule in rules.lines() {
        let bridge = rule
            .split_whitespace()
            .skip_while(|w| *w != "-i")
            .nth(1)
            .unwrap_or("");
        if orphaned(bridge) {
            let args: Vec<&str> = rule.split_whitespace().skip(1).collect();
            let mut cmd = vec!["iptables", "-D"];
            cmd.extend(args);
            quiet(&cmd);
            removed.push(format!("rule {rule}"));
        }
    }
    removed
}
