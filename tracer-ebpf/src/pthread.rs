//! User-space locks: uprobes on glibc's pthread mutex and rwlock functions, uretprobes on
//! those that may fail (trylocks, timed locks).
//! Classes are scoped to the thread group (addresses are per process): a lock initialised
//! by `pthread_*_init` while tracing belongs to its initialisation site's class, as a
//! kernel lock to its `mutex_init()` call's; any other lock is a class of its own.
use aya_ebpf::{
    bindings::BPF_F_USER_STACK,
    helpers::{
        bpf_find_vma, bpf_get_current_task, bpf_get_current_task_btf, bpf_probe_read_kernel,
        bpf_probe_read_user,
    },
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use tracer_common::{class_source, counter, flags, held_state, kind, UserLock};

use crate::{
    lock_state::{self, current_task, LockRef},
    maps::{
        global, insert_counted, remove_counted, GLIBC_MUTEX_LAYOUT, MM_EXE_FILE_OFFSET,
        TASK_MM_OFFSET, USER_LOCK_CLASS, VMA_FILE_OFFSET,
    },
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
    // Its owner taking an error-checking mutex again fails (EDEADLK): recorded (a recursive
    // locking finding) and at once undone, as its return would.
    let mut fails_at_once = false;
    if lock_kind == kind::PTHREAD_MUTEX {
        if let Some(head) = mutex_head(lock).filter(|head| head.owner as u32 == task.tid) {
            match head.kind & MUTEX_TYPE_MASK {
                MUTEX_RECURSIVE => return None,
                MUTEX_ERRORCHECK => fails_at_once = true,
                _ => {}
            }
        }
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
    if fails_at_once {
        lock_state::acquire_returned(&task, Some(lock), false);
    }
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

/// Frames walked outward from a wrapper's init call looking for its caller.
const WRAPPER_FRAMES: usize = 8;

/// What `vma_file_step` found: the file mapped at an address (0: anonymous), whether any
/// mapping was there.
#[repr(C)]
struct VmaFile {
    vma_file_offset: u64,
    file: u64,
    found: u64,
}

extern "C" fn vma_file_step(
    _task: *mut core::ffi::c_void,
    vma: *mut core::ffi::c_void,
    context: *mut core::ffi::c_void,
) -> i64 {
    // SAFETY: `context` is the `VmaFile` of `mapped_file`, alive for the call; the read of
    // the kernel's vma is checked by the helper.
    unsafe {
        let found = &mut *context.cast::<VmaFile>();
        found.found = 1;
        found.file =
            bpf_probe_read_kernel((vma as u64 + found.vma_file_offset) as *const u64).unwrap_or(0);
    }
    0
}

/// The `struct file` mapped at user address `addr` of the current process (`Some(0)`:
/// an anonymous mapping), `None` where nothing is mapped or the mm is busy.
#[inline(always)]
fn mapped_file(addr: u64, vma_file_offset: u32) -> Option<u64> {
    let mut found = VmaFile {
        vma_file_offset: u64::from(vma_file_offset),
        file: 0,
        found: 0,
    };
    // SAFETY: the callback only writes `found`, alive for the call.
    let status = unsafe {
        bpf_find_vma(
            bpf_get_current_task_btf(),
            addr,
            vma_file_step as *mut core::ffi::c_void,
            (&raw mut found).cast(),
            0,
        )
    };
    (status == 0 && found.found != 0).then_some(found.file)
}

/// The class site of a lock initialised at `site`: `site` itself, unless `site` lies in
/// a file other than the program's executable (a library's wrapper: GLib's `g_mutex_init`,
/// a C++ library's constructor), where it is the first frame outside that file, so that
/// each caller of the wrapper is a class, as lockdep's init sites are. Walked by frame
/// pointer; an unreadable or unmapped frame (code without frame pointers) keeps `site`.
#[inline(always)]
fn class_site(ctx: &ProbeContext, site: u64) -> u64 {
    let (mm_offset, exe_offset, vma_offset) = (
        global(&TASK_MM_OFFSET),
        global(&MM_EXE_FILE_OFFSET),
        global(&VMA_FILE_OFFSET),
    );
    if mm_offset == u32::MAX || exe_offset == u32::MAX || vma_offset == u32::MAX {
        return site;
    }
    // SAFETY: reads of kernel memory through the helper, which handles faults.
    let exe_file = unsafe {
        let task = bpf_get_current_task();
        bpf_probe_read_kernel((task + u64::from(mm_offset)) as *const u64)
            .and_then(|mm| bpf_probe_read_kernel((mm + u64::from(exe_offset)) as *const u64))
            .unwrap_or(0)
    };
    let Some(site_file) = mapped_file(site, vma_offset) else {
        return site;
    };
    if site_file == 0 || exe_file == 0 || site_file == exe_file {
        return site;
    }
    // At the entry of the init function (glibc's, which sets up no frame) `rbp` is the
    // wrapper's frame pointer: `[rbp + 8]` returns into the wrapper's caller.
    // SAFETY: `regs` is the probe's register context.
    let mut frame = unsafe { (*ctx.regs).rbp };
    for _ in 0..WRAPPER_FRAMES {
        if frame == 0 {
            break;
        }
        // SAFETY: checked reads of user memory into locals.
        let (Ok(next), Ok(ret)) = (
            unsafe { bpf_probe_read_user(frame as *const u64) },
            unsafe { bpf_probe_read_user((frame + 8) as *const u64) },
        ) else {
            break;
        };
        match mapped_file(ret, vma_offset) {
            Some(file) if file != 0 && file != site_file => return ret,
            Some(file) if file == site_file => {}
            // Nothing or anonymous memory there: not a return address.
            _ => break,
        }
        if next <= frame {
            break;
        }
        frame = next;
    }
    site
}

fn try_lock_init(ctx: &ProbeContext) -> Option<()> {
    let task = current_task()?;
    let lock = lock_arg(ctx)?;
    let site = caller(ctx);
    if site == 0 {
        return None;
    }
    let site = class_site(ctx, site);
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

/// `pthread_mutex_lock`: no return probe (its task's next lock operation shows it
/// returned; see [`held_state::RETURN_INFERRED`]), one probe hit saved per acquire.
#[uprobe]
pub fn pthread_mutex_lock(ctx: ProbeContext) -> u32 {
    let _ = try_acquire(&ctx, kind::PTHREAD_MUTEX, held_state::RETURN_INFERRED);
    0
}

/// `pthread_mutex_timedlock` / `clocklock`: they time out, so their return is probed.
#[uprobe]
pub fn pthread_mutex_timedlock(ctx: ProbeContext) -> u32 {
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
    let _ = try_acquire(
        &ctx,
        kind::PTHREAD_RWLOCK,
        flags::NEW_READ | held_state::RETURN_INFERRED,
    );
    0
}

#[uprobe]
pub fn pthread_rwlock_wrlock(ctx: ProbeContext) -> u32 {
    let _ = try_acquire(&ctx, kind::PTHREAD_RWLOCK, held_state::RETURN_INFERRED);
    0
}

#[uprobe]
pub fn pthread_rwlock_timedrdlock(ctx: ProbeContext) -> u32 {
    let _ = try_acquire(&ctx, kind::PTHREAD_RWLOCK, flags::NEW_READ);
    0
}

#[uprobe]
pub fn pthread_rwlock_timedwrlock(ctx: ProbeContext) -> u32 {
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

/// Shared by the return of the acquire functions that may fail: the trylocks and the timed
/// locks (the untimed ones infer their return).
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
