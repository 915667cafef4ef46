//! The history: every operation's invocation and completion, in the order
//! they happened, as Jepsen records them. A completion is `ok` (it took
//! effect), `fail` (it certainly did not) or `info` (indeterminate: a
//! timeout, a lost connection, an unavailable answer).

use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Type {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// The process number of the nemesis.
pub const NEMESIS: i64 = -1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Op {
    pub index: u64,
    /// A client process (a new number after an indeterminate operation, as
    /// in Jepsen: the old one may still be in flight), or -1 for the nemesis.
    pub process: i64,
    #[serde(rename = "type")]
    pub kind: Type,
    /// `write`, `read`, `push`, `create`, ... or the nemesis' action.
    pub f: String,
    /// The workload (`tags`, `blobs`, `namespaces`) or `nemesis`.
    pub workload: String,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
    /// Nanoseconds since the run started.
    pub time: u64,
    /// The node the client talked to (1-based).
    #[serde(default)]
    pub node: Option<usize>,
    #[serde(default)]
    pub error: Option<String>,
}

pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Op>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            start: Instant::now(),
            ops: Mutex::new(Vec::new()),
        }
    }
}

impl Recorder {
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Append an event; its index and time are set here.
    pub fn record(&self, mut op: Op) -> Op {
        let mut ops = self.ops.lock().expect("history lock");
        op.index = ops.len() as u64;
        op.time = self.now();
        ops.push(op.clone());
        op
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().expect("history lock").clone()
    }
}

/// An operation with its completion: `end` is None for one whose
/// completion is `info` or missing (it may take effect at any later time).
#[derive(Clone, Debug, PartialEq)]
pub struct Completed {
    pub invoke: Op,
    pub complete: Option<Op>,
}

impl Completed {
    pub fn kind(&self) -> Type {
        self.complete.as_ref().map_or(Type::Info, |c| c.kind)
    }
}

/// Pair each invocation with its process' next completion.
pub fn pair(ops: &[Op]) -> Vec<Completed> {
    let mut open: std::collections::HashMap<i64, usize> = Default::default();
    let mut out: Vec<Completed> = Vec::new();
    for op in ops {
        if op.process == NEMESIS {
            continue;
        }
        match op.kind {
            Type::Invoke => {
                open.insert(op.process, out.len());
                out.push(Completed {
                    invoke: op.clone(),
                    complete: None,
                });
            }
            _ => {
                if let Some(i) = open.remove(&op.process) {
                    out[i].complete = Some(op.clone());
                }
            }
        }
    }
    out
}
