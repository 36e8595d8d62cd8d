//! The rule table: lockdep's rules as cases — the lock steps of one task and exactly what they
//! must create — written once (`lockgraph/tests/data/lockdep-rules.txt`) and run against every
//! implementation: the offline simulator ([`RuleCase::simulate`]) and, through a VM
//! scenario, the eBPF side.
//!
//! ```text
//! case innermost held lock only (check_prevs_add)
//!   lock g.1; lock a.1; lock b.1
//!   dep g -> a
//!   dep a -> b guard g.1
//! ```
//! Steps, `;`-separated, on a lock `CLASS.INSTANCE`: `lock`, `rlock` (read), `trylock`,
//! `rtrylock`, `iolock` (an acquire through a nested entry point, as `mutex_lock_io` calling
//! `mutex_lock`: two acquires and two returns seen), `lockfail` (a blocking acquire that
//! fails), `unlock`. Expectations: `dep A ->
//! B` (an occurrence with no guard), `dep A -> B guard G.I` (one under instance I of class G),
//! `recursive A`. A case creates exactly what it lists.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    graph::ClassId,
    model::{ClassInfo, ClassKey, LockKind, NameSource},
    sim::{
        LockOp,
        LockOpKind::{Acquire, Acquired, Failed, Release},
        LockSimulator,
    },
    Error, LockGraph, Result,
};

/// A lock of a case: class name and instance number.
pub type RuleLock = (String, u64);

/// One step of a case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleStep {
    /// `lock`, `rlock`, `trylock`, `rtrylock`, `iolock`, `lockfail` or `unlock`.
    pub op: String,
    pub lock: RuleLock,
}

/// What a case creates: per dependency (held class, new class) the guards its occurrences ran
/// under (`None`: no guard), and the classes locked recursively.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleOutcome {
    pub deps: BTreeMap<(String, String), BTreeSet<Option<RuleLock>>>,
    pub recursive: BTreeSet<String>,
}

impl RuleOutcome {
    /// What the verdict depends on, per dependency: the guard's class when every occurrence
    /// ran under one and the same instance, else `None`. A source that keeps only the first
    /// guard and then says "no guard" (the eBPF side) compares equal on this.
    pub fn verdicts(&self) -> BTreeMap<(String, String), Option<String>> {
        self.deps
            .iter()
            .map(|(dep, guards)| {
                let guard = match guards.iter().collect::<Vec<_>>().as_slice() {
                    [Some((class, _))] => Some(class.clone()),
                    _ => None,
                };
                (dep.clone(), guard)
            })
            .collect()
    }
}

/// One case of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleCase {
    pub title: String,
    pub steps: Vec<RuleStep>,
    pub expected: RuleOutcome,
}

const STEPS: [&str; 7] = [
    "lock", "rlock", "trylock", "rtrylock", "iolock", "lockfail", "unlock",
];

fn rule_lock(number: usize, text: &str) -> Result<RuleLock> {
    let parsed = text
        .trim()
        .split_once('.')
        .and_then(|(class, instance)| Some((class.to_string(), instance.parse().ok()?)));
    parsed
        .filter(|(class, _)| !class.is_empty())
        .ok_or_else(|| Error::at(number, format!("`{text}` is not CLASS.INSTANCE")))
}

/// Parses a rule table (`#` comments, blank lines ignored).
pub fn parse_rule_table(text: &str) -> Result<Vec<RuleCase>> {
    let mut cases: Vec<RuleCase> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let (number, line) = (index + 1, line.trim());
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(title) = line.strip_prefix("case ") {
            cases.push(RuleCase {
                title: title.to_string(),
                steps: Vec::new(),
                expected: RuleOutcome::default(),
            });
            continue;
        }
        let case = cases
            .last_mut()
            .ok_or_else(|| Error::at(number, "a `case` line must come first"))?;
        if let Some(dep) = line.strip_prefix("dep ") {
            let (held, rest) = dep
                .split_once(" -> ")
                .ok_or_else(|| Error::at(number, "expected `dep A -> B [guard G.I]`"))?;
            let (new, guard) = match rest.split_once(" guard ") {
                Some((new, guard)) => (new, Some(rule_lock(number, guard)?)),
                None => (rest, None),
            };
            let key = (held.trim().to_string(), new.trim().to_string());
            case.expected.deps.entry(key).or_default().insert(guard);
        } else if let Some(class) = line.strip_prefix("recursive ") {
            case.expected.recursive.insert(class.trim().to_string());
        } else {
            for step in line.split(';').map(str::trim) {
                let (op, lock) = step
                    .split_once(' ')
                    .filter(|(op, _)| STEPS.contains(op))
                    .ok_or_else(|| Error::at(number, format!("unknown step `{step}`")))?;
                case.steps.push(RuleStep {
                    op: op.to_string(),
                    lock: rule_lock(number, lock)?,
                });
            }
        }
    }
    Ok(cases)
}

impl RuleCase {
    /// Whether the case has a step only a second task could make happen (`lockfail`: a
    /// blocking acquire fails only while someone else holds the lock).
    pub fn needs_a_second_task(&self) -> bool {
        self.steps.iter().any(|step| step.op == "lockfail")
    }

    /// Runs the steps through the offline simulator and reads back what they created.
    pub fn simulate(&self) -> RuleOutcome {
        let mut graph = LockGraph::new();
        let mut sim = LockSimulator::new();
        let mut addresses: BTreeMap<RuleLock, u64> = BTreeMap::new();
        for step in &self.steps {
            let class = graph.class(
                ClassKey::name(&step.lock.0),
                ClassInfo::new(&step.lock.0, LockKind::Rwsem, NameSource::Given),
            );
            let next = 0x1000 * (addresses.len() as u64 + 1);
            let address = *addresses.entry(step.lock.clone()).or_insert(next);
            let op = |kind, read, try_lock| LockOp {
                kind,
                tid: 1,
                pid: 1,
                comm: "rules".into(),
                class,
                lock: address,
                read,
                recursive: false,
                try_lock,
                pseudo: false,
                timestamp_ns: 0,
                stack: Vec::new(),
            };
            let ops = match step.op.as_str() {
                "lock" => vec![op(Acquire, false, false), op(Acquired, false, false)],
                "rlock" => vec![op(Acquire, true, false), op(Acquired, true, false)],
                "trylock" => vec![op(Acquire, false, true), op(Acquired, false, true)],
                "rtrylock" => vec![op(Acquire, true, true), op(Acquired, true, true)],
                "iolock" => vec![
                    op(Acquire, false, false),
                    op(Acquire, false, false),
                    op(Acquired, false, false),
                    op(Acquired, false, false),
                ],
                "lockfail" => vec![op(Acquire, false, false), op(Failed, false, false)],
                _ => vec![op(Release, false, false)],
            };
            for op in ops {
                sim.apply(op, |dep| {
                    graph.add_dependency(dep);
                });
            }
        }
        let lock_of: BTreeMap<u64, RuleLock> = addresses
            .into_iter()
            .map(|(lock, address)| (address, lock))
            .collect();
        let name = |id: ClassId| graph.name(id).to_string();
        let mut outcome = RuleOutcome::default();
        for edge in graph.edges() {
            let guards = edge
                .guards
                .iter()
                .map(|guard| guard.and_then(|g| lock_of.get(&g.lock).cloned()))
                .collect();
            outcome
                .deps
                .insert((name(edge.held), name(edge.new)), guards);
        }
        outcome.recursive = graph
            .recursive()
            .iter()
            .map(|found| name(found.class))
            .collect();
        outcome
    }
}
