//! Kernel `struct rw_semaphore`: as `mutex`, plus read acquires ([`flags::NEW_READ`]) and
//! `downgrade_write` (the held write entry becomes a read entry). The kretprobe programs of
//! `mutex` serve the rwsem functions too (same shapes).
#[allow(unused_imports, reason = "used by the fexit_returned! expansion")]
use aya_ebpf::{macros::fexit, programs::FExitContext};
use aya_ebpf::{
    macros::{fentry, kprobe},
    programs::{FEntryContext, ProbeContext},
};
use tracer_common::{flags, kind};

use crate::{
    klock,
    mutex::{fentry_acquire, fentry_release, fexit_returned},
};

const R: u32 = flags::NEW_READ;

/// `__init_rwsem(sem, name, key)`.
#[fentry]
pub fn fentry_init_rwsem(ctx: FEntryContext) -> u32 {
    klock::lock_initialised(
        klock::arg(&ctx, 0),
        klock::arg(&ctx, 1),
        klock::arg(&ctx, 2),
        klock::fentry_only_caller(&ctx, 3),
        kind::RWSEM,
    );
    0
}

fentry_acquire!(inferred fentry_down_read, kind::RWSEM, R);
fentry_acquire!(fentry_down_read_interruptible, kind::RWSEM, R);
fentry_acquire!(fentry_down_read_killable, kind::RWSEM, R);
fentry_acquire!(fentry_down_read_trylock, kind::RWSEM, R | flags::TRY);
fentry_acquire!(inferred fentry_down_write, kind::RWSEM, 0);
fentry_acquire!(fentry_down_write_killable, kind::RWSEM, 0);
fentry_acquire!(fentry_down_write_trylock, kind::RWSEM, flags::TRY);
fentry_acquire!(inferred fentry_down_read_nested, kind::RWSEM, R, subclass);
fentry_acquire!(fentry_down_read_killable_nested, kind::RWSEM, R, subclass);
fentry_acquire!(inferred fentry_down_write_nested, kind::RWSEM, 0, subclass);
fentry_acquire!(fentry_down_write_killable_nested, kind::RWSEM, 0, subclass);
fentry_acquire!(inferred fentry_down_write_nest_lock, kind::RWSEM, 0, nest_lock);
fentry_release!(fentry_up_read, kind::RWSEM);
fentry_release!(fentry_up_write, kind::RWSEM);

#[fentry]
pub fn fentry_downgrade_write(ctx: FEntryContext) -> u32 {
    klock::downgrade(klock::arg(&ctx, 0));
    0
}

fexit_returned!(fexit_down_read_interruptible, zero_ok, 1);
fexit_returned!(fexit_down_read_killable, zero_ok, 1);
fexit_returned!(fexit_down_read_trylock, one_ok, 1);
fexit_returned!(fexit_down_write_killable, zero_ok, 1);
fexit_returned!(fexit_down_write_trylock, one_ok, 1);
fexit_returned!(fexit_down_read_killable_nested, zero_ok, 2);
fexit_returned!(fexit_down_write_killable_nested, zero_ok, 2);

#[kprobe]
pub fn kprobe_init_rwsem(ctx: ProbeContext) -> u32 {
    if let (Some(sem), Some(name), Some(key)) = (ctx.arg(0), ctx.arg(1), ctx.arg(2)) {
        klock::lock_initialised(sem, name, key, klock::kprobe_caller(&ctx), kind::RWSEM);
    }
    0
}

#[kprobe]
pub fn kprobe_rwsem_read(ctx: ProbeContext) -> u32 {
    if let Some(sem) = ctx.arg::<u64>(0) {
        klock::acquire(&ctx, sem, kind::RWSEM, R, 0, klock::kprobe_caller(&ctx));
    }
    0
}

#[kprobe]
pub fn kprobe_rwsem_read_nested(ctx: ProbeContext) -> u32 {
    if let (Some(sem), Some(subclass)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) {
        klock::acquire(
            &ctx,
            sem,
            kind::RWSEM,
            R,
            subclass,
            klock::kprobe_caller(&ctx),
        );
    }
    0
}

#[kprobe]
pub fn kprobe_rwsem_read_trylock(ctx: ProbeContext) -> u32 {
    if let Some(sem) = ctx.arg::<u64>(0) {
        klock::acquire(
            &ctx,
            sem,
            kind::RWSEM,
            R | flags::TRY,
            0,
            klock::kprobe_caller(&ctx),
        );
    }
    0
}

#[kprobe]
pub fn kprobe_rwsem_write(ctx: ProbeContext) -> u32 {
    if let Some(sem) = ctx.arg::<u64>(0) {
        klock::acquire(&ctx, sem, kind::RWSEM, 0, 0, klock::kprobe_caller(&ctx));
    }
    0
}

#[kprobe]
pub fn kprobe_rwsem_write_nested(ctx: ProbeContext) -> u32 {
    if let (Some(sem), Some(subclass)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) {
        klock::acquire(
            &ctx,
            sem,
            kind::RWSEM,
            0,
            subclass,
            klock::kprobe_caller(&ctx),
        );
    }
    0
}

#[kprobe]
pub fn kprobe_rwsem_write_trylock(ctx: ProbeContext) -> u32 {
    if let Some(sem) = ctx.arg::<u64>(0) {
        klock::acquire(
            &ctx,
            sem,
            kind::RWSEM,
            flags::TRY,
            0,
            klock::kprobe_caller(&ctx),
        );
    }
    0
}

#[kprobe]
pub fn kprobe_rwsem_release(ctx: ProbeContext) -> u32 {
    if let Some(sem) = ctx.arg::<u64>(0) {
        klock::release(sem, kind::RWSEM);
    }
    0
}

#[kprobe]
pub fn kprobe_downgrade_write(ctx: ProbeContext) -> u32 {
    if let Some(sem) = ctx.arg::<u64>(0) {
        klock::downgrade(sem);
    }
    0
}
