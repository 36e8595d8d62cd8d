//! `cargo xtask bench`: ratios measured side by side in one run, medians of alternating runs.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};

use crate::{build, command_output, fuzz, vm, workspace_root};

/// Rounds of each measurement; their median is reported.
const ROUNDS: usize = 5;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// One `locktrace bench-ingest` run: (events/s, peak RSS KiB).
fn ingest_once(binary: &std::path::Path, events: u64) -> Result<(f64, f64)> {
    let output = command_output(Command::new(binary).args([
        "bench-ingest",
        "--events",
        &events.to_string(),
    ]))?;
    let field = |name: &str| -> Result<f64> {
        output
            .split_whitespace()
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .with_context(|| format!("no {name} in `{output}`"))?
            .parse()
            .with_context(|| format!("bad {name} in `{output}`"))
    };
    Ok((field("events_per_s")?, field("peak_rss_kib")?))
}

pub fn bench(host_only: bool, kernel: Option<&str>) -> Result<()> {
    let binary = build()?;
    if let Some(kernel) = kernel {
        return kernel_overhead(&binary, kernel);
    }
    // Daemon ingest: 10^6 and 10^7 records alternating; equal peak RSS shows memory follows
    // classes and edges, not events.
    let (mut small_rate, mut small_rss, mut large_rate, mut large_rss) =
        (vec![], vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        let (rate, rss) = ingest_once(&binary, 1_000_000)?;
        small_rate.push(rate);
        small_rss.push(rss);
        let (rate, rss) = ingest_once(&binary, 10_000_000)?;
        large_rate.push(rate);
        large_rss.push(rss);
    }
    let (large_rate, large_rss, small_rss) = (
        median(&mut large_rate),
        median(&mut large_rss),
        median(&mut small_rss),
    );
    println!(
        "bench: daemon ingest, 10^7 records: {:.2e} events/s (median of {ROUNDS}; target >= 5e6)",
        large_rate
    );
    println!(
        "bench: daemon peak RSS: {:.1} MiB at 10^7 records vs {:.1} MiB at 10^6 (ratio {:.2})",
        large_rss / 1024.0,
        small_rss / 1024.0,
        large_rss / small_rss
    );
    println!(
        "bench: 10^6-record ingest rate {:.2e} events/s",
        median(&mut small_rate)
    );
    user_overhead(&binary)?;
    if host_only {
        println!("bench: --host-only: kernel overhead (VM) and fuzzing NOT run");
        return Ok(());
    }
    for kernel in ["6.12", "6.1"] {
        kernel_overhead(&binary, kernel)?;
    }
    fuzz(20)?;
    Ok(())
}

/// Threads and seconds of one `tests/bench/pthread_loop` run.
const USER_LOOP_ARGS: [&str; 2] = ["2", "2"];

/// User-space overhead on the host itself (uprobes work here; real hardware, no emulation):
/// `tests/bench/pthread_loop` alone and under `locktrace trace --user --pid`, alternating.
fn user_overhead(binary: &Path) -> Result<()> {
    let root = workspace_root();
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let program = dir.join("pthread_loop");
    crate::run_checked(
        Command::new("gcc")
            .args(["-O2", "-g", "-fno-omit-frame-pointer", "-pthread", "-o"])
            .arg(&program)
            .arg(root.join("tests/bench/pthread_loop.c")),
    )
    .context("building tests/bench/pthread_loop.c")?;
    let (mut none, mut empty, mut traced) = (Vec::new(), Vec::new(), Vec::new());
    let mut summary = String::new();
    for _ in 0..ROUNDS {
        none.push(user_loop_once(&program, None)?.0);
        empty.push(user_loop_once(&program, Some((binary, UserHooks::Empty)))?.0);
        let (ops, tracer_summary) = user_loop_once(&program, Some((binary, UserHooks::Tracer)))?;
        traced.push(ops);
        summary = tracer_summary;
    }
    let (none, empty, traced) = (median(&mut none), median(&mut empty), median(&mut traced));
    println!(
        "bench: host user space (pthread_loop {} threads, nested mutex pair): \
         lock pairs/s median of {ROUNDS} alternating rounds: none {none:.0}, empty hooks \
         {empty:.0}, locktrace --user {traced:.0}",
        USER_LOOP_ARGS[0],
    );
    // Cost per lock pair above the untraced loop's, tracer against empty hooks (the floor:
    // the same probe hits, each running a program that does nothing).
    let cost = |ops: f64| 1.0 / ops - 1.0 / none;
    println!(
        "bench: host user space: locktrace/none = {:.2e}; empty-hooks/none = {:.2e}; \
         locktrace cost per lock pair / empty-hook cost = {:.2} (goal <= 2)",
        traced / none,
        empty / none,
        cost(traced) / cost(empty)
    );
    println!("bench: host user space: last traced round: {summary}");
    Ok(())
}

/// What a traced round runs alongside the loop.
#[derive(Clone, Copy)]
enum UserHooks {
    /// `locktrace trace --user --pid`.
    Tracer,
    /// `locktrace bench-hooks --pid`: empty programs on the same functions.
    Empty,
}

/// One run of the loop, under `tracer` if given: (lock pairs/s, the tracer's summary line).
fn user_loop_once(program: &Path, tracer: Option<(&Path, UserHooks)>) -> Result<(f64, String)> {
    let mut child = Command::new(program)
        .args(USER_LOOP_ARGS)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting pthread_loop")?;
    let mut lines = BufReader::new(child.stdout.take().context("pthread_loop stdout")?).lines();
    let pid = lines.next().context("pthread_loop printed no pid")??;
    let mut tracer_child = None;
    if let Some((tracer, hooks)) = tracer {
        let mut command = Command::new(tracer);
        match hooks {
            UserHooks::Tracer => command.args([
                "trace",
                "--user",
                "--max-overhead",
                "off",
                "--pid",
                pid.trim(),
            ]),
            UserHooks::Empty => command.args(["bench-hooks", "--pid", pid.trim()]),
        };
        let mut traced = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting locktrace")?;
        let mut stderr = BufReader::new(traced.stderr.take().context("locktrace stderr")?);
        let mut line = String::new();
        while !line.starts_with("locktrace: attached") {
            line.clear();
            if stderr.read_line(&mut line)? == 0 {
                bail!("locktrace exited before attaching");
            }
        }
        tracer_child = Some((traced, stderr));
    }
    child
        .stdin
        .take()
        .context("pthread_loop stdin")?
        .write_all(b"g")?;
    let ops: f64 = lines
        .find_map(|line| line.ok()?.strip_prefix("ops_per_s=")?.trim().parse().ok())
        .context("pthread_loop printed no ops_per_s")?;
    child.wait()?;
    let mut summary = String::new();
    if let Some((traced, mut stderr)) = tracer_child {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(traced.id() as i32, libc::SIGINT) };
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut rest)?;
        let mut traced = traced;
        traced.wait()?;
        summary = rest
            .lines()
            .find(|line| line.contains("detached"))
            .unwrap_or("")
            .to_string();
    }
    Ok((ops, summary))
}

/// Runs tests/scenarios/bench-kernel in the VM: the workload with no tracer, locktrace and
/// klockstat in alternating rounds; prints medians and the ratios.
fn kernel_overhead(binary: &std::path::Path, kernel: &str) -> Result<()> {
    let root = workspace_root();
    let out = root.join(format!("target/vm-out/bench-kernel-{kernel}"));
    let outcome = vm::run_vm(&vm::VmOptions {
        kernel: kernel.to_string(),
        scenario: root.join("tests/scenarios/bench-kernel"),
        out: out.clone(),
        tracer_args: Vec::new(),
        timeout: std::time::Duration::from_secs(1800),
        locktrace_bin: binary.to_path_buf(),
    })?;
    anyhow::ensure!(
        outcome.run_status == 0,
        "bench run.sh failed; see {}/console.log",
        out.display()
    );
    let lines = std::fs::read_to_string(out.join("bench.txt")).context("bench.txt")?;
    let mut rates: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for line in lines.lines().filter(|line| line.starts_with("round=")) {
        let field = |name: &str| line.split_whitespace().find_map(|f| f.strip_prefix(name));
        if let (Some(mode), Some(ops)) = (field("mode="), field("ops_per_s=")) {
            rates
                .entry(mode.to_string())
                .or_default()
                .push(ops.parse().context("ops_per_s")?);
        }
    }
    let mut median_of = |mode: &str| -> Result<f64> {
        let values = rates
            .get_mut(mode)
            .with_context(|| format!("no {mode} runs in bench.txt"))?;
        Ok(median(values))
    };
    let (none, locktrace, budgeted, empty, klockstat) = (
        median_of("none")?,
        median_of("locktrace")?,
        median_of("locktrace-budget")?,
        median_of("empty-hooks")?,
        median_of("klockstat")?,
    );
    let release = &outcome.kernel_release;
    println!(
        "bench: kernel {release}: ops/s median of {} alternating rounds: none {none:.0}, \
         locktrace {locktrace:.0}, locktrace with the default budget {budgeted:.0}, \
         empty hooks {empty:.0}, klockstat {klockstat:.0}",
        rates.get("none").map_or(0, Vec::len)
    );
    println!(
        "bench: kernel {release}: locktrace/none = {:.3} (unbudgeted; target >= 0.46 under TCG), \
         locktrace/klockstat = {:.3} (target >= 1.0)",
        locktrace / none,
        locktrace / klockstat
    );
    // Cost per operation: the time each one takes beyond the untraced run's.
    let cost = |ops: f64| 1.0 / ops - 1.0 / none;
    println!(
        "bench: kernel {release}: locktrace cost per lock operation / empty-hook cost = {:.2} \
         (goal <= 2: how close to the price of hooking at all; empty hooks/none = {:.3})",
        cost(locktrace) / cost(empty),
        empty / none
    );
    let budget = budget_outcome(&out);
    println!(
        "bench: kernel {release}: with the default budget: locktrace/none = {:.3}; {budget}",
        budgeted / none
    );
    print_profile(&out, &outcome.kernel_release)?;
    // Dedup: lock operations the eBPF side saw vs dependency records it delivered.
    for entry in std::fs::read_dir(&out)?.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("locktrace") && name.contains("-round") && name.ends_with(".json")) {
            continue;
        }
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(entry.path())?)?;
        let (events, records) = (
            report["stats"]["events"].as_u64().unwrap_or(0),
            report["stats"]["records"].as_u64().unwrap_or(0),
        );
        println!(
            "bench: kernel {}: {name}: {events} lock operations seen in eBPF, \
             {records} records delivered (1 per {:.0})",
            outcome.kernel_release,
            events as f64 / records.max(1) as f64
        );
    }
    Ok(())
}

/// What the default budget measured and shed in the budgeted runs (their JSON reports).
fn budget_outcome(out: &std::path::Path) -> String {
    let mut runs = Vec::new();
    for round in 1.. {
        let path = out.join(format!("locktrace-budget-round{round}.json"));
        let Ok(text) = std::fs::read_to_string(&path) else {
            break;
        };
        let Ok(report) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let budget = &report["overhead_budget"];
        let shed: Vec<&str> = budget["shed_at_end"]
            .as_array()
            .map(|steps| steps.iter().filter_map(serde_json::Value::as_str).collect())
            .unwrap_or_default();
        runs.push(format!(
            "round {round}: programs {:.2}% of busy CPU in the last 10 s ({:.2}% over the \
             whole trace; budget {}%), shed at the end: {}",
            budget["recent_overhead_percent"]
                .as_f64()
                .unwrap_or(f64::NAN),
            budget["overhead_percent"].as_f64().unwrap_or(f64::NAN),
            budget["budget_percent"],
            if shed.is_empty() {
                "nothing".to_string()
            } else {
                shed.join(", ")
            }
        ));
    }
    if runs.is_empty() {
        "no budgeted report".to_string()
    } else {
        runs.join("; ")
    }
}

/// The profile behind the ratios: per BPF program, invocations and average run time
/// (kernel.bpf_stats_enabled) while each tracer measured, round 1.
fn print_profile(out: &std::path::Path, kernel: &str) -> Result<()> {
    for tracer in ["locktrace", "locktrace-budget", "klockstat"] {
        let path = out.join(format!("profile-{tracer}-round1.txt"));
        let Ok(text) = std::fs::read_to_string(&path) else {
            println!("bench: kernel {kernel}: no profile for {tracer}");
            continue;
        };
        let mut programs: Vec<(String, u64, u64)> = text
            .lines()
            .filter_map(|line| {
                let field = |name: &str| line.split_whitespace().find_map(|f| f.strip_prefix(name));
                Some((
                    field("prog=")?.to_string(),
                    field("run_cnt=")?.parse().ok()?,
                    field("run_time_ns=")?.parse().ok()?,
                ))
            })
            .collect();
        programs.sort_by_key(|&(_, _, time)| std::cmp::Reverse(time));
        let (calls, time): (u64, u64) =
            programs.iter().fold((0, 0), |(c, t), p| (c + p.1, t + p.2));
        println!(
            "bench: kernel {kernel}: profile {tracer}: {calls} program runs, \
             {:.0} ns each on average; by total time:",
            time as f64 / calls.max(1) as f64
        );
        for (name, count, ns) in programs.iter().take(6) {
            println!(
                "bench:     {name:<16} {count:>9} runs {:>8.0} ns/run {:>5.1}%",
                *ns as f64 / (*count).max(1) as f64,
                100.0 * *ns as f64 / time.max(1) as f64
            );
        }
    }
    Ok(())
}
