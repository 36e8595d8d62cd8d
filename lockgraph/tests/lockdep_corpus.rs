//! Real lockdep reports as they were pasted (tests/data/lockdep-corpus, sources in its
//! SOURCES.md): each imports as what it lists itself — its cycle (the chain's classes, the
//! attempt closing it), its recursive class, or a note naming what it cannot give whole.

use std::collections::BTreeSet;

use lockgraph::*;

fn corpus(name: &str) -> String {
    let path = format!(
        "{}/tests/data/lockdep-corpus/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn imported(name: &str) -> (LockGraph, LockdepImport) {
    let mut graph = LockGraph::new();
    let import =
        import_lockdep(&mut graph, &corpus(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    (graph, import)
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// A complete circular report: exactly one cycle, over exactly the chain's classes, closed
/// by the attempt `holding -> trying`, with every edge's stack read, and no note.
fn assert_cycle(name: &str, chain: &[&str], holding: &str, trying: &str) {
    let (graph, import) = imported(name);
    assert!(import.notes.is_empty(), "{name}: {:?}", import.notes);
    assert_eq!(import.cycles.len(), 1, "{name}");
    let cycle = &import.cycles[0];
    let classes: BTreeSet<String> = cycle
        .classes
        .iter()
        .map(|&c| graph.name(c).to_string())
        .collect();
    assert_eq!(classes, set(chain), "{name}");
    let id = |n: &str| {
        graph
            .class_by_name(n)
            .unwrap_or_else(|| panic!("{name}: no class {n}"))
    };
    let closing = graph
        .edge(id(holding), id(trying))
        .unwrap_or_else(|| panic!("{name}: no {holding} -> {trying}"));
    assert!(!closing.task.comm.is_empty(), "{name}: the attempt's task");
    for (held, new) in cycle.edges() {
        let edge = graph.edge(held, new).unwrap();
        assert!(
            edge.new_stack.iter().any(|f| f.symbol.is_some()),
            "{name}: {} -> {} has no stack",
            graph.name(held),
            graph.name(new)
        );
    }
    assert_eq!(
        graph.edge_count(),
        chain.len(),
        "{name}: the chain's edges only"
    );
}

#[test]
fn circular_reports_in_every_format_give_their_own_cycle() {
    assert_cycle(
        "dmesg-circular-btrfs-kswapd.txt",
        &[
            "fs_reclaim",
            "&q->q_usage_counter(io)#10",
            "btrfs-tree-01",
            "&delayed_node->mutex",
        ],
        "fs_reclaim",
        "&delayed_node->mutex",
    );
    assert_cycle(
        "syzbot-caller-ids-circular-wireguard.txt",
        &[
            "&wg->static_identity.lock",
            "(work_completion)(&peer->transmit_handshake_work)",
            "(wq_completion)wg-kex-wireguard1",
        ],
        "&wg->static_identity.lock",
        "(wq_completion)wg-kex-wireguard1",
    );
    assert_cycle(
        "caller-ids-circular-inside-kernel-bug.txt",
        &[
            "&(&zone->lock)->rlock",
            "&(&port->lock)->rlock",
            "&port_lock_key",
            "console_owner",
        ],
        "&(&zone->lock)->rlock",
        "console_owner",
    );
    for journal in [
        "journal-circular-radeon-drm-client.txt",
        "quoted-journal-circular-radeon-drm-client.txt",
    ] {
        assert_cycle(
            journal,
            &["console_lock", "&dev->clientlist_mutex"],
            "console_lock",
            "&dev->clientlist_mutex",
        );
    }
    assert_cycle(
        "quoted-syslog-012-circular-btrfs-seed.txt",
        &["&fs_info->chunk_mutex", "&fs_devs->device_list_mutex"],
        "&fs_info->chunk_mutex",
        "&fs_devs->device_list_mutex",
    );
    assert_cycle(
        "old-info-header-circular-ksm-s390.txt",
        &["ksm_thread_mutex/1", "(memory_chain).rwsem"],
        "ksm_thread_mutex/1",
        "(memory_chain).rwsem",
    );
}

#[test]
fn the_quoted_copy_of_a_report_gives_the_same_graph() {
    let (journal, _) = imported("journal-circular-radeon-drm-client.txt");
    let (quoted, _) = imported("quoted-journal-circular-radeon-drm-client.txt");
    let edges = |g: &LockGraph| -> Vec<(String, String, Vec<String>)> {
        g.edges()
            .map(|e| {
                (
                    g.name(e.held).to_string(),
                    g.name(e.new).to_string(),
                    e.new_stack.iter().map(Frame::to_string).collect(),
                )
            })
            .collect()
    };
    assert_eq!(edges(&journal), edges(&quoted));
}

#[test]
fn recursive_locking_reports_give_their_class() {
    for (name, class) in [
        ("recursive-locking-amdgpu-dc-lock.txt", "&adev->dm.dc_lock"),
        (
            "old-info-header-recursive-zone-lock.txt",
            "&(&zone->lock)->rlock",
        ),
    ] {
        let (graph, import) = imported(name);
        assert!(import.notes.is_empty(), "{name}: {:?}", import.notes);
        assert!(
            import.cycles.is_empty() && graph.edge_count() == 0,
            "{name}"
        );
        let found: Vec<&str> = graph
            .recursive()
            .iter()
            .map(|r| graph.name(r.class))
            .collect();
        assert_eq!(found, [class], "{name}");
        let found = &graph.recursive()[0];
        assert!(!found.task.comm.is_empty(), "{name}: the task");
        assert!(
            !found.new_stack.is_empty(),
            "{name}: where it was taken again"
        );
    }
}

#[test]
fn irq_reports_are_notes_naming_their_classes() {
    for (name, classes) in [
        (
            "irq-inversion-lan966x.txt",
            &["_xmit_ETHER#2", "&lan966x->ptp_ts_id_lock"][..],
        ),
        (
            "irq-inversion-syzbot-interrupted-by-gpf.txt",
            &["&group->lock", "&card->ctl_files_rwlock"][..],
        ),
        (
            "caller-ids-cpu-inconsistent-lock-state-arm.txt",
            &["&file_data->lock"][..],
        ),
    ] {
        let (graph, import) = imported(name);
        assert_eq!(import.reports, 1, "{name}");
        assert_eq!(graph.edge_count(), 0, "{name}: nothing imported");
        assert_eq!(import.notes.len(), 1, "{name}: {:?}", import.notes);
        for class in classes {
            assert!(
                import.notes[0].contains(class),
                "{name}: {}",
                import.notes[0]
            );
        }
    }
}

#[test]
fn cut_and_damaged_reports_give_what_they_hold_and_no_cycle() {
    // Cut after chain entry #2: the header's attempt only (#2 has no predecessor read).
    let (graph, import) = imported("caller-ids-cpu-truncated-mid-chain.txt");
    assert!(import.cycles.is_empty() && graph.cycles().is_empty());
    assert_eq!(import.notes.len(), 1, "{:?}", import.notes);
    let id = |n: &str| graph.class_by_name(n).unwrap();
    assert!(graph
        .edge(id("&rq->lock"), id("(console_sem).lock"))
        .is_some());
    assert_eq!(graph.edge_count(), 1);
    // A quote cut before the chain, and a report whose chain lost every entry line: both
    // give their header's attempt, a note each, no cycle.
    let (graph, import) = imported("mail-wrapped-old-format-damaged-chain.txt");
    assert_eq!(import.reports, 2, "{:?}", import.notes);
    assert_eq!(import.notes.len(), 2, "{:?}", import.notes);
    assert!(graph.cycles().is_empty());
    let id = |n: &str| graph.class_by_name(n).unwrap();
    assert!(graph
        .edge(id("pcpu_alloc_mutex"), id("cpu_hotplug.dep_map"))
        .is_some());
    assert_eq!(graph.edge_count(), 1);
}

#[test]
fn proc_lockdep_imports_every_class_and_direct_dependency() {
    let mut graph = LockGraph::new();
    let cycles =
        import_proc_lockdep(&mut graph, &corpus("proc-lockdep-prove-locking.txt")).unwrap();
    assert!(cycles.is_empty());
    let id = |n: &str| {
        graph
            .class_by_name(n)
            .unwrap_or_else(|| panic!("no class {n}"))
    };
    let out = |n: &str| graph.edges().filter(|e| e.held == id(n)).count();
    assert_eq!(
        (
            out("cgroup_mutex"),
            out("(console_sem).lock"),
            out("console_lock")
        ),
        (7, 0, 26)
    );
    assert!(graph
        .edge(id("console_lock"), id("subsys mutex#19"))
        .is_some());
    assert!(graph
        .edge(id("console_lock"), id("(console_sem).lock"))
        .is_some());
    assert_eq!(
        graph.class_info(id("fs_reclaim")).info.kind,
        LockKind::Pseudo
    );
    assert_eq!(
        graph.class_info(id("cgroup_mutex")).info.kind,
        LockKind::Unknown
    );
    // Without CONFIG_PROVE_LOCKING: classes, no dependencies.
    let mut graph = LockGraph::new();
    import_proc_lockdep(&mut graph, &corpus("proc-lockdep-no-prove-locking.txt")).unwrap();
    assert_eq!((graph.class_count(), graph.edge_count()), (6, 0));
    assert!(graph.class_by_name("(console_sem).lock").is_some());
}

#[test]
fn proc_lockdep_with_debug_counts_and_a_cycle_between_dumps() {
    // `OPS:` (CONFIG_DEBUG_LOCKDEP) before the counts; a cycle made of direct dependencies.
    let text = "all lock classes:\n\
        ffff888119656528 OPS:      25 FD:  470 BD:    1 +.+.: (wq_completion)loop0\n \
        -> [ffffffffa0353078] (work_completion)(&worker->work)\n\n\
        ffffffffa0353078 OPS:     235 FD:  467 BD:    2 +.+.: (work_completion)(&worker->work)\n \
        -> [ffff888119656528] (wq_completion)loop0\n";
    let mut graph = LockGraph::new();
    let cycles = import_proc_lockdep(&mut graph, text).unwrap();
    assert_eq!(cycles.len(), 1);
    assert_eq!(graph.edge_count(), 2);
    for bad in [
        "",
        "all lock classes:\n",
        " -> [ffff] orphan\n",
        "not a class line\n",
    ] {
        let err = import_proc_lockdep(&mut LockGraph::new(), bad).unwrap_err();
        assert!(matches!(err, Error::Parse { .. }), "{bad:?}: {err}");
    }
}
