//! Recent figures the store's history tiers do not keep (they keep CPU, memory,
//! temperature and containers): load, network receive/transmit and disk-write rates,
//! and the fullest filesystem. Sampled from each node's new latest snapshot by the
//! watch loop, in memory only, for the last [`KEEP`] reports (1 h at the default
//! 10 s): a manager restart starts them afresh. 24 bytes a point, so about 8.6 MB at
//! 1,000 nodes.
//!
//! Rates are the counter difference between two consecutive snapshots over their
//! collection times; a counter that went down (agent or board restart) gives no rate.

use std::collections::{HashMap, VecDeque};

use serde::Deserialize;

pub const KEEP: usize = 360;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RecentPoint {
    pub t_ms: u64,
    pub load1: Option<f32>,
    pub net_rx_bytes_per_s: Option<f32>,
    pub net_tx_bytes_per_s: Option<f32>,
    pub disk_write_bytes_per_s: Option<f32>,
    pub fs_used_ratio_max: Option<f32>,
}

/// Only what is sampled: serde skips the rest of the snapshot.
#[derive(Deserialize)]
struct Lite {
    collected_at_ms: u64,
    host: LiteHost,
}

#[derive(Deserialize)]
struct LiteHost {
    load: Option<LiteLoad>,
    #[serde(default)]
    disks: Vec<LiteDisk>,
    #[serde(default)]
    filesystems: Vec<LiteFs>,
    #[serde(default)]
    network: Vec<LiteNet>,
}

#[derive(Deserialize)]
struct LiteLoad {
    one: f64,
}
#[derive(Deserialize)]
struct LiteDisk {
    written_bytes: u64,
}
#[derive(Deserialize)]
struct LiteFs {
    size_bytes: u64,
    free_bytes: u64,
    avail_bytes: u64,
}
#[derive(Deserialize)]
struct LiteNet {
    interface: String,
    rx_bytes: u64,
    tx_bytes: u64,
}

#[derive(Clone, Copy, Debug)]
struct Counters {
    t_ms: u64,
    rx: u64,
    tx: u64,
    written: u64,
}

#[derive(Default)]
pub struct NodeRecent {
    pub points: VecDeque<RecentPoint>,
    last: Option<Counters>,
    /// The report time of the last snapshot sampled.
    pub sampled_report_ms: u64,
}

fn rate(now: u64, before: u64, dt_ms: u64) -> Option<f32> {
    (now >= before && dt_ms > 0).then(|| ((now - before) as f64 * 1000.0 / dt_ms as f64) as f32)
}

impl NodeRecent {
    /// Adds the point of a snapshot (its JSON); false when it does not parse.
    pub fn add(&mut self, json: &str) -> bool {
        let Ok(s) = serde_json::from_str::<Lite>(json) else {
            return false;
        };
        let h = &s.host;
        let (rx, tx) = h
            .network
            .iter()
            .filter(|n| n.interface != "lo")
            .fold((0u64, 0u64), |(r, t), n| {
                (r.saturating_add(n.rx_bytes), t.saturating_add(n.tx_bytes))
            });
        let written = h
            .disks
            .iter()
            .fold(0u64, |w, d| w.saturating_add(d.written_bytes));
        let now = Counters {
            t_ms: s.collected_at_ms,
            rx,
            tx,
            written,
        };
        let fs = h
            .filesystems
            .iter()
            .filter_map(|f| {
                let used = f.size_bytes.saturating_sub(f.free_bytes);
                let denom = used.saturating_add(f.avail_bytes);
                (f.size_bytes > 0 && denom > 0).then(|| used as f64 / denom as f64)
            })
            .reduce(f64::max);
        let mut p = RecentPoint {
            t_ms: s.collected_at_ms,
            load1: h.load.as_ref().map(|l| l.one as f32),
            fs_used_ratio_max: fs.map(|f| f as f32),
            ..Default::default()
        };
        if let Some(b) = self.last.filter(|b| b.t_ms < now.t_ms) {
            let dt = now.t_ms - b.t_ms;
            p.net_rx_bytes_per_s = (!h.network.is_empty())
                .then(|| rate(rx, b.rx, dt))
                .flatten();
            p.net_tx_bytes_per_s = (!h.network.is_empty())
                .then(|| rate(tx, b.tx, dt))
                .flatten();
            p.disk_write_bytes_per_s = (!h.disks.is_empty())
                .then(|| rate(written, b.written, dt))
                .flatten();
        }
        self.last = Some(now);
        if self.points.len() >= KEEP {
            self.points.pop_front();
        }
        self.points.push_back(p);
        true
    }
}

/// Every node's recent figures.
#[derive(Default)]
pub struct Recent {
    pub nodes: HashMap<String, NodeRecent>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(t: u64, rx: u64, written: u64) -> String {
        serde_json::json!({
            "collected_at_ms": t,
            "host": {
                "load": {"one": 0.5, "five": 0.4, "fifteen": 0.3},
                "disks": [{"device": "mmcblk0", "written_bytes": written}],
                "filesystems": [
                    {"size_bytes": 100, "free_bytes": 50, "avail_bytes": 40},
                    {"size_bytes": 100, "free_bytes": 10, "avail_bytes": 10}
                ],
                "network": [
                    {"interface": "lo", "rx_bytes": 999999, "tx_bytes": 999999},
                    {"interface": "eth0", "rx_bytes": rx, "tx_bytes": 0}
                ]
            }
        })
        .to_string()
    }

    #[test]
    fn rates_between_snapshots_and_none_after_a_reset() {
        let mut r = NodeRecent::default();
        assert!(r.add(&snap(10_000, 1_000, 0)));
        assert_eq!(
            r.points[0].net_rx_bytes_per_s, None,
            "no rate from one snapshot"
        );
        assert_eq!(r.points[0].load1, Some(0.5));
        assert!((r.points[0].fs_used_ratio_max.unwrap() - 0.9).abs() < 1e-6);
        assert!(r.add(&snap(20_000, 11_000, 4_096)));
        assert_eq!(r.points[1].net_rx_bytes_per_s, Some(1_000.0), "lo left out");
        assert_eq!(r.points[1].disk_write_bytes_per_s, Some(409.6));
        assert!(r.add(&snap(30_000, 5, 4_096)));
        assert_eq!(r.points[2].net_rx_bytes_per_s, None, "counter went down");
        assert!(!r.add("{}"));
        for i in 0..(KEEP as u64 + 5) {
            r.add(&snap(40_000 + i * 10_000, 0, 0));
        }
        assert_eq!(r.points.len(), KEEP);
    }
}
