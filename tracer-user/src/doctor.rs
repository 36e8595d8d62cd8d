//! `locktrace doctor`: what this kernel allows, and what `trace` will therefore attach.
use std::process::ExitCode;

use anyhow::Result;

use crate::{bpf, capabilities};

pub fn run() -> Result<ExitCode> {
    let mut load_error = None;
    let mut ebpf = if capabilities::privileges().available {
        match bpf::load(&bpf::LoadOptions::default()) {
            Ok(ebpf) => Some(ebpf),
            Err(err) => {
                load_error = Some(format!("{err:#}"));
                None
            }
        }
    } else {
        None
    };
    let caps = capabilities::probe(ebpf.as_mut());
    println!("locktrace doctor: kernel {}", kernel_release());
    for cap in caps.all() {
        let mark = if cap.available { "yes" } else { "no " };
        println!("  {mark}  {:<12} {}", cap.name, cap.detail);
    }
    if let Some(err) = load_error {
        println!("  no   eBPF object: {err}");
    }
    println!();
    let kernel_mode = if caps.fentry.available {
        "kernel locks: fentry/fexit probes"
    } else if caps.kprobes.available {
        "kernel locks: kprobe/kretprobe fallback (fentry unavailable)"
    } else {
        "kernel locks: NOT traceable here (neither fentry nor kprobes work)"
    };
    let user_mode = if caps.uprobes.available {
        "user locks (--user): uprobes on pthread functions"
    } else {
        "user locks: NOT traceable here (no uprobes)"
    };
    println!("  => {kernel_mode}");
    println!("  => {user_mode}");
    Ok(ExitCode::SUCCESS)
}

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|release| release.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
