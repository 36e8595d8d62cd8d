//! The `mmu_notifier_invalidate_range_start` pseudo-lock, as lockdep models it
//! (mm/mmu_notifier.c, include/linux/mmu_notifier.h):
//! - held while `__mmu_notifier_invalidate_range_start` and
//!   `__mmu_notifier_invalidate_range_end` run (the notifiers' callbacks), so locks taken in
//!   a callback depend on it;
//! - taken and released at once by `mmu_interval_read_begin` (which may wait for an
//!   invalidation to finish), so locks held there come before it;
//! - at `__mmu_notifier_register`, lockdep primes
//!   `fs_reclaim → mmu_notifier_invalidate_range_start` (and `mmap_lock`, held there,
//!   `→ fs_reclaim`): a notifier callback must not wait for anything that allocates with
//!   `__GFP_FS`.
//!
//! Gap: lockdep takes the pseudo-lock in the inline `mmu_notifier_invalidate_range_start()`
//! even when the mm has no notifiers; we only see calls that reach the out-of-line function
//! (mms with notifiers), so `held → mmu_notifier_invalidate_range_start` edges from mms
//! without notifiers are not recorded.
use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{
        tracing::StackIdContext, FEntryContext, FExitContext, ProbeContext, RetProbeContext,
    },
    EbpfContext,
};
use tracer_common::pseudo::{FS_RECLAIM, MMU_NOTIFIER_INVALIDATE_RANGE_START as MMU_INVALIDATE};

use crate::{
    klock,
    lock_state::{self, current_task},
};

fn range_start<C: StackIdContext + EbpfContext>(ctx: &C) {
    if let Some(task) = current_task() {
        lock_state::acquire_held(ctx, &task, &klock::pseudo(ctx, MMU_INVALIDATE));
    }
}

fn range_end() {
    if let Some(task) = current_task() {
        lock_state::release_if_held(&task, MMU_INVALIDATE);
    }
}

fn register<C: StackIdContext + EbpfContext>(ctx: &C) {
    let Some(task) = current_task() else {
        return;
    };
    // lockdep's acquire(fs_reclaim), acquire+release(mmu), release(fs), without pushing and
    // popping (which would cost the verifier two stack walks more): `held → fs_reclaim` and
    // `fs_reclaim → mmu` as lockdep records them, plus `held → mmu` directly (lockdep has it
    // only through `fs_reclaim`, the innermost lock at its acquire of `mmu`).
    let fs_reclaim = klock::pseudo(ctx, FS_RECLAIM);
    let range_start = klock::pseudo(ctx, MMU_INVALIDATE);
    lock_state::acquire_release(ctx, &task, &fs_reclaim);
    lock_state::acquire_release(ctx, &task, &range_start);
    lock_state::record_pair(ctx, &task, &fs_reclaim, &range_start);
}

#[fentry]
pub fn fentry_mmu_invalidate_range_start(ctx: FEntryContext) -> u32 {
    range_start(&ctx);
    0
}

#[fexit]
pub fn fexit_mmu_invalidate_range_start(_ctx: FExitContext) -> u32 {
    range_end();
    0
}

#[fentry]
pub fn fentry_mmu_notifier_register(ctx: FEntryContext) -> u32 {
    register(&ctx);
    0
}

#[kprobe]
pub fn kprobe_mmu_invalidate_range_start(ctx: ProbeContext) -> u32 {
    range_start(&ctx);
    0
}

#[kretprobe]
pub fn kretprobe_mmu_invalidate_range_start(_ctx: RetProbeContext) -> u32 {
    range_end();
    0
}

#[kprobe]
pub fn kprobe_mmu_notifier_register(ctx: ProbeContext) -> u32 {
    register(&ctx);
    0
}

#[fentry]
pub fn fentry_mmu_invalidate_range_end(ctx: FEntryContext) -> u32 {
    range_start(&ctx);
    0
}

#[fexit]
pub fn fexit_mmu_invalidate_range_end(_ctx: FExitContext) -> u32 {
    range_end();
    0
}

#[kprobe]
pub fn kprobe_mmu_invalidate_range_end(ctx: ProbeContext) -> u32 {
    range_start(&ctx);
    0
}

#[kretprobe]
pub fn kretprobe_mmu_invalidate_range_end(_ctx: RetProbeContext) -> u32 {
    range_end();
    0
}

/// `held → mmu_notifier_invalidate_range_start`, nothing held after.
fn interval_read_begin<C: StackIdContext + EbpfContext>(ctx: &C) {
    if let Some(task) = current_task() {
        lock_state::acquire_release(ctx, &task, &klock::pseudo(ctx, MMU_INVALIDATE));
    }
}

#[fentry]
pub fn fentry_mmu_interval_read_begin(ctx: FEntryContext) -> u32 {
    interval_read_begin(&ctx);
    0
}

#[kprobe]
pub fn kprobe_mmu_interval_read_begin(ctx: ProbeContext) -> u32 {
    interval_read_begin(&ctx);
    0
}
