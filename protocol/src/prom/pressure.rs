//! Host pressure stall information (node_pressure_*_seconds_total, plus the kernel's
//! own averages as ratios).

use super::{Kind::*, Renderer};

pub(super) fn render(r: &mut Renderer<'_, '_>) {
    r.family(
        "armada_pressure_some_seconds_total",
        Counter,
        "Time some tasks stalled on the resource (PSI).",
        |s, e| {
            for p in &s.host.pressure {
                e.sample(&[("resource", &p.resource)], p.some_total_seconds);
            }
        },
    );
    r.family(
        "armada_pressure_full_seconds_total",
        Counter,
        "Time all non-idle tasks stalled on the resource (PSI).",
        |s, e| {
            for p in &s.host.pressure {
                e.opt(&[("resource", &p.resource)], p.full_total_seconds);
            }
        },
    );
    r.family(
        "armada_pressure_some_ratio",
        Gauge,
        "Share of time some tasks stalled on the resource, averaged over the window (PSI).",
        |s, e| {
            for p in &s.host.pressure {
                for (w, v) in [
                    ("10s", p.some_avg10),
                    ("60s", p.some_avg60),
                    ("300s", p.some_avg300),
                ] {
                    e.sample(&[("resource", &p.resource), ("window", w)], v);
                }
            }
        },
    );
    r.family(
        "armada_pressure_full_ratio",
        Gauge,
        "Share of time all non-idle tasks stalled on the resource, averaged over the window (PSI).",
        |s, e| {
            for p in &s.host.pressure {
                for (w, v) in [
                    ("10s", p.full_avg10),
                    ("60s", p.full_avg60),
                    ("300s", p.full_avg300),
                ] {
                    e.opt(&[("resource", &p.resource), ("window", w)], v);
                }
            }
        },
    );
}
