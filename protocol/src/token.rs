//! Bootstrap tokens and node credentials.
//!
//! A bootstrap token is `armada1.<sha256 of the CA certificate, 64 hex>.<secret>`. The
//! fingerprint lets an agent pin the manager's CA before it trusts anything the manager
//! says (the same idea as k3s and Swarm join tokens); the secret proves the node was
//! built or flashed by the operator. A node credential, handed out at registration, is
//! `armadanode1.<node id>.<secret>`; the manager stores only its SHA-256.

use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use sha2::{Digest, Sha256};

const TOKEN_PREFIX: &str = "armada1";
const CREDENTIAL_PREFIX: &str = "armadanode1";
const SECRET_BYTES: usize = 24;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token must look like `armada1.<64 hex CA fingerprint>.<secret>`: {0}")]
    BadToken(&'static str),
    #[error("node credential must look like `armadanode1.<node id>.<secret>`: {0}")]
    BadCredential(&'static str),
}

/// SHA-256 of a DER certificate, as 64 lowercase hex characters.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct CaFingerprint(String);

impl CaFingerprint {
    pub fn of_der(der: &[u8]) -> Self {
        CaFingerprint(hex::encode(Sha256::digest(der)))
    }
    pub fn as_hex(&self) -> &str {
        &self.0
    }
    pub fn matches_der(&self, der: &[u8]) -> bool {
        constant_time_eq(self.0.as_bytes(), Self::of_der(der).0.as_bytes())
    }
}

impl FromStr for CaFingerprint {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, TokenError> {
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TokenError::BadToken(
                "the CA fingerprint is not 64 hex characters",
            ));
        }
        Ok(CaFingerprint(s.to_ascii_lowercase()))
    }
}

impl fmt::Display for CaFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The cluster's bootstrap token. `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    pub ca: CaFingerprint,
    secret: String,
}

impl BootstrapToken {
    /// A fresh token for the CA with this fingerprint.
    pub fn generate(ca: CaFingerprint) -> Self {
        BootstrapToken {
            ca,
            secret: random_secret(),
        }
    }
    pub fn secret(&self) -> &str {
        &self.secret
    }
    /// SHA-256 of the secret, what a manager stores to check tokens.
    pub fn secret_hash(&self) -> String {
        sha256_hex(self.secret.as_bytes())
    }
    /// The whole token as the operator pastes it. Callers must not log it.
    pub fn expose(&self) -> String {
        format!("{TOKEN_PREFIX}.{}.{}", self.ca, self.secret)
    }
}

impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BootstrapToken({TOKEN_PREFIX}.{}.<redacted>)", self.ca)
    }
}

impl FromStr for BootstrapToken {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, TokenError> {
        let mut parts = s.trim().splitn(3, '.');
        let (prefix, ca, secret) = match (parts.next(), parts.next(), parts.next()) {
            (Some(p), Some(c), Some(s)) => (p, c, s),
            _ => {
                return Err(TokenError::BadToken(
                    "it does not have three dot-separated parts",
                ))
            }
        };
        if prefix != TOKEN_PREFIX {
            return Err(TokenError::BadToken("it does not start with `armada1.`"));
        }
        if !is_secret(secret) {
            return Err(TokenError::BadToken(
                "the secret is not 16-128 URL-safe characters",
            ));
        }
        Ok(BootstrapToken {
            ca: ca.parse()?,
            secret: secret.to_string(),
        })
    }
}

/// A node's own credential, sent as `Authorization: Bearer <credential>`.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeCredential {
    pub node_id: String,
    secret: String,
}

impl NodeCredential {
    pub fn generate(node_id: &str) -> Self {
        NodeCredential {
            node_id: node_id.to_string(),
            secret: random_secret(),
        }
    }
    /// SHA-256 of the secret: what the manager stores.
    pub fn secret_hash(&self) -> String {
        sha256_hex(self.secret.as_bytes())
    }
    /// Constant-time check against a stored hash.
    pub fn matches_hash(&self, stored_hash: &str) -> bool {
        constant_time_eq(self.secret_hash().as_bytes(), stored_hash.as_bytes())
    }
    /// The whole credential, for the Authorization header and the 0600 file. Never log it.
    pub fn expose(&self) -> String {
        format!("{CREDENTIAL_PREFIX}.{}.{}", self.node_id, self.secret)
    }
}

impl fmt::Debug for NodeCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeCredential({}, <redacted>)", self.node_id)
    }
}

impl FromStr for NodeCredential {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, TokenError> {
        let s = s.trim();
        let rest = s
            .strip_prefix(CREDENTIAL_PREFIX)
            .and_then(|r| r.strip_prefix('.'))
            .ok_or(TokenError::BadCredential(
                "it does not start with `armadanode1.`",
            ))?;
        let (node_id, secret) = rest
            .rsplit_once('.')
            .ok_or(TokenError::BadCredential("no secret part"))?;
        if node_id.is_empty()
            || !node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(TokenError::BadCredential("the node id is not alphanumeric"));
        }
        if !is_secret(secret) {
            return Err(TokenError::BadCredential(
                "the secret is not 16-128 URL-safe characters",
            ));
        }
        Ok(NodeCredential {
            node_id: node_id.to_string(),
            secret: secret.to_string(),
        })
    }
}

fn random_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn is_secret(s: &str) -> bool {
    (16..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Compares without an early exit, so timing does not reveal how much of a secret matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp() -> CaFingerprint {
        CaFingerprint::of_der(b"not really a certificate")
    }

    #[test]
    fn token_round_trips_and_hides_its_secret() {
        let t = BootstrapToken::generate(fp());
        let s = t.expose();
        assert!(s.starts_with("armada1."));
        let back: BootstrapToken = s.parse().unwrap();
        assert_eq!(back, t);
        assert!(!format!("{t:?}").contains(t.secret()));
    }

    #[test]
    fn malformed_tokens_are_refused_with_a_reason() {
        for bad in [
            "",
            "armada1",
            "armada2.aa.bbbbbbbbbbbbbbbbbbbb",
            "armada1.xyz.bbbbbbbbbbbbbbbbbbbb",
        ] {
            assert!(bad.parse::<BootstrapToken>().is_err(), "{bad}");
        }
        let short = format!("armada1.{}.short", fp());
        assert_eq!(
            short.parse::<BootstrapToken>().unwrap_err(),
            TokenError::BadToken("the secret is not 16-128 URL-safe characters")
        );
    }

    #[test]
    fn credential_round_trips_and_checks_its_hash() {
        let c = NodeCredential::generate("n-1a2b");
        let back: NodeCredential = c.expose().parse().unwrap();
        assert_eq!(back.node_id, "n-1a2b");
        assert!(back.matches_hash(&c.secret_hash()));
        let other = NodeCredential::generate("n-1a2b");
        assert!(!other.matches_hash(&c.secret_hash()));
        assert!(!format!("{c:?}").contains(&c.secret));
    }

    #[test]
    fn fingerprint_matches_only_its_certificate() {
        let f = fp();
        assert!(f.matches_der(b"not really a certificate"));
        assert!(!f.matches_der(b"another certificate"));
        assert_eq!(f.as_hex().len(), 64);
    }
}
