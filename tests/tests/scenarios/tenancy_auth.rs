//! Tenancy and access on a three-node cluster with an admin token:
//! organisations, projects, public and private namespaces, scoped robot
//! credentials, the Docker token flow, revocation, key rotation and token
//! forgery. Every request goes to real `tcr-node` processes, spread over
//! the nodes.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{json, Value};
use tcr_tests::harness::{cluster, tcr, tcr_json, wait_for, Node};
use tcr_tests::images::{digest, Image, OCI_MANIFEST};

const OPERATOR: &str = "operator-token";
const LIFETIME: &str = "3";

/// A namespace of the fixture.
struct Ns {
    name: &'static str,
    org: &'static str,
    project: Option<&'static str>,
    public: bool,
}

const NAMESPACES: [Ns; 5] = [
    Ns {
        name: "acme-pub",
        org: "acme",
        project: None,
        public: true,
    },
    Ns {
        name: "acme-priv",
        org: "acme",
        project: None,
        public: false,
    },
    Ns {
        name: "acme-web",
        org: "acme",
        project: Some("web"),
        public: false,
    },
    Ns {
        name: "globex-priv",
        org: "globex",
        project: None,
        public: false,
    },
    Ns {
        name: "initech-pub",
        org: "initech",
        project: None,
        public: true,
    },
];

/// Organisations whose containerRegistry gate is on.
const ENABLED: [&str; 2] = ["acme", "globex"];

/// Who calls: the operator, anonymous, or a credential.
struct Who {
    name: &'static str,
    org: Option<&'static str>,
    project: Option<&'static str>,
    scopes: &'static [&'static str],
    /// Expired or revoked before the matrix runs.
    dead: bool,
    secret: Option<String>,
}

fn fixture_credentials() -> Vec<Who> {
    let c = |name, org, project, scopes, dead| Who {
        name,
        org: Some(org),
        project,
        scopes,
        dead,
        secret: None,
    };
    vec![
        c("acme-admin", "acme", None, &["*:admin"], false),
        c("acme-push", "acme", None, &["acme-priv:pull,push"], false),
        // acme-web is project-scoped: an organisation-wide credential never
        // sees it, whatever its scopes say.
        c(
            "acme-pull",
            "acme",
            None,
            &["acme-priv:pull", "acme-web:pull,push"],
            false,
        ),
        c("acme-del", "acme", None, &["acme-priv:pull,delete"], false),
        c("web-bot", "acme", Some("web"), &["*:pull,push"], false),
        c("globex-all", "globex", None, &["*:pull,push,delete"], false),
        c(
            "initech-all",
            "initech",
            None,
            &["*:pull,push,delete"],
            false,
        ),
        c("acme-expired", "acme", None, &["acme-priv:pull,push"], true),
        c("acme-revoked", "acme", None, &["acme-priv:pull,push"], true),
    ]
}

/// The access model, written from the rules (not from the code).
fn expected(who: &Who, ns: &Ns, action: &str) -> bool {
    if who.name == "operator" {
        return true;
    }
    if !ENABLED.contains(&ns.org) || who.dead {
        return false;
    }
    if who.org.is_some_and(|o| !ENABLED.contains(&o)) {
        return false;
    }
    let action = if action == "list" { "pull" } else { action };
    if action == "pull" && ns.public {
        return true;
    }
    let Some(org) = who.org else {
        return false;
    };
    if org != ns.org || (ns.project.is_some() && who.project != ns.project) {
        return false;
    }
    who.scopes.iter().any(|s| {
        let (n, acts) = s.rsplit_once(':').unwrap();
        (n == "*" || n == ns.name) && acts.split(',').any(|a| a == action || a == "admin")
    })
}

fn op(node: &Node, args: &[&str]) -> Value {
    let mut all = vec!["--token", OPERATOR];
    all.extend_from_slice(args);
    tcr_json(&node.url(), &all)
}

fn basic(req: RequestBuilder, who: &Who) -> RequestBuilder {
    match (&who.secret, who.name) {
        (_, "operator") => req.basic_auth("operator", Some(OPERATOR)),
        (Some(s), _) => req.basic_auth(who.name, Some(s)),
        (None, _) => req,
    }
}

/// A token from `node` for `scope`, or the status the endpoint refused with.
async fn token(c: &Client, node: &Node, who: &Who, scope: &str) -> Result<String, StatusCode> {
    let req = c
        .get(format!("{}/v2/token", node.url()))
        .query(&[("service", "tcr"), ("scope", scope)]);
    let resp = basic(req, who).send().await.unwrap();
    if !resp.status().is_success() {
        return Err(resp.status());
    }
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["token"], v["access_token"]);
    Ok(v["token"].as_str().unwrap().to_string())
}

/// Try `action` on `<ns>/app` through `node`: allowed (2xx) or refused
/// (401/403). Anything else fails the test.
async fn attempt(
    c: &Client,
    node: &Node,
    who: &Who,
    ns: &str,
    action: &str,
    with_token: bool,
    n: usize,
) -> bool {
    let repo = format!("{ns}/app");
    let base = node.url();
    let req = match action {
        "pull" => c.get(format!("{base}/v2/{repo}/manifests/v1")),
        "list" => c.get(format!("{base}/v2/{repo}/tags/list")),
        "push" => {
            let data = format!("cell {n} {} {ns} {with_token}", who.name).into_bytes();
            c.post(format!(
                "{base}/v2/{repo}/blobs/uploads/?digest={}",
                digest(&data)
            ))
            .body(data)
        }
        "delete" => c.delete(format!(
            "{base}/v2/{repo}/manifests/d-{}-{with_token}",
            who.name
        )),
        _ => unreachable!(),
    };
    let req = if with_token {
        let verb = if action == "list" { "pull" } else { action };
        match token(c, node, who, &format!("repository:{repo}:{verb}")).await {
            Ok(t) => req.bearer_auth(t),
            Err(s) => {
                assert!(
                    s == StatusCode::UNAUTHORIZED || s == StatusCode::FORBIDDEN,
                    "token endpoint answered {s} for {}",
                    who.name
                );
                return false;
            }
        }
    } else {
        basic(req, who)
    };
    let resp = req.send().await.unwrap();
    let s = resp.status();
    if s.is_success() {
        return true;
    }
    assert!(
        s == StatusCode::UNAUTHORIZED || s == StatusCode::FORBIDDEN,
        "{} {action} {repo}: unexpected {s}: {}",
        who.name,
        resp.text().await.unwrap_or_default()
    );
    false
}

/// Push the fixture image as `<ns>/app:<tag>` with the operator token.
async fn seed(c: &Client, node: &Node, ns: &str, img: &Image, tags: &[String]) {
    let repo = format!("{ns}/app");
    for blob in [&img.config, &img.layer] {
        let r = c
            .post(format!(
                "{}/v2/{repo}/blobs/uploads/?digest={}",
                node.url(),
                digest(blob)
            ))
            .bearer_auth(OPERATOR)
            .body(blob.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    for tag in tags {
        let r = c
            .put(format!("{}/v2/{repo}/manifests/{tag}", node.url()))
            .bearer_auth(OPERATOR)
            .header("content-type", OCI_MANIFEST)
            .body(img.manifest.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "seed {repo}:{tag}");
    }
}

/// The fixture on `nodes`, made with the `tcr` CLI: organisations,
/// project, namespaces, credentials (secrets filled in), seeded images.
async fn fixture(nodes: &[Node]) -> Vec<Who> {
    let n0 = &nodes[0];
    for org in ["acme", "globex"] {
        op(n0, &["orgs", "create", org, "--enable-registry"]);
    }
    op(n0, &["orgs", "create", "initech"]);
    op(n0, &["projects", "create", "--org", "acme", "web"]);
    for ns in &NAMESPACES {
        let mut args = vec!["namespaces", "create", ns.name, "--org", ns.org];
        args.extend(["--visibility", if ns.public { "public" } else { "private" }]);
        if let Some(p) = ns.project {
            args.extend(["--project", p]);
        }
        let v = op(n0, &args);
        assert_eq!(v["organisation"], ns.org);
    }
    let mut whos = fixture_credentials();
    for (i, who) in whos.iter_mut().enumerate() {
        // Spread the creations over the nodes.
        let node = &nodes[i % nodes.len()];
        let mut args = vec![
            "credentials",
            "create",
            "--org",
            who.org.unwrap(),
            "--name",
            who.name,
        ];
        if let Some(p) = who.project {
            args.extend(["--project", p]);
        }
        for s in who.scopes {
            args.extend(["--scope", s]);
        }
        if who.name == "acme-expired" {
            args.extend(["--expires-in", "1s"]);
        }
        let v = op(node, &args);
        assert_eq!(v["organisation"], who.org.unwrap());
        let secret = v["secret"].as_str().unwrap().to_string();
        assert!(secret.starts_with("tcr_"), "{secret}");
        who.secret = Some(secret);
        if who.name == "acme-revoked" {
            let id = v["id"].as_str().unwrap();
            let out = tcr(
                &node.url(),
                &[
                    "--token",
                    OPERATOR,
                    "credentials",
                    "revoke",
                    "--org",
                    "acme",
                    id,
                ],
            );
            assert!(out.status.success());
        }
    }
    // Secrets are shown once: listings never carry them (nor their hashes).
    let listed = op(n0, &["credentials", "list", "--org", "acme"]);
    let text = listed.to_string();
    for who in &whos {
        assert!(!text.contains(who.secret.as_deref().unwrap()));
    }
    assert!(!text.contains("argon2"), "{text}");
    let img = Image::new("tenancy", "amd64");
    let c = Client::new();
    let mut tags = vec!["v1".to_string()];
    for who in whos.iter().map(|w| w.name).chain(["operator", "anonymous"]) {
        for t in [false, true] {
            tags.push(format!("d-{who}-{t}"));
        }
    }
    for ns in &NAMESPACES {
        seed(&c, n0, ns.name, &img, &tags).await;
    }
    whos
}

fn everyone(creds: Vec<Who>) -> Vec<Who> {
    let mut all = creds;
    for name in ["operator", "anonymous"] {
        all.push(Who {
            name,
            org: None,
            project: None,
            scopes: &[],
            dead: false,
            secret: None,
        });
    }
    all
}

#[tokio::test]
async fn authorisation_matrix_across_three_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(
        dir.path(),
        3,
        &[("TCR_ADMIN_TOKEN", OPERATOR)],
        &["--token-lifetime-secs", LIFETIME],
    )
    .await;
    let whos = everyone(fixture(&nodes).await);
    let c = Client::new();
    // The expired credential's second has passed by the time it is used.
    wait_for(
        "the 1 s credential to expire",
        Duration::from_secs(10),
        || async {
            attempt(&c, &nodes[0], &whos[7], "acme-pub", "pull", false, 0).await
                == expected(&whos[7], &NAMESPACES[0], "pull")
        },
    )
    .await;

    let mut cells = 0;
    let mut wrong = Vec::new();
    for who in &whos {
        for ns in &NAMESPACES {
            for action in ["pull", "list", "push", "delete"] {
                for with_token in [false, true] {
                    let node = &nodes[cells % nodes.len()];
                    cells += 1;
                    let got = attempt(&c, node, who, ns.name, action, with_token, cells).await;
                    if got != expected(who, ns, action) {
                        wrong.push(format!(
                            "{} {action} {} ({}): got {}",
                            who.name,
                            ns.name,
                            if with_token { "token" } else { "basic" },
                            if got { "allowed" } else { "refused" }
                        ));
                    }
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {cells} cells wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert_eq!(cells, whos.len() * NAMESPACES.len() * 8);

    // _catalog and the namespace listing show exactly what each caller may pull.
    for (i, who) in whos.iter().enumerate() {
        let node = &nodes[i % nodes.len()];
        let visible: BTreeSet<String> = NAMESPACES
            .iter()
            .filter(|ns| expected(who, ns, "pull"))
            .map(|ns| ns.name.to_string())
            .collect();
        let resp = basic(c.get(format!("{}/v2/_catalog", node.url())), who)
            .send()
            .await
            .unwrap();
        if who.name == "anonymous" || who.dead {
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{}", who.name);
            continue;
        }
        let v: Value = resp.json().await.unwrap();
        let repos: BTreeSet<String> = v["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().trim_end_matches("/app").to_string())
            .collect();
        assert_eq!(repos, visible, "catalog of {}", who.name);
        let mut req = c.get(format!("{}/v1/container-registries/namespaces", node.url()));
        req = match &who.secret {
            Some(s) => req.bearer_auth(s),
            None => req.bearer_auth(OPERATOR),
        };
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        let listed: BTreeSet<String> = v["namespaces"]
            .as_array()
            .unwrap_or(&vec![])
            .iter()
            .map(|n| n["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(listed, visible, "namespaces listed for {}", who.name);
    }
}

fn who<'a>(whos: &'a [Who], name: &str) -> &'a Who {
    whos.iter().find(|w| w.name == name).unwrap()
}

async fn mgmt(
    c: &Client,
    node: &Node,
    who: &Who,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = c.request(
        method,
        format!("{}/v1/container-registries{path}", node.url()),
    );
    req = match (&who.secret, who.name) {
        (_, "operator") => req.bearer_auth(OPERATOR),
        (Some(s), _) => req.bearer_auth(s),
        _ => req,
    };
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let s = resp.status();
    (s, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn management_calls_visibility_revocation_and_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(
        dir.path(),
        3,
        &[("TCR_ADMIN_TOKEN", OPERATOR)],
        &["--token-lifetime-secs", LIFETIME],
    )
    .await;
    let whos = everyone(fixture(&nodes).await);
    let c = Client::new();
    namespaces_are_created_by_their_organisation_admin(&c, &nodes, &whos).await;
    a_disabled_organisation_is_refused_by_both_apis(&c, &nodes, &whos).await;
    management_calls_answer_by_role(&c, &nodes, &whos).await;
    usage_listings_and_a_new_credential_work_at_once(&c, &nodes, &whos).await;
    visibility_takes_effect_on_every_node(&c, &nodes).await;
    revocation_stops_issued_tokens_on_every_node(&c, &nodes, &whos).await;
    key_rotation_fails_no_pull(&c, &nodes, &whos).await;
    // No secret reached any node's log.
    for n in &nodes {
        let log = n.log();
        for w in &whos {
            if let Some(s) = &w.secret {
                assert!(!log.contains(s.as_str()), "a secret in node log");
            }
        }
        assert!(!log.contains(OPERATOR));
    }
}

async fn namespaces_are_created_by_their_organisation_admin(
    c: &Client,
    nodes: &[Node],
    whos: &[Who],
) {
    use reqwest::Method;
    let admin = who(whos, "acme-admin");
    let pusher = who(whos, "acme-push");
    let globex = who(whos, "globex-all");
    // Management calls, each through another node.
    let create = |name: &str| json!({"name": name, "visibility": "private"});
    let (s, v) = mgmt(
        c,
        &nodes[1],
        admin,
        Method::POST,
        "/namespaces",
        Some(create("acme-new")),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["organisation"], "acme");
    assert_eq!(
        mgmt(
            c,
            &nodes[2],
            pusher,
            Method::POST,
            "/namespaces",
            Some(create("acme-x"))
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    let mut into_acme = create("acme-y");
    into_acme["organisation"] = json!("acme");
    assert_eq!(
        mgmt(
            c,
            &nodes[0],
            globex,
            Method::POST,
            "/namespaces",
            Some(into_acme)
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
}

async fn a_disabled_organisation_is_refused_by_both_apis(c: &Client, nodes: &[Node], whos: &[Who]) {
    use reqwest::Method;
    let initech = who(whos, "initech-all");
    let (s, v) = mgmt(
        c,
        &nodes[1],
        initech,
        Method::GET,
        "/namespaces/initech-pub",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("containerRegistry feature is not enabled"),
        "{v}"
    );
    // ... and so do its registry calls, directly and at the token endpoint.
    let r = c
        .get(format!(
            "{}/v2/initech-pub/app/manifests/v1",
            nodes[2].url()
        ))
        .basic_auth("initech-all", initech.secret.as_deref())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("containerRegistry feature is not enabled for organisation 'initech'"),
        "{body}"
    );
    assert_eq!(
        token(c, &nodes[0], initech, "repository:initech-pub/app:pull").await,
        Err(StatusCode::FORBIDDEN)
    );
}

async fn management_calls_answer_by_role(c: &Client, nodes: &[Node], whos: &[Who]) {
    use reqwest::Method;
    let admin = who(whos, "acme-admin");
    let pusher = who(whos, "acme-push");
    let globex = who(whos, "globex-all");
    let anon = who(whos, "anonymous");
    assert_eq!(
        mgmt(c, &nodes[2], anon, Method::GET, "/namespaces", None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        mgmt(
            c,
            &nodes[0],
            admin,
            Method::GET,
            "/organisations/acme/credentials",
            None
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(
        mgmt(
            c,
            &nodes[1],
            pusher,
            Method::GET,
            "/organisations/acme/credentials",
            None
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        mgmt(
            c,
            &nodes[2],
            globex,
            Method::GET,
            "/organisations/acme/credentials",
            None
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        mgmt(
            c,
            &nodes[0],
            admin,
            Method::POST,
            "/organisations",
            Some(json!({"name": "evil"}))
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        mgmt(c, &nodes[1], admin, Method::GET, "/cluster", None)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        mgmt(c, &nodes[2], admin, Method::POST, "/keys/rotate", None)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        mgmt(
            c,
            &nodes[0],
            pusher,
            Method::PATCH,
            "/namespaces/acme-priv",
            Some(json!({"visibility": "public"}))
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
}

async fn usage_listings_and_a_new_credential_work_at_once(
    c: &Client,
    nodes: &[Node],
    whos: &[Who],
) {
    use reqwest::Method;
    let admin = who(whos, "acme-admin");
    let pusher = who(whos, "acme-push");
    // Usage and listings of a namespace the caller may pull.
    let (s, v) = mgmt(
        c,
        &nodes[1],
        pusher,
        Method::GET,
        "/namespaces/acme-priv/usage",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let img = Image::new("tenancy", "amd64");
    assert_eq!(
        v["bytes"],
        json!(img.config.len() + img.layer.len() + img.manifest.len())
    );
    let (s, v) = mgmt(
        c,
        &nodes[2],
        pusher,
        Method::GET,
        "/repositories/acme-priv%2Fapp/artifacts",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["artifacts"][0]["digest"], img.manifest_digest());
    assert_eq!(
        mgmt(
            c,
            &nodes[0],
            pusher,
            Method::GET,
            "/repositories/globex-priv%2Fapp/tags",
            None
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    // An organisation admin's new credential works at once, on another node.
    let (s, v) = mgmt(
        c,
        &nodes[0],
        admin,
        Method::POST,
        "/organisations/acme/credentials",
        Some(json!({"name": "late", "scopes": [{"namespace": "acme-new", "actions": ["push", "pull"]}]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let late = v["secret"].as_str().unwrap().to_string();
    let data = b"late push".to_vec();
    let r = c
        .post(format!(
            "{}/v2/acme-new/app/blobs/uploads/?digest={}",
            nodes[2].url(),
            digest(&data)
        ))
        .basic_auth("late", Some(&late))
        .body(data)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

async fn visibility_takes_effect_on_every_node(c: &Client, nodes: &[Node]) {
    // Visibility takes effect at once on every node.
    let anon_pull = |node: &Node| {
        c.get(format!("{}/v2/acme-priv/app/manifests/v1", node.url()))
            .send()
    };
    assert_eq!(
        anon_pull(&nodes[2]).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    op(
        &nodes[0],
        &["namespaces", "set-visibility", "acme-priv", "public"],
    );
    assert_eq!(anon_pull(&nodes[2]).await.unwrap().status(), StatusCode::OK);
    op(
        &nodes[1],
        &["namespaces", "set-visibility", "acme-priv", "private"],
    );
    let r = anon_pull(&nodes[2]).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.contains("scope=\"repository:acme-priv/app:pull\""),
        "{challenge}"
    );
    assert!(
        challenge.starts_with(&format!("Bearer realm=\"{}/v2/token\"", nodes[2].url())),
        "{challenge}"
    );
}

async fn revocation_stops_issued_tokens_on_every_node(c: &Client, nodes: &[Node], whos: &[Who]) {
    let pusher = who(whos, "acme-push");
    // Revocation: a token already issued stops working on every node.
    let t = token(c, &nodes[0], pusher, "repository:acme-priv/app:pull")
        .await
        .unwrap();
    let with = |node: &Node, t: &str| {
        c.get(format!("{}/v2/acme-priv/app/manifests/v1", node.url()))
            .bearer_auth(t.to_string())
            .send()
    };
    assert_eq!(with(&nodes[1], &t).await.unwrap().status(), StatusCode::OK);
    let listed = op(&nodes[0], &["credentials", "list", "--org", "acme"]);
    let id = listed["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "acme-push")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = tcr(
        &nodes[1].url(),
        &[
            "--token",
            OPERATOR,
            "credentials",
            "revoke",
            "--org",
            "acme",
            &id,
        ],
    );
    assert!(out.status.success());
    assert_eq!(
        with(&nodes[2], &t).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        token(c, &nodes[0], pusher, "repository:acme-priv/app:pull").await,
        Err(StatusCode::UNAUTHORIZED)
    );
}

async fn key_rotation_fails_no_pull(c: &Client, nodes: &[Node], whos: &[Who]) {
    let with = |node: &Node, t: &str| {
        c.get(format!("{}/v2/acme-priv/app/manifests/v1", node.url()))
            .bearer_auth(t.to_string())
            .send()
    };
    // Key rotation while clients keep pulling through every node.
    let puller = who(whos, "acme-pull");
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let before = op(&nodes[0], &["keys", "list"]);
    let old_kid = before["keys"][0]["kid"].as_str().unwrap().to_string();
    let old_token = token(c, &nodes[0], puller, "repository:acme-priv/app:pull")
        .await
        .unwrap();
    let urls: Vec<String> = nodes.iter().map(Node::url).collect();
    let secret = puller.secret.clone().unwrap();
    let loops: Vec<_> = (0..3)
        .map(|i| {
            let (c, urls, secret, ok, failed, stop) = (
                c.clone(),
                urls.clone(),
                secret.clone(),
                ok.clone(),
                failed.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let mut k = i;
                while !stop.load(Ordering::Relaxed) {
                    k += 1;
                    let t: Value = c
                        .get(format!("{}/v2/token", urls[k % 3]))
                        .query(&[
                            ("service", "tcr"),
                            ("scope", "repository:acme-priv/app:pull"),
                        ])
                        .basic_auth("acme-pull", Some(&secret))
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap_or_default();
                    let status = match t["token"].as_str() {
                        Some(t) => c
                            .get(format!(
                                "{}/v2/acme-priv/app/manifests/v1",
                                urls[(k + 1) % 3]
                            ))
                            .bearer_auth(t)
                            .send()
                            .await
                            .map(|r| r.status())
                            .ok(),
                        None => None,
                    };
                    if status == Some(StatusCode::OK) {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    wait_for(
        "pulls before the rotation",
        Duration::from_secs(10),
        || async { ok.load(Ordering::Relaxed) >= 10 },
    )
    .await;
    let rotated = op(&nodes[1], &["keys", "rotate"]);
    let new_kid = rotated["kid"].as_str().unwrap().to_string();
    assert_ne!(new_kid, old_kid);
    let after = ok.load(Ordering::Relaxed);
    wait_for(
        "pulls after the rotation",
        Duration::from_secs(10),
        || async { ok.load(Ordering::Relaxed) >= after + 30 },
    )
    .await;
    // The old key stops signing at once and verifies until its tokens expired.
    let keys = op(&nodes[2], &["keys", "list"]);
    let old = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == old_kid.as_str())
        .unwrap()
        .clone();
    assert_eq!(old["signing"], false);
    assert_eq!(
        with(&nodes[2], &old_token).await.unwrap().status(),
        StatusCode::OK,
        "a token of the old key within its lifetime"
    );
    let fresh = token(c, &nodes[0], puller, "repository:acme-priv/app:pull")
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(&fresh).unwrap();
    assert_eq!(header.kid.as_deref(), Some(new_kid.as_str()));
    wait_for("the old key to retire", Duration::from_secs(30), || async {
        op(&nodes[0], &["keys", "list"])["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == old_kid.as_str() && k["verifying"] == false)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "pulls failed during the key rotation ({} ok)",
        ok.load(Ordering::Relaxed)
    );
}

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

#[tokio::test]
async fn forged_tokens_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(
        dir.path(),
        &[("TCR_ADMIN_TOKEN", OPERATOR)],
        &["--token-lifetime-secs", "2"],
    )
    .await;
    op(&node, &["orgs", "create", "acme", "--enable-registry"]);
    op(&node, &["namespaces", "create", "acme", "--org", "acme"]);
    let cred = op(
        &node,
        &[
            "credentials",
            "create",
            "--org",
            "acme",
            "--name",
            "reader",
            "--scope",
            "acme:pull",
        ],
    );
    let secret = cred["secret"].as_str().unwrap().to_string();
    let c = Client::new();
    seed(
        &c,
        &node,
        "acme",
        &Image::new("forgery", "amd64"),
        &["v1".into()],
    )
    .await;
    let reader = Who {
        name: "reader",
        org: Some("acme"),
        project: None,
        scopes: &[],
        dead: false,
        secret: Some(secret.clone()),
    };
    let pull = |t: String| {
        c.get(format!("{}/v2/acme/app/manifests/v1", node.url()))
            .bearer_auth(t)
            .send()
    };
    let push = |t: String| {
        let data = b"forged push".to_vec();
        c.post(format!(
            "{}/v2/acme/app/blobs/uploads/?digest={}",
            node.url(),
            digest(&data)
        ))
        .bearer_auth(t)
        .body(data)
        .send()
    };
    // What it asks for beyond its scopes is not granted.
    let good = token(&c, &node, &reader, "repository:acme/app:pull,push")
        .await
        .unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let mut claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["access"][0]["actions"], json!(["pull"]));
    assert_eq!(pull(good.clone()).await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        push(good.clone()).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let kid = jsonwebtoken::decode_header(&good).unwrap().kid.unwrap();

    // Scope widened in the payload, signature kept.
    claims["access"][0]["actions"] = json!(["pull", "push"]);
    let widened = format!(
        "{}.{}.{}",
        parts[0],
        b64(claims.to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(
        push(widened.clone()).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        pull(widened).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    // alg: none.
    let none_header = json!({"alg": "none", "typ": "JWT", "kid": kid});
    let unsigned = format!(
        "{}.{}.",
        b64(none_header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    assert_eq!(
        push(unsigned).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    // A key of the forger's own, under the real key id.
    let mut forger = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    forger.kid = Some(kid.clone());
    let own = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let pem = own
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .unwrap();
    let wrong_key = jsonwebtoken::encode(
        &forger,
        &claims,
        &jsonwebtoken::EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        push(wrong_key).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    // HS256 keyed with the (public) verification key.
    let keys = op(&node, &["keys", "list"]);
    let public = keys["keys"][0]["publicKey"].as_str().unwrap().to_string();
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = Some(kid.clone());
    let hs256 = jsonwebtoken::encode(
        &hs,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(public.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        push(hs256).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    // Expired: good until its lifetime (2 s) plus the 5 s leeway, then refused.
    wait_for("the token to expire", Duration::from_secs(15), || async {
        pull(good.clone()).await.unwrap().status() == StatusCode::UNAUTHORIZED
    })
    .await;

    form_grants_as_containerd_sends_them(&c, &node, &secret).await;
}

async fn form_grants_as_containerd_sends_them(c: &Client, node: &Node, secret: &str) {
    let pull = |t: String| {
        c.get(format!("{}/v2/acme/app/manifests/v1", node.url()))
            .bearer_auth(t)
            .send()
    };
    // containerd's form POST: password and refresh_token grants.
    for (grant, field) in [("password", "password"), ("refresh_token", "refresh_token")] {
        let form = [
            ("grant_type", grant),
            ("service", "tcr"),
            (
                "scope",
                "repository:acme/app:pull repository:acme/other:pull",
            ),
            ("client_id", "containerd"),
            ("username", "reader"),
            (field, secret),
        ];
        let v: Value = c
            .post(format!("{}/v2/token", node.url()))
            .form(&form)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let t = v["access_token"].as_str().unwrap().to_string();
        assert_eq!(pull(t).await.unwrap().status(), StatusCode::OK, "{grant}");
        let bad = [
            ("grant_type", grant),
            ("service", "tcr"),
            ("username", "reader"),
            (
                field,
                "tcr_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            ),
        ];
        let r = c
            .post(format!("{}/v2/token", node.url()))
            .form(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "{grant} with a wrong secret"
        );
    }
}
