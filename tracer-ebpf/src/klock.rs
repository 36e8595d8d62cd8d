//! Kernel-lock helpers shared by the `mutex` and `rwsem` families: lockdep-style class ids
//! (learnt at `__mutex_init`/`__init_rwsem`) and the glue from a probe to
//! [`crate::lock_state`].
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes, generated::bpf_get_func_ip},
    programs::{tracing::StackIdContext, ProbeContext},
    EbpfContext,
};
use tracer_common::{class_source, counter, record, ClassEvent, CLASS_NAME_LEN};

use crate::{
    lock_state::{self, current_task, LockRef},
    maps::{
        count, global, insert_counted, remove_counted, CLASS_BY_INIT_SITE, CLASS_NAMES, EVENTS,
        LOCK_CLASS,
    },
};

/// The class id of an initialisation site. Without `CONFIG_LOCKDEP`, `struct lock_class_key`
/// is an empty struct, so two `static struct lock_class_key __key` of one function can share
/// an address; the name pointer (a distinct string literal per site, `"&obj->a_lock"`) tells
/// them apart. Mixing also keeps the id out of the kernel address range, so it never equals
/// an instance-address class.
#[inline(always)]
fn init_class(key: u64, name: u64) -> u64 {
    key ^ name.rotate_left(32)
}

/// `__mutex_init(lock, name, key)` / `__init_rwsem(sem, name, key)`, called from `site`
/// (the return address into the caller, 0: unknown). The class is lockdep's: the key and
/// name of the init site. Without them (a kernel that passes neither, or
/// `CLASS_BY_INIT_SITE`) it is the site itself, a kernel text address, sent with no name:
/// the daemon names it by the site's symbol.
pub fn lock_initialised(lock: u64, name: u64, key: u64, site: u64, lock_kind: u32) {
    if lock == 0 {
        return;
    }
    let by_site = key == 0 || name == 0 || global(&CLASS_BY_INIT_SITE) != 0;
    let class = match (by_site, site) {
        (false, _) => init_class(key, name),
        (true, 0) => return,
        (true, site) => site,
    };
    insert_counted(&LOCK_CLASS, &lock, &class, counter::LOCK_CLASSES_CREATED);
    if CLASS_NAMES.get_ptr(class).is_some() {
        return;
    }
    let mut text = [0u8; CLASS_NAME_LEN];
    if !by_site {
        // SAFETY: reading a kernel string into a local buffer.
        let _ = unsafe { bpf_probe_read_kernel_str_bytes(name as *const u8, &mut text) };
    }
    if CLASS_NAMES
        .insert(class, text, u64::from(BPF_NOEXIST))
        .is_err()
    {
        return;
    }
    count(counter::CLASS_NAMES_CREATED);
    let Some(mut entry) = EVENTS.reserve::<ClassEvent>(0) else {
        count(counter::RINGBUF_DROPPED);
        // Not named yet: let the next initialisation of this class try again.
        remove_counted(&CLASS_NAMES, &class, counter::CLASS_NAMES_REMOVED);
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points to a reserved, writable record of the right size.
    unsafe {
        (*event).record = record::CLASS;
        (*event).kind = lock_kind;
        (*event).class = class;
        (*event).name = text;
    }
    entry.submit(0);
}

/// Argument `n` of an fentry/fexit program (`n` = argument count: the return value), as a
/// plain number. Read through `bpf_probe_read_kernel` on purpose: a direct context load gives
/// the verifier a typed BTF pointer (`ptr_mutex`), on which the class arithmetic and map-key
/// use are refused.
#[inline(always)]
pub fn arg<C: EbpfContext>(ctx: &C, n: usize) -> u64 {
    // SAFETY: the context of a tracing program is an array of u64 arguments.
    unsafe { bpf_probe_read_kernel((ctx.as_ptr() as *const u64).wrapping_add(n)).unwrap_or(0) }
}

/// A kernel lock as a probe sees it. `subclass` (the `_nested` variants') is added to the
/// class as lockdep does (`&vmm->mutex/1` is a class of its own).
#[inline(always)]
pub fn lock_ref<C: EbpfContext>(
    ctx: &C,
    lock: u64,
    lock_kind: u32,
    lock_flags: u32,
    subclass: u64,
    caller: u64,
) -> LockRef {
    // SAFETY: the map value is a plain u64.
    let (class, source) = match unsafe { LOCK_CLASS.get(lock) } {
        Some(class) => (*class, class_source::INIT_KEY),
        None => (lock, class_source::INSTANCE),
    };
    LockRef {
        lock,
        class: class.wrapping_add(subclass & 7),
        kind: lock_kind,
        class_source: source,
        flags: lock_flags | lock_state::module_bit(ctx),
        scope: 0,
        caller,
    }
}

#[inline(always)]
pub fn acquire<C: StackIdContext>(
    ctx: &C,
    lock: u64,
    lock_kind: u32,
    lock_flags: u32,
    subclass: u64,
    caller: u64,
) {
    if lock == 0 {
        return;
    }
    let Some(task) = current_task() else {
        return;
    };
    let new = lock_ref(ctx, lock, lock_kind, lock_flags, subclass, caller);
    lock_state::acquire(ctx, &task, &new, 0);
}

/// The acquire returned; `lock` is `None` from a kretprobe (the innermost waiting entry).
#[inline(always)]
pub fn returned(lock: Option<u64>, acquired: bool) {
    let Some(task) = current_task() else {
        return;
    };
    lock_state::acquire_returned(&task, lock, acquired);
}

#[inline(always)]
pub fn release(lock: u64, lock_kind: u32) {
    if lock == 0 {
        return;
    }
    let Some(task) = current_task() else {
        return;
    };
    lock_state::release(&task, lock, lock_kind);
}

#[inline(always)]
pub fn downgrade(lock: u64) {
    let Some(task) = current_task() else {
        return;
    };
    lock_state::downgrade(&task, lock);
}

/// The return address at a kprobe on a function's entry, `[sp]` (x86-64), or 0: the call
/// site, which keys the site's stack (`lock_state::stack_ids::site_stack_id`); the daemon
/// also puts it back should a stack lack it.
#[inline(always)]
pub fn kprobe_caller(ctx: &ProbeContext) -> u64 {
    // SAFETY: `regs` is the probe's register context; the kernel read is checked by the helper.
    unsafe { bpf_probe_read_kernel((*ctx.regs).rsp as *const u64).unwrap_or(0) }
}

/// The return address into the caller of the function an fentry program traces, or 0.
/// x86-64 BPF trampoline frame (`arch_prepare_bpf_trampoline`): the program's context is
/// the saved arguments at `rbp - regs_off`, `regs_off` = 8 per argument + 8 for the return
/// value slot (the acquire functions all have an fexit program, so the trampoline calls the
/// original and keeps that slot); above `rbp` lie the saved `rbp`, the return address into
/// the traced function (just past its `__fentry__` call) and the one into its caller. The
/// second is checked against the traced function's address, so a different frame layout
/// gives 0 (the caller then costs a stack walk) rather than a wrong caller.
#[inline(always)]
pub fn fentry_caller<C: EbpfContext>(ctx: &C, nr_args: usize) -> u64 {
    trampoline_caller(ctx, 8 * nr_args as u64 + 8)
}

/// [`fentry_caller`] of a function traced by fentry alone (no fexit program: the trampoline
/// keeps no return value slot), as the init functions are.
#[inline(always)]
pub fn fentry_only_caller<C: EbpfContext>(ctx: &C, nr_args: usize) -> u64 {
    trampoline_caller(ctx, 8 * nr_args as u64)
}

#[inline(always)]
fn trampoline_caller<C: EbpfContext>(ctx: &C, regs_off: u64) -> u64 {
    let rbp = ctx.as_ptr() as u64 + regs_off;
    // SAFETY: kernel reads through the helper, which handles faults; `bpf_get_func_ip` takes
    // the context of a tracing program.
    unsafe {
        let Ok(frame) = bpf_probe_read_kernel((rbp + 8) as *const [u64; 2]) else {
            return 0;
        };
        let function = bpf_get_func_ip(ctx.as_ptr());
        if frame[0].wrapping_sub(function) > 16 {
            return 0;
        }
        frame[1]
    }
}

/// A lockdep pseudo-lock: the class id is also the "instance".
#[inline(always)]
pub fn pseudo<C: EbpfContext>(ctx: &C, class: u64) -> LockRef {
    LockRef {
        lock: class,
        class,
        kind: tracer_common::kind::PSEUDO,
        class_source: class_source::PSEUDO,
        flags: lock_state::module_bit(ctx),
        scope: 0,
        caller: 0,
    }
}
