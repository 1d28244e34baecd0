//! Copies of the store: `backup` (online), `restore` (offline) and `--salvage`.
//!
//! - [`backup`] opens a second, read-only connection beside the serving manager and
//!   copies every page with SQLite's backup API in one step (one read transaction: a
//!   consistent snapshot, the writer is never blocked), then checks the copy.
//! - [`restore`] checks a backup as strictly as start-up does, refuses while a manager
//!   holds the state dir, keeps the current file as `manager.db.before-restore`, and
//!   renames the copy into place (one atomic rename).
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

/// What a backup holds.
#[derive(Debug)]
pub struct BackupSummary {
    pub nodes: usize,
    pub commits: u64,
    pub bytes: u64,
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
    schema::quick_check(&conn, path)?;
    let v = schema::user_version(&conn, path)?;
    if v != schema::SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.into(),
            found: v,
            known: schema::SCHEMA_VERSION,
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
    })
}

/// Copies the store of `state_dir` to `dest`, online. `dest` appears only when the
/// copy is complete, checked and on disk.
pub fn backup(state_dir: &Path, dest: &Path) -> Result<BackupSummary, StoreError> {
    let src_path = schema::db_path(state_dir);
    if !src_path.is_file() {
        return Err(StoreError::Io {
            what: "backing up",
            path: src_path,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no store here"),
        });
    }
    let src = schema::connect(&src_path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let tmp = PathBuf::from(format!("{}.partial", dest.display()));
    let _ = std::fs::remove_file(&tmp);
    {
        let mut dst = Connection::open(&tmp).map_err(sqlite_err(&tmp, "creating"))?;
        let b = rusqlite::backup::Backup::new(&src, &mut dst)
            .map_err(sqlite_err(&src_path, "backing up"))?;
        // One step copies every page inside one read transaction: consistent even
        // while the writer commits (a multi-step copy would restart on every commit).
        loop {
            match b.step(-1).map_err(sqlite_err(&src_path, "backing up"))? {
                rusqlite::backup::StepResult::Done => break,
                rusqlite::backup::StepResult::More => continue,
                rusqlite::backup::StepResult::Busy | rusqlite::backup::StepResult::Locked => {
                    std::thread::sleep(std::time::Duration::from_millis(50))
                }
                _ => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
        drop(b);
        // A single file: no WAL beside the copy.
        let _: String = dst
            .query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))
            .map_err(sqlite_err(&tmp, "finishing"))?;
        dst.close().map_err(|(_, e)| StoreError::Sqlite {
            what: "closing",
            path: tmp.clone(),
            source: e,
        })?;
    }
    let summary = check_file(&tmp)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io_err("syncing", &tmp))?;
    std::fs::rename(&tmp, dest).map_err(io_err("renaming into place", dest))?;
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(summary)
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

/// Replaces the store of `state_dir` by the backup `file`. Refused while a manager
/// serves that state dir, and when the backup fails any check.
pub fn restore(state_dir: &Path, file: &Path) -> Result<BackupSummary, StoreError> {
    let summary = check_file(file)?;
    let _lock = lock_dir(state_dir)?;
    schema::refuse_old_format(state_dir)?;
    let db = schema::db_path(state_dir);
    let tmp = state_dir.join("manager.db.restore.tmp");
    std::fs::copy(file, &tmp).map_err(io_err("copying the backup to", &tmp))?;
    // The restored file's commit number must not be below what the current file's
    // counter says was made: start-up would take that for lost commits.
    let expected = schema::read_commits_file(state_dir)
        .ok()
        .flatten()
        .unwrap_or(0);
    let commits = summary.commits.max(expected);
    {
        let conn = Connection::open(&tmp).map_err(sqlite_err(&tmp, "opening"))?;
        conn.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'commits'",
            [commits as i64],
        )
        .map_err(sqlite_err(&tmp, "writing meta.commits in"))?;
        conn.close().map_err(|(_, e)| StoreError::Sqlite {
            what: "closing",
            path: tmp.clone(),
            source: e,
        })?;
    }
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io_err("syncing", &tmp))?;
    if db.exists() {
        let aside = state_dir.join("manager.db.before-restore");
        let _ = std::fs::remove_file(&aside);
        let _ = std::fs::remove_file(format!("{}-wal", aside.display()));
        move_aside(&db, &aside)?;
    }
    std::fs::rename(&tmp, &db).map_err(io_err("renaming into place", &db))?;
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
