//! Per-thread held-lock stacks and in-kernel dependency dedup, with lockdep's semantics:
//! a blocking acquire creates `held → new` for every lock held at the attempt; a trylock
//! creates none; a lock is held once its acquire returns successfully; release may be out
//! of order.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_stack, bpf_ktime_get_ns,
    },
    programs::tracing::StackIdContext,
    EbpfContext,
};
use tracer_common::{
    counter, flags, held_state, op, record, DependencyEvent, DependencyKey, HeldLock, HeldStack,
    LockOpEvent, COMM_LEN, MAX_HELD_LOCKS,
};

use crate::maps::{
    count, global, global_u64, DEPENDENCIES, EMIT_LOCK_OPS, EVENTS, FILTER_COMM,
    FILTER_MODULE_END, FILTER_MODULE_START, FILTER_PID, HELD, HELD_INIT, STACKS,
};

/// A lock as a probe sees it.
pub struct LockRef {
    pub lock: u64,
    pub class: u64,
    pub kind: u32,
    pub class_source: u32,
    /// [`flags::NEW_READ`] and/or [`flags::TRY`].
    pub flags: u32,
    /// Thread group the class belongs to (user locks), 0 for kernel classes.
    pub scope: u32,
}

pub struct Task {
    pub pid: u32,
    pub tid: u32,
}

/// The current task, or `None` when the load-time pid filter excludes it.
#[inline(always)]
pub fn current_task() -> Option<Task> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let task = Task { pid: (pid_tgid >> 32) as u32, tid: pid_tgid as u32 };
    let filter = global(&FILTER_PID);
    if filter != 0 && filter != task.pid {
        return None;
    }
    if !comm_matches() {
        return None;
    }
    Some(task)
}

/// The load-time `--comm` filter (an all-zero `FILTER_COMM` keeps every task).
#[inline(always)]
fn comm_matches() -> bool {
    // SAFETY: read-only global; volatile so the loader's value is read.
    let wanted: [u8; COMM_LEN] = unsafe { core::ptr::read_volatile(&FILTER_COMM) };
    if wanted[0] == 0 {
        return true;
    }
    let Ok(comm) = bpf_get_current_comm() else {
        return false;
    };
    for i in 0..COMM_LEN {
        if comm[i] != wanted[i] {
            return false;
        }
        if wanted[i] == 0 {
            break;
        }
    }
    true
}

/// Frames of the kernel stack looked at by the `--module` filter.
const MODULE_FRAMES: usize = 8;

/// Whether the `--module` filter is on; when it is, whether this acquire was made from
/// (within [`MODULE_FRAMES`] frames of) the module's text. Returns [`held_state::FROM_MODULE`]
/// or 0.
#[inline(always)]
pub fn module_bit<C: EbpfContext>(ctx: &C) -> u32 {
    let end = global_u64(&FILTER_MODULE_END);
    if end == 0 {
        return 0;
    }
    let start = global_u64(&FILTER_MODULE_START);
    let mut frames = [0u64; MODULE_FRAMES];
    // SAFETY: the helper writes at most the buffer's size.
    let len = unsafe {
        bpf_get_stack(ctx.as_ptr(), frames.as_mut_ptr().cast(), core::mem::size_of_val(&frames) as u32, 0)
    };
    if len <= 0 {
        return 0;
    }
    for frame in frames {
        if frame >= start && frame < end {
            return held_state::FROM_MODULE;
        }
    }
    0
}

/// A dependency is kept unless the `--module` filter is on and neither side came from it.
#[inline(always)]
fn module_keeps(held_flags: u32, new_flags: u32) -> bool {
    global_u64(&FILTER_MODULE_END) == 0 || (held_flags | new_flags) & held_state::FROM_MODULE != 0
}

fn held_stack(task: &Task) -> Option<*mut HeldStack> {
    if let Some(stack) = HELD.get_ptr_mut(task.tid) {
        return Some(stack);
    }
    let init = HELD_INIT.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch value; zero it and stamp the owner before inserting a copy.
    unsafe {
        (*init).depth = 0;
        (*init).pid = task.pid;
        #[expect(
            clippy::needless_borrows_for_generic_args,
            reason = "by value would copy the 2 KiB stack onto the 512-byte BPF stack"
        )]
        HELD.insert(task.tid, &*init, u64::from(BPF_NOEXIST)).ok();
    }
    HELD.get_ptr_mut(task.tid)
}

/// Forget a thread's held locks (it exited).
pub fn forget_task(tid: u32) {
    let _ = HELD.remove(tid);
}

fn emit_lock_op(task: &Task, lock: u64, kind: u32, lock_flags: u32, operation: u32) {
    if global(&EMIT_LOCK_OPS) == 0 {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<LockOpEvent>(0) else {
        count(counter::RINGBUF_DROPPED);
        return;
    };
    entry.write(LockOpEvent {
        record: record::LOCK_OP,
        op: operation,
        kind,
        flags: lock_flags & (flags::NEW_READ | flags::TRY),
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
        lock,
        pid: task.pid,
        tid: task.tid,
        comm: bpf_get_current_comm().unwrap_or_default(),
    });
    entry.submit(0);
}

/// A lock acquire has started. `stack_flags` is passed to `bpf_get_stackid`
/// (`BPF_F_USER_STACK` for user locks).
pub fn acquire<C: StackIdContext>(ctx: &C, task: &Task, new: &LockRef, stack_flags: u64) {
    count(counter::LOCK_OPS);
    emit_lock_op(task, new.lock, new.kind, new.flags, op::ACQUIRE);
    let Some(stack) = held_stack(task) else {
        return;
    };
    let stack_id = ctx.get_stackid(&STACKS, stack_flags).map(|id| id as i32).unwrap_or(-1);
    // SAFETY: pointer into this thread's map value; only this thread writes it.
    let stack = unsafe { &mut *stack };
    if new.flags & flags::TRY == 0 {
        record_dependencies(task, stack, new, stack_id);
    }
    let depth = stack.depth as usize;
    let Some(slot) = stack.locks.get_mut(depth) else {
        count(counter::HELD_OVERFLOW);
        return;
    };
    *slot = HeldLock {
        lock: new.lock,
        class: new.class,
        acquired_ns: unsafe { bpf_ktime_get_ns() },
        stack_id,
        flags: (new.flags & (flags::NEW_READ | flags::TRY | held_state::FROM_MODULE))
            | held_state::WAITING,
        kind: new.kind,
        class_source: new.class_source,
    };
    stack.depth = depth as u32 + 1;
}

fn record_dependencies(task: &Task, stack: &HeldStack, new: &LockRef, new_stack_id: i32) {
    let depth = stack.depth as usize;
    let mut guard = 0u64;
    for i in 0..MAX_HELD_LOCKS {
        if i >= depth {
            break;
        }
        let held = &stack.locks[i];
        if held.flags & held_state::WAITING != 0 || !module_keeps(held.flags, new.flags) {
            continue;
        }
        count(counter::DEPENDENCY_CHECKS);
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
        if guard == 0 {
            guard = held.class;
        }
        if let Some(seen) = DEPENDENCIES.get_ptr_mut(key) {
            // SAFETY: map value pointer. Not atomic (core has no atomic RMW for the BPF
            // target): a concurrent increment may be lost, so the count is a lower bound.
            unsafe { *seen += 1 };
            continue;
        }
        if DEPENDENCIES.insert(key, 1, u64::from(BPF_NOEXIST)).is_err() {
            // Either another CPU inserted it first (it reports it) or the map is full.
            if DEPENDENCIES.get_ptr(key).is_some() {
                continue;
            }
            count(counter::DEPENDENCY_MAP_FULL);
        }
        emit_dependency(task, &key, held, new, new_stack_id);
    }
}

fn emit_dependency(task: &Task, key: &DependencyKey, held: &HeldLock, new: &LockRef, new_stack_id: i32) {
    let Some(mut entry) = EVENTS.reserve::<DependencyEvent>(0) else {
        count(counter::RINGBUF_DROPPED);
        return;
    };
    count(counter::DEPENDENCIES_SENT);
    entry.write(DependencyEvent {
        record: record::DEPENDENCY,
        flags: key.flags,
        held_class: key.held_class,
        new_class: key.new_class,
        guard_class: key.guard_class,
        held_lock: held.lock,
        new_lock: new.lock,
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
        held_kind: held.kind,
        new_kind: new.kind,
        held_class_source: held.class_source,
        new_class_source: new.class_source,
        held_stack_id: held.stack_id,
        new_stack_id,
        pid: task.pid,
        tid: task.tid,
        comm: bpf_get_current_comm().unwrap_or_default(),
    });
    entry.submit(0);
}

/// The innermost pending acquire returned. `lock` is `None` when the return probe cannot
/// see the lock argument (uretprobe), in which case the innermost waiting entry is meant.
pub fn acquire_returned(task: &Task, lock: Option<u64>, acquired: bool) {
    let Some(stack) = HELD.get_ptr_mut(task.tid) else {
        return;
    };
    // SAFETY: see `acquire`.
    let stack = unsafe { &mut *stack };
    let Some(index) = find_innermost(stack, |held| {
        held.flags & held_state::WAITING != 0 && lock.is_none_or(|lock| held.lock == lock)
    }) else {
        return;
    };
    // `get_mut`, not indexing: a bounds-check panic path is code the verifier rejects.
    let Some(entry) = stack.locks.get_mut(index) else {
        return;
    };
    let held = *entry;
    if acquired {
        entry.flags &= !held_state::WAITING;
        emit_lock_op(task, held.lock, held.kind, held.flags, op::ACQUIRED);
    } else {
        remove_at(stack, index);
        emit_lock_op(task, held.lock, held.kind, held.flags, op::ACQUIRE_FAILED);
    }
}

/// A lock was released (possibly out of order).
pub fn release(task: &Task, lock: u64, kind: u32) {
    count(counter::LOCK_OPS);
    emit_lock_op(task, lock, kind, 0, op::RELEASE);
    let Some(stack) = HELD.get_ptr_mut(task.tid) else {
        count(counter::UNMATCHED_RELEASE);
        return;
    };
    // SAFETY: see `acquire`.
    let stack = unsafe { &mut *stack };
    match find_innermost(stack, |held| held.lock == lock) {
        Some(index) => remove_at(stack, index),
        None => count(counter::UNMATCHED_RELEASE),
    }
}

#[expect(clippy::manual_find, reason = "an explicit constant-bounded loop for the verifier")]
fn find_innermost(stack: &HeldStack, matches: impl Fn(&HeldLock) -> bool) -> Option<usize> {
    // Loop over constant bounds (not `depth`) so that the verifier sees every index in range.
    let depth = stack.depth as usize;
    for index in (0..MAX_HELD_LOCKS).rev() {
        if index < depth && matches(&stack.locks[index]) {
            return Some(index);
        }
    }
    None
}

fn remove_at(stack: &mut HeldStack, index: usize) {
    let depth = stack.depth as usize;
    if depth == 0 || depth > MAX_HELD_LOCKS {
        return;
    }
    for slot in 0..MAX_HELD_LOCKS - 1 {
        if slot + 1 >= depth {
            break;
        }
        if slot >= index {
            stack.locks[slot] = stack.locks[slot + 1];
        }
    }
    stack.depth = depth as u32 - 1;
}

/// A lockdep-style "acquire and release at once" of a pseudo-lock (`fs_reclaim` at an
/// allocation that may recurse into the filesystem): dependencies from every held lock, no
/// held state left behind. Cheap when the task holds nothing (no map insert).
pub fn acquire_release<C: StackIdContext>(ctx: &C, task: &Task, new: &LockRef) {
    count(counter::LOCK_OPS);
    let Some(stack) = HELD.get_ptr_mut(task.tid) else {
        return;
    };
    // SAFETY: see `acquire`.
    let stack = unsafe { &*stack };
    if stack.depth == 0 {
        return;
    }
    emit_lock_op(task, new.lock, new.kind, new.flags, op::ACQUIRE);
    let stack_id = ctx.get_stackid(&STACKS, 0).map(|id| id as i32).unwrap_or(-1);
    record_dependencies(task, stack, new, stack_id);
    emit_lock_op(task, new.lock, new.kind, new.flags, op::RELEASE);
}

/// A dependency `held → new` between two locks of which `held` is not on the task's stack:
/// lockdep's priming sequences (`__mmu_notifier_register` takes `fs_reclaim` then the
/// notifier pseudo-lock). The guard is the task's outermost held lock, if any.
pub fn record_pair<C: StackIdContext>(ctx: &C, task: &Task, held: &LockRef, new: &LockRef) {
    if !module_keeps(held.flags, new.flags) {
        return;
    }
    let mut guard = 0;
    if let Some(stack) = HELD.get_ptr(task.tid) {
        // SAFETY: see `acquire`.
        let stack = unsafe { &*stack };
        if stack.depth > 0 {
            if let Some(outer) = stack.locks.first() {
                guard = outer.class;
            }
        }
    }
    let key = DependencyKey {
        held_class: held.class,
        new_class: new.class,
        guard_class: guard,
        flags: 0,
        scope: new.scope,
    };
    if let Some(seen) = DEPENDENCIES.get_ptr_mut(key) {
        // SAFETY: see `record_dependencies`.
        unsafe { *seen += 1 };
        return;
    }
    if DEPENDENCIES.insert(key, 1, u64::from(BPF_NOEXIST)).is_err() {
        if DEPENDENCIES.get_ptr(key).is_some() {
            return;
        }
        count(counter::DEPENDENCY_MAP_FULL);
    }
    let stack_id = ctx.get_stackid(&STACKS, 0).map(|id| id as i32).unwrap_or(-1);
    let held_entry = HeldLock {
        lock: held.lock,
        class: held.class,
        acquired_ns: 0,
        stack_id,
        flags: held.flags,
        kind: held.kind,
        class_source: held.class_source,
    };
    emit_dependency(task, &key, &held_entry, new, stack_id);
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
    if let Some(index) = find_innermost(stack, |held| held.lock == lock) {
        count(counter::LOCK_OPS);
        emit_lock_op(task, lock, tracer_common::kind::PSEUDO, 0, op::RELEASE);
        remove_at(stack, index);
    }
}

/// `downgrade_write`: the innermost held write entry of `lock` becomes a read entry.
pub fn downgrade(task: &Task, lock: u64) {
    let Some(stack) = HELD.get_ptr_mut(task.tid) else {
        return;
    };
    // SAFETY: see `acquire`.
    let stack = unsafe { &mut *stack };
    let Some(index) = find_innermost(stack, |held| held.lock == lock) else {
        count(counter::UNMATCHED_RELEASE);
        return;
    };
    if let Some(entry) = stack.locks.get_mut(index) {
        entry.flags |= flags::NEW_READ;
    }
}
