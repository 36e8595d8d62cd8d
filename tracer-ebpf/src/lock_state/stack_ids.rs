//! Kernel and user stack ids in `STACKS`, and the per-site cache that lets a kernel lock
//! taken again from a known acquisition site walk no stack.
use aya_ebpf::{bindings::BPF_F_REUSE_STACKID, programs::tracing::StackIdContext};

use crate::maps::{SITE_STACKS, STACKS, STACK_OWNER};

/// The id of the current stack in `STACKS`, or -1. A hash bucket taken by another stack
/// (-EEXIST) is taken over: the daemon symbolizes a dependency's stacks as soon as it
/// arrives, so an older id losing its stack costs less than this one having none.
#[inline(always)]
pub(super) fn stack_id<C: StackIdContext>(ctx: &C, stack_flags: u64) -> i32 {
    match ctx.get_stackid(&STACKS, stack_flags) {
        Ok(id) => id as i32,
        Err(_) => match ctx.get_stackid(&STACKS, stack_flags | u64::from(BPF_F_REUSE_STACKID)) {
            Ok(id) => {
                // The bucket now holds another stack: no site may take it for its own.
                if let Some(owner) = STACK_OWNER.get_ptr_mut(id as u32) {
                    // SAFETY: array slot.
                    unsafe { *owner = 0 };
                }
                id as i32
            }
            Err(_) => -1,
        },
    }
}

/// The kernel stack id of the acquisition site `caller` (the lock function's return
/// address; 0: unknown, walk): the whole stack is walked the first time a site is seen,
/// later acquisitions there reuse it (see [`SITE_STACKS`]). The stack of a held lock is then
/// the first one seen at its call site; a new dependency still gets its own
/// ([`acquire`](super::acquire)).
#[inline(always)]
pub(super) fn site_stack_id<C: StackIdContext>(ctx: &C, caller: u64) -> i32 {
    if caller == 0 {
        return stack_id(ctx, 0);
    }
    // SAFETY: plain map value.
    if let Some(&id) = unsafe { SITE_STACKS.get(caller) } {
        if STACK_OWNER
            .get(id as u32)
            .is_some_and(|&owner| owner == caller)
        {
            return id;
        }
    }
    let id = stack_id(ctx, 0);
    if id >= 0 {
        if let Some(owner) = STACK_OWNER.get_ptr_mut(id as u32) {
            // SAFETY: array slot; a racing writer leaves one of two sites, either of which
            // only costs a walk.
            unsafe { *owner = caller };
            let _ = SITE_STACKS.insert(caller, id, 0);
        }
    }
    id
}
