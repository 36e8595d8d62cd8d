//! Command-line habits: `--tid` traces one thread only, `-d` takes the one duration syntax
//! and stops the trace by itself, `-q` silences progress lines but not warnings, `RUST_LOG`
//! chooses instead of -v/-q, short flags are the long ones.
mod common;

use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader},
    process::{Command, Output},
    time::{Duration, Instant},
};

use common::{assert_root, compile, edge_pairs, read_json, scratch_dir, Target, Tracer};

/// Two threads, each nesting two locks of its own; prints `PID TID_ONE TID_TWO`, waits for
/// a byte, then lets both threads lock, prints `done` and waits for the end of its input.
const TWO_THREADS: &str = r#"
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static pthread_mutex_t one_outer = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t one_inner = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t two_outer = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t two_inner = PTHREAD_MUTEX_INITIALIZER;
static pthread_barrier_t ready, go;
static pid_t tids[2];

static void *worker(void *arg) {
    long which = (long)arg;
    tids[which] = gettid();
    pthread_barrier_wait(&ready);
    pthread_barrier_wait(&go);
    pthread_mutex_t *outer = which ? &two_outer : &one_outer;
    pthread_mutex_t *inner = which ? &two_inner : &one_inner;
    for (int i = 0; i < 3; i++) {
        pthread_mutex_lock(outer);
        pthread_mutex_lock(inner);
        pthread_mutex_unlock(inner);
        pthread_mutex_unlock(outer);
    }
    return NULL;
}

int main(void) {
    pthread_t threads[2];
    pthread_barrier_init(&ready, NULL, 3);
    pthread_barrier_init(&go, NULL, 3);
    for (long i = 0; i < 2; i++)
        pthread_create(&threads[i], NULL, worker, (void *)i);
    pthread_barrier_wait(&ready);
    printf("%d %d %d\n", getpid(), tids[0], tids[1]);
    fflush(stdout);
    char byte;
    if (read(0, &byte, 1) != 1)
        return 1;
    pthread_barrier_wait(&go);
    for (int i = 0; i < 2; i++)
        pthread_join(threads[i], NULL);
    /* Alive until the test has its report: the locks' names are read from the process. */
    printf("done\n");
    fflush(stdout);
    while (read(0, &byte, 1) == 1)
        ;
    return 0;
}
"#;

#[test]
fn tid_traces_only_that_thread() {
    assert_root();
    let dir = scratch_dir("tid-filter");
    let binary = compile(&dir, "two_threads", Some(TWO_THREADS));
    let mut target = Target::start(&binary, &[]);
    let words: Vec<&str> = target.first_line.split_whitespace().collect();
    let thread_one = words[1].to_string();
    let json_path = dir.join("report.json");
    let tracer = Tracer::start(&[
        "--user",
        "--tid",
        &thread_one,
        "--report-json",
        json_path.to_str().unwrap(),
    ]);
    target.release();
    let mut done = String::new();
    BufReader::new(target.child.stdout.as_mut().unwrap())
        .read_line(&mut done)
        .unwrap();
    assert_eq!(done.trim(), "done");
    let output = tracer.stop();
    drop(target);
    assert!(
        output.status.success(),
        "locktrace failed:\n{}",
        output.stderr
    );
    let edges: BTreeSet<(String, String)> = edge_pairs(&read_json(&json_path));
    let expected = BTreeSet::from([("one_outer".to_string(), "one_inner".to_string())]);
    assert_eq!(edges, expected, "--tid {thread_one}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn duration_stops_the_trace_by_itself() {
    assert_root();
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_locktrace"))
        .args(["trace", "--user", "-q", "-d", "1500ms"])
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    assert!(output.status.success(), "{output:?}");
    assert!(
        elapsed >= Duration::from_millis(1500),
        "stopped after {elapsed:?}"
    );
    // -q: no progress lines ("attached", the summary).
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("attached"), "{stderr}");
    assert!(!stderr.contains("summary"), "{stderr}");
}

fn locktrace(args: &[&str], rust_log: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_locktrace"));
    command.args(args).env_remove("RUST_LOG");
    if let Some(filter) = rust_log {
        command.env("RUST_LOG", filter);
    }
    command.output().unwrap()
}

#[test]
fn quiet_keeps_warnings_and_rust_log_chooses_instead() {
    let dir = scratch_dir("quiet");
    let path = dir.join("cut.jsonl");
    // A recording cut mid-line: a warning, and the report's summary is an info line.
    std::fs::write(
        &path,
        "{\"type\":\"dep\",\"held\":\"a\",\"new\":\"b\"}\n{\"type\":\"dep\",\"he",
    )
    .unwrap();
    let path = path.to_str().unwrap();
    let merged = dir.join("merged.json");
    let merged = merged.to_str().unwrap();
    let snapshot = dir.join("snapshot.json");
    let snapshot = snapshot.to_str().unwrap();
    let report = locktrace(&["report", path, "--report-json", snapshot], None);
    assert!(report.status.success(), "{report:?}");

    let info = |output: &Output| String::from_utf8_lossy(&output.stderr).contains("merged 2");
    let warning = |output: &Output| String::from_utf8_lossy(&output.stderr).contains("cut short");
    assert!(info(&locktrace(
        &["merge", snapshot, snapshot, "-o", merged],
        None
    )));
    assert!(!info(&locktrace(
        &["-q", "merge", snapshot, snapshot, "-o", merged],
        None
    )));
    assert!(!info(&locktrace(
        &["merge", "-q", snapshot, snapshot, "-o", merged],
        None
    )));
    assert!(warning(&locktrace(&["-q", "report", path], None)));
    assert!(!warning(&locktrace(&["-qq", "report", path], None)));
    assert!(!warning(&locktrace(&["report", path], Some("error"))));
    assert!(warning(&locktrace(&["-qq", "report", path], Some("warn"))));
    let both = locktrace(&["-v", "report", "-q", path], None);
    assert_eq!(both.status.code(), Some(2), "{both:?}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn doctor_json_lists_capabilities_and_the_features_the_object_uses() {
    assert_root();
    let output = locktrace(&["doctor", "--json"], None);
    assert!(output.status.success(), "{output:?}");
    let doctor: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(doctor["schema"], 1);
    let names = |key: &str| -> BTreeSet<String> {
        doctor[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["name"].as_str().unwrap().to_string())
            .collect()
    };
    for capability in [
        "privileges",
        "btf",
        "fentry",
        "kprobes",
        "uprobes",
        "tracepoints",
    ] {
        assert!(names("capabilities").contains(capability), "{doctor}");
    }
    // This host's kernel (6.x) has every map and helper the object uses: a probe that says
    // otherwise is wrong, and so would be a trace's refusal built on it.
    let features = doctor["features"].as_array().unwrap();
    for feature in [
        "ringbuf",
        "lru_hash",
        "bpf_loop",
        "ringbuf_reserve",
        "get_stack",
    ] {
        let found = features
            .iter()
            .find(|item| item["name"] == feature)
            .unwrap_or_else(|| panic!("{feature} not probed: {doctor}"));
        assert_eq!(found["available"], true, "{found}");
    }
    assert!(doctor["object_error"].is_null(), "{doctor}");
}
