//! Sinks: text report (golden), JSON report, suppressions, snapshots and exports.

use lockgraph::*;

const SPLAT: &str = include_str!("data/nouveau-lockdep-splat.txt");

fn frame(text: &str) -> Frame {
    Frame::parse(text).unwrap()
}

/// A small fixed graph: a 2-class cycle, a 3-class cycle, a guarded cycle, a recursive
/// lock, and a cycle suppressed by glob.
fn sample() -> LockGraph {
    let mut graph = LockGraph::new();
    let mut class = |name: &str, kind| {
        graph.class(
            ClassKey::name(name),
            ClassInfo::new(name, kind, NameSource::Given),
        )
    };
    let [a, b, c, d, g, x, y, q] = [
        ("&dev->lock", LockKind::Mutex),
        ("&mm->mmap_lock", LockKind::Rwsem),
        ("fs_reclaim", LockKind::Pseudo),
        ("&inode->i_rwsem", LockKind::Rwsem),
        ("big_gate", LockKind::Mutex),
        ("&x->lock", LockKind::Mutex),
        ("&y->lock", LockKind::Mutex),
        ("&quirk->lock", LockKind::PthreadMutex),
    ]
    .map(|(name, kind)| class(name, kind));
    let task = |comm: &str, pid| TaskInfo {
        comm: comm.into(),
        pid,
        tid: pid,
    };
    let mut add = |held,
                   new,
                   held_read,
                   new_read,
                   ts,
                   t: TaskInfo,
                   new_stack: &[&str],
                   held_stack: &[&str],
                   guard| {
        graph.add_dependency(Dependency {
            held,
            new,
            held_read,
            new_read,
            held_recursive: false,
            new_recursive: false,
            timestamp_ns: ts,
            task: t,
            new_stack: new_stack.iter().map(|f| frame(f)).collect(),
            held_stack: held_stack.iter().map(|f| frame(f)).collect(),
            guard,
        });
    };
    add(
        a,
        b,
        false,
        true,
        10,
        task("ioctl", 7),
        &["down_read+0x10/0x40", "dev_ioctl+0x22/0x90 [drv]"],
        &["dev_open+0x5/0x50 [drv]"],
        None,
    );
    add(
        b,
        a,
        true,
        false,
        20,
        task("fault", 8),
        &["__mutex_lock+0x134/0xc70", "dev_fault+0x40/0x100 [drv]"],
        &["do_user_addr_fault+0x1e0/0x6a0"],
        None,
    );
    add(
        b,
        c,
        false,
        false,
        30,
        task("kswapd0", 9),
        &["fs_reclaim_acquire+0x29/0x30", "kmalloc+0x3f/0x350"],
        &[],
        None,
    );
    add(
        c,
        d,
        false,
        false,
        40,
        task("kswapd0", 9),
        &["0xffffffff81234567"],
        &[],
        None,
    );
    add(
        d,
        b,
        false,
        true,
        50,
        task("writer", 10),
        &["down_read+0x10/0x40", "filemap_fault+0x80/0x900"],
        &["vfs_write+0x90/0x200"],
        None,
    );
    add(
        x,
        y,
        false,
        false,
        60,
        task("worker", 11),
        &["y_lock+0x1/0x2"],
        &[],
        Some(Guard {
            class: g,
            lock: 0xffff_8880_0000_1000,
        }),
    );
    add(
        y,
        x,
        false,
        false,
        70,
        task("worker", 12),
        &["x_lock+0x1/0x2"],
        &[],
        Some(Guard {
            class: g,
            lock: 0xffff_8880_0000_1000,
        }),
    );
    add(
        q,
        a,
        false,
        false,
        80,
        task("app", 13),
        &["pthread_mutex_lock+0x1/0x2", "app_main+0x10/0x20"],
        &[],
        None,
    );
    add(
        a,
        q,
        false,
        false,
        90,
        task("app", 14),
        &["pthread_mutex_lock+0x1/0x2", "app_exit+0x10/0x20"],
        &[],
        None,
    );
    add(
        d,
        d,
        false,
        false,
        100,
        task("rename", 15),
        &["down_write+0x1/0x2", "myfs_swap_inodes+0x10/0x40"],
        &["vfs_rename+0x100/0x400"],
        None,
    );
    // Fork's nesting of the child's mm in the parent's: a `_nested` annotation compiled
    // away, recognised by where it is made, listed as no finding.
    add(
        b,
        b,
        false,
        false,
        110,
        task("init", 1),
        &["down_write+0x9/0x40", "copy_process+0x10b7/0x2230"],
        &["down_write_killable+0x9/0x50", "copy_process+0x106f/0x2230"],
        None,
    );
    let stats = graph.stats_mut();
    stats.events = 1234;
    stats.dropped = 5;
    graph
}

fn suppressions() -> Suppressions {
    Suppressions::parse("# reviewed\n\n&quirk->*\n").unwrap()
}

#[test]
fn text_report_matches_golden_file() {
    let graph = sample();
    let text = graph.report(&suppressions()).text();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/golden-report.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, &text).unwrap();
    }
    let golden = std::fs::read_to_string(path).unwrap();
    assert_eq!(
        text, golden,
        "rerun with UPDATE_GOLDEN=1 after an intended change"
    );
}

#[test]
fn text_report_of_the_fixture_has_lockdeps_structure() {
    let mut graph = LockGraph::new();
    import_lockdep(&mut graph, SPLAT).unwrap();
    let text = graph.report(&Suppressions::default()).text();
    let strip = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    // The sections of the original splat, in order, with the same content.
    let mut rest = text.as_str();
    for needle in [
        "WARNING: possible circular locking dependency detected",
        "test-file-priva/6909 is trying to acquire lock:",
        "(&vmm->mutex#3){write}, at: nvkm_uvmm_mthd+0x4d5/0xbe0 [nouveau]",
        "but task is already holding lock:",
        "(&svmm->mutex){write}, at: nouveau_svmm_invalidate_range_start+0x71/0x110 [nouveau]",
        "which lock already depends on the new lock.",
        "the existing dependency chain (in reverse order) is:",
        "-> #3 (&svmm->mutex){write}:",
        "-> #2 (mmu_notifier_invalidate_range_start){write}:",
        "-> #1 (fs_reclaim){write}:",
        "-> #0 (&vmm->mutex#3){write}:",
        "other info that might help us debug this:",
        "Chain exists of:",
        "&vmm->mutex#3 --> mmu_notifier_invalidate_range_start --> &svmm->mutex",
        "Possible unsafe locking scenario:",
        "lock(&svmm->mutex);",
        "lock(mmu_notifier_invalidate_range_start);",
        "lock(&svmm->mutex);",
        "lock(&vmm->mutex#3);",
        "*** DEADLOCK ***",
        "summary: 4 classes, 4 dependencies, 1 cycles (1 unguarded, 0 guarded, 0 suppressed)",
    ] {
        let at = rest
            .find(needle)
            .unwrap_or_else(|| panic!("`{needle}` missing or out of order in\n{text}"));
        rest = &rest[at + needle.len()..];
    }
    // Every stack line of the chain is reproduced in order.
    let original: Vec<String> = SPLAT
        .lines()
        .map(|l| strip(l.split_once(']').unwrap().1))
        .skip_while(|l| !l.starts_with("-> #3"))
        .take_while(|l| !l.starts_with("other info"))
        .filter(|l| !l.is_empty())
        .map(|l| l.replace("{+.+.}", "{write}"))
        .collect();
    let ours: Vec<String> = text
        .lines()
        .map(strip)
        .skip_while(|l| !l.starts_with("-> #3"))
        .take_while(|l| !l.starts_with("other info"))
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(ours, original);
}

#[test]
fn json_report_schema() {
    let graph = sample();
    let json = serde_json::to_value(graph.report(&suppressions()).json()).unwrap();
    let stats = &json["stats"];
    assert_eq!(stats["events"], 1234);
    assert_eq!(stats["dropped"], 5);
    assert_eq!(stats["classes"], 8);
    assert_eq!(stats["dependencies"], 9);
    assert_eq!(stats["cycles"], json["cycles"].as_array().unwrap().len());
    assert_eq!(
        json["classes"][1],
        serde_json::json!({"name": "&mm->mmap_lock", "kind": "rwsem", "naming": "given"})
    );
    assert_eq!(json["classes"][7]["kind"], "pthread_mutex");
    let edge = &json["edges"][0];
    assert_eq!(
        (edge["from"].as_str(), edge["to"].as_str()),
        (Some("&dev->lock"), Some("&mm->mmap_lock"))
    );
    assert_eq!(
        (edge["count"].as_u64(), edge["first_seen_ns"].as_u64()),
        (Some(1), Some(10))
    );
    assert_eq!(
        (edge["held_read"].as_bool(), edge["new_read"].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(
        (edge["comm"].as_str(), edge["pid"].as_u64()),
        (Some("ioctl"), Some(7))
    );
    assert_eq!(edge["new_stack"][1]["symbol"], "dev_ioctl");
    assert_eq!(edge["new_stack"][1]["module"], "drv");
    assert_eq!(edge["held_stack"][0]["offset"], 5);
    assert_eq!(edge["guards"], serde_json::json!([null]));
    let cycles = json["cycles"].as_array().unwrap();
    let by_classes = |names: &[&str]| {
        cycles
            .iter()
            .find(|c| c["classes"] == serde_json::json!(names))
            .unwrap()
    };
    let two = by_classes(&["&dev->lock", "&mm->mmap_lock"]);
    assert_eq!(two["guarded_by"], serde_json::Value::Null);
    assert_eq!(two["suppressed"], false);
    assert_eq!(two["edges"].as_array().unwrap().len(), 2);
    assert_eq!(two["id"], cycle_id(&["&dev->lock", "&mm->mmap_lock"]));
    assert_eq!(
        by_classes(&["&x->lock", "&y->lock"])["guarded_by"],
        "big_gate"
    );
    assert_eq!(
        by_classes(&["&quirk->lock", "&dev->lock"])["suppressed"],
        true
    );
    assert_eq!(json["recursive"][0]["class"], "&inode->i_rwsem");
}

#[test]
fn suppression_by_id_and_glob() {
    let graph = sample();
    let none = Suppressions::default();
    assert!(graph.report(&none).has_unguarded_cycle());
    let unguarded: Vec<String> = graph
        .report(&none)
        .unguarded_cycles()
        .map(|c| c.id.clone())
        .collect();
    assert_eq!(unguarded.len(), 3);
    // Suppress every unguarded cycle, one by id, the others by glob.
    let rules = format!("{}\n# comment\n*mmap*\n&quirk->*\n", unguarded[0]);
    let rules = Suppressions::parse(&rules).unwrap();
    let report = graph.report(&rules);
    assert!(!report.has_unguarded_cycle());
    let text = report.text();
    assert!(text.contains("suppressed cycles:"));
    assert!(!text.contains("WARNING: possible circular"));
    assert_eq!(report.json().stats.suppressed_cycles, 3);
    // Globs also match names without the #N suffix; `*` anywhere.
    assert!(rules
        .matching_rule("cyc-0", &["zz", "&mm->mmap_lock#2"])
        .is_some());
    let glob = Suppressions::parse("a*c*e").unwrap();
    assert!(glob.matching_rule("", &["abcde"]).is_some());
    assert!(glob.matching_rule("", &["ace"]).is_some());
    assert!(glob.matching_rule("", &["abcd"]).is_none());
    assert!(glob.matching_rule("", &["xace"]).is_none());
    let err = Suppressions::parse("ok\ncyc-12\n").unwrap_err();
    assert!(matches!(err, Error::Parse { line: 2, .. }));
}

#[test]
fn snapshot_round_trips() {
    let graph = sample();
    let none = Suppressions::default();
    let json = serde_json::to_string_pretty(&graph.report(&none).json()).unwrap();
    let loaded = LockGraph::from_snapshot_json(&json).unwrap();
    assert_eq!(loaded.report(&none).json(), graph.report(&none).json());
    assert_eq!(
        loaded.report(&suppressions()).text(),
        graph.report(&suppressions()).text()
    );
    assert!(LockGraph::from_snapshot_json("{\"classes\":[]").is_err());
    // A cycle over a dependency the snapshot does not have is rejected, not trusted.
    let mut broken = graph.report(&none).json();
    broken.edges.retain(|e| e.from != "&x->lock");
    let err = LockGraph::from_snapshot_json(&serde_json::to_string(&broken).unwrap()).unwrap_err();
    assert!(matches!(err, Error::Snapshot(_)), "{err}");
    // Hand-edited snapshots with zero counts or no guards load as a valid graph.
    let mut edited = graph.report(&none).json();
    edited.edges[0].count = 0;
    edited.edges[0].guards.clear();
    let loaded = LockGraph::from_snapshot_json(&serde_json::to_string(&edited).unwrap()).unwrap();
    let mut trace = Vec::new();
    write_trace(&loaded, &mut trace).unwrap();
    assert_eq!(replay(&trace[..]).unwrap().edges().next().unwrap().count, 1);
}

#[test]
fn merge_sums_counts_and_finds_cycles_across_snapshots() {
    let mut left = LockGraph::new();
    let mut right = LockGraph::new();
    let mk = |graph: &mut LockGraph, held: &str, new: &str, ts: u64| {
        let info = |n: &str| ClassInfo::new(n, LockKind::Mutex, NameSource::Given);
        let held = graph.class(ClassKey::name(held), info(held));
        let new = graph.class(ClassKey::name(new), info(new));
        graph.add_dependency(Dependency {
            held,
            new,
            timestamp_ns: ts,
            ..Dependency::default()
        })
    };
    mk(&mut left, "a", "b", 50);
    mk(&mut left, "a", "b", 60);
    mk(&mut right, "a", "b", 5);
    mk(&mut right, "b", "c", 6);
    left.stats_mut().events = 2;
    right.stats_mut().events = 3;
    mk(&mut right, "c", "a", 7);
    assert!(left.cycles().is_empty());
    let merged = merge([&left, &right]).unwrap();
    let ab = merged
        .edge(
            merged.class_by_name("a").unwrap(),
            merged.class_by_name("b").unwrap(),
        )
        .unwrap();
    assert_eq!((ab.count, ab.first_seen_ns), (3, 5));
    assert_eq!(merged.cycles().len(), 1);
    assert_eq!(merged.stats().events, 5);

    // A cycle only the union has.
    let mut third = LockGraph::new();
    mk(&mut third, "b", "a", 1);
    let merged = merge([&left, &third]).unwrap();
    assert_eq!(merged.cycles().len(), 1);

    let changes = diff(&left, &merged);
    assert_eq!(
        changes.new_dependencies,
        vec![NewDependency {
            held: "b".to_string(),
            new: "a".to_string()
        }]
    );
    assert_eq!(changes.new_cycles.len(), 1);
    assert_eq!(changes.new_cycles[0].id, merged.cycles()[0].id);
    assert!(changes.new_cycles[0].is_unguarded());
    assert_eq!(diff(&merged, &merged), GraphDiff::default());
}

#[test]
fn dot_and_graphml_mark_cycle_edges() {
    let graph = sample();
    let dot = to_dot(&graph);
    let id = |n: &str| graph.class_by_name(n).unwrap().index();
    let edge_line = |from: &str, to: &str| {
        let prefix = format!("  n{} -> n{} ", id(from), id(to));
        dot.lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap()
            .to_string()
    };
    assert!(edge_line("&dev->lock", "&mm->mmap_lock").contains("color=red"));
    assert!(edge_line("&x->lock", "&y->lock").contains("color=orange"));
    assert!(!edge_line("&mm->mmap_lock", "&dev->lock").contains("orange"));
    assert!(dot.contains("label=\"&dev->lock\""));
    assert_eq!(dot.matches(" -> ").count(), graph.edge_count());

    let xml = to_graphml(&graph);
    assert!(xml.contains("<data key=\"name\">&amp;dev-&gt;lock</data>"));
    assert_eq!(xml.matches("<edge ").count(), graph.edge_count());
    assert_eq!(xml.matches(">unguarded<").count(), 2 + 3 + 2);
    assert_eq!(xml.matches(">guarded<").count(), 2);
}

#[test]
fn losses_show_as_incomplete_coverage() {
    // 50 nested locks (two beyond the held-lock stack) and a release of a lock never taken.
    let mut trace = String::new();
    for i in 0..50 {
        trace.push_str(&format!(
            "{{\"type\":\"lock\",\"tid\":1,\"op\":\"acquire\",\"class\":\"c{i}\",\"lock\":{i}}}\n"
        ));
    }
    trace.push_str("{\"type\":\"lock\",\"tid\":2,\"op\":\"release\",\"lock\":999}\n");
    trace.push_str(
        "{\"type\":\"stats\",\"events\":51,\"dropped\":3,\"dependency_set_full\":7,\
         \"dependencies_lost\":5}\n",
    );
    let graph = replay(trace.as_bytes()).unwrap();
    let rules = Suppressions::default();
    let report = graph.report(&rules);
    let stats = report.json().stats.source;
    assert_eq!(
        (
            stats.held_overflow,
            stats.unmatched_releases,
            stats.dependency_set_full,
            stats.dependencies_lost,
        ),
        (2, 1, 7, 5)
    );
    let text = report.text();
    let line = text
        .lines()
        .find(|l| l.starts_with("coverage incomplete: "))
        .unwrap();
    assert!(line.contains("2 acquires not tracked"), "{line}");
    assert!(line.contains("5 new dependencies lost"), "{line}");
    assert!(
        !line.contains("releases") && !line.contains("not kept"),
        "unmatched releases and dependencies sent but not kept lose nothing: {line}"
    );
    // A trace written back keeps them; a clean graph says nothing.
    let mut written = Vec::new();
    write_trace(&graph, &mut written).unwrap();
    let again = replay(written.as_slice()).unwrap();
    assert_eq!(again.stats(), graph.stats());
    let clean = replay("{\"type\":\"stats\",\"events\":1}\n".as_bytes()).unwrap();
    assert!(!clean.report(&rules).text().contains("coverage incomplete"));
}
