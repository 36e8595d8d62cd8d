//! The live source: turns ring-buffer records into lock-graph classes and dependencies,
//! naming classes and symbolizing stacks on the way.
use std::collections::HashMap;

use lockgraph::{
    naming, ClassId, ClassInfo, ClassKey, Cycle, Dependency, Frame, Guard, LockGraph, LockKind,
    Mode, NameSource, TaskInfo,
};
use tracer_common::{
    class_source, flags, pseudo, ClassEvent, DependencyEvent, DependencyKey, DependencySeen,
};

use crate::{
    class_names,
    events::{c_str, comm_str},
    stacks,
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
        self.init_names
            .insert(event.class, (c_str(&event.name), event.kind));
    }

    pub fn on_dependency(
        &mut self,
        event: &DependencyEvent,
        stacks: &impl StackSource,
    ) -> Vec<Cycle> {
        self.dependency_records += 1;
        let scope = if is_user_kind(event.new_kind) {
            event.pid
        } else {
            0
        };
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
        let mut held = self.resolve(&held_raw, &held_stack);
        let mut new = self.resolve(&new_raw, &new_stack);
        if event.flags & flags::INSTANCES != 0 && scope != 0 {
            held = self.instance_node(&held_raw, Some(held));
            new = self.instance_node(&new_raw, Some(new));
        }
        if event.flags & flags::RESENT != 0 {
            // A later occurrence of a known dependency: only its stacks are news.
            self.graph.refresh_stacks(held, new, new_stack, held_stack);
            return Vec::new();
        }
        let guard = self.event_guard(scope, event);
        // The graph keeps the task of an edge's first occurrence only: skip building it
        // (a String) for the repeats that dominate a busy trace.
        let task = if self.graph.edge(held, new).is_some() {
            TaskInfo::default()
        } else {
            TaskInfo {
                comm: comm_str(&event.comm),
                pid: event.pid,
                tid: event.tid,
            }
        };
        self.graph.add_dependency(Dependency {
            held,
            new,
            held_read: event.flags & flags::HELD_READ != 0,
            new_read: event.flags & flags::NEW_READ != 0,
            held_recursive: event.flags & flags::HELD_RECURSIVE_READ != 0,
            new_recursive: event.flags & flags::NEW_RECURSIVE_READ != 0,
            timestamp_ns: event.timestamp_ns,
            task,
            new_stack,
            held_stack,
            guard,
        })
    }

    /// The guard of a recorded occurrence: its class resolved as the dependencies' classes
    /// are, unless that would name a lock instance without a stack (then only a class some
    /// dependency already named will do).
    fn event_guard(&mut self, scope: u32, event: &DependencyEvent) -> Option<Guard> {
        if event.guard_class == 0 || event.guard_lock == 0 {
            return None;
        }
        if event.guard_class_source != class_source::INSTANCE {
            let raw = RawLock {
                scope,
                class: event.guard_class,
                lock: event.guard_lock,
                kind: event.guard_kind,
                source: event.guard_class_source,
            };
            let class = self.resolve(&raw, &[]);
            return Some(Guard {
                class,
                lock: event.guard_lock,
            });
        }
        self.guard(scope, event.guard_class, event.guard_lock)
    }

    /// The guard of an occurrence as the kernel reported it (class and instance; 0: none).
    /// A guard whose class the graph does not know yet counts as none: a cycle is called
    /// guarded only when that is certain.
    fn guard(&self, scope: u32, class: u64, lock: u64) -> Option<Guard> {
        if class == 0 || lock == 0 {
            return None;
        }
        let class = *self.by_raw_class.get(&(scope, class))?;
        Some(Guard { class, lock })
    }

    /// A dependency recovered from the in-kernel set after ring-buffer records were lost:
    /// new to the graph, or a known one under a guard the graph has not seen for it (its
    /// lost-guard record was lost, or it came back under another guard after the daemon
    /// drained the set). Returns whether the graph learnt something.
    pub fn add_resynced(&mut self, key: &DependencyKey, seen: &DependencySeen) -> bool {
        let held = self.raw_from_key(key.scope, key.held_class);
        let new = self.raw_from_key(key.scope, key.new_class);
        let (held, new) = if key.flags & flags::INSTANCES != 0 && key.scope != 0 {
            // The key holds the two instances; their class is known if a record of either
            // arrived, else they are named by themselves.
            (
                self.instance_node(&held, None),
                self.instance_node(&new, None),
            )
        } else {
            (self.resolve(&held, &[]), self.resolve(&new, &[]))
        };
        let guard = self.guard(key.scope, seen.guard_class, seen.guard_lock);
        let mode = lockgraph::mode_bit(
            Mode::of(
                key.flags & flags::HELD_READ != 0,
                key.flags & flags::HELD_RECURSIVE_READ != 0,
            ),
            Mode::of(
                key.flags & flags::NEW_READ != 0,
                key.flags & flags::NEW_RECURSIVE_READ != 0,
            ),
        );
        if let Some(edge) = self.graph.edge(held, new) {
            let guard_known = edge.guards.contains(&guard) || edge.guards.contains(&None);
            if guard_known && edge.modes & mode != 0 {
                return false;
            }
        }
        let cycles = self.graph.add_dependency(Dependency {
            held,
            new,
            held_read: key.flags & flags::HELD_READ != 0,
            new_read: key.flags & flags::NEW_READ != 0,
            held_recursive: key.flags & flags::HELD_RECURSIVE_READ != 0,
            new_recursive: key.flags & flags::NEW_RECURSIVE_READ != 0,
            guard,
            ..Dependency::default()
        });
        self.resynced_cycles.extend(cycles);
        true
    }

    /// What the kernel's key alone says about a class (its source is not in the key).
    fn raw_from_key(&self, scope: u32, class: u64) -> RawLock {
        let user = scope != 0;
        let (source, kind) = if let Some((_, kind)) = self.init_names.get(&class).filter(|_| !user)
        {
            (class_source::INIT_KEY, *kind)
        } else if !user
            && (class == pseudo::FS_RECLAIM || class == pseudo::MMU_NOTIFIER_INVALIDATE_RANGE_START)
        {
            (class_source::PSEUDO, tracer_common::kind::PSEUDO)
        } else if user {
            (class_source::INSTANCE, tracer_common::kind::PTHREAD_MUTEX)
        } else {
            (class_source::INSTANCE, tracer_common::kind::MUTEX)
        };
        RawLock {
            scope,
            class,
            lock: class,
            kind,
            source,
        }
    }

    fn frames(&mut self, scope: u32, addrs: Vec<u64>, caller: u64) -> Vec<Frame> {
        stacks::stack_frames(&mut self.symbols, scope, addrs, caller)
    }

    fn resolve(&mut self, raw: &RawLock, stack: &[Frame]) -> ClassId {
        // Instance-named classes are keyed by instance; the others by their class id.
        let identity = if raw.source == class_source::INSTANCE {
            raw.lock
        } else {
            raw.class
        };
        if let Some(&id) = self.resolved.get(&(raw.scope, identity, raw.source)) {
            return id;
        }
        let kind = lock_kind(raw.kind);
        let (key, info) = match raw.source {
            class_source::PSEUDO => {
                let name = class_names::pseudo_lock(raw.class);
                (
                    ClassKey::Id {
                        source: class_source::PSEUDO,
                        id: raw.class,
                    },
                    ClassInfo::new(name, LockKind::Pseudo, NameSource::Pseudo),
                )
            }
            class_source::INIT_KEY => {
                let name = self
                    .init_names
                    .get(&raw.class)
                    .map(|(name, _)| name.clone());
                let (name, naming) = class_names::init_key(&mut self.symbols, name, raw.class);
                (
                    ClassKey::Id {
                        source: class_source::INIT_KEY,
                        id: raw.class,
                    },
                    ClassInfo::new(name, kind, naming),
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

    /// The node of one instance of a user class whose instances are nested in each other
    /// (`class`: the class, when known): its orders with the class's other instances are
    /// edges between such nodes, so inversions among instances are cycles, a consistent
    /// nesting none. Static locks by their symbol (`chop[2]`), others by class and address.
    fn instance_node(&mut self, raw: &RawLock, class: Option<ClassId>) -> ClassId {
        let identity = raw.lock ^ (u64::from(raw.scope) << 48);
        if let Some(&id) = self.resolved.get(&(raw.scope, identity, INSTANCE_NODE)) {
            return id;
        }
        let kind = lock_kind(raw.kind);
        let info = match class_names::static_name(&mut self.symbols, raw.scope, raw.lock, raw.kind)
        {
            Some(name) => ClassInfo::new(name, kind, NameSource::Symbol),
            None => {
                let class_name = match class {
                    Some(class) => lockgraph::strip_lockdep_suffix(self.graph.name(class)),
                    None => "lock",
                };
                let name = naming::instance_of(class_name, raw.lock);
                ClassInfo::new(name, kind, NameSource::Instance)
            }
        };
        let key = ClassKey::Id {
            source: INSTANCE_NODE,
            id: identity,
        };
        let id = self.graph.class(key, info);
        self.resolved
            .insert((raw.scope, identity, INSTANCE_NODE), id);
        id
    }

    /// A user lock initialised while tracing: the class of its `pthread_*_init` call site,
    /// named `init@FUNCTION+OFFSET` (the return address of that call, in the process).
    fn init_site_class(&mut self, raw: &RawLock, kind: LockKind) -> (ClassKey, ClassInfo) {
        let key = ClassKey::Id {
            source: class_source::INIT_SITE,
            id: raw.class ^ (u64::from(raw.scope) << 48),
        };
        let name = class_names::init_site(&mut self.symbols, raw.scope, raw.class);
        (key, ClassInfo::new(name, kind, NameSource::InitSite))
    }

    /// A lock whose initialisation was not seen: a static lock by its symbol, any other by
    /// the function that acquired it first. Each instance stays its own class: merging the
    /// instances a function takes could invent cycles that no lock order has.
    fn instance_class(
        &mut self,
        raw: &RawLock,
        kind: LockKind,
        stack: &[Frame],
    ) -> (ClassKey, ClassInfo) {
        let key = ClassKey::Id {
            source: class_source::INSTANCE,
            id: raw.lock ^ (u64::from(raw.scope) << 48),
        };
        let (name, naming) =
            class_names::instance(&mut self.symbols, raw.scope, raw.lock, raw.kind, stack);
        (key, ClassInfo::new(name, kind, naming))
    }
}

/// The key source of [`Ingest::instance_node`]s: not a wire value (those of
/// `class_source` are small), so no eBPF class can share a key with an instance node.
const INSTANCE_NODE: u32 = 0x100;

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
        ClassEvent {
            record: record::CLASS,
            kind: kind::MUTEX,
            class,
            name: bytes,
        }
    }

    fn dep(held: u64, new: u64, held_source: u32, new_source: u32) -> DependencyEvent {
        DependencyEvent {
            record: record::DEPENDENCY,
            flags: 0,
            held_class: held,
            new_class: new,
            guard_class: 0,
            guard_lock: 0,
            guard_kind: 0,
            guard_class_source: 0,
            held_lock: held + 1,
            new_lock: new + 1,
            held_caller: 0,
            new_caller: 0,
            timestamp_ns: 1,
            held_kind: if held_source == class_source::PSEUDO {
                kind::PSEUDO
            } else {
                kind::MUTEX
            },
            new_kind: if new_source == class_source::PSEUDO {
                kind::PSEUDO
            } else {
                kind::MUTEX
            },
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
        assert!(ingest
            .on_dependency(&dep(0x10, reclaim, key, pseudo_source), &NoStacks)
            .is_empty());
        assert!(ingest
            .on_dependency(
                &dep(reclaim, notifier, pseudo_source, pseudo_source),
                &NoStacks
            )
            .is_empty());
        assert!(ingest
            .on_dependency(&dep(notifier, 0x20, pseudo_source, key), &NoStacks)
            .is_empty());
        let cycles = ingest.on_dependency(&dep(0x20, 0x10, key, key), &NoStacks);
        assert_eq!(cycles.len(), 1);
        let mut names: Vec<&str> = cycles[0]
            .classes
            .iter()
            .map(|&id| ingest.graph.name(id))
            .collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "&svmm->mutex",
                "&vmm->mutex",
                "fs_reclaim",
                "mmu_notifier_invalidate_range_start"
            ]
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
        let (held, new) = (
            ingest
                .graph
                .class_by_key(&ClassKey::Id {
                    source: key,
                    id: 0x10,
                })
                .unwrap(),
            ingest
                .graph
                .class_by_key(&ClassKey::Id {
                    source: key,
                    id: 0x20,
                })
                .unwrap(),
        );
        let edge = ingest.graph.edge(held, new).unwrap();
        assert_eq!(edge.count, 1, "a re-send is not another occurrence");
        assert_eq!(
            edge.new_stack.len(),
            5,
            "the longer stack replaced the short one"
        );
        // A shorter one later does not replace it.
        resent.new_stack_id = 3;
        ingest.on_dependency(&resent, &ByStackId);
        assert_eq!(ingest.graph.edge(held, new).unwrap().new_stack.len(), 5);
    }
}
