//! Lock-order graph engine for locktrace: a pure library with no BPF and no I/O beyond
//! the parse/serialise functions that take a `&str`, a reader or a writer.
//!
//! Sources feed a [`LockGraph`]; sinks read it:
//!
//! ```
//! use lockgraph::{ClassInfo, ClassKey, Dependency, LockGraph, LockKind, NameSource, Suppressions};
//!
//! let mut graph = LockGraph::new();
//! let mutex = |name: &str| ClassInfo::new(name, LockKind::Mutex, NameSource::Given);
//! let a = graph.class(ClassKey::name("a"), mutex("a"));
//! let b = graph.class(ClassKey::name("b"), mutex("b"));
//! let a_then_b = Dependency { held: a, new: b, ..Dependency::default() };
//! assert!(graph.add_dependency(a_then_b).is_empty());
//! // The edge that closes a cycle reports it at once.
//! let cycles = graph.add_dependency(Dependency { held: b, new: a, ..Dependency::default() });
//! assert_eq!(cycles.len(), 1);
//!
//! let rules = Suppressions::parse("# reviewed cycles: ids or class globs\n").unwrap();
//! let report = graph.report(&rules);
//! assert!(report.has_unguarded_cycle());
//! let text = report.text(); // lockdep-style splat
//! assert!(text.contains("possible circular locking dependency detected"));
//! let json = serde_json::to_string(&report.json()).unwrap();
//! let reloaded = LockGraph::from_snapshot_json(&json).unwrap();
//! assert_eq!(reloaded.cycles().len(), 1);
//! ```
//!
//! Other sources: [`import_lockdep`] (kernel console logs), [`replay`] (JSON-lines traces,
//! see [`recording`] for the format) and [`LockSimulator`] (raw lock operations). Other sinks:
//! [`to_dot`], [`to_graphml`], [`to_svg`], [`cycle_to_svg`], [`cycle_to_html`] (pictures
//! drawn in-process), [`merge`], [`diff`].

mod export;
mod graph;
pub mod lockdep;
mod model;
pub mod naming;
pub mod nesting;
mod picture;
pub mod recording;
mod report;
pub mod rules;
mod sim;
mod snapshot;
mod suppressions;

pub use export::{diff, merge, to_dot, to_graphml, GraphDiff, NewCycle, NewDependency};
pub use graph::{
    cycle_id, mode_bit, mode_pairs, Class, ClassId, Cycle, DepEdge, Dependency, Guard, LockGraph,
    Mode, RecursiveLock,
};
pub use lockdep::{import_lockdep, import_proc_lockdep, LockdepImport};
pub use model::{
    strip_lockdep_suffix, ClassInfo, ClassKey, Frame, LockKind, NameSource, Stats, TaskInfo,
};
pub use picture::{cycle_to_html, cycle_to_svg, to_svg};
pub use recording::{replay, replay_into, write_trace, TraceAppender};
pub use report::Report;
pub use sim::{LockOp, LockOpKind, LockSimulator, SimulatorStats, MAX_HELD_LOCKS};
pub use snapshot::{
    ClassJson, CycleEdgeJson, CycleJson, EdgeJson, GuardJson, RecursiveJson, ReportJson, StatsJson,
};
pub use suppressions::Suppressions;

/// Errors from the parsers. Every input error names its 1-based line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("line {line}: {message}")]
    Parse { line: usize, message: String },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid snapshot JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid snapshot: {0}")]
    Snapshot(String),
}

impl Error {
    pub(crate) fn at(line: usize, message: impl Into<String>) -> Self {
        Error::Parse {
            line,
            message: message.into(),
        }
    }
}

/// Version of the report, snapshot and trace formats: readers refuse newer ones.
pub const SCHEMA_VERSION: u32 = 1;

pub type Result<T, E = Error> = std::result::Result<T, E>;
