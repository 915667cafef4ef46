//! Bounds on checking secrets. argon2 costs about 19 MiB and tens of
//! milliseconds per check by design, so at most about one check per core
//! runs at once (the rest wait briefly, then get 503), and a credential id
//! or client address that keeps presenting wrong secrets must wait longer
//! after each failure (429). Counted on this node only: a failure costs no
//! Raft write.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};

/// Whose failures are counted.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Key {
    Credential(String),
    Address(IpAddr),
}

impl Key {
    /// Failures allowed before waiting starts: a person mistyping a secret
    /// a few times never notices; one address may front many users (NAT).
    fn free_failures(&self) -> u32 {
        match self {
            Key::Credential(_) => 5,
            Key::Address(_) => 20,
        }
    }
}

struct Failures {
    count: u32,
    last: Instant,
}

/// Failures older than this are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// The longest wait imposed after failures.
const MAX_WAIT: Duration = Duration::from_secs(300);
/// Keys remembered at most; past it the oldest quiet ones go first.
const MAX_KEYS: usize = 100_000;
/// How long a request waits for an argon2 slot before it is told to retry.
const SLOT_WAIT: Duration = Duration::from_secs(5);

pub struct Throttle {
    slots: Semaphore,
    failures: Mutex<HashMap<Key, Failures>>,
}

impl Throttle {
    /// `checks`: argon2 checks at once (about the number of cores).
    pub fn new(checks: usize) -> Throttle {
        Throttle {
            slots: Semaphore::new(checks.max(1)),
            failures: Mutex::default(),
        }
    }

    /// `Err(wait)` while `key` must wait after its recent failures.
    pub fn check(&self, key: &Key) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &Key, now: Instant) -> Result<(), Duration> {
        let map = self.failures.lock().expect("throttle lock");
        let Some(f) = map.get(key) else {
            return Ok(());
        };
        let since = now.saturating_duration_since(f.last);
        let wait = wait_after(f.count, key.free_failures());
        if since >= FORGET_AFTER || since >= wait {
            Ok(())
        } else {
            Err(wait - since)
        }
    }

    pub fn failed(&self, key: Key) {
        self.failed_at(key, Instant::now())
    }

    fn failed_at(&self, key: Key, now: Instant) {
        let mut map = self.failures.lock().expect("throttle lock");
        if map.len() >= MAX_KEYS && !map.contains_key(&key) {
            map.retain(|_, f| now.saturating_duration_since(f.last) < FORGET_AFTER);
            if map.len() >= MAX_KEYS {
                // Under a flood of distinct keys, keep the newest half.
                let mut lasts: Vec<Instant> = map.values().map(|f| f.last).collect();
                lasts.sort_unstable();
                let cut = lasts[lasts.len() / 2];
                map.retain(|_, f| f.last > cut);
            }
        }
        let f = map.entry(key).or_insert(Failures {
            count: 0,
            last: now,
        });
        if now.saturating_duration_since(f.last) >= FORGET_AFTER {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.last = now;
    }

    /// A correct secret clears its credential's count (not its address's:
    /// one right secret must not buy an address more guesses).
    pub fn succeeded(&self, key: &Key) {
        self.failures.lock().expect("throttle lock").remove(key);
    }

    /// A slot to run one argon2 check in, or None after waiting `SLOT_WAIT`.
    pub async fn slot(&self) -> Option<SemaphorePermit<'_>> {
        self.slot_within(SLOT_WAIT).await
    }

    async fn slot_within(&self, wait: Duration) -> Option<SemaphorePermit<'_>> {
        tokio::time::timeout(wait, self.slots.acquire())
            .await
            .ok()
            .and_then(Result::ok)
    }
}

/// The wait imposed after `count` failures: none for the free ones, then
/// one second doubling with each further failure, up to `MAX_WAIT`.
fn wait_after(count: u32, free: u32) -> Duration {
    if count < free {
        return Duration::ZERO;
    }
    let doublings = (count - free).min(16);
    Duration::from_secs(1u64 << doublings).min(MAX_WAIT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_credential_waits_after_its_free_failures_and_longer_after_each_more() {
        let t = Throttle::new(1);
        let key = Key::Credential("00000000000000aa".into());
        let now = Instant::now();
        for _ in 0..4 {
            t.failed_at(key.clone(), now);
            assert!(t.check_at(&key, now).is_ok());
        }
        t.failed_at(key.clone(), now);
        assert_eq!(t.check_at(&key, now), Err(Duration::from_secs(1)));
        assert!(t.check_at(&key, now + Duration::from_secs(1)).is_ok());
        t.failed_at(key.clone(), now);
        assert_eq!(t.check_at(&key, now), Err(Duration::from_secs(2)));
        // Another credential and an address are counted apart.
        assert!(t.check_at(&Key::Credential("other".into()), now).is_ok());
        assert!(t
            .check_at(&Key::Address("127.0.0.1".parse().unwrap()), now)
            .is_ok());
        t.succeeded(&key);
        assert!(t.check_at(&key, now).is_ok());
    }

    #[test]
    fn failures_are_forgotten_after_a_quiet_while() {
        let t = Throttle::new(1);
        let key = Key::Address("10.0.0.1".parse().unwrap());
        let now = Instant::now();
        for _ in 0..40 {
            t.failed_at(key.clone(), now);
        }
        assert_eq!(t.check_at(&key, now), Err(MAX_WAIT));
        let later = now + FORGET_AFTER;
        assert!(t.check_at(&key, later).is_ok());
        t.failed_at(key.clone(), later);
        assert!(t.check_at(&key, later).is_ok(), "the count started over");
    }

    #[test]
    fn the_table_stays_bounded_under_a_flood_of_addresses() {
        let t = Throttle::new(1);
        let now = Instant::now();
        for i in 0..(MAX_KEYS as u32 + 10) {
            let ip = IpAddr::from(i.to_be_bytes());
            t.failed_at(Key::Address(ip), now + Duration::from_micros(u64::from(i)));
        }
        let len = t.failures.lock().unwrap().len();
        assert!(len <= MAX_KEYS, "{len}");
    }

    proptest! {
        #[test]
        fn waits_never_shrink_as_failures_grow(count in 0u32..10_000, free in 1u32..50) {
            let a = wait_after(count, free);
            let b = wait_after(count.saturating_add(1), free);
            prop_assert!(b >= a);
            prop_assert!(b <= MAX_WAIT);
            prop_assert_eq!(a.is_zero(), count < free);
        }
    }

    #[tokio::test]
    async fn slots_bound_concurrent_checks_and_waiters_give_up() {
        let t = Throttle::new(2);
        let wait = Duration::from_millis(50);
        let a = t.slot_within(wait).await.expect("first slot");
        let _b = t.slot_within(wait).await.expect("second slot");
        assert!(
            t.slot_within(wait).await.is_none(),
            "a third waits, then gives up"
        );
        drop(a);
        assert!(t.slot_within(wait).await.is_some());
    }
}
