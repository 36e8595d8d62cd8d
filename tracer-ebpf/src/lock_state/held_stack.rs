//! The per-thread held-lock stack (`HELD`): the lock operations the probes report, and the
//! lock-op records streamed with `locktrace --events` (`EMIT_LOCK_OPS`).
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_ktime_get_ns, generated::bpf_get_current_comm as raw_get_current_comm},
    programs::tracing::StackIdContext,
};
use tracer_common::{
    counter, flags, held_state, kind, op, record, DependencyKey, DependencySeen, HeldLock,
    HeldStack, LockOpEvent, COMM_LEN, MAX_HELD_LOCKS,
};

use super::{
    budget,
    dependencies::{
        emit_new, record_dependencies, record_dependencies_lazily, store_new, Occurrence,
    },
    filters::{module_keeps, Task},
    stack_ids::{site_stack_id, stack_id},
    LockRef,
};
use crate::maps::{
    count, global, remove_counted, DEPENDENCIES, EMIT_LOCK_OPS, EVENTS, HELD, HELD_INIT,
};

fn held_stack(task: &Task) -> Option<*mut HeldStack> {
    if let Some(stack) = HELD.get_ptr_mut(task.tid) {
        return Some(stack);
    }
    let init = HELD_INIT.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch value; zero it and stamp the owner before inserting a copy.
    unsafe {
        (*init).depth = 0;
        (*init).pid = task.pid;
        (*init).overflow = 0;
        #[expect(
            clippy::needless_borrows_for_generic_args,
            reason = "by value would copy the 2 KiB stack onto the 512-byte BPF stack"
        )]
        if HELD
            .insert(task.tid, &*init, u64::from(BPF_NOEXIST))
            .is_ok()
        {
            count(counter::HELD_TASKS_CREATED);
        }
    }
    HELD.get_ptr_mut(task.tid)
}

/// Forget a thread's held locks (it exited).
pub fn forget_task(tid: u32) {
    remove_counted(&HELD, &tid, counter::HELD_TASKS_REMOVED);
}

fn emit_lock_op(task: &Task, lock: u64, kind: u32, lock_flags: u32, operation: u32) {
    if global(&EMIT_LOCK_OPS) == 0 {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<LockOpEvent>(0) else {
        count(counter::RINGBUF_DROPPED);
        return;
    };
    // Field by field into the reservation (no event-sized temporary on the 512-byte stack,
    // which the deepest call chains share).
    let event = entry.as_mut_ptr();
    // SAFETY: `event` is a reserved, writable record of the right size.
    unsafe {
        (*event).record = record::LOCK_OP;
        (*event).op = operation;
        (*event).kind = kind;
        (*event).flags = lock_flags & (flags::NEW_READ | flags::NEW_RECURSIVE_READ | flags::TRY);
        (*event).timestamp_ns = bpf_ktime_get_ns();
        (*event).lock = lock;
        (*event).pid = task.pid;
        (*event).tid = task.tid;
        raw_get_current_comm((&raw mut (*event).comm).cast(), COMM_LEN as u32);
    }
    entry.submit(0);
}

/// A lock acquire has started. `stack_flags` is passed to `bpf_get_stackid`
/// (`BPF_F_USER_STACK` for user locks).
///
/// Kernel locks: the held entry takes its call site's stack ([`site_stack_id`]) and the
/// stack of this very acquisition is walked only when a dependency is new, so in steady
/// state an acquire walks no stack — the walk is most of what a per-acquire tracer costs.
pub fn acquire<C: StackIdContext>(ctx: &C, task: &Task, new: &LockRef, stack_flags: u64) {
    count(counter::LOCK_OPS);
    let Some(stack) = held_stack(task) else {
        emit_lock_op(task, new.lock, new.kind, new.flags, op::ACQUIRE);
        return;
    };
    // SAFETY: pointer into this thread's map value; only this thread writes it.
    let stack = unsafe { &mut *stack };
    infer_return(task, stack);
    if is_pending(stack, new) {
        // A nested entry point (`mutex_lock_io` calls `mutex_lock`): one acquisition, whose
        // return the inner function's probe reports and the outer one then finds done.
        return;
    }
    if budget::family_off(new.kind) {
        count(counter::BUDGET_ACQUIRES_SKIPPED);
        return;
    }
    emit_lock_op(task, new.lock, new.kind, new.flags, op::ACQUIRE);
    let check = new.flags & flags::TRY == 0 && !budget::check_skipped(new.caller);
    let stack_id = if stack_flags == 0 {
        let site = site_stack_id(ctx, new.caller);
        if check && record_dependencies_lazily(ctx, task, stack, new) {
            budget::site_made_new(new.caller);
        }
        site
    } else {
        let id = stack_id(ctx, stack_flags);
        if check && record_dependencies(task, stack, new, id) {
            budget::site_made_new(new.caller);
        }
        id
    };
    let depth = stack.depth as usize;
    let Some(slot) = stack.locks.get_mut(depth) else {
        count(counter::HELD_OVERFLOW);
        stack.overflow += 1;
        return;
    };
    *slot = HeldLock {
        lock: new.lock,
        class: new.class,
        acquired_ns: unsafe { bpf_ktime_get_ns() },
        stack_id,
        flags: (new.flags
            & (flags::NEW_READ
                | flags::NEW_RECURSIVE_READ
                | flags::TRY
                | held_state::FROM_MODULE
                | held_state::RETURN_INFERRED))
            | held_state::WAITING,
        kind: new.kind,
        class_source: new.class_source,
        caller: new.caller,
    };
    stack.depth = depth as u32 + 1;
}

/// The task makes a lock operation, so an acquire of it without a return probe
/// ([`held_state::RETURN_INFERRED`]) has returned: only the innermost entry can be one (a
/// task waits for one lock at a time).
#[inline(always)]
fn infer_return(task: &Task, stack: &mut HeldStack) {
    let depth = stack.depth as usize;
    if depth == 0 || depth > MAX_HELD_LOCKS {
        return;
    }
    let Some(top) = stack.locks.get_mut(depth - 1) else {
        return;
    };
    const INFERRED_WAIT: u32 = held_state::WAITING | held_state::RETURN_INFERRED;
    if top.lock != 0 && top.flags & INFERRED_WAIT == INFERRED_WAIT {
        top.flags &= !held_state::WAITING;
        emit_lock_op(task, top.lock, top.kind, top.flags, op::ACQUIRED);
    }
}

/// Whether the innermost entry is an acquire of `new` that has not returned yet.
fn is_pending(stack: &HeldStack, new: &LockRef) -> bool {
    let depth = stack.depth as usize;
    if depth == 0 || depth > MAX_HELD_LOCKS {
        return false;
    }
    stack.locks.get(depth - 1).is_some_and(|top| {
        top.lock == new.lock && top.kind == new.kind && top.flags & held_state::WAITING != 0
    })
}

/// A release or failed acquire of a lock not on the stack: one of the acquires the full
/// stack could not record, if any are outstanding (so not unmatched).
fn was_overflow(stack: &mut HeldStack) -> bool {
    if stack.overflow == 0 {
        return false;
    }
    stack.overflow -= 1;
    true
}

/// The innermost pending acquire returned. `lock` is `None` when the return probe cannot
/// see the lock argument (uretprobe), in which case the innermost waiting entry is meant.
#[inline(always)]
pub fn acquire_returned(task: &Task, lock: Option<u64>, acquired: bool) {
    // Not an `Option` across the call: LLVM leaves a `None`'s payload register unset, and
    // the verifier rejects the callee's copy of an uninitialised register.
    acquire_returned_of(task, lock.unwrap_or(ANY_WAITING), acquired);
}

/// [`acquire_returned`]'s `lock` for "the innermost waiting entry" (no lock lives at 0).
const ANY_WAITING: u64 = 0;

#[inline(never)]
fn acquire_returned_of(task: &Task, lock: u64, acquired: bool) {
    let Some(stack) = HELD.get_ptr_mut(task.tid) else {
        return;
    };
    // SAFETY: see `acquire`.
    let stack = unsafe { &mut *stack };
    let mut found: Option<HeldLock> = None;
    let matched = update_innermost(
        stack,
        |held| held.flags & held_state::WAITING != 0 && (lock == ANY_WAITING || held.lock == lock),
        |entry| {
            found = Some(*entry);
            if acquired {
                entry.flags &= !held_state::WAITING;
            } else {
                tombstone(entry);
            }
        },
    );
    if !matched {
        // Acquired: the outer return of a nested entry point. Failed: an acquire the full
        // stack did not record.
        if !acquired {
            was_overflow(stack);
        }
        return;
    }
    let Some(held) = found else {
        return;
    };
    if acquired {
        emit_lock_op(task, held.lock, held.kind, held.flags, op::ACQUIRED);
    } else {
        pop_tombstones(stack);
        emit_lock_op(task, held.lock, held.kind, held.flags, op::ACQUIRE_FAILED);
    }
}

/// A lock was released (possibly out of order).
pub fn release(task: &Task, lock: u64, kind: u32) {
    count(counter::LOCK_OPS);
    let Some(stack) = HELD.get_ptr_mut(task.tid) else {
        emit_lock_op(task, lock, kind, 0, op::RELEASE);
        count(counter::UNMATCHED_RELEASE);
        return;
    };
    // SAFETY: see `acquire`.
    let stack = unsafe { &mut *stack };
    infer_return(task, stack);
    emit_lock_op(task, lock, kind, 0, op::RELEASE);
    let mut was_waiting = false;
    if update_innermost(
        stack,
        |held| held.lock == lock,
        |entry| {
            was_waiting = entry.flags & held_state::WAITING != 0;
            tombstone(entry);
        },
    ) {
        pop_tombstones(stack);
        if was_waiting {
            count(counter::RETURN_MISSED);
        }
    } else if !was_overflow(stack) && !budget::family_off(kind) {
        count(counter::UNMATCHED_RELEASE);
    }
}

/// `lock` released by `task` while the thread `holder` holds it (a pthread mutex unlocked by
/// another thread): the holder's entry goes, so the holder depends on it no longer.
pub fn release_by_other(task: &Task, holder: u32, lock: u64, kind: u32) {
    count(counter::LOCK_OPS);
    count(counter::RELEASED_BY_OTHER);
    emit_lock_op(task, lock, kind, 0, op::RELEASE);
    let Some(stack) = HELD.get_ptr_mut(holder) else {
        count(counter::UNMATCHED_RELEASE);
        return;
    };
    // SAFETY: the holder's map value. The holder may be changing it at the same time (a
    // race its program's own design excludes only for itself): at worst an entry of its
    // stack is lost or kept, counted nowhere; nothing outside the map is touched.
    let stack = unsafe { &mut *stack };
    if update_innermost(stack, |held| held.lock == lock, tombstone) {
        pop_tombstones(stack);
    } else {
        count(counter::UNMATCHED_RELEASE);
    }
}

/// Apply `action` to the innermost entry that `matches`; whether there was one. The action
/// runs inside the scan so that no index outlives it: an index returned from a 48-way loop
/// made the verifier check everything after it once per possible value.
fn update_innermost(
    stack: &mut HeldStack,
    matches: impl Fn(&HeldLock) -> bool,
    action: impl FnOnce(&mut HeldLock),
) -> bool {
    // Loop over constant bounds (not `depth`) so that the verifier sees every index in range.
    let depth = stack.depth as usize;
    for index in (0..MAX_HELD_LOCKS).rev() {
        if index >= depth {
            continue;
        }
        // `get_mut`, not indexing: a bounds-check panic path is code the verifier rejects.
        let Some(entry) = stack.locks.get_mut(index) else {
            return false;
        };
        if entry.lock != 0 && matches(entry) {
            action(entry);
            return true;
        }
    }
    false
}

/// A removed entry becomes a tombstone (`lock == 0`, skipped by every scan) until the
/// entries above it are gone ([`pop_tombstones`]). No shifting: moving 48-byte entries at an
/// unknown index made every release program take ~1 s to verify.
fn tombstone(entry: &mut HeldLock) {
    entry.lock = 0;
    entry.class = 0;
    entry.flags = 0;
}

fn pop_tombstones(stack: &mut HeldStack) {
    for _ in 0..MAX_HELD_LOCKS {
        let depth = stack.depth as usize;
        // Bound `depth` itself (not only `depth - 1`): the verifier must see the address
        // `depth * 48 - 48` in range, and LLVM indexes with `depth`.
        if depth == 0 || depth > MAX_HELD_LOCKS {
            break;
        }
        match stack.locks.get(depth - 1) {
            Some(top) if top.lock == 0 => stack.depth = depth as u32 - 1,
            _ => break,
        }
    }
}

/// Whether the task holds (or waits for) any lock: most allocations happen with none.
#[inline(always)]
pub fn holds_locks(task: &Task) -> bool {
    // SAFETY: map value pointer, read only.
    HELD.get_ptr(task.tid)
        .is_some_and(|stack| unsafe { (*stack).depth } > 0)
}

/// A lockdep-style "acquire and release at once" of a pseudo-lock (`fs_reclaim` at an
/// allocation that may recurse into the filesystem): the dependencies of a blocking acquire
/// (from the innermost held lock and the trylocks inside it, [`record_dependencies`]), no
/// held state left behind. Cheap when the task holds nothing (no map insert).
pub fn acquire_release<C: StackIdContext>(ctx: &C, task: &Task, new: &LockRef) {
    count(counter::LOCK_OPS);
    if budget::family_off(new.kind) {
        count(counter::BUDGET_ACQUIRES_SKIPPED);
        return;
    }
    let Some(stack) = HELD.get_ptr_mut(task.tid) else {
        return;
    };
    // SAFETY: see `acquire`.
    let stack = unsafe { &*stack };
    if stack.depth == 0 {
        return;
    }
    emit_lock_op(task, new.lock, new.kind, new.flags, op::ACQUIRE);
    let _ = record_dependencies_lazily(ctx, task, stack, new);
    emit_lock_op(task, new.lock, new.kind, new.flags, op::RELEASE);
}

/// A dependency `held → new` between two locks of which `held` is not on the task's stack:
/// lockdep's priming sequences (`__mmu_notifier_register` takes `fs_reclaim` then the
/// notifier pseudo-lock). The guard is the task's outermost exclusively held lock, if any.
#[allow(
    clippy::needless_borrows_for_generic_args,
    reason = "borrowed, not copied: the kprobe programs are near the 512-byte stack limit"
)]
// A frame of its own, off the call chain of the dependency scan its caller also runs: inlined,
// its locals pushed `__mmu_notifier_register`'s programs past the 512-byte combined stack.
#[inline(never)]
pub fn record_pair<C: StackIdContext>(ctx: &C, task: &Task, held: &LockRef, new: &LockRef) {
    if !module_keeps(held.flags, new.flags) {
        return;
    }
    let mut occurrence = Occurrence {
        key: DependencyKey {
            held_class: held.class,
            new_class: new.class,
            flags: 0,
            scope: new.scope,
        },
        seen: DependencySeen {
            count: 1,
            guard_class: 0,
            guard_lock: 0,
        },
        guard_kind: 0,
        guard_class_source: 0,
    };
    if let Some(stack) = HELD.get_ptr(task.tid) {
        // SAFETY: see `acquire`.
        let stack = unsafe { &*stack };
        if let Some(guard) = outermost_exclusive(stack) {
            occurrence.seen.guard_class = guard.class;
            occurrence.seen.guard_lock = guard.lock;
            occurrence.guard_kind = guard.kind;
            occurrence.guard_class_source = guard.class_source;
        }
    }
    let kept = if let Some(seen) = DEPENDENCIES.get_ptr_mut(&occurrence.key) {
        // SAFETY: map value pointer, a lower-bound count (as in the dependency scan).
        let seen = unsafe { &mut *seen };
        seen.count += 1;
        if !occurrence.loses_guard_of(seen) {
            return;
        }
        occurrence.drop_guard_of(seen);
        true
    } else {
        let Some(kept) = store_new(&occurrence) else {
            return;
        };
        kept
    };
    let stack_id = stack_id(ctx, 0);
    let held_entry = HeldLock {
        lock: held.lock,
        class: held.class,
        acquired_ns: 0,
        stack_id,
        flags: held.flags,
        kind: held.kind,
        class_source: held.class_source,
        caller: held.caller,
    };
    emit_new(task, &occurrence, &held_entry, new, stack_id, kept);
}

/// The outermost entry of a held stack that is held exclusively (not waiting, not read) and
/// is a real lock (every task in reclaim "holds" a pseudo-lock at once). An entry without a
/// return program ([`held_state::RETURN_INFERRED`]) is held: its task runs this probe.
fn outermost_exclusive(stack: &HeldStack) -> Option<&HeldLock> {
    let depth = stack.depth as usize;
    // Bounded (MAX_HELD_LOCKS); short in practice: the first entry usually qualifies.
    stack.locks.iter().take(depth).find(|held| {
        let waiting =
            held.flags & (held_state::WAITING | held_state::RETURN_INFERRED) == held_state::WAITING;
        held.lock != 0 && !waiting && held.flags & flags::NEW_READ == 0 && held.kind != kind::PSEUDO
    })
}

/// An acquire that cannot fail or block from the tracer's point of view (a pseudo-lock
/// taken for the duration of a call): dependencies now, held at once.
pub fn acquire_held<C: StackIdContext>(ctx: &C, task: &Task, new: &LockRef) {
    acquire(ctx, task, new, 0);
    acquire_returned(task, Some(new.lock), true);
}

/// Release `lock` if the task holds it; unlike [`release`] a miss is not counted (pseudo-lock
/// scopes whose start was filtered out, such as reclaim without `__GFP_FS`).
pub fn release_if_held(task: &Task, lock: u64) {
    let Some(stack) = HELD.get_ptr_mut(task.tid) else {
        return;
    };
    // SAFETY: see `acquire`.
    let stack = unsafe { &mut *stack };
    if update_innermost(stack, |held| held.lock == lock, tombstone) {
        pop_tombstones(stack);
        count(counter::LOCK_OPS);
        emit_lock_op(task, lock, tracer_common::kind::PSEUDO, 0, op::RELEASE);
    }
}

/// `downgrade_write`: the innermost held write entry of `lock` becomes a read entry.
pub fn downgrade(task: &Task, lock: u64) {
    let Some(stack) = HELD.get_ptr_mut(task.tid) else {
        return;
    };
    // SAFETY: see `acquire`.
    let stack = unsafe { &mut *stack };
    if !update_innermost(
        stack,
        |held| held.lock == lock,
        |entry| entry.flags |= flags::NEW_READ,
    ) {
        count(counter::UNMATCHED_RELEASE);
    }
}
