//! A node's summary history with bounded retention and downsampling.
//!
//! Every report adds one [`Point`] (CPU busy share, memory used, hottest temperature,
//! container count). The raw tier keeps the last few points; each coarser tier keeps
//! means over fixed buckets. Memory per node is bounded (at most [`MAX_POINTS`] points,
//! about 14 KiB), whatever the report rate or uptime.

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

/// Running sums of one open bucket.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Bucket {
    start_ms: u64,
    cpu: (f64, u32),
    mem: (f64, u32),
    temp: (f64, u32),
    containers: (f64, u32),
}

impl Bucket {
    fn add(&mut self, p: &Point) {
        fn acc<T: Into<f64>>(slot: &mut (f64, u32), v: Option<T>) {
            if let Some(v) = v {
                slot.0 += v.into();
                slot.1 += 1;
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

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct History {
    tiers: Vec<VecDeque<Point>>,
    open: Vec<Option<Bucket>>,
}

impl Default for History {
    fn default() -> Self {
        History {
            tiers: TIERS.iter().map(|_| VecDeque::new()).collect(),
            open: TIERS.iter().map(|_| None).collect(),
        }
    }
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
                push_bounded(&mut self.tiers[i], p, *keep);
                continue;
            }
            let start = p.t_ms - p.t_ms % width;
            match &mut self.open[i] {
                Some(b) if b.start_ms == start => b.add(&p),
                slot => {
                    // A new bucket closes the open one (also when a clock jumps back).
                    if let Some(done) = slot.take() {
                        push_bounded(&mut self.tiers[i], done.mean(), *keep);
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
                let mut points: Vec<Point> = self.tiers[i].iter().copied().collect();
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

    pub fn len(&self) -> usize {
        self.tiers.iter().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn push_bounded(q: &mut VecDeque<Point>, p: Point, keep: usize) {
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
    fn clock_jumping_back_does_not_panic() {
        let mut h = History::default();
        h.push(point(10_000_000, 0.5));
        h.push(point(5_000, 0.1));
        assert_eq!(h.view()[0].points.len(), 2);
    }
}
