//! The one writer: a thread that owns the read-write connection.
//!
//! It takes every pending change at once (up to [`MAX_GROUP`]), decides each against
//! the in-memory state (the functions of [`super::state`]), writes the rows of every
//! node touched in one transaction and commits it (fsync of the WAL: group commit).
//! Only then are the requests answered. When the commit fails, the transaction is
//! rolled back and every touched node is reloaded from the file, so memory never holds
//! what the file does not: a full disk answers 503 and the next group simply tries
//! again. Any other write failure stops the writer (fail-stop): later changes are
//! refused, reads go on, and shutdown reports the store as not closed cleanly.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use protocol::token::NodeCredential;
use protocol::wire::NodeFacts;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::history::TIERS;
use super::queries;
use super::report::DecodedReport;
use super::schema::CommitsFile;
use super::state::{JoinedRefusal, NodeRecord, RegisterDecision, ReportOutcome, Revocation, State};
use super::writer_stats::StatsLog;
use super::{Registration, StoreError};

/// Most changes committed by one fsync.
pub const MAX_GROUP: usize = 2048;

pub enum Op {
    Register {
        /// The id wanted for a node new to the store (re-adoption).
        node_id: Option<String>,
        facts: NodeFacts,
        labels: BTreeMap<String, String>,
        interval: u32,
        now_ms: u64,
        reply: oneshot::Sender<Result<Registration, StoreError>>,
    },
    Joined {
        node_id: String,
        swarm_node_id: String,
        reply: oneshot::Sender<Result<Result<NodeRecord, JoinedRefusal>, StoreError>>,
    },
    SetLabels {
        node_id: String,
        labels: BTreeMap<String, String>,
        reply: oneshot::Sender<Result<Option<NodeRecord>, StoreError>>,
    },
    Remove {
        node_id: String,
        now_ms: u64,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    Report {
        node_id: String,
        received_ms: u64,
        decoded: DecodedReport,
        reply: oneshot::Sender<Result<Option<ReportOutcome>, StoreError>>,
    },
    Shutdown {
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

pub struct Checkpoints {
    pub nudge: std::sync::mpsc::SyncSender<()>,
    pub thread: std::thread::JoinHandle<()>,
    /// Raised by the writer while the WAL is past its bound and the writer's RESTART
    /// has not gone through; the checkpointer runs no pass meanwhile
    /// ([`super::checkpointer`]).
    pub wal_over: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The WAL file, whose size the writer looks at after each commit.
    pub wal_path: PathBuf,
}

/// Answers one request once its group's fate is known.
type Reply = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// What a group changed of one node, as of before the group.
#[derive(Default)]
struct Touch {
    record: bool,
    report: Option<Before>,
    removed: Option<NodeRecord>,
    /// The latest snapshot's JSON and its compressed form, made on the request's thread.
    packed: Option<(Arc<str>, Vec<u8>)>,
}

struct Before {
    pushed: [u64; TIERS.len()],
    seen: Vec<(String, u64)>,
}

pub struct Writer {
    pub conn: Connection,
    pub path: PathBuf,
    pub state: Arc<RwLock<State>>,
    pub commits: u64,
    pub commits_file: CommitsFile,
    /// Nudges the checkpointer's thread after each commit ([`super::checkpointer`]);
    /// dropped (and the thread joined) before the last checkpoint at close.
    pub checkpoints: Option<Checkpoints>,
    /// Set on a write failure other than a full disk: nothing more is written.
    pub failed: Option<String>,
    /// The state folder's flock, released when the writer ends.
    pub lock: std::fs::File,
    /// One compressor for every stored snapshot (reset, not rebuilt, per snapshot).
    pub packer: queries::SnapshotPacker,
    /// Group sizes and where the time goes, logged at close (and periodically).
    pub stats: StatsLog,
}

impl Writer {
    pub fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        loop {
            // Every sender gone without a shutdown (a test dropping the store): the
            // file already holds everything acknowledged; closing checkpoints it.
            let Some(first) = rx.blocking_recv() else {
                let _ = self.close();
                return;
            };
            let t_group = Instant::now();
            let mut ops = vec![first];
            while ops.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            let mut shutdown = None;
            let mut replies: Vec<Reply> = Vec::with_capacity(ops.len());
            let mut touched: HashMap<String, Touch> = HashMap::new();
            let size = ops.len() as u64;
            {
                let t = Instant::now();
                let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
                for op in ops {
                    match op {
                        Op::Shutdown { reply } => shutdown = Some(reply),
                        _ if self.failed.is_some() => refuse(op, &mut replies),
                        op => apply_op(&mut st, op, &mut touched, &mut replies),
                    }
                }
                drop(st);
                self.stats.record(|s| {
                    s.group_size.add(size);
                    s.apply_us.add_duration(t.elapsed());
                });
            }
            let outcome = if touched.is_empty() {
                Ok(())
            } else {
                self.commit_group(&touched)
            };
            if let Err(e) = &outcome {
                self.roll_back(&touched, e);
            }
            let err = outcome.err().or_else(|| {
                self.failed.as_ref().map(|m| StoreError::WriteFailed {
                    path: self.path.clone(),
                    message: m.clone(),
                })
            });
            for r in replies {
                r(err.as_ref());
            }
            self.stats
                .record(|s| s.group_us.add_duration(t_group.elapsed()));
            self.stats.maybe_log("store writer");
            if let Some(reply) = shutdown {
                let _ = reply.send(self.close());
                return;
            }
        }
    }

    /// Writes the touched nodes' rows and commits. Readers keep reading meanwhile.
    fn commit_group(&mut self, touched: &HashMap<String, Touch>) -> Result<(), StoreError> {
        let t0 = Instant::now();
        let result = (|| -> rusqlite::Result<()> {
            self.conn.execute_batch("BEGIN IMMEDIATE")?;
            {
                let st = self.state.read().unwrap_or_else(|p| p.into_inner());
                write_rows(&self.conn, &st, touched, &mut self.packer)?;
            }
            self.conn
                .prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'commits'")?
                .execute([(self.commits + 1) as i64])?;
            let rows = t0.elapsed();
            self.conn.execute_batch("COMMIT")?;
            self.stats.record(|s| {
                s.rows_us.add_duration(rows);
                s.commit_us.add_duration(t0.elapsed() - rows);
            });
            Ok(())
        })();
        crate::metrics::METRICS
            .store_commit_latency
            .observe(t0.elapsed());
        match result {
            Ok(()) => {
                self.commits += 1;
                crate::metrics::METRICS.store_commits.inc();
                self.bound_wal();
                if let Some(c) = &self.checkpoints {
                    // Full: a nudge is already waiting, which is as good.
                    let _ = c.nudge.try_send(());
                }
                if let Err(e) = self.commits_file.set(self.commits) {
                    tracing::warn!("{e}");
                }
                Ok(())
            }
            Err(e) => {
                if !self.conn.is_autocommit() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
                    tracing::warn!(
                        "{}: the disk is full; changes are refused with 503 until space returns",
                        self.path.display()
                    );
                    Err(StoreError::Full {
                        path: self.path.clone(),
                    })
                } else {
                    let message = e.to_string();
                    tracing::error!(
                        "writing {}: {message}; the store stops taking changes (reads go on): restart the manager",
                        self.path.display()
                    );
                    self.failed = Some(message.clone());
                    Err(StoreError::WriteFailed {
                        path: self.path.clone(),
                        message,
                    })
                }
            }
        }
    }

    /// Puts the touched nodes back as the file has them.
    fn roll_back(&mut self, touched: &HashMap<String, Touch>, why: &StoreError) {
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        for (id, t) in touched {
            match queries::load_node(&self.conn, id) {
                Ok(Some(e)) => st.put_entry(e),
                Ok(None) => {
                    st.remove(id);
                }
                Err(e) => {
                    tracing::error!(
                        "reloading node {id} from {} after a failed commit ({why}): {e}",
                        self.path.display()
                    );
                    self.failed = Some(format!("reloading node {id}: {e}"));
                }
            }
            if t.removed.is_some() && st.nodes.contains_key(id) {
                st.revoked.remove(id);
            }
        }
    }

    /// Past [`super::checkpointer::WAL_RESET_BYTES`] of WAL file (the checkpointer's
    /// passes fell behind the writer): the checkpointer holds its passes off and the
    /// writer runs its RESTART after each commit until one goes through.
    fn bound_wal(&mut self) {
        use std::sync::atomic::Ordering;
        let Some(c) = &self.checkpoints else { return };
        let over = c.wal_over.clone();
        let len = std::fs::metadata(&c.wal_path).map_or(0, |m| m.len());
        if len <= super::checkpointer::WAL_RESET_BYTES as u64 {
            return;
        }
        over.store(true, Ordering::Release);
        if self.restart_wal() {
            over.store(false, Ordering::Release);
        }
    }

    /// The checkpointer's passes fell behind: copies the rest of the WAL into the file
    /// and starts the WAL over (RESTART), on the writer's own connection between two
    /// groups, so it never contends for the write lock. Answered busy (a reader or the
    /// checkpointer's last pass still held the checkpoint lock) it is tried again after
    /// the next commit. Returns whether it went through.
    fn restart_wal(&mut self) -> bool {
        let t = std::time::Instant::now();
        let busy = self
            .conn
            .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0));
        match busy {
            Ok(0) => {
                self.stats.record(|s| {
                    s.restarts += 1;
                    s.checkpoint_us.add_duration(t.elapsed());
                });
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!("checkpointing the WAL of {}: {e}", self.path.display());
                false
            }
        }
    }

    /// Checkpoints the WAL into the file and closes it; an error means the store was
    /// not closed cleanly (its WAL is replayed at the next start).
    fn close(mut self) -> Result<(), StoreError> {
        self.stats.log_total("store writer");
        if let Some(c) = self.checkpoints.take() {
            drop(c.nudge);
            let _ = c.thread.join();
        }
        let path = self.path.clone();
        if let Some(message) = self.failed {
            return Err(StoreError::WriteFailed { path, message });
        }
        let busy: i64 = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .map_err(|e| StoreError::Sqlite {
                what: "checkpointing",
                path: path.clone(),
                source: e,
            })?;
        if busy != 0 {
            return Err(StoreError::WriteFailed {
                path,
                message: "the final WAL checkpoint could not finish (a reader held it)".into(),
            });
        }
        self.conn.close().map_err(|(_, e)| StoreError::Sqlite {
            what: "closing",
            path: path.clone(),
            source: e,
        })?;
        drop(self.lock);
        Ok(())
    }
}

fn write_rows(
    conn: &Connection,
    st: &State,
    touched: &HashMap<String, Touch>,
    packer: &mut queries::SnapshotPacker,
) -> rusqlite::Result<()> {
    for (id, t) in touched {
        let Some(e) = st.nodes.get(id) else {
            if let Some(r) = &t.removed {
                let at = st.revoked.get(id).map_or(0, |r| r.removed_at_ms);
                queries::remove_node(conn, r, at)?;
            }
            continue;
        };
        if t.record {
            queries::put_node(conn, &e.record)?;
        }
        let Some(before) = &t.report else { continue };
        let packed = t
            .packed
            .as_ref()
            .filter(|(json, _)| e.latest_json.as_ref().is_some_and(|l| Arc::ptr_eq(l, json)))
            .map(|(_, p)| p.as_slice());
        queries::put_latest(conn, e, packed, packer)?;
        for (i, (inst, max)) in e.seen.iter().enumerate() {
            if before.seen.get(i).map(|(bi, bm)| (bi.as_str(), *bm)) != Some((inst.as_str(), *max))
            {
                queries::put_dedupe(conn, id, inst, *max, i)?;
            }
        }
        for (inst, _) in &before.seen {
            if !e.seen.iter().any(|(i, _)| i == inst) {
                queries::delete_dedupe(conn, id, inst)?;
            }
        }
        for (tier, (&now, &then)) in e.history.pushed().iter().zip(&before.pushed).enumerate() {
            if now == then {
                continue;
            }
            let mut first_kept = now;
            for (n, p) in e.history.numbered(tier) {
                first_kept = first_kept.min(n);
                if n >= then {
                    queries::put_history(conn, id, tier, n, &p)?;
                }
            }
            if first_kept > 0 {
                queries::trim_history(conn, id, tier, first_kept)?;
            }
        }
    }
    Ok(())
}

fn refuse(op: Op, replies: &mut Vec<Reply>) {
    fn stopped(e: Option<&StoreError>) -> StoreError {
        e.map(StoreError::for_reply).unwrap_or(StoreError::Stopped)
    }
    match op {
        Op::Register { reply, .. } => replies.push(Box::new(move |e| {
            let _ = reply.send(Err(stopped(e)));
        })),
        Op::Joined { reply, .. } => replies.push(Box::new(move |e| {
            let _ = reply.send(Err(stopped(e)));
        })),
        Op::SetLabels { reply, .. } => replies.push(Box::new(move |e| {
            let _ = reply.send(Err(stopped(e)));
        })),
        Op::Remove { reply, .. } => replies.push(Box::new(move |e| {
            let _ = reply.send(Err(stopped(e)));
        })),
        Op::Report { reply, .. } => replies.push(Box::new(move |e| {
            let _ = reply.send(Err(stopped(e)));
        })),
        Op::Shutdown { .. } => {}
    }
}

fn new_node_id(st: &State) -> String {
    use rand::RngCore;
    loop {
        let mut b = [0u8; 6];
        rand::rng().fill_bytes(&mut b);
        let id = format!("n-{}", hex::encode(b));
        if !st.nodes.contains_key(&id) && !st.revoked.contains_key(&id) {
            return id;
        }
    }
}

/// Sends `value` on success, the group's error otherwise.
fn answer<T: Send + 'static>(reply: oneshot::Sender<Result<T, StoreError>>, value: T) -> Reply {
    Box::new(move |e| {
        let _ = reply.send(match e {
            None => Ok(value),
            Some(e) => Err(e.for_reply()),
        });
    })
}

fn apply_op(
    st: &mut State,
    op: Op,
    touched: &mut HashMap<String, Touch>,
    replies: &mut Vec<Reply>,
) {
    match op {
        Op::Register {
            node_id: wanted_id,
            facts,
            labels,
            interval,
            now_ms,
            reply,
        } => {
            let (node_id, registered_at_ms, swarm_node_id) = match st.decide_register(&facts) {
                RegisterDecision::HostnameTaken(node_id) => {
                    // Nothing changes: answered whatever the commit does.
                    replies.push(Box::new(move |_| {
                        let _ = reply.send(Ok(Registration::HostnameTaken { node_id }));
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
                RegisterDecision::New => (
                    wanted_id
                        .filter(|id| !st.nodes.contains_key(id) && !st.revoked.contains_key(id))
                        .unwrap_or_else(|| new_node_id(st)),
                    now_ms,
                    None,
                ),
            };
            let existing = st.nodes.contains_key(&node_id);
            let credential = NodeCredential::generate(&node_id);
            st.put_record(NodeRecord {
                node_id: node_id.clone(),
                facts,
                labels,
                credential_hash: credential.secret_hash(),
                registered_at_ms,
                swarm_node_id,
                report_interval_seconds: interval,
            });
            touched.entry(node_id.clone()).or_default().record = true;
            replies.push(answer(
                reply,
                Registration::Registered {
                    node_id,
                    credential: credential.expose(),
                    existing,
                },
            ));
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
                    touched.entry(node_id.clone()).or_default().record = true;
                }
                st.nodes[&node_id].record.clone()
            });
            replies.push(answer(reply, result));
        }
        Op::SetLabels {
            node_id,
            labels,
            reply,
        } => {
            let record = st.nodes.get_mut(&node_id).map(|e| {
                if e.record.labels != labels {
                    e.record.labels = labels;
                    touched.entry(node_id.clone()).or_default().record = true;
                }
                e.record.clone()
            });
            replies.push(answer(reply, record));
        }
        Op::Remove {
            node_id,
            now_ms,
            reply,
        } => {
            let record = st.nodes.get(&node_id).map(|e| e.record.clone());
            let removed = st.remove(&node_id);
            if let Some(r) = record {
                st.revoked.insert(
                    node_id.clone(),
                    Revocation {
                        node_id: node_id.clone(),
                        hostname: r.facts.hostname.clone(),
                        machine_id: r.facts.machine_id.clone(),
                        removed_at_ms: now_ms,
                    },
                );
                touched.entry(node_id).or_default().removed = Some(r);
            }
            replies.push(answer(reply, removed));
        }
        Op::Report {
            node_id,
            received_ms,
            mut decoded,
            reply,
        } => {
            if let Some(e) = st.nodes.get(&node_id) {
                let t = touched.entry(node_id.clone()).or_default();
                if t.report.is_none() {
                    t.report = Some(Before {
                        pushed: e.history.pushed(),
                        seen: e.seen.clone(),
                    });
                }
            }
            let outcome = st.apply_report(&node_id, received_ms, &decoded);
            // The report's snapshot became the node's latest: keep its compressed form
            // for the row (a later report of the group may replace both).
            if let (Some(e), Some(json), Some(packed)) = (
                st.nodes.get(&node_id),
                &decoded.last_json,
                decoded.last_packed.take(),
            ) {
                if e.latest_json.as_ref().is_some_and(|l| Arc::ptr_eq(l, json)) {
                    touched.entry(node_id.clone()).or_default().packed =
                        Some((json.clone(), packed));
                }
            }
            replies.push(answer(reply, outcome));
        }
        Op::Shutdown { .. } => {}
    }
}
