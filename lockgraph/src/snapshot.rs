//! The JSON report, which doubles as the snapshot format, and loading a graph back from it.

use serde::{Deserialize, Serialize};

use crate::{
    graph::{ClassId, DepEdge, Guard, LockGraph, RecursiveLock},
    model::{ClassInfo, ClassKey, Frame, LockKind, NameSource, Stats, TaskInfo},
    Error, Result,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassJson {
    pub name: String,
    pub kind: LockKind,
    pub naming: NameSource,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeJson {
    pub from: String,
    pub to: String,
    pub count: u64,
    pub first_seen_ns: u64,
    /// Modes of the earliest occurrence.
    pub held_read: bool,
    pub new_read: bool,
    /// The earliest occurrence's reads were recursive (glibc's reader-preferring rwlocks).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held_recursive: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub new_recursive: bool,
    /// Every `held/new` mode pair seen: `w` write, `r` read, `R` recursive read (`"w/w"`,
    /// `"r/w"`, `"w/R"`, …).
    pub modes: Vec<String>,
    pub comm: String,
    pub pid: u32,
    pub tid: u32,
    pub new_stack: Vec<Frame>,
    pub held_stack: Vec<Frame>,
    /// Distinct guard instances seen (`null`: an unguarded occurrence).
    pub guards: Vec<Option<GuardJson>>,
}

/// A guard instance: its class and its address. Snapshots written before guards were
/// instances hold the class name alone, read as instance `0x0`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "GuardRepr")]
pub struct GuardJson {
    pub class: String,
    /// `0x…`.
    pub lock: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum GuardRepr {
    Instance { class: String, lock: String },
    ClassOnly(String),
}

impl From<GuardRepr> for GuardJson {
    fn from(repr: GuardRepr) -> Self {
        match repr {
            GuardRepr::Instance { class, lock } => GuardJson { class, lock },
            GuardRepr::ClassOnly(class) => GuardJson {
                class,
                lock: "0x0".into(),
            },
        }
    }
}

/// A lock address as JSON spells it: `0x…` hex or decimal.
pub(crate) fn parse_lock_address(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CycleEdgeJson {
    pub from: String,
    pub to: String,
    pub count: u64,
    pub held_read: bool,
    pub new_read: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CycleJson {
    pub id: String,
    /// Dependency order: each depends on the previous; the first is the lock whose
    /// acquisition closed the cycle, the last the lock held then.
    pub classes: Vec<String>,
    /// The guard's class, and its instance (`guard_lock`).
    pub guarded_by: Option<String>,
    #[serde(default)]
    pub guard_lock: Option<String>,
    pub suppressed: bool,
    pub edges: Vec<CycleEdgeJson>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecursiveJson {
    pub class: String,
    pub count: u64,
    pub first_seen_ns: u64,
    pub held_read: bool,
    pub new_read: bool,
    pub comm: String,
    pub pid: u32,
    pub tid: u32,
    pub new_stack: Vec<Frame>,
    pub held_stack: Vec<Frame>,
    /// A nesting a lockdep annotation declares (compiled away on this kernel): no finding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nesting_annotation: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StatsJson {
    /// The source's counters (see `Stats`): a nonzero loss counter means the graph may miss
    /// dependencies.
    #[serde(flatten)]
    pub source: Stats,
    pub dependencies: u64,
    pub classes: u64,
    pub cycles: u64,
    #[serde(default)]
    pub unguarded_cycles: u64,
    #[serde(default)]
    pub guarded_cycles: u64,
    #[serde(default)]
    pub suppressed_cycles: u64,
    #[serde(default)]
    pub recursive: u64,
}

/// The JSON report; also the snapshot format read by [`LockGraph::from_snapshot_json`].
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReportJson {
    /// The format version ([`crate::SCHEMA_VERSION`]); absent (0) in files written before
    /// it existed, which read the same.
    #[serde(default)]
    pub schema: u32,
    pub classes: Vec<ClassJson>,
    pub edges: Vec<EdgeJson>,
    pub cycles: Vec<CycleJson>,
    pub recursive: Vec<RecursiveJson>,
    pub stats: StatsJson,
}

impl LockGraph {
    /// Loads a graph from a JSON report (snapshot). Classes are keyed by name.
    pub fn from_snapshot_json(json: &str) -> Result<LockGraph> {
        let snapshot: ReportJson = serde_json::from_str(json)?;
        if snapshot.schema > crate::SCHEMA_VERSION {
            return Err(Error::Snapshot(format!(
                "schema {} is newer than this locktrace reads ({}): upgrade locktrace",
                snapshot.schema,
                crate::SCHEMA_VERSION
            )));
        }
        LockGraph::from_report_json(&snapshot)
    }

    pub(crate) fn from_report_json(snapshot: &ReportJson) -> Result<LockGraph> {
        let mut graph = LockGraph::new();
        graph.absorb(snapshot)?;
        Ok(graph)
    }

    /// Unions a report into this graph (by class name).
    pub(crate) fn absorb(&mut self, snapshot: &ReportJson) -> Result<()> {
        for class in &snapshot.classes {
            self.class(
                ClassKey::name(&class.name),
                ClassInfo::new(&class.name, class.kind, class.naming),
            );
        }
        let lookup = |graph: &mut LockGraph, name: &str| -> ClassId {
            graph.class(
                ClassKey::name(name),
                ClassInfo::new(name, LockKind::Mutex, NameSource::Given),
            )
        };
        for edge in &snapshot.edges {
            let held = lookup(self, &edge.from);
            let new = lookup(self, &edge.to);
            let mut guards = Vec::new();
            for guard in &edge.guards {
                let Some(guard) = guard else {
                    guards.push(None);
                    continue;
                };
                let lock = parse_lock_address(&guard.lock).ok_or_else(|| {
                    Error::Snapshot(format!(
                        "edge {} -> {}: guard lock {:?} is not an address",
                        edge.from, edge.to, guard.lock
                    ))
                })?;
                guards.push(Some(Guard {
                    class: lookup(self, &guard.class),
                    lock,
                }));
            }
            self.merge_edge(DepEdge {
                held,
                new,
                count: edge.count,
                first_seen_ns: edge.first_seen_ns,
                held_read: edge.held_read,
                new_read: edge.new_read,
                held_recursive: edge.held_recursive,
                new_recursive: edge.new_recursive,
                modes: parse_modes(&edge.modes).ok_or_else(|| {
                    Error::Snapshot(format!(
                        "edge {} -> {}: unknown mode in {:?}",
                        edge.from, edge.to, edge.modes
                    ))
                })?,
                task: TaskInfo {
                    comm: edge.comm.clone(),
                    pid: edge.pid,
                    tid: edge.tid,
                },
                new_stack: edge.new_stack.clone(),
                held_stack: edge.held_stack.clone(),
                guards,
            });
        }
        for cycle in &snapshot.cycles {
            let classes: Vec<ClassId> = cycle
                .classes
                .iter()
                .map(|name| lookup(self, name))
                .collect();
            let n = classes.len();
            if n < 2 || (0..n).any(|i| self.edge(classes[i], classes[(i + 1) % n]).is_none()) {
                return Err(Error::Snapshot(format!(
                    "cycle {} uses a dependency not in `edges`",
                    cycle.id
                )));
            }
            self.restore_cycle(classes);
        }
        for found in &snapshot.recursive {
            let class = lookup(self, &found.class);
            self.merge_recursive(RecursiveLock {
                class,
                count: found.count,
                first_seen_ns: found.first_seen_ns,
                held_read: found.held_read,
                new_read: found.new_read,
                task: TaskInfo {
                    comm: found.comm.clone(),
                    pid: found.pid,
                    tid: found.tid,
                },
                new_stack: found.new_stack.clone(),
                held_stack: found.held_stack.clone(),
                nesting_annotation: found.nesting_annotation.clone(),
            });
        }
        self.refresh_guards();
        self.stats_mut().add(&snapshot.stats.source);
        Ok(())
    }
}

/// `held/new` per bit of [`crate::graph::DepEdge::modes`]: `w` write, `r` read, `R` recursive
/// read.
const MODE_NAMES: [&str; 9] = [
    "w/w", "w/r", "w/R", "r/w", "r/r", "r/R", "R/w", "R/r", "R/R",
];

pub(crate) fn mode_names(modes: u16) -> Vec<String> {
    (0..MODE_NAMES.len())
        .filter(|bit| modes & (1 << bit) != 0)
        .map(|bit| MODE_NAMES[bit].to_string())
        .collect()
}

/// `None` if a name is not one of [`MODE_NAMES`].
pub(crate) fn parse_modes(names: &[String]) -> Option<u16> {
    names.iter().try_fold(0, |modes, name| {
        Some(modes | (1 << MODE_NAMES.iter().position(|m| m == name)?))
    })
}
