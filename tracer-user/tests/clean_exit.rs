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

/// Ids of the BPF programs a process holds file descriptors of (`prog_id:` in fdinfo):
/// exactly its own, whatever else loads programs on this machine meanwhile.
fn program_ids_held_by(pid: u32) -> BTreeSet<u32> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return BTreeSet::new();
    };
    fds.filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_to_string(fd.path()).ok())
        .flat_map(|info| {
            info.lines()
                .filter_map(|line| line.strip_prefix("prog_id:")?.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Ids of every loaded program.
fn loaded_program_ids() -> BTreeSet<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|program| program.id())
        .collect()
}

/// Starts a tracer, stops it with `signal`, returns the ids of its programs still loaded.
fn programs_left_after(signal: i32) -> BTreeSet<u32> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_locktrace"))
        .args(["trace", "--user"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = wait_for_stderr(&mut child, "locktrace: attached");
    let its_programs = program_ids_held_by(child.id());
    assert!(
        !its_programs.is_empty(),
        "the tracer's programs should be loaded while it runs"
    );
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
    // Program ids are never reused: one still loaded is one of the tracer's.
    loaded_program_ids()
        .intersection(&its_programs)
        .copied()
        .collect()
}

#[test]
fn every_program_is_gone_after_sigint_sigterm_and_sigkill() {
    assert_root();
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGKILL] {
        let left = programs_left_after(signal);
        assert!(
            left.is_empty(),
            "programs {left:?} left after signal {signal}"
        );
    }
}
