//! Faults, one at a time on a schedule: partitions of several shapes,
//! SIGKILL and restart, SIGSTOP and SIGCONT, membership changes through
//! `tcr`, and slow, lossy links. Each start and stop is in the history.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::Rng;
use tokio::sync::Mutex;

use crate::availability::Window;
use crate::cluster::Cluster;
use crate::history::{Op, Recorder, Type, NEMESIS};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Partition,
    Kill,
    Pause,
    Membership,
    Netem,
}

pub struct Schedule {
    pub kinds: Vec<Kind>,
    /// The partition shapes to take turns with (`SHAPES` by default).
    pub shapes: Vec<String>,
    /// How long each fault lasts, and the calm between faults.
    pub fault: Duration,
    pub calm: Duration,
}

fn note(rec: &Recorder, f: &str, value: String) {
    rec.record(Op {
        index: 0,
        process: NEMESIS,
        kind: Type::Info,
        f: f.to_string(),
        workload: "nemesis".into(),
        key: None,
        value: Some(value),
        time: 0,
        node: None,
        error: None,
    });
}

/// Partition shapes, as pairs of hosts that cannot talk (1-based).
pub fn shape(name: &str, n: usize, leader: usize) -> Vec<(usize, usize)> {
    let all: Vec<usize> = (1..=n).collect();
    let cut_between = |a: &[usize], b: &[usize]| -> Vec<(usize, usize)> {
        a.iter()
            .flat_map(|&x| b.iter().map(move |&y| (x, y)))
            .collect()
    };
    match name {
        "isolated-leader" => {
            let rest: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
            cut_between(&[leader], &rest)
        }
        // Each node hears itself and its neighbours on a ring: a majority
        // for n <= 5 (more neighbours beyond), and no two the same view.
        "majority-ring" => {
            let reach = n / 2;
            let mut cuts = Vec::new();
            for a in 1..=n {
                for b in (a + 1)..=n {
                    let d = (b - a).min(n - (b - a));
                    if d > reach.div_ceil(2).max(1) {
                        cuts.push((a, b));
                    }
                }
            }
            cuts
        }
        // Two halves that only one node in the middle sees both of.
        "bridge" => {
            let mut order = all.clone();
            order.shuffle(&mut rand::rng());
            let mid = n / 2;
            let (left, right) = (&order[..mid], &order[mid + 1..]);
            cut_between(left, right)
        }
        _ => {
            let mut order = all.clone();
            order.shuffle(&mut rand::rng());
            let (a, b) = order.split_at(n / 2);
            cut_between(a, b)
        }
    }
}

pub const SHAPES: [&str; 4] = ["halves", "isolated-leader", "majority-ring", "bridge"];

/// Nodes that see no majority (themselves included) under `cuts`.
pub fn minority(cuts: &[(usize, usize)], n: usize) -> Vec<usize> {
    (1..=n)
        .filter(|&a| {
            let sees = (1..=n)
                .filter(|&b| !cuts.contains(&(a, b)) && !cuts.contains(&(b, a)))
                .count();
            sees <= n / 2
        })
        .collect()
}

/// Injected faults, by kind, and when each struck.
#[derive(Debug, Default, serde::Serialize)]
pub struct Injected {
    pub partition: usize,
    pub kill: usize,
    pub pause: usize,
    pub membership: usize,
    pub netem: usize,
    pub skipped: Vec<String>,
    #[serde(skip)]
    pub windows: Vec<Window>,
}

/// Inject faults until `until`, and past it if need be until every selected
/// kind struck once: a slow fault (membership waits for catch-up) must not
/// crowd another kind out of a short run. The clients keep going until this
/// returns.
pub async fn run(
    cluster: Arc<Mutex<Cluster>>,
    rec: Arc<Recorder>,
    s: Schedule,
    until: Instant,
) -> Injected {
    let mut injected = Injected::default();
    let mut kinds = s.kinds.clone();
    // Known before the first fault: say so once instead of spending a round.
    if kinds.contains(&Kind::Netem) && !cluster.lock().await.hosts.netem_available() {
        injected
            .skipped
            .push("netem: tc netem is not available in this kernel".into());
        note(&rec, "skip-netem", "tc netem is not available".into());
        kinds.retain(|&k| k != Kind::Netem);
    }
    let mut round = 0usize;
    loop {
        tokio::time::sleep(s.calm).await;
        // The term once the calm after the last heal has passed.
        if let Some(w) = injected.windows.last_mut() {
            w.term_after = cluster.lock().await.max_term().await;
        }
        let every_kind_struck = round >= kinds.len();
        if kinds.is_empty() || (every_kind_struck && Instant::now() + s.fault >= until) {
            break;
        }
        let kind = kinds[round % kinds.len()];
        round += 1;
        let result = fault(&cluster, &rec, kind, round, &s, &mut injected).await;
        if let Err(e) = result {
            note(&rec, "error", format!("{kind:?}: {e:#}"));
            let _ = cluster.lock().await.heal_all();
        }
    }
    injected
}

async fn fault(
    cluster: &Mutex<Cluster>,
    rec: &Recorder,
    kind: Kind,
    round: usize,
    s: &Schedule,
    injected: &mut Injected,
) -> anyhow::Result<()> {
    let hold = s.fault;
    let n = cluster.lock().await.nodes.len();
    let leader = cluster.lock().await.leader().await;
    // Every other fault aims at the leader, the rest at a random node.
    let target = match leader {
        Some(l) if round.is_multiple_of(2) => l,
        _ => rand::rng().random_range(1..=n),
    };
    match kind {
        Kind::Partition => {
            let name = &s.shapes[(round / 2) % s.shapes.len()];
            let cuts = shape(name, n, leader.unwrap_or(1));
            note(rec, "start-partition", format!("{name}: cut {cuts:?}"));
            let start = rec.now();
            cluster.lock().await.hosts.partition(&cuts)?;
            let struck = rec.now();
            injected.partition += 1;
            tokio::time::sleep(hold).await;
            let term_at_heal = cluster.lock().await.max_term().await;
            cluster.lock().await.hosts.heal()?;
            note(rec, "stop-partition", "healed".into());
            injected.windows.push(Window {
                kind: "partition".into(),
                label: name.clone(),
                start,
                struck,
                stop: rec.now(),
                minority: minority(&cuts, n),
                term_at_heal,
                term_after: None,
            });
        }
        Kind::Kill => {
            note(rec, "start-kill", format!("SIGKILL node {target}"));
            let start = rec.now();
            cluster.lock().await.kill(target);
            injected.kill += 1;
            tokio::time::sleep(hold).await;
            let term_at_heal = cluster.lock().await.max_term().await;
            cluster.lock().await.restart(target)?;
            note(rec, "stop-kill", format!("restarted node {target}"));
            injected.windows.push(Window {
                kind: "kill".into(),
                label: format!("node {target}"),
                start,
                struck: start,
                stop: rec.now(),
                minority: vec![target],
                term_at_heal,
                term_after: None,
            });
        }
        Kind::Pause => {
            note(rec, "start-pause", format!("SIGSTOP node {target}"));
            let start = rec.now();
            cluster.lock().await.pause(target);
            injected.pause += 1;
            tokio::time::sleep(hold).await;
            let term_at_heal = cluster.lock().await.max_term().await;
            cluster.lock().await.resume(target);
            note(rec, "stop-pause", format!("SIGCONT node {target}"));
            injected.windows.push(Window {
                kind: "pause".into(),
                label: format!("node {target}"),
                start,
                struck: start,
                stop: rec.now(),
                minority: vec![target],
                term_at_heal,
                term_after: None,
            });
        }
        Kind::Membership => {
            // Never the leader, and never below three voters.
            let victim = (1..=n)
                .filter(|&i| Some(i) != leader)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .nth(rand::rng().random_range(0..n - 1))
                .unwrap_or(n);
            note(
                rec,
                "start-membership",
                format!("tcr members remove --id {victim}"),
            );
            let mut c = cluster.lock().await;
            c.remove_member(victim).await?;
            injected.membership += 1;
            c.wipe_and_start(victim)?;
            drop(c);
            tokio::time::sleep(hold / 2).await;
            let mut c = cluster.lock().await;
            c.add_member(victim).await?;
            note(
                rec,
                "stop-membership",
                format!("node {victim} added back with an empty data dir"),
            );
        }
        Kind::Netem => {
            note(
                rec,
                "start-netem",
                "delay 50ms, loss 5% on every node".into(),
            );
            cluster.lock().await.hosts.slow(50, 5)?;
            injected.netem += 1;
            tokio::time::sleep(hold).await;
            cluster.lock().await.hosts.unslow();
            note(rec, "stop-netem", "links restored".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sees(cuts: &[(usize, usize)], n: usize, a: usize) -> BTreeSet<usize> {
        (1..=n)
            .filter(|&b| !cuts.contains(&(a, b)) && !cuts.contains(&(b, a)))
            .collect()
    }

    #[test]
    fn a_majority_ring_gives_every_node_a_majority_and_no_two_the_same() {
        for n in [3usize, 5, 7] {
            let cuts = shape("majority-ring", n, 1);
            let views: Vec<BTreeSet<usize>> = (1..=n).map(|a| sees(&cuts, n, a)).collect();
            for v in &views {
                assert!(v.len() > n / 2, "n={n}: {views:?}");
            }
            if n > 3 {
                let distinct: BTreeSet<_> = views.iter().collect();
                assert_eq!(distinct.len(), n, "n={n}: {views:?}");
                assert!(!cuts.is_empty());
            }
        }
    }

    #[test]
    fn the_minority_is_who_sees_no_majority() {
        assert_eq!(minority(&shape("isolated-leader", 3, 2), 3), vec![2]);
        assert_eq!(minority(&shape("isolated-leader", 5, 4), 5), vec![4]);
        assert!(minority(&shape("majority-ring", 5, 1), 5).is_empty());
        let halves = shape("halves", 5, 1);
        assert_eq!(minority(&halves, 5).len(), 2, "{halves:?}");
    }

    #[test]
    fn an_isolated_leader_sees_only_itself_and_a_bridge_sees_both_sides() {
        let cuts = shape("isolated-leader", 5, 3);
        assert_eq!(sees(&cuts, 5, 3), BTreeSet::from([3]));
        let cuts = shape("bridge", 5, 1);
        let views: Vec<usize> = (1..=5).map(|a| sees(&cuts, 5, a).len()).collect();
        assert_eq!(views.iter().filter(|&&v| v == 5).count(), 1, "{views:?}");
        assert_eq!(views.iter().filter(|&&v| v == 3).count(), 4, "{views:?}");
    }
}
