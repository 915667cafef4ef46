//! OCI digests (`algorithm:encoded`). tcr stores sha256 content; other
//! registered algorithms parse but are reported as unsupported.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest '{0}' is not of the form algorithm:hex")]
    Malformed(String),
    #[error("digest algorithm '{0}' is not supported (only sha256)")]
    Unsupported(String),
}

impl Digest {
    pub fn sha256_hex(&self) -> &str {
        &self.hex
    }

    pub fn from_sha256_bytes(bytes: &[u8]) -> Digest {
        Digest {
            hex: hex::encode(bytes),
        }
    }

    pub fn of(content: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest::from_sha256_bytes(&sha2::Sha256::digest(content))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

fn is_algorithm(a: &str) -> bool {
    // algorithm-component ([+._-] algorithm-component)*, components [a-z0-9]+
    !a.is_empty()
        && a.split(['+', '.', '_', '-']).all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || DigestError::Malformed(s.chars().take(200).collect());
        let (algo, enc) = s.split_once(':').ok_or_else(malformed)?;
        if !is_algorithm(algo)
            || enc.is_empty()
            || !enc
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'=' || b == b'_' || b == b'-')
        {
            return Err(malformed());
        }
        match algo {
            "sha256" => {
                if enc.len() != 64 || !enc.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    return Err(malformed());
                }
                Ok(Digest {
                    hex: enc.to_string(),
                })
            }
            "sha512" => Err(DigestError::Unsupported(algo.to_string())),
            _ => Err(DigestError::Unsupported(algo.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn sha256_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let d = Digest::of(&bytes);
            prop_assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        }

        #[test]
        fn arbitrary_strings_never_panic(s in ".{0,100}") {
            let _ = s.parse::<Digest>();
        }

        #[test]
        fn wrong_length_hex_is_malformed(hex in "[0-9a-f]{1,63}|[0-9a-f]{65,80}") {
            let parsed = format!("sha256:{hex}").parse::<Digest>();
            prop_assert!(matches!(parsed, Err(DigestError::Malformed(_))));
        }
    }

    #[test]
    fn uppercase_hex_is_rejected() {
        let s = format!("sha256:{}", "A".repeat(64));
        assert!(matches!(
            s.parse::<Digest>(),
            Err(DigestError::Malformed(_))
        ));
    }

    #[test]
    fn other_algorithms_are_unsupported() {
        let s = format!("sha512:{}", "a".repeat(128));
        assert_eq!(
            s.parse::<Digest>(),
            Err(DigestError::Unsupported("sha512".into()))
        );
    }
}
