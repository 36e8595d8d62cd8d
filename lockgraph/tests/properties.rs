//! Property tests: random lock programs over a few threads and classes, checked against
//! an independent model of the class graph.

use std::collections::{BTreeMap, BTreeSet};

use lockgraph::*;
use proptest::{prelude::*, strategy::ValueTree, test_runner::TestRunner};

const CLASSES: usize = 4;
const INSTANCES: u64 = 2;

#[derive(Clone, Debug)]
enum Step {
    Acquire {
        class: usize,
        instance: u64,
        read: bool,
        try_lock: bool,
    },
    /// Releases the held lock at this index (modulo the stack depth).
    Release(usize),
    /// The most recent acquire fails.
    FailLast,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..CLASSES, 0..INSTANCES, prop::bool::weighted(0.2), prop::bool::weighted(0.15))
            .prop_map(|(class, instance, read, try_lock)| {
                Step::Acquire { class, instance, read, try_lock }
            }),
        3 => (0..8usize).prop_map(Step::Release),
        1 => Just(Step::FailLast),
    ]
}

fn program() -> impl Strategy<Value = Vec<(u32, Step)>> {
    prop::collection::vec((1..=3u32, step()), 0..40)
}

/// A guard in the model: class and lock address.
type ModelGuard = (usize, u64);

/// The model: for every edge `(held, new)` the set of guards seen, and recursive classes.
#[derive(Default)]
struct Model {
    edges: BTreeMap<(usize, usize), BTreeSet<Option<ModelGuard>>>,
    recursive: BTreeSet<usize>,
}

/// class, instance, read, trylock
type Held = (usize, u64, bool, bool);

fn run(program: &[(u32, Step)]) -> (LockGraph, Model) {
    let mut graph = LockGraph::new();
    let ids: Vec<ClassId> = (0..CLASSES)
        .map(|c| {
            let name = format!("c{c}");
            graph.class(
                ClassKey::Id {
                    source: 0,
                    id: c as u64,
                },
                ClassInfo::new(name, LockKind::Mutex, NameSource::Given),
            )
        })
        .collect();
    let mut sim = LockSimulator::new();
    let mut model = Model::default();
    let mut stacks: BTreeMap<u32, Vec<Held>> = BTreeMap::new();
    for (tid, step) in program {
        let stack = stacks.entry(*tid).or_default();
        let lock = |class: usize, instance: u64| (class as u64) << 8 | instance;
        let op = |kind, class: usize, instance, read, try_lock| LockOp {
            kind,
            tid: *tid,
            pid: *tid,
            comm: String::new(),
            class: ids[class],
            lock: lock(class, instance),
            read,
            recursive: false,
            try_lock,
            pseudo: false,
            timestamp_ns: 0,
            stack: Vec::new(),
        };
        let op = match *step {
            Step::Acquire {
                class,
                instance,
                read,
                try_lock,
            } => {
                if !try_lock {
                    // lockdep: the innermost non-trylock and the trylocks inside it; a
                    // lock of the same class anywhere is recursive locking.
                    let innermost = stack.iter().rposition(|h| !h.3).unwrap_or(0);
                    let mut sources: Vec<usize> = (innermost..stack.len()).collect();
                    if !sources.iter().any(|&i| stack[i].0 == class) {
                        sources.extend(stack[..innermost].iter().rposition(|h| h.0 == class));
                    }
                    for i in sources {
                        let held = stack[i].0;
                        if held == class {
                            model.recursive.insert(class);
                            continue;
                        }
                        // The outermost exclusively held lock outside `held`, as an instance.
                        let guard = stack[..i]
                            .iter()
                            .find(|outer| !outer.2)
                            .map(|outer| (outer.0, lock(outer.0, outer.1)));
                        model.edges.entry((held, class)).or_default().insert(guard);
                    }
                }
                stack.push((class, instance, read, try_lock));
                op(LockOpKind::Acquire, class, instance, read, try_lock)
            }
            Step::Release(index) => {
                if stack.is_empty() {
                    continue;
                }
                let (class, instance, _, _) = stack[index % stack.len()];
                // A release matches the most recent acquisition of that instance.
                let top = stack
                    .iter()
                    .rposition(|h| (h.0, h.1) == (class, instance))
                    .unwrap();
                stack.remove(top);
                op(LockOpKind::Release, class, instance, false, false)
            }
            Step::FailLast => {
                let Some((class, instance, _, _)) = stack.pop() else {
                    continue;
                };
                op(LockOpKind::Failed, class, instance, false, false)
            }
        };
        sim.apply(op, |dep| {
            graph.add_dependency(dep);
        });
    }
    (graph, model)
}

/// All simple cycles of the model graph, each rotated to start at its smallest class.
fn model_cycles(model: &Model) -> BTreeSet<Vec<usize>> {
    fn extend(model: &Model, path: &mut Vec<usize>, out: &mut BTreeSet<Vec<usize>>) {
        let (start, last) = (path[0], *path.last().unwrap());
        for &(held, new) in model.edges.keys() {
            if held != last {
                continue;
            }
            if new == start {
                out.insert(path.clone());
            } else if new > start && !path.contains(&new) {
                path.push(new);
                extend(model, path, out);
                path.pop();
            }
        }
    }
    let mut out = BTreeSet::new();
    for start in 0..CLASSES {
        extend(model, &mut vec![start], &mut out);
    }
    out
}

fn model_guard(model: &Model, cycle: &[usize]) -> Option<ModelGuard> {
    let n = cycle.len();
    let sets: Vec<&BTreeSet<Option<ModelGuard>>> = (0..n)
        .map(|i| &model.edges[&(cycle[i], cycle[(i + 1) % n])])
        .collect();
    match sets[0].iter().collect::<Vec<_>>().as_slice() {
        [Some(g)] if sets.iter().all(|s| s.len() == 1 && s.contains(&Some(*g))) => Some(*g),
        _ => None,
    }
}

fn rotated(cycle: &[usize]) -> Vec<usize> {
    let start = (0..cycle.len()).min_by_key(|&i| cycle[i]).unwrap();
    cycle[start..]
        .iter()
        .chain(&cycle[..start])
        .copied()
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn engine_agrees_with_model(program in program()) {
        let (graph, model) = run(&program);
        let index = |id: ClassId| id.index();

        // Edges and their guard sets.
        let guard = |g: &Guard| (index(g.class), g.lock);
        let edges: BTreeMap<(usize, usize), BTreeSet<Option<ModelGuard>>> = graph
            .edges()
            .map(|e| {
                let guards = e.guards.iter().map(|g| g.as_ref().map(guard)).collect();
                ((index(e.held), index(e.new)), guards)
            })
            .collect();
        prop_assert_eq!(&edges, &model.edges);

        // Every simple cycle is reported exactly once, with the right guard.
        let reported: BTreeMap<Vec<usize>, Option<ModelGuard>> = graph
            .cycles()
            .iter()
            .map(|c| {
                let classes: Vec<usize> = c.classes.iter().map(|&id| index(id)).collect();
                (rotated(&classes), c.guarded_by.as_ref().map(guard))
            })
            .collect();
        prop_assert_eq!(reported.len(), graph.cycles().len());
        let expected: BTreeMap<Vec<usize>, Option<ModelGuard>> = model_cycles(&model)
            .into_iter()
            .map(|c| {
                let g = model_guard(&model, &c);
                (c, g)
            })
            .collect();
        prop_assert_eq!(&reported, &expected);

        // The verdict: an unguarded cycle iff the model has a cycle (self-edges excluded)
        // whose edges are not all guarded by one class.
        let model_unguarded = expected.values().any(Option::is_none);
        prop_assert_eq!(graph.has_unguarded_cycle(), model_unguarded);
        let no_rules = Suppressions::default();
        let report = graph.report(&no_rules);
        prop_assert_eq!(report.has_unguarded_cycle(), model_unguarded);

        // Self-dependencies are recursive findings, never edges.
        let recursive: BTreeSet<usize> = graph.recursive().iter().map(|r| index(r.class)).collect();
        prop_assert_eq!(&recursive, &model.recursive);
        prop_assert!(graph.edges().all(|e| e.held != e.new));

        // Snapshots and traces preserve all of it.
        let none = Suppressions::default();
        let json = serde_json::to_string(&graph.report(&none).json()).unwrap();
        let loaded = LockGraph::from_snapshot_json(&json).unwrap();
        prop_assert_eq!(loaded.report(&none).json(), graph.report(&none).json());
    }
}

/// The generator must actually exercise cycles, guards and recursion, or the property
/// above proves little.
#[test]
fn generated_programs_cover_the_interesting_cases() {
    let mut runner = TestRunner::deterministic();
    let (mut unguarded, mut guarded, mut recursive, mut clean) = (0, 0, 0, 0);
    for _ in 0..500 {
        let program = program().new_tree(&mut runner).unwrap().current();
        let (graph, _) = run(&program);
        unguarded += usize::from(graph.has_unguarded_cycle());
        guarded += usize::from(graph.cycles().iter().any(|c| c.guarded_by.is_some()));
        recursive += usize::from(!graph.recursive().is_empty());
        clean += usize::from(graph.cycles().is_empty());
    }
    assert!(
        unguarded > 50 && guarded > 5 && recursive > 50 && clean > 50,
        "{unguarded} {guarded} {recursive} {clean}"
    );
}

const SPLAT: &str = include_str!("data/nouveau-lockdep-splat.txt");
const SEED_TRACE: &str = include_str!("data/seed-scenario.jsonl");

/// Deletes, duplicates and mangles lines of a valid input.
fn mangle(text: &str, edits: &[(usize, u8, String)]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for (at, what, junk) in edits {
        if lines.is_empty() {
            break;
        }
        let at = at % lines.len();
        match what % 4 {
            0 => {
                lines.remove(at);
            }
            1 => lines.insert(at, lines[at].clone()),
            2 => lines[at] = junk.clone(),
            _ => {
                let cut = lines[at]
                    .char_indices()
                    .map(|(i, _)| i)
                    .nth(junk.len() % 40)
                    .unwrap_or(0);
                lines[at].truncate(cut);
            }
        }
    }
    lines.join("\n")
}

proptest! {
    #[test]
    fn parsers_never_panic_on_mangled_input(
        edits in prop::collection::vec((0..200usize, 0..4u8, ".{0,30}"), 0..6),
    ) {
        // A mangled report gives its own cycle or none, never another one.
        let mut graph = LockGraph::new();
        if import_lockdep(&mut graph, &mangle(SPLAT, &edits)).is_ok() {
            for cycle in graph.cycles() {
                let mut names: Vec<&str> = cycle.classes.iter().map(|&c| graph.name(c)).collect();
                names.sort_unstable();
                prop_assert_eq!(
                    names,
                    ["&svmm->mutex", "&vmm->mutex#3", "fs_reclaim",
                     "mmu_notifier_invalidate_range_start"]
                );
            }
        }
        if let Ok(graph) = replay(mangle(SEED_TRACE, &edits).as_bytes()) {
            let _ = graph.report(&Suppressions::default()).text();
        }
        let _ = Suppressions::parse(&mangle("cyc-0123456789abcdef\n*x*\n# c\n", &edits));
    }

    #[test]
    fn lockdep_import_never_panics_on_arbitrary_text(text in "(.{0,40}\n){0,20}") {
        let _ = import_lockdep(&mut LockGraph::new(), &text);
        let _ = import_lockdep(&mut LockGraph::new(), &format!("{SPLAT}\n{text}"));
    }
}
