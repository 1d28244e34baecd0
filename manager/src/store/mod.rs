//! The embedded store: no server, one folder (`--state-dir`).
//!
//! - `wal/NNNN.log`: the write-ahead log (see [`wal`]). Every change (registration,
//!   swarm join, removal, report) is one record. One writer thread takes every pending
//!   change, decides it against the state, writes the batch and calls `fdatasync` once
//!   (group commit), and only then answers the requests: an acknowledged report or
//!   registration survives SIGKILL and power loss.
//! - `checkpoint.json`: the whole state (registry, latest snapshot and downsampled
//!   history per node, dedupe marks), written atomically every `checkpoint_interval`
//!   or after `checkpoint_wal_bytes` of log, and at clean shutdown. Segments older than
//!   the checkpoint are deleted, so disk use is bounded.
//! - `lock`: an exclusive flock; a second manager on the same folder refuses to start.
//!
//! Start-up loads the checkpoint and replays the segments after it with the same
//! functions the writer used ([`state`]), stopping at a torn tail.

pub mod history;
pub mod report;
pub mod state;
pub mod wal;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use protocol::token::NodeCredential;
use protocol::wire::NodeFacts;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use report::{BodyEncoding, DecodedReport};
use state::{JoinedRefusal, NodeEntry, NodeRecord, RegisterDecision, ReportOutcome, State};

const CHECKPOINT: &str = "checkpoint.json";
const CHECKPOINT_FORMAT: u32 = 1;
const KIND_REPORT: u8 = 1;
const KIND_EVENT: u8 = 2;
/// Most changes committed by one fdatasync.
const MAX_GROUP: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is in use by another armada-manager (flock held)")]
    Locked { path: PathBuf },
    #[error("reading checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("the store's writer has stopped")]
    Stopped,
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub dir: PathBuf,
    pub checkpoint_interval: Duration,
    pub checkpoint_wal_bytes: u64,
}

impl StoreConfig {
    pub fn new(dir: PathBuf) -> Self {
        StoreConfig {
            dir,
            checkpoint_interval: Duration::from_secs(600),
            checkpoint_wal_bytes: 256 << 20,
        }
    }
}

/// A registration's result.
#[derive(Debug)]
pub enum Registration {
    Registered {
        node_id: String,
        credential: String,
        existing: bool,
    },
    HostnameTaken {
        node_id: String,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Event {
    Register {
        record: Box<NodeRecord>,
    },
    Joined {
        node_id: String,
        swarm_node_id: String,
    },
    Remove {
        node_id: String,
    },
}

enum Op {
    Register {
        facts: NodeFacts,
        labels: BTreeMap<String, String>,
        interval: u32,
        now_ms: u64,
        reply: oneshot::Sender<Registration>,
    },
    Joined {
        node_id: String,
        swarm_node_id: String,
        reply: oneshot::Sender<Result<NodeRecord, JoinedRefusal>>,
    },
    Remove {
        node_id: String,
        reply: oneshot::Sender<bool>,
    },
    Report {
        node_id: String,
        received_ms: u64,
        encoding: BodyEncoding,
        body: axum::body::Bytes,
        decoded: DecodedReport,
        reply: oneshot::Sender<Option<ReportOutcome>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

pub struct Store {
    state: Arc<RwLock<State>>,
    tx: mpsc::Sender<Op>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// What start-up found, for the log.
#[derive(Debug, Default)]
pub struct OpenReport {
    pub nodes: usize,
    pub records_replayed: usize,
    pub torn_segments: usize,
}

impl Store {
    /// Opens (or creates) the store in `cfg.dir`, replays it and starts the writer.
    pub fn open(cfg: StoreConfig) -> Result<(Store, OpenReport), StoreError> {
        let dir = &cfg.dir;
        let wal_dir = dir.join("wal");
        std::fs::create_dir_all(&wal_dir).map_err(io_err("creating", &wal_dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err("setting mode 0700 on", dir))?;
        let lock_path = dir.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err("opening", &lock_path))?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(StoreError::Locked { path: lock_path });
        }

        let mut state = State::default();
        let mut next_segment = 1;
        let ckpt_path = dir.join(CHECKPOINT);
        if ckpt_path.exists() {
            let (nodes, next) = read_checkpoint(&ckpt_path)?;
            for e in nodes {
                state.put_record(e.record.clone());
                state.nodes.insert(e.record.node_id.clone(), e);
            }
            next_segment = next;
        }
        let mut report = OpenReport::default();
        let segments = wal::list_segments(&wal_dir).map_err(io_err("listing", &wal_dir))?;
        for &n in &segments {
            let path = wal::segment_path(&wal_dir, n);
            if n < next_segment {
                // Covered by the checkpoint; left over from a crash before deletion.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let data = wal::read_segment(&path).map_err(io_err("reading", &path))?;
            let (records, torn) = wal::unframe(&data);
            for payload in records {
                if let Err(e) = replay_record(&mut state, payload) {
                    tracing::warn!(
                        "{}: skipping a record that does not decode: {e}",
                        path.display()
                    );
                }
                report.records_replayed += 1;
            }
            if let Some(at) = torn {
                report.torn_segments += 1;
                tracing::warn!(
                    "{}: stopped at a torn or corrupt record at byte {at} of {} (never acknowledged)",
                    path.display(),
                    data.len()
                );
            }
        }
        report.nodes = state.nodes.len();
        let first = segments
            .last()
            .map(|l| l + 1)
            .unwrap_or(1)
            .max(next_segment);
        let segment = wal::Segment::create(&wal_dir, first)
            .map_err(io_err("creating", &wal::segment_path(&wal_dir, first)))?;

        let state = Arc::new(RwLock::new(state));
        let (tx, rx) = mpsc::channel(8192);
        let writer_state = state.clone();
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                Writer {
                    cfg,
                    segment,
                    state: writer_state,
                    since_ckpt: 0,
                    last_ckpt: Instant::now(),
                    _lock: lock,
                }
                .run(rx)
            })
            .map_err(io_err("starting the writer thread for", &ckpt_path))?;
        Ok((
            Store {
                state,
                tx,
                writer: Mutex::new(Some(writer)),
            },
            report,
        ))
    }

    /// Read access to the state (short-lived: the writer waits for readers).
    pub fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    pub async fn register(
        &self,
        facts: NodeFacts,
        labels: BTreeMap<String, String>,
        interval: u32,
    ) -> Result<Registration, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Register {
            facts,
            labels,
            interval,
            now_ms: crate::now_ms(),
            reply,
        })
        .await?;
        rx.await.map_err(|_| StoreError::Stopped)
    }

    pub async fn joined(
        &self,
        node_id: &str,
        swarm_node_id: &str,
    ) -> Result<Result<NodeRecord, JoinedRefusal>, StoreError> {
        let (reply, rx) = oneshot::channel();
        let op = Op::Joined {
            node_id: node_id.into(),
            swarm_node_id: swarm_node_id.into(),
            reply,
        };
        self.send(op).await?;
        rx.await.map_err(|_| StoreError::Stopped)
    }

    pub async fn remove(&self, node_id: &str) -> Result<bool, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Remove {
            node_id: node_id.into(),
            reply,
        })
        .await?;
        rx.await.map_err(|_| StoreError::Stopped)
    }

    /// Stores a decoded report durably; `None` when the node is not registered.
    pub async fn report(
        &self,
        node_id: &str,
        encoding: BodyEncoding,
        body: axum::body::Bytes,
        decoded: DecodedReport,
    ) -> Result<Option<ReportOutcome>, StoreError> {
        let (reply, rx) = oneshot::channel();
        let op = Op::Report {
            node_id: node_id.into(),
            received_ms: crate::now_ms(),
            encoding,
            body,
            decoded,
            reply,
        };
        self.send(op).await?;
        rx.await.map_err(|_| StoreError::Stopped)
    }

    /// Writes a checkpoint and stops the writer. Later calls fail with `Stopped`.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.send(Op::Shutdown { reply }).await.is_ok() {
            let _ = rx.await;
        }
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }

    async fn send(&self, op: Op) -> Result<(), StoreError> {
        self.tx.send(op).await.map_err(|_| StoreError::Stopped)
    }
}

struct Writer {
    cfg: StoreConfig,
    segment: wal::Segment,
    state: Arc<RwLock<State>>,
    since_ckpt: u64,
    last_ckpt: Instant,
    /// The state folder's flock, released when the writer ends.
    _lock: std::fs::File,
}

type Reply = Box<dyn FnOnce() + Send>;

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        loop {
            // Every sender gone without a shutdown: stop without a checkpoint (the log
            // already holds everything acknowledged).
            let Some(first) = rx.blocking_recv() else {
                return;
            };
            let mut ops = vec![first];
            while ops.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            let mut buf = Vec::new();
            let mut replies: Vec<Reply> = Vec::with_capacity(ops.len());
            let mut shutdown = None;
            {
                let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
                for op in ops {
                    match op {
                        Op::Shutdown { reply } => shutdown = Some(reply),
                        op => apply_op(&mut st, op, &mut buf, &mut replies),
                    }
                }
            }
            if !buf.is_empty() {
                let t0 = Instant::now();
                let written = self.segment.append_durable(&buf);
                crate::metrics::METRICS
                    .store_commit_latency
                    .observe(t0.elapsed());
                if let Err(e) = written {
                    // Fail-stop: nothing of this batch is acknowledged; a restart replays
                    // the log as it is on disk.
                    tracing::error!(
                        "writing the store log segment {} in {}: {e}; exiting so that nothing unwritten is acknowledged",
                        self.segment.number,
                        self.cfg.dir.display()
                    );
                    std::process::exit(70);
                }
                self.since_ckpt += buf.len() as u64;
                crate::metrics::METRICS.store_commits.inc();
            }
            for r in replies {
                r();
            }
            if let Some(reply) = shutdown {
                self.checkpoint_or_log();
                let _ = reply.send(());
                return;
            }
            if self.since_ckpt >= self.cfg.checkpoint_wal_bytes
                || (self.since_ckpt > 0 && self.last_ckpt.elapsed() >= self.cfg.checkpoint_interval)
            {
                self.checkpoint_or_log();
            }
        }
    }

    fn checkpoint_or_log(&mut self) {
        if let Err(e) = self.checkpoint() {
            tracing::error!("checkpoint in {}: {e}", self.cfg.dir.display());
        }
    }

    /// Starts a new segment, writes the state as of its start, drops older segments.
    fn checkpoint(&mut self) -> Result<(), StoreError> {
        let t0 = Instant::now();
        let wal_dir = self.cfg.dir.join("wal");
        let next = self.segment.number + 1;
        self.segment = wal::Segment::create(&wal_dir, next)
            .map_err(io_err("creating", &wal::segment_path(&wal_dir, next)))?;
        let path = self.cfg.dir.join(CHECKPOINT);
        let tmp = self.cfg.dir.join("checkpoint.json.tmp");
        {
            let st = self.state.read().unwrap_or_else(|p| p.into_inner());
            let out = CheckpointOut {
                format: CHECKPOINT_FORMAT,
                next_segment: next,
                nodes: st.nodes.values().collect(),
            };
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io_err("creating", &tmp))?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
            serde_json::to_writer(&mut w, &out)
                .map_err(|e| io_err("writing", &tmp)(std::io::Error::other(e)))?;
            w.flush().map_err(io_err("writing", &tmp))?;
            w.get_ref().sync_all().map_err(io_err("syncing", &tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(io_err("renaming into place", &path))?;
        wal::sync_dir(&self.cfg.dir).map_err(io_err("syncing", &self.cfg.dir))?;
        for n in wal::list_segments(&wal_dir).map_err(io_err("listing", &wal_dir))? {
            if n < next {
                let _ = std::fs::remove_file(wal::segment_path(&wal_dir, n));
            }
        }
        self.since_ckpt = 0;
        self.last_ckpt = Instant::now();
        tracing::info!("checkpoint written in {:?}", t0.elapsed());
        Ok(())
    }
}

#[derive(Serialize)]
struct CheckpointOut<'a> {
    format: u32,
    next_segment: u64,
    nodes: Vec<&'a NodeEntry>,
}

#[derive(Deserialize)]
struct CheckpointIn {
    format: u32,
    next_segment: u64,
    nodes: Vec<NodeEntry>,
}

fn read_checkpoint(path: &Path) -> Result<(Vec<NodeEntry>, u64), StoreError> {
    let file = std::fs::File::open(path).map_err(io_err("opening", path))?;
    let c: CheckpointIn = serde_json::from_reader(std::io::BufReader::new(file)).map_err(|e| {
        StoreError::Checkpoint {
            path: path.into(),
            message: e.to_string(),
        }
    })?;
    if c.format != CHECKPOINT_FORMAT {
        return Err(StoreError::Checkpoint {
            path: path.into(),
            message: format!("format {} is not {CHECKPOINT_FORMAT}", c.format),
        });
    }
    Ok((c.nodes, c.next_segment))
}

fn push_event(buf: &mut Vec<u8>, event: &Event) {
    let mut payload = vec![KIND_EVENT];
    // Serialising our own plain structs cannot fail.
    if serde_json::to_writer(&mut payload, event).is_ok() {
        wal::frame(buf, &payload);
    }
}

fn new_node_id(st: &State) -> String {
    use rand::RngCore;
    loop {
        let mut b = [0u8; 6];
        rand::rng().fill_bytes(&mut b);
        let id = format!("n-{}", hex::encode(b));
        if !st.nodes.contains_key(&id) {
            return id;
        }
    }
}

fn apply_op(st: &mut State, op: Op, buf: &mut Vec<u8>, replies: &mut Vec<Reply>) {
    match op {
        Op::Register {
            facts,
            labels,
            interval,
            now_ms,
            reply,
        } => {
            let (node_id, registered_at_ms, swarm_node_id) = match st.decide_register(&facts) {
                RegisterDecision::HostnameTaken(node_id) => {
                    replies.push(Box::new(move || {
                        let _ = reply.send(Registration::HostnameTaken { node_id });
                    }));
                    return;
                }
                RegisterDecision::Existing(id) => {
                    let e = &st.nodes[&id];
                    (
                        id.clone(),
                        e.record.registered_at_ms,
                        e.record.swarm_node_id.clone(),
                    )
                }
                RegisterDecision::New => (new_node_id(st), now_ms, None),
            };
            let existing = st.nodes.contains_key(&node_id);
            let credential = NodeCredential::generate(&node_id);
            let record = NodeRecord {
                node_id: node_id.clone(),
                facts,
                labels,
                credential_hash: credential.secret_hash(),
                registered_at_ms,
                swarm_node_id,
                report_interval_seconds: interval,
            };
            st.put_record(record.clone());
            push_event(
                buf,
                &Event::Register {
                    record: Box::new(record),
                },
            );
            replies.push(Box::new(move || {
                let _ = reply.send(Registration::Registered {
                    node_id,
                    credential: credential.expose(),
                    existing,
                });
            }));
        }
        Op::Joined {
            node_id,
            swarm_node_id,
            reply,
        } => {
            let result = st.check_joined(&node_id, &swarm_node_id).map(|()| {
                let unchanged =
                    st.nodes[&node_id].record.swarm_node_id.as_deref() == Some(&swarm_node_id);
                if !unchanged {
                    st.set_joined(&node_id, &swarm_node_id);
                    push_event(
                        buf,
                        &Event::Joined {
                            node_id: node_id.clone(),
                            swarm_node_id,
                        },
                    );
                }
                st.nodes[&node_id].record.clone()
            });
            replies.push(Box::new(move || {
                let _ = reply.send(result);
            }));
        }
        Op::Remove { node_id, reply } => {
            let removed = st.remove(&node_id);
            if removed {
                push_event(buf, &Event::Remove { node_id });
            }
            replies.push(Box::new(move || {
                let _ = reply.send(removed);
            }));
        }
        Op::Report {
            node_id,
            received_ms,
            encoding,
            body,
            decoded,
            reply,
        } => {
            let outcome = st.apply_report(&node_id, received_ms, &decoded);
            if outcome.as_ref().is_some_and(|o| o.accepted > 0) {
                let mut payload = Vec::with_capacity(body.len() + node_id.len() + 12);
                payload.push(KIND_REPORT);
                payload.extend_from_slice(&received_ms.to_le_bytes());
                payload.extend_from_slice(&(node_id.len() as u16).to_le_bytes());
                payload.extend_from_slice(node_id.as_bytes());
                payload.push(encoding as u8);
                payload.extend_from_slice(&body);
                wal::frame(buf, &payload);
            }
            replies.push(Box::new(move || {
                let _ = reply.send(outcome);
            }));
        }
        Op::Shutdown { .. } => {}
    }
}

fn replay_record(st: &mut State, payload: &[u8]) -> Result<(), String> {
    match payload.first() {
        Some(&KIND_EVENT) => {
            let event: Event = serde_json::from_slice(&payload[1..]).map_err(|e| e.to_string())?;
            match event {
                Event::Register { record } => st.put_record(*record),
                Event::Joined {
                    node_id,
                    swarm_node_id,
                } => st.set_joined(&node_id, &swarm_node_id),
                Event::Remove { node_id } => {
                    st.remove(&node_id);
                }
            }
            Ok(())
        }
        Some(&KIND_REPORT) => {
            let p = &payload[1..];
            if p.len() < 11 {
                return Err("short report record".into());
            }
            let received_ms = u64::from_le_bytes(p[..8].try_into().map_err(|_| "bad time")?);
            let id_len = u16::from_le_bytes([p[8], p[9]]) as usize;
            if p.len() < 10 + id_len + 1 {
                return Err("short report record".into());
            }
            let node_id = std::str::from_utf8(&p[10..10 + id_len]).map_err(|e| e.to_string())?;
            let encoding =
                BodyEncoding::from_byte(p[10 + id_len]).ok_or("unknown body encoding")?;
            let decoded = report::decode(encoding, &p[11 + id_len..]).map_err(|e| e.to_string())?;
            st.apply_report(node_id, received_ms, &decoded);
            Ok(())
        }
        _ => Err("unknown record kind".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::state::tests::facts;
    use protocol::snapshot::Snapshot;
    use protocol::wire::ReportBatch;

    fn body(instance: &str, seqs: std::ops::Range<u64>) -> (axum::body::Bytes, DecodedReport) {
        let snaps = seqs
            .map(|seq| Snapshot {
                instance: instance.into(),
                seq,
                collected_at_ms: seq,
                ..Default::default()
            })
            .collect();
        let json = serde_json::to_vec(&ReportBatch {
            protocol: 1,
            snapshots: snaps,
            dropped_total: 0,
        })
        .unwrap();
        let decoded = report::decode(BodyEncoding::Json, &json).unwrap();
        (json.into(), decoded)
    }

    fn cfg(dir: &Path) -> StoreConfig {
        StoreConfig::new(dir.to_path_buf())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn state_survives_reopen_with_and_without_checkpoint() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(cfg(tmp.path())).unwrap();
        let Registration::Registered { node_id, .. } = store
            .register(facts("a", "m1"), BTreeMap::new(), 10)
            .await
            .unwrap()
        else {
            panic!("refused")
        };
        let (b, d) = body("i", 0..5);
        let ack = store
            .report(&node_id, BodyEncoding::Json, b, d)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ack.accepted, 5);
        store.joined(&node_id, "sw-1").await.unwrap().unwrap();
        // Drop without shutdown: like a crash, only the log holds the data.
        drop(store);
        // The writer thread keeps the lock until it sees the channel closed.
        std::thread::sleep(Duration::from_millis(200));
        let (store, rep) = Store::open(cfg(tmp.path())).unwrap();
        assert_eq!(rep.nodes, 1);
        assert_eq!(rep.records_replayed, 3);
        {
            let st = store.read();
            let e = &st.nodes[&node_id];
            assert_eq!(e.reports_total, 5);
            assert_eq!(e.record.swarm_node_id.as_deref(), Some("sw-1"));
        }
        let (b, d) = body("i", 3..8);
        let ack = store
            .report(&node_id, BodyEncoding::Json, b, d)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((ack.accepted, ack.duplicates), (3, 2));
        store.shutdown().await;
        drop(store);
        let (store, rep) = Store::open(cfg(tmp.path())).unwrap();
        assert_eq!(
            rep.records_replayed, 0,
            "the shutdown checkpoint covers everything"
        );
        assert_eq!(store.read().nodes[&node_id].reports_total, 8);
        assert_eq!(
            wal::list_segments(&tmp.path().join("wal")).unwrap().len(),
            2
        );
        assert!(store.remove(&node_id).await.unwrap());
        drop(store);
        std::thread::sleep(Duration::from_millis(200));
        let (store, _) = Store::open(cfg(tmp.path())).unwrap();
        assert!(store.read().nodes.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_manager_on_the_same_folder_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (_store, _) = Store::open(cfg(tmp.path())).unwrap();
        assert!(matches!(
            Store::open(cfg(tmp.path())),
            Err(StoreError::Locked { .. })
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_torn_tail_is_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(cfg(tmp.path())).unwrap();
        store
            .register(facts("a", "m1"), BTreeMap::new(), 10)
            .await
            .unwrap();
        drop(store);
        std::thread::sleep(Duration::from_millis(200));
        let wal_dir = tmp.path().join("wal");
        let last = *wal::list_segments(&wal_dir).unwrap().first().unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(wal::segment_path(&wal_dir, last))
            .unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        let (store, rep) = Store::open(cfg(tmp.path())).unwrap();
        assert_eq!(rep.torn_segments, 1);
        assert_eq!(store.read().nodes.len(), 1);
    }
}
