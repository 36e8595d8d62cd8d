//! What scripts rely on, without privileges: `diff` exits 3 when a new unguarded cycle
//! appears (and says so in `--json`), `-` is standard output, a recording cut at its end
//! replays what it holds with a note, a device or FIFO given as output is written in
//! place (not replaced by a regular file).
mod common;

use std::{
    os::unix::fs::FileTypeExt as _,
    process::{Command, Output},
};

use common::scratch_dir;

fn locktrace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_locktrace"))
        .args(args)
        .output()
        .unwrap()
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

const ORDERED: &str = "{\"type\":\"dep\",\"held\":\"a\",\"new\":\"b\"}\n";
const INVERTED: &str = "{\"type\":\"dep\",\"held\":\"b\",\"new\":\"a\"}\n";
const GUARDED: &str = "{\"type\":\"dep\",\"held\":\"b\",\"new\":\"a\",\"guard\":\"g\"}\n\
                       {\"type\":\"dep\",\"held\":\"a\",\"new\":\"b\",\"guard\":\"g\"}\n";

#[test]
fn diff_exits_3_only_for_a_new_unguarded_cycle() {
    let dir = scratch_dir("diff-exit");
    let old = write(&dir, "old.jsonl", ORDERED);
    let cycle = write(&dir, "cycle.jsonl", &format!("{ORDERED}{INVERTED}"));
    let guarded = write(&dir, "guarded.jsonl", GUARDED);

    let found = locktrace(&["diff", &old, &cycle]);
    assert_eq!(found.status.code(), Some(3), "{found:?}");
    assert!(String::from_utf8_lossy(&found.stdout).contains("+ dependency b -> a"));

    let json = locktrace(&["diff", "--json", &old, &cycle]);
    assert_eq!(json.status.code(), Some(3));
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["schema"], 1);
    assert_eq!(value["new_dependencies"][0]["held"], "b");
    assert_eq!(value["new_cycles"].as_array().unwrap().len(), 1);
    assert!(value["new_cycles"][0]["guarded_by"].is_null());

    // The same cycle again is not new; a guarded one is no possible deadlock.
    assert_eq!(locktrace(&["diff", &cycle, &cycle]).status.code(), Some(0));
    let guarded_diff = locktrace(&["diff", "--json", &old, &guarded]);
    assert_eq!(guarded_diff.status.code(), Some(0), "{guarded_diff:?}");
    let value: serde_json::Value = serde_json::from_slice(&guarded_diff.stdout).unwrap();
    assert_eq!(value["new_cycles"][0]["guarded_by"], "g");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn dash_is_standard_output_and_files_carry_the_schema() {
    let dir = scratch_dir("dash-stdout");
    let cycle = write(&dir, "cycle.jsonl", &format!("{ORDERED}{INVERTED}"));
    let report = locktrace(&[
        "report",
        &cycle,
        "--report-json",
        "-",
        "--report-text",
        "/dev/null",
    ]);
    assert_eq!(report.status.code(), Some(0), "{report:?}");
    let value: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(value["schema"], 1);
    assert_eq!(value["cycles"].as_array().unwrap().len(), 1);
    // Run as root, a rename over /dev/null would have made it a regular file.
    let null = std::fs::symlink_metadata("/dev/null").unwrap();
    assert!(null.file_type().is_char_device(), "/dev/null was replaced");

    let merged = locktrace(&["merge", &cycle, &cycle, "-o", "-"]);
    assert!(merged.status.success(), "{merged:?}");
    let value: serde_json::Value = serde_json::from_slice(&merged.stdout).unwrap();
    assert_eq!(value["edges"].as_array().unwrap().len(), 2);

    // A snapshot from a newer locktrace is refused, not misread.
    let newer = write(
        &dir,
        "newer.json",
        "{\"schema\":99,\"classes\":[],\"edges\":[],\"cycles\":[],\"recursive\":[],\"stats\":{}}",
    );
    let refused = locktrace(&["report", &newer]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("newer"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_recording_cut_at_its_end_replays_with_a_note() {
    let dir = scratch_dir("cut-recording");
    let cut = format!("{ORDERED}{INVERTED}{}", &ORDERED[..20]);
    let path = write(&dir, "cut.jsonl", &cut);
    let report = locktrace(&[
        "report",
        &path,
        "--report-json",
        "-",
        "--report-text",
        "/dev/null",
    ]);
    assert_eq!(report.status.code(), Some(0), "{report:?}");
    assert!(String::from_utf8_lossy(&report.stderr).contains("cut short"));
    let value: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(value["cycles"].as_array().unwrap().len(), 1);
    assert_eq!(value["stats"]["truncated_records"], 1);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_fifo_given_as_output_is_written_through_and_stays_a_fifo() {
    let dir = scratch_dir("fifo-output");
    let cycle = write(&dir, "cycle.jsonl", &format!("{ORDERED}{INVERTED}"));
    let fifo = dir.join("report.fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    let report = locktrace(&["report", &cycle, "--report-json", fifo.to_str().unwrap()]);
    assert_eq!(report.status.code(), Some(0), "{report:?}");
    let meta = std::fs::symlink_metadata(&fifo).unwrap();
    assert!(
        meta.file_type().is_fifo(),
        "the FIFO was replaced: {meta:?}"
    );
    // Should locktrace not have opened it, this gives the reader its end of file.
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo);
    }
    let value: serde_json::Value = serde_json::from_str(&reader.join().unwrap()).unwrap();
    assert_eq!(value["cycles"].as_array().unwrap().len(), 1);
    std::fs::remove_dir_all(&dir).ok();
}
