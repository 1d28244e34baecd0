//! The SQLite file: its name, pragmas, schema and migrations, and the checks made
//! before anything in it is believed.
//!
//! - `manager.db` (+ `-wal`, `-shm` while open): the database, WAL mode,
//!   `synchronous=FULL`: a commit returns once its WAL frames are fsynced.
//! - `manager.db.commits`: the number of the last committed group commit, written
//!   (not fsynced) after each commit. SQLite stops replaying a WAL at the first bad
//!   frame and cannot tell a truncated WAL from one that was never longer; this number
//!   can: a database whose `meta.commits` is lower lost acknowledged data.
//!
//! `PRAGMA user_version` is the schema version; [`MIGRATIONS`] brings an older file up
//! to date, a newer one is refused (a downgraded manager must not guess).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::StoreError;

pub const DB_FILE: &str = "manager.db";
pub const COMMITS_FILE: &str = "manager.db.commits";
/// Page size of a new file (see [`connect`]).
pub const PAGE_SIZE: u32 = 1024;

/// The schema version this manager writes.
pub const SCHEMA_VERSION: i64 = 3;

/// `MIGRATIONS[v]` takes a file from version `v` to `v + 1`; version 0 is a new file.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES ('commits', 0);

-- One row per registered node. facts and labels are JSON objects.
CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    hostname TEXT NOT NULL,
    machine_id TEXT NOT NULL,
    facts TEXT NOT NULL,
    labels TEXT NOT NULL,
    credential_hash TEXT NOT NULL,
    registered_at_ms INTEGER NOT NULL,
    swarm_node_id TEXT,
    report_interval_seconds INTEGER NOT NULL,
    crc INTEGER NOT NULL
);

-- Nodes the operator removed: their credentials stay refused.
CREATE TABLE revocations (
    node_id TEXT PRIMARY KEY,
    hostname TEXT NOT NULL,
    machine_id TEXT NOT NULL,
    removed_at_ms INTEGER NOT NULL,
    crc INTEGER NOT NULL
) WITHOUT ROWID;

-- Per node: the latest snapshot (JSON as the agent sent it), its summary, counters,
-- the previous CPU times (for a busy share) and the open history buckets.
CREATE TABLE latest (
    node_id TEXT PRIMARY KEY,
    last_report_ms INTEGER,
    collected_at_ms INTEGER,
    cpu_busy_ratio REAL,
    memory_used_bytes INTEGER,
    memory_total_bytes INTEGER,
    temperature_celsius REAL,
    containers INTEGER,
    prev_cpu_busy REAL,
    prev_cpu_total REAL,
    reports_total INTEGER NOT NULL,
    agent_dropped_total INTEGER NOT NULL,
    history_pushed TEXT NOT NULL,
    open_buckets TEXT NOT NULL,
    snapshot TEXT,
    crc INTEGER NOT NULL
);

-- Dedupe: the highest seq stored per (node, agent instance); `used` orders them.
CREATE TABLE dedupe (
    node_id TEXT NOT NULL,
    instance TEXT NOT NULL,
    max_seq INTEGER NOT NULL,
    used INTEGER NOT NULL,
    crc INTEGER NOT NULL,
    PRIMARY KEY (node_id, instance)
) WITHOUT ROWID;

-- Downsampled history: tier 0 raw, 1: 1 min, 2: 15 min, 3: 2 h; n numbers the points
-- of a (node, tier) in push order.
CREATE TABLE history (
    node_id TEXT NOT NULL,
    tier INTEGER NOT NULL,
    n INTEGER NOT NULL,
    t_ms INTEGER NOT NULL,
    cpu_busy_ratio REAL,
    memory_used_bytes INTEGER,
    temperature_celsius REAL,
    containers INTEGER,
    crc INTEGER NOT NULL,
    PRIMARY KEY (node_id, tier, n)
) WITHOUT ROWID;
"#,
    // Version 2: `latest.snapshot` may be the snapshot's JSON zlib-compressed (a BLOB,
    // ~4.4 KB -> ~1 KB: the row no longer spills onto an overflow page, so a report
    // rewrites fewer pages); `snapshot_bytes` is its uncompressed length, which is also
    // what the sqlite3 shell's `sqlar_uncompress(snapshot, snapshot_bytes)` needs to show
    // it. A version-1 row (TEXT, no length) still reads as it is.
    r#"
ALTER TABLE latest ADD COLUMN snapshot_bytes INTEGER;
"#,
    // Version 3: history points also keep the 1-minute load, the network and disk-write
    // rates and the fullest filesystem's used share (the cockpit's 24 h / 7 d charts).
    // A version-2 row has them NULL, i.e. absent; its CRC still checks (see
    // `queries::history_crc`: the new columns count only when one is set).
    r#"
ALTER TABLE history ADD COLUMN load1 REAL;
ALTER TABLE history ADD COLUMN net_rx_bytes_per_s REAL;
ALTER TABLE history ADD COLUMN net_tx_bytes_per_s REAL;
ALTER TABLE history ADD COLUMN disk_write_bytes_per_s REAL;
ALTER TABLE history ADD COLUMN fs_used_ratio_max REAL;
"#,
];

/// Files of the store before SQLite: found in a state dir, they are refused.
pub const OLD_FORMAT_MARKERS: &[&str] = &["checkpoint.json", "wal"];

pub fn db_path(dir: &Path) -> PathBuf {
    dir.join(DB_FILE)
}

pub fn sqlite_err(path: &Path, what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Sqlite { what, path, source }
}

/// Opens a connection with the store's pragmas (WAL, synchronous=FULL).
pub fn connect(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, flags).map_err(sqlite_err(path, "opening"))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(sqlite_err(path, "configuring"))?;
    if !flags.contains(OpenFlags::SQLITE_OPEN_READ_ONLY) {
        // 1 KiB pages (a new, empty file only: an existing file keeps its page size).
        // Each report rewrites a few small rows of different b-trees (its latest row,
        // one history point, one dedupe mark); every dirty page is written whole to
        // the WAL and again at checkpoint, so the page size is what a report costs in
        // bytes: 4 KiB pages made ~40 KB per report, 1 KiB pages a quarter of that.
        // It must come before WAL mode, which writes the file's header.
        conn.execute_batch(&format!("PRAGMA page_size={PAGE_SIZE}"))
            .map_err(sqlite_err(path, "configuring"))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| damaged_or(path, "switching to WAL mode", e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Damaged {
                path: path.into(),
                problem: format!("journal mode is `{mode}`, not WAL"),
            });
        }
    }
    // FULL: the WAL is fsynced at every commit, so a commit is durable when it returns.
    // 16 MiB of WAL between automatic checkpoints (in pages of this file's size): a
    // page rewritten several times meanwhile reaches the file once.
    // secure_delete: a deleted or replaced row is zeroed on its (already dirty) page,
    // so a removed node's credential hash does not linger, and every byte of data in
    // the file belongs to a live row.
    let page: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .map_err(|e| damaged_or(path, "reading the page size", e))?;
    let autocheckpoint = (16 << 20) / page.clamp(512, 65536);
    conn.execute_batch(&format!(
        "PRAGMA synchronous=FULL; PRAGMA wal_autocheckpoint={autocheckpoint}; PRAGMA secure_delete=ON;"
    ))
    .map_err(sqlite_err(path, "configuring"))?;
    Ok(conn)
}

/// A "file is not a database"/"malformed" error means damage; others are I/O.
pub fn damaged_or(path: &Path, what: &'static str, e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    match e.sqlite_error_code() {
        Some(DatabaseCorrupt | NotADatabase) => StoreError::Damaged {
            path: path.into(),
            problem: format!("{what}: {e}"),
        },
        _ => StoreError::Sqlite {
            what,
            path: path.into(),
            source: e,
        },
    }
}

/// Refuses a state dir that holds the store format of before SQLite.
pub fn refuse_old_format(dir: &Path) -> Result<(), StoreError> {
    for m in OLD_FORMAT_MARKERS {
        let p = dir.join(m);
        if p.exists() {
            return Err(StoreError::OldFormat { path: p });
        }
    }
    Ok(())
}

/// `PRAGMA integrity_check`: every page and b-tree is well formed, and every index
/// (the primary keys' autoindexes) matches its table. Not `quick_check`, which skips
/// that comparison: a flipped byte in an index entry would pass it, and the next upsert
/// would miss the row and store a second one for the same node. Start-up runs it beside
/// the row load, where it costs no extra time on two cores.
pub fn integrity_check(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare("PRAGMA integrity_check(20)")
        .map_err(|e| damaged_or(path, "checking", e))?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| damaged_or(path, "checking", e))?;
    if rows.len() == 1 && rows[0] == "ok" {
        return Ok(());
    }
    Err(StoreError::Damaged {
        path: path.into(),
        problem: format!("PRAGMA integrity_check: {}", rows.join("; ")),
    })
}

pub fn user_version(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| damaged_or(path, "reading the schema version", e))
}

/// Brings the schema to [`SCHEMA_VERSION`]; refuses a newer file.
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let v = user_version(conn, path)?;
    if v > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.into(),
            found: v,
            known: SCHEMA_VERSION,
        });
    }
    if v < 0 {
        return Err(StoreError::Damaged {
            path: path.into(),
            problem: format!("schema version {v}"),
        });
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(v as usize) {
        let tx = conn.transaction().map_err(sqlite_err(path, "migrating"))?;
        tx.execute_batch(sql)
            .map_err(sqlite_err(path, "migrating"))?;
        tx.pragma_update(None, "user_version", from as i64 + 1)
            .map_err(sqlite_err(path, "migrating"))?;
        tx.commit().map_err(sqlite_err(path, "migrating"))?;
    }
    Ok(())
}

/// `meta.commits`: group commits in this file.
pub fn commits_in_db(conn: &Connection, path: &Path) -> Result<u64, StoreError> {
    conn.query_row("SELECT value FROM meta WHERE key = 'commits'", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|v| v as u64)
    .map_err(|e| damaged_or(path, "reading meta.commits", e))
}

/// The commit number last written beside the file, if any.
pub fn read_commits_file(dir: &Path) -> Result<Option<u64>, StoreError> {
    let p = dir.join(COMMITS_FILE);
    match std::fs::read_to_string(&p) {
        Ok(s) => s
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|e| StoreError::Damaged {
                path: p.clone(),
                problem: format!("not a commit number ({e})"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Io {
            what: "reading",
            path: p,
            source,
        }),
    }
}

/// Writes the commit number beside the file, durably (restore and salvage use this;
/// the writer's per-commit update goes through [`CommitsFile`]).
pub fn write_commits_file(dir: &Path, commits: u64) -> Result<(), StoreError> {
    let p = dir.join(COMMITS_FILE);
    let tmp = dir.join(format!("{COMMITS_FILE}.tmp"));
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { what, path, source }
    };
    std::fs::write(&tmp, format!("{commits:020}\n")).map_err(io("writing", &tmp))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io("syncing", &tmp))?;
    std::fs::rename(&tmp, &p).map_err(io("renaming into place", &p))?;
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io("syncing", dir))
}

/// The commits file kept open by the writer: one fixed-size pwrite per commit.
pub struct CommitsFile {
    file: std::fs::File,
    path: PathBuf,
}

impl CommitsFile {
    pub fn open(dir: &Path) -> Result<CommitsFile, StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(COMMITS_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| StoreError::Io {
                what: "opening",
                path: path.clone(),
                source,
            })?;
        Ok(CommitsFile { file, path })
    }

    /// Not fsynced: written after the commit's fsync, it can only lag the database
    /// (after a power cut), never lead it, so it never raises a false alarm.
    pub fn set(&self, commits: u64) -> Result<(), StoreError> {
        use std::os::unix::fs::FileExt;
        self.file
            .write_all_at(format!("{commits:020}\n").as_bytes(), 0)
            .map_err(|source| StoreError::Io {
                what: "writing",
                path: self.path.clone(),
                source,
            })
    }
}
