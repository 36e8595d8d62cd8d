//! Offline sources and sinks: recorded traces, lockdep logs and snapshots in, reports and
//! exports out. No BPF here; these run anywhere, without privileges.
use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{bail, Context as _, Result};
use clap::ValueEnum;
use lockgraph::{LockGraph, Suppressions};

use crate::{
    output::{write_atomic, LiveFindings, Outputs},
    report_options::{load_suppressions, read_input, ReportArgs},
};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Json,
    Dot,
    Graphml,
    /// Drawn in-process (no Graphviz): the whole graph, or the cycle of `--cycle`.
    Svg,
    /// A self-contained page about the cycle of `--cycle`: report text, picture, stacks.
    Html,
}

/// A snapshot JSON or a JSON-lines trace, told apart by the first line. Traces are
/// streamed, so a long recording replays in memory proportional to its graph.
pub fn load_graph(path: &Path) -> Result<LockGraph> {
    let reader: Box<dyn std::io::Read> = if path == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        Box::new(fs::File::open(path).with_context(|| format!("reading {}", path.display()))?)
    };
    let mut reader = BufReader::new(reader);
    let mut head = String::new();
    while head.trim().is_empty() {
        if reader
            .read_line(&mut head)
            .with_context(|| format!("reading {}", path.display()))?
            == 0
        {
            bail!("{}: empty input", path.display());
        }
    }
    // Every trace line has a "type" field; a snapshot opens with `{` and a "classes" array.
    let is_trace = head.trim_start().starts_with('#') || head.contains("\"type\"");
    let graph = if is_trace {
        lockgraph::replay(head.as_bytes().chain(reader))
    } else {
        let mut text = head;
        reader
            .read_to_string(&mut text)
            .with_context(|| format!("reading {}", path.display()))?;
        LockGraph::from_snapshot_json(&text)
    };
    let graph = graph.with_context(|| format!("{}", path.display()))?;
    if graph.stats().truncated_records > 0 {
        log::warn!(
            "{}: the last record is cut short (the writer was stopped mid-line): \
             skipped, every complete record read",
            path.display()
        );
    }
    Ok(graph)
}

fn emit_report(graph: &LockGraph, args: &ReportArgs) -> Result<ExitCode> {
    let suppressions = load_suppressions(args.suppress.as_deref())?;
    let outputs = Outputs {
        report_json: args.report_json.clone(),
        report_text: args.report_text.clone(),
        dot: args.dot.clone(),
        ..Outputs::default()
    };
    outputs.check()?;
    outputs.write(graph, &suppressions, &LiveFindings::default())?;
    let report = graph.report(&suppressions);
    if args.report_text.is_none() {
        print!("{}", report.text());
    }
    if args.fail_on_cycle && report.has_unguarded_cycle() {
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

/// `locktrace report FILE`: rebuild the graph from a recording (or snapshot) and report.
pub fn report(file: &Path, args: &ReportArgs) -> Result<ExitCode> {
    emit_report(&load_graph(file)?, args)
}

/// `locktrace import-lockdep [--proc-lockdep] FILE|-`: lockdep reports from a console log,
/// or lockdep's graph from `/proc/lockdep`, into the graph.
pub fn import_lockdep(file: &Path, proc_lockdep: bool, args: &ReportArgs) -> Result<ExitCode> {
    let text = read_input(file)?;
    let mut graph = LockGraph::new();
    if proc_lockdep {
        lockgraph::import_proc_lockdep(&mut graph, &text)
            .with_context(|| format!("{}", file.display()))?;
    } else {
        let import = lockgraph::import_lockdep(&mut graph, &text)
            .with_context(|| format!("{}", file.display()))?;
        for note in &import.notes {
            log::warn!("{}: {note}", file.display());
        }
    }
    emit_report(&graph, args)
}

/// `locktrace export SNAP --format F [--cycle ID] [-o OUT]`.
pub fn export(
    file: &Path,
    format: ExportFormat,
    cycle: Option<&str>,
    out: Option<&Path>,
) -> Result<ExitCode> {
    let graph = load_graph(file)?;
    let none = Suppressions::default();
    let cycle = match cycle {
        Some(id) => Some(find_cycle(&graph, file, id)?),
        None => None,
    };
    let bytes = match (format, cycle) {
        (ExportFormat::Json, None) => serde_json::to_vec_pretty(&graph.report(&none).json())?,
        (ExportFormat::Dot, None) => lockgraph::to_dot(&graph).into_bytes(),
        (ExportFormat::Graphml, None) => lockgraph::to_graphml(&graph).into_bytes(),
        (ExportFormat::Svg, None) => lockgraph::to_svg(&graph).into_bytes(),
        (ExportFormat::Svg, Some(cycle)) => lockgraph::cycle_to_svg(&graph, cycle).into_bytes(),
        (ExportFormat::Html, Some(cycle)) => {
            lockgraph::cycle_to_html(&graph, &none, cycle).into_bytes()
        }
        (ExportFormat::Html, None) => bail!(
            "--format html is a page about one cycle: give --cycle ID ({})",
            cycle_ids(&graph)
        ),
        (ExportFormat::Json | ExportFormat::Dot | ExportFormat::Graphml, Some(_)) => {
            bail!("--cycle works with --format svg or html")
        }
    };
    match out {
        Some(path) => write_atomic(path, &bytes)?,
        None => {
            std::io::stdout().write_all(&bytes)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `cycles: ID, ID` or `FILE has no cycles`-style text for the errors.
fn cycle_ids(graph: &LockGraph) -> String {
    if graph.cycles().is_empty() {
        return "the graph has no cycles".to_string();
    }
    let ids: Vec<&str> = graph.cycles().iter().map(|c| c.id.as_str()).collect();
    format!("cycles: {}", ids.join(", "))
}

fn find_cycle<'g>(graph: &'g LockGraph, file: &Path, id: &str) -> Result<&'g lockgraph::Cycle> {
    match graph.cycles().iter().find(|c| c.id == id) {
        Some(cycle) => Ok(cycle),
        None => bail!("{}: no cycle {id}; {}", file.display(), cycle_ids(graph)),
    }
}

/// `locktrace merge A B ... -o OUT`.
pub fn merge(files: &[PathBuf], out: &Path) -> Result<ExitCode> {
    let graphs = files
        .iter()
        .map(|file| load_graph(file))
        .collect::<Result<Vec<_>>>()?;
    let merged = lockgraph::merge(&graphs).context("merging snapshots")?;
    let json = serde_json::to_vec_pretty(&merged.report(&Suppressions::default()).json())?;
    write_atomic(out, &json)?;
    log::info!(
        "merged {} snapshots: {}",
        files.len(),
        merged.report(&Suppressions::default()).summary()
    );
    Ok(ExitCode::SUCCESS)
}

/// `locktrace diff OLD NEW [--json]`: dependencies and cycles that appeared. Exits 3 when
/// a new unguarded cycle appeared, so a script can gate on it.
pub fn diff(old: &Path, new: &Path, json: bool) -> Result<ExitCode> {
    let diff = lockgraph::diff(&load_graph(old)?, &load_graph(new)?);
    if json {
        let mut value = serde_json::to_value(&diff)?;
        value["schema"] = lockgraph::SCHEMA_VERSION.into();
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        for dep in &diff.new_dependencies {
            println!("+ dependency {} -> {}", dep.held, dep.new);
        }
        for cycle in &diff.new_cycles {
            let state = match (&cycle.guarded_by, cycle.suppressed) {
                (_, true) => " (suppressed)".to_string(),
                (Some(guard), false) => format!(" (guarded by {guard})"),
                (None, false) => String::new(),
            };
            println!(
                "+ cycle {}: {}{state}",
                cycle.id,
                cycle.classes.join(" -> ")
            );
        }
        println!(
            "{} new dependencies, {} new cycles",
            diff.new_dependencies.len(),
            diff.new_cycles.len()
        );
    }
    if diff
        .new_cycles
        .iter()
        .any(lockgraph::NewCycle::is_unguarded)
    {
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}
