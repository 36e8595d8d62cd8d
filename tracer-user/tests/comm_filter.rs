//! `--comm NAME` traces only the tasks of that name: two programs invert two locks each at
//! the same time, one of them under the chosen name (longer than the kernel's 15 characters,
//! so both sides must truncate alike); only its locks reach the graph.
mod common;

use std::collections::BTreeSet;

use common::{assert_root, compile, edge_pairs, scratch_dir, Target, Tracer};

#[test]
fn only_tasks_of_the_named_command_are_traced() {
    assert_root();
    let dir = scratch_dir("comm-filter");
    let kept = compile(&dir, "comm_filter_kept_program", Some(&source("kept")));
    let other = compile(&dir, "comm_filter_other", Some(&source("other")));
    let kept_target = Target::start(&kept, &["abba"]);
    let other_target = Target::start(&other, &["abba"]);
    let json_path = dir.join("report.json");
    let tracer = Tracer::start(&[
        "--user",
        "--comm",
        "comm_filter_kept_program",
        "--report-json",
        json_path.to_str().unwrap(),
    ]);
    kept_target.go();
    other_target.go();
    let output = tracer.stop();
    assert!(
        output.status.success(),
        "locktrace failed:\n{}",
        output.stderr
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let edges: BTreeSet<(String, String)> = edge_pairs(&report);
    let expected: BTreeSet<(String, String)> = [("kept_a", "kept_b"), ("kept_b", "kept_a")]
        .into_iter()
        .map(|(from, to)| (from.to_string(), to.to_string()))
        .collect();
    assert_eq!(edges, expected, "{report}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `two_locks.c` with its locks renamed `PREFIX_a`, `PREFIX_b`, … so that each program's
/// classes are told apart by name.
fn source(prefix: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/programs/two_locks.c");
    std::fs::read_to_string(path)
        .unwrap()
        .replace("lock_", &format!("{prefix}_"))
}
