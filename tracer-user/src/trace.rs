//! `locktrace trace`: attach, stream new dependencies from the ring buffer into the lock
//! graph, report cycles the moment they appear, write reports and snapshots.
use std::{
    collections::HashSet,
    ffi::OsString,
    io::{IsTerminal as _, Write as _},
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use aya::{
    maps::{MapData, RingBuf, StackTraceMap},
    Ebpf,
};
use clap::Args;
use lockgraph::{Cycle, Suppressions};
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
};
use tracer_common::{counter, DependencyKey, DependencySeen};

use crate::{
    attach::{self, kernel::AttachMode, load_and_attach, Probes},
    bpf,
    budget::OverheadBudget,
    capabilities,
    command::{self, Command, ExitWatch},
    events::{self, comm_str, lock_kind_name, LockOp, Record},
    held::{self, HeldMaps, HeldTable},
    ingest::{Ingest, StackSource},
    kernel_state::{Counters, KernelState, LRU_MAPS},
    map_reader::MapReader,
    metrics,
    output::{self, LiveFindings, LongHold, Outputs},
    process_maps,
    report_options::{load_suppressions, ReportArgs},
    symbols::Symbols,
};

/// Exit status of `--fail-on-cycle` when an unguarded cycle was found.
const EXIT_CYCLE: u8 = 3;
/// Records read in one batch (the maps of every process in it are read before any record
/// is processed), and between two looks at the dependency set's occupancy.
const BATCH_RECORDS: usize = 1024;
/// Stop signals (SIGINT, SIGTERM) after which `trace -- COMMAND` stops without waiting for
/// the command any longer (it is killed): the first ones are passed on to it.
const STOP_SIGNALS_TO_GIVE_UP: u32 = 3;

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Trace kernel mutexes, rwsems and the fs_reclaim / mmu-notifier pseudo-locks
    /// (the default unless only --user is given).
    #[arg(long)]
    pub kernel: bool,
    /// Trace user-space pthread mutexes and rwlocks (uprobes on libc).
    #[arg(long)]
    pub user: bool,
    /// How kernel functions are hooked.
    #[arg(long, value_enum, default_value = "auto")]
    pub attach: AttachMode,
    /// Only trace this process (thread group id).
    #[arg(short, long, value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "command")]
    pub pid: Option<u32>,
    /// Only trace this thread (a task id, as in /proc/PID/task/TID).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "command")]
    pub tid: Option<u32>,
    /// Only trace tasks with this command name (exact, as in /proc/PID/comm; 15 bytes max).
    #[arg(short, long, value_name = "NAME")]
    pub comm: Option<String>,
    /// Kernel: keep only dependencies with a side acquired from this loaded module's code.
    #[arg(long, value_name = "MODULE")]
    pub module: Option<String>,
    /// With --user: attach to this statically linked binary instead of the libc in use.
    #[arg(long, value_name = "PATH", requires = "user")]
    pub binary: Option<PathBuf>,
    #[command(flatten)]
    pub report: ReportArgs,
    /// Record the trace (JSON lines, replayable with `locktrace report FILE`).
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Write snapshot.json and snapshot.dot here periodically, on SIGUSR1 and at exit.
    #[arg(long, value_name = "DIR")]
    pub snapshot_dir: Option<PathBuf>,
    /// Time between snapshots (at least 1s).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "60s",
        value_parser = crate::duration_arg::parse_period
    )]
    pub snapshot_interval: Duration,
    /// Also write snapshot.graphml.
    #[arg(long, requires = "snapshot_dir")]
    pub graphml: bool,
    /// Report locks held longer than this (e.g. 500ms, 2s).
    #[arg(long, value_name = "DURATION", value_parser = crate::duration_arg::parse_duration)]
    pub hold_threshold: Option<Duration>,
    /// Serve Prometheus/OpenMetrics text on ADDR (e.g. 127.0.0.1:9464; port 0 picks one,
    /// printed at start): lock operations, records sent/dropped/resynced, every loss counter,
    /// classes and dependencies by kind, cycles by state, deadlocks in progress.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Keep the CPU time of locktrace's programs under PERCENT of the machine's busy CPU
    /// time, as the kernel measures it (BPF run-time statistics, on while tracing): over
    /// budget for 2 s, dependency checks at quiet call sites are sampled (1 in 4, 16, 64),
    /// then lock families are switched off, costliest first; each step is logged, shown and
    /// reported, and undone when the load falls. `off`: no budget, no statistics.
    #[arg(
        long,
        value_name = "PERCENT|off",
        default_value = "5",
        value_parser = crate::budget::parse_max_overhead
    )]
    pub max_overhead: crate::budget::MaxOverhead,
    /// Check the arguments and exit (what `cargo xtask dist` runs on the unit's command line).
    #[arg(long, hide = true)]
    pub check_args: bool,
    /// Print every lock operation as a JSON line on stdout (a debugging aid; costs per event).
    #[arg(long)]
    pub events: bool,
    /// Stop after this long, e.g. 30s or 2m (default: until SIGINT/SIGTERM, or the
    /// COMMAND's exit).
    #[arg(
        short,
        long,
        value_name = "DURATION",
        value_parser = crate::duration_arg::parse_duration,
        conflicts_with = "command"
    )]
    pub duration: Option<Duration>,
    /// Key and name kernel lock classes by their init call site (`init@FUNCTION+OFFSET`),
    /// as kernels whose init functions pass no name or key get anyway (PREEMPT_RT, newer
    /// upstream): shows what locktrace finds there.
    #[arg(long)]
    pub class_by_init_site: bool,
    /// Ring-buffer size in KiB (power of two, 4 to 1048576).
    #[arg(long, value_name = "KIB", value_parser = parse_ringbuf_kib)]
    pub ringbuf_kib: Option<u32>,
    /// Size of a bounded in-kernel map, as MAP=ENTRIES (repeatable): held-tasks (8192),
    /// lock-classes (65536), user-lock-classes (65536), class-names (16384). What a full
    /// map evicts is counted and shown.
    #[arg(long, value_name = "MAP=ENTRIES", value_parser = parse_map_capacity)]
    pub map_capacity: Vec<(String, u32)>,
    /// Start COMMAND (after `--`) and trace it and every process it forks, from their first
    /// lock operation, until it exits; exit with its status (128 + signal if killed; 3 with
    /// --fail-on-cycle and a cycle). SIGINT and SIGTERM are passed on to it.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

fn parse_map_capacity(text: &str) -> Result<(String, u32), String> {
    let names = || {
        LRU_MAPS
            .iter()
            .map(|map| map.option)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (name, entries) = text
        .split_once('=')
        .ok_or_else(|| format!("'{text}' is not MAP=ENTRIES (maps: {})", names()))?;
    if !LRU_MAPS.iter().any(|map| map.option == name) {
        return Err(format!("no map '{name}' (maps: {})", names()));
    }
    let entries: u32 = entries
        .parse()
        .map_err(|_| format!("'{entries}' is not a number of entries"))?;
    if !(16..=1 << 24).contains(&entries) {
        return Err(format!("{entries} entries: a map holds 16 to 16777216"));
    }
    Ok((name.to_string(), entries))
}

fn parse_ringbuf_kib(text: &str) -> Result<u32, String> {
    let kib: u32 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a number of KiB"))?;
    if kib < 4 || !kib.is_power_of_two() || kib > 1 << 20 {
        return Err(format!(
            "{kib} KiB: the ring buffer must be a power of two from 4 to 1048576 KiB"
        ));
    }
    Ok(kib)
}

pub fn run(args: TraceArgs) -> Result<ExitCode> {
    if args.check_args {
        return Ok(ExitCode::SUCCESS);
    }
    let privileges = capabilities::privileges();
    if !privileges.available {
        bail!(
            "tracing needs root or CAP_BPF + CAP_PERFMON ({})",
            privileges.detail
        );
    }
    // Forked before any thread exists, held before its execve until the probes are in place.
    let command = if args.command.is_empty() {
        None
    } else {
        Some(Command::start(&args.command)?)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(trace(args, command))
}

/// The thread group of task `tid` (from `/proc/TID/status`), which must be `pid` if given.
fn thread_group_of(tid: u32, pid: Option<u32>) -> Result<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status"))
        .with_context(|| format!("--tid {tid}: no such thread"))?;
    let tgid = status
        .lines()
        .find_map(|line| line.strip_prefix("Tgid:"))
        .and_then(|value| value.trim().parse::<u32>().ok())
        .with_context(|| format!("--tid {tid}: no Tgid in /proc/{tid}/status"))?;
    if let Some(pid) = pid.filter(|&pid| pid != tgid) {
        bail!("--tid {tid} is a thread of process {tgid}, not of --pid {pid}");
    }
    Ok(tgid)
}

/// The BPF stack-trace map as the ingest's stack source.
struct BpfStacks(StackTraceMap<MapData>);

impl StackSource for BpfStacks {
    fn frames(&self, stack_id: i32) -> Vec<u64> {
        let Ok(id) = u32::try_from(stack_id) else {
            return Vec::new();
        };
        self.0
            .get(&id, 0)
            .map(|trace| trace.frames().iter().map(|frame| frame.ip).collect())
            .unwrap_or_default()
    }
}

/// The command's exit (never, without one).
async fn accept_scrape(
    server: Option<&metrics::MetricsServer>,
) -> std::io::Result<tokio::net::TcpStream> {
    match server {
        Some(server) => server.accept().await,
        None => std::future::pending().await,
    }
}

async fn command_exit(watch: Option<&ExitWatch>) -> Result<i32> {
    match watch {
        Some(watch) => watch.wait().await,
        None => std::future::pending().await,
    }
}

/// A stop signal: whether to stop tracing now. With a command still running, it is passed
/// on instead (but for a first SIGINT from the terminal, which the command got as well, being
/// in our process group), until the third, after which we stop.
fn stop_signal(command: Option<&Command>, received: &mut u32, signal: i32) -> bool {
    let Some(command) = command.filter(|command| command.exit_code().is_none()) else {
        return true;
    };
    *received += 1;
    if *received >= STOP_SIGNALS_TO_GIVE_UP {
        log::info!(
            "stopping before {} exited (it is killed)",
            command.display()
        );
        return true;
    }
    let from_terminal =
        signal == libc::SIGINT && *received == 1 && command::interrupt_reached_command();
    if !from_terminal {
        command.signal(signal);
    }
    false
}

async fn trace(args: TraceArgs, mut command: Option<Command>) -> Result<ExitCode> {
    let suppressions = load_suppressions(args.report.suppress.as_deref())?;
    let outputs = Outputs {
        report_json: args.report.report_json.clone(),
        report_text: args.report.report_text.clone(),
        dot: args.report.dot.clone(),
        record: args.record.clone(),
        snapshot_dir: args.snapshot_dir.clone(),
        graphml: args.graphml,
    };
    outputs.check()?;
    // Bound before attaching: a taken port fails before any probe is in place.
    let metrics_server = match args.metrics {
        Some(addr) => Some(metrics::MetricsServer::bind(addr).await?),
        None => None,
    };
    let trace_kernel = args.kernel || !args.user;

    // Handlers first: a SIGINT right after "attached" must stop us cleanly, not kill us.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigusr1 = signal(SignalKind::user_defined1())?;
    let mut sigusr2 = signal(SignalKind::user_defined2())?;
    capabilities::ensure_tracefs();
    // A thread's process: its libc is the one the uprobes attach to.
    let pid = match args.tid {
        Some(tid) => Some(thread_group_of(tid, args.pid)?),
        None => args.pid,
    };
    let options = bpf::LoadOptions {
        pid: pid.unwrap_or(0),
        tid: args.tid.unwrap_or(0),
        tree: command.is_some(),
        emit_lock_ops: args.events,
        ringbuf_bytes: args.ringbuf_kib.map(|kib| kib * 1024),
        map_capacities: args
            .map_capacity
            .iter()
            .filter_map(|(option, entries)| {
                let map = LRU_MAPS.iter().find(|map| map.option == option)?;
                Some((map.map, *entries))
            })
            .collect(),
        comm: args.comm.clone(),
        module: args.module.clone(),
        class_by_init_site: args.class_by_init_site,
        glibc_mutexes: args.user
            && attach::pthread::pthread_target(args.binary.as_deref(), pid)
                .is_ok_and(|target| attach::pthread::is_glibc(&target)),
    };
    let probes = Probes {
        kernel: trace_kernel,
        user: args.user,
        attach: args.attach,
        pid,
        binary: args.binary.clone(),
        tree_root: command.as_ref().map(Command::pid),
    };
    let (mut ebpf, attached, family_links) = load_and_attach(&options, &probes)?;
    // The tree's processes that exit before their maps were read wait for it.
    let map_reader = match &command {
        Some(_) => Some(MapReader::start(&mut ebpf)?),
        None => None,
    };

    let mut session = Session::new(
        &mut ebpf,
        &args.map_capacity,
        args.events,
        args.hold_threshold,
    )?;
    if probes.kernel {
        // kallsyms now, with our programs in it: the first report is not held up by it.
        session.ingest.load_kernel_symbols();
    }
    let mut budget = args
        .max_overhead
        .0
        .and_then(|percent| OverheadBudget::start(&ebpf, percent, family_links));
    log::info!("attached {attached} probes");
    if let Some(server) = &metrics_server {
        log::info!("metrics on http://{}/metrics", server.local_addr()?);
    }
    let ring = RingBuf::try_from(ebpf.take_map("EVENTS").context("EVENTS map missing")?)?;
    // SAFETY: the ring buffer owns its map fd for as long as the AsyncFd owns the ring.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|err| err.into_parts().1)
        .context("polling the ring buffer")?;
    let deadline = tokio::time::sleep(args.duration.unwrap_or(Duration::MAX / 4));
    tokio::pin!(deadline);
    let mut snapshot_timer = tokio::time::interval(args.snapshot_interval);
    let mut status_timer = tokio::time::interval(Duration::from_secs(5));
    // The wait-for graph is rebuilt about once a second.
    let mut held_timer = tokio::time::interval(Duration::from_secs(1));
    let mut budget_timer = tokio::time::interval(Duration::from_secs(1));
    // Everything is ready for its first lock operation: let the command exec.
    let exit_watch = match &mut command {
        Some(command) => Some(command.release()?),
        None => None,
    };
    let mut stop_signals = 0;
    let mut recording = match outputs.record.as_deref() {
        Some(path) if path != std::path::Path::new("-") => {
            Some(crate::output::StreamedRecording::create(path)?)
        }
        _ => None,
    };
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                session.drain(guard.get_inner_mut())?;
                guard.clear_ready();
                if session.kernel.wants_drain(None) {
                    session.drain_dependency_set();
                }
                if let Some(recording) = &mut recording {
                    recording.append(&session.ingest.graph)?;
                }
            }
            _ = snapshot_timer.tick() => {
                if let Some(dir) = &outputs.snapshot_dir {
                    session.resync();
                    session.write_snapshot(dir, &suppressions, outputs.graphml)?;
                }
            }
            _ = sigusr1.recv() => {
                session.resync();
                if let Some(dir) = &outputs.snapshot_dir {
                    session.write_snapshot(dir, &suppressions, outputs.graphml)?;
                    log::info!("snapshot written to {}", dir.display());
                }
            }
            _ = status_timer.tick() => {
                let counters = session.kernel.counters();
                if session.kernel.wants_drain(Some(&counters)) {
                    session.drain_dependency_set();
                }
                let mut stats = lockgraph::Stats::default();
                session.kernel.fill_stats(&counters, &mut stats);
                stats.budget_family_off_ms = budget.as_ref().map_or(0, OverheadBudget::family_off_ms);
                let budget_status = budget.as_ref().map(OverheadBudget::status);
                session.console.show(
                    &session.ingest.graph,
                    &counters,
                    &stats,
                    budget_status.as_deref(),
                );
                process_maps::sweep();
            }
            _ = held_timer.tick() => session.check_held(),
            _ = budget_timer.tick() => {
                if let Some(live) = &mut budget {
                    let holds = |lock_kind| session.holds_kind(lock_kind);
                    if let Err(err) = live.tick(&mut ebpf, holds) {
                        log::warn!("overhead budget stopped, full coverage given back: {err:#}");
                        live.give_back_all(&mut ebpf);
                        budget = None;
                    }
                }
            }
            stream = accept_scrape(metrics_server.as_ref()) => {
                if let Ok(stream) = stream {
                    let text = session.metrics_text(&suppressions, budget.as_ref())?;
                    metrics::respond(stream, text);
                }
            }
            _ = sigusr2.recv() => {
                if let Some(table) = session.held_table() {
                    print!("{}", held::render(&table));
                    std::io::stdout().flush()?;
                }
            }
            status = command_exit(exit_watch.as_ref()) => {
                if let Some(command) = &mut command {
                    command.reaped(status?);
                }
                break;
            }
            _ = sigint.recv() => {
                if stop_signal(command.as_ref(), &mut stop_signals, libc::SIGINT) {
                    break;
                }
            }
            _ = sigterm.recv() => {
                if stop_signal(command.as_ref(), &mut stop_signals, libc::SIGTERM) {
                    break;
                }
            }
            () = &mut deadline => break,
        }
    }
    drop(recording);
    // The command's status: it has exited, or is killed now (given up on, or an error).
    let command_status = command.as_mut().map(Command::kill);
    // Disarmed first, then the last records and the figures, all before detaching: the
    // programs detach one by one, and what they saw meanwhile (an acquire traced, its release
    // no longer) would be no lock order but false dependencies.
    bpf::set_armed(&mut ebpf, false)?;
    session.drain(ring.get_mut())?;
    session.check_held();
    session.resync();
    let counters = session.kernel.counters();
    let mut stats = session.ingest.graph.stats();
    session.kernel.fill_stats(&counters, &mut stats);
    stats.budget_family_off_ms = budget.as_ref().map_or(0, OverheadBudget::family_off_ms);
    stats.records = session.ingest.dependency_records;
    stats.resynced = session.resynced;
    *session.ingest.graph.stats_mut() = stats;
    drop(ring);
    if let Some(live) = &budget {
        let report = live.report();
        log::info!(
            "overhead budget {}%: locktrace's programs took {:.2}% of busy CPU time \
             (last 10 s {:.2}%, highest second {:.2}%); {} budget changes; {}",
            report.budget_percent,
            report.overhead_percent,
            report.recent_overhead_percent,
            report.max_period_overhead_percent,
            report.history.len(),
            if report.shed_at_end.is_empty() {
                "full coverage at the end".to_string()
            } else {
                format!("shed at the end: {}", report.shed_at_end.join(", "))
            }
        );
        session.live.budget = Some(report);
    }
    drop(budget);
    // Detach before the (possibly slow) report writing.
    drop(ebpf);
    drop(map_reader);
    session.console.clear();
    let graph = &session.ingest.graph;
    let final_report = graph.report(&suppressions);
    log::info!(
        "detached; {} (lock ops {}, dependency checks {}, sent {}, dropped {}, \
         resynced {}, set drained {} times, unmatched releases {}, released by another thread \
         {})",
        final_report.summary(),
        counters.get(counter::LOCK_OPS),
        counters.get(counter::DEPENDENCY_CHECKS),
        counters.get(counter::DEPENDENCIES_SENT),
        counters.get(counter::RINGBUF_DROPPED),
        session.resynced,
        stats.dependency_set_drains,
        stats.unmatched_releases,
        stats.foreign_releases,
    );
    if let Some(coverage) = final_report.coverage() {
        log::info!("{coverage}");
    }
    log::info!(
        "in-kernel map entries created/capacity: {}",
        session.kernel.map_use(&counters)
    );
    let untraced = counters.get(counter::TRACED_TASKS_FULL);
    if untraced > 0 {
        log::info!(
            "{untraced} tasks forked in the traced tree were NOT traced: the tree's \
             map ({} tasks) was full",
            tracer_common::capacity::TRACED_TASKS
        );
    }
    outputs.write(graph, &suppressions, &session.live)?;
    if args.report.fail_on_cycle && final_report.has_unguarded_cycle() {
        return Ok(ExitCode::from(EXIT_CYCLE));
    }
    Ok(command_status.map_or(ExitCode::SUCCESS, ExitCode::from))
}

/// Everything the event loop updates.
struct Session {
    ingest: Ingest,
    kernel: KernelState,
    stacks: BpfStacks,
    print_events: bool,
    resynced: u64,
    last_dropped: u64,
    held_maps: Option<HeldMaps>,
    held_symbols: Symbols,
    hold_threshold: Option<Duration>,
    live: LiveFindings,
    reported_deadlocks: HashSet<String>,
    reported_holds: HashSet<(u32, String)>,
    /// The last held-lock snapshot: deadlocks are confirmed across two.
    previous_held: HeldTable,
    /// Deadlocks confirmed at the last check (for metrics).
    deadlocks_in_progress: u64,
    console: StatusLine,
}

impl Session {
    fn new(
        ebpf: &mut Ebpf,
        capacities: &[(String, u32)],
        print_events: bool,
        hold_threshold: Option<Duration>,
    ) -> Result<Self> {
        let held_maps = HeldMaps::of_object(ebpf);
        if held_maps.is_none() {
            log::info!("held-lock maps unavailable: no deadlock-in-progress detection");
        }
        let stacks =
            StackTraceMap::try_from(ebpf.take_map("STACKS").context("STACKS map missing")?)?;
        Ok(Self {
            ingest: Ingest::new(),
            kernel: KernelState::of_object(ebpf, capacities)?,
            stacks: BpfStacks(stacks),
            print_events,
            resynced: 0,
            last_dropped: 0,
            held_maps,
            held_symbols: Symbols::new(),
            hold_threshold,
            live: LiveFindings::default(),
            reported_deadlocks: HashSet::new(),
            reported_holds: HashSet::new(),
            previous_held: HeldTable::default(),
            deadlocks_in_progress: 0,
            console: StatusLine::new(),
        })
    }

    fn write_snapshot(&self, dir: &Path, suppressions: &Suppressions, graphml: bool) -> Result<()> {
        output::write_snapshot(dir, &self.ingest.graph, suppressions, graphml)
    }

    /// Whether some task holds a lock of `lock_kind` now (unknown: assumed so).
    fn holds_kind(&self, lock_kind: u32) -> bool {
        self.held_maps
            .as_ref()
            .is_none_or(|maps| maps.holds_kind(lock_kind))
    }

    fn held_table(&mut self) -> Option<HeldTable> {
        let maps = self.held_maps.as_ref()?;
        Some(held::snapshot(maps, &mut self.held_symbols))
    }

    /// Deadlocks in progress (reported at once, each once) and long holds.
    /// One scrape's OpenMetrics text: the graph and every counter as they are now.
    fn metrics_text(
        &self,
        suppressions: &Suppressions,
        budget: Option<&OverheadBudget>,
    ) -> Result<String> {
        let counters = self.kernel.counters();
        let mut stats = self.ingest.graph.stats();
        self.kernel.fill_stats(&counters, &mut stats);
        stats.budget_family_off_ms = budget.map_or(0, OverheadBudget::family_off_ms);
        stats.records = self.ingest.dependency_records;
        stats.resynced = self.resynced;
        metrics::render(&metrics::MetricsSnapshot {
            graph: &self.ingest.graph,
            suppressions,
            stats,
            lock_operations: counters.get(counter::LOCK_OPS),
            dependency_checks: counters.get(counter::DEPENDENCY_CHECKS),
            traced_tasks_full: counters.get(counter::TRACED_TASKS_FULL),
            deadlocks_in_progress: self.deadlocks_in_progress,
            deadlocks_detected: self.live.deadlocks.len() as u64,
            long_holds: self.live.long_holds.len() as u64,
            budget: budget.map(|live| metrics::BudgetMetrics {
                budget_percent: live.percent(),
                overhead_percent: 100.0 * live.last_share(),
                steps_shed: live.level() as u64,
            }),
        })
    }

    fn check_held(&mut self) {
        let Some(current) = self.held_table() else {
            return;
        };
        let table = held::confirmed(&self.previous_held, current.clone());
        self.previous_held = current;
        self.deadlocks_in_progress = table.deadlocks.len() as u64;
        for deadlock in table.deadlocks {
            let key = deadlock.key();
            if self.reported_deadlocks.insert(key.clone()) {
                self.console.note(&held::render_deadlock(&deadlock));
                self.live.deadlocks.push(deadlock);
            } else if let Some(known) = self
                .live
                .deadlocks
                .iter_mut()
                .find(|known| known.key() == key)
            {
                // Still there: keep the latest picture (more tasks may have queued behind it).
                *known = deadlock;
            }
        }
        let Some(threshold) = self.hold_threshold else {
            return;
        };
        for task in &table.tasks {
            for held in &task.holding {
                if held.for_ns < threshold.as_nanos() as u64 {
                    continue;
                }
                if self.reported_holds.insert((task.tid, held.class.clone())) {
                    self.console.note(&format!(
                        "locktrace: long hold: {}/{} (tid {}) has held {} for {:.1} s",
                        task.comm,
                        task.pid,
                        task.tid,
                        held.class,
                        held.for_ns as f64 / 1e9
                    ));
                    self.live.long_holds.push(LongHold {
                        class: held.class.clone(),
                        pid: task.pid,
                        tid: task.tid,
                        comm: task.comm.clone(),
                        held_ns: held.for_ns,
                        stack: held.stack.clone(),
                    });
                }
            }
        }
    }

    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> Result<()> {
        let mut stdout = std::io::stdout().lock();
        let mut batch = Vec::with_capacity(BATCH_RECORDS);
        loop {
            batch.clear();
            while batch.len() < BATCH_RECORDS {
                let Some(item) = ring.next() else {
                    break;
                };
                batch.push(Record::try_from(&*item));
            }
            if batch.is_empty() {
                break;
            }
            see_processes(&batch);
            for record in batch.drain(..) {
                match record {
                    Ok(Record::LockOp(event)) if self.print_events => {
                        print_lock_op(&mut stdout, &event)?
                    }
                    Ok(Record::LockOp(_)) => {}
                    Ok(Record::Class(event)) => self.ingest.on_class(&event),
                    Ok(Record::Dependency(event)) => {
                        let cycles = self.ingest.on_dependency(&event, &self.stacks);
                        self.announce(&cycles);
                    }
                    Ok(Record::Exec(event)) => process_maps::forget(event.pid),
                    Err(err) => log::warn!("{err}"),
                }
            }
            // A ring that never runs dry (a burst the daemon reads slower than it comes)
            // must not keep the dependency set from being drained.
            if self.kernel.wants_drain(None) {
                self.drain_dependency_set();
            }
        }
        stdout.flush()?;
        Ok(())
    }

    fn announce(&self, cycles: &[Cycle]) {
        let graph = &self.ingest.graph;
        for cycle in cycles {
            let names: Vec<&str> = cycle.classes.iter().map(|&id| graph.name(id)).collect();
            let verdict = match cycle.guarded_by {
                Some(guard) => {
                    format!(
                        "guarded by {} (instance {:#x})",
                        graph.name(guard.class),
                        guard.lock
                    )
                }
                None => "possible deadlock".to_string(),
            };
            self.console.note(&format!(
                "locktrace: {verdict} {}: {} -> {}",
                cycle.id,
                names.join(" -> "),
                names[0]
            ));
        }
    }

    /// When records were dropped, re-read the authoritative in-kernel dependency set and add
    /// what the ring buffer lost (without stacks: the kernel keeps only the set).
    fn resync(&mut self) {
        let dropped = self.kernel.counter(counter::RINGBUF_DROPPED);
        if dropped == self.last_dropped {
            return;
        }
        self.last_dropped = dropped;
        self.resync_entries();
    }

    fn resync_entries(&mut self) -> Vec<(DependencyKey, DependencySeen)> {
        let entries = self.kernel.dependencies();
        for (key, seen) in &entries {
            if self.ingest.add_resynced(key, seen) {
                self.resynced += 1;
            }
        }
        entries
    }

    /// Reads the whole dependency set into the graph (what dropped records lost, too) and
    /// empties it of what was read, so that the kernel keeps only what the daemon lacks and
    /// the set never fills however many distinct dependencies a workload creates.
    fn drain_dependency_set(&mut self) {
        self.last_dropped = self.kernel.counter(counter::RINGBUF_DROPPED);
        let entries = self.resync_entries();
        self.kernel.forget(&entries);
    }
}

/// The first sight of each process with user-lock records in `batch`: its maps are read
/// before any record is symbolized (which is slow at first), while it most likely still
/// runs. Not for a process after its `execve` in the batch: those records are the new
/// program's, read when they are processed.
fn see_processes(batch: &[Result<Record, events::DecodeError>]) {
    let mut execed = HashSet::new();
    for record in batch {
        match record {
            Ok(Record::Dependency(event))
                if events::lock_kind(event.new_kind).is_ok_and(lockgraph::LockKind::is_user)
                    && !execed.contains(&event.pid) =>
            {
                process_maps::first_sight(event.pid);
            }
            Ok(Record::Exec(event)) => {
                execed.insert(event.pid);
            }
            _ => {}
        }
    }
}

/// The live view: on a terminal one status line refreshed in place (indicatif), with
/// findings printed above it; otherwise plain lines.
struct StatusLine {
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
}

impl StatusLine {
    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg}")
                    .expect("static template"),
            );
            bar
        });
        Self {
            bar,
            started: Instant::now(),
        }
    }

    /// A finding: printed above the status line.
    fn note(&self, text: &str) {
        let text = text.trim_end_matches('\n');
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    /// The status line; `stats`: the kernel side's figures, whose losses it lists.
    fn show(
        &self,
        graph: &lockgraph::LockGraph,
        counters: &Counters,
        stats: &lockgraph::Stats,
        budget: Option<&str>,
    ) {
        let seconds = self.started.elapsed().as_secs_f64().max(1.0);
        let mut line = format!(
            "locktrace: {:.0} lock ops/s, {} classes, {} dependencies, {} cycles, {} dropped",
            counters.get(counter::LOCK_OPS) as f64 / seconds,
            graph.class_count(),
            graph.edge_count(),
            graph.cycles().len(),
            counters.get(counter::RINGBUF_DROPPED),
        );
        if let Some(budget) = budget {
            line.push_str(&format!("; {budget}"));
        }
        let gaps = stats.coverage_gaps();
        if !gaps.is_empty() {
            line.push_str(&format!("; coverage incomplete: {}", gaps.join(", ")));
        }
        match &self.bar {
            Some(bar) => bar.set_message(line),
            None => eprintln!("{line}"),
        }
    }

    fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn print_lock_op(out: &mut impl std::io::Write, event: &tracer_common::LockOpEvent) -> Result<()> {
    let op = LockOp::try_from(event.op).map_or("unknown", LockOp::as_str);
    let kind = lock_kind_name(event.kind);
    let line = serde_json::json!({
        "type": "lock",
        "op": op,
        "kind": kind,
        "lock": format!("{:#x}", event.lock),
        "read": event.flags & tracer_common::flags::NEW_READ != 0,
        "recursive": event.flags & tracer_common::flags::NEW_RECURSIVE_READ != 0,
        "try": event.flags & tracer_common::flags::TRY != 0,
        "pid": event.pid,
        "tid": event.tid,
        "comm": comm_str(&event.comm),
        "ts": event.timestamp_ns,
    });
    writeln!(out, "{line}")?;
    Ok(())
}
