//! lockdep import and JSON-lines traces, including the seed scenario both ways.

use lockgraph::*;

const SPLAT: &str = include_str!("data/nouveau-lockdep-splat.txt");
const SEED_TRACE: &str = include_str!("data/seed-scenario.jsonl");

fn names(graph: &LockGraph, cycle: &Cycle) -> Vec<String> {
    cycle
        .classes
        .iter()
        .map(|&c| graph.name(c).to_string())
        .collect()
}

fn symbols(stack: &[Frame]) -> Vec<&str> {
    stack
        .iter()
        .map(|f| f.symbol.as_deref().unwrap_or("?"))
        .collect()
}

#[test]
fn fixture_imports_as_exactly_the_nouveau_cycle() {
    let mut graph = LockGraph::new();
    let cycles = import_lockdep(&mut graph, SPLAT).unwrap();
    assert_eq!(cycles.len(), 1);
    assert_eq!(graph.cycles(), &cycles[..]);
    let expected = [
        "&vmm->mutex#3",
        "fs_reclaim",
        "mmu_notifier_invalidate_range_start",
        "&svmm->mutex",
    ];
    assert_eq!(names(&graph, &cycles[0]), expected);
    assert_eq!(graph.edge_count(), 4);
    assert_eq!(graph.class_count(), 4);
    let id = |name| graph.class_by_name(name).unwrap();
    let stack_of = |held, new| graph.edge(id(held), id(new)).unwrap().new_stack.clone();
    // Each edge carries the stack of its chain entry.
    let closing = graph.edge(id("&svmm->mutex"), id("&vmm->mutex#3")).unwrap();
    assert_eq!(
        symbols(&closing.new_stack)[..4],
        [
            "__lock_acquire",
            "lock_acquire",
            "__mutex_lock",
            "nvkm_uvmm_mthd"
        ]
    );
    assert_eq!(closing.new_stack.len(), 16);
    assert_eq!(
        closing.new_stack[3].to_string(),
        "nvkm_uvmm_mthd+0x4d5/0xbe0 [nouveau]"
    );
    assert_eq!(
        (closing.task.comm.as_str(), closing.task.pid),
        ("test-file-priva", 6909)
    );
    let s = stack_of("&vmm->mutex#3", "fs_reclaim");
    assert_eq!(
        (s.len(), symbols(&s)[0]),
        (19, "fs_reclaim_acquire.part.101")
    );
    let s = stack_of("fs_reclaim", "mmu_notifier_invalidate_range_start");
    assert_eq!((s.len(), symbols(&s)[0]), (10, "__mmu_notifier_register"));
    let s = stack_of("mmu_notifier_invalidate_range_start", "&svmm->mutex");
    assert_eq!(
        (s.len(), symbols(&s)[1]),
        (10, "nouveau_svmm_invalidate_range_start")
    );
    assert_eq!(
        graph.class_info(id("fs_reclaim")).info.kind,
        LockKind::Pseudo
    );
    assert_eq!(
        graph.class_info(id("&svmm->mutex")).info.naming,
        NameSource::Lockdep
    );
}

#[test]
fn several_reports_without_timestamps_among_noise() {
    let plain: String = SPLAT
        .lines()
        .map(|l| l.split_once(']').map_or(l, |(_, rest)| rest).trim_start())
        .map(|l| format!("        {l}\n"))
        .collect();
    let log = format!(
        "usb 1-1: new high-speed USB device\n{SPLAT}\nrandom noise line\n{plain}\n\
         [  200.1] eth0: link up\n"
    );
    let mut graph = LockGraph::new();
    let cycles = import_lockdep(&mut graph, &log).unwrap();
    assert_eq!(cycles.len(), 1, "the same cycle twice is reported once");
    assert_eq!(
        graph.edges().map(|e| e.count).collect::<Vec<_>>(),
        vec![2, 2, 2, 2]
    );
}

#[test]
fn truncated_report_is_an_error_naming_the_line() {
    let cut: String = SPLAT.lines().take(40).map(|l| format!("{l}\n")).collect();
    let err = import_lockdep(&mut LockGraph::new(), &cut).unwrap_err();
    let Error::Parse { line, message } = err else {
        panic!("not a parse error")
    };
    assert_eq!(line, 40, "the last line read: {message}");
    assert!(message.contains("line 2"), "{message}");

    // A report cut off by the next report.
    let cut: String = SPLAT.lines().take(30).map(|l| format!("{l}\n")).collect();
    let err = import_lockdep(&mut LockGraph::new(), &format!("{cut}{SPLAT}")).unwrap_err();
    // Named at the interrupting report's WARNING line (its `====` rule comes first).
    assert!(matches!(err, Error::Parse { line: 32, .. }), "{err}");

    let err = import_lockdep(&mut LockGraph::new(), "just\nnoise\n").unwrap_err();
    assert!(matches!(err, Error::Parse { line: 2, .. }), "{err}");
    assert!(import_lockdep(&mut LockGraph::new(), "").is_err());
}

#[test]
fn chain_inconsistent_with_header_is_rejected() {
    let broken = SPLAT.replace("-> #2 (mmu_notifier", "-> #7 (mmu_notifier");
    let err = import_lockdep(&mut LockGraph::new(), &broken).unwrap_err();
    let line = SPLAT.lines().position(|l| l.contains("-> #2")).unwrap() + 1;
    assert!(
        matches!(err, Error::Parse { line: l, .. } if l == line),
        "{err}"
    );
    let broken = SPLAT.replace("-> #0 (&vmm->mutex#3)", "-> #0 (&other)");
    assert!(import_lockdep(&mut LockGraph::new(), &broken).is_err());
}

#[test]
fn seed_trace_and_seed_splat_give_the_same_cycle() {
    let traced = replay(SEED_TRACE.as_bytes()).unwrap();
    let mut imported = LockGraph::new();
    let splat_cycle = import_lockdep(&mut imported, SPLAT).unwrap().remove(0);
    let strip = |names: Vec<String>| -> Vec<String> {
        names
            .iter()
            .map(|n| strip_lockdep_suffix(n).to_string())
            .collect()
    };
    let want = strip(names(&imported, &splat_cycle));
    let matching: Vec<&Cycle> = traced
        .cycles()
        .iter()
        .filter(|c| strip(names(&traced, c)) == want)
        .collect();
    assert_eq!(matching.len(), 1, "trace cycles: {:?}", traced.cycles());
    assert_eq!(traced.stats().events, 14);
    // Same task closes it in both.
    let c = matching[0];
    let closing = traced
        .edge(*c.classes.last().unwrap(), c.classes[0])
        .unwrap();
    assert_eq!(closing.task.comm, "test-file-priva");
    assert_eq!(
        closing.new_stack[1].to_string(),
        "nvkm_uvmm_mthd+0x4d5/0xbe0 [nouveau]"
    );
}

#[test]
fn trace_errors_name_the_line() {
    let cases = [
        ("{\"type\":\"dep\",\"held\":\"a\"}", 2),
        (
            "{\"type\":\"lock\",\"tid\":1,\"op\":\"grab\",\"class\":\"a\",\"lock\":1}",
            2,
        ),
        (
            "{\"type\":\"lock\",\"tid\":1,\"op\":\"acquire\",\"lock\":1}",
            2,
        ),
        (
            "{\"type\":\"lock\",\"tid\":1,\"op\":\"acquire\",\"class\":\"a\",\"lock\":\"0xzz\"}",
            2,
        ),
        (
            "{\"type\":\"dep\",\"held\":\"a\",\"new\":\"b\",\"new_stack\":[\"bad frame\"]}",
            2,
        ),
        ("{\"type\":\"mystery\"}", 2),
        ("not json", 2),
        ("{\"type\":\"class\",\"name\":\"x\"}", 2),
        ("{\"type\":\"stats\",\"events\":1,\"evnets\":2}", 2),
    ];
    for (line, number) in cases {
        let trace = format!("{{\"type\":\"dep\",\"held\":\"x\",\"new\":\"y\"}}\n{line}\n");
        match replay(trace.as_bytes()) {
            Err(Error::Parse { line, .. }) => assert_eq!(line, number, "{trace}"),
            other => panic!("{trace}: {other:?}"),
        }
    }
}

#[test]
fn trace_counts_do_not_loop() {
    let trace = "{\"type\":\"dep\",\"held\":\"a\",\"new\":\"b\",\"count\":1000000000000}\n\
                 {\"type\":\"dep\",\"held\":\"a\",\"new\":\"a\",\"count\":3}\n";
    let graph = replay(trace.as_bytes()).unwrap();
    assert_eq!(graph.edges().next().unwrap().count, 1_000_000_000_000);
    assert_eq!(graph.recursive()[0].count, 3);
}

#[test]
fn written_trace_replays_to_the_same_graph() {
    let mut graph = replay(SEED_TRACE.as_bytes()).unwrap();
    let [a, b, g] = ["a", "b", "g"].map(|n| {
        graph.class(
            ClassKey::name(n),
            ClassInfo::new(n, LockKind::Rwsem, NameSource::Symbol),
        )
    });
    graph.add_dependency(Dependency {
        held: a,
        new: b,
        guard: Some(Guard {
            class: g,
            lock: 0x40,
        }),
        held_read: true,
        ..Dependency::default()
    });
    graph.add_dependency(Dependency {
        held: a,
        new: b,
        ..Dependency::default()
    });
    graph.add_dependency(Dependency {
        held: a,
        new: a,
        ..Dependency::default()
    });
    let mut written = Vec::new();
    write_trace(&graph, &mut written).unwrap();
    let again = replay(&written[..]).unwrap();
    let none = Suppressions::default();
    assert_eq!(again.report(&none).json(), graph.report(&none).json());
}
