//! `tcr login` / `tcr logout`: keep a credential per endpoint in
//! `$XDG_CONFIG_HOME/tcr/config.json` (mode 0600), as docker keeps its
//! logins, so later commands need no `--token`.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn config_path() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".config"),
    };
    Ok(base.join("tcr").join("config.json"))
}

fn load() -> Value {
    config_path()
        .ok()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| json!({"auths": {}}))
}

fn save(v: &Value) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = config_path()?;
    std::fs::create_dir_all(path.parent().expect("the config path has a parent"))?;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(serde_json::to_string_pretty(v)?.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// The credential stored for `endpoint`, if any.
pub fn stored_token(endpoint: &str) -> Option<String> {
    load()["auths"][endpoint.trim_end_matches('/')]["token"]
        .as_str()
        .map(String::from)
}

/// Check the secret against the registry (`/v2/` with Basic auth, as
/// `docker login` does), then store it.
pub async fn login(
    http: reqwest::ClientBuilder,
    endpoint: &str,
    username: &str,
    password: Option<String>,
) -> anyhow::Result<()> {
    let secret = match password {
        Some(p) => p,
        None => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s.trim().to_string()
        }
    };
    if secret.is_empty() {
        bail!("no secret given: pipe it in (--password-stdin) or pass --password");
    }
    let endpoint = endpoint.trim_end_matches('/');
    let resp = http
        .build()?
        .get(format!("{endpoint}/v2/"))
        .basic_auth(username, Some(&secret))
        .send()
        .await
        .map_err(|e| crate::client::unreachable(endpoint, e))?;
    match resp.status() {
        s if s.is_success() => {}
        StatusCode::UNAUTHORIZED => {
            bail!("login to {endpoint} failed: the secret was not accepted")
        }
        s => bail!("login to {endpoint} failed: {s}"),
    }
    let mut cfg = load();
    cfg["auths"][endpoint] = json!({"username": username, "token": secret});
    save(&cfg)?;
    println!(
        "Login Succeeded ({endpoint}, stored in {})",
        config_path()?.display()
    );
    Ok(())
}

pub fn logout(endpoint: &str) -> anyhow::Result<()> {
    let mut cfg = load();
    let endpoint = endpoint.trim_end_matches('/');
    if let Some(auths) = cfg["auths"].as_object_mut() {
        auths.remove(endpoint);
    }
    save(&cfg)?;
    println!("Removed login credentials for {endpoint}");
    Ok(())
}
