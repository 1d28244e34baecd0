//! Durable alert state and delivery queue: SQLite tables in the state dir
//! (`alerts.sqlite`, WAL mode, `synchronous=FULL`).
//!
//! One evaluation's changes (alerts, transitions, counter memory) and the notifications
//! it queued commit in one transaction: after a crash either all of it is there or none,
//! so a restart neither loses a "resolved" nor queues a second "firing". A queued
//! delivery is deleted only after its receiver answered 2xx: at-least-once, and the
//! alert id in every payload lets a receiver drop a repeat.
//!
//! Tables: `alerts(id, state, json)`, `deliveries(seq, receiver, alert_id, json,
//! attempts, next_attempt_ms, created_ms, last_error)`, `events(seq, at_ms, alert_id,
//! json)` (the history, capped), `receivers(name, delivered, failed, last_error,
//! last_error_ms, last_success_ms)`, `counters(kind, key, json)` (the rules' counter
//! memory, one row per key, rewritten only when that key changed; schema version 1 kept
//! it as one JSON row in `memory(k, json)`, moved into `counters` at open).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::rules::{CounterKind, CounterMemory};
use super::state::{Alert, Notification, Transition};

/// Events kept in the history table.
const EVENTS_KEPT: i64 = 10_000;
const SCHEMA_VERSION: i64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("alert store {path}: {source}")]
    Sql {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("alert store {path}: {message}")]
    Data { path: PathBuf, message: String },
}

pub struct AlertDb {
    path: PathBuf,
    conn: Mutex<Connection>,
}

/// One queued notification for one receiver.
#[derive(Clone, Debug, PartialEq)]
pub struct QueuedDelivery {
    pub seq: i64,
    pub receiver: String,
    pub notification: Notification,
    pub attempts: u32,
    pub created_ms: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReceiverStats {
    pub name: String,
    pub delivered: u64,
    pub failed_attempts: u64,
    pub queued: u64,
    pub last_error: Option<String>,
    pub last_error_ms: Option<u64>,
    pub last_success_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventRow {
    pub seq: i64,
    #[serde(flatten)]
    pub transition: Transition,
}

/// What start-up finds.
#[derive(Debug, Default)]
pub struct Loaded {
    pub alerts: BTreeMap<String, Alert>,
    pub memory: CounterMemory,
}

impl AlertDb {
    pub fn open(path: &Path) -> Result<Self, DbError> {
        let sql = |source| DbError::Sql {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sql)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sql)?;
        if version > SCHEMA_VERSION {
            return Err(DbError::Data {
                path: path.to_path_buf(),
                message: format!(
                    "schema version {version} is newer than this manager's ({SCHEMA_VERSION}): run the newer armada-manager, or move the file aside to start alerts afresh"
                ),
            });
        }
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(sql)?;
        if check != "ok" {
            return Err(DbError::Data {
                path: path.to_path_buf(),
                message: format!(
                    "damaged ({check}): move it aside to start alerts afresh (firing alerts will be notified again)"
                ),
            });
        }
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS alerts (
                 id TEXT PRIMARY KEY, state TEXT NOT NULL, json TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS deliveries (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT, receiver TEXT NOT NULL,
                 alert_id TEXT NOT NULL, json TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
                 next_attempt_ms INTEGER NOT NULL, created_ms INTEGER NOT NULL, last_error TEXT);
             CREATE INDEX IF NOT EXISTS deliveries_by_receiver ON deliveries(receiver, seq);
             CREATE TABLE IF NOT EXISTS events (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL,
                 alert_id TEXT NOT NULL, json TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS receivers (
                 name TEXT PRIMARY KEY, delivered INTEGER NOT NULL DEFAULT 0,
                 failed INTEGER NOT NULL DEFAULT 0, last_error TEXT, last_error_ms INTEGER,
                 last_success_ms INTEGER);
             CREATE TABLE IF NOT EXISTS counters (
                 kind TEXT NOT NULL, key TEXT NOT NULL, json TEXT NOT NULL,
                 PRIMARY KEY (kind, key)) WITHOUT ROWID;",
        )
        .map_err(sql)?;
        if version < 2 {
            migrate_memory_to_rows(&conn).map_err(|e| match e {
                MigrateError::Sql(source) => sql(source),
                MigrateError::Json(e) => DbError::Data {
                    path: path.to_path_buf(),
                    message: format!(
                        "counter memory (schema version 1): {e}: move the file aside to start alerts afresh"
                    ),
                },
            })?;
        }
        Ok(AlertDb {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    fn sql(&self) -> impl Fn(rusqlite::Error) -> DbError + '_ {
        |source| DbError::Sql {
            path: self.path.clone(),
            source,
        }
    }

    fn data(&self, message: String) -> DbError {
        DbError::Data {
            path: self.path.clone(),
            message,
        }
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves a connection that is still consistent
        // (SQLite rolls back an unfinished transaction): keep using it.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the file holds. `now_ms` becomes every counter's last-seen time (not stored).
    pub fn load(&self, now_ms: u64) -> Result<Loaded, DbError> {
        let c = self.conn();
        let mut out = Loaded::default();
        let mut st = c
            .prepare("SELECT id, json FROM alerts")
            .map_err(self.sql())?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(self.sql())?;
        for row in rows {
            let (id, json) = row.map_err(self.sql())?;
            let a: Alert =
                serde_json::from_str(&json).map_err(|e| self.data(format!("alert {id}: {e}")))?;
            out.alerts.insert(id, a);
        }
        let mut st = c
            .prepare("SELECT kind, key, json FROM counters")
            .map_err(self.sql())?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(self.sql())?;
        for row in rows {
            let (kind, key, json) = row.map_err(self.sql())?;
            let k = CounterKind::parse(&kind)
                .ok_or_else(|| self.data(format!("counter {key}: unknown kind {kind:?}")))?;
            out.memory
                .load_row(k, key.clone(), &json, now_ms)
                .map_err(|e| self.data(format!("counter {kind} {key}: {e}")))?;
        }
        Ok(out)
    }

    /// Writes one evaluation: changed and removed alerts, transitions, the rows of the
    /// counter memory's dirty keys (the caller clears them once this returns Ok), and
    /// one queued delivery per (receiver, notification).
    pub fn commit_step(
        &self,
        changed: &[&Alert],
        removed: &[String],
        transitions: &[Transition],
        deliveries: &[(String, Notification)],
        memory: Option<&CounterMemory>,
        now_ms: u64,
    ) -> Result<(), DbError> {
        let mut c = self.conn();
        let tx = c.transaction().map_err(self.sql())?;
        for a in changed {
            let json = serde_json::to_string(a).map_err(|e| self.data(e.to_string()))?;
            tx.execute(
                "INSERT INTO alerts(id, state, json) VALUES (?1, ?2, ?3)
                 ON CONFLICT(id) DO UPDATE SET state = excluded.state, json = excluded.json",
                params![a.id, a.state.as_str(), json],
            )
            .map_err(self.sql())?;
        }
        for id in removed {
            tx.execute("DELETE FROM alerts WHERE id = ?1", params![id])
                .map_err(self.sql())?;
        }
        for t in transitions {
            let json = serde_json::to_string(t).map_err(|e| self.data(e.to_string()))?;
            tx.execute(
                "INSERT INTO events(at_ms, alert_id, json) VALUES (?1, ?2, ?3)",
                params![t.at_ms as i64, t.alert_id, json],
            )
            .map_err(self.sql())?;
        }
        if !transitions.is_empty() {
            tx.execute(
                "DELETE FROM events WHERE seq <= (SELECT MAX(seq) FROM events) - ?1",
                params![EVENTS_KEPT],
            )
            .map_err(self.sql())?;
        }
        for (receiver, n) in deliveries {
            let json = serde_json::to_string(n).map_err(|e| self.data(e.to_string()))?;
            tx.execute(
                "INSERT INTO deliveries(receiver, alert_id, json, next_attempt_ms, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?4)",
                params![receiver, n.alert.id, json, now_ms as i64],
            )
            .map_err(self.sql())?;
        }
        if let Some(m) = memory {
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO counters(kind, key, json) VALUES (?1, ?2, ?3)
                     ON CONFLICT(kind, key) DO UPDATE SET json = excluded.json",
                )
                .map_err(self.sql())?;
            let mut delete = tx
                .prepare_cached("DELETE FROM counters WHERE kind = ?1 AND key = ?2")
                .map_err(self.sql())?;
            for (kind, key) in &m.dirty.0 {
                match m.row_json(*kind, key) {
                    Some(json) => upsert.execute(params![kind.as_str(), key, json]),
                    None => delete.execute(params![kind.as_str(), key]),
                }
                .map_err(self.sql())?;
            }
        }
        tx.commit().map_err(self.sql())
    }

    /// The oldest queued delivery of each receiver, if it is due: one at a time per
    /// receiver keeps "firing" ahead of its "resolved".
    pub fn due(&self, now_ms: u64) -> Result<Vec<QueuedDelivery>, DbError> {
        let c = self.conn();
        let mut st = c
            .prepare(
                "SELECT d.seq, d.receiver, d.json, d.attempts, d.created_ms, d.next_attempt_ms
                 FROM deliveries d
                 WHERE d.seq = (SELECT MIN(seq) FROM deliveries WHERE receiver = d.receiver)",
            )
            .map_err(self.sql())?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })
            .map_err(self.sql())?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, receiver, json, attempts, created, next) = row.map_err(self.sql())?;
            if next as u64 > now_ms {
                continue;
            }
            let notification = serde_json::from_str(&json)
                .map_err(|e| self.data(format!("queued delivery {seq}: {e}")))?;
            out.push(QueuedDelivery {
                seq,
                receiver,
                notification,
                attempts: attempts.max(0) as u32,
                created_ms: created.max(0) as u64,
            });
        }
        Ok(out)
    }

    pub fn delivered(&self, seq: i64, receiver: &str, now_ms: u64) -> Result<(), DbError> {
        let mut c = self.conn();
        let tx = c.transaction().map_err(self.sql())?;
        tx.execute("DELETE FROM deliveries WHERE seq = ?1", params![seq])
            .map_err(self.sql())?;
        tx.execute(
            "INSERT INTO receivers(name, delivered, last_success_ms) VALUES (?1, 1, ?2)
             ON CONFLICT(name) DO UPDATE SET delivered = delivered + 1, last_success_ms = ?2",
            params![receiver, now_ms as i64],
        )
        .map_err(self.sql())?;
        tx.commit().map_err(self.sql())
    }

    pub fn failed(
        &self,
        seq: i64,
        receiver: &str,
        error: &str,
        next_attempt_ms: u64,
        now_ms: u64,
    ) -> Result<(), DbError> {
        let mut c = self.conn();
        let tx = c.transaction().map_err(self.sql())?;
        tx.execute(
            "UPDATE deliveries SET attempts = attempts + 1, next_attempt_ms = ?2, last_error = ?3
             WHERE seq = ?1",
            params![seq, next_attempt_ms as i64, error],
        )
        .map_err(self.sql())?;
        tx.execute(
            "INSERT INTO receivers(name, failed, last_error, last_error_ms) VALUES (?1, 1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET failed = failed + 1, last_error = ?2, last_error_ms = ?3",
            params![receiver, error, now_ms as i64],
        )
        .map_err(self.sql())?;
        tx.commit().map_err(self.sql())
    }

    /// Drops a delivery that will never succeed (too old, or its receiver is gone).
    pub fn abandon(&self, seq: i64) -> Result<(), DbError> {
        self.conn()
            .execute("DELETE FROM deliveries WHERE seq = ?1", params![seq])
            .map(|_| ())
            .map_err(self.sql())
    }

    /// Drops queued deliveries of receivers no longer configured; returns how many.
    pub fn forget_receivers_except(&self, names: &[String]) -> Result<usize, DbError> {
        let c = self.conn();
        let mut st = c
            .prepare("SELECT DISTINCT receiver FROM deliveries")
            .map_err(self.sql())?;
        let have: Vec<String> = st
            .query_map([], |r| r.get(0))
            .map_err(self.sql())?
            .collect::<Result<_, _>>()
            .map_err(self.sql())?;
        let mut n = 0;
        for r in have.iter().filter(|r| !names.contains(r)) {
            n += c
                .execute("DELETE FROM deliveries WHERE receiver = ?1", params![r])
                .map_err(self.sql())?;
        }
        Ok(n)
    }

    pub fn receiver_stats(&self) -> Result<Vec<ReceiverStats>, DbError> {
        let c = self.conn();
        let mut queued: BTreeMap<String, u64> = BTreeMap::new();
        {
            let mut st = c
                .prepare("SELECT receiver, COUNT(*) FROM deliveries GROUP BY receiver")
                .map_err(self.sql())?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(self.sql())?;
            for row in rows {
                let (r, n) = row.map_err(self.sql())?;
                queued.insert(r, n.max(0) as u64);
            }
        }
        let mut st = c
            .prepare(
                "SELECT name, delivered, failed, last_error, last_error_ms, last_success_ms
                 FROM receivers ORDER BY name",
            )
            .map_err(self.sql())?;
        let rows = st
            .query_map([], |r| {
                Ok(ReceiverStats {
                    name: r.get(0)?,
                    delivered: r.get::<_, i64>(1)?.max(0) as u64,
                    failed_attempts: r.get::<_, i64>(2)?.max(0) as u64,
                    queued: 0,
                    last_error: r.get(3)?,
                    last_error_ms: r.get::<_, Option<i64>>(4)?.map(|v| v.max(0) as u64),
                    last_success_ms: r.get::<_, Option<i64>>(5)?.map(|v| v.max(0) as u64),
                })
            })
            .map_err(self.sql())?;
        let mut out: Vec<ReceiverStats> = rows.collect::<Result<_, _>>().map_err(self.sql())?;
        for s in &mut out {
            s.queued = queued.remove(&s.name).unwrap_or(0);
        }
        for (name, q) in queued {
            out.push(ReceiverStats {
                name,
                queued: q,
                ..Default::default()
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Events after `since` (a seq), oldest first, at most `limit`.
    pub fn events(&self, since: i64, limit: u32) -> Result<Vec<EventRow>, DbError> {
        let c = self.conn();
        let mut st = c
            .prepare("SELECT seq, json FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")
            .map_err(self.sql())?;
        let rows = st
            .query_map(params![since, limit as i64], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(self.sql())?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, json) = row.map_err(self.sql())?;
            let transition =
                serde_json::from_str(&json).map_err(|e| self.data(format!("event {seq}: {e}")))?;
            out.push(EventRow { seq, transition });
        }
        Ok(out)
    }
}

enum MigrateError {
    Sql(rusqlite::Error),
    Json(serde_json::Error),
}

impl From<rusqlite::Error> for MigrateError {
    fn from(e: rusqlite::Error) -> Self {
        MigrateError::Sql(e)
    }
}

/// Schema version 1 -> 2: the counter memory's one JSON row (rewritten whole at every
/// evaluation) becomes one row per key, in one transaction with the version bump.
fn migrate_memory_to_rows(conn: &Connection) -> Result<(), MigrateError> {
    let tx = conn.unchecked_transaction()?;
    let has_memory: bool = tx.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'memory'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if has_memory {
        let old: Option<String> = tx
            .query_row("SELECT json FROM memory WHERE k = 'counters'", [], |r| {
                r.get(0)
            })
            .optional()?;
        if let Some(json) = old {
            let mut m: CounterMemory = serde_json::from_str(&json).map_err(MigrateError::Json)?;
            m.mark_all_dirty();
            let mut ins =
                tx.prepare("INSERT OR REPLACE INTO counters(kind, key, json) VALUES (?1, ?2, ?3)")?;
            for (kind, key) in &m.dirty.0 {
                if let Some(j) = m.row_json(*kind, key) {
                    ins.execute(params![kind.as_str(), key, j])?;
                }
            }
        }
        tx.execute_batch("DROP TABLE memory")?;
    }
    tx.execute_batch("PRAGMA user_version = 2")?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::rules::Severity;
    use crate::alerts::state::AlertState;

    fn alert(id: &str, state: AlertState) -> Alert {
        Alert {
            id: id.into(),
            rule: "node_down".into(),
            state,
            severity: Severity::Critical,
            labels: BTreeMap::from([("alertname".to_string(), "ArmadaNodeDown".to_string())]),
            summary: "x".into(),
            value: None,
            active_since_ms: 1,
            fired_at_ms: Some(1),
            resolved_at_ms: None,
            notified: true,
            silenced: false,
        }
    }

    #[test]
    fn a_step_survives_reopening_and_the_queue_delivers_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.sqlite");
        let a = alert("a1", AlertState::Firing);
        {
            let db = AlertDb::open(&path).unwrap();
            let n = Notification { alert: a.clone() };
            db.commit_step(
                &[&a],
                &[],
                &[],
                &[("r1".into(), n.clone()), ("r2".into(), n)],
                Some(&CounterMemory::default()),
                10,
            )
            .unwrap();
            let mut r = a.clone();
            r.state = AlertState::Resolved;
            db.commit_step(
                &[&r],
                &[],
                &[],
                &[("r1".into(), Notification { alert: r.clone() })],
                None,
                20,
            )
            .unwrap();
        }
        let db = AlertDb::open(&path).unwrap();
        let l = db.load(0).unwrap();
        assert_eq!(l.alerts["a1"].state, AlertState::Resolved);
        let due = db.due(100).unwrap();
        assert_eq!(due.len(), 2, "one head per receiver");
        let r1 = due.iter().find(|d| d.receiver == "r1").unwrap();
        assert_eq!(
            r1.notification.alert.state,
            AlertState::Firing,
            "firing first"
        );
        db.failed(r1.seq, "r1", "HTTP 500", 200, 100).unwrap();
        assert!(
            db.due(150).unwrap().iter().all(|d| d.receiver != "r1"),
            "backing off"
        );
        let again = db.due(200).unwrap();
        let r1 = again.iter().find(|d| d.receiver == "r1").unwrap();
        assert_eq!(r1.attempts, 1);
        db.delivered(r1.seq, "r1", 200).unwrap();
        let next = db.due(200).unwrap();
        let r1 = next.iter().find(|d| d.receiver == "r1").unwrap();
        assert_eq!(r1.notification.alert.state, AlertState::Resolved);
        let stats = db.receiver_stats().unwrap();
        let s1 = stats.iter().find(|s| s.name == "r1").unwrap();
        assert_eq!((s1.delivered, s1.failed_attempts, s1.queued), (1, 1, 1));
        assert_eq!(s1.last_error.as_deref(), Some("HTTP 500"));
        assert_eq!(db.forget_receivers_except(&["r1".into()]).unwrap(), 1);
        assert!(db.due(1000).unwrap().iter().all(|d| d.receiver == "r1"));
    }

    #[test]
    fn counter_rows_round_trip_and_a_version_1_file_is_moved_to_rows() {
        use crate::alerts::rules::CounterTrack;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.sqlite");
        let track = |last| CounterTrack {
            last,
            increased_at_ms: Some(7),
            seen_at_ms: 9,
        };
        let mut m = CounterMemory::default();
        m.oom.insert("n/c1".into(), track(2));
        m.dropped.insert("n".into(), track(5));
        m.restarts.insert("n/c1".into(), [(1, 0), (2, 1)].into());
        // Version 1: the whole memory as one JSON row.
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(&format!(
                "CREATE TABLE memory (k TEXT PRIMARY KEY, json TEXT NOT NULL);
                 INSERT INTO memory VALUES ('counters', '{}');
                 PRAGMA user_version = 1;",
                serde_json::to_string(&m).unwrap()
            ))
            .unwrap();
        }
        let db = AlertDb::open(&path).unwrap();
        let l = db.load(100).unwrap();
        assert_eq!(l.memory.oom["n/c1"].last, 2);
        assert_eq!(l.memory.oom["n/c1"].seen_at_ms, 100, "seen now, not stored");
        assert_eq!(l.memory.dropped["n"].increased_at_ms, Some(7));
        assert_eq!(l.memory.restarts["n/c1"], m.restarts["n/c1"]);
        {
            let c = db.conn();
            let v: i64 = c
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            let old: i64 = c
                .query_row(
                    "SELECT count(*) FROM sqlite_schema WHERE name = 'memory'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!((v, old), (2, 0));
        }
        // A step stores the dirty keys only: one changed, one forgotten.
        let mut m = l.memory;
        m.oom.get_mut("n/c1").unwrap().last = 3;
        m.dropped.remove("n");
        m.dirty.0.insert((CounterKind::Oom, "n/c1".into()));
        m.dirty.0.insert((CounterKind::Dropped, "n".into()));
        db.commit_step(&[], &[], &[], &[], Some(&m), 200).unwrap();
        drop(db);
        let l = AlertDb::open(&path).unwrap().load(300).unwrap();
        assert_eq!(l.memory.oom["n/c1"].last, 3);
        assert!(l.memory.dropped.is_empty());
        assert_eq!(l.memory.restarts.len(), 1, "untouched row kept");
    }

    #[test]
    fn a_damaged_file_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.sqlite");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let e = AlertDb::open(&path).err().unwrap().to_string();
        assert!(e.contains("alerts.sqlite"), "{e}");
    }
}
