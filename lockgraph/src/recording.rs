//! JSON-lines trace format, written by hand or by tools, replayed into a [`LockGraph`].
//!
//! One JSON object per line; blank lines and lines starting with `#` are ignored. Classes
//! are named by strings; a class used before a `class` line is a `mutex` named `given`.
//!
//! ```text
//! # declare a class (optional): kind mutex|rwsem|pseudo|pthread_mutex|pthread_rwlock,
//! # naming init_name|init_site|symbol|acquire_site|pseudo|lockdep|given (defaults: mutex, given)
//! {"type":"class","name":"&vmm->mutex","kind":"mutex","naming":"init_name"}
//! # a dependency held -> new, seen `count` times; all fields but held/new optional;
//! # `modes` lists further held/new read-write pairs seen ("w/w","w/r","r/w","r/r");
//! # `guard` is the outermost lock held exclusively outside `held`, `guard_lock` its
//! # instance ("0x…"; absent: 0).
//! # Stacks are frames in lockdep syntax ("func+0xOFF/0xSIZE [module]" or "0xADDR"),
//! # innermost first.
//! {"type":"dep","held":"&svmm->mutex","new":"&vmm->mutex","held_read":false,"new_read":false,
//!  "ts":1000,"comm":"test","pid":1,"tid":1,"count":1,"guard":null,
//!  "new_stack":["nvkm_uvmm_mthd+0x4d5/0xbe0 [nouveau]"],"held_stack":[],"modes":["w/w"]}
//! # a raw lock operation, run through the lock state machine (see LockSimulator):
//! # op acquire|acquired|failed|release; lock is the instance, "0x…" or a number;
//! # read/try/ts/pid/comm/stack optional; release needs only tid and lock.
//! {"type":"lock","tid":1,"op":"acquire","class":"&vmm->mutex","lock":"0x10","try":false}
//! {"type":"lock","tid":1,"op":"release","lock":"0x10"}
//! # source counters, added to the graph's stats
//! {"type":"stats","events":100,"dropped":0}
//! # the format version, first line of what locktrace writes (optional)
//! {"type":"schema","version":1}
//! ```
//! A last line cut short without its newline (a writer killed mid-record) is skipped and
//! counted in `stats.truncated_records`; every complete record before it replays.
//! (The `dep` example is one line in a real trace.)

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
};

use serde::{Deserialize, Serialize};

use crate::{
    graph::{ClassId, Cycle, Dependency, Guard, LockGraph},
    model::{ClassInfo, ClassKey, Frame, LockKind, NameSource, Stats, TaskInfo},
    sim::{LockOp, LockOpKind, LockSimulator},
    Error, Result,
};

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Record {
    Class {
        name: String,
        #[serde(default = "default_kind")]
        kind: LockKind,
        #[serde(default = "default_naming")]
        naming: NameSource,
    },
    Dep {
        held: String,
        new: String,
        #[serde(default)]
        held_read: bool,
        #[serde(default)]
        new_read: bool,
        /// Recursive reads (glibc's reader-preferring rwlocks), with `*_read`.
        #[serde(default, skip_serializing_if = "is_false")]
        held_recursive: bool,
        #[serde(default, skip_serializing_if = "is_false")]
        new_recursive: bool,
        #[serde(default)]
        ts: u64,
        #[serde(default)]
        comm: String,
        #[serde(default)]
        pid: u32,
        #[serde(default)]
        tid: u32,
        #[serde(default = "one")]
        count: u64,
        #[serde(default)]
        guard: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        guard_lock: Option<LockAddr>,
        #[serde(default)]
        new_stack: Vec<String>,
        #[serde(default)]
        held_stack: Vec<String>,
        /// Further `held/new` mode pairs seen (`"w/w"`, `"w/r"`, `"r/w"`, `"r/R"`, …: `w`
        /// write, `r` read, `R` recursive read).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        modes: Vec<String>,
    },
    Lock {
        tid: u32,
        op: Op,
        #[serde(default)]
        class: Option<String>,
        lock: LockAddr,
        #[serde(default)]
        read: bool,
        /// A recursive read, with `read`.
        #[serde(default)]
        recursive: bool,
        #[serde(default, rename = "try")]
        try_lock: bool,
        #[serde(default)]
        ts: u64,
        #[serde(default)]
        pid: Option<u32>,
        #[serde(default)]
        comm: String,
        #[serde(default)]
        stack: Vec<String>,
    },
    Stats(Stats),
    /// The format version ([`crate::SCHEMA_VERSION`]), the first line a writer emits.
    Schema {
        version: u32,
    },
}

fn default_kind() -> LockKind {
    LockKind::Mutex
}
fn default_naming() -> NameSource {
    NameSource::Given
}
fn one() -> u64 {
    1
}
fn is_false(value: &bool) -> bool {
    !value
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Op {
    Acquire,
    Acquired,
    Failed,
    Release,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum LockAddr {
    Number(u64),
    Text(String),
}

fn frames(line: usize, stack: &[String]) -> Result<Vec<Frame>> {
    stack
        .iter()
        .map(|text| {
            Frame::parse(text)
                .ok_or_else(|| Error::at(line, format!("malformed stack frame `{text}`")))
        })
        .collect()
}

fn class(graph: &mut LockGraph, name: &str) -> ClassId {
    graph.class(
        ClassKey::name(name),
        ClassInfo::new(name, LockKind::Mutex, NameSource::Given),
    )
}

/// Replays a trace into a new graph.
pub fn replay(reader: impl Read) -> Result<LockGraph> {
    let mut graph = LockGraph::new();
    replay_into(&mut graph, reader)?;
    Ok(graph)
}

/// Replays a trace into `graph`, returning the cycles found, in order.
pub fn replay_into(graph: &mut LockGraph, reader: impl Read) -> Result<Vec<Cycle>> {
    let mut simulator = LockSimulator::new();
    let mut comms: HashMap<u32, (String, u32)> = HashMap::new();
    let mut cycles = Vec::new();
    let mut reader = BufReader::new(reader);
    let mut line = String::new();
    let mut number = 0;
    loop {
        line.clear();
        number += 1;
        let read = reader
            .read_line(&mut line)
            .map_err(|e| Error::at(number, format!("read error: {e}")))?;
        if read == 0 {
            break;
        }
        let text = line.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let record: Record = match serde_json::from_str(text) {
            Ok(record) => record,
            // A last line without its newline is a record the writer was killed in the
            // middle of: the complete records before it stand.
            Err(_) if !line.ends_with('\n') => {
                graph.stats_mut().truncated_records += 1;
                break;
            }
            Err(e) => return Err(Error::at(number, e.to_string())),
        };
        match record {
            Record::Schema { version } if version > crate::SCHEMA_VERSION => {
                return Err(Error::at(
                    number,
                    format!(
                        "trace schema {version} is newer than this locktrace reads \
                         ({}): upgrade locktrace",
                        crate::SCHEMA_VERSION
                    ),
                ))
            }
            Record::Schema { .. } => {}
            Record::Class { name, kind, naming } => {
                let key = ClassKey::name(&name);
                if graph.class_by_key(&key).is_some() {
                    return Err(Error::at(
                        number,
                        format!("class `{name}` declared after its first use"),
                    ));
                }
                graph.class(key, ClassInfo::new(name, kind, naming));
            }
            Record::Dep {
                held,
                new,
                held_read,
                new_read,
                held_recursive,
                new_recursive,
                ts,
                comm,
                pid,
                tid,
                count,
                guard,
                guard_lock,
                new_stack,
                held_stack,
                modes,
            } => {
                let guard_lock = match guard_lock {
                    Some(lock) => lock_address(number, lock)?,
                    None => 0,
                };
                let modes = crate::snapshot::parse_modes(&modes).ok_or_else(|| {
                    Error::at(
                        number,
                        "modes are HELD/NEW with w (write), r (read) or R (recursive read)",
                    )
                })?;
                if count == 0 {
                    return Err(Error::at(number, "count must be at least 1"));
                }
                let dep = Dependency {
                    held: class(graph, &held),
                    new: class(graph, &new),
                    held_read,
                    new_read,
                    held_recursive: held_read && held_recursive,
                    new_recursive: new_read && new_recursive,
                    timestamp_ns: ts,
                    task: TaskInfo { comm, pid, tid },
                    new_stack: frames(number, &new_stack)?,
                    held_stack: frames(number, &held_stack)?,
                    guard: guard.as_deref().map(|g| Guard {
                        class: class(graph, g),
                        lock: guard_lock,
                    }),
                };
                let (held, new) = (dep.held, dep.new);
                cycles.extend(graph.add_dependency(dep));
                graph.add_occurrences(held, new, count - 1);
                cycles.extend(graph.add_modes(held, new, modes));
            }
            Record::Lock {
                tid,
                op,
                class: class_name,
                lock,
                read,
                recursive,
                try_lock,
                ts,
                pid,
                comm,
                stack,
            } => {
                let lock = lock_address(number, lock)?;
                let kind = match op {
                    Op::Acquire => LockOpKind::Acquire,
                    Op::Acquired => LockOpKind::Acquired,
                    Op::Failed => LockOpKind::Failed,
                    Op::Release => LockOpKind::Release,
                };
                let class_id = match (&class_name, kind) {
                    (Some(name), _) => class(graph, name),
                    (None, LockOpKind::Release | LockOpKind::Failed) => ClassId::default(),
                    (None, _) => return Err(Error::at(number, "acquire needs a `class`")),
                };
                let task = comms.entry(tid).or_insert_with(|| (String::new(), tid));
                if !comm.is_empty() {
                    task.0 = comm;
                }
                if let Some(pid) = pid {
                    task.1 = pid;
                }
                let op = LockOp {
                    kind,
                    tid,
                    pid: task.1,
                    comm: task.0.clone(),
                    class: class_id,
                    lock,
                    read,
                    recursive,
                    try_lock,
                    pseudo: class_name.is_some()
                        && graph.class_info(class_id).info.kind == LockKind::Pseudo,
                    timestamp_ns: ts,
                    stack: frames(number, &stack)?,
                };
                simulator.apply(op, |dep| cycles.extend(graph.add_dependency(dep)));
            }
            Record::Stats(source) => graph.stats_mut().add(&source),
        }
    }
    // What the simulator could not apply counts as the source's losses.
    let lost = simulator.stats();
    let stats = graph.stats_mut();
    stats.held_overflow += lost.held_overflow;
    stats.unmatched_releases += lost.unmatched;
    stats.return_missed += lost.return_missed;
    Ok(cycles)
}

fn lock_address(number: usize, lock: LockAddr) -> Result<u64> {
    match lock {
        LockAddr::Number(n) => Ok(n),
        LockAddr::Text(text) => crate::snapshot::parse_lock_address(&text)
            .ok_or_else(|| Error::at(number, format!("malformed lock address `{text}`"))),
    }
}

/// Writes `graph` as a trace: class lines, one `dep` line per edge (with its count, and
/// one per distinct guard), recursive findings as `held == new` deps, and the stats.
pub fn write_trace(graph: &LockGraph, out: impl Write) -> std::io::Result<()> {
    let mut appender = TraceAppender::default();
    let mut out = std::io::BufWriter::new(out);
    appender.append(graph, &mut out)?;
    write_record(&mut out, &Record::Stats(graph.stats()))?;
    out.flush()
}

/// Appends to a recording what a growing graph gained since the last call (classes,
/// dependencies, recursive findings), so that a recording written as dependencies arrive
/// holds every one up to the moment the writer died. Counts are those at the time of
/// writing; the graph never removes classes or edges, so "gained" is "beyond the last
/// index written".
#[derive(Debug, Default)]
pub struct TraceAppender {
    started: bool,
    classes: usize,
    edges: usize,
    recursive: usize,
}

fn write_record(out: &mut impl Write, record: &Record) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, record)?;
    out.write_all(b"\n")
}

impl TraceAppender {
    pub fn append(&mut self, graph: &LockGraph, out: &mut impl Write) -> std::io::Result<()> {
        let name = |id: ClassId| graph.name(id).to_string();
        let stack = |frames: &[Frame]| frames.iter().map(Frame::to_string).collect::<Vec<_>>();
        if !self.started {
            write_record(
                out,
                &Record::Schema {
                    version: crate::SCHEMA_VERSION,
                },
            )?;
            self.started = true;
        }
        for (_, class) in graph.classes().skip(self.classes) {
            write_record(
                out,
                &Record::Class {
                    name: class.name.clone(),
                    kind: class.info.kind,
                    naming: class.info.naming,
                },
            )?;
            self.classes += 1;
        }
        for edge in graph.edges().skip(self.edges) {
            // The count goes to the first guard line; each further guard is seen once more.
            let extra = (edge.guards.len() as u64).saturating_sub(1);
            for (i, guard) in edge.guards.iter().enumerate() {
                write_record(
                    out,
                    &Record::Dep {
                        held: name(edge.held),
                        new: name(edge.new),
                        held_read: edge.held_read,
                        new_read: edge.new_read,
                        held_recursive: edge.held_recursive,
                        new_recursive: edge.new_recursive,
                        ts: edge.first_seen_ns,
                        comm: edge.task.comm.clone(),
                        pid: edge.task.pid,
                        tid: edge.task.tid,
                        count: if i == 0 {
                            edge.count.saturating_sub(extra).max(1)
                        } else {
                            1
                        },
                        guard: guard.map(|guard| name(guard.class)),
                        guard_lock: guard.map(|guard| LockAddr::Text(format!("{:#x}", guard.lock))),
                        new_stack: stack(&edge.new_stack),
                        held_stack: stack(&edge.held_stack),
                        modes: crate::snapshot::mode_names(edge.modes),
                    },
                )?;
            }
            self.edges += 1;
        }
        for found in graph.recursive().iter().skip(self.recursive) {
            write_record(
                out,
                &Record::Dep {
                    held: name(found.class),
                    new: name(found.class),
                    held_read: found.held_read,
                    new_read: found.new_read,
                    held_recursive: false,
                    new_recursive: false,
                    ts: found.first_seen_ns,
                    comm: found.task.comm.clone(),
                    pid: found.task.pid,
                    tid: found.task.tid,
                    count: found.count,
                    guard: None,
                    guard_lock: None,
                    new_stack: stack(&found.new_stack),
                    held_stack: stack(&found.held_stack),
                    modes: Vec::new(),
                },
            )?;
            self.recursive += 1;
        }
        Ok(())
    }
}
