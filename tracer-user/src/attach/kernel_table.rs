//! THE kernel attach table: every probe point of every kernel lock family, with the
//! programs each attach kind loads there and whether its absence is expected.
use std::collections::HashSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Mutex,
    Rwsem,
    Reclaim,
    MmuNotifier,
}

impl Family {
    /// The lock kind its acquires record ([`tracer_common::kind`]): what the overhead budget
    /// switches off.
    pub fn lock_kind(self) -> u32 {
        match self {
            Family::Mutex => tracer_common::kind::MUTEX,
            Family::Rwsem => tracer_common::kind::RWSEM,
            Family::Reclaim | Family::MmuNotifier => tracer_common::kind::PSEUDO,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Mutex => "mutex",
            Family::Rwsem => "rwsem",
            Family::Reclaim => "fs_reclaim",
            Family::MmuNotifier => "mmu_notifier",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Hook {
    /// A kernel function: entry program, optional return program, for each attach kind.
    Function {
        function: &'static str,
        fentry: &'static str,
        fexit: Option<&'static str>,
        kprobe: &'static str,
        kretprobe: Option<&'static str>,
    },
    /// A stable tracepoint (`category:name`) and its program; `btf_program`, the same as a
    /// BTF raw tracepoint (`tp_btf`), preferred in fentry mode: no trace record is built.
    Tracepoint {
        category: &'static str,
        name: &'static str,
        program: &'static str,
        btf_program: Option<&'static str>,
    },
}

#[derive(Debug, Clone, Copy)]
pub struct ProbePoint {
    pub family: Family,
    pub hook: Hook,
    /// Missing on some kernels by design (lockdep-only functions, renamed tracepoints).
    pub optional: bool,
}

const fn func(
    family: Family,
    function: &'static str,
    fentry: &'static str,
    fexit: Option<&'static str>,
    kprobe: &'static str,
    kretprobe: Option<&'static str>,
    optional: bool,
) -> ProbePoint {
    ProbePoint {
        family,
        hook: Hook::Function {
            function,
            fentry,
            fexit,
            kprobe,
            kretprobe,
        },
        optional,
    }
}

const fn tp(
    family: Family,
    category: &'static str,
    name: &'static str,
    program: &'static str,
    btf_program: Option<&'static str>,
    optional: bool,
) -> ProbePoint {
    ProbePoint {
        family,
        hook: Hook::Tracepoint {
            category,
            name,
            program,
            btf_program,
        },
        optional,
    }
}

use Family::{MmuNotifier, Mutex, Reclaim, Rwsem};
const VOID: Option<&str> = Some("kretprobe_acquire_void");
const ZERO_OK: Option<&str> = Some("kretprobe_acquire_zero_ok");
const ONE_OK: Option<&str> = Some("kretprobe_acquire_one_ok");

/// Every kernel probe point. Class learning (init) first, then releases, then acquires, so
/// that a lock is never seen acquired by a program whose release is not attached yet.
#[rustfmt::skip]
pub const KERNEL_ATTACH_TABLE: &[ProbePoint] = &[
    // family, kernel function, fentry program, fexit program, kprobe program, kretprobe
    // program, optional
    func(Mutex, "__mutex_init", "fentry_mutex_init", None, "kprobe_mutex_init", None, false),
    func(Rwsem, "__init_rwsem", "fentry_init_rwsem", None, "kprobe_init_rwsem", None, false),
    func(Mutex, "mutex_unlock", "fentry_mutex_unlock", None, "kprobe_mutex_release", None, false),
    func(Rwsem, "up_read", "fentry_up_read", None, "kprobe_rwsem_release", None, false),
    func(Rwsem, "up_write", "fentry_up_write", None, "kprobe_rwsem_release", None, false),
    func(Rwsem, "downgrade_write", "fentry_downgrade_write", None, "kprobe_downgrade_write", None,
        false),
    func(Mutex, "mutex_lock", "fentry_mutex_lock", None, "kprobe_mutex_acquire",
        VOID, false),
    func(Mutex, "mutex_lock_interruptible", "fentry_mutex_lock_interruptible",
        Some("fexit_mutex_lock_interruptible"), "kprobe_mutex_acquire", ZERO_OK, false),
    func(Mutex, "mutex_lock_killable", "fentry_mutex_lock_killable",
        Some("fexit_mutex_lock_killable"), "kprobe_mutex_acquire", ZERO_OK, false),
    func(Mutex, "mutex_lock_io", "fentry_mutex_lock_io", Some("fexit_mutex_lock_io"),
        "kprobe_mutex_acquire", VOID, false),
    func(Mutex, "mutex_trylock", "fentry_mutex_trylock", Some("fexit_mutex_trylock"),
        "kprobe_mutex_trylock", ONE_OK, false),
    func(Mutex, "mutex_lock_nested", "fentry_mutex_lock_nested", None,
        "kprobe_mutex_acquire_nested", VOID, true),
    func(Mutex, "mutex_lock_interruptible_nested", "fentry_mutex_lock_interruptible_nested",
        Some("fexit_mutex_lock_interruptible_nested"), "kprobe_mutex_acquire_nested", ZERO_OK,
        true),
    func(Mutex, "mutex_lock_killable_nested", "fentry_mutex_lock_killable_nested",
        Some("fexit_mutex_lock_killable_nested"), "kprobe_mutex_acquire_nested", ZERO_OK, true),
    func(Mutex, "mutex_lock_io_nested", "fentry_mutex_lock_io_nested",
        Some("fexit_mutex_lock_io_nested"), "kprobe_mutex_acquire_nested", VOID, true),
    func(Mutex, "_mutex_lock_nest_lock", "fentry_mutex_lock_nest_lock",
        None, "kprobe_mutex_acquire", VOID, true),
    func(Rwsem, "down_read", "fentry_down_read", None, "kprobe_rwsem_read", VOID,
        false),
    func(Rwsem, "down_read_interruptible", "fentry_down_read_interruptible",
        Some("fexit_down_read_interruptible"), "kprobe_rwsem_read", ZERO_OK, false),
    func(Rwsem, "down_read_killable", "fentry_down_read_killable", Some("fexit_down_read_killable"),
        "kprobe_rwsem_read", ZERO_OK, false),
    func(Rwsem, "down_read_trylock", "fentry_down_read_trylock", Some("fexit_down_read_trylock"),
        "kprobe_rwsem_read_trylock", ONE_OK, false),
    func(Rwsem, "down_write", "fentry_down_write", None, "kprobe_rwsem_write",
        VOID, false),
    func(Rwsem, "down_write_killable", "fentry_down_write_killable",
        Some("fexit_down_write_killable"), "kprobe_rwsem_write", ZERO_OK, false),
    func(Rwsem, "down_write_trylock", "fentry_down_write_trylock", Some("fexit_down_write_trylock"),
        "kprobe_rwsem_write_trylock", ONE_OK, false),
    func(Rwsem, "down_read_nested", "fentry_down_read_nested", None,
        "kprobe_rwsem_read_nested", VOID, true),
    func(Rwsem, "down_read_killable_nested", "fentry_down_read_killable_nested",
        Some("fexit_down_read_killable_nested"), "kprobe_rwsem_read_nested", ZERO_OK, true),
    func(Rwsem, "down_write_nested", "fentry_down_write_nested", None,
        "kprobe_rwsem_write_nested", VOID, true),
    func(Rwsem, "down_write_killable_nested", "fentry_down_write_killable_nested",
        Some("fexit_down_write_killable_nested"), "kprobe_rwsem_write_nested", ZERO_OK, true),
    func(Rwsem, "_down_write_nest_lock", "fentry_down_write_nest_lock",
        None, "kprobe_rwsem_write", VOID, true),
    func(MmuNotifier, "__mmu_notifier_invalidate_range_start", "fentry_mmu_invalidate_range_start",
        Some("fexit_mmu_invalidate_range_start"), "kprobe_mmu_invalidate_range_start",
        Some("kretprobe_mmu_invalidate_range_start"), false),
    func(MmuNotifier, "__mmu_notifier_invalidate_range_end", "fentry_mmu_invalidate_range_end",
        Some("fexit_mmu_invalidate_range_end"), "kprobe_mmu_invalidate_range_end",
        Some("kretprobe_mmu_invalidate_range_end"), false),
    func(MmuNotifier, "mmu_interval_read_begin", "fentry_mmu_interval_read_begin", None,
        "kprobe_mmu_interval_read_begin", None, false),
    // mempool_alloc_noprof from 6.10 (memory allocation profiling), mempool_alloc before.
    func(Reclaim, "mempool_alloc", "fentry_mempool_alloc", None, "kprobe_mempool_alloc", None,
        true),
    func(Reclaim, "mempool_alloc_noprof", "fentry_mempool_alloc_noprof", None,
        "kprobe_mempool_alloc", None, true),
    func(MmuNotifier, "__mmu_notifier_register", "fentry_mmu_notifier_register", None,
        "kprobe_mmu_notifier_register", None, false),
    func(Reclaim, "fs_reclaim_release", "fentry_fs_reclaim_release", None,
        "kprobe_fs_reclaim_release", None, true),
    func(Reclaim, "fs_reclaim_acquire", "fentry_fs_reclaim_acquire", None,
        "kprobe_fs_reclaim_acquire", None, true),
    // family, category, tracepoint, classic program, BTF raw tracepoint program, optional
    tp(Reclaim, "vmscan", "mm_vmscan_direct_reclaim_end", "tp_direct_reclaim_end", None, false),
    tp(Reclaim, "vmscan", "mm_vmscan_direct_reclaim_begin", "tp_direct_reclaim_begin", None, false),
    tp(Reclaim, "kmem", "kmalloc", "tp_kmalloc", Some("btf_kmalloc"), false),
    tp(Reclaim, "kmem", "kmalloc_node", "tp_kmalloc_node", Some("btf_kmalloc_node"), true),
    tp(Reclaim, "kmem", "kmem_cache_alloc", "tp_kmem_cache_alloc", Some("btf_kmem_cache_alloc"),
        false),
    tp(Reclaim, "kmem", "kmem_cache_alloc_node", "tp_kmem_cache_alloc_node",
        Some("btf_kmem_cache_alloc_node"), true),
    tp(Reclaim, "kmem", "mm_page_alloc", "tp_mm_page_alloc", Some("btf_mm_page_alloc"), false),
];

/// Every program name of the table with the function its fentry/fexit form (or the
/// tracepoint its tp_btf form) is loaded for (`None`: kprobe/kretprobe/tracepoint programs,
/// loaded without a target).
pub fn table_programs() -> Vec<(&'static str, Option<&'static str>)> {
    let mut programs = Vec::new();
    for point in KERNEL_ATTACH_TABLE {
        match point.hook {
            Hook::Function {
                function,
                fentry,
                fexit,
                kprobe,
                kretprobe,
            } => {
                programs.push((fentry, Some(function)));
                if let Some(fexit) = fexit {
                    programs.push((fexit, Some(function)));
                }
                programs.push((kprobe, None));
                if let Some(kretprobe) = kretprobe {
                    programs.push((kretprobe, None));
                }
            }
            Hook::Tracepoint {
                name,
                program,
                btf_program,
                ..
            } => {
                programs.push((program, None));
                if let Some(btf_program) = btf_program {
                    programs.push((btf_program, Some(name)));
                }
            }
        }
    }
    let mut seen = HashSet::new();
    programs.retain(|(name, _)| seen.insert(*name));
    programs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_programs_are_unique_fentry_per_function() {
        let mut fentry = HashSet::new();
        for point in KERNEL_ATTACH_TABLE {
            if let Hook::Function {
                fentry: entry,
                fexit,
                ..
            } = point.hook
            {
                assert!(
                    fentry.insert(entry),
                    "{entry} used twice: an fentry program has one target"
                );
                if let Some(fexit) = fexit {
                    assert!(fentry.insert(fexit), "{fexit} used twice");
                }
            }
        }
    }
}
