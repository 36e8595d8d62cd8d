//! Deadlocks caught as they happen, in user space on the host: two threads that really
//! deadlock on two pthread mutexes are reported as an actual deadlock (not only a possible
//! one) with both tasks, their locks and symbolized stacks; a third thread waiting on one of
//! the locks is listed as blocked behind it. `locktrace held` shows the same picture. The
//! only test of its binary: `held` reads the newest running trace, which must be this one.
mod common;

use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use common::{assert_root, compile, scratch_dir, Target, Tracer};

#[test]
fn a_real_pthread_deadlock_is_reported_in_progress() {
    assert_root();
    let dir = scratch_dir("deadlock");
    let binary = compile(&dir, "real_deadlock", None);
    let mut target = Target::start(&binary, &[]);
    let json_path = dir.join("report.json");
    let tracer = Tracer::start(&[
        "--user",
        "--pid",
        &target.pid,
        "--report-json",
        json_path.to_str().unwrap(),
    ]);
    target.release();

    // `locktrace held` reads the running trace's state; poll until the deadlock shows.
    let started = Instant::now();
    let held = loop {
        thread::sleep(Duration::from_millis(500));
        let output = Command::new(env!("CARGO_BIN_EXE_locktrace"))
            .args(["held", "--json"])
            .output()
            .unwrap();
        let held: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        // Exit code 3 exactly while a deadlock is shown.
        let deadlocked = held["deadlocks"].as_array().is_some_and(|d| !d.is_empty());
        assert_eq!(
            output.status.code(),
            Some(if deadlocked { 3 } else { 0 }),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        // Wait until the audit thread has queued behind the cycle too.
        if held["deadlocks"][0]["blocked"]
            .as_array()
            .is_some_and(|b| !b.is_empty())
        {
            break held;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no deadlock seen by `held`: {held}"
        );
    };
    // The daemon checks about once a second.
    thread::sleep(Duration::from_millis(1500));
    let output = tracer.stop();
    target.child.kill().unwrap();
    target.child.wait().unwrap();
    assert!(output.status.success(), "{}", output.stderr);
    assert!(
        output.stderr.contains("DEADLOCK IN PROGRESS"),
        "{}",
        output.stderr
    );

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    for (source, deadlocks) in [
        ("report", &report["deadlocks"]),
        ("held", &held["deadlocks"]),
    ] {
        let deadlocks = deadlocks.as_array().unwrap();
        assert_eq!(deadlocks.len(), 1, "{source}: {deadlocks:?}");
        let tasks = deadlocks[0]["tasks"].as_array().unwrap();
        assert_eq!(tasks.len(), 2, "{source}: {tasks:?}");
        let mut held_and_wanted: Vec<(String, String)> = tasks
            .iter()
            .map(|task| {
                let holding = task["holding"].as_array().unwrap();
                assert_eq!(holding.len(), 1, "{source}: {task}");
                (
                    holding[0].as_str().unwrap().to_string(),
                    task["waiting_for"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        held_and_wanted.sort();
        // Each holds what the other wants.
        assert_eq!(
            held_and_wanted[0].0, held_and_wanted[1].1,
            "{source}: {held_and_wanted:?}"
        );
        assert_eq!(
            held_and_wanted[1].0, held_and_wanted[0].1,
            "{source}: {held_and_wanted:?}"
        );
        for task in tasks {
            let stack: Vec<&str> = task["stack"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|f| f.as_str())
                .collect();
            assert!(
                stack
                    .iter()
                    .any(|frame| frame.contains("pthread_mutex_lock")),
                "{source}: {stack:?}"
            );
            assert!(
                stack
                    .iter()
                    .any(|frame| frame.starts_with("first") || frame.starts_with("second")),
                "{source}: unsymbolized program frames: {stack:?}"
            );
        }
        let blocked = deadlocks[0]["blocked"].as_array().unwrap();
        assert_eq!(
            blocked.len(),
            1,
            "{source}: the audit thread is blocked behind the cycle: {blocked:?}"
        );
        let in_cycle: Vec<&serde_json::Value> = tasks.iter().map(|t| &t["tid"]).collect();
        assert!(!in_cycle.contains(&&blocked[0]["tid"]), "{source}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
