//! Console sessions: signing in with a credential secret or the operator
//! token, the session cookie, and the form token every POST carries.
//!
//! The cookie holds a token signed with the cluster's keys (the same
//! Ed25519 keys as registry tokens, kept in Raft), so any node accepts a
//! session any node issued. Its audience is the console's own: it is not a
//! registry token, and a registry token is not a session. It names the
//! subject only; every request looks the credential up again, so a revoked
//! or expired credential's session ends at its next click. Signing out
//! ends the session on every node (its id goes into a list in Raft), so a
//! copy of the cookie taken before is refused too.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::client::Client;
use super::Console;
use crate::auth::{AuthError, Caller, Subject};
use tcr_storage::clock::now_secs;

pub const COOKIE: &str = "tcr_session";
/// A session lasts this long without a request; each request past its
/// half-life renews it.
pub const SESSION_SECS: u64 = 15 * 60;
/// Largest sign-in or form body (the retention form is the largest).
const MAX_FORM: usize = 64 * 1024;

/// Who a console request acts for, and the token its forms carry.
#[derive(Clone)]
pub struct Viewer {
    pub caller: Caller,
    pub csrf: String,
    pub client: Client,
    /// The session's id (none on an open node, which has no sessions).
    pub session: Option<String>,
}

/// What the templates are told about the viewer.
#[derive(Serialize)]
pub struct ViewerSummary {
    pub label: String,
    pub operator: bool,
    pub organisation: Option<String>,
    pub open: bool,
}

impl Viewer {
    pub fn summary(&self) -> ViewerSummary {
        match &self.caller.subject {
            Subject::Credential(c) => ViewerSummary {
                label: format!("{} ({})", c.name, c.organisation),
                operator: false,
                organisation: Some(c.organisation.clone()),
                open: false,
            },
            _ => ViewerSummary {
                label: "operator".into(),
                operator: true,
                organisation: None,
                open: false,
            },
        }
    }

    pub fn organisation(&self) -> Option<String> {
        self.caller.credential().map(|c| c.organisation.clone())
    }
}

/// The form token of a session: derived from the session's id, which only
/// the HttpOnly cookie carries, so another site can neither read nor forge
/// it. Renewing a session keeps its id, so open forms stay valid.
fn csrf_of(session_id: &str) -> String {
    let h = Sha256::digest(format!("tcr-console-form\0{session_id}").as_bytes());
    hex::encode(&h[..16])
}

/// An open node has no sessions; its form token comes from a secret of this
/// process (the node listens on loopback only, but a page of another site
/// in the same browser could still post to it).
fn open_csrf() -> String {
    static SECRET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SECRET
        .get_or_init(|| {
            let mut b = [0u8; 16];
            rand::rng().fill_bytes(&mut b);
            csrf_of(&hex::encode(b))
        })
        .clone()
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    cookie_named(headers, COOKIE)
}

fn cookie_named(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn set_cookie(c: &Console, token: &str, max_age: u64) -> HeaderValue {
    let secure = if c.https { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={token}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("a token is a valid header value")
}

fn peer(req: &Request) -> Option<SocketAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}

/// Where to go after signing in: a console page, never another site.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/console/")
                && !n.contains("//")
                && !n.contains('\\')
                && !n.chars().any(|c| c.is_control()) =>
        {
            n.to_string()
        }
        _ => "/console/namespaces".into(),
    }
}

fn to_sign_in(path_and_query: &str, ended: bool) -> Response {
    let next = serde_urlencoded::to_string([("next", path_and_query)]).unwrap_or_default();
    let ended = if ended { "&ended=1" } else { "" };
    Redirect::to(&format!("/console/sign-in?{next}{ended}")).into_response()
}

/// The console's door: a valid session (or an open node), and on every
/// POST the session's form token.
pub async fn require(State(c): State<Arc<Console>>, req: Request, next: Next) -> Response {
    let here = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/console/namespaces".into());
    let peer = peer(&req);
    let auth = &c.access.auth;
    let (caller, csrf, renew, session) = if auth.is_open() {
        (Caller::admin(), open_csrf(), None, None)
    } else {
        let Some(token) = cookie_value(req.headers()) else {
            return to_sign_in(&here, false);
        };
        match auth.session_caller(&c.access, &token).await {
            Ok((caller, claims)) => {
                let renew = (claims.exp.saturating_sub(now_secs()) < SESSION_SECS / 2)
                    .then(|| (claims.sub.clone(), claims.jti.clone()));
                (caller, csrf_of(&claims.jti), renew, Some(claims.jti))
            }
            Err(AuthError::Unavailable(m)) => {
                return (StatusCode::SERVICE_UNAVAILABLE, format!("unavailable: {m}"))
                    .into_response()
            }
            Err(e) => {
                crate::auth::count_failure(&c.access, &e);
                let mut r = to_sign_in(&here, true);
                r.headers_mut()
                    .insert(header::SET_COOKIE, set_cookie(&c, "", 0));
                return r;
            }
        }
    };
    let req = if req.method() == Method::POST {
        match checked_form(req, &csrf).await {
            Ok(r) => r,
            Err(r) => return r,
        }
    } else {
        req
    };
    let mut req = req;
    req.extensions_mut().insert(Viewer {
        client: Client::new(c.routes.clone(), caller.clone(), peer),
        caller,
        csrf,
        session,
    });
    let mut resp = next.run(req).await;
    // Not over a cookie the page set itself (sign-out clears it).
    let sets_session = resp
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .any(|h| h.as_bytes().starts_with(format!("{COOKIE}=").as_bytes()));
    if let Some((sub, jti)) = renew.filter(|_| !sets_session) {
        if let Ok(token) = issue(&c, &sub, Some(jti)).await {
            resp.headers_mut()
                .append(header::SET_COOKIE, set_cookie(&c, &token, SESSION_SECS));
        }
    }
    resp
}

/// Read a form body (bounded), refuse it without the session's token, and
/// hand the body on to the handler.
async fn checked_form(req: Request, csrf: &str) -> Result<Request, Response> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORM).await.map_err(|_| {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a console form is at most {MAX_FORM} bytes"),
        )
            .into_response()
    })?;
    let presented = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
        .ok()
        .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == "csrf").map(|(_, v)| v));
    let ok = presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(csrf.as_bytes())));
    if !ok {
        return Err((
            StatusCode::FORBIDDEN,
            "the form's token is missing or belongs to another session: reload the page and try again",
        )
            .into_response());
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

async fn issue(c: &Console, sub: &str, session_id: Option<String>) -> Result<String, String> {
    let auth = &c.access.auth;
    auth.tokens
        .issue_session(
            &c.access.meta,
            sub,
            &auth.session_audience(),
            SESSION_SECS,
            session_id,
        )
        .await
        .map(|(t, _)| t)
        .map_err(|e| e.to_string())
}

#[derive(Deserialize)]
pub struct SignInQuery {
    next: Option<String>,
    ended: Option<String>,
}

pub async fn sign_in_page(
    State(c): State<Arc<Console>>,
    axum::extract::Query(q): axum::extract::Query<SignInQuery>,
) -> Response {
    if c.access.auth.is_open() {
        return Redirect::to(&safe_next(q.next.as_deref())).into_response();
    }
    let message = q
        .ended
        .map(|_| "Your session has ended (expired, signed out elsewhere, or the credential was revoked). Sign in again.");
    sign_in_form(&c, StatusCode::OK, q.next.as_deref(), message)
}

/// The sign-in form, with a fresh token in a cookie and in the form: a
/// sign-in posted by another site carries neither (login CSRF).
fn sign_in_form(
    c: &Console,
    status: StatusCode,
    next: Option<&str>,
    message: Option<&str>,
) -> Response {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    let token = hex::encode(b);
    let mut r = c.pages.render(
        status,
        "sign_in.html",
        context! { next => safe_next(next), message => message, title => "Sign in", form => token.clone() },
    );
    let secure = if c.https { "; Secure" } else { "" };
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!(
            "{SIGN_IN_COOKIE}={token}; Path=/console/sign-in; HttpOnly; SameSite=Strict; Max-Age=3600{secure}"
        ))
        .expect("hex is a valid header value"),
    );
    r
}

const SIGN_IN_COOKIE: &str = "tcr_sign_in";

#[derive(Deserialize)]
pub struct SignInForm {
    secret: String,
    next: Option<String>,
    #[serde(default)]
    form: String,
}

pub async fn sign_in(State(c): State<Arc<Console>>, req: Request) -> Response {
    let peer = peer(&req).map(|p| p.ip());
    let issued = cookie_named(req.headers(), SIGN_IN_COOKIE);
    let Ok(bytes) = axum::body::to_bytes(req.into_body(), MAX_FORM).await else {
        return sign_in_form(
            &c,
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            Some("The form is too large."),
        );
    };
    let Ok(form) = serde_urlencoded::from_bytes::<SignInForm>(&bytes) else {
        return sign_in_form(
            &c,
            StatusCode::BAD_REQUEST,
            None,
            Some("Enter a credential secret or the operator token."),
        );
    };
    let next = form.next.as_deref();
    let same_form = issued.is_some_and(|t| bool::from(t.as_bytes().ct_eq(form.form.as_bytes())));
    if !same_form {
        return sign_in_form(
            &c,
            StatusCode::FORBIDDEN,
            next,
            Some("This sign-in did not come from this page: sign in here."),
        );
    }
    let subject = c
        .access
        .auth
        .password_subject(&c.access, form.secret.trim(), peer)
        .await;
    let sub = match subject {
        Ok(Subject::Admin) => "admin".to_string(),
        Ok(Subject::Credential(rec)) => format!("credential:{}", rec.id),
        Ok(Subject::Anonymous) => unreachable!("a password never stands for anonymous"),
        Err(e) => {
            crate::auth::count_failure(&c.access, &e);
            let status = match e {
                AuthError::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
                AuthError::Busy | AuthError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::UNAUTHORIZED,
            };
            return sign_in_form(&c, status, next, Some(&format!("Not signed in: {e}.")));
        }
    };
    let mut id = [0u8; 16];
    rand::rng().fill_bytes(&mut id);
    match issue(&c, &sub, Some(hex::encode(id))).await {
        Ok(token) => {
            tracing::info!(subject = %sub, "console: signed in");
            let mut r = Redirect::to(&safe_next(next)).into_response();
            r.headers_mut()
                .insert(header::SET_COOKIE, set_cookie(&c, &token, SESSION_SECS));
            r
        }
        Err(e) => sign_in_form(
            &c,
            StatusCode::SERVICE_UNAVAILABLE,
            next,
            Some(&format!("Could not start a session: {e}")),
        ),
    }
}

/// The session ends on every node (its id is committed to the list of
/// ended sessions for as long as its tokens could verify), and the cookie
/// goes. If the list cannot be written now, the sign-out still clears the
/// cookie and says so: the token then lapses at its expiry.
pub async fn sign_out(
    State(c): State<Arc<Console>>,
    axum::Extension(v): axum::Extension<Viewer>,
) -> Response {
    let ended = match v.session.clone() {
        None => Ok(()),
        Some(id) => {
            let at = now_secs();
            c.access
                .meta
                .write(tcr_raft::Command::EndSession {
                    id,
                    at,
                    until: at + SESSION_SECS + crate::auth::tokens::LEEWAY_SECS,
                })
                .await
        }
    };
    let mut r = match ended {
        Ok(()) => Redirect::to("/console/sign-in").into_response(),
        Err(e) => {
            tracing::warn!(
                "console: sign-out not committed, the session lapses at its expiry: {e}"
            );
            c.pages.refused(
                &v,
                &super::client::Refused {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    message: format!(
                        "Signed out of this browser, but the cluster could not record it \
                         ({e}): a copy of the session's cookie works until it expires."
                    ),
                },
            )
        }
    };
    // Cleared either way: this browser is signed out.
    r.headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&c, "", 0));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_only_returns_to_console_pages() {
        assert_eq!(safe_next(Some("/console/usage")), "/console/usage");
        for hostile in [
            "https://evil.example/",
            "//evil.example/console/",
            "/console//evil.example",
            "/console/\\evil",
            "/v2/",
            "/console/x\r\nSet-Cookie: a=b",
        ] {
            assert_eq!(safe_next(Some(hostile)), "/console/namespaces", "{hostile}");
        }
    }

    #[test]
    fn the_form_token_is_bound_to_the_session() {
        assert_eq!(csrf_of("a"), csrf_of("a"));
        assert_ne!(csrf_of("a"), csrf_of("b"));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "x=1; tcr_session=abc.def.ghi; y=2".parse().unwrap(),
        );
        assert_eq!(cookie_value(&h).as_deref(), Some("abc.def.ghi"));
    }
}
