//! The overhead budget's shedding on the acquire path ([`tracer_common::shed`]): a family
//! switched off records no acquire (its releases still pop what was recorded before), and
//! dependency checks at quiet call sites are sampled. Both are one array read when off.
use aya_ebpf::helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns};
use tracer_common::{counter, shed};

use crate::maps::{count, shed_slot, SITE_LAST_NEW};

/// Whether the budget switched off the family of lock kind `kind`.
#[inline(always)]
pub fn family_off(kind: u32) -> bool {
    shed_slot(shed::FAMILIES_OFF) & shed::family_bit(kind) != 0
}

/// Whether this acquire's dependency check is skipped: only while sampling, only at a call
/// site known quiet (no new dependency for [`shed::QUIET_NS`]), and then all but one in
/// `2^shift` at random. A site first met while sampling is checked and remembered.
// A frame of its own, off the acquire's deep call chain (the dependency scan): kprobe
// programs are near the 512-byte combined stack limit.
#[inline(never)]
pub fn check_skipped(caller: u64) -> bool {
    let shift = shed_slot(shed::SAMPLE_SHIFT);
    if shift == 0 || caller == 0 {
        return false;
    }
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: a `u64` map value, read once.
    let last = unsafe { SITE_LAST_NEW.get(caller) }.copied();
    match last {
        None => {
            let _ = SITE_LAST_NEW.insert(caller, now, 0);
            false
        }
        Some(last) if now.wrapping_sub(last) < shed::QUIET_NS => false,
        Some(_) => {
            let mask = (1u32 << (shift & 15)) - 1;
            // SAFETY: helper without arguments.
            if unsafe { bpf_get_prandom_u32() } & mask == 0 {
                return false;
            }
            count(counter::BUDGET_CHECKS_SKIPPED);
            true
        }
    }
}

/// A new dependency from call site `caller`: the site is not quiet (while sampling).
// Called after the scan returns, for the same reason as `check_skipped`.
#[inline(never)]
pub fn site_made_new(caller: u64) {
    if caller != 0 && shed_slot(shed::SAMPLE_SHIFT) != 0 {
        // SAFETY: helper without arguments.
        let now = unsafe { bpf_ktime_get_ns() };
        let _ = SITE_LAST_NEW.insert(caller, now, 0);
    }
}
