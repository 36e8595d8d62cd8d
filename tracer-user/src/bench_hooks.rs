//! `locktrace bench-hooks --pid PID | --kernel`: empty programs exactly where `trace --user`
//! hooks a mutex lock and unlock, or where kernel-mode `trace` hooks (the same attach table),
//! until SIGINT. `cargo xtask bench` runs the same workload under it, under `trace` and
//! alone: the tracer's cost against the cost of hooking at all.
use std::{num::NonZeroU32, process::ExitCode};

use anyhow::{Context as _, Result};

use crate::{
    attach::{self, kernel::AttachMode, AttachReport},
    bpf, capabilities,
};

pub fn run_user(pid: NonZeroU32) -> Result<ExitCode> {
    let target = attach::pthread::pthread_target(None, Some(pid.get()))?;
    let mut ebpf = attach::load_object(&bpf::LoadOptions::default())?;
    let hooks = attach::pthread::attach_empty_hooks(&mut ebpf, &target, pid)?;
    log::info!("attached {hooks} probes (empty hooks)");
    wait_for_stop()?;
    drop(ebpf);
    log::info!("detached");
    Ok(ExitCode::SUCCESS)
}

pub fn run_kernel(mode: AttachMode) -> Result<ExitCode> {
    capabilities::ensure_tracefs();
    let mut ebpf = attach::load_object(&bpf::LoadOptions::default())?;
    let caps = capabilities::probe(Some(&mut ebpf));
    let mut report = AttachReport::default();
    attach::kernel::attach_empty_kernel_hooks(&mut ebpf, mode, &caps, &mut report)?;
    for (what, why) in &report.skipped {
        log::debug!("not attached: {what}: {why}");
    }
    log::info!("attached {} probes (empty hooks)", report.attached.len());
    wait_for_stop()?;
    drop(ebpf);
    log::info!("detached");
    Ok(ExitCode::SUCCESS)
}

fn wait_for_stop() -> Result<()> {
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
    })
}
