//! Task lifetime: forget a thread's held locks when it exits.
use anyhow::{Context as _, Result};
use aya::{programs::TracePoint, Ebpf};

use super::AttachReport;

pub fn attach_task_probes(ebpf: &mut Ebpf, report: &mut AttachReport) -> Result<()> {
    let program: &mut TracePoint = ebpf
        .program_mut("sched_process_exit")
        .context("program sched_process_exit missing from the object")?
        .try_into()?;
    program.load().context("loading sched_process_exit")?;
    match program.attach("sched", "sched_process_exit") {
        Ok(_) => report.attached("tracepoint sched:sched_process_exit"),
        Err(err) => report.skipped("tracepoint sched:sched_process_exit", err),
    }
    Ok(())
}
