//! The lock-order graph and its cycle detection.

mod cycle_search;

use std::collections::{HashMap, HashSet, VecDeque};

use petgraph::{
    graph::{DiGraph, EdgeIndex, NodeIndex},
    Direction,
};

pub use self::cycle_search::cycle_id;
use self::cycle_search::FastMap;
use crate::model::{ClassInfo, ClassKey, Frame, Stats, TaskInfo};

/// Index of a class in a [`LockGraph`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClassId(pub(crate) u32);

impl ClassId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
    fn node(self) -> NodeIndex {
        NodeIndex::new(self.index())
    }
}

/// One observed acquisition order `held → new`, as a source reports it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Dependency {
    pub held: ClassId,
    pub new: ClassId,
    pub held_read: bool,
    pub new_read: bool,
    /// The read was a recursive one (lockdep's `read == 2`: a reader that does not wait for
    /// a waiting writer, as glibc's default reader-preferring rwlocks): only with `*_read`.
    pub held_recursive: bool,
    pub new_recursive: bool,
    pub timestamp_ns: u64,
    pub task: TaskInfo,
    /// Where `new` was being taken.
    pub new_stack: Vec<Frame>,
    /// Where `held` had been taken.
    pub held_stack: Vec<Frame>,
    /// The outermost lock the task held exclusively outside `held` (a mutex, an rwsem or
    /// rwlock held for write): a cycle whose every edge only ever ran under the same
    /// instance of it cannot deadlock.
    pub guard: Option<Guard>,
}

/// A lock instance held exclusively outside both locks of a dependency. Only one task at a
/// time can be inside it, so dependencies taken under the same instance never run
/// concurrently; two instances of one class (two `mm`s, two files) serialise nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guard {
    pub class: ClassId,
    /// The instance (address; 0 when the source did not say, e.g. an old recording).
    pub lock: u64,
}

/// A class in the graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Class {
    pub key: ClassKey,
    /// Unique display name: the source's name, with `#N` appended when another class
    /// already has it.
    pub name: String,
    pub info: ClassInfo,
}

/// Everything known about one edge `held → new`. Task and stacks are those of the
/// earliest occurrence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepEdge {
    pub held: ClassId,
    pub new: ClassId,
    pub count: u64,
    pub first_seen_ns: u64,
    pub held_read: bool,
    pub new_read: bool,
    /// Recursive reads (only with `*_read`), of the earliest occurrence too.
    pub held_recursive: bool,
    pub new_recursive: bool,
    /// Bit `3 * held + new` set for every combination of modes seen, a mode being 0 (write),
    /// 1 (read) or 2 (recursive read): see [`Mode`].
    pub modes: u16,
    pub task: TaskInfo,
    pub new_stack: Vec<Frame>,
    pub held_stack: Vec<Frame>,
    /// Distinct guards seen, in order of first appearance (`None`: unguarded occurrence).
    pub guards: Vec<Option<Guard>>,
}

impl DepEdge {
    /// `Some(G)` iff every occurrence ran under guard instance `G`.
    pub fn guarded_by(&self) -> Option<Guard> {
        match self.guards.as_slice() {
            [only] => *only,
            _ => None,
        }
    }
}

/// How one side of a dependency was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Write = 0,
    /// A reader that waits for a waiting writer (rwsem readers, writer-preferring rwlocks).
    Read = 1,
    /// A reader that does not (glibc's default rwlocks): lockdep's recursive read.
    RecursiveRead = 2,
}

impl Mode {
    pub fn of(read: bool, recursive: bool) -> Mode {
        match (read, recursive) {
            (false, _) => Mode::Write,
            (true, false) => Mode::Read,
            (true, true) => Mode::RecursiveRead,
        }
    }

    const ALL: [Mode; 3] = [Mode::Write, Mode::Read, Mode::RecursiveRead];
}

/// The bit of [`DepEdge::modes`] for one combination.
pub fn mode_bit(held: Mode, new: Mode) -> u16 {
    1 << (3 * held as u16 + new as u16)
}

/// The combinations set in `modes`.
pub fn mode_pairs(modes: u16) -> impl Iterator<Item = (Mode, Mode)> {
    Mode::ALL
        .into_iter()
        .flat_map(|held| Mode::ALL.map(|new| (held, new)))
        .filter(move |&(held, new)| modes & mode_bit(held, new) != 0)
}

/// A dependency cycle. `classes[i] → classes[i+1]` and `classes[last] → classes[0]` are
/// edges; the edge that closed it is `classes[last] → classes[0]` (held → new).
///
/// Only lockdep's "strong" cycles are cycles: some choice of one seen mode per edge with no
/// lock taken as a recursive reader by one edge and held for read by the next (two readers
/// of a reader-preferring lock never wait for each other). Plain reads (rwsem readers)
/// wait for a waiting writer, so they close cycles as writes do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cycle {
    /// Stable id: `cyc-` and the FNV-1a 64 hash of the class names, rotated to start at
    /// the lexicographically smallest.
    pub id: String,
    pub classes: Vec<ClassId>,
    /// The guard instance every edge of the cycle only ever ran under, if any.
    pub guarded_by: Option<Guard>,
}

impl Cycle {
    /// The edges `(held, new)` of the cycle in dependency order, closing edge last.
    pub fn edges(&self) -> impl Iterator<Item = (ClassId, ClassId)> + '_ {
        let n = self.classes.len();
        (0..n).map(move |i| (self.classes[i], self.classes[(i + 1) % n]))
    }
}

/// A class taken while another lock of the same class was held ("possible recursive
/// locking"): not a cycle between classes, reported on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecursiveLock {
    pub class: ClassId,
    pub count: u64,
    pub first_seen_ns: u64,
    pub held_read: bool,
    pub new_read: bool,
    pub task: TaskInfo,
    pub new_stack: Vec<Frame>,
    pub held_stack: Vec<Frame>,
    /// Set while every occurrence was a nesting that a lockdep annotation compiled away on
    /// this kernel declares (see [`crate::nesting`]): the annotation. Such a nesting is no
    /// finding; it is kept, not dropped, so that the report can say what it recognised.
    pub nesting_annotation: Option<String>,
}

impl RecursiveLock {
    /// Whether it is a finding (not a nesting an annotation declares).
    pub fn is_finding(&self) -> bool {
        self.nesting_annotation.is_none()
    }
}

/// The lock-order graph: classes, dependencies, cycles and recursive-locking findings.
#[derive(Clone, Debug, Default)]
pub struct LockGraph {
    graph: DiGraph<Class, DepEdge>,
    by_key: FastMap<ClassKey, ClassId>,
    by_name: HashMap<String, ClassId>,
    /// Next `#N` to try per source name.
    name_versions: HashMap<String, u32>,
    edges: FastMap<u64, EdgeIndex>,
    cycles: Vec<Cycle>,
    cycle_ids: HashSet<String>,
    recursive: Vec<RecursiveLock>,
    recursive_index: FastMap<ClassId, usize>,
    stats: Stats,
}

fn edge_key(held: ClassId, new: ClassId) -> u64 {
    (u64::from(held.0) << 32) | u64::from(new.0)
}

impl LockGraph {
    pub fn new() -> Self {
        Self::default()
    }

    /// The class for `key`, created with `info` if it is new (an existing class keeps its
    /// first info).
    pub fn class(&mut self, key: ClassKey, info: ClassInfo) -> ClassId {
        if let Some(&id) = self.by_key.get(&key) {
            return id;
        }
        let name = self.unique_name(&info.name);
        let id = ClassId(self.graph.node_count() as u32);
        self.graph.add_node(Class {
            key: key.clone(),
            name: name.clone(),
            info,
        });
        self.by_key.insert(key, id);
        self.by_name.insert(name, id);
        id
    }

    fn unique_name(&mut self, base: &str) -> String {
        if !self.by_name.contains_key(base) {
            return base.to_string();
        }
        let version = self.name_versions.entry(base.to_string()).or_insert(1);
        loop {
            *version += 1;
            let candidate = format!("{base}#{version}");
            if !self.by_name.contains_key(&candidate) {
                return candidate;
            }
        }
    }

    pub fn class_by_key(&self, key: &ClassKey) -> Option<ClassId> {
        self.by_key.get(key).copied()
    }

    /// Looks a class up by its unique display name.
    pub fn class_by_name(&self, name: &str) -> Option<ClassId> {
        self.by_name.get(name).copied()
    }

    pub fn class_info(&self, id: ClassId) -> &Class {
        &self.graph[id.node()]
    }

    pub fn name(&self, id: ClassId) -> &str {
        &self.graph[id.node()].name
    }

    pub fn classes(&self) -> impl Iterator<Item = (ClassId, &Class)> {
        self.graph
            .node_indices()
            .map(|n| (ClassId(n.index() as u32), &self.graph[n]))
    }

    pub fn class_count(&self) -> usize {
        self.graph.node_count()
    }

    /// All dependency edges, in order of first appearance.
    pub fn edges(&self) -> impl Iterator<Item = &DepEdge> {
        self.graph.edge_weights()
    }

    pub fn edge_count(&self) -> usize {
        self.graph.edge_count()
    }

    pub fn edge(&self, held: ClassId, new: ClassId) -> Option<&DepEdge> {
        self.edges
            .get(&edge_key(held, new))
            .map(|&e| &self.graph[e])
    }

    /// Another occurrence's stacks for a known edge: each replaces the edge's stack when it
    /// has more frames (a source may report a short stack for an occurrence). Whether the
    /// edge exists.
    pub fn refresh_stacks(
        &mut self,
        held: ClassId,
        new: ClassId,
        new_stack: Vec<Frame>,
        held_stack: Vec<Frame>,
    ) -> bool {
        let Some(&index) = self.edges.get(&edge_key(held, new)) else {
            return false;
        };
        let edge = &mut self.graph[index];
        if new_stack.len() > edge.new_stack.len() {
            edge.new_stack = new_stack;
        }
        if held_stack.len() > edge.held_stack.len() {
            edge.held_stack = held_stack;
        }
        true
    }

    /// Every distinct cycle found so far, in order of discovery.
    pub fn cycles(&self) -> &[Cycle] {
        &self.cycles
    }

    pub fn recursive(&self) -> &[RecursiveLock] {
        &self.recursive
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    pub fn stats_mut(&mut self) -> &mut Stats {
        &mut self.stats
    }

    /// True iff some cycle is not guarded (for `--fail-on-cycle`; suppression is the
    /// report's business, see [`crate::Report::has_unguarded_cycle`]).
    pub fn has_unguarded_cycle(&self) -> bool {
        self.cycles.iter().any(|c| c.guarded_by.is_none())
    }

    /// Records one occurrence of `dep`. Returns the cycles this occurrence made real: the
    /// new cycles it closed (shortest first), and any known cycle that lost its guard
    /// because this occurrence ran under a different one.
    ///
    /// A repeat of a known edge costs one hash lookup.
    pub fn add_dependency(&mut self, dep: Dependency) -> Vec<Cycle> {
        let modes = mode_bit(
            Mode::of(dep.held_read, dep.held_recursive),
            Mode::of(dep.new_read, dep.new_recursive),
        );
        if dep.held == dep.new {
            // lockdep's check_deadlock: a recursive read inside a read of its class is fine.
            if !(dep.new_read && dep.new_recursive && dep.held_read) {
                self.add_recursive(dep);
            }
            return Vec::new();
        }
        let key = edge_key(dep.held, dep.new);
        if let Some(&index) = self.edges.get(&key) {
            let edge = &mut self.graph[index];
            edge.count += 1;
            let new_mode = edge.modes & modes == 0;
            edge.modes |= modes;
            if dep.timestamp_ns < edge.first_seen_ns {
                edge.first_seen_ns = dep.timestamp_ns;
                edge.task = dep.task;
                edge.new_stack = dep.new_stack;
                edge.held_stack = dep.held_stack;
            }
            let mut cycles = Vec::new();
            if !edge.guards.contains(&dep.guard) {
                edge.guards.push(dep.guard);
                cycles = self.reclassify(dep.held, dep.new);
            }
            if new_mode {
                // A mode not seen before can make strong a cycle that was not.
                cycles.extend(self.find_new_cycles(dep.held, dep.new));
            }
            return cycles;
        }
        let (held, new) = (dep.held, dep.new);
        let index = self.graph.add_edge(
            held.node(),
            new.node(),
            DepEdge {
                held,
                new,
                count: 1,
                first_seen_ns: dep.timestamp_ns,
                held_read: dep.held_read,
                new_read: dep.new_read,
                held_recursive: dep.held_recursive,
                new_recursive: dep.new_recursive,
                modes,
                task: dep.task,
                new_stack: dep.new_stack,
                held_stack: dep.held_stack,
                guards: vec![dep.guard],
            },
        );
        self.edges.insert(key, index);
        self.find_new_cycles(held, new)
    }

    /// Merges a whole edge (snapshots, [`crate::merge`]): counts add up, the earliest
    /// occurrence keeps its stacks, guards unite. Returns the cycles a new edge closed.
    pub(crate) fn merge_edge(&mut self, mut edge: DepEdge) -> Vec<Cycle> {
        // Every edge has been seen at least once, with at least one guard (maybe none).
        edge.count = edge.count.max(1);
        if edge.guards.is_empty() {
            edge.guards.push(None);
        }
        let key = edge_key(edge.held, edge.new);
        if let Some(&index) = self.edges.get(&key) {
            let known = &mut self.graph[index];
            known.count = known.count.saturating_add(edge.count);
            let new_modes = known.modes | edge.modes != known.modes;
            known.modes |= edge.modes;
            if edge.first_seen_ns < known.first_seen_ns {
                known.first_seen_ns = edge.first_seen_ns;
                known.task = edge.task;
                known.new_stack = edge.new_stack;
                known.held_stack = edge.held_stack;
            }
            for guard in edge.guards {
                if !known.guards.contains(&guard) {
                    known.guards.push(guard);
                }
            }
            if new_modes {
                // Modes not seen before can make strong a cycle that was not.
                return self.find_new_cycles(edge.held, edge.new);
            }
            return Vec::new();
        }
        if edge.held == edge.new {
            return Vec::new();
        }
        if edge.modes == 0 {
            // A snapshot from before modes were kept: the earliest occurrence's.
            edge.modes = mode_bit(
                Mode::of(edge.held_read, edge.held_recursive),
                Mode::of(edge.new_read, edge.new_recursive),
            );
        }
        let (held, new) = (edge.held, edge.new);
        let index = self.graph.add_edge(held.node(), new.node(), edge);
        self.edges.insert(key, index);
        self.find_new_cycles(held, new)
    }

    /// Records a known cycle (from a snapshot) unless already known; all its edges must
    /// exist. Returns whether it was added.
    pub(crate) fn restore_cycle(&mut self, classes: Vec<ClassId>) -> bool {
        let n = classes.len();
        if n < 2 || (0..n).any(|i| self.edge(classes[i], classes[(i + 1) % n]).is_none()) {
            return false;
        }
        let id = cycle_id(&self.names(&classes));
        if !self.cycle_ids.insert(id.clone()) {
            return false;
        }
        let guarded_by = self.cycle_guard(&classes);
        self.cycles.push(Cycle {
            id,
            classes,
            guarded_by,
        });
        true
    }

    pub(crate) fn merge_recursive(&mut self, found: RecursiveLock) {
        if let Some(&i) = self.recursive_index.get(&found.class) {
            let known = &mut self.recursive[i];
            known.count += found.count;
            known.first_seen_ns = known.first_seen_ns.min(found.first_seen_ns);
            if found.nesting_annotation.is_none() {
                known.nesting_annotation = None;
            }
            return;
        }
        self.recursive_index
            .insert(found.class, self.recursive.len());
        self.recursive.push(found);
    }

    /// Recomputes every cycle's guard after edges were merged.
    pub(crate) fn refresh_guards(&mut self) {
        for i in 0..self.cycles.len() {
            self.cycles[i].guarded_by = self.cycle_guard(&self.cycles[i].classes);
        }
    }

    /// Counts `extra` more occurrences of a known edge or recursive finding.
    pub(crate) fn add_occurrences(&mut self, held: ClassId, new: ClassId, extra: u64) {
        if let Some(&index) = self.edges.get(&edge_key(held, new)) {
            let edge = &mut self.graph[index];
            edge.count = edge.count.saturating_add(extra);
        } else if let Some(&i) = self.recursive_index.get(&held).filter(|_| held == new) {
            let found = &mut self.recursive[i];
            found.count = found.count.saturating_add(extra);
        }
    }

    /// Adds modes seen on a known edge; the cycles they make strong.
    pub(crate) fn add_modes(&mut self, held: ClassId, new: ClassId, modes: u16) -> Vec<Cycle> {
        let Some(&index) = self.edges.get(&edge_key(held, new)) else {
            return Vec::new();
        };
        let edge = &mut self.graph[index];
        if edge.modes | modes == edge.modes {
            return Vec::new();
        }
        edge.modes |= modes;
        self.find_new_cycles(held, new)
    }

    fn add_recursive(&mut self, dep: Dependency) {
        let annotation = crate::nesting::nesting_annotation(
            crate::model::strip_lockdep_suffix(self.name(dep.held)),
            &dep.held_stack,
            &dep.new_stack,
        )
        .map(|annotation| annotation.annotation.to_string());
        if let Some(&i) = self.recursive_index.get(&dep.held) {
            let found = &mut self.recursive[i];
            found.count += 1;
            found.first_seen_ns = found.first_seen_ns.min(dep.timestamp_ns);
            if found.nesting_annotation.is_some() && annotation.is_none() {
                // An unannotated occurrence: a finding after all, with its own stacks.
                found.nesting_annotation = None;
                found.held_read = dep.held_read;
                found.new_read = dep.new_read;
                found.task = dep.task;
                found.new_stack = dep.new_stack;
                found.held_stack = dep.held_stack;
            }
            return;
        }
        self.recursive_index.insert(dep.held, self.recursive.len());
        self.recursive.push(RecursiveLock {
            class: dep.held,
            count: 1,
            first_seen_ns: dep.timestamp_ns,
            held_read: dep.held_read,
            new_read: dep.new_read,
            task: dep.task,
            new_stack: dep.new_stack,
            held_stack: dep.held_stack,
            nesting_annotation: annotation,
        });
    }

    /// Recomputes guards of the cycles through `held → new`; returns those that lost it.
    fn reclassify(&mut self, held: ClassId, new: ClassId) -> Vec<Cycle> {
        let mut lost = Vec::new();
        for i in 0..self.cycles.len() {
            if !self.cycles[i].edges().any(|e| e == (held, new)) {
                continue;
            }
            let guard = self.cycle_guard(&self.cycles[i].classes);
            let cycle = &mut self.cycles[i];
            if cycle.guarded_by.is_some() && guard.is_none() {
                lost.push(Cycle {
                    guarded_by: None,
                    ..cycle.clone()
                });
            }
            cycle.guarded_by = guard;
        }
        lost
    }

    fn cycle_guard(&self, classes: &[ClassId]) -> Option<Guard> {
        let n = classes.len();
        let mut guard = None;
        for i in 0..n {
            let edge = self.edge(classes[i], classes[(i + 1) % n])?;
            let g = edge.guarded_by()?;
            if guard.is_some_and(|known| known != g) {
                return None;
            }
            guard = Some(g);
        }
        guard
    }
}
