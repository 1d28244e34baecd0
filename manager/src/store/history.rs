//! A node's summary history with bounded retention and downsampling.
//!
//! Every report adds one [`Point`] (CPU busy share, memory used, hottest temperature,
//! container count, 1-minute load, network receive/transmit and disk-write rates, the
//! fullest filesystem's used share). The raw tier keeps the last few points; each
//! coarser tier keeps means over fixed buckets. Points are kept packed in 24 bytes
//! ([`Packed`]: seconds, KiB, 1/10000 of CPU and of a filesystem, 1/100 °C and of a
//! load, rates as bfloat16), so a node's history is bounded at [`MAX_POINTS`] points,
//! about 7.7 KiB, whatever the report rate or uptime. A figure a report lacks is absent
//! (never zero) in every tier.
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
    /// 1-minute load average.
    #[serde(default)]
    pub load1: Option<f32>,
    /// Receive/transmit rate over every interface but `lo`, between two reports; absent
    /// for the first report after a (manager or agent) restart and when a counter went
    /// down.
    #[serde(default)]
    pub net_rx_bytes_per_s: Option<f32>,
    #[serde(default)]
    pub net_tx_bytes_per_s: Option<f32>,
    /// Bytes written to every disk per second, between two reports (same rules).
    #[serde(default)]
    pub disk_write_bytes_per_s: Option<f32>,
    /// Used share of the fullest filesystem (used / (used + available to users)).
    #[serde(default)]
    pub fs_used_ratio_max: Option<f32>,
}

/// A [`Point`] in 24 bytes; the `NONE_*` values stand for a missing figure.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Packed {
    t_s: u32,
    mem_kib: u32,
    containers: u16,
    cpu_e4: u16,
    temp_e2: i16,
    load_e2: u16,
    fs_e4: u16,
    /// Rates as bfloat16 (the top half of an f32): 8 bits of precision (0.4 %), any
    /// magnitude, in two bytes: a chart needs no more.
    rx_bf16: u16,
    tx_bf16: u16,
    disk_bf16: u16,
}

const NONE_U32: u32 = u32::MAX;
const NONE_U16: u16 = u16::MAX;
const NONE_I16: i16 = i16::MIN;

/// A non-negative finite rate as bfloat16, rounded to nearest; `NONE_U16` (a NaN
/// pattern no rate packs to) when absent.
fn to_bf16(v: Option<f32>) -> u16 {
    match v.filter(|v| v.is_finite()) {
        Some(v) => {
            // `max` may keep -0.0; a rate is never negative.
            let bits = if v > 0.0 { v.to_bits() } else { 0 };
            // Round half up on the dropped 16 bits; the largest finite f32 would round
            // into infinity, so it is capped at the largest finite bfloat16.
            let r = (bits as u64 + 0x8000) >> 16;
            r.min(0x7F7F) as u16
        }
        None => NONE_U16,
    }
}

fn from_bf16(b: u16) -> Option<f32> {
    (b != NONE_U16).then(|| f32::from_bits(u32::from(b) << 16))
}

/// `v` (clamped to `0..=max`) times `scale`, rounded; `NONE_U16` when absent.
fn to_fixed_u16(v: Option<f32>, scale: f32, max: f32) -> u16 {
    v.filter(|v| v.is_finite())
        .map(|v| {
            (v.clamp(0.0, max) * scale)
                .round()
                .min(NONE_U16 as f32 - 1.0) as u16
        })
        .unwrap_or(NONE_U16)
}

fn from_fixed_u16(v: u16, scale: f32) -> Option<f32> {
    (v != NONE_U16).then(|| v as f32 / scale)
}

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
            load_e2: to_fixed_u16(p.load1, 100.0, f32::MAX),
            fs_e4: to_fixed_u16(p.fs_used_ratio_max, 10_000.0, 1.0),
            rx_bf16: to_bf16(p.net_rx_bytes_per_s),
            tx_bf16: to_bf16(p.net_tx_bytes_per_s),
            disk_bf16: to_bf16(p.disk_write_bytes_per_s),
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
            load1: from_fixed_u16(p.load_e2, 100.0),
            net_rx_bytes_per_s: from_bf16(p.rx_bf16),
            net_tx_bytes_per_s: from_bf16(p.tx_bf16),
            disk_write_bytes_per_s: from_bf16(p.disk_bf16),
            fs_used_ratio_max: from_fixed_u16(p.fs_e4, 10_000.0),
        }
    }
}

/// Running sums of one open bucket (stored as JSON in `latest.open_buckets`: the
/// fields added in schema version 3 default to empty, so an older row still loads).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Bucket {
    start_ms: u64,
    cpu: (f64, u32),
    mem: (f64, u32),
    temp: (f64, u32),
    containers: (f64, u32),
    #[serde(default)]
    load1: (f64, u32),
    #[serde(default)]
    rx: (f64, u32),
    #[serde(default)]
    tx: (f64, u32),
    #[serde(default)]
    disk: (f64, u32),
    #[serde(default)]
    fs: (f64, u32),
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
        acc(&mut self.load1, p.load1);
        acc(&mut self.rx, p.net_rx_bytes_per_s);
        acc(&mut self.tx, p.net_tx_bytes_per_s);
        acc(&mut self.disk, p.disk_write_bytes_per_s);
        acc(&mut self.fs, p.fs_used_ratio_max);
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
            load1: m(self.load1).map(|v| v as f32),
            net_rx_bytes_per_s: m(self.rx).map(|v| v as f32),
            net_tx_bytes_per_s: m(self.tx).map(|v| v as f32),
            disk_write_bytes_per_s: m(self.disk).map(|v| v as f32),
            fs_used_ratio_max: m(self.fs).map(|v| v as f32),
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
        assert_eq!(std::mem::size_of::<Packed>(), 24);
        let p = Point {
            t_ms: 1_764_000_000_123,
            cpu_busy_ratio: Some(0.12345),
            memory_used_bytes: Some(512 << 20),
            temperature_celsius: Some(-5.25),
            containers: Some(7),
            load1: Some(1.237),
            net_rx_bytes_per_s: Some(12_345_678.0),
            net_tx_bytes_per_s: Some(0.0),
            disk_write_bytes_per_s: Some(409.6),
            fs_used_ratio_max: Some(0.91234),
        };
        let back = Point::from(&Packed::from(&p));
        assert_eq!(back.t_ms, 1_764_000_000_000);
        assert!((back.cpu_busy_ratio.unwrap() - 0.1235).abs() < 1e-6);
        assert_eq!(back.memory_used_bytes, Some(512 << 20));
        assert_eq!(back.temperature_celsius, Some(-5.25));
        assert_eq!(back.containers, Some(7));
        assert_eq!(back.load1, Some(1.24));
        assert!((back.fs_used_ratio_max.unwrap() - 0.9123).abs() < 1e-6);
        // bfloat16: within 0.4 % of the rate; zero stays zero (not absent).
        let rx = back.net_rx_bytes_per_s.unwrap();
        assert!((rx / 12_345_678.0 - 1.0).abs() < 0.004, "{rx}");
        assert_eq!(back.net_tx_bytes_per_s, Some(0.0));
        let disk = back.disk_write_bytes_per_s.unwrap();
        assert!((disk / 409.6 - 1.0).abs() < 0.004, "{disk}");
        // Out-of-range figures are clamped, not wrapped or turned into "absent".
        let odd = Point::from(&Packed::from(&Point {
            t_ms: 0,
            load1: Some(1e9),
            net_rx_bytes_per_s: Some(f32::MAX),
            net_tx_bytes_per_s: Some(-3.0),
            fs_used_ratio_max: Some(1.5),
            disk_write_bytes_per_s: Some(f32::NAN),
            ..Default::default()
        }));
        assert_eq!(odd.load1, Some(655.34));
        assert!(odd.net_rx_bytes_per_s.unwrap() > 3e38);
        assert_eq!(odd.net_tx_bytes_per_s, Some(0.0));
        assert_eq!(odd.fs_used_ratio_max, Some(1.0));
        assert_eq!(odd.disk_write_bytes_per_s, None);
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
        assert_eq!(v[1].points[0].load1, None);
        assert_eq!(v[1].points[0].net_rx_bytes_per_s, None);
        assert_eq!(v[1].points[0].fs_used_ratio_max, None);
    }

    #[test]
    fn new_figures_average_over_the_reports_that_have_them() {
        let mut h = History::default();
        // Six reports in one minute: the first has no rates (nothing to diff yet).
        for i in 0..6u64 {
            h.push(Point {
                t_ms: 60_000 + i * 10_000,
                load1: Some(i as f32),
                net_rx_bytes_per_s: (i > 0).then_some(1000.0 * i as f32),
                net_tx_bytes_per_s: (i > 0).then_some(10.0),
                disk_write_bytes_per_s: (i > 0).then_some(512.0),
                fs_used_ratio_max: Some(0.5),
                ..Default::default()
            });
        }
        h.push(Point {
            t_ms: 120_000,
            ..Default::default()
        });
        let m = h.view()[1].points[0];
        assert_eq!(m.t_ms, 60_000);
        assert_eq!(m.load1, Some(2.5));
        // Mean of 1000..5000 over the five reports with a rate, not over six.
        // (Kept as bfloat16: 3000 reads back as 3008, within 0.4 %.)
        let rx = m.net_rx_bytes_per_s.unwrap();
        assert!((rx / 3000.0 - 1.0).abs() < 0.004, "{rx}");
        assert_eq!(m.net_tx_bytes_per_s, Some(10.0));
        assert_eq!(m.disk_write_bytes_per_s, Some(512.0));
        assert_eq!(m.fs_used_ratio_max, Some(0.5));
        // The next bucket has none of them: absent, not zero.
        let open = h.view()[1].points[1];
        assert_eq!(open.load1, None);
        assert_eq!(open.net_rx_bytes_per_s, None);
    }

    #[test]
    fn open_buckets_stored_before_version_3_still_restore() {
        // `latest.open_buckets` as a version-2 manager wrote it: no new sums.
        let old = r#"[null,{"start_ms":60000,"cpu":[0.5,2],"mem":[0.0,0],"temp":[0.0,0],"containers":[4.0,2]},null,null]"#;
        let h = History::restore(Vec::new(), old, [0; TIERS.len()]).unwrap();
        let open = h.view()[1].points[0];
        assert_eq!(open.cpu_busy_ratio, Some(0.25));
        assert_eq!(open.containers, Some(2));
        assert_eq!(open.load1, None);
        assert_eq!(open.net_rx_bytes_per_s, None);
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
