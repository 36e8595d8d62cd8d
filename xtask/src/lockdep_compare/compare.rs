//! The comparison itself, pure: lockdep's state from the lockdep kernel (`/proc/lockdep`,
//! the class kinds from `lt_lockdep_classes.ko`, the reports on the console) against
//! locktrace's report of the same scenario on the production kernel.
//!
//! - **Which lockdep classes count.** A class's kind is decided from what lockdep itself
//!   stored for it: the wait type `lockdep_init_map_type()` gave it and its lock type. Sleeping
//!   locks (wait type `LD_WAIT_SLEEP`, normal lock type) are mutexes and rwsems, which
//!   locktrace traces (also ww_mutex and rt_mutex classes, which it does not: none occur in
//!   these scenarios); `fs_reclaim` and `mmu_notifier_invalidate_range_start` are the
//!   pseudo-locks locktrace models. Per-CPU locks (percpu_rw_semaphore, local_lock), spinlocks
//!   and lockdep's other maps (work items, completions, RCU) are kinds locktrace does not trace.
//! - **Names.** Both sides are compared on lockdep's class name without `#N` (lockdep's count
//!   of keys sharing a name) and `/N` (a subclass, which production kernels compile away).
//!   locktrace classes named after an acquire site (`lock@f`, a lock initialised before tracing
//!   began) have no lockdep name and are counted apart.
//! - **Recall** is over lockdep's *direct* dependencies between two counted classes: those are
//!   taken back to back (lockdep's `check_prevs_add()` records a new lock against the nearest
//!   held one only), so a tracer that saw the same acquisitions records them too.
//!   **Precision** is over locktrace's dependencies between two named classes: one is right
//!   when lockdep's graph orders the two (a path from one to the other), since locktrace
//!   records every held lock against the new one and lockdep only the nearest.
//! - **Verdicts**: every lockdep report against locktrace's findings (unguarded cycles,
//!   possible recursive locking), compared as cycles of names up to rotation.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use lockgraph::{LockGraph, NameSource, ReportJson};

/// The pseudo-locks locktrace models (lockdep gives them no wait type).
/// The `comm` of locktrace's own process (its attach work takes locks too).
const TRACER_COMM: &str = "locktrace";
const TRACED_PSEUDO_LOCKS: &[&str] = &[
    lockgraph::naming::FS_RECLAIM,
    lockgraph::naming::MMU_NOTIFIER_INVALIDATE_RANGE_START,
];

/// What a lockdep class is, as far as the comparison is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ClassKind {
    /// A mutex or rwsem (a sleeping lock of normal type).
    Sleeping,
    /// `fs_reclaim` or `mmu_notifier_invalidate_range_start`.
    Pseudo,
    /// A kind locktrace does not trace; the text says which.
    NotTraced(&'static str),
}

impl ClassKind {
    pub fn traced(self) -> bool {
        !matches!(self, Self::NotTraced(_))
    }
}

/// The kind of a class from its `lt_lockdep_classes` lock type (`normal`, `percpu`,
/// `override`) and wait type (`inv`, `free`, `spin`, `config`, `sleep`).
pub fn classify(name: &str, lock_type: &str, wait_type: &str) -> ClassKind {
    if TRACED_PSEUDO_LOCKS.contains(&base_name(name)) {
        ClassKind::Pseudo
    } else if lock_type == "percpu" {
        ClassKind::NotTraced("per-CPU lock (percpu_rw_semaphore, local_lock)")
    } else if wait_type == "sleep" {
        ClassKind::Sleeping
    } else if wait_type == "inv" {
        ClassKind::NotTraced("lockdep map (work item, workqueue, completion, ...)")
    } else {
        ClassKind::NotTraced("spinlock, rwlock or seqlock")
    }
}

/// A class name without lockdep's `/SUBCLASS` and `#N`.
pub fn base_name(name: &str) -> &str {
    let strip = |name: &'_ str, sep: char| -> usize {
        match name.rsplit_once(sep) {
            Some((base, n))
                if !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) =>
            {
                base.len()
            }
            _ => name.len(),
        }
    };
    let name = &name[..strip(name, '/')];
    &name[..strip(name, '#')]
}

/// What `lt_lockdep_classes` says of the classes.
#[derive(Debug, Default)]
pub struct ClassTable {
    pub kinds: BTreeMap<String, ClassKind>,
    /// Classes of `lockdep_set_novalidate_class()` locks (full names).
    pub novalidate: BTreeSet<String>,
}

/// Parses `lt_lockdep_classes` output (`KEY LOCK_TYPE WAIT_TYPE VALIDATE NAME`).
pub fn parse_class_table(text: &str) -> Result<ClassTable, String> {
    let mut table = ClassTable::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.splitn(5, ' ').collect();
        let [_key, lock_type, wait_type, validate, name] = fields[..] else {
            return Err(format!(
                "line {}: expected `KEY LOCK_TYPE WAIT_TYPE VALIDATE NAME`, found `{line}`",
                i + 1
            ));
        };
        let known = ["normal", "percpu", "override"].contains(&lock_type)
            && ["inv", "free", "spin", "config", "sleep"].contains(&wait_type)
            && ["validate", "novalidate"].contains(&validate)
            && !name.trim().is_empty();
        if !known {
            return Err(format!("line {}: unexpected fields in `{line}`", i + 1));
        }
        let name = name.trim();
        table
            .kinds
            .insert(name.to_string(), classify(name, lock_type, wait_type));
        if validate == "novalidate" {
            table.novalidate.insert(name.to_string());
        }
    }
    Ok(table)
}

/// A cycle of base names, rotated to start at its smallest name.
pub fn canonical_cycle<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut cycle: Vec<String> = names
        .into_iter()
        .map(|n| base_name(n).to_string())
        .collect();
    if let Some(start) = (0..cycle.len()).min_by_key(|&i| &cycle[i]) {
        cycle.rotate_left(start);
    }
    cycle
}

/// A lockdep verdict: a report lockdep printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockdepVerdict {
    Circular(Vec<String>),
    Recursive(String),
}

/// Lockdep's side of one scenario.
#[derive(Debug, Default)]
pub struct LockdepSide {
    /// Every class /proc/lockdep lists, by full name.
    pub classes: BTreeSet<String>,
    /// Direct dependencies by full name, all of them (for ordering).
    pub dependencies: BTreeSet<(String, String)>,
    /// Those lockdep first recorded while the scenario ran (recall is measured on these:
    /// the graph also holds everything since boot, where no tracer was attached).
    pub scenario_dependencies: BTreeSet<(String, String)>,
    pub classes_table: ClassTable,
    pub verdicts: Vec<LockdepVerdict>,
    /// lockdep switched itself off (after its first report) before the state was read.
    pub turned_off: bool,
}

impl LockdepSide {
    /// From /proc/lockdep before and after the scenario, lt_lockdep_classes,
    /// /proc/lockdep_stats and the console.
    pub fn parse(
        proc_lockdep_before: &str,
        proc_lockdep: &str,
        class_kinds: &str,
        lockdep_stats: &str,
        console: &str,
    ) -> Result<Self, String> {
        let read = |text: &str, what: &str| -> Result<_, String> {
            let mut graph = LockGraph::new();
            lockgraph::import_proc_lockdep(&mut graph, text)
                .map_err(|e| format!("/proc/lockdep {what}: {e}"))?;
            let dependencies: BTreeSet<(String, String)> = graph
                .edges()
                .map(|e| {
                    (
                        graph.name(e.held).to_string(),
                        graph.name(e.new).to_string(),
                    )
                })
                .collect();
            let classes: BTreeSet<String> =
                graph.classes().map(|(_, c)| c.info.name.clone()).collect();
            Ok((classes, dependencies))
        };
        let (_, before) = read(proc_lockdep_before, "before the scenario")?;
        let (classes, dependencies) = read(proc_lockdep, "after the scenario")?;
        let scenario_dependencies = dependencies.difference(&before).cloned().collect();
        let classes_table =
            parse_class_table(class_kinds).map_err(|e| format!("lt_lockdep_classes: {e}"))?;
        let turned_off = lockdep_stats
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["debug_locks:", "0"]);
        let mut verdicts = Vec::new();
        if console.lines().any(|l| l.contains("WARNING: possible")) {
            let mut reports = LockGraph::new();
            lockgraph::import_lockdep(&mut reports, console)
                .map_err(|e| format!("the console's lockdep reports: {e}"))?;
            for cycle in reports.cycles() {
                verdicts.push(LockdepVerdict::Circular(canonical_cycle(
                    cycle.classes.iter().map(|&c| reports.name(c)),
                )));
            }
            for rec in reports.recursive() {
                verdicts.push(LockdepVerdict::Recursive(
                    base_name(reports.name(rec.class)).to_string(),
                ));
            }
        }
        Ok(Self {
            classes,
            dependencies,
            scenario_dependencies,
            classes_table,
            verdicts,
            turned_off,
        })
    }

    fn kind(&self, name: &str) -> ClassKind {
        self.classes_table
            .kinds
            .get(name)
            .copied()
            .unwrap_or(ClassKind::NotTraced(
                "class missing from lt_lockdep_classes",
            ))
    }
}

/// Why a dependency is on one side only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cause {
    /// Recall: an end is a class locktrace never named (it may know it as `lock@site`).
    ClassNotNamedByLocktrace,
    /// Recall: both classes named by locktrace, the dependency not seen in its run.
    NotSeenByLocktrace,
    /// Precision: an end is a class lockdep did not register in its run.
    ClassNotSeenByLockdep,
    /// Precision: the dependency arose in the tracer's own work (attaching its probes).
    TracerOwnWork,
    /// Precision: an end is a `lockdep_set_novalidate_class()` class (no dependencies kept).
    NovalidateClass,
    /// Precision: lockdep turned itself off after its first report.
    LockdepTurnedOff,
    /// Precision: lockdep knows both classes but does not order them.
    NotOrderedByLockdep,
}

impl Cause {
    pub fn describe(self) -> &'static str {
        match self {
            Self::ClassNotNamedByLocktrace => {
                "an end is a class locktrace did not name (initialised before tracing began: \
                 named by acquire site) or did not see"
            }
            Self::NotSeenByLocktrace => "both classes named by locktrace; dependency not seen",
            Self::ClassNotSeenByLockdep => {
                "an end is a class lockdep did not register under that name (renamed by \
                 lockdep_set_class(), compiled away on production kernels, or not taken in \
                 lockdep's run)"
            }
            Self::TracerOwnWork => "taken by the tracer's own work (attaching probes): no tracer runs beside lockdep",
            Self::NovalidateClass => "an end is a novalidate class (lockdep_set_novalidate_class(): lockdep keeps no dependencies of it)",
            Self::LockdepTurnedOff => "lockdep turned itself off after its first report and recorded no more",
            Self::NotOrderedByLockdep => "lockdep knows both classes but has no path between them",
        }
    }
}

/// One of locktrace's findings and what lockdep says of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FindingRow {
    pub finding: String,
    pub agrees: bool,
    pub explanation: String,
}

#[derive(Debug, Default)]
pub struct Comparison {
    /// Lockdep's direct dependencies between counted classes (base names).
    pub lockdep_counted: usize,
    pub recalled: usize,
    pub misses: BTreeMap<Cause, Vec<(String, String)>>,
    /// Same-class dependencies lockdep has only through subclasses (`X` -> `X/1`).
    pub subclass_nestings: BTreeSet<String>,
    /// Lockdep dependencies left out because an end is a kind locktrace does not trace.
    pub lockdep_not_traced: usize,
    /// locktrace's dependencies between two named classes.
    pub locktrace_counted: usize,
    pub precise: usize,
    pub extras: BTreeMap<Cause, Vec<(String, String)>>,
    /// locktrace's dependencies with an end it named after an acquire site.
    pub locktrace_unnamed: usize,
    /// Lockdep reports: (report, found by locktrace).
    pub lockdep_verdicts: Vec<(String, bool)>,
    pub locktrace_findings: Vec<FindingRow>,
    pub lockdep_turned_off: bool,
}

impl Comparison {
    /// Lockdep reports locktrace also made (a finding that agrees is one of these).
    pub fn verdicts_agreeing(&self) -> usize {
        self.lockdep_verdicts
            .iter()
            .filter(|(_, found)| *found)
            .count()
    }

    /// Each lockdep report plus each locktrace finding no lockdep report matched.
    pub fn verdicts_total(&self) -> usize {
        self.lockdep_verdicts.len() + self.locktrace_findings.iter().filter(|f| !f.agrees).count()
    }
}

fn reachable(adjacency: &HashMap<&str, Vec<&str>>, from: &str, to: &str) -> bool {
    path(adjacency, from, to).is_some()
}

/// A shortest path `from` ... `to` in lockdep's graph.
fn path<'a>(
    adjacency: &HashMap<&'a str, Vec<&'a str>>,
    from: &'a str,
    to: &str,
) -> Option<Vec<&'a str>> {
    let mut parent: HashMap<&str, &str> = HashMap::new();
    let mut queue = VecDeque::from([from]);
    while let Some(node) = queue.pop_front() {
        for &next in adjacency.get(node).into_iter().flatten() {
            if next == from || parent.contains_key(next) {
                continue;
            }
            parent.insert(next, node);
            if next == to {
                let mut path = vec![next];
                let mut at = next;
                while at != from {
                    at = parent[at];
                    path.push(at);
                }
                path.reverse();
                return Some(path);
            }
            queue.push_back(next);
        }
    }
    None
}

/// Compares lockdep's side with locktrace's report of the same scenario.
pub fn compare(lockdep: &LockdepSide, locktrace: &ReportJson) -> Comparison {
    let mut out = Comparison {
        lockdep_turned_off: lockdep.turned_off,
        ..Comparison::default()
    };
    let named = |naming: NameSource| {
        matches!(
            naming,
            NameSource::InitName | NameSource::Symbol | NameSource::Pseudo
        )
    };
    let locktrace_naming: HashMap<&str, NameSource> = locktrace
        .classes
        .iter()
        .map(|c| (c.name.as_str(), c.naming))
        .collect();
    let locktrace_named: BTreeSet<&str> = locktrace
        .classes
        .iter()
        .filter(|c| named(c.naming))
        .map(|c| base_name(&c.name))
        .collect();
    // (held, new) -> taken only by the tracer itself
    let mut locktrace_deps: BTreeMap<(&str, &str), bool> = BTreeMap::new();
    for edge in &locktrace.edges {
        let both_named = [&edge.from, &edge.to]
            .iter()
            .all(|n| locktrace_naming.get(n.as_str()).is_some_and(|&s| named(s)));
        if both_named {
            let pair = (base_name(&edge.from), base_name(&edge.to));
            if pair.0 != pair.1 {
                let own = edge.comm == TRACER_COMM;
                *locktrace_deps.entry(pair).or_insert(own) &= own;
            }
        } else {
            out.locktrace_unnamed += 1;
        }
    }

    let mut lockdep_counted = BTreeSet::new();
    for (held, new) in &lockdep.scenario_dependencies {
        if !(lockdep.kind(held).traced() && lockdep.kind(new).traced()) {
            out.lockdep_not_traced += 1;
            continue;
        }
        let pair = (base_name(held), base_name(new));
        if pair.0 == pair.1 {
            out.subclass_nestings.insert(pair.0.to_string());
        } else {
            lockdep_counted.insert(pair);
        }
    }
    out.lockdep_counted = lockdep_counted.len();
    for &(held, new) in &lockdep_counted {
        if locktrace_deps.contains_key(&(held, new)) {
            out.recalled += 1;
        } else {
            let cause = if locktrace_named.contains(held) && locktrace_named.contains(new) {
                Cause::NotSeenByLocktrace
            } else {
                Cause::ClassNotNamedByLocktrace
            };
            out.misses
                .entry(cause)
                .or_default()
                .push((held.to_string(), new.to_string()));
        }
    }

    let lockdep_classes: BTreeSet<&str> = lockdep.classes.iter().map(|c| base_name(c)).collect();
    let mut adjacency: HashMap<&str, Vec<&str>> = HashMap::new();
    for (held, new) in &lockdep.dependencies {
        adjacency
            .entry(base_name(held))
            .or_default()
            .push(base_name(new));
    }
    let novalidate: BTreeSet<&str> = lockdep
        .classes_table
        .novalidate
        .iter()
        .map(|c| base_name(c))
        .collect();
    out.locktrace_counted = locktrace_deps.len();
    for (&(held, new), &own) in &locktrace_deps {
        let cause = if reachable(&adjacency, held, new) {
            out.precise += 1;
            continue;
        } else if own {
            Cause::TracerOwnWork
        } else if novalidate.contains(held) || novalidate.contains(new) {
            Cause::NovalidateClass
        } else if lockdep.turned_off {
            // Classes first taken after lockdep's report were never registered either.
            Cause::LockdepTurnedOff
        } else if !lockdep_classes.contains(held) || !lockdep_classes.contains(new) {
            Cause::ClassNotSeenByLockdep
        } else {
            Cause::NotOrderedByLockdep
        };
        out.extras
            .entry(cause)
            .or_default()
            .push((held.to_string(), new.to_string()));
    }

    let findings: Vec<(String, LockdepVerdict)> = locktrace
        .cycles
        .iter()
        .filter(|c| c.guarded_by.is_none() && !c.suppressed)
        .map(|c| {
            let cycle = canonical_cycle(c.classes.iter().map(String::as_str));
            (
                format!("unguarded cycle {}", cycle.join(" -> ")),
                LockdepVerdict::Circular(cycle),
            )
        })
        .chain(
            locktrace
                .recursive
                .iter()
                .filter(|r| r.nesting_annotation.is_none())
                .map(|r| {
                    (
                        format!("possible recursive locking on {}", r.class),
                        LockdepVerdict::Recursive(base_name(&r.class).to_string()),
                    )
                }),
        )
        .collect();
    for verdict in &lockdep.verdicts {
        let found = findings.iter().any(|(_, f)| f == verdict);
        let text = match verdict {
            LockdepVerdict::Circular(cycle) => {
                format!("circular dependency {}", cycle.join(" -> "))
            }
            LockdepVerdict::Recursive(class) => format!("recursive locking on {class}"),
        };
        out.lockdep_verdicts.push((text, found));
    }
    for (text, finding) in findings {
        let agrees = lockdep.verdicts.contains(&finding);
        let explanation = if agrees {
            "lockdep reports the same".to_string()
        } else {
            explain(lockdep, &finding, &locktrace_naming, &adjacency)
        };
        out.locktrace_findings.push(FindingRow {
            finding: text,
            agrees,
            explanation,
        });
    }
    out
}

/// Why lockdep does not report a locktrace finding, as far as its state tells.
fn explain(
    lockdep: &LockdepSide,
    finding: &LockdepVerdict,
    locktrace_naming: &HashMap<&str, NameSource>,
    adjacency: &HashMap<&str, Vec<&str>>,
) -> String {
    match finding {
        LockdepVerdict::Recursive(class) => {
            let subclasses: Vec<&str> = lockdep
                .classes
                .iter()
                .filter(|c| base_name(c) == class && c.contains('/'))
                .map(String::as_str)
                .collect();
            if !subclasses.is_empty() {
                format!(
                    "lockdep tells the nesting apart by subclass ({}): a `*_nested` annotation, \
                     compiled away on production kernels",
                    subclasses.join(", ")
                )
            } else if lockdep.turned_off {
                "lockdep turned itself off after its first report".to_string()
            } else if lockdep.classes.iter().any(|c| base_name(c) == class) {
                "lockdep has the class and no subclass of it: a nest_lock annotation or \
                 instances of one class locktrace cannot order (unexplained)"
                    .to_string()
            } else {
                "lockdep did not register this class in its run".to_string()
            }
        }
        LockdepVerdict::Circular(cycle) => {
            if lockdep.turned_off {
                "lockdep turned itself off after its first report".to_string()
            } else if cycle.iter().any(|c| {
                locktrace_naming
                    .iter()
                    .any(|(n, s)| base_name(n) == c && *s == NameSource::AcquireSite)
            }) {
                "the cycle runs through a class named by acquire site".to_string()
            } else {
                let links: Option<Vec<Vec<&str>>> = (0..cycle.len())
                    .map(|i| path(adjacency, &cycle[i], &cycle[(i + 1) % cycle.len()]))
                    .collect();
                match links {
                    Some(links) => {
                        let indirect: Vec<String> = links
                            .iter()
                            .filter(|p| p.len() > 2)
                            .map(|p| p.join(" -> "))
                            .collect();
                        format!(
                            "every link is in lockdep's graph, yet lockdep reports none; \
                             links it has only through other classes: {} (a recursive read \
                             lock such as srcu in between is a path lockdep's strong-path \
                             rule does not close)",
                            if indirect.is_empty() {
                                "none".to_string()
                            } else {
                                indirect.join("; ")
                            }
                        )
                    }
                    None => "lockdep's graph lacks a link of it".to_string(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC_LOCKDEP: &str = "\
all lock classes:
ffffffff00000001 OPS:       4 FD:    3 BD:    1 +.+.: &vmm->mutex
 -> [ffffffff00000002] fs_reclaim
 -> [ffffffff00000005] &rq->__lock

ffffffff00000002 OPS:       9 FD:    2 BD:    2 +.+.: fs_reclaim
 -> [ffffffff00000003] mmu_notifier_invalidate_range_start

ffffffff00000003 OPS:       9 FD:    1 BD:    3 +.+.: mmu_notifier_invalidate_range_start
 -> [ffffffff00000004] &svmm->mutex

ffffffff00000004 OPS:       2 FD:    0 BD:    4 +.+.: &svmm->mutex

ffffffff00000006 OPS:       2 FD:    1 BD:    1 ++++: &mm->mmap_lock
 -> [ffffffff00000007] &mm->mmap_lock/1

ffffffff00000007 OPS:       2 FD:    0 BD:    2 +.+.: &mm->mmap_lock/1

ffffffff00000005 OPS:       2 FD:    0 BD:    2 -.-.: &rq->__lock
";
    const KINDS: &str = "\
0000000001 normal sleep validate &vmm->mutex
0000000002 normal inv validate fs_reclaim
0000000003 normal inv validate mmu_notifier_invalidate_range_start
0000000004 normal sleep validate &svmm->mutex
0000000006 normal sleep validate &mm->mmap_lock
0000000007 normal sleep validate &mm->mmap_lock/1
0000000005 normal spin validate &rq->__lock
";

    fn locktrace(classes: &[(&str, NameSource)], edges: &[(&str, &str)]) -> ReportJson {
        let mut json = serde_json::json!({
            "classes": classes.iter().map(|(n, s)| serde_json::json!({
                "name": n, "kind": "mutex", "naming": s,
            })).collect::<Vec<_>>(),
            "edges": [], "cycles": [], "recursive": [],
            "stats": serde_json::to_value(lockgraph::StatsJson::default()).unwrap(),
        });
        json["edges"] = edges
            .iter()
            .map(|(from, to)| {
                serde_json::json!({
                    "from": from, "to": to, "count": 1, "first_seen_ns": 0, "held_read": false,
                    "new_read": false, "modes": ["w/w"], "comm": "t", "pid": 1, "tid": 1,
                    "held_stack": [], "new_stack": [], "guards": [],
                })
            })
            .collect();
        serde_json::from_value(json).expect("a report")
    }

    #[test]
    fn kinds_come_from_lockdeps_wait_and_lock_types() {
        assert_eq!(
            classify("&vmm->mutex", "normal", "sleep"),
            ClassKind::Sleeping
        );
        assert_eq!(classify("fs_reclaim", "normal", "inv"), ClassKind::Pseudo);
        assert!(!classify("sb_writers#3", "percpu", "sleep").traced());
        assert!(!classify("&rq->__lock", "normal", "spin").traced());
        assert!(!classify("(work_completion)(&w)", "normal", "inv").traced());
        let table = parse_class_table("0001 normal sleep novalidate &dev->mutex\n").unwrap();
        assert!(table.novalidate.contains("&dev->mutex"));
        assert!(
            parse_class_table("0001 0 4 4 &vmm->mutex").is_err(),
            "the old numeric format"
        );
        assert_eq!(
            base_name("&type->i_mutex_dir_key#3/1"),
            "&type->i_mutex_dir_key"
        );
        assert_eq!(
            base_name("(wq_completion)events#2"),
            "(wq_completion)events"
        );
        assert_eq!(base_name("a/b"), "a/b");
        assert!(parse_class_table("garbage").is_err());
    }

    #[test]
    fn recall_precision_and_their_causes() {
        // Before the scenario, lockdep already had fs_reclaim -> mmu_notifier (its boot-time
        // priming): not counted for recall, still an ordering for precision.
        let before = "\
ffffffff00000002 OPS:       9 FD:    1 BD:    2 +.+.: fs_reclaim
 -> [ffffffff00000003] mmu_notifier_invalidate_range_start
";
        let lockdep =
            LockdepSide::parse(before, PROC_LOCKDEP, KINDS, "debug_locks: 1\n", "").unwrap();
        // locktrace saw one of lockdep's two counted dependencies and the one from before, a
        // transitive one (right: lockdep orders it), one lockdep does not order, one it
        // took attaching its probes, and one through a class it could only name by acquire
        // site.
        let report = locktrace(
            &[
                ("&vmm->mutex", NameSource::InitName),
                ("fs_reclaim", NameSource::Pseudo),
                ("mmu_notifier_invalidate_range_start", NameSource::Pseudo),
                ("&svmm->mutex", NameSource::InitName),
                ("&mm->mmap_lock", NameSource::InitName),
                ("lock@f", NameSource::AcquireSite),
            ],
            &[
                ("&vmm->mutex", "fs_reclaim"),
                ("fs_reclaim", "mmu_notifier_invalidate_range_start"),
                ("&vmm->mutex", "&svmm->mutex"),
                ("&svmm->mutex", "&mm->mmap_lock"),
                ("lock@f", "&vmm->mutex"),
            ],
        );
        let mut report = report;
        let mut own = report.edges[3].clone();
        (own.from, own.to, own.comm) = (
            "&mm->mmap_lock".into(),
            "&svmm->mutex".into(),
            "locktrace".into(),
        );
        report.edges.push(own);
        let c = compare(&lockdep, &report);
        assert_eq!((c.recalled, c.lockdep_counted), (1, 2));
        assert_eq!(
            c.misses[&Cause::NotSeenByLocktrace],
            vec![(
                "mmu_notifier_invalidate_range_start".to_string(),
                "&svmm->mutex".to_string()
            )]
        );
        assert_eq!(
            c.lockdep_not_traced, 1,
            "&vmm->mutex -> &rq->__lock is a spinlock's"
        );
        assert_eq!(
            c.subclass_nestings,
            BTreeSet::from(["&mm->mmap_lock".to_string()])
        );
        assert_eq!((c.precise, c.locktrace_counted), (3, 5));
        assert_eq!(
            c.extras[&Cause::TracerOwnWork],
            vec![("&mm->mmap_lock".to_string(), "&svmm->mutex".to_string())]
        );
        assert_eq!(
            c.extras[&Cause::NotOrderedByLockdep],
            vec![("&svmm->mutex".to_string(), "&mm->mmap_lock".to_string())]
        );
        assert_eq!(c.locktrace_unnamed, 1);
    }

    #[test]
    fn verdicts_match_cycles_up_to_rotation_and_explain_subclass_recursion() {
        let console = "\
[   20.1] ======================================================
[   20.1] WARNING: possible circular locking dependency detected
[   20.1] 6.12.118-lockdep #1 Not tainted
[   20.1] ------------------------------------------------------
[   20.1] t/99 is trying to acquire lock:
[   20.1] ffff0001 (&vmm->mutex){+.+.}-{4:4}, at: f+0x1/0x2 [m]
[   20.1] 
[   20.1] but task is already holding lock:
[   20.1] ffff0002 (&svmm->mutex#2){+.+.}-{4:4}, at: g+0x1/0x2 [m]
[   20.1] 
[   20.1] which lock already depends on the new lock.
[   20.1] 
[   20.1] the existing dependency chain (in reverse order) is:
[   20.1] 
[   20.1] -> #1 (&svmm->mutex#2){+.+.}-{4:4}:
[   20.1]        g+0x1/0x2 [m]
[   20.1] 
[   20.1] -> #0 (&vmm->mutex){+.+.}-{4:4}:
[   20.1]        f+0x1/0x2 [m]
[   20.1] 
[   20.1] other info that might help us debug this:
";
        let lockdep = LockdepSide::parse(
            PROC_LOCKDEP,
            PROC_LOCKDEP,
            KINDS,
            "debug_locks: 0\n",
            console,
        );
        let lockdep = lockdep.unwrap();
        assert!(lockdep.turned_off);
        let mut report = locktrace(&[], &[]);
        report.cycles = serde_json::from_value(serde_json::json!([{
            "id": "cyc-1", "classes": ["&svmm->mutex", "&vmm->mutex"], "guarded_by": null,
            "suppressed": false, "edges": [],
        }]))
        .unwrap();
        report.recursive = serde_json::from_value(serde_json::json!([{
            "class": "&mm->mmap_lock", "count": 1, "first_seen_ns": 0, "held_read": false,
            "new_read": false, "comm": "t", "pid": 1, "tid": 1, "new_stack": [], "held_stack": [],
        }]))
        .unwrap();
        let c = compare(&lockdep, &report);
        assert_eq!(c.lockdep_verdicts.len(), 1);
        assert!(c.lockdep_verdicts[0].1, "{:?}", c.lockdep_verdicts);
        assert_eq!((c.verdicts_agreeing(), c.verdicts_total()), (1, 2));
        let recursion = &c.locktrace_findings[1];
        assert!(!recursion.agrees);
        assert!(
            recursion.explanation.contains("&mm->mmap_lock/1"),
            "{}",
            recursion.explanation
        );
    }
}
