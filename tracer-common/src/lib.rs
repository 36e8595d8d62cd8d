//! The wire format between the eBPF programs and the `locktrace` daemon.
//!
//! Everything that crosses the kernel/user boundary is declared here once: `#[repr(C)]`,
//! fixed-width integers, explicit padding and a size assertion per type. No `bool` or `enum`
//! crosses the boundary; tags travel as `u32` and are converted with `TryFrom` in userspace.
#![no_std]

/// Length of a task's `comm` as the kernel stores it (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;
/// Longest lock class name kept (lockdep names are short: `&vmm->mutex`, `&mm->mmap_lock`).
pub const CLASS_NAME_LEN: usize = 64;
/// Held locks tracked per task; lockdep's `MAX_LOCK_DEPTH` is 48.
pub const MAX_HELD_LOCKS: usize = 48;
/// Frames kept per stack trace (the kernel's `PERF_MAX_STACK_DEPTH` is 127).
pub const MAX_STACK_DEPTH: usize = 32;

/// Tag in the first four bytes of every ring-buffer record.
pub mod record {
    /// A single lock operation ([`super::LockOpEvent`]), streamed only when asked for.
    pub const LOCK_OP: u32 = 1;
    /// A dependency seen for the first time ([`super::DependencyEvent`]).
    pub const DEPENDENCY: u32 = 2;
    /// A lock class's lockdep-style name, seen at its first `__mutex_init`/`__init_rwsem`
    /// ([`super::ClassEvent`]); always sent before any dependency that uses the class.
    pub const CLASS: u32 = 3;
    /// A traced thread group called `execve` ([`super::TaskEvent`], `trace -- COMMAND`
    /// only): its address space is a new one, and what the daemon knew of the old one no
    /// longer names its addresses.
    pub const EXEC: u32 = 4;
    /// A traced thread group that took traced locks is exiting before the daemon has read
    /// its maps ([`super::TaskEvent`], on the task-tree ring): it waits in its exit, its
    /// address space still whole, until the daemon has ([`super::tree_state::MAPPED`]) or
    /// a few milliseconds have passed.
    pub const EXITING: u32 = 5;
}

/// What the daemon knows of a thread group of the traced tree (`trace -- COMMAND`): the
/// values of the tree map.
pub mod tree_state {
    /// In the tree; no traced lock operation yet.
    pub const NEW: u32 = 0;
    /// It took a traced lock: its maps are needed to name its frames and static locks.
    pub const LOCKED: u32 = 1;
    /// The daemon has read its maps: it waits for nothing when it exits.
    pub const MAPPED: u32 = 2;
}

/// What happened to a lock, as carried in [`LockOpEvent::op`].
pub mod op {
    /// A blocking acquire has started (dependencies are created here, as in lockdep).
    pub const ACQUIRE: u32 = 1;
    /// The acquire returned with the lock held.
    pub const ACQUIRED: u32 = 2;
    /// The lock was released.
    pub const RELEASE: u32 = 3;
    /// A trylock or interruptible/killable/timed acquire returned without the lock.
    pub const ACQUIRE_FAILED: u32 = 4;
}

/// Lock types, as carried in the `kind` fields.
pub mod kind {
    pub const MUTEX: u32 = 1;
    pub const RWSEM: u32 = 2;
    /// A lockdep pseudo-lock such as `fs_reclaim`.
    pub const PSEUDO: u32 = 3;
    pub const PTHREAD_MUTEX: u32 = 4;
    pub const PTHREAD_RWLOCK: u32 = 5;
}

/// Bits of [`DependencyEvent::flags`] and [`LockOpEvent::flags`].
pub mod flags {
    /// The newly acquired lock was taken for reading (shared).
    pub const NEW_READ: u32 = 1 << 0;
    /// The already-held lock was held for reading (shared).
    pub const HELD_READ: u32 = 1 << 1;
    /// The operation was a trylock.
    pub const TRY: u32 = 1 << 2;
    /// A [`super::DependencyEvent`] for a dependency already sent, re-sent at its 2nd, 16th and
    /// 256th occurrence with fresh stacks: the daemon keeps the most complete ones (an
    /// occurrence can come without a stack: the stack map full, or its bucket taken over).
    pub const RESENT: u32 = 1 << 3;
    /// The newly acquired lock's read is a recursive one (lockdep's `read == 2`): a reader
    /// that does not wait for a waiting writer, as glibc's reader-preferring rwlocks' readers.
    pub const NEW_RECURSIVE_READ: u32 = 1 << 4;
    /// The already-held lock's read was a recursive one.
    pub const HELD_RECURSIVE_READ: u32 = 1 << 5;
    /// A dependency between two instances of one user-space class (a lock array, locks
    /// initialised in one wrapper): its [`super::DependencyKey`] holds the two instances, not
    /// the class twice, so that each ordered pair of instances is seen; the record still
    /// carries the class in `held_class`/`new_class` and the instances in `*_lock`.
    pub const INSTANCES: u32 = 1 << 6;
}

/// Occurrences of a dependency at which the eBPF side sends it again ([`flags::RESENT`]).
pub const fn is_resend_count(count: u64) -> bool {
    count == 2 || count == 16 || count == 256
}

/// How a class id was derived, as carried in the `*_class_source` fields.
pub mod class_source {
    /// The `struct lock_class_key` address passed to `__mutex_init`/`__init_rwsem`,
    /// exactly lockdep's class.
    pub const INIT_KEY: u32 = 1;
    /// The lock's own address (a static lock, named by its symbol; or a lock whose
    /// initialisation was not seen).
    pub const INSTANCE: u32 = 2;
    /// A fixed pseudo-lock id (see [`super::pseudo`]).
    pub const PSEUDO: u32 = 3;
    /// The return address of the `pthread_mutex_init`/`pthread_rwlock_init` call that
    /// initialised a user lock: one class per initialisation site, as lockdep has one per
    /// `mutex_init()` call.
    pub const INIT_SITE: u32 = 4;
}

/// Class ids of lockdep's pseudo-locks.
pub mod pseudo {
    pub const FS_RECLAIM: u64 = 1;
    pub const MMU_NOTIFIER_INVALIDATE_RANGE_START: u64 = 2;
}

/// One lock operation. Only streamed when the daemon asks for every operation
/// (`EMIT_LOCK_OPS`), which is a debugging aid: the normal stream is [`DependencyEvent`]s.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockOpEvent {
    /// Always [`record::LOCK_OP`].
    pub record: u32,
    /// One of [`op`].
    pub op: u32,
    /// One of [`kind`].
    pub kind: u32,
    /// Bits of [`flags`].
    pub flags: u32,
    pub timestamp_ns: u64,
    /// Address of the lock instance (kernel or user virtual address).
    pub lock: u64,
    /// Thread group id (what userspace calls the pid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    pub comm: [u8; COMM_LEN],
}
const _: () = assert!(core::mem::size_of::<LockOpEvent>() == 56);

/// A dependency `held → new` that the eBPF side had not seen before.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DependencyEvent {
    /// Always [`record::DEPENDENCY`].
    pub record: u32,
    /// Bits of [`flags`].
    pub flags: u32,
    pub held_class: u64,
    pub new_class: u64,
    /// The guard of this occurrence: the outermost lock the task held exclusively (not for
    /// read) outside `held`, its class and instance (both 0: none). A cycle whose every
    /// edge only ever ran under the same guard instance is guarded by it. A known
    /// dependency first seen under a guard is sent again, with no guard, the first time it
    /// runs under another one or none.
    pub guard_class: u64,
    pub guard_lock: u64,
    /// Lock instance addresses, for naming static locks by symbol.
    pub held_lock: u64,
    pub new_lock: u64,
    /// Return addresses into the functions that called the lock function (read from `[sp]`
    /// at a uprobe or kprobe entry, from the trampoline frame at fentry; 0: unknown, as for
    /// pseudo-locks). Frame-pointer walks skip this frame when the lock function (glibc)
    /// keeps no frame pointer, and kprobe stacks on some kernels lose it too.
    pub held_caller: u64,
    pub new_caller: u64,
    pub timestamp_ns: u64,
    /// One of [`kind`] each.
    pub held_kind: u32,
    pub new_kind: u32,
    /// One of [`class_source`] each.
    pub held_class_source: u32,
    pub new_class_source: u32,
    /// The guard's [`kind`] and [`class_source`] (0 without a guard), for naming its class
    /// when no dependency of its own has named it yet.
    pub guard_kind: u32,
    pub guard_class_source: u32,
    /// Stack-trace map ids (negative: no stack).
    pub held_stack_id: i32,
    pub new_stack_id: i32,
    pub pid: u32,
    pub tid: u32,
    pub comm: [u8; COMM_LEN],
}
const _: () = assert!(core::mem::size_of::<DependencyEvent>() == 136);

/// The name of a lock class (lockdep's: the stringified init expression, `&vmm->mutex`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassEvent {
    /// Always [`record::CLASS`].
    pub record: u32,
    /// One of [`kind`].
    pub kind: u32,
    /// The class id ([`class_source::INIT_KEY`]: the `lock_class_key` address).
    pub class: u64,
    /// NUL-terminated unless it fills the array.
    pub name: [u8; CLASS_NAME_LEN],
}
const _: () = assert!(core::mem::size_of::<ClassEvent>() == 16 + CLASS_NAME_LEN);

/// A traced thread group's `execve` ([`record::EXEC`]) or exit ([`record::EXITING`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskEvent {
    /// [`record::EXEC`] or [`record::EXITING`].
    pub record: u32,
    /// The thread group (its pid, also after a non-leader thread's exec).
    pub pid: u32,
}
const _: () = assert!(core::mem::size_of::<TaskEvent>() == 8);

/// Key of the in-kernel dependency set: the authoritative record of what was seen.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DependencyKey {
    pub held_class: u64,
    pub new_class: u64,
    /// [`flags::NEW_READ`], [`flags::HELD_READ`], [`flags::NEW_RECURSIVE_READ`],
    /// [`flags::HELD_RECURSIVE_READ`] and [`flags::INSTANCES`] only (with the latter, the two
    /// "class" fields are lock instances).
    pub flags: u32,
    /// Thread group the class ids belong to for user-space locks (addresses are per
    /// process); 0 for kernel classes.
    pub scope: u32,
}
const _: () = assert!(core::mem::size_of::<DependencyKey>() == 24);

/// What the in-kernel dependency set keeps per [`DependencyKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DependencySeen {
    /// Occurrences (a lower bound: concurrent increments may be lost).
    pub count: u64,
    /// The guard every occurrence so far ran under (class and instance), or 0 and 0 once
    /// one ran under another guard or none: see [`DependencyEvent::guard_class`].
    pub guard_class: u64,
    pub guard_lock: u64,
}
const _: () = assert!(core::mem::size_of::<DependencySeen>() == 24);

/// One entry of a task's held-lock stack, kept in the kernel per thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldLock {
    pub lock: u64,
    pub class: u64,
    pub acquired_ns: u64,
    /// Stack-trace map id of the acquisition (negative: none).
    pub stack_id: i32,
    /// Bits of [`flags`] for this lock (read, try) plus [`held_state`].
    pub flags: u32,
    pub kind: u32,
    pub class_source: u32,
    /// Return address into the lock function's caller (see
    /// [`DependencyEvent::held_caller`]); 0 when unknown.
    pub caller: u64,
}
const _: () = assert!(core::mem::size_of::<HeldLock>() == 48);

/// State bits of [`HeldLock::flags`] above the [`flags`] bits.
pub mod held_state {
    /// The acquire has started but not returned yet: the task is waiting for the lock.
    pub const WAITING: u32 = 1 << 8;
    /// The acquire was made from (within a few frames of) the `--module` filter's text.
    pub const FROM_MODULE: u32 = 1 << 9;
    /// The acquire function has no return probe (untimed pthread locks): its task's next
    /// lock operation proves it returned; until then a reader tells waiting from holding by
    /// what the task is doing (blocked in a futex wait on the lock, or not).
    pub const RETURN_INFERRED: u32 = 1 << 10;
}

/// A thread's held-lock stack, innermost last.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HeldStack {
    pub depth: u32,
    /// Thread group id of the owner.
    pub pid: u32,
    /// Acquires not recorded because the stack was full and not yet released: their
    /// releases (or failed returns) are expected, not unmatched.
    pub overflow: u32,
    pub _pad: u32,
    pub locks: [HeldLock; MAX_HELD_LOCKS],
}
const _: () = assert!(core::mem::size_of::<HeldStack>() == 16 + 48 * MAX_HELD_LOCKS);

/// A user lock, by process: the key of the user lock -> init site map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UserLock {
    pub lock: u64,
    pub tgid: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<UserLock>() == 16);

/// Counters kept per CPU by the eBPF side, indexed by the constants in [`counter`].
pub mod counter {
    /// Lock operations seen by the probes.
    pub const LOCK_OPS: u32 = 0;
    /// Dependency checks made (held × new pairs).
    pub const DEPENDENCY_CHECKS: u32 = 1;
    /// New dependencies sent to userspace.
    pub const DEPENDENCIES_SENT: u32 = 2;
    /// Records that did not fit the ring buffer (recovered by resync from the map).
    pub const RINGBUF_DROPPED: u32 = 3;
    /// Acquires not recorded because a task already held [`super::MAX_HELD_LOCKS`].
    pub const HELD_OVERFLOW: u32 = 4;
    /// New dependencies sent without being kept, because the dependency map was full.
    pub const DEPENDENCY_MAP_FULL: u32 = 5;
    /// Releases of locks that were not in the task's held stack (taken before tracing
    /// started, or through an entry point that is not traced).
    pub const UNMATCHED_RELEASE: u32 = 6;
    /// New dependencies neither kept (map full) nor sent (ring buffer full): gone.
    pub const DEPENDENCY_LOST: u32 = 7;
    /// Entries created in the dependency set: with what the daemon removed, its occupancy.
    pub const DEPENDENCIES_INSERTED: u32 = 8;
    /// Releases that found their lock still waiting: the acquire's return probe never ran
    /// (a kretprobe or fexit miss), so the lock was no dependency source while held.
    pub const RETURN_MISSED: u32 = 9;
    /// Entries created in and removed from each LRU map, by the probes: with the entries
    /// live (counted by the daemon), what the map evicted.
    pub const HELD_TASKS_CREATED: u32 = 10;
    pub const HELD_TASKS_REMOVED: u32 = 11;
    pub const LOCK_CLASSES_CREATED: u32 = 12;
    pub const USER_LOCK_CLASSES_CREATED: u32 = 13;
    pub const USER_LOCK_CLASSES_REMOVED: u32 = 14;
    pub const CLASS_NAMES_CREATED: u32 = 15;
    pub const CLASS_NAMES_REMOVED: u32 = 16;
    /// Releases of a lock by a thread other than its holder (a normal pthread mutex unlocked
    /// by another thread, which glibc lets through): the holder's entry is removed.
    pub const RELEASED_BY_OTHER: u32 = 17;
    /// Tasks forked by a traced task (`trace -- COMMAND`) that did not fit the map of the
    /// traced process tree: neither they nor their children are traced.
    pub const TRACED_TASKS_FULL: u32 = 18;
    /// Dependency checks the overhead budget skipped (sampling at quiet call sites).
    pub const BUDGET_CHECKS_SKIPPED: u32 = 19;
    /// Acquires not tracked because the overhead budget switched their family off.
    pub const BUDGET_ACQUIRES_SKIPPED: u32 = 20;
    /// Number of counters.
    pub const COUNT: u32 = 21;
}

/// The overhead budget's load shedding, written by the daemon into the `SHED` array at run
/// time (a load-time global cannot change while attached).
pub mod shed {
    /// Slot: dependency checks at quiet call sites are sampled one in `2^value` (0: all).
    pub const SAMPLE_SHIFT: u32 = 0;
    /// Slot: families switched off, a bit per lock kind ([`family_bit`]).
    pub const FAMILIES_OFF: u32 = 1;
    /// Number of slots.
    pub const SLOTS: u32 = 2;
    /// A call site is quiet once it made no new dependency for this long.
    pub const QUIET_NS: u64 = 2_000_000_000;

    /// The `FAMILIES_OFF` bit of lock kind `kind` ([`super::kind`]).
    pub const fn family_bit(kind: u32) -> u32 {
        1 << (kind & 31)
    }
}

/// Capacities of the eBPF maps, shared with the daemon (which drains the dependency set
/// and reports evictions against them).
pub mod capacity {
    /// Distinct dependencies kept in the kernel between two drains by the daemon.
    pub const DEPENDENCIES: u32 = 65536;
    /// Threads with a held-lock stack at once.
    pub const HELD_TASKS: u32 = 8192;
    /// Kernel lock instances with a known class (every inode's rwsems count).
    pub const LOCK_CLASSES: u32 = 65536;
    /// User lock instances with a known init site.
    pub const USER_LOCK_CLASSES: u32 = 65536;
    /// Class names already sent.
    pub const CLASS_NAMES: u32 = 16384;
    /// Live tasks of the traced process tree (`trace -- COMMAND`): its thread groups, and
    /// the threads they created (a fork tracepoint does not say whether the child is one).
    pub const TRACED_TASKS: u32 = 16384;
}

/// A raw user or kernel stack as stored in the stack-trace map.
pub type StackFrames = [u64; MAX_STACK_DEPTH];

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are `#[repr(C)]` with only integer fields and explicit padding,
    // so every bit pattern is valid.
    unsafe impl aya::Pod for super::LockOpEvent {}
    unsafe impl aya::Pod for super::DependencyEvent {}
    unsafe impl aya::Pod for super::DependencyKey {}
    unsafe impl aya::Pod for super::DependencySeen {}
    unsafe impl aya::Pod for super::ClassEvent {}
    unsafe impl aya::Pod for super::HeldLock {}
    unsafe impl aya::Pod for super::HeldStack {}
    unsafe impl aya::Pod for super::UserLock {}
    unsafe impl aya::Pod for super::TaskEvent {}
}
