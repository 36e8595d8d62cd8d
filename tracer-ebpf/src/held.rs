//! Per-thread held-lock stacks and in-kernel dependency dedup, with lockdep's semantics:
//! a blocking acquire creates `held → new` for every lock held at the attempt; a trylock
//! creates none; a lock is held once its acquire returns successfully; release may be out
//! of order.
use aya_ebpf::{
    bindings::{BPF_F_REUSE_STACKID, BPF_NOEXIST},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_stack, bpf_ktime_get_ns,
        bpf_loop,
    },
    helpers::generated::bpf_get_current_comm as raw_get_current_comm,
    programs::tracing::StackIdContext,
    EbpfContext,
};
use tracer_common::{
    counter, flags, held_state, op, record, DependencyEvent, DependencyKey, HeldLock, HeldStack,
    is_resend_count, LockOpEvent, COMM_LEN, MAX_HELD_LOCKS,
};

use crate::maps::{
    count, global, global_u64, DEPENDENCIES, EMIT_LOCK_OPS, EVENTS, FILTER_COMM, FILTER_SELF_TGID,
    FILTER_MODULE_END, FILTER_MODULE_START, FILTER_PID, HELD, HELD_INIT, SITE_STACKS, STACKS,
    STACK_OWNER,
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
    /// Return address of the user lock function's caller, 0 for kernel locks: see
    /// [`tracer_common::DependencyEvent::new_caller`].
    pub caller: u64,
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
    if task.pid == global(&FILTER_SELF_TGID) {
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

use crate::maps::{MODULE_FRAMES, MODULE_FRAMES_SCRATCH};

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
    // A per-CPU scratch buffer, not the stack: the deepest call chains need all 512 bytes.
    let Some(frames) = MODULE_FRAMES_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: the helper writes at most the buffer's size into this CPU's slot.
    let frames = unsafe {
        let len = bpf_get_stack(ctx.as_ptr(), frames.cast(), (MODULE_FRAMES * 8) as u32, 0);
        if len <= 0 {
            return 0;
        }
        &*frames
    };
    for frame in frames {
        if *frame >= start && *frame < end {
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
    // Field by field into the reservation (no event-sized temporary on the 512-byte stack,
    // which the deepest call chains share).
    let event = entry.as_mut_ptr();
    // SAFETY: `event` is a reserved, writable record of the right size.
    unsafe {
        (*event).record = record::LOCK_OP;
        (*event).op = operation;
        (*event).kind = kind;
        (*event).flags = lock_flags & (flags::NEW_READ | flags::TRY);
        (*event).timestamp_ns = bpf_ktime_get_ns();
        (*event).lock = lock;
        (*event).pid = task.pid;
        (*event).tid = task.tid;
        raw_get_current_comm((&raw mut (*event).comm).cast(), COMM_LEN as u32);
    }
    entry.submit(0);
}

/// The id of the current stack in `STACKS`, or -1. A hash bucket taken by another stack
/// (-EEXIST) is taken over: the daemon symbolizes a dependency's stacks as soon as it
/// arrives, so an older id losing its stack costs less than this one having none.
#[inline(always)]
fn stack_id<C: StackIdContext>(ctx: &C, stack_flags: u64) -> i32 {
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
/// the first one seen at its call site; a new dependency still gets its own ([`acquire`]).
#[inline(always)]
fn site_stack_id<C: StackIdContext>(ctx: &C, caller: u64) -> i32 {
    if caller == 0 {
        return stack_id(ctx, 0);
    }
    // SAFETY: plain map value.
    if let Some(&id) = unsafe { SITE_STACKS.get(caller) } {
        if STACK_OWNER.get(id as u32).is_some_and(|&owner| owner == caller) {
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

/// A lock acquire has started. `stack_flags` is passed to `bpf_get_stackid`
/// (`BPF_F_USER_STACK` for user locks).
///
/// Kernel locks: the held entry takes its call site's stack ([`site_stack_id`]) and the
/// stack of this very acquisition is walked only when a dependency is new, so in steady
/// state an acquire walks no stack — the walk is most of what a per-acquire tracer costs.
pub fn acquire<C: StackIdContext>(ctx: &C, task: &Task, new: &LockRef, stack_flags: u64) {
    count(counter::LOCK_OPS);
    emit_lock_op(task, new.lock, new.kind, new.flags, op::ACQUIRE);
    let Some(stack) = held_stack(task) else {
        return;
    };
    // SAFETY: pointer into this thread's map value; only this thread writes it.
    let stack = unsafe { &mut *stack };
    let stack_id = if stack_flags == 0 {
        let site = site_stack_id(ctx, new.caller);
        if new.flags & flags::TRY == 0 {
            record_dependencies_lazily(ctx, task, stack, new);
        }
        site
    } else {
        let id = stack_id(ctx, stack_flags);
        if new.flags & flags::TRY == 0 {
            record_dependencies(task, stack, new, id);
        }
        id
    };
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
        caller: new.caller,
    };
    stack.depth = depth as u32 + 1;
}

/// State of one [`record_dependencies`] scan, shared with the `bpf_loop` callback.
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

/// Record every dependency, counting the known ones and emitting the new ones.
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
/// already depend on that one, so `new` is connected to them through it. Both scans run in
/// `bpf_loop` (Linux 5.17+): the verifier checks a body once instead of unrolling 48
/// iterations per program, which keeps loading ~90 programs under TCG within seconds.
fn record_dependencies(task: &Task, stack: &HeldStack, new: &LockRef, new_stack_id: i32) {
    scan_dependencies(task, stack, new, new_stack_id, SCAN_RECORD);
}

/// [`record_dependencies`] with the stack, the costly part, walked only when some
/// dependency is new: in steady state every acquire finds its dependencies known (every
/// allocation under a lock its `held → fs_reclaim`) and walks nothing.
#[inline(always)] // one call level less: kprobe programs are near the 512-byte combined stack limit
fn record_dependencies_lazily<C: StackIdContext>(ctx: &C, task: &Task, stack: &HeldStack, new: &LockRef) {
    if scan_dependencies(task, stack, new, -1, SCAN_PROBE) {
        let stack_id = stack_id(ctx, 0);
        scan_dependencies(task, stack, new, stack_id, SCAN_EMIT_NEW);
    }
}

/// One scan in `mode`; whether a probe scan met a new dependency.
fn scan_dependencies(task: &Task, stack: &HeldStack, new: &LockRef, new_stack_id: i32, mode: u32) -> bool {
    let depth = stack.depth;
    if depth == 0 {
        return false;
    }
    let loops = if depth > MAX_HELD_LOCKS as u32 { MAX_HELD_LOCKS as u32 } else { depth };
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
        bpf_loop(loops, guard_step as *mut core::ffi::c_void, (&raw mut scan).cast(), 0);
        bpf_loop(loops, dependency_step as *mut core::ffi::c_void, (&raw mut scan).cast(), 0);
    }
    scan.missing != 0
}

/// Finds the outermost held lock: the guard candidate of every edge taken inside it.
extern "C" fn guard_step(index: u64, context: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `context` is the `DependencyScan` of `record_dependencies`, alive for the loop.
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

extern "C" fn dependency_step(step: u64, context: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `context` is the `DependencyScan` of `record_dependencies`, alive for the loop.
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
    let guard = if (index as u32) > scan.guard_index { scan.guard } else { 0 };
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
                    let resent = DependencyKey { flags: key.flags | flags::RESENT, ..key };
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
fn emit_dependency(task: &Task, key: &DependencyKey, held: &HeldLock, new: &LockRef, new_stack_id: i32) {
    let Some(mut entry) = EVENTS.reserve::<DependencyEvent>(0) else {
        count(counter::RINGBUF_DROPPED);
        return;
    };
    count(counter::DEPENDENCIES_SENT);
    let event = entry.as_mut_ptr();
    // SAFETY: as in `emit_lock_op`.
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

/// The innermost pending acquire returned. `lock` is `None` when the return probe cannot
/// see the lock argument (uretprobe), in which case the innermost waiting entry is meant.
pub fn acquire_returned(task: &Task, lock: Option<u64>, acquired: bool) {
    let Some(stack) = HELD.get_ptr_mut(task.tid) else {
        return;
    };
    // SAFETY: see `acquire`.
    let stack = unsafe { &mut *stack };
    let mut found: Option<HeldLock> = None;
    let matched = update_innermost(
        stack,
        |held| held.flags & held_state::WAITING != 0 && lock.is_none_or(|lock| held.lock == lock),
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
    emit_lock_op(task, lock, kind, 0, op::RELEASE);
    let Some(stack) = HELD.get_ptr_mut(task.tid) else {
        count(counter::UNMATCHED_RELEASE);
        return;
    };
    // SAFETY: see `acquire`.
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
    HELD.get_ptr(task.tid).is_some_and(|stack| unsafe { (*stack).depth } > 0)
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
    record_dependencies_lazily(ctx, task, stack, new);
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
    if !update_innermost(stack, |held| held.lock == lock, |entry| entry.flags |= flags::NEW_READ) {
        count(counter::UNMATCHED_RELEASE);
    }
}
