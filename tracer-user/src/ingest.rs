//! The live source: turns ring-buffer records into lock-graph classes and dependencies,
//! naming classes and symbolizing stacks on the way.
use std::collections::HashMap;

use lockgraph::{
    ClassId, ClassInfo, ClassKey, Cycle, Dependency, Frame, LockGraph, LockKind, NameSource,
    TaskInfo,
};
use tracer_common::{class_source, flags, pseudo, ClassEvent, DependencyEvent, DependencyKey};

use crate::{
    events::{c_str, comm_str},
    symbols::Symbols,
};


/// Where the raw frames of a stack id come from (the BPF stack-trace map when live).
pub trait StackSource {
    fn frames(&self, stack_id: i32) -> Vec<u64>;
}

/// One side of a dependency as the kernel reported it.
struct RawLock {
    scope: u32,
    class: u64,
    lock: u64,
    kind: u32,
    source: u32,
}

pub struct Ingest {
    pub graph: LockGraph,
    symbols: Symbols,
    /// Names from `ClassEvent`s (lockdep's init names), by class key.
    init_names: HashMap<u64, (String, u32)>,
    /// Classes already resolved, by (scope, raw class id, class source).
    resolved: HashMap<(u32, u64, u32), ClassId>,
    /// Raw class id → class, for guards (the kernel sends the guard's raw id only).
    by_raw_class: HashMap<(u32, u64), ClassId>,
    pub dependency_records: u64,
    /// Cycles found while resynchronising, for the caller to announce.
    pub resynced_cycles: Vec<Cycle>,
}

impl Ingest {
    pub fn new() -> Self {
        Self {
            graph: LockGraph::new(),
            symbols: Symbols::new(),
            init_names: HashMap::new(),
            resolved: HashMap::new(),
            by_raw_class: HashMap::new(),
            dependency_records: 0,
            resynced_cycles: Vec::new(),
        }
    }

    /// See [`Symbols::load_kernel_symbols`].
    pub fn load_kernel_symbols(&mut self) {
        self.symbols.load_kernel_symbols();
    }

    pub fn on_class(&mut self, event: &ClassEvent) {
        self.init_names.insert(event.class, (c_str(&event.name), event.kind));
    }

    pub fn on_dependency(&mut self, event: &DependencyEvent, stacks: &impl StackSource) -> Vec<Cycle> {
        self.dependency_records += 1;
        let scope = if is_user_kind(event.new_kind) { event.pid } else { 0 };
        let held_stack = self.frames(scope, stacks.frames(event.held_stack_id), event.held_caller);
        let new_stack = self.frames(scope, stacks.frames(event.new_stack_id), event.new_caller);
        let held_raw = RawLock {
            scope,
            class: event.held_class,
            lock: event.held_lock,
            kind: event.held_kind,
            source: event.held_class_source,
        };
        let new_raw = RawLock {
            scope,
            class: event.new_class,
            lock: event.new_lock,
            kind: event.new_kind,
            source: event.new_class_source,
        };
        let held = self.resolve(&held_raw, &held_stack);
        let new = self.resolve(&new_raw, &new_stack);
        if event.flags & flags::RESENT != 0 {
            // A later occurrence of a known dependency: only its stacks are news.
            self.graph.refresh_stacks(held, new, new_stack, held_stack);
            return Vec::new();
        }
        let guard = (event.guard_class != 0)
            .then(|| self.by_raw_class.get(&(scope, event.guard_class)).copied())
            .flatten();
        // The graph keeps the task of an edge's first occurrence only: skip building it
        // (a String) for the repeats that dominate a busy trace.
        let task = if self.graph.edge(held, new).is_some() {
            TaskInfo::default()
        } else {
            TaskInfo { comm: comm_str(&event.comm), pid: event.pid, tid: event.tid }
        };
        self.graph.add_dependency(Dependency {
            held,
            new,
            held_read: event.flags & flags::HELD_READ != 0,
            new_read: event.flags & flags::NEW_READ != 0,
            timestamp_ns: event.timestamp_ns,
            task,
            new_stack,
            held_stack,
            guard,
        })
    }

    /// A dependency recovered from the in-kernel set after ring-buffer records were lost.
    /// Returns whether it was new to the graph.
    pub fn add_resynced(&mut self, key: &DependencyKey) -> bool {
        let held = self.raw_from_key(key.scope, key.held_class);
        let new = self.raw_from_key(key.scope, key.new_class);
        let held = self.resolve(&held, &[]);
        let new = self.resolve(&new, &[]);
        if self.graph.edge(held, new).is_some() {
            return false;
        }
        let guard = self.by_raw_class.get(&(key.scope, key.guard_class)).copied();
        let cycles = self.graph.add_dependency(Dependency {
            held,
            new,
            held_read: key.flags & flags::HELD_READ != 0,
            new_read: key.flags & flags::NEW_READ != 0,
            guard: guard.filter(|_| key.guard_class != 0),
            ..Dependency::default()
        });
        self.resynced_cycles.extend(cycles);
        true
    }

    /// What the kernel's key alone says about a class (its source is not in the key).
    fn raw_from_key(&self, scope: u32, class: u64) -> RawLock {
        let user = scope != 0;
        let (source, kind) = if let Some((_, kind)) = self.init_names.get(&class).filter(|_| !user) {
            (class_source::INIT_KEY, *kind)
        } else if !user && (class == pseudo::FS_RECLAIM || class == pseudo::MMU_NOTIFIER_INVALIDATE_RANGE_START) {
            (class_source::PSEUDO, tracer_common::kind::PSEUDO)
        } else if user {
            (class_source::INSTANCE, tracer_common::kind::PTHREAD_MUTEX)
        } else {
            (class_source::INSTANCE, tracer_common::kind::MUTEX)
        };
        RawLock { scope, class, lock: class, kind, source }
    }

    fn frames(&mut self, scope: u32, addrs: Vec<u64>, caller: u64) -> Vec<Frame> {
        stack_frames(&mut self.symbols, scope, addrs, caller)
    }

    fn resolve(&mut self, raw: &RawLock, stack: &[Frame]) -> ClassId {
        // Instance-named classes are keyed by instance; the others by their class id.
        let identity = if raw.source == class_source::INSTANCE { raw.lock } else { raw.class };
        if let Some(&id) = self.resolved.get(&(raw.scope, identity, raw.source)) {
            return id;
        }
        let kind = lock_kind(raw.kind);
        let (key, info) = match raw.source {
            class_source::PSEUDO => {
                let name = match raw.class {
                    pseudo::FS_RECLAIM => "fs_reclaim".to_string(),
                    pseudo::MMU_NOTIFIER_INVALIDATE_RANGE_START => {
                        "mmu_notifier_invalidate_range_start".to_string()
                    }
                    other => format!("pseudo#{other}"),
                };
                (
                    ClassKey::Id { source: class_source::PSEUDO, id: raw.class },
                    ClassInfo::new(name, LockKind::Pseudo, NameSource::Pseudo),
                )
            }
            class_source::INIT_KEY => {
                let name = self
                    .init_names
                    .get(&raw.class)
                    .map(|(name, _)| name.clone())
                    .unwrap_or_else(|| format!("class@{:#x}", raw.class));
                (
                    ClassKey::Id { source: class_source::INIT_KEY, id: raw.class },
                    ClassInfo::new(name, kind, NameSource::InitName),
                )
            }
            class_source::INIT_SITE => self.init_site_class(raw, kind),
            _ => self.instance_class(raw, kind, stack),
        };
        let id = self.graph.class(key, info);
        self.resolved.insert((raw.scope, identity, raw.source), id);
        self.by_raw_class.insert((raw.scope, raw.class), id);
        id
    }

    /// A user lock initialised while tracing: the class of its `pthread_*_init` call site,
    /// named `init@FUNCTION+OFFSET` (the return address of that call, in the process).
    fn init_site_class(&mut self, raw: &RawLock, kind: LockKind) -> (ClassKey, ClassInfo) {
        let key = ClassKey::Id { source: class_source::INIT_SITE, id: raw.class ^ (u64::from(raw.scope) << 48) };
        let name = init_site_name(&mut self.symbols, raw.scope, raw.class);
        (key, ClassInfo::new(name, kind, NameSource::InitSite))
    }

    /// A lock whose initialisation was not seen: a static lock by its symbol, any other by
    /// the function that acquired it first. Each instance stays its own class: merging the
    /// instances a function takes could invent cycles that no lock order has.
    fn instance_class(&mut self, raw: &RawLock, kind: LockKind, stack: &[Frame]) -> (ClassKey, ClassInfo) {
        let key = ClassKey::Id { source: class_source::INSTANCE, id: raw.lock ^ (u64::from(raw.scope) << 48) };
        let symbol = if raw.scope == 0 {
            self.symbols.kernel_data_symbol(raw.lock)
        } else {
            self.symbols.user_data_symbol(raw.scope, raw.lock)
        };
        if let Some((symbol, offset)) = symbol {
            let name = if offset == 0 { symbol } else { format!("{symbol}+{offset:#x}") };
            return (key, ClassInfo::new(name, kind, NameSource::Symbol));
        }
        let name = match acquisition_site(stack) {
            Some(site) => format!("lock@{site}"),
            None => format!("lock@{:#x}", raw.lock),
        };
        (key, ClassInfo::new(name, kind, NameSource::AcquireSite))
    }
}

/// A user stack with the lock function's caller put back: the frame-pointer walk from the
/// entry of a function that keeps no frame pointer (glibc's `pthread_mutex_lock`) goes from
/// it straight to its caller's caller. `caller` is the return address the probe read from
/// `[sp]` (0: none); it becomes the second frame unless the stack already has it.
pub fn with_caller(mut addrs: Vec<u64>, caller: u64) -> Vec<u64> {
    if caller != 0 && !addrs.is_empty() && !addrs.contains(&caller) {
        addrs.insert(1, caller);
    }
    addrs
}

/// Symbolized frames of a stack (`scope`: 0 for the kernel, else the process), with the
/// probe's `caller` put back where the unwinder lost it (see [`with_caller`]); kernel
/// stacks without our own probe's frames.
pub fn stack_frames(symbols: &mut Symbols, scope: u32, addrs: Vec<u64>, caller: u64) -> Vec<Frame> {
    if addrs.is_empty() {
        return Vec::new();
    }
    if scope != 0 {
        return symbols.user_frames(scope, &with_caller(addrs, caller));
    }
    // Trimmed first: the caller belongs right after the lock function.
    let frames = without_tracer_frames(symbols.kernel_frames(&addrs));
    let addrs: Vec<u64> = frames.iter().map(|frame| frame.addr).collect();
    let with = with_caller(addrs.clone(), caller);
    if with.len() == addrs.len() {
        return frames;
    }
    without_tracer_frames(symbols.kernel_frames(&with))
}

/// Drops the frames our own probes add (the BPF program, its trampoline, ftrace's
/// trampoline, and unsymbolizable JIT addresses before the first real frame), so a stack
/// starts at the lock function as lockdep's do.
fn without_tracer_frames(frames: Vec<Frame>) -> Vec<Frame> {
    const TRACER_PREFIXES: &[&str] = &[
        "bpf_prog_",
        "bpf_trampoline_",
        "ftrace_trampoline",
        "__bpf_prog_enter",
        "__bpf_prog_exit",
        // A BTF raw tracepoint's dispatch (`__bpf_trace_<event>`, `bpf_trace_run<N>`).
        "__bpf_trace_",
        "bpf_trace_run",
        "__traceiter_",
        "arch_rethook_trampoline",
        "__kretprobe_trampoline",
        "kretprobe_trampoline",
    ];
    let is_tracer = |frame: &Frame| match frame.symbol.as_deref() {
        Some(symbol) => TRACER_PREFIXES.iter().any(|prefix| symbol.starts_with(prefix)),
        None => false,
    };
    let first_real = frames.iter().position(|frame| frame.symbol.is_some() && !is_tracer(frame));
    match first_real {
        Some(start) => frames.into_iter().skip(start).filter(|frame| !is_tracer(frame)).collect(),
        None => frames,
    }
}

/// The name of the class of user locks initialised at `site` in process `pid`.
pub fn init_site_name(symbols: &mut Symbols, pid: u32, site: u64) -> String {
    let frame = symbols.user_frames(pid, &[site]).pop();
    match frame.and_then(|frame| Some((frame.symbol?, frame.offset))) {
        Some((symbol, offset)) => format!("init@{symbol}+{offset:#x}"),
        None => format!("init@{site:#x}"),
    }
}

/// The first frame that is not a locking primitive (or tracing machinery).
pub fn acquisition_site(stack: &[Frame]) -> Option<String> {
    const LOCKING_PREFIXES: &[&str] = &[
        "mutex_", "__mutex_", "down_", "__down", "up_", "_down", "rwsem_", "__rwsem",
        "downgrade_write", "pthread_", "__pthread_", "___pthread_", "bpf_", "__bpf",
        "ftrace_", "fentry_", "kprobe", "__kprobe",
    ];
    stack
        .iter()
        .filter_map(|frame| frame.symbol.as_deref())
        .find(|symbol| !LOCKING_PREFIXES.iter().any(|prefix| symbol.starts_with(prefix)))
        .map(str::to_string)
}

fn is_user_kind(kind: u32) -> bool {
    crate::events::lock_kind(kind).is_ok_and(LockKind::is_user)
}

/// Unknown wire kinds (a newer eBPF object) are treated as mutexes.
fn lock_kind(kind: u32) -> LockKind {
    crate::events::lock_kind(kind).unwrap_or(LockKind::Mutex)
}

#[cfg(test)]
mod tests {
    use tracer_common::{kind, record};

    use super::*;

    struct NoStacks;
    impl StackSource for NoStacks {
        fn frames(&self, _stack_id: i32) -> Vec<u64> {
            Vec::new()
        }
    }

    fn class_event(class: u64, name: &str) -> ClassEvent {
        let mut bytes = [0u8; tracer_common::CLASS_NAME_LEN];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        ClassEvent { record: record::CLASS, kind: kind::MUTEX, class, name: bytes }
    }

    fn dep(held: u64, new: u64, held_source: u32, new_source: u32) -> DependencyEvent {
        DependencyEvent {
            record: record::DEPENDENCY,
            flags: 0,
            held_class: held,
            new_class: new,
            guard_class: 0,
            held_lock: held + 1,
            new_lock: new + 1,
            held_caller: 0,
            new_caller: 0,
            timestamp_ns: 1,
            held_kind: if held_source == class_source::PSEUDO { kind::PSEUDO } else { kind::MUTEX },
            new_kind: if new_source == class_source::PSEUDO { kind::PSEUDO } else { kind::MUTEX },
            held_class_source: held_source,
            new_class_source: new_source,
            held_stack_id: -1,
            new_stack_id: -1,
            pid: 1,
            tid: 1,
            comm: [0; 16],
        }
    }

    #[test]
    fn seed_chain_from_kernel_records_closes_the_cycle_on_its_last_edge() {
        let mut ingest = Ingest::new();
        ingest.on_class(&class_event(0x10, "&vmm->mutex"));
        ingest.on_class(&class_event(0x20, "&svmm->mutex"));
        let key = class_source::INIT_KEY;
        let pseudo_source = class_source::PSEUDO;
        let reclaim = pseudo::FS_RECLAIM;
        let notifier = pseudo::MMU_NOTIFIER_INVALIDATE_RANGE_START;
        assert!(ingest.on_dependency(&dep(0x10, reclaim, key, pseudo_source), &NoStacks).is_empty());
        assert!(ingest
            .on_dependency(&dep(reclaim, notifier, pseudo_source, pseudo_source), &NoStacks)
            .is_empty());
        assert!(ingest.on_dependency(&dep(notifier, 0x20, pseudo_source, key), &NoStacks).is_empty());
        let cycles = ingest.on_dependency(&dep(0x20, 0x10, key, key), &NoStacks);
        assert_eq!(cycles.len(), 1);
        let mut names: Vec<&str> = cycles[0].classes.iter().map(|&id| ingest.graph.name(id)).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["&svmm->mutex", "&vmm->mutex", "fs_reclaim", "mmu_notifier_invalidate_range_start"]
        );
        assert_eq!(ingest.dependency_records, 4);
    }

    #[test]
    fn a_resent_dependency_only_completes_the_stacks() {
        struct ByStackId;
        impl StackSource for ByStackId {
            fn frames(&self, stack_id: i32) -> Vec<u64> {
                (0..stack_id.max(0) as u64).map(|i| 0x1000 + i).collect()
            }
        }
        let mut ingest = Ingest::new();
        let key = class_source::INIT_KEY;
        let mut first = dep(0x10, 0x20, key, key);
        first.new_stack_id = 2;
        assert!(ingest.on_dependency(&first, &ByStackId).is_empty());
        let mut resent = first;
        resent.flags |= flags::RESENT;
        resent.new_stack_id = 5;
        ingest.on_dependency(&resent, &ByStackId);
        let (held, new) = (ingest.graph.class_by_key(&ClassKey::Id { source: key, id: 0x10 }).unwrap(),
                           ingest.graph.class_by_key(&ClassKey::Id { source: key, id: 0x20 }).unwrap());
        let edge = ingest.graph.edge(held, new).unwrap();
        assert_eq!(edge.count, 1, "a re-send is not another occurrence");
        assert_eq!(edge.new_stack.len(), 5, "the longer stack replaced the short one");
        // A shorter one later does not replace it.
        resent.new_stack_id = 3;
        ingest.on_dependency(&resent, &ByStackId);
        assert_eq!(ingest.graph.edge(held, new).unwrap().new_stack.len(), 5);
    }

    #[test]
    fn tracer_frames_are_dropped_from_kernel_stacks() {
        let frames = vec![
            Frame::addr(0xffff_ffff_c000_1000),
            Frame::symbol("bpf_prog_6deef7357e7b4530_fentry_mutex_lock", 0x40),
            Frame::symbol("bpf_trampoline_6442491092", 0x4f),
            Frame::symbol("mutex_lock", 0x5),
            Frame::symbol("nvkm_uvmm_mthd", 0x4d5),
        ];
        let kept: Vec<_> = without_tracer_frames(frames).into_iter().filter_map(|f| f.symbol).collect();
        assert_eq!(kept, ["mutex_lock", "nvkm_uvmm_mthd"]);
        // An allocation seen at a BTF raw tracepoint starts at the allocator.
        let frames = vec![
            Frame::symbol("bpf_prog_0123456789abcdef_btf_kmalloc", 0x40),
            Frame::symbol("bpf_trace_run6", 0xa2),
            Frame::symbol("__kmalloc_cache_noprof", 0x244),
            Frame::symbol("nvkm_vma_tail", 0x35),
        ];
        let kept: Vec<_> = without_tracer_frames(frames).into_iter().filter_map(|f| f.symbol).collect();
        assert_eq!(kept, ["__kmalloc_cache_noprof", "nvkm_vma_tail"]);
    }

    #[test]
    fn the_caller_becomes_the_second_frame_once() {
        assert_eq!(with_caller(vec![0x10, 0x30], 0x20), [0x10, 0x20, 0x30]);
        assert_eq!(with_caller(vec![0x10, 0x20, 0x30], 0x20), [0x10, 0x20, 0x30]);
        assert_eq!(with_caller(vec![0x10], 0x20), [0x10, 0x20]);
        assert_eq!(with_caller(vec![0x10, 0x30], 0), [0x10, 0x30]);
        assert!(with_caller(Vec::new(), 0x20).is_empty());
    }

    #[test]
    fn acquisition_site_skips_locking_primitives() {
        let frames = [Frame::symbol("mutex_lock", 5), Frame::symbol("nvkm_uvmm_mthd", 0x4d5)];
        assert_eq!(acquisition_site(&frames).as_deref(), Some("nvkm_uvmm_mthd"));
        assert_eq!(acquisition_site(&[Frame::addr(1)]), None);
    }
}
