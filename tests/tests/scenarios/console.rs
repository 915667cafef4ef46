//! The console in a real browser: Debian's chromium, headless, driven over
//! WebDriver (chromium-driver) against real `tcr-node` processes. An
//! organisation admin signs in, creates a namespace, sees an image pushed
//! by skopeo with its tags and layers, sets and previews a retention
//! policy, creates and revokes a credential, and signs out; another
//! organisation's admin sees none of it; the operator sees the cluster.
//! Then the form token, sessions across nodes and ended sessions, and
//! hostile input, over plain HTTP. Screenshots of every page land in
//! `target/tmp/console/` (look at them when a page changes).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tcr_tests::harness::{cluster, free_port, run, wait_for, Node};
use tcr_tests::images::{write_layout, Image};

const ADMIN: &str = "console-operator-token";
const API: &str = "/v1/container-registries";

/// chromedriver on a port of its own, stopped on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    async fn start() -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; .ci/run installs it)");
        let d = Driver { child, port };
        wait_for("chromedriver", Duration::from_secs(20), || async {
            reqwest::get(format!("http://127.0.0.1:{port}/status"))
                .await
                .is_ok()
        })
        .await;
        d
    }

    async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                            "--disable-dev-shm-usage", "--window-size=1280,1000"]}),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a WebDriver session with headless chromium")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn shots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

async fn shot(b: &Client, name: &str) {
    let png = b.screenshot().await.expect("screenshot");
    std::fs::write(shots().join(format!("{name}.png")), png).expect("write screenshot");
    let problems = b.execute(ACCESSIBILITY, vec![]).await.expect("audit");
    assert_eq!(
        problems,
        json!([]),
        "accessibility of the {name} page ({:?})",
        b.current_url().await.map(|u| u.to_string())
    );
}

/// What a screen reader or a low-vision reader would miss on the page: a
/// language, one h1, a label for every field, a name for every link, button
/// and chart, and text with WCAG AA contrast (4.5:1) against its background.
const ACCESSIBILITY: &str = r#"
const problems = [];
const short = el => el.outerHTML.slice(0, 100);
if (!document.documentElement.lang) problems.push('no lang on <html>');
const h1 = document.querySelectorAll('h1').length;
if (h1 !== 1) problems.push(h1 + ' h1 elements');
for (const el of document.querySelectorAll('input, select, textarea')) {
  if (el.type === 'hidden' || el.type === 'submit') continue;
  if (!(el.labels.length || el.getAttribute('aria-label'))) problems.push('no label: ' + short(el));
}
for (const el of document.querySelectorAll('a, button')) {
  if (!(el.textContent.trim() || el.getAttribute('aria-label'))) problems.push('no name: ' + short(el));
}
for (const el of document.querySelectorAll('svg')) {
  if (el.getAttribute('role') !== 'img' || !el.getAttribute('aria-label')) problems.push('unnamed chart: ' + short(el));
}
const rgb = c => (c.match(/[\d.]+/g) || []).map(Number);
const lum = ([r, g, b]) => {
  const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
};
const background = el => {
  for (let e = el; e; e = e.parentElement) {
    const c = rgb(getComputedStyle(e).backgroundColor);
    if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c.slice(0, 3);
  }
  return [255, 255, 255];
};
for (const el of document.querySelectorAll('body *')) {
  if (el.closest('svg') || !el.offsetParent) continue;
  const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
  if (!own) continue;
  const a = lum(rgb(getComputedStyle(el).color)), b = lum(background(el));
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  if (ratio < 4.5) problems.push('contrast ' + ratio.toFixed(2) + ': ' + short(el));
}
return problems;
"#;

/// The element, waiting (bounded) for it to appear: a click that submits
/// a form returns before the next page has loaded.
async fn find(b: &Client, css: &str) -> fantoccini::elements::Element {
    let found = b
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css(css))
        .await;
    match found {
        Ok(e) => e,
        Err(e) => panic!(
            "{css} on {:?}: {e}\n{}",
            b.current_url().await.map(|u| u.to_string()),
            b.source().await.unwrap_or_default()
        ),
    }
}

async fn text(b: &Client, css: &str) -> String {
    find(b, css).await.text().await.expect("element text")
}

async fn body(b: &Client) -> String {
    text(b, "body").await
}

async fn fill(b: &Client, css: &str, value: &str) {
    let e = find(b, css).await;
    e.clear().await.ok();
    e.send_keys(value).await.expect("type");
}

async fn click(b: &Client, css: &str) {
    find(b, css).await.click().await.expect("click");
}

async fn sign_in(b: &Client, base: &str, secret: &str) {
    b.goto(&format!("{base}/console/namespaces")).await.unwrap();
    assert!(b.current_url().await.unwrap().path().ends_with("/sign-in"));
    fill(b, "#secret", secret).await;
    click(b, "#sign-in").await;
    find(b, "#signed-in-as").await;
}

/// An organisation with the registry on and an admin credential's secret.
async fn organisation(node: &Node, org: &str) -> String {
    let http = node.client();
    let r = http
        .post(format!("{}{API}/organisations", node.url()))
        .json(&json!({"name": org, "features": {"containerRegistry": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let admin = json!({"name": format!("{org}-admin"),
                       "scopes": [{"namespace": "*", "actions": ["admin"]}]});
    credential(node, org, admin).await["secret"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Create a credential of `org` (the API's request body); the answer,
/// secret included.
async fn credential(node: &Node, org: &str, request: Value) -> Value {
    let r = node
        .client()
        .post(format!(
            "{}{API}/organisations/{org}/credentials",
            node.url()
        ))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

/// `GET` a management API path as the operator.
async fn admin_get(node: &Node, path: &str) -> Value {
    node.client()
        .get(format!("{}{API}{path}", node.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn push(node: &Node, secret: &str, img: &Image, dir: &Path, repo: &str, tag: &str) {
    let layout = dir.join(format!("layout-{tag}"));
    write_layout(&layout, &[img], None, tag);
    run(
        "skopeo",
        &[
            "--insecure-policy",
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &format!("x:{secret}"),
            &format!("oci:{}:{tag}", layout.display()),
            &format!("docker://{}/{repo}:{tag}", node.host()),
        ],
    );
}

/// Whether `secret` is accepted on the registry API.
async fn works(node: &Node, secret: &str) -> bool {
    reqwest::Client::new()
        .get(format!("{}/v2/", node.url()))
        .basic_auth("x", Some(secret))
        .send()
        .await
        .unwrap()
        .status()
        == 200
}

#[tokio::test]
async fn an_organisation_admin_runs_a_namespace_from_the_browser() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with_env(&dir.path().join("n"), &[("TCR_ADMIN_TOKEN", ADMIN)]).await;
    let acme = organisation(&node, "acme").await;
    let beta = organisation(&node, "beta").await;
    let driver = Driver::start().await;
    let b = driver.browser().await;
    let base = node.url();

    // Sign in as acme's admin; create a namespace with the form.
    sign_in(&b, &base, &acme).await;
    assert_eq!(text(&b, "#signed-in-as").await, "acme-admin (acme)");
    fill(&b, "#ns-name", "acme-apps").await;
    click(&b, "#create-namespace button[type=submit]").await;
    assert_eq!(text(&b, ".flash").await, "Namespace created.");
    assert_eq!(text(&b, "#visibility").await, "private");

    // A real client pushes two tags; the namespace lists the repository,
    // and the repository its tags with size and type.
    let v1 = Image::new("console v1", "amd64");
    let v2 = Image::new("console v2", "amd64");
    push(&node, &acme, &v1, dir.path(), "acme-apps/web", "v1");
    push(&node, &acme, &v2, dir.path(), "acme-apps/web", "v2");
    b.goto(&format!("{base}/console/namespaces")).await.unwrap();
    let list = text(&b, "#namespaces").await;
    assert!(
        list.contains("acme-apps") && list.contains("private"),
        "{list}"
    );
    shot(&b, "namespaces").await;
    b.goto(&format!("{base}/console/namespaces/acme-apps"))
        .await
        .unwrap();
    click(&b, "#repositories a").await;
    let tags = text(&b, "#tags").await;
    assert!(tags.contains("v1") && tags.contains("v2"), "{tags}");
    assert!(tags.contains(&v1.manifest_digest()[..19]), "{tags}");
    assert!(tags.contains("oci.image.manifest.v1"), "{tags}");
    assert!(
        tags.contains(&format!("docker pull {}/acme-apps/web:v2", node.host())),
        "{tags}"
    );
    shot(&b, "tags").await;
    // On a phone: one column, nothing wider than the screen.
    b.set_window_size(390, 844).await.unwrap();
    b.refresh().await.unwrap();
    find(&b, "#tags").await;
    let overflow = b
        .execute(
            "return document.documentElement.scrollWidth - window.innerWidth;",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "the tags page scrolls sideways on a phone by {overflow}"
    );
    shot(&b, "tags-phone").await;
    b.set_window_size(1280, 1000).await.unwrap();

    // The artifact: layers with sizes, the config's platform and command,
    // the manifest itself.
    click(&b, "a.tag").await;
    assert_eq!(text(&b, "#digest").await, v1.manifest_digest());
    let layers = text(&b, "#layers").await;
    let layer = tcr_tests::images::digest(&v1.layer);
    assert!(layers.contains(&layer[..19]), "{layers}");
    assert!(
        layers.contains(&format!("{} B", v1.layer.len())),
        "{layers}"
    );
    let config = text(&b, "#config").await;
    assert!(
        config.contains("linux/amd64") && config.contains("/hello"),
        "{config}"
    );
    let manifest: Value = serde_json::from_str(&text(&b, "#manifest").await).unwrap();
    assert_eq!(
        manifest,
        serde_json::from_slice::<Value>(&v1.manifest).unwrap()
    );
    shot(&b, "artifact").await;

    // Retention: keep the last pushed tag; the preview names v1 as going.
    b.goto(&format!("{base}/console/namespaces/acme-apps/retention"))
        .await
        .unwrap();
    b.find(Locator::Css("#rule0_keep option[value=lastPushed]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    fill(&b, "input[name=rule0_count]", "1").await;
    click(&b, "#save-policy").await;
    assert_eq!(text(&b, ".flash").await, "Retention policy saved.");
    let preview = text(&b, "#preview").await;
    assert!(
        preview.contains("v1") && !preview.contains("v2"),
        "{preview}"
    );
    shot(&b, "retention").await;
    let policy = admin_get(&node, "/namespaces/acme-apps/retention-policy").await;
    assert_eq!(policy["rules"][0]["keep"], "lastPushed");
    assert_eq!(policy["rules"][0]["count"], 1);

    // A credential: its secret shown once works; revoked, it does not.
    b.goto(&format!("{base}/console/credentials"))
        .await
        .unwrap();
    fill(&b, "#cr-name", "deploy").await;
    fill(&b, "#cr-ns", "acme-apps").await;
    click(&b, "#create-credential button[type=submit]").await;
    let secret = text(&b, "#secret-out").await;
    assert!(secret.starts_with("tcr_"), "{secret}");
    assert!(text(&b, "#docker-login").await.contains(&secret));
    assert!(text(&b, "#pull-secret")
        .await
        .contains("kubectl create secret docker-registry"));
    assert!(works(&node, &secret).await, "the new secret signs in");
    shot(&b, "credential-created").await;
    b.goto(&format!("{base}/console/credentials"))
        .await
        .unwrap();
    let before = text(&b, "#credentials").await;
    assert!(before.contains("deploy"), "{before}");
    // The browser asks for confirmation (the form's data-confirm).
    b.execute("window.confirm = () => true;", vec![])
        .await
        .unwrap();
    click(&b, "button[aria-label='Revoke deploy']").await;
    assert_eq!(text(&b, ".flash").await, "Credential revoked.");
    assert!(!works(&node, &secret).await, "a revoked secret is refused");
    shot(&b, "credentials").await;

    // Usage shows the namespace with a chart.
    b.goto(&format!("{base}/console/usage")).await.unwrap();
    assert!(text(&b, "table.usage").await.contains("acme-apps"));
    b.find(Locator::Css("#ns-chart"))
        .await
        .expect("a usage chart");
    // The organisation's days end in a column for now, which shows what
    // its heading says is stored.
    let now = b
        .execute(
            "return document.querySelector('svg.columns rect.now title').textContent",
            vec![],
        )
        .await
        .unwrap();
    let now = now.as_str().unwrap().to_string();
    let stored = now
        .strip_prefix("now: ")
        .and_then(|t| t.strip_suffix(" stored"))
        .unwrap_or_else(|| panic!("{now}"));
    let heading = text(&b, "h2.org-usage").await;
    assert!(
        heading.starts_with(&format!("acme: {stored},")),
        "{heading} / {now}"
    );
    shot(&b, "usage").await;

    // Not the operator: no cluster page.
    b.goto(&format!("{base}/console/cluster")).await.unwrap();
    assert!(text(&b, "#refusal").await.contains("operator"));
    shot(&b, "refused").await;

    // Sign out: the console asks to sign in again.
    click(&b, "#sign-out").await;
    find(&b, "#secret").await;
    shot(&b, "sign-in").await;
    b.goto(&format!("{base}/console/namespaces")).await.unwrap();
    assert!(b.current_url().await.unwrap().path().ends_with("/sign-in"));

    // Another organisation's admin sees none of acme's.
    sign_in(&b, &base, &beta).await;
    assert!(!text(&b, "#namespaces").await.contains("acme-apps"));
    b.goto(&format!("{base}/console/namespaces/acme-apps"))
        .await
        .unwrap();
    assert!(!body(&b).await.contains("acme-apps/web"));
    b.goto(&format!("{base}/console/repository?name=acme-apps/web"))
        .await
        .unwrap();
    assert!(text(&b, "#refusal").await.len() > 3);
    click(&b, "#sign-out").await;
    find(&b, "#secret").await;

    // The operator sees the cluster, and usage of namespaces of no
    // organisation too.
    node.create_namespace("ops-tools", "private").await;
    sign_in(&b, &base, ADMIN).await;
    b.goto(&format!("{base}/console/usage")).await.unwrap();
    let usage = body(&b).await;
    assert!(
        usage.contains("acme-apps") && usage.contains("ops-tools"),
        "{usage}"
    );
    b.goto(&format!("{base}/console/cluster")).await.unwrap();
    let members = text(&b, "#members").await;
    assert!(
        members.contains(&node.host()) && members.contains("leader"),
        "{members}"
    );
    // Every member's storage report (one member here), asked as the page loads.
    let storage = text(&b, "#storage").await;
    assert!(
        storage.contains("Misplaced") && !storage.contains("no report"),
        "{storage}"
    );
    // acme's namespace has a policy (set above) and no run yet.
    let runs = text(&b, "#retention-runs").await;
    assert!(
        runs.contains("acme-apps") && runs.contains("no run yet"),
        "{runs}"
    );
    shot(&b, "cluster").await;
    b.close().await.ok();
}

/// Post the sign-in form as a browser does: load the page first (its
/// cookie and form token), then send `fields` with them.
async fn post_sign_in(
    http: &reqwest::Client,
    base: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let page = http
        .get(format!("{base}/console/sign-in"))
        .send()
        .await
        .unwrap();
    let cookie = page.headers()["set-cookie"].to_str().unwrap().to_string();
    let html = page.text().await.unwrap();
    let at = html.find("name=\"form\" value=\"").expect("a form token") + 19;
    let token = html[at..at + 32].to_string();
    let mut form = fields.to_vec();
    form.push(("form", &token));
    http.post(format!("{base}/console/sign-in"))
        .header("cookie", cookie.split(';').next().unwrap())
        .form(&form)
        .send()
        .await
        .unwrap()
}

/// Sign in over HTTP; the session cookie (`name=value`).
async fn session(http: &reqwest::Client, base: &str, secret: &str) -> String {
    let r = post_sign_in(
        http,
        base,
        &[("secret", secret), ("next", "/console/usage")],
    )
    .await;
    assert_eq!(r.status(), 303, "sign-in redirects");
    assert_eq!(r.headers()["location"], "/console/usage");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    cookie.split(';').next().unwrap().to_string()
}

fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a form token") + 19;
    page[at..at + 32].to_string()
}

#[tokio::test]
async fn forms_need_their_token_and_sessions_follow_the_credential() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path(), 2, &[("TCR_ADMIN_TOKEN", ADMIN)], &[]).await;
    let acme = organisation(&nodes[0], "acme").await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let (one, two) = (nodes[0].url(), nodes[1].url());
    let cookie = session(&http, &one, &acme).await;
    let get = |base: &str, path: &str| {
        http.get(format!("{base}{path}"))
            .header("cookie", cookie.clone())
            .send()
    };

    // A session from node 1 works on node 2.
    let page = get(&two, "/console/namespaces").await.unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains("acme-admin (acme)"));
    let token = csrf_of(&page);

    // A form without the token, or with another's, changes nothing.
    for form in [vec![], vec![("csrf", "0".repeat(32))]] {
        let mut f = form.clone();
        f.extend([
            ("name", "forged".to_string()),
            ("visibility", "public".into()),
        ]);
        let r = http
            .post(format!("{two}/console/namespaces"))
            .header("cookie", cookie.clone())
            .form(&f)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
    }
    let r = http
        .post(format!("{one}/console/namespaces"))
        .header("cookie", cookie.clone())
        .form(&[
            ("csrf", token.as_str()),
            ("name", "made-here"),
            ("visibility", "private"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{:?}", r.text().await);
    let names = admin_get(&nodes[0], "/namespaces").await;
    let names: Vec<&str> = names["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["made-here"],
        "only the form with its token acted"
    );

    // Without a session: to the sign-in page, nothing else.
    let r = http
        .get(format!("{one}/console/usage"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("/console/sign-in"));

    // A wrong secret: 401 and the form again; no session.
    let r = post_sign_in(&http, &one, &[("secret", "tcr_nope_nope")]).await;
    assert_eq!(r.status(), 401);
    let set = r.headers()["set-cookie"].to_str().unwrap();
    assert!(!set.contains("tcr_session"), "{set}");

    // A right secret posted by another page (no sign-in token of this
    // page): refused, no session (login CSRF).
    let r = http
        .post(format!("{one}/console/sign-in"))
        .form(&[("secret", acme.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let set = r.headers()["set-cookie"].to_str().unwrap();
    assert!(!set.contains("tcr_session"), "{set}");

    // A registry token is not a session, and a session is not a token.
    let r = http
        .get(format!("{one}{API}/namespaces"))
        .header(
            "authorization",
            format!("Bearer {}", cookie.split_once('=').unwrap().1),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Signing out on node 1 ends that session on every node: a copy of its
    // cookie is refused on node 2 too. A sign-out without the form token
    // does nothing; another session of the same credential goes on.
    let other = session(&http, &one, &acme).await;
    let other_page = |base: String| {
        http.get(format!("{base}/console/namespaces"))
            .header("cookie", other.clone())
            .send()
    };
    let page = other_page(one.clone()).await.unwrap().text().await.unwrap();
    let sign_out = |form: Vec<(&'static str, String)>| {
        http.post(format!("{one}/console/sign-out"))
            .header("cookie", other.clone())
            .form(&form)
            .send()
    };
    assert_eq!(sign_out(vec![]).await.unwrap().status(), 403);
    assert_eq!(other_page(two.clone()).await.unwrap().status(), 200);
    let r = sign_out(vec![("csrf", csrf_of(&page))]).await.unwrap();
    assert_eq!(r.status(), 303);
    let cleared = r.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cleared.starts_with("tcr_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    let ended = |r: reqwest::Response| {
        r.status() == 303
            && r.headers()["location"]
                .to_str()
                .unwrap()
                .contains("ended=1")
    };
    assert!(
        ended(other_page(one.clone()).await.unwrap()),
        "refused where it signed out"
    );
    wait_for(
        "the signed-out session to end on node 2",
        Duration::from_secs(10),
        || async { ended(other_page(two.clone()).await.unwrap()) },
    )
    .await;
    assert_eq!(
        get(&two, "/console/namespaces").await.unwrap().status(),
        200
    );

    // A credential that expires ends its session too.
    let brief = credential(
        &nodes[0],
        "acme",
        json!({"name": "brief", "expiresInSecs": 8,
               "scopes": [{"namespace": "*", "actions": ["pull"]}]}),
    )
    .await;
    let brief_cookie = session(&http, &one, brief["secret"].as_str().unwrap()).await;
    let brief_page = |base: String| {
        http.get(format!("{base}/console/namespaces"))
            .header("cookie", brief_cookie.clone())
            .send()
    };
    assert_eq!(brief_page(two.clone()).await.unwrap().status(), 200);
    wait_for(
        "the expired credential's session to end",
        Duration::from_secs(20),
        || async {
            let r = brief_page(two.clone()).await.unwrap();
            r.status() == 303
                && r.headers()["location"]
                    .to_str()
                    .unwrap()
                    .contains("ended=1")
        },
    )
    .await;

    // Revoking the credential ends its session at the next click.
    let id = acme.split('_').nth(1).unwrap().to_string();
    let r = nodes[0]
        .client()
        .delete(format!("{one}{API}/organisations/acme/credentials/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    wait_for("the session to end", Duration::from_secs(10), || async {
        let r = get(&two, "/console/namespaces").await.unwrap();
        r.status() == 303
            && r.headers()["location"]
                .to_str()
                .unwrap()
                .contains("ended=1")
    })
    .await;
}

#[tokio::test]
async fn hostile_console_requests_get_clear_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with_env(&dir.path().join("n"), &[("TCR_ADMIN_TOKEN", ADMIN)]).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = node.url();
    let cookie = session(&http, &base, ADMIN).await;
    let page = http
        .get(format!("{base}/console/namespaces"))
        .header("cookie", cookie.clone())
        .send()
        .await
        .unwrap();
    let csrf = csrf_of(&page.text().await.unwrap());

    // An oversized form is refused before it is read whole.
    // Just over the limit: small enough that the whole request is sent before
    // the answer (a larger one may see the connection closed under it).
    let big = "a".repeat(80_000);
    let r = http
        .post(format!("{base}/console/namespaces"))
        .header("cookie", cookie.clone())
        .form(&[("csrf", csrf.as_str()), ("name", big.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = http
        .post(format!("{base}/console/sign-in"))
        .form(&[("secret", big.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    // Sign-in never sends anyone to another site.
    let r = post_sign_in(
        &http,
        &base,
        &[("secret", ADMIN), ("next", "//evil.example/console/")],
    )
    .await;
    assert_eq!(r.headers()["location"], "/console/namespaces");

    // Names that try to leave their path segment, bad digests, garbage:
    // the API's refusal in words, never a 500.
    for path in [
        "/console/namespaces/..%2Fcluster",
        "/console/namespaces/%2E%2E%2F%2E%2E%2Fcluster",
        "/console/repository?name=../../v2/_catalog",
        "/console/repository?name=a%00b",
        "/console/artifact?repository=acme/app&digest=sha256:..%2F..%2F",
        "/console/artifact?repository=acme/app",
        "/console/namespaces/x%0d%0aSet-Cookie:%20a=b/retention",
        "/console/assets/..%2F..%2Fetc%2Fpasswd",
    ] {
        let r = http
            .get(format!("{base}{path}"))
            .header("cookie", cookie.clone())
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_client_error(),
            "{path}: {} {:?}",
            r.status(),
            r.text().await
        );
        assert!(r.headers().get("set-cookie").is_none(), "{path}");
    }
    // A forged cookie is no session.
    let r = http
        .get(format!("{base}/console/namespaces"))
        .header(
            "cookie",
            "tcr_session=eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    // The node still serves.
    assert_eq!(
        http.get(format!("{base}/console/namespaces"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn under_tls_the_session_cookie_is_secure_and_pull_commands_name_the_public_host() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tcr_tests::harness::certs(&dir.path().join("certs"), &["127.0.0.1"]);
    let node = Node::start_https(
        &dir.path().join("n"),
        &certs,
        "127.0.0.1",
        &[("TCR_ADMIN_TOKEN", ADMIN)],
        &["--public-url", "https://registry.example"],
    )
    .await;
    let http = tcr_tests::harness::https_client(&certs.join("ca.crt"))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = post_sign_in(&http, &node.url(), &[("secret", ADMIN)]).await;
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("; Secure"), "{cookie}");
    node.create_namespace("web", "private").await;
    let page = http
        .get(format!("{}/console/namespaces/web", node.url()))
        .header("cookie", cookie.split(';').next().unwrap())
        .header("host", "attacker.example")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("docker push registry.example/web/"), "{page}");
    assert!(!page.contains("attacker.example"));
}
