//! Bearer tokens as the Docker token spec describes them: JWTs (EdDSA,
//! Ed25519) whose `access` claim lists what the holder may do to which
//! repository. The signing keys live in Raft, so every node issues and
//! verifies the same tokens; `tcr keys rotate` adds a key and retires the
//! old ones once every token they signed has expired.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tcr_raft::{Command, SigningKeyRecord};

use crate::metadata::MetaError;
use crate::metadata::Metadata;
use tcr_storage::clock::now_secs;

/// Allowed clock difference between the nodes of one region (NTP keeps
/// them far closer).
pub const LEEWAY_SECS: u64 = 5;
/// How long a parsed key record is trusted (well under a token lifetime).
const KEY_CACHE: Duration = Duration::from_secs(60);
/// `iss` of every token, and the default `service` (`aud`).
pub const ISSUER: &str = "tcr";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceAccess {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// `admin`, `anonymous`, or `credential:<id>`.
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    #[serde(default)]
    pub access: Vec<ResourceAccess>,
}

impl Claims {
    /// Whether the token grants `action` on repository `name`.
    pub fn grants(&self, kind: &str, name: &str, action: &str) -> bool {
        self.access.iter().any(|a| {
            a.kind == kind && a.name == name && a.actions.iter().any(|x| x == action || x == "*")
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed or its signature does not verify: {0}")]
    Invalid(String),
    #[error("the token was signed by an unknown or retired key")]
    UnknownKey,
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("reading the signing keys: {0}")]
    Read(#[from] tcr_raft::ReadError),
}

/// A fresh Ed25519 key pair as a Raft record.
pub fn new_key(now: u64) -> SigningKeyRecord {
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let private_pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .expect("an Ed25519 key encodes as PKCS#8")
        .to_string();
    let public_pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("an Ed25519 public key encodes as SPKI");
    let kid = hex::encode(&Sha256::digest(public_pem.as_bytes())[..12]);
    SigningKeyRecord {
        kid,
        private_pem,
        public_pem,
        created_at: now,
        retire_at: None,
    }
}

/// The key new tokens are signed with: the newest one not retired.
fn active(keys: &[SigningKeyRecord]) -> Option<&SigningKeyRecord> {
    keys.iter()
        .filter(|k| k.retire_at.is_none())
        .max_by_key(|k| (k.created_at, k.kid.clone()))
}

/// A parsed public key, its retire time, and when it was read.
struct CachedKey {
    key: DecodingKey,
    retire_at: Option<u64>,
    read_at: Instant,
}

pub struct Tokens {
    /// Lifetime of an access token (default 300 s, Distribution's and
    /// Docker Hub's).
    pub lifetime_secs: u64,
    /// Parsed public keys by key id (PEM parsing is slower than verifying).
    decoding: Mutex<HashMap<String, CachedKey>>,
}

impl Tokens {
    pub fn new(lifetime_secs: u64) -> Tokens {
        Tokens {
            lifetime_secs,
            decoding: Mutex::default(),
        }
    }

    /// Sign a token for `sub` granting `access`.
    pub async fn issue(
        &self,
        meta: &Metadata,
        sub: &str,
        service: &str,
        access: Vec<ResourceAccess>,
    ) -> Result<(String, u64), TokenError> {
        self.sign(meta, sub, service, access, self.lifetime_secs, None)
            .await
    }

    /// A console session's token: no registry access, its own audience and
    /// lifetime, and the session's id as `jti` (kept when it is renewed).
    pub async fn issue_session(
        &self,
        meta: &Metadata,
        sub: &str,
        audience: &str,
        lifetime_secs: u64,
        session_id: Option<String>,
    ) -> Result<(String, u64), TokenError> {
        self.sign(meta, sub, audience, vec![], lifetime_secs, session_id)
            .await
    }

    async fn sign(
        &self,
        meta: &Metadata,
        sub: &str,
        service: &str,
        access: Vec<ResourceAccess>,
        lifetime_secs: u64,
        jti: Option<String>,
    ) -> Result<(String, u64), TokenError> {
        let key = self.signing_key(meta).await?;
        let now = now_secs();
        let jti = jti.unwrap_or_else(|| {
            let mut b = [0u8; 16];
            rand::rng().fill_bytes(&mut b);
            hex::encode(b)
        });
        let claims = Claims {
            iss: ISSUER.into(),
            sub: sub.into(),
            aud: service.into(),
            exp: now + lifetime_secs,
            nbf: now.saturating_sub(LEEWAY_SECS),
            iat: now,
            jti,
            access,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        let enc = EncodingKey::from_ed_pem(key.private_pem.as_bytes())
            .map_err(|e| TokenError::Invalid(format!("signing key {}: {e}", key.kid)))?;
        let token = jsonwebtoken::encode(&header, &claims, &enc)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        Ok((token, now))
    }

    async fn signing_key(&self, meta: &Metadata) -> Result<SigningKeyRecord, TokenError> {
        if let Some(k) = active(&meta.reader().signing_keys()?) {
            return Ok(k.clone());
        }
        // The first token of a new cluster: make a key. Two nodes racing
        // here both add one; the later retires the earlier, which keeps
        // verifying until its tokens expire.
        let now = now_secs();
        crate::audit::within(
            crate::audit::Origin::system("keys"),
            self.add_key(meta, now),
        )
        .await?;
        let keys = meta.read().await?.signing_keys()?;
        active(&keys).cloned().ok_or(TokenError::UnknownKey)
    }

    /// Add a new signing key; the current ones verify for one more token
    /// lifetime (plus leeway) and then retire.
    pub async fn add_key(&self, meta: &Metadata, now: u64) -> Result<String, TokenError> {
        let key = new_key(now);
        let kid = key.kid.clone();
        meta.write(Command::AddSigningKey {
            key,
            retire_others_at: now + self.lifetime_secs + 2 * LEEWAY_SECS,
        })
        .await?;
        Ok(kid)
    }

    /// Check signature, algorithm, issuer, audience and lifetime.
    pub async fn verify(
        &self,
        meta: &Metadata,
        token: &str,
        service: &str,
    ) -> Result<Claims, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let key = match self.decoding_key(meta, &kid, false)? {
            Some(k) => k,
            // Signed a moment ago by a key this node has not applied yet.
            None => {
                meta.read().await?;
                self.decoding_key(meta, &kid, true)?
                    .ok_or(TokenError::UnknownKey)?
            }
        };
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_audience(&[service]);
        v.set_issuer(&[ISSUER]);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        jsonwebtoken::decode::<Claims>(token, &key, &v)
            .map(|d| d.claims)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }

    fn decoding_key(
        &self,
        meta: &Metadata,
        kid: &str,
        reload: bool,
    ) -> Result<Option<DecodingKey>, TokenError> {
        let now = now_secs();
        let usable = |retire: Option<u64>| retire.is_none_or(|r| now < r);
        if !reload {
            let cache = self.decoding.lock().expect("key cache lock");
            // A rotation retires a key a whole token lifetime later, so a
            // cached record younger than that cannot be wrong about it.
            if let Some(c) = cache.get(kid) {
                if c.read_at.elapsed() < KEY_CACHE {
                    return Ok(usable(c.retire_at).then(|| c.key.clone()));
                }
            }
        }
        let keys = meta.reader().signing_keys()?;
        let Some(rec) = keys.into_iter().find(|k| k.kid == kid) else {
            return Ok(None);
        };
        let key = DecodingKey::from_ed_pem(rec.public_pem.as_bytes())
            .map_err(|e| TokenError::Invalid(format!("key {kid}: {e}")))?;
        self.decoding.lock().expect("key cache lock").insert(
            kid.to_string(),
            CachedKey {
                key: key.clone(),
                retire_at: rec.retire_at,
                read_at: Instant::now(),
            },
        );
        Ok(usable(rec.retire_at).then_some(key))
    }
}
