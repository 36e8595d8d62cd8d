//! A real deadlock among the instances of one user-space class (the five philosophers, their
//! chopsticks an array initialised in a loop): `locktrace held` names the instance each task
//! holds and wants, not only their common class. Its own test binary: `held` reads the most
//! recently started trace, so no other test's tracer may run beside it.
mod common;

use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use common::{assert_root, compile, scratch_dir, Target, Tracer};

#[test]
fn a_deadlock_among_instances_of_one_class_names_each_instance() {
    assert_root();
    let dir = scratch_dir("instances-deadlock");
    let binary = compile(&dir, "lock_array", None);
    let mut target = Target::start(&binary, &["deadlock"]);
    let tracer = Tracer::start(&["--user", "--pid", &target.pid]);
    target.release();
    // `locktrace held` reads the running trace's state; poll until all five wait.
    let started = Instant::now();
    let (held, text) = loop {
        thread::sleep(Duration::from_millis(500));
        let run = |args: &[&str]| {
            let output = Command::new(env!("CARGO_BIN_EXE_locktrace"))
                .args(args)
                .output()
                .unwrap();
            // 0, or 3 once the deadlock is in progress.
            assert!(
                matches!(output.status.code(), Some(0 | 3)),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8(output.stdout).unwrap()
        };
        let held: serde_json::Value = serde_json::from_str(&run(&["held", "--json"])).unwrap();
        if held["deadlocks"][0]["tasks"]
            .as_array()
            .is_some_and(|tasks| tasks.len() == 5)
        {
            break (held, run(&["held"]));
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no five-task deadlock seen by `held`: {held}"
        );
    };
    let output = tracer.stop();
    target.child.kill().unwrap();
    target.child.wait().unwrap();
    assert!(output.status.success(), "{}", output.stderr);
    let mut held_and_wanted: Vec<(String, String)> = held["deadlocks"][0]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|task| {
            let holding = task["holding"].as_array().unwrap();
            assert_eq!(holding.len(), 1, "{task}");
            (
                holding[0].as_str().unwrap().to_string(),
                task["waiting_for"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    held_and_wanted.sort();
    let expected: Vec<(String, String)> = (0..5)
        .map(|i| (format!("chop[{i}]"), format!("chop[{}]", (i + 1) % 5)))
        .collect();
    assert_eq!(held_and_wanted, expected, "{held}");
    // The table says which instance of which class.
    assert!(text.contains("chop[3] of class init@set_table+"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}
