//! Engine behaviour: cycle detection, guards, recursion, naming, the state machine.

use lockgraph::{LockOpKind::*, *};

fn mutex(name: &str) -> ClassInfo {
    ClassInfo::new(name, LockKind::Mutex, NameSource::Given)
}

fn classes<const N: usize>(graph: &mut LockGraph, names: [&str; N]) -> [ClassId; N] {
    names.map(|name| graph.class(ClassKey::name(name), mutex(name)))
}

fn dep(held: ClassId, new: ClassId) -> Dependency {
    Dependency {
        held,
        new,
        ..Dependency::default()
    }
}

/// The one instance of class `class` these tests hold as a guard.
fn instance(class: ClassId) -> Guard {
    Guard {
        class,
        lock: 0x1000 + class.index() as u64,
    }
}

fn guarded(held: ClassId, new: ClassId, guard: ClassId) -> Dependency {
    Dependency {
        guard: Some(instance(guard)),
        ..dep(held, new)
    }
}

#[test]
fn cycle_is_reported_when_its_last_edge_appears() {
    let mut graph = LockGraph::new();
    let [a, b, c] = classes(&mut graph, ["a", "b", "c"]);
    assert!(graph.add_dependency(dep(a, b)).is_empty());
    assert!(graph.add_dependency(dep(b, c)).is_empty());
    let cycles = graph.add_dependency(dep(c, a));
    assert_eq!(cycles.len(), 1);
    // Dependency order starting at the lock whose acquisition closed the cycle.
    assert_eq!(cycles[0].classes, vec![a, b, c]);
    assert_eq!(cycles[0].guarded_by, None);
    assert!(graph.has_unguarded_cycle());
    // Repeats report nothing more and only count.
    assert!(graph.add_dependency(dep(c, a)).is_empty());
    assert_eq!(graph.edge(c, a).unwrap().count, 2);
    assert_eq!(graph.cycles().len(), 1);
}

#[test]
fn every_distinct_cycle_is_reported_once_shortest_first() {
    let mut graph = LockGraph::new();
    let [a, b, c, d] = classes(&mut graph, ["a", "b", "c", "d"]);
    graph.add_dependency(dep(a, b));
    graph.add_dependency(dep(b, d));
    graph.add_dependency(dep(a, c));
    graph.add_dependency(dep(c, b));
    // d → a closes a→b→d and a→c→b→d.
    let cycles = graph.add_dependency(dep(d, a));
    let found: Vec<Vec<ClassId>> = cycles.iter().map(|c| c.classes.clone()).collect();
    assert_eq!(found, vec![vec![a, b, d], vec![a, c, b, d]]);
    // b → a closes a→b (new) and a→c→b; a→b→d→a is known and not repeated.
    let cycles = graph.add_dependency(dep(b, a));
    let found: Vec<Vec<ClassId>> = cycles.iter().map(|c| c.classes.clone()).collect();
    assert_eq!(found, vec![vec![a, b], vec![a, c, b]]);
    assert_eq!(graph.cycles().len(), 4);
    let ids: std::collections::HashSet<_> = graph.cycles().iter().map(|c| c.id.clone()).collect();
    assert_eq!(ids.len(), 4);
}

#[test]
fn cycle_ids_are_fnv1a_of_rotated_names() {
    // Known answer computed independently (FNV-1a 64, 0xff between names).
    assert_eq!(cycle_id(&["a", "b"]), "cyc-e57da31903de37b1");
    assert_eq!(cycle_id(&["b", "a"]), "cyc-e57da31903de37b1");
    assert_eq!(cycle_id(&["b", "c", "a"]), cycle_id(&["a", "b", "c"]));
    assert_ne!(cycle_id(&["a", "c", "b"]), cycle_id(&["a", "b", "c"]));
    assert_ne!(cycle_id(&["ab", "c"]), cycle_id(&["a", "bc"]));
}

#[test]
fn colliding_names_get_lockdep_suffixes() {
    let mut graph = LockGraph::new();
    let first = graph.class(
        ClassKey::Id {
            source: 1,
            id: 0x10,
        },
        mutex("&vmm->mutex"),
    );
    let second = graph.class(
        ClassKey::Id {
            source: 1,
            id: 0x20,
        },
        mutex("&vmm->mutex"),
    );
    let third = graph.class(
        ClassKey::Id {
            source: 2,
            id: 0x10,
        },
        mutex("&vmm->mutex"),
    );
    let again = graph.class(
        ClassKey::Id {
            source: 1,
            id: 0x20,
        },
        mutex("other"),
    );
    assert_eq!(graph.name(first), "&vmm->mutex");
    assert_eq!(graph.name(second), "&vmm->mutex#2");
    assert_eq!(graph.name(third), "&vmm->mutex#3");
    assert_eq!(again, second);
    assert_eq!(graph.class_by_name("&vmm->mutex#3"), Some(third));
    // A name that already carries a suffix is not reused.
    let imported = graph.class(ClassKey::name("x#2"), mutex("x#2"));
    let x = graph.class(ClassKey::name("x"), mutex("x"));
    let x2 = graph.class(ClassKey::Id { source: 1, id: 1 }, mutex("x"));
    assert_eq!(
        (graph.name(imported), graph.name(x), graph.name(x2)),
        ("x#2", "x", "x#3")
    );
    // Cycles between same-named classes are real cycles.
    graph.add_dependency(dep(first, second));
    assert_eq!(graph.add_dependency(dep(second, first)).len(), 1);
}

#[test]
fn guarded_cycle_until_an_unguarded_occurrence() {
    let mut graph = LockGraph::new();
    let [g, a, b] = classes(&mut graph, ["g", "a", "b"]);
    graph.add_dependency(guarded(a, b, g));
    let cycles = graph.add_dependency(guarded(b, a, g));
    assert_eq!(cycles.len(), 1);
    assert_eq!(cycles[0].guarded_by, Some(instance(g)));
    assert!(!graph.has_unguarded_cycle());
    // The same edge under the same guard changes nothing.
    assert!(graph.add_dependency(guarded(a, b, g)).is_empty());
    // Once without the guard, the cycle is real and reported again.
    let lost = graph.add_dependency(dep(a, b));
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].id, cycles[0].id);
    assert_eq!(lost[0].guarded_by, None);
    assert!(graph.has_unguarded_cycle());
    assert_eq!(
        graph.edge(a, b).unwrap().guards,
        vec![Some(instance(g)), None]
    );
}

#[test]
fn two_instances_of_one_guard_class_do_not_guard() {
    let mut graph = LockGraph::new();
    let [g, a, b] = classes(&mut graph, ["g", "a", "b"]);
    // Two mms' mmap_lock, two files' mutex: one class, two instances, no serialisation.
    let under = |held, new, lock| Dependency {
        guard: Some(Guard { class: g, lock }),
        ..dep(held, new)
    };
    graph.add_dependency(under(a, b, 0x10));
    let cycles = graph.add_dependency(under(b, a, 0x20));
    assert_eq!(cycles.len(), 1);
    assert_eq!(cycles[0].guarded_by, None);
    // The same instance all along guards.
    let mut graph = LockGraph::new();
    let [g, a, b] = classes(&mut graph, ["g", "a", "b"]);
    graph.add_dependency(Dependency {
        guard: Some(Guard {
            class: g,
            lock: 0x10,
        }),
        ..dep(a, b)
    });
    let cycles = graph.add_dependency(Dependency {
        guard: Some(Guard {
            class: g,
            lock: 0x10,
        }),
        ..dep(b, a)
    });
    assert_eq!(
        cycles[0].guarded_by,
        Some(Guard {
            class: g,
            lock: 0x10
        })
    );
}

#[test]
fn different_guards_do_not_guard() {
    let mut graph = LockGraph::new();
    let [g, h, a, b] = classes(&mut graph, ["g", "h", "a", "b"]);
    graph.add_dependency(guarded(a, b, g));
    let cycles = graph.add_dependency(guarded(b, a, h));
    assert_eq!(cycles[0].guarded_by, None);
}

#[test]
fn self_dependency_is_recursive_locking_not_a_cycle() {
    let mut graph = LockGraph::new();
    let [a] = classes(&mut graph, ["a"]);
    assert!(graph.add_dependency(dep(a, a)).is_empty());
    graph.add_dependency(dep(a, a));
    assert!(graph.cycles().is_empty());
    assert_eq!(graph.edge_count(), 0);
    assert_eq!(graph.recursive().len(), 1);
    assert_eq!(
        (graph.recursive()[0].class, graph.recursive()[0].count),
        (a, 2)
    );
}

#[test]
fn earliest_occurrence_keeps_stacks() {
    let mut graph = LockGraph::new();
    let [a, b] = classes(&mut graph, ["a", "b"]);
    let at = |ts, f: &str| Dependency {
        timestamp_ns: ts,
        new_stack: vec![Frame::symbol(f, 1)],
        ..dep(a, b)
    };
    graph.add_dependency(at(200, "late"));
    graph.add_dependency(at(100, "early"));
    graph.add_dependency(Dependency {
        new_read: true,
        ..at(300, "later")
    });
    let edge = graph.edge(a, b).unwrap();
    assert_eq!((edge.count, edge.first_seen_ns), (3, 100));
    assert_eq!(edge.new_stack[0].symbol.as_deref(), Some("early"));
    assert_eq!(edge.modes, 0b11, "w/w and w/r seen");
}

fn op(kind: LockOpKind, tid: u32, class: ClassId, lock: u64) -> LockOp {
    LockOp {
        kind,
        tid,
        pid: tid,
        comm: format!("t{tid}"),
        class,
        lock,
        read: false,
        recursive: false,
        try_lock: false,
        pseudo: false,
        timestamp_ns: 0,
        stack: Vec::new(),
    }
}

fn run(graph: &mut LockGraph, sim: &mut LockSimulator, ops: Vec<LockOp>) -> Vec<Cycle> {
    let mut cycles = Vec::new();
    for op in ops {
        sim.apply(op, |d| cycles.extend(graph.add_dependency(d)));
    }
    cycles
}

#[test]
fn simulator_follows_lockdep_semantics() {
    let mut graph = LockGraph::new();
    let mut sim = LockSimulator::new();
    let [g, a, b, c] = classes(&mut graph, ["g", "a", "b", "c"]);
    run(
        &mut graph,
        &mut sim,
        vec![
            // A stream without returns: each lock is held from its acquire.
            op(Acquire, 1, g, 1),
            op(Acquire, 1, a, 2),
            op(Acquire, 1, b, 3),
            // Out-of-order release.
            op(Release, 1, a, 2),
            op(Acquire, 1, c, 4),
        ],
    );
    assert_eq!(sim.held(1), vec![(g, 1), (b, 3), (c, 4)]);
    assert!(graph.edge(a, c).is_none(), "a was released before c");
    // lockdep's check_prevs_add: from the innermost held lock only; g reaches c through b.
    assert!(graph.edge(g, c).is_none());
    assert!(graph.edge(g, b).is_none());
    assert_eq!(
        graph.edge(g, a).unwrap().guards,
        vec![None],
        "the outermost lock guards nothing of its own"
    );
    let g_instance = Some(Guard { class: g, lock: 1 });
    assert_eq!(graph.edge(a, b).unwrap().guards, vec![g_instance]);
    assert_eq!(graph.edge(b, c).unwrap().guards, vec![g_instance]);

    // Trylocks add no dependency but are held once they succeed; failures are dropped
    // (a stream with returns, as the probes report it).
    let mut try_op = op(Acquire, 2, a, 10);
    try_op.try_lock = true;
    let mut try_returned = try_op.clone();
    try_returned.kind = Acquired;
    let mut ops: Vec<LockOp> = taken(2, c, 11).into();
    ops.extend([try_op.clone(), try_returned]);
    run(&mut graph, &mut sim, ops);
    assert!(graph.edge(c, a).is_none());
    run(&mut graph, &mut sim, taken(2, b, 12).into());
    // From the held trylock and from the innermost lock outside it, c.
    assert!(graph
        .edge(a, b)
        .unwrap()
        .guards
        .contains(&Some(Guard { class: c, lock: 11 })));
    assert_eq!(graph.edge(c, b).unwrap().guards, vec![None]);
    let mut failed_try = try_op;
    failed_try.lock = 13;
    failed_try.class = g;
    run(
        &mut graph,
        &mut sim,
        vec![failed_try, op(Failed, 2, g, 13), op(Acquire, 2, g, 14)],
    );
    assert_eq!(sim.held(2).iter().filter(|h| h.0 == g).count(), 1);
    // The blocking acquire created its dependency from the innermost held lock, b.
    assert!(graph.edge(b, g).is_some());
    assert!(graph.edge(c, g).is_none());
    // Releasing something not held is counted.
    run(&mut graph, &mut sim, vec![op(Release, 3, a, 99)]);
    assert_eq!(sim.stats().unmatched, 1);
}

/// As the probes report them: an acquire, then its return.
fn taken(tid: u32, class: ClassId, lock: u64) -> [LockOp; 2] {
    [
        op(Acquire, tid, class, lock),
        op(Acquired, tid, class, lock),
    ]
}

#[test]
fn a_stream_with_returns_holds_a_lock_once_its_acquire_returned() {
    let mut graph = LockGraph::new();
    let mut sim = LockSimulator::new();
    let [a, b, c, d] = classes(&mut graph, ["a", "b", "c", "d"]);
    let mut ops: Vec<LockOp> = taken(1, a, 1).into();
    // A nested entry point (mutex_lock_io calls mutex_lock): two acquires, two returns.
    ops.extend([
        op(Acquire, 1, b, 2),
        op(Acquire, 1, b, 2),
        op(Acquired, 1, b, 2),
        op(Acquired, 1, b, 2),
        op(Release, 1, b, 2),
    ]);
    ops.extend(taken(1, c, 3));
    run(&mut graph, &mut sim, ops);
    assert!(graph.edge(a, b).is_some());
    assert!(graph.edge(b, b).is_none() && graph.recursive().is_empty());
    assert!(
        graph.edge(b, c).is_none(),
        "b was released once and is gone"
    );
    assert!(graph.edge(a, c).is_some());
    assert_eq!(sim.held(1), vec![(a, 1), (c, 3)]);
    // An acquire whose return never comes: pending, so no source, and its release says so.
    run(
        &mut graph,
        &mut sim,
        vec![op(Acquire, 1, d, 4), op(Acquire, 2, b, 5)],
    );
    run(&mut graph, &mut sim, taken(1, b, 6).into());
    assert!(graph.edge(d, b).is_none());
    run(&mut graph, &mut sim, vec![op(Release, 1, d, 4)]);
    assert_eq!(sim.stats().return_missed, 1);
    assert_eq!(sim.stats().unmatched, 0);
}

#[test]
fn releases_of_acquires_beyond_a_full_stack_are_expected() {
    let mut graph = LockGraph::new();
    let mut sim = LockSimulator::new();
    let ids: Vec<ClassId> = (0..50)
        .map(|i| graph.class(ClassKey::Id { source: 0, id: i }, mutex("l")))
        .collect();
    let mut ops: Vec<LockOp> = (0..50).flat_map(|i| taken(1, ids[i], i as u64)).collect();
    ops.extend((0..50).rev().map(|i| op(Release, 1, ids[i], i as u64)));
    run(&mut graph, &mut sim, ops);
    assert_eq!(sim.stats().held_overflow, 2);
    assert_eq!(
        sim.stats().unmatched,
        0,
        "the two beyond the stack were released"
    );
    assert!(sim.held(1).is_empty());
    run(&mut graph, &mut sim, vec![op(Release, 1, ids[0], 0)]);
    assert_eq!(sim.stats().unmatched, 1);
}

#[test]
fn a_pseudo_lock_is_no_guard() {
    let mut graph = LockGraph::new();
    let mut sim = LockSimulator::new();
    let [reclaim, a, b] = classes(&mut graph, ["fs_reclaim", "a", "b"]);
    let mut outer = op(Acquire, 1, reclaim, 1);
    outer.pseudo = true;
    run(
        &mut graph,
        &mut sim,
        vec![outer, op(Acquire, 1, a, 2), op(Acquire, 1, b, 3)],
    );
    // Every task in reclaim holds fs_reclaim at once: a -> b runs unguarded.
    assert_eq!(graph.edge(a, b).unwrap().guards, vec![None]);
}

#[test]
fn read_held_outermost_lock_is_no_guard() {
    let mut graph = LockGraph::new();
    let mut sim = LockSimulator::new();
    let [g, a, b] = classes(&mut graph, ["g", "a", "b"]);
    let mut outer = op(Acquire, 1, g, 1);
    outer.read = true;
    run(
        &mut graph,
        &mut sim,
        vec![outer, op(Acquire, 1, a, 2), op(Acquire, 1, b, 3)],
    );
    assert_eq!(graph.edge(a, b).unwrap().guards, vec![None]);
    assert!(graph.edge(g, a).unwrap().held_read);
}

#[test]
fn simulator_limits_depth_to_48() {
    let mut graph = LockGraph::new();
    let mut sim = LockSimulator::new();
    let ids: Vec<ClassId> = (0..50)
        .map(|i| graph.class(ClassKey::Id { source: 0, id: i }, mutex("l")))
        .collect();
    let ops = ids
        .iter()
        .enumerate()
        .map(|(i, &c)| op(Acquire, 1, c, i as u64))
        .collect();
    run(&mut graph, &mut sim, ops);
    assert_eq!(sim.held(1).len(), MAX_HELD_LOCKS);
    assert_eq!(sim.stats().held_overflow, 2);
    // The two beyond the stack depend on the innermost tracked lock, and are no source.
    assert!(graph.edge(ids[47], ids[48]).is_some());
    assert!(graph.edge(ids[47], ids[49]).is_some());
    assert!(graph.edge(ids[48], ids[49]).is_none());
    // Each lock depends on the one taken just before it (check_prevs_add).
    assert_eq!(graph.edge_count(), 47 + 2);
}

#[test]
fn recursion_is_checked_against_every_held_lock() {
    let mut graph = LockGraph::new();
    let mut sim = LockSimulator::new();
    let [a, b] = classes(&mut graph, ["a", "b"]);
    run(
        &mut graph,
        &mut sim,
        vec![
            op(Acquire, 1, a, 1),
            op(Acquire, 1, b, 2),
            op(Acquire, 1, a, 3),
        ],
    );
    // lockdep's check_deadlock: the outer a is found although b is innermost.
    assert_eq!(graph.recursive().len(), 1);
    assert_eq!(graph.recursive()[0].class, a);
    assert!(graph.edge(b, a).is_some());
}

#[test]
fn nested_same_class_is_recursive() {
    let mut graph = LockGraph::new();
    let mut sim = LockSimulator::new();
    let [a] = classes(&mut graph, ["a"]);
    run(
        &mut graph,
        &mut sim,
        vec![op(Acquire, 1, a, 1), op(Acquire, 1, a, 2)],
    );
    assert_eq!(graph.recursive().len(), 1);
    assert!(graph.cycles().is_empty());
}

fn moded(held: ClassId, new: ClassId, held_mode: Mode, new_mode: Mode) -> Dependency {
    Dependency {
        held_read: held_mode != Mode::Write,
        held_recursive: held_mode == Mode::RecursiveRead,
        new_read: new_mode != Mode::Write,
        new_recursive: new_mode == Mode::RecursiveRead,
        ..dep(held, new)
    }
}

#[test]
fn only_strong_cycles_are_cycles_like_lockdep() {
    use Mode::{Read, RecursiveRead as Rec, Write};
    // a -(w/R)-> b -(R/w)-> a: b is taken as a recursive reader, then held for read: the
    // two readers pass each other, no deadlock.
    let mut graph = LockGraph::new();
    let [a, b] = classes(&mut graph, ["a", "b"]);
    graph.add_dependency(moded(a, b, Write, Rec));
    assert!(graph.add_dependency(moded(b, a, Rec, Write)).is_empty());
    // The same with plain reads (rwsem readers wait for a waiting writer): a deadlock.
    let mut graph = LockGraph::new();
    let [a, b] = classes(&mut graph, ["a", "b"]);
    graph.add_dependency(moded(a, b, Write, Read));
    assert_eq!(graph.add_dependency(moded(b, a, Read, Write)).len(), 1);
    // A recursive read of b against a writer of b blocks: strong.
    let mut graph = LockGraph::new();
    let [a, b] = classes(&mut graph, ["a", "b"]);
    graph.add_dependency(moded(a, b, Write, Rec));
    assert_eq!(graph.add_dependency(moded(b, a, Write, Write)).len(), 1);
    // Not strong at first; a later occurrence in another mode makes it strong, reported then.
    let mut graph = LockGraph::new();
    let [a, b, c] = classes(&mut graph, ["a", "b", "c"]);
    graph.add_dependency(moded(a, b, Write, Rec));
    graph.add_dependency(moded(b, c, Rec, Write));
    assert!(graph.add_dependency(moded(c, a, Write, Write)).is_empty());
    assert!(graph.cycles().is_empty());
    let cycles = graph.add_dependency(moded(b, c, Write, Write));
    assert_eq!(cycles.len(), 1);
    assert_eq!(cycles[0].classes.len(), 3);
}

#[test]
fn a_recursive_read_inside_a_read_of_its_class_is_no_recursive_locking() {
    use Mode::{Read, RecursiveRead as Rec, Write};
    let mut graph = LockGraph::new();
    let [r] = classes(&mut graph, ["r"]);
    graph.add_dependency(moded(r, r, Rec, Rec));
    graph.add_dependency(moded(r, r, Read, Rec));
    assert!(
        graph.recursive().is_empty(),
        "lockdep's check_deadlock allows both"
    );
    graph.add_dependency(moded(r, r, Write, Rec));
    assert_eq!(
        graph.recursive().len(),
        1,
        "a reader inside the writer waits for it"
    );
    let mut graph = LockGraph::new();
    let [r] = classes(&mut graph, ["r"]);
    graph.add_dependency(moded(r, r, Rec, Read));
    assert_eq!(
        graph.recursive().len(),
        1,
        "a plain reader may wait behind a writer"
    );
}

#[test]
fn recursive_reads_replay_from_lock_lines_and_recordings() {
    // The same inversion as lock operations: recursive reads of b, no cycle; written out
    // and replayed, still none, and the modes survive.
    let trace = "\
{\"type\":\"lock\",\"tid\":1,\"op\":\"acquire\",\"class\":\"a\",\"lock\":1}
{\"type\":\"lock\",\"tid\":1,\"op\":\"acquire\",\"class\":\"b\",\"lock\":2,\"read\":true,\"recursive\":true}
{\"type\":\"lock\",\"tid\":1,\"op\":\"release\",\"lock\":2}
{\"type\":\"lock\",\"tid\":1,\"op\":\"release\",\"lock\":1}
{\"type\":\"lock\",\"tid\":2,\"op\":\"acquire\",\"class\":\"b\",\"lock\":2,\"read\":true,\"recursive\":true}
{\"type\":\"lock\",\"tid\":2,\"op\":\"acquire\",\"class\":\"a\",\"lock\":1}
";
    let graph = lockgraph::replay(trace.as_bytes()).unwrap();
    assert_eq!(graph.edge_count(), 2);
    assert!(graph.cycles().is_empty());
    let mut written = Vec::new();
    lockgraph::write_trace(&graph, &mut written).unwrap();
    let again = lockgraph::replay(written.as_slice()).unwrap();
    assert!(again.cycles().is_empty());
    let modes: Vec<u16> = again.edges().map(|e| e.modes).collect();
    assert_eq!(modes, graph.edges().map(|e| e.modes).collect::<Vec<_>>());
    let with_plain_reads = trace.replace(",\"recursive\":true", "");
    let graph = lockgraph::replay(with_plain_reads.as_bytes()).unwrap();
    assert_eq!(graph.cycles().len(), 1);
}

#[test]
fn a_recording_cut_anywhere_replays_every_complete_record() {
    let trace = "\
{\"type\":\"dep\",\"held\":\"a\",\"new\":\"b\"}
{\"type\":\"dep\",\"held\":\"b\",\"new\":\"c\"}
{\"type\":\"dep\",\"held\":\"c\",\"new\":\"a\"}
";
    let graph = lockgraph::replay(trace.as_bytes()).unwrap();
    let mut written = Vec::new();
    lockgraph::write_trace(&graph, &mut written).unwrap();
    assert!(written.starts_with(b"{\"type\":\"schema\""));
    let lines: Vec<&[u8]> = written.split_inclusive(|&b| b == b'\n').collect();
    for cut in 0..=written.len() {
        let head = &written[..cut];
        let complete: Vec<&[u8]> = lines
            .iter()
            .scan(0, |end, line| {
                *end += line.len();
                Some((*end, *line))
            })
            .take_while(|(end, _)| *end <= cut)
            .map(|(_, line)| line)
            .collect();
        let expected = lockgraph::replay(complete.concat().as_slice()).unwrap();
        let replayed =
            lockgraph::replay(head).unwrap_or_else(|err| panic!("cut at byte {cut}: {err}"));
        let partial = cut > 0 && head.last() != Some(&b'\n');
        let tail = &head[complete.concat().len()..];
        // A cut just after a line's closing brace leaves that record whole.
        let extra = replayed.edge_count() - expected.edge_count();
        assert!(extra <= usize::from(partial), "cut at byte {cut}");
        assert_eq!(
            replayed.stats().truncated_records,
            u64::from(partial && serde_json::from_slice::<serde_json::Value>(tail).is_err()),
            "cut at byte {cut}"
        );
    }
    // A complete, malformed line is still an error, not a silent skip.
    assert!(lockgraph::replay(
        &b"{\"type\":\"dep\",\"held\":\n{\"type\":\"dep\",\"held\":\"a\",\"new\":\"b\"}\n"[..]
    )
    .is_err());
    // A newer writer's format is refused with a clear message.
    let err = lockgraph::replay(&b"{\"type\":\"schema\",\"version\":99}\n"[..]).unwrap_err();
    assert!(err.to_string().contains("newer"), "{err}");
}
