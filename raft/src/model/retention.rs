//! Retention policies: which tags and manifests of a repository a policy
//! removes (`plan`, a pure function), and the state machine's half of a run.
//!
//! A run is committed in steps, one repository per `RetentionStep`, and
//! each step is evaluated by the state machine itself at apply time, on the
//! state every replica has at that log index and with the run's fixed
//! clock (`requested_at`). So every node removes the same things; a push
//! that lands between the leader's decision to step and the step's apply
//! is seen by the plan; and a step proposed twice (a retry, or a new
//! leader resuming) applies once because it names the repository the run
//! had reached. A leader killed mid-run leaves the run pending in Raft and
//! the next leader continues where the log says it stopped.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use wildmatch::WildMatch;

use crate::model::apply::{ApplyError, Staged};
use crate::model::command::{namespace_of, Refusal};
use crate::model::queries::{ReadError, StateReader};
use crate::store::{
    cf, decode, encode, key2, key3, CF_PULLS, CF_RETENTION_PENDING, CF_RETENTION_RUNS, CF_TAGS,
    CF_TAGS_BY_DIGEST, CF_TAG_ACTIVITY,
};

/// Most rules and patterns a policy may hold (validated at the edge).
pub const MAX_RULES: usize = 32;
pub const MAX_PATTERNS: usize = 32;
/// Runs kept per namespace; older finished ones are forgotten.
pub const RUNS_KEPT: usize = 100;
/// Removals listed in one run's audit record; the count stays exact.
pub const AUDIT_ITEMS_MAX: usize = 10_000;

/// A namespace's retention policy, evaluated per repository.
///
/// A tag is *in scope* when at least one keep rule selects it (by its
/// `tags` / `excludeTags` patterns; no `tags` means every tag). A tag in
/// scope that no rule selecting it keeps is removed; tags in scope of no
/// rule, and tags matching `protect` or the namespace's immutable
/// patterns, are never touched. A manifest goes when every tag it had was
/// removed, or when it is untagged and older than `untaggedOlderThanSecs`,
/// but never while a kept tag points at it, while a remaining index lists
/// it, or while its `subject` remains. Referrers of removed manifests go
/// with them when `removeReferrers` is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetentionPolicy {
    #[serde(default)]
    pub rules: Vec<KeepRule>,
    /// Remove manifests without tags pushed longer ago than this.
    #[serde(default)]
    pub untagged_older_than_secs: Option<u64>,
    /// Remove the referrers (signatures, SBOMs, ...) of removed manifests.
    #[serde(default)]
    pub remove_referrers: bool,
    /// Tags matching these patterns (`*`, `?`) are always kept, e.g. `latest`, `v*`.
    #[serde(default)]
    pub protect: Vec<String>,
}

/// One keep rule: which tags it looks at and which of those it keeps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeepRule {
    pub keep: Keep,
    /// For `lastPushed` and `lastPulled`: how many tags to keep.
    #[serde(default)]
    pub count: Option<u32>,
    /// For `pushedWithin` and `pulledWithin`: the window, in seconds.
    #[serde(default)]
    pub within_secs: Option<u64>,
    /// Only tags matching one of these patterns (empty: every tag).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Never tags matching one of these patterns.
    #[serde(default)]
    pub exclude_tags: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum Keep {
    /// The `count` most recently pushed tags (by commit order).
    LastPushed,
    /// The `count` most recently pulled tags; tags never pulled are not kept by it.
    LastPulled,
    /// Tags pushed within `withinSecs` of the run.
    PushedWithin,
    /// Tags pulled within `withinSecs` of the run.
    PulledWithin,
}

impl KeepRule {
    fn selects(&self, tag: &str) -> bool {
        let m = |p: &String| WildMatch::new(p).matches(tag);
        (self.tags.is_empty() || self.tags.iter().any(m)) && !self.exclude_tags.iter().any(m)
    }

    /// How the audit record names the rule.
    pub fn describe(&self, n: usize) -> String {
        let what = match self.keep {
            Keep::LastPushed => format!("keep last {} pushed", self.count.unwrap_or(0)),
            Keep::LastPulled => format!("keep last {} pulled", self.count.unwrap_or(0)),
            Keep::PushedWithin => format!("keep pushed within {}s", self.within_secs.unwrap_or(0)),
            Keep::PulledWithin => format!("keep pulled within {}s", self.within_secs.unwrap_or(0)),
        };
        format!("rule {n} ({what})")
    }
}

fn check_patterns(field: &str, patterns: &[String]) -> Result<(), String> {
    if patterns.len() > MAX_PATTERNS
        || patterns
            .iter()
            .any(|p| p.is_empty() || p.len() > 128 || p.chars().any(|c| c.is_control()))
    {
        return Err(format!(
            "{field}: at most {MAX_PATTERNS} patterns of 1-128 printable characters"
        ));
    }
    Ok(())
}

impl RetentionPolicy {
    /// Checked at the edge, so the state machine never sees a malformed policy.
    pub fn validate(&self) -> Result<(), String> {
        if self.rules.len() > MAX_RULES {
            return Err(format!("rules: at most {MAX_RULES}"));
        }
        check_patterns("protect", &self.protect)?;
        for (i, r) in self.rules.iter().enumerate() {
            let n = i + 1;
            check_patterns(&format!("rules[{n}].tags"), &r.tags)?;
            check_patterns(&format!("rules[{n}].excludeTags"), &r.exclude_tags)?;
            match r.keep {
                Keep::LastPushed | Keep::LastPulled => {
                    if r.count.is_none() || r.within_secs.is_some() {
                        return Err(format!(
                            "rules[{n}]: {:?} needs `count` and no `withinSecs`",
                            r.keep
                        ));
                    }
                }
                Keep::PushedWithin | Keep::PulledWithin => {
                    if r.within_secs.is_none() || r.count.is_some() {
                        return Err(format!(
                            "rules[{n}]: {:?} needs `withinSecs` and no `count`",
                            r.keep
                        ));
                    }
                }
            }
        }
        if self.rules.is_empty() && self.untagged_older_than_secs.is_none() {
            return Err("a policy needs at least one rule or untaggedOlderThanSecs".into());
        }
        Ok(())
    }
}

/// What a plan looks at for one tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagState {
    pub name: String,
    pub digest: String,
    /// Seconds since the epoch, from the pushing node's clock.
    pub pushed_at: u64,
    /// Commit order of the push (a counter of tagged pushes): ranks "most
    /// recently pushed".
    pub pushed_seq: u64,
    /// Milliseconds since the epoch of the last pull of the tag, or of the
    /// digest it points to, if any was recorded.
    pub pulled_at_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestState {
    pub digest: String,
    pub pushed_at: u64,
    /// Child manifests, for an index.
    pub children: Vec<String>,
    pub subject: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepoState {
    pub tags: Vec<TagState>,
    pub manifests: Vec<ManifestState>,
}

/// One thing a run removes, and why.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct Removal {
    /// Set for a tag removal; a manifest removal has none.
    #[serde(default)]
    pub tag: Option<String>,
    pub digest: String,
    pub rule: String,
}

/// What `policy` removes from `repo` at `now` (seconds): tags first, then
/// manifests, each in name order. Deterministic: the state machine and a
/// preview compute the same list from the same state.
pub fn plan(
    policy: &RetentionPolicy,
    immutable: &[String],
    repo: &RepoState,
    now: u64,
) -> Vec<Removal> {
    let protected = |tag: &str| {
        policy
            .protect
            .iter()
            .chain(immutable)
            .any(|p| WildMatch::new(p).matches(tag))
    };
    // Tags each rule keeps.
    let mut in_scope: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut kept: BTreeSet<&str> = BTreeSet::new();
    for (i, rule) in policy.rules.iter().enumerate() {
        let mut selected: Vec<&TagState> =
            repo.tags.iter().filter(|t| rule.selects(&t.name)).collect();
        for t in &selected {
            in_scope.entry(t.name.as_str()).or_default().push(i + 1);
        }
        match rule.keep {
            Keep::LastPushed => {
                selected.sort_by(|a, b| {
                    (b.pushed_seq, b.pushed_at, &b.name).cmp(&(a.pushed_seq, a.pushed_at, &a.name))
                });
                let n = rule.count.unwrap_or(0) as usize;
                kept.extend(selected.iter().take(n).map(|t| t.name.as_str()));
            }
            Keep::LastPulled => {
                selected.retain(|t| t.pulled_at_ms.is_some());
                selected.sort_by(|a, b| {
                    (b.pulled_at_ms, b.pushed_seq, &b.name).cmp(&(
                        a.pulled_at_ms,
                        a.pushed_seq,
                        &a.name,
                    ))
                });
                let n = rule.count.unwrap_or(0) as usize;
                kept.extend(selected.iter().take(n).map(|t| t.name.as_str()));
            }
            Keep::PushedWithin => {
                let since = now.saturating_sub(rule.within_secs.unwrap_or(0));
                kept.extend(
                    selected
                        .iter()
                        .filter(|t| t.pushed_at >= since)
                        .map(|t| t.name.as_str()),
                );
            }
            Keep::PulledWithin => {
                let since_ms = now
                    .saturating_sub(rule.within_secs.unwrap_or(0))
                    .saturating_mul(1000);
                kept.extend(
                    selected
                        .iter()
                        .filter(|t| t.pulled_at_ms.is_some_and(|p| p >= since_ms))
                        .map(|t| t.name.as_str()),
                );
            }
        }
    }
    let mut out = Vec::new();
    let mut removed_tags: BTreeSet<&str> = BTreeSet::new();
    for t in &repo.tags {
        let Some(rules) = in_scope.get(t.name.as_str()) else {
            continue;
        };
        if kept.contains(t.name.as_str()) || protected(&t.name) {
            continue;
        }
        removed_tags.insert(&t.name);
        let names: Vec<String> = rules
            .iter()
            .map(|&n| policy.rules[n - 1].describe(n))
            .collect();
        out.push(Removal {
            tag: Some(t.name.clone()),
            digest: t.digest.clone(),
            rule: format!("kept by none of {}", names.join(", ")),
        });
    }
    out.sort();

    // Manifests: candidates, then the closure of what must stay.
    let manifests: BTreeMap<&str, &ManifestState> = repo
        .manifests
        .iter()
        .map(|m| (m.digest.as_str(), m))
        .collect();
    let mut tag_count: BTreeMap<&str, (usize, usize)> = BTreeMap::new(); // (all, removed)
    for t in &repo.tags {
        let e = tag_count.entry(t.digest.as_str()).or_default();
        e.0 += 1;
        if removed_tags.contains(t.name.as_str()) {
            e.1 += 1;
        }
    }
    let untagged = |d: &str| {
        tag_count
            .get(d)
            .is_none_or(|&(all, removed)| all == removed)
    };
    let mut why: BTreeMap<&str, String> = BTreeMap::new();
    for m in &repo.manifests {
        match tag_count.get(m.digest.as_str()) {
            Some(&(all, removed)) if all == removed => {
                why.insert(&m.digest, "all of its tags were removed".into());
            }
            None => {
                if let Some(age) = policy.untagged_older_than_secs {
                    if m.pushed_at < now.saturating_sub(age) {
                        why.insert(&m.digest, format!("untagged for longer than {age}s"));
                    }
                }
            }
            _ => {}
        }
    }
    // Who lists whom, both ways, for linear-time closures.
    let mut referrers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for m in &repo.manifests {
        if let Some(s) = &m.subject {
            referrers.entry(s.as_str()).or_default().push(&m.digest);
        }
    }
    // Children of removed indexes, and (if asked) referrers of removed
    // manifests, go with them.
    let mut frontier: Vec<&str> = why.keys().copied().collect();
    while let Some(d) = frontier.pop() {
        let Some(m) = manifests.get(d) else { continue };
        for c in &m.children {
            if manifests.contains_key(c.as_str()) && untagged(c) && !why.contains_key(c.as_str()) {
                why.insert(c, format!("child of removed index {d}"));
                frontier.push(c);
            }
        }
        if policy.remove_referrers {
            for &r in referrers.get(d).into_iter().flatten() {
                if untagged(r) && !why.contains_key(r) {
                    why.insert(r, format!("referrer of removed {d}"));
                    frontier.push(r);
                }
            }
        }
    }
    // What remains keeps its children and its referrers: walk out from
    // everything that remains, taking back what it reaches.
    let mut keep: Vec<&str> = manifests
        .keys()
        .copied()
        .filter(|d| !why.contains_key(d))
        .collect();
    while let Some(d) = keep.pop() {
        let children = manifests[d].children.iter().map(String::as_str);
        let refs = referrers.get(d).into_iter().flatten().copied();
        for x in children.chain(refs) {
            if why.remove(x).is_some() {
                keep.push(x);
            }
        }
    }
    out.extend(why.into_iter().map(|(d, rule)| Removal {
        tag: None,
        digest: d.to_string(),
        rule,
    }));
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Manual,
    Schedule,
}

/// One removal in an audit record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditItem {
    pub repository: String,
    #[serde(default)]
    pub tag: Option<String>,
    pub digest: String,
    pub rule: String,
}

/// A retention run and its audit record: what it removed, when, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionRun {
    pub id: String,
    pub namespace: String,
    pub trigger: Trigger,
    /// The run's clock (seconds): durations in the policy count back from it.
    pub requested_at: u64,
    #[serde(default)]
    pub finished_at: Option<u64>,
    /// The last repository the run has been through (runs go in name order).
    #[serde(default)]
    pub reached: Option<String>,
    pub repositories_done: u64,
    pub tags_removed: u64,
    pub manifests_removed: u64,
    /// The removals, at most 10,000 (the counts above are always exact).
    pub removed: Vec<AuditItem>,
}

impl StateReader {
    /// What a retention plan looks at in `repo`.
    pub fn retention_state(&self, repo: &str) -> Result<RepoState, ReadError> {
        let mut state = RepoState::default();
        let mut after: Option<String> = None;
        loop {
            let (page, more) = self.manifests(repo, after.as_deref(), 1000)?;
            after = page.last().map(|m| m.digest.clone());
            state
                .manifests
                .extend(page.into_iter().map(|m| ManifestState {
                    pushed_at: m.pushed_at,
                    children: m.manifests,
                    subject: m.subject,
                    digest: m.digest,
                }));
            if !more {
                break;
            }
        }
        let pushed: BTreeMap<&str, u64> = state
            .manifests
            .iter()
            .map(|m| (m.digest.as_str(), m.pushed_at))
            .collect();
        let mut tags = Vec::new();
        for name in self.tags(repo, None, usize::MAX)?.items {
            let Some(digest) = self.tag(repo, &name)? else {
                continue;
            };
            let activity = self.tag_activity(repo, &name, &digest)?;
            tags.push(TagState {
                pushed_at: activity
                    .pushed_at
                    .unwrap_or_else(|| pushed.get(digest.as_str()).copied().unwrap_or(0)),
                pushed_seq: activity.pushed_seq,
                pulled_at_ms: activity.pulled_at_ms,
                name,
                digest,
            });
        }
        state.tags = tags;
        Ok(state)
    }

    /// When `tag` (pointing at `digest`) was last pushed and pulled.
    pub fn tag_activity(
        &self,
        repo: &str,
        tag: &str,
        digest: &str,
    ) -> Result<TagActivity, ReadError> {
        let db = self.db();
        let pushed: Option<PushRecord> =
            match db.get_pinned_cf(cf(db, CF_TAG_ACTIVITY), key2(repo, tag))? {
                Some(b) => Some(decode(&b)?),
                None => None,
            };
        let pull = |key: &str| -> Result<Option<u64>, ReadError> {
            Ok(match db.get_pinned_cf(cf(db, CF_PULLS), key2(repo, key))? {
                Some(b) => Some(decode(&b)?),
                None => None,
            })
        };
        Ok(TagActivity {
            pushed_at: pushed.as_ref().map(|p| p.at),
            pushed_seq: pushed.map_or(0, |p| p.seq),
            pulled_at_ms: pull(tag)?.max(pull(digest)?),
        })
    }

    /// What the policy would remove from every repository of `ns` now.
    pub fn retention_preview(&self, ns: &str, now: u64) -> Result<Vec<AuditItem>, ReadError> {
        let Some(rec) = self.namespace(ns)? else {
            return Ok(Vec::new());
        };
        let Some(policy) = rec.retention else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.repositories(Some(ns), after.as_deref(), 1000)?;
            for repo in &page.items {
                let state = self.retention_state(repo)?;
                out.extend(
                    plan(&policy, &rec.immutable_tags, &state, now)
                        .into_iter()
                        .map(|r| AuditItem {
                            repository: repo.clone(),
                            tag: r.tag,
                            digest: r.digest,
                            rule: r.rule,
                        }),
                );
            }
            match page.items.last() {
                Some(l) if page.more => after = Some(l.clone()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// The runs of `ns`, newest first.
    pub fn retention_runs(&self, ns: &str, n: usize) -> Result<Vec<RetentionRun>, ReadError> {
        let db = self.db();
        let prefix = key2(ns, "");
        // Bounded below too: a reverse scan would otherwise step over the
        // deleted runs of the namespaces before this one.
        let mut bounds = rocksdb::ReadOptions::default();
        bounds.set_iterate_lower_bound(prefix.clone());
        if let Some(upper) = crate::model::queries::prefix_end(&prefix) {
            bounds.set_iterate_upper_bound(upper);
        }
        let iter = db.iterator_cf_opt(
            cf(db, CF_RETENTION_RUNS),
            bounds,
            rocksdb::IteratorMode::End,
        );
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(&prefix) || out.len() == n {
                break;
            }
            out.push(decode(&v)?);
        }
        Ok(out)
    }

    pub fn retention_run(&self, ns: &str, id: &str) -> Result<Option<RetentionRun>, ReadError> {
        let db = self.db();
        Ok(
            match db.get_pinned_cf(cf(db, CF_RETENTION_RUNS), key2(ns, id))? {
                Some(b) => Some(decode(&b)?),
                None => None,
            },
        )
    }

    /// Runs not finished yet: (id, namespace), oldest first.
    pub fn pending_retention_runs(&self) -> Result<Vec<(String, String)>, ReadError> {
        let db = self.db();
        let mut out = Vec::new();
        for item in db.iterator_cf(cf(db, CF_RETENTION_PENDING), rocksdb::IteratorMode::Start) {
            let (k, v) = item?;
            out.push((
                String::from_utf8_lossy(&k).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            ));
        }
        Ok(out)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TagActivity {
    pub pushed_at: Option<u64>,
    pub pushed_seq: u64,
    pub pulled_at_ms: Option<u64>,
}

/// When a tag was last moved or re-pushed: the pushing node's clock, and
/// the push's place in commit order (a counter, not the log index, so a
/// retried proposal that applies once leaves the same state).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) struct PushRecord {
    pub at: u64,
    pub seq: u64,
}

impl Staged<'_> {
    pub(crate) fn record_tag_push(
        &mut self,
        repo: &str,
        tag: &str,
        at: u64,
    ) -> Result<(), ApplyError> {
        let settings = cf(self.db, crate::store::CF_SETTINGS);
        let seq: u64 = match self
            .db
            .get_pinned_cf(settings, crate::store::KEY_TAG_PUSH_SEQ)
            .map_err(ApplyError::Db)?
        {
            Some(b) => decode::<u64>(&b).map_err(ApplyError::Record)? + 1,
            None => 1,
        };
        self.batch
            .put_cf(settings, crate::store::KEY_TAG_PUSH_SEQ, encode(&seq));
        let rec = PushRecord { at, seq };
        self.batch
            .put_cf(cf(self.db, CF_TAG_ACTIVITY), key2(repo, tag), encode(&rec));
        Ok(())
    }

    /// Remove `tag` (pointing at `digest`) from `repo`, with its times.
    pub(crate) fn drop_tag(&mut self, repo: &str, tag: &str, digest: &str) {
        self.batch.delete_cf(cf(self.db, CF_TAGS), key2(repo, tag));
        self.batch
            .delete_cf(cf(self.db, CF_TAGS_BY_DIGEST), key3(repo, digest, tag));
        self.batch
            .delete_cf(cf(self.db, CF_TAG_ACTIVITY), key2(repo, tag));
        self.batch.delete_cf(cf(self.db, CF_PULLS), key2(repo, tag));
    }

    /// Pull times only move forward, and only for tags and manifests that exist.
    pub(crate) fn record_pulls(
        &mut self,
        pulls: &[(String, String, u64)],
    ) -> Result<(), ApplyError> {
        let mut latest: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for (repo, key, at) in pulls {
            let e = latest.entry((repo, key)).or_default();
            *e = (*e).max(*at);
        }
        for ((repo, key), at) in latest {
            let exists = if key.contains(':') {
                self.reader.manifest_record(repo, key)?.is_some()
            } else {
                self.reader.tag(repo, key)?.is_some()
            };
            if !exists {
                continue;
            }
            let k = key2(repo, key);
            let old: Option<u64> = match self
                .db
                .get_pinned_cf(cf(self.db, CF_PULLS), &k)
                .map_err(ApplyError::Db)?
            {
                Some(b) => Some(decode(&b).map_err(ApplyError::Record)?),
                None => None,
            };
            if old.is_none_or(|o| o < at) {
                self.batch.put_cf(cf(self.db, CF_PULLS), k, encode(&at));
            }
        }
        Ok(())
    }

    pub(crate) fn start_retention_run(
        &mut self,
        run: RetentionRun,
    ) -> Result<Result<(), Refusal>, ApplyError> {
        let Some(ns) = self.reader.namespace(&run.namespace)? else {
            return Ok(Err(Refusal::NamespaceUnknown(run.namespace.clone())));
        };
        if ns.retention.is_none() {
            return Ok(Err(Refusal::NoRetentionPolicy(run.namespace.clone())));
        }
        if self
            .reader
            .retention_run(&run.namespace, &run.id)?
            .is_some()
        {
            return Ok(Ok(()));
        }
        // Forget the oldest finished runs beyond what is kept.
        let runs = self.reader.retention_runs(&run.namespace, usize::MAX)?;
        for old in runs
            .iter()
            .skip(RUNS_KEPT - 1)
            .filter(|r| r.finished_at.is_some())
        {
            self.batch.delete_cf(
                cf(self.db, CF_RETENTION_RUNS),
                key2(&old.namespace, &old.id),
            );
        }
        if run.trigger == Trigger::Schedule {
            self.batch.put_cf(
                cf(self.db, crate::store::CF_SETTINGS),
                crate::store::KEY_RETENTION_LAST_SCHEDULED,
                encode(&run.requested_at),
            );
        }
        self.batch
            .put_cf(cf(self.db, CF_RETENTION_PENDING), &run.id, &run.namespace);
        self.put_run(&run);
        Ok(Ok(()))
    }

    fn put_run(&mut self, run: &RetentionRun) {
        self.batch.put_cf(
            cf(self.db, CF_RETENTION_RUNS),
            key2(&run.namespace, &run.id),
            encode(run),
        );
    }

    /// One step of a run: the next repository after `reached`, or the end.
    /// A step whose `reached` is not the run's (applied already) does nothing.
    pub(crate) fn retention_step(
        &mut self,
        namespace: &str,
        id: &str,
        reached: &Option<String>,
        at: u64,
    ) -> Result<(), ApplyError> {
        let Some(mut run) = self.reader.retention_run(namespace, id)? else {
            return Ok(());
        };
        if run.finished_at.is_some() || &run.reached != reached {
            return Ok(());
        }
        let ns = self.reader.namespace(namespace)?;
        let policy = ns.as_ref().and_then(|n| n.retention.clone());
        let next = self
            .reader
            .repositories(Some(namespace), run.reached.as_deref(), 1)?
            .items
            .into_iter()
            .next();
        match (ns, policy, next) {
            (Some(ns), Some(policy), Some(repo)) => {
                let state = self.reader.retention_state(&repo)?;
                let removals = plan(&policy, &ns.immutable_tags, &state, run.requested_at);
                self.remove(&repo, &removals)?;
                for r in &removals {
                    let (action, resource) = match &r.tag {
                        Some(t) => ("retention.remove-tag", format!("{repo}:{t}")),
                        None => ("retention.remove-manifest", format!("{repo}@{}", r.digest)),
                    };
                    let mut event = crate::model::audit::Described::new(action, resource)
                        .detail(format!("run {}, rule {}", run.id, r.rule))
                        .organisation(ns.organisation.clone());
                    event.namespace = Some(namespace.to_string());
                    self.events.push(event);
                }
                for r in removals {
                    if r.tag.is_some() {
                        run.tags_removed += 1;
                    } else {
                        run.manifests_removed += 1;
                    }
                    if run.removed.len() < AUDIT_ITEMS_MAX {
                        run.removed.push(AuditItem {
                            repository: repo.clone(),
                            tag: r.tag,
                            digest: r.digest,
                            rule: r.rule,
                        });
                    }
                }
                run.repositories_done += 1;
                run.reached = Some(repo);
            }
            // No policy any more, no namespace, or past the last repository.
            (ns, _, _) => {
                let mut event =
                    crate::model::audit::Described::new("retention.run.finish", namespace)
                        .detail(format!(
                            "run {}: {} tags and {} manifests removed",
                            run.id, run.tags_removed, run.manifests_removed
                        ))
                        .organisation(ns.and_then(|n| n.organisation));
                event.namespace = Some(namespace.to_string());
                self.events.push(event);
                run.finished_at = Some(at);
                self.batch
                    .delete_cf(cf(self.db, CF_RETENTION_PENDING), &run.id);
            }
        }
        self.put_run(&run);
        Ok(())
    }

    /// Apply one repository's removals in this entry's batch. Reads see the
    /// state before the batch, so the namespace usage is carried in memory.
    fn remove(&mut self, repo: &str, removals: &[Removal]) -> Result<(), ApplyError> {
        for r in removals {
            if let Some(tag) = &r.tag {
                self.drop_tag(repo, tag, &r.digest);
            }
        }
        let ns = namespace_of(repo);
        let mut usage = self.usage(ns)?;
        for r in removals.iter().filter(|r| r.tag.is_none()) {
            if let Some(rec) = self.reader.manifest_record(repo, &r.digest)? {
                self.drop_manifest(repo, &rec, &mut usage)?;
            }
        }
        self.put_usage(ns, &usage);
        Ok(())
    }

    /// Everything a namespace's runs left behind.
    pub(crate) fn forget_retention(&mut self, ns: &str) -> Result<(), ApplyError> {
        let from = key2(ns, "");
        let mut to = ns.as_bytes().to_vec();
        to.push(1);
        self.batch
            .delete_range_cf(cf(self.db, CF_RETENTION_RUNS), &from, &to);
        for (id, owner) in self.reader.pending_retention_runs()? {
            if owner == ns {
                self.batch.delete_cf(cf(self.db, CF_RETENTION_PENDING), id);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tag(name: &str, digest: &str, pushed: u64, pulled: Option<u64>) -> TagState {
        TagState {
            name: name.into(),
            digest: digest.into(),
            pushed_at: pushed,
            pushed_seq: pushed,
            pulled_at_ms: pulled.map(|p| p * 1000),
        }
    }

    fn manifest(d: &str, pushed: u64) -> ManifestState {
        ManifestState {
            digest: d.into(),
            pushed_at: pushed,
            children: vec![],
            subject: None,
        }
    }

    fn rule(keep: Keep, count: Option<u32>, within: Option<u64>) -> KeepRule {
        KeepRule {
            keep,
            count,
            within_secs: within,
            tags: vec![],
            exclude_tags: vec![],
        }
    }

    fn removed_tags(r: &[Removal]) -> Vec<&str> {
        r.iter().filter_map(|r| r.tag.as_deref()).collect()
    }

    fn removed_manifests(r: &[Removal]) -> Vec<&str> {
        r.iter()
            .filter(|r| r.tag.is_none())
            .map(|r| r.digest.as_str())
            .collect()
    }

    #[test]
    fn a_shared_digest_stays_while_one_of_its_tags_is_kept() {
        let repo = RepoState {
            tags: vec![
                tag("old", "sha256:a", 1, None),
                tag("new", "sha256:a", 2, None),
            ],
            manifests: vec![manifest("sha256:a", 1)],
        };
        let policy = RetentionPolicy {
            rules: vec![rule(Keep::LastPushed, Some(1), None)],
            ..Default::default()
        };
        let r = plan(&policy, &[], &repo, 100);
        assert_eq!(removed_tags(&r), ["old"]);
        assert!(removed_manifests(&r).is_empty());
    }

    #[test]
    fn children_of_a_kept_index_and_referrers_of_a_kept_subject_stay() {
        let mut index = manifest("sha256:i", 1);
        index.children = vec!["sha256:c1".into(), "sha256:c2".into()];
        let mut sig = manifest("sha256:s", 1);
        sig.subject = Some("sha256:i".into());
        let repo = RepoState {
            tags: vec![tag("v1", "sha256:i", 1, None)],
            manifests: vec![
                index,
                manifest("sha256:c1", 1),
                manifest("sha256:c2", 1),
                sig,
                manifest("sha256:x", 1),
            ],
        };
        let policy = RetentionPolicy {
            untagged_older_than_secs: Some(10),
            remove_referrers: true,
            ..Default::default()
        };
        let r = plan(&policy, &[], &repo, 100);
        assert!(removed_tags(&r).is_empty());
        assert_eq!(removed_manifests(&r), ["sha256:x"]);
    }

    #[test]
    fn a_removed_index_takes_its_untagged_children_and_asked_for_referrers() {
        let mut index = manifest("sha256:i", 1);
        index.children = vec!["sha256:c1".into(), "sha256:c2".into()];
        let mut sig = manifest("sha256:s", 1);
        sig.subject = Some("sha256:i".into());
        let repo = RepoState {
            tags: vec![
                tag("old", "sha256:i", 1, None),
                tag("c2", "sha256:c2", 1, None),
                tag("new", "sha256:n", 5, None),
            ],
            manifests: vec![
                index,
                manifest("sha256:c1", 1),
                manifest("sha256:c2", 1),
                sig,
                manifest("sha256:n", 5),
            ],
        };
        let mut policy = RetentionPolicy {
            rules: vec![KeepRule {
                tags: vec!["old".into(), "new".into()],
                ..rule(Keep::PushedWithin, None, Some(10))
            }],
            ..Default::default()
        };
        let r = plan(&policy, &[], &repo, 12);
        assert_eq!(removed_tags(&r), ["old"]);
        // c2 is still tagged; the signature stays without removeReferrers.
        assert_eq!(removed_manifests(&r), ["sha256:c1", "sha256:i"]);
        policy.remove_referrers = true;
        let r = plan(&policy, &[], &repo, 12);
        assert_eq!(removed_manifests(&r), ["sha256:c1", "sha256:i", "sha256:s"]);
    }

    #[test]
    fn protected_and_immutable_tags_and_tags_out_of_scope_are_untouched() {
        let repo = RepoState {
            tags: vec![
                tag("latest", "sha256:a", 1, None),
                tag("v1", "sha256:b", 1, None),
                tag("dev-1", "sha256:c", 1, None),
                tag("release", "sha256:d", 1, None),
                tag("tmp-1", "sha256:e", 1, None),
            ],
            manifests: ["a", "b", "c", "d", "e"]
                .iter()
                .map(|d| manifest(&format!("sha256:{d}"), 1))
                .collect(),
        };
        let policy = RetentionPolicy {
            rules: vec![KeepRule {
                exclude_tags: vec!["release".into()],
                ..rule(Keep::LastPushed, Some(0), None)
            }],
            protect: vec!["latest".into(), "v*".into()],
            ..Default::default()
        };
        let r = plan(&policy, &["tmp-*".to_string()], &repo, 100);
        assert_eq!(removed_tags(&r), ["dev-1"]);
        assert_eq!(removed_manifests(&r), ["sha256:c"]);
    }

    #[test]
    fn last_pulled_ranks_only_pulled_tags_and_pulled_within_uses_the_window() {
        let repo = RepoState {
            tags: vec![
                tag("a", "sha256:a", 1, Some(50)),
                tag("b", "sha256:b", 1, Some(60)),
                tag("c", "sha256:c", 1, Some(70)),
                tag("never", "sha256:d", 1, None),
            ],
            manifests: vec![],
        };
        let last = RetentionPolicy {
            rules: vec![rule(Keep::LastPulled, Some(2), None)],
            ..Default::default()
        };
        assert_eq!(removed_tags(&plan(&last, &[], &repo, 100)), ["a", "never"]);
        let within = RetentionPolicy {
            rules: vec![rule(Keep::PulledWithin, None, Some(45))],
            ..Default::default()
        };
        assert_eq!(
            removed_tags(&plan(&within, &[], &repo, 100)),
            ["a", "never"]
        );
    }

    #[test]
    fn policies_are_validated() {
        let bad = RetentionPolicy {
            rules: vec![rule(Keep::LastPushed, None, Some(3))],
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        assert!(RetentionPolicy::default().validate().is_err());
        let good = RetentionPolicy {
            rules: vec![rule(Keep::PushedWithin, None, Some(3))],
            ..Default::default()
        };
        assert!(good.validate().is_ok());
        let parsed: Result<RetentionPolicy, _> =
            serde_json::from_str(r#"{"rules":[{"keep":"lastPushed","count":3,"bogus":1}]}"#);
        assert!(parsed.is_err());
    }

    fn repo_strategy() -> impl Strategy<Value = (RepoState, RetentionPolicy, u64)> {
        let digests = 1..8usize;
        digests.prop_flat_map(|n| {
            let manifests = proptest::collection::vec(
                (
                    0..20u64,
                    proptest::collection::vec(0..n, 0..3),
                    proptest::option::of(0..n),
                ),
                n,
            );
            let tags =
                proptest::collection::vec((0..n, 0..20u64, proptest::option::of(0..20u64)), 0..10);
            let rules = proptest::collection::vec(
                (
                    0..4u8,
                    0..4u32,
                    0..20u64,
                    proptest::option::of("[a-c]\\*"),
                    proptest::option::of("t[0-3]"),
                ),
                0..3,
            );
            let policy = (
                rules,
                proptest::option::of(0..20u64),
                any::<bool>(),
                proptest::option::of("t[0-9]"),
            );
            (manifests, tags, policy, 0..40u64).prop_map(
                move |(ms, ts, (rules, untagged, refs, protect), now)| {
                    let d = |i: usize| format!("sha256:{i}");
                    let manifests = ms
                        .iter()
                        .enumerate()
                        .map(|(i, (pushed, children, subject))| ManifestState {
                            digest: d(i),
                            pushed_at: *pushed,
                            children: children
                                .iter()
                                .filter(|&&c| c != i)
                                .map(|&c| d(c))
                                .collect(),
                            subject: subject.filter(|&s| s != i).map(d),
                        })
                        .collect();
                    let tags = ts
                        .iter()
                        .enumerate()
                        .map(|(i, (di, pushed, pulled))| TagState {
                            name: format!("t{i}"),
                            digest: d(*di),
                            pushed_at: *pushed,
                            pushed_seq: *pushed * 100 + i as u64,
                            pulled_at_ms: pulled.map(|p| p * 1000),
                        })
                        .collect();
                    let rules = rules
                        .into_iter()
                        .map(|(k, count, within, tags, exclude)| {
                            let keep = [
                                Keep::LastPushed,
                                Keep::LastPulled,
                                Keep::PushedWithin,
                                Keep::PulledWithin,
                            ][k as usize];
                            let by_count = matches!(keep, Keep::LastPushed | Keep::LastPulled);
                            KeepRule {
                                keep,
                                count: by_count.then_some(count),
                                within_secs: (!by_count).then_some(within),
                                tags: tags.into_iter().collect(),
                                exclude_tags: exclude.into_iter().collect(),
                            }
                        })
                        .collect();
                    let policy = RetentionPolicy {
                        rules,
                        untagged_older_than_secs: untagged,
                        remove_referrers: refs,
                        protect: protect.into_iter().collect(),
                    };
                    (RepoState { tags, manifests }, policy, now)
                },
            )
        })
    }

    proptest! {
        /// What no plan may ever do, whatever the policy and the repository.
        #[test]
        fn plans_keep_what_must_be_kept((repo, policy, now) in repo_strategy()) {
            let r = plan(&policy, &[], &repo, now);
            prop_assert_eq!(&r, &plan(&policy, &[], &repo, now));
            let gone_tags: BTreeSet<&str> = removed_tags(&r).into_iter().collect();
            let gone: BTreeSet<&str> = removed_manifests(&r).into_iter().collect();
            for t in &repo.tags {
                let in_scope = policy.rules.iter().any(|k| k.selects(&t.name));
                let protected = policy.protect.iter().any(|p| WildMatch::new(p).matches(&t.name));
                if !in_scope || protected {
                    prop_assert!(!gone_tags.contains(t.name.as_str()), "{} removed", t.name);
                }
                // A kept tag's manifest is never removed.
                if !gone_tags.contains(t.name.as_str()) {
                    prop_assert!(!gone.contains(t.digest.as_str()), "{} kept but {} removed", t.name, t.digest);
                }
            }
            for m in &repo.manifests {
                if gone.contains(m.digest.as_str()) {
                    continue;
                }
                // What remains keeps its children.
                for c in &m.children {
                    prop_assert!(!gone.contains(c.as_str()), "child {} of kept {} removed", c, m.digest);
                }
            }
            for m in &repo.manifests {
                if let Some(s) = &m.subject {
                    if !gone.contains(s.as_str()) && repo.manifests.iter().any(|x| &x.digest == s) {
                        prop_assert!(!gone.contains(m.digest.as_str()), "referrer {} of kept {} removed", m.digest, s);
                    }
                }
            }
        }
    }
}
