//! Per-container families, named after cAdvisor's `container_*` where one exists.

use super::network::net_fields;
use super::{write_labels, Kind, Renderer};
use crate::snapshot::ContainerMetrics;

/// The identifying labels of a container, written out once for all its samples: the
/// id, name and image were escaped char by char for each of ~25 samples, over half
/// of a 20-container collection's instructions.
fn container_labels(c: &ContainerMetrics) -> String {
    let mut labels: Vec<(&str, &str)> = Vec::with_capacity(5);
    labels.push(("container_id", &c.id));
    labels.push(("container", &c.name));
    labels.push(("image", &c.image));
    if let Some(s) = &c.service {
        labels.push(("service", s));
    }
    if let Some(t) = &c.task {
        labels.push(("task", t));
    }
    let mut out = String::with_capacity(c.id.len() + c.name.len() + c.image.len() + 64);
    write_labels(&mut out, &labels);
    out
}

pub(super) fn render(r: &mut Renderer<'_, '_>) {
    use Kind::*;
    // By snapshot, then by container, as the families walk them.
    let written: Vec<Vec<String>> = r
        .snapshots
        .iter()
        .map(|ls| {
            ls.snapshot
                .containers
                .iter()
                .map(container_labels)
                .collect()
        })
        .collect();
    type Field = fn(&ContainerMetrics) -> Option<f64>;
    let families: [(&'static str, Kind, &str, Field); 19] = [
        (
            "armada_container_cpu_usage_seconds_total",
            Counter,
            "CPU time used by the container.",
            |c| c.cpu.as_ref().map(|x| x.usage_seconds),
        ),
        (
            "armada_container_cpu_user_seconds_total",
            Counter,
            "CPU time in user mode.",
            |c| c.cpu.as_ref().map(|x| x.user_seconds),
        ),
        (
            "armada_container_cpu_system_seconds_total",
            Counter,
            "CPU time in kernel mode.",
            |c| c.cpu.as_ref().map(|x| x.system_seconds),
        ),
        (
            "armada_container_cpu_periods_total",
            Counter,
            "CFS enforcement periods elapsed.",
            |c| c.cpu.as_ref().and_then(|x| x.periods).map(|v| v as f64),
        ),
        (
            "armada_container_cpu_throttled_periods_total",
            Counter,
            "CFS periods in which the container was throttled.",
            |c| {
                c.cpu
                    .as_ref()
                    .and_then(|x| x.throttled_periods)
                    .map(|v| v as f64)
            },
        ),
        (
            "armada_container_cpu_throttled_seconds_total",
            Counter,
            "Time the container was throttled.",
            |c| c.cpu.as_ref().and_then(|x| x.throttled_seconds),
        ),
        (
            "armada_container_cpu_limit_cpus",
            Gauge,
            "CPUs the container may use (quota over period), when limited.",
            |c| c.cpu.as_ref().and_then(|x| x.limit_cpus),
        ),
        (
            "armada_container_memory_usage_bytes",
            Gauge,
            "Memory charged to the container, page cache included.",
            |c| c.memory.as_ref().map(|m| m.usage_bytes as f64),
        ),
        (
            "armada_container_memory_working_set_bytes",
            Gauge,
            "Memory usage minus inactive file pages.",
            |c| c.memory.as_ref().map(|m| m.working_set_bytes as f64),
        ),
        (
            "armada_container_memory_rss_bytes",
            Gauge,
            "Anonymous memory (rss on cgroup v1, anon on v2).",
            |c| {
                c.memory
                    .as_ref()
                    .and_then(|m| m.rss_bytes)
                    .map(|v| v as f64)
            },
        ),
        (
            "armada_container_memory_cache_bytes",
            Gauge,
            "Page cache (cache on cgroup v1, file on v2).",
            |c| {
                c.memory
                    .as_ref()
                    .and_then(|m| m.cache_bytes)
                    .map(|v| v as f64)
            },
        ),
        (
            "armada_container_memory_swap_bytes",
            Gauge,
            "Swap used by the container.",
            |c| {
                c.memory
                    .as_ref()
                    .and_then(|m| m.swap_bytes)
                    .map(|v| v as f64)
            },
        ),
        (
            "armada_container_memory_limit_bytes",
            Gauge,
            "Memory limit, when set.",
            |c| {
                c.memory
                    .as_ref()
                    .and_then(|m| m.limit_bytes)
                    .map(|v| v as f64)
            },
        ),
        (
            "armada_container_oom_kills_total",
            Counter,
            "Processes of the container killed by the OOM killer.",
            |c| {
                c.memory
                    .as_ref()
                    .and_then(|m| m.oom_kills)
                    .map(|v| v as f64)
            },
        ),
        (
            "armada_container_io_read_bytes_total",
            Counter,
            "Bytes read from block devices.",
            |c| c.io.as_ref().map(|x| x.read_bytes as f64),
        ),
        (
            "armada_container_io_written_bytes_total",
            Counter,
            "Bytes written to block devices.",
            |c| c.io.as_ref().map(|x| x.written_bytes as f64),
        ),
        (
            "armada_container_io_reads_total",
            Counter,
            "Read operations on block devices.",
            |c| c.io.as_ref().map(|x| x.reads as f64),
        ),
        (
            "armada_container_io_writes_total",
            Counter,
            "Write operations on block devices.",
            |c| c.io.as_ref().map(|x| x.writes as f64),
        ),
        (
            "armada_container_pids",
            Gauge,
            "Processes and threads in the container.",
            |c| c.pids.as_ref().map(|p| p.current as f64),
        ),
    ];
    for (name, kind, help, f) in families {
        r.family_indexed(name, kind, help, |i, s, e| {
            for (c, w) in s.containers.iter().zip(&written[i]) {
                e.opt_after(w, &[], f(c));
            }
        });
    }
    r.family_indexed(
        "armada_container_pids_max",
        Gauge,
        "Limit on the container's processes and threads, when set.",
        |i, s, e| {
            for (c, w) in s.containers.iter().zip(&written[i]) {
                let max = c.pids.as_ref().and_then(|p| p.max).map(|v| v as f64);
                e.opt_after(w, &[], max);
            }
        },
    );
    for (name, help, f) in net_fields("armada_container_network") {
        r.family_indexed(name, Counter, help, |i, s, e| {
            for (c, w) in s.containers.iter().zip(&written[i]) {
                for n in &c.network {
                    e.sample_after(w, &[("interface", &n.interface)], f(n) as f64);
                }
            }
        });
    }
    r.family_indexed(
        "armada_container_pressure_some_seconds_total",
        Counter,
        "Time some of the container's tasks stalled on the resource (cgroup v2 PSI).",
        |i, s, e| {
            for (c, w) in s.containers.iter().zip(&written[i]) {
                for p in &c.pressure {
                    e.sample_after(w, &[("resource", &p.resource)], p.some_total_seconds);
                }
            }
        },
    );
    r.family_indexed(
        "armada_container_pressure_full_seconds_total",
        Counter,
        "Time all of the container's non-idle tasks stalled on the resource (cgroup v2 PSI).",
        |i, s, e| {
            for (c, w) in s.containers.iter().zip(&written[i]) {
                for p in &c.pressure {
                    e.opt_after(w, &[("resource", &p.resource)], p.full_total_seconds);
                }
            }
        },
    );
}
