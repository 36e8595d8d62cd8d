//! Lock-operation state machine: turns per-thread lock operations into dependencies with
//! lockdep's semantics — the same rules the eBPF side applies in the kernel
//! (`tracer-ebpf/src/lock_state/`), checked case by case against one table
//! (`lockgraph/tests/rules.rs`):
//!
//! - a blocking acquire depends on the innermost held lock that is not a trylock and on
//!   every trylock held inside it, and on nothing further out (lockdep's
//!   `check_prevs_add`: the outer locks reach it through the innermost one);
//! - a lock of the acquired lock's class held anywhere further out is recursive locking
//!   (lockdep's `check_deadlock` looks at every held lock);
//! - a trylock depends on nothing; a lock is held from its acquire until its release (in
//!   any order) or a failed acquire;
//! - in a thread whose stream reports returns (`Acquired`, as the probes do), a
//!   lock is held once its acquire returned: a pending one is no dependency source or guard,
//!   an acquire of the innermost lock while it is pending is a nested entry point
//!   (`mutex_lock_io` calls `mutex_lock`: one acquisition), and a release of a pending lock
//!   means its return was missed. A thread that reports no returns holds a lock from its
//!   `Acquire` (hand-written traces);
//! - an acquire beyond [`MAX_HELD_LOCKS`] makes its dependencies but is not held (no source
//!   for what is taken inside it), and its release is expected;
//! - each dependency's guard is the outermost lock held exclusively (not for read, not a
//!   pseudo-lock) outside the dependency's held lock: its class and instance.

use std::collections::{HashMap, HashSet};

use crate::{
    graph::{ClassId, Dependency, Guard},
    model::{Frame, TaskInfo},
};

/// Held locks kept per thread, as lockdep's `MAX_LOCK_DEPTH`.
pub const MAX_HELD_LOCKS: usize = 48;

/// What happened to a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockOpKind {
    /// An acquire started. A blocking one creates its dependencies (see the module doc) at
    /// the attempt, whether or not it later succeeds; a trylock creates none.
    Acquire,
    /// The acquire returned with the lock held (also accepted without a prior `Acquire`,
    /// for a lock taken without dependencies).
    Acquired,
    /// The acquire returned without the lock: it is no longer held.
    Failed,
    /// The lock was released, in any order; matched on the instance, the most recent
    /// acquisition of it first.
    Release,
}

/// One lock operation by one thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockOp {
    pub kind: LockOpKind,
    pub tid: u32,
    pub pid: u32,
    pub comm: String,
    pub class: ClassId,
    /// Lock instance (address); releases are matched on it.
    pub lock: u64,
    pub read: bool,
    /// A recursive read (see [`crate::graph::Dependency::new_recursive`]); only with `read`.
    pub recursive: bool,
    pub try_lock: bool,
    /// A pseudo-lock (`fs_reclaim`): held by many tasks at once, so never a guard.
    pub pseudo: bool,
    pub timestamp_ns: u64,
    /// Where the operation happened (may be empty).
    pub stack: Vec<Frame>,
}

#[derive(Clone, Debug)]
struct HeldLock {
    class: ClassId,
    lock: u64,
    read: bool,
    recursive: bool,
    try_lock: bool,
    pseudo: bool,
    /// Acquire started, not returned yet (see the module doc).
    waiting: bool,
    stack: Vec<Frame>,
}

/// One thread's locks: the held stack, and how many acquires beyond it are outstanding.
#[derive(Clone, Debug, Default)]
struct ThreadLocks {
    held: Vec<HeldLock>,
    overflow: u64,
}

/// Counters of operations the simulator could not apply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimulatorStats {
    /// Acquires ignored because the thread already held [`MAX_HELD_LOCKS`].
    pub held_overflow: u64,
    /// Releases or failures of locks the thread did not hold.
    pub unmatched: u64,
    /// Releases of locks whose acquire had not returned (see [`LockOpKind::Acquired`]).
    pub return_missed: u64,
}

/// Per-thread held-lock stacks.
#[derive(Clone, Debug, Default)]
pub struct LockSimulator {
    threads: HashMap<u32, ThreadLocks>,
    /// Threads whose stream has reported a successful return (`Acquired`).
    reports_returns: HashSet<u32>,
    stats: SimulatorStats,
}

impl LockSimulator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stats(&self) -> SimulatorStats {
        self.stats
    }

    /// Classes (outermost first) and instances currently held by `tid`.
    pub fn held(&self, tid: u32) -> Vec<(ClassId, u64)> {
        self.threads
            .get(&tid)
            .map(|thread| thread.held.iter().map(|h| (h.class, h.lock)).collect())
            .unwrap_or_default()
    }

    /// Applies `op`, passing every dependency it creates to `emit`.
    pub fn apply(&mut self, op: LockOp, mut emit: impl FnMut(Dependency)) {
        if op.kind == LockOpKind::Acquired {
            self.reports_returns.insert(op.tid);
        }
        let two_phase = self.reports_returns.contains(&op.tid);
        let thread = self.threads.entry(op.tid).or_default();
        let held = &mut thread.held;
        match op.kind {
            LockOpKind::Acquire => {
                if two_phase
                    && held
                        .last()
                        .is_some_and(|top| top.waiting && top.lock == op.lock)
                {
                    return;
                }
                if !op.try_lock {
                    for index in dependency_sources(held, op.class, two_phase) {
                        let h = &held[index];
                        emit(Dependency {
                            held: h.class,
                            new: op.class,
                            held_read: h.read,
                            new_read: op.read,
                            held_recursive: h.recursive,
                            new_recursive: op.recursive,
                            timestamp_ns: op.timestamp_ns,
                            task: TaskInfo {
                                comm: op.comm.clone(),
                                pid: op.pid,
                                tid: op.tid,
                            },
                            new_stack: op.stack.clone(),
                            held_stack: h.stack.clone(),
                            guard: guard_outside(held, index, two_phase),
                        });
                    }
                }
                if held.len() >= MAX_HELD_LOCKS {
                    // Its dependencies are made, but it is no source itself.
                    self.stats.held_overflow += 1;
                    thread.overflow += 1;
                    return;
                }
                held.push(HeldLock::of(op, true));
            }
            LockOpKind::Acquired => {
                if let Some(entry) = held
                    .iter_mut()
                    .rev()
                    .find(|h| h.waiting && h.lock == op.lock)
                {
                    entry.waiting = false;
                } else if held
                    .iter()
                    .any(|h| h.lock == op.lock && h.class == op.class)
                {
                    // The outer return of a nested entry point.
                } else if held.len() >= MAX_HELD_LOCKS {
                    // The return of an acquire beyond the stack, or one more beyond it.
                    if thread.overflow == 0 {
                        self.stats.held_overflow += 1;
                        thread.overflow += 1;
                    }
                } else {
                    held.push(HeldLock::of(op, false));
                }
            }
            LockOpKind::Failed | LockOpKind::Release => {
                match held.iter().rposition(|h| h.lock == op.lock) {
                    Some(pos) => {
                        let entry = held.remove(pos);
                        if two_phase && entry.waiting && op.kind == LockOpKind::Release {
                            self.stats.return_missed += 1;
                        }
                    }
                    None if thread.overflow > 0 => thread.overflow -= 1,
                    None => self.stats.unmatched += 1,
                }
                if thread.held.is_empty() && thread.overflow == 0 {
                    self.threads.remove(&op.tid);
                }
            }
        }
    }
}

impl HeldLock {
    fn of(op: LockOp, waiting: bool) -> Self {
        HeldLock {
            class: op.class,
            lock: op.lock,
            read: op.read,
            recursive: op.read && op.recursive,
            try_lock: op.try_lock,
            pseudo: op.pseudo,
            waiting,
            stack: op.stack,
        }
    }
}

/// The held entries (indexes, innermost first) a blocking acquire of `class` depends on:
/// trylocks up to and including the innermost lock that is not one, then the innermost
/// entry of the same class further out, if any (recursive locking).
fn dependency_sources(held: &[HeldLock], class: ClassId, two_phase: bool) -> Vec<usize> {
    let mut sources = Vec::new();
    let mut inner = held
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, h)| !(two_phase && h.waiting));
    for (index, h) in inner.by_ref() {
        sources.push(index);
        if !h.try_lock {
            break;
        }
    }
    if !sources.iter().any(|&index| held[index].class == class) {
        if let Some((index, _)) = inner.find(|(_, h)| h.class == class) {
            sources.push(index);
        }
    }
    sources
}

/// The outermost lock held exclusively outside entry `index`: the guard of a dependency
/// from that entry.
fn guard_outside(held: &[HeldLock], index: usize, two_phase: bool) -> Option<Guard> {
    held[..index]
        .iter()
        .find(|h| !(h.read || h.pseudo || two_phase && h.waiting))
        .map(|h| Guard {
            class: h.class,
            lock: h.lock,
        })
}
