//! `GET /v1/nodes/{id}/history`: a node's charts over a time range, every series from
//! the finest stored history tier that covers it (raw reports, 1 min, 15 min, 2 h),
//! bucketed to the step.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::store::history::TierView;

/// The longest range served.
pub const MAX_SPAN_MS: u64 = 8 * 24 * 3600 * 1000;
pub const MAX_STEP_S: u64 = 86_400;

#[derive(Debug, Default, Deserialize)]
pub struct HistoryQuery {
    pub range: Option<String>,
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    pub step_s: Option<u64>,
}

pub type Series = Vec<(u64, Option<f64>)>;

#[derive(Debug, Serialize, Deserialize)]
pub struct HistoryView {
    pub step_s: u64,
    pub from_ms: u64,
    pub to_ms: u64,
    pub series: BTreeMap<String, Series>,
}

/// The range asked for: `(from_ms, to_ms, step_s asked)`, or why it is refused.
pub fn window(q: &HistoryQuery, now_ms: u64) -> Result<(u64, u64, Option<u64>), String> {
    if let Some(s) = q.step_s {
        if s == 0 || s > MAX_STEP_S {
            return Err(format!("step_s must be 1-{MAX_STEP_S}"));
        }
    }
    let (from, to) = match (&q.range, q.from_ms, q.to_ms) {
        (Some(r), None, None) => {
            let span = match r.as_str() {
                "1h" => 3_600_000,
                "24h" => 86_400_000,
                "7d" => 7 * 86_400_000,
                other => return Err(format!("range `{other}`: use 1h, 24h or 7d")),
            };
            (now_ms.saturating_sub(span), now_ms)
        }
        (None, Some(f), t) => (f, t.unwrap_or(now_ms)),
        (None, None, None) => (now_ms.saturating_sub(3_600_000), now_ms),
        (None, None, Some(_)) => return Err("to_ms needs from_ms".into()),
        (Some(_), _, _) => return Err("give range, or from_ms/to_ms, not both".into()),
    };
    if from >= to {
        return Err("from_ms must be before to_ms".into());
    }
    if to - from > MAX_SPAN_MS {
        return Err(format!("at most {} days at once", MAX_SPAN_MS / 86_400_000));
    }
    Ok((from, to, q.step_s))
}

/// The tier to serve: among those at least as coarse as the step asked, the finest
/// whose oldest point reaches back to `from` and that holds two points at least; if
/// none does, the one with the most points (then reaching back furthest, then finest). `raw_step_s` stands for the raw tier's resolution.
pub fn choose_tier(
    tiers: &[TierView],
    from: u64,
    step: Option<u64>,
    raw_step_s: u64,
) -> Option<usize> {
    let res = |t: &TierView| {
        if t.resolution_seconds == 0 {
            raw_step_s
        } else {
            t.resolution_seconds
        }
    };
    let usable: Vec<usize> = (0..tiers.len())
        .filter(|i| step.is_none_or(|s| res(&tiers[*i]) >= s) || *i == tiers.len() - 1)
        .collect();
    let first = |i: usize| tiers[i].points.first().map(|p| p.t_ms);
    let len = |i: usize| tiers[i].points.len();
    // A coarse tier's buckets are aligned (2 h), so its one bucket can "reach back" to a
    // young node's range and draw a single dot, or none: covering needs two points.
    if let Some(i) = usable
        .iter()
        .copied()
        .find(|i| first(*i).is_some_and(|t| t <= from) && len(*i) >= 2)
    {
        return Some(i);
    }
    // Else the tier with the most points (a line), then the one reaching furthest, then
    // the finest.
    usable
        .iter()
        .copied()
        .filter(|i| first(*i).is_some())
        .min_by_key(|i| (usize::MAX - len(*i), first(*i).unwrap_or(u64::MAX), *i))
        .or(usable.first().copied())
}

/// Means over buckets of `step_ms` (start-aligned); a bucket with no value is null.
fn bucket(points: impl Iterator<Item = (u64, Option<f64>)>, step_ms: u64) -> Series {
    let mut out: Series = Vec::new();
    let mut cur: Option<(u64, f64, u32)> = None;
    let mut cur_t: Option<u64> = None;
    for (t, v) in points {
        let b = t - t % step_ms.max(1);
        if cur_t != Some(b) {
            if let Some(ct) = cur_t {
                out.push((ct, cur.map(|(_, s, n)| s / f64::from(n))));
            }
            cur_t = Some(b);
            cur = None;
        }
        if let Some(v) = v.filter(|v| v.is_finite()) {
            cur = Some(match cur {
                Some((bt, s, n)) => (bt, s + v, n + 1),
                None => (b, v, 1),
            });
        }
    }
    if let Some(ct) = cur_t {
        out.push((ct, cur.map(|(_, s, n)| s / f64::from(n))));
    }
    out
}

/// Builds the view from a node's tiers and its memory total.
pub fn build(
    tiers: &[TierView],
    memory_total: Option<u64>,
    (from, to, step): (u64, u64, Option<u64>),
    raw_step_s: u64,
) -> HistoryView {
    let raw_step_s = raw_step_s.max(1);
    let tier = choose_tier(tiers, from, step, raw_step_s);
    let tier_res = tier
        .map(|i| tiers[i].resolution_seconds)
        .map(|r| if r == 0 { raw_step_s } else { r })
        .unwrap_or(raw_step_s);
    let step_s = step.unwrap_or(tier_res).max(tier_res);
    let step_ms = step_s * 1000;
    let pts: Vec<_> = tier
        .map(|i| {
            tiers[i]
                .points
                .iter()
                .filter(|p| p.t_ms >= from && p.t_ms <= to)
                .copied()
                .collect()
        })
        .unwrap_or_default();
    let mut series = BTreeMap::new();
    let stored = |f: &dyn Fn(&crate::store::history::Point) -> Option<f64>| {
        bucket(pts.iter().map(|p| (p.t_ms, f(p))), step_ms)
    };
    series.insert(
        "cpu_busy_ratio".into(),
        stored(&|p| p.cpu_busy_ratio.map(f64::from)),
    );
    series.insert(
        "memory_used_bytes".into(),
        stored(&|p| p.memory_used_bytes.map(|m| m as f64)),
    );
    series.insert(
        "memory_total_bytes".into(),
        stored(&|p| p.memory_used_bytes.and(memory_total).map(|m| m as f64)),
    );
    series.insert(
        "temperature_celsius".into(),
        stored(&|p| p.temperature_celsius.map(f64::from)),
    );
    let f32_series =
        |f: &dyn Fn(&crate::store::history::Point) -> Option<f32>| stored(&|p| f(p).map(f64::from));
    series.insert("load1".into(), f32_series(&|p| p.load1));
    series.insert(
        "net_rx_bytes_per_s".into(),
        f32_series(&|p| p.net_rx_bytes_per_s),
    );
    series.insert(
        "net_tx_bytes_per_s".into(),
        f32_series(&|p| p.net_tx_bytes_per_s),
    );
    series.insert(
        "disk_write_bytes_per_s".into(),
        f32_series(&|p| p.disk_write_bytes_per_s),
    );
    series.insert(
        "fs_used_ratio_max".into(),
        f32_series(&|p| p.fs_used_ratio_max),
    );
    HistoryView {
        step_s,
        from_ms: from,
        to_ms: to,
        series,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::history::Point;

    fn tier(res: u64, ts: &[u64]) -> TierView {
        TierView {
            resolution_seconds: res,
            points: ts
                .iter()
                .map(|t| Point {
                    t_ms: *t,
                    cpu_busy_ratio: Some(0.5),
                    memory_used_bytes: Some(100),
                    temperature_celsius: None,
                    containers: Some(1),
                    load1: Some(0.25),
                    ..Default::default()
                })
                .collect(),
        }
    }

    #[test]
    fn windows_are_bounded() {
        let now = 10 * 86_400_000;
        let q = |range: Option<&str>, from, to, step| HistoryQuery {
            range: range.map(str::to_string),
            from_ms: from,
            to_ms: to,
            step_s: step,
        };
        assert_eq!(
            window(&q(Some("24h"), None, None, None), now),
            Ok((now - 86_400_000, now, None))
        );
        assert!(window(&q(Some("2w"), None, None, None), now).is_err());
        assert!(window(&q(None, Some(5), Some(5), None), now).is_err());
        assert!(window(&q(None, Some(0), Some(9 * 86_400_000), None), now).is_err());
        assert!(window(&q(None, Some(0), Some(1000), Some(0)), now).is_err());
        assert!(window(&q(Some("1h"), Some(0), None, None), now).is_err());
        assert_eq!(
            window(&q(None, None, None, None), now),
            Ok((now - 3_600_000, now, None))
        );
    }

    #[test]
    fn the_finest_covering_tier_is_chosen() {
        let tiers = vec![
            tier(0, &[9_000_000, 9_010_000]),
            tier(60, &[5_000_000, 9_000_000]),
            tier(900, &[900_000, 9_000_000]),
            tier(7200, &[0]),
        ];
        assert_eq!(choose_tier(&tiers, 9_000_000, None, 10), Some(0));
        assert_eq!(choose_tier(&tiers, 6_000_000, None, 10), Some(1));
        assert_eq!(choose_tier(&tiers, 1_000_000, None, 10), Some(2));
        // Only the 2 h tier reaches back, with one point: the tier with most points wins.
        assert_eq!(choose_tier(&tiers, 100, None, 10), Some(2));
        assert_eq!(
            choose_tier(&tiers, 9_000_000, Some(300), 10),
            Some(2),
            "step 300 s: 15 min tier"
        );
        // Young history: nothing reaches back; the one reaching furthest, finest of equals.
        let young = vec![
            tier(0, &[5_000]),
            tier(60, &[0]),
            tier(900, &[0]),
            tier(7200, &[0]),
        ];
        assert_eq!(
            choose_tier(&young, 0, None, 10).map(|i| young[i].resolution_seconds),
            Some(60)
        );
        let v = build(&young, Some(400), (0, 100_000, None), 10);
        assert_eq!(v.step_s, 60);
        assert_eq!(v.series["cpu_busy_ratio"], vec![(0, Some(0.5))]);
        assert_eq!(v.series["memory_total_bytes"], vec![(0, Some(400.0))]);
        assert_eq!(v.series["temperature_celsius"], vec![(0, None)]);
        assert_eq!(v.series["load1"], vec![(0, Some(0.25))]);
        assert_eq!(
            v.series["net_rx_bytes_per_s"],
            vec![(0, None)],
            "absent, not 0"
        );
    }

    #[test]
    fn every_figure_comes_from_the_chosen_tier_bucketed_to_the_step() {
        let raw = TierView {
            resolution_seconds: 0,
            points: (0..6)
                .map(|i| Point {
                    t_ms: i * 10_000,
                    load1: Some(i as f32),
                    net_rx_bytes_per_s: (i > 0).then_some(100.0),
                    disk_write_bytes_per_s: Some(8.0 * i as f32),
                    fs_used_ratio_max: Some(0.5),
                    ..Default::default()
                })
                .collect(),
        };
        // The 2 h tier reaches back a week: a 7-day chart of load comes from it.
        let coarse = TierView {
            resolution_seconds: 7200,
            points: vec![Point {
                t_ms: 0,
                load1: Some(3.0),
                net_tx_bytes_per_s: Some(50.0),
                ..Default::default()
            }],
        };
        let v = build(std::slice::from_ref(&raw), None, (0, 60_000, Some(30)), 10);
        assert_eq!(v.step_s, 30);
        assert_eq!(v.series["load1"], vec![(0, Some(1.0)), (30_000, Some(4.0))]);
        assert_eq!(
            v.series["net_rx_bytes_per_s"],
            vec![(0, Some(100.0)), (30_000, Some(100.0))],
            "the report without a rate is left out of the mean"
        );
        assert_eq!(
            v.series["disk_write_bytes_per_s"],
            vec![(0, Some(8.0)), (30_000, Some(32.0))]
        );
        assert_eq!(v.series["fs_used_ratio_max"][0], (0, Some(0.5)));
        assert_eq!(
            v.series["net_tx_bytes_per_s"],
            vec![(0, None), (30_000, None)]
        );
        let week = build(
            &[tier(0, &[6 * 86_400_000]), coarse],
            None,
            (0, 7 * 86_400_000, None),
            10,
        );
        assert_eq!(week.step_s, 7200);
        assert_eq!(week.series["load1"], vec![(0, Some(3.0))]);
        assert_eq!(week.series["net_tx_bytes_per_s"], vec![(0, Some(50.0))]);
    }
}
