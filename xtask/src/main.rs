//! Project automation: `cargo xtask setup|build|run|test|vm|demo|bench`.
mod bench;
mod dist;
mod expect;
mod layering;
mod lockdep_compare;
mod readme;
mod setup;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "xtask", about = "locktrace's build, test and VM automation")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what is missing: Debian packages, nightly rust-src, bpf-linker.
    Setup,
    /// Build the eBPF object and the `locktrace` binary (target/release/locktrace).
    Build,
    /// Build, then run `locktrace` with the given arguments (with sudo when not root).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test: rustfmt check, unit and host e2e tests, clippy, then the VM scenarios.
    Test {
        /// Skip the VM scenarios (for a quick local loop; CI never passes this).
        #[arg(long)]
        host_only: bool,
    },
    /// Fuzz the recording, lockdep-log and snapshot parsers (cargo fuzz, nightly).
    Fuzz {
        /// Seconds per fuzz target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Measure: daemon ingest throughput and memory, user-space overhead on the host, kernel
    /// overhead in the VM, a short fuzz run.
    Bench {
        /// Only what runs on the host (ingest, user-space overhead): no VM, no fuzzing.
        #[arg(long)]
        host_only: bool,
        /// Only the kernel overhead bench in the VM, on this kernel (6.12 or 6.1).
        #[arg(long, conflicts_with = "host_only")]
        kernel: Option<String>,
    },
    /// Package for fleets under target/dist/: binary, man pages, shell completions, systemd
    /// unit and a Debian package of them all.
    Dist,
    /// The one-minute demo: the nouveau svmm/vmm deadlock found on a production 6.12 kernel.
    Demo,
    /// Lockdep as the oracle: each kernel scenario on the lockdep kernel (lockdep observing) and
    /// on production 6.12 (locktrace tracing), compared: recall, precision, verdicts. Builds
    /// the lockdep kernel first if it is not cached (about 20 minutes on 2 cores).
    LockdepCompare {
        /// Scenarios to compare (default: everyday, semantics, plain-mutex, nouveau-svmm,
        /// nouveau-svmm-interval, nouveau-svmm-fixed, guards, rules).
        scenarios: Vec<String>,
        /// Compare the results of the last run again, without running the guests.
        #[arg(long)]
        compare_only: bool,
    },
    /// Check a scenario's `expect` file against the results of an earlier `vm` run.
    Check {
        #[arg(long)]
        scenario: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Boot a Debian kernel in qemu and run a scenario directory under locktrace.
    Vm {
        /// Kernel series: 6.1 (bookworm), 6.12 (bookworm-backports), or 6.12-lockdep (the same
        /// 6.12 source built with PROVE_LOCKING, once: lockdep observes, no tracer runs).
        #[arg(long, default_value = "6.12", value_parser = ["6.1", "6.12", "6.12-lockdep"])]
        kernel: String,
        #[arg(long)]
        scenario: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Extra arguments for `locktrace trace` in the guest.
        #[arg(long, default_value = "", allow_hyphen_values = true)]
        tracer_args: String,
        /// Give up on the guest after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
}

fn main() -> std::process::ExitCode {
    match dispatch(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Task::Setup => setup::setup(),
        Task::Build => build().map(|_| ()),
        Task::Run { args } => run(&args),
        Task::Test { host_only } => test(host_only),
        Task::Fuzz { seconds } => fuzz(seconds),
        Task::Demo => demo(),
        Task::Dist => dist::check(&dist::dist(&build()?)?),
        Task::LockdepCompare {
            scenarios,
            compare_only,
        } => lockdep_compare::lockdep_compare(&scenarios, compare_only),
        Task::Check { scenario, out } => {
            expect::check(&scenario.join("expect"), &out)?;
            println!(
                "check: {} holds for {}",
                scenario.join("expect").display(),
                out.display()
            );
            Ok(())
        }
        Task::Bench { host_only, kernel } => bench::bench(host_only, kernel.as_deref()),
        Task::Vm {
            kernel,
            scenario,
            out,
            tracer_args,
            timeout,
        } => {
            let locktrace_bin = build()?;
            let outcome = vm::run_vm(&vm::VmOptions {
                kernel,
                scenario,
                out,
                tracer_args: tracer_args.split_whitespace().map(String::from).collect(),
                timeout: Duration::from_secs(timeout),
                locktrace_bin,
            })?;
            println!(
                "vm: kernel {} ran the scenario; run.sh exited {}; results in {}",
                outcome.kernel_release,
                outcome.run_status,
                outcome.out.display()
            );
            Ok(())
        }
    }
}

/// `path` relative to the workspace when it lies inside it (what messages print: no path of
/// one machine).
pub fn relative_to_workspace(path: &Path) -> &Path {
    path.strip_prefix(workspace_root()).unwrap_or(path)
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn ensure_setup() -> Result<()> {
    if setup::is_complete() {
        return Ok(());
    }
    println!("xtask: toolchain incomplete, running setup first");
    setup::setup()
}

/// Builds everything; returns the path of the release `locktrace` binary.
pub fn build() -> Result<PathBuf> {
    ensure_setup()?;
    run_checked(cargo().args(["build", "--release", "--package", "tracer-user"]))?;
    // Where cargo put it: CARGO_TARGET_DIR moves the build (relative to the workspace).
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    let binary = workspace_root().join(target).join("release/locktrace");
    if !binary.exists() {
        bail!("build finished but {} is missing", binary.display());
    }
    Ok(binary)
}

/// Runs tests/scenarios/nouveau-svmm in a Debian 6.12 guest and prints locktrace's report.
fn demo() -> Result<()> {
    let binary = build()?;
    let root = workspace_root();
    let out = root.join("target/vm-out/demo");
    println!(
        "demo: booting Debian 6.12 (production config, no lockdep) under qemu; loading a module"
    );
    println!("demo: that locks like nouveau's SVM code, and tracing it with locktrace...");
    std::env::set_var("LOCKTRACE_VM_QUIET", "1");
    let outcome = vm::run_vm(&vm::VmOptions {
        kernel: "6.12".into(),
        scenario: root.join("tests/scenarios/nouveau-svmm"),
        out: out.clone(),
        tracer_args: Vec::new(),
        timeout: Duration::from_secs(300),
        locktrace_bin: binary,
    })?;
    let report =
        std::fs::read_to_string(out.join("report.txt")).context("reading the demo's report.txt")?;
    println!(
        "demo: kernel {} — locktrace's report:\n",
        outcome.kernel_release
    );
    println!("{}", report.trim_end());
    println!(
        "\ndemo: full results (report.json, report.txt, graph.dot, console.log) in {}",
        relative_to_workspace(&out).display()
    );
    Ok(())
}

/// The fuzz targets under fuzz/ (one per parser).
const FUZZ_TARGETS: &[&str] = &["trace_replay", "lockdep_import", "snapshot_json"];
const CARGO_FUZZ_VERSION: &str = "0.13.1";

pub fn fuzz(seconds: u64) -> Result<()> {
    ensure_setup()?;
    if command_output(Command::new("cargo").args(["fuzz", "--version"])).is_err() {
        println!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
        run_checked(Command::new("cargo").args([
            "install",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
        ]))?;
    }
    for target in FUZZ_TARGETS {
        println!("xtask: fuzzing {target} for {seconds} s");
        run_checked(
            Command::new("cargo")
                .current_dir(workspace_root().join("fuzz"))
                .args(["+nightly", "fuzz", "run", target, "--"])
                .arg(format!("-max_total_time={seconds}")),
        )
        .with_context(|| {
            format!("fuzz target {target} found a crash (see fuzz/artifacts/{target})")
        })?;
    }
    Ok(())
}

fn run(args: &[String]) -> Result<()> {
    let binary = build()?;
    let mut command = if is_root() {
        Command::new(&binary)
    } else {
        println!("xtask: locktrace needs root; running it with sudo");
        let mut sudo = Command::new("sudo");
        sudo.arg(&binary);
        sudo
    };
    let status = command.args(args).status().context("starting locktrace")?;
    if !status.success() {
        bail!("locktrace exited with {status}");
    }
    Ok(())
}

fn test(host_only: bool) -> Result<()> {
    ensure_setup()?;
    let mut results = TestResults::default();
    // First, so a formatting slip shows at once; rustfmt.toml's options need nightly.
    results.record(
        "rustfmt",
        run_checked(
            Command::new("rustup")
                .current_dir(workspace_root())
                .args(["run", "nightly", "cargo", "fmt", "--all", "--check"]),
        ),
    );
    results.record(
        "no import circle among tracer-user's modules",
        layering::check_no_import_cycle(&workspace_root().join("tracer-user/src")),
    );
    // Default members: everything but tracer-ebpf, which only builds for the BPF target.
    results.record(
        "cargo test (unit + host e2e)",
        run_checked(cargo().arg("test")),
    );
    results.record(
        "clippy",
        run_checked(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"])),
    );
    results.record(
        "clippy (eBPF, nightly, bpfel-unknown-none)",
        run_checked(
            Command::new("rustup")
                .current_dir(workspace_root())
                .args([
                    "run",
                    "nightly",
                    "cargo",
                    "clippy",
                    "--package",
                    "tracer-ebpf",
                    "--release",
                ])
                .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
                .args(["--", "-D", "warnings"]),
        ),
    );
    results.record(
        "package: completions parse, man pages render, .deb contents, unit verifies",
        build().and_then(|binary| dist::check(&dist::dist(&binary)?)),
    );
    if host_only {
        println!("xtask: --host-only: VM scenarios NOT run");
    } else {
        let binary = build()?;
        vm_tests(&binary, &mut results);
    }
    results.finish()
}

/// Kernel e2e tests: every scenario under tests/scenarios that has an `expect` file, on
/// each kernel series and in each attach mode, two guests at a time (one core each).
/// A scenario's VM timeout: 300 s, or the seconds in its `timeout` file (a scenario that
/// attaches several tracers in turn needs more under TCG).
fn scenario_timeout(scenario: &Path) -> Result<Duration> {
    let path = scenario.join("timeout");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let seconds: u64 = text
                .trim()
                .parse()
                .with_context(|| format!("{}: not a number of seconds", path.display()))?;
            Ok(Duration::from_secs(seconds))
        }
        Err(_) => Ok(Duration::from_secs(300)),
    }
}

fn vm_tests(binary: &Path, results: &mut TestResults) {
    let root = workspace_root();
    let mut scenarios: Vec<PathBuf> = std::fs::read_dir(root.join("tests/scenarios"))
        .map(|dir| {
            dir.filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .collect()
        })
        .unwrap_or_default();
    scenarios.retain(|dir| dir.join("expect").is_file());
    scenarios.sort();
    let mut runs = Vec::new();
    for scenario in &scenarios {
        for kernel in vm::KERNEL_SERIES {
            for mode in ["fentry", "kprobe"] {
                runs.push((scenario.clone(), kernel.to_string(), mode));
            }
        }
    }
    if runs.is_empty() {
        results.record(
            "VM scenarios",
            Err(anyhow::anyhow!("no scenario with an `expect` file found")),
        );
        return;
    }
    // Fetch each kernel once, before the parallel runs race for the cache.
    for kernel in vm::KERNEL_SERIES {
        if let Err(err) = vm::prepare_kernel(kernel) {
            results.record(&format!("VM kernel {kernel}"), Err(err));
            return;
        }
    }
    let queue = std::sync::Mutex::new(runs.into_iter());
    let outcomes = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..VM_PARALLEL {
            scope.spawn(|| loop {
                let Some((scenario, kernel, mode)) = queue.lock().unwrap().next() else {
                    break;
                };
                let name = scenario
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                let label = format!("vm {name} on {kernel} ({mode})");
                let out = root.join(format!("target/vm-out/{name}-{kernel}-{mode}"));
                let started = std::time::Instant::now();
                let outcome = scenario_timeout(&scenario)
                    .and_then(|timeout| {
                        vm::run_vm(&vm::VmOptions {
                            kernel: kernel.clone(),
                            scenario: scenario.clone(),
                            out: out.clone(),
                            tracer_args: vec!["--attach".into(), mode.into()],
                            timeout,
                            locktrace_bin: binary.to_path_buf(),
                        })
                    })
                    .and_then(|outcome| {
                        expect::check(&scenario.join("expect"), &out).with_context(|| {
                            format!("expectations of {name} (results in {})", out.display())
                        })?;
                        Ok(outcome)
                    });
                let outcome = outcome.map(|outcome| {
                    println!(
                        "xtask: {label}: kernel {} in {:.0} s",
                        outcome.kernel_release,
                        started.elapsed().as_secs_f64()
                    );
                });
                outcomes.lock().unwrap().push((label, outcome));
            });
        }
    });
    let mut outcomes = outcomes.into_inner().unwrap();
    outcomes.sort_by(|a, b| a.0.cmp(&b.0));
    let demo_ran = outcomes
        .iter()
        .any(|(label, outcome)| label == DEMO_RUN && outcome.is_ok());
    for (label, outcome) in outcomes {
        results.record(&label, outcome);
    }
    // The demo is this run (same scenario, kernel series and, by default, fentry).
    let check = if demo_ran {
        let readme = std::fs::read_to_string(root.join("README.md")).context("reading README.md");
        let report =
            std::fs::read_to_string(root.join("target/vm-out/nouveau-svmm-6.12-fentry/report.txt"))
                .context("reading the nouveau-svmm 6.12 report");
        readme.and_then(|readme| readme::check_demo_report(&readme, &report?))
    } else {
        Err(anyhow::anyhow!(
            "`{DEMO_RUN}` did not pass, so there is no report to compare with"
        ))
    };
    results.record(
        "README demo output agrees with today's nouveau-svmm run on 6.12",
        check,
    );
}

/// The VM run whose report the README's demo output shows.
const DEMO_RUN: &str = "vm nouveau-svmm on 6.12 (fentry)";

/// Guests run at once: qemu's single-threaded TCG keeps one core busy each.
const VM_PARALLEL: usize = 2;

/// Outcome of each test step, closing with one `xtask: N passed, N failed` line.
#[derive(Default)]
struct TestResults {
    passed: Vec<String>,
    failed: Vec<(String, String)>,
}

impl TestResults {
    fn record(&mut self, name: &str, result: Result<()>) {
        match result {
            Ok(()) => {
                println!("xtask: PASS {name}");
                self.passed.push(name.to_string());
            }
            Err(err) => {
                println!("xtask: FAIL {name}: {err:#}");
                self.failed.push((name.to_string(), format!("{err:#}")));
            }
        }
    }

    fn finish(self) -> Result<()> {
        for (name, err) in &self.failed {
            println!("xtask: failed: {name}: {err}");
        }
        println!(
            "xtask: {} passed, {} failed",
            self.passed.len(),
            self.failed.len()
        );
        if self.failed.is_empty() {
            Ok(())
        } else {
            bail!("{} test step(s) failed", self.failed.len())
        }
    }
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn run_checked(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("starting {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

pub fn command_output(command: &mut Command) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("starting {command:?}"))?;
    if !output.status.success() {
        bail!("{command:?} failed with {}", output.status);
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
