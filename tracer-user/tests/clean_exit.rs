//! Clean exit: no BPF program outlives the tracer, whether it is stopped with SIGINT or
//! SIGTERM (final report written, "detached") or killed with SIGKILL (nothing is pinned, so
//! closing its file descriptors detaches everything).
mod common;

use std::{
    collections::BTreeSet,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use common::{assert_root, wait_for_stderr};

/// Names (as the kernel truncates them, 15 bytes) of the programs of our object.
fn our_program_names() -> BTreeSet<String> {
    ["pthread_mutex_l", "pthread_acquire", "pthread_rwlock_", "sched_process_e"].iter().map(|s| s.to_string()).collect()
}

/// Ids of loaded programs that carry our programs' names.
fn tracer_program_ids() -> BTreeSet<u32> {
    let ours = our_program_names();
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|program| program.name_as_str().is_some_and(|name| ours.iter().any(|ours| name.starts_with(ours.as_str()))))
        .map(|program| program.id())
        .collect()
}

/// Starts a tracer, stops it with `signal`, returns the ids of its programs still loaded.
fn programs_left_after(signal: i32) -> BTreeSet<u32> {
    let before = tracer_program_ids();
    let mut child = Command::new(env!("CARGO_BIN_EXE_locktrace"))
        .args(["trace", "--user"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = wait_for_stderr(&mut child, "locktrace: attached");
    // Program ids are never reused, so the new ones are this tracer's.
    let its_programs: BTreeSet<u32> = tracer_program_ids().difference(&before).copied().collect();
    assert!(!its_programs.is_empty(), "the tracer's programs should be loaded while it runs");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, signal) };
    let status = child.wait().unwrap();
    let stderr = stderr.join().unwrap();
    if signal != libc::SIGKILL {
        assert!(status.success(), "{stderr}");
        assert!(stderr.contains("locktrace: detached"), "{stderr}");
    }
    // Program release after the last fd closes is immediate, but give the kernel a moment.
    thread::sleep(Duration::from_millis(200));
    tracer_program_ids().intersection(&its_programs).copied().collect()
}

#[test]
fn every_program_is_gone_after_sigint_sigterm_and_sigkill() {
    assert_root();
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGKILL] {
        let left = programs_left_after(signal);
        assert!(left.is_empty(), "programs {left:?} left after signal {signal}");
    }
}
