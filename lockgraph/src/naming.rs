//! How locktrace spells class names and tells locking machinery from the code that called
//! it. Every source (live tracing, the held-lock table, lockdep import) and every sink (the
//! report's `at:` lines) uses these, so a class has one name wherever it shows up.

use crate::model::Frame;

/// lockdep's pseudo-lock for "this allocation may enter filesystem reclaim".
pub const FS_RECLAIM: &str = "fs_reclaim";
/// lockdep's pseudo-lock for "an mmu-notifier invalidation may run here".
pub const MMU_NOTIFIER_INVALIDATE_RANGE_START: &str = "mmu_notifier_invalidate_range_start";

/// Names lockdep gives its pseudo-locks (an imported class so named is a pseudo-lock).
pub const LOCKDEP_PSEUDO_LOCKS: &[&str] = &[
    FS_RECLAIM,
    MMU_NOTIFIER_INVALIDATE_RANGE_START,
    "console_owner",
    "console_lock",
];

/// A pseudo-lock id this build does not know (a newer eBPF object).
pub fn unknown_pseudo_lock(id: u64) -> String {
    format!("pseudo#{id}")
}

/// A class keyed by its init key whose name string was never read.
pub fn unnamed_init_key(key: u64) -> String {
    format!("class@{key:#x}")
}

/// A lock inside a data symbol: `symbol`; `symbol[K]` when the variable is an array of
/// locks (its size a multiple of the lock's, larger than one) and the lock is element K;
/// `symbol+0xOFFSET` inside any other larger object.
pub fn data_symbol(
    symbol: &str,
    offset: u64,
    symbol_size: Option<u64>,
    lock_size: Option<u64>,
) -> String {
    match (symbol_size, lock_size) {
        (Some(total), Some(lock)) if lock > 0 && total > lock && total.is_multiple_of(lock) => {
            if offset.is_multiple_of(lock) {
                format!("{symbol}[{}]", offset / lock)
            } else {
                format!("{symbol}[{}]+{:#x}", offset / lock, offset % lock)
            }
        }
        _ if offset == 0 => symbol.to_string(),
        _ => format!("{symbol}+{offset:#x}"),
    }
}

/// One heap instance of a class, when instances of the class are ordered among themselves:
/// `CLASS[0xADDRESS]`.
pub fn instance_of(class: &str, lock: u64) -> String {
    format!("{class}[{lock:#x}]")
}

/// A lock named by the first function seen acquiring it, or by its address when the stack
/// had no function outside the locking machinery.
pub fn acquired_at(site: Option<&str>, lock: u64) -> String {
    match site {
        Some(site) => format!("lock@{site}"),
        None => format!("lock@{lock:#x}"),
    }
}

/// The class of user locks initialised at one call site (`symbol` and offset when the
/// return address of the `pthread_*_init` call resolved, else the address).
pub fn init_site(symbol: Option<(&str, u64)>, site: u64) -> String {
    match symbol {
        Some((symbol, offset)) => format!("init@{symbol}+{offset:#x}"),
        None => format!("init@{site:#x}"),
    }
}

/// Symbol prefixes of the locking primitives and lockdep's hooks, compared without leading
/// underscores (`__mutex_lock` is `mutex_`, `___pthread_mutex_lock` is `pthread_`).
const LOCKING_PREFIXES: &[&str] = &[
    "mutex_",
    "down_",
    "downgrade_",
    "up_",
    "rwsem_",
    "pthread_",
    "lock_acquire",
    "lock_map_acquire",
    "raw_spin_lock",
    "fs_reclaim_acquire",
];

/// Symbol prefixes of the tracing machinery a probe adds under the lock function: the BPF
/// program, its trampoline, ftrace's trampoline, a BTF raw tracepoint's dispatch
/// (`__bpf_trace_<event>`, `bpf_trace_run<N>`), the kretprobe/rethook trampolines.
const TRACER_PREFIXES: &[&str] = &[
    "bpf_prog_",
    "bpf_trampoline_",
    "ftrace_trampoline",
    "__bpf_prog_enter",
    "__bpf_prog_exit",
    "__bpf_trace_",
    "bpf_trace_run",
    "__traceiter_",
    "arch_rethook_trampoline",
    "__kretprobe_trampoline",
    "kretprobe_trampoline",
];

/// Prefixes that name probe machinery in a wider sense, skipped when looking for the
/// function that took a lock (compared without leading underscores, like
/// [`LOCKING_PREFIXES`]).
const PROBE_PREFIXES: &[&str] = &["bpf", "ftrace_", "fentry_", "kprobe"];

/// Whether a frame's symbol is the tracer's own machinery (dropped from kernel stacks).
pub fn is_tracer_frame(symbol: &str) -> bool {
    TRACER_PREFIXES
        .iter()
        .any(|prefix| symbol.starts_with(prefix))
}

/// Whether a frame's symbol is a locking primitive (or probe machinery) rather than the
/// code that asked for the lock.
pub fn is_locking_frame(symbol: &str) -> bool {
    let bare = symbol.trim_start_matches('_');
    // `down` itself: the semaphore's and `__down`, the slow path of several.
    bare == "down"
        || LOCKING_PREFIXES
            .iter()
            .chain(PROBE_PREFIXES)
            .any(|prefix| bare.starts_with(prefix))
}

/// The first frame of a stack that is not a locking primitive: where the lock was taken.
pub fn acquisition_site(stack: &[Frame]) -> Option<&str> {
    stack
        .iter()
        .filter_map(|frame| frame.symbol.as_deref())
        .find(|symbol| !is_locking_frame(symbol))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(symbol: &str) -> Frame {
        Frame {
            symbol: Some(symbol.to_string()),
            ..Frame::default()
        }
    }

    #[test]
    fn the_acquisition_site_is_the_first_frame_outside_the_locking_machinery() {
        let stack = [
            frame("bpf_prog_6deef7357e7b4530_fentry_mutex_lock"),
            frame("__mutex_lock"),
            frame("mutex_lock_nested"),
            frame("nvkm_vmm_get"),
            frame("nvkm_uvmm_mthd"),
        ];
        assert_eq!(acquisition_site(&stack), Some("nvkm_vmm_get"));
        let user = [
            frame("___pthread_mutex_lock"),
            frame("worker"),
            frame("start_thread"),
        ];
        assert_eq!(acquisition_site(&user), Some("worker"));
        assert_eq!(
            acquisition_site(&[frame("down_write"), frame("rwsem_down_write_slowpath")]),
            None
        );
    }

    #[test]
    fn tracer_frames_are_not_locking_code_callers() {
        assert!(is_tracer_frame("bpf_trampoline_6442491234"));
        assert!(is_tracer_frame("__bpf_trace_kmalloc"));
        assert!(!is_tracer_frame("mutex_lock"));
        assert!(is_locking_frame("__kprobe_trampoline_handler"));
        assert!(!is_locking_frame("nouveau_svmm_invalidate_range_start"));
    }

    #[test]
    fn names_are_spelled_one_way() {
        assert_eq!(data_symbol("big_lock", 0, None, None), "big_lock");
        assert_eq!(data_symbol("big_lock", 0, Some(40), Some(40)), "big_lock");
        assert_eq!(data_symbol("chop", 0x28, None, Some(40)), "chop+0x28");
        // An array of five 40-byte mutexes.
        assert_eq!(data_symbol("chop", 0, Some(200), Some(40)), "chop[0]");
        assert_eq!(data_symbol("chop", 0x50, Some(200), Some(40)), "chop[2]");
        assert_eq!(
            data_symbol("chop", 0x54, Some(200), Some(40)),
            "chop[2]+0x4"
        );
        // A struct holding a lock: its size is no multiple of the lock's.
        assert_eq!(data_symbol("state", 0x8, Some(52), Some(40)), "state+0x8");
        assert_eq!(acquired_at(Some("worker"), 0x10), "lock@worker");
        assert_eq!(acquired_at(None, 0x10), "lock@0x10");
        assert_eq!(
            init_site(Some(("make_pair", 0x2a)), 0x1234),
            "init@make_pair+0x2a"
        );
        assert_eq!(init_site(None, 0x1234), "init@0x1234");
        assert_eq!(unnamed_init_key(0xff), "class@0xff");
    }
}
