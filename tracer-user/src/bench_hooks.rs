//! `locktrace bench-hooks --pid PID`: empty uprobes where `trace --user` hooks a mutex lock
//! and unlock, until SIGINT. `cargo xtask bench` runs the same loop under it, under
//! `trace --user` and alone: the tracer's cost against the cost of hooking at all.
use std::{num::NonZeroU32, process::ExitCode};

use anyhow::{Context as _, Result};

use crate::{attach, bpf};

pub fn run(pid: NonZeroU32) -> Result<ExitCode> {
    let target = attach::pthread::pthread_target(None, Some(pid.get()))?;
    let mut ebpf = attach::load_object(&bpf::LoadOptions::default())?;
    let hooks = attach::pthread::attach_empty_hooks(&mut ebpf, &target, pid)?;
    log::info!("attached {hooks} probes (empty hooks)");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let mut interrupt =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        anyhow::Ok(())
    })?;
    drop(ebpf);
    log::info!("detached");
    Ok(ExitCode::SUCCESS)
}
