//! `pthread_mutex_lock` has no return probe (its task's next lock operation shows it
//! returned), so a thread that took a lock and then does something else — here it sleeps
//! holding it — must still be shown holding it, and a thread blocked on that lock as waiting
//! for it behind the holder: `held` tells them apart by what each thread is doing. The only
//! test of its binary: `held` reads the newest running trace, which must be this one.
mod common;

use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use common::{assert_root, compile, scratch_dir, Target, Tracer};

const HOLDER_AT_WORK: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

pthread_mutex_t guard = PTHREAD_MUTEX_INITIALIZER;

static void *holder(void *arg) {
    (void)arg;
    pthread_mutex_lock(&guard);
    sleep(60); /* holds the lock, makes no other lock operation */
    pthread_mutex_unlock(&guard);
    return NULL;
}

static void *waiter(void *arg) {
    (void)arg;
    pthread_mutex_lock(&guard);
    pthread_mutex_unlock(&guard);
    return NULL;
}

int main(void) {
    printf("%d\n", getpid());
    fflush(stdout);
    char byte;
    if (read(0, &byte, 1) != 1)
        return 1;
    pthread_t threads[2];
    pthread_create(&threads[0], NULL, holder, NULL);
    usleep(200 * 1000);
    pthread_create(&threads[1], NULL, waiter, NULL);
    pthread_join(threads[0], NULL);
    pthread_join(threads[1], NULL);
    return 0;
}
"#;

#[test]
fn a_holder_at_work_is_holding_and_its_waiter_waits_behind_it() {
    assert_root();
    let dir = scratch_dir("holder-at-work");
    let binary = compile(&dir, "holder_at_work", Some(HOLDER_AT_WORK));
    let mut target = Target::start(&binary, &[]);
    let tracer = Tracer::start(&["--user", "--pid", &target.pid]);
    target.release();
    let started = Instant::now();
    let held = loop {
        thread::sleep(Duration::from_millis(500));
        let output = Command::new(env!("CARGO_BIN_EXE_locktrace"))
            .args(["held", "--json"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        let held: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        if held["tasks"]
            .as_array()
            .is_some_and(|tasks| tasks.len() == 2)
        {
            break held;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the two threads never showed: {held}"
        );
    };
    let tasks = held["tasks"].as_array().unwrap();
    let holder = tasks
        .iter()
        .find(|task| task["waiting_for"].is_null())
        .unwrap_or_else(|| panic!("no task holding without waiting: {held:#}"));
    let holding: Vec<&str> = holder["holding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|lock| lock["class"].as_str().unwrap())
        .collect();
    assert_eq!(holding, ["guard"], "{held:#}");
    let waiter = tasks
        .iter()
        .find(|task| !task["waiting_for"].is_null())
        .unwrap_or_else(|| panic!("no waiting task: {held:#}"));
    assert_eq!(waiter["waiting_for"]["class"], "guard", "{held:#}");
    assert!(waiter["holding"].as_array().unwrap().is_empty(), "{held:#}");
    assert_eq!(
        waiter["waiting_on"],
        serde_json::json!([holder["tid"]]),
        "{held:#}"
    );
    assert!(held["deadlocks"].as_array().unwrap().is_empty(), "{held:#}");
    target.child.kill().unwrap();
    target.child.wait().unwrap();
    let output = tracer.stop();
    assert!(output.status.success(), "{}", output.stderr);
    std::fs::remove_dir_all(&dir).ok();
}
