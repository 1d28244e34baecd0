//! WAL checkpoints on a thread and connection of their own, beside the writer.
//!
//! A checkpoint copies the WAL's pages into the file and fsyncs it. Run by the writer
//! (SQLite's automatic checkpoint inside `COMMIT`, and a periodic one), every report
//! queued meanwhile waited for it. Here the writer's connection has automatic
//! checkpoints off and only nudges this thread after a commit; this thread runs
//! PASSIVE checkpoints, which never block the writer. SQLite starts the WAL over from
//! its beginning at the writer's next transaction once a checkpoint has caught up with
//! every frame.
//!
//! Under a sustained load the passes never catch up and the WAL only grows. So the
//! writer looks at the WAL file's size after each commit; past [`WAL_RESET_BYTES`] it
//! raises [`Checkpointer::wal_over`], this thread runs no pass while it is raised, and
//! the writer runs a RESTART checkpoint on its own connection after each commit until
//! one goes through (the queued reports wait while it copies the frames left: 26 of
//! them in a 30 s batched run at 10,000 nodes, p50 53 ms, WAL at most 33.7 MB). The WAL
//! file is then cut back to that size. Why this way:
//! - only one connection can checkpoint at a time, and SQLite answers a second one busy
//!   at once: with this thread's passes going on, the writer's RESTART got through once
//!   in that run and the WAL reached 995 MB;
//! - a RESTART run here must take the write lock, which the writer holds nearly always
//!   under load (two got through, the WAL reached 217 MiB), and one holding it longer
//!   than the writer's busy timeout would fail a commit.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::writer_stats::StatsLog;

/// WAL size past which a pass that has not caught up asks the writer for a RESTART;
/// also the WAL file's size limit (`journal_size_limit`) when SQLite starts it over.
/// (A quick smoke of batched ingest, PASSIVE only, saw the WAL reach 95,613 frames.)
pub const WAL_RESET_BYTES: i64 = 32 << 20;

/// PASSIVE rounds in one pass before it lets the WAL be (each round copies what the
/// writer committed during the round before).
const ROUNDS: usize = 4;

pub struct Checkpointer {
    pub conn: Connection,
    pub path: PathBuf,
    pub page_size: i64,
    /// Least time between two passes (`--checkpoint-interval`): the commits meanwhile
    /// go into one pass, and a page rewritten several times meanwhile is copied once.
    pub gap: Duration,
    pub stats: StatsLog,
    /// Raised by the writer while the WAL is past [`WAL_RESET_BYTES`] and its RESTART
    /// has not gone through: no pass meanwhile (it would hold the checkpoint lock).
    pub wal_over: Arc<AtomicBool>,
}

/// What `PRAGMA wal_checkpoint` answers: whether it was blocked, WAL frames, frames
/// now in the file.
struct Pass {
    busy: bool,
    log: i64,
    done: i64,
}

impl Checkpointer {
    /// Runs until the writer drops its end of `nudges` (after its last commit).
    pub fn run(mut self, nudges: Receiver<()>) {
        let mut last = Instant::now();
        let mut warned = false;
        while nudges.recv().is_ok() {
            // Gather the commits of the rest of the gap into this pass.
            let gap_end = last + self.gap;
            loop {
                let left = gap_end.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match nudges.recv_timeout(left) {
                    Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {
                        self.stats.log_total("store checkpointer");
                        return;
                    }
                }
            }
            if let Err(e) = self.pass() {
                // A full disk (the file cannot grow) or a failing one: the writer
                // reports it on its own path; the WAL keeps everything meanwhile.
                if !warned {
                    tracing::warn!("checkpointing the WAL of {}: {e}", self.path.display());
                    warned = true;
                }
            } else {
                warned = false;
            }
            self.stats.maybe_log("store checkpointer");
            last = Instant::now();
        }
        self.stats.log_total("store checkpointer");
    }

    fn pass(&mut self) -> rusqlite::Result<()> {
        if self.wal_over.load(Ordering::Acquire) {
            // The writer's RESTART is due: leave it the checkpoint lock.
            return Ok(());
        }
        let page_size = self.page_size;
        let over = |p: &Pass| p.log * page_size > WAL_RESET_BYTES;
        // Past the bound the writer takes over (its RESTART); a pass stops there.
        let mut p = self.checkpoint("PASSIVE")?;
        for _ in 1..ROUNDS {
            if p.busy || p.done >= p.log || over(&p) {
                break;
            }
            p = self.checkpoint("PASSIVE")?;
        }
        Ok(())
    }

    fn checkpoint(&mut self, mode: &str) -> rusqlite::Result<Pass> {
        let t = Instant::now();
        let p = self
            .conn
            .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                Ok(Pass {
                    busy: r.get::<_, i64>(0)? != 0,
                    log: r.get(1)?,
                    done: r.get(2)?,
                })
            })?;
        self.stats.record(|s| {
            s.checkpoint_us.add_duration(t.elapsed());
            s.wal_frames_max = s.wal_frames_max.max(p.log.max(0) as u64);
        });
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::super::report::BodyEncoding;
    use super::super::state::tests::facts;
    use super::super::tests::body;
    use super::super::{schema, Registration, Store, StoreConfig};
    use std::time::Duration;

    #[tokio::test]
    async fn reports_reach_the_file_without_a_close_and_the_wal_starts_over() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = StoreConfig::new(tmp.path().to_path_buf());
        cfg.checkpoint_interval = Duration::from_millis(20);
        let (store, _) = Store::open(cfg).unwrap();
        let Registration::Registered { node_id, .. } = store
            .register(facts("a", "m-a"), Default::default(), 10)
            .await
            .unwrap()
        else {
            panic!("not registered")
        };
        let db = tmp.path().join(schema::DB_FILE);
        let wal = tmp.path().join(format!("{}-wal", schema::DB_FILE));
        let len = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let db_before = len(&db);
        let mut wal_max = 0;
        let mut wal_written = 0;
        for seq in 0..300 {
            let w0 = len(&wal);
            let (b, d) = body("i", seq..seq + 1);
            store
                .report(&node_id, BodyEncoding::Json, b, d)
                .await
                .unwrap();
            wal_written += len(&wal).saturating_sub(w0);
            wal_max = wal_max.max(len(&wal));
            if seq % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        let mut db_after = len(&db);
        for _ in 0..100 {
            if db_after > db_before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            db_after = len(&db);
        }
        assert!(
            db_after > db_before,
            "checkpoints copied pages into the file: {db_before} -> {db_after} bytes"
        );
        // The WAL grows only until a checkpoint catches up; then it is written over.
        assert!(
            wal_max < 300 * 2048,
            "the WAL started over: at most {wal_max} bytes ({wal_written} bytes of growth seen)"
        );
        store.shutdown().await.unwrap();
    }
}
