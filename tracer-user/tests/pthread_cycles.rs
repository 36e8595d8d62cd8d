//! User-space lock order on the host: two threads taking two global mutexes (one after the
//! other, so nothing hangs) are reported as a possible deadlock with symbolized user stacks
//! when the orders are opposite, and not when they agree or the inversion is a trylock;
//! heap locks are classed by their initialisation site, as lockdep classes kernel locks.
mod common;

use common::{assert_root, compile, edge_pairs, scratch_dir, Target, Tracer};

struct Traced {
    report: serde_json::Value,
    text: String,
}

fn trace_two_locks(mode: &str) -> Traced {
    trace_program("two_locks", mode)
}

fn trace_program(program: &str, mode: &str) -> Traced {
    assert_root();
    let dir = scratch_dir(&format!("cycles-{program}-{mode}"));
    let binary = compile(&dir, program, None);
    let target = Target::start(&binary, &[mode]);
    let json_path = dir.join("report.json");
    let text_path = dir.join("report.txt");
    let tracer = Tracer::start(&[
        "--user",
        "--pid",
        &target.pid,
        "--report-json",
        json_path.to_str().unwrap(),
        "--report-text",
        text_path.to_str().unwrap(),
    ]);
    target.go();
    let output = tracer.stop();
    assert!(
        output.status.success(),
        "locktrace failed:\n{}",
        output.stderr
    );
    let report = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let text = std::fs::read_to_string(&text_path).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    Traced { report, text }
}

fn unguarded_cycles(report: &serde_json::Value) -> Vec<&serde_json::Value> {
    report["cycles"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|cycle| cycle["guarded_by"].is_null() && cycle["suppressed"] == false)
        .collect()
}

fn stack_symbols(edge: &serde_json::Value, side: &str) -> Vec<String> {
    edge[side]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|frame| frame["symbol"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn opposite_orders_are_a_cycle_with_symbolized_stacks() {
    let traced = trace_two_locks("abba");
    let cycles = unguarded_cycles(&traced.report);
    assert_eq!(cycles.len(), 1, "{}", traced.report);
    // Static mutexes are named by their ELF symbol.
    let mut classes: Vec<&str> = cycles[0]["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|class| class.as_str().unwrap())
        .collect();
    classes.sort_unstable();
    assert_eq!(classes, ["lock_a", "lock_b"], "{}", traced.report);
    let edges = traced.report["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 2, "{}", traced.report);
    for edge in edges {
        assert_eq!(edge["count"], 1);
        for side in ["new_stack", "held_stack"] {
            let symbols = stack_symbols(edge, side);
            assert!(
                symbols
                    .iter()
                    .any(|symbol| symbol.contains("pthread_mutex_lock")),
                "{side} of {edge} lacks the libc frame: {symbols:?}"
            );
            // Frame pointers give the caller of the function that took the lock.
            assert!(
                symbols
                    .iter()
                    .any(|symbol| symbol == "first" || symbol == "second"),
                "{side} of {edge} lacks the program's frames: {symbols:?}"
            );
        }
        // The function that called pthread_mutex_lock: glibc keeps no frame pointer, so only
        // the return address the probe reads at its entry gives it.
        let symbols = stack_symbols(edge, "new_stack");
        assert!(
            symbols
                .iter()
                .any(|symbol| symbol == "take_a_then_b" || symbol == "take_b_then_a"),
            "new_stack of {edge} lacks the immediate caller: {symbols:?}"
        );
    }
    assert!(traced
        .text
        .contains("WARNING: possible circular locking dependency detected"));
    assert!(traced.text.contains("*** DEADLOCK ***"));
}

#[test]
fn a_consistent_order_is_not_a_cycle() {
    let traced = trace_two_locks("ordered");
    assert!(
        unguarded_cycles(&traced.report).is_empty(),
        "{}",
        traced.report
    );
    assert_eq!(
        traced.report["edges"].as_array().unwrap().len(),
        1,
        "{}",
        traced.report
    );
}

#[test]
fn a_trylock_inversion_is_not_a_cycle() {
    let traced = trace_two_locks("trylock");
    assert!(
        unguarded_cycles(&traced.report).is_empty(),
        "{}",
        traced.report
    );
    // Only A -> B: the trylock of A under B creates no dependency.
    assert_eq!(
        traced.report["edges"].as_array().unwrap().len(),
        1,
        "{}",
        traced.report
    );
}

#[test]
fn nesting_adds_only_the_innermost_dependency_like_lockdep() {
    // A, B, C nested: lockdep records A -> B and B -> C; A -> C is implied, not recorded.
    let traced = trace_two_locks("nested3");
    assert!(
        unguarded_cycles(&traced.report).is_empty(),
        "{}",
        traced.report
    );
    assert_eq!(
        traced.report["edges"].as_array().unwrap().len(),
        2,
        "{}",
        traced.report
    );
}

#[test]
fn a_recursive_mutex_taken_again_by_its_owner_is_no_dependency() {
    // R, R, B, unlock B, unlock R (inner), C, unlock C, unlock R, D: R -> B and R -> C (R
    // stays held until its outermost unlock), nothing for the re-entry, nothing for D.
    let traced = trace_two_locks("recursive");
    assert_eq!(
        traced.report["recursive"].as_array().map(Vec::len),
        Some(0),
        "{}",
        traced.report
    );
    let mut edges: Vec<(String, String)> = traced.report["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| {
            (
                edge["from"].as_str().unwrap().to_string(),
                edge["to"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    edges.sort();
    let expected =
        [("lock_r", "lock_b"), ("lock_r", "lock_c")].map(|(a, b)| (a.to_string(), b.to_string()));
    assert_eq!(edges, expected, "{}", traced.report);
}

#[test]
fn locks_initialised_at_one_site_are_one_class_like_lockdep() {
    // Two heap pairs locked in opposite orders: no instance inverts, the classes do.
    let traced = trace_program("instances", "inverted");
    let cycles = unguarded_cycles(&traced.report);
    assert_eq!(cycles.len(), 1, "{}", traced.report);
    let mut classes: Vec<&str> = cycles[0]["classes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    classes.sort();
    assert_eq!(classes.len(), 2, "{}", traced.report);
    assert!(
        classes
            .iter()
            .all(|name| name.starts_with("init@make_pair+0x")),
        "{classes:?}"
    );
    assert_ne!(classes[0], classes[1]);
    let naming: Vec<&str> = traced.report["classes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["naming"].as_str())
        .collect();
    assert!(naming.iter().all(|n| *n == "init_site"), "{naming:?}");
    assert!(traced.text.contains("init@make_pair+0x"), "{}", traced.text);
    // The same order for both pairs: one class-level dependency, no cycle.
    let traced = trace_program("instances", "same");
    assert!(
        unguarded_cycles(&traced.report).is_empty(),
        "{}",
        traced.report
    );
    assert_eq!(
        traced.report["edges"].as_array().unwrap().len(),
        1,
        "{}",
        traced.report
    );
}

#[test]
fn no_deadlock_reports_none() {
    // Both threads run to completion: no deadlock in progress may be reported.
    let traced = trace_two_locks("ordered");
    assert_eq!(
        traced.report["deadlocks"].as_array().map(Vec::len),
        Some(0),
        "{}",
        traced.report
    );
}

#[test]
fn a_read_write_inversion_is_a_cycle_only_for_writer_preferring_rwlocks() {
    // Both pairs invert wrlock(a) -> rdlock(b) against rdlock(b) -> wrlock(a). The default
    // glibc kind prefers readers (its reads are lockdep's recursive reads, "R"): no
    // deadlock. PREFER_WRITER_NONRECURSIVE reads ("r") wait behind a waiting writer: one.
    let traced = trace_program("rwlock_kinds", "kinds");
    let edges = traced.report["edges"].as_array().unwrap();
    let modes_of = |from: &str, to: &str| -> Vec<String> {
        edges
            .iter()
            .find(|e| e["from"] == from && e["to"] == to)
            .map(|e| {
                e["modes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m.as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut by_modes: Vec<(Vec<String>, String, String)> = edges
        .iter()
        .map(|e| {
            let (from, to) = (e["from"].as_str().unwrap(), e["to"].as_str().unwrap());
            (modes_of(from, to), from.to_string(), to.to_string())
        })
        .collect();
    by_modes.sort();
    let modes: Vec<&Vec<String>> = by_modes.iter().map(|(modes, ..)| modes).collect();
    assert_eq!(
        modes,
        [
            &vec!["R/w".to_string()],
            &vec!["r/w".to_string()],
            &vec!["w/R".to_string()],
            &vec!["w/r".to_string()]
        ],
        "{}",
        traced.report
    );
    let cycles = unguarded_cycles(&traced.report);
    assert_eq!(cycles.len(), 1, "{}", traced.report);
    let mut classes: Vec<String> = cycles[0]["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|class| class.as_str().unwrap().to_string())
        .collect();
    classes.sort();
    // The cycle is the writer-preferring pair: the classes of the "r" edges.
    let mut writer_pair = vec![by_modes[1].1.clone(), by_modes[1].2.clone()];
    writer_pair.sort();
    assert_eq!(classes, writer_pair, "{}", traced.report);
}

#[test]
fn a_mutex_unlocked_by_another_thread_is_no_longer_held_by_its_holder() {
    let traced = trace_program("foreign_unlock", "run");
    let edges: Vec<(String, String)> = edge_pairs(&traced.report);
    // The normal mutex was released by main: the holder's next lock depends on nothing.
    assert!(!edges.iter().any(|(from, _)| from == "normal"), "{edges:?}");
    // The error-checking one was not (EPERM): still held, so after_checked depends on it.
    assert!(
        edges.contains(&("checked".to_string(), "after_checked".to_string())),
        "{edges:?}"
    );
    let stats = &traced.report["stats"];
    assert_eq!(stats["foreign_releases"].as_u64(), Some(1), "{stats}");
    assert_eq!(stats["unmatched_releases"].as_u64(), Some(0), "{stats}");
}
