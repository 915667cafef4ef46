//! Who is calling, and what they may do.
//!
//! A request carries one of: the bootstrap admin token (Bearer, or as the
//! Basic password, which is what `docker login` sends); a credential secret
//! (Bearer or Basic password); or a token from `/v2/token` (Bearer JWT).
//! Without any it is anonymous, which may pull from public namespaces.
//! Without an admin token configured the node is open: every caller is the
//! admin, and the node only listens on loopback (checked at start).

pub mod access;
pub mod errors;
pub mod secrets;
pub mod throttle;
pub mod token_endpoint;
pub mod tokens;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use subtle::ConstantTimeEq;
use tcr_raft::CredentialRecord;

use crate::state::AuthState;
pub use errors::AccessError;
use tcr_storage::clock::now_secs;
use tokens::Claims;

/// Who the request acts for.
#[derive(Clone, Debug)]
pub enum Subject {
    Admin,
    Anonymous,
    Credential(Box<CredentialRecord>),
}

/// The authenticated caller: a subject, and when it came with a token, what
/// the token grants (the subject's current rights still apply on top).
#[derive(Clone, Debug)]
pub struct Caller {
    pub subject: Subject,
    pub token: Option<Claims>,
}

impl Caller {
    pub fn admin() -> Caller {
        Caller {
            subject: Subject::Admin,
            token: None,
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(self.subject, Subject::Admin)
    }

    pub fn credential(&self) -> Option<&CredentialRecord> {
        match &self.subject {
            Subject::Credential(c) => Some(c),
            _ => None,
        }
    }
}

/// Why presented credentials were not accepted (always a 401).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the credentials are not valid")]
    BadCredentials,
    #[error("the credential has expired or was revoked")]
    Unusable,
    #[error("{0}")]
    BadToken(#[from] tokens::TokenError),
    #[error("the metadata store is unavailable: {0}")]
    Unavailable(String),
    #[error("too many failed attempts for this credential or address; retry in {} s", crate::rate_limits::retry_after_secs(*.0))]
    Throttled(Duration),
    #[error("too many credential checks are waiting on this node; retry shortly")]
    Busy,
    #[error("the session was signed out")]
    SessionEnded,
}

impl AuthError {
    /// The `tcr_auth_failures_total` reason.
    fn reason(&self) -> &'static str {
        match self {
            AuthError::BadCredentials => "bad_credentials",
            AuthError::Unusable => "unusable",
            AuthError::BadToken(_) => "bad_token",
            AuthError::Unavailable(_) => "unavailable",
            AuthError::Throttled(_) => "throttled",
            AuthError::Busy => "busy",
            AuthError::SessionEnded => "session_ended",
        }
    }
}

pub struct Auth {
    admin_token: Option<String>,
    pub secrets: secrets::SecretCache,
    pub throttle: throttle::Throttle,
    pub tokens: tokens::Tokens,
    /// `service` in challenges and the audience of tokens.
    pub service: String,
    /// The token endpoint's URL in challenges: from `--public-url` or the
    /// node's advertised address, never from the request's Host header.
    pub realm: String,
}

impl Auth {
    pub fn new(
        admin_token: Option<String>,
        service: String,
        token_lifetime_secs: u64,
        public_base: &str,
    ) -> Self {
        Auth {
            admin_token: admin_token.filter(|t| !t.is_empty()),
            secrets: Default::default(),
            throttle: throttle::Throttle::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
            tokens: tokens::Tokens::new(token_lifetime_secs),
            service,
            realm: format!("{public_base}/v2/token"),
        }
    }

    pub fn is_open(&self) -> bool {
        self.admin_token.is_none()
    }

    fn is_admin_token(&self, presented: &str) -> bool {
        match &self.admin_token {
            None => false,
            Some(t) => t.as_bytes().ct_eq(presented.as_bytes()).into(),
        }
    }

    /// The subject a password (admin token or credential secret) stands
    /// for. The record is looked at before any hashing (an unknown, revoked
    /// or expired credential costs no argon2), and argon2 runs only within
    /// the throttle's bounds.
    pub async fn password_subject(
        &self,
        st: &AuthState,
        password: &str,
        peer: Option<IpAddr>,
    ) -> Result<Subject, AuthError> {
        if self.is_admin_token(password) {
            return Ok(Subject::Admin);
        }
        let address = peer.map(throttle::Key::Address);
        let fail = |e: AuthError| {
            if let Some(a) = &address {
                self.throttle.failed(a.clone());
            }
            Err(e)
        };
        let Some(id) = secrets::id_of(password) else {
            return fail(AuthError::BadCredentials);
        };
        let Some(rec) = self.credential(st, id).await? else {
            return fail(AuthError::BadCredentials);
        };
        if !rec.usable_at(now_secs()) {
            return fail(AuthError::Unusable);
        }
        if self.secrets.remembered(id, password) {
            return Ok(Subject::Credential(Box::new(rec)));
        }
        let credential = throttle::Key::Credential(id.to_string());
        let throttled = || {
            [Some(&credential), address.as_ref()]
                .into_iter()
                .flatten()
                .find_map(|k| self.throttle.check(k).err())
                .map(AuthError::Throttled)
        };
        if let Some(e) = throttled() {
            return Err(e);
        }
        let Some(_slot) = self.throttle.slot().await else {
            return Err(AuthError::Busy);
        };
        // Others may have failed for this key while this one waited.
        if let Some(e) = throttled() {
            return Err(e);
        }
        if !self.secrets.verify(id, password, &rec.secret_hash).await {
            self.throttle.failed(credential);
            return fail(AuthError::BadCredentials);
        }
        self.throttle.succeeded(&credential);
        Ok(Subject::Credential(Box::new(rec)))
    }

    /// A credential record, reading through the read index when this node
    /// does not know it yet (created a moment ago through another node).
    async fn credential(
        &self,
        st: &AuthState,
        id: &str,
    ) -> Result<Option<CredentialRecord>, AuthError> {
        let unavailable = |e: &dyn std::fmt::Display| AuthError::Unavailable(e.to_string());
        if let Some(c) = st
            .meta
            .reader()
            .credential(id)
            .map_err(|e| unavailable(&e))?
        {
            return Ok(Some(c));
        }
        let state = st.meta.read().await.map_err(|e| unavailable(&e))?;
        state.credential(id).map_err(|e| unavailable(&e))
    }

    /// Authenticate a request from its Authorization header.
    pub async fn caller(
        &self,
        st: &AuthState,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
    ) -> Result<Caller, AuthError> {
        if self.is_open() {
            return Ok(Caller::admin());
        }
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return Ok(Caller {
                subject: Subject::Anonymous,
                token: None,
            });
        };
        if let Some(password) = basic_password(value) {
            let subject = self.password_subject(st, &password, peer).await?;
            return Ok(Caller {
                subject,
                token: None,
            });
        }
        let Some(bearer) = value.strip_prefix("Bearer ").map(str::trim) else {
            return Err(AuthError::BadCredentials);
        };
        if bearer.matches('.').count() != 2 {
            let subject = self.password_subject(st, bearer, peer).await?;
            return Ok(Caller {
                subject,
                token: None,
            });
        }
        let claims = self.tokens.verify(&st.meta, bearer, &self.service).await?;
        let subject = self.subject_of(st, &claims).await?;
        Ok(Caller {
            subject,
            token: Some(claims),
        })
    }

    /// The caller a console session stands for: the token must be one the
    /// console issued (its own audience, so it is not a registry token and
    /// a registry token is not a session), and the credential behind it
    /// must still be usable. The session acts as the credential itself.
    pub async fn session_caller(
        &self,
        st: &AuthState,
        token: &str,
    ) -> Result<(Caller, Claims), AuthError> {
        let claims = self
            .tokens
            .verify(&st.meta, token, &self.session_audience())
            .await?;
        // Signed out (on any node): this node's copy of the list, which
        // trails the leader by the replication delay.
        let ended = st
            .meta
            .reader()
            .session_ended(&claims.jti)
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        if ended {
            return Err(AuthError::SessionEnded);
        }
        let caller = Caller {
            subject: self.subject_of(st, &claims).await?,
            token: None,
        };
        Ok((caller, claims))
    }

    /// The audience of console sessions.
    pub fn session_audience(&self) -> String {
        format!("{}#console", self.service)
    }

    /// Who a verified token's `sub` names, as of now.
    async fn subject_of(&self, st: &AuthState, claims: &Claims) -> Result<Subject, AuthError> {
        Ok(match claims.sub.as_str() {
            "admin" => Subject::Admin,
            "anonymous" => Subject::Anonymous,
            sub => {
                let id = sub
                    .strip_prefix("credential:")
                    .ok_or(AuthError::BadCredentials)?;
                let rec = self.credential(st, id).await?.ok_or(AuthError::Unusable)?;
                // Revocation and expiry apply to tokens already issued.
                if !rec.usable_at(now_secs()) {
                    return Err(AuthError::Unusable);
                }
                Subject::Credential(Box::new(rec))
            }
        })
    }
}

/// The password of a `Basic` Authorization header (the user name is not
/// needed: a secret names its credential).
pub fn basic_password(value: &str) -> Option<String> {
    let b64 = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let pair = String::from_utf8(decoded).ok()?;
    pair.split_once(':').map(|(_, p)| p.to_string())
}

/// The `Bearer realm=...` challenge docker and containerd follow to the
/// token endpoint.
pub fn challenge(st: &AuthState, scope: Option<&str>, error: Option<&str>) -> String {
    let mut c = format!(
        "Bearer realm=\"{}\",service=\"{}\"",
        st.auth.realm, st.auth.service
    );
    if let Some(s) = scope {
        c.push_str(&format!(",scope=\"{s}\""));
    }
    if let Some(e) = error {
        c.push_str(&format!(",error=\"{e}\""));
    }
    c
}

/// The door of `/v2` and `/v1`: authenticate, decide OCI access from the
/// route, and hand the caller to the handlers. A refusal comes back as an
/// `AccessError` for the façade's own middleware to word
/// (`oci::authorise`, `api::authorise`).
pub async fn require(
    st: Arc<AuthState>,
    req: Request,
    next: Next,
) -> Result<Response, AccessError> {
    crate::metadata::one_read_per_request(authorise(st, req, next)).await
}

async fn authorise(
    st: Arc<AuthState>,
    mut req: Request,
    next: Next,
) -> Result<Response, AccessError> {
    let peer = peer_ip(&req);
    let caller = match req.extensions_mut().remove::<ConsoleCaller>() {
        Some(c) => c.0,
        None => st
            .auth
            .caller(&st, req.headers(), peer)
            .await
            .map_err(|e| refusal(&st, e))?,
    };
    if let Some(kind) = crate::rate_limits::Kind::of(req.method(), req.uri().path()) {
        st.rate_limits
            .check(st.meta.reader(), &caller, peer, kind)
            .map_err(limited)?;
    }
    if req.uri().path().starts_with("/v2") && !caller.is_admin() {
        access::check_oci(&st, &caller, &mut req).await?;
    }
    let origin = crate::audit::Origin::of(&caller, peer);
    req.extensions_mut().insert(caller);
    Ok(crate::audit::within(origin, next.run(req)).await)
}

/// 429 `TOOMANYREQUESTS` with `Retry-After`, as Docker Hub answers.
fn limited(e: crate::rate_limits::Limited) -> AccessError {
    AccessError::RetryLater {
        status: StatusCode::TOO_MANY_REQUESTS,
        message: e.to_string(),
        after_secs: crate::rate_limits::retry_after_secs(e.retry_after),
    }
}

/// Count and log a refusal (never the secret).
pub fn count_failure(st: &AuthState, e: &AuthError) {
    st.metrics
        .auth_failures
        .with_label_values(&[e.reason()])
        .inc();
    tracing::info!(reason = e.reason(), "authentication refused: {e}");
}

/// The client's address: the connection's on the registry port, or the
/// one the forwarding node named for an upload request it passed on (see
/// `oci::upload_proxy`).
pub fn peer_ip(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .or_else(|| req.extensions().get::<ForwardedClient>().map(|f| f.0))
}

/// The caller a console page acts for, already authenticated from its
/// session cookie. The console sets it on the requests it sends through the
/// registry's own routes in-process, so a page is allowed exactly what the
/// API would allow the same credential; a request from the network cannot
/// carry it.
#[derive(Clone, Debug)]
pub struct ConsoleCaller(pub Caller);

/// The client address a peer node forwarded a request for.
#[derive(Clone, Copy, Debug)]
pub struct ForwardedClient(pub IpAddr);

/// Credentials that were not accepted: 401 (with a challenge for the
/// registry API), 429 or 503 with `Retry-After`. Counted and logged (never
/// the secret).
pub fn refusal(st: &AuthState, e: AuthError) -> AccessError {
    count_failure(st, &e);
    match e {
        AuthError::Throttled(wait) => AccessError::RetryLater {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: e.to_string(),
            after_secs: crate::rate_limits::retry_after_secs(wait),
        },
        AuthError::Busy => AccessError::RetryLater {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: e.to_string(),
            after_secs: 1,
        },
        AuthError::Unavailable(m) => AccessError::Unavailable(m),
        e => AccessError::Unauthenticated {
            message: format!("authentication failed: {e}"),
            challenge: Some(challenge(st, None, Some("invalid_token"))),
        },
    }
}
