//! A node's summary history with bounded retention and downsampling.
//!
//! Every report adds one [`Point`] (CPU busy share, memory used, hottest temperature,
//! container count). The raw tier keeps the last few points; each coarser tier keeps
//! means over fixed buckets. Points are kept packed in 16 bytes ([`Packed`]: seconds,
//! KiB, 1/10000 of CPU, 1/100 °C), so a node's history is bounded at [`MAX_POINTS`]
//! points, about 6 KiB, whatever the report rate or uptime.
//!
//! Every tier also counts the points ever pushed to it ([`History::pushed`]): point
//! `n` of a tier is the store's row `(node, tier, n)`, so the writer inserts only the
//! points added since its last commit and deletes the ones that fell out.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// (bucket width in ms, points kept); width 0 is the raw tier.
/// Raw: 30 reports (5 min at 10 s); 1 min for 2 h; 15 min for 24 h; 2 h for 7 days.
pub const TIERS: [(u64, usize); 4] = [(0, 30), (60_000, 120), (900_000, 96), (7_200_000, 84)];
pub const MAX_POINTS: usize = 30 + 120 + 96 + 84;

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Collection time (raw) or bucket start (downsampled), ms since the epoch.
    pub t_ms: u64,
    pub cpu_busy_ratio: Option<f32>,
    pub memory_used_bytes: Option<u64>,
    pub temperature_celsius: Option<f32>,
    pub containers: Option<u32>,
}

/// A [`Point`] in 16 bytes; the `NONE_*` values stand for a missing figure.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Packed {
    t_s: u32,
    mem_kib: u32,
    containers: u16,
    cpu_e4: u16,
    temp_e2: i16,
}

const NONE_U32: u32 = u32::MAX;
const NONE_U16: u16 = u16::MAX;
const NONE_I16: i16 = i16::MIN;

impl From<&Point> for Packed {
    fn from(p: &Point) -> Self {
        Packed {
            t_s: (p.t_ms / 1000).min(u32::MAX as u64 - 1) as u32,
            mem_kib: p
                .memory_used_bytes
                .map(|m| (m / 1024).min(NONE_U32 as u64 - 1) as u32)
                .unwrap_or(NONE_U32),
            containers: p
                .containers
                .map(|c| c.min(NONE_U16 as u32 - 1) as u16)
                .unwrap_or(NONE_U16),
            cpu_e4: p
                .cpu_busy_ratio
                .map(|c| (c.clamp(0.0, 1.0) * 10_000.0).round() as u16)
                .unwrap_or(NONE_U16),
            temp_e2: p
                .temperature_celsius
                .map(|t| {
                    (t * 100.0)
                        .round()
                        .clamp(NONE_I16 as f32 + 1.0, i16::MAX as f32) as i16
                })
                .unwrap_or(NONE_I16),
        }
    }
}

impl From<&Packed> for Point {
    fn from(p: &Packed) -> Self {
        Point {
            t_ms: p.t_s as u64 * 1000,
            cpu_busy_ratio: (p.cpu_e4 != NONE_U16).then(|| p.cpu_e4 as f32 / 10_000.0),
            memory_used_bytes: (p.mem_kib != NONE_U32).then(|| p.mem_kib as u64 * 1024),
            temperature_celsius: (p.temp_e2 != NONE_I16).then(|| p.temp_e2 as f32 / 100.0),
            containers: (p.containers != NONE_U16).then_some(p.containers as u32),
        }
    }
}

/// Running sums of one open bucket.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Bucket {
    start_ms: u64,
    cpu: (f64, u32),
    mem: (f64, u32),
    temp: (f64, u32),
    containers: (f64, u32),
}

impl Bucket {
    fn add(&mut self, p: &Point) {
        // Ingest refuses non-finite figures; this keeps a sum finite (and storable as
        // JSON) whatever reaches it.
        fn acc<T: Into<f64>>(slot: &mut (f64, u32), v: Option<T>) {
            if let Some(v) = v.map(Into::into).filter(|v: &f64| v.is_finite()) {
                let sum = slot.0 + v;
                if sum.is_finite() {
                    slot.0 = sum;
                    slot.1 = slot.1.saturating_add(1);
                }
            }
        }
        acc(&mut self.cpu, p.cpu_busy_ratio);
        acc(&mut self.mem, p.memory_used_bytes.map(|m| m as f64));
        acc(&mut self.temp, p.temperature_celsius);
        acc(&mut self.containers, p.containers);
    }

    fn mean(&self) -> Point {
        fn m(slot: (f64, u32)) -> Option<f64> {
            (slot.1 > 0).then(|| slot.0 / slot.1 as f64)
        }
        Point {
            t_ms: self.start_ms,
            cpu_busy_ratio: m(self.cpu).map(|v| v as f32),
            memory_used_bytes: m(self.mem).map(|v| v.round() as u64),
            temperature_celsius: m(self.temp).map(|v| v as f32),
            containers: m(self.containers).map(|v| v.round() as u32),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct History {
    tiers: Vec<VecDeque<Packed>>,
    open: Vec<Option<Bucket>>,
    /// Points ever pushed to each tier (the row number of the next one).
    pushed: [u64; TIERS.len()],
}

impl Default for History {
    fn default() -> Self {
        History {
            tiers: TIERS.iter().map(|_| VecDeque::new()).collect(),
            open: TIERS.iter().map(|_| None).collect(),
            pushed: [0; TIERS.len()],
        }
    }
}

/// Why stored history rows do not make a history.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RestoreError {
    #[error("open buckets: {0}")]
    OpenBuckets(String),
    #[error("tier {tier}: {have} points for {pushed} pushed (at most {keep} kept)")]
    Points {
        tier: usize,
        have: usize,
        pushed: u64,
        keep: usize,
    },
}

/// One tier as served by `GET /v1/nodes/{id}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TierView {
    /// 0 for the raw tier (one point per report).
    pub resolution_seconds: u64,
    pub points: Vec<Point>,
}

impl History {
    pub fn push(&mut self, p: Point) {
        for (i, (width, keep)) in TIERS.iter().enumerate() {
            if *width == 0 {
                push_bounded(&mut self.tiers[i], (&p).into(), *keep);
                self.pushed[i] = self.pushed[i].saturating_add(1);
                continue;
            }
            let start = p.t_ms - p.t_ms % width;
            match &mut self.open[i] {
                Some(b) if b.start_ms == start => b.add(&p),
                slot => {
                    // A new bucket closes the open one (also when a clock jumps back).
                    if let Some(done) = slot.take() {
                        push_bounded(&mut self.tiers[i], (&done.mean()).into(), *keep);
                        self.pushed[i] = self.pushed[i].saturating_add(1);
                    }
                    let mut b = Bucket {
                        start_ms: start,
                        ..Default::default()
                    };
                    b.add(&p);
                    *slot = Some(b);
                }
            }
        }
    }

    /// Every tier, finest first; the open bucket of each coarse tier is shown as its
    /// mean so far.
    pub fn view(&self) -> Vec<TierView> {
        TIERS
            .iter()
            .enumerate()
            .map(|(i, (width, _))| {
                let mut points: Vec<Point> = self.tiers[i].iter().map(Point::from).collect();
                if let Some(b) = &self.open[i] {
                    points.push(b.mean());
                }
                TierView {
                    resolution_seconds: width / 1000,
                    points,
                }
            })
            .collect()
    }

    /// Points ever pushed to each tier.
    pub fn pushed(&self) -> [u64; TIERS.len()] {
        self.pushed
    }

    /// The points of `tier` still kept, each with its number (see the module doc).
    pub fn numbered(&self, tier: usize) -> impl Iterator<Item = (u64, Point)> + '_ {
        let q = &self.tiers[tier];
        let first = self.pushed[tier].saturating_sub(q.len() as u64);
        q.iter()
            .enumerate()
            .map(move |(i, p)| (first + i as u64, Point::from(p)))
    }

    /// The open buckets as JSON (stored beside the node's latest snapshot).
    pub fn open_json(&self) -> String {
        serde_json::to_string(&self.open).unwrap_or_else(|_| "[]".into())
    }

    /// A history from its stored parts: each tier's kept points (oldest first), the
    /// open buckets' JSON and the pushed counters.
    pub fn restore(
        points: Vec<Vec<Point>>,
        open_json: &str,
        pushed: [u64; TIERS.len()],
    ) -> Result<History, RestoreError> {
        let open: Vec<Option<Bucket>> = serde_json::from_str(open_json)
            .map_err(|e| RestoreError::OpenBuckets(e.to_string()))?;
        if open.len() != TIERS.len() {
            return Err(RestoreError::OpenBuckets(format!(
                "{} buckets for {} tiers",
                open.len(),
                TIERS.len()
            )));
        }
        let mut h = History {
            open,
            pushed,
            ..Default::default()
        };
        for (i, (_, keep)) in TIERS.iter().enumerate() {
            let have = points.get(i).map_or(0, Vec::len);
            if have > *keep || have as u64 > pushed[i] {
                return Err(RestoreError::Points {
                    tier: i,
                    have,
                    pushed: pushed[i],
                    keep: *keep,
                });
            }
            if let Some(ps) = points.get(i) {
                h.tiers[i] = ps.iter().map(Packed::from).collect();
            }
        }
        Ok(h)
    }

    pub fn len(&self) -> usize {
        self.tiers.iter().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn push_bounded(q: &mut VecDeque<Packed>, p: Packed, keep: usize) {
    if q.len() == keep {
        q.pop_front();
    }
    q.push_back(p);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(t_ms: u64, cpu: f32) -> Point {
        Point {
            t_ms,
            cpu_busy_ratio: Some(cpu),
            containers: Some(2),
            ..Default::default()
        }
    }

    #[test]
    fn raw_tier_is_bounded_and_coarse_tiers_average() {
        let mut h = History::default();
        // A week and a bit of reports every 10 s.
        let n = 8 * 24 * 360;
        for i in 0..n {
            h.push(point(i * 10_000, if i % 2 == 0 { 0.2 } else { 0.4 }));
        }
        assert!(h.len() <= MAX_POINTS, "{}", h.len());
        let v = h.view();
        assert_eq!(v[0].resolution_seconds, 0);
        assert_eq!(v[0].points.len(), 30);
        assert_eq!(v[0].points.last().unwrap().t_ms, (n - 1) * 10_000);
        assert_eq!(v[1].resolution_seconds, 60);
        // Full 1-minute buckets are the mean of 0.2 and 0.4.
        let p = v[1].points[0];
        assert!((p.cpu_busy_ratio.unwrap() - 0.3).abs() < 1e-6, "{p:?}");
        assert_eq!(p.t_ms % 60_000, 0);
        assert_eq!(
            v[3].points.len(),
            85,
            "84 closed 2 h buckets plus the open one"
        );
        assert_eq!(v[2].points.len(), 97);
    }

    #[test]
    fn packing_keeps_figures_to_their_resolution() {
        assert_eq!(std::mem::size_of::<Packed>(), 16);
        let p = Point {
            t_ms: 1_764_000_000_123,
            cpu_busy_ratio: Some(0.12345),
            memory_used_bytes: Some(512 << 20),
            temperature_celsius: Some(-5.25),
            containers: Some(7),
        };
        let back = Point::from(&Packed::from(&p));
        assert_eq!(back.t_ms, 1_764_000_000_000);
        assert!((back.cpu_busy_ratio.unwrap() - 0.1235).abs() < 1e-6);
        assert_eq!(back.memory_used_bytes, Some(512 << 20));
        assert_eq!(back.temperature_celsius, Some(-5.25));
        assert_eq!(back.containers, Some(7));
        let none = Point::from(&Packed::from(&Point {
            t_ms: 5000,
            ..Default::default()
        }));
        assert_eq!(
            none,
            Point {
                t_ms: 5000,
                ..Default::default()
            }
        );
    }

    #[test]
    fn missing_values_stay_missing() {
        let mut h = History::default();
        h.push(Point {
            t_ms: 1000,
            ..Default::default()
        });
        h.push(Point {
            t_ms: 61_000,
            ..Default::default()
        });
        let v = h.view();
        assert_eq!(v[1].points[0].cpu_busy_ratio, None);
        assert_eq!(v[1].points[0].memory_used_bytes, None);
    }

    #[test]
    fn numbered_points_and_open_buckets_restore_the_same_history() {
        let mut h = History::default();
        for i in 0..500u64 {
            h.push(point(i * 10_000, (i % 7) as f32 / 10.0));
        }
        assert_eq!(h.pushed()[0], 500);
        let first: Vec<u64> = h.numbered(0).map(|(n, _)| n).collect();
        assert_eq!(first, (470..500).collect::<Vec<_>>());
        let points = (0..TIERS.len())
            .map(|t| h.numbered(t).map(|(_, p)| p).collect())
            .collect();
        let back = History::restore(points, &h.open_json(), h.pushed()).unwrap();
        assert_eq!(back, h);
        assert!(
            History::restore(vec![vec![Point::default(); 31]], &h.open_json(), h.pushed()).is_err()
        );
        assert!(History::restore(Vec::new(), "{", h.pushed()).is_err());
    }

    #[test]
    fn clock_jumping_back_does_not_panic() {
        let mut h = History::default();
        h.push(point(10_000_000, 0.5));
        h.push(point(5_000, 0.1));
        assert_eq!(h.view()[0].points.len(), 2);
    }
}
