//! A VM run's results as the assertions read them: report.json, held.json, report.txt,
//! console.log and run.status; class names compare modulo lockdep's `#N` suffix.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

use anyhow::{Context as _, Result};
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
    pub(super) report: Value,
    pub(super) held: Value,
    pub(super) text: String,
    pub(super) console: String,
    pub(super) run_status: i32,
    /// The harness's tracer (none in a `no-tracer` scenario): its stderr and exit status.
    pub(super) tracer_log: Option<String>,
    pub(super) tracer_status: Option<String>,
}

impl Results {
    pub(super) fn load(out: &Path) -> Result<Self> {
        let read = |name: &str| {
            fs::read_to_string(out.join(name)).with_context(|| format!("reading {name}"))
        };
        // A no-tracer scenario has no report.json; only its assertions need one.
        let report: Value = match read("report.json") {
            Ok(text) => serde_json::from_str(&text).context("parsing report.json")?,
            Err(_) => Value::Null,
        };
        let held = read("held.json")
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or(Value::Null);
        Ok(Self {
            report,
            held,
            text: read("report.txt").unwrap_or_default(),
            console: read("console.log").unwrap_or_default(),
            run_status: read("run.status")?.trim().parse().context("run.status")?,
            tracer_log: read("tracer.log").ok(),
            tracer_status: read("tracer.status").ok().map(|s| s.trim().to_string()),
        })
    }

    /// Modes (`w/w`, `r/w`, …: held/new) an edge was seen with.
    pub(super) fn modes(&self, from: &str, to: &str) -> Vec<String> {
        self.report["edges"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|edge| {
                strip_suffix(edge["from"].as_str().unwrap_or_default()) == from
                    && strip_suffix(edge["to"].as_str().unwrap_or_default()) == to
            })
            .flat_map(|edge| edge["modes"].as_array().cloned().unwrap_or_default())
            .filter_map(|mode| mode.as_str().map(String::from))
            .collect()
    }

    pub(super) fn edges(&self) -> BTreeSet<(String, String)> {
        self.report["edges"]
            .as_array()
            .map(|edges| {
                edges
                    .iter()
                    .map(|edge| {
                        let name = |key: &str| {
                            strip_suffix(edge[key].as_str().unwrap_or_default()).to_string()
                        };
                        (name("from"), name("to"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The dependencies among classes named `PREFIX…` (the prefix removed), each with the
    /// class of its guard when every occurrence ran under one and the same instance.
    pub(super) fn rule_verdicts(&self, prefix: &str) -> BTreeMap<(String, String), Option<String>> {
        let strip = |value: &Value| -> Option<String> {
            strip_suffix(value.as_str()?)
                .strip_prefix(prefix)
                .map(String::from)
        };
        let mut verdicts = BTreeMap::new();
        for edge in self.report["edges"].as_array().into_iter().flatten() {
            let (Some(from), Some(to)) = (strip(&edge["from"]), strip(&edge["to"])) else {
                continue;
            };
            let guards = edge["guards"].as_array().cloned().unwrap_or_default();
            let guard = match guards.as_slice() {
                [only] => strip(&only["class"]),
                _ => None,
            };
            verdicts.insert((from, to), guard);
        }
        verdicts
    }

    /// The classes named `PREFIX…` (the prefix removed) with possible recursive locking.
    pub(super) fn rule_recursive(&self, prefix: &str) -> BTreeSet<String> {
        self.report["recursive"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|found| {
                strip_suffix(found["class"].as_str()?)
                    .strip_prefix(prefix)
                    .map(String::from)
            })
            .collect()
    }

    pub(super) fn unguarded_cycles(&self) -> Vec<&Value> {
        self.report["cycles"]
            .as_array()
            .map(|cycles| {
                cycles
                    .iter()
                    .filter(|c| c["guarded_by"].is_null() && c["suppressed"] != true)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `uname -r` of the guest, from the harness's console line.
    pub(super) fn kernel_release(&self) -> &str {
        self.console
            .lines()
            .find_map(|line| line.strip_prefix("lt-init: uname-r "))
            .map_or("", str::trim)
    }

    pub(super) fn stat(&self, name: &str) -> u64 {
        self.report["stats"][name].as_u64().unwrap_or(0)
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

pub(super) fn class_set(cycle: &Value) -> BTreeSet<String> {
    cycle["classes"]
        .as_array()
        .map(|names| {
            names
                .iter()
                .filter_map(Value::as_str)
                .map(|n| strip_suffix(n).to_string())
                .collect()
        })
        .unwrap_or_default()
}
