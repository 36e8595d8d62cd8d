//! Maps and load-time globals shared by every probe family.
use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf, StackTrace},
};
use tracer_common::{counter, DependencyKey, HeldStack};

/// Records for the daemon. Userspace may resize it before load (`--ringbuf-size`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Every dependency seen, with its occurrence count: the authoritative set, which the
/// daemon re-reads when ring-buffer records were dropped.
#[map]
pub static DEPENDENCIES: HashMap<DependencyKey, u64> = HashMap::with_max_entries(65536, 0);

/// Held-lock stack per thread id. LRU so that a thread whose exit we missed cannot fill it.
#[map]
pub static HELD: LruHashMap<u32, HeldStack> = LruHashMap::with_max_entries(8192, 0);

/// A zeroed [`HeldStack`] to initialise new `HELD` entries from (too big for the BPF stack).
#[map]
pub static HELD_INIT: PerCpuArray<HeldStack> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static STACKS: StackTrace = StackTrace::with_max_entries(16384, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Load-time filters and switches, set with `EbpfLoader::override_global`.
/// Only trace this thread group (0: all).
#[no_mangle]
pub static FILTER_PID: u32 = 0;
/// Stream every lock operation, not only new dependencies (debugging aid).
#[no_mangle]
pub static EMIT_LOCK_OPS: u32 = 0;

#[inline(always)]
pub fn global(value: &'static u32) -> u32 {
    // SAFETY: a read-only global of the object; volatile so that the loader's value is read
    // rather than the compile-time default.
    unsafe { core::ptr::read_volatile(value) }
}

#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *slot += 1 };
    }
}
