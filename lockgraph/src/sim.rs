//! Lock-operation state machine: turns per-thread lock operations into dependencies with
//! lockdep's semantics.

use std::collections::HashMap;

use crate::{
    graph::{ClassId, Dependency},
    model::{Frame, TaskInfo},
};

/// Held locks kept per thread, as lockdep's `MAX_LOCK_DEPTH`.
pub const MAX_HELD_LOCKS: usize = 48;

/// What happened to a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockOpKind {
    /// An acquire started. A blocking one creates `held → new` for every held lock, at the
    /// attempt, whether or not it later succeeds; a trylock creates none.
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
    pub try_lock: bool,
    pub timestamp_ns: u64,
    /// Where the operation happened (may be empty).
    pub stack: Vec<Frame>,
}

#[derive(Clone, Debug)]
struct HeldLock {
    class: ClassId,
    lock: u64,
    read: bool,
    stack: Vec<Frame>,
}

/// Counters of operations the simulator could not apply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimulatorStats {
    /// Acquires ignored because the thread already held [`MAX_HELD_LOCKS`].
    pub held_overflow: u64,
    /// Releases or failures of locks the thread did not hold.
    pub unmatched: u64,
}

/// Per-thread held-lock stacks.
#[derive(Clone, Debug, Default)]
pub struct LockSimulator {
    threads: HashMap<u32, Vec<HeldLock>>,
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
            .map(|held| held.iter().map(|h| (h.class, h.lock)).collect())
            .unwrap_or_default()
    }

    /// Applies `op`, passing every dependency it creates to `emit`.
    pub fn apply(&mut self, op: LockOp, mut emit: impl FnMut(Dependency)) {
        let held = self.threads.entry(op.tid).or_default();
        match op.kind {
            LockOpKind::Acquire | LockOpKind::Acquired => {
                if op.kind == LockOpKind::Acquired
                    && held
                        .iter()
                        .rev()
                        .any(|h| h.lock == op.lock && h.class == op.class)
                {
                    return;
                }
                if held.len() >= MAX_HELD_LOCKS {
                    self.stats.held_overflow += 1;
                    return;
                }
                if op.kind == LockOpKind::Acquire && !op.try_lock {
                    // A write-held outermost lock guards every dependency taken above it.
                    let guard = held
                        .first()
                        .filter(|outer| !outer.read)
                        .map(|outer| outer.class);
                    for (i, h) in held.iter().enumerate() {
                        emit(Dependency {
                            held: h.class,
                            new: op.class,
                            held_read: h.read,
                            new_read: op.read,
                            timestamp_ns: op.timestamp_ns,
                            task: TaskInfo {
                                comm: op.comm.clone(),
                                pid: op.pid,
                                tid: op.tid,
                            },
                            new_stack: op.stack.clone(),
                            held_stack: h.stack.clone(),
                            guard: if i == 0 { None } else { guard },
                        });
                    }
                }
                held.push(HeldLock {
                    class: op.class,
                    lock: op.lock,
                    read: op.read,
                    stack: op.stack,
                });
            }
            LockOpKind::Failed | LockOpKind::Release => {
                match held.iter().rposition(|h| h.lock == op.lock) {
                    Some(pos) => {
                        held.remove(pos);
                    }
                    None => self.stats.unmatched += 1,
                }
                if held.is_empty() {
                    self.threads.remove(&op.tid);
                }
            }
        }
    }
}
