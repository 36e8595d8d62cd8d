//! `cargo xtask lockdep-compare`: each kernel scenario run twice, on the lockdep kernel with
//! lockdep observing and on the production 6.12 kernel under `locktrace trace`, and the two
//! compared (see [`compare`] for what is counted and how). Prints a table per scenario, the
//! differences by cause, and the figures `lockdep/recall`, `lockdep/precision` and
//! `lockdep/verdicts` over all scenarios; the full lists go to
//! `target/lockdep-compare/<scenario>/comparison.txt`.

mod compare;

use std::{fmt::Write as _, fs, path::Path, time::Duration};

use anyhow::{ensure, Context as _, Result};

use self::compare::{compare, Comparison, LockdepSide};
use crate::vm;

/// The kernel scenarios compared: those whose workload is the same with and without a
/// tracer (not the tracer's own robustness scenarios, not the real deadlock, which hangs).
pub const SCENARIOS: &[&str] = &[
    "everyday",
    "semantics",
    "plain-mutex",
    "nouveau-svmm",
    "nouveau-svmm-interval",
    "nouveau-svmm-fixed",
    "guards",
    "rules",
];

/// The scenario whose lockdep report must equal locktrace's cycle.
const MOTIVATING_SCENARIO: &str = "nouveau-svmm-interval";

/// Examples printed per cause (all of them are in comparison.txt).
const EXAMPLES: usize = 3;

/// `compare_only`: compare the results an earlier run left in target/lockdep-compare.
pub fn lockdep_compare(scenarios: &[String], compare_only: bool) -> Result<()> {
    let scenarios: Vec<String> = if scenarios.is_empty() {
        SCENARIOS.iter().map(|s| s.to_string()).collect()
    } else {
        scenarios.to_vec()
    };
    let root = crate::workspace_root();
    for s in &scenarios {
        ensure!(
            root.join("tests/scenarios")
                .join(s)
                .join("run.sh")
                .is_file(),
            "unknown scenario {s:?}: not a directory of tests/scenarios with a run.sh"
        );
    }
    let out_root = root.join("target/lockdep-compare");
    let mut results = Vec::new();
    if compare_only {
        for scenario in &scenarios {
            let out = out_root.join(scenario);
            let comparison = compare_outputs(&out.join("lockdep"), &out.join("locktrace"))
                .with_context(|| {
                    format!("comparing {scenario} (run without --compare-only first)")
                })?;
            fs::write(out.join("comparison.txt"), details(scenario, &comparison))?;
            results.push((scenario.clone(), comparison));
        }
        let text = summary(&results, "the production kernel", "the lockdep kernel");
        print!("{text}");
        return check_motivating(&results);
    }
    let locktrace_bin = crate::build()?;
    let production = vm::prepare_kernel("6.12")?;
    let lockdep_release = vm::prepare_kernel(vm::LOCKDEP_KERNEL)?;
    std::env::set_var("LOCKTRACE_VM_QUIET", "1");

    for scenario in &scenarios {
        let dir = root.join("tests/scenarios").join(scenario);
        let out = out_root.join(scenario);
        let run = |kernel: &str, sub: &str, tracer_args: &[&str], timeout: u64| {
            vm::run_vm(&vm::VmOptions {
                kernel: kernel.to_string(),
                scenario: dir.clone(),
                out: out.join(sub),
                tracer_args: tracer_args.iter().map(|a| a.to_string()).collect(),
                timeout: Duration::from_secs(timeout),
                locktrace_bin: locktrace_bin.clone(),
            })
            .with_context(|| format!("{scenario} on {kernel}"))
        };
        eprintln!("lockdep-compare: {scenario}: lockdep kernel and production kernel side by side");
        let (lockdep_run, locktrace_run) = std::thread::scope(|s| {
            let lockdep = s.spawn(|| run(vm::LOCKDEP_KERNEL, "lockdep", &[], 600));
            // Unbudgeted: the comparison measures the rules, not what a budget sheds.
            let locktrace = s.spawn(|| {
                run(
                    "6.12",
                    "locktrace",
                    &["--attach", "fentry", "--max-overhead", "off"],
                    420,
                )
            });
            (lockdep.join(), locktrace.join())
        });
        let lockdep_run =
            lockdep_run.map_err(|_| anyhow::anyhow!("the lockdep run panicked"))??;
        let locktrace_run =
            locktrace_run.map_err(|_| anyhow::anyhow!("the locktrace run panicked"))??;
        let comparison = compare_outputs(&lockdep_run.out, &locktrace_run.out)
            .with_context(|| format!("comparing {scenario}"))?;
        fs::write(out.join("comparison.txt"), details(scenario, &comparison))?;
        results.push((scenario.clone(), comparison));
    }

    let text = summary(&results, &production, &lockdep_release);
    print!("{text}");
    fs::write(out_root.join("summary.txt"), text)?;
    check_motivating(&results)
}

/// The nouveau cycle lockdep reports must be locktrace's.
fn check_motivating(results: &[(String, Comparison)]) -> Result<()> {
    if let Some((_, c)) = results.iter().find(|(s, _)| s == MOTIVATING_SCENARIO) {
        ensure!(
            !c.lockdep_verdicts.is_empty() && c.lockdep_verdicts.iter().all(|(_, found)| *found),
            "{MOTIVATING_SCENARIO}: lockdep's report is not locktrace's cycle: {:?}",
            c.lockdep_verdicts
        );
        eprintln!("lockdep-compare: {MOTIVATING_SCENARIO}: lockdep's report is locktrace's cycle");
    }
    Ok(())
}

fn read(dir: &Path, name: &str) -> Result<String> {
    let path = dir.join(name);
    fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

fn compare_outputs(lockdep: &Path, locktrace: &Path) -> Result<Comparison> {
    let side = LockdepSide::parse(
        &read(lockdep, "lockdep-before.txt")?,
        &read(lockdep, "lockdep.txt")?,
        &read(lockdep, "lockdep_classes.txt")?,
        &read(lockdep, "lockdep_stats.txt")?,
        &read(lockdep, "console.log")?,
    )
    .map_err(anyhow::Error::msg)?;
    let report: lockgraph::ReportJson = serde_json::from_str(&read(locktrace, "report.json")?)
        .context("locktrace's report.json")?;
    Ok(compare(&side, &report))
}

fn ratio(num: usize, den: usize) -> String {
    if den == 0 {
        "n/a".to_string()
    } else {
        format!("{:.3}", num as f64 / den as f64)
    }
}

fn summary(results: &[(String, Comparison)], production: &str, lockdep: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "lockdep-compare: lockdep on {lockdep} against locktrace on {production} ({})",
        vm::lockdep_kernel_build_time().unwrap_or_default()
    );
    let _ = writeln!(
        s,
        "{:<20} {:>7} {:>7} {:>7} {:>9} {:>7} {:>7} {:>9} {:>9} {:>8}",
        "scenario",
        "lockdep",
        "found",
        "recall",
        "locktrace",
        "ordered",
        "precis",
        "unnamed",
        "verdicts",
        "lockdep"
    );
    let (mut counted, mut recalled, mut traced, mut precise, mut agree, mut total) =
        (0, 0, 0, 0, 0, 0);
    for (scenario, c) in results {
        let _ = writeln!(
            s,
            "{:<20} {:>7} {:>7} {:>7} {:>9} {:>7} {:>7} {:>9} {:>9} {:>8}",
            scenario,
            c.lockdep_counted,
            c.recalled,
            ratio(c.recalled, c.lockdep_counted),
            c.locktrace_counted,
            c.precise,
            ratio(c.precise, c.locktrace_counted),
            c.locktrace_unnamed,
            format!("{}/{}", c.verdicts_agreeing(), c.verdicts_total()),
            if c.lockdep_turned_off { "off" } else { "on" },
        );
        counted += c.lockdep_counted;
        recalled += c.recalled;
        traced += c.locktrace_counted;
        precise += c.precise;
        agree += c.verdicts_agreeing();
        total += c.verdicts_total();
    }
    let _ = writeln!(
        s,
        "(lockdep: its direct dependencies between mutexes, rwsems and the two pseudo-locks; \
         found: of those, seen by locktrace; locktrace: its dependencies between named classes; \
         ordered: of those, ordered by lockdep's graph; unnamed: locktrace dependencies with a \
         class named by acquire site, not compared; lockdep off: it turned itself off after a \
         report)"
    );
    for (scenario, c) in results {
        for (what, causes) in [("missed", &c.misses), ("extra", &c.extras)] {
            for (cause, pairs) in causes.iter() {
                let examples: Vec<String> = pairs
                    .iter()
                    .take(EXAMPLES)
                    .map(|(a, b)| format!("{a} -> {b}"))
                    .collect();
                let _ = writeln!(
                    s,
                    "{scenario}: {} {what}: {}; e.g. {}",
                    pairs.len(),
                    cause.describe(),
                    examples.join(", ")
                );
            }
        }
        if !c.subclass_nestings.is_empty() {
            let names: Vec<&str> = c.subclass_nestings.iter().map(String::as_str).collect();
            let _ = writeln!(
                s,
                "{scenario}: lockdep nests by subclass (not compared as dependencies): {}",
                names.join(", ")
            );
        }
        for (report, found) in &c.lockdep_verdicts {
            let _ = writeln!(
                s,
                "{scenario}: lockdep reports {report}: {}",
                if *found {
                    "locktrace too"
                } else {
                    "locktrace NOT"
                }
            );
        }
        for f in c.locktrace_findings.iter().filter(|f| !f.agrees) {
            let _ = writeln!(
                s,
                "{scenario}: locktrace reports {}: {}",
                f.finding, f.explanation
            );
        }
    }
    let _ = writeln!(s, "lockdep/recall {}", ratio(recalled, counted));
    let _ = writeln!(s, "lockdep/precision {}", ratio(precise, traced));
    let _ = writeln!(s, "lockdep/verdicts {agree}/{total}");
    s
}

fn details(scenario: &str, c: &Comparison) -> String {
    let mut s = format!("{scenario}\n");
    for (what, causes) in [("missed", &c.misses), ("extra", &c.extras)] {
        for (cause, pairs) in causes.iter() {
            let _ = writeln!(s, "\n{what}, {} ({}):", cause.describe(), pairs.len());
            for (a, b) in pairs {
                let _ = writeln!(s, "  {a} -> {b}");
            }
        }
    }
    let _ = writeln!(
        s,
        "\nlockdep dependencies on kinds not traced: {}",
        c.lockdep_not_traced
    );
    let _ = writeln!(
        s,
        "locktrace dependencies with an acquire-site class: {}",
        c.locktrace_unnamed
    );
    s
}
