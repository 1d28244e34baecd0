//! Bootstrap tokens and node credentials.
//!
//! A bootstrap token is `armada1.<sha256 of the CA certificate, 64 hex>.<secret>`. The
//! fingerprint lets an agent pin the manager's CA before it trusts anything the manager
//! says (the same idea as k3s and Swarm join tokens); the secret proves the node was
//! built or flashed by the operator.
//!
//! A node credential, handed out at registration, is
//! `armadanode2.<node id>.<secret>.<mac>`: `mac` is an HMAC-SHA256 over the node id and
//! the secret with the cluster's [`CredentialKey`] (`credential-key`, made by `armada
//! cluster init` and carried to the manager's card). The manager stores only the
//! secret's SHA-256 (so a re-registration makes the previous credential stop working),
//! and a manager that lost its state can still tell its own nodes' credentials from
//! forgeries with the key alone: that is what lets it re-adopt them. Credentials of
//! the first format, `armadanode1.<node id>.<secret>`, carry no MAC: they work only
//! against a manager that still has their hash.

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

const TOKEN_PREFIX: &str = "armada1";
const CREDENTIAL_PREFIX: &str = "armadanode1";
const CREDENTIAL_V2_PREFIX: &str = "armadanode2";
const SECRET_BYTES: usize = 24;
const KEY_BYTES: usize = 32;
/// Domain separation: this key signs nothing else.
const MAC_CONTEXT: &[u8] = b"armada node credential v2\0";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token must look like `armada1.<64 hex CA fingerprint>.<secret>`: {0}")]
    BadToken(&'static str),
    #[error("node credential must look like `armadanode2.<node id>.<secret>.<mac>`: {0}")]
    BadCredential(&'static str),
    #[error("credential key must be 64 hex characters on one line (`armada cluster init` writes it): {0}")]
    BadKey(&'static str),
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
    /// HMAC over node id and secret; `None` for a first-format credential, or one not
    /// yet signed.
    mac: Option<String>,
}

impl NodeCredential {
    /// A fresh unsigned credential; [`CredentialKey::sign`] makes it verifiable.
    pub fn generate(node_id: &str) -> Self {
        NodeCredential {
            node_id: node_id.to_string(),
            secret: random_secret(),
            mac: None,
        }
    }
    /// SHA-256 of the secret: what the manager stores. The MAC is not part of it, so a
    /// credential keeps its hash when signed.
    pub fn secret_hash(&self) -> String {
        sha256_hex(self.secret.as_bytes())
    }
    /// Constant-time check against a stored hash.
    pub fn matches_hash(&self, stored_hash: &str) -> bool {
        constant_time_eq(self.secret_hash().as_bytes(), stored_hash.as_bytes())
    }
    /// True when the credential carries a MAC (it may still be a wrong one).
    pub fn is_signed(&self) -> bool {
        self.mac.is_some()
    }
    /// The whole credential, for the Authorization header and the 0600 file. Never log it.
    pub fn expose(&self) -> String {
        match &self.mac {
            Some(mac) => format!(
                "{CREDENTIAL_V2_PREFIX}.{}.{}.{mac}",
                self.node_id, self.secret
            ),
            None => format!("{CREDENTIAL_PREFIX}.{}.{}", self.node_id, self.secret),
        }
    }
    /// True for a string that claims to be a node credential (either format), so the
    /// caller can tell it from an admin token before parsing.
    pub fn looks_like(s: &str) -> bool {
        s.starts_with("armadanode1.") || s.starts_with("armadanode2.")
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
        let (rest, signed) = if let Some(r) = s.strip_prefix("armadanode2.") {
            (r, true)
        } else if let Some(r) = s.strip_prefix("armadanode1.") {
            (r, false)
        } else {
            return Err(TokenError::BadCredential(
                "it does not start with `armadanode2.` (or the older `armadanode1.`)",
            ));
        };
        let (rest, mac) = if signed {
            let (rest, mac) = rest
                .rsplit_once('.')
                .ok_or(TokenError::BadCredential("no MAC part"))?;
            if mac.len() != 64 || !mac.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(TokenError::BadCredential(
                    "the MAC is not 64 hex characters",
                ));
            }
            (rest, Some(mac.to_ascii_lowercase()))
        } else {
            (rest, None)
        };
        let (node_id, secret) = rest
            .rsplit_once('.')
            .ok_or(TokenError::BadCredential("no secret part"))?;
        if node_id.is_empty()
            || node_id.len() > 64
            || !node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(TokenError::BadCredential(
                "the node id is not 1-64 alphanumeric characters",
            ));
        }
        if !is_secret(secret) {
            return Err(TokenError::BadCredential(
                "the secret is not 16-128 URL-safe characters",
            ));
        }
        Ok(NodeCredential {
            node_id: node_id.to_string(),
            secret: secret.to_string(),
            mac,
        })
    }
}

/// The cluster's key for node credentials (`credential-key` in the cluster folder): 32
/// random bytes, written by `armada cluster init` (or `armada cluster upgrade` for a
/// folder made before it existed). `Debug` never prints it.
#[derive(Clone)]
pub struct CredentialKey([u8; KEY_BYTES]);

impl CredentialKey {
    pub fn generate() -> Self {
        let mut k = [0u8; KEY_BYTES];
        rand::rng().fill_bytes(&mut k);
        CredentialKey(k)
    }

    /// The file's text: a comment line and the key in hex.
    pub fn to_file_text(&self) -> String {
        format!(
            "# armada node-credential key: lets the manager verify node credentials from the cluster folder alone. Secret.\n{}\n",
            hex::encode(self.0)
        )
    }

    /// Parses the file's text (`#` lines and blank lines skipped).
    pub fn from_file_text(text: &str) -> Result<Self, TokenError> {
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        let line = lines
            .next()
            .ok_or(TokenError::BadKey("the file holds no key"))?;
        if lines.next().is_some() {
            return Err(TokenError::BadKey("more than one key line"));
        }
        let bytes = hex::decode(line).map_err(|_| TokenError::BadKey("not hex"))?;
        let key: [u8; KEY_BYTES] = bytes
            .try_into()
            .map_err(|_| TokenError::BadKey("not 32 bytes"))?;
        Ok(CredentialKey(key))
    }

    fn mac(&self, node_id: &str, secret: &str) -> Hmac<Sha256> {
        // new_from_slice accepts any key length for HMAC: this cannot fail.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        m.update(MAC_CONTEXT);
        m.update(node_id.as_bytes());
        m.update(b"\0");
        m.update(secret.as_bytes());
        m
    }

    /// The credential with this key's MAC: what the manager hands out.
    pub fn sign(&self, cred: &NodeCredential) -> NodeCredential {
        let tag = self
            .mac(&cred.node_id, &cred.secret)
            .finalize()
            .into_bytes();
        NodeCredential {
            mac: Some(hex::encode(tag)),
            ..cred.clone()
        }
    }

    /// True when the credential carries this key's MAC (constant time).
    pub fn verify(&self, cred: &NodeCredential) -> bool {
        let Some(mac) = cred.mac.as_deref().and_then(|m| hex::decode(m).ok()) else {
            return false;
        };
        self.mac(&cred.node_id, &cred.secret)
            .verify_slice(&mac)
            .is_ok()
    }
}

impl fmt::Debug for CredentialKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CredentialKey(<redacted>)")
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
    fn signed_credentials_verify_with_their_key_only() {
        let key = CredentialKey::generate();
        let plain = NodeCredential::generate("n-1a2b");
        let c = key.sign(&plain);
        let text = c.expose();
        assert!(text.starts_with("armadanode2.n-1a2b."), "{text}");
        let back: NodeCredential = text.parse().unwrap();
        assert!(key.verify(&back));
        // Signing keeps the secret, so the hash the store kept still matches.
        assert!(back.matches_hash(&plain.secret_hash()));
        assert!(!key.verify(&plain), "an unsigned credential never verifies");
        assert!(
            !CredentialKey::generate().verify(&back),
            "another cluster's key"
        );
        // Another node id with the same secret and MAC: refused.
        let moved = text.replacen("n-1a2b", "n-9999", 1);
        assert!(!key.verify(&moved.parse().unwrap()));
        // One flipped MAC character: refused.
        let mut flipped = text.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        let flipped: NodeCredential = String::from_utf8(flipped).unwrap().parse().unwrap();
        assert!(!key.verify(&flipped));
        assert!(!format!("{key:?}").contains(&hex::encode(key.0)));
    }

    #[test]
    fn credential_key_file_round_trips_and_refuses_garbage() {
        let key = CredentialKey::generate();
        let again = CredentialKey::from_file_text(&key.to_file_text()).unwrap();
        assert_eq!(again.0, key.0);
        for bad in ["", "# only a comment\n", "zz\n", "abcd\n", "00\n00\n"] {
            assert!(CredentialKey::from_file_text(bad).is_err(), "{bad:?}");
        }
        let short = "armadanode2.n-1.0123456789abcdef0123.abc";
        assert_eq!(
            short.parse::<NodeCredential>().unwrap_err(),
            TokenError::BadCredential("the MAC is not 64 hex characters")
        );
        assert!(NodeCredential::looks_like("armadanode1.x.y"));
        assert!(NodeCredential::looks_like("armadanode2.x.y.z"));
        assert!(!NodeCredential::looks_like("admin"));
    }

    #[test]
    fn fingerprint_matches_only_its_certificate() {
        let f = fp();
        assert!(f.matches_der(b"not really a certificate"));
        assert!(!f.matches_der(b"another certificate"));
        assert_eq!(f.as_hex().len(), 64);
    }
}
