//! `armada cluster init|token`: the cluster's credentials, made on the operator's host.
//!
//! `init` writes a cluster folder (default `cluster/`), every file mode 0600:
//! - `ca.pem`, `ca.key`: the cluster CA (ECDSA P-256). Its SHA-256 is the fingerprint an
//!   agent pins, carried in the bootstrap token.
//! - `manager.pem`, `manager.key`: the manager's server certificate, signed by the CA,
//!   for the names and addresses given with `--san` plus `localhost`, `127.0.0.1`,
//!   `armada-manager` and `armada-manager.local`. `manager.pem` holds the chain (server
//!   certificate, then the CA) so an agent sees the CA in the TLS handshake.
//! - `token`: the bootstrap token `armada1.<CA fingerprint>.<secret>`, one per line
//!   (blank and `#` lines ignored). The manager re-reads it on change or SIGHUP.
//! - `admin-token`: the operator's secret for `/v1/nodes`, `/metrics` and the dashboard.
//! - `credential-key`: the HMAC key of node credentials. A manager that carries it can
//!   verify a node's credential from the cluster folder alone, so a manager card
//!   flashed again from this folder (or a manager started on an empty state dir)
//!   re-adopts every node without reflashing theirs. Folders made before it existed get
//!   it from `armada cluster upgrade DIR`.
//! - `revoked-nodes` (when present): node ids the operator removed; never re-adopted.
//! - `cluster.toml`: the CA fingerprint and the manager's names; no secrets.
//!
//! Boards have no real-time clock, so every certificate starts on 2000-01-01 and lasts
//! until 2100: a board that boots in 1970 or 2000 still completes the TLS handshake.
//!
//! `token rotate` writes a fresh token (old images' token stops working), `token revoke`
//! leaves none (registration closed), `token show` prints it. Nodes already joined hold
//! their own credential and are not affected by either. `token rotate-admin` writes a
//! fresh admin token; a running manager whose cluster folder this is picks it up within
//! seconds (or on SIGHUP), and the previous one stops working.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use protocol::token::{BootstrapToken, CaFingerprint, CredentialKey};
use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use serde::{Deserialize, Serialize};

use crate::progress::Ui;

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";
pub const MANAGER_CERT: &str = "manager.pem";
pub const MANAGER_KEY: &str = "manager.key";
pub const TOKEN: &str = "token";
pub const ADMIN_TOKEN: &str = "admin-token";
pub const CLUSTER_TOML: &str = "cluster.toml";
pub const CREDENTIAL_KEY: &str = "credential-key";

/// Names every manager certificate carries, whatever the operator adds.
const DEFAULT_SANS: &[&str] = &[
    "localhost",
    "127.0.0.1",
    "armada-manager",
    "armada-manager.local",
];

#[derive(clap::Subcommand)]
pub enum ClusterCommand {
    /// Create the cluster's CA, manager certificate, bootstrap token and admin token.
    Init(InitArgs),
    /// Rotate, revoke or show the bootstrap token; rotate the admin token.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Bring a cluster folder made by an older `armada cluster init` up to date: adds
    /// the node-credential key (`credential-key`) and changes nothing else.
    Upgrade {
        #[arg(default_value = "cluster")]
        dir: PathBuf,
    },
}

#[derive(clap::Args)]
pub struct InitArgs {
    /// Folder to write (created with mode 0700).
    #[arg(default_value = "cluster")]
    pub dir: PathBuf,
    /// A name or IP address the manager is reached at (repeatable); localhost,
    /// 127.0.0.1, armada-manager and armada-manager.local are always included.
    #[arg(long = "san", value_name = "NAME_OR_IP")]
    pub sans: Vec<String>,
    /// Replace an existing cluster. Nodes of the old cluster can no longer reach the manager.
    #[arg(long)]
    pub force: bool,
}

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Write a new bootstrap token; the old one stops working (joined nodes are unaffected).
    Rotate {
        #[arg(default_value = "cluster")]
        dir: PathBuf,
    },
    /// Remove the bootstrap token: no new node can register until `rotate`.
    Revoke {
        #[arg(default_value = "cluster")]
        dir: PathBuf,
    },
    /// Print the current bootstrap token (a secret: it lets a machine join the cluster).
    Show {
        #[arg(default_value = "cluster")]
        dir: PathBuf,
    },
    /// Write a new admin token; the old one stops working (a running manager with this
    /// folder picks it up within seconds, or on SIGHUP).
    RotateAdmin {
        #[arg(default_value = "cluster")]
        dir: PathBuf,
    },
}

/// `cluster.toml`: what the cluster is, without secrets.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub ca_fingerprint: String,
    /// Names and addresses in the manager's certificate.
    pub manager_names: Vec<String>,
    pub manager_port: u16,
    pub created_unix: u64,
}

/// Everything `init` writes, in memory. Secrets live only in the PEM keys and tokens.
pub struct ClusterCredentials {
    pub ca_pem: String,
    pub ca_key_pem: String,
    pub ca_fingerprint: CaFingerprint,
    /// Server certificate then CA certificate.
    pub manager_chain_pem: String,
    pub manager_key_pem: String,
    pub token: BootstrapToken,
    pub admin_token: String,
    pub credential_key: CredentialKey,
    pub manager_names: Vec<String>,
}

pub fn run(cmd: ClusterCommand, ui: &Ui) -> Result<()> {
    match cmd {
        ClusterCommand::Init(args) => {
            let creds = generate(&args.sans)?;
            write_cluster_dir(&args.dir, &creds, args.force)?;
            ui.info(&format!(
                "cluster written to {}: CA fingerprint {}, manager names {}",
                args.dir.display(),
                creds.ca_fingerprint,
                creds.manager_names.join(", ")
            ));
            ui.info(&format!(
                "bootstrap token in {} (show it with `armada cluster token show {}`)",
                args.dir.join(TOKEN).display(),
                args.dir.display()
            ));
            Ok(())
        }
        ClusterCommand::Token(TokenCommand::Rotate { dir }) => {
            let fp = read_ca_fingerprint(&dir)?;
            let token = BootstrapToken::generate(fp);
            write_secret_file(&dir.join(TOKEN), &format!("{}\n", token.expose()), true)?;
            ui.info(&format!(
                "new bootstrap token written to {}; a running manager picks it up within seconds \
                 (or on SIGHUP); the previous token no longer registers nodes",
                dir.join(TOKEN).display()
            ));
            Ok(())
        }
        ClusterCommand::Token(TokenCommand::Revoke { dir }) => {
            read_ca_fingerprint(&dir)?;
            write_secret_file(
                &dir.join(TOKEN),
                "# revoked: no bootstrap token is accepted; `armada cluster token rotate` makes a new one\n",
                true,
            )?;
            ui.info(&format!(
                "bootstrap token revoked in {}; joined nodes keep working",
                dir.join(TOKEN).display()
            ));
            Ok(())
        }
        ClusterCommand::Token(TokenCommand::RotateAdmin { dir }) => {
            read_ca_fingerprint(&dir)?;
            write_secret_file(
                &dir.join(ADMIN_TOKEN),
                &format!("{}\n", new_admin_token()),
                true,
            )?;
            ui.info(&format!(
                "new admin token written to {}; a manager using this folder picks it up within \
                 seconds (or on SIGHUP) and refuses the previous one; copy it to the manager's \
                 cluster folder if this is the operator's copy",
                dir.join(ADMIN_TOKEN).display()
            ));
            Ok(())
        }
        ClusterCommand::Upgrade { dir } => {
            read_ca_fingerprint(&dir)?;
            if upgrade(&dir)? {
                ui.info(&format!(
                    "{} written; copy it to the manager's cluster folder (mode 0600) and \
                     restart the manager: from then on it can re-adopt its nodes after losing \
                     its state. Nodes registered before get a verifiable credential at their \
                     next registration",
                    dir.join(CREDENTIAL_KEY).display()
                ));
            } else {
                ui.info(&format!("{} is up to date", dir.display()));
            }
            Ok(())
        }
        ClusterCommand::Token(TokenCommand::Show { dir }) => {
            let tokens = read_tokens(&dir.join(TOKEN))?;
            match tokens.first() {
                Some(t) => {
                    println!("{}", t.expose());
                    Ok(())
                }
                None => bail!(
                    "{} holds no bootstrap token (revoked); make one with `armada cluster token rotate {}`",
                    dir.join(TOKEN).display(),
                    dir.display()
                ),
            }
        }
    }
}

/// The manager's certificate names: the defaults, then the operator's, without repeats.
pub fn manager_names(extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = DEFAULT_SANS.iter().map(|s| s.to_string()).collect();
    for n in extra {
        let n = n.trim().to_string();
        if !n.is_empty() && !names.contains(&n) {
            names.push(n);
        }
    }
    names
}

/// Makes a CA, a server certificate for the manager and fresh tokens.
pub fn generate(extra_sans: &[String]) -> Result<ClusterCredentials> {
    let names = manager_names(extra_sans);
    for n in &names {
        if n.contains(char::is_whitespace) || n.contains('/') {
            bail!("--san `{n}` is not a host name or IP address");
        }
    }

    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = dn("armada cluster CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut ca_params);
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .context("self-signing the CA certificate")?;
    let ca_fingerprint = CaFingerprint::of_der(ca_cert.der());

    let server_key = KeyPair::generate().context("generating the manager's key")?;
    let mut server_params = CertificateParams::new(names.clone())
        .with_context(|| format!("building a certificate for {}", names.join(", ")))?;
    server_params.distinguished_name = dn("armada-manager");
    server_params.is_ca = IsCa::ExplicitNoCa;
    server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    set_validity(&mut server_params);
    let issuer = Issuer::new(ca_params, &ca_key);
    let server_cert = server_params
        .signed_by(&server_key, &issuer)
        .context("signing the manager's certificate with the CA")?;

    Ok(ClusterCredentials {
        ca_pem: ca_cert.pem(),
        ca_key_pem: ca_key.serialize_pem(),
        token: BootstrapToken::generate(ca_fingerprint.clone()),
        ca_fingerprint,
        manager_chain_pem: format!("{}{}", server_cert.pem(), ca_cert.pem()),
        manager_key_pem: server_key.serialize_pem(),
        admin_token: new_admin_token(),
        credential_key: CredentialKey::generate(),
        manager_names: names,
    })
}

fn new_admin_token() -> String {
    let mut admin = [0u8; 32];
    rand::rng().fill_bytes(&mut admin);
    hex::encode(admin)
}

/// Adds what an older cluster folder lacks (`credential-key`). True when it wrote one;
/// an existing key is never replaced (that would orphan every node).
pub fn upgrade(dir: &Path) -> Result<bool> {
    let path = dir.join(CREDENTIAL_KEY);
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        CredentialKey::from_file_text(&text).with_context(|| {
            format!(
                "{} exists but is not a key; move it aside and run `armada cluster upgrade` again",
                path.display()
            )
        })?;
        return Ok(false);
    }
    write_secret_file(&path, &CredentialKey::generate().to_file_text(), false)?;
    Ok(true)
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "armada");
    dn
}

/// Boards boot without a real-time clock: start in 2000, end in 2100.
fn set_validity(params: &mut CertificateParams) {
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2100, 1, 1);
}

/// Writes the cluster folder; refuses to replace an existing cluster without `force`.
pub fn write_cluster_dir(dir: &Path, creds: &ClusterCredentials, force: bool) -> Result<()> {
    let files = [
        CA_CERT,
        CA_KEY,
        MANAGER_CERT,
        MANAGER_KEY,
        TOKEN,
        ADMIN_TOKEN,
        CREDENTIAL_KEY,
        CLUSTER_TOML,
    ];
    if !force {
        if let Some(existing) = files.iter().map(|f| dir.join(f)).find(|p| p.exists()) {
            bail!(
                "{} already exists: {} holds a cluster; pass --force to replace it \
                 (nodes of the old cluster can then no longer reach the manager)",
                existing.display(),
                dir.display()
            );
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("setting mode 0700 on {}", dir.display()))?;
    let info = ClusterInfo {
        ca_fingerprint: creds.ca_fingerprint.to_string(),
        manager_names: creds.manager_names.clone(),
        manager_port: protocol::DEFAULT_MANAGER_PORT,
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    let info_toml = format!(
        "# armada cluster, written by `armada cluster init`. No secrets in this file.\n{}",
        toml::to_string(&info).context("serialising cluster.toml")?
    );
    let contents = [
        (CA_CERT, creds.ca_pem.clone()),
        (CA_KEY, creds.ca_key_pem.clone()),
        (MANAGER_CERT, creds.manager_chain_pem.clone()),
        (MANAGER_KEY, creds.manager_key_pem.clone()),
        (TOKEN, format!("{}\n", creds.token.expose())),
        (ADMIN_TOKEN, format!("{}\n", creds.admin_token)),
        (CREDENTIAL_KEY, creds.credential_key.to_file_text()),
        (CLUSTER_TOML, info_toml),
    ];
    for (name, text) in contents {
        write_secret_file(&dir.join(name), &text, force)?;
    }
    Ok(())
}

/// Writes `text` with mode 0600: through a temporary file and a rename when replacing,
/// so a reader (the running manager) never sees half a file.
fn write_secret_file(path: &Path, text: &str, replace: bool) -> Result<()> {
    let tmp = path.with_extension("tmp-armada");
    let target = if replace { &tmp } else { path };
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(target)
        .with_context(|| format!("creating {}", target.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", target.display()))?;
    if replace {
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    }
    Ok(())
}

fn read_ca_fingerprint(dir: &Path) -> Result<CaFingerprint> {
    let path = dir.join(CA_CERT);
    let pem = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (is {} a cluster folder made by `armada cluster init`?)",
            path.display(),
            dir.display()
        )
    })?;
    let der = pem_to_der(&pem).with_context(|| format!("reading {}", path.display()))?;
    Ok(CaFingerprint::of_der(&der))
}

/// The tokens in a token file (blank and `#` lines skipped).
pub fn read_tokens(path: &Path) -> Result<Vec<BootstrapToken>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .map(str::trim)
        .enumerate()
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(i, l)| {
            l.parse::<BootstrapToken>()
                .with_context(|| format!("{} line {}", path.display(), i + 1))
        })
        .collect()
}

/// DER of the first certificate in a PEM text.
fn pem_to_der(pem: &str) -> Result<Vec<u8>> {
    let begin = "-----BEGIN CERTIFICATE-----";
    let end = "-----END CERTIFICATE-----";
    let start = pem.find(begin).context("no PEM certificate in the file")? + begin.len();
    let stop = pem[start..]
        .find(end)
        .context("unterminated PEM certificate")?
        + start;
    let b64: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64_decode(&b64).context("the PEM certificate is not valid base64")
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c)? << (18 - 6 * i);
        }
        let n = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + n]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn init_writes_private_files_and_refuses_to_overwrite() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cluster");
        let creds = generate(&["pine-mgr".into(), "192.168.1.10".into()]).unwrap();
        write_cluster_dir(&dir, &creds, false).unwrap();
        for f in [
            CA_CERT,
            CA_KEY,
            MANAGER_CERT,
            MANAGER_KEY,
            TOKEN,
            ADMIN_TOKEN,
            CREDENTIAL_KEY,
            CLUSTER_TOML,
        ] {
            let mode = std::fs::metadata(dir.join(f)).unwrap().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        let again = generate(&[]).unwrap();
        let err = write_cluster_dir(&dir, &again, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--force"), "{err}");
        // The refusal left the first cluster intact.
        let tokens = read_tokens(&dir.join(TOKEN)).unwrap();
        assert_eq!(tokens[0], creds.token);
        write_cluster_dir(&dir, &again, true).unwrap();
        assert_eq!(read_tokens(&dir.join(TOKEN)).unwrap()[0], again.token);
        assert_eq!(
            std::fs::metadata(dir.join(TOKEN)).unwrap().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn upgrade_adds_the_credential_key_once_and_never_replaces_it() {
        let tmp = tempfile::tempdir().unwrap();
        let creds = generate(&[]).unwrap();
        write_cluster_dir(tmp.path(), &creds, false).unwrap();
        let key_path = tmp.path().join(CREDENTIAL_KEY);
        let first = std::fs::read_to_string(&key_path).unwrap();
        CredentialKey::from_file_text(&first).unwrap();
        assert!(
            !upgrade(tmp.path()).unwrap(),
            "a current folder is left alone"
        );
        assert_eq!(std::fs::read_to_string(&key_path).unwrap(), first);
        // A folder from before the key: upgrade adds one, 0600, and then stops.
        std::fs::remove_file(&key_path).unwrap();
        assert!(upgrade(tmp.path()).unwrap());
        let added = std::fs::read_to_string(&key_path).unwrap();
        CredentialKey::from_file_text(&added).unwrap();
        assert_ne!(added, first);
        assert_eq!(std::fs::metadata(&key_path).unwrap().mode() & 0o777, 0o600);
        assert!(!upgrade(tmp.path()).unwrap());
        // Garbage in place of a key: refused, not overwritten.
        std::fs::write(&key_path, "garbage\n").unwrap();
        assert!(upgrade(tmp.path()).is_err());
        assert_eq!(std::fs::read_to_string(&key_path).unwrap(), "garbage\n");
    }

    #[test]
    fn token_carries_the_fingerprint_of_the_written_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let creds = generate(&[]).unwrap();
        write_cluster_dir(tmp.path(), &creds, false).unwrap();
        let fp = read_ca_fingerprint(tmp.path()).unwrap();
        assert_eq!(fp, creds.token.ca);
        let info: ClusterInfo =
            toml::from_str(&std::fs::read_to_string(tmp.path().join(CLUSTER_TOML)).unwrap())
                .unwrap();
        assert_eq!(info.ca_fingerprint, fp.to_string());
        assert!(!std::fs::read_to_string(tmp.path().join(CLUSTER_TOML))
            .unwrap()
            .contains(creds.token.secret()));
    }

    #[test]
    fn manager_chain_is_leaf_then_ca_and_names_are_merged() {
        let creds = generate(&["10.9.8.7".into(), "localhost".into()]).unwrap();
        assert_eq!(
            creds.manager_chain_pem.matches("BEGIN CERTIFICATE").count(),
            2
        );
        assert!(creds.manager_chain_pem.ends_with(&creds.ca_pem));
        assert_eq!(
            creds
                .manager_names
                .iter()
                .filter(|n| *n == "localhost")
                .count(),
            1
        );
        assert!(creds.manager_names.contains(&"10.9.8.7".to_string()));
        assert!(generate(&["bad name".into()]).is_err());
    }

    #[test]
    fn certificates_are_backdated_for_boards_without_a_clock() {
        let creds = generate(&[]).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-startdate", "-enddate"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin
                    .take()
                    .unwrap()
                    .write_all(creds.manager_chain_pem.as_bytes())?;
                c.wait_with_output()
            })
            .expect("openssl (host dependency) runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("notBefore=Jan  1 00:00:00 2000 GMT"),
            "{text}"
        );
        assert!(text.contains("notAfter=Jan  1 00:00:00 2100 GMT"), "{text}");
    }

    #[test]
    fn base64_decodes_padding_variants() {
        assert_eq!(base64_decode("TWFu").unwrap(), b"Man");
        assert_eq!(base64_decode("TWE=").unwrap(), b"Ma");
        assert_eq!(base64_decode("TQ==").unwrap(), b"M");
        assert!(base64_decode("T").is_none());
        assert!(base64_decode("T*==").is_none());
    }
}
