//! Bad input never crashes: bad CLI values, corrupt recordings, malformed lockdep logs,
//! unwritable output paths and missing privileges each give one clear error line and a
//! non-zero exit status — never a panic or a hang.
mod common;

use std::{
    io::Write as _,
    process::{Command, Output, Stdio},
};

use common::scratch_dir;

fn locktrace(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_locktrace"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or_default()).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// Exit status `code`, and an error (not a panic) whose first line contains `needle`.
fn assert_clean_failure(output: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.contains(needle),
        "expected '{needle}' in the first line of: {stderr}"
    );
}

#[test]
fn bad_cli_values_are_rejected_with_the_value_named() {
    let cases: &[(&[&str], &str)] = &[
        (&["trace", "--ringbuf-kib", "3"], "3"),
        (&["trace", "--ringbuf-kib", "lots"], "lots"),
        (&["trace", "--pid", "0"], "0"),
        (&["trace", "--pid", "-5"], "-5"),
        (&["trace", "--attach", "magic"], "magic"),
        (
            &["trace", "--map-capacity", "held-tasks"],
            "is not MAP=ENTRIES",
        ),
        (
            &["trace", "--map-capacity", "stacks=100"],
            "no map 'stacks'",
        ),
        (&["trace", "--map-capacity", "held-tasks=many"], "'many'"),
        (
            &["trace", "--map-capacity", "held-tasks=8"],
            "16 to 16777216",
        ),
        (
            &[
                "trace",
                "--snapshot-interval",
                "0",
                "--snapshot-dir",
                "/tmp",
            ],
            "0",
        ),
        (&["export", "x.json", "--format", "png"], "png"),
        (&["no-such-command"], "no-such-command"),
    ];
    for (args, needle) in cases {
        let output = locktrace(args, None);
        assert_clean_failure(&output, 2, needle);
    }
}

#[test]
fn corrupt_and_truncated_recordings_name_the_line() {
    let dir = scratch_dir("bad-recordings");
    let cases: &[(&str, &[u8], &str)] = &[
        (
            // Cut mid-file is corruption (a cut at the end is a crash: see offline_scripting).
            "corrupt.jsonl",
            b"{\"type\":\"dep\",\"held\":\"a\",\"new\":\"b\"}\n{\"type\":\"dep\",\"held\":\"a\"\n{}\n",
            "line 2",
        ),
        ("unknown.jsonl", b"{\"type\":\"teleport\"}\n", "line 1"),
        ("binary.jsonl", b"{\"type\":\x00\xff\xfe garbage\n", "UTF-8"),
        ("empty.jsonl", b"", "empty"),
        ("snapshot.json", b"{\"classes\": [", "snapshot"),
    ];
    for (name, contents, needle) in cases {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        let output = locktrace(&["report", path.to_str().unwrap()], None);
        assert_clean_failure(&output, 1, needle);
    }
    let missing = locktrace(&["report", "/nonexistent/trace.jsonl"], None);
    assert_clean_failure(&missing, 1, "/nonexistent/trace.jsonl");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_cut_lockdep_log_is_a_note_naming_the_line_and_noise_an_error() {
    let splat = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../lockgraph/tests/data/nouveau-lockdep-splat.txt"
    ))
    .unwrap();
    let cut: String = splat
        .lines()
        .take(25)
        .map(|line| format!("{line}\n"))
        .collect();
    // What the cut report holds is imported; the note names the line it ends at.
    let output = locktrace(&["import-lockdep", "-"], Some(cut.as_bytes()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let note = stderr
        .lines()
        .find(|line| line.starts_with("locktrace: -: line 25: "))
        .unwrap_or_else(|| panic!("no note naming line 25: {stderr}"));
    assert!(note.contains("imported in part"), "{note}");
    let output = locktrace(&["import-lockdep", "-"], Some(b"just some dmesg noise\n"));
    assert_clean_failure(&output, 1, "no lockdep report found");
}

#[test]
fn unwritable_output_paths_fail_before_any_work() {
    let dir = scratch_dir("bad-outputs");
    let trace = dir.join("t.jsonl");
    std::fs::write(&trace, "{\"type\":\"dep\",\"held\":\"a\",\"new\":\"b\"}\n").unwrap();
    let output = locktrace(
        &[
            "report",
            trace.to_str().unwrap(),
            "--report-json",
            "/proc/locktrace/r.json",
        ],
        None,
    );
    assert_clean_failure(&output, 1, "/proc/locktrace/r.json");
    let output = locktrace(
        &[
            "export",
            trace.to_str().unwrap(),
            "--format",
            "dot",
            "-o",
            "/proc/locktrace/g.dot",
        ],
        None,
    );
    assert_clean_failure(&output, 1, "/proc/locktrace/g.dot");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn tracing_without_privileges_is_one_line_and_non_zero() {
    // Drop to nobody with no capabilities (setpriv from util-linux).
    let output = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_locktrace"))
        .args(["trace", "--user"])
        .output()
        .expect("setpriv (util-linux) must be installed");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("needs root or CAP_BPF + CAP_PERFMON"),
        "{stderr}"
    );
}

#[test]
fn proc_lockdep_imports_and_bad_input_is_a_numbered_error() {
    let proc_lockdep = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../lockgraph/tests/data/lockdep-corpus/proc-lockdep-prove-locking.txt"
    );
    let output = locktrace(&["import-lockdep", "--proc-lockdep", proc_lockdep], None);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("33 dependencies"), "{stdout}");
    let output = locktrace(
        &["import-lockdep", "--proc-lockdep", "-"],
        Some(b"all lock classes:\n -> [ffff] orphan\n"),
    );
    assert_clean_failure(&output, 1, "line 2");
}
