//! Per-thread lock state and in-kernel dependency dedup, with lockdep's semantics: a
//! blocking acquire creates `held → new` from the innermost held lock that is not a trylock
//! and from each trylock held inside it (lockdep's `check_prevs_add`: the locks further out
//! reach `new` through the innermost one); a trylock creates none; a lock is held once its
//! acquire returns successfully; release may be out of order.
//!
//! - [`filters`]: the current task and the load-time `--pid`/`--comm`/`--module` filters;
//! - [`stack_ids`]: stack ids, cached per acquisition site;
//! - [`dependencies`]: the scan of the held stack for an acquire's dependencies, their
//!   dedup in `DEPENDENCIES` and their records;
//! - [`budget`]: the overhead budget's shedding;
//! - [`held_stack`]: the held-lock stack itself, the operations the probes call.
mod budget;
mod dependencies;
mod filters;
mod held_stack;
mod stack_ids;

pub use filters::{current_task, module_bit};
pub use held_stack::{
    acquire, acquire_held, acquire_release, acquire_returned, downgrade, forget_task, holds_locks,
    record_pair, release, release_by_other, release_if_held,
};

/// A lock as a probe sees it.
pub struct LockRef {
    pub lock: u64,
    pub class: u64,
    pub kind: u32,
    pub class_source: u32,
    /// [`flags::NEW_READ`] and/or [`flags::TRY`].
    ///
    /// [`flags::NEW_READ`]: tracer_common::flags::NEW_READ
    /// [`flags::TRY`]: tracer_common::flags::TRY
    pub flags: u32,
    /// Thread group the class belongs to (user locks), 0 for kernel classes.
    pub scope: u32,
    /// Return address into the lock function's caller (0: unknown, as for pseudo-locks).
    /// For kernel locks it also keys the acquisition site's stack id
    /// ([`stack_ids::site_stack_id`]); sent as [`tracer_common::DependencyEvent::new_caller`].
    pub caller: u64,
}
