//! Instances of one user-space class (a lock array initialised in a loop: one init site):
//! orders between instances are tracked per instance, as ThreadSanitizer and Helgrind do,
//! so an inversion between two elements is a cycle named by the elements, the dining
//! philosophers' ring is one cycle through all five, and a consistent nesting is no finding
//! (where one class per init site alone would say "possible recursive locking" of all).
mod common;

use std::{collections::BTreeSet, path::Path, process::Command};

use common::{assert_root, compile, edge_pairs, scratch_dir, Target, Tracer};

fn trace_lock_array(mode: &str) -> (serde_json::Value, String) {
    assert_root();
    let dir = scratch_dir(&format!("instances-{mode}"));
    let binary = compile(&dir, "lock_array", None);
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
    (report, text)
}

/// Each unguarded cycle's classes, rotated to start at the smallest name.
fn cycles(report: &serde_json::Value) -> Vec<Vec<String>> {
    report["cycles"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|cycle| cycle["guarded_by"].is_null())
        .map(|cycle| {
            let mut names: Vec<String> = cycle["classes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_string())
                .collect();
            let start = (0..names.len()).min_by_key(|&i| names[i].clone()).unwrap();
            names.rotate_left(start);
            names
        })
        .collect()
}

fn recursive(report: &serde_json::Value) -> Vec<String> {
    report["recursive"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["class"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn an_inversion_between_two_elements_is_a_cycle_named_by_the_elements() {
    let (report, text) = trace_lock_array("pair");
    assert_eq!(cycles(&report), [["chop[1]", "chop[2]"]], "{report:#}");
    assert!(recursive(&report).is_empty(), "{report:#}");
    let edges: BTreeSet<(String, String)> = edge_pairs(&report);
    let expected = [("chop[1]", "chop[2]"), ("chop[2]", "chop[1]")]
        .map(|(a, b)| (a.to_string(), b.to_string()));
    assert_eq!(edges, BTreeSet::from(expected), "{report:#}");
    // Each link of the lockdep-style report has the philosopher's stack.
    assert!(
        text.contains("WARNING: possible circular locking dependency detected"),
        "{text}"
    );
    assert!(
        text.contains("chop[1]") && text.contains("chop[2]"),
        "{text}"
    );
    for edge in report["edges"].as_array().unwrap() {
        let symbols: Vec<&str> = edge["new_stack"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|frame| frame["symbol"].as_str())
            .collect();
        assert!(symbols.contains(&"philosopher"), "{edge}");
    }
}

#[test]
fn the_dining_philosophers_ring_is_one_cycle_through_all_five() {
    let (report, _) = trace_lock_array("ring");
    assert_eq!(
        cycles(&report),
        [["chop[0]", "chop[1]", "chop[2]", "chop[3]", "chop[4]"]],
        "{report:#}"
    );
    assert!(recursive(&report).is_empty(), "{report:#}");
}

#[test]
fn elements_nested_in_a_consistent_order_are_no_finding() {
    let (report, text) = trace_lock_array("ordered");
    assert!(cycles(&report).is_empty(), "{report:#}");
    assert!(recursive(&report).is_empty(), "{report:#}");
    // The orders themselves are in the graph: 0 -> 1 ... 3 -> 4 and 0 -> 4.
    let edges: BTreeSet<(String, String)> = edge_pairs(&report);
    assert_eq!(edges.len(), 5, "{report:#}");
    assert!(
        edges.contains(&("chop[0]".to_string(), "chop[4]".to_string())),
        "{report:#}"
    );
    assert!(!text.contains("WARNING"), "{text}");
}

#[test]
fn heap_instances_are_named_by_class_and_address() {
    let (report, _) = trace_lock_array("heap");
    let found = cycles(&report);
    assert_eq!(found.len(), 1, "{report:#}");
    for name in &found[0] {
        // init@set_table+0x..[0x...]: the class (its init site) and the instance.
        assert!(
            name.starts_with("init@set_table+") && name.contains("[0x") && name.ends_with(']'),
            "{name} in {report:#}"
        );
    }
    assert_ne!(found[0][0], found[0][1]);
}

#[test]
fn locks_initialised_by_a_library_wrapper_are_classed_by_its_callers_sites() {
    assert_root();
    let dir = scratch_dir("instances-wrapper");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs/wrapped_locks.c");
    let library = |args: &[&str]| {
        let status = Command::new("gcc")
            .args(["-g", "-O1", "-fno-omit-frame-pointer", "-pthread"])
            .args(args)
            .arg(&source)
            .current_dir(&dir)
            .status()
            .expect("gcc must be installed");
        assert!(status.success(), "gcc {args:?} failed");
    };
    library(&[
        "-DWRAPPER_LIBRARY",
        "-shared",
        "-fPIC",
        "-o",
        "libwrapped.so",
    ]);
    // The program: -lwrapped after its source.
    let status = Command::new("gcc")
        .args([
            "-g",
            "-O1",
            "-fno-omit-frame-pointer",
            "-pthread",
            "-o",
            "wrapped_locks",
        ])
        .arg(&source)
        .args(["-L.", "-lwrapped", "-Wl,-rpath,$ORIGIN"])
        .current_dir(&dir)
        .status()
        .unwrap();
    assert!(status.success());
    let target = Target::start(&dir.join("wrapped_locks"), &[]);
    let json_path = dir.join("report.json");
    let tracer = Tracer::start(&[
        "--user",
        "--pid",
        &target.pid,
        "--report-json",
        json_path.to_str().unwrap(),
    ]);
    target.go();
    let output = tracer.stop();
    assert!(
        output.status.success(),
        "locktrace failed:\n{}",
        output.stderr
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let found = cycles(&report);
    assert_eq!(found.len(), 1, "{report:#}");
    assert_eq!(found[0].len(), 2, "{report:#}");
    // Initialised inside the library: each lock is classed by the wrapper's caller (the
    // first init-stack frame outside libwrapped.so), two sites in main, not one class at
    // the wrapper's pthread_mutex_init call.
    assert_ne!(found[0][0], found[0][1], "{report:#}");
    for name in &found[0] {
        assert!(name.starts_with("init@main+"), "{name}");
    }
    assert!(recursive(&report).is_empty(), "{report:#}");
    // Each link's stacks lead through the wrapper to the program's callers.
    let mut callers = BTreeSet::new();
    for edge in report["edges"].as_array().unwrap() {
        let symbols: Vec<&str> = edge["new_stack"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|frame| frame["symbol"].as_str())
            .collect();
        assert!(symbols.contains(&"wrapped_lock_take"), "{edge}");
        callers.extend(
            symbols
                .into_iter()
                .filter(|s| *s == "post_entry" || *s == "audit"),
        );
    }
    assert_eq!(
        callers,
        BTreeSet::from(["audit", "post_entry"]),
        "{report:#}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
