//! The collection itself (node_scrape_collector_duration_seconds / _success) and the
//! image's pending package updates.

use super::{b, Kind::*, Renderer};

pub(super) fn render(r: &mut Renderer<'_, '_>) {
    r.family(
        "armada_collection_warnings",
        Gauge,
        "Sources that could not be read in the last collection.",
        |s, e| e.sample(&[], s.warnings.len() as f64),
    );
    r.family(
        "armada_collector_duration_seconds",
        Gauge,
        "Time one collector took in the last collection.",
        |s, e| {
            for c in &s.collectors {
                e.sample(&[("collector", &c.collector)], c.duration_seconds);
            }
        },
    );
    r.family(
        "armada_collector_success",
        Gauge,
        "Collector read every source it found in the last collection (1) or not (0).",
        |s, e| {
            for c in &s.collectors {
                e.sample(&[("collector", &c.collector)], b(c.success));
            }
        },
    );
    r.family(
        "armada_collector_last_success_timestamp_seconds",
        Gauge,
        "Last collection in which the collector succeeded, seconds since the Unix epoch.",
        |s, e| {
            for c in &s.collectors {
                e.opt(&[("collector", &c.collector)], c.last_success_seconds);
            }
        },
    );
    r.family(
        "armada_pending_updates",
        Gauge,
        "Package updates waiting to be installed, as the image's update timer found them.",
        |s, e| e.opt(&[], s.updates.as_ref().map(|u| u.count as f64)),
    );
    r.family(
        "armada_pending_update_info",
        Gauge,
        "Always 1, one per pending package update, with its candidate version.",
        |s, e| {
            if let Some(u) = &s.updates {
                for (package, version) in &u.packages {
                    e.sample(&[("package", package), ("version", version)], 1.0);
                }
            }
        },
    );
    r.family(
        "armada_pending_updates_checked_timestamp_seconds",
        Gauge,
        "When the update timer last wrote its list, seconds since the Unix epoch.",
        |s, e| e.opt(&[], s.updates.as_ref().and_then(|u| u.checked_at_seconds)),
    );
}
