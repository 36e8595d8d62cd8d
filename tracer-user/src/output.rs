//! Sinks that write files: reports, graph exports and snapshots, each written to a
//! temporary file and renamed so that a reader never sees a torn file.
use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use lockgraph::{LockGraph, Suppressions};

use crate::held::{push_stack, render_deadlock, Deadlock};

/// Writes `contents` to `path` atomically (same directory, then rename).
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> Result<()> {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

/// Checks up front that `path` can be written, so a bad path fails before tracing starts.
pub fn check_writable(path: &Path) -> Result<()> {
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let probe = dir.join(format!(".locktrace-probe-{}", std::process::id()));
    fs::File::create(&probe)
        .and_then(|_| fs::remove_file(&probe))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// What the live trace adds to the lock-graph report: deadlocks caught in progress and
/// locks held longer than `--hold-threshold`.
#[derive(Debug, Clone, Default)]
pub struct LiveFindings {
    pub deadlocks: Vec<Deadlock>,
    pub long_holds: Vec<LongHold>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LongHold {
    pub class: String,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub held_ns: u64,
    pub stack: Vec<String>,
}

impl LiveFindings {
    fn add_to_json(&self, report: &lockgraph::ReportJson) -> Result<serde_json::Value> {
        let mut json = serde_json::to_value(report)?;
        json["deadlocks"] = serde_json::to_value(&self.deadlocks)?;
        json["long_holds"] = serde_json::to_value(&self.long_holds)?;
        Ok(json)
    }

    fn text(&self) -> String {
        let mut out = String::new();
        for deadlock in &self.deadlocks {
            out.push_str(&render_deadlock(deadlock));
        }
        for hold in &self.long_holds {
            out.push_str(&format!(
                "\nlong hold: {}/{} (tid {}) held {} for {:.1} s, acquired at:\n",
                hold.comm,
                hold.pid,
                hold.tid,
                hold.class,
                hold.held_ns as f64 / 1e9
            ));
            push_stack(&mut out, &hold.stack);
        }
        out
    }
}

/// The report files and exports a run was asked for.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    pub report_json: Option<PathBuf>,
    pub report_text: Option<PathBuf>,
    pub dot: Option<PathBuf>,
    pub record: Option<PathBuf>,
    pub snapshot_dir: Option<PathBuf>,
    pub graphml: bool,
}

impl Outputs {
    pub fn check(&self) -> Result<()> {
        for path in [
            &self.report_json,
            &self.report_text,
            &self.dot,
            &self.record,
        ]
        .into_iter()
        .flatten()
        {
            check_writable(path)?;
        }
        if let Some(dir) = &self.snapshot_dir {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            check_writable(&dir.join("snapshot.json"))?;
        }
        Ok(())
    }

    /// Writes every requested output for the graph as it is now.
    pub fn write(
        &self,
        graph: &LockGraph,
        suppressions: &Suppressions,
        live: &LiveFindings,
    ) -> Result<()> {
        let report = graph.report(suppressions);
        if let Some(path) = &self.report_json {
            let json = live.add_to_json(&report.json())?;
            write_atomic(path, serde_json::to_string_pretty(&json)?.as_bytes())?;
        }
        if let Some(path) = &self.report_text {
            let text = format!("{}{}", live.text(), report.text());
            write_atomic(path, text.as_bytes())?;
        }
        if let Some(path) = &self.dot {
            write_atomic(path, lockgraph::to_dot(graph).as_bytes())?;
        }
        if let Some(path) = &self.record {
            let mut trace = Vec::new();
            lockgraph::write_trace(graph, &mut trace)?;
            write_atomic(path, &trace)?;
        }
        if let Some(dir) = &self.snapshot_dir {
            write_snapshot(dir, graph, suppressions, self.graphml)?;
        }
        Ok(())
    }
}

/// `DIR/snapshot.json` (loadable by `locktrace export/merge/diff`) and `DIR/snapshot.dot`.
pub fn write_snapshot(
    dir: &Path,
    graph: &LockGraph,
    suppressions: &Suppressions,
    graphml: bool,
) -> Result<()> {
    let report = graph.report(suppressions);
    write_atomic(
        &dir.join("snapshot.json"),
        serde_json::to_string_pretty(&report.json())?.as_bytes(),
    )?;
    write_atomic(
        &dir.join("snapshot.dot"),
        lockgraph::to_dot(graph).as_bytes(),
    )?;
    if graphml {
        write_atomic(
            &dir.join("snapshot.graphml"),
            lockgraph::to_graphml(graph).as_bytes(),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("locktrace-output-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("report.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        assert!(check_writable(Path::new("/proc/locktrace/report.json")).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
