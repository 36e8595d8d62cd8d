//! The `fs_reclaim` pseudo-lock, as lockdep models it (`fs_reclaim_acquire()` in
//! mm/page_alloc.c):
//! - an allocation that may enter direct reclaim (`__GFP_DIRECT_RECLAIM`, not from reclaim
//!   itself: no `PF_MEMALLOC`) and recurse into the filesystem (`__GFP_FS` left after the
//!   task's `memalloc_nofs`/`noio` scope) acquires and releases it at once: `held →
//!   fs_reclaim` as for a blocking acquire, from the innermost held lock (and the trylocks
//!   held inside it); reclaim's invalidations are reached through it
//!   (`fs_reclaim → mmu_notifier_invalidate_range_start`, primed where notifiers register);
//! - one that may reclaim but not enter the filesystem (`GFP_NOFS`, `GFP_NOIO`, or inside a
//!   `memalloc_nofs`/`noio` scope) still takes the mmu-notifier invalidate map, as lockdep
//!   does for every allocation that may reclaim: `held →
//!   mmu_notifier_invalidate_range_start` directly.
//!   Seen at the stable `kmem:*` tracepoints: as BTF raw tracepoints (`tp_btf`) where the
//!   kernel allows, which run the program straight from the tracepoint call — a classic
//!   tracepoint first builds its trace record, on every allocation, traced or not; else as
//!   classic tracepoints. `gfp_flags` is found at load time: its argument index in the
//!   `btf_trace_*` prototype (globals `GFP_ARG_*`), its record offset in the tracefs
//!   `format` file (globals `GFP_OFFSET_*`).
//! - `mempool_alloc` checks its caller's gfp (`might_alloc`) but allocates with a weaker one
//!   first (no direct reclaim, no I/O), which the tracepoints then see: the caller's gfp is
//!   read at its entry (`mempool_alloc_noprof` from 6.10 on) and counts as an allocation;
//! - direct reclaim (`vmscan:mm_vmscan_direct_reclaim_begin/end`) holds it, so locks taken
//!   by shrinkers depend on it.
//! - on a lockdep kernel, `fs_reclaim_acquire/release(gfp)` are probed too (optional).
use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_probe_read_kernel},
    macros::{btf_tracepoint, fentry, kprobe, tracepoint},
    programs::{
        tracing::StackIdContext, BtfTracePointContext, FEntryContext, ProbeContext,
        TracePointContext,
    },
    EbpfContext,
};
use tracer_common::pseudo::{FS_RECLAIM, MMU_NOTIFIER_INVALIDATE_RANGE_START};

use crate::{
    klock,
    lock_state::{self, current_task},
    maps::{
        global, GFP_ARG_KMALLOC, GFP_ARG_KMALLOC_NODE, GFP_ARG_KMEM_CACHE_ALLOC,
        GFP_ARG_KMEM_CACHE_ALLOC_NODE, GFP_ARG_MM_PAGE_ALLOC, GFP_DIRECT_RECLAIM, GFP_FS,
        GFP_OFFSET_DIRECT_RECLAIM_BEGIN, GFP_OFFSET_KMALLOC, GFP_OFFSET_KMALLOC_NODE,
        GFP_OFFSET_KMEM_CACHE_ALLOC, GFP_OFFSET_KMEM_CACHE_ALLOC_NODE, GFP_OFFSET_MM_PAGE_ALLOC,
        PF_MEMALLOC, PF_MEMALLOC_NOFS_NOIO, TASK_FLAGS_OFFSET,
    },
};

/// `current->flags`, when userspace found its offset in BTF.
#[inline(always)]
fn current_flags() -> Option<u32> {
    let offset = global(&TASK_FLAGS_OFFSET);
    if offset == u32::MAX {
        return None;
    }
    // SAFETY: reading a kernel address through the helper, which handles faults.
    unsafe {
        let task = bpf_get_current_task();
        bpf_probe_read_kernel((task + u64::from(offset)) as *const u32).ok()
    }
}

/// lockdep's `__need_reclaim() && (current_gfp_context(gfp) & __GFP_FS)`. `pf_memalloc`:
/// whether `PF_MEMALLOC` suppresses it (not inside reclaim itself, which sets it).
#[inline(always)]
fn takes_fs_reclaim(gfp: u32, pf_memalloc: bool) -> bool {
    may_reclaim_fs(gfp) && reclaim_allowed(pf_memalloc)
}

/// The gfp half: `__GFP_DIRECT_RECLAIM` and `__GFP_FS`.
#[inline(always)]
fn may_reclaim_fs(gfp: u32) -> bool {
    gfp & global(&GFP_DIRECT_RECLAIM) != 0 && gfp & global(&GFP_FS) != 0
}

/// The task half: no `memalloc_nofs`/`noio` scope (nor `PF_MEMALLOC`, if it counts).
#[inline(always)]
fn reclaim_allowed(pf_memalloc: bool) -> bool {
    let mut mask = global(&PF_MEMALLOC_NOFS_NOIO);
    if pf_memalloc {
        mask |= global(&PF_MEMALLOC);
    }
    current_flags().is_none_or(|flags| flags & mask == 0)
}

/// An allocation with flags `gfp`: `held → fs_reclaim`, or `held →
/// mmu_notifier_invalidate_range_start` when reclaim may not enter the filesystem, from the
/// locks held, if it may reclaim. Cheapest tests first: this runs on every allocation in the
/// system.
#[inline(always)]
fn allocation<C: StackIdContext + EbpfContext>(ctx: &C, gfp: u32) {
    if gfp & global(&GFP_DIRECT_RECLAIM) == 0 {
        return;
    }
    let Some(task) = current_task() else {
        return;
    };
    if !lock_state::holds_locks(&task) {
        return;
    }
    let flags = current_flags().unwrap_or(0);
    if flags & global(&PF_MEMALLOC) != 0 {
        return;
    }
    let pseudo_lock = if gfp & global(&GFP_FS) != 0 && flags & global(&PF_MEMALLOC_NOFS_NOIO) == 0 {
        FS_RECLAIM
    } else {
        MMU_NOTIFIER_INVALIDATE_RANGE_START
    };
    lock_state::acquire_release(ctx, &task, &klock::pseudo(ctx, pseudo_lock));
}

/// A classic tracepoint's `gfp_flags`, at `offset` in its record (0: unknown).
#[inline(always)]
fn tracepoint_allocation(ctx: &TracePointContext, offset: u32) {
    if offset == 0 {
        return;
    }
    // SAFETY: the offset is within the event record (read from its format file).
    if let Ok(gfp) = unsafe { ctx.read_at::<u32>(offset as usize) } {
        allocation(ctx, gfp);
    }
}

/// A BTF raw tracepoint's `gfp_flags`, argument `index` (`u32::MAX`: unknown). Read
/// through the helper: the index is a load-time value, and the verifier takes context reads
/// at immediate offsets only.
#[inline(always)]
fn btf_allocation(ctx: &BtfTracePointContext, index: u32) {
    if index >= 12 {
        return;
    }
    let gfp = klock::arg(ctx, index as usize);
    allocation(ctx, gfp as u32);
}

#[tracepoint]
pub fn tp_kmalloc(ctx: TracePointContext) -> u32 {
    tracepoint_allocation(&ctx, global(&GFP_OFFSET_KMALLOC));
    0
}

#[btf_tracepoint(function = "kmalloc")]
pub fn btf_kmalloc(ctx: BtfTracePointContext) -> i32 {
    btf_allocation(&ctx, global(&GFP_ARG_KMALLOC));
    0
}

#[tracepoint]
pub fn tp_kmalloc_node(ctx: TracePointContext) -> u32 {
    tracepoint_allocation(&ctx, global(&GFP_OFFSET_KMALLOC_NODE));
    0
}

#[btf_tracepoint(function = "kmalloc_node")]
pub fn btf_kmalloc_node(ctx: BtfTracePointContext) -> i32 {
    btf_allocation(&ctx, global(&GFP_ARG_KMALLOC_NODE));
    0
}

#[tracepoint]
pub fn tp_kmem_cache_alloc(ctx: TracePointContext) -> u32 {
    tracepoint_allocation(&ctx, global(&GFP_OFFSET_KMEM_CACHE_ALLOC));
    0
}

#[btf_tracepoint(function = "kmem_cache_alloc")]
pub fn btf_kmem_cache_alloc(ctx: BtfTracePointContext) -> i32 {
    btf_allocation(&ctx, global(&GFP_ARG_KMEM_CACHE_ALLOC));
    0
}

#[tracepoint]
pub fn tp_kmem_cache_alloc_node(ctx: TracePointContext) -> u32 {
    tracepoint_allocation(&ctx, global(&GFP_OFFSET_KMEM_CACHE_ALLOC_NODE));
    0
}

#[btf_tracepoint(function = "kmem_cache_alloc_node")]
pub fn btf_kmem_cache_alloc_node(ctx: BtfTracePointContext) -> i32 {
    btf_allocation(&ctx, global(&GFP_ARG_KMEM_CACHE_ALLOC_NODE));
    0
}

#[tracepoint]
pub fn tp_mm_page_alloc(ctx: TracePointContext) -> u32 {
    tracepoint_allocation(&ctx, global(&GFP_OFFSET_MM_PAGE_ALLOC));
    0
}

#[btf_tracepoint(function = "mm_page_alloc")]
pub fn btf_mm_page_alloc(ctx: BtfTracePointContext) -> i32 {
    btf_allocation(&ctx, global(&GFP_ARG_MM_PAGE_ALLOC));
    0
}

fn hold_fs_reclaim<C: StackIdContext + EbpfContext>(ctx: &C, gfp: u32) {
    // Direct reclaim runs with PF_MEMALLOC already set: only NOFS/NOIO scopes count.
    if !takes_fs_reclaim(gfp, false) {
        return;
    }
    if let Some(task) = current_task() {
        lock_state::acquire_held(ctx, &task, &klock::pseudo(ctx, FS_RECLAIM));
    }
}

fn drop_fs_reclaim() {
    if let Some(task) = current_task() {
        lock_state::release_if_held(&task, FS_RECLAIM);
    }
}

#[tracepoint]
pub fn tp_direct_reclaim_begin(ctx: TracePointContext) -> u32 {
    let offset = global(&GFP_OFFSET_DIRECT_RECLAIM_BEGIN);
    if offset != 0 {
        // SAFETY: as in `tracepoint_allocation`.
        if let Ok(gfp) = unsafe { ctx.read_at::<u32>(offset as usize) } {
            hold_fs_reclaim(&ctx, gfp);
        }
    }
    0
}

#[tracepoint]
pub fn tp_direct_reclaim_end(_ctx: TracePointContext) -> u32 {
    drop_fs_reclaim();
    0
}

/// Lockdep kernels only: `fs_reclaim_acquire(gfp_t)` / `fs_reclaim_release(gfp_t)`.
#[fentry]
pub fn fentry_fs_reclaim_acquire(ctx: FEntryContext) -> u32 {
    let gfp = klock::arg(&ctx, 0);
    hold_fs_reclaim(&ctx, gfp as u32);
    0
}

#[fentry]
pub fn fentry_fs_reclaim_release(_ctx: FEntryContext) -> u32 {
    drop_fs_reclaim();
    0
}

#[kprobe]
pub fn kprobe_fs_reclaim_acquire(ctx: ProbeContext) -> u32 {
    if let Some(gfp) = ctx.arg::<u64>(0) {
        hold_fs_reclaim(&ctx, gfp as u32);
    }
    0
}

#[kprobe]
pub fn kprobe_fs_reclaim_release(_ctx: ProbeContext) -> u32 {
    drop_fs_reclaim();
    0
}

/// `mempool_alloc(pool, gfp)`: the caller's `gfp`, the second argument.
#[fentry]
pub fn fentry_mempool_alloc(ctx: FEntryContext) -> u32 {
    allocation(&ctx, klock::arg(&ctx, 1) as u32);
    0
}

#[fentry]
pub fn fentry_mempool_alloc_noprof(ctx: FEntryContext) -> u32 {
    allocation(&ctx, klock::arg(&ctx, 1) as u32);
    0
}

#[kprobe]
pub fn kprobe_mempool_alloc(ctx: ProbeContext) -> u32 {
    if let Some(gfp) = ctx.arg::<u64>(1) {
        allocation(&ctx, gfp as u32);
    }
    0
}
