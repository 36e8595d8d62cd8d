//! `locktrace`: live lock-order tracing for production Linux kernels and pthread programs.
mod attach;
mod bpf;
mod capabilities;
mod class_names;
mod command;
mod doctor;
mod events;
mod held;
mod ingest;
mod ingest_bench;
mod kernel_state;
mod map_reader;
mod metrics;
mod offline;
mod output;
mod process_maps;
mod report_options;
mod stacks;
mod symbols;
mod trace;

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "locktrace",
    version,
    about = "Live lock-order tracer: finds possible deadlocks (lockdep-style) on production \
             kernels and in pthread programs",
    long_about = "locktrace attaches eBPF probes to lock acquire/release paths, builds the \
                  lock-order graph live and reports every possible deadlock in lockdep's \
                  familiar form, without a debug kernel."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Attach probes and trace lock-order dependencies until interrupted.
    Trace(Box<trace::TraceArgs>),
    /// Show which task holds which traced lock and who waits for whom (deadlocks in progress).
    Held(held::HeldArgs),
    /// Print what this kernel allows (BTF, fentry, kprobes, uprobes, tracepoints, lockdep,
    /// privileges).
    Doctor,
    /// Rebuild the graph from a recording (--record) or snapshot and print the report.
    Report {
        /// A JSON-lines trace (recorded or hand-written) or a snapshot.json.
        file: PathBuf,
        #[command(flatten)]
        report: report_options::ReportArgs,
    },
    /// Import lockdep reports from a console log (circular dependencies, recursive locking;
    /// notes for the rest), or lockdep's whole graph from `/proc/lockdep`.
    ImportLockdep {
        /// dmesg, console, syslog or journal log, or a mail quoting one; `-` for standard
        /// input.
        file: PathBuf,
        /// FILE is a copy of `/proc/lockdep` (every class and its direct dependencies).
        #[arg(long)]
        proc_lockdep: bool,
        #[command(flatten)]
        report: report_options::ReportArgs,
    },
    /// Convert a snapshot or recording to JSON, DOT, GraphML or SVG (via Graphviz).
    Export {
        file: PathBuf,
        #[arg(long, value_enum)]
        format: offline::ExportFormat,
        /// Output file (default: stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Union snapshots from many runs or hosts into one.
    Merge {
        #[arg(required = true, num_args = 2..)]
        files: Vec<PathBuf>,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// List the dependencies and cycles NEW has that OLD had not; exits 3 when a new
    /// unguarded cycle appeared.
    Diff {
        old: PathBuf,
        new: PathBuf,
        /// Print the difference as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (bash: `locktrace completions bash >
    /// /etc/bash_completion.d/locktrace`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (one per subcommand) into DIR (used by `cargo xtask dist`).
    #[command(hide = true)]
    Man {
        #[arg(long)]
        out_dir: PathBuf,
    },
    /// Measure the daemon's ingest path on synthetic records (used by `cargo xtask bench`).
    #[command(hide = true)]
    BenchIngest {
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
        #[arg(long, default_value_t = 200)]
        classes: u64,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp(None)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Trace(args) => trace::run(*args),
        Command::Doctor => doctor::run(),
        Command::Held(args) => held::run(&args),
        Command::Report { file, report } => offline::report(&file, &report),
        Command::ImportLockdep {
            file,
            proc_lockdep,
            report,
        } => offline::import_lockdep(&file, proc_lockdep, &report),
        Command::Export {
            file,
            format,
            output,
        } => offline::export(&file, format, output.as_deref()),
        Command::Merge { files, output } => offline::merge(&files, &output),
        Command::Diff { old, new, json } => offline::diff(&old, &new, json),
        Command::Completions { shell } => {
            // Into a buffer: the generator panics on a write error (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "locktrace", &mut script);
            output::write_atomic(std::path::Path::new("-"), &script).map(|()| ExitCode::SUCCESS)
        }
        Command::Man { out_dir } => write_man_pages(&out_dir),
        Command::BenchIngest { events, classes } => ingest_bench::run(events, classes),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("locktrace: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `locktrace.1` and `locktrace-SUBCOMMAND.1` for every visible subcommand.
fn write_man_pages(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let command = Cli::command();
    let mut pages = vec![("locktrace".to_string(), command.clone())];
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        let name = format!("locktrace-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().name(name)));
    }
    for (name, page) in pages {
        let mut roff = Vec::new();
        clap_mangen::Man::new(page).render(&mut roff)?;
        output::write_atomic(&dir.join(format!("{name}.1")), &roff)?;
    }
    Ok(ExitCode::SUCCESS)
}
