//! A VM run's results as the assertions read them: report.json, held.json, report.txt,
//! console.log and run.status; class names compare modulo lockdep's `#N` suffix.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

use anyhow::{Context as _, Result};
use lockgraph::{CycleJson, ReportJson};
use serde_json::Value;

pub(super) fn strip_suffix(name: &str) -> &str {
    match name.rsplit_once('#') {
        Some((base, n))
            if !base.is_empty() && n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty() =>
        {
            base
        }
        _ => name,
    }
}

pub(super) struct Results {
    /// report.json as lockgraph writes it: a field renamed there breaks this build, and a
    /// report it cannot read fails the run. `None` in a `no-tracer` scenario.
    pub(super) report: Option<ReportJson>,
    /// The same document untyped, for what the live tracer adds to it (`deadlocks`, from
    /// the `locktrace` binary, which no library shares).
    pub(super) report_document: Value,
    pub(super) held: Value,
    pub(super) text: String,
    pub(super) console: String,
    pub(super) run_status: i32,
    /// The harness's tracer (none in a `no-tracer` scenario): its stderr and exit status.
    pub(super) tracer_log: Option<String>,
    pub(super) tracer_status: Option<String>,
}

/// A class name from the report, modulo lockdep's `#N` suffix.
fn class(name: &str) -> String {
    strip_suffix(name).to_string()
}

impl Results {
    pub(super) fn load(out: &Path) -> Result<Self> {
        let read = |name: &str| {
            fs::read_to_string(out.join(name)).with_context(|| format!("reading {name}"))
        };
        // A no-tracer scenario has no report.json; only its assertions need one.
        let (report, report_document) = match read("report.json") {
            Ok(text) => (
                Some(serde_json::from_str(&text).context("report.json is no lockgraph report")?),
                serde_json::from_str(&text).context("parsing report.json")?,
            ),
            Err(_) => (None, Value::Null),
        };
        let held = read("held.json")
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or(Value::Null);
        Ok(Self {
            report,
            report_document,
            held,
            text: read("report.txt").unwrap_or_default(),
            console: read("console.log").unwrap_or_default(),
            run_status: read("run.status")?.trim().parse().context("run.status")?,
            tracer_log: read("tracer.log").ok(),
            tracer_status: read("tracer.status").ok().map(|s| s.trim().to_string()),
        })
    }

    /// The typed report (assertions that read it run only when there is one).
    pub(super) fn graph(&self) -> &ReportJson {
        static EMPTY: std::sync::OnceLock<ReportJson> = std::sync::OnceLock::new();
        self.report
            .as_ref()
            .unwrap_or_else(|| EMPTY.get_or_init(ReportJson::default))
    }

    /// Modes (`w/w`, `r/w`, …: held/new) an edge was seen with.
    pub(super) fn modes(&self, from: &str, to: &str) -> Vec<String> {
        self.graph()
            .edges
            .iter()
            .filter(|edge| class(&edge.from) == from && class(&edge.to) == to)
            .flat_map(|edge| edge.modes.iter().cloned())
            .collect()
    }

    pub(super) fn edges(&self) -> BTreeSet<(String, String)> {
        self.graph()
            .edges
            .iter()
            .map(|edge| (class(&edge.from), class(&edge.to)))
            .collect()
    }

    /// The dependencies among classes named `PREFIX…` (the prefix removed), each with the
    /// class of its guard when every occurrence ran under one and the same instance.
    pub(super) fn rule_verdicts(&self, prefix: &str) -> BTreeMap<(String, String), Option<String>> {
        let strip = |name: &str| -> Option<String> {
            strip_suffix(name).strip_prefix(prefix).map(String::from)
        };
        let mut verdicts = BTreeMap::new();
        for edge in &self.graph().edges {
            let (Some(from), Some(to)) = (strip(&edge.from), strip(&edge.to)) else {
                continue;
            };
            let guard = match edge.guards.as_slice() {
                [Some(only)] => strip(&only.class),
                _ => None,
            };
            verdicts.insert((from, to), guard);
        }
        verdicts
    }

    /// The classes named `PREFIX…` (the prefix removed) with possible recursive locking.
    pub(super) fn rule_recursive(&self, prefix: &str) -> BTreeSet<String> {
        self.graph()
            .recursive
            .iter()
            .filter(|found| found.nesting_annotation.is_none())
            .filter_map(|found| {
                strip_suffix(&found.class)
                    .strip_prefix(prefix)
                    .map(String::from)
            })
            .collect()
    }

    pub(super) fn unguarded_cycles(&self) -> Vec<&CycleJson> {
        self.graph()
            .cycles
            .iter()
            .filter(|c| c.guarded_by.is_none() && !c.suppressed)
            .collect()
    }

    /// `uname -r` of the guest, from the harness's console line.
    pub(super) fn kernel_release(&self) -> &str {
        self.console
            .lines()
            .find_map(|line| line.strip_prefix("lt-init: uname-r "))
            .map_or("", str::trim)
    }
}

/// The deadlock of `document` whose tasks wait for exactly `classes`.
pub(super) fn find_deadlock<'a>(
    document: &'a Value,
    classes: &BTreeSet<String>,
) -> Result<&'a Value> {
    let deadlocks = document["deadlocks"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let waits = |deadlock: &Value| -> BTreeSet<String> {
        deadlock["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|task| task["waiting_for"].as_str())
            .map(|name| strip_suffix(name).to_string())
            .collect()
    };
    let seen: Vec<BTreeSet<String>> = deadlocks.iter().map(waits).collect();
    deadlocks
        .iter()
        .find(|deadlock| &waits(deadlock) == classes)
        .with_context(|| format!("no deadlock waiting for {classes:?}; deadlocks seen: {seen:?}"))
}

pub(super) fn class_set(cycle: &CycleJson) -> BTreeSet<String> {
    cycle.classes.iter().map(|name| class(name)).collect()
}
