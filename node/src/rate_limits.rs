//! Request rate limits per credential (per client address for anonymous
//! callers): the cluster's defaults and per-organisation overrides are kept
//! in Raft (`tcr cluster set rate-limit`); the counting is on each node, in
//! governor's keyed token buckets (a burst of a minute's allowance, then
//! refilled evenly). The operator is never limited.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::Method;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use tcr_raft::{RateLimits, StateReader};

use crate::auth::{Caller, Subject};

/// What a request counts as.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Kind {
    Pull,
    Push,
    Management,
}

impl Kind {
    /// The kind of a request, if it counts at all: a manifest GET is a
    /// pull (blob GETs of that pull are not counted again), an upload
    /// opened or a manifest put or deleted is a push, and any `/v1` call is
    /// a management call.
    pub fn of(method: &Method, path: &str) -> Option<Kind> {
        if path.starts_with("/v1/") {
            return Some(Kind::Management);
        }
        use crate::oci::route::{parse, Route};
        match (parse(path)?, method) {
            (Route::Manifest { .. }, &Method::GET) => Some(Kind::Pull),
            (Route::Manifest { .. }, &Method::PUT | &Method::DELETE) => Some(Kind::Push),
            (Route::UploadStart { .. }, &Method::POST) => Some(Kind::Push),
            _ => None,
        }
    }

    fn per_minute(self, l: &RateLimits) -> u32 {
        match self {
            Kind::Pull => l.pulls_per_minute,
            Kind::Push => l.pushes_per_minute,
            Kind::Management => l.management_per_minute,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Kind::Pull => "pulls",
            Kind::Push => "pushes",
            Kind::Management => "management calls",
        }
    }
}

type Keyed = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>;
type Cached = (Instant, Option<RateLimits>);

/// How long settings read from the state are used before reading again: a
/// change reaches every node within this.
const SETTINGS_FRESH: Duration = Duration::from_secs(1);
/// Checks between sweeps of buckets that are full again (idle keys).
const SWEEP_EVERY: u64 = 10_000;

/// Whole seconds to tell a client to wait: rounded up (a client that waits
/// exactly that long must find the way open), at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// Over the limit: what to tell the client.
#[derive(Debug, thiserror::Error)]
#[error("rate limit exceeded: at most {per_minute} {kind} per minute for {who}; retry in {} s", retry_after_secs(*.retry_after))]
pub struct Limited {
    pub kind: &'static str,
    pub per_minute: u32,
    pub who: &'static str,
    pub retry_after: Duration,
}

#[derive(Default)]
pub struct RateLimitsGate {
    /// One keyed limiter per (kind, rate): a changed rate starts fresh
    /// buckets, which is what an operator changing it expects.
    limiters: Mutex<HashMap<(Kind, u32), Arc<Keyed>>>,
    /// Limits by organisation (None: the cluster's), with when they were read.
    settings: Mutex<HashMap<Option<String>, Cached>>,
    checks: std::sync::atomic::AtomicU64,
}

impl RateLimitsGate {
    /// The limits that apply to `organisation` (its override, else the
    /// cluster's), read from the local state at most every `SETTINGS_FRESH`.
    fn limits(&self, state: &StateReader, organisation: Option<&str>) -> Option<RateLimits> {
        let read = |org: Option<&str>| -> Option<RateLimits> {
            let key = org.map(str::to_string);
            let mut cache = self.settings.lock().expect("rate limit settings lock");
            if let Some((at, l)) = cache.get(&key) {
                if at.elapsed() < SETTINGS_FRESH {
                    return *l;
                }
            }
            // A failed read limits nothing (it is not the client's fault).
            let l = state.rate_limits(org).ok().flatten();
            cache.insert(key, (Instant::now(), l));
            l
        };
        organisation
            .and_then(|o| read(Some(o)))
            .or_else(|| read(None))
    }

    /// Count one request of `kind` by `caller` (from `peer`); `Err` when it
    /// is over the limit.
    pub fn check(
        &self,
        state: &StateReader,
        caller: &Caller,
        peer: Option<IpAddr>,
        kind: Kind,
    ) -> Result<(), Limited> {
        let (org, key, who) = match &caller.subject {
            Subject::Admin => return Ok(()),
            Subject::Credential(c) => (
                Some(c.organisation.as_str()),
                format!("credential:{}", c.id),
                "this credential",
            ),
            Subject::Anonymous => match peer {
                Some(ip) => (None, format!("address:{ip}"), "this client address"),
                None => return Ok(()),
            },
        };
        let Some(limits) = self.limits(state, org) else {
            return Ok(());
        };
        let Some(per_minute) = NonZeroU32::new(kind.per_minute(&limits)) else {
            return Ok(());
        };
        let limiter = self
            .limiters
            .lock()
            .expect("rate limiters lock")
            .entry((kind, per_minute.get()))
            .or_insert_with(|| Arc::new(RateLimiter::keyed(Quota::per_minute(per_minute))))
            .clone();
        let n = self
            .checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n % SWEEP_EVERY == SWEEP_EVERY - 1 {
            limiter.retain_recent();
        }
        limiter.check_key(&key).map_err(|not_until| Limited {
            kind: kind.as_str(),
            per_minute: per_minute.get(),
            who,
            retry_after: not_until.wait_time_from(DefaultClock::default().now()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_count_as_docker_hub_counts_them() {
        let d = "sha256:".to_string() + &"a".repeat(64);
        assert_eq!(
            Kind::of(&Method::GET, "/v2/acme/app/manifests/v1"),
            Some(Kind::Pull)
        );
        assert_eq!(Kind::of(&Method::HEAD, "/v2/acme/app/manifests/v1"), None);
        assert_eq!(
            Kind::of(&Method::GET, &format!("/v2/acme/app/blobs/{d}")),
            None
        );
        assert_eq!(
            Kind::of(&Method::PUT, "/v2/acme/app/manifests/v1"),
            Some(Kind::Push)
        );
        assert_eq!(
            Kind::of(&Method::POST, "/v2/acme/app/blobs/uploads/"),
            Some(Kind::Push)
        );
        assert_eq!(
            Kind::of(&Method::GET, "/v1/container-registries/namespaces"),
            Some(Kind::Management)
        );
        assert_eq!(Kind::of(&Method::GET, "/v2/"), None);
    }

    #[test]
    fn retry_after_rounds_up_so_waiting_it_out_is_enough() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(14)), 14);
        assert_eq!(retry_after_secs(Duration::from_millis(14_001)), 15);
    }
}
