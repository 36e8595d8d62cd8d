//! Maps and load-time globals shared by every probe family.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf, StackTrace},
};
use tracer_common::{
    capacity, counter, shed, DependencyKey, DependencySeen, HeldStack, UserLock, CLASS_NAME_LEN,
    COMM_LEN,
};

/// Records for the daemon. Userspace may resize it before load (`--ringbuf-kib`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Every dependency seen, with its occurrence count: the authoritative set, which the
/// daemon re-reads when ring-buffer records were dropped.
#[map]
pub static DEPENDENCIES: HashMap<DependencyKey, DependencySeen> =
    HashMap::with_max_entries(capacity::DEPENDENCIES, 0);

/// Held-lock stack per thread id. LRU so that a thread whose exit we missed cannot fill it.
#[map]
pub static HELD: LruHashMap<u32, HeldStack> = LruHashMap::with_max_entries(capacity::HELD_TASKS, 0);

/// A zeroed [`HeldStack`] to initialise new `HELD` entries from (too big for the BPF stack).
#[map]
pub static HELD_INIT: PerCpuArray<HeldStack> = PerCpuArray::with_max_entries(1, 0);

/// Stack ids index this map's buckets (also the size of [`STACK_OWNER`]).
pub const STACK_BUCKETS: u32 = 16384;
#[map]
pub static STACKS: StackTrace = StackTrace::with_max_entries(STACK_BUCKETS, 0);

/// The stack id first walked at each acquisition site (by the lock function's return
/// address), so that a lock taken again from there walks no stack
/// (`lock_state::stack_ids::site_stack_id`).
#[map]
pub static SITE_STACKS: LruHashMap<u64, i32> = LruHashMap::with_max_entries(16384, 0);
/// Per stack id, the site whose stack it holds (0: none): a bucket taken over by another
/// stack no longer answers for the site.
#[map]
pub static STACK_OWNER: Array<u64> = Array::with_max_entries(STACK_BUCKETS, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// 1 while every probe is attached (set by the daemon): outside that window some probes of a
/// lock would run and others not, and half-seen operations are false dependencies.
#[map]
pub static ARMED: Array<u32> = Array::with_max_entries(1, 0);

#[inline(always)]
pub fn armed() -> bool {
    ARMED.get(0).is_some_and(|flag| *flag != 0)
}

/// The overhead budget's shedding ([`tracer_common::shed`]), written by the daemon.
#[map]
pub static SHED: Array<u32> = Array::with_max_entries(shed::SLOTS, 0);

#[inline(always)]
pub fn shed_slot(slot: u32) -> u32 {
    SHED.get(slot).map_or(0, |value| *value)
}

/// Per call site (the lock function's return address), when it last made a new dependency
/// or was first checked while shedding: only sites quiet for [`shed::QUIET_NS`] are sampled.
/// Written only while the budget sheds.
#[map]
pub static SITE_LAST_NEW: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16384, 0);

/// User lock -> its initialisation site (`class_source::INIT_SITE`), learnt at
/// `pthread_mutex_init`/`pthread_rwlock_init`, forgotten at `*_destroy`.
#[map]
pub static USER_LOCK_CLASS: LruHashMap<UserLock, u64> =
    LruHashMap::with_max_entries(capacity::USER_LOCK_CLASSES, 0);

/// The traced pthread library is glibc (x86-64 `pthread_mutex_t` layout known): 1.
#[no_mangle]
pub static GLIBC_MUTEX_LAYOUT: u32 = 0;

// Load-time filters and switches, set with `EbpfLoader::override_global`.

/// Only trace this thread group (0: all).
#[no_mangle]
pub static FILTER_PID: u32 = 0;
/// Only trace this task (thread) id (0: all).
#[no_mangle]
pub static FILTER_TID: u32 = 0;
/// `trace -- COMMAND`: only trace the thread groups in [`TRACED_TASKS`] (1), the command's
/// process tree.
#[no_mangle]
pub static FILTER_TREE: u32 = 0;
/// Offsets in the `sched:sched_process_fork` record of `child_pid`, and in
/// `sched:sched_process_exec`'s of `old_pid` (layouts differ between kernels: read by
/// userspace from each event's `format` file); in `sched:sched_process_exit`'s of
/// `group_dead` (`u32::MAX`: a kernel before 6.16 has none, the group leader's exit stands
/// for it).
#[no_mangle]
pub static FORK_CHILD_PID_OFFSET: u32 = 0;
#[no_mangle]
pub static EXEC_OLD_PID_OFFSET: u32 = 0;
#[no_mangle]
pub static EXIT_GROUP_DEAD_OFFSET: u32 = u32::MAX;
/// How long a traced thread group that took locks waits in its exit for the daemon to read
/// its maps (0: not at all; where `sched_process_exit` comes after the address space is
/// torn down, before Linux 6.16, waiting would be of no use).
#[no_mangle]
pub static TREE_EXIT_WAIT_NS: u64 = 0;
/// The tracer's own thread group, never traced (its output would feed back into events).
#[no_mangle]
pub static FILTER_SELF_TGID: u32 = 0;
/// Stream every lock operation, not only new dependencies (debugging aid).
#[no_mangle]
pub static EMIT_LOCK_OPS: u32 = 0;
/// Key kernel classes by their init call site even where the init function passes a name
/// and a key (`--class-by-init-site`: what kernels that pass neither get anyway): 1.
#[no_mangle]
pub static CLASS_BY_INIT_SITE: u32 = 0;

/// Only trace tasks whose `comm` is exactly this (all zero: all tasks): the NUL-padded
/// `[u8; COMM_LEN]` the loader writes, as words, so that the hot-path test is two compares
/// (a byte loop unrolled by the compiler spilled ~100 bytes of the 512-byte stack).
#[no_mangle]
pub static FILTER_COMM: [u64; COMM_LEN / 8] = [0; COMM_LEN / 8];
/// `--module`: keep only dependencies with a side acquired from `[START, END)` (END 0: off).
#[no_mangle]
pub static FILTER_MODULE_START: u64 = 0;
#[no_mangle]
pub static FILTER_MODULE_END: u64 = 0;

/// Offsets of `gfp_flags` in the `kmem:*`/`vmscan:*` tracepoint records, read by userspace
/// from each event's `format` file (layouts differ between kernels). 0: not attached.
#[no_mangle]
pub static GFP_OFFSET_KMALLOC: u32 = 0;
#[no_mangle]
pub static GFP_OFFSET_KMALLOC_NODE: u32 = 0;
#[no_mangle]
pub static GFP_OFFSET_KMEM_CACHE_ALLOC: u32 = 0;
#[no_mangle]
pub static GFP_OFFSET_KMEM_CACHE_ALLOC_NODE: u32 = 0;
#[no_mangle]
pub static GFP_OFFSET_MM_PAGE_ALLOC: u32 = 0;
#[no_mangle]
pub static GFP_OFFSET_DIRECT_RECLAIM_BEGIN: u32 = 0;
/// Index of `gfp_flags` among the arguments of the same tracepoints as BTF raw tracepoints
/// (`tp_btf`, from the `btf_trace_*` prototypes in kernel BTF). `u32::MAX`: not attached.
#[no_mangle]
pub static GFP_ARG_KMALLOC: u32 = u32::MAX;
#[no_mangle]
pub static GFP_ARG_KMALLOC_NODE: u32 = u32::MAX;
#[no_mangle]
pub static GFP_ARG_KMEM_CACHE_ALLOC: u32 = u32::MAX;
#[no_mangle]
pub static GFP_ARG_KMEM_CACHE_ALLOC_NODE: u32 = u32::MAX;
#[no_mangle]
pub static GFP_ARG_MM_PAGE_ALLOC: u32 = u32::MAX;
/// `__GFP_DIRECT_RECLAIM` and `__GFP_FS` of the running kernel (from BTF when it has them).
#[no_mangle]
pub static GFP_DIRECT_RECLAIM: u32 = 0x400;
#[no_mangle]
pub static GFP_FS: u32 = 0x80;
/// Offsets (from BTF; `u32::MAX`: unknown) of `task_struct.mm`, `mm_struct.exe_file` and
/// `vm_area_struct.vm_file`: a user lock initialised from inside a shared library (a
/// wrapper) is classed by the first frame outside that library, found with `bpf_find_vma`.
#[no_mangle]
pub static TASK_MM_OFFSET: u32 = u32::MAX;
#[no_mangle]
pub static MM_EXE_FILE_OFFSET: u32 = u32::MAX;
#[no_mangle]
pub static VMA_FILE_OFFSET: u32 = u32::MAX;
/// Offset of `task_struct.flags` (from BTF; `u32::MAX`: unknown, scopes not checked) and the
/// `PF_MEMALLOC` / `PF_MEMALLOC_NOFS | PF_MEMALLOC_NOIO` bits that suppress `fs_reclaim`.
#[no_mangle]
pub static TASK_FLAGS_OFFSET: u32 = u32::MAX;
#[no_mangle]
pub static PF_MEMALLOC: u32 = 0x800;
#[no_mangle]
pub static PF_MEMALLOC_NOFS_NOIO: u32 = 0x40000 | 0x80000;

/// The traced process tree (`trace -- COMMAND`, [`FILTER_TREE`]): its thread groups by pid,
/// and the threads they created by tid (the fork tracepoint does not tell a thread from a
/// process), each until it exits, with a [`tracer_common::tree_state`] (meaningful for
/// thread groups). Not LRU: a full map refuses (counted), never evicts a traced process.
#[map]
pub static TRACED_TASKS: HashMap<u32, u32> = HashMap::with_max_entries(capacity::TRACED_TASKS, 0);

/// [`tracer_common::record::EXITING`] records, for the daemon's thread that reads the maps
/// of exiting processes (never held up by the main ring's work).
#[map]
pub static TREE_EVENTS: RingBuf = RingBuf::with_byte_size(16 * 4096, 0);

/// Kernel lock instance -> class id, learnt at `__mutex_init`/`__init_rwsem`.
#[map]
pub static LOCK_CLASS: LruHashMap<u64, u64> =
    LruHashMap::with_max_entries(capacity::LOCK_CLASSES, 0);
/// Class id -> lockdep-style name, for classes whose name was already sent
/// ([`tracer_common::ClassEvent`]); `locktrace held` reads names here from a running trace.
#[map]
pub static CLASS_NAMES: LruHashMap<u64, [u8; CLASS_NAME_LEN]> =
    LruHashMap::with_max_entries(capacity::CLASS_NAMES, 0);

/// Frames of the kernel stack looked at by the `--module` filter.
pub const MODULE_FRAMES: usize = 12;
#[map]
pub static MODULE_FRAMES_SCRATCH: PerCpuArray<[u64; MODULE_FRAMES]> =
    PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn global_u64(value: &'static u64) -> u64 {
    // SAFETY: as `global`.
    unsafe { core::ptr::read_volatile(value) }
}

#[inline(always)]
pub fn global(value: &'static u32) -> u32 {
    // SAFETY: a read-only global of the object; volatile so that the loader's value is read
    // rather than the compile-time default.
    unsafe { core::ptr::read_volatile(value) }
}

/// Insert or update `key` in an LRU map, counting in `created` an insert that made a new entry
/// (which may have evicted another): the daemon derives evictions from it.
#[inline(always)]
pub fn insert_counted<K, V>(map: &LruHashMap<K, V>, key: &K, value: &V, created: u32) {
    if map.insert(key, value, u64::from(BPF_NOEXIST)).is_ok() {
        count(created);
    } else {
        let _ = map.insert(key, value, 0);
    }
}

/// Remove `key` from an LRU map, counting in `removed` when it was there.
#[inline(always)]
pub fn remove_counted<K, V>(map: &LruHashMap<K, V>, key: &K, removed: u32) {
    if map.remove(key).is_ok() {
        count(removed);
    }
}

#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *slot += 1 };
    }
}
