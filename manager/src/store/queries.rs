//! Rows in and out: every read and write of the tables, and the per-row checksum.
//!
//! SQLite checks its own structure (`integrity_check`) but not the bytes of a value: a
//! flipped bit inside a JSON text or a number reads back as a different, valid value.
//! So every row carries `crc`, a CRC-32 over its other columns, checked as the row is
//! loaded; a mismatch is damage, never a silently different truth.
//!
//! Loading scans each table in key order; in salvage mode a scan that hits an
//! unreadable page is repeated from the other end, so the rows on both sides of the
//! damage are kept, and every row lost is counted per table.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rusqlite::types::Value;
use rusqlite::{params, Connection};

use super::history::{History, Point, TIERS};
use super::state::{LatestSummary, NodeEntry, NodeRecord, Revocation, State};

/// A CRC-32 over typed column values (tagged, so `("ab","c")` differs from `("a","bc")`).
#[derive(Default)]
pub struct RowCrc(flate2::Crc);

impl RowCrc {
    fn text(&mut self, s: &str) -> &mut Self {
        self.0.update(b"T");
        self.0.update(&(s.len() as u64).to_le_bytes());
        self.0.update(s.as_bytes());
        self
    }
    fn opt_text(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            Some(s) => self.text(s),
            None => self.null(),
        }
    }
    fn int(&mut self, i: i64) -> &mut Self {
        self.0.update(b"I");
        self.0.update(&i.to_le_bytes());
        self
    }
    fn opt_int(&mut self, i: Option<i64>) -> &mut Self {
        match i {
            Some(i) => self.int(i),
            None => self.null(),
        }
    }
    fn opt_real(&mut self, r: Option<f64>) -> &mut Self {
        match r {
            Some(r) => {
                self.0.update(b"R");
                self.0.update(&r.to_bits().to_le_bytes());
                self
            }
            None => self.null(),
        }
    }
    fn null(&mut self) -> &mut Self {
        self.0.update(b"N");
        self
    }
    fn sum(&self) -> i64 {
        self.0.sum() as i64
    }
}

/// What could not be read back, per table (salvage mode).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Loss {
    /// (table, rows lost or unreadable, why)
    pub tables: Vec<(String, u64, String)>,
}

impl Loss {
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }
    fn add(&mut self, table: &str, rows: u64, why: impl Into<String>) {
        self.tables.push((table.into(), rows, why.into()));
    }
}

/// Why the rows do not make a store (strict mode).
#[derive(Debug, thiserror::Error)]
#[error("table {table}: {problem}")]
pub struct RowDamage {
    pub table: &'static str,
    pub problem: String,
}

struct Table {
    name: &'static str,
    key: &'static [&'static str],
    cols: &'static str,
}

const NODES: Table = Table {
    name: "nodes",
    key: &["node_id"],
    cols: "node_id, hostname, machine_id, facts, labels, credential_hash, registered_at_ms, swarm_node_id, report_interval_seconds, crc",
};
const REVOCATIONS: Table = Table {
    name: "revocations",
    key: &["node_id"],
    cols: "node_id, hostname, machine_id, removed_at_ms, crc",
};
const LATEST: Table = Table {
    name: "latest",
    key: &["node_id"],
    cols: "node_id, last_report_ms, collected_at_ms, cpu_busy_ratio, memory_used_bytes, memory_total_bytes, temperature_celsius, containers, prev_cpu_busy, prev_cpu_total, reports_total, agent_dropped_total, history_pushed, open_buckets, snapshot, crc, snapshot_bytes",
};
const DEDUPE: Table = Table {
    name: "dedupe",
    key: &["node_id", "instance"],
    cols: "node_id, instance, max_seq, used, crc",
};
const HISTORY: Table = Table {
    name: "history",
    key: &["node_id", "tier", "n"],
    cols: "node_id, tier, n, t_ms, cpu_busy_ratio, memory_used_bytes, temperature_celsius, containers, crc, load1, net_rx_bytes_per_s, net_tx_bytes_per_s, disk_write_bytes_per_s, fs_used_ratio_max",
};

/// Why a scan stopped early: a read error, or the row handler's verdict.
enum Stop {
    Read(rusqlite::Error),
    Row(RowDamage),
}

/// Hands a table's rows to `each` in key order, one at a time (a reused buffer: a big
/// table is never held whole), and returns how many it handed on. Strict: the first
/// read error is returned. Salvage: after an unreadable page the table is read again
/// from the other end, down to the last row the first pass read; those rows are handed
/// on in key order too, and the read error is returned beside the count.
fn scan_each(
    conn: &Connection,
    t: &Table,
    salvage: bool,
    each: &mut dyn FnMut(&[Value]) -> Result<(), RowDamage>,
) -> Result<(u64, Option<String>), RowDamage> {
    let n = t.cols.split(',').count();
    let keys = t.key.len();
    let query = |desc: bool| {
        let order: Vec<String> = t
            .key
            .iter()
            .map(|k| format!("{k}{}", if desc { " DESC" } else { "" }))
            .collect();
        format!(
            "SELECT {} FROM {} ORDER BY {}",
            t.cols,
            t.name,
            order.join(", ")
        )
    };
    // `row` and `last` trade places after each row, so `last` is the last row read.
    let (mut row, mut last) = (Vec::with_capacity(n), Vec::new());
    let mut count = 0u64;
    let forward = (|| -> Result<(), Stop> {
        let mut stmt = conn.prepare(&query(false)).map_err(Stop::Read)?;
        let mut rows = stmt.query([]).map_err(Stop::Read)?;
        while let Some(r) = rows.next().map_err(Stop::Read)? {
            row.clear();
            for i in 0..n {
                row.push(r.get::<_, Value>(i).map_err(Stop::Read)?);
            }
            each(&row).map_err(Stop::Row)?;
            count += 1;
            std::mem::swap(&mut row, &mut last);
        }
        Ok(())
    })();
    let e = match forward {
        Ok(()) => return Ok((count, None)),
        Err(Stop::Row(d)) => return Err(d),
        Err(Stop::Read(e)) => e,
    };
    if !salvage {
        return Err(RowDamage {
            table: t.name,
            problem: format!("reading after {count} rows: {e}"),
        });
    }
    // From the end back to the damage, or to the last row the forward pass read (a
    // scan in key order read every row before it).
    let key = |v: &[Value]| format!("{:?}", &v[..keys]);
    let seen = (count > 0).then(|| key(&last));
    let mut back = Vec::new();
    let _ = (|| -> Result<(), rusqlite::Error> {
        let mut stmt = conn.prepare(&query(true))?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let v = (0..n)
                .map(|i| r.get::<_, Value>(i))
                .collect::<Result<Vec<_>, _>>()?;
            if seen.as_deref() == Some(key(&v).as_str()) {
                break;
            }
            back.push(v);
        }
        Ok(())
    })();
    for v in back.into_iter().rev() {
        each(&v)?;
        count += 1;
    }
    Ok((count, Some(e.to_string())))
}

fn text(v: &Value) -> Result<&str, String> {
    match v {
        Value::Text(s) => Ok(s),
        other => Err(format!("expected text, found {other:?}")),
    }
}
fn opt_text(v: &Value) -> Result<Option<&str>, String> {
    match v {
        Value::Null => Ok(None),
        v => text(v).map(Some),
    }
}
fn int(v: &Value) -> Result<i64, String> {
    match v {
        Value::Integer(i) => Ok(*i),
        other => Err(format!("expected an integer, found {other:?}")),
    }
}
fn opt_int(v: &Value) -> Result<Option<i64>, String> {
    match v {
        Value::Null => Ok(None),
        v => int(v).map(Some),
    }
}
fn opt_real(v: &Value) -> Result<Option<f64>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Real(r) => Ok(Some(*r)),
        Value::Integer(i) => Ok(Some(*i as f64)),
        other => Err(format!("expected a number, found {other:?}")),
    }
}
fn check(crc: &RowCrc, v: &Value) -> Result<(), String> {
    let stored = int(v)?;
    if crc.sum() != stored {
        return Err(format!(
            "checksum mismatch (stored {stored:#x}, computed {:#x}): the row's bytes changed on disk",
            crc.sum()
        ));
    }
    Ok(())
}

fn node_crc(r: &NodeRecord, facts: &str, labels: &str) -> RowCrc {
    let mut c = RowCrc::default();
    c.text(&r.node_id)
        .text(&r.facts.hostname)
        .text(&r.facts.machine_id)
        .text(facts)
        .text(labels)
        .text(&r.credential_hash)
        .int(r.registered_at_ms as i64)
        .opt_text(r.swarm_node_id.as_deref())
        .int(r.report_interval_seconds as i64);
    c
}

fn parse_node(v: &[Value]) -> Result<NodeRecord, String> {
    let facts: protocol::wire::NodeFacts =
        serde_json::from_str(text(&v[3])?).map_err(|e| format!("facts: {e}"))?;
    let labels: BTreeMap<String, String> =
        serde_json::from_str(text(&v[4])?).map_err(|e| format!("labels: {e}"))?;
    let r = NodeRecord {
        node_id: text(&v[0])?.to_string(),
        facts,
        labels,
        credential_hash: text(&v[5])?.to_string(),
        registered_at_ms: int(&v[6])? as u64,
        swarm_node_id: opt_text(&v[7])?.map(String::from),
        report_interval_seconds: u32::try_from(int(&v[8])?).map_err(|e| e.to_string())?,
    };
    if r.facts.hostname != text(&v[1])? || r.facts.machine_id != text(&v[2])? {
        return Err("hostname/machine_id columns differ from facts".into());
    }
    check(&node_crc(&r, text(&v[3])?, text(&v[4])?), &v[9])?;
    Ok(r)
}

pub fn put_node(conn: &Connection, r: &NodeRecord) -> rusqlite::Result<()> {
    let facts = serde_json::to_string(&r.facts).unwrap_or_default();
    let labels = serde_json::to_string(&r.labels).unwrap_or_default();
    let crc = node_crc(r, &facts, &labels).sum();
    conn.prepare_cached(
        "INSERT OR REPLACE INTO nodes (node_id, hostname, machine_id, facts, labels, credential_hash, registered_at_ms, swarm_node_id, report_interval_seconds, crc)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        r.node_id,
        r.facts.hostname,
        r.facts.machine_id,
        facts,
        labels,
        r.credential_hash,
        r.registered_at_ms as i64,
        r.swarm_node_id,
        r.report_interval_seconds as i64,
        crc
    ])?;
    Ok(())
}

/// Deletes every row of a node and records its revocation.
pub fn remove_node(conn: &Connection, r: &NodeRecord, now_ms: u64) -> rusqlite::Result<()> {
    for table in ["nodes", "latest", "dedupe", "history"] {
        conn.prepare_cached(&format!("DELETE FROM {table} WHERE node_id = ?1"))?
            .execute(params![r.node_id])?;
    }
    put_revocation(
        conn,
        &r.node_id,
        &r.facts.hostname,
        &r.facts.machine_id,
        now_ms,
    )
}

fn revocation_crc(node_id: &str, hostname: &str, machine_id: &str, at: i64) -> RowCrc {
    let mut c = RowCrc::default();
    c.text(node_id).text(hostname).text(machine_id).int(at);
    c
}

pub fn put_revocation(
    conn: &Connection,
    node_id: &str,
    hostname: &str,
    machine_id: &str,
    at_ms: u64,
) -> rusqlite::Result<()> {
    let crc = revocation_crc(node_id, hostname, machine_id, at_ms as i64).sum();
    conn.prepare_cached(
        "INSERT OR REPLACE INTO revocations (node_id, hostname, machine_id, removed_at_ms, crc) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![node_id, hostname, machine_id, at_ms as i64, crc])?;
    Ok(())
}

fn parse_revocation(v: &[Value]) -> Result<Revocation, String> {
    let r = Revocation {
        node_id: text(&v[0])?.into(),
        hostname: text(&v[1])?.into(),
        machine_id: text(&v[2])?.into(),
        removed_at_ms: int(&v[3])? as u64,
    };
    check(
        &revocation_crc(
            &r.node_id,
            &r.hostname,
            &r.machine_id,
            r.removed_at_ms as i64,
        ),
        &v[4],
    )?;
    Ok(r)
}

/// The columns of a `latest` row, as stored.
struct LatestRow<'a> {
    node_id: &'a str,
    last_report_ms: Option<i64>,
    summary: Option<&'a LatestSummary>,
    prev_cpu: Option<(f64, f64)>,
    reports_total: i64,
    agent_dropped_total: i64,
    history_pushed: String,
    open_buckets: String,
    snapshot: Option<&'a str>,
}

impl LatestRow<'_> {
    fn crc(&self) -> RowCrc {
        let s = self.summary;
        let mut c = RowCrc::default();
        c.text(self.node_id)
            .opt_int(self.last_report_ms)
            .opt_int(s.map(|s| s.collected_at_ms as i64))
            .opt_real(s.and_then(|s| s.cpu_busy_ratio))
            .opt_int(s.and_then(|s| s.memory_used_bytes).map(|v| v as i64))
            .opt_int(s.and_then(|s| s.memory_total_bytes).map(|v| v as i64))
            .opt_real(s.and_then(|s| s.temperature_celsius))
            .opt_int(s.map(|s| s.containers as i64))
            .opt_real(self.prev_cpu.map(|p| p.0))
            .opt_real(self.prev_cpu.map(|p| p.1))
            .int(self.reports_total)
            .int(self.agent_dropped_total)
            .text(&self.history_pushed)
            .text(&self.open_buckets)
            .opt_text(self.snapshot);
        c
    }
}

/// `packed`: the snapshot already compressed (on the request's thread), when it is
/// `e.latest_json`'s; else it is compressed here.
pub fn put_latest(
    conn: &Connection,
    e: &NodeEntry,
    packed: Option<&[u8]>,
    packer: &mut SnapshotPacker,
) -> rusqlite::Result<()> {
    let row = LatestRow {
        node_id: &e.record.node_id,
        last_report_ms: e.last_report_ms.map(|v| v as i64),
        summary: e.latest.as_ref(),
        prev_cpu: e.prev_cpu,
        reports_total: e.reports_total as i64,
        agent_dropped_total: e.agent_dropped_total as i64,
        history_pushed: serde_json::to_string(&e.history.pushed()).unwrap_or_default(),
        open_buckets: e.history.open_json(),
        snapshot: e.latest_json.as_deref(),
    };
    // The checksum covers the JSON itself, so a damaged blob that still inflates is
    // caught as surely as one that does not.
    let crc = row.crc().sum();
    let s = row.summary;
    // Compressing into memory does not fail; were it to, the commit fails (the writer
    // stops) rather than storing a blob that would not inflate.
    let packed = match (packed, row.snapshot) {
        (Some(p), Some(_)) => Some(std::borrow::Cow::Borrowed(p)),
        (_, json) => json
            .map(|j| packer.pack(j).map(std::borrow::Cow::Owned))
            .transpose()
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
    };
    conn.prepare_cached(
        "INSERT OR REPLACE INTO latest (node_id, last_report_ms, collected_at_ms, cpu_busy_ratio, memory_used_bytes, memory_total_bytes, temperature_celsius, containers, prev_cpu_busy, prev_cpu_total, reports_total, agent_dropped_total, history_pushed, open_buckets, snapshot, crc, snapshot_bytes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
    )?
    .execute(params![
        row.node_id,
        row.last_report_ms,
        s.map(|s| s.collected_at_ms as i64),
        s.and_then(|s| s.cpu_busy_ratio),
        s.and_then(|s| s.memory_used_bytes).map(|v| v as i64),
        s.and_then(|s| s.memory_total_bytes).map(|v| v as i64),
        s.and_then(|s| s.temperature_celsius),
        s.map(|s| s.containers as i64),
        row.prev_cpu.map(|p| p.0),
        row.prev_cpu.map(|p| p.1),
        row.reports_total,
        row.agent_dropped_total,
        row.history_pushed,
        row.open_buckets,
        packed,
        crc,
        row.snapshot.map(|j| j.len() as i64),
    ])?;
    Ok(())
}

/// Most bytes a stored snapshot may inflate to (ingest refuses far smaller ones; this
/// only bounds what a damaged length could make the loader allocate).
const MAX_SNAPSHOT_BYTES: i64 = 64 << 20;

/// [`SnapshotPacker::pack`] with this thread's packer (one per thread, made on first use).
pub fn pack_on_this_thread(json: &str) -> std::io::Result<Vec<u8>> {
    thread_local! {
        static PACKER: std::cell::RefCell<SnapshotPacker> = Default::default();
    }
    PACKER.with(|p| p.borrow_mut().pack(json))
}

/// Compresses the stored snapshots: one zlib stream state, reset for each snapshot.
/// A fresh compressor per snapshot allocated and zeroed its ~300 KiB of tables each
/// time (most of the writer's `memset`); the writer keeps one.
pub struct SnapshotPacker(flate2::Compress);

impl Default for SnapshotPacker {
    fn default() -> Self {
        SnapshotPacker(flate2::Compress::new(flate2::Compression::fast(), true))
    }
}

impl SnapshotPacker {
    /// The snapshot JSON as stored: zlib (what the sqlite3 shell's `sqlar_uncompress`
    /// reads), fastest level: a 4.4 KB snapshot becomes ~1 KB in tens of microseconds.
    pub fn pack(&mut self, json: &str) -> std::io::Result<Vec<u8>> {
        let z = &mut self.0;
        z.reset();
        let input = json.as_bytes();
        let mut out = Vec::with_capacity(input.len() / 3 + 64);
        // Each round fills the spare capacity, which doubles between rounds: the
        // rounds are few and bounded.
        for _ in 0..48 {
            let read = (z.total_in() as usize).min(input.len());
            match z.compress_vec(&input[read..], &mut out, flate2::FlushCompress::Finish) {
                Ok(flate2::Status::StreamEnd) => return Ok(out),
                Ok(_) => out.reserve(out.capacity().max(1024)),
                Err(e) => return Err(std::io::Error::other(e)),
            }
        }
        Err(std::io::Error::other("the compressed snapshot did not end"))
    }
}

/// A stored snapshot back to its JSON: TEXT (a version-1 row) as it is, a BLOB
/// inflated to exactly `snapshot_bytes`.
fn stored_snapshot(v: &Value, bytes: &Value) -> Result<Option<Arc<str>>, String> {
    use std::io::Read as _;
    match v {
        Value::Null => Ok(None),
        Value::Text(s) => Ok(Some(Arc::from(s.as_str()))),
        Value::Blob(b) => {
            let want = int(bytes).map_err(|e| format!("snapshot_bytes: {e}"))?;
            if !(0..=MAX_SNAPSHOT_BYTES).contains(&want) {
                return Err(format!("snapshot_bytes {want} is out of range"));
            }
            let mut json = String::with_capacity(want as usize);
            flate2::read::ZlibDecoder::new(b.as_slice())
                .take(want as u64 + 1)
                .read_to_string(&mut json)
                .map_err(|e| format!("snapshot: inflating: {e}"))?;
            if json.len() as i64 != want {
                return Err(format!(
                    "snapshot inflates to {} bytes, snapshot_bytes says {want}",
                    json.len()
                ));
            }
            Ok(Some(Arc::from(json)))
        }
        other => Err(format!(
            "snapshot: expected text or a blob, found {other:?}"
        )),
    }
}

/// The parts of a node entry in its `latest` row.
struct LatestParts {
    last_report_ms: Option<u64>,
    latest: Option<LatestSummary>,
    prev_cpu: Option<(f64, f64)>,
    reports_total: u64,
    agent_dropped_total: u64,
    pushed: [u64; TIERS.len()],
    open_buckets: String,
    snapshot: Option<Arc<str>>,
}

impl LatestParts {
    /// The node's entry takes the row's figures (its history is restored apart).
    fn fill(self, e: &mut NodeEntry) {
        e.last_report_ms = self.last_report_ms;
        e.latest = self.latest;
        e.prev_cpu = self.prev_cpu;
        e.reports_total = self.reports_total;
        e.agent_dropped_total = self.agent_dropped_total;
        e.latest_json = self.snapshot;
    }
}

fn parse_latest(v: &[Value]) -> Result<(String, LatestParts), String> {
    let node_id = text(&v[0])?.to_string();
    let latest = match opt_int(&v[2])? {
        Some(collected) => Some(LatestSummary {
            collected_at_ms: collected as u64,
            cpu_busy_ratio: opt_real(&v[3])?,
            memory_used_bytes: opt_int(&v[4])?.map(|x| x as u64),
            memory_total_bytes: opt_int(&v[5])?.map(|x| x as u64),
            temperature_celsius: opt_real(&v[6])?,
            containers: opt_int(&v[7])?.unwrap_or(0) as u32,
        }),
        None => None,
    };
    let prev_cpu = match (opt_real(&v[8])?, opt_real(&v[9])?) {
        (Some(a), Some(b)) => Some((a, b)),
        _ => None,
    };
    let pushed_text = text(&v[12])?;
    let pushed: [u64; TIERS.len()] =
        serde_json::from_str(pushed_text).map_err(|e| format!("history_pushed: {e}"))?;
    let parts = LatestParts {
        last_report_ms: opt_int(&v[1])?.map(|x| x as u64),
        latest,
        prev_cpu,
        reports_total: int(&v[10])? as u64,
        agent_dropped_total: int(&v[11])? as u64,
        pushed,
        open_buckets: text(&v[13])?.to_string(),
        snapshot: stored_snapshot(&v[14], &v[16])?,
    };
    let row = LatestRow {
        node_id: &node_id,
        last_report_ms: parts.last_report_ms.map(|x| x as i64),
        summary: parts.latest.as_ref(),
        prev_cpu: parts.prev_cpu,
        reports_total: parts.reports_total as i64,
        agent_dropped_total: parts.agent_dropped_total as i64,
        history_pushed: pushed_text.to_string(),
        open_buckets: parts.open_buckets.clone(),
        snapshot: parts.snapshot.as_deref(),
    };
    check(&row.crc(), &v[15])?;
    Ok((node_id, parts))
}

fn dedupe_crc(node_id: &str, instance: &str, max_seq: i64, used: i64) -> RowCrc {
    let mut c = RowCrc::default();
    c.text(node_id).text(instance).int(max_seq).int(used);
    c
}

pub fn put_dedupe(
    conn: &Connection,
    node_id: &str,
    instance: &str,
    max_seq: u64,
    used: usize,
) -> rusqlite::Result<()> {
    let crc = dedupe_crc(node_id, instance, max_seq as i64, used as i64).sum();
    conn.prepare_cached(
        "INSERT OR REPLACE INTO dedupe (node_id, instance, max_seq, used, crc) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![node_id, instance, max_seq as i64, used as i64, crc])?;
    Ok(())
}

pub fn delete_dedupe(conn: &Connection, node_id: &str, instance: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM dedupe WHERE node_id = ?1 AND instance = ?2")?
        .execute(params![node_id, instance])?;
    Ok(())
}

fn history_crc(node_id: &str, tier: i64, n: i64, p: &Point) -> RowCrc {
    let mut c = RowCrc::default();
    c.text(node_id)
        .int(tier)
        .int(n)
        .int(p.t_ms as i64)
        .opt_real(p.cpu_busy_ratio.map(f64::from))
        .opt_int(p.memory_used_bytes.map(|v| v as i64))
        .opt_real(p.temperature_celsius.map(f64::from))
        .opt_int(p.containers.map(i64::from));
    // Columns added in schema version 3 count only when one is set, so a version-2 row
    // (all NULL) checks against the CRC it was written with; a set value changed, or
    // turned NULL, still fails.
    let added = history_added(p);
    if added.iter().any(Option::is_some) {
        for v in added {
            c.opt_real(v);
        }
    }
    c
}

/// The schema-3 columns of a point, in column order.
fn history_added(p: &Point) -> [Option<f64>; 5] {
    [
        p.load1,
        p.net_rx_bytes_per_s,
        p.net_tx_bytes_per_s,
        p.disk_write_bytes_per_s,
        p.fs_used_ratio_max,
    ]
    .map(|v| v.map(f64::from))
}

pub fn put_history(
    conn: &Connection,
    node_id: &str,
    tier: usize,
    n: u64,
    p: &Point,
) -> rusqlite::Result<()> {
    let crc = history_crc(node_id, tier as i64, n as i64, p).sum();
    let added = history_added(p);
    conn.prepare_cached(
        "INSERT OR REPLACE INTO history (node_id, tier, n, t_ms, cpu_busy_ratio, memory_used_bytes, temperature_celsius, containers, crc, load1, net_rx_bytes_per_s, net_tx_bytes_per_s, disk_write_bytes_per_s, fs_used_ratio_max)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        node_id,
        tier as i64,
        n as i64,
        p.t_ms as i64,
        p.cpu_busy_ratio.map(f64::from),
        p.memory_used_bytes.map(|v| v as i64),
        p.temperature_celsius.map(f64::from),
        p.containers.map(i64::from),
        crc,
        added[0],
        added[1],
        added[2],
        added[3],
        added[4],
    ])?;
    Ok(())
}

/// Deletes a tier's points numbered below `first_kept`.
pub fn trim_history(
    conn: &Connection,
    node_id: &str,
    tier: usize,
    first_kept: u64,
) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM history WHERE node_id = ?1 AND tier = ?2 AND n < ?3")?
        .execute(params![node_id, tier as i64, first_kept as i64])?;
    Ok(())
}

fn parse_history(v: &[Value]) -> Result<(&str, usize, u64, Point), String> {
    let node_id = text(&v[0])?;
    let tier = int(&v[1])?;
    let n = int(&v[2])?;
    let p = Point {
        t_ms: int(&v[3])? as u64,
        cpu_busy_ratio: opt_real(&v[4])?.map(|x| x as f32),
        memory_used_bytes: opt_int(&v[5])?.map(|x| x as u64),
        temperature_celsius: opt_real(&v[6])?.map(|x| x as f32),
        containers: opt_int(&v[7])?.map(|x| x as u32),
        load1: opt_real(&v[9])?.map(|x| x as f32),
        net_rx_bytes_per_s: opt_real(&v[10])?.map(|x| x as f32),
        net_tx_bytes_per_s: opt_real(&v[11])?.map(|x| x as f32),
        disk_write_bytes_per_s: opt_real(&v[12])?.map(|x| x as f32),
        fs_used_ratio_max: opt_real(&v[13])?.map(|x| x as f32),
    };
    check(&history_crc(node_id, tier, n, &p), &v[8])?;
    if !(0..TIERS.len() as i64).contains(&tier) || n < 0 {
        return Err(format!("tier {tier}, point {n}"));
    }
    Ok((node_id, tier as usize, n as u64, p))
}

/// Writes a whole entry (salvage and tests).
pub fn put_entry(conn: &Connection, e: &NodeEntry) -> rusqlite::Result<()> {
    put_node(conn, &e.record)?;
    put_latest(conn, e, None, &mut SnapshotPacker::default())?;
    for (i, (inst, max)) in e.seen.iter().enumerate() {
        put_dedupe(conn, &e.record.node_id, inst, *max, i)?;
    }
    for tier in 0..TIERS.len() {
        for (n, p) in e.history.numbered(tier) {
            put_history(conn, &e.record.node_id, tier, n, &p)?;
        }
    }
    Ok(())
}

/// Everything loaded from the file.
pub struct Loaded {
    pub state: State,
    pub loss: Loss,
}

/// Loads every table into the in-memory state. Strict (`salvage == false`): any
/// unreadable page, checksum mismatch or inconsistency is an error. Salvage: such rows
/// are left out and counted in [`Loaded::loss`].
///
/// The history table (about 330 rows a node) is read in key order, i.e. node by node:
/// each node's rows are made into its packed [`History`] as soon as the next node's
/// begin, so the load holds one node's rows at a time, never the table.
pub fn load_all(conn: &Connection, salvage: bool) -> Result<Loaded, RowDamage> {
    let mut loss = Loss::default();
    let mut faults = Faults {
        salvage,
        bad: HashMap::new(),
    };
    let scan_noting = |t: &Table,
                       loss: &mut Loss,
                       each: &mut dyn FnMut(&[Value]) -> Result<(), RowDamage>|
     -> Result<(), RowDamage> {
        let (rows, err) = scan_each(conn, t, salvage, each)?;
        if let Some(e) = err {
            let total: Option<i64> = conn
                .query_row(&format!("SELECT count(*) FROM {}", t.name), [], |r| {
                    r.get(0)
                })
                .ok();
            let lost = total.map(|t| (t as u64).saturating_sub(rows));
            match lost {
                Some(l) => loss.add(t.name, l, format!("unreadable pages ({e})")),
                None => loss.add(
                    t.name,
                    0,
                    format!(
                        "unreadable pages ({e}); rows on them are lost, their number is unknown"
                    ),
                ),
            }
        }
        Ok(())
    };

    let mut records = HashMap::new();
    scan_noting(&NODES, &mut loss, &mut |v| match parse_node(v) {
        Ok(r) => {
            records.insert(r.node_id.clone(), r);
            Ok(())
        }
        Err(p) => faults.fail("nodes", p),
    })?;
    let mut revocations = Vec::new();
    scan_noting(
        &REVOCATIONS,
        &mut loss,
        &mut |v| match parse_revocation(v) {
            Ok(r) => {
                revocations.push(r);
                Ok(())
            }
            Err(p) => faults.fail("revocations", p),
        },
    )?;
    let mut latest = HashMap::new();
    scan_noting(&LATEST, &mut loss, &mut |v| match parse_latest(v) {
        Ok((id, parts)) if records.contains_key(&id) => {
            latest.insert(id, parts);
            Ok(())
        }
        Ok((id, _)) => faults.fail(
            "latest",
            format!("row for node {id}, which has no nodes row"),
        ),
        Err(p) => faults.fail("latest", p),
    })?;
    let mut seen: HashMap<String, Vec<(i64, String, u64)>> = HashMap::new();
    scan_noting(&DEDUPE, &mut loss, &mut |v| {
        let parsed = (|| {
            let (node, inst, max, used) = (text(&v[0])?, text(&v[1])?, int(&v[2])?, int(&v[3])?);
            check(&dedupe_crc(node, inst, max, used), &v[4])?;
            Ok::<_, String>((node.to_string(), inst.to_string(), max as u64, used))
        })();
        match parsed {
            Ok((node, _, _, _)) if !records.contains_key(&node) => faults.fail(
                "dedupe",
                format!("row for node {node}, which has no nodes row"),
            ),
            Ok((node, inst, max, used)) => {
                seen.entry(node).or_default().push((used, inst, max));
                Ok(())
            }
            Err(p) => faults.fail("dedupe", p),
        }
    })?;

    let mut state = State::default();
    let mut parts = Parts {
        records,
        latest,
        seen,
    };
    // The node whose history rows are being read, and its points per tier.
    let mut open: Option<(String, Numbered)> = None;
    scan_noting(&HISTORY, &mut loss, &mut |v| {
        let (node, tier, n, p) = match parse_history(v) {
            Ok(row) => row,
            Err(p) => return faults.fail("history", p),
        };
        match &mut open {
            Some((id, tiers)) if *id == node => {
                tiers[tier].push((n, p));
                return Ok(());
            }
            _ => {}
        }
        if state.nodes.contains_key(node) {
            // Key order puts a node's rows together; SQLite's scan cannot do otherwise.
            return faults.fail(
                "history",
                format!("row for node {node} after another node's rows"),
            );
        }
        if !parts.records.contains_key(node) {
            return faults.fail(
                "history",
                format!("row for node {node}, which has no nodes row"),
            );
        }
        if let Some((id, tiers)) = open.take() {
            state.put_entry(parts.entry(&id, tiers, &mut faults)?);
        }
        let mut tiers = vec![Vec::new(); TIERS.len()];
        tiers[tier].push((n, p));
        open = Some((node.to_string(), tiers));
        Ok(())
    })?;
    if let Some((id, tiers)) = open.take() {
        state.put_entry(parts.entry(&id, tiers, &mut faults)?);
    }
    // Nodes without history rows: every tier empty, which is whole only for a node
    // that never reported.
    let rest: Vec<String> = parts.records.keys().cloned().collect();
    for id in rest {
        let tiers = vec![Vec::new(); TIERS.len()];
        state.put_entry(parts.entry(&id, tiers, &mut faults)?);
    }
    for r in revocations {
        state.revoked.insert(r.node_id.clone(), r);
    }
    for (table, (n, why)) in faults.bad {
        loss.add(
            table,
            n,
            format!("rows that failed their check, e.g. {why}"),
        );
    }
    Ok(Loaded { state, loss })
}

/// Row-level problems of a load: fatal when strict, counted per table when salvaging.
struct Faults {
    salvage: bool,
    /// table -> (rows, the first problem)
    bad: HashMap<&'static str, (u64, String)>,
}

impl Faults {
    fn fail(&mut self, table: &'static str, problem: String) -> Result<(), RowDamage> {
        if !self.salvage {
            return Err(RowDamage { table, problem });
        }
        self.bad.entry(table).or_insert((0, problem)).0 += 1;
        Ok(())
    }
}

/// A node's history points per tier, each with its number.
type Numbered = Vec<Vec<(u64, Point)>>;

/// The small tables' rows, by node, waiting for the node's history.
struct Parts {
    records: HashMap<String, NodeRecord>,
    latest: HashMap<String, LatestParts>,
    seen: HashMap<String, Vec<(i64, String, u64)>>,
}

impl Parts {
    /// Node `id`'s entry from its rows and its history points per tier (ascending `n`).
    /// `id` must have a nodes row.
    fn entry(
        &mut self,
        id: &str,
        tiers: Numbered,
        faults: &mut Faults,
    ) -> Result<NodeEntry, RowDamage> {
        let record = self.records.remove(id).expect("a node with a nodes row");
        let mut e = NodeEntry::new(record);
        if let Some(mut s) = self.seen.remove(id) {
            s.sort();
            e.seen = s.into_iter().map(|(_, i, m)| (i, m)).collect();
        }
        let Some(p) = self.latest.remove(id) else {
            if tiers.iter().any(|t| !t.is_empty()) || !e.seen.is_empty() {
                faults.fail(
                    "latest",
                    format!("node {id} has history or dedupe rows but no latest row"),
                )?;
            }
            return Ok(e);
        };
        // A tier's points must be exactly the last ones pushed, in order: a missing one
        // means a lost row.
        let mut pushed = p.pushed;
        let mut kept = Vec::new();
        for (tier, mut pts) in tiers.into_iter().enumerate() {
            // Read in key order, so already sorted: this costs a pass.
            pts.sort_by_key(|(n, _)| *n);
            let want = p.pushed[tier].min(TIERS[tier].1 as u64);
            let first = p.pushed[tier].saturating_sub(want);
            let whole = pts.len() as u64 == want
                && pts
                    .iter()
                    .enumerate()
                    .all(|(i, (n, _))| *n == first + i as u64);
            if whole {
                kept.push(pts.into_iter().map(|(_, pt)| pt).collect());
                continue;
            }
            faults.fail(
                "history",
                format!(
                    "node {id} tier {tier}: {} points where {want} were kept",
                    pts.len()
                ),
            )?;
            // Salvage keeps the newest contiguous run, renumbered.
            let mut run: Vec<(u64, Point)> = Vec::new();
            for (n, pt) in pts.into_iter().rev() {
                let next = match run.last() {
                    None => n < p.pushed[tier],
                    Some((prev, _)) => n + 1 == *prev,
                };
                if next && run.len() < TIERS[tier].1 {
                    run.push((n, pt));
                } else if !run.is_empty() {
                    break;
                }
            }
            run.reverse();
            pushed[tier] = run.len() as u64;
            kept.push(run.into_iter().map(|(_, pt)| pt).collect());
        }
        match History::restore(kept, &p.open_buckets, pushed) {
            Ok(h) => e.history = h,
            Err(err) => faults.fail("latest", format!("node {id}: history: {err}"))?,
        }
        p.fill(&mut e);
        Ok(e)
    }
}

/// One node's entry as stored (the writer's rollback after a failed commit).
pub fn load_node(conn: &Connection, node_id: &str) -> Result<Option<NodeEntry>, String> {
    let node: Option<Vec<Value>> = row_values(conn, &NODES, node_id)?;
    let Some(node) = node else { return Ok(None) };
    let record = parse_node(&node)?;
    let mut e = NodeEntry::new(record);
    if let Some(v) = row_values(conn, &LATEST, node_id)? {
        let (_, p) = parse_latest(&v)?;
        let mut tiers = vec![Vec::new(); TIERS.len()];
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {} FROM history WHERE node_id = ?1 ORDER BY tier, n",
                HISTORY.cols
            ))
            .map_err(|e| e.to_string())?;
        let mut rows = stmt.query(params![node_id]).map_err(|e| e.to_string())?;
        while let Some(r) = rows.next().map_err(|e| e.to_string())? {
            let v: Vec<Value> = (0..HISTORY.cols.split(',').count())
                .map(|i| r.get::<_, Value>(i))
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
            let (_, tier, _, pt) = parse_history(&v)?;
            tiers[tier].push(pt);
        }
        e.history =
            History::restore(tiers, &p.open_buckets, p.pushed).map_err(|e| e.to_string())?;
        p.fill(&mut e);
    }
    let mut stmt = conn
        .prepare_cached("SELECT instance, max_seq FROM dedupe WHERE node_id = ?1 ORDER BY used")
        .map_err(|e| e.to_string())?;
    e.seen = stmt
        .query_map(params![node_id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| e.to_string())?;
    Ok(Some(e))
}

fn row_values(conn: &Connection, t: &Table, node_id: &str) -> Result<Option<Vec<Value>>, String> {
    let n = t.cols.split(',').count();
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {} FROM {} WHERE node_id = ?1",
            t.cols, t.name
        ))
        .map_err(|e| e.to_string())?;
    let mut rows = stmt.query(params![node_id]).map_err(|e| e.to_string())?;
    match rows.next().map_err(|e| e.to_string())? {
        Some(r) => (0..n)
            .map(|i| r.get::<_, Value>(i))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
            .map_err(|e| e.to_string()),
        None => Ok(None),
    }
}

/// Row counts per table (salvage prints them before and after).
pub fn counts(conn: &Connection) -> Vec<(&'static str, Option<u64>)> {
    [NODES, REVOCATIONS, LATEST, DEDUPE, HISTORY]
        .iter()
        .map(|t| {
            let n: Option<i64> = conn
                .query_row(&format!("SELECT count(*) FROM {}", t.name), [], |r| {
                    r.get(0)
                })
                .ok();
            (t.name, n.map(|n| n as u64))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_packer_packs_each_snapshot_as_a_fresh_one_would() {
        let mut packer = SnapshotPacker::default();
        let big = serde_json::to_string(&crate::sim::snapshot("pine-01", "i", 1, 1)).unwrap();
        // Incompressible text, longer than the first guess of the output's size.
        let noise: String = (0..20_000u32)
            .map(|i| char::from(b'!' + (i.wrapping_mul(2_654_435_761) >> 26) as u8))
            .collect();
        for json in [big.as_str(), "{}", noise.as_str(), big.as_str(), ""] {
            let packed = packer.pack(json).unwrap();
            let fresh = SnapshotPacker::default().pack(json).unwrap();
            assert_eq!(packed, fresh, "a reused packer carries nothing over");
            let back = stored_snapshot(&Value::Blob(packed), &Value::Integer(json.len() as i64))
                .unwrap()
                .unwrap();
            assert_eq!(&*back, json);
        }
    }
}
