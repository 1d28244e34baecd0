//! Block device IO from `/proc/diskstats` (node_disk_*).

use super::{Kind::*, Renderer};
use crate::snapshot::DiskIo;

type DiskField = fn(&DiskIo) -> Option<f64>;

const COUNTERS: [(&str, &str, DiskField); 8] = [
    (
        "armada_disk_reads_completed_total",
        "Reads completed by the block device.",
        |d| Some(d.reads as f64),
    ),
    (
        "armada_disk_read_bytes_total",
        "Bytes read from the block device.",
        |d| Some(d.read_bytes as f64),
    ),
    (
        "armada_disk_writes_completed_total",
        "Writes completed by the block device.",
        |d| Some(d.writes as f64),
    ),
    (
        "armada_disk_written_bytes_total",
        "Bytes written to the block device (an SD card's wear indicator).",
        |d| Some(d.written_bytes as f64),
    ),
    (
        "armada_disk_io_time_seconds_total",
        "Time the block device was busy with IO.",
        |d| Some(d.io_time_seconds),
    ),
    (
        "armada_disk_read_time_seconds_total",
        "Time spent by all completed reads; over reads completed it is the mean read latency.",
        |d| d.read_time_seconds,
    ),
    (
        "armada_disk_write_time_seconds_total",
        "Time spent by all completed writes; over writes completed it is the mean write latency.",
        |d| d.write_time_seconds,
    ),
    (
        "armada_disk_io_time_weighted_seconds_total",
        "IO time weighted by the requests in flight (queue depth times time).",
        |d| d.io_time_weighted_seconds,
    ),
];

pub(super) fn render(r: &mut Renderer<'_, '_>) {
    for (name, help, f) in COUNTERS {
        r.family(name, Counter, help, |s, e| {
            for d in &s.host.disks {
                e.opt(&[("device", &d.device)], f(d));
            }
        });
    }
    r.family(
        "armada_disk_io_now",
        Gauge,
        "Requests in flight on the block device now.",
        |s, e| {
            for d in &s.host.disks {
                e.opt(&[("device", &d.device)], d.io_in_progress.map(|v| v as f64));
            }
        },
    );
}
