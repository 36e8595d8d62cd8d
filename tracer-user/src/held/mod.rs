//! Who holds what, now: the per-thread held-lock stacks the eBPF side keeps, turned into a
//! held-lock table, a wait-for graph (task → lock → holder task) and the actual deadlocks in
//! it — cycles of tasks each waiting for a lock another one holds. Reading the maps, the
//! wait-for analysis and rendering are apart; this file is the `locktrace held` command.
mod maps;
mod render;
mod wait_for;

use std::{io::Write as _, process::ExitCode, time::Duration};

use anyhow::{bail, Context as _, Result};

pub use self::{
    maps::{snapshot, HeldMaps},
    render::{push_stack, render, render_deadlock},
    wait_for::{confirmed, Deadlock, HeldTable},
};
use crate::{
    attach::{self, kernel::AttachMode, Probes},
    bpf::LoadOptions,
    capabilities,
    symbols::Symbols,
};

/// `locktrace held`: print who holds and waits for which traced lock, once or `--watch`.
#[derive(Debug, clap::Args)]
pub struct HeldArgs {
    /// Print JSON (`tasks[]`, `deadlocks[]`) instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Refresh every second, in place, until interrupted.
    #[arg(long)]
    pub watch: bool,
    /// Without a running `locktrace trace`: also trace pthread locks (uprobes on libc).
    #[arg(long)]
    pub user: bool,
    /// Without a running `locktrace trace`: how long to trace before the first table, at
    /// most 1h (locks taken before locktrace attached are not known).
    #[arg(
        long,
        default_value = "2s",
        value_name = "DURATION",
        value_parser = crate::duration_arg::parse_wait
    )]
    pub settle: Duration,
}

pub fn run(args: &HeldArgs) -> Result<ExitCode> {
    let privileges = capabilities::privileges();
    if !privileges.available {
        bail!(
            "reading held locks needs root or CAP_BPF + CAP_PERFMON ({})",
            privileges.detail
        );
    }
    // Our own probes, if we have to attach: kept alive for as long as we print.
    let mut own = None;
    let maps = match HeldMaps::of_running_trace() {
        Some(maps) => {
            log::info!("held: reading the state of the running locktrace trace");
            maps
        }
        None => {
            capabilities::ensure_tracefs();
            let probes = Probes {
                kernel: true,
                user: args.user,
                attach: AttachMode::Auto,
                pid: None,
                binary: None,
                tree_root: None,
            };
            let (ebpf, attached, _) = attach::load_and_attach(&LoadOptions::default(), &probes)?;
            log::info!("attached {attached} probes");
            log::info!(
                "held: no running trace; traced for {} (locks taken before that \
                 are not shown)",
                humantime::format_duration(args.settle)
            );
            std::thread::sleep(args.settle);
            let maps = HeldMaps::of_object(&ebpf).context("the held-lock map is missing")?;
            own = Some(ebpf);
            maps
        }
    };
    let mut symbols = Symbols::new();
    let mut previous = snapshot(&maps, &mut symbols);
    let deadlocked = loop {
        // A deadlock must show the same waits in two snapshots a second apart.
        std::thread::sleep(Duration::from_secs(1));
        let current = snapshot(&maps, &mut symbols);
        let table = confirmed(&previous, current.clone());
        previous = current;
        let text = if args.json {
            serde_json::to_string_pretty(&table)? + "\n"
        } else {
            render(&table)
        };
        if args.watch {
            // Home and clear, then the table: a refresh in place, like top.
            print!("\x1b[H\x1b[2J{text}");
        } else {
            print!("{text}");
        }
        std::io::stdout().flush()?;
        if !args.watch {
            break !table.deadlocks.is_empty();
        }
    };
    drop(own);
    // For scripts: 3 while a deadlock is in progress, as `diff` exits 3 on a new cycle.
    Ok(if deadlocked {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}
