//! `locktrace doctor`: what this kernel allows, and what `trace` will therefore attach.
use std::process::ExitCode;

use anyhow::Result;
use aya::programs::Program;

use crate::{
    attach, bpf,
    capabilities::{self, Capability},
};

/// Hidden hook for the verifier test (`tracer-user/tests/verifier.rs`): with
/// `LOCKTRACE_DOCTOR_LOAD_ALL=1`, `locktrace doctor` loads every program of the object into
/// the running kernel and prints one `load ok|FAILED <kind> <program> ...` line per program.
pub const LOAD_ALL_ENV: &str = "LOCKTRACE_DOCTOR_LOAD_ALL";

/// What `doctor` found, as printed (text) or serialized (`--json`).
#[derive(Debug, serde::Serialize)]
struct DoctorReport {
    schema: u32,
    kernel: String,
    capabilities: Vec<Capability>,
    /// Maps and helpers the object needs (aya's feature probes).
    features: Vec<Capability>,
    /// Why the eBPF object did not load (None: it loaded, or no privileges to try).
    object_error: Option<String>,
    kernel_mode: &'static str,
    user_mode: &'static str,
}

pub fn run(json: bool) -> Result<ExitCode> {
    if std::env::var_os(LOAD_ALL_ENV).is_some_and(|value| value == "1") {
        return load_all();
    }
    let privileged = capabilities::privileges().available;
    let mut object_error = None;
    let mut ebpf = if privileged {
        match attach::load_object(&bpf::LoadOptions::default()) {
            Ok(ebpf) => Some(ebpf),
            Err(err) => {
                object_error = Some(format!("{err:#}"));
                None
            }
        }
    } else {
        None
    };
    let caps = capabilities::probe(ebpf.as_mut());
    let features = if privileged {
        capabilities::feature_probes()
    } else {
        Vec::new()
    };
    let report = DoctorReport {
        schema: lockgraph::SCHEMA_VERSION,
        kernel: kernel_release(),
        capabilities: caps.all().into_iter().cloned().collect(),
        features,
        object_error,
        kernel_mode: if caps.fentry.available {
            "kernel locks: fentry/fexit probes"
        } else if caps.kprobes.available {
            "kernel locks: kprobe/kretprobe fallback (fentry unavailable)"
        } else {
            "kernel locks: NOT traceable here (neither fentry nor kprobes work)"
        },
        user_mode: if caps.uprobes.available {
            "user locks (--user): uprobes on pthread functions"
        } else {
            "user locks: NOT traceable here (no uprobes)"
        },
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("locktrace doctor: kernel {}", report.kernel);
    let line = |cap: &Capability| {
        let mark = if cap.available { "yes" } else { "no " };
        println!("  {mark}  {:<15} {}", cap.name, cap.detail);
    };
    report.capabilities.iter().for_each(line);
    if let Some(err) = &report.object_error {
        println!("  no   eBPF object: {err}");
    }
    if privileged {
        println!("  kernel features the object uses:");
        report.features.iter().for_each(line);
    } else {
        println!("  (kernel features not probed: needs root or CAP_BPF)");
    }
    println!();
    println!("  => {}", report.kernel_mode);
    println!("  => {}", report.user_mode);
    Ok(ExitCode::SUCCESS)
}

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|release| release.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Load (not attach) every program: kprobe/kretprobe, uprobe/uretprobe and tracepoint
/// programs load on any kernel with BPF, tp_btf programs on any with BTF (for the
/// tracepoints it has), so a verifier rejection shows here. fentry/fexit
/// programs are loaded against their attach-table function when the kernel has it (this
/// needs working BPF trampolines: they fail with EPERM on hosts without them, and are then
/// verified by the VM runs instead).
fn load_all() -> Result<ExitCode> {
    let mut ebpf = attach::load_object(&bpf::LoadOptions::default())?;
    let btf = crate::kernel_btf::aya_btf().ok();
    let targets: std::collections::HashMap<&str, Option<&str>> =
        attach::kernel_table::table_programs().into_iter().collect();
    let mut failed = 0;
    for (name, program) in ebpf.programs_mut() {
        // The empty bench hooks get their target at attach: any will do to verify them.
        let target = targets.get(name).copied().flatten().or(match name {
            "capability_fentry" => Some("do_nanosleep"),
            _ if name.starts_with("empty_fentry_") || name.starts_with("empty_fexit_") => {
                Some("do_nanosleep")
            }
            _ if name.starts_with("empty_btf_") => Some("kmem_cache_alloc"),
            _ => None,
        });
        let started = std::time::Instant::now();
        let (kind, result) = match program {
            Program::KProbe(program) => ("kprobe", program.load()),
            Program::UProbe(program) => ("uprobe", program.load()),
            Program::TracePoint(program) => ("tracepoint", program.load()),
            Program::FEntry(program) => match (target, &btf) {
                (Some(target), Some(btf)) => ("fentry", program.load(target, btf)),
                _ => (
                    "fentry",
                    Err(aya::programs::ProgramError::UnexpectedProgramType),
                ),
            },
            Program::FExit(program) => match (target, &btf) {
                (Some(target), Some(btf)) => ("fexit", program.load(target, btf)),
                _ => (
                    "fexit",
                    Err(aya::programs::ProgramError::UnexpectedProgramType),
                ),
            },
            Program::BtfTracePoint(program) => match (target, &btf) {
                (Some(target), Some(btf)) => ("tp_btf", program.load(target, btf)),
                _ => (
                    "tp_btf",
                    Err(aya::programs::ProgramError::UnexpectedProgramType),
                ),
            },
            _ => ("other", Ok(())),
        };
        match result {
            Ok(()) => println!(
                "load ok {kind} {name} ({} ms)",
                started.elapsed().as_millis()
            ),
            Err(err) => {
                failed += 1;
                let detail = capabilities::error_chain(&err).replace('\n', " | ");
                println!(
                    "load FAILED {kind} {name} target={} : {detail}",
                    target.unwrap_or("-")
                );
            }
        }
    }
    println!("load-all: {failed} failed");
    Ok(ExitCode::SUCCESS)
}
