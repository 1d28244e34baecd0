//! What the agent knows about its own control plane: registered or not, in the swarm or
//! not, revoked, when it last delivered, and the last error of each kind.
//!
//! Monitoring never stops on a control-plane failure: the failure is retried with
//! backoff and shown here instead. The [`StatusBoard`] is shared by the control-plane
//! tasks; `/metrics` renders it ([`render`]) and `armada-agent status` reads the copy the
//! running agent keeps in a small JSON file under `/run` (tmpfs: never the SD card),
//! rewritten only when something in it changes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Where the running agent keeps its status for `armada-agent status`.
pub const DEFAULT_STATUS_FILE: &str = "/run/armada/agent-status.json";

/// The kinds of control-plane failure (the `kind` label of `armada_agent_last_error`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorKind {
    /// Registration refused or impossible (bad token, pin mismatch, hostname taken).
    Registration,
    /// Finding the manager over mDNS.
    Discovery,
    /// Removing the bootstrap token from armada.toml (read-only or full boot partition).
    Token,
    /// The local Docker engine is not answering.
    Engine,
    /// Joining the swarm (refused join token, foreign swarm, managers away).
    Swarm,
    /// Telling the manager our swarm node id.
    Joined,
    /// Sending armada.toml's changed labels to the manager.
    Labels,
    /// Delivering reports (manager away, or refusing batches).
    Delivery,
    /// The manager refused the node credential without saying it was revoked.
    Credential,
    /// The operator removed this node: delivery stopped.
    Revoked,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::Registration,
        ErrorKind::Discovery,
        ErrorKind::Token,
        ErrorKind::Engine,
        ErrorKind::Swarm,
        ErrorKind::Joined,
        ErrorKind::Labels,
        ErrorKind::Delivery,
        ErrorKind::Credential,
        ErrorKind::Revoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Registration => "registration",
            ErrorKind::Discovery => "discovery",
            ErrorKind::Token => "token",
            ErrorKind::Engine => "engine",
            ErrorKind::Swarm => "swarm",
            ErrorKind::Joined => "joined",
            ErrorKind::Labels => "labels",
            ErrorKind::Delivery => "delivery",
            ErrorKind::Credential => "credential",
            ErrorKind::Revoked => "revoked",
        }
    }
}

/// Why the manager refused a snapshot for good (the `reason` label of
/// `armada_agent_snapshots_refused_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusedReason {
    /// 413 for the snapshot alone: larger than the manager stores for a node.
    TooLarge,
    /// 400 or 422: the manager cannot read it.
    Malformed,
}

impl RefusedReason {
    pub const ALL: [RefusedReason; 2] = [RefusedReason::TooLarge, RefusedReason::Malformed];

    pub fn as_str(self) -> &'static str {
        match self {
            RefusedReason::TooLarge => "too_large",
            RefusedReason::Malformed => "malformed",
        }
    }
}

/// Snapshots refused for one reason and dropped (never their body: only its size).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RefusedState {
    /// Since the agent started.
    pub total: u64,
    /// JSON bytes of the last one.
    pub last_bytes: u64,
    /// What the manager said about the last one.
    pub last_message: String,
    pub at_ms: u64,
}

/// The last failure of one kind.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorState {
    pub message: String,
    pub at_ms: u64,
    /// Failures of this kind since the agent started.
    pub total: u64,
    /// Still failing: no success of this kind since.
    pub active: bool,
}

/// The agent's control-plane state, as `status` prints it and `/metrics` exports it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub pid: u32,
    pub started_ms: u64,
    pub registered: bool,
    pub node_id: Option<String>,
    pub manager: Option<String>,
    pub swarm_joined: bool,
    pub swarm_node_id: Option<String>,
    pub revoked: bool,
    pub last_delivery_ms: Option<u64>,
    /// Keyed by [`ErrorKind::as_str`].
    pub errors: BTreeMap<String, ErrorState>,
    /// Snapshots the manager refused for good, keyed by [`RefusedReason::as_str`].
    #[serde(default)]
    pub refused: BTreeMap<String, RefusedState>,
}

impl AgentStatus {
    /// Errors still failing, oldest kind first.
    pub fn active_errors(&self) -> impl Iterator<Item = (&str, &ErrorState)> {
        self.errors
            .iter()
            .filter(|(_, e)| e.active)
            .map(|(k, e)| (k.as_str(), e))
    }
}

/// The shared, mutable status, mirrored to a file when it changes.
pub struct StatusBoard {
    inner: Mutex<AgentStatus>,
    file: Mutex<Option<PathBuf>>,
}

impl Default for StatusBoard {
    fn default() -> Self {
        StatusBoard {
            inner: Mutex::new(AgentStatus {
                pid: std::process::id(),
                started_ms: crate::report::now_ms(),
                ..Default::default()
            }),
            file: Mutex::new(None),
        }
    }
}

impl StatusBoard {
    /// Mirrors the status to `path` from now on (and writes it at once).
    pub fn mirror_to(&self, path: &Path) {
        *crate::report::lock(&self.file) = Some(path.to_path_buf());
        let snapshot = self.get();
        self.write(&snapshot);
    }

    pub fn get(&self) -> AgentStatus {
        crate::report::lock(&self.inner).clone()
    }

    /// Changes the status; writes the file when the change is one.
    pub fn update(&self, f: impl FnOnce(&mut AgentStatus)) {
        let changed = {
            let mut s = crate::report::lock(&self.inner);
            let before = s.clone();
            f(&mut s);
            (*s != before).then(|| s.clone())
        };
        if let Some(s) = changed {
            self.write(&s);
        }
    }

    /// Records a failure of `kind` (logged by the caller).
    pub fn fail(&self, kind: ErrorKind, message: impl Into<String>) {
        let message = message.into();
        self.update(|s| {
            let e = s.errors.entry(kind.as_str().to_string()).or_default();
            e.message = message;
            e.at_ms = crate::report::now_ms();
            e.total = e.total.saturating_add(1);
            e.active = true;
        });
    }

    /// Counts a snapshot of `bytes` JSON bytes the manager refused for `reason` and the
    /// agent dropped. True for the first of that reason (the caller logs only that one).
    pub fn refused(&self, reason: RefusedReason, bytes: usize, message: &str) -> bool {
        let mut first = false;
        self.update(|s| {
            let r = s.refused.entry(reason.as_str().to_string()).or_default();
            first = r.total == 0;
            r.total = r.total.saturating_add(1);
            r.last_bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
            r.last_message = message.to_string();
            r.at_ms = crate::report::now_ms();
        });
        first
    }

    /// A success of `kind`: its last error is no longer active.
    pub fn clear(&self, kind: ErrorKind) {
        self.update(|s| {
            if let Some(e) = s.errors.get_mut(kind.as_str()) {
                e.active = false;
            }
        });
    }

    fn write(&self, s: &AgentStatus) {
        let Some(path) = crate::report::lock(&self.file).clone() else {
            return;
        };
        let result = serde_json::to_vec_pretty(s)
            .map_err(anyhow::Error::from)
            .and_then(|json| {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                crate::state::write_file_atomic(&path, &json, 0o644)
            });
        if let Err(e) = result {
            // Said once: the status file is a convenience, /metrics has the same.
            static WARNED: std::sync::atomic::AtomicBool =
                std::sync::atomic::AtomicBool::new(false);
            if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(
                    "writing the agent status to {}: {e:#} (armada-agent status cannot show it)",
                    path.display()
                );
            }
        }
    }
}

/// Reads the status a running agent mirrors (`None`: no file).
pub fn read_file(path: &Path) -> anyhow::Result<Option<AgentStatus>> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("{}: not an agent status file: {e}", path.display()))
}

/// The agent's own families, Prometheus text.
pub fn render(s: &AgentStatus, out: &mut String) {
    let mut gauge = |name: &str, help: &str, value: String| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        );
    };
    let flag = |b: bool| if b { "1" } else { "0" }.to_string();
    gauge(
        "armada_agent_registered",
        "1 when this node holds a credential from the manager.",
        flag(s.registered),
    );
    gauge(
        "armada_agent_swarm_joined",
        "1 when the local engine is a node of the manager's swarm.",
        flag(s.swarm_joined),
    );
    gauge(
        "armada_agent_revoked",
        "1 when the manager said this node was removed: delivery stopped.",
        flag(s.revoked),
    );
    if let Some(ms) = s.last_delivery_ms {
        gauge(
            "armada_agent_last_delivery_timestamp_seconds",
            "When the manager last acknowledged a report, seconds since the epoch.",
            seconds(ms),
        );
    }
    // Always rendered, zeros included, so that a rate() over them works from the start.
    let _ = write!(
        out,
        "# HELP armada_agent_snapshots_refused_total Snapshots the manager refused for good \
         (too_large: 413 for the snapshot alone; malformed: 400/422), dropped, not retried.\n\
         # TYPE armada_agent_snapshots_refused_total counter\n"
    );
    for reason in RefusedReason::ALL {
        let n = s.refused.get(reason.as_str()).map_or(0, |r| r.total);
        let _ = writeln!(
            out,
            "armada_agent_snapshots_refused_total{{reason=\"{}\"}} {n}",
            reason.as_str()
        );
    }
    if s.errors.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "# HELP armada_agent_last_error 1 while the last attempt of this kind failed, 0 once one succeeded.\n\
         # TYPE armada_agent_last_error gauge\n"
    );
    for (kind, e) in &s.errors {
        let _ = writeln!(
            out,
            "armada_agent_last_error{{kind=\"{kind}\"}} {}",
            flag(e.active)
        );
    }
    let _ = write!(
        out,
        "# HELP armada_agent_last_error_timestamp_seconds When the last error of this kind happened.\n\
         # TYPE armada_agent_last_error_timestamp_seconds gauge\n"
    );
    for (kind, e) in &s.errors {
        let _ = writeln!(
            out,
            "armada_agent_last_error_timestamp_seconds{{kind=\"{kind}\"}} {}",
            seconds(e.at_ms)
        );
    }
    let _ = write!(
        out,
        "# HELP armada_agent_errors_total Control-plane failures since the agent started.\n\
         # TYPE armada_agent_errors_total counter\n"
    );
    for (kind, e) in &s.errors {
        let _ = writeln!(
            out,
            "armada_agent_errors_total{{kind=\"{kind}\"}} {}",
            e.total
        );
    }
}

fn seconds(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_cleared_and_rendered() {
        let board = StatusBoard::default();
        board.fail(ErrorKind::Delivery, "manager away");
        board.fail(ErrorKind::Delivery, "manager still away");
        board.fail(ErrorKind::Token, "read-only file system");
        board.clear(ErrorKind::Delivery);
        board.update(|s| {
            s.registered = true;
            s.last_delivery_ms = Some(1_700_000_000_123);
        });
        let s = board.get();
        assert_eq!(s.errors["delivery"].total, 2);
        assert!(!s.errors["delivery"].active);
        assert_eq!(s.errors["delivery"].message, "manager still away");
        let active: Vec<&str> = s.active_errors().map(|(k, _)| k).collect();
        assert_eq!(active, ["token"]);

        let mut text = String::new();
        render(&s, &mut text);
        assert!(text.contains("armada_agent_registered 1\n"), "{text}");
        assert!(text.contains("armada_agent_revoked 0\n"), "{text}");
        assert!(
            text.contains("armada_agent_last_delivery_timestamp_seconds 1700000000.123\n"),
            "{text}"
        );
        assert!(
            text.contains("armada_agent_last_error{kind=\"token\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("armada_agent_last_error{kind=\"delivery\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("armada_agent_errors_total{kind=\"delivery\"} 2\n"),
            "{text}"
        );
        assert_eq!(
            text.matches("# TYPE armada_agent_last_error gauge").count(),
            1
        );
        assert!(
            text.contains("armada_agent_snapshots_refused_total{reason=\"too_large\"} 0\n"),
            "{text}"
        );
    }

    #[test]
    fn refused_snapshots_are_counted_by_reason_and_only_the_first_is_news() {
        let board = StatusBoard::default();
        assert!(board.refused(RefusedReason::TooLarge, 2_000_000, "too big"));
        assert!(!board.refused(RefusedReason::TooLarge, 2_100_000, "still too big"));
        assert!(board.refused(RefusedReason::Malformed, 10, "bad"));
        let s = board.get();
        assert_eq!(s.refused["too_large"].total, 2);
        assert_eq!(s.refused["too_large"].last_bytes, 2_100_000);
        assert_eq!(s.refused["too_large"].last_message, "still too big");
        assert!(
            s.active_errors().next().is_none(),
            "a refusal is not an error"
        );
        let mut text = String::new();
        render(&s, &mut text);
        assert!(
            text.contains("armada_agent_snapshots_refused_total{reason=\"too_large\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("armada_agent_snapshots_refused_total{reason=\"malformed\"} 1\n"),
            "{text}"
        );
        // A status file of an older agent (no `refused`) still reads.
        let old: AgentStatus = serde_json::from_str(
            r#"{"pid":1,"started_ms":0,"registered":false,"node_id":null,"manager":null,
                "swarm_joined":false,"swarm_node_id":null,"revoked":false,
                "last_delivery_ms":null,"errors":{}}"#,
        )
        .unwrap();
        assert!(old.refused.is_empty());
    }

    #[test]
    fn the_status_file_follows_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/agent-status.json");
        let board = StatusBoard::default();
        board.mirror_to(&path);
        assert!(!read_file(&path).unwrap().unwrap().registered);
        board.update(|s| s.registered = true);
        board.fail(ErrorKind::Swarm, "foreign swarm");
        let back = read_file(&path).unwrap().unwrap();
        assert!(back.registered);
        assert_eq!(back.errors["swarm"].message, "foreign swarm");
        assert!(read_file(&dir.path().join("none.json")).unwrap().is_none());
        std::fs::write(&path, "not json").unwrap();
        assert!(read_file(&path).is_err());
    }
}
