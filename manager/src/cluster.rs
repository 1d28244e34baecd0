//! The cluster folder made by `armada cluster init`, as the manager uses it.
//!
//! Read at start: `ca.pem` (served at `/v1/ca`, its SHA-256 is the fingerprint in the
//! tokens), `manager.pem` (server certificate then CA: the chain sent in the handshake)
//! and `manager.key`, `credential-key` (the HMAC key of node credentials: with it a
//! manager that lost its state dir still recognises its nodes).
//!
//! Watched files, re-read whenever their size, mtime or inode changes (checked every
//! 2 s) and on SIGHUP, so `armada cluster token ...` takes effect on a running manager
//! without a restart:
//! - `token` (one bootstrap token per line, `#` comments): `rotate|revoke` leaves nodes
//!   that already hold a credential unaffected. A token file that is missing or cannot
//!   be parsed accepts no token (registration closed), and says why in the log.
//! - `admin-token` (kept only as its hash): `rotate-admin`. An unreadable or too short
//!   file keeps the previous admin token and says why.
//! - `revoked-nodes`: node ids the operator removed, one per line (`<id> <unix ms>
//!   <hostname>`). The manager appends to it on `nodes remove`; it lives beside the
//!   cluster material, not in the state dir, so a manager started on an empty state dir
//!   still refuses those nodes instead of re-adopting them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use std::collections::BTreeMap;

use protocol::token::{sha256_hex, BootstrapToken, CaFingerprint, CredentialKey};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub const CA_CERT: &str = "ca.pem";
pub const MANAGER_CERT: &str = "manager.pem";
pub const MANAGER_KEY: &str = "manager.key";
pub const TOKEN: &str = "token";
pub const ADMIN_TOKEN: &str = "admin-token";
pub const CREDENTIAL_KEY: &str = "credential-key";
pub const REVOKED_NODES: &str = "revoked-nodes";

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("reading {path}: {source} (make the folder with `armada cluster init`)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(
        "{path} is missing: this cluster folder was made before node credentials could be \
         verified from it. On the operator's host run `armada cluster upgrade DIR` (it adds \
         the key and changes nothing else), then copy DIR/{CREDENTIAL_KEY} to {dir} with \
         mode 0600 and start the manager again"
    )]
    NoCredentialKey { path: PathBuf, dir: PathBuf },
}

pub struct ClusterFiles {
    pub dir: PathBuf,
    pub ca_pem: String,
    pub fingerprint: CaFingerprint,
    pub tls: Arc<rustls::ServerConfig>,
    pub credential_key: CredentialKey,
    pub admin: AdminToken,
    pub revoked: Revocations,
}

impl ClusterFiles {
    /// SHA-256 of the current admin token.
    pub fn admin_token_hash(&self) -> String {
        self.admin.hash()
    }

    /// Polls the watched files every 2 s and re-reads them all on SIGHUP, until the
    /// runtime ends.
    pub fn watch(self: Arc<Self>, tokens: Arc<TokenFile>) {
        let (me, toks) = (self.clone(), tokens.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
            loop {
                tick.tick().await;
                toks.reload(false);
                me.admin.reload(false);
                me.revoked.reload(false);
            }
        });
        tokio::spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                tracing::warn!("cannot listen for SIGHUP; the cluster files are still polled");
                return;
            };
            while hup.recv().await.is_some() {
                tokens.reload(true);
                self.admin.reload(true);
                self.revoked.reload(true);
            }
        });
    }
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

    let key_path = dir.join(CREDENTIAL_KEY);
    let key_text = match std::fs::read_to_string(&key_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ClusterError::NoCredentialKey {
                path: key_path,
                dir: dir.to_path_buf(),
            })
        }
        Err(source) => {
            return Err(ClusterError::Read {
                path: key_path,
                source,
            })
        }
    };
    let credential_key =
        CredentialKey::from_file_text(&key_text).map_err(|e| invalid(&key_path, e))?;

    let admin_path = dir.join(ADMIN_TOKEN);
    let admin_hash = admin_hash_of(&read(&admin_path)?).map_err(|m| invalid(&admin_path, m))?;
    let revoked = Revocations::new(dir.join(REVOKED_NODES));
    Ok(ClusterFiles {
        dir: dir.to_path_buf(),
        ca_pem: String::from_utf8_lossy(&ca_bytes).into_owned(),
        fingerprint,
        tls: Arc::new(tls),
        credential_key,
        admin: AdminToken {
            watched: Watched::new(admin_path),
            hash: RwLock::new(admin_hash),
        },
        revoked,
    })
}

/// SHA-256 of the admin token in a file's bytes, or why it is refused. Pure.
pub fn admin_hash_of(bytes: &[u8]) -> Result<String, &'static str> {
    let text = String::from_utf8_lossy(bytes);
    let admin = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or("");
    if admin.len() < 16 {
        return Err("the admin token is shorter than 16 characters");
    }
    Ok(sha256_hex(admin.as_bytes()))
}

type Stamp = Option<(u64, i64, i64, u64)>;

/// A file's identity (size, mtime, inode), to re-read it only when it changed.
struct Watched {
    path: PathBuf,
    stamp: RwLock<Stamp>,
}

impl Watched {
    fn new(path: PathBuf) -> Self {
        let w = Watched {
            path,
            stamp: RwLock::new(None),
        };
        w.changed(true);
        w
    }

    /// True (and the new stamp kept) when the file changed since the last call.
    fn changed(&self, force: bool) -> bool {
        use std::os::unix::fs::MetadataExt;
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.size(), m.mtime(), m.mtime_nsec(), m.ino()));
        let Ok(mut s) = self.stamp.write() else {
            return false;
        };
        if !force && *s == stamp {
            return false;
        }
        *s = stamp;
        true
    }
}

/// The admin token's hash, following `admin-token` (`armada cluster token rotate-admin`).
pub struct AdminToken {
    watched: Watched,
    hash: RwLock<String>,
}

impl AdminToken {
    pub fn hash(&self) -> String {
        self.hash.read().map(|h| h.clone()).unwrap_or_default()
    }

    pub fn reload(&self, force: bool) {
        if !self.watched.changed(force) {
            return;
        }
        let path = &self.watched.path;
        match std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| admin_hash_of(&b).map_err(str::to_string))
        {
            Ok(h) => {
                let Ok(mut cur) = self.hash.write() else {
                    return;
                };
                if *cur != h {
                    *cur = h;
                    tracing::info!("admin token from {}: rotated", path.display());
                }
            }
            Err(e) => tracing::warn!(
                "admin token from {}: {e}; the previous admin token stays valid",
                path.display()
            ),
        }
    }
}

/// One line of `revoked-nodes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revoked {
    pub at_ms: u64,
    pub hostname: String,
}

/// Node ids the operator removed, following `revoked-nodes`.
pub struct Revocations {
    watched: Watched,
    ids: RwLock<BTreeMap<String, Revoked>>,
}

impl Revocations {
    pub fn new(path: PathBuf) -> Self {
        let r = Revocations {
            watched: Watched::new(path),
            ids: RwLock::new(BTreeMap::new()),
        };
        r.read_file();
        r
    }

    pub fn path(&self) -> &Path {
        &self.watched.path
    }

    pub fn contains(&self, node_id: &str) -> bool {
        self.ids
            .read()
            .map(|m| m.contains_key(node_id))
            .unwrap_or(false)
    }

    pub fn len(&self) -> usize {
        self.ids.read().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn reload(&self, force: bool) {
        if self.watched.changed(force) {
            self.read_file();
        }
    }

    fn read_file(&self) {
        let path = &self.watched.path;
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                // Keep what is known: forgetting revocations would re-admit removed nodes.
                tracing::warn!(
                    "revoked nodes from {}: {e}; keeping the previous list",
                    path.display()
                );
                return;
            }
        };
        let (ids, notes) = parse_revocations(&text);
        for n in notes {
            tracing::warn!("revoked nodes from {}: {n}", path.display());
        }
        if let Ok(mut m) = self.ids.write() {
            // Union: a line deleted by hand does not re-admit a node the manager revoked
            // during this run (the state dir keeps those too).
            m.extend(ids);
        }
    }

    /// Adds a node to the list and to the file (written through a temporary file and a
    /// rename). The in-memory list is updated even when the file cannot be written; the
    /// error says so.
    pub fn add(&self, node_id: &str, hostname: &str, at_ms: u64) -> Result<(), ClusterError> {
        if let Ok(mut m) = self.ids.write() {
            m.insert(
                node_id.to_string(),
                Revoked {
                    at_ms,
                    hostname: hostname.to_string(),
                },
            );
        }
        let path = &self.watched.path;
        let mut text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                "# Nodes removed by the operator: never re-adopted. `<node id> <unix ms> <hostname>`\n"
                    .to_string()
            }
            Err(source) => {
                return Err(ClusterError::Read {
                    path: path.clone(),
                    source,
                })
            }
        };
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        let host = if hostname.is_empty() { "-" } else { hostname };
        text.push_str(&format!("{node_id} {at_ms} {host}\n"));
        write_atomically(path, &text).map_err(|source| ClusterError::Read {
            path: path.clone(),
            source,
        })?;
        self.watched.changed(true);
        Ok(())
    }
}

/// The revoked node ids of a `revoked-nodes` text, and notes on lines skipped. Pure.
pub fn parse_revocations(text: &str) -> (BTreeMap<String, Revoked>, Vec<String>) {
    let mut ids = BTreeMap::new();
    let mut notes = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let id = parts.next().unwrap_or_default();
        if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            notes.push(format!("line {}: `{id}` is not a node id, ignored", i + 1));
            continue;
        }
        let at_ms = parts.next().and_then(|t| t.parse().ok()).unwrap_or(0);
        let hostname = parts.next().unwrap_or("").to_string();
        ids.insert(id.to_string(), Revoked { at_ms, hostname });
    }
    (ids, notes)
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp-armada");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The accepted bootstrap-token hashes, following the token file.
pub struct TokenFile {
    watched: Watched,
    fingerprint: CaFingerprint,
    hashes: RwLock<Vec<String>>,
}

impl TokenFile {
    pub fn new(dir: &Path, fingerprint: CaFingerprint) -> Arc<TokenFile> {
        let t = Arc::new(TokenFile {
            watched: Watched::new(dir.join(TOKEN)),
            fingerprint,
            hashes: RwLock::new(Vec::new()),
        });
        t.reload(true);
        t
    }

    pub fn accepted(&self) -> Vec<String> {
        self.hashes.read().map(|h| h.clone()).unwrap_or_default()
    }

    /// Re-reads the file when it changed (or always, with `force`).
    pub fn reload(&self, force: bool) {
        if !self.watched.changed(force) {
            return;
        }
        let path = &self.watched.path;
        let (hashes, note) = match std::fs::read_to_string(path) {
            Ok(text) => parse_token_file(&text, &self.fingerprint),
            Err(e) => (Vec::new(), Some(format!("cannot read it ({e})"))),
        };
        match &note {
            Some(n) => tracing::warn!("bootstrap tokens from {}: {n}", path.display()),
            None => tracing::info!(
                "bootstrap tokens from {}: {} accepted",
                path.display(),
                hashes.len()
            ),
        }
        if let Ok(mut h) = self.hashes.write() {
            *h = hashes;
        }
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
    fn revocation_lines_and_admin_token_files() {
        let (ids, notes) = parse_revocations("# c\nn-1 17 pine-01\nn-2\nbad/id 1 x\n");
        assert_eq!(ids.len(), 2);
        assert_eq!(ids["n-1"].hostname, "pine-01");
        assert_eq!(ids["n-1"].at_ms, 17);
        assert!(ids.contains_key("n-2"));
        assert!(notes[0].contains("line 4"), "{notes:?}");
        assert!(admin_hash_of(b"short\n").is_err());
        assert_eq!(
            admin_hash_of(b"# rotated\n0123456789abcdef0123\n").unwrap(),
            sha256_hex(b"0123456789abcdef0123")
        );
    }

    #[test]
    fn revocations_are_written_beside_the_cluster_material_and_survive_a_reload() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(REVOKED_NODES);
        let r = Revocations::new(path.clone());
        assert!(r.is_empty());
        r.add("n-1", "pine-01", 5).unwrap();
        r.add("n-2", "", 6).unwrap();
        assert!(r.contains("n-1") && r.contains("n-2"));
        let again = Revocations::new(path.clone());
        assert!(again.contains("n-1") && again.contains("n-2") && !again.contains("n-3"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("n-2 6 -"), "{text}");
        // The operator adds one by hand: picked up by a reload.
        std::fs::write(&path, format!("{text}n-3 7 pine-03\n")).unwrap();
        again.reload(true);
        assert!(again.contains("n-3"));
    }

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
