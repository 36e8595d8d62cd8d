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
    let cycles = import_lockdep(&mut graph, SPLAT).unwrap().cycles;
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
    let cycles = import_lockdep(&mut graph, &log).unwrap().cycles;
    assert_eq!(cycles.len(), 1, "the same cycle twice is reported once");
    assert_eq!(
        graph.edges().map(|e| e.count).collect::<Vec<_>>(),
        vec![2, 2, 2, 2]
    );
}

#[test]
fn a_truncated_report_gives_what_it_holds_and_a_note_naming_the_line() {
    // Cut inside the chain (after #3 and #2, before #1's end): the header's attempt and the
    // edge #2 names with #3, no cycle.
    let cut: String = SPLAT.lines().take(40).map(|l| format!("{l}\n")).collect();
    let mut graph = LockGraph::new();
    let import = import_lockdep(&mut graph, &cut).unwrap();
    assert!(import.cycles.is_empty() && graph.cycles().is_empty());
    assert_eq!(import.notes.len(), 1, "{:?}", import.notes);
    let note = &import.notes[0];
    assert!(note.starts_with("line 40: "), "the last line read: {note}");
    assert!(note.contains("from line 2"), "{note}");
    let id = |name| graph.class_by_name(name).unwrap();
    assert!(graph
        .edge(id("&svmm->mutex"), id("&vmm->mutex#3"))
        .is_some());

    // A report cut off by the next report: a note for the first, the second whole.
    let cut: String = SPLAT.lines().take(30).map(|l| format!("{l}\n")).collect();
    let import = import_lockdep(&mut LockGraph::new(), &format!("{cut}{SPLAT}")).unwrap();
    assert_eq!((import.reports, import.cycles.len()), (2, 1));
    assert_eq!(import.notes.len(), 1, "{:?}", import.notes);
    // Named at the line before the interrupting report's WARNING line.
    assert!(
        import.notes[0].starts_with("line 31: "),
        "{:?}",
        import.notes
    );

    let err = import_lockdep(&mut LockGraph::new(), "just\nnoise\n").unwrap_err();
    assert!(matches!(err, Error::Parse { line: 2, .. }), "{err}");
    assert!(import_lockdep(&mut LockGraph::new(), "").is_err());
}

#[test]
fn a_chain_inconsistent_with_its_header_makes_no_cycle() {
    let broken = SPLAT.replace("-> #2 (mmu_notifier", "-> #7 (mmu_notifier");
    let mut graph = LockGraph::new();
    let import = import_lockdep(&mut graph, &broken).unwrap();
    let line = SPLAT.lines().position(|l| l.contains("-> #2")).unwrap() + 1;
    assert!(import.cycles.is_empty() && graph.cycles().is_empty());
    assert!(
        import.notes[0].starts_with(&format!("line {line}: ")),
        "{:?}",
        import.notes
    );
    let broken = SPLAT.replace("-> #0 (&vmm->mutex#3)", "-> #0 (&other)");
    let mut graph = LockGraph::new();
    let import = import_lockdep(&mut graph, &broken).unwrap();
    assert!(import.cycles.is_empty() && graph.cycles().is_empty());
    assert!(import.notes[0].contains("&other"), "{:?}", import.notes);
}

#[test]
fn seed_trace_and_seed_splat_give_the_same_cycle() {
    let traced = replay(SEED_TRACE.as_bytes()).unwrap();
    let mut imported = LockGraph::new();
    let splat_cycle = import_lockdep(&mut imported, SPLAT)
        .unwrap()
        .cycles
        .remove(0);
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

/// The seed splat as other loggers and mailers carry it: every form imports as the same cycle.
#[test]
fn printk_caller_ids_syslog_journal_and_mail_quotes_are_read_through() {
    let rest = |line: &str| {
        line.split_once("] ")
            .map_or(line, |(_, rest)| rest)
            .to_string()
    };
    let variants: Vec<(&str, String)> = vec![
        (
            "printk caller ids",
            SPLAT
                .lines()
                .map(|l| l.replacen("] ", "][ T6909] ", 1) + "\n")
                .collect(),
        ),
        (
            "CPU caller ids, no timestamps",
            SPLAT
                .lines()
                .map(|l| format!("[    C3] {}\n", rest(l)))
                .collect(),
        ),
        (
            "syslog",
            SPLAT
                .lines()
                .map(|l| format!("Dec  2 10:00:00 testbox kernel: {l}\n"))
                .collect(),
        ),
        (
            "journal, ISO dates",
            SPLAT
                .lines()
                .map(|l| {
                    format!(
                        "2024-12-02T10:00:00.123456+01:00 testbox kernel: {}\n",
                        rest(l)
                    )
                })
                .collect(),
        ),
        (
            "quoted twice in mail",
            SPLAT.lines().map(|l| format!("> > {l}\n")).collect(),
        ),
        (
            "console levels",
            SPLAT.lines().map(|l| format!("<4>{l}\n")).collect(),
        ),
    ];
    for (what, log) in variants {
        let mut graph = LockGraph::new();
        let import = import_lockdep(&mut graph, &log).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(import.notes.is_empty(), "{what}: {:?}", import.notes);
        assert_eq!(import.cycles.len(), 1, "{what}");
        let mut classes = names(&graph, &import.cycles[0]);
        classes.sort();
        assert_eq!(
            classes,
            [
                "&svmm->mutex",
                "&vmm->mutex#3",
                "fs_reclaim",
                "mmu_notifier_invalidate_range_start"
            ],
            "{what}"
        );
        let closing = graph
            .edge(
                graph.class_by_name("&svmm->mutex").unwrap(),
                graph.class_by_name("&vmm->mutex#3").unwrap(),
            )
            .unwrap();
        assert_eq!(closing.new_stack.len(), 16, "{what}: every frame read");
    }
}
