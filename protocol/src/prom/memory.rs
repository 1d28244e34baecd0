//! `/proc/meminfo` families (node_memory_*_bytes) and the kernel's OOM-kill counter
//! (node_vmstat_oom_kill).

use super::{Kind::*, Renderer};
use crate::snapshot::Memory;

type MemField = fn(&Memory) -> Option<u64>;

const FAMILIES: [(&str, &str, MemField); 22] = [
    ("armada_memory_total_bytes", "Total usable memory.", |m| {
        Some(m.total_bytes)
    }),
    ("armada_memory_free_bytes", "Unused memory.", |m| {
        Some(m.free_bytes)
    }),
    (
        "armada_memory_available_bytes",
        "Memory available for new work without swapping (MemAvailable).",
        |m| m.available_bytes,
    ),
    (
        "armada_memory_buffers_bytes",
        "Memory in block device buffers.",
        |m| Some(m.buffers_bytes),
    ),
    (
        "armada_memory_cached_bytes",
        "Memory in the page cache.",
        |m| Some(m.cached_bytes),
    ),
    ("armada_swap_total_bytes", "Total swap space.", |m| {
        Some(m.swap_total_bytes)
    }),
    ("armada_swap_free_bytes", "Unused swap space.", |m| {
        Some(m.swap_free_bytes)
    }),
    (
        "armada_swap_cached_bytes",
        "Swapped-out memory also still in RAM (SwapCached).",
        |m| m.swap_cached_bytes,
    ),
    (
        "armada_memory_active_bytes",
        "Memory used recently, not reclaimed unless needed (Active).",
        |m| m.active_bytes,
    ),
    (
        "armada_memory_inactive_bytes",
        "Memory not used recently, first to be reclaimed (Inactive).",
        |m| m.inactive_bytes,
    ),
    (
        "armada_memory_dirty_bytes",
        "Memory waiting to be written back to disk (Dirty).",
        |m| m.dirty_bytes,
    ),
    (
        "armada_memory_writeback_bytes",
        "Memory being written back to disk now (Writeback).",
        |m| m.writeback_bytes,
    ),
    (
        "armada_memory_anon_bytes",
        "Anonymous memory mapped into user page tables (AnonPages).",
        |m| m.anon_bytes,
    ),
    (
        "armada_memory_mapped_bytes",
        "Files mapped into memory, such as libraries (Mapped).",
        |m| m.mapped_bytes,
    ),
    (
        "armada_memory_shmem_bytes",
        "Shared memory and tmpfs contents (Shmem): RAM that cannot be dropped.",
        |m| m.shmem_bytes,
    ),
    (
        "armada_memory_slab_bytes",
        "Kernel slab caches (Slab).",
        |m| m.slab_bytes,
    ),
    (
        "armada_memory_slab_reclaimable_bytes",
        "Slab caches the kernel can reclaim (SReclaimable).",
        |m| m.slab_reclaimable_bytes,
    ),
    (
        "armada_memory_slab_unreclaimable_bytes",
        "Slab caches the kernel cannot reclaim (SUnreclaim).",
        |m| m.slab_unreclaimable_bytes,
    ),
    (
        "armada_memory_kernel_stack_bytes",
        "Kernel stacks of all tasks (KernelStack).",
        |m| m.kernel_stack_bytes,
    ),
    (
        "armada_memory_page_tables_bytes",
        "Memory used by page tables (PageTables).",
        |m| m.page_tables_bytes,
    ),
    (
        "armada_memory_commit_limit_bytes",
        "Memory that can be committed under strict overcommit (CommitLimit).",
        |m| m.commit_limit_bytes,
    ),
    (
        "armada_memory_committed_bytes",
        "Memory committed to processes, used or not (Committed_AS).",
        |m| m.committed_bytes,
    ),
];

pub(super) fn render(r: &mut Renderer<'_, '_>) {
    for (name, help, f) in FAMILIES {
        r.family(name, Gauge, help, |s, e| {
            e.opt(&[], s.host.memory.as_ref().and_then(f).map(|v| v as f64))
        });
    }
}

pub(super) fn render_oom(r: &mut Renderer<'_, '_>) {
    r.family(
        "armada_oom_kills_total",
        Counter,
        "Processes killed by the kernel's OOM killer since boot.",
        |s, e| e.opt(&[], s.host.oom_kills_total.map(|v| v as f64)),
    );
}
