//! The suite run for real (as root: it makes network namespaces): a short
//! run with every nemesis must come out valid; the same suite against nodes
//! that serve stale reads must report a linearizability violation; and an
//! interrupted or killed run must leave nothing behind.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

fn jepsen() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tcr-jepsen"))
}

fn run(store: &Path, args: &[&str]) -> (Output, Value) {
    let out = jepsen()
        .arg("run")
        .args(["--store", store.to_str().unwrap()])
        .args(args)
        .output()
        .expect("run tcr-jepsen");
    let run_dir = std::fs::read_dir(store)
        .expect("store")
        .next()
        .expect("a run directory")
        .unwrap()
        .path();
    let results = std::fs::read(run_dir.join("results.json")).unwrap_or_else(|e| {
        panic!(
            "results.json: {e}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    for f in ["history.jsonl", "report.html", "n1/node.log"] {
        assert!(run_dir.join(f).is_file(), "{f} missing");
    }
    (out, serde_json::from_slice(&results).unwrap())
}

/// Namespaces, links and FORWARD rules whose names carry `pid`, and
/// processes started from files under `dir`.
fn leftovers(pid: u32, dir: &Path) -> Vec<String> {
    let tag = format!("tcrj{pid}");
    let mut found = Vec::new();
    let text = |args: &[&str]| {
        String::from_utf8_lossy(
            &Command::new(args[0])
                .args(&args[1..])
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned()
    };
    for line in text(&["ip", "netns", "list"])
        .lines()
        .chain(text(&["ip", "-o", "link", "show"]).lines())
        .chain(text(&["iptables", "-S", "FORWARD"]).lines())
    {
        if line.contains(&tag) {
            found.push(line.to_string());
        }
    }
    for line in text(&["ps", "-eo", "pid,args"]).lines() {
        if line.contains(dir.to_str().unwrap()) && line.contains("tcr-node") {
            found.push(line.to_string());
        }
    }
    found
}

#[test]
fn a_short_run_with_every_nemesis_is_valid() {
    let store = tempfile::tempdir().unwrap();
    let (out, results) = run(
        store.path(),
        &[
            "--nodes",
            "5",
            "--time",
            "40s",
            "--nemesis",
            "partition,kill,pause,membership,netem",
            "--workload",
            "tags,blobs,namespaces",
            "--concurrency",
            "6",
            "--fault",
            "4s",
            "--calm",
            "2s",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(results["valid"], true, "{results}");
    assert!(stdout.contains("valid"), "{stdout}");
    // Each nemesis struck at least once (netem only where the kernel has it).
    for kind in ["partition", "kill", "pause", "membership"] {
        assert!(
            results["nemesis"][kind].as_u64().unwrap() >= 1,
            "{kind}: {results}"
        );
    }
    let netem = results["nemesis"]["netem"].as_u64().unwrap();
    let skipped = results["nemesis"]["skipped"].to_string();
    assert!(netem >= 1 || skipped.contains("netem"), "{results}");
    // Work was done and checked.
    assert!(results["ops"]["ok"].as_u64().unwrap() > 200, "{results}");
    assert!(results["workloads"]["tags"]["calls"].as_u64().unwrap() > 50);
    assert!(
        results["workloads"]["blobs"]["acknowledged"]
            .as_u64()
            .unwrap()
            > 20
    );
    assert_eq!(results["workloads"]["blobs"]["lost"], serde_json::json!([]));
}

#[test]
fn stale_reads_are_reported_as_a_linearizability_violation() {
    let store = tempfile::tempdir().unwrap();
    let (out, results) = run(
        store.path(),
        &[
            "--nodes",
            "3",
            "--time",
            "20s",
            "--nemesis",
            "partition",
            "--workload",
            "tags",
            "--concurrency",
            "6",
            "--fault",
            "5s",
            "--calm",
            "2s",
            "--unsafe-stale-reads",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{results}");
    assert_eq!(results["valid"], false);
    let anomalies = results["workloads"]["tags"]["anomalies"]
        .as_array()
        .unwrap();
    assert!(!anomalies.is_empty());
    // Each anomaly comes with a small window of the history.
    for a in anomalies {
        let w = a["window"].as_array().unwrap();
        assert!(!w.is_empty() && w.len() < 20, "{a}");
    }
    assert!(String::from_utf8_lossy(&out.stdout).contains("INVALID"));
}

/// Start a run and wait until its clients are running; returns the child
/// and the run's store.
fn start_and_wait(store: &Path) -> std::process::Child {
    let mut child = jepsen()
        .arg("run")
        .args(["--store", store.to_str().unwrap()])
        .args([
            "--nodes",
            "3",
            "--time",
            "60s",
            "--workload",
            "tags",
            "--nemesis",
            "partition",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Keep draining stderr: the runner still logs while it tears down.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("running [") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(90))
        .expect("the run's clients never started");
    child
}

#[test]
fn an_interrupted_or_killed_run_leaves_nothing_behind() {
    // SIGINT: the run tears itself down.
    let store = tempfile::tempdir().unwrap();
    let mut child = start_and_wait(store.path());
    let pid = child.id();
    assert!(
        !leftovers(pid, store.path()).is_empty(),
        "the run made nothing?"
    );
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(2));
    assert_eq!(leftovers(pid, store.path()), Vec::<String>::new());

    // SIGKILL: nothing can run in the runner, so `tcr-jepsen clean` (which
    // every run also does first) removes what it left.
    let store = tempfile::tempdir().unwrap();
    let mut child = start_and_wait(store.path());
    let pid = child.id();
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    child.wait().unwrap();
    assert!(!leftovers(pid, store.path()).is_empty());
    let out = jepsen().arg("clean").output().unwrap();
    assert!(out.status.success());
    assert_eq!(leftovers(pid, store.path()), Vec::<String>::new());
}
