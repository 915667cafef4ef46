//! Credential secrets: `tcr_<id>_<random>`. The id finds the record; the
//! random part (256 bits) is checked against the argon2 hash in Raft.
//! Verified secrets are remembered for a while by their SHA-256, so a
//! client sending Basic auth on every request pays argon2 once; revocation
//! and expiry are still checked on every request, from the record.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

const PREFIX: &str = "tcr_";
/// How long a verified secret skips argon2.
const REMEMBER: Duration = Duration::from_secs(600);
/// Bound on remembered secrets (one entry per distinct secret in use).
const REMEMBER_MAX: usize = 10_000;

/// A new credential id and secret. The secret is shown to the caller once.
pub fn generate() -> (String, String) {
    let mut rng = rand::rng();
    let mut id = [0u8; 8];
    rng.fill_bytes(&mut id);
    let mut random = [0u8; 32];
    rng.fill_bytes(&mut random);
    let id = hex::encode(id);
    let secret = format!(
        "{PREFIX}{id}_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
    );
    (id, secret)
}

/// The credential id a secret names, if it has the shape of one.
pub fn id_of(secret: &str) -> Option<&str> {
    let rest = secret.strip_prefix(PREFIX)?;
    let (id, random) = rest.split_once('_')?;
    (id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) && random.len() >= 40)
        .then_some(id)
}

/// argon2id (the crate's defaults: 19 MiB, 2 passes), PHC string.
pub fn hash(secret: &str) -> String {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt");
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .expect("argon2 with default parameters hashes any input")
        .to_string()
}

fn verify_slow(secret: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(secret.as_bytes(), &h)
            .is_ok()
    })
}

#[derive(Default)]
pub struct SecretCache {
    verified: Mutex<HashMap<[u8; 32], (String, Instant)>>,
}

impl SecretCache {
    /// Whether `secret` was verified for credential `id` a short while ago
    /// (no argon2: a SHA-256 and a map lookup).
    pub fn remembered(&self, id: &str, secret: &str) -> bool {
        let key: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let map = self.verified.lock().expect("secret cache lock");
        map.get(&key)
            .is_some_and(|(known, at)| known == id && at.elapsed() < REMEMBER)
    }

    /// Whether `secret` matches the hash `phc` of credential `id`.
    pub async fn verify(&self, id: &str, secret: &str, phc: &str) -> bool {
        if self.remembered(id, secret) {
            return true;
        }
        let key: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let (s, p) = (secret.to_string(), phc.to_string());
        // argon2 takes tens of milliseconds by design: off the async threads.
        let ok = tokio::task::spawn_blocking(move || verify_slow(&s, &p))
            .await
            .unwrap_or(false);
        if ok {
            let mut map = self.verified.lock().expect("secret cache lock");
            if map.len() >= REMEMBER_MAX {
                map.retain(|_, (_, at)| at.elapsed() < REMEMBER);
                if map.len() >= REMEMBER_MAX {
                    map.clear();
                }
            }
            map.insert(key, (id.to_string(), Instant::now()));
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_name_their_id_and_verify_against_their_hash() {
        let (id, secret) = generate();
        assert_eq!(id_of(&secret), Some(id.as_str()));
        let phc = hash(&secret);
        assert!(phc.starts_with("$argon2id$"));
        assert!(
            !phc.contains(&secret[20..]),
            "the hash must not contain the secret"
        );
        assert!(verify_slow(&secret, &phc));
        let mut wrong = secret.clone();
        wrong.pop();
        wrong.push(if secret.ends_with('A') { 'B' } else { 'A' });
        assert!(!verify_slow(&wrong, &phc));
    }

    #[test]
    fn malformed_secrets_name_no_id() {
        for s in [
            "",
            "tcr_",
            "tcr_abc_def",
            "admin",
            "tcr_zzzzzzzzzzzzzzzz_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert_eq!(id_of(s), None, "{s}");
        }
    }

    #[tokio::test]
    async fn the_cache_never_accepts_a_secret_for_another_id() {
        let cache = SecretCache::default();
        let (id, secret) = generate();
        let phc = hash(&secret);
        assert!(cache.verify(&id, &secret, &phc).await);
        assert!(
            !cache
                .verify("0000000000000000", &secret, "$argon2id$bogus")
                .await
        );
        assert!(cache.verify(&id, &secret, &phc).await);
    }
}
