//! Mounted disk filesystems: size, free space, inodes, read-only state
//! (node_filesystem_*).

use super::{b, Kind::*, Renderer};
use crate::snapshot::Filesystem;

type FsField = fn(&Filesystem) -> Option<f64>;

const GAUGES: [(&str, &str, FsField); 6] = [
    ("armada_filesystem_size_bytes", "Filesystem size.", |f| {
        Some(f.size_bytes as f64)
    }),
    (
        "armada_filesystem_free_bytes",
        "Free space, including space reserved for root.",
        |f| Some(f.free_bytes as f64),
    ),
    (
        "armada_filesystem_avail_bytes",
        "Free space available to unprivileged users.",
        |f| Some(f.avail_bytes as f64),
    ),
    (
        "armada_filesystem_files",
        "Inodes in the filesystem.",
        |f| Some(f.files as f64),
    ),
    ("armada_filesystem_files_free", "Free inodes.", |f| {
        Some(f.files_free as f64)
    }),
    (
        "armada_filesystem_readonly",
        "Mounted read-only (1) or read-write (0); ext4 turns read-only on errors.",
        |f| f.readonly.map(b),
    ),
];

pub(super) fn render(r: &mut Renderer<'_, '_>) {
    for (name, help, f) in GAUGES {
        r.family(name, Gauge, help, |s, e| {
            for x in &s.host.filesystems {
                e.opt(
                    &[
                        ("device", &x.device),
                        ("mountpoint", &x.mountpoint),
                        ("fstype", &x.fstype),
                    ],
                    f(x),
                );
            }
        });
    }
}
