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

/// The directory a file path lies in (`.` for a bare name).
fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Whether `path` names an existing device, FIFO or socket (`/dev/null`, a named pipe):
/// such a target is written in place, as a shell redirection would. Renaming over it, as
/// root, would replace the device node with a regular file.
fn is_special_file(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|meta| {
        let kind = meta.file_type();
        !kind.is_file() && !kind.is_dir() && !kind.is_symlink()
    })
}

/// Opens an existing special file for writing; never creates, never follows a link.
fn open_special_file(path: &Path) -> Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Writes `contents` to `path` atomically: a temporary file of unpredictable name, created
/// exclusively (`O_EXCL`, so a planted link is never followed), renamed over `path` (a
/// rename replaces a link at `path`, never writes through it). Safe in a shared directory
/// while running as root. `-` writes to standard output; an existing device or FIFO is
/// written in place.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    if path == Path::new("-") {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(contents)?;
        return stdout.flush().context("writing standard output");
    }
    if is_special_file(path) {
        return open_special_file(path)?
            .write_all(contents)
            .with_context(|| format!("writing {}", path.display()));
    }
    path.file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let result = (|| -> Result<()> {
        let mut file = tempfile::Builder::new()
            .prefix(".locktrace-")
            .tempfile_in(parent_dir(path))?;
        file.write_all(contents)?;
        file.as_file().sync_all()?;
        file.persist(path).map_err(|err| err.error)?;
        Ok(())
    })();
    result.with_context(|| format!("writing {}", path.display()))
}

/// Checks up front that `path` can be written, so a bad path fails before tracing starts.
/// The probe is an anonymous temporary file: nothing with a guessable name is created.
pub fn check_writable(path: &Path) -> Result<()> {
    if path == Path::new("-") {
        return Ok(());
    }
    if is_special_file(path) {
        // Opening a FIFO would wait for its reader: ask for write permission instead.
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .with_context(|| format!("{} is not a file path", path.display()))?;
        // SAFETY: a valid NUL-terminated path; access(2) only reads it.
        if unsafe { libc::access(c_path.as_ptr(), libc::W_OK) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("cannot write {}", path.display()));
        }
        return Ok(());
    }
    tempfile::tempfile_in(parent_dir(path))
        .map(drop)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Creates a directory for snapshots, owner-only (`0700`) when this run creates it: the
/// graph names kernel and user functions and process names.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// `--record FILE` while tracing: every new class and dependency appended and flushed as it
/// arrives, so a daemon killed at any point leaves a recording of all it had (a last line
/// cut short is skipped by the reader). At a clean exit the file is replaced atomically by
/// the complete recording (final counts and stats).
pub struct StreamedRecording {
    /// None for a device or FIFO target: it gets the complete recording once, at exit.
    out: Option<std::io::BufWriter<fs::File>>,
    appender: lockgraph::TraceAppender,
    written: (usize, usize, usize),
}

impl StreamedRecording {
    /// Created like [`write_atomic`]'s files (exclusively, under an unpredictable name, then
    /// renamed into place), so a planted link cannot redirect it.
    pub fn create(path: &Path) -> Result<Self> {
        let out = if is_special_file(path) {
            None
        } else {
            let file = tempfile::Builder::new()
                .prefix(".locktrace-")
                .tempfile_in(parent_dir(path))
                .and_then(|file| file.persist(path).map_err(|err| err.error))
                .with_context(|| format!("creating {}", path.display()))?;
            Some(std::io::BufWriter::new(file))
        };
        Ok(StreamedRecording {
            out,
            appender: lockgraph::TraceAppender::default(),
            written: (usize::MAX, 0, 0),
        })
    }

    /// Appends what `graph` gained since the last call, flushed to the file.
    pub fn append(&mut self, graph: &LockGraph) -> Result<()> {
        let size = (
            graph.class_count(),
            graph.edge_count(),
            graph.recursive().len(),
        );
        let Some(out) = &mut self.out else {
            return Ok(());
        };
        if size == self.written {
            return Ok(());
        }
        self.appender
            .append(graph, out)
            .and_then(|()| out.flush())
            .context("appending to the recording")?;
        self.written = size;
        Ok(())
    }
}

/// What the live trace adds to the lock-graph report: deadlocks caught in progress and
/// locks held longer than `--hold-threshold`.
#[derive(Debug, Clone, Default)]
pub struct LiveFindings {
    pub deadlocks: Vec<Deadlock>,
    pub long_holds: Vec<LongHold>,
    /// `--max-overhead`: what the budget measured and shed (absent: no budget).
    pub budget: Option<crate::budget::BudgetReport>,
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
        if let Some(budget) = &self.budget {
            json["overhead_budget"] = serde_json::to_value(budget)?;
        }
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
            create_private_dir(dir)?;
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

    /// A root daemon writing into a shared directory: links planted at the final name and
    /// at every name the old writer used (`.NAME.tmpPID`, `.locktrace-probe-PID`) must not
    /// redirect a write.
    #[test]
    fn planted_links_do_not_redirect_writes() {
        use std::os::unix::fs::symlink;
        let dir = std::env::temp_dir().join(format!("locktrace-links-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        fs::write(&victim, "precious").unwrap();
        let path = dir.join("report.json");
        let pid = std::process::id();
        for name in [
            "report.json".to_string(),
            format!(".report.json.tmp{pid}"),
            format!(".locktrace-probe-{pid}"),
        ] {
            symlink(&victim, dir.join(name)).unwrap();
        }
        check_writable(&path).unwrap();
        write_atomic(&path, b"report").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert!(!fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_to_string(&path).unwrap(), "report");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn snapshot_directories_are_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("locktrace-private-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        create_private_dir(&dir.join("snapshots")).unwrap();
        let mode = fs::metadata(dir.join("snapshots"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        fs::remove_dir_all(&dir).unwrap();
    }
}
