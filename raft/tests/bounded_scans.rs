//! The work of an apply or a listing does not grow with what was deleted
//! before it. RocksDB keeps a deleted key as a tombstone until compaction,
//! and an iterator steps over every tombstone between where it starts and
//! the next live key: a scan that starts in front of old deletes (or has no
//! end) gets slower with every write. RocksDB's perf context counts the
//! tombstones and hidden keys each operation stepped over.

use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use rocksdb::perf::{set_perf_stats, PerfContext, PerfMetric, PerfStatsLevel};
use tcr_raft::{Command, ManifestPut, Proposal, StoreOptions, TypeConfig, Visibility};

const WINDOW: u64 = 100;

fn digest(i: u64) -> String {
    format!("sha256:{i:064x}")
}

fn entry(index: u64, request: u128, command: Command) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Proposal { request, command }),
    }
}

/// A manifest that moves tag `latest` (as a CI pipeline's pushes do).
fn push(i: u64) -> Command {
    Command::PutManifest(Box::new(ManifestPut {
        repo: "a/app".into(),
        digest: digest(i + 1_000_000),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        bytes: format!(r#"{{"schemaVersion":2,"n":{i}}}"#).into_bytes(),
        tag: Some("latest".into()),
        blobs: vec![digest(0)],
        manifests: vec![],
        subject: None,
        artifact_type: None,
        annotations: None,
        pushed_at: i,
    }))
}

/// Namespace `a`, and blob `digest(0)` in each of `repos` (what `push` needs).
fn namespace_a_with(repos: &[&str]) -> Vec<Command> {
    let mut cmds = vec![Command::CreateNamespace {
        name: "a".into(),
        visibility: Visibility::Private,
        created_at: 1,
        organisation: None,
        project: None,
    }];
    cmds.extend(repos.iter().map(|r| Command::CommitBlob {
        repo: r.to_string(),
        digest: digest(0),
        size: 10,
        created_at: 1,
    }));
    cmds
}

/// Tombstones and hidden keys the current thread's RocksDB calls stepped
/// over since the last reset.
fn skipped(ctx: &PerfContext) -> u64 {
    ctx.metric(PerfMetric::InternalDeleteSkippedCount)
        + ctx.metric(PerfMetric::InternalKeySkippedCount)
}

fn rt() -> tokio::runtime::Runtime {
    // Current thread: the applies run on this thread, where the perf
    // context counts.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// 50 windows of proposals with request ids: every apply past the first
/// window forgets old ids, and the keys it steps over stay few and flat
/// (before the fix, each apply walked every tombstone earlier ones left:
/// about 4 more per entry, thousands by the end).
#[test]
fn forgetting_old_request_ids_costs_the_same_after_fifty_windows() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut s = tcr_raft::open_with(
            dir.path(),
            &StoreOptions {
                request_window: WINDOW,
                ..Default::default()
            },
        )
        .unwrap();
        let mut index = 0;
        for c in namespace_a_with(&["a/app"]) {
            index += 1;
            s.state_machine
                .apply(vec![entry(index, 0, c)])
                .await
                .unwrap();
        }
        set_perf_stats(PerfStatsLevel::EnableCount);
        let mut ctx = PerfContext::default();
        let mut per_window = Vec::new();
        for w in 0..50 {
            let mut worst = 0;
            for i in 0..WINDOW {
                index += 1;
                let n = w * WINDOW + i;
                ctx.reset();
                s.state_machine
                    .apply(vec![entry(index, u128::from(n) + 1, push(n))])
                    .await
                    .unwrap();
                worst = worst.max(skipped(&ctx));
            }
            per_window.push(worst);
        }
        set_perf_stats(PerfStatsLevel::Disable);
        eprintln!("keys stepped over, worst apply per window: {per_window:?}");
        // Only the newest ids are kept.
        let first = s.reader.tags("a/app", None, 10).unwrap();
        assert_eq!(first.items, ["latest"]);
        let worst = *per_window.iter().max().unwrap();
        assert!(
            worst <= 16,
            "an apply stepped over {worst} deleted keys: {per_window:?}"
        );
        let (early, late) = (per_window[2], per_window[49]);
        assert!(
            late <= early + 4,
            "the work per apply grew from {early} to {late}: {per_window:?}"
        );
    });
}

/// Listing a repository with no tags, followed in key order by one whose
/// tags were all deleted, stops at the repository's end instead of
/// stepping over the neighbour's tombstones to the next live key. (The
/// same holds for every prefix scan: GC asks whether each candidate blob
/// is still referenced, and the candidates are the blobs whose references
/// were deleted.)
#[test]
fn a_listing_ends_at_its_prefix_whatever_was_deleted_after_it() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut s = tcr_raft::open(dir.path()).unwrap();
        let mut cmds = namespace_a_with(&["a/app", "a/zz"]);
        // a/app gets 3000 tags, all deleted again; a/zz keeps one.
        for i in 0..3000u64 {
            let Command::PutManifest(mut m) = push(i) else {
                unreachable!()
            };
            m.tag = Some(format!("t{i:05}"));
            cmds.push(Command::PutManifest(m));
        }
        for i in 0..3000u64 {
            cmds.push(Command::DeleteTag {
                repo: "a/app".into(),
                tag: format!("t{i:05}"),
            });
        }
        let Command::PutManifest(mut keep) = push(5000) else {
            unreachable!()
        };
        keep.repo = "a/zz".into();
        cmds.push(Command::PutManifest(keep));
        let entries: Vec<_> = cmds
            .into_iter()
            .enumerate()
            .map(|(i, c)| entry(i as u64 + 1, 0, c))
            .collect();
        s.state_machine.apply(entries).await.unwrap();

        set_perf_stats(PerfStatsLevel::EnableCount);
        let mut ctx = PerfContext::default();
        ctx.reset();
        let empty = s.reader.tags("a/aa", None, 100).unwrap();
        let n = skipped(&ctx);
        set_perf_stats(PerfStatsLevel::Disable);
        assert!(empty.items.is_empty(), "{empty:?}");
        assert!(!empty.more);
        assert_eq!(s.reader.tags("a/zz", None, 100).unwrap().items, ["latest"]);
        assert!(
            n <= 16,
            "listing an empty repository stepped over {n} deleted keys"
        );
    });
}

/// Tags under a name prefix come from that key range alone: pages in order,
/// a cursor before the range starts at its beginning, one past it ends.
#[test]
fn tags_under_a_prefix_page_through_that_range_only() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut s = tcr_raft::open(dir.path()).unwrap();
        let mut cmds = namespace_a_with(&["a/app"]);
        let names: Vec<String> = (0..2000u64)
            .map(|i| format!("a{i:05}"))
            .chain((0..7).map(|i| format!("v{i}")))
            .chain((0..2000u64).map(|i| format!("z{i:05}")))
            .collect();
        for (i, name) in names.iter().enumerate() {
            let Command::PutManifest(mut m) = push(i as u64) else {
                unreachable!()
            };
            m.tag = Some(name.clone());
            cmds.push(Command::PutManifest(m));
        }
        let entries: Vec<_> = cmds
            .into_iter()
            .enumerate()
            .map(|(i, c)| entry(i as u64 + 1, 0, c))
            .collect();
        s.state_machine.apply(entries).await.unwrap();
        let r = &s.reader;
        let first = r.tags_with_prefix("a/app", "v", None, 4).unwrap();
        assert_eq!(first.items, ["v0", "v1", "v2", "v3"]);
        assert!(first.more);
        let rest = r.tags_with_prefix("a/app", "v", Some("v3"), 4).unwrap();
        assert_eq!(rest.items, ["v4", "v5", "v6"]);
        assert!(!rest.more);
        let from_before = r.tags_with_prefix("a/app", "v", Some("a01999"), 2).unwrap();
        assert_eq!(from_before.items, ["v0", "v1"]);
        let past = r
            .tags_with_prefix("a/app", "v", Some("z00000"), 10)
            .unwrap();
        assert!(past.items.is_empty() && !past.more);
        let exact = r.tags_with_prefix("a/app", "v5", None, 10).unwrap();
        assert_eq!(exact.items, ["v5"]);
        let all = r.tags_with_prefix("a/app", "", None, 10_000).unwrap();
        assert_eq!(all.items, r.tags("a/app", None, 10_000).unwrap().items);
    });
}
