//! Authorisation: what a subject may do in a namespace, for OCI routes
//! (decided here, before the handler runs) and management calls (each
//! handler asks with the helpers below).

use axum::extract::Request;
use axum::http::Method;
use tcr_raft::{namespace_of, Action, NamespaceRecord, StateReader, Visibility};

use super::{challenge, AccessError, Caller, Subject};
use crate::oci::route::{self, Route};
use crate::state::AuthState;

#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
    /// The organisation's `containerRegistry` feature gate is off.
    FeatureOff(String),
}

pub fn feature_off_message(org: &str) -> String {
    format!(
        "the containerRegistry feature is not enabled for organisation '{org}'; \
         ask the operator to enable it"
    )
}

/// What `subject` may do in namespace `ns` (None: it does not exist).
pub fn decide(
    state: &StateReader,
    subject: &Subject,
    ns: Option<&NamespaceRecord>,
    action: Action,
) -> Result<Decision, tcr_raft::ReadError> {
    if matches!(subject, Subject::Admin) {
        return Ok(Decision::Allow);
    }
    let Some(ns) = ns else {
        return Ok(Decision::Deny);
    };
    if let Some(org) = &ns.organisation {
        if !state
            .organisation(org)?
            .is_some_and(|o| o.registry_enabled())
        {
            return Ok(Decision::FeatureOff(org.clone()));
        }
    }
    let public_pull = action == Action::Pull && ns.visibility == Visibility::Public;
    Ok(match subject {
        Subject::Admin => Decision::Allow,
        Subject::Anonymous if public_pull => Decision::Allow,
        Subject::Anonymous => Decision::Deny,
        Subject::Credential(c) => {
            if !state
                .organisation(&c.organisation)?
                .is_some_and(|o| o.registry_enabled())
            {
                return Ok(Decision::FeatureOff(c.organisation.clone()));
            }
            let acts = c.actions_on(ns);
            if public_pull || acts.contains(&action) || acts.contains(&Action::Admin) {
                Decision::Allow
            } else {
                Decision::Deny
            }
        }
    })
}

/// Whether the caller may pull from `ns`: what listings show.
pub fn may_pull(state: &StateReader, caller: &Caller, ns: &NamespaceRecord) -> bool {
    decide(state, &caller.subject, Some(ns), Action::Pull).is_ok_and(|d| d == Decision::Allow)
}

/// The access an OCI request needs: repository and action.
fn needs(route: &Route, method: &Method) -> Option<(String, Action)> {
    let action = match (route, method) {
        (Route::Base | Route::Catalog, _) => return None,
        (Route::Manifest { .. }, &Method::PUT) => Action::Push,
        (Route::Manifest { .. } | Route::Blob { .. }, &Method::DELETE) => Action::Delete,
        (Route::UploadStart { .. } | Route::Upload { .. }, _) => Action::Push,
        _ => Action::Pull,
    };
    let name = match route {
        Route::Tags { name }
        | Route::Manifest { name, .. }
        | Route::Blob { name, .. }
        | Route::UploadStart { name }
        | Route::Upload { name, .. }
        | Route::Referrers { name, .. } => name.clone(),
        Route::Base | Route::Catalog => return None,
    };
    Some((name, action))
}

/// The scope a client should ask the token endpoint for.
fn scope_for(repo: &str, action: Action) -> String {
    let actions = match action {
        Action::Push => "pull,push",
        a => a.as_str(),
    };
    format!("repository:{repo}:{actions}")
}

/// Decide an OCI request before its handler runs. A mount from a
/// repository the caller may not pull is turned into a plain upload, as
/// the distribution spec allows.
pub async fn check_oci(
    st: &AuthState,
    caller: &Caller,
    req: &mut Request,
) -> Result<(), AccessError> {
    let Some(route) = route::parse(req.uri().path()) else {
        return Ok(());
    };
    // Parsed once: the OCI handler takes it from here.
    req.extensions_mut().insert(route.clone());
    let method = req.method().clone();
    let anonymous = matches!(caller.subject, Subject::Anonymous);
    let Some((repo, action)) = needs(&route, &method) else {
        // /v2/ and the catalog: any authenticated caller (or a token);
        // the catalog lists only what the caller may pull.
        if anonymous && (caller.token.is_none() || route == Route::Catalog) {
            return Err(unauthorized(st, None, None, "authentication required"));
        }
        return Ok(());
    };
    let state = st.meta.read().await?;
    let ns = state.namespace(namespace_of(&repo))?;
    let decision = decide(state, &caller.subject, ns.as_ref(), action)?;
    let token_grants = caller
        .token
        .as_ref()
        .is_none_or(|t| t.grants("repository", &repo, action.as_str()));
    match decision {
        Decision::FeatureOff(org) => return Err(AccessError::Denied(feature_off_message(&org))),
        Decision::Allow if token_grants => {}
        Decision::Allow => {
            return Err(unauthorized(
                st,
                Some(&scope_for(&repo, action)),
                Some("insufficient_scope"),
                "the token does not grant this access; request a token with the scope in WWW-Authenticate",
            ))
        }
        Decision::Deny if anonymous || caller.token.is_some() => {
            let msg = if anonymous {
                format!("authentication required to {} '{repo}'", action.as_str())
            } else {
                format!("requested access to '{repo}' is denied")
            };
            return Err(unauthorized(st, Some(&scope_for(&repo, action)), Some("insufficient_scope"), &msg));
        }
        Decision::Deny => {
            return Err(AccessError::Denied(format!(
                "requested access to '{repo}' is denied: the credential may not {} there",
                action.as_str()
            )))
        }
    }
    if let Route::UploadStart { .. } = route {
        strip_unauthorised_mount(state, caller, req)?;
    }
    Ok(())
}

fn strip_unauthorised_mount(
    state: &StateReader,
    caller: &Caller,
    req: &mut Request,
) -> Result<(), AccessError> {
    let q = crate::oci::query(req);
    let Some(from) = q.get("from") else {
        return Ok(());
    };
    let ns = state.namespace(namespace_of(from))?;
    let allowed = decide(state, &caller.subject, ns.as_ref(), Action::Pull)
        .is_ok_and(|d| d == Decision::Allow)
        && caller
            .token
            .as_ref()
            .is_none_or(|t| t.grants("repository", from, "pull"));
    if allowed {
        return Ok(());
    }
    let kept: Vec<(String, String)> = q
        .into_iter()
        .filter(|(k, _)| k != "mount" && k != "from")
        .collect();
    let query = serde_urlencoded::to_string(&kept).unwrap_or_default();
    let path = req.uri().path().to_string();
    let uri = if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    };
    if let Ok(u) = uri.parse() {
        *req.uri_mut() = u;
    }
    Ok(())
}

fn unauthorized(
    st: &AuthState,
    scope: Option<&str>,
    error: Option<&str>,
    message: &str,
) -> AccessError {
    AccessError::Unauthenticated {
        message: message.to_string(),
        challenge: Some(challenge(st, scope, error)),
    }
}

/// What a management call without credentials is told.
pub const MANAGEMENT_CREDENTIALS: &str =
    "authentication required: send the admin token or a credential secret as a Bearer token";

/// Management calls: tokens from `/v2/token` are for the registry API only.
fn management_subject(caller: &Caller) -> Result<&Subject, AccessError> {
    if caller.token.is_some() && !caller.is_admin() {
        return Err(AccessError::Unauthenticated {
            message:
                "registry tokens are not accepted here: use a credential secret or the admin token"
                    .into(),
            challenge: None,
        });
    }
    match &caller.subject {
        Subject::Anonymous => Err(AccessError::Unauthenticated {
            message: MANAGEMENT_CREDENTIALS.into(),
            challenge: None,
        }),
        s => Ok(s),
    }
}

/// Only the operator (bootstrap admin token).
pub fn require_admin(caller: &Caller) -> Result<(), AccessError> {
    match management_subject(caller)? {
        Subject::Admin => Ok(()),
        _ => Err(AccessError::Denied(
            "only the registry operator (admin token) may do this".into(),
        )),
    }
}

/// The operator, or an administrator credential of `org` (not confined to
/// a project), while the organisation's feature gate is on.
pub fn require_org_admin(
    state: &StateReader,
    caller: &Caller,
    org: &str,
) -> Result<(), AccessError> {
    match management_subject(caller)? {
        Subject::Admin => Ok(()),
        Subject::Credential(c) if c.organisation == org => {
            require_gate(state, org)?;
            if c.is_org_admin() {
                Ok(())
            } else {
                Err(AccessError::Denied(format!(
                    "the credential is not an administrator of organisation '{org}' (needs scope *:admin)"
                )))
            }
        }
        _ => Err(AccessError::Denied(format!(
            "no access to organisation '{org}'"
        ))),
    }
}

/// The operator, or any credential of `org` (to read its settings).
pub fn require_org_member(
    state: &StateReader,
    caller: &Caller,
    org: &str,
) -> Result<(), AccessError> {
    match management_subject(caller)? {
        Subject::Admin => Ok(()),
        Subject::Credential(c) if c.organisation == org => require_gate(state, org),
        _ => Err(AccessError::Denied(format!(
            "no access to organisation '{org}'"
        ))),
    }
}

pub fn require_gate(state: &StateReader, org: &str) -> Result<(), AccessError> {
    if state
        .organisation(org)?
        .is_some_and(|o| o.registry_enabled())
    {
        Ok(())
    } else {
        Err(AccessError::Denied(feature_off_message(org)))
    }
}

/// The namespace, if the caller may do `action` there. A namespace the
/// caller cannot see is reported as missing, so names do not leak.
pub fn require_on_namespace(
    state: &StateReader,
    caller: &Caller,
    name: &str,
    action: Action,
) -> Result<NamespaceRecord, AccessError> {
    let subject = management_subject(caller)?;
    let ns = state.namespace(name)?;
    let missing = || AccessError::NotFound(format!("namespace '{name}' does not exist"));
    match decide(state, subject, ns.as_ref(), action)? {
        Decision::Allow => ns.ok_or_else(missing),
        Decision::FeatureOff(org) => Err(AccessError::Denied(feature_off_message(&org))),
        Decision::Deny => match (&ns, decide(state, subject, ns.as_ref(), Action::Pull)?) {
            (Some(_), Decision::Allow) => Err(AccessError::Denied(format!(
                "the credential may not {} in namespace '{name}'",
                action.as_str()
            ))),
            _ => Err(missing()),
        },
    }
}
