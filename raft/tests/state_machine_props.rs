//! Property tests of the state machine: applying the same commands on two
//! fresh stores gives the same state; a snapshot installed elsewhere gives
//! the same state; reopening the database keeps it; and tags never point
//! at manifests that are gone.

use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder};
use proptest::prelude::*;
use tcr_raft::{
    Actor, AuditContext, AuditFilter, Command, CommandResult, ManifestPut, Proposal, StateReader,
    TypeConfig, Visibility,
};

const NAMESPACES: [&str; 2] = ["a", "b"];
const REPOS: [&str; 3] = ["a/x", "a/y", "b/z"];
const TAGS: [&str; 3] = ["t1", "t2", "latest"];

fn digest(i: u8) -> String {
    format!("sha256:{}", format!("{i:02x}").repeat(32))
}

const ORGS: [&str; 2] = ["o1", "o2"];

/// Tenancy commands over a small alphabet, so creations, deletions and
/// refusals all occur.
fn tenancy_command() -> impl Strategy<Value = Command> {
    let org = proptest::sample::select(ORGS.to_vec()).prop_map(String::from);
    let project = proptest::option::of(Just("p1".to_string()));
    prop_oneof![
        (org.clone(), any::<bool>()).prop_map(|(o, on)| Command::CreateOrganisation {
            name: o,
            features: [(tcr_raft::FEATURE_CONTAINER_REGISTRY.to_string(), on)].into(),
            created_at: 5,
        }),
        org.clone()
            .prop_map(|o| Command::DeleteOrganisation { name: o }),
        (0u8..3, 0u64..100, 0u64..50).prop_map(|(i, at, left)| Command::EndSession {
            id: format!("s{i}"),
            at,
            until: at + left,
        }),
        (org.clone(), any::<bool>()).prop_map(|(o, on)| Command::SetFeature {
            organisation: o,
            feature: tcr_raft::FEATURE_CONTAINER_REGISTRY.into(),
            enabled: on,
        }),
        org.clone().prop_map(|o| Command::CreateProject {
            organisation: o,
            name: "p1".into(),
            created_at: 5,
        }),
        org.clone().prop_map(|o| Command::DeleteProject {
            organisation: o,
            name: "p1".into(),
        }),
        (
            proptest::sample::select(NAMESPACES.to_vec()),
            proptest::option::of(org.clone()),
            project.clone()
        )
            .prop_map(|(n, o, p)| Command::CreateNamespace {
                name: n.into(),
                visibility: Visibility::Private,
                created_at: 1,
                organisation: o,
                project: p,
            }),
        proptest::sample::select(NAMESPACES.to_vec())
            .prop_map(|n| Command::DeleteNamespace { name: n.into() }),
        proptest::sample::select(REPOS.to_vec())
            .prop_map(|r| Command::DeleteRepository { repo: r.into() }),
        (org, project, 0u8..3).prop_map(|(o, p, i)| Command::CreateCredential(Box::new(
            tcr_raft::CredentialRecord {
                id: format!("c{i}"),
                organisation: o,
                project: p,
                name: format!("robot{i}"),
                secret_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
                scopes: vec![tcr_raft::Scope {
                    namespace: "*".into(),
                    actions: vec![tcr_raft::Action::Pull],
                }],
                expires_at: None,
                revoked_at: None,
                created_at: 6,
            }
        ))),
        (
            proptest::sample::select(NAMESPACES.to_vec()),
            proptest::option::of(0u64..60),
            any::<bool>()
        )
            .prop_map(|(n, quota, immutable)| Command::SetNamespaceLimits {
                name: n.into(),
                immutable_tags: if immutable { vec!["t*".into()] } else { vec![] },
                quota_bytes: quota,
            }),
        // Ticks within a day, and ticks over more days than a namespace
        // keeps samples of (so days are sampled and samples dropped).
        prop_oneof![
            1u64..100,
            (1u64..1_000).prop_map(|half_days| half_days * tcr_raft::DAY_SECS / 2 + 7),
        ]
        .prop_map(|at| Command::MeterTick { at }),
        (
            proptest::option::of(0u64..1000),
            proptest::option::of(0u64..1000)
        )
            .prop_map(|(r, g)| Command::SetStorageSettings {
                rebalance_bytes_per_sec: r,
                gc_grace_secs: g,
                retention_interval_secs: None,
            }),
        (proptest::collection::vec(0u8..4, 0..4), 1u64..5).prop_map(|(ds, grace_before)| {
            Command::CollectBlobs {
                digests: ds.into_iter().map(digest).collect(),
                at: 10,
                grace_before,
            }
        }),
        (0u8..3).prop_map(|i| Command::RevokeCredential {
            id: format!("c{i}"),
            revoked_at: 7,
        }),
        (
            proptest::option::of(0u8..3),
            proptest::option::of((0u32..100, 0u32..100, 0u32..100))
        )
            .prop_map(|(org, limits)| Command::SetRateLimits {
                organisation: org.map(|o| format!("o{o}")),
                limits: limits.map(|(a, b, c)| tcr_raft::RateLimits {
                    pulls_per_minute: a,
                    pushes_per_minute: b,
                    management_per_minute: c,
                }),
            }),
    ]
}

/// Retention: policies, runs started and stepped (the step's `reached`
/// sometimes matches the run's, sometimes not), and pull records.
fn retention_command() -> impl Strategy<Value = Command> {
    let ns = proptest::sample::select(NAMESPACES.to_vec()).prop_map(String::from);
    let run = proptest::sample::select(vec!["r1", "r2"]).prop_map(String::from);
    prop_oneof![
        (
            ns.clone(),
            0u32..3,
            any::<bool>(),
            proptest::option::of(0u64..5)
        )
            .prop_map(|(ns, count, none, untagged)| Command::SetRetentionPolicy {
                namespace: ns,
                policy: (!none).then(|| tcr_raft::RetentionPolicy {
                    rules: vec![tcr_raft::KeepRule {
                        keep: tcr_raft::Keep::LastPushed,
                        count: Some(count),
                        within_secs: None,
                        tags: vec![],
                        exclude_tags: vec!["latest".into()],
                    }],
                    untagged_older_than_secs: untagged,
                    remove_referrers: true,
                    protect: vec![],
                }),
            }),
        (ns.clone(), run.clone()).prop_map(|(ns, id)| Command::StartRetentionRun(Box::new(
            tcr_raft::RetentionRun {
                id,
                namespace: ns,
                trigger: tcr_raft::Trigger::Manual,
                requested_at: 8,
                finished_at: None,
                reached: None,
                repositories_done: 0,
                tags_removed: 0,
                manifests_removed: 0,
                removed: vec![],
            }
        ))),
        (
            ns,
            run,
            proptest::option::of(proptest::sample::select(REPOS.to_vec()).prop_map(String::from))
        )
            .prop_map(|(ns, id, reached)| Command::RetentionStep {
                namespace: ns,
                id,
                reached,
                at: 9,
            }),
        proptest::collection::vec(
            (
                proptest::sample::select(REPOS.to_vec()).prop_map(String::from),
                prop_oneof![
                    proptest::sample::select(TAGS.to_vec()).prop_map(String::from),
                    (10u8..14).prop_map(digest)
                ],
                0u64..100
            ),
            0..4
        )
        .prop_map(|pulls| Command::RecordPulls { pulls }),
    ]
}

fn plain_command() -> impl Strategy<Value = Command> {
    prop_oneof![3 => storage_command(), 1 => tenancy_command(), 1 => retention_command()]
}

fn actor() -> impl Strategy<Value = Actor> {
    prop_oneof![
        Just(Actor::Operator),
        Just(Actor::Anonymous),
        (0u8..3).prop_map(|i| Actor::Credential {
            id: format!("c{i}"),
            name: format!("robot{i}"),
            organisation: "o1".into(),
        }),
        Just(Actor::System("gc".into())),
    ]
}

/// A command as nodes propose it: most with who asked (`Audited`), with
/// clocks that may go back between proposers.
fn command() -> impl Strategy<Value = Command> {
    (
        plain_command(),
        proptest::option::weighted(0.7, (actor(), 0u64..50_000, 1u64..4)),
    )
        .prop_map(|(cmd, ctx)| match ctx {
            Some((actor, at_ms, node)) => audited(cmd, actor, at_ms, node),
            None => cmd,
        })
}

fn audited(cmd: Command, actor: Actor, at_ms: u64, node: u64) -> Command {
    Command::Audited {
        context: AuditContext {
            at_ms,
            actor,
            address: Some("192.0.2.7".into()),
            node,
        },
        command: Box::new(cmd),
    }
}

/// Every event of the trail, oldest first.
fn trail(r: &StateReader) -> Vec<tcr_raft::AuditEvent> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = r
            .audit_events(&AuditFilter::default(), after.as_deref(), 7, 5)
            .unwrap();
        out.extend(page.events.into_iter().map(|(_, e)| e));
        match page.next {
            Some(n) => after = Some(n),
            None => return out,
        }
    }
}

fn storage_command() -> impl Strategy<Value = Command> {
    let repo = proptest::sample::select(REPOS.to_vec()).prop_map(String::from);
    let tag = proptest::option::of(proptest::sample::select(TAGS.to_vec()).prop_map(String::from));
    prop_oneof![
        (proptest::sample::select(NAMESPACES.to_vec()), any::<bool>()).prop_map(|(n, p)| {
            Command::CreateNamespace {
                name: n.into(),
                visibility: if p {
                    Visibility::Public
                } else {
                    Visibility::Private
                },
                created_at: 1,
                organisation: None,
                project: None,
            }
        }),
        (1u32..5).prop_map(|factor| Command::SetReplicationFactor { factor }),
        (repo.clone(), 0u8..4).prop_map(|(r, d)| Command::CommitBlob {
            repo: r,
            digest: digest(d),
            size: 10,
            created_at: 2
        }),
        (repo.clone(), repo.clone(), 0u8..4).prop_map(|(r, f, d)| Command::MountBlob {
            repo: r,
            from: f,
            digest: digest(d),
            created_at: 3
        }),
        (repo.clone(), 0u8..4).prop_map(|(r, d)| Command::UnlinkBlob {
            repo: r,
            digest: digest(d)
        }),
        (
            repo.clone(),
            10u8..14,
            tag,
            proptest::collection::vec(0u8..4, 0..3),
            proptest::option::of(10u8..14)
        )
            .prop_map(|(r, m, tag, blobs, subject)| Command::PutManifest(Box::new(
                ManifestPut {
                    repo: r,
                    digest: digest(m),
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                    bytes: vec![m; 16],
                    tag,
                    blobs: blobs.into_iter().map(digest).collect(),
                    manifests: vec![],
                    subject: subject.map(digest),
                    artifact_type: None,
                    annotations: None,
                    pushed_at: 4,
                }
            ))),
        (repo.clone(), 10u8..14).prop_map(|(r, m)| Command::DeleteManifest {
            repo: r,
            digest: digest(m)
        }),
        (repo, proptest::sample::select(TAGS.to_vec())).prop_map(|(r, t)| Command::DeleteTag {
            repo: r,
            tag: t.into()
        }),
    ]
}

fn entries<P: Clone + Into<Proposal>>(items: &[P]) -> Vec<Entry<TypeConfig>> {
    entries_after(0, items)
}

/// Log entries for `items` following the entry at index `last`.
fn entries_after<P: Clone + Into<Proposal>>(last: u64, items: &[P]) -> Vec<Entry<TypeConfig>> {
    items
        .iter()
        .enumerate()
        .map(|(i, c)| Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), last + i as u64 + 1),
            payload: EntryPayload::Normal(c.clone().into()),
        })
        .collect()
}

/// A log as a node's retries produce it: proposals with request ids, some
/// proposed again later (same id, same command) after an earlier copy was
/// already committed. Also returns, per entry, the position of its first copy.
fn log_with_retries() -> impl Strategy<Value = (Vec<Proposal>, Vec<usize>)> {
    proptest::collection::vec(
        (command(), proptest::option::weighted(0.3, any::<usize>())),
        1..60,
    )
    .prop_map(|items| {
        let (mut log, mut first): (Vec<Proposal>, Vec<usize>) = (Vec::new(), Vec::new());
        for (i, (cmd, retry)) in items.into_iter().enumerate() {
            match retry {
                Some(k) if !log.is_empty() => {
                    let k = first[k % log.len()];
                    log.push(log[k].clone());
                    first.push(k);
                }
                _ => {
                    log.push(Proposal {
                        request: i as u128 + 1,
                        command: cmd,
                    });
                    first.push(log.len() - 1);
                }
            }
        }
        (log, first)
    })
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Every namespace's organisation and project exist, and so does every
/// credential's.
fn tenancy_references_resolve(r: &StateReader) {
    for ns in r.all_namespaces().unwrap() {
        if let Some(o) = &ns.organisation {
            assert!(
                r.organisation(o).unwrap().is_some(),
                "{} -> org {o} dangles",
                ns.name
            );
            if let Some(p) = &ns.project {
                assert!(
                    r.project(o, p).unwrap().is_some(),
                    "{} -> project {p} dangles",
                    ns.name
                );
            }
        }
    }
    for org in ORGS {
        for c in r.credentials(org).unwrap() {
            assert!(r.organisation(&c.organisation).unwrap().is_some());
            if let Some(p) = &c.project {
                assert!(
                    r.project(org, p).unwrap().is_some(),
                    "{} -> project {p} dangles",
                    c.id
                );
            }
        }
        if r.organisation(org).unwrap().is_none() {
            assert!(
                r.credentials(org).unwrap().is_empty(),
                "credentials outlived {org}"
            );
            assert!(
                r.projects(org).unwrap().is_empty(),
                "projects outlived {org}"
            );
        }
    }
}

/// The usage counters equal a recount from the tables: each unique blob
/// linked in the namespace and each unique manifest, once.
fn usage_matches_a_recount(r: &StateReader) {
    for ns in r.all_namespaces().unwrap() {
        let mut blobs = std::collections::BTreeSet::new();
        let mut manifests = std::collections::BTreeMap::new();
        for repo in r
            .repositories(Some(&ns.name), None, usize::MAX)
            .unwrap()
            .items
        {
            blobs.extend(r.linked_blobs(&repo).unwrap());
            for m in r.manifests(&repo, None, usize::MAX).unwrap().0 {
                manifests.insert(m.digest.clone(), m.size);
            }
        }
        let blob_bytes: u64 = blobs.iter().map(|d| r.blob(d).unwrap().unwrap().size).sum();
        let u = r.namespace_usage(&ns.name).unwrap().unwrap_or_default();
        assert_eq!(
            (u.blobs, u.blob_bytes, u.manifests, u.manifest_bytes),
            (
                blobs.len() as u64,
                blob_bytes,
                manifests.len() as u64,
                manifests.values().sum()
            ),
            "usage of {}",
            ns.name
        );
    }
}

/// Daily usage samples: oldest first, one per day, never more days than
/// are kept, none after the last tick, byte-seconds never decreasing and
/// never past the namespace's count; a deleted namespace keeps none.
fn usage_days_are_bounded(r: &StateReader) {
    let live: Vec<String> = r
        .all_namespaces()
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    for ns in NAMESPACES {
        let days = r.namespace_usage_days(ns, 0).unwrap();
        if !live.iter().any(|n| n == ns) {
            assert!(days.is_empty(), "samples outlived namespace {ns}: {days:?}");
            continue;
        }
        let u = r.namespace_usage(ns).unwrap().unwrap_or_default();
        let today = u.metered_at / tcr_raft::DAY_SECS;
        for w in days.windows(2) {
            assert!(w[0].day < w[1].day, "{ns}: {days:?}");
            assert!(w[0].byte_seconds <= w[1].byte_seconds, "{ns}: {days:?}");
        }
        for s in &days {
            assert!(
                s.day <= today && s.day + tcr_raft::DAYS_KEPT > today,
                "{ns}: day {} kept on {today}",
                s.day
            );
            assert_eq!(s.at / tcr_raft::DAY_SECS, s.day);
            assert!(s.byte_seconds <= u.byte_seconds);
        }
    }
}

/// Every tag names a manifest that exists in its repository, and every
/// blob a manifest references is committed (garbage collection never
/// removes one: invariant 4).
fn tags_point_at_manifests(r: &StateReader) {
    for repo in r.repositories(None, None, usize::MAX).unwrap().items {
        for m in r.manifests(&repo, None, usize::MAX).unwrap().0 {
            for b in &m.blobs {
                assert!(
                    r.blob(b).unwrap().is_some(),
                    "{repo}@{} references collected {b}",
                    m.digest
                );
            }
        }
        for tag in r.tags(&repo, None, usize::MAX).unwrap().items {
            let d = r.tag(&repo, &tag).unwrap().unwrap();
            assert!(
                r.manifest_record(&repo, &d).unwrap().is_some(),
                "{repo}:{tag} -> {d} dangles"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A retried proposal is applied once: it answers with the first
    /// result, and the state is the one the log without the retries gives.
    #[test]
    fn retried_proposals_apply_once((log, first) in log_with_retries()) {
        rt().block_on(async {
            let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let mut with = tcr_raft::open(d1.path()).unwrap();
            let mut without = tcr_raft::open(d2.path()).unwrap();
            let r = with.state_machine.apply(entries(&log)).await.unwrap();
            for (i, k) in first.iter().enumerate() {
                assert_eq!(r[i], r[*k], "retry at {i} of the proposal at {k}");
            }
            let originals: Vec<Command> = log
                .iter()
                .zip(&first)
                .enumerate()
                .filter(|(i, (_, k))| *i == **k)
                .map(|(_, (p, _))| p.command.clone())
                .collect();
            without.state_machine.apply(entries(&originals)).await.unwrap();
            assert_eq!(
                with.reader.content_digest().unwrap(),
                without.reader.content_digest().unwrap()
            );
        });
    }

    /// Every command survives the log's and the RPC's codec (bincode, which
    /// is not self-describing: a field skipped when serialising breaks it).
    #[test]
    fn commands_survive_the_log_codec(cmds in proptest::collection::vec(command(), 1..40)) {
        for e in entries(&cmds) {
            let bytes = bincode::serde::encode_to_vec(&e, bincode::config::standard()).unwrap();
            let (back, _): (Entry<TypeConfig>, usize) =
                bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
            prop_assert_eq!(back, e);
        }
    }

    /// A command that grows a namespace's stored bytes never takes it past
    /// its quota.
    #[test]
    fn growth_never_passes_a_quota(cmds in proptest::collection::vec(command(), 1..60)) {
        rt().block_on(async {
            let d = tempfile::tempdir().unwrap();
            let mut s = tcr_raft::open(d.path()).unwrap();
            for (i, cmd) in cmds.iter().enumerate() {
                let before: Vec<(String, u64)> = NAMESPACES
                    .iter()
                    .map(|n| (n.to_string(), s.reader.namespace_usage(n).unwrap().unwrap_or_default().bytes()))
                    .collect();
                let e = Entry::<TypeConfig> {
                    log_id: LogId::new(CommittedLeaderId::new(1, 1), i as u64 + 1),
                    payload: EntryPayload::Normal(cmd.clone().into()),
                };
                s.state_machine.apply(vec![e]).await.unwrap();
                for (n, was) in before {
                    let now = s.reader.namespace_usage(&n).unwrap().unwrap_or_default().bytes();
                    if let Some(q) = s.reader.namespace(&n).unwrap().and_then(|r| r.quota_bytes) {
                        assert!(now <= was || now <= q, "{n}: {was} -> {now} past quota {q} by {cmd:?}");
                    }
                }
            }
        });
    }

    /// The trail is the committed history: a command with its context
    /// has the same result and effect as without; its events carry the
    /// context's actor, come in log order with times that never go back,
    /// and say refused exactly when the command was; and paging (bounded
    /// by what a page looks at) sees every event once.
    #[test]
    fn the_trail_is_the_committed_history(
        cmds in proptest::collection::vec(plain_command(), 1..60),
        actors in proptest::collection::vec((actor(), 0u64..50_000), 60),
    ) {
        rt().block_on(async {
            let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let mut plain = tcr_raft::open(d1.path()).unwrap();
            let mut with = tcr_raft::open(d2.path()).unwrap();
            let wrapped: Vec<Command> = cmds
                .iter()
                .zip(&actors)
                .map(|(c, (a, at))| audited(c.clone(), a.clone(), *at, 1))
                .collect();
            let r1 = plain.state_machine.apply(entries(&cmds)).await.unwrap();
            let r2 = with.state_machine.apply(entries(&wrapped)).await.unwrap();
            assert_eq!(r1, r2, "the context changed a result");
            assert_eq!(
                plain.reader.content_digest().unwrap(),
                with.reader.content_digest().unwrap()
            );
            let events = trail(&with.reader);
            let mut last = (0, 0);
            for e in &events {
                assert!((e.at_ms, e.index) >= last, "out of order: {e:?} after {last:?}");
                last = (e.at_ms, e.index);
                let i = (e.index - 1) as usize;
                assert_eq!(e.actor, actors[i].0, "{e:?}");
                assert!(e.at_ms >= actors[i].1, "{e:?}");
                assert_eq!(
                    e.refused.is_some(),
                    matches!(r2[i], CommandResult::Refused(_)),
                    "{e:?} for {:?}",
                    r2[i]
                );
            }
            // Every change a user asked for and the state machine made is
            // in the trail (blob commits and bookkeeping are not acts).
            for (i, c) in cmds.iter().enumerate() {
                let acts = matches!(
                    c,
                    Command::CreateNamespace { .. }
                        | Command::PutManifest(_)
                        | Command::DeleteManifest { .. }
                        | Command::DeleteTag { .. }
                        | Command::CreateCredential(_)
                        | Command::RevokeCredential { .. }
                        | Command::DeleteNamespace { .. }
                );
                if acts {
                    assert!(
                        events.iter().any(|e| e.index == i as u64 + 1),
                        "no event for {c:?} at {}",
                        i + 1
                    );
                }
            }
            // Replicas keep the same trail.
            let d3 = tempfile::tempdir().unwrap();
            let mut again = tcr_raft::open(d3.path()).unwrap();
            again.state_machine.apply(entries(&wrapped)).await.unwrap();
            assert_eq!(trail(&again.reader), events);
        });
    }

    #[test]
    fn replicas_agree_and_snapshots_restore(cmds in proptest::collection::vec(command(), 1..60)) {
        rt().block_on(async {
            let (d1, d2, d3) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let mut s1 = tcr_raft::open(d1.path()).unwrap();
            let mut s2 = tcr_raft::open(d2.path()).unwrap();
            let r1 = s1.state_machine.apply(entries(&cmds)).await.unwrap();
            let r2 = s2.state_machine.apply(entries(&cmds)).await.unwrap();
            assert_eq!(r1, r2, "replicas decided differently");
            assert_eq!(r1.len(), cmds.len());
            let digest1 = s1.reader.state_digest().unwrap();
            assert_eq!(digest1, s2.reader.state_digest().unwrap());
            tags_point_at_manifests(&s1.reader);
            tenancy_references_resolve(&s1.reader);
            usage_matches_a_recount(&s1.reader);
            usage_days_are_bounded(&s1.reader);

            let snap = s1.state_machine.get_snapshot_builder().await.build_snapshot().await.unwrap();
            let mut s3 = tcr_raft::open(d3.path()).unwrap();
            // Give the target some state of its own, which the install must replace.
            s3.state_machine.apply(entries(&cmds[..1])).await.unwrap();
            s3.state_machine.install_snapshot(&snap.meta, snap.snapshot).await.unwrap();
            assert_eq!(s3.reader.state_digest().unwrap(), digest1);
            let (applied, _) = s3.state_machine.applied_state().await.unwrap();
            assert_eq!(applied.map(|l| l.index), Some(cmds.len() as u64));
        });
    }
}

#[test]
fn usage_is_sampled_at_the_first_tick_of_each_day_and_old_days_go() {
    rt().block_on(async {
        let d = tempfile::tempdir().unwrap();
        let mut s = tcr_raft::open(d.path()).unwrap();
        let day = tcr_raft::DAY_SECS;
        let create = Command::CreateNamespace {
            name: "a".into(),
            visibility: Visibility::Private,
            created_at: 1,
            organisation: None,
            project: None,
        };
        let blob = |i: u8| Command::CommitBlob {
            repo: "a/x".into(),
            digest: digest(i),
            size: 10,
            created_at: 2,
        };
        let tick = |at: u64| Command::MeterTick { at };
        let cmds = vec![
            create.clone(),
            blob(1),
            tick(1000 * day + 100), // metering starts: no sample
            tick(1000 * day + 200), // the same day: none
            tick(1001 * day + 5),   // day 1001
            blob(2),
            tick(1001 * day + 50), // the same day: none
            tick(1003 * day + 7),  // day 1003 (no tick on day 1002)
        ];
        s.state_machine.apply(entries(&cmds)).await.unwrap();
        let days = s.reader.namespace_usage_days("a", 0).unwrap();
        let seen: Vec<(u64, u64, u64)> = days.iter().map(|x| (x.day, x.at, x.bytes)).collect();
        assert_eq!(
            seen,
            vec![(1001, 1001 * day + 5, 10), (1003, 1003 * day + 7, 20)]
        );
        // A tick charges the interval since the one before at the bytes
        // stored when it applies: 10 up to day 1001's first tick, 20 after.
        let first = 10 * u128::from(day - 100 + 5);
        assert_eq!(days[0].byte_seconds, first);
        assert_eq!(
            days[1].byte_seconds,
            first + 20 * u128::from(2 * day - 5 + 7)
        );
        assert_eq!(s.reader.namespace_usage_days("a", 1002).unwrap(), days[1..]);

        // DAYS_KEPT days after day 1001, its sample goes; 1003's stays.
        let later = 1001 + tcr_raft::DAYS_KEPT;
        let next = cmds.len() as u64;
        s.state_machine
            .apply(entries_after(next, &[tick(later * day + 1)]))
            .await
            .unwrap();
        let kept: Vec<u64> = s
            .reader
            .namespace_usage_days("a", 0)
            .unwrap()
            .iter()
            .map(|x| x.day)
            .collect();
        assert_eq!(kept, vec![1003, later]);

        // A deleted namespace's samples go with it; made again, it starts afresh.
        let again = [
            Command::DeleteRepository { repo: "a/x".into() },
            Command::DeleteNamespace { name: "a".into() },
            create,
        ];
        let r = s
            .state_machine
            .apply(entries_after(next + 1, &again))
            .await
            .unwrap();
        assert!(
            r.iter().all(|x| !matches!(x, CommandResult::Refused(_))),
            "{r:?}"
        );
        assert!(s.reader.namespace_usage_days("a", 0).unwrap().is_empty());
    });
}

#[test]
fn an_ended_session_is_listed_until_its_tokens_would_expire() {
    rt().block_on(async {
        let d = tempfile::tempdir().unwrap();
        let mut s = tcr_raft::open(d.path()).unwrap();
        let end = |id: &str, at: u64, until: u64| Command::EndSession {
            id: id.into(),
            at,
            until,
        };
        s.state_machine
            .apply(entries(&[end("a", 100, 1000), end("b", 200, 300)]))
            .await
            .unwrap();
        assert!(s.reader.session_ended("a").unwrap());
        assert!(s.reader.session_ended("b").unwrap());
        assert!(!s.reader.session_ended("c").unwrap());
        // A later sign-out drops what can no longer verify (b, past 300).
        s.state_machine
            .apply(entries_after(2, &[end("c", 301, 1200)]))
            .await
            .unwrap();
        let ended: Vec<bool> = ["a", "b", "c"]
            .iter()
            .map(|id| s.reader.session_ended(id).unwrap())
            .collect();
        assert_eq!(ended, [true, false, true]);
    });
}

#[test]
fn refusals_are_results_not_errors() {
    rt().block_on(async {
        let d = tempfile::tempdir().unwrap();
        let mut s = tcr_raft::open(d.path()).unwrap();
        let cmds = vec![
            Command::CommitBlob {
                repo: "a/x".into(),
                digest: digest(1),
                size: 1,
                created_at: 1,
            },
            Command::CreateNamespace {
                name: "a".into(),
                visibility: Visibility::Private,
                created_at: 1,
                organisation: None,
                project: None,
            },
            Command::CreateNamespace {
                name: "a".into(),
                visibility: Visibility::Private,
                created_at: 1,
                organisation: None,
                project: None,
            },
            Command::CommitBlob {
                repo: "a/x".into(),
                digest: digest(1),
                size: 1,
                created_at: 1,
            },
        ];
        let r = s.state_machine.apply(entries(&cmds)).await.unwrap();
        assert!(matches!(
            r[0],
            CommandResult::Refused(tcr_raft::Refusal::NamespaceUnknown(_))
        ));
        assert_eq!(r[1], CommandResult::Ok);
        assert!(matches!(
            r[2],
            CommandResult::Refused(tcr_raft::Refusal::NamespaceExists(_))
        ));
        assert_eq!(r[3], CommandResult::Ok);
    });
}

#[test]
fn state_survives_reopening_the_database() {
    let d = tempfile::tempdir().unwrap();
    let cmds = vec![
        Command::CreateNamespace {
            name: "a".into(),
            visibility: Visibility::Public,
            created_at: 1,
            organisation: None,
            project: None,
        },
        Command::CommitBlob {
            repo: "a/x".into(),
            digest: digest(1),
            size: 1,
            created_at: 1,
        },
    ];
    let before = rt().block_on(async {
        let mut s = tcr_raft::open(d.path()).unwrap();
        s.state_machine.apply(entries(&cmds)).await.unwrap();
        s.reader.state_digest().unwrap()
    });
    // Everything above is dropped, so the database is closed and reopened.
    rt().block_on(async {
        let mut s = tcr_raft::open(d.path()).unwrap();
        assert_eq!(s.reader.state_digest().unwrap(), before);
        let (applied, _) = s.state_machine.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(2));
        assert!(s.reader.linked_blob("a/x", &digest(1)).unwrap().is_some());
    });
}

/// Pruning forgets exactly the events before its horizon, in one range
/// delete, and listings and the oldest-event check start after it.
#[test]
fn pruning_the_trail_forgets_only_older_events() {
    rt().block_on(async {
        let d = tempfile::tempdir().unwrap();
        let mut s = tcr_raft::open(d.path()).unwrap();
        let mut cmds: Vec<Command> = (0..5)
            .map(|i| {
                audited(
                    Command::CreateOrganisation {
                        name: format!("o{i}"),
                        features: Default::default(),
                        created_at: 1,
                    },
                    Actor::Operator,
                    (i + 1) * 1000,
                    1,
                )
            })
            .collect();
        cmds.push(Command::PruneAudit { before_ms: 3000 });
        // A prune to an earlier horizon later changes nothing.
        cmds.push(Command::PruneAudit { before_ms: 1000 });
        s.state_machine.apply(entries(&cmds)).await.unwrap();
        let kept: Vec<String> = trail(&s.reader).into_iter().map(|e| e.resource).collect();
        assert_eq!(kept, ["o2", "o3", "o4"]);
        assert_eq!(s.reader.audit_oldest_ms().unwrap(), Some(3000));
        let since = AuditFilter {
            since_ms: Some(4000),
            ..Default::default()
        };
        let page = s.reader.audit_events(&since, None, 10, 10).unwrap();
        assert_eq!(page.events.len(), 2);
        assert!(page.next.is_none());
        // A page that fills up says where to go on; the rest follows once.
        let first = s
            .reader
            .audit_events(&AuditFilter::default(), None, 1, 10)
            .unwrap();
        let rest = s
            .reader
            .audit_events(&AuditFilter::default(), first.next.as_deref(), 10, 10)
            .unwrap();
        assert_eq!(first.events.len() + rest.events.len(), 3);
        assert_eq!(rest.events[0].1.resource, "o3");
    });
}
