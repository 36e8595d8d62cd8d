//! `locktrace`: live lock-order tracing for production Linux kernels and pthread programs.
mod attach;
mod bench_hooks;
mod bpf;
mod budget;
mod capabilities;
mod class_names;
mod command;
mod doctor;
mod duration_arg;
mod events;
mod held;
mod ingest;
mod ingest_bench;
mod kernel_btf;
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
                  familiar form, without a debug kernel.",
    after_long_help = "Environment:\n  RUST_LOG  log filter in env_logger's syntax, used instead of \
                       -v/-q when set (e.g. RUST_LOG=debug, RUST_LOG=locktrace=trace,aya=info)\n\n\
                       Exit codes: 0 fine, 1 error, 3 a finding scripts act on (trace \
                       --fail-on-cycle, diff: a new unguarded cycle, held: a deadlock in \
                       progress)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// More log output: -v our debug lines (attach decisions and their timing, kernel
    /// facts), -vv also libraries' debug lines, -vvv everything.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Less: -q only warnings and errors (no progress lines or summary), -qq only errors.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    quiet: u8,
}

/// The log level -v/-q ask for; `RUST_LOG`, when set, is used instead (env_logger's
/// syntax, e.g. `RUST_LOG=locktrace=debug,aya=info`).
fn log_filter(verbose: u8, quiet: u8) -> &'static str {
    // Libraries one level quieter than us: aya's debug output is thousands of lines per load.
    match (verbose, quiet) {
        (0, 0) => "info",
        (1, _) => "info,locktrace=debug",
        (2, _) => "debug,locktrace=trace",
        (_, 0) => "trace",
        (_, 1) => "warn",
        _ => "error",
    }
}

/// Our own messages read `locktrace: …` (scripts and the VM checks match on that);
/// those of libraries (aya) name their origin.
fn init_logging(verbose: u8, quiet: u8) {
    use std::io::Write as _;
    let started = std::time::Instant::now();
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or(log_filter(verbose, quiet)),
    )
    .format(move |out, record| {
        let ours = record.target().starts_with("locktrace");
        match (ours, record.level()) {
            (true, log::Level::Error | log::Level::Warn | log::Level::Info) => {
                writeln!(out, "locktrace: {}", record.args())
            }
            // Debug lines carry the time since start: where a slow attach spends it.
            (true, level) => writeln!(
                out,
                "locktrace: [{level} +{:.3}s] {}",
                started.elapsed().as_secs_f64(),
                record.args()
            ),
            (false, level) => writeln!(out, "[{level} {}] {}", record.target(), record.args()),
        }
    })
    .init();
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Attach probes and trace lock-order dependencies until interrupted.
    #[command(after_help = "Examples:\n  \
        sudo locktrace trace                          kernel locks until Ctrl-C\n  \
        sudo locktrace trace --user -d 30s            kernel and pthread locks for 30 s\n  \
        sudo locktrace trace --user -- ./my-server    a program and its children, to its exit\n  \
        sudo locktrace trace -p 4242 --user --record run.jsonl\n  \
        sudo locktrace trace -c kworker/u8:2 --report-json report.json\n  \
        sudo locktrace trace --snapshot-dir /var/lib/locktrace --snapshot-interval 2m")]
    Trace(Box<trace::TraceArgs>),
    /// Show which task holds which traced lock and who waits for whom (deadlocks in
    /// progress); exits 3 while a deadlock is in progress.
    #[command(after_help = "Examples:\n  \
        sudo locktrace held                  the running trace's state (or trace for --settle)\n  \
        sudo locktrace held --json | jq .deadlocks\n  \
        sudo locktrace held --watch --user")]
    Held(held::HeldArgs),
    /// Print what this kernel allows (BTF, fentry, kprobes, uprobes, tracepoints, lockdep,
    /// privileges) and which kernel features the object uses are there.
    Doctor {
        /// Print the findings as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the graph from a recording (--record) or snapshot and print the report.
    #[command(after_help = "Examples:\n  \
        locktrace report run.jsonl\n  \
        locktrace report snapshot.json --report-json - | jq '.cycles | length'")]
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
    /// Convert a snapshot or recording to JSON, DOT, GraphML, SVG (drawn in-process, no
    /// Graphviz needed) or, for one cycle, a self-contained HTML page.
    Export {
        file: PathBuf,
        #[arg(long, value_enum)]
        format: offline::ExportFormat,
        /// Only this cycle (its id, `cyc-…`, as `report` prints it): with `--format svg` its
        /// picture; `--format html` needs it (the report text, picture and each edge's
        /// stacks).
        #[arg(long, value_name = "ID")]
        cycle: Option<String>,
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
    #[command(after_help = "Examples:\n  \
        locktrace diff yesterday/snapshot.json today/snapshot.json || echo new deadlock\n  \
        locktrace diff --json old.json new.json | jq .new_cycles")]
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
    /// Empty uprobes where `trace --user` hooks a mutex lock pair, until SIGINT: the floor
    /// `cargo xtask bench` measures the tracer against.
    #[command(hide = true)]
    BenchHooks {
        /// Empty uprobes on this process's pthread lock functions.
        #[arg(long, required_unless_present = "kernel")]
        pid: Option<std::num::NonZeroU32>,
        /// Empty programs on every kernel hook of `trace` (kernel mode).
        #[arg(long, conflicts_with = "pid")]
        kernel: bool,
        #[arg(long, value_enum, default_value_t)]
        attach: attach::kernel::AttachMode,
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
    let cli = Cli::parse();
    if cli.verbose > 0 && cli.quiet > 0 {
        // clap's conflicts_with does not see a global flag given at another level.
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "-v/--verbose and -q/--quiet contradict each other",
            )
            .exit();
    }
    init_logging(cli.verbose, cli.quiet);
    let result = match cli.command {
        Command::Trace(args) => trace::run(*args),
        Command::Doctor { json } => doctor::run(json),
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
            cycle,
            output,
        } => offline::export(&file, format, cycle.as_deref(), output.as_deref()),
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
        Command::BenchHooks {
            pid,
            kernel,
            attach,
        } => match pid {
            Some(pid) if !kernel => bench_hooks::run_user(pid),
            _ => bench_hooks::run_kernel(attach),
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        // Duplicate short flags, bad defaults and the like panic here.
        Cli::command().debug_assert();
    }

    #[test]
    fn verbosity_maps_to_levels() {
        assert_eq!(log_filter(0, 0), "info");
        assert_eq!(log_filter(1, 0), "info,locktrace=debug");
        assert_eq!(log_filter(2, 0), "debug,locktrace=trace");
        assert_eq!(log_filter(3, 0), "trace");
        assert_eq!(log_filter(0, 1), "warn");
        assert_eq!(log_filter(0, 2), "error");
    }
}
