//! The cluster folder made by `armada cluster init`, as the manager uses it.
//!
//! Read at start: `ca.pem` (served at `/v1/ca`, its SHA-256 is the fingerprint in the
//! tokens), `manager.pem` (server certificate then CA: the chain sent in the handshake)
//! and `manager.key`, `admin-token` (kept only as its hash).
//!
//! `token` (one bootstrap token per line, `#` comments) is re-read whenever its size,
//! mtime or inode changes (checked every 2 s) and on SIGHUP: `armada cluster token
//! rotate|revoke` takes effect on a running manager without a restart, and nodes that
//! already hold a credential are not affected. A token file that is missing or cannot
//! be parsed accepts no token (registration closed), and says why in the log.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use protocol::token::{sha256_hex, BootstrapToken, CaFingerprint};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub const CA_CERT: &str = "ca.pem";
pub const MANAGER_CERT: &str = "manager.pem";
pub const MANAGER_KEY: &str = "manager.key";
pub const TOKEN: &str = "token";
pub const ADMIN_TOKEN: &str = "admin-token";

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("reading {path}: {source} (make the folder with `armada cluster init`)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

pub struct ClusterFiles {
    pub dir: PathBuf,
    pub ca_pem: String,
    pub fingerprint: CaFingerprint,
    pub tls: Arc<rustls::ServerConfig>,
    pub admin_token_hash: String,
}

fn read(path: &Path) -> Result<Vec<u8>, ClusterError> {
    std::fs::read(path).map_err(|source| ClusterError::Read {
        path: path.into(),
        source,
    })
}

fn invalid(path: &Path, message: impl ToString) -> ClusterError {
    ClusterError::Invalid {
        path: path.into(),
        message: message.to_string(),
    }
}

pub fn load(dir: &Path) -> Result<ClusterFiles, ClusterError> {
    let ca_path = dir.join(CA_CERT);
    let ca_bytes = read(&ca_path)?;
    let ca_der = CertificateDer::pem_slice_iter(&ca_bytes)
        .next()
        .ok_or_else(|| invalid(&ca_path, "no PEM certificate"))?
        .map_err(|e| invalid(&ca_path, e))?;
    let fingerprint = CaFingerprint::of_der(&ca_der);

    let cert_path = dir.join(MANAGER_CERT);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(&cert_path)?)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(&cert_path, e))?;
    if chain.is_empty() {
        return Err(invalid(&cert_path, "no PEM certificate"));
    }
    if !chain.iter().any(|c| fingerprint.matches_der(c)) {
        return Err(invalid(
            &cert_path,
            format!(
                "the chain does not carry the CA of {} (agents pin it from the handshake)",
                ca_path.display()
            ),
        ));
    }
    let key_path = dir.join(MANAGER_KEY);
    let key =
        PrivateKeyDer::from_pem_slice(&read(&key_path)?).map_err(|e| invalid(&key_path, e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(&cert_path, e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            invalid(
                &key_path,
                format!("the key does not fit {}: {e}", cert_path.display()),
            )
        })?;
    // Session tickets: an agent that reconnects for each report resumes its session
    // instead of a full handshake with a certificate signature.
    tls.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
        .map_err(|e| invalid(&cert_path, format!("TLS session tickets: {e}")))?;

    let admin_path = dir.join(ADMIN_TOKEN);
    let admin = String::from_utf8_lossy(&read(&admin_path)?)
        .trim()
        .to_string();
    if admin.len() < 16 {
        return Err(invalid(
            &admin_path,
            "the admin token is shorter than 16 characters",
        ));
    }
    Ok(ClusterFiles {
        dir: dir.to_path_buf(),
        ca_pem: String::from_utf8_lossy(&ca_bytes).into_owned(),
        fingerprint,
        tls: Arc::new(tls),
        admin_token_hash: sha256_hex(admin.as_bytes()),
    })
}

/// The accepted bootstrap-token hashes, following the token file.
pub struct TokenFile {
    path: PathBuf,
    fingerprint: CaFingerprint,
    hashes: RwLock<Vec<String>>,
    stamp: RwLock<Option<(u64, i64, i64, u64)>>,
}

impl TokenFile {
    pub fn new(dir: &Path, fingerprint: CaFingerprint) -> Arc<TokenFile> {
        let t = Arc::new(TokenFile {
            path: dir.join(TOKEN),
            fingerprint,
            hashes: RwLock::new(Vec::new()),
            stamp: RwLock::new(None),
        });
        t.reload(true);
        t
    }

    pub fn accepted(&self) -> Vec<String> {
        self.hashes.read().map(|h| h.clone()).unwrap_or_default()
    }

    /// Re-reads the file when it changed (or always, with `force`).
    pub fn reload(&self, force: bool) {
        use std::os::unix::fs::MetadataExt;
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.size(), m.mtime(), m.mtime_nsec(), m.ino()));
        if !force && self.stamp.read().map(|s| *s == stamp).unwrap_or(false) {
            return;
        }
        let (hashes, note) = match std::fs::read_to_string(&self.path) {
            Ok(text) => parse_token_file(&text, &self.fingerprint),
            Err(e) => (Vec::new(), Some(format!("cannot read it ({e})"))),
        };
        match &note {
            Some(n) => tracing::warn!("bootstrap tokens from {}: {n}", self.path.display()),
            None => tracing::info!(
                "bootstrap tokens from {}: {} accepted",
                self.path.display(),
                hashes.len()
            ),
        }
        if let Ok(mut h) = self.hashes.write() {
            *h = hashes;
        }
        if let Ok(mut s) = self.stamp.write() {
            *s = stamp;
        }
    }

    /// Polls for changes every 2 s and reloads on SIGHUP, until the runtime ends.
    pub fn watch(self: Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
            loop {
                tick.tick().await;
                me.reload(false);
            }
        });
        tokio::spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                tracing::warn!("cannot listen for SIGHUP; the token file is still polled");
                return;
            };
            while hup.recv().await.is_some() {
                self.reload(true);
            }
        });
    }
}

/// Hashes of the tokens in a token file that belong to this cluster, and a note on
/// anything skipped. Pure.
pub fn parse_token_file(text: &str, ca: &CaFingerprint) -> (Vec<String>, Option<String>) {
    let mut hashes = Vec::new();
    let mut notes = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.parse::<BootstrapToken>() {
            Ok(t) if &t.ca == ca => hashes.push(t.secret_hash()),
            Ok(_) => notes.push(format!("line {}: token of another CA, ignored", i + 1)),
            Err(e) => notes.push(format!("line {}: {e}", i + 1)),
        }
    }
    if hashes.is_empty() {
        notes.push("no bootstrap token accepted: registration is closed".into());
    }
    (hashes, (!notes.is_empty()).then(|| notes.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_lines() {
        let ca = CaFingerprint::of_der(b"ca");
        let t1 = BootstrapToken::generate(ca.clone());
        let foreign = BootstrapToken::generate(CaFingerprint::of_der(b"other"));
        let text = format!(
            "# comment\n\n{}\n{}\ngarbage\n",
            t1.expose(),
            foreign.expose()
        );
        let (hashes, note) = parse_token_file(&text, &ca);
        assert_eq!(hashes, vec![t1.secret_hash()]);
        let note = note.unwrap();
        assert!(note.contains("line 4") && note.contains("line 5"), "{note}");
        let (hashes, note) = parse_token_file("# revoked\n", &ca);
        assert!(hashes.is_empty());
        assert!(note.unwrap().contains("closed"));
    }
}
