//! Which nodes own a blob: rendezvous (highest-random-weight) hashing over
//! the committed voting members, weighted.
//!
//! Every node computes the same owner list from the same membership, with
//! no table to replicate. Each (digest, member) pair gets a pseudo-random
//! score; the R highest scores own the digest, in score order (the first is
//! tried first on reads). Adding a member takes over only the digests for
//! which it now scores in the top R, about R/(N+1) of them; removing one
//! moves only the digests it owned. Weights use the logarithmic method
//! (score = w / -ln(u), u uniform in (0,1)), under which a member's share
//! of first places is proportional to its weight.

use sha2::{Digest as _, Sha256};

/// A member as placement sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    /// Relative capacity (0 = owns nothing, e.g. while draining).
    pub weight: u32,
}

impl Member {
    pub fn new(id: u64, weight: u32) -> Self {
        Member { id, weight }
    }
}

/// The default replication factor for a cluster of `members` voters.
pub fn default_replication(members: usize) -> usize {
    members.clamp(1, 3)
}

/// Writes acknowledged by this many owners are committed: a majority of R.
pub fn write_quorum(replication: usize) -> usize {
    replication / 2 + 1
}

/// A uniform value in (0, 1) for the pair, stable across versions and
/// platforms (SHA-256 of the digest string and the member id).
fn unit(digest: &str, id: u64) -> f64 {
    let mut h = Sha256::new();
    h.update(digest.as_bytes());
    h.update([0]);
    h.update(id.to_be_bytes());
    let out = h.finalize();
    let x = u64::from_be_bytes(out[..8].try_into().expect("8 bytes"));
    // 53 random bits, shifted off 0 so ln() is finite.
    ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

fn score(digest: &str, m: &Member) -> f64 {
    if m.weight == 0 {
        return f64::NEG_INFINITY;
    }
    m.weight as f64 / -unit(digest, m.id).ln()
}

/// The owners of `digest`: up to `replication` distinct member ids, best
/// first. Members with weight 0 own nothing. The order of `members` does
/// not matter; duplicate ids count once.
pub fn owners(digest: &str, members: &[Member], replication: usize) -> Vec<u64> {
    let mut scored: Vec<(f64, u64)> = members
        .iter()
        .filter(|m| m.weight > 0)
        .map(|m| (score(digest, m), m.id))
        .collect();
    // Highest score first; equal scores (practically never) by id.
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.dedup_by_key(|s| s.1);
    scored
        .into_iter()
        .take(replication)
        .map(|(_, id)| id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn digests(n: usize, seed: u64) -> Vec<String> {
        (0..n as u64)
            .map(|i| {
                let h = Sha256::digest([seed.to_be_bytes(), i.to_be_bytes()].concat());
                format!("sha256:{}", hex::encode(h))
            })
            .collect()
    }

    fn uniform(ids: impl IntoIterator<Item = u64>) -> Vec<Member> {
        ids.into_iter().map(|id| Member::new(id, 100)).collect()
    }

    /// Within 5 standard deviations of a binomial proportion, or 0.005.
    fn close(observed: f64, p: f64, n: usize) -> bool {
        let sd = (p * (1.0 - p) / n as f64).sqrt();
        (observed - p).abs() <= (5.0 * sd).max(0.005)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn deterministic_distinct_and_order_free(
            ids in proptest::collection::btree_set(1u64..1000, 1..9),
            r in 1usize..5,
            seed in any::<u64>(),
        ) {
            let members = uniform(ids.iter().copied());
            let mut reversed = members.clone();
            reversed.reverse();
            for d in digests(50, seed) {
                let o = owners(&d, &members, r);
                prop_assert_eq!(&o, &owners(&d, &members, r));
                prop_assert_eq!(&o, &owners(&d, &reversed, r));
                prop_assert_eq!(o.len(), r.min(members.len()));
                let set: std::collections::BTreeSet<_> = o.iter().collect();
                prop_assert_eq!(set.len(), o.len(), "owners are distinct");
                prop_assert!(o.iter().all(|id| ids.contains(id)));
                // A smaller R is a prefix of a larger one.
                prop_assert_eq!(&owners(&d, &members, 1)[..], &o[..1]);
            }
        }
    }

    proptest! {
        // 100,000 digests per case: few cases.
        #![proptest_config(ProptestConfig::with_cases(6))]

        /// Adding a member moves ownership of about R/(N+1) of the digests,
        /// all of it to the new member; nothing moves between old members.
        #[test]
        fn adding_a_member_moves_its_share_only(n in 2u64..8, r in 1usize..4, seed in any::<u64>()) {
            let before = uniform(1..=n);
            let after = uniform(1..=n + 1);
            let r = r.min(n as usize);
            let all = digests(100_000, seed);
            let (mut moved, mut first_moved) = (0usize, 0usize);
            for d in &all {
                let (o1, o2) = (owners(d, &before, r), owners(d, &after, r));
                if o1 != o2 {
                    moved += 1;
                    prop_assert!(o2.contains(&(n + 1)), "{d}: {o1:?} -> {o2:?} without the new member");
                    // The old owners keep their relative order; one is dropped.
                    let kept: Vec<u64> = o2.iter().copied().filter(|id| *id != n + 1).collect();
                    prop_assert_eq!(&kept[..], &o1[..r - 1]);
                }
                if o1[0] != o2[0] {
                    first_moved += 1;
                }
            }
            let share = r as f64 / (n + 1) as f64;
            prop_assert!(close(moved as f64 / all.len() as f64, share, all.len()),
                "moved {moved} of {}, expected about {share}", all.len());
            let first = 1.0 / (n + 1) as f64;
            prop_assert!(close(first_moved as f64 / all.len() as f64, first, all.len()),
                "first owner moved for {first_moved}, expected about {first}");
        }

        /// Removing a member moves only the digests it owned.
        #[test]
        fn removing_a_member_moves_only_what_it_owned(n in 3u64..9, r in 1usize..4, gone in any::<prop::sample::Index>(), seed in any::<u64>()) {
            let before = uniform(1..=n);
            let gone = before[gone.index(before.len())].id;
            let after: Vec<Member> = before.iter().copied().filter(|m| m.id != gone).collect();
            for d in digests(20_000, seed) {
                let (o1, o2) = (owners(&d, &before, r), owners(&d, &after, r));
                if !o1.contains(&gone) {
                    prop_assert_eq!(o1, o2);
                }
            }
        }

        /// First ownership is shared in proportion to weight.
        #[test]
        fn weights_skew_placement_proportionally(weights in proptest::collection::vec(1u32..10, 2..6), seed in any::<u64>()) {
            let members: Vec<Member> = weights.iter().enumerate().map(|(i, w)| Member::new(i as u64 + 1, *w)).collect();
            let total: u32 = weights.iter().sum();
            let all = digests(100_000, seed);
            let mut firsts = vec![0usize; members.len()];
            for d in &all {
                firsts[owners(d, &members, 1)[0] as usize - 1] += 1;
            }
            for (i, count) in firsts.iter().enumerate() {
                let p = weights[i] as f64 / total as f64;
                prop_assert!(close(*count as f64 / all.len() as f64, p, all.len()),
                    "member {} weight {} of {total}: {count} of {}", i + 1, weights[i], all.len());
            }
        }
    }

    #[test]
    fn weight_zero_owns_nothing_and_r_caps_at_members() {
        let members = vec![Member::new(1, 0), Member::new(2, 5), Member::new(3, 5)];
        for d in digests(1000, 7) {
            let o = owners(&d, &members, 3);
            assert_eq!(o.len(), 2);
            assert!(!o.contains(&1));
        }
        assert_eq!(default_replication(1), 1);
        assert_eq!(default_replication(2), 2);
        assert_eq!(default_replication(7), 3);
        assert_eq!(write_quorum(1), 1);
        assert_eq!(write_quorum(2), 2);
        assert_eq!(write_quorum(3), 2);
        assert_eq!(write_quorum(5), 3);
    }
}
