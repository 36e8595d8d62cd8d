//! `locktrace trace`: attach, stream new dependencies from the ring buffer, report.
use std::{
    io::Write as _,
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use aya::maps::RingBuf;
use clap::Args;
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
};

use crate::{
    attach::{self, AttachReport},
    bpf, capabilities,
    events::{comm_str, LockKind, LockOp, Record},
};

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Trace user-space pthread mutexes and rwlocks (uprobes on libc).
    #[arg(long)]
    pub user: bool,
    /// Only trace this process (thread group id).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: Option<u32>,
    /// With --user: attach to this statically linked binary instead of the libc in use.
    #[arg(long, value_name = "PATH", requires = "user")]
    pub binary: Option<PathBuf>,
    /// Print every lock operation as a JSON line on stdout (a debugging aid; costs per event).
    #[arg(long)]
    pub events: bool,
    /// Stop after this many seconds (default: until SIGINT/SIGTERM).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<u64>,
    /// Ring-buffer size in KiB (power of two, at least 4).
    #[arg(long, value_name = "KIB", value_parser = parse_ringbuf_kib)]
    pub ringbuf_kib: Option<u32>,
}

fn parse_ringbuf_kib(text: &str) -> Result<u32, String> {
    let kib: u32 = text.parse().map_err(|_| format!("'{text}' is not a number of KiB"))?;
    if kib < 4 || !kib.is_power_of_two() || kib > 1 << 20 {
        return Err(format!("{kib} KiB: the ring buffer must be a power of two from 4 to 1048576 KiB"));
    }
    Ok(kib)
}

pub fn run(args: TraceArgs) -> Result<ExitCode> {
    let privileges = capabilities::privileges();
    if !privileges.available {
        bail!("tracing needs root or CAP_BPF + CAP_PERFMON ({})", privileges.detail);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(trace(args))
}

async fn trace(args: TraceArgs) -> Result<ExitCode> {
    let options = bpf::LoadOptions {
        pid: args.pid.unwrap_or(0),
        emit_lock_ops: args.events,
        ringbuf_bytes: args.ringbuf_kib.map(|kib| kib * 1024),
    };
    capabilities::ensure_tracefs();
    let mut ebpf = bpf::load(&options)?;
    let mut report = AttachReport::default();
    attach::task::attach_task_probes(&mut ebpf, &mut report)?;
    if args.user {
        let target = attach::pthread::pthread_target(args.binary.as_deref(), args.pid)?;
        attach::pthread::attach_pthread_probes(&mut ebpf, &target, args.pid, &mut report)?;
    } else {
        report.skipped(
            "kernel mutex/rwsem probes",
            "kernel lock tracing is not implemented yet in this build; use --user",
        );
    }
    for (what, why) in &report.skipped {
        eprintln!("locktrace: not attached: {what}: {why}");
    }
    if report.attached.is_empty() {
        bail!("nothing could be attached");
    }
    eprintln!("locktrace: attached {} probes", report.attached.len());
    for what in &report.attached {
        log::debug!("attached {what}");
    }

    let ring = RingBuf::try_from(ebpf.take_map("EVENTS").context("EVENTS map missing")?)?;
    // SAFETY: the ring buffer owns its map fd for as long as the AsyncFd owns the ring.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|err| err.into_parts().1)
        .context("polling the ring buffer")?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let deadline = tokio::time::sleep(args.duration.map_or(Duration::MAX / 4, Duration::from_secs));
    tokio::pin!(deadline);
    let mut stdout = std::io::stdout().lock();
    let mut records = 0u64;
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                let ring = guard.get_inner_mut();
                while let Some(item) = ring.next() {
                    records += 1;
                    match Record::try_from(&*item) {
                        Ok(record) => print_record(&mut stdout, &record)?,
                        Err(err) => log::warn!("{err}"),
                    }
                }
                guard.clear_ready();
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            () = &mut deadline => break,
        }
    }
    // Drain what arrived before the stop.
    let ring = ring.get_mut();
    while let Some(item) = ring.next() {
        records += 1;
        if let Ok(record) = Record::try_from(&*item) {
            print_record(&mut stdout, &record)?;
        }
    }
    stdout.flush()?;
    eprintln!("locktrace: stopped after {records} records; detaching");
    drop(ebpf);
    Ok(ExitCode::SUCCESS)
}

fn print_record(out: &mut impl std::io::Write, record: &Record) -> Result<()> {
    match record {
        Record::LockOp(event) => {
            let op = LockOp::try_from(event.op).map_or("unknown", LockOp::as_str);
            let kind = LockKind::try_from(event.kind).map_or("unknown", LockKind::as_str);
            let line = serde_json::json!({
                "type": "lock",
                "op": op,
                "kind": kind,
                "lock": format!("{:#x}", event.lock),
                "read": event.flags & tracer_common::flags::NEW_READ != 0,
                "try": event.flags & tracer_common::flags::TRY != 0,
                "pid": event.pid,
                "tid": event.tid,
                "comm": comm_str(&event.comm),
                "ts_ns": event.timestamp_ns,
            });
            writeln!(out, "{line}")?;
        }
        Record::Class(event) => {
            log::debug!("class {:#x} = {}", event.class, crate::events::c_str(&event.name));
        }
        Record::Dependency(event) => {
            log::info!(
                "new dependency {:#x} -> {:#x} ({} pid {})",
                event.held_class,
                event.new_class,
                comm_str(&event.comm),
                event.pid
            );
        }
    }
    Ok(())
}
