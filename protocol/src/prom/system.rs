//! Load averages, uptime, boot time, process and thread counts and the kernel's
//! scheduler counters (node_load*, node_boot_time_seconds, node_procs_*, node_forks_total,
//! node_context_switches_total).

use super::{Kind::*, Renderer, Samples};
use crate::snapshot::{LoadAverage, Snapshot};

pub(super) fn render_load(r: &mut Renderer<'_, '_>) {
    let load = |f: fn(&LoadAverage) -> f64| {
        move |s: &Snapshot, e: &mut Samples<'_>| e.opt(&[], s.host.load.as_ref().map(f))
    };
    r.family(
        "armada_load1",
        Gauge,
        "1-minute load average.",
        load(|l| l.one),
    );
    r.family(
        "armada_load5",
        Gauge,
        "5-minute load average.",
        load(|l| l.five),
    );
    r.family(
        "armada_load15",
        Gauge,
        "15-minute load average.",
        load(|l| l.fifteen),
    );
}

pub(super) fn render(h: &mut Renderer<'_, '_>) {
    h.family(
        "armada_uptime_seconds",
        Gauge,
        "Time since boot.",
        |s, e| e.opt(&[], s.host.uptime_seconds),
    );
    h.family(
        "armada_boot_time_seconds",
        Gauge,
        "Boot time, seconds since the Unix epoch.",
        |s, e| e.opt(&[], s.host.boot_time_seconds.map(|v| v as f64)),
    );
    h.family(
        "armada_processes",
        Gauge,
        "Processes on the host.",
        |s, e| e.opt(&[], s.host.processes.map(|v| v as f64)),
    );
    h.family(
        "armada_threads",
        Gauge,
        "Threads (kernel scheduling entities) on the host.",
        |s, e| e.opt(&[], s.host.threads.map(|v| v as f64)),
    );
    h.family(
        "armada_procs_running",
        Gauge,
        "Tasks runnable now.",
        |s, e| e.opt(&[], s.host.procs_running.map(|v| v as f64)),
    );
    h.family(
        "armada_procs_blocked",
        Gauge,
        "Tasks blocked on IO now.",
        |s, e| e.opt(&[], s.host.procs_blocked.map(|v| v as f64)),
    );
    h.family(
        "armada_context_switches_total",
        Counter,
        "Context switches since boot.",
        |s, e| e.opt(&[], s.host.context_switches_total.map(|v| v as f64)),
    );
    h.family(
        "armada_forks_total",
        Counter,
        "Processes and threads created since boot.",
        |s, e| e.opt(&[], s.host.forks_total.map(|v| v as f64)),
    );
}
