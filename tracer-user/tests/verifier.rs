//! Verifier regression test on the host kernel: load every kprobe/kretprobe, uprobe/
//! uretprobe, tracepoint and BTF raw tracepoint program of the real eBPF object
//! (`locktrace doctor` with the hidden `LOCKTRACE_DOCTOR_LOAD_ALL=1` hook) and fail on any
//! rejection.
//!
//! kprobe-type programs load on this host although kprobes cannot *attach* here
//! (CONFIG_KPROBES is off): loading only needs the BPF syscall and the verifier. fentry/
//! fexit programs cannot be checked here: their load fails with EPERM (no BPF trampolines on
//! this host), or "unknown BTF type" for lockdep-only functions; they are verified by the VM
//! runs (`cargo xtask vm --kernel 6.1|6.12 ... --tracer-args "--attach fentry"`), where the
//! Debian kernels load and attach them. Needs root (CI runs as root).
mod common;

use std::process::Command;

use common::assert_root;

#[test]
fn every_non_trampoline_program_passes_the_verifier() {
    assert_root();
    let output = Command::new(env!("CARGO_BIN_EXE_locktrace"))
        .arg("doctor")
        .env("LOCKTRACE_DOCTOR_LOAD_ALL", "1")
        .env("RUST_LOG", "warn")
        .output()
        .expect("running locktrace doctor");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "doctor failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut loaded = 0;
    let mut rejected = Vec::new();
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix("load ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (status, kind, name) = (words.next(), words.next(), words.next());
        match (status, kind) {
            (Some("ok"), _) => loaded += 1,
            (Some("FAILED"), Some("fentry" | "fexit")) => {}
            // Tracepoints this kernel does not have (kmem:kmalloc_node went in 6.1).
            (Some("FAILED"), Some("tp_btf")) if line.contains("unknown BTF type `btf_trace_") => {}
            (Some("FAILED"), _) => rejected.push(line.chars().take(2000).collect::<String>()),
            _ => {}
        }
        let _ = name;
    }
    assert!(
        rejected.is_empty(),
        "programs rejected by the verifier:\n{}",
        rejected.join("\n")
    );
    // Every family must be represented: pthread uprobes, kernel kprobes, tracepoints.
    for needle in [
        "load ok uprobe pthread_mutex_lock",
        "load ok kprobe kprobe_mutex_acquire",
        "load ok kprobe kretprobe_acquire_zero_ok",
        "load ok kprobe kprobe_mmu_notifier_register",
        "load ok tracepoint tp_kmalloc",
        "load ok tp_btf btf_kmem_cache_alloc",
        "load ok tracepoint sched_process_exit",
    ] {
        assert!(stdout.contains(needle), "missing `{needle}` in:\n{stdout}");
    }
    assert!(loaded >= 30, "only {loaded} programs loaded:\n{stdout}");
}
