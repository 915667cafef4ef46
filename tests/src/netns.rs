//! Test hosts of our own: one network namespace per node, joined by veth
//! pairs to a bridge in the test's namespace, and partitions made with
//! iptables inside the namespaces. Everything is removed on drop.

use std::process::Command;

use crate::harness::run;

pub struct Net {
    pub prefix: String,
    bridge: String,
    subnet: String,
    hosts: usize,
}

fn sh(args: &[&str]) {
    run(args[0], &args[1..]);
}

fn quiet(args: &[&str]) {
    let _ = Command::new(args[0]).args(&args[1..]).output();
}

impl Net {
    /// `hosts` namespaces with addresses `<subnet>.1 ..= <subnet>.N`; the
    /// test process reaches them as `<subnet>.254`.
    pub fn new(hosts: usize) -> Net {
        // Unique per process and per call, short enough for interface names.
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = (std::process::id() % 10_000) * 10 + n % 10;
        let prefix = format!("tcr{tag}");
        let subnet = format!("10.{}.{}", 200 + (tag / 256) % 50, tag % 256);
        let net = Net {
            bridge: format!("{prefix}br"),
            prefix,
            subnet,
            hosts,
        };
        sh(&["ip", "link", "add", &net.bridge, "type", "bridge"]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{}.254/24", net.subnet),
            "dev",
            &net.bridge,
        ]);
        sh(&["ip", "link", "set", &net.bridge, "up"]);
        // Docker sets the host's FORWARD policy to DROP, and bridged frames
        // pass through it; let our bridge forward to itself.
        sh(&[
            "iptables",
            "-I",
            "FORWARD",
            "-i",
            &net.bridge,
            "-o",
            &net.bridge,
            "-j",
            "ACCEPT",
        ]);
        for i in 1..=hosts {
            let ns = net.ns(i);
            let (outside, inside) = (format!("{}h{i}", net.prefix), format!("{}n{i}", net.prefix));
            sh(&["ip", "netns", "add", &ns]);
            sh(&[
                "ip", "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ]);
            sh(&["ip", "link", "set", &inside, "netns", &ns]);
            sh(&["ip", "link", "set", &outside, "master", &net.bridge]);
            sh(&["ip", "link", "set", &outside, "up"]);
            sh(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "ip",
                "addr",
                "add",
                &format!("{}/24", net.ip(i)),
                "dev",
                &inside,
            ]);
            sh(&[
                "ip", "netns", "exec", &ns, "ip", "link", "set", &inside, "up",
            ]);
            sh(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        }
        net
    }

    pub fn ns(&self, i: usize) -> String {
        format!("{}-{i}", self.prefix)
    }

    pub fn ip(&self, i: usize) -> String {
        format!("{}.{i}", self.subnet)
    }

    /// Cut host `i` off from every other host (the test process can still
    /// reach it, as a client in its own partition would).
    pub fn isolate(&self, i: usize) {
        for j in (1..=self.hosts).filter(|j| *j != i) {
            let ns = self.ns(i);
            sh(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "iptables",
                "-A",
                "INPUT",
                "-s",
                &self.ip(j),
                "-j",
                "DROP",
            ]);
            sh(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "iptables",
                "-A",
                "OUTPUT",
                "-d",
                &self.ip(j),
                "-j",
                "DROP",
            ]);
        }
    }

    pub fn heal(&self) {
        for i in 1..=self.hosts {
            sh(&["ip", "netns", "exec", &self.ns(i), "iptables", "-F"]);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 1..=self.hosts {
            quiet(&["ip", "link", "del", &format!("{}h{i}", self.prefix)]);
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
