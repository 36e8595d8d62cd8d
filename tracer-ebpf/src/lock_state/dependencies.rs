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
    counter, flags, held_state, is_resend_count, kind, record, DependencyEvent, DependencyKey,
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
    /// entry inside it (u32::MAX: none), and what the records say of it. Copied here by
    /// the guard's scan: indexing the stack again with `guard_index` needs a bounds check
    /// LLVM drops (`index > guard_index` implies it) and older verifiers (6.1) demand.
    guard_index: u32,
    guard_kind: u32,
    guard_class: u64,
    guard_lock: u64,
    guard_class_source: u32,
    /// One of the `SCAN_*` modes.
    mode: u32,
    /// Set by a [`SCAN_PROBE`] scan that met a dependency not seen before.
    missing: u32,
    /// Index of the innermost held lock that is not a trylock, of the innermost held lock of
    /// the new lock's class, and of the innermost one of its class outside the former
    /// ([`NONE`]: none). Found by the first scan, read by the second: a `bpf_loop` callback
    /// must not branch on state it carries from one of its own iterations to the next, which
    /// verifiers before 6.8 check the callback as if it never had (and prune as dead).
    innermost: u32,
    last_same_class: u32,
    outer_same_class: u32,
    _pad: u32,
}

/// No such entry.
const NONE: u32 = u32::MAX;
/// Record the scan's dependencies, counting the known ones and emitting the new ones.
const SCAN_RECORD: u32 = 0;
/// Count the known dependencies; stop at the first new one and say so (nothing emitted).
const SCAN_PROBE: u32 = 1;
/// Emit the new dependencies only (after a probe, which counted the known ones).
const SCAN_EMIT_NEW: u32 = 2;

/// Held, as the task's own probes see it: not waiting, or waiting on an acquire without a
/// return program ([`held_state::RETURN_INFERRED`]) — the task runs this probe, so that
/// acquire has returned.
fn is_held(held: &HeldLock) -> bool {
    held.lock != 0
        && held.flags & (held_state::WAITING | held_state::RETURN_INFERRED) != held_state::WAITING
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
) -> bool {
    scan_dependencies(task, stack, new, new_stack_id, SCAN_RECORD)
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
) -> bool {
    if scan_dependencies(task, stack, new, -1, SCAN_PROBE) {
        let stack_id = stack_id(ctx, 0);
        return scan_dependencies(task, stack, new, stack_id, SCAN_EMIT_NEW);
    }
    false
}

/// One scan in `mode`; whether it met a new dependency (to record, in a probe scan).
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
        guard_kind: 0,
        guard_class: 0,
        guard_lock: 0,
        guard_class_source: 0,
        mode,
        missing: 0,
        innermost: NONE,
        last_same_class: NONE,
        outer_same_class: NONE,
        _pad: 0,
    };
    // SAFETY: the callbacks only read through the pointers in `scan`, valid for the calls.
    unsafe {
        bpf_loop(
            loops,
            held_stack_step as *mut core::ffi::c_void,
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

/// The first scan, over the whole held stack: entry `step` from the outermost for the
/// innermost non-trylock lock and the locks of the new lock's class (the last write wins:
/// the innermost), entry `step` from the innermost for the guard, the outermost lock held
/// exclusively (a read-held lock lets other readers in, so it serialises nothing; again the
/// last write wins, here the outermost). No branch on what earlier steps wrote.
extern "C" fn held_stack_step(step: u64, context: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `context` is the `DependencyScan` of `scan_dependencies`, alive for the loop.
    let scan = unsafe { &mut *context.cast::<DependencyScan>() };
    // SAFETY: as above; the stack is this thread's map value.
    let (stack, new) = unsafe { (&*scan.stack, &*scan.new) };
    if let Some(held) = stack.locks.get(step as usize).filter(|held| is_held(held)) {
        if held.flags & flags::TRY == 0 {
            scan.outer_same_class = scan.last_same_class;
            scan.innermost = step as u32;
        }
        if held.class == new.class {
            scan.last_same_class = step as u32;
        }
    }
    let Some(index) = (scan.depth as u64).checked_sub(step + 1) else {
        return SCAN_DONE;
    };
    let Some(held) = stack.locks.get(index as usize) else {
        return SCAN_DONE;
    };
    // A pseudo-lock (fs_reclaim, the invalidate map) is "held" by every task in reclaim or in
    // an invalidation at once: it serialises nothing either.
    if is_held(held) && held.flags & flags::NEW_READ == 0 && held.kind != kind::PSEUDO {
        scan.guard_index = index as u32;
        scan.guard_kind = held.kind;
        scan.guard_class = held.class;
        scan.guard_lock = held.lock;
        scan.guard_class_source = held.class_source;
    }
    SCAN_NEXT
}

/// The scan's next step: the held-stack entry `step` places from the innermost.
const SCAN_NEXT: i64 = 0;
/// The scan is over.
const SCAN_DONE: i64 = 1;

/// One step of the second scan, from the innermost entry outwards: `held → new` for the
/// entry if it is held and the rules above say so, as the scan's mode says. Decides on the
/// first scan's findings and the entry alone (see [`DependencyScan::innermost`]).
extern "C" fn dependency_step(step: u64, context: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `context` is the `DependencyScan` of `scan_dependencies`, alive for the loop.
    let scan = unsafe { &mut *context.cast::<DependencyScan>() };
    // SAFETY: as above; the stack is this thread's map value.
    let stack = unsafe { &*scan.stack };
    let Some(index) = (scan.depth as u64).checked_sub(step + 1) else {
        return SCAN_DONE;
    };
    let Some(held) = stack.locks.get(index as usize) else {
        return SCAN_DONE;
    };
    if !is_held(held) {
        return SCAN_NEXT;
    }
    let index = index as u32;
    let innermost = scan.innermost;
    // The innermost non-trylock lock and the trylocks inside it (all of them without one).
    if innermost == NONE || index >= innermost {
        if dependency(scan, held, index) == SCAN_DONE {
            return SCAN_DONE;
        }
        if index != innermost {
            return SCAN_NEXT;
        }
        // Further out only the innermost lock of the new lock's class counts (recursive
        // locking), unless one of those above was of it already.
        let source_of_class = scan.last_same_class != NONE && scan.last_same_class >= innermost;
        if source_of_class || scan.outer_same_class == NONE {
            return SCAN_DONE;
        }
        return SCAN_NEXT;
    }
    if index == scan.outer_same_class {
        dependency(scan, held, index);
        return SCAN_DONE;
    }
    SCAN_NEXT
}

/// `held → new` for the held-stack entry at `index`: counted if known, recorded if new, as
/// the scan's mode says. [`SCAN_DONE`] when a probe scan met news (a new dependency, a
/// re-send due, a guard lost).
#[allow(
    clippy::needless_borrows_for_generic_args,
    reason = "borrowed, not copied: the kprobe programs are near the 512-byte stack limit"
)]
// Inlined: each BPF call frame costs at least 32 bytes of the 512-byte combined stack, and
// the acquire programs are near it (6.1 refused them at 544).
#[inline(always)]
fn dependency(scan: &mut DependencyScan, held: &HeldLock, index: u32) -> i64 {
    // SAFETY: `scan`'s pointers are valid for the scan.
    let (task, new) = unsafe { (&*scan.task, &*scan.new) };
    if !module_keeps(held.flags, new.flags) {
        return SCAN_NEXT;
    }
    let guarded = index > scan.guard_index;
    let mode = scan.mode;
    if mode != SCAN_EMIT_NEW {
        count(counter::DEPENDENCY_CHECKS);
    }
    let mut dep_flags = 0;
    dep_flags |= new.flags & (flags::NEW_READ | flags::NEW_RECURSIVE_READ);
    if held.flags & flags::NEW_READ != 0 {
        dep_flags |= flags::HELD_READ;
    }
    if held.flags & flags::NEW_RECURSIVE_READ != 0 {
        dep_flags |= flags::HELD_RECURSIVE_READ;
    }
    let mut key = DependencyKey {
        held_class: held.class,
        new_class: new.class,
        flags: dep_flags,
        scope: new.scope,
    };
    // Two instances of one user class: ordered per instance pair (ThreadSanitizer's and
    // Helgrind's granularity), so an inversion among a lock array's elements is seen. Kernel
    // classes keep lockdep's rule (any nesting within a class is recursive locking).
    if held.class == new.class && new.scope != 0 && held.lock != new.lock {
        key.held_class = held.lock;
        key.new_class = new.lock;
        key.flags |= flags::INSTANCES;
    }
    // One value, updated in place: kprobe programs are near the 512-byte combined stack.
    let mut occurrence = Occurrence {
        key,
        seen: DependencySeen {
            count: 1,
            guard_class: if guarded { scan.guard_class } else { 0 },
            guard_lock: if guarded { scan.guard_lock } else { 0 },
        },
        guard_kind: if guarded { scan.guard_kind } else { 0 },
        guard_class_source: if guarded { scan.guard_class_source } else { 0 },
    };
    if let Some(seen) = DEPENDENCIES.get_ptr_mut(&occurrence.key) {
        // SAFETY: map value pointer. Not atomic (core has no atomic RMW for the BPF
        // target): a concurrent increment may be lost, so the count is a lower bound.
        let seen = unsafe { &mut *seen };
        if mode != SCAN_EMIT_NEW {
            seen.count += 1;
        }
        let lost_guard = occurrence.loses_guard_of(seen);
        if lost_guard || is_resend_count(seen.count) {
            if mode == SCAN_PROBE {
                // The stack is not walked yet: ask for the emitting pass.
                scan.missing = 1;
                return SCAN_DONE;
            }
            if lost_guard {
                occurrence.drop_guard_of(seen);
            } else {
                occurrence.key.flags |= flags::RESENT;
            }
            // A known dependency: a dropped record is recovered from the set.
            let _ = emit_dependency(task, &occurrence, held, new, scan.new_stack_id);
        }
        return SCAN_NEXT;
    }
    if mode == SCAN_PROBE {
        scan.missing = 1;
        return SCAN_DONE;
    }
    if let Some(kept) = store_new(&occurrence) {
        // Also in the recording modes: the caller learns a new dependency was made.
        scan.missing = 1;
        emit_new(task, &occurrence, held, new, scan.new_stack_id, kept);
    }
    SCAN_NEXT
}

/// Stores a dependency seen for the first time in the set. `None`: another CPU stored it
/// first (and sends it); otherwise whether the set kept it (`false`: it was full, and the
/// dependency is sent without being kept).
#[allow(
    clippy::needless_borrows_for_generic_args,
    reason = "borrowed, not copied: the kprobe programs are near the 512-byte stack limit"
)]
#[inline(always)]
pub(super) fn store_new(occurrence: &Occurrence) -> Option<bool> {
    if DEPENDENCIES
        .insert(&occurrence.key, &occurrence.seen, u64::from(BPF_NOEXIST))
        .is_ok()
    {
        count(counter::DEPENDENCIES_INSERTED);
        return Some(true);
    }
    if DEPENDENCIES.get_ptr(&occurrence.key).is_some() {
        return None;
    }
    count(counter::DEPENDENCY_MAP_FULL);
    Some(false)
}

/// Sends a dependency; one the set did not keep (`kept`) whose record is dropped too is
/// gone for good, and counted.
#[inline(always)]
pub(super) fn emit_new(
    task: &Task,
    occurrence: &Occurrence,
    held: &HeldLock,
    new: &LockRef,
    new_stack_id: i32,
    kept: bool,
) {
    if !emit_dependency(task, occurrence, held, new, new_stack_id) && !kept {
        count(counter::DEPENDENCY_LOST);
    }
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

impl Occurrence {
    /// Whether this occurrence ran under another guard than every earlier one (or none).
    #[inline(always)]
    pub fn loses_guard_of(&self, seen: &DependencySeen) -> bool {
        seen.guard_lock != 0 && seen.guard_lock != self.seen.guard_lock
    }

    /// From now on the dependency has no guard: neither in the set nor in this record.
    #[inline(always)]
    pub fn drop_guard_of(&mut self, seen: &mut DependencySeen) {
        seen.guard_class = 0;
        seen.guard_lock = 0;
        self.seen.guard_class = 0;
        self.seen.guard_lock = 0;
        self.guard_kind = 0;
        self.guard_class_source = 0;
    }
}

/// The key's flags become the record's flags (with [`flags::RESENT`] for a re-send).
/// Whether the record was sent (a dropped one is counted).
pub(super) fn emit_dependency(
    task: &Task,
    occurrence: &Occurrence,
    held: &HeldLock,
    new: &LockRef,
    new_stack_id: i32,
) -> bool {
    let Some(mut entry) = EVENTS.reserve::<DependencyEvent>(0) else {
        count(counter::RINGBUF_DROPPED);
        return false;
    };
    count(counter::DEPENDENCIES_SENT);
    let event = entry.as_mut_ptr();
    // SAFETY: `event` is a reserved, writable record of the right size; filled field by
    // field (as the lock-op record), no event-sized temporary on the BPF stack.
    unsafe {
        (*event).record = record::DEPENDENCY;
        (*event).flags = occurrence.key.flags;
        // Not the key's: for [`flags::INSTANCES`] those are the instances.
        (*event).held_class = held.class;
        (*event).new_class = new.class;
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
    true
}
