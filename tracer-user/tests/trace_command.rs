//! `locktrace trace --user -- COMMAND`: the command is started held until the probes are in
//! place, it and everything it forks are traced from their first lock operation (and
//! nothing else), the tracer stops when it exits and exits with its status. A process that
//! lives a few milliseconds still gets every class and frame symbolized, and stacks end at
//! the last frame inside an executable mapping.
mod common;

use std::{
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::{assert_root, compile, edge_pairs, scratch_dir};

fn locktrace(args: &[&str]) -> Output {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_locktrace"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    // Never a hang: the command's exit ends the trace.
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "locktrace {args:?} took {:?}",
        started.elapsed()
    );
    output
}

/// `trace --user --report-json DIR/report.json EXTRA -- COMMAND`: its output and the report.
fn trace_command(dir: &Path, extra: &[&str], command: &[&str]) -> (Output, serde_json::Value) {
    let json_path = dir.join("report.json");
    let mut args = vec![
        "trace",
        "--user",
        "--report-json",
        json_path.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.push("--");
    args.extend_from_slice(command);
    let output = locktrace(&args);
    let report = match std::fs::read_to_string(&json_path) {
        Ok(text) => serde_json::from_str(&text).unwrap(),
        Err(err) => panic!(
            "no report ({err}); locktrace said:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ),
    };
    (output, report)
}

/// Unguarded cycles, each as its sorted class names.
fn cycles(report: &serde_json::Value) -> Vec<Vec<String>> {
    let mut found: Vec<Vec<String>> = report["cycles"]
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
            names.sort();
            names
        })
        .collect();
    found.sort();
    found
}

fn expected_cycles() -> Vec<Vec<String>> {
    let mut expected = vec![
        vec!["lock_a".to_string(), "lock_b".to_string()],
        vec!["init@make_pair+0x23".to_string(), "lock_c".to_string()],
    ];
    for cycle in &mut expected {
        cycle.sort();
    }
    expected.sort();
    expected
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_process_living_milliseconds_is_traced_whole_and_symbolized_and_its_status_kept() {
    assert_root();
    let dir = scratch_dir("command-short");
    let binary = compile(&dir, "short_lived", None);
    let (output, report) = trace_command(&dir, &[], &[binary.to_str().unwrap(), "abba", "7"]);
    assert_eq!(output.status.code(), Some(7), "{}", stderr(&output));
    // Both inversions, every class by its symbol or its init site in the binary (none left
    // as a bare address: the maps were read while the process lived).
    assert_eq!(
        cycles(&report),
        expected_cycles_loose(&report),
        "{}",
        stderr(&output)
    );
    for class in report["classes"].as_array().unwrap() {
        let name = class["name"].as_str().unwrap();
        assert!(!name.contains("@0x"), "unsymbolized class {name}");
    }
    // Every frame of every stack symbolized; the nesting called over a garbage frame
    // pointer ends at its last real frame.
    let mut saw_garbage_caller = false;
    for edge in report["edges"].as_array().unwrap() {
        for key in ["held_stack", "new_stack"] {
            let frames = edge[key].as_array().unwrap();
            assert!(!frames.is_empty(), "{edge}");
            for frame in frames {
                assert!(
                    frame["symbol"].is_string(),
                    "unsymbolized frame in {edge:#}"
                );
            }
            let last = frames.last().unwrap()["symbol"].as_str().unwrap();
            if edge["from"] == "lock_a" && edge["to"] == "lock_d" {
                saw_garbage_caller = true;
                assert_eq!(last, "call_over_garbage", "{edge:#}");
            }
        }
    }
    assert!(saw_garbage_caller, "no lock_a -> lock_d edge: {report:#}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn children_are_traced_and_fail_on_cycle_wins_over_the_status() {
    assert_root();
    let dir = scratch_dir("command-fork");
    let binary = compile(&dir, "short_lived", None);
    // The locks are taken in a forked child; the parent exits with its status.
    let (output, report) = trace_command(&dir, &[], &[binary.to_str().unwrap(), "fork", "5"]);
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    assert_eq!(cycles(&report), expected_cycles_loose(&report));
    // Through a shell that forks it; --fail-on-cycle turns the cycle into status 3.
    let script = format!("{} abba 0; exit 4", binary.display());
    let (output, report) = trace_command(&dir, &["--fail-on-cycle"], &["sh", "-c", &script]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert_eq!(cycles(&report).len(), 2, "{report:#}");
    // Without a cycle the shell's own status comes through.
    let script = format!("{} none 0; exit 4", binary.display());
    let (output, report) = trace_command(&dir, &["--fail-on-cycle"], &["sh", "-c", &script]);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(cycles(&report).is_empty(), "{report:#}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The cycles of the fork run are those of the in-process run (the init site's offset
/// is the same binary's).
fn expected_cycles_loose(report: &serde_json::Value) -> Vec<Vec<String>> {
    let found = cycles(report);
    assert_eq!(found.len(), 2, "{report:#}");
    let init = found
        .iter()
        .flatten()
        .find(|name| name.starts_with("init@make_pair+"))
        .cloned()
        .unwrap_or_else(|| panic!("no make_pair class: {report:#}"));
    let mut expected = expected_cycles();
    for cycle in &mut expected {
        for name in cycle.iter_mut() {
            if name.starts_with("init@make_pair+") {
                name.clone_from(&init);
            }
        }
        cycle.sort();
    }
    expected.sort();
    expected
}

#[test]
fn processes_outside_the_command_tree_are_not_traced() {
    assert_root();
    let dir = scratch_dir("command-tree");
    let binary = compile(&dir, "short_lived", None);
    // Another process inverting its own two locks the whole time.
    let outsider = compile(
        &dir,
        "outsider",
        Some(
            "#include <pthread.h>\n#include <unistd.h>\n\
             pthread_mutex_t outside_x = PTHREAD_MUTEX_INITIALIZER;\n\
             pthread_mutex_t outside_y = PTHREAD_MUTEX_INITIALIZER;\n\
             int main(void) { for (int i = 0; i < 400; i++) {\n\
               pthread_mutex_lock(&outside_x); pthread_mutex_lock(&outside_y);\n\
               pthread_mutex_unlock(&outside_y); pthread_mutex_unlock(&outside_x);\n\
               pthread_mutex_lock(&outside_y); pthread_mutex_lock(&outside_x);\n\
               pthread_mutex_unlock(&outside_x); pthread_mutex_unlock(&outside_y);\n\
               usleep(10000); } return 0; }\n",
        ),
    );
    let mut outside = Command::new(&outsider).spawn().unwrap();
    let script = format!("sleep 1; {} abba 0", binary.display());
    let (output, report) = trace_command(&dir, &[], &["sh", "-c", &script]);
    let _ = outside.kill();
    let _ = outside.wait();
    assert!(output.status.success(), "{}", stderr(&output));
    let pairs: Vec<(String, String)> = edge_pairs(&report);
    assert!(
        pairs
            .iter()
            .all(|(from, to)| !from.starts_with("outside_") && !to.starts_with("outside_")),
        "the outsider was traced: {pairs:?}"
    );
    assert_eq!(cycles(&report), expected_cycles_loose(&report));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_command_killed_by_a_signal_exits_128_plus_the_signal() {
    assert_root();
    let dir = scratch_dir("command-killed");
    let (output, _) = trace_command(&dir, &[], &["sh", "-c", "kill -9 $$"]);
    assert_eq!(output.status.code(), Some(128 + 9), "{}", stderr(&output));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_command_that_cannot_run_or_conflicting_options_are_one_line_errors() {
    assert_root();
    let output = locktrace(&["trace", "--user", "--", "/nonexistent/program"]);
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert_eq!(text.trim_end().lines().count(), 1, "{text}");
    assert!(
        text.contains("/nonexistent/program") && text.contains("No such file"),
        "{text}"
    );
    for conflicting in [["--pid", "1"], ["--duration", "5"]] {
        let mut args = vec!["trace", "--user"];
        args.extend_from_slice(&conflicting);
        args.extend_from_slice(&["--", "true"]);
        let output = locktrace(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(stderr(&output).contains("cannot be used with"), "{args:?}");
    }
}
