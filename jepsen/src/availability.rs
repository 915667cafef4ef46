//! Unavailability per fault, read off the history: how long after a fault
//! struck the majority acknowledged a write again, how fast nodes cut off
//! from it answered (even if only with an error), how long after the heal
//! every node acknowledged writes again, and whether the heal cost an
//! election (the term moved after it).

use serde::Serialize;

use crate::history::{pair, Completed, Op, Type};

/// One fault as the nemesis saw it.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Window {
    pub kind: String,
    /// The partition's shape, or the node struck.
    pub label: String,
    /// Nanoseconds since the run started, as in the history: when the
    /// nemesis began the fault, and when it was in full effect (a
    /// partition's rules go in one host at a time).
    pub start: u64,
    pub struck: u64,
    pub stop: u64,
    /// Nodes that cannot reach a majority during the fault (1-based).
    pub minority: Vec<usize>,
    /// The highest term any node reported just before the heal, and once
    /// the calm after it had passed.
    pub term_at_heal: Option<u64>,
    pub term_after: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultAvailability {
    pub kind: String,
    pub label: String,
    pub start_secs: f64,
    pub minority: Vec<usize>,
    /// From the fault's start to the first acknowledged write invoked
    /// after it was in full effect, through a node outside the minority.
    pub majority_first_write_ms: Option<u64>,
    /// Operations invoked at a minority node during the fault: how many,
    /// and the median and longest time to any answer (an unanswered one
    /// counts until the heal).
    pub minority_ops: usize,
    pub minority_answer_median_ms: Option<u64>,
    pub minority_answer_max_ms: Option<u64>,
    /// From the heal until every node that served writes has
    /// acknowledged one invoked after it.
    pub heal_recovery_ms: Option<u64>,
    /// The term moved between the heal and the end of the calm after it.
    pub election_after_heal: Option<bool>,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Availability {
    pub faults: Vec<FaultAvailability>,
    pub median_majority_first_write_ms: Option<u64>,
    pub worst_majority_first_write_ms: Option<u64>,
    pub worst_minority_answer_ms: Option<u64>,
    pub worst_heal_recovery_ms: Option<u64>,
    pub heals: usize,
    pub elections_after_heal: usize,
}

const WRITES: [&str; 3] = ["write", "push", "create"];

fn is_write(c: &Completed) -> bool {
    WRITES.contains(&c.invoke.f.as_str())
}

fn ms(ns: u64) -> u64 {
    ns / 1_000_000
}

fn median(v: &mut [u64]) -> Option<u64> {
    v.sort_unstable();
    v.get(v.len().saturating_sub(1) / 2).copied()
}

/// Analyse each window against the history's client operations.
pub fn analyse(ops: &[Op], windows: &[Window]) -> Availability {
    let done = pair(ops);
    let completed_at = |c: &Completed| c.complete.as_ref().map(|o| o.time);
    let mut faults = Vec::new();
    for w in windows {
        let in_minority = |c: &Completed| c.invoke.node.is_some_and(|n| w.minority.contains(&n));
        let majority_first_write = done
            .iter()
            .filter(|c| is_write(c) && c.kind() == Type::Ok && !in_minority(c))
            .filter(|c| c.invoke.time >= w.struck)
            .filter_map(completed_at)
            .min()
            .map(|t| ms(t - w.start));
        let mut answers: Vec<u64> = done
            .iter()
            .filter(|c| in_minority(c) && c.invoke.time >= w.struck && c.invoke.time < w.stop)
            .map(|c| {
                let end = completed_at(c).unwrap_or(w.stop).max(c.invoke.time);
                ms(end - c.invoke.time)
            })
            .collect();
        let max = answers.iter().max().copied();
        let med = median(&mut answers);
        // Per node, the first acknowledged write invoked after the heal.
        let mut nodes: Vec<usize> = done.iter().filter_map(|c| c.invoke.node).collect();
        nodes.sort_unstable();
        nodes.dedup();
        let mut recovery = Some(0u64);
        for n in nodes {
            let first = done
                .iter()
                .filter(|c| is_write(c) && c.kind() == Type::Ok && c.invoke.node == Some(n))
                .filter(|c| c.invoke.time >= w.stop)
                .filter_map(completed_at)
                .min();
            recovery = match (recovery, first) {
                (Some(r), Some(t)) => Some(r.max(ms(t - w.stop))),
                _ => None,
            };
        }
        faults.push(FaultAvailability {
            kind: w.kind.clone(),
            label: w.label.clone(),
            start_secs: w.start as f64 / 1e9,
            minority: w.minority.clone(),
            majority_first_write_ms: majority_first_write,
            minority_ops: answers.len(),
            minority_answer_median_ms: med,
            minority_answer_max_ms: max,
            heal_recovery_ms: recovery,
            election_after_heal: w.term_at_heal.zip(w.term_after).map(|(a, b)| b != a),
        });
    }
    let mut firsts: Vec<u64> = faults
        .iter()
        .filter_map(|f| f.majority_first_write_ms)
        .collect();
    Availability {
        median_majority_first_write_ms: median(&mut firsts),
        worst_majority_first_write_ms: firsts.iter().max().copied(),
        worst_minority_answer_ms: faults.iter().filter_map(|f| f.minority_answer_max_ms).max(),
        worst_heal_recovery_ms: faults.iter().filter_map(|f| f.heal_recovery_ms).max(),
        heals: faults
            .iter()
            .filter(|f| f.election_after_heal.is_some())
            .count(),
        elections_after_heal: faults
            .iter()
            .filter(|f| f.election_after_heal == Some(true))
            .count(),
        faults,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(process: i64, kind: Type, f: &str, node: usize, time_ms: u64) -> Op {
        Op {
            index: 0,
            process,
            kind,
            f: f.into(),
            workload: "tags".into(),
            key: Some("k".into()),
            value: None,
            time: time_ms * 1_000_000,
            node: Some(node),
            error: None,
        }
    }

    /// Node 1 is cut off from 1000 ms to 5000 ms. The majority's first
    /// write after the cut is acknowledged at 3200 ms; node 1 answers its
    /// clients after 1500 and 300 ms; after the heal node 1 acknowledges
    /// at 5900 ms and the others earlier.
    #[test]
    fn a_fault_is_measured_from_its_start_and_its_heal() {
        let ops = vec![
            // A write acknowledged after the cut but invoked before it was
            // in full effect does not count for the majority.
            op(1, Type::Invoke, "write", 2, 1010),
            op(1, Type::Ok, "write", 2, 1100),
            op(2, Type::Invoke, "write", 3, 1200),
            op(2, Type::Info, "write", 3, 2500),
            op(3, Type::Invoke, "write", 2, 3000),
            op(3, Type::Ok, "write", 2, 3200),
            op(4, Type::Invoke, "read", 1, 1500),
            op(4, Type::Fail, "read", 1, 3000),
            op(5, Type::Invoke, "write", 1, 4000),
            op(5, Type::Info, "write", 1, 4300),
            op(6, Type::Invoke, "write", 1, 5100),
            op(6, Type::Ok, "write", 1, 5900),
            op(7, Type::Invoke, "write", 3, 5000),
            op(7, Type::Ok, "write", 3, 5050),
            op(8, Type::Invoke, "write", 2, 5200),
            op(8, Type::Ok, "write", 2, 5300),
        ];
        let w = Window {
            kind: "partition".into(),
            label: "isolated-leader".into(),
            start: 1_000_000_000,
            struck: 1_050_000_000,
            stop: 5_000_000_000,
            minority: vec![1],
            term_at_heal: Some(3),
            term_after: Some(3),
        };
        let a = analyse(&ops, std::slice::from_ref(&w));
        let f = &a.faults[0];
        assert_eq!(f.majority_first_write_ms, Some(2200));
        assert_eq!(f.minority_ops, 2);
        assert_eq!(f.minority_answer_max_ms, Some(1500));
        assert_eq!(f.minority_answer_median_ms, Some(300));
        assert_eq!(f.heal_recovery_ms, Some(900));
        assert_eq!(f.election_after_heal, Some(false));
        assert_eq!((a.heals, a.elections_after_heal), (1, 0));

        // A term that moved after the heal is an election; a node that
        // never acknowledges again leaves the recovery unknown.
        let w2 = Window {
            term_after: Some(5),
            ..w
        };
        let without_node_1: Vec<Op> = ops.iter().filter(|o| o.process != 6).cloned().collect();
        let a = analyse(&without_node_1, &[w2]);
        assert_eq!(a.elections_after_heal, 1);
        assert_eq!(a.faults[0].heal_recovery_ms, None);
    }
}
