//! A snapshot of 200,000 tags (with their manifests) is built, received in
//! chunks and installed on a fresh store without the process ever holding
//! the state in memory: the peak RSS growth of the install stays well
//! below the size of the snapshot. The only test in this binary, so the
//! process's peak RSS is this test's.

use std::io::Read;

use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder};
use tcr_raft::{Command, ManifestPut, TypeConfig, Visibility};
use tokio::io::AsyncWriteExt;

const TAGS: u64 = 200_000;
/// openraft's default snapshot chunk.
const CHUNK: usize = 3 << 20;

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}

fn digest(i: u64) -> String {
    format!("sha256:{i:064x}")
}

fn entry(index: u64, cmd: Command) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(cmd.into()),
    }
}

fn manifest(i: u64) -> Command {
    // About 1 KiB per manifest, as small image manifests are.
    let bytes = format!(
        r#"{{"schemaVersion":2,"config":{{"digest":"{}"}},"annotations":{{"n":"{i}","pad":"{}"}}}}"#,
        digest(0),
        "p".repeat(900)
    )
    .into_bytes();
    Command::PutManifest(Box::new(ManifestPut {
        repo: "a/x".into(),
        digest: digest(i + 1),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        bytes,
        tag: Some(format!("tag-{i:07}")),
        blobs: vec![digest(0)],
        manifests: vec![],
        subject: None,
        artifact_type: None,
        annotations: None,
        pushed_at: i,
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200k_tag_snapshot_installs_without_holding_it_in_memory() {
    if std::env::var_os("TCR_INSTALL_CHILD").is_some() {
        return install_child().await;
    }
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (meta, snapshot_file, want) = {
        let mut source = tcr_raft::open(d1.path()).unwrap();
        let setup = vec![
            entry(
                1,
                Command::CreateNamespace {
                    name: "a".into(),
                    visibility: Visibility::Private,
                    created_at: 0,
                    organisation: None,
                    project: None,
                },
            ),
            entry(
                2,
                Command::CommitBlob {
                    repo: "a/x".into(),
                    digest: digest(0),
                    size: 1,
                    created_at: 0,
                },
            ),
        ];
        source.state_machine.apply(setup).await.unwrap();
        for start in (0..TAGS).step_by(10_000) {
            let batch: Vec<_> = (start..start + 10_000)
                .map(|i| entry(i + 3, manifest(i)))
                .collect();
            source.state_machine.apply(batch).await.unwrap();
        }
        let tags = source.reader.tags("a/x", None, usize::MAX).unwrap().items;
        assert_eq!(tags.len() as u64, TAGS);
        let snap = source
            .state_machine
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let want = source.reader.state_digest().unwrap();
        let file = d1
            .path()
            .join("snapshots")
            .join(format!("data-{}", snap.meta.snapshot_id));
        (snap.meta, file, want)
    };
    // The source store is closed (dropped) here. The install runs in a
    // child process (this test binary again), so its peak RSS is the
    // install's alone, not memory the allocator kept from building the source.
    let size = std::fs::metadata(&snapshot_file).unwrap().len();
    let meta_file = d1.path().join("meta.json");
    std::fs::write(&meta_file, serde_json::to_vec(&meta).unwrap()).unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_200k_tag_snapshot_installs_without_holding_it_in_memory",
            "--nocapture",
        ])
        .env("TCR_INSTALL_CHILD", "1")
        .env("TCR_SNAPSHOT_FILE", &snapshot_file)
        .env("TCR_SNAPSHOT_META", &meta_file)
        .env("TCR_TARGET_DIR", d2.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "install child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |name: &str| -> String {
        stdout
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} in the child's output: {stdout}"))
            .to_string()
    };
    let peak: u64 = field("peak=").parse().unwrap();
    eprintln!(
        "snapshot {} MiB; peak RSS of the receiving process {} MiB",
        size >> 20,
        peak >> 20
    );
    let target = tcr_raft::open(d2.path()).unwrap();
    assert_eq!(target.reader.state_digest().unwrap(), want);
    let mut target = target;
    let (applied, _) = target.state_machine.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(TAGS + 2));
    assert!(size > 200 << 20, "the snapshot is large ({size} bytes)");
    assert!(
        peak < size / 2,
        "receiving and installing took a peak RSS of {peak} bytes for a {size}-byte snapshot"
    );
}

/// The child: receive the snapshot in chunks as openraft does, install it,
/// report the process's peak RSS.
async fn install_child() {
    let file = std::env::var("TCR_SNAPSHOT_FILE").unwrap();
    let meta: tcr_raft::SnapshotMeta = serde_json::from_slice(
        &std::fs::read(std::env::var("TCR_SNAPSHOT_META").unwrap()).unwrap(),
    )
    .unwrap();
    let mut target = tcr_raft::open(std::path::Path::new(
        &std::env::var("TCR_TARGET_DIR").unwrap(),
    ))
    .unwrap();
    let mut receiving = target
        .state_machine
        .begin_receiving_snapshot()
        .await
        .unwrap();
    let mut src = std::fs::File::open(file).unwrap();
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = src.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        receiving.write_all(&chunk[..n]).await.unwrap();
    }
    target
        .state_machine
        .install_snapshot(&meta, receiving)
        .await
        .unwrap();
    println!("peak={}", status_kib("VmHWM:") * 1024);
}
