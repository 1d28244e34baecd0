//! The embedded store: SQLite in one folder (`--state-dir`), mirrored in memory.
//!
//! Every registered node, revocation, latest snapshot, dedupe mark and history point is
//! a row of `manager.db` (an operator can read it with `sqlite3`; see [`schema`] for
//! the tables). The whole state is also held in memory ([`state::State`]), loaded at
//! start: reads never touch the disk and keep working when the disk is full.
//!
//! Layout:
//! - [`schema`]: the file, its pragmas (WAL, `synchronous=FULL`), schema, migrations
//!   (`user_version`), the checks made at start and the commit counter beside the file.
//! - [`writer`]: the one writer thread: group commit, fsync before any answer, rollback
//!   of memory when a commit fails (disk full: 503, resumes by itself).
//! - [`checkpointer`]: WAL checkpoints on a thread of their own, beside the writer.
//! - [`writer_stats`]: group sizes and where the writer's time goes, logged.
//! - [`queries`]: rows in and out, each with its own checksum; strict and salvage loads.
//! - [`history`]: 4-tier downsampled history per node.
//! - [`state`]: every decision (registration, swarm claims, dedupe, status), pure.
//! - [`report`]: decoding report bodies.
//! - [`container_cpu`]: each container's CPU rate between a node's last two snapshots
//!   (memory only).
//! - [`backup`]: `backup` (online, SQLite backup API), `restore`, `--salvage`.
//!
//! Start-up refuses a damaged store instead of serving less than was acknowledged:
//! `PRAGMA integrity_check` (beside the row load, on a second core), the schema version, every row's checksum, and the commit
//! counter against the file's own (a truncated or damaged WAL loses commits silently
//! in SQLite; the counter notices). A state dir of the store before SQLite (a `wal/`
//! folder, `checkpoint.json`) is refused too: there is no migration from it.
//! `lock` is an exclusive flock: a second manager on the same folder refuses to start.

pub mod backup;
pub mod checkpointer;
pub mod container_cpu;
pub mod history;
pub mod queries;
pub mod report;
pub mod schema;
pub mod state;
pub mod writer;
pub mod writer_stats;

use std::collections::BTreeMap;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use protocol::wire::NodeFacts;
use rusqlite::OpenFlags;
use tokio::sync::{mpsc, oneshot};

use report::{BodyEncoding, DecodedReport};
use state::{JoinedRefusal, NodeRecord, ReportOutcome, State};
use writer::{Op, Writer};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {path}: {source}")]
    Sqlite {
        what: &'static str,
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{path} is in use by another armada-manager (flock held)")]
    Locked { path: PathBuf },
    #[error(
        "the store {path} is damaged: {problem}. It is not served as it is (it would be a smaller truth). \
         Either restore a backup (`armada-manager restore BACKUP --state-dir {}`), or start once with \
         `armada-manager serve --salvage ...`, which keeps what is readable in a new file, moves the \
         damaged one aside and prints what was lost",
        path.parent().unwrap_or(Path::new(".")).display()
    )]
    Damaged { path: PathBuf, problem: String },
    #[error(
        "{path} is the store format of an armada-manager before SQLite; it is not migrated. \
         Move the state dir aside and start on an empty one (nodes register again with their bootstrap \
         token), or run the older manager"
    )]
    OldFormat { path: PathBuf },
    #[error(
        "{path} has schema version {found}, newer than this manager's {known}: run the newer manager, or restore a backup made by this one"
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("the disk holding {path} is full: the change was not stored (retry later)")]
    Full { path: PathBuf },
    #[error("writing {path} failed: {message}; the store takes no more changes until the manager restarts")]
    WriteFailed { path: PathBuf, message: String },
    #[error("the store's writer has stopped")]
    Stopped,
}

impl StoreError {
    /// The same error for another waiting request (the source errors are not Clone).
    pub fn for_reply(&self) -> StoreError {
        match self {
            StoreError::Full { path } => StoreError::Full { path: path.clone() },
            StoreError::WriteFailed { path, message } => StoreError::WriteFailed {
                path: path.clone(),
                message: message.clone(),
            },
            other => StoreError::WriteFailed {
                path: PathBuf::new(),
                message: other.to_string(),
            },
        }
    }

    /// True when retrying later can succeed (answered 503 with Retry-After).
    pub fn is_full(&self) -> bool {
        matches!(self, StoreError::Full { .. })
    }
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
    /// Least time between two checkpoints of the WAL into the file, while commits
    /// come in (see [`checkpointer`]).
    pub checkpoint_interval: Duration,
}

impl StoreConfig {
    pub fn new(dir: PathBuf) -> Self {
        StoreConfig {
            dir,
            checkpoint_interval: Duration::from_secs(1),
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

pub struct Store {
    state: Arc<RwLock<State>>,
    tx: mpsc::Sender<Op>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// What start-up found, for the log.
#[derive(Debug, Default)]
pub struct OpenReport {
    pub nodes: usize,
    pub commits: u64,
    pub integrity_check: Duration,
    /// `integrity_check` ran beside the row load (on its own read-only connection).
    pub integrity_check_deferred: bool,
    pub load: Duration,
}

/// Takes the state folder's exclusive flock (kept by the writer while it runs).
pub fn lock_dir(dir: &Path) -> Result<std::fs::File, StoreError> {
    std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
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
    Ok(lock)
}

/// Opens the file read-write after every start-up check: the old format, the commit
/// counter's file, `integrity_check`, the schema version (migrating an older one). Returns
/// the connection and its commit count. With `defer_integrity_check`, a file of the current
/// schema is not checked here: the caller must run [`schema::integrity_check`] itself
/// (`OpenReport::integrity_check_deferred` says so) before believing anything read.
pub fn open_checked(
    dir: &Path,
    report: &mut OpenReport,
    defer_integrity_check: bool,
) -> Result<(rusqlite::Connection, u64), StoreError> {
    schema::refuse_old_format(dir)?;
    let path = schema::db_path(dir);
    let expected = schema::read_commits_file(dir)?;
    let exists = path.exists();
    if !exists {
        if let Some(n) = expected.filter(|n| *n > 0) {
            return Err(StoreError::Damaged {
                path,
                problem: format!("the file is missing, but {n} commits were made to it"),
            });
        }
        let wal = dir.join(format!("{}-wal", schema::DB_FILE));
        if wal.exists() {
            return Err(StoreError::Damaged {
                path,
                problem: format!("the file is missing but its WAL {} is there", wal.display()),
            });
        }
    }
    let mut conn = schema::connect(
        &path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
    )?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err("setting mode 0600 on", &path))?;
    // An older file is checked before it is migrated (a migration writes); a current
    // one is checked by the caller while its rows load (see `Store::open`).
    let t0 = Instant::now();
    let current = exists && schema::user_version(&conn, &path)? == schema::SCHEMA_VERSION;
    if exists && !(current && defer_integrity_check) {
        schema::integrity_check(&conn, &path)?;
        report.integrity_check = t0.elapsed();
    }
    report.integrity_check_deferred = current && defer_integrity_check;
    schema::migrate(&mut conn, &path)?;
    let commits = schema::commits_in_db(&conn, &path)?;
    if let Some(n) = expected {
        if commits < n {
            return Err(StoreError::Damaged {
                path,
                problem: format!(
                    "it holds {commits} commits, but {n} were made and acknowledged (its WAL was truncated or damaged, or an older copy was put in its place)"
                ),
            });
        }
    }
    Ok((conn, commits))
}

/// Turns the writer's own checkpoints off (SQLite's automatic one ran inside `COMMIT`,
/// with every queued report waiting) and starts the checkpointer's thread on a second
/// connection.
fn start_checkpointer(
    writer: &rusqlite::Connection,
    path: &Path,
    gap: Duration,
) -> Result<writer::Checkpoints, StoreError> {
    writer
        .execute_batch(&format!(
            "PRAGMA wal_autocheckpoint=0; PRAGMA journal_size_limit={};",
            checkpointer::WAL_RESET_BYTES
        ))
        .map_err(schema::sqlite_err(path, "configuring"))?;
    let conn = schema::connect(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    conn.execute_batch("PRAGMA wal_autocheckpoint=0")
        .map_err(schema::sqlite_err(path, "configuring"))?;
    let page_size: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .map_err(schema::sqlite_err(path, "reading the page size of"))?;
    let wal_over = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let checkpointer = checkpointer::Checkpointer {
        conn,
        path: path.to_path_buf(),
        page_size,
        gap,
        stats: writer_stats::StatsLog::from_env(),
        wal_over: wal_over.clone(),
    };
    let (nudge, nudges) = std::sync::mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name("store-checkpoint".into())
        .spawn(move || checkpointer.run(nudges))
        .map_err(io_err("starting the checkpoint thread for", path))?;
    Ok(writer::Checkpoints {
        nudge,
        thread,
        wal_over,
        wal_path: PathBuf::from(format!("{}-wal", path.display())),
    })
}

impl Store {
    /// Opens (or creates) the store in `cfg.dir`, checks and loads it, starts the writer.
    pub fn open(cfg: StoreConfig) -> Result<(Store, OpenReport), StoreError> {
        let dir = &cfg.dir;
        let lock = lock_dir(dir)?;
        let mut report = OpenReport::default();
        let (conn, commits) = open_checked(dir, &mut report, true)?;
        let path = schema::db_path(dir);
        // integrity_check (every page, b-tree and index) and the row load (every row's
        // checksum) each read the whole file; on two connections they run on two cores
        // at once, so the stronger check costs no wall-clock time over quick_check.
        // Nothing loaded is served before both have passed.
        let t0 = Instant::now();
        let (checked, loaded) = std::thread::scope(|scope| {
            let check = report.integrity_check_deferred.then(|| {
                scope.spawn(|| {
                    let t = Instant::now();
                    let ro = schema::connect(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
                    schema::integrity_check(&ro, &path).map(|()| t.elapsed())
                })
            });
            let loaded = queries::load_all(&conn, false);
            let checked = match check.map(|h| h.join()) {
                None => Ok(None),
                Some(Ok(r)) => r.map(Some),
                Some(Err(_)) => Err(StoreError::Damaged {
                    path: path.clone(),
                    problem: "the integrity_check thread panicked".into(),
                }),
            };
            (checked, loaded)
        });
        // A structural fault is the better explanation of a failed row load.
        if let Some(took) = checked? {
            report.integrity_check = took;
        }
        let loaded = loaded.map_err(|d| StoreError::Damaged {
            path: path.clone(),
            problem: d.to_string(),
        })?;
        report.load = t0.elapsed();
        report.nodes = loaded.state.nodes.len();
        report.commits = commits;
        let commits_file = schema::CommitsFile::open(dir)?;
        commits_file.set(commits)?;

        let checkpoints = start_checkpointer(&conn, &path, cfg.checkpoint_interval)?;
        let state = Arc::new(RwLock::new(loaded.state));
        let (tx, rx) = mpsc::channel(8192);
        let writer = Writer {
            conn,
            path: path.clone(),
            state: state.clone(),
            commits,
            commits_file,
            checkpoints: Some(checkpoints),
            failed: None,
            lock,
            packer: Default::default(),
            stats: writer_stats::StatsLog::from_env(),
        };
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(io_err("starting the writer thread for", &path))?;
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
        self.register_as(None, facts, labels, interval).await
    }

    /// Registers with `node_id` when the node is new to the store (and not revoked): a
    /// node re-adopted after the manager lost its state keeps the id its credential
    /// names.
    pub async fn register_as(
        &self,
        node_id: Option<String>,
        facts: NodeFacts,
        labels: BTreeMap<String, String>,
        interval: u32,
    ) -> Result<Registration, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Register {
            node_id,
            facts,
            labels,
            interval,
            now_ms: crate::now_ms(),
            reply,
        })
        .await?;
        rx.await.map_err(|_| StoreError::Stopped)?
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
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    /// Replaces a node's own labels (`/v1/labels`); `None` when it is not registered.
    pub async fn set_labels(
        &self,
        node_id: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Option<NodeRecord>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::SetLabels {
            node_id: node_id.into(),
            labels,
            reply,
        })
        .await?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    /// Removes a node and records its revocation.
    pub async fn remove(&self, node_id: &str) -> Result<bool, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Remove {
            node_id: node_id.into(),
            now_ms: crate::now_ms(),
            reply,
        })
        .await?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    /// Stores a decoded report durably; `None` when the node is not registered.
    /// (`encoding` and `body` are the request's: the store keeps decoded rows only.)
    pub async fn report(
        &self,
        node_id: &str,
        _encoding: BodyEncoding,
        _body: axum::body::Bytes,
        decoded: DecodedReport,
    ) -> Result<Option<ReportOutcome>, StoreError> {
        let (reply, rx) = oneshot::channel();
        let op = Op::Report {
            node_id: node_id.into(),
            received_ms: crate::now_ms(),
            decoded,
            reply,
        };
        self.send(op).await?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    /// Checkpoints the WAL, closes the file and stops the writer. `Ok` only when the
    /// store was closed cleanly; later calls fail with `Stopped`.
    pub async fn shutdown(&self) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Shutdown { reply }).await?;
        let closed = rx.await.map_err(|_| StoreError::Stopped)?;
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
        closed
    }

    async fn send(&self, op: Op) -> Result<(), StoreError> {
        self.tx.send(op).await.map_err(|_| StoreError::Stopped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::state::tests::facts;
    use protocol::snapshot::Snapshot;
    use protocol::wire::ReportBatch;

    pub fn body(instance: &str, seqs: std::ops::Range<u64>) -> (axum::body::Bytes, DecodedReport) {
        let snaps = seqs
            .map(|seq| Snapshot {
                instance: instance.into(),
                seq,
                collected_at_ms: seq * 10_000,
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

    async fn registered(store: &Store, host: &str) -> String {
        match store
            .register(facts(host, &format!("m-{host}")), BTreeMap::new(), 10)
            .await
            .unwrap()
        {
            Registration::Registered { node_id, .. } => node_id,
            other => panic!("{other:?}"),
        }
    }

    fn snapshot_of(store: &Store) -> Vec<state::NodeEntry> {
        let st = store.read();
        let mut v: Vec<_> = st.nodes.values().map(|e| (**e).clone()).collect();
        v.sort_by(|a, b| a.record.node_id.cmp(&b.record.node_id));
        v
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn state_survives_reopen_with_and_without_clean_shutdown() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(cfg(tmp.path())).unwrap();
        let node_id = registered(&store, "a").await;
        let other = registered(&store, "b").await;
        // Enough reports to roll every tier over, and a second agent instance.
        for i in 0..40u64 {
            let (b, d) = body("i", i * 30..i * 30 + 30);
            let ack = store
                .report(&node_id, BodyEncoding::Json, b, d)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(ack.accepted, 30);
        }
        let (b, d) = body("j", 0..3);
        store
            .report(&other, BodyEncoding::Json, b, d)
            .await
            .unwrap();
        store.joined(&node_id, "sw1").await.unwrap().unwrap();
        let before = snapshot_of(&store);
        // Drop without shutdown: only the file holds the data.
        drop(store);
        std::thread::sleep(Duration::from_millis(300));
        let (store, rep) = Store::open(cfg(tmp.path())).unwrap();
        assert_eq!(rep.nodes, 2);
        assert_eq!(
            snapshot_of(&store),
            before,
            "the reloaded state is the same"
        );
        {
            let st = store.read();
            let e = &st.nodes[&node_id];
            assert_eq!(e.reports_total, 1200);
            assert_eq!(e.record.swarm_node_id.as_deref(), Some("sw1"));
        }
        let (b, d) = body("i", 1195..1205);
        let ack = store
            .report(&node_id, BodyEncoding::Json, b, d)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((ack.accepted, ack.duplicates), (5, 5));
        assert!(store.remove(&other).await.unwrap());
        let before = snapshot_of(&store);
        store.shutdown().await.unwrap();
        drop(store);
        let (store, _) = Store::open(cfg(tmp.path())).unwrap();
        assert_eq!(snapshot_of(&store), before);
        assert!(store.read().revoked.contains_key(&other));
        let conn = rusqlite::Connection::open(schema::db_path(tmp.path())).unwrap();
        let rows: i64 = conn
            .query_row(
                "SELECT count(*) FROM history WHERE node_id = ?1",
                [&other],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(rows, 0, "a removed node's rows are gone");
    }

    /// Writes a store of 10,000 nodes with full history (a week of reports) into
    /// `$ARMADA_BIG_STORE`, for measuring start-up checks on it (ci/bench-manager.sh
    /// notes): `cargo test -p armada-manager --lib big_store -- --ignored`.
    #[test]
    #[ignore]
    fn big_store() {
        let Ok(dir) = std::env::var("ARMADA_BIG_STORE") else {
            panic!("set ARMADA_BIG_STORE to an empty folder");
        };
        let dir = PathBuf::from(dir);
        let mut conn = rusqlite::Connection::open(schema::db_path(&dir)).unwrap();
        schema::migrate(&mut conn, &dir).unwrap();
        let json = serde_json::to_string(&crate::sim::snapshot("h", "i", 1, 1)).unwrap();
        let tx = conn.transaction().unwrap();
        for i in 0..10_000u64 {
            let mut e = state::NodeEntry::new(state::tests::record(
                &format!("n-{i:012x}"),
                &format!("node-{i:05}"),
                &format!("m-{i}"),
            ));
            for k in 0..(7 * 24 * 360 / 8) as u64 {
                e.history.push(history::Point {
                    t_ms: k * 80_000,
                    cpu_busy_ratio: Some(0.25),
                    memory_used_bytes: Some(1 << 30),
                    temperature_celsius: Some(50.0),
                    containers: Some(3),
                    load1: Some(0.5),
                    net_rx_bytes_per_s: Some(2000.0),
                    net_tx_bytes_per_s: Some(1000.0),
                    disk_write_bytes_per_s: Some(4096.0),
                    fs_used_ratio_max: Some(0.4),
                });
            }
            e.seen = vec![("inst".into(), 7 * 24 * 360)];
            e.latest_json = Some(Arc::from(json.as_str()));
            e.last_report_ms = Some(1);
            queries::put_entry(&tx, &e).unwrap();
        }
        tx.commit().unwrap();
        schema::write_commits_file(&dir, 0).unwrap();
    }

    /// New files have 1 KiB pages and keep the latest snapshot zlib-compressed; a
    /// version-1 file (JSON text, no `snapshot_bytes`) is migrated and reads the same.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn snapshots_are_stored_compressed_and_version_1_files_still_load() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(cfg(tmp.path())).unwrap();
        let node_id = registered(&store, "a").await;
        let snap = crate::sim::snapshot("a", "inst", 7, 70_000);
        let json = serde_json::to_vec(&ReportBatch {
            protocol: 1,
            snapshots: vec![snap],
            dropped_total: 0,
        })
        .unwrap();
        let decoded = report::decode(BodyEncoding::Json, &json).unwrap();
        store
            .report(&node_id, BodyEncoding::Json, json.into(), decoded)
            .await
            .unwrap()
            .unwrap();
        let before = snapshot_of(&store);
        let text = before[0].latest_json.clone().unwrap();
        store.shutdown().await.unwrap();
        drop(store);

        let conn = rusqlite::Connection::open(schema::db_path(tmp.path())).unwrap();
        let page: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(page, 1024);
        let (kind, stored, bytes): (String, i64, i64) = conn
            .query_row(
                "SELECT typeof(snapshot), length(snapshot), snapshot_bytes FROM latest",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((kind.as_str(), bytes), ("blob", text.len() as i64));
        assert!(stored * 2 < bytes, "{stored} bytes stored for {bytes}");
        // Made into a version-1 file: the JSON as text, no length column.
        conn.execute("UPDATE latest SET snapshot = ?1", [&*text])
            .unwrap();
        downgrade_history_to_version_2(&conn);
        conn.execute_batch(
            "ALTER TABLE latest DROP COLUMN snapshot_bytes; PRAGMA user_version = 1;",
        )
        .unwrap();
        drop(conn);
        let (store, _) = Store::open(cfg(tmp.path())).unwrap();
        // The same but for the figures stored from version 3 on (absent in older rows).
        let after = snapshot_of(&store);
        let but_history = |v: &[state::NodeEntry]| -> Vec<state::NodeEntry> {
            v.iter()
                .map(|e| state::NodeEntry {
                    history: history::History::default(),
                    ..e.clone()
                })
                .collect()
        };
        assert_eq!(but_history(&after), but_history(&before));
        assert_eq!(
            after[0].history.view()[0].points,
            before[0].history.view()[0]
                .points
                .iter()
                .map(old_figures_only)
                .collect::<Vec<_>>()
        );
        // The next report stores its snapshot compressed again.
        let (b, d) = body("inst", 8..9);
        store
            .report(&node_id, BodyEncoding::Json, b, d)
            .await
            .unwrap()
            .unwrap();
        store.shutdown().await.unwrap();
        drop(store);

        // A compressed snapshot whose length column lies is damage, not a shorter truth.
        let conn = rusqlite::Connection::open(schema::db_path(tmp.path())).unwrap();
        conn.execute("UPDATE latest SET snapshot_bytes = snapshot_bytes - 1", [])
            .unwrap();
        drop(conn);
        let e = Store::open(cfg(tmp.path())).err().unwrap();
        assert!(matches!(e, StoreError::Damaged { .. }), "{e}");
    }

    /// A point with only the figures a version-2 row holds.
    fn old_figures_only(p: &history::Point) -> history::Point {
        history::Point {
            t_ms: p.t_ms,
            cpu_busy_ratio: p.cpu_busy_ratio,
            memory_used_bytes: p.memory_used_bytes,
            temperature_celsius: p.temperature_celsius,
            containers: p.containers,
            ..Default::default()
        }
    }

    /// Makes the history table as a version-2 manager wrote it: without the columns of
    /// version 3, each row's CRC over the older columns only. The CRC is spelled out
    /// here (not taken from `queries`), so a change to the stored rule is caught.
    fn downgrade_history_to_version_2(conn: &rusqlite::Connection) {
        type Row = (
            String,
            i64,
            i64,
            i64,
            Option<f64>,
            Option<i64>,
            Option<f64>,
            Option<i64>,
        );
        let rows: Vec<Row> = conn
            .prepare("SELECT node_id, tier, n, t_ms, cpu_busy_ratio, memory_used_bytes, temperature_celsius, containers FROM history")
            .unwrap()
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(!rows.is_empty());
        for (node, tier, n, t, cpu, mem, temp, cont) in rows {
            let mut c = flate2::Crc::new();
            c.update(b"T");
            c.update(&(node.len() as u64).to_le_bytes());
            c.update(node.as_bytes());
            for i in [Some(tier), Some(n), Some(t)] {
                c.update(b"I");
                c.update(&i.unwrap().to_le_bytes());
            }
            let real = |c: &mut flate2::Crc, v: Option<f64>| match v {
                Some(v) => {
                    c.update(b"R");
                    c.update(&v.to_bits().to_le_bytes());
                }
                None => c.update(b"N"),
            };
            let int = |c: &mut flate2::Crc, v: Option<i64>| match v {
                Some(v) => {
                    c.update(b"I");
                    c.update(&v.to_le_bytes());
                }
                None => c.update(b"N"),
            };
            real(&mut c, cpu);
            int(&mut c, mem);
            real(&mut c, temp);
            int(&mut c, cont);
            conn.execute(
                "UPDATE history SET crc = ?1 WHERE node_id = ?2 AND tier = ?3 AND n = ?4",
                rusqlite::params![c.sum() as i64, node, tier, n],
            )
            .unwrap();
        }
        conn.execute_batch(
            "ALTER TABLE history DROP COLUMN load1;
             ALTER TABLE history DROP COLUMN net_rx_bytes_per_s;
             ALTER TABLE history DROP COLUMN net_tx_bytes_per_s;
             ALTER TABLE history DROP COLUMN disk_write_bytes_per_s;
             ALTER TABLE history DROP COLUMN fs_used_ratio_max;
             PRAGMA user_version = 2;",
        )
        .unwrap();
    }

    /// Load, network and disk-write rates and the fullest filesystem are kept in the
    /// history tiers (schema version 3). A version-2 file's points read back with them
    /// absent; after a restart the next report's rates are made against the stored
    /// latest snapshot; a damaged version-2 row is still refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn version_2_history_rows_migrate_with_the_new_figures_absent() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(cfg(tmp.path())).unwrap();
        let node_id = registered(&store, "a").await;
        let send = |seq: u64| {
            let json = serde_json::to_vec(&ReportBatch {
                protocol: 1,
                snapshots: vec![crate::sim::snapshot("a", "inst", seq, seq * 10_000)],
                dropped_total: 0,
            })
            .unwrap();
            let decoded = report::decode(BodyEncoding::Json, &json).unwrap();
            (axum::body::Bytes::from(json), decoded)
        };
        for seq in 1..=3 {
            let (b, d) = send(seq);
            store
                .report(&node_id, BodyEncoding::Json, b, d)
                .await
                .unwrap()
                .unwrap();
        }
        let raw = |store: &Store| snapshot_of(store)[0].history.view()[0].points.clone();
        let before = raw(&store);
        assert_eq!(before.len(), 3);
        assert_eq!(
            before[0].net_rx_bytes_per_s, None,
            "no rate from one report"
        );
        assert!(before[0].load1.is_some() && before[0].fs_used_ratio_max.is_some());
        for p in &before[1..] {
            assert!(p.net_rx_bytes_per_s.is_some(), "{p:?}");
            assert!(p.disk_write_bytes_per_s.is_some(), "{p:?}");
        }
        store.shutdown().await.unwrap();
        drop(store);
        // The v3 rows read back as they were written.
        let (store, _) = Store::open(cfg(tmp.path())).unwrap();
        assert_eq!(raw(&store), before);
        store.shutdown().await.unwrap();
        drop(store);

        let conn = rusqlite::Connection::open(schema::db_path(tmp.path())).unwrap();
        downgrade_history_to_version_2(&conn);
        drop(conn);
        let (store, _) = Store::open(cfg(tmp.path())).unwrap();
        let migrated = raw(&store);
        assert_eq!(
            migrated,
            before.iter().map(old_figures_only).collect::<Vec<_>>(),
            "old figures kept, new ones absent"
        );
        // A report after the restart: its rates come from the stored latest snapshot.
        let (b, d) = send(4);
        store
            .report(&node_id, BodyEncoding::Json, b, d)
            .await
            .unwrap()
            .unwrap();
        let p = *raw(&store).last().unwrap();
        let expect = before[2].net_rx_bytes_per_s.unwrap();
        assert!(
            p.net_rx_bytes_per_s
                .is_some_and(|r| (r / expect - 1.0).abs() < 0.01),
            "{p:?} vs {expect}"
        );
        assert!(p.load1.is_some());
        store.shutdown().await.unwrap();
        drop(store);
        let (store, _) = Store::open(cfg(tmp.path())).unwrap();
        assert_eq!(*raw(&store).last().unwrap(), p);
        store.shutdown().await.unwrap();
        drop(store);

        // A changed figure in a version-2 row is damage, as before.
        let conn = rusqlite::Connection::open(schema::db_path(tmp.path())).unwrap();
        let changed = conn
            .execute(
                "UPDATE history SET containers = containers + 1 WHERE tier = 0 AND n = 0",
                [],
            )
            .unwrap();
        assert_eq!(changed, 1);
        drop(conn);
        let e = Store::open(cfg(tmp.path())).err().unwrap();
        assert!(matches!(e, StoreError::Damaged { .. }), "{e}");
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
    async fn old_format_and_lost_commits_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("wal")).unwrap();
        let e = Store::open(cfg(tmp.path())).err().unwrap();
        assert!(matches!(e, StoreError::OldFormat { .. }), "{e}");
        assert!(e.to_string().contains("not migrated"), "{e}");
        std::fs::remove_dir(tmp.path().join("wal")).unwrap();

        let (store, _) = Store::open(cfg(tmp.path())).unwrap();
        registered(&store, "a").await;
        store.shutdown().await.unwrap();
        drop(store);
        // The counter says more commits were made than the file holds.
        schema::write_commits_file(tmp.path(), 99).unwrap();
        let e = Store::open(cfg(tmp.path())).err().unwrap();
        assert!(matches!(e, StoreError::Damaged { .. }), "{e}");
        assert!(e.to_string().contains("--salvage"), "{e}");
    }

    /// A node whose every history row is gone (deleted with the sqlite3 shell, say: the
    /// file stays valid) has lost its history, as with one row gone: refused. A node
    /// that never reported has no rows and loads as it was.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_without_any_of_its_history_rows_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(cfg(tmp.path())).unwrap();
        let mut ids = Vec::new();
        for host in ["a", "b", "c"] {
            ids.push(registered(&store, host).await);
        }
        for id in &ids[..2] {
            let (b, d) = body("i", 0..40);
            store
                .report(id, BodyEncoding::Json, b, d)
                .await
                .unwrap()
                .unwrap();
        }
        let before = snapshot_of(&store);
        store.shutdown().await.unwrap();
        drop(store);
        let (store, _) = Store::open(cfg(tmp.path())).unwrap();
        assert_eq!(snapshot_of(&store), before);
        store.shutdown().await.unwrap();
        drop(store);

        let conn = rusqlite::Connection::open(schema::db_path(tmp.path())).unwrap();
        let gone = conn
            .execute("DELETE FROM history WHERE node_id = ?1", [&ids[1]])
            .unwrap();
        assert!(gone > 0);
        drop(conn);
        let e = Store::open(cfg(tmp.path())).err().unwrap();
        assert!(matches!(e, StoreError::Damaged { .. }), "{e}");
        assert!(e.to_string().contains("table history"), "{e}");
    }
}
