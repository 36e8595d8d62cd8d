//! Kernel `struct mutex`: fentry/fexit programs (one per function: an fentry program is
//! loaded for one BTF function) and kprobe/kretprobe programs (shared by every function of
//! the same shape). The attach table is `tracer-user/src/attach/kernel.rs`.
//!
//! Semantics (lockdep's): a blocking acquire creates dependencies at entry; a trylock none,
//! but is held on success (returns 1); interruptible/killable acquires that return nonzero
//! are forgotten; void acquires just stop waiting at return. Under fentry a void acquire has
//! no fexit program: its task's next lock operation proves it returned
//! ([`tracer_common::held_state::RETURN_INFERRED`]); `mutex_lock_io` keeps its fexit, since it calls
//! `mutex_lock`, whose entry must see it pending.
use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use tracer_common::{flags, kind};

use crate::klock;

/// `fentry` acquire: `$prog(lock[, subclass])`; `nest_lock`: `$prog(lock, nest_lock)`. The
/// argument count locates the caller in the trampoline's frame ([`klock::fentry_caller`]).
/// `fentry_acquire!(inferred …)`: a void acquire with no fexit program (the trampoline then
/// keeps no return-value slot: [`klock::fentry_only_caller`]), held from its next operation.
macro_rules! fentry_acquire {
    (inferred $prog:ident, $kind:expr, $flags:expr $(, $shape:ident)?) => {
        fentry_acquire!(@with klock::fentry_only_caller, $prog, $kind,
            $flags | tracer_common::held_state::RETURN_INFERRED $(, $shape)?);
    };
    ($prog:ident, $kind:expr, $flags:expr $(, $shape:ident)?) => {
        fentry_acquire!(@with klock::fentry_caller, $prog, $kind, $flags $(, $shape)?);
    };
    (@with $caller:path, $prog:ident, $kind:expr, $flags:expr) => {
        #[fentry]
        pub fn $prog(ctx: FEntryContext) -> u32 {
            let lock = klock::arg(&ctx, 0);
            klock::acquire(&ctx, lock, $kind, $flags, 0, $caller(&ctx, 1));
            0
        }
    };
    (@with $caller:path, $prog:ident, $kind:expr, $flags:expr, nest_lock) => {
        #[fentry]
        pub fn $prog(ctx: FEntryContext) -> u32 {
            let lock = klock::arg(&ctx, 0);
            klock::acquire(&ctx, lock, $kind, $flags, 0, $caller(&ctx, 2));
            0
        }
    };
    (@with $caller:path, $prog:ident, $kind:expr, $flags:expr, subclass) => {
        #[fentry]
        pub fn $prog(ctx: FEntryContext) -> u32 {
            let lock = klock::arg(&ctx, 0);
            let subclass = klock::arg(&ctx, 1);
            klock::acquire(&ctx, lock, $kind, $flags, subclass, $caller(&ctx, 2));
            0
        }
    };
}
pub(crate) use fentry_acquire;

/// `fexit` of an acquire. `$ret` is the index of the return value in the context (the
/// number of arguments); `void`: always acquired, `zero_ok`: 0 is success, `one_ok`: 1 is.
macro_rules! fexit_returned {
    ($prog:ident, void) => {
        #[fexit]
        pub fn $prog(ctx: FExitContext) -> u32 {
            let lock = klock::arg(&ctx, 0);
            klock::returned(Some(lock), true);
            0
        }
    };
    ($prog:ident, zero_ok, $ret:expr) => {
        #[fexit]
        pub fn $prog(ctx: FExitContext) -> u32 {
            let lock = klock::arg(&ctx, 0);
            let ret = klock::arg(&ctx, $ret);
            klock::returned(Some(lock), ret as i32 == 0);
            0
        }
    };
    ($prog:ident, one_ok, $ret:expr) => {
        #[fexit]
        pub fn $prog(ctx: FExitContext) -> u32 {
            let lock = klock::arg(&ctx, 0);
            let ret = klock::arg(&ctx, $ret);
            klock::returned(Some(lock), ret as i32 == 1);
            0
        }
    };
}
pub(crate) use fexit_returned;

macro_rules! fentry_release {
    ($prog:ident, $kind:expr) => {
        #[fentry]
        pub fn $prog(ctx: FEntryContext) -> u32 {
            let lock = klock::arg(&ctx, 0);
            klock::release(lock, $kind);
            0
        }
    };
}
pub(crate) use fentry_release;

/// `__mutex_init(lock, name, key)`: learn the lock's class and name it.
#[fentry]
pub fn fentry_mutex_init(ctx: FEntryContext) -> u32 {
    klock::lock_initialised(
        klock::arg(&ctx, 0),
        klock::arg(&ctx, 1),
        klock::arg(&ctx, 2),
        klock::fentry_only_caller(&ctx, 3),
        kind::MUTEX,
    );
    0
}

fentry_acquire!(inferred fentry_mutex_lock, kind::MUTEX, 0);
fentry_acquire!(fentry_mutex_lock_interruptible, kind::MUTEX, 0);
fentry_acquire!(fentry_mutex_lock_killable, kind::MUTEX, 0);
fentry_acquire!(fentry_mutex_lock_io, kind::MUTEX, 0);
fentry_acquire!(fentry_mutex_trylock, kind::MUTEX, flags::TRY);
fentry_acquire!(inferred fentry_mutex_lock_nested, kind::MUTEX, 0, subclass);
fentry_acquire!(
    fentry_mutex_lock_interruptible_nested,
    kind::MUTEX,
    0,
    subclass
);
fentry_acquire!(fentry_mutex_lock_killable_nested, kind::MUTEX, 0, subclass);
fentry_acquire!(fentry_mutex_lock_io_nested, kind::MUTEX, 0, subclass);
fentry_acquire!(inferred fentry_mutex_lock_nest_lock, kind::MUTEX, 0, nest_lock);
fentry_release!(fentry_mutex_unlock, kind::MUTEX);

fexit_returned!(fexit_mutex_lock_interruptible, zero_ok, 1);
fexit_returned!(fexit_mutex_lock_killable, zero_ok, 1);
fexit_returned!(fexit_mutex_lock_io, void);
fexit_returned!(fexit_mutex_trylock, one_ok, 1);
fexit_returned!(fexit_mutex_lock_interruptible_nested, zero_ok, 2);
fexit_returned!(fexit_mutex_lock_killable_nested, zero_ok, 2);
fexit_returned!(fexit_mutex_lock_io_nested, void);

// kprobe fallback: one program per shape, attached to every function of that shape.

#[kprobe]
pub fn kprobe_mutex_init(ctx: ProbeContext) -> u32 {
    if let (Some(lock), Some(name), Some(key)) = (ctx.arg(0), ctx.arg(1), ctx.arg(2)) {
        klock::lock_initialised(lock, name, key, klock::kprobe_caller(&ctx), kind::MUTEX);
    }
    0
}

#[kprobe]
pub fn kprobe_mutex_acquire(ctx: ProbeContext) -> u32 {
    if let Some(lock) = ctx.arg::<u64>(0) {
        klock::acquire(&ctx, lock, kind::MUTEX, 0, 0, klock::kprobe_caller(&ctx));
    }
    0
}

#[kprobe]
pub fn kprobe_mutex_acquire_nested(ctx: ProbeContext) -> u32 {
    if let (Some(lock), Some(subclass)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) {
        klock::acquire(
            &ctx,
            lock,
            kind::MUTEX,
            0,
            subclass,
            klock::kprobe_caller(&ctx),
        );
    }
    0
}

#[kprobe]
pub fn kprobe_mutex_trylock(ctx: ProbeContext) -> u32 {
    if let Some(lock) = ctx.arg::<u64>(0) {
        klock::acquire(
            &ctx,
            lock,
            kind::MUTEX,
            flags::TRY,
            0,
            klock::kprobe_caller(&ctx),
        );
    }
    0
}

#[kprobe]
pub fn kprobe_mutex_release(ctx: ProbeContext) -> u32 {
    if let Some(lock) = ctx.arg::<u64>(0) {
        klock::release(lock, kind::MUTEX);
    }
    0
}

/// Return of a void acquire (kretprobes see no arguments: the innermost waiting entry).
#[kretprobe]
pub fn kretprobe_acquire_void(_ctx: RetProbeContext) -> u32 {
    klock::returned(None, true);
    0
}

/// Return of an acquire that returns 0 on success (interruptible/killable).
#[kretprobe]
pub fn kretprobe_acquire_zero_ok(ctx: RetProbeContext) -> u32 {
    let ret: u64 = ctx.ret();
    klock::returned(None, ret as i32 == 0);
    0
}

/// Return of a trylock (1 on success).
#[kretprobe]
pub fn kretprobe_acquire_one_ok(ctx: RetProbeContext) -> u32 {
    let ret: u64 = ctx.ret();
    klock::returned(None, ret as i32 == 1);
    0
}
