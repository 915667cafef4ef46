//! `/v2/token`, the Docker token endpoint: GET with Basic credentials
//! (docker), POST form with `grant_type=password` or `refresh_token`
//! (containerd), or anonymous. It grants the intersection of the scopes
//! asked for and what the credential may do, and signs a JWT.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::json;
use tcr_raft::Action;

use super::access::{decide, feature_off_message, Decision};
use super::tokens::ResourceAccess;
use super::{basic_password, count_failure, refusal, AuthError, Subject};
use crate::oci::errors::OciError;
use crate::state::AuthState;

/// Largest accepted form or query (scopes for a few hundred repositories).
const MAX_FORM: usize = 64 * 1024;

/// One requested scope, `type:name:actions` (the name may hold `:`? no:
/// repository names never do, so the first and last `:` split it).
pub fn parse_scope(s: &str) -> Option<ResourceAccess> {
    let (kind, rest) = s.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    if kind.is_empty() || name.is_empty() {
        return None;
    }
    let actions: Vec<String> = actions
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(String::from)
        .collect();
    Some(ResourceAccess {
        kind: kind.to_string(),
        name: name.to_string(),
        actions,
    })
}

fn pairs(raw: &str) -> Result<Vec<(String, String)>, OciError> {
    if raw.len() > MAX_FORM {
        return Err(OciError::new(
            StatusCode::BAD_REQUEST,
            "UNSUPPORTED",
            "token request too large",
        ));
    }
    serde_urlencoded::from_str(raw).map_err(|e| {
        OciError::new(
            StatusCode::BAD_REQUEST,
            "UNSUPPORTED",
            format!("token request: {e}"),
        )
    })
}

/// The client's address, when the request came through the registry port.
type Peer = Option<Extension<ConnectInfo<SocketAddr>>>;

fn ip(peer: Peer) -> Option<IpAddr> {
    peer.map(|Extension(ConnectInfo(a))| a.ip())
}

pub async fn get(
    State(st): State<Arc<AuthState>>,
    peer: Peer,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let result = async {
        let q = pairs(q.as_deref().unwrap_or(""))?;
        let password = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(basic_password);
        issue(&st, &q, password, ip(peer)).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

pub async fn post(
    State(st): State<Arc<AuthState>>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let form = std::str::from_utf8(&body).map_err(|_| {
            OciError::new(
                StatusCode::BAD_REQUEST,
                "UNSUPPORTED",
                "the form is not UTF-8",
            )
        })?;
        let mut q = pairs(form)?;
        let field = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let password = match field("grant_type").as_deref() {
            Some("password") => field("password"),
            // Refresh tokens are credential secrets (what a pull secret's
            // `identitytoken` holds).
            Some("refresh_token") => field("refresh_token"),
            Some(other) => {
                return Err(OciError::new(
                    StatusCode::BAD_REQUEST,
                    "UNSUPPORTED",
                    format!(
                        "grant_type '{other}' is not supported (use password or refresh_token)"
                    ),
                ))
            }
            None => headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(basic_password),
        };
        // POST sends scopes space-separated in one field.
        let scopes: Vec<(String, String)> = q
            .iter()
            .filter(|(k, _)| k == "scope")
            .flat_map(|(_, v)| {
                v.split(' ')
                    .map(|s| ("scope".to_string(), s.to_string()))
                    .collect::<Vec<_>>()
            })
            .collect();
        q.retain(|(k, _)| k != "scope");
        q.extend(scopes);
        issue(&st, &q, password, ip(peer)).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn issue(
    st: &AuthState,
    q: &[(String, String)],
    password: Option<String>,
    peer: Option<IpAddr>,
) -> Result<Response, OciError> {
    let service = q
        .iter()
        .find(|(k, _)| k == "service")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| st.auth.service.clone());
    if service != st.auth.service {
        return Err(OciError::denied(format!(
            "this registry issues tokens for service '{}', not '{service}'",
            st.auth.service
        )));
    }
    let subject = match password.filter(|p| !p.is_empty()) {
        None if st.auth.is_open() => Subject::Admin,
        None => Subject::Anonymous,
        Some(p) => match st.auth.password_subject(st, &p, peer).await {
            Ok(s) => s,
            Err(AuthError::Unavailable(m)) => return Err(OciError::unavailable(m)),
            Err(e @ (AuthError::Throttled(_) | AuthError::Busy)) => {
                return Err(OciError::from(refusal(st, e)))
            }
            Err(e) => {
                count_failure(st, &e);
                return Err(OciError::unauthorized(format!(
                    "authentication failed: {e}"
                )));
            }
        },
    };
    let state = st.meta.read().await?;
    if let Subject::Credential(c) = &subject {
        if !state
            .organisation(&c.organisation)?
            .is_some_and(|o| o.registry_enabled())
        {
            return Err(OciError::denied(feature_off_message(&c.organisation)));
        }
    }
    let mut granted = Vec::new();
    for (_, s) in q.iter().filter(|(k, _)| k == "scope") {
        if s.is_empty() {
            continue;
        }
        let Some(want) = parse_scope(s) else {
            return Err(OciError::new(
                StatusCode::BAD_REQUEST,
                "UNSUPPORTED",
                format!("scope '{s}' is not of the form type:name:actions"),
            ));
        };
        let actions = match want.kind.as_str() {
            "repository" => {
                let ns = state.namespace(tcr_raft::namespace_of(&want.name))?;
                let mut ok = Vec::new();
                for a in &want.actions {
                    let asked: Vec<Action> = if a == "*" {
                        vec![Action::Pull, Action::Push, Action::Delete]
                    } else {
                        Action::parse(a).into_iter().collect()
                    };
                    for action in asked {
                        if decide(state, &subject, ns.as_ref(), action)? == Decision::Allow {
                            ok.push(action.as_str().to_string());
                        }
                    }
                }
                ok.sort();
                ok.dedup();
                ok
            }
            // The catalog filters itself by caller; any identified caller may ask.
            "registry" if want.name == "catalog" && !matches!(subject, Subject::Anonymous) => {
                vec!["*".to_string()]
            }
            _ => Vec::new(),
        };
        granted.push(ResourceAccess { actions, ..want });
    }
    let sub = match &subject {
        Subject::Admin => "admin".to_string(),
        Subject::Anonymous => "anonymous".to_string(),
        Subject::Credential(c) => format!("credential:{}", c.id),
    };
    let (token, issued_at) = st
        .auth
        .tokens
        .issue(&st.meta, &sub, &service, granted)
        .await
        .map_err(|e| OciError::unavailable(format!("issuing a token: {e}")))?;
    let issued = httpdate_rfc3339(issued_at);
    Ok((
        StatusCode::OK,
        axum::Json(json!({
            "token": token,
            "access_token": token,
            "expires_in": st.auth.tokens.lifetime_secs,
            "issued_at": issued,
        })),
    )
        .into_response())
}

/// Seconds since the epoch as RFC 3339 UTC (what the token spec's
/// `issued_at` holds).
fn httpdate_rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn scopes_split_at_the_first_and_last_colon() {
        let s = parse_scope("repository:acme/app/web:pull,push").unwrap();
        assert_eq!(
            (s.kind.as_str(), s.name.as_str()),
            ("repository", "acme/app/web")
        );
        assert_eq!(s.actions, vec!["pull", "push"]);
        assert_eq!(
            parse_scope("registry:catalog:*").unwrap().actions,
            vec!["*"]
        );
        assert!(parse_scope("repository:pull").is_none());
        assert!(parse_scope(":a:pull").is_none());
    }

    #[test]
    fn issued_at_is_rfc3339() {
        assert_eq!(httpdate_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(httpdate_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(httpdate_rfc3339(1_795_910_400), "2026-11-29T00:00:00Z");
    }

    proptest! {
        #[test]
        fn scope_parsing_never_panics(s in "\\PC{0,80}") {
            let _ = parse_scope(&s);
        }
    }
}
