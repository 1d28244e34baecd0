//! Where the writer's time goes: per group commit its size, the time applying it under
//! the state lock, writing its rows, the `COMMIT` (WAL write + fsync), and the WAL
//! checkpoints beside it. Kept in a few hundred counters (no sample is stored), logged
//! when the store closes, and every `ARMADA_STORE_STATS=SECONDS` seconds (the figures
//! since the last line) for a benchmark's phases.

use std::fmt;
use std::time::{Duration, Instant};

/// Values in buckets of about 12 % width: exact below 8, then 8 buckets per power of
/// two. Quantiles are the upper bound of their bucket.
#[derive(Clone)]
pub struct Spread {
    buckets: Vec<u64>,
    count: u64,
    sum: u64,
    max: u64,
}

const SUB: u32 = 8;

impl Default for Spread {
    fn default() -> Self {
        Spread {
            buckets: vec![0; (SUB + (64 - 3) * SUB) as usize],
            count: 0,
            sum: 0,
            max: 0,
        }
    }
}

fn bucket_of(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let e = 63 - v.leading_zeros();
    (SUB + (e - 3) * SUB) as usize + ((v >> (e - 3)) & (SUB as u64 - 1)) as usize
}

fn upper_bound(b: usize) -> u64 {
    let b = b as u64;
    let sub = SUB as u64;
    if b < sub {
        return b;
    }
    let e = (b - sub) / sub + 3;
    let low = (sub + (b - sub) % sub) << (e - 3);
    low + (1u64 << (e - 3)) - 1
}

impl Spread {
    pub fn add(&mut self, v: u64) {
        self.buckets[bucket_of(v)] += 1;
        self.count += 1;
        self.sum = self.sum.saturating_add(v);
        self.max = self.max.max(v);
    }

    pub fn add_duration(&mut self, d: Duration) {
        self.add(d.as_micros() as u64);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// The bound under which at least `q` of the values fall (the max for the last
    /// bucket, so a bound never exceeds what was seen).
    pub fn quantile(&self, q: f64) -> u64 {
        let want = ((q * self.count as f64).ceil() as u64).max(1);
        let mut cum = 0;
        for (b, n) in self.buckets.iter().enumerate() {
            cum += n;
            if cum >= want {
                return upper_bound(b).min(self.max);
            }
        }
        self.max
    }
}

/// `p50 p99 max mean`, in the unit given.
struct Shown<'a>(&'a Spread, &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s.count == 0 {
            return write!(f, "none");
        }
        write!(
            f,
            "p50 {}{u} p99 {}{u} max {}{u} mean {}{u}",
            s.quantile(0.5),
            s.quantile(0.99),
            s.max,
            s.sum / s.count,
            u = self.1
        )
    }
}

#[derive(Clone, Default)]
pub struct WriterStats {
    /// Changes per group commit.
    pub group_size: Spread,
    /// Microseconds deciding a group under the state's write lock.
    pub apply_us: Spread,
    /// Microseconds writing a group's rows (compression included) before `COMMIT`.
    pub rows_us: Spread,
    /// Microseconds of `COMMIT`: WAL frames written and fsynced (and, were SQLite's
    /// automatic checkpoint on, the checkpoint it runs there).
    pub commit_us: Spread,
    /// Microseconds from a group's first change taken off the queue to its replies sent.
    pub group_us: Spread,
    /// Microseconds of each WAL checkpoint (the checkpointer's thread).
    pub checkpoint_us: Spread,
    /// Most frames the WAL held at a checkpoint (its size, in pages).
    pub wal_frames_max: u64,
    /// Checkpoints that reset the WAL (RESTART: the writer waited for them).
    pub restarts: u64,
}

impl fmt::Display for WriterStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} groups of {} changes (size {}); apply {}; rows {}; commit {}; group {}",
            self.group_size.count(),
            self.group_size.sum(),
            Shown(&self.group_size, ""),
            Shown(&self.apply_us, "us"),
            Shown(&self.rows_us, "us"),
            Shown(&self.commit_us, "us"),
            Shown(&self.group_us, "us"),
        )?;
        write!(
            f,
            "; {} checkpoints ({}; WAL up to {} frames; {} WAL resets)",
            self.checkpoint_us.count(),
            Shown(&self.checkpoint_us, "us"),
            self.wal_frames_max,
            self.restarts,
        )
    }
}

/// The writer's figures since the start and since the last periodic line.
pub struct StatsLog {
    pub total: WriterStats,
    pub window: WriterStats,
    every: Option<Duration>,
    since: Instant,
}

impl StatsLog {
    /// With a periodic line every `ARMADA_STORE_STATS` seconds when that is set.
    pub fn from_env() -> StatsLog {
        let every = std::env::var("ARMADA_STORE_STATS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|s| *s > 0)
            .map(Duration::from_secs);
        StatsLog {
            total: WriterStats::default(),
            window: WriterStats::default(),
            every,
            since: Instant::now(),
        }
    }

    /// Adds to both the window and the total.
    pub fn record(&mut self, f: impl Fn(&mut WriterStats)) {
        f(&mut self.window);
        f(&mut self.total);
    }

    /// Logs the window's line (`who, last N s: ...`) when its time has come.
    pub fn maybe_log(&mut self, who: &str) {
        let Some(every) = self.every else { return };
        if self.since.elapsed() < every {
            return;
        }
        tracing::info!(
            "{who}, last {:.0} s: {}",
            self.since.elapsed().as_secs_f64(),
            self.window
        );
        self.window = WriterStats::default();
        self.since = Instant::now();
    }

    pub fn log_total(&self, who: &str) {
        tracing::info!("{who}, since the start: {}", self.total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_bound_their_values_within_an_eighth() {
        for v in (0..5000u64).chain([1 << 20, (1 << 40) + 12345, u64::MAX / 3]) {
            let b = bucket_of(v);
            let hi = upper_bound(b);
            assert!(hi >= v, "{v}: bucket {b} ends at {hi}");
            assert!(hi - v <= v / 8, "{v}: bucket {b} ends at {hi}");
            if b > 0 {
                assert!(upper_bound(b - 1) < v, "{v}: bucket {b} starts too late");
            }
        }
    }

    #[test]
    fn quantiles() {
        let mut s = Spread::default();
        for v in 1..=100 {
            s.add(v);
        }
        assert_eq!(s.quantile(0.5), 51); // bucket [48, 51]
        assert_eq!(s.quantile(0.99), 100); // bucket [96, 103], capped at the max seen
        assert_eq!(s.quantile(1.0), 100);
        assert_eq!(s.sum(), 5050);
        assert_eq!(
            Shown(&s, "us").to_string(),
            "p50 51us p99 100us max 100us mean 50us"
        );
    }
}
