//! Who is calling: pure checks of bearer credentials and bootstrap tokens.
//!
//! - Admin: `Authorization: Bearer <admin-token>` (the cluster folder's `admin-token`),
//!   compared by SHA-256 in constant time.
//! - Node: `Authorization: Bearer armadanode2.<node id>.<secret>.<mac>`: the MAC is
//!   checked with the cluster's credential key, then the secret against the hash stored
//!   at registration. A credential whose MAC verifies but whose node the store does not
//!   know is [`AuthError::Unknown`] (the manager lost its state: the node registers
//!   again with it); a node in the revocation list is [`AuthError::Revoked`]. The older
//!   `armadanode1.` credentials carry no MAC and only ever match a stored hash.
//! - Registration: the bootstrap token in the body; its CA fingerprint must be this
//!   cluster's and its secret's hash must be in the token file.

use protocol::token::{
    constant_time_eq, sha256_hex, BootstrapToken, CaFingerprint, CredentialKey, NodeCredential,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Node(String),
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing `Authorization: Bearer` header")]
    Missing,
    #[error("the credential is not valid for this manager")]
    Invalid,
    #[error("node {0} was removed by the operator; flash the card again to bring it back")]
    Revoked(String),
    #[error("node {0} is not known to this manager (it lost its state): register again with this credential")]
    Unknown(String),
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let v = header?.trim();
    let (scheme, token) = v.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

/// The bearer of a node credential: who, and whether the store knows them.
#[derive(Debug, PartialEq, Eq)]
pub enum NodeBearer {
    /// Registered here, secret matches.
    Known(String),
    /// The MAC verifies (this cluster issued it) but the store has no such node.
    Unknown(String),
}

/// Checks a node credential: MAC (signed credentials), revocation, then the stored
/// hash. `node_hash` gives a registered node's credential hash.
pub fn check_node(
    text: &str,
    key: &CredentialKey,
    revoked: impl Fn(&str) -> bool,
    node_hash: impl FnOnce(&str) -> Option<String>,
) -> Result<NodeBearer, AuthError> {
    let cred: NodeCredential = text.parse().map_err(|_| AuthError::Invalid)?;
    let issued_here = cred.is_signed() && key.verify(&cred);
    if cred.is_signed() && !issued_here {
        return Err(AuthError::Invalid);
    }
    let hash = node_hash(&cred.node_id);
    let hash_ok = hash.as_deref().is_some_and(|h| cred.matches_hash(h));
    // Only a bearer who proved the credential is ours learns that it is revoked.
    if (issued_here || hash_ok) && revoked(&cred.node_id) {
        return Err(AuthError::Revoked(cred.node_id));
    }
    match hash {
        Some(_) if hash_ok => Ok(NodeBearer::Known(cred.node_id)),
        Some(_) => Err(AuthError::Invalid),
        None if issued_here => Ok(NodeBearer::Unknown(cred.node_id)),
        None => Err(AuthError::Invalid),
    }
}

/// Identifies a bearer token: the admin token, or a node known to the store.
pub fn identify(
    token: Option<&str>,
    admin_hash: &str,
    key: &CredentialKey,
    revoked: impl Fn(&str) -> bool,
    node_hash: impl FnOnce(&str) -> Option<String>,
) -> Result<Caller, AuthError> {
    let token = token.ok_or(AuthError::Missing)?;
    if NodeCredential::looks_like(token) {
        return match check_node(token, key, revoked, node_hash)? {
            NodeBearer::Known(id) => Ok(Caller::Node(id)),
            NodeBearer::Unknown(id) => Err(AuthError::Unknown(id)),
        };
    }
    if constant_time_eq(
        sha256_hex(token.as_bytes()).as_bytes(),
        admin_hash.as_bytes(),
    ) {
        Ok(Caller::Admin)
    } else {
        Err(AuthError::Invalid)
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BootstrapRefusal {
    #[error("{0}")]
    Malformed(String),
    #[error(
        "the token is for another cluster: its CA fingerprint {got} is not this manager's {want}"
    )]
    OtherCluster { got: String, want: String },
    #[error("the bootstrap token is not accepted (wrong, rotated or revoked)")]
    NotAccepted,
}

/// Checks a bootstrap token against this cluster's CA and the accepted secret hashes.
pub fn check_bootstrap(
    token: &str,
    ca: &CaFingerprint,
    accepted_hashes: &[String],
) -> Result<(), BootstrapRefusal> {
    let t: BootstrapToken = token
        .parse()
        .map_err(|e: protocol::token::TokenError| BootstrapRefusal::Malformed(e.to_string()))?;
    if &t.ca != ca {
        return Err(BootstrapRefusal::OtherCluster {
            got: t.ca.to_string(),
            want: ca.to_string(),
        });
    }
    let h = t.secret_hash();
    if accepted_hashes
        .iter()
        .any(|a| constant_time_eq(a.as_bytes(), h.as_bytes()))
    {
        Ok(())
    } else {
        Err(BootstrapRefusal::NotAccepted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }

    #[test]
    fn admin_node_and_refusals() {
        let key = CredentialKey::generate();
        let admin = sha256_hex(b"s3cret-admin");
        let plain = NodeCredential::generate("n-1");
        let cred = key.sign(&plain);
        let hash = plain.secret_hash();
        let lookup = |id: &str| (id == "n-1").then(|| hash.clone());
        let none = |_: &str| false;
        let id = |t: Option<&str>, revoked: &dyn Fn(&str) -> bool, known: bool| {
            identify(t, &admin, &key, revoked, |i: &str| {
                if known {
                    lookup(i)
                } else {
                    None
                }
            })
        };
        assert_eq!(id(Some("s3cret-admin"), &none, true), Ok(Caller::Admin));
        assert_eq!(
            id(Some(&cred.expose()), &none, true),
            Ok(Caller::Node("n-1".into()))
        );
        assert_eq!(id(Some("wrong"), &none, true), Err(AuthError::Invalid));
        assert_eq!(id(None, &none, true), Err(AuthError::Missing));
        // Same node id, another secret signed by the same key: superseded, refused.
        let other = key.sign(&NodeCredential::generate("n-1"));
        assert_eq!(
            id(Some(&other.expose()), &none, true),
            Err(AuthError::Invalid)
        );
        // The store lost the node: the MAC still proves it is ours.
        assert_eq!(
            id(Some(&cred.expose()), &none, false),
            Err(AuthError::Unknown("n-1".into()))
        );
        // Revoked: said to the bearer of a genuine credential, known or not.
        let revoked = |i: &str| i == "n-1";
        assert_eq!(
            id(Some(&cred.expose()), &revoked, false),
            Err(AuthError::Revoked("n-1".into()))
        );
        assert_eq!(
            id(Some(&cred.expose()), &revoked, true),
            Err(AuthError::Revoked("n-1".into()))
        );
        // A forged MAC learns nothing.
        let forged = CredentialKey::generate().sign(&plain);
        assert_eq!(
            id(Some(&forged.expose()), &revoked, false),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            id(Some(&forged.expose()), &none, true),
            Err(AuthError::Invalid)
        );
        // First-format credentials: only against a stored hash.
        assert_eq!(
            id(Some(&plain.expose()), &none, true),
            Ok(Caller::Node("n-1".into()))
        );
        assert_eq!(
            id(Some(&plain.expose()), &none, false),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            id(Some("armadanode1.garbage"), &none, true),
            Err(AuthError::Invalid)
        );
    }

    #[test]
    fn bootstrap_tokens_are_pinned_to_the_cluster() {
        let ca = CaFingerprint::of_der(b"our ca");
        let t = BootstrapToken::generate(ca.clone());
        let accepted = vec![t.secret_hash()];
        assert_eq!(check_bootstrap(&t.expose(), &ca, &accepted), Ok(()));
        let foreign = BootstrapToken::generate(CaFingerprint::of_der(b"their ca"));
        assert!(matches!(
            check_bootstrap(&foreign.expose(), &ca, &[foreign.secret_hash()]),
            Err(BootstrapRefusal::OtherCluster { .. })
        ));
        let rotated = BootstrapToken::generate(ca.clone());
        assert_eq!(
            check_bootstrap(&rotated.expose(), &ca, &accepted),
            Err(BootstrapRefusal::NotAccepted)
        );
        assert_eq!(
            check_bootstrap(&t.expose(), &ca, &[]),
            Err(BootstrapRefusal::NotAccepted)
        );
        assert!(matches!(
            check_bootstrap("nope", &ca, &accepted),
            Err(BootstrapRefusal::Malformed(_))
        ));
    }
}
