//! Node-to-node security: a cluster under mutual TLS works and refuses
//! anyone without a certificate from its CA; certificates rotate on disk
//! without a restart; every RPC method survives hostile payloads; a node
//! only joins for the address its certificate names; a non-loopback RPC
//! port needs peer TLS (or an explicit --insecure-peers).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tcr_tests::grpc::{self, METHODS};
use tcr_tests::harness::{
    bin, certs, cluster, cluster_status, free_port, https_client, peer_tls_args, registry_tls_args,
    wait_for, Node,
};
use tcr_tests::images::{Image, OCI_MANIFEST};
use tcr_tests::oci::Oci;

/// A client that presents `host`'s certificate from `dir` and trusts the
/// CA in `trust` (where the server's certificate comes from).
fn client_with_cert(dir: &Path, host: &str, trust: &Path) -> reqwest::ClientBuilder {
    let mut pem = std::fs::read(dir.join(format!("{host}.crt"))).unwrap();
    pem.extend(std::fs::read(dir.join(format!("{host}.key"))).unwrap());
    https_client(&trust.join("ca.crt"))
        .identity(reqwest::Identity::from_pem(&pem).unwrap())
        .timeout(Duration::from_secs(10))
}

/// The DER of the first certificate in a PEM file.
fn der_of(pem_file: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(pem_file).unwrap();
    let b64: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

/// The certificate a server presents on a new connection (None if the
/// request failed).
async fn served_certificate(client: reqwest::ClientBuilder, url: &str) -> Option<Vec<u8>> {
    let c = client
        .tls_info(true)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let resp = c.get(url).send().await.ok()?;
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()?
        .peer_certificate()
        .map(<[u8]>::to_vec)
}

async fn leader_and_follower(nodes: &[Node]) -> (usize, usize) {
    let s = cluster_status(&nodes[0]).await;
    let leader = s["leader"].as_u64().unwrap() as usize - 1;
    (leader, (leader + 1) % nodes.len())
}

/// Every member's storage report, asked through `node`.
async fn storage_reports(node: &Node) -> Vec<Value> {
    let r = node
        .client()
        .get(format!(
            "{}/v1/container-registries/storage/members",
            node.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["nodes"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_under_mutual_tls_works_and_refuses_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let ours = certs(&dir.path().join("certs"), &["127.0.0.1"]);
    let theirs = certs(&dir.path().join("other"), &["127.0.0.1"]);
    // HTTPS on the registry port too: clients then speak HTTP/2, which
    // reads a response body to its very end.
    let mut args = peer_tls_args(&ours, "127.0.0.1");
    args.extend(registry_tls_args(&ours, "127.0.0.1"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut nodes = cluster(dir.path(), 3, &[], &args).await;

    // Writes through a follower (forwarded to the leader over mTLS), blobs
    // replicated and read through every node, owners or not.
    let (_, f) = leader_and_follower(&nodes).await;
    nodes[f].create_namespace("acme", "private").await;
    // One copy per blob: two of the three nodes must stream every read
    // from the owner, over the peer blob reads.
    let ca = ours.join("ca.crt").display().to_string();
    let out = tcr_tests::harness::tcr(
        &nodes[0].url(),
        &["--cacert", &ca, "cluster", "set", "replication-factor", "1"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let img = Image::new("mtls", "amd64");
    let oci = Oci::with_http(&nodes[f].url(), nodes[f].client());
    let layer = oci.push_blob("acme/app", &img.layer).await;
    oci.push_blob("acme/app", &img.config).await;
    let put = oci
        .put_manifest("acme/app", "v1", OCI_MANIFEST, &img.manifest)
        .await;
    assert_eq!(put.status(), 201);
    for n in &nodes {
        let got = Oci::with_http(&n.url(), n.client())
            .get(&format!("/v2/acme/app/blobs/{layer}"))
            .await;
        assert_eq!(got.status(), 200, "layer through {}", n.url());
        assert_eq!(got.bytes().await.unwrap().as_ref(), img.layer.as_slice());
        let m = Oci::with_http(&n.url(), n.client())
            .get("/v2/acme/app/manifests/v1")
            .await;
        assert_eq!(m.status(), 200);
    }

    // An upload session opened at one node, continued at another and
    // finished at the third: its requests are passed to the node holding
    // it, over the nodes' mutual TLS.
    let blob = format!("proxied {}", nodes[0].rpc())
        .repeat(1000)
        .into_bytes();
    let c = nodes[0].client();
    let start = c
        .post(format!("{}/v2/acme/app/blobs/uploads/", nodes[0].url()))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 202);
    let location = start.headers()["location"].to_str().unwrap().to_string();
    let patch = c
        .patch(format!("{}{location}", nodes[1].url()))
        .header("content-type", "application/octet-stream")
        .body(blob.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 202, "{:?}", patch.text().await);
    let d = tcr_tests::images::digest(&blob);
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = c
        .put(format!("{}{location}{sep}digest={d}", nodes[2].url()))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201, "{:?}", put.text().await);
    for n in &nodes {
        let got = Oci::with_http(&n.url(), n.client())
            .get(&format!("/v2/acme/app/blobs/{d}"))
            .await;
        assert_eq!(got.bytes().await.unwrap().as_ref(), blob.as_slice());
    }

    // A stranger is refused at the handshake: with a certificate from
    // another CA, with none, or in plain text. Nothing of the blob leaks.
    let rpc = format!("https://{}", nodes[0].rpc());
    let blob_url = format!("{rpc}/tcr.blobs.v1/blobs/{layer}");
    let stranger = client_with_cert(&theirs, "127.0.0.1", &ours)
        .build()
        .unwrap();
    let anonymous = https_client(&ours.join("ca.crt")).build().unwrap();
    for (who, c) in [("another CA", &stranger), ("no certificate", &anonymous)] {
        let r = c.get(&blob_url).send().await;
        assert!(r.is_err(), "{who}: a blob read was answered: {r:?}");
        let r = c.get(format!("{blob_url}/index")).send().await;
        assert!(r.is_err(), "{who}: an index read was answered: {r:?}");
        let h2 = client_with_cert(&theirs, "127.0.0.1", &ours)
            .http2_prior_knowledge()
            .build()
            .unwrap();
        for method in METHODS.iter().chain(&["/tcr.blobs.v1.BlobService/Report"]) {
            let r = grpc::call(&h2, &rpc, method, &[]).await;
            assert!(r.is_err(), "{who}: {method} was answered: {r:?}");
        }
    }
    let plain = reqwest::Client::new()
        .get(format!(
            "http://{}/tcr.blobs.v1/blobs/{layer}",
            nodes[0].rpc()
        ))
        .send()
        .await;
    assert!(
        plain.as_ref().map_or(true, |r| !r.status().is_success()),
        "plain HTTP read a blob: {plain:?}"
    );
    // The same client with our CA's certificate is answered: the refusals
    // above are the certificate's doing.
    let member = client_with_cert(&ours, "127.0.0.1", &ours).build().unwrap();
    let r = member.get(&blob_url).send().await.unwrap();
    assert!(r.status() == 200 || r.status() == 404, "{}", r.status());
    let r = member
        .get(format!("{blob_url}/index"))
        .send()
        .await
        .unwrap();
    assert!(r.status() == 200 || r.status() == 404, "{}", r.status());

    // A stock node with the other CA's certificate cannot join.
    let their_args = peer_tls_args(&theirs, "127.0.0.1");
    let mut a: Vec<&str> = their_args.iter().map(String::as_str).collect();
    let seed = nodes[0].rpc();
    a.extend(["--node-id", "9", "--join", &seed]);
    let intruder = Node::start_unready(&dir.path().join("intruder"), &[], &a);
    wait_for(
        "the intruder's join attempts to fail",
        Duration::from_secs(30),
        || async { intruder.log().contains("joining the cluster:") },
    )
    .await;
    for n in &nodes {
        let s = cluster_status(n).await;
        let members = s["members"].as_array().unwrap();
        assert_eq!(members.len(), 3, "{s}");
        assert!(members.iter().all(|m| m["id"] != 9), "{s}");
    }
    assert!(
        nodes[0].log().contains("TLS handshake refused"),
        "the seed logs no refused handshake"
    );

    // Every member's storage report, through any node: the others' come
    // over the peer port. A member that is down is listed with why, in
    // bounded time.
    // R=1: once the passes have run, every blob is held by its one owner.
    let settled = |all: &[Value]| {
        let sum = |k: &str| -> u64 { all.iter().filter_map(|r| r["storage"][k].as_u64()).sum() };
        all.len() == 3
            && all
                .iter()
                .all(|r| r["storage"]["passes"].as_u64() > Some(0))
            && sum("held") == all[0]["storage"]["committedBlobs"].as_u64().unwrap_or(0)
            && sum("held") > 0
            && sum("misplaced") == 0
    };
    wait_for(
        "storage settled on every member",
        Duration::from_secs(30),
        || async { settled(&storage_reports(&nodes[1]).await) },
    )
    .await;
    let ids: Vec<u64> = storage_reports(&nodes[1])
        .await
        .iter()
        .map(|r| r["nodeId"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    nodes[2].kill9();
    let started = std::time::Instant::now();
    let all = storage_reports(&nodes[0]).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    let down: Vec<&Value> = all.iter().filter(|r| r["error"].is_string()).collect();
    assert_eq!(down.len(), 1, "{all:?}");
    assert_eq!(
        all.iter()
            .filter(|r| r["storage"]["passes"].is_u64())
            .count(),
        2,
        "{all:?}"
    );
}

#[tokio::test]
async fn certificates_rotate_on_disk_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(&dir.path().join("certs"), &["127.0.0.1", "client"]);
    let peer = peer_tls_args(&certs, "127.0.0.1");
    let peer: Vec<&str> = peer.iter().map(String::as_str).collect();
    let node = Node::start_https(&dir.path().join("n"), &certs, "127.0.0.1", &[], &peer).await;
    let https = format!("{}/v2/", node.url());
    let rpc = format!(
        "https://{}/tcr.blobs.v1/blobs/sha256:{}",
        node.rpc(),
        "0".repeat(64)
    );
    let registry_client = || https_client(&certs.join("ca.crt"));
    let peer_client = || client_with_cert(&certs, "client", &certs);
    let before = der_of(&certs.join("127.0.0.1.crt"));
    assert_eq!(
        served_certificate(registry_client(), &https).await,
        Some(before.clone())
    );
    assert_eq!(
        served_certificate(peer_client(), &rpc).await,
        Some(before.clone())
    );
    // A client with a connection open across the rotation keeps working.
    let pooled = registry_client().build().unwrap();
    assert!(pooled
        .get(&https)
        .send()
        .await
        .unwrap()
        .status()
        .is_success());

    // Renewal (same CA, new key): new connections get the new certificate.
    tcr_tests::harness::certs(&certs, &["127.0.0.1"]);
    let after = der_of(&certs.join("127.0.0.1.crt"));
    assert_ne!(before, after);
    wait_for(
        "the registry port to serve the renewed certificate",
        Duration::from_secs(15),
        || async { served_certificate(registry_client(), &https).await == Some(after.clone()) },
    )
    .await;
    wait_for(
        "the RPC port to serve the renewed certificate",
        Duration::from_secs(15),
        || async { served_certificate(peer_client(), &rpc).await == Some(after.clone()) },
    )
    .await;
    assert!(pooled
        .get(&https)
        .send()
        .await
        .unwrap()
        .status()
        .is_success());

    // A broken file is refused with a warning; the last good pair stays.
    let cert_file = certs.join("127.0.0.1.crt");
    std::fs::write(&cert_file, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    wait_for(
        "a warning about the broken certificate",
        Duration::from_secs(15),
        || async {
            // Handshakes are what look at the files.
            let _ = served_certificate(registry_client(), &https).await;
            node.log().contains("keeping the previous ones")
        },
    )
    .await;
    assert_eq!(
        served_certificate(registry_client(), &https).await,
        Some(after.clone())
    );
    assert_eq!(served_certificate(peer_client(), &rpc).await, Some(after));
}

/// Random payloads and payloads whose lengths lie, to every method of a
/// running node: each gets InvalidArgument (or, for the rare random bytes
/// that happen to decode, an answer), never a crash, a hang or a change.
#[tokio::test]
async fn hostile_payloads_to_every_rpc_method_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    node.create_namespace("acme", "private").await;
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let base = format!("http://{}", node.rpc());
    // bincode varint: 0xfd then eight bytes is a u64; these claim 2^62
    // and 2^64-1 bytes of string, sequence or map.
    let lying: Vec<Vec<u8>> = vec![
        vec![0x01, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0x40],
        vec![0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        vec![
            0x05, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ],
        [vec![0x00; 4], vec![0xfd, 0, 0, 0, 0, 0, 0, 0, 0x40]].concat(),
        grpc::member_request(7, "127.0.0.1:1", "127.0.0.1:2")[..10].to_vec(),
    ];
    let seed: u64 = rand::rng().random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for method in METHODS {
        let mut payloads = lying.clone();
        for _ in 0..40 {
            let len = rng.random_range(1..300);
            payloads.push((0..len).map(|_| rng.random()).collect());
        }
        for p in &payloads {
            let r = grpc::call(&h2c, &base, method, p)
                .await
                .unwrap_or_else(|e| panic!("{method} {p:02x?} (seed {seed}): no answer: {e}"));
            assert_eq!(r.http, 200, "{method}: {r:?}");
            if lying.contains(p) || method.ends_with("ReadIndex") || method.ends_with("Elect") {
                assert_eq!(
                    r.grpc_status.as_deref(),
                    Some("3"),
                    "{method} {p:02x?} (seed {seed}): {r:?}"
                );
            } else {
                assert!(
                    matches!(r.grpc_status.as_deref(), Some("3") | None),
                    "{method} {p:02x?} (seed {seed}): {r:?}"
                );
            }
        }
    }
    // The storage report takes no input: whatever bytes come with it, the
    // answer is a refusal or the report, never a crash or a hang.
    let report = "/tcr.blobs.v1.BlobService/Report";
    let mut payloads = lying.clone();
    for _ in 0..40 {
        let len = rng.random_range(1..300);
        payloads.push((0..len).map(|_| rng.random()).collect());
    }
    for p in &payloads {
        let r = grpc::call(&h2c, &base, report, p)
            .await
            .unwrap_or_else(|e| panic!("{report} {p:02x?} (seed {seed}): no answer: {e}"));
        assert_eq!(r.http, 200, "{report}: {r:?}");
        assert!(
            r.grpc_status.as_deref() != Some("0") || r.body.len() > 5,
            "{report} {p:02x?} (seed {seed}): {r:?}"
        );
    }

    // Over the message cap: refused before it is decoded.
    let big = vec![0u8; 30 << 20];
    let r = grpc::call(&h2c, &base, "/tcr.raft.v1.ClusterService/Write", &big)
        .await
        .unwrap();
    assert!(
        matches!(r.grpc_status.as_deref(), Some(s) if s != "0"),
        "{r:?}"
    );

    // The node serves, and nothing changed: one member, one namespace.
    let s = cluster_status(&node).await;
    assert_eq!(s["members"].as_array().unwrap().len(), 1, "{s}");
    let ns: Value = node
        .client()
        .get(format!("{}/v1/container-registries/namespaces", node.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ns["namespaces"].as_array().map(Vec::len), Some(1), "{ns}");
    let img = Image::new("after-hostile", "amd64");
    let oci = Oci::new(&node.url());
    oci.push_blob("acme/app", &img.layer).await;
    oci.push_blob("acme/app", &img.config).await;
    let put = oci
        .put_manifest("acme/app", "v1", OCI_MANIFEST, &img.manifest)
        .await;
    assert_eq!(put.status(), 201);
}

#[tokio::test]
async fn join_and_assign_only_for_the_address_the_certificate_names() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(&dir.path().join("certs"), &["127.0.0.1", "127.0.0.2"]);
    let args = peer_tls_args(&certs, "127.0.0.1");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = Node::start_with(&dir.path().join("n"), &[], &args).await;
    let base = format!("https://{}", node.rpc());
    // A member's certificate, but for 127.0.0.2: it may not speak for
    // 127.0.0.1 (which would remove the node there).
    let other = client_with_cert(&certs, "127.0.0.2", &certs)
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let victim = grpc::member_request(5, &node.rpc(), &node.host());
    for method in ["Join", "Assign"] {
        let r = grpc::call(
            &other,
            &base,
            &format!("/tcr.raft.v1.ClusterService/{method}"),
            &victim,
        )
        .await
        .unwrap();
        assert_eq!(r.grpc_status.as_deref(), Some("7"), "{method}: {r:?}");
        assert!(r.message.unwrap_or_default().contains("127.0.0.1"));
    }
    // For its own address it is answered (an id is assigned).
    let own = grpc::member_request(5, "127.0.0.2:9", "127.0.0.2:8");
    let r = grpc::call(&other, &base, "/tcr.raft.v1.ClusterService/Assign", &own)
        .await
        .unwrap();
    assert_eq!(r.grpc_status, None, "{r:?}");
    assert!(r.body.len() > 5, "{r:?}");
    // The node is still the only member.
    let s = cluster_status(&node).await;
    assert_eq!(s["members"].as_array().unwrap().len(), 1, "{s}");
}

#[tokio::test]
async fn a_non_loopback_rpc_address_needs_peer_tls_or_insecure_peers() {
    let dir = tempfile::tempdir().unwrap();
    let rpc = format!("0.0.0.0:{}", free_port());
    let out = Command::new(bin("tcr-node"))
        .args(["--data-dir", dir.path().join("a").to_str().unwrap()])
        .args(["--http-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--rpc-addr", &rpc])
        .env("TCR_ADMIN_TOKEN", "a-token")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to serve node-to-node RPC"), "{err}");
    assert!(err.contains("--insecure-peers"), "{err}");

    // A registry certificate alone is not peer TLS.
    let certs = certs(&dir.path().join("certs"), &["127.0.0.1"]);
    let tls = registry_tls_args(&certs, "127.0.0.1");
    let out = Command::new(bin("tcr-node"))
        .args(["--data-dir", dir.path().join("b").to_str().unwrap()])
        .args(["--http-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--rpc-addr", &rpc])
        .args(&tls)
        .env("TCR_ADMIN_TOKEN", "a-token")
        .output()
        .unwrap();
    assert!(!out.status.success());

    let node = Node::start_with(
        &dir.path().join("c"),
        &[("TCR_ADMIN_TOKEN", "a-token")],
        &["--rpc-addr", &rpc, "--insecure-peers"],
    )
    .await;
    assert!(node.log().contains("--insecure-peers"));
}
