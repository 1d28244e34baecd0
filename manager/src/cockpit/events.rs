//! The cockpit's durable event history and audit log: `cockpit.sqlite` in the state
//! dir (WAL, `synchronous=FULL`), beside the store's and the alerts' files.
//!
//! - Events: node registered/joined/down/up/removed, task failed, alert firing and
//!   resolved, admin actions. Newest first, filtered by kind and node, paged by `seq`.
//!   An event with a `dedupe` key (a task id, an alert transition's sequence) is stored
//!   once however often it is seen. At most [`EVENTS_KEPT`] rows: the oldest go.
//! - Audit: every admin action through the API with its actor (`admin-token` or a
//!   session's non-secret name), target, parameters and result. At most [`AUDIT_KEPT`].
//! - Cursors: how far the alerts' own transition log has been copied in.
//!
//! Why a file of its own: the store keeps its own commit counter and checksums in
//! `manager.db`; a second writer there would break its checks (the alerts made the same
//! choice for `alerts.sqlite`).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

/// The file, in the state dir.
pub const FILE: &str = "cockpit.sqlite";
pub const EVENTS_KEPT: i64 = 20_000;
pub const AUDIT_KEPT: i64 = 20_000;
/// Most rows one query returns.
pub const MAX_LIMIT: u32 = 500;

/// Every event kind, as the API spells it.
pub const KINDS: [&str; 9] = [
    "node_registered",
    "node_joined",
    "node_down",
    "node_up",
    "node_removed",
    "task_failed",
    "alert_firing",
    "alert_resolved",
    "admin_action",
];

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("{path}: {source} (move the file aside to start the cockpit's history afresh)")]
    Sql {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: i64,
    pub at_ms: u64,
    pub kind: String,
    pub node_id: Option<String>,
    pub hostname: Option<String>,
    pub service: Option<String>,
    pub message: String,
}

/// An event to record (its `seq` is given by the log).
#[derive(Clone, Debug, Default)]
pub struct NewEvent {
    pub at_ms: u64,
    pub kind: &'static str,
    pub node_id: Option<String>,
    pub hostname: Option<String>,
    pub service: Option<String>,
    pub message: String,
    /// Stored once per key (`None`: always stored).
    pub dedupe: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// Pass as `before_seq` for the next (older) page; `null` on the last one.
    pub next_before_seq: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: i64,
    pub at_ms: u64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub params: serde_json::Value,
    /// `ok` or `error`.
    pub result: String,
    pub error: Option<String>,
}

pub struct EventLog {
    path: PathBuf,
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    node_id TEXT,
    hostname TEXT,
    service TEXT,
    message TEXT NOT NULL,
    dedupe TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS events_node ON events(node_id, seq);
CREATE TABLE IF NOT EXISTS audit(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    params TEXT NOT NULL,
    result TEXT NOT NULL,
    error TEXT
);
CREATE TABLE IF NOT EXISTS cursors(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
";

impl EventLog {
    pub fn open(state_dir: &Path) -> Result<Self, EventsError> {
        let path = state_dir.join(FILE);
        let sql = |source| EventsError::Sql {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sql)?;
        conn.execute_batch(SCHEMA).map_err(sql)?;
        Ok(EventLog {
            path: path.clone(),
            conn: Mutex::new(conn),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: rusqlite::Error) -> EventsError {
        EventsError::Sql {
            path: self.path.clone(),
            source,
        }
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records events in one transaction; returns how many were new.
    pub fn record(&self, evs: &[NewEvent]) -> Result<usize, EventsError> {
        if evs.is_empty() {
            return Ok(0);
        }
        let mut c = self.conn();
        let tx = c.transaction().map_err(|e| self.err(e))?;
        let mut n = 0;
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO events(at_ms, kind, node_id, hostname, service, message, dedupe)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(|e| self.err(e))?;
            for e in evs {
                n += st
                    .execute(params![
                        e.at_ms as i64,
                        e.kind,
                        e.node_id,
                        e.hostname,
                        e.service,
                        e.message,
                        e.dedupe
                    ])
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.execute(
            "DELETE FROM events WHERE seq <= (SELECT MAX(seq) FROM events) - ?1",
            params![EVENTS_KEPT],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(n)
    }

    /// Newest first; `kinds` empty = all; at most `limit` (1..=[`MAX_LIMIT`]).
    pub fn page(
        &self,
        kinds: &[String],
        node: Option<&str>,
        limit: u32,
        before_seq: Option<i64>,
    ) -> Result<EventPage, EventsError> {
        let limit = limit.clamp(1, MAX_LIMIT);
        let mut sql = String::from(
            "SELECT seq, at_ms, kind, node_id, hostname, service, message FROM events WHERE seq < ?",
        );
        let mut args: Vec<rusqlite::types::Value> = vec![before_seq.unwrap_or(i64::MAX).into()];
        if !kinds.is_empty() {
            sql.push_str(" AND kind IN (");
            sql.push_str(&vec!["?"; kinds.len()].join(","));
            sql.push(')');
            args.extend(kinds.iter().map(|k| k.clone().into()));
        }
        if let Some(n) = node {
            sql.push_str(" AND node_id = ?");
            args.push(n.to_string().into());
        }
        sql.push_str(" ORDER BY seq DESC LIMIT ?");
        args.push(i64::from(limit + 1).into());
        let c = self.conn();
        let mut st = c.prepare(&sql).map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params_from_iter(args), |r| {
                Ok(Event {
                    seq: r.get(0)?,
                    at_ms: r.get::<_, i64>(1)?.max(0) as u64,
                    kind: r.get(2)?,
                    node_id: r.get(3)?,
                    hostname: r.get(4)?,
                    service: r.get(5)?,
                    message: r.get(6)?,
                })
            })
            .map_err(|e| self.err(e))?;
        let mut events = Vec::new();
        for r in rows {
            events.push(r.map_err(|e| self.err(e))?);
        }
        let next_before_seq = if events.len() > limit as usize {
            events.truncate(limit as usize);
            events.last().map(|e| e.seq)
        } else {
            None
        };
        Ok(EventPage {
            events,
            next_before_seq,
        })
    }

    pub fn audit(&self, a: &AuditEntry) -> Result<(), EventsError> {
        let c = self.conn();
        c.execute(
            "INSERT INTO audit(at_ms, actor, action, target, params, result, error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                a.at_ms as i64,
                a.actor,
                a.action,
                a.target,
                a.params.to_string(),
                a.result,
                a.error
            ],
        )
        .map_err(|e| self.err(e))?;
        c.execute(
            "DELETE FROM audit WHERE seq <= (SELECT MAX(seq) FROM audit) - ?1",
            params![AUDIT_KEPT],
        )
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Newest first.
    pub fn audit_list(&self, limit: u32) -> Result<Vec<AuditEntry>, EventsError> {
        let c = self.conn();
        let mut st = c
            .prepare(
                "SELECT seq, at_ms, actor, action, target, params, result, error FROM audit
                 ORDER BY seq DESC LIMIT ?1",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![i64::from(limit.clamp(1, MAX_LIMIT))], |r| {
                let params: String = r.get(5)?;
                Ok(AuditEntry {
                    seq: r.get(0)?,
                    at_ms: r.get::<_, i64>(1)?.max(0) as u64,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    params: serde_json::from_str(&params).unwrap_or(serde_json::Value::Null),
                    result: r.get(6)?,
                    error: r.get(7)?,
                })
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r.map_err(|e| self.err(e))?);
        }
        Ok(out)
    }

    pub fn cursor(&self, name: &str) -> Result<i64, EventsError> {
        let c = self.conn();
        let v: Option<i64> = c
            .query_row("SELECT value FROM cursors WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(v.unwrap_or(0))
    }

    pub fn set_cursor(&self, name: &str, value: i64) -> Result<(), EventsError> {
        self.conn()
            .execute(
                "INSERT INTO cursors(name, value) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                params![name, value],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &'static str, node: &str, dedupe: Option<&str>) -> NewEvent {
        NewEvent {
            at_ms: 1,
            kind,
            node_id: Some(node.into()),
            message: format!("{kind} {node}"),
            dedupe: dedupe.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn events_page_newest_first_filter_dedupe_and_survive_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let log = EventLog::open(tmp.path()).unwrap();
        assert_eq!(
            log.record(&[
                ev("node_down", "n1", None),
                ev("task_failed", "n1", Some("task:t1")),
                ev("node_up", "n1", None),
                ev("node_down", "n2", None),
            ])
            .unwrap(),
            4
        );
        assert_eq!(
            log.record(&[ev("task_failed", "n1", Some("task:t1"))])
                .unwrap(),
            0,
            "dedupe"
        );
        let p = log.page(&[], None, 2, None).unwrap();
        assert_eq!(p.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 3]);
        assert_eq!(p.next_before_seq, Some(3));
        let p2 = log.page(&[], None, 2, p.next_before_seq).unwrap();
        assert_eq!(p2.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 1]);
        assert_eq!(p2.next_before_seq, None);
        let downs = log
            .page(&["node_down".into()], Some("n1"), 100, None)
            .unwrap();
        assert_eq!(downs.events.len(), 1);
        assert_eq!(downs.events[0].message, "node_down n1");
        log.audit(&AuditEntry {
            at_ms: 5,
            actor: "admin-token".into(),
            action: "scale".into(),
            target: "svc1".into(),
            params: serde_json::json!({"replicas": 3}),
            result: "ok".into(),
            ..Default::default()
        })
        .unwrap();
        log.set_cursor("alerts", 7).unwrap();
        drop(log);
        let log = EventLog::open(tmp.path()).unwrap();
        assert_eq!(log.page(&[], None, 500, None).unwrap().events.len(), 4);
        let a = log.audit_list(10).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].params["replicas"], 3);
        assert_eq!(log.cursor("alerts").unwrap(), 7);
        assert_eq!(log.cursor("other").unwrap(), 0);
    }
}
