//! Who is calling: pure checks of bearer credentials and bootstrap tokens.
//!
//! - Admin: `Authorization: Bearer <admin-token>` (the cluster folder's `admin-token`),
//!   compared by SHA-256 in constant time.
//! - Node: `Authorization: Bearer armadanode1.<node id>.<secret>`, checked against the
//!   hash stored at registration. A removed node has no hash: 401.
//! - Registration: the bootstrap token in the body; its CA fingerprint must be this
//!   cluster's and its secret's hash must be in the token file.

use protocol::token::{
    constant_time_eq, sha256_hex, BootstrapToken, CaFingerprint, NodeCredential,
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
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let v = header?.trim();
    let (scheme, token) = v.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

/// Identifies a bearer token; `node_hash` gives a registered node's credential hash.
pub fn identify(
    token: Option<&str>,
    admin_hash: &str,
    node_hash: impl FnOnce(&str) -> Option<String>,
) -> Result<Caller, AuthError> {
    let token = token.ok_or(AuthError::Missing)?;
    if token.starts_with("armadanode1.") {
        let cred: NodeCredential = token.parse().map_err(|_| AuthError::Invalid)?;
        let hash = node_hash(&cred.node_id).ok_or(AuthError::Invalid)?;
        return if cred.matches_hash(&hash) {
            Ok(Caller::Node(cred.node_id))
        } else {
            Err(AuthError::Invalid)
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
        let admin = sha256_hex(b"s3cret-admin");
        let cred = NodeCredential::generate("n-1");
        let hash = cred.secret_hash();
        let lookup = |id: &str| (id == "n-1").then(|| hash.clone());
        assert_eq!(
            identify(Some("s3cret-admin"), &admin, lookup),
            Ok(Caller::Admin)
        );
        assert_eq!(
            identify(Some(&cred.expose()), &admin, lookup),
            Ok(Caller::Node("n-1".into()))
        );
        assert_eq!(
            identify(Some("wrong"), &admin, lookup),
            Err(AuthError::Invalid)
        );
        assert_eq!(identify(None, &admin, lookup), Err(AuthError::Missing));
        let other = NodeCredential::generate("n-1");
        assert_eq!(
            identify(Some(&other.expose()), &admin, lookup),
            Err(AuthError::Invalid)
        );
        // A removed node has no hash.
        assert_eq!(
            identify(Some(&cred.expose()), &admin, |_| None),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            identify(Some("armadanode1.garbage"), &admin, lookup),
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
