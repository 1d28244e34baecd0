//! The agent's persistent state under `/var/lib/armada` (written a handful of times in a
//! node's life, never per report).
//!
//! Files:
//! - `credential` (0600): `armadanode1.<node id>.<secret>`, the node's own credential.
//! - `node_id` (0644): the node id, for people and scripts.
//! - `ca.pem` (0644): the cluster CA, checked against the token's fingerprint; the only
//!   TLS root once registered.
//! - `registration.json` (0600): manager address, swarm join token and managers, the
//!   report interval, so a node that left the swarm can join again without a token.
//! - `swarm_node_id` (0644): the swarm node id the manager acknowledged.
//! - `labels.json` (0644): the label set the manager last acknowledged (at registration
//!   or through `/v1/labels`) and what it did with it; a different `[labels]` in
//!   armada.toml is sent at the next start.
//!
//! Every write goes to a temporary file in the same folder, is fsynced, then renamed
//! over the target, and the folder is fsynced: a power cut leaves the old or the new
//! file, never half of one.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use protocol::token::NodeCredential;
use serde::{Deserialize, Serialize};

const CREDENTIAL: &str = "credential";
const NODE_ID: &str = "node_id";
const CA_PEM: &str = "ca.pem";
const REGISTRATION: &str = "registration.json";
const SWARM_NODE_ID: &str = "swarm_node_id";
const LABELS: &str = "labels.json";

/// The label set the manager last acknowledged, and what it did with it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelsSent {
    pub labels: BTreeMap<String, String>,
    pub acknowledged_ms: u64,
    /// `registration` or the path of the labels endpoint.
    pub via: String,
    /// The swarm node they were put on (`None`: not joined then; put on at the join).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm_node_id: Option<String>,
    /// Keys whose value the operator owns (`nodes label`): ours stored, not applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operator_keys: Vec<String>,
    /// Keys we had sent before and dropped, taken off the swarm node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
}

/// What registration gave this node, minus the credential (kept in its own file).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RegistrationInfo {
    /// `host[:port]` the node registered with.
    pub manager: String,
    pub swarm_join_token: String,
    pub swarm_managers: Vec<String>,
    pub report_interval_seconds: u32,
    /// The manager was found over mDNS (no address in armada.toml): find it again at
    /// each start, since its address may have changed.
    #[serde(default)]
    pub discovered: bool,
    /// Where a discovered manager answered last, used when it does not answer mDNS.
    #[serde(default)]
    pub discovered_addr: Option<std::net::SocketAddr>,
    /// The manager's swarm cluster ID, when its manager says (a local engine in a swarm
    /// with another ID leaves it and joins ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm_cluster_id: Option<String>,
}

/// A registered node: everything needed to talk to the manager again after a reboot.
#[derive(Clone, Debug)]
pub struct Registration {
    pub credential: NodeCredential,
    pub ca_pem: String,
    pub info: RegistrationInfo,
}

/// The state folder.
#[derive(Clone, Debug)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StateDir { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The stored registration, `None` when this node never registered.
    pub fn load(&self) -> anyhow::Result<Option<Registration>> {
        let cred_path = self.dir.join(CREDENTIAL);
        let text = match fs::read_to_string(&cred_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", cred_path.display())),
        };
        let credential: NodeCredential = text
            .parse()
            .with_context(|| format!("parsing the node credential in {}", cred_path.display()))?;
        let ca_path = self.dir.join(CA_PEM);
        let ca_pem = fs::read_to_string(&ca_path)
            .with_context(|| format!("reading {}", ca_path.display()))?;
        let reg_path = self.dir.join(REGISTRATION);
        let reg_text = fs::read_to_string(&reg_path)
            .with_context(|| format!("reading {}", reg_path.display()))?;
        let info: RegistrationInfo = serde_json::from_str(&reg_text)
            .with_context(|| format!("parsing {}", reg_path.display()))?;
        Ok(Some(Registration {
            credential,
            ca_pem,
            info,
        }))
    }

    /// Stores a new registration. The credential is written last: its presence is what
    /// marks the node registered, so a crash half-way leaves an unregistered node.
    pub fn save(&self, reg: &Registration) -> anyhow::Result<()> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("setting mode 0700 on {}", self.dir.display()))?;
        write_file_atomic(&self.dir.join(CA_PEM), reg.ca_pem.as_bytes(), 0o644)?;
        let info = serde_json::to_vec_pretty(&reg.info).context("encoding registration.json")?;
        write_file_atomic(&self.dir.join(REGISTRATION), &info, 0o600)?;
        write_file_atomic(
            &self.dir.join(NODE_ID),
            format!("{}\n", reg.credential.node_id).as_bytes(),
            0o644,
        )?;
        write_file_atomic(
            &self.dir.join(CREDENTIAL),
            format!("{}\n", reg.credential.expose()).as_bytes(),
            0o600,
        )
    }

    /// The swarm node id the manager acknowledged, if any.
    pub fn swarm_node_id(&self) -> Option<String> {
        let text = fs::read_to_string(self.dir.join(SWARM_NODE_ID)).ok()?;
        let id = text.trim();
        (!id.is_empty()).then(|| id.to_string())
    }

    /// The label set the manager last acknowledged; `None` when none was recorded (a
    /// node registered by an older agent) or the file is unreadable (sent again).
    pub fn labels_sent(&self) -> Option<LabelsSent> {
        let text = fs::read_to_string(self.dir.join(LABELS)).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn save_labels_sent(&self, sent: &LabelsSent) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(sent).context("encoding labels.json")?;
        write_file_atomic(&self.dir.join(LABELS), &json, 0o644)
    }

    pub fn save_swarm_node_id(&self, id: &str) -> anyhow::Result<()> {
        write_file_atomic(
            &self.dir.join(SWARM_NODE_ID),
            format!("{id}\n").as_bytes(),
            0o644,
        )
    }
}

/// Deletes `path` and syncs its folder, so that the deletion survives a power cut
/// (the root is mounted `commit=60`: an unsynced unlink of a secret could stay undone
/// for a minute). `Ok(false)` when there was nothing to delete. A folder that refuses
/// fsync (FAT) is not an error: the unlink itself is done.
pub fn remove_file_durable(path: &Path) -> std::io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    }
    sync_dir(parent_dir(path));
    Ok(true)
}

/// The folder `path` is in (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Syncs a folder's entries (a rename or unlink in it). Some filesystems (FAT on the
/// boot partition) refuse fsync on a folder: the change itself is done, so that is
/// not an error.
fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Replaces `path` with `bytes` (mode `mode`) through a temporary file in the same
/// folder, fsync and rename, then fsyncs the folder.
pub fn write_file_atomic(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> anyhow::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        // The mode given to open() is filtered by the umask: set it exactly. FAT (the
        // boot partition) cannot store modes and may refuse: that is fine as long as the
        // file is not more open than asked.
        if let Err(e) = f.set_permissions(fs::Permissions::from_mode(mode)) {
            let now = f
                .metadata()
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0o777);
            if now & !mode != 0 {
                return Err(e)
                    .with_context(|| format!("setting mode {mode:o} on {}", tmp.display()));
            }
        }
        f.write_all(bytes)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
        fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_durable_removal_says_whether_there_was_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("bootstrap-token");
        fs::write(&p, "t\n").unwrap();
        assert!(remove_file_durable(&p).unwrap());
        assert!(!p.exists());
        assert!(!remove_file_durable(&p).unwrap(), "nothing left to remove");
        // A folder is not removed as a file: an error, not "gone".
        let d = tmp.path().join("d");
        fs::create_dir(&d).unwrap();
        assert!(remove_file_durable(&d).is_err());
        assert!(d.is_dir());
    }

    fn reg() -> Registration {
        Registration {
            credential: NodeCredential::generate("n-7"),
            ca_pem: "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n".into(),
            info: RegistrationInfo {
                manager: "172.30.1.1:7443".into(),
                swarm_join_token: "SWMTKN-1-abc".into(),
                swarm_managers: vec!["172.30.1.1:2377".into()],
                report_interval_seconds: 10,
                discovered: false,
                discovered_addr: None,
                swarm_cluster_id: None,
            },
        }
    }

    #[test]
    fn unregistered_until_saved_then_round_trips_with_private_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::new(tmp.path().join("armada"));
        assert!(state.load().unwrap().is_none());
        let r = reg();
        state.save(&r).unwrap();
        let back = state.load().unwrap().unwrap();
        assert_eq!(back.credential, r.credential);
        assert_eq!(back.info, r.info);
        assert_eq!(back.ca_pem, r.ca_pem);
        let mode = |f: &str| {
            fs::metadata(state.path().join(f))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(CREDENTIAL), 0o600);
        assert_eq!(mode(REGISTRATION), 0o600);
        assert_eq!(
            fs::metadata(state.path()).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            fs::read_to_string(state.path().join(NODE_ID))
                .unwrap()
                .trim(),
            "n-7"
        );
        // no temporary files left behind
        let names: Vec<_> = fs::read_dir(state.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            names.iter().all(|n| !n.to_string_lossy().contains(".tmp-")),
            "{names:?}"
        );
    }

    #[test]
    fn swarm_node_id_is_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::new(tmp.path());
        assert_eq!(state.swarm_node_id(), None);
        state.save_swarm_node_id("abc123").unwrap();
        assert_eq!(state.swarm_node_id().as_deref(), Some("abc123"));
    }

    #[test]
    fn a_corrupt_credential_is_an_error_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(CREDENTIAL), "garbage").unwrap();
        let err = format!("{:#}", StateDir::new(tmp.path()).load().unwrap_err());
        assert!(err.contains("credential"), "{err}");
    }
}
