//! Copies of the state dir's databases: `backup` (online), `restore` (offline) and
//! `--salvage`.
//!
//! - [`STATE_DATABASES`]: every SQLite file the manager keeps in its state dir. A
//!   module that adds one adds it there, and backup and restore cover it.
//! - [`backup`] copies each of them that exists: a second, read-only connection beside
//!   the serving manager copies every page with SQLite's backup API in one step (one
//!   read transaction: a consistent snapshot of that file, its writer never blocked),
//!   checks the copy, and packs the copies into one tar file (members named as in the
//!   state dir, so `tar xf` gives files `sqlite3` opens).
//! - [`restore`] checks every file of a backup (the store as strictly as start-up
//!   does), refuses while a manager holds the state dir, keeps each current file as
//!   `NAME.before-restore`, and renames the copies into place. A backup made before
//!   there was more than one file (a bare `manager.db` copy) restores the store alone.
//! - [`salvage`] reads what is readable of a damaged file (rows failing their checksum
//!   and unreadable pages left out), writes it to a new file, moves the damaged one
//!   aside and says what was lost, per table.

use std::fmt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::queries::{self, Loss};
use super::schema::{self, sqlite_err};
use super::{lock_dir, StoreError};

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { what, path, source }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_err("syncing", dir))
}

/// A SQLite file the manager keeps in its state dir.
#[derive(Clone, Copy, Debug)]
pub struct StateDb {
    /// Its name in the state dir (and in a backup).
    pub file: &'static str,
    /// What it holds, for messages.
    pub what: &'static str,
}

/// Every SQLite file the manager owns in its state dir, the store first. `backup`
/// copies each one that exists, `restore` puts back each one a backup holds. Add a new
/// database here (its file must be SQLite, opened by the manager only while it holds
/// the state dir's `lock`).
pub const STATE_DATABASES: &[StateDb] = &[
    StateDb {
        file: schema::DB_FILE,
        what: "the store (nodes, latest snapshots, history)",
    },
    StateDb {
        file: crate::alerts::DB_FILE,
        what: "alerts, their delivery queue and events",
    },
    StateDb {
        file: crate::cockpit::events::FILE,
        what: "the cockpit's event history and audit log",
    },
];

/// What a backup holds.
#[derive(Debug)]
pub struct BackupSummary {
    pub nodes: usize,
    pub commits: u64,
    pub bytes: u64,
    /// The state dir's files in the backup.
    pub files: Vec<&'static str>,
}

/// `PRAGMA integrity_check` of a database other than the store (which [`check_file`]
/// checks row by row).
fn check_other(path: &Path) -> Result<(), StoreError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(sqlite_err(path, "opening"))?;
    schema::integrity_check(&conn, path)
}

/// One consistent copy of the SQLite file `src` at `dest` (no WAL beside it).
fn copy_online(src_path: &Path, dest: &Path) -> Result<(), StoreError> {
    let src = Connection::open_with_flags(src_path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(sqlite_err(src_path, "opening"))?;
    src.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(sqlite_err(src_path, "configuring"))?;
    let _ = std::fs::remove_file(dest);
    let mut dst = Connection::open(dest).map_err(sqlite_err(dest, "creating"))?;
    {
        let b = rusqlite::backup::Backup::new(&src, &mut dst)
            .map_err(sqlite_err(src_path, "backing up"))?;
        // One step copies every page inside one read transaction: consistent even
        // while the writer commits (a multi-step copy would restart on every commit).
        // Bounded: a file locked for more than a minute fails the backup.
        let mut waits = 0;
        loop {
            match b.step(-1).map_err(sqlite_err(src_path, "backing up"))? {
                rusqlite::backup::StepResult::Done => break,
                rusqlite::backup::StepResult::More => continue,
                _ if waits < 1200 => {
                    waits += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50))
                }
                _ => {
                    return Err(StoreError::WriteFailed {
                        path: src_path.into(),
                        message: "the file stayed locked for a minute; try the backup again".into(),
                    })
                }
            }
        }
    }
    // A single file: no WAL beside the copy.
    let _: String = dst
        .query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))
        .map_err(sqlite_err(dest, "finishing"))?;
    dst.close().map_err(|(_, e)| StoreError::Sqlite {
        what: "closing",
        path: dest.into(),
        source: e,
    })
}

/// Checks a store file as start-up would: structure, schema version, every row.
pub fn check_file(path: &Path) -> Result<BackupSummary, StoreError> {
    if !path.is_file() {
        return Err(StoreError::Io {
            what: "reading",
            path: path.into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(sqlite_err(path, "opening"))?;
    schema::integrity_check(&conn, path)?;
    let v = schema::user_version(&conn, path)?;
    if v > schema::SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.into(),
            found: v,
            known: schema::SCHEMA_VERSION,
        });
    }
    if v < schema::SCHEMA_VERSION {
        // An older file (a backup made by an older manager): its rows are checked on a
        // migrated copy, as start-up would migrate and load it.
        drop(conn);
        let copy = PathBuf::from(format!("{}.check-migrated", path.display()));
        std::fs::copy(path, &copy).map_err(io_err("copying", &copy))?;
        let checked = (|| {
            let mut conn = Connection::open(&copy).map_err(sqlite_err(&copy, "opening"))?;
            schema::migrate(&mut conn, &copy)?;
            drop(conn);
            check_file(&copy)
        })();
        let _ = std::fs::remove_file(&copy);
        let _ = std::fs::remove_file(format!("{}-journal", copy.display()));
        return checked.map(|s| BackupSummary {
            bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(s.bytes),
            ..s
        });
    }
    let commits = schema::commits_in_db(&conn, path)?;
    let loaded = queries::load_all(&conn, false).map_err(|d| StoreError::Damaged {
        path: path.into(),
        problem: d.to_string(),
    })?;
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    Ok(BackupSummary {
        nodes: loaded.state.nodes.len(),
        commits,
        bytes,
        files: vec![schema::DB_FILE],
    })
}

/// Copies every database of `state_dir` ([`STATE_DATABASES`]) into the tar file
/// `dest`, online. `dest` appears only when every copy is complete, checked and on disk.
pub fn backup(state_dir: &Path, dest: &Path) -> Result<BackupSummary, StoreError> {
    let src_path = schema::db_path(state_dir);
    if !src_path.is_file() {
        return Err(StoreError::Io {
            what: "backing up",
            path: src_path,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no store here"),
        });
    }
    let work = PathBuf::from(format!("{}.partial.d", dest.display()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(io_err("creating", &work))?;
    let result = backup_into(state_dir, dest, &work);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn backup_into(state_dir: &Path, dest: &Path, work: &Path) -> Result<BackupSummary, StoreError> {
    let mut summary = None;
    let mut files = Vec::new();
    for db in STATE_DATABASES {
        let src = state_dir.join(db.file);
        if db.file != schema::DB_FILE && !src.is_file() {
            continue;
        }
        let copy = work.join(db.file);
        copy_online(&src, &copy)?;
        if db.file == schema::DB_FILE {
            summary = Some(check_file(&copy)?);
        } else {
            check_other(&copy)?;
        }
        files.push(db.file);
    }
    let tmp = PathBuf::from(format!("{}.partial", dest.display()));
    let out = std::fs::File::create(&tmp).map_err(io_err("creating", &tmp))?;
    let mut tar = tar::Builder::new(out);
    for f in &files {
        tar.append_path_with_name(work.join(f), f)
            .map_err(io_err("writing", &tmp))?;
    }
    let out = tar.into_inner().map_err(io_err("writing", &tmp))?;
    out.sync_all().map_err(io_err("syncing", &tmp))?;
    let bytes = out.metadata().map(|m| m.len()).unwrap_or(0);
    drop(out);
    std::fs::rename(&tmp, dest).map_err(io_err("renaming into place", dest))?;
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    let summary = summary.unwrap_or(BackupSummary {
        nodes: 0,
        commits: 0,
        bytes: 0,
        files: Vec::new(),
    });
    Ok(BackupSummary {
        bytes,
        files,
        ..summary
    })
}

/// Moves `db` (and its WAL) to `aside` (and `aside-wal`), dropping the `-shm`.
fn move_aside(db: &Path, aside: &Path) -> Result<(), StoreError> {
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let shm = PathBuf::from(format!("{}-shm", db.display()));
    if wal.exists() {
        let to = PathBuf::from(format!("{}-wal", aside.display()));
        std::fs::rename(&wal, &to).map_err(io_err("moving aside", &wal))?;
    }
    let _ = std::fs::remove_file(&shm);
    if db.exists() {
        std::fs::rename(db, aside).map_err(io_err("moving aside", db))?;
    }
    Ok(())
}

/// A SQLite file starts with this; a backup of several files is a tar.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Replaces the databases of `state_dir` by those of the backup `file`. Refused while a
/// manager serves that state dir, and when any file of the backup fails its check.
pub fn restore(state_dir: &Path, file: &Path) -> Result<BackupSummary, StoreError> {
    let mut head = [0u8; 16];
    {
        use std::io::Read as _;
        let mut f = std::fs::File::open(file).map_err(io_err("reading", file))?;
        let _ = f.read(&mut head).map_err(io_err("reading", file))?;
    }
    if &head == SQLITE_MAGIC {
        // A backup of the store alone (made before backups held several files).
        let summary = check_file(file)?;
        let _lock = lock_dir(state_dir)?;
        schema::refuse_old_format(state_dir)?;
        let tmp = state_dir.join("manager.db.restore.tmp");
        std::fs::copy(file, &tmp).map_err(io_err("copying the backup to", &tmp))?;
        return put_store_in_place(state_dir, &tmp, summary);
    }
    let _lock = lock_dir(state_dir)?;
    schema::refuse_old_format(state_dir)?;
    let work = state_dir.join("restore.tmp.d");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(io_err("creating", &work))?;
    let result = restore_from_tar(state_dir, file, &work);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn restore_from_tar(
    state_dir: &Path,
    file: &Path,
    work: &Path,
) -> Result<BackupSummary, StoreError> {
    let not_a_backup = |why: String| StoreError::Damaged {
        path: file.into(),
        problem: format!("not a backup of armada-manager: {why}"),
    };
    let f = std::fs::File::open(file).map_err(io_err("reading", file))?;
    let mut tar = tar::Archive::new(f);
    let mut found: Vec<&'static StateDb> = Vec::new();
    for entry in tar.entries().map_err(io_err("reading", file))? {
        let mut entry = entry.map_err(|e| not_a_backup(e.to_string()))?;
        let name = entry
            .path()
            .map_err(|e| not_a_backup(e.to_string()))?
            .to_string_lossy()
            .to_string();
        // Only the listed files, by their bare names: nothing lands outside `work`.
        let Some(db) = STATE_DATABASES.iter().find(|d| d.file == name) else {
            return Err(not_a_backup(format!(
                "it holds `{name}`, which is not a file of the state dir"
            )));
        };
        if found.iter().any(|d| d.file == db.file) {
            return Err(not_a_backup(format!("it holds `{name}` twice")));
        }
        let dest = work.join(db.file);
        let mut out = std::fs::File::create(&dest).map_err(io_err("writing", &dest))?;
        std::io::copy(&mut entry, &mut out).map_err(|e| not_a_backup(e.to_string()))?;
        out.sync_all().map_err(io_err("syncing", &dest))?;
        found.push(db);
    }
    if !found.iter().any(|d| d.file == schema::DB_FILE) {
        return Err(not_a_backup(format!("it holds no `{}`", schema::DB_FILE)));
    }
    // Every file is checked before any is put in place.
    let mut summary = None;
    for db in &found {
        let p = work.join(db.file);
        if db.file == schema::DB_FILE {
            summary = Some(check_file(&p).map_err(|e| in_backup(e, file, db.file))?);
        } else {
            check_other(&p).map_err(|e| in_backup(e, file, db.file))?;
        }
    }
    // The others first: the store's rename is the last step.
    for db in STATE_DATABASES.iter().filter(|d| d.file != schema::DB_FILE) {
        let current = state_dir.join(db.file);
        let aside = state_dir.join(format!("{}.before-restore", db.file));
        if current.exists() {
            let _ = std::fs::remove_file(&aside);
            let _ = std::fs::remove_file(format!("{}-wal", aside.display()));
            move_aside(&current, &aside)?;
        }
        if found.iter().any(|d| d.file == db.file) {
            let p = work.join(db.file);
            std::fs::rename(&p, &current).map_err(io_err("renaming into place", &current))?;
        }
    }
    let tmp = work.join(schema::DB_FILE);
    let summary = summary.unwrap_or(BackupSummary {
        nodes: 0,
        commits: 0,
        bytes: 0,
        files: Vec::new(),
    });
    let summary = put_store_in_place(state_dir, &tmp, summary)?;
    Ok(BackupSummary {
        files: found.iter().map(|d| d.file).collect(),
        ..summary
    })
}

/// Names the member of a backup in a check's error.
fn in_backup(e: StoreError, file: &Path, member: &str) -> StoreError {
    match e {
        StoreError::Damaged { problem, .. } => StoreError::Damaged {
            path: file.into(),
            problem: format!("its {member}: {problem}"),
        },
        other => other,
    }
}

/// Puts the checked copy `tmp` of a backed-up store in place of the state dir's.
fn put_store_in_place(
    state_dir: &Path,
    tmp: &Path,
    summary: BackupSummary,
) -> Result<BackupSummary, StoreError> {
    let db = schema::db_path(state_dir);
    // The restored file's commit number must not be below what the current file's
    // counter says was made: start-up would take that for lost commits.
    let expected = schema::read_commits_file(state_dir)
        .ok()
        .flatten()
        .unwrap_or(0);
    let commits = summary.commits.max(expected);
    {
        let conn = Connection::open(tmp).map_err(sqlite_err(tmp, "opening"))?;
        conn.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'commits'",
            [commits as i64],
        )
        .map_err(sqlite_err(tmp, "writing meta.commits in"))?;
        conn.close().map_err(|(_, e)| StoreError::Sqlite {
            what: "closing",
            path: tmp.into(),
            source: e,
        })?;
    }
    std::fs::File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(io_err("syncing", tmp))?;
    if db.exists() {
        let aside = state_dir.join("manager.db.before-restore");
        let _ = std::fs::remove_file(&aside);
        let _ = std::fs::remove_file(format!("{}-wal", aside.display()));
        move_aside(&db, &aside)?;
    }
    std::fs::rename(tmp, &db).map_err(io_err("renaming into place", &db))?;
    sync_dir(state_dir)?;
    schema::write_commits_file(state_dir, commits)?;
    Ok(BackupSummary { commits, ..summary })
}

/// What a salvage kept and lost.
#[derive(Debug)]
pub struct SalvageReport {
    pub damaged: PathBuf,
    pub moved_to: PathBuf,
    pub nodes_kept: usize,
    /// (table, rows in the damaged file if countable, rows in the new file)
    pub tables: Vec<(&'static str, Option<u64>, u64)>,
    pub loss: Loss,
    /// Acknowledged commits the damaged file no longer held (a truncated or damaged WAL).
    pub commits_lost: Option<(u64, u64)>,
}

impl fmt::Display for SalvageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "salvaged {}: the damaged file is now {}; {} nodes kept",
            self.damaged.display(),
            self.moved_to.display(),
            self.nodes_kept
        )?;
        for (table, before, after) in &self.tables {
            let before = before.map_or("unknown".to_string(), |b| b.to_string());
            writeln!(
                f,
                "  table {table}: {before} rows readable before, {after} kept"
            )?;
        }
        for (table, n, why) in &self.loss.tables {
            writeln!(f, "  LOST from {table}: {n} rows: {why}")?;
        }
        if let Some((had, made)) = self.commits_lost {
            writeln!(
                f,
                "  LOST: the file held {had} of {made} acknowledged group commits: the last {} commits (their reports and registrations) are gone",
                made - had
            )?;
        }
        if self.loss.is_empty() && self.commits_lost.is_none() {
            writeln!(f, "  nothing was found lost")?;
        }
        Ok(())
    }
}

/// Keeps what is readable of the store in `state_dir` in a new file and moves the
/// damaged one aside. Refused while a manager serves that state dir.
pub fn salvage(state_dir: &Path) -> Result<SalvageReport, StoreError> {
    let _lock = lock_dir(state_dir)?;
    schema::refuse_old_format(state_dir)?;
    let db = schema::db_path(state_dir);
    let expected = schema::read_commits_file(state_dir)
        .ok()
        .flatten()
        .unwrap_or(0);
    let mut loss = Loss::default();
    // SQLite refuses, as a whole, a file shorter than its header says. With no WAL to
    // replay, a copy whose header is made to match its length (whole pages, rollback
    // journal mode) reads the pages that are there instead.
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let wal_empty = std::fs::metadata(&wal).map_or(true, |m| m.len() == 0);
    let read_copy = state_dir.join("manager.db.salvage-read");
    let source = if wal_empty && db.exists() {
        let mut data = std::fs::read(&db).map_err(io_err("reading", &db))?;
        if data.len() >= 100 {
            let page = match u16::from_be_bytes([data[16], data[17]]) {
                1 => 65536,
                p => p as usize,
            };
            if page >= 512 {
                let pages = data.len() / page;
                data.truncate(pages * page);
                data[18] = 1;
                data[19] = 1;
                data[28..32].copy_from_slice(&(pages as u32).to_be_bytes());
            }
        }
        std::fs::write(&read_copy, &data).map_err(io_err("writing", &read_copy))?;
        read_copy.clone()
    } else {
        db.clone()
    };
    let (state, before, had) =
        match Connection::open_with_flags(&source, OpenFlags::SQLITE_OPEN_READ_WRITE) {
            Ok(conn) => {
                let before = queries::counts(&conn);
                let had = schema::commits_in_db(&conn, &db).ok();
                match queries::load_all(&conn, true) {
                    Ok(l) => {
                        loss = l.loss;
                        (l.state, before, had)
                    }
                    Err(e) => {
                        loss.tables.push((e.table.into(), 0, e.problem));
                        (Default::default(), before, had)
                    }
                }
            }
            Err(e) => {
                loss.tables
                    .push(("(file)".into(), 0, format!("unreadable: {e}")));
                (Default::default(), Vec::new(), None)
            }
        };
    let _ = std::fs::remove_file(&read_copy);
    let tmp = state_dir.join("manager.db.salvage.tmp");
    for p in [
        tmp.clone(),
        PathBuf::from(format!("{}-wal", tmp.display())),
        PathBuf::from(format!("{}-shm", tmp.display())),
    ] {
        let _ = std::fs::remove_file(p);
    }
    let commits = expected.max(had.unwrap_or(0)) + 1;
    let after;
    {
        let mut conn = Connection::open(&tmp).map_err(sqlite_err(&tmp, "creating"))?;
        conn.execute_batch(&format!("PRAGMA page_size={}", schema::PAGE_SIZE))
            .map_err(sqlite_err(&tmp, "creating"))?;
        schema::migrate(&mut conn, &tmp)?;
        let tx = conn.transaction().map_err(sqlite_err(&tmp, "writing"))?;
        for e in state.nodes.values() {
            queries::put_entry(&tx, e).map_err(sqlite_err(&tmp, "writing"))?;
        }
        for r in state.revoked.values() {
            queries::put_revocation(&tx, &r.node_id, &r.hostname, &r.machine_id, r.removed_at_ms)
                .map_err(sqlite_err(&tmp, "writing"))?;
        }
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'commits'",
            [commits as i64],
        )
        .map_err(sqlite_err(&tmp, "writing"))?;
        tx.commit().map_err(sqlite_err(&tmp, "writing"))?;
        let _: String = conn
            .query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))
            .map_err(sqlite_err(&tmp, "finishing"))?;
        after = queries::counts(&conn);
        conn.close().map_err(|(_, e)| StoreError::Sqlite {
            what: "closing",
            path: tmp.clone(),
            source: e,
        })?;
    }
    check_file(&tmp)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io_err("syncing", &tmp))?;
    let stamp = crate::now_ms();
    let moved_to = state_dir.join(format!("manager.db.damaged-{stamp}"));
    move_aside(&db, &moved_to)?;
    std::fs::rename(&tmp, &db).map_err(io_err("renaming into place", &db))?;
    sync_dir(state_dir)?;
    schema::write_commits_file(state_dir, commits)?;
    let tables = after
        .iter()
        .map(|(t, n)| {
            let b = before.iter().find(|(bt, _)| bt == t).and_then(|(_, n)| *n);
            (*t, b, n.unwrap_or(0))
        })
        .collect();
    Ok(SalvageReport {
        damaged: db,
        moved_to,
        nodes_kept: state.nodes.len(),
        tables,
        loss,
        commits_lost: had.filter(|h| *h < expected).map(|h| (h, expected)),
    })
}
