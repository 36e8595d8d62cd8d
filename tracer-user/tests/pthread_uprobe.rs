//! End to end on the running kernel: load the real eBPF object, attach uprobes to libc's
//! pthread functions, run a program that takes a mutex, and check the daemon received the
//! matching acquire/acquired/release events. Needs root (CI runs as root).
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

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

fn compile(dir: &Path) -> PathBuf {
    let source = dir.join("one_mutex.c");
    let binary = dir.join("one_mutex");
    std::fs::write(&source, PROGRAM).unwrap();
    let status = Command::new("gcc")
        .args(["-O1", "-pthread", "-o"])
        .arg(&binary)
        .arg(&source)
        .status()
        .expect("gcc must be installed");
    assert!(status.success(), "gcc failed");
    binary
}

/// Reads `child`'s stderr until a line contains `needle`; returns everything read.
fn wait_for_stderr(child: &mut Child, needle: &'static str) -> String {
    let stderr = child.stderr.take().unwrap();
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let mut seen = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains(needle) {
                let _ = sender.send(Ok(seen.clone()));
            }
        }
        let _ = sender.send(Err(seen));
    });
    match receiver.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(seen)) => seen,
        Ok(Err(seen)) => panic!("locktrace exited before '{needle}':\n{seen}"),
        Err(_) => panic!("timed out waiting for '{needle}'"),
    }
}

#[test]
fn pthread_mutex_lock_and_unlock_reach_the_daemon() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test loads eBPF programs: run it as root");
    let dir = std::env::temp_dir().join(format!("locktrace-uprobe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let binary = compile(&dir);

    let mut program = Command::new(&binary)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first_line = String::new();
    BufReader::new(program.stdout.as_mut().unwrap()).read_line(&mut first_line).unwrap();
    let fields: Vec<&str> = first_line.split_whitespace().collect();
    let (pid, tid, lock) = (fields[0], fields[1], fields[2].to_string());

    let mut tracer = Command::new(env!("CARGO_BIN_EXE_locktrace"))
        .args(["trace", "--user", "--events", "--pid", pid])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_stderr(&mut tracer, "locktrace: attached");

    program.stdin.as_mut().unwrap().write_all(b"g").unwrap();
    assert!(program.wait().unwrap().success());
    thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    let mut output = String::new();
    tracer.stdout.take().unwrap().read_to_string(&mut output).unwrap();
    assert!(tracer.wait().unwrap().success());

    let ops: Vec<serde_json::Value> = output
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .filter(|event: &serde_json::Value| event["lock"] == lock.as_str())
        .collect();
    let names: Vec<&str> = ops.iter().map(|event| event["op"].as_str().unwrap()).collect();
    assert_eq!(names, ["acquire", "acquired", "release"], "events for {lock}: {output}");
    for event in &ops {
        assert_eq!(event["tid"].to_string(), tid);
        assert_eq!(event["pid"].to_string(), pid);
        assert_eq!(event["kind"], "pthread_mutex");
    }
    std::fs::remove_dir_all(&dir).ok();
}
