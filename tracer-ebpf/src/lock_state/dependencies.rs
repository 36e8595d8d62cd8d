//! The dependencies of an acquire: a scan of the held stack (lockdep's `check_prevs_add`),
//! dedup and occurrence counts in `DEPENDENCIES`, and a ring-buffer record per new (or
//! re-sent) dependency.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_ktime_get_ns, bpf_loop, generated::bpf_get_current_comm as raw_get_current_comm,
    },
    programs::tracing::StackIdContext,
};
use tracer_common::{
    counter, flags, held_state, is_resend_count, record, DependencyEvent, DependencyKey, HeldLock,
    HeldStack, COMM_LEN, MAX_HELD_LOCKS,
};

use super::{
    filters::{module_keeps, Task},
    stack_ids::stack_id,
    LockRef,
};
use crate::maps::{count, DEPENDENCIES, EVENTS};

/// State of one [`scan_dependencies`] scan, shared with the `bpf_loop` callbacks.
#[repr(C)]
struct DependencyScan {
    task: *const Task,
    stack: *const HeldStack,
    new: *const LockRef,
    new_stack_id: i32,
    /// Entries in the held stack (bounded by MAX_HELD_LOCKS).
    depth: u32,
    /// Class of the outermost held lock, and its index (u32::MAX: none).
    guard: u64,
    guard_index: u32,
    /// One of the `SCAN_*` modes.
    mode: u32,
    /// Set by a [`SCAN_PROBE`] scan that met a dependency not seen before.
    missing: u32,
    _pad: u32,
}

/// Record the scan's dependencies, counting the known ones and emitting the new ones.
const SCAN_RECORD: u32 = 0;
/// Count the known dependencies; stop at the first new one and say so (nothing emitted).
const SCAN_PROBE: u32 = 1;
/// Emit the new dependencies only (after a probe, which counted the known ones).
const SCAN_EMIT_NEW: u32 = 2;

fn is_held(held: &HeldLock) -> bool {
    held.lock != 0 && held.flags & held_state::WAITING == 0
}

/// lockdep's `check_prevs_add`: from the innermost held lock outwards, `held → new` for
/// each held trylock and for the first non-trylock lock, then stop — the locks further out
/// already depend on that one, so `new` is connected to them through it. Both scans (the
/// guard's and the dependencies') run in `bpf_loop` (Linux 5.17+): the verifier checks a
/// body once instead of unrolling 48 iterations per program, which keeps loading ~90
/// programs under TCG within seconds.
pub(super) fn record_dependencies(
    task: &Task,
    stack: &HeldStack,
    new: &LockRef,
    new_stack_id: i32,
) {
    scan_dependencies(task, stack, new, new_stack_id, SCAN_RECORD);
}

/// [`record_dependencies`] with the stack, the costly part, walked only when some
/// dependency is new: in steady state every acquire finds its dependencies known (every
/// allocation under a lock its `held → fs_reclaim`) and walks nothing.
// One call level less: kprobe programs are near the 512-byte combined stack limit.
#[inline(always)]
pub(super) fn record_dependencies_lazily<C: StackIdContext>(
    ctx: &C,
    task: &Task,
    stack: &HeldStack,
    new: &LockRef,
) {
    if scan_dependencies(task, stack, new, -1, SCAN_PROBE) {
        let stack_id = stack_id(ctx, 0);
        scan_dependencies(task, stack, new, stack_id, SCAN_EMIT_NEW);
    }
}

/// One scan in `mode`; whether a probe scan met a new dependency.
fn scan_dependencies(
    task: &Task,
    stack: &HeldStack,
    new: &LockRef,
    new_stack_id: i32,
    mode: u32,
) -> bool {
    let depth = stack.depth;
    if depth == 0 {
        return false;
    }
    let loops = if depth > MAX_HELD_LOCKS as u32 {
        MAX_HELD_LOCKS as u32
    } else {
        depth
    };
    let mut scan = DependencyScan {
        task,
        stack,
        new,
        new_stack_id,
        depth: loops,
        guard: 0,
        guard_index: u32::MAX,
        mode,
        missing: 0,
        _pad: 0,
    };
    // SAFETY: the callbacks only read through the pointers in `scan`, valid for the calls.
    unsafe {
        bpf_loop(
            loops,
            guard_step as *mut core::ffi::c_void,
            (&raw mut scan).cast(),
            0,
        );
        bpf_loop(
            loops,
            dependency_step as *mut core::ffi::c_void,
            (&raw mut scan).cast(),
            0,
        );
    }
    scan.missing != 0
}

/// Finds the outermost held lock: the guard candidate of every edge taken inside it.
extern "C" fn guard_step(index: u64, context: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `context` is the `DependencyScan` of `scan_dependencies`, alive for the loop.
    let scan = unsafe { &mut *context.cast::<DependencyScan>() };
    // SAFETY: as above; the stack is this thread's map value.
    let stack = unsafe { &*scan.stack };
    let Some(held) = stack.locks.get(index as usize) else {
        return 1;
    };
    if !is_held(held) {
        return 0;
    }
    scan.guard = held.class;
    scan.guard_index = index as u32;
    1
}

/// One step of the scan, from the innermost entry outwards: `held → new` for the entry if
/// it is held, as the scan's mode says. Returns 1 (stop) after the first non-trylock lock,
/// or at a probe scan's first new dependency.
extern "C" fn dependency_step(step: u64, context: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `context` is the `DependencyScan` of `scan_dependencies`, alive for the loop.
    let scan = unsafe { &mut *context.cast::<DependencyScan>() };
    // SAFETY: as above; the stack is this thread's map value.
    let (task, stack, new) = unsafe { (&*scan.task, &*scan.stack, &*scan.new) };
    let Some(index) = (scan.depth as u64).checked_sub(step + 1) else {
        return 1;
    };
    let Some(held) = stack.locks.get(index as usize) else {
        return 1;
    };
    if !is_held(held) {
        return 0;
    }
    // Past the first non-trylock lock, lockdep adds nothing more.
    let stop = if held.flags & flags::TRY == 0 { 1 } else { 0 };
    let guard = if (index as u32) > scan.guard_index {
        scan.guard
    } else {
        0
    };
    if !module_keeps(held.flags, new.flags) {
        return stop;
    }
    let mode = scan.mode;
    if mode != SCAN_EMIT_NEW {
        count(counter::DEPENDENCY_CHECKS);
    }
    let mut dep_flags = 0;
    if new.flags & flags::NEW_READ != 0 {
        dep_flags |= flags::NEW_READ;
    }
    if held.flags & flags::NEW_READ != 0 {
        dep_flags |= flags::HELD_READ;
    }
    let key = DependencyKey {
        held_class: held.class,
        new_class: new.class,
        guard_class: guard,
        flags: dep_flags,
        scope: new.scope,
    };
    if let Some(seen) = DEPENDENCIES.get_ptr_mut(key) {
        // SAFETY: map value pointer. Not atomic (core has no atomic RMW for the BPF
        // target): a concurrent increment may be lost, so the count is a lower bound.
        let count = unsafe {
            if mode != SCAN_EMIT_NEW {
                *seen += 1;
            }
            *seen
        };
        if is_resend_count(count) {
            match mode {
                // The stack is not walked yet: ask for the emitting pass.
                SCAN_PROBE => scan.missing = 1,
                _ => {
                    let resent = DependencyKey {
                        flags: key.flags | flags::RESENT,
                        ..key
                    };
                    emit_dependency(task, &resent, held, new, scan.new_stack_id);
                }
            }
        }
        return stop;
    }
    if mode == SCAN_PROBE {
        scan.missing = 1;
        return 1;
    }
    if DEPENDENCIES.insert(key, 1, u64::from(BPF_NOEXIST)).is_err() {
        // Either another CPU inserted it first (it reports it) or the map is full.
        if DEPENDENCIES.get_ptr(key).is_some() {
            return stop;
        }
        count(counter::DEPENDENCY_MAP_FULL);
    }
    emit_dependency(task, &key, held, new, scan.new_stack_id);
    stop
}

/// `key.flags` becomes the record's flags (with [`flags::RESENT`] for a re-send).
pub(super) fn emit_dependency(
    task: &Task,
    key: &DependencyKey,
    held: &HeldLock,
    new: &LockRef,
    new_stack_id: i32,
) {
    let Some(mut entry) = EVENTS.reserve::<DependencyEvent>(0) else {
        count(counter::RINGBUF_DROPPED);
        return;
    };
    count(counter::DEPENDENCIES_SENT);
    let event = entry.as_mut_ptr();
    // SAFETY: `event` is a reserved, writable record of the right size; filled field by
    // field (as the lock-op record), no event-sized temporary on the BPF stack.
    unsafe {
        (*event).record = record::DEPENDENCY;
        (*event).flags = key.flags;
        (*event).held_class = key.held_class;
        (*event).new_class = key.new_class;
        (*event).guard_class = key.guard_class;
        (*event).held_lock = held.lock;
        (*event).new_lock = new.lock;
        (*event).held_caller = held.caller;
        (*event).new_caller = new.caller;
        (*event).timestamp_ns = bpf_ktime_get_ns();
        (*event).held_kind = held.kind;
        (*event).new_kind = new.kind;
        (*event).held_class_source = held.class_source;
        (*event).new_class_source = new.class_source;
        (*event).held_stack_id = held.stack_id;
        (*event).new_stack_id = new_stack_id;
        (*event).pid = task.pid;
        (*event).tid = task.tid;
        raw_get_current_comm((&raw mut (*event).comm).cast(), COMM_LEN as u32);
    }
    entry.submit(0);
}
