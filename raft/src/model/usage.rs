//! Storage usage per namespace, kept by the state machine as commands
//! apply: each unique blob and manifest counted once per namespace that
//! holds it, however many of its repositories link it. Quotas are checked
//! against these counters, and the leader's metering ticks turn them into
//! byte-seconds (gigabyte-hours). The first tick of each day (UTC) also
//! keeps a sample of every namespace's usage, so usage can be shown and
//! billed over time; samples older than `DAYS_KEPT` are dropped.

use serde::{Deserialize, Serialize};

use crate::model::apply::{ApplyError, Staged};
use crate::model::command::Refusal;
use crate::store::{cf, decode, encode, key2, key3, CF_NS_REFS, CF_NS_USAGE, CF_NS_USAGE_DAYS};

/// Seconds in a (UTC) day.
pub const DAY_SECS: u64 = 86_400;
/// How many days of samples a namespace keeps: a year and a little more,
/// so a year can be compared with the one before at its end.
pub const DAYS_KEPT: u64 = 400;

/// Gigabyte-hours (10^9 bytes for one hour) in `byte_seconds`.
pub fn gb_hours(byte_seconds: u128) -> f64 {
    byte_seconds as f64 / 3600.0 / 1e9
}

/// A namespace's usage at the first metering tick of a day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageSample {
    /// Days since the epoch (UTC).
    pub day: u64,
    /// The tick's time (seconds since the epoch).
    pub at: u64,
    pub bytes: u64,
    /// Stored bytes integrated over time up to `at`.
    pub byte_seconds: u128,
}

impl UsageSample {
    pub fn gb_hours(&self) -> f64 {
        gb_hours(self.byte_seconds)
    }
}

/// `namespace \0 day`: a namespace's samples are contiguous, oldest first.
pub(crate) fn day_key(ns: &str, day: u64) -> Vec<u8> {
    let mut k = key2(ns, "");
    k.extend_from_slice(&day.to_be_bytes());
    k
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceUsage {
    pub blob_bytes: u64,
    pub blobs: u64,
    pub manifest_bytes: u64,
    pub manifests: u64,
    /// Stored bytes integrated over time, up to `metered_at`.
    #[serde(default)]
    pub byte_seconds: u128,
    /// Time (seconds) of the last metering tick that counted this namespace.
    #[serde(default)]
    pub metered_at: u64,
}

impl NamespaceUsage {
    pub fn bytes(&self) -> u64 {
        self.blob_bytes + self.manifest_bytes
    }

    /// Gigabyte-hours (10^9 bytes for one hour).
    pub fn gb_hours(&self) -> f64 {
        gb_hours(self.byte_seconds)
    }
}

/// What a reference counts: a blob or a manifest.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Blob,
    Manifest,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::Blob => "b",
            Kind::Manifest => "m",
        }
    }
}

impl Staged<'_> {
    pub(crate) fn usage(&self, ns: &str) -> Result<NamespaceUsage, ApplyError> {
        Ok(self.reader.namespace_usage(ns)?.unwrap_or_default())
    }

    pub(crate) fn put_usage(&mut self, ns: &str, u: &NamespaceUsage) {
        self.batch.put_cf(cf(self.db, CF_NS_USAGE), ns, encode(u));
    }

    fn refs(&self, ns: &str, kind: Kind, digest: &str) -> Result<u64, ApplyError> {
        Ok(
            match self
                .db
                .get_pinned_cf(cf(self.db, CF_NS_REFS), key3(ns, kind.tag(), digest))
                .map_err(ApplyError::Db)?
            {
                Some(v) => decode(&v).map_err(ApplyError::Record)?,
                None => 0,
            },
        )
    }

    /// Whether adding `digest` to namespace `ns` would add bytes (no other
    /// repository there holds it yet).
    pub(crate) fn is_new_to(&self, ns: &str, kind: Kind, digest: &str) -> Result<bool, ApplyError> {
        Ok(self.refs(ns, kind, digest)? == 0)
    }

    /// One more (or one fewer, `delta = -1`) repository of `ns` holds
    /// `digest`; `u` changes when the first arrives or the last goes.
    pub(crate) fn count(
        &mut self,
        u: &mut NamespaceUsage,
        ns: &str,
        kind: Kind,
        digest: &str,
        size: u64,
        delta: i64,
    ) -> Result<(), ApplyError> {
        let before = self.refs(ns, kind, digest)?;
        let after = before.saturating_add_signed(delta);
        let key = key3(ns, kind.tag(), digest);
        if after == 0 {
            self.batch.delete_cf(cf(self.db, CF_NS_REFS), key);
        } else {
            self.batch
                .put_cf(cf(self.db, CF_NS_REFS), key, encode(&after));
        }
        let (bytes, n) = match kind {
            Kind::Blob => (&mut u.blob_bytes, &mut u.blobs),
            Kind::Manifest => (&mut u.manifest_bytes, &mut u.manifests),
        };
        if before == 0 && after > 0 {
            *bytes += size;
            *n += 1;
        } else if before > 0 && after == 0 {
            *bytes = bytes.saturating_sub(size);
            *n = n.saturating_sub(1);
        }
        Ok(())
    }

    /// The refusal when `extra` more bytes would exceed the namespace's quota.
    pub(crate) fn over_quota(
        &self,
        ns: &str,
        u: &NamespaceUsage,
        extra: u64,
    ) -> Result<Option<Refusal>, ApplyError> {
        let Some(quota) = self.reader.namespace(ns)?.and_then(|n| n.quota_bytes) else {
            return Ok(None);
        };
        let usage = u.bytes();
        Ok(
            (usage.saturating_add(extra) > quota).then(|| Refusal::QuotaExceeded {
                namespace: ns.to_string(),
                usage,
                quota,
                needed: extra,
            }),
        )
    }

    /// A metering tick at `at`: every namespace's stored bytes accrue for
    /// the time since it was last metered. Ticks at or before that time
    /// (a new leader whose clock is behind) add nothing, so a leader change
    /// neither repeats nor skips an interval.
    pub(crate) fn meter(&mut self, at: u64) -> Result<(), ApplyError> {
        for ns in self.reader.all_namespaces()? {
            let mut u = self.usage(&ns.name)?;
            if u.metered_at == 0 {
                u.metered_at = at;
            } else if at > u.metered_at {
                let before = u.metered_at;
                u.byte_seconds += u128::from(u.bytes()) * u128::from(at - u.metered_at);
                u.metered_at = at;
                if at / DAY_SECS > before / DAY_SECS {
                    self.sample_day(&ns.name, &u, before / DAY_SECS);
                }
            } else {
                continue;
            }
            self.put_usage(&ns.name, &u);
        }
        Ok(())
    }

    /// The first tick of a new day: keep `u` as that day's sample, and drop
    /// the samples that fell out of the kept window since the previous
    /// sampled day `previous` (by key: at most `DAYS_KEPT` deletes after a
    /// long gap, usually one, and no range tombstones).
    fn sample_day(&mut self, ns: &str, u: &NamespaceUsage, previous: u64) {
        let day = u.metered_at / DAY_SECS;
        let sample = UsageSample {
            day,
            at: u.metered_at,
            bytes: u.bytes(),
            byte_seconds: u.byte_seconds,
        };
        let table = cf(self.db, CF_NS_USAGE_DAYS);
        self.batch.put_cf(table, day_key(ns, day), encode(&sample));
        // Samples exist for days up to `previous`, none older than
        // `previous - DAYS_KEPT`; keep those after `day - DAYS_KEPT`.
        let oldest_held = previous.saturating_sub(DAYS_KEPT - 1);
        let last_dropped = previous.min(day.saturating_sub(DAYS_KEPT));
        if day >= DAYS_KEPT {
            for d in oldest_held..=last_dropped {
                self.batch.delete_cf(table, day_key(ns, d));
            }
        }
    }
}
