//! The audit trail: who changed what, when, from where, and how it ended.
//!
//! The state machine writes a command's events in the same batch as the
//! change itself, so the trail is exactly the committed history and costs
//! no Raft write of its own. The proposing node attaches who asked
//! (`Command::Audited`); retention and garbage collection removals are
//! recorded as the state machine makes them.
//!
//! Events are keyed (time ms, log index, sequence), all big-endian. The
//! state machine never lets an event's time go back (a new leader's clock
//! may lag the last one's), so time order is log order, a time range is
//! one key range, and forgetting old events is one range delete.

use serde::{Deserialize, Serialize};

use crate::model::command::{namespace_of, Command};
use crate::model::queries::{ReadError, StateReader};
use crate::state_machine::KEY_AUDIT_PRUNED;
use crate::store::{cf, decode, CF_AUDIT, CF_SM_META};

/// Who a command acted for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Actor {
    /// The operator's admin token (or anyone on an open, loopback-only node).
    Operator,
    Anonymous,
    Credential {
        id: String,
        name: String,
        organisation: String,
    },
    /// A job of the cluster itself ("gc", "retention", "keys", "raft", ...).
    System(String),
}

impl Actor {
    /// How the actor is named in logs and matched by the `actor` filter:
    /// `operator`, `anonymous`, `credential:<id>` or `system:<job>`.
    pub fn label(&self) -> String {
        match self {
            Actor::Operator => "operator".into(),
            Actor::Anonymous => "anonymous".into(),
            Actor::Credential { id, .. } => format!("credential:{id}"),
            Actor::System(job) => format!("system:{job}"),
        }
    }
}

/// What the proposing node knew of the request behind a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditContext {
    /// The proposer's clock (milliseconds since the epoch).
    pub at_ms: u64,
    pub actor: Actor,
    /// The client's address, when a request proposed it.
    pub address: Option<String>,
    /// The node that proposed it.
    pub node: u64,
}

/// One entry of the trail, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub at_ms: u64,
    /// The log entry that made the change.
    pub index: u64,
    pub actor: Actor,
    pub organisation: Option<String>,
    pub namespace: Option<String>,
    /// `namespace.create`, `manifest.push`, `tag.set`, `gc.collect`, ...
    pub action: String,
    pub resource: String,
    pub detail: Option<String>,
    /// Why the state machine refused the change (None: it was made).
    pub refused: Option<String>,
    pub address: Option<String>,
    pub node: Option<u64>,
}

/// An event kept (in `sm_meta`) until a command with a time dates it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Undated {
    pub action: String,
    pub resource: String,
    pub detail: Option<String>,
}

/// An event before the state machine stamps its time and place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Described {
    pub action: &'static str,
    pub resource: String,
    pub detail: Option<String>,
    pub organisation: Option<String>,
    pub namespace: Option<String>,
}

impl Described {
    pub(crate) fn new(action: &'static str, resource: impl Into<String>) -> Self {
        Described {
            action,
            resource: resource.into(),
            detail: None,
            organisation: None,
            namespace: None,
        }
    }

    pub(crate) fn detail(mut self, d: impl Into<String>) -> Self {
        self.detail = Some(d.into());
        self
    }

    pub(crate) fn organisation(mut self, o: Option<String>) -> Self {
        self.organisation = o;
        self
    }

    /// In namespace `ns`, and in its organisation (as the state was before
    /// the command).
    pub(crate) fn in_namespace(
        mut self,
        reader: &StateReader,
        ns: &str,
    ) -> Result<Self, ReadError> {
        self.organisation = reader.namespace(ns)?.and_then(|n| n.organisation);
        self.namespace = Some(ns.to_string());
        Ok(self)
    }
}

/// One log line per event (a JSON object under `TCR_LOG_FORMAT=json`),
/// for log pipelines; the trail in the state machine is the record.
pub(crate) fn log(e: &AuditEvent) {
    tracing::info!(
        target: "tcr::audit",
        at_ms = e.at_ms,
        index = e.index,
        actor = %e.actor.label(),
        organisation = e.organisation.as_deref(),
        namespace = e.namespace.as_deref(),
        action = %e.action,
        resource = %e.resource,
        detail = e.detail.as_deref(),
        refused = e.refused.as_deref(),
        address = e.address.as_deref(),
        node = e.node,
        "audit"
    );
}

/// The key of event `seq` of log entry `index`, at `at_ms`.
pub(crate) fn key(at_ms: u64, index: u64, seq: u32) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..8].copy_from_slice(&at_ms.to_be_bytes());
    k[8..16].copy_from_slice(&index.to_be_bytes());
    k[16..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// An event's id in the API (and the cursor to page after it).
pub fn id_of(key: &[u8]) -> String {
    hex::encode(key)
}

/// The key an id names (None: not an id this trail made).
pub fn key_of(id: &str) -> Option<Vec<u8>> {
    hex::decode(id).ok().filter(|k| k.len() == 20)
}

/// What a command does, told before it is applied (a deletion still sees
/// what it deletes). Empty for commands that are bookkeeping rather than
/// someone's act (blob commits, pull times, metering), and for the two
/// whose events the state machine records as it applies them (retention
/// steps and garbage collection).
pub(crate) fn describe(reader: &StateReader, cmd: &Command) -> Result<Vec<Described>, ReadError> {
    let ns_of = |action: &'static str, ns: &str, resource: String| {
        Described::new(action, resource).in_namespace(reader, ns)
    };
    let on_repo = |action: &'static str, repo: &str, resource: String| {
        ns_of(action, namespace_of(repo), resource)
    };
    let one = |d: Described| -> Result<Vec<Described>, ReadError> { Ok(vec![d]) };
    match cmd {
        Command::Audited { command, .. } => describe(reader, command),
        Command::CommitBlob { .. }
        | Command::MountBlob { .. }
        | Command::RecordPulls { .. }
        | Command::MeterTick { .. }
        | Command::RetentionStep { .. }
        | Command::CollectBlobs { .. }
        | Command::PruneAudit { .. }
        | Command::EndSession { .. } => Ok(Vec::new()),
        Command::CreateNamespace {
            name,
            visibility,
            organisation,
            project,
            ..
        } => {
            let mut d = Described::new("namespace.create", name.clone())
                .detail(format!(
                    "{}{}",
                    visibility_word(*visibility),
                    project
                        .as_ref()
                        .map(|p| format!(", project {p}"))
                        .unwrap_or_default()
                ))
                .organisation(organisation.clone());
            d.namespace = Some(name.clone());
            one(d)
        }
        Command::SetNamespaceVisibility { name, visibility } => {
            one(ns_of("namespace.visibility", name, name.clone())?
                .detail(visibility_word(*visibility)))
        }
        Command::SetNamespaceLimits {
            name,
            immutable_tags,
            quota_bytes,
        } => one(
            ns_of("namespace.limits", name, name.clone())?.detail(format!(
                "quota {}, immutable tags [{}]",
                quota_bytes.map_or("none".to_string(), |q| format!("{q} bytes")),
                immutable_tags.join(", ")
            )),
        ),
        Command::DeleteNamespace { name } => one(ns_of("namespace.delete", name, name.clone())?),
        Command::SetRetentionPolicy { namespace, policy } => {
            let action = if policy.is_some() {
                "retention.policy.set"
            } else {
                "retention.policy.clear"
            };
            one(ns_of(action, namespace, namespace.clone())?)
        }
        Command::StartRetentionRun(run) => one(ns_of(
            "retention.run.start",
            &run.namespace,
            run.namespace.clone(),
        )?
        .detail(format!(
            "run {}, {}",
            run.id,
            match run.trigger {
                crate::model::retention::Trigger::Manual => "on demand",
                crate::model::retention::Trigger::Schedule => "scheduled",
            }
        ))),
        Command::DeleteRepository { repo } => {
            one(on_repo("repository.delete", repo, repo.clone())?)
        }
        Command::UnlinkBlob { repo, digest } => {
            one(on_repo("blob.delete", repo, format!("{repo}@{digest}"))?)
        }
        Command::PutManifest(put) => {
            let mut events = vec![on_repo(
                "manifest.push",
                &put.repo,
                format!("{}@{}", put.repo, put.digest),
            )?
            .detail(format!("{}, {} bytes", put.media_type, put.bytes.len()))];
            if let Some(tag) = &put.tag {
                let old = reader.tag(&put.repo, tag)?;
                if old.as_deref() != Some(put.digest.as_str()) {
                    let detail = match old {
                        Some(o) => format!("{} (was {o})", put.digest),
                        None => put.digest.clone(),
                    };
                    events.push(
                        on_repo("tag.set", &put.repo, format!("{}:{tag}", put.repo))?
                            .detail(detail),
                    );
                }
            }
            Ok(events)
        }
        Command::DeleteManifest { repo, digest } => {
            let tags = reader.tags_of_digest(repo, digest)?;
            let d = on_repo("manifest.delete", repo, format!("{repo}@{digest}"))?;
            one(if tags.is_empty() {
                d
            } else {
                d.detail(format!("with tags {}", tags.join(", ")))
            })
        }
        Command::DeleteTag { repo, tag } => {
            let d = on_repo("tag.delete", repo, format!("{repo}:{tag}"))?;
            one(match reader.tag(repo, tag)? {
                Some(digest) => d.detail(digest),
                None => d,
            })
        }
        Command::CreateOrganisation { name, .. } => {
            one(Described::new("organisation.create", name.clone())
                .organisation(Some(name.clone())))
        }
        Command::DeleteOrganisation { name } => {
            one(Described::new("organisation.delete", name.clone())
                .organisation(Some(name.clone())))
        }
        Command::SetFeature {
            organisation,
            feature,
            enabled,
        } => one(Described::new("organisation.feature", organisation.clone())
            .detail(format!("{feature} {}", if *enabled { "on" } else { "off" }))
            .organisation(Some(organisation.clone()))),
        Command::CreateProject {
            organisation, name, ..
        } => one(
            Described::new("project.create", format!("{organisation}/{name}"))
                .organisation(Some(organisation.clone())),
        ),
        Command::DeleteProject { organisation, name } => one(Described::new(
            "project.delete",
            format!("{organisation}/{name}"),
        )
        .organisation(Some(organisation.clone()))),
        Command::CreateCredential(rec) => {
            let scopes: Vec<String> = rec
                .scopes
                .iter()
                .map(|s| {
                    let actions: Vec<&str> = s.actions.iter().map(|a| a.as_str()).collect();
                    format!("{}:{}", s.namespace, actions.join(","))
                })
                .collect();
            one(Described::new("credential.create", rec.id.clone())
                .detail(format!("'{}', scopes {}", rec.name, scopes.join(" ")))
                .organisation(Some(rec.organisation.clone())))
        }
        Command::RevokeCredential { id, .. } => {
            let rec = reader.credential(id)?;
            let d = Described::new("credential.revoke", id.clone())
                .organisation(rec.as_ref().map(|r| r.organisation.clone()));
            one(match rec {
                Some(r) => d.detail(format!("'{}'", r.name)),
                None => d,
            })
        }
        Command::AddSigningKey { key, .. } => one(Described::new("key.rotate", key.kid.clone())),
        Command::SetStorageSettings {
            rebalance_bytes_per_sec,
            gc_grace_secs,
            retention_interval_secs,
        } => {
            let mut parts = Vec::new();
            if let Some(v) = rebalance_bytes_per_sec {
                parts.push(format!("rebalanceBytesPerSec {v}"));
            }
            if let Some(v) = gc_grace_secs {
                parts.push(format!("gcGraceSecs {v}"));
            }
            if let Some(v) = retention_interval_secs {
                parts.push(format!("retentionIntervalSecs {v}"));
            }
            one(Described::new("cluster.settings", "cluster").detail(parts.join(", ")))
        }
        Command::SetReplicationFactor { factor } => {
            one(Described::new("cluster.replication-factor", "cluster").detail(factor.to_string()))
        }
        Command::SetRateLimits {
            organisation,
            limits,
        } => {
            let action = if limits.is_some() {
                "rate-limits.set"
            } else {
                "rate-limits.clear"
            };
            let d = Described::new(action, organisation.as_deref().unwrap_or("cluster"))
                .organisation(organisation.clone());
            one(match limits {
                Some(l) => d.detail(format!(
                    "pulls {}/min, pushes {}/min, management {}/min",
                    l.pulls_per_minute, l.pushes_per_minute, l.management_per_minute
                )),
                None => d,
            })
        }
    }
}

fn visibility_word(v: crate::model::command::Visibility) -> &'static str {
    match v {
        crate::model::command::Visibility::Public => "public",
        crate::model::command::Visibility::Private => "private",
    }
}

/// Which events a listing wants. Time bounds are in milliseconds.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub organisation: Option<String>,
    pub namespace: Option<String>,
    /// `operator`, `anonymous`, `credential:<id>`, a credential's id or
    /// name, `system` or `system:<job>`.
    pub actor: Option<String>,
    /// An action, or a prefix of one ending in `.` (`tag.`, `retention.`).
    pub action: Option<String>,
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
}

impl AuditFilter {
    pub fn matches(&self, e: &AuditEvent) -> bool {
        let actor_ok = |want: &str| match &e.actor {
            Actor::Credential { id, name, .. } => {
                want == id || want == name || want == e.actor.label() || want == "credential"
            }
            Actor::System(_) => want == "system" || want == e.actor.label(),
            a => want == a.label(),
        };
        self.organisation
            .as_ref()
            .is_none_or(|o| e.organisation.as_ref() == Some(o))
            && self
                .namespace
                .as_ref()
                .is_none_or(|n| e.namespace.as_ref() == Some(n))
            && self.actor.as_deref().is_none_or(actor_ok)
            && self.action.as_ref().is_none_or(|a| {
                if a.ends_with('.') {
                    e.action.starts_with(a.as_str())
                } else {
                    &e.action == a
                }
            })
    }
}

/// A page of the trail, oldest first.
#[derive(Clone, Debug, Default)]
pub struct AuditPage {
    /// (id, event)
    pub events: Vec<(String, AuditEvent)>,
    /// Where the next page starts (pass it as `after`); None: the trail
    /// ends here (for now).
    pub next: Option<String>,
}

impl StateReader {
    /// Up to `limit` events that `filter` matches, oldest first, after the
    /// event `after` names, looking at no more than `budget` events: a
    /// sparse filter gets a short page and where to go on, never a scan of
    /// the whole trail.
    pub fn audit_events(
        &self,
        filter: &AuditFilter,
        after: Option<&str>,
        limit: usize,
        budget: usize,
    ) -> Result<AuditPage, ReadError> {
        let pruned: u64 = self.get(CF_SM_META, KEY_AUDIT_PRUNED)?.unwrap_or_default();
        let mut start = key(filter.since_ms.unwrap_or(0).max(pruned), 0, 0).to_vec();
        let after = after.and_then(key_of);
        if let Some(a) = &after {
            start = start.max(a.clone());
        }
        let mut opts = rocksdb::ReadOptions::default();
        if let Some(until) = filter.until_ms {
            opts.set_iterate_upper_bound(key(until, 0, 0));
        }
        let iter = self.db().iterator_cf_opt(
            cf(self.db(), CF_AUDIT),
            opts,
            rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward),
        );
        let (limit, budget) = (limit.max(1), budget.max(1));
        let mut page = AuditPage::default();
        let mut examined = 0;
        let mut last: Option<Box<[u8]>> = None;
        for item in iter {
            let (k, v) = item?;
            if after.as_deref() == Some(&k[..]) {
                continue;
            }
            if page.events.len() == limit || examined == budget {
                // More follow: go on after the last one looked at.
                page.next = last.as_deref().map(id_of);
                break;
            }
            examined += 1;
            let event: AuditEvent = decode(&v)?;
            if filter.matches(&event) {
                page.events.push((id_of(&k), event));
            }
            last = Some(k);
        }
        Ok(page)
    }

    /// When the oldest event kept happened (None: the trail is empty).
    pub fn audit_oldest_ms(&self) -> Result<Option<u64>, ReadError> {
        let pruned: u64 = self.get(CF_SM_META, KEY_AUDIT_PRUNED)?.unwrap_or_default();
        let start = key(pruned, 0, 0);
        let mut iter = self.db().iterator_cf(
            cf(self.db(), CF_AUDIT),
            rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward),
        );
        match iter.next() {
            Some(item) => {
                let (k, _) = item?;
                Ok(k.get(..8)
                    .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes"))))
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(actor: Actor, action: &str) -> AuditEvent {
        AuditEvent {
            at_ms: 1,
            index: 1,
            actor,
            organisation: Some("acme".into()),
            namespace: Some("team".into()),
            action: action.into(),
            resource: "team/app".into(),
            detail: None,
            refused: None,
            address: None,
            node: Some(1),
        }
    }

    #[test]
    fn keys_sort_by_time_then_log_order() {
        assert!(key(1, 9, 9) < key(2, 1, 0));
        assert!(key(2, 1, 7) < key(2, 2, 0));
        assert!(key(2, 2, 0) < key(2, 2, 1));
        let k = key(5, 6, 7);
        assert_eq!(key_of(&id_of(&k)).as_deref(), Some(&k[..]));
        assert_eq!(key_of("zz"), None);
        assert_eq!(key_of("00ff"), None);
    }

    #[test]
    fn filters_match_actor_names_and_action_prefixes() {
        let robot = Actor::Credential {
            id: "c1".into(),
            name: "ci".into(),
            organisation: "acme".into(),
        };
        let e = event(robot, "tag.set");
        for want in ["c1", "ci", "credential:c1", "credential"] {
            let f = AuditFilter {
                actor: Some(want.into()),
                ..Default::default()
            };
            assert!(f.matches(&e), "{want}");
        }
        let f = AuditFilter {
            actor: Some("operator".into()),
            ..Default::default()
        };
        assert!(!f.matches(&e));
        let prefix = AuditFilter {
            action: Some("tag.".into()),
            ..Default::default()
        };
        assert!(prefix.matches(&e));
        let exact = AuditFilter {
            action: Some("tag".into()),
            ..Default::default()
        };
        assert!(!exact.matches(&e));
        let gc = event(Actor::System("gc".into()), "gc.collect");
        for (want, ok) in [
            ("system", true),
            ("system:gc", true),
            ("system:retention", false),
        ] {
            let f = AuditFilter {
                actor: Some(want.into()),
                ..Default::default()
            };
            assert_eq!(f.matches(&gc), ok, "{want}");
        }
        let other_org = AuditFilter {
            organisation: Some("globex".into()),
            ..Default::default()
        };
        assert!(!other_org.matches(&gc));
    }
}
