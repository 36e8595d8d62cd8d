//! `--record` is written as dependencies arrive: a daemon killed with SIGKILL (no exit path
//! of its own runs) leaves a recording that replays to the inversion it had seen.
mod common;

use std::{process::Command, time::Duration};

use common::{assert_root, compile, scratch_dir, Target, Tracer};

#[test]
fn a_killed_daemon_leaves_a_recording_of_what_it_saw() {
    assert_root();
    let dir = scratch_dir("crash-record");
    let binary = compile(&dir, "two_locks", None);
    let target = Target::start(&binary, &["abba"]);
    let record = dir.join("trace.jsonl");
    let tracer = Tracer::start(&[
        "--user",
        "--pid",
        &target.pid,
        "--record",
        record.to_str().unwrap(),
    ]);
    target.go();
    // Both dependencies reach the file while the daemon runs.
    let mut text = String::new();
    for _ in 0..200 {
        text = std::fs::read_to_string(&record).unwrap_or_default();
        if text.contains("\"held\":\"lock_b\",\"new\":\"lock_a\"")
            && text.contains("\"held\":\"lock_a\",\"new\":\"lock_b\"")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!tracer.kill().success());
    assert!(
        text.starts_with("{\"type\":\"schema\""),
        "no streamed recording:\n{text}"
    );
    let report_path = dir.join("report.json");
    let replay = Command::new(env!("CARGO_BIN_EXE_locktrace"))
        .arg("report")
        .arg(&record)
        .arg("--report-json")
        .arg(&report_path)
        .output()
        .unwrap();
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let report = common::read_json(&report_path);
    let cycles: Vec<Vec<String>> = report["cycles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|cycle| {
            let mut classes: Vec<String> = cycle["classes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_string())
                .collect();
            classes.sort();
            classes
        })
        .collect();
    assert_eq!(
        cycles,
        vec![vec!["lock_a".to_string(), "lock_b".to_string()]],
        "{report}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
