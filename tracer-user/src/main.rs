//! `locktrace`: live lock-order tracing for production Linux kernels and pthread programs.
mod attach;
mod bpf;
mod capabilities;
mod doctor;
mod events;
mod trace;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "locktrace",
    version,
    about = "Live lock-order tracer: finds possible deadlocks (lockdep-style) on production kernels and in pthread programs",
    long_about = "locktrace attaches eBPF probes to lock acquire/release paths, builds the lock-order \
graph live and reports every possible deadlock in lockdep's familiar form, without a debug kernel."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Attach probes and trace lock-order dependencies until interrupted.
    Trace(trace::TraceArgs),
    /// Print what this kernel allows (BTF, fentry, kprobes, uprobes, tracepoints, lockdep, privileges).
    Doctor,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp(None)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Trace(args) => trace::run(args),
        Command::Doctor => doctor::run(),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("locktrace: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
