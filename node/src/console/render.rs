//! Templates (compiled into the binary, rendered with minijinja), the
//! filters they use, and the embedded stylesheet and script.

use std::time::{Duration, UNIX_EPOCH};

use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use minijinja::{context, Environment, Value};
use sha2::{Digest, Sha256};

use super::client::Refused;
use super::session::Viewer;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("sign_in.html", include_str!("templates/sign_in.html")),
    ("error.html", include_str!("templates/error.html")),
    ("namespaces.html", include_str!("templates/namespaces.html")),
    ("namespace.html", include_str!("templates/namespace.html")),
    (
        "namespace_delete.html",
        include_str!("templates/namespace_delete.html"),
    ),
    ("repository.html", include_str!("templates/repository.html")),
    ("artifact.html", include_str!("templates/artifact.html")),
    ("retention.html", include_str!("templates/retention.html")),
    (
        "credentials.html",
        include_str!("templates/credentials.html"),
    ),
    (
        "credential_created.html",
        include_str!("templates/credential_created.html"),
    ),
    ("usage.html", include_str!("templates/usage.html")),
    ("cluster.html", include_str!("templates/cluster.html")),
];

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

pub struct Pages {
    env: Environment<'static>,
    css_name: String,
    js_name: String,
}

/// `console-<first 12 hex of SHA-256>.<ext>`.
fn hashed_name(body: &str, ext: &str) -> String {
    let h = Sha256::digest(body.as_bytes());
    format!("console-{}.{ext}", &hex::encode(h)[..12])
}

impl Pages {
    /// `registry_host` is what pull commands name.
    pub fn new(registry_host: &str) -> Pages {
        let mut env = Environment::new();
        for (name, src) in TEMPLATES {
            env.add_template(name, src)
                .unwrap_or_else(|e| panic!("console template {name}: {e:#}"));
        }
        env.add_filter("bytes", bytes);
        env.add_filter("time", time_secs);
        env.add_filter("time_ms", time_ms);
        env.add_filter("short", short_digest);
        let css_name = hashed_name(CSS, "css");
        let js_name = hashed_name(JS, "js");
        env.add_global("css_url", format!("/console/assets/{css_name}"));
        env.add_global("js_url", format!("/console/assets/{js_name}"));
        env.add_global("registry_host", registry_host.to_string());
        Pages {
            env,
            css_name,
            js_name,
        }
    }

    pub fn asset(&self, name: &str) -> Option<(&'static str, &'static str)> {
        if name == self.css_name {
            Some((CSS, "text/css; charset=utf-8"))
        } else if name == self.js_name {
            Some((JS, "text/javascript; charset=utf-8"))
        } else {
            None
        }
    }

    /// A signed-in page: the template with the viewer, the form token and
    /// the page's own values.
    pub fn page(&self, viewer: &Viewer, template: &str, values: Value) -> Response {
        self.page_with_status(StatusCode::OK, viewer, template, values)
    }

    pub fn page_with_status(
        &self,
        status: StatusCode,
        viewer: &Viewer,
        template: &str,
        values: Value,
    ) -> Response {
        let ctx = context! {
            viewer => ser(viewer.summary()),
            csrf => viewer.csrf.clone(),
            ..values
        };
        self.render(status, template, ctx)
    }

    /// What the API refused, on a page of its own, with the API's status.
    pub fn refused(&self, viewer: &Viewer, r: &Refused) -> Response {
        let status = if r.status.is_client_error() || r.status.is_server_error() {
            r.status
        } else {
            StatusCode::BAD_GATEWAY
        };
        self.page_with_status(
            status,
            viewer,
            "error.html",
            context! { title => "Not possible", message => r.message.clone(), status => status.as_u16() },
        )
    }

    pub fn render(&self, status: StatusCode, template: &str, ctx: Value) -> Response {
        let html = self.env.get_template(template).and_then(|t| t.render(ctx));
        match html {
            Ok(html) => (
                status,
                [
                    (header::CACHE_CONTROL, "no-store"),
                    // Pages load only their own assets; nothing may frame them.
                    (
                        header::CONTENT_SECURITY_POLICY,
                        "default-src 'none'; style-src 'self'; script-src 'self'; \
                         img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; \
                         base-uri 'none'",
                    ),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                    (header::REFERRER_POLICY, "same-origin"),
                ],
                Html(html),
            )
                .into_response(),
            Err(e) => {
                tracing::error!("console template {template}: {e:#}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the page could not be rendered",
                )
                    .into_response()
            }
        }
    }
}

/// Any serialisable value as a template value.
pub fn ser<T: serde::Serialize>(v: T) -> Value {
    Value::from(minijinja::value::Serde(v))
}

/// 1536 -> "1.5 KiB".
pub fn bytes(v: Value) -> String {
    let Some(n) = v
        .as_i64()
        .map(|n| n as f64)
        .or_else(|| f64::try_from(v).ok())
    else {
        return "-".into();
    };
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut x = n;
    let mut unit = 0;
    while x >= 1024.0 && unit + 1 < UNITS.len() {
        x /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{x:.1} {}", UNITS[unit])
    }
}

fn rfc3339(ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace('T', " ")
        .replace('Z', " UTC")
}

/// Seconds since the epoch as a UTC time; "-" for none.
fn time_secs(v: Value) -> String {
    match v.as_i64() {
        Some(s) if s > 0 => rfc3339(s as u64 * 1000),
        _ => "-".into(),
    }
}

fn time_ms(v: Value) -> String {
    match v.as_i64() {
        Some(ms) if ms > 0 => rfc3339(ms as u64),
        _ => "-".into(),
    }
}

/// `sha256:0123456789ab…`.
fn short_digest(v: String) -> String {
    match v.split_once(':') {
        Some((alg, hex)) if hex.len() > 12 => format!("{alg}:{}…", &hex[..12]),
        _ => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses_and_assets_are_named_by_content() {
        let p = Pages::new("registry.example");
        assert!(p.asset(&p.css_name).is_some());
        assert!(p.asset("console.css").is_none());
        assert_ne!(p.css_name, p.js_name);
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(bytes(Value::from(512)), "512 B");
        assert_eq!(bytes(Value::from(1536)), "1.5 KiB");
        assert_eq!(bytes(Value::from(3u64 << 30)), "3.0 GiB");
        assert_eq!(time_secs(Value::from(0)), "-");
        assert_eq!(time_secs(Value::from(86_400)), "1970-01-02 00:00:00 UTC");
    }
}
