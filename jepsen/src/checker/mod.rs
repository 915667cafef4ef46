//! Checking a history: registers for linearizability, and the final reads
//! for lost data.

pub mod linear;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::history::{pair, Op, Type};
use linear::{Call, Outcome};

#[derive(Debug, Serialize)]
pub struct RegisterResult {
    pub valid: bool,
    pub keys: usize,
    pub calls: usize,
    /// Keys whose search gave up (neither proven nor refuted).
    pub unknown: Vec<String>,
    pub anomalies: Vec<Anomaly>,
}

#[derive(Debug, Serialize)]
pub struct Anomaly {
    pub key: String,
    /// The smallest window of history found with no linearization, as
    /// `[start s, end s] process f value`.
    pub window: Vec<String>,
}

fn secs(ns: u64) -> String {
    if ns == u64::MAX {
        "never".into()
    } else {
        format!("{:.3}", ns as f64 / 1e9)
    }
}

/// Check every key of `workload` (`write`/`read` operations) as a
/// register holding `initial` before the run (None: empty).
pub fn registers(ops: &[Op], workload: &str, initial: Option<&str>) -> RegisterResult {
    let mut by_key: BTreeMap<String, Vec<(Call, String)>> = BTreeMap::new();
    for c in pair(ops) {
        let inv = &c.invoke;
        if inv.workload != workload || !(inv.f == "write" || inv.f == "read") {
            continue;
        }
        let Some(key) = inv.key.clone() else { continue };
        let write = inv.f == "write";
        let (end, value) = match (c.kind(), &c.complete) {
            (Type::Ok, Some(done)) => (
                done.time,
                if write {
                    inv.value.clone()
                } else {
                    done.value.clone()
                },
            ),
            (Type::Info, _) if write => (u64::MAX, inv.value.clone()),
            // Failed operations did not happen; indeterminate reads say nothing.
            _ => continue,
        };
        let call = Call {
            write,
            value: value.filter(|v| !v.is_empty()),
            start: inv.time,
            end,
            index: inv.index,
        };
        if let (Some(v), false) = (initial, by_key.contains_key(&key)) {
            // The setup's write, complete before any client began.
            let setup = Call {
                write: true,
                value: Some(v.to_string()),
                start: 0,
                end: 0,
                index: u64::MAX,
            };
            by_key
                .entry(key.clone())
                .or_default()
                .push((setup, format!("initial value {v:?}")));
        }
        let label = format!(
            "process {} {} {:?} via node {}",
            inv.process,
            inv.f,
            call.value,
            inv.node.unwrap_or(0)
        );
        by_key.entry(key).or_default().push((call, label));
    }
    let mut result = RegisterResult {
        valid: true,
        keys: by_key.len(),
        calls: by_key.values().map(Vec::len).sum(),
        unknown: Vec::new(),
        anomalies: Vec::new(),
    };
    for (key, calls) in by_key {
        let plain: Vec<Call> = calls.iter().map(|(c, _)| c.clone()).collect();
        match linear::check(&plain) {
            Outcome::Linearizable => {}
            Outcome::Unknown => result.unknown.push(key),
            Outcome::Violation { window } => {
                result.valid = false;
                let window = window
                    .iter()
                    .map(|w| {
                        let label = calls
                            .iter()
                            .find(|(c, _)| c.index == w.index)
                            .map(|(_, l)| l.as_str())
                            .unwrap_or("");
                        format!("[{}, {}] {label}", secs(w.start), secs(w.end))
                    })
                    .collect();
                result.anomalies.push(Anomaly { key, window });
            }
        }
    }
    result
}

/// Every acknowledged `f` of `workload`: their keys.
pub fn acknowledged(ops: &[Op], workload: &str, f: &str) -> Vec<String> {
    pair(ops)
        .into_iter()
        .filter(|c| c.invoke.workload == workload && c.invoke.f == f && c.kind() == Type::Ok)
        .filter_map(|c| c.invoke.key)
        .collect()
}

#[derive(Debug, Default, Serialize)]
pub struct Counts {
    pub ok: usize,
    pub fail: usize,
    pub info: usize,
}

pub fn counts(ops: &[Op]) -> Counts {
    let mut c = Counts::default();
    for p in pair(ops) {
        match p.kind() {
            Type::Ok => c.ok += 1,
            Type::Fail => c.fail += 1,
            _ => c.info += 1,
        }
    }
    c
}
