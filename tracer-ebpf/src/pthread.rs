//! User-space locks: uprobes and uretprobes on glibc's pthread mutex and rwlock functions.
//! Classes are scoped to the thread group (addresses are per process): a lock initialised
//! by `pthread_*_init` while tracing belongs to its initialisation site's class, as a
//! kernel lock to its `mutex_init()` call's; any other lock is a class of its own.
use aya_ebpf::{
    bindings::BPF_F_USER_STACK,
    helpers::bpf_probe_read_user,
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use tracer_common::{class_source, counter, flags, kind, UserLock};

use crate::{
    lock_state::{self, current_task, LockRef},
    maps::{global, insert_counted, remove_counted, GLIBC_MUTEX_LAYOUT, USER_LOCK_CLASS},
};

fn lock_arg(ctx: &ProbeContext) -> Option<u64> {
    ctx.arg::<u64>(0).filter(|lock| *lock != 0)
}

/// The return address into the lock function's caller: at the entry of the probed
/// function it is at `[sp]`. glibc keeps no frame pointer, so the frame-pointer walk of
/// `bpf_get_stackid` skips exactly this frame; userspace puts it back. 0 if unreadable.
#[inline(always)]
fn caller(ctx: &ProbeContext) -> u64 {
    // SAFETY: `regs` is the probe's register context; x86-64 keeps the stack pointer in
    // `rsp`. The read of user memory is checked by the helper.
    unsafe {
        let sp = (*ctx.regs).rsp;
        bpf_probe_read_user(sp as *const u64).unwrap_or(0)
    }
}

/// The head of glibc's x86-64 `pthread_mutex_t` (`struct __pthread_mutex_s`): `__lock`,
/// `__count` (recursion depth), `__owner` (tid), `__nusers`, `__kind`.
#[repr(C)]
#[derive(Clone, Copy)]
struct MutexHead {
    lock: i32,
    count: u32,
    owner: i32,
    nusers: u32,
    kind: i32,
}

/// `PTHREAD_MUTEX_RECURSIVE_NP`, in the low bits of `__kind` (robust and PI mutexes add
/// flag bits above them).
const MUTEX_TYPE_MASK: i32 = 3;
const MUTEX_RECURSIVE: i32 = 1;
const MUTEX_ERRORCHECK: i32 = 2;

/// The mutex's head, read from the process (never written), if the library is glibc.
/// Other libcs lay the mutex out differently: nothing is read.
#[inline(always)]
fn mutex_head(lock: u64) -> Option<MutexHead> {
    if global(&GLIBC_MUTEX_LAYOUT) == 0 {
        return None;
    }
    // SAFETY: a checked read of user memory into a local copy.
    unsafe { bpf_probe_read_user(lock as *const MutexHead) }.ok()
}

/// The mutex's head if it is a recursive glibc mutex.
#[inline(always)]
fn recursive_mutex(lock: u64) -> Option<MutexHead> {
    mutex_head(lock).filter(|head| head.kind & MUTEX_TYPE_MASK == MUTEX_RECURSIVE)
}

/// Robust, priority-inheritance and priority-protected mutexes: flag bits above the type.
const MUTEX_PROTOCOL_FLAGS: i32 = 0x70;

/// Whether glibc lets a thread other than the owner unlock the mutex: normal and adaptive
/// mutexes (undefined behaviour it does not check); error-checking, recursive, robust and
/// PI mutexes refuse with EPERM, and the owner still holds them.
fn foreign_unlock_releases(head: &MutexHead) -> bool {
    head.kind & MUTEX_PROTOCOL_FLAGS == 0
        && head.kind & MUTEX_TYPE_MASK != MUTEX_RECURSIVE
        && head.kind & MUTEX_TYPE_MASK != MUTEX_ERRORCHECK
}

/// Offset of `__flags` (the rwlock's kind) in glibc's x86-64 `pthread_rwlock_t`.
const RWLOCK_FLAGS_OFFSET: u64 = 48;
/// `PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP`: the one kind whose readers wait for a
/// waiting writer. glibc treats every other kind (the default `PREFER_READER`, and
/// `PREFER_WRITER`) as reader-preferring.
const RWLOCK_WRITER_NONRECURSIVE: u32 = 2;

/// Whether a read of this rwlock is a recursive read (lockdep's `read == 2`): a glibc
/// rwlock of a reader-preferring kind. Unknown layouts count as non-recursive, which
/// reports every cycle a plain read closes.
#[inline(always)]
fn recursive_read(lock: u64) -> bool {
    if global(&GLIBC_MUTEX_LAYOUT) == 0 {
        return false;
    }
    // SAFETY: a checked read of user memory into a local copy.
    let kind = unsafe { bpf_probe_read_user((lock + RWLOCK_FLAGS_OFFSET) as *const u32) };
    kind.is_ok_and(|kind| kind != RWLOCK_WRITER_NONRECURSIVE)
}

fn try_acquire(ctx: &ProbeContext, lock_kind: u32, mut lock_flags: u32) -> Option<()> {
    let task = current_task()?;
    let lock = lock_arg(ctx)?;
    if lock_kind == kind::PTHREAD_RWLOCK
        && lock_flags & flags::NEW_READ != 0
        && recursive_read(lock)
    {
        lock_flags |= flags::NEW_RECURSIVE_READ;
    }
    // Its owner taking a recursive mutex again only counts up: no wait, no dependency, and
    // nothing to hold (the outermost acquisition is held until the outermost unlock).
    if lock_kind == kind::PTHREAD_MUTEX
        && recursive_mutex(lock).is_some_and(|head| head.owner as u32 == task.tid)
    {
        return None;
    }
    let key = UserLock {
        lock,
        tgid: task.pid,
        _pad: 0,
    };
    // SAFETY: plain map value.
    let (class, source) = match unsafe { USER_LOCK_CLASS.get(key) } {
        Some(&site) => (site, class_source::INIT_SITE),
        None => (lock, class_source::INSTANCE),
    };
    let new = LockRef {
        lock,
        class,
        kind: lock_kind,
        class_source: source,
        flags: lock_flags,
        scope: task.pid,
        caller: caller(ctx),
    };
    lock_state::acquire(ctx, &task, &new, u64::from(BPF_F_USER_STACK));
    Some(())
}

fn try_acquire_returned(ctx: &RetProbeContext) -> Option<()> {
    let task = current_task()?;
    // Every traced pthread lock function returns 0 on success, an error number otherwise.
    let status: i32 = ctx.ret();
    lock_state::acquire_returned(&task, None, status == 0);
    Some(())
}

fn try_release(ctx: &ProbeContext, lock_kind: u32) -> Option<()> {
    let task = current_task()?;
    let lock = lock_arg(ctx)?;
    if lock_kind == kind::PTHREAD_MUTEX {
        if let Some(head) = mutex_head(lock) {
            // An inner unlock of a recursive mutex (the count is read before glibc lowers it).
            if head.kind & MUTEX_TYPE_MASK == MUTEX_RECURSIVE && head.count > 1 {
                return None;
            }
            let owner = head.owner as u32;
            if owner != 0 && owner != task.tid {
                if foreign_unlock_releases(&head) {
                    lock_state::release_by_other(&task, owner, lock, lock_kind);
                }
                return Some(());
            }
        }
    }
    lock_state::release(&task, lock, lock_kind);
    Some(())
}

fn try_lock_init(ctx: &ProbeContext) -> Option<()> {
    let task = current_task()?;
    let lock = lock_arg(ctx)?;
    let site = caller(ctx);
    if site == 0 {
        return None;
    }
    let key = UserLock {
        lock,
        tgid: task.pid,
        _pad: 0,
    };
    insert_counted(
        &USER_LOCK_CLASS,
        &key,
        &site,
        counter::USER_LOCK_CLASSES_CREATED,
    );
    Some(())
}

fn try_lock_destroy(ctx: &ProbeContext) -> Option<()> {
    let task = current_task()?;
    let lock = lock_arg(ctx)?;
    let key = UserLock {
        lock,
        tgid: task.pid,
        _pad: 0,
    };
    remove_counted(&USER_LOCK_CLASS, &key, counter::USER_LOCK_CLASSES_REMOVED);
    Some(())
}

/// `pthread_mutex_init` / `pthread_rwlock_init`: the lock joins its call site's class.
#[uprobe]
pub fn pthread_lock_init(ctx: ProbeContext) -> u32 {
    let _ = try_lock_init(&ctx);
    0
}

/// `pthread_mutex_destroy` / `pthread_rwlock_destroy`: the memory may become another lock.
#[uprobe]
pub fn pthread_lock_destroy(ctx: ProbeContext) -> u32 {
    let _ = try_lock_destroy(&ctx);
    0
}

#[uprobe]
pub fn pthread_mutex_lock(ctx: ProbeContext) -> u32 {
    let _ = try_acquire(&ctx, kind::PTHREAD_MUTEX, 0);
    0
}

#[uprobe]
pub fn pthread_mutex_trylock(ctx: ProbeContext) -> u32 {
    let _ = try_acquire(&ctx, kind::PTHREAD_MUTEX, flags::TRY);
    0
}

#[uprobe]
pub fn pthread_rwlock_rdlock(ctx: ProbeContext) -> u32 {
    let _ = try_acquire(&ctx, kind::PTHREAD_RWLOCK, flags::NEW_READ);
    0
}

#[uprobe]
pub fn pthread_rwlock_wrlock(ctx: ProbeContext) -> u32 {
    let _ = try_acquire(&ctx, kind::PTHREAD_RWLOCK, 0);
    0
}

#[uprobe]
pub fn pthread_rwlock_tryrdlock(ctx: ProbeContext) -> u32 {
    let _ = try_acquire(&ctx, kind::PTHREAD_RWLOCK, flags::NEW_READ | flags::TRY);
    0
}

#[uprobe]
pub fn pthread_rwlock_trywrlock(ctx: ProbeContext) -> u32 {
    let _ = try_acquire(&ctx, kind::PTHREAD_RWLOCK, flags::TRY);
    0
}

/// Shared by the return of every acquire function above (and `pthread_mutex_timedlock`,
/// which blocks like `pthread_mutex_lock` but may fail).
#[uretprobe]
pub fn pthread_acquire_ret(ctx: RetProbeContext) -> u32 {
    let _ = try_acquire_returned(&ctx);
    0
}

#[uprobe]
pub fn pthread_mutex_unlock(ctx: ProbeContext) -> u32 {
    let _ = try_release(&ctx, kind::PTHREAD_MUTEX);
    0
}

#[uprobe]
pub fn pthread_rwlock_unlock(ctx: ProbeContext) -> u32 {
    let _ = try_release(&ctx, kind::PTHREAD_RWLOCK);
    0
}
