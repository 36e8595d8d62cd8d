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
    counter, flags, held_state, is_resend_count, record, DependencyEvent, DependencyKey,
    DependencySeen, HeldLock, HeldStack, COMM_LEN, MAX_HELD_LOCKS,
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
    /// Index of the outermost lock held exclusively, the guard of every dependency from an
    /// entry inside it (u32::MAX: none).
    guard_index: u32,
    /// One of the `SCAN_*` modes.
    mode: u32,
    /// Set by a [`SCAN_PROBE`] scan that met a dependency not seen before.
    missing: u32,
    /// Set once the scan is past the innermost lock that is not a trylock: further out only
    /// a lock of the new lock's class counts (recursive locking).
    past_innermost: u32,
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
/// each held trylock and for the first non-trylock lock — the locks further out already
/// depend on that one, so `new` is connected to them through it — and lockdep's
/// `check_deadlock`: a lock of `new`'s class held further out is recursive locking
/// (`held == new`). Each dependency's guard is the outermost lock held exclusively outside
/// its held lock. Both scans (the guard's and the dependencies') run in `bpf_loop` (Linux
/// 5.17+): the verifier checks a body once instead of unrolling 48 iterations per program,
/// which keeps loading ~90 programs under TCG within seconds.
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
        guard_index: u32::MAX,
        mode,
        missing: 0,
        past_innermost: 0,
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

/// Finds the outermost lock held exclusively (a read-held lock lets other readers in, so
/// it serialises nothing): the guard of every edge taken inside it.
extern "C" fn guard_step(index: u64, context: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `context` is the `DependencyScan` of `scan_dependencies`, alive for the loop.
    let scan = unsafe { &mut *context.cast::<DependencyScan>() };
    // SAFETY: as above; the stack is this thread's map value.
    let stack = unsafe { &*scan.stack };
    let Some(held) = stack.locks.get(index as usize) else {
        return 1;
    };
    if !is_held(held) || held.flags & flags::NEW_READ != 0 {
        return 0;
    }
    scan.guard_index = index as u32;
    1
}

/// The scan's next step: the held-stack entry `step` places from the innermost.
const SCAN_NEXT: i64 = 0;
/// The scan is over.
const SCAN_DONE: i64 = 1;

/// One step of the scan, from the innermost entry outwards: `held → new` for the entry if
/// it is held and the rules above say so, as the scan's mode says.
extern "C" fn dependency_step(step: u64, context: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `context` is the `DependencyScan` of `scan_dependencies`, alive for the loop.
    let scan = unsafe { &mut *context.cast::<DependencyScan>() };
    // SAFETY: as above; the stack is this thread's map value.
    let (stack, new) = unsafe { (&*scan.stack, &*scan.new) };
    let Some(index) = (scan.depth as u64).checked_sub(step + 1) else {
        return SCAN_DONE;
    };
    let Some(held) = stack.locks.get(index as usize) else {
        return SCAN_DONE;
    };
    if !is_held(held) {
        return SCAN_NEXT;
    }
    let same_class = held.class == new.class;
    if scan.past_innermost != 0 {
        if !same_class {
            return SCAN_NEXT;
        }
        dependency(scan, held, index as u32);
        return SCAN_DONE;
    }
    if dependency(scan, held, index as u32) == SCAN_DONE {
        return SCAN_DONE;
    }
    if held.flags & flags::TRY != 0 {
        return SCAN_NEXT;
    }
    // The innermost lock that is not a trylock: lockdep adds nothing further out, but a
    // lock of the same class further out is still recursive locking (unless this one is).
    if same_class {
        return SCAN_DONE;
    }
    scan.past_innermost = 1;
    SCAN_NEXT
}

/// `held → new` for the held-stack entry at `index`: counted if known, recorded if new, as
/// the scan's mode says. [`SCAN_DONE`] when a probe scan met news (a new dependency, a
/// re-send due, a guard lost).
#[allow(
    clippy::needless_borrows_for_generic_args,
    reason = "borrowed, not copied: the kprobe programs are near the 512-byte stack limit"
)]
fn dependency(scan: &mut DependencyScan, held: &HeldLock, index: u32) -> i64 {
    // SAFETY: `scan`'s pointers are valid for the scan.
    let (task, stack, new) = unsafe { (&*scan.task, &*scan.stack, &*scan.new) };
    if !module_keeps(held.flags, new.flags) {
        return SCAN_NEXT;
    }
    let guard = stack
        .locks
        .get(scan.guard_index as usize)
        .filter(|_| index > scan.guard_index);
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
        flags: dep_flags,
        scope: new.scope,
    };
    // One value, updated in place: kprobe programs are near the 512-byte combined stack.
    let mut occurrence = Occurrence {
        key,
        seen: DependencySeen {
            count: 1,
            guard_class: guard.map_or(0, |guard| guard.class),
            guard_lock: guard.map_or(0, |guard| guard.lock),
        },
        guard_kind: guard.map_or(0, |guard| guard.kind),
        guard_class_source: guard.map_or(0, |guard| guard.class_source),
    };
    let guard_lock = occurrence.seen.guard_lock;
    if let Some(seen) = DEPENDENCIES.get_ptr_mut(&occurrence.key) {
        // SAFETY: map value pointer. Not atomic (core has no atomic RMW for the BPF
        // target): a concurrent increment may be lost, so the count is a lower bound.
        let seen = unsafe { &mut *seen };
        if mode != SCAN_EMIT_NEW {
            seen.count += 1;
        }
        let lost_guard = seen.guard_lock != 0 && seen.guard_lock != guard_lock;
        if lost_guard || is_resend_count(seen.count) {
            if mode == SCAN_PROBE {
                // The stack is not walked yet: ask for the emitting pass.
                scan.missing = 1;
                return SCAN_DONE;
            }
            if lost_guard {
                // Under another guard (or none): from now on the dependency has none.
                seen.guard_class = 0;
                seen.guard_lock = 0;
                occurrence.seen.guard_class = 0;
                occurrence.seen.guard_lock = 0;
                occurrence.guard_kind = 0;
                occurrence.guard_class_source = 0;
            } else {
                occurrence.key.flags |= flags::RESENT;
            }
            emit_dependency(task, &occurrence, held, new, scan.new_stack_id);
        }
        return SCAN_NEXT;
    }
    if mode == SCAN_PROBE {
        scan.missing = 1;
        return SCAN_DONE;
    }
    if DEPENDENCIES
        .insert(&occurrence.key, &occurrence.seen, u64::from(BPF_NOEXIST))
        .is_err()
    {
        // Either another CPU inserted it first (it reports it) or the map is full.
        if DEPENDENCIES.get_ptr(&occurrence.key).is_some() {
            return SCAN_NEXT;
        }
        count(counter::DEPENDENCY_MAP_FULL);
    }
    emit_dependency(task, &occurrence, held, new, scan.new_stack_id);
    SCAN_NEXT
}

/// One occurrence of a dependency: its key, and the in-kernel value a first occurrence
/// stores (count 1, the guard it ran under: class and instance, 0 and 0 for none), with the
/// guard's kind and class source for the record.
pub(super) struct Occurrence {
    pub key: DependencyKey,
    pub seen: DependencySeen,
    pub guard_kind: u32,
    pub guard_class_source: u32,
}

/// The key's flags become the record's flags (with [`flags::RESENT`] for a re-send).
pub(super) fn emit_dependency(
    task: &Task,
    occurrence: &Occurrence,
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
        (*event).flags = occurrence.key.flags;
        (*event).held_class = occurrence.key.held_class;
        (*event).new_class = occurrence.key.new_class;
        (*event).guard_class = occurrence.seen.guard_class;
        (*event).guard_lock = occurrence.seen.guard_lock;
        (*event).guard_kind = occurrence.guard_kind;
        (*event).guard_class_source = occurrence.guard_class_source;
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
