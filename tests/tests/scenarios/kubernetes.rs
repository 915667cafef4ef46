//! The Kubernetes deployment: the rendered manifests validate against the
//! Kubernetes schemas, and Docker stands in for the cluster: the containers'
//! command line, environment, host names, user, read-only root and mounts
//! are taken from the rendered StatefulSet (not copied from it), three
//! replicas bootstrap from their ordinals, take a docker push through one
//! of them, and roll (SIGTERM, wait ready, one at a time, highest ordinal
//! first) while a client pulls in a loop without a single failed pull,
//! scale 3 -> 5 -> 3, and take back a pod whose volume was deleted.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tcr_tests::harness::{run, wait_for};
use tcr_tests::images::tar;

/// The CA of the pods' certificates (set once the test made them).
static CA: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

/// A client that trusts the pods' CA only.
fn https() -> reqwest::ClientBuilder {
    let ca = reqwest::Certificate::from_pem(CA.get().expect("certificates made")).unwrap();
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
}

fn repo_root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `kubectl kustomize <dir>`, as YAML and as JSON documents.
fn render(dir: &str) -> (String, Vec<Value>) {
    let yaml = run(
        "kubectl",
        &["kustomize", repo_root().join(dir).to_str().unwrap()],
    );
    let mut py = Command::new("python3")
        .args([
            "-c",
            "import sys, yaml, json; print(json.dumps(list(yaml.safe_load_all(sys.stdin))))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    py.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(out.status.success());
    (yaml, serde_json::from_slice(&out.stdout).unwrap())
}

fn validate(yaml: &str) -> std::process::Output {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), yaml).unwrap();
    Command::new("kubernetes-validate")
        .args(["--strict", f.path().to_str().unwrap()])
        .output()
        .expect("kubernetes-validate (scripts/setup installs it)")
}

#[test]
fn the_manifests_render_and_validate_against_the_kubernetes_schemas() {
    for dir in ["deploy/kubernetes", "deploy/overlays/production-region"] {
        let (yaml, docs) = render(dir);
        let out = validate(&yaml);
        assert!(
            out.status.success(),
            "{dir}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        for k in [
            "StatefulSet",
            "Service",
            "PodDisruptionBudget",
            "ConfigMap",
            "NetworkPolicy",
        ] {
            assert!(kinds.contains(&k), "{dir}: no {k} in {kinds:?}");
        }
        rpc_port_admits_only_the_nodes(dir, &docs);
    }
    // The validator does refuse a broken manifest.
    let (yaml, _) = render("deploy/kubernetes");
    let broken = yaml.replace("replicas: 3", "replicas: three");
    assert_ne!(broken, yaml);
    assert!(!validate(&broken).status.success());
}

/// The cert-manager overlay issues every Secret the pods mount for TLS,
/// and the peer certificate names every pod's advertised host.
#[test]
fn the_cert_manager_overlay_issues_what_the_pods_mount() {
    let (_, docs) = render("deploy/overlays/cert-manager");
    let sts = docs.iter().find(|d| d["kind"] == "StatefulSet").unwrap();
    let pod = &sts["spec"]["template"]["spec"];
    let service = sts["spec"]["serviceName"].as_str().unwrap();
    let certs: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Certificate").collect();
    let issued: Vec<&str> = certs
        .iter()
        .filter_map(|c| c["spec"]["secretName"].as_str())
        .collect();
    let args: Vec<&str> = pod["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    let mounts = pod["containers"][0]["volumeMounts"].as_array().unwrap();
    for flag in ["--tls-cert-file=", "--peer-cert-file=", "--peer-ca-file="] {
        let path = args.iter().find_map(|a| a.strip_prefix(flag)).unwrap();
        let mount = mounts
            .iter()
            .find(|m| path.starts_with(m["mountPath"].as_str().unwrap()))
            .unwrap_or_else(|| panic!("{flag}{path} is on no volume"));
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        let secret = volume["secret"]["secretName"].as_str().unwrap();
        assert!(
            issued.contains(&secret),
            "{flag}: {secret} not in {issued:?}"
        );
        if flag == "--peer-cert-file=" {
            let cert = certs
                .iter()
                .find(|c| c["spec"]["secretName"] == secret)
                .unwrap();
            let names: Vec<&str> = cert["spec"]["dnsNames"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|n| n.as_str())
                .collect();
            for i in 0..7 {
                let host = format!("tcr-{i}.{service}");
                assert!(names.contains(&host.as_str()), "{host} not in {names:?}");
            }
            let usages = cert["spec"]["usages"].to_string();
            assert!(usages.contains("client auth") && usages.contains("server auth"));
        }
    }
}

/// The NetworkPolicy selects the StatefulSet's pods, and its only rule
/// naming the RPC port admits the same pods and nobody else.
fn rpc_port_admits_only_the_nodes(dir: &str, docs: &[Value]) {
    let sts = docs.iter().find(|d| d["kind"] == "StatefulSet").unwrap();
    let policy = docs.iter().find(|d| d["kind"] == "NetworkPolicy").unwrap();
    let pod_labels = sts["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .unwrap();
    let selects_the_pods = |selector: &Value| {
        selector["matchLabels"].as_object().is_some_and(|wanted| {
            !wanted.is_empty() && wanted.iter().all(|(k, v)| pod_labels.get(k) == Some(v))
        })
    };
    assert!(
        selects_the_pods(&policy["spec"]["podSelector"]),
        "{dir}: the policy does not select the tcr pods"
    );
    let rules = policy["spec"]["ingress"].as_array().unwrap();
    // A rule without a port list admits every port.
    let names_port = |rule: &Value, port: &str| match rule["ports"].as_array() {
        Some(ports) => ports.iter().any(|p| p["port"] == port),
        None => true,
    };
    let rpc: Vec<&Value> = rules.iter().filter(|r| names_port(r, "rpc")).collect();
    assert!(!rpc.is_empty(), "{dir}: no rule admits the RPC port");
    for rule in rpc {
        let from = rule["from"]
            .as_array()
            .expect("an RPC rule names its peers");
        assert!(
            !from.is_empty() && from.iter().all(|f| selects_the_pods(&f["podSelector"])),
            "{dir}: the RPC port is open beyond the tcr pods: {rule}"
        );
    }
    assert!(
        rules
            .iter()
            .any(|r| names_port(r, "http") && r["from"].is_null()),
        "{dir}: the HTTP port is not open to clients"
    );
}

/// What a pod of the StatefulSet runs, read off the rendered manifests.
struct PodSpec {
    service: String,
    command: Vec<String>,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    user: String,
    read_only: bool,
    data_mount: String,
    /// (volume name, mount path) of each Secret the pod mounts.
    secrets: Vec<(String, String)>,
    /// The admin token's file, from --admin-token-file.
    admin_token_file: String,
    http_port: u16,
    ready_path: String,
    grace_secs: u64,
}

fn pod_spec(docs: &[Value]) -> PodSpec {
    let sts = docs.iter().find(|d| d["kind"] == "StatefulSet").unwrap();
    let config = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    let pod = &sts["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let mut env = BTreeMap::new();
    for from in c["envFrom"].as_array().into_iter().flatten() {
        assert_eq!(from["configMapRef"]["name"], config["metadata"]["name"]);
        for (k, v) in config["data"].as_object().unwrap() {
            env.insert(k.clone(), v.as_str().unwrap().to_string());
        }
    }
    for e in c["env"].as_array().into_iter().flatten() {
        let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("metadata.name") => "$(POD_NAME)".to_string(),
            _ => e["value"].as_str().unwrap().to_string(),
        };
        env.insert(e["name"].as_str().unwrap().to_string(), value);
    }
    let mount = |volume: &str| -> String {
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == volume)
            .unwrap()["mountPath"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let secrets = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["secret"].is_object())
        .map(|v| {
            let name = v["name"].as_str().unwrap();
            (name.to_string(), mount(name))
        })
        .collect();
    let admin_token_file = strings(&c["args"])
        .iter()
        .find_map(|a| a.strip_prefix("--admin-token-file="))
        .unwrap()
        .to_string();
    PodSpec {
        service: sts["spec"]["serviceName"].as_str().unwrap().to_string(),
        command: strings(&c["command"]),
        args: strings(&c["args"]),
        env,
        user: format!(
            "{}:{}",
            pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]
        ),
        read_only: c["securityContext"]["readOnlyRootFilesystem"] == true,
        data_mount: mount(
            sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
                .as_str()
                .unwrap(),
        ),
        secrets,
        admin_token_file,
        http_port: c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "http")
            .unwrap()["containerPort"]
            .as_u64()
            .unwrap() as u16,
        ready_path: c["readinessProbe"]["httpGet"]["path"]
            .as_str()
            .unwrap()
            .to_string(),
        grace_secs: pod["terminationGracePeriodSeconds"].as_u64().unwrap(),
    }
}

/// Containers, volumes and the network of one test, removed on drop.
struct Pods {
    spec: PodSpec,
    tag: String,
    image: String,
    network: String,
    /// Host directory standing in for each Secret volume, by mount path.
    secret_dirs: Vec<(tempfile::TempDir, String)>,
    /// Host port of each started pod's HTTP port.
    ports: Mutex<BTreeMap<usize, u16>>,
}

impl Pods {
    fn name(&self, ordinal: usize) -> String {
        format!("tcr-{ordinal}-{}", self.tag)
    }

    /// `docker run` the pod as the kubelet would: host name `tcr-<n>`, DNS
    /// name `tcr-<n>.<service>`, `$(POD_NAME)` expanded, its own volume.
    fn start(&self, ordinal: usize) {
        let pod = format!("tcr-{ordinal}");
        let s = &self.spec;
        let expand = |v: &str| v.replace("$(POD_NAME)", &pod);
        let mut cmd: Vec<String> = [
            "run",
            "-d",
            "--name",
            &self.name(ordinal),
            "--hostname",
            &pod,
            "--network",
            &self.network,
            "--network-alias",
            &format!("{pod}.{}", s.service),
            "--user",
            &s.user,
            "-p",
            &format!("127.0.0.1:{}:{}", self.port(ordinal), s.http_port),
            "-v",
            &format!("{}-{ordinal}:{}", self.tag, s.data_mount),
            "--stop-timeout",
            &s.grace_secs.to_string(),
        ]
        .map(String::from)
        .to_vec();
        if s.read_only {
            cmd.push("--read-only".into());
        }
        for (dir, mount) in &self.secret_dirs {
            cmd.extend(["-v".into(), format!("{}:{mount}:ro", dir.path().display())]);
        }
        for (k, v) in &s.env {
            cmd.extend(["-e".into(), format!("{k}={}", expand(v))]);
        }
        cmd.extend([
            "--entrypoint".into(),
            s.command[0].clone(),
            self.image.clone(),
        ]);
        cmd.extend(s.command[1..].iter().cloned());
        cmd.extend(s.args.iter().map(|a| expand(a)));
        let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        run("docker", &args);
        self.learn_port(ordinal);
    }

    /// The host port pod `ordinal`'s HTTP port is published on: chosen at
    /// its first start, kept across restarts (the public URL names pod 0's).
    fn port(&self, ordinal: usize) -> u16 {
        *self
            .ports
            .lock()
            .unwrap()
            .entry(ordinal)
            .or_insert_with(tcr_tests::harness::free_port)
    }

    fn learn_port(&self, ordinal: usize) {
        let out = run(
            "docker",
            &[
                "port",
                &self.name(ordinal),
                &format!("{}/tcp", self.spec.http_port),
            ],
        );
        let port: u16 = out
            .trim()
            .lines()
            .next()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        self.ports.lock().unwrap().insert(ordinal, port);
    }

    fn url(&self, ordinal: usize) -> String {
        format!("https://127.0.0.1:{}", self.ports.lock().unwrap()[&ordinal])
    }

    /// The readiness probe, with the manifest's path and a 1 s timeout.
    async fn ready(&self, ordinal: usize) -> bool {
        let url = format!("{}{}", self.url(ordinal), self.spec.ready_path);
        let c = https().timeout(Duration::from_secs(1)).build().unwrap();
        c.get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    async fn wait_ready(&self, ordinal: usize) {
        wait_for(
            &format!("pod {ordinal} ready"),
            Duration::from_secs(90),
            || async { self.ready(ordinal).await },
        )
        .await;
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        // A failed test shows what each pod logged last.
        if std::thread::panicking() {
            for i in 0..6 {
                if let Ok(out) = Command::new("docker")
                    .args(["logs", "--tail", "40", &self.name(i)])
                    .output()
                {
                    eprintln!(
                        "--- pod {i}:\n{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
        for i in 0..6 {
            let _ = Command::new("docker")
                .args(["rm", "-f", &self.name(i)])
                .output();
            let _ = Command::new("docker")
                .args(["volume", "rm", &format!("{}-{i}", self.tag)])
                .output();
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &self.network])
            .output();
    }
}

async fn voters(url: &str, token: &str) -> usize {
    voter_ids(url, token).await.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statefulset_bootstraps_rolls_without_a_failed_pull_and_scales() {
    let tag = format!("tcrk8s{}", std::process::id());
    let image = format!("tcr:{tag}");
    // The binaries the other tests run, packed as they are: no cargo build
    // here, which would re-link them under the feet of tests starting them.
    let bins = tcr_tests::harness::bin("tcr-node");
    let bins = bins.parent().unwrap().to_str().unwrap();
    let build = Command::new(repo_root().join("scripts/build-image"))
        .args(["--bin-dir", bins, "--tag", &image])
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let (pods, replicas, token) = three_pods_ready_in_order(&tag, &image).await;
    a_docker_push_through_one_node(&pods, &token, &tag).await;
    a_rolling_restart_fails_no_pull(&pods, &token, replicas).await;
    scale_to_five_and_back_to_three(&pods, &token).await;
    let c = https().build().unwrap();
    // tcr-2 loses its volume: it comes back with an empty one, is given a
    // new id (its old one, 3, is removed first) and rejoins as a new member.
    lose_volume(&pods, &token, 2, 3, 1003).await;
    pull(&c, &pods.url(2), &token)
        .await
        .unwrap_or_else(|e| panic!("pull through the rejoined pod: {e}"));
    // The same for tcr-0, which on an empty volume would otherwise
    // initialise a cluster of its own: it finds its peers and rejoins.
    lose_volume(&pods, &token, 0, 1, 1001).await;
    for i in 0..3 {
        let ids = voter_ids(&pods.url(i), &token).await;
        assert_eq!(ids.len(), 3, "pod {i} sees {ids:?}: one cluster, not two");
        pull(&c, &pods.url(i), &token)
            .await
            .unwrap_or_else(|e| panic!("pull through pod {i}: {e}"));
    }
    run("docker", &["rmi", "-f", &image]);
}

/// The pods of the rendered StatefulSet, started one by one (OrderedReady)
/// into a cluster of three voters; returns them, the replica count and the
/// admin token.
async fn three_pods_ready_in_order(tag: &str, image: &str) -> (Arc<Pods>, usize, String) {
    let (_, docs) = render("deploy/kubernetes");
    let spec = pod_spec(&docs);
    let replicas = docs.iter().find(|d| d["kind"] == "StatefulSet").unwrap()["spec"]["replicas"]
        .as_u64()
        .unwrap() as usize;
    assert_eq!(replicas, 3);
    let mut spec = spec;
    let token = format!("k8s-admin-{}", rand::random::<u64>());
    // The TLS Secrets' contents, as `tcr certs init` makes them: one CA, a
    // certificate naming every pod's peer name, the client Service, and
    // 127.0.0.1 (the test's port mappings, and tcr run inside a pod).
    let certs_dir = tempfile::tempdir().unwrap();
    let mut names = vec!["tcr".to_string(), "localhost".into(), "127.0.0.1".into()];
    names.extend((0..7).map(|i| format!("tcr-{i}.{}", spec.service)));
    tcr_tests::harness::certs(certs_dir.path(), &[&format!("tls={}", names.join("+"))]);
    CA.set(std::fs::read(certs_dir.path().join("ca.crt")).unwrap())
        .unwrap();
    let mut secret_dirs = vec![];
    for (_, mount) in &spec.secrets {
        let d = tempfile::tempdir().unwrap();
        let admin = Path::new(&spec.admin_token_file);
        if admin.parent() == Some(Path::new(mount)) {
            std::fs::write(d.path().join(admin.file_name().unwrap()), &token).unwrap();
        } else {
            // A TLS Secret: the keys cert-manager writes.
            for f in ["tls.crt", "tls.key", "ca.crt"] {
                std::fs::copy(certs_dir.path().join(f), d.path().join(f)).unwrap();
            }
        }
        // As the kubelet does with fsGroup and defaultMode 0400.
        run("chown", &["-R", "10001:10001", d.path().to_str().unwrap()]);
        for f in std::fs::read_dir(d.path()).unwrap() {
            run("chmod", &["0400", f.unwrap().path().to_str().unwrap()]);
        }
        run("chmod", &["0755", d.path().to_str().unwrap()]);
        secret_dirs.push((d, mount.clone()));
    }
    // As an overlay sets it to the name clients use: here pod 0's port.
    let pods_ports = Mutex::new(BTreeMap::new());
    let port0 = tcr_tests::harness::free_port();
    pods_ports.lock().unwrap().insert(0, port0);
    spec.env.insert(
        "TCR_PUBLIC_URL".into(),
        format!("https://127.0.0.1:{port0}"),
    );
    run("docker", &["network", "create", tag]);
    let pods = Arc::new(Pods {
        spec,
        tag: tag.to_string(),
        image: image.to_string(),
        network: tag.to_string(),
        secret_dirs,
        ports: pods_ports,
    });

    // OrderedReady: each pod starts once the one before it is ready.
    for i in 0..replicas {
        pods.start(i);
        pods.wait_ready(i).await;
    }
    wait_for("three voters", Duration::from_secs(60), || async {
        voters(&pods.url(0), &token).await == 3
    })
    .await;
    (pods, replicas, token)
}

async fn a_docker_push_through_one_node(pods: &Pods, token: &str, tag: &str) {
    // A docker push through one node.
    let c = https().build().unwrap();
    let r = c
        .post(format!(
            "{}/v1/container-registries/namespaces",
            pods.url(1)
        ))
        .bearer_auth(token)
        .json(&serde_json::json!({"name": "acme", "visibility": "private"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let host = pods.url(0).trim_start_matches("https://").to_string();
    let img = format!("{host}/acme/app:v1");
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs.tar");
    std::fs::write(&rootfs, tar(&[("hello.txt", tag.as_bytes())])).unwrap();
    run("docker", &["import", rootfs.to_str().unwrap(), &img]);
    run("docker", &["login", "-u", "admin", "-p", token, &host]);
    run("docker", &["push", &img]);
    run("docker", &["rmi", &img]);
    run("docker", &["logout", &host]);
}

async fn a_rolling_restart_fails_no_pull(pods: &Arc<Pods>, token: &str, replicas: usize) {
    // A client pulls in a loop through the ready pods, as through the
    // client Service: a prober keeps the endpoints, like kube-proxy.
    let endpoints: Arc<Mutex<Vec<usize>>> = Arc::new(Mutex::new((0..replicas).collect()));
    let stop = Arc::new(AtomicBool::new(false));
    let (pulls, failures) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let prober = {
        let (pods, endpoints, stop) = (pods.clone(), endpoints.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let probes = (0..replicas).map(|i| {
                    let pods = pods.clone();
                    async move { (i, pods.ready(i).await) }
                });
                let ready = futures::future::join_all(probes)
                    .await
                    .into_iter()
                    .filter(|(_, ok)| *ok)
                    .map(|(i, _)| i)
                    .collect();
                *endpoints.lock().unwrap() = ready;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let puller = {
        let (pods, endpoints, stop, pulls, failures, token) = (
            pods.clone(),
            endpoints.clone(),
            stop.clone(),
            pulls.clone(),
            failures.clone(),
            token.to_string(),
        );
        tokio::spawn(async move {
            // No connection reuse: a pooled connection to a pod that went
            // away would be a failure of the test's client, not of tcr.
            let c = https()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let eps = endpoints.lock().unwrap().clone();
                if eps.is_empty() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                let pod = eps[n % eps.len()];
                n += 1;
                match pull(&c, &pods.url(pod), &token).await {
                    Ok(()) => {
                        pulls.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.lock().unwrap().push(format!("pod {pod}: {e}")),
                }
            }
        })
    };

    // The rolling restart: highest ordinal first, SIGTERM, back, ready.
    for i in (0..replicas).rev() {
        let before = pulls.load(Ordering::Relaxed);
        // Off the runtime's threads: the prober and the puller go on meanwhile.
        let name = pods.name(i);
        tokio::task::spawn_blocking(move || {
            run("docker", &["stop", &name]);
            run("docker", &["start", &name]);
        })
        .await
        .unwrap();
        pods.learn_port(i);
        pods.wait_ready(i).await;
        wait_for(
            "three voters after the restart",
            Duration::from_secs(60),
            || async { voters(&pods.url(i), token).await == 3 },
        )
        .await;
        wait_for("pulls going on", Duration::from_secs(30), || async {
            pulls.load(Ordering::Relaxed) > before + 5
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    puller.await.unwrap();
    prober.await.unwrap();
    let failures = failures.lock().unwrap().clone();
    assert_eq!(
        failures,
        Vec::<String>::new(),
        "failed pulls during the roll"
    );
    assert!(pulls.load(Ordering::Relaxed) > 20);
}

async fn scale_to_five_and_back_to_three(pods: &Pods, token: &str) {
    // Scale 3 -> 5: the new pods join through tcr-0 by themselves.
    for i in 3..5 {
        pods.start(i);
        pods.wait_ready(i).await;
    }
    wait_for("five voters", Duration::from_secs(90), || async {
        voters(&pods.url(0), token).await == 5
    })
    .await;
    // And back to 3: drain each leaving pod (`tcr members remove --drain`:
    // out of the membership, its blobs copied to the remaining owners),
    // then stop it, as the scale-down runbook says.
    let c = https().build().unwrap();
    for i in (3..5).rev() {
        let id = (i + 1).to_string();
        let out = tcr_in_pod(
            pods,
            token,
            &[
                "members",
                "remove",
                "--id",
                &id,
                "--drain",
                "--drain-timeout",
                "120s",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        run("docker", &["rm", "-f", &pods.name(i)]);
    }
    wait_for("three voters again", Duration::from_secs(60), || async {
        voters(&pods.url(0), token).await == 3
    })
    .await;
    // Data intact: the image pulls whole through every remaining pod.
    for i in 0..3 {
        pull(&c, &pods.url(i), token)
            .await
            .unwrap_or_else(|e| panic!("pull through pod {i} after scaling down: {e}"));
    }
    // Fewer voters than an explicit replication factor is refused.
    let out = tcr_in_pod(pods, token, &["cluster", "set", "replication-factor", "3"]);
    assert!(out.status.success());
    let out = tcr_in_pod(pods, token, &["members", "remove", "--id", "3"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("fewer than the replication factor"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Delete pod `ordinal` with its volume and start it again on a new one:
/// it must come back as voter `new_id`, with `old_id` gone.
async fn lose_volume(pods: &Pods, token: &str, ordinal: usize, old_id: u64, new_id: u64) {
    run("docker", &["rm", "-f", &pods.name(ordinal)]);
    run(
        "docker",
        &["volume", "rm", &format!("{}-{ordinal}", pods.tag)],
    );
    pods.start(ordinal);
    pods.wait_ready(ordinal).await;
    let observer = pods.url((ordinal + 1) % 3);
    wait_for(
        &format!("tcr-{ordinal} back as voter {new_id}"),
        Duration::from_secs(90),
        || async {
            let ids = voter_ids(&observer, token).await;
            ids.len() == 3 && !ids.contains(&old_id) && ids.contains(&new_id)
        },
    )
    .await;
}

async fn voter_ids(url: &str, token: &str) -> Vec<u64> {
    let Ok(r) = https()
        .build()
        .unwrap()
        .get(format!("{url}/v1/container-registries/cluster"))
        .bearer_auth(token)
        .send()
        .await
    else {
        return Vec::new();
    };
    let s: Value = r.json().await.unwrap_or_default();
    s["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "voter")
        .filter_map(|m| m["id"].as_u64())
        .collect()
}

/// `tcr` inside pod 0, as an operator runs it with `kubectl exec` (member
/// addresses resolve only inside the cluster's network).
fn tcr_in_pod(pods: &Pods, token: &str, args: &[&str]) -> std::process::Output {
    let tls = pods
        .spec
        .args
        .iter()
        .find_map(|a| a.strip_prefix("--tls-cert-file="))
        .map(|p| Path::new(p).with_file_name("ca.crt"))
        .unwrap();
    Command::new("docker")
        .args(["exec", &pods.name(0), "/usr/local/bin/tcr"])
        .args(["--endpoint", "https://127.0.0.1:5000", "--token", token])
        .arg("--cacert")
        .arg(tls)
        .args(args)
        .output()
        .unwrap()
}

/// One whole pull: the manifest by tag, then every blob it references.
async fn pull(c: &reqwest::Client, base: &str, token: &str) -> Result<(), String> {
    let r = c
        .get(format!("{base}/v2/acme/app/manifests/v1"))
        .bearer_auth(token)
        .header(
            "accept",
            "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json",
        )
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    if !r.status().is_success() {
        return Err(format!("manifest: {}", r.status()));
    }
    let m: Value = r.json().await.map_err(|e| format!("{e:?}"))?;
    let mut digests = vec![m["config"]["digest"].as_str().unwrap_or("").to_string()];
    for l in m["layers"].as_array().into_iter().flatten() {
        digests.push(l["digest"].as_str().unwrap_or("").to_string());
    }
    for d in digests {
        let r = c
            .get(format!("{base}/v2/acme/app/blobs/{d}"))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        if !r.status().is_success() {
            return Err(format!("blob {d}: {}", r.status()));
        }
        r.bytes().await.map_err(|e| format!("{e:?}"))?;
    }
    Ok(())
}
