//! End to end on the running kernel: load the real eBPF object, attach uprobes to libc's
//! pthread functions, run a program that takes a mutex, and check the daemon received the
//! matching acquire/acquired/release events. Needs root (CI runs as root).
mod common;

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
};

use common::{assert_root, compile, scratch_dir, Tracer};

const PROGRAM: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/syscall.h>
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
int main(void) {
    printf("%d %ld %p\n", getpid(), (long)syscall(SYS_gettid), (void *)&lock);
    fflush(stdout);
    char go;
    if (read(0, &go, 1) != 1) return 2;
    pthread_mutex_lock(&lock);
    pthread_mutex_unlock(&lock);
    return 0;
}
"#;

#[test]
fn pthread_mutex_lock_and_unlock_reach_the_daemon() {
    assert_root();
    let dir = scratch_dir("uprobe");
    let binary = compile(&dir, "one_mutex", Some(PROGRAM));

    let mut program = Command::new(&binary)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first_line = String::new();
    BufReader::new(program.stdout.as_mut().unwrap())
        .read_line(&mut first_line)
        .unwrap();
    let fields: Vec<&str> = first_line.split_whitespace().collect();
    let (pid, tid, lock) = (fields[0], fields[1], fields[2].to_string());

    let tracer = Tracer::start(&["--user", "--events", "--pid", pid]);
    program.stdin.as_mut().unwrap().write_all(b"g").unwrap();
    assert!(program.wait().unwrap().success());
    let output = tracer.stop();
    assert!(output.status.success(), "{}", output.stderr);

    let ops: Vec<serde_json::Value> = output
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .filter(|event: &serde_json::Value| event["lock"] == lock.as_str())
        .collect();
    let names: Vec<&str> = ops
        .iter()
        .map(|event| event["op"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["acquire", "acquired", "release"],
        "events for {lock}: {}",
        output.stdout
    );
    for event in &ops {
        assert_eq!(event["tid"].to_string(), tid);
        assert_eq!(event["pid"].to_string(), pid);
        assert_eq!(event["kind"], "pthread_mutex");
    }
    std::fs::remove_dir_all(&dir).ok();
}
