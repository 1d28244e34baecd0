//! Each container's CPU use between a node's last two snapshots, for the cockpit's
//! containers table (`cpu_ratio`). A snapshot carries cumulative CPU seconds per
//! container (from its cgroup); a rate needs the snapshot before, which the manager does
//! not keep as JSON. So each node keeps, in memory only, one small point per container of
//! its latest snapshot: a hash of the id (8 bytes, not the 64-hex id), the CPU seconds
//! and the rate against the snapshot before: 24 bytes a container, at most
//! [`MAX_CONTAINERS`] of them (24 KiB a node in the worst case; 480 bytes for a node with
//! 20 containers). After a manager restart the points are taken again from the stored
//! latest snapshot, so the first report after it already has rates.
//!
//! The rate is CPU seconds per second, like `docker stats`: 1.0 is one CPU busy, a
//! container using two CPUs fully shows 2.0. It is absent for a container seen for the
//! first time, when its counter went down (a restart makes a new cgroup) and when time
//! did not advance.

use std::hash::{Hash, Hasher};

/// Containers a node keeps points for; the rest (sorted by id hash) get no rate.
pub const MAX_CONTAINERS: usize = 1024;

/// A container id's key: SipHash with fixed keys, so the same id always has the same key.
pub fn key(id: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

/// A snapshot's (key, cumulative CPU seconds) per container, sorted by key, bounded.
pub fn counters<'a>(it: impl Iterator<Item = (&'a str, Option<f64>)>) -> Vec<(u64, f64)> {
    let mut v: Vec<(u64, f64)> = it
        .filter_map(|(id, s)| {
            s.filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| (key(id), s))
        })
        .collect();
    v.sort_unstable_by_key(|p| p.0);
    v.dedup_by_key(|p| p.0);
    v.truncate(MAX_CONTAINERS);
    v
}

#[derive(Clone, Copy, Debug)]
struct PointCpu {
    key: u64,
    usage_seconds: f64,
    ratio: Option<f32>,
}

/// The points of one node (see the module doc). Not stored, so two entries compare
/// equal whatever it holds (like `PrevCounters`).
#[derive(Clone, Debug, Default)]
pub struct ContainerCpu {
    /// `collected_at_ms` of the snapshot the points are of.
    t_ms: u64,
    points: Vec<PointCpu>,
    /// Whether the points were ever set (from a report or the stored latest snapshot).
    pub seeded: bool,
}

impl PartialEq for ContainerCpu {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl ContainerCpu {
    /// The next snapshot's counters (sorted by key, as [`counters`] gives them).
    pub fn update(&mut self, t_ms: u64, counters: &[(u64, f64)]) {
        let dt_s = (t_ms > self.t_ms && self.seeded).then(|| (t_ms - self.t_ms) as f64 / 1000.0);
        let before = std::mem::take(&mut self.points);
        self.points = counters
            .iter()
            .map(|&(key, usage_seconds)| {
                let ratio = dt_s.and_then(|dt| {
                    let i = before.binary_search_by_key(&key, |p| p.key).ok()?;
                    let used = usage_seconds - before[i].usage_seconds;
                    (used >= 0.0)
                        .then(|| (used / dt) as f32)
                        .filter(|r| r.is_finite())
                });
                PointCpu {
                    key,
                    usage_seconds,
                    ratio,
                }
            })
            .collect();
        self.t_ms = t_ms;
        self.seeded = true;
    }

    /// The rate of container `id` in the snapshot collected at `t_ms`; `None` when the
    /// points are of another snapshot or the container has no rate.
    pub fn ratio(&self, t_ms: u64, id: &str) -> Option<f64> {
        if t_ms != self.t_ms {
            return None;
        }
        let k = key(id);
        let i = self.points.binary_search_by_key(&k, |p| p.key).ok()?;
        self.points[i].ratio.map(f64::from)
    }

    /// Bytes these points hold on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.points.capacity() * std::mem::size_of::<PointCpu>()
    }
}

/// (collected_at_ms, counters) of a stored snapshot's JSON: the node's latest, after a
/// restart; `None` when it does not parse.
pub fn counters_of_json(json: &str) -> Option<(u64, Vec<(u64, f64)>)> {
    #[derive(serde::Deserialize)]
    struct S {
        collected_at_ms: u64,
        #[serde(default)]
        containers: Vec<C>,
    }
    #[derive(serde::Deserialize)]
    struct C {
        id: String,
        cpu: Option<Cpu>,
    }
    #[derive(serde::Deserialize)]
    struct Cpu {
        usage_seconds: f64,
    }
    let s: S = serde_json::from_str(json).ok()?;
    let c = counters(
        s.containers
            .iter()
            .map(|c| (c.id.as_str(), c.cpu.as_ref().map(|c| c.usage_seconds))),
    );
    Some((s.collected_at_ms, c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_two_snapshots_and_only_from_two() {
        let mut c = ContainerCpu::default();
        c.update(
            10_000,
            &counters([("a", Some(5.0)), ("b", Some(1.0))].into_iter()),
        );
        assert_eq!(c.ratio(10_000, "a"), None, "one snapshot: no rate");

        // 10 s later: a used 15 CPU-seconds (1.5 CPUs), b restarted (counter down),
        // c is new, d has no CPU figure.
        c.update(
            20_000,
            &counters(
                [
                    ("a", Some(20.0)),
                    ("b", Some(0.5)),
                    ("c", Some(3.0)),
                    ("d", None),
                ]
                .into_iter(),
            ),
        );
        let a = c.ratio(20_000, "a").unwrap();
        assert!((a - 1.5).abs() < 1e-6, "{a}");
        assert_eq!(c.ratio(20_000, "b"), None, "counter went down");
        assert_eq!(c.ratio(20_000, "c"), None, "first seen");
        assert_eq!(c.ratio(20_000, "d"), None, "no CPU figure");
        assert_eq!(c.ratio(10_000, "a"), None, "points of another snapshot");

        // Time did not advance (an agent clock step back): no rate, not infinity.
        c.update(20_000, &counters([("a", Some(21.0))].into_iter()));
        assert_eq!(c.ratio(20_000, "a"), None);
        c.update(22_000, &counters([("a", Some(21.5))].into_iter()));
        let a = c.ratio(22_000, "a").unwrap();
        assert!((a - 0.25).abs() < 1e-6, "{a}");
    }

    #[test]
    fn points_are_bounded_and_small() {
        let ids: Vec<String> = (0..5000).map(|i| format!("{i:064x}")).collect();
        let mut c = ContainerCpu::default();
        c.update(1, &counters(ids.iter().map(|i| (i.as_str(), Some(1.0)))));
        assert!(c.heap_bytes() <= MAX_CONTAINERS * 24, "{}", c.heap_bytes());
        assert_eq!(std::mem::size_of::<PointCpu>(), 24);
    }

    #[test]
    fn the_stored_latest_snapshot_seeds_the_points() {
        let json = r#"{"collected_at_ms": 5000, "containers": [
            {"id": "x", "cpu": {"usage_seconds": 2.0}}, {"id": "y", "cpu": null}]}"#;
        let (t, v) = counters_of_json(json).unwrap();
        assert_eq!((t, v.len()), (5000, 1));
        let mut c = ContainerCpu::default();
        c.update(t, &v);
        c.update(7000, &counters([("x", Some(3.0))].into_iter()));
        let x = c.ratio(7000, "x").unwrap();
        assert!((x - 0.5).abs() < 1e-6, "{x}");
        assert_eq!(counters_of_json("not json"), None);
    }
}
