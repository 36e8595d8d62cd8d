//! Import of lockdep "possible circular locking dependency detected" reports from kernel
//! console or `dmesg` logs (with or without `[ 98.381122]` timestamps, several reports
//! per log, unrelated lines in between).
//!
//! lockdep prints the chain in reverse: `-> #0 (N)` is the lock the task was trying to
//! take, `-> #k (Ck)` for k ≥ 1 carries the stack where `Ck` was taken while `C(k-1)`
//! was held, and `#0`'s stack is where `N` was being taken while the "already holding"
//! lock (the last entry, `#n`) was held. So the edges are `C(k-1) → Ck` and the closing
//! edge `Cn → C0`.

use crate::{
    graph::{Cycle, Dependency, LockGraph},
    model::{ClassInfo, ClassKey, Frame, LockKind, NameSource, TaskInfo},
    naming, Error, Result,
};

const HEADER: &str = "WARNING: possible circular locking dependency detected";
const TRYING: &str = " is trying to acquire lock:";
const HOLDING: &str = "but task is already holding lock:";
const CHAIN: &str = "the existing dependency chain (in reverse order) is:";
const CHAIN_END: &str = "other info that might help us debug this:";

/// Removes a `[   98.381122]` timestamp (and the console's `<N>` level) from a line.
fn strip_prefix(line: &str) -> &str {
    let mut line = line.trim_start();
    if let Some(rest) = line.strip_prefix('<') {
        if let Some(end) = rest.find('>') {
            if rest[..end].bytes().all(|b| b.is_ascii_digit()) {
                line = &rest[end + 1..];
            }
        }
    }
    if let Some(rest) = line.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            if rest[..end]
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'.' || b == b' ')
            {
                line = &rest[end + 1..];
            }
        }
    }
    line.trim()
}

/// The class name in `… (name){usage}…`; names may contain parentheses themselves
/// (`(wq_completion)events`).
fn class_name(text: &str) -> Option<&str> {
    let open = text.find('(')?;
    let close = match text.rfind("){") {
        Some(close) => close,
        None => text.rfind(')')?,
    };
    (close > open + 1).then(|| &text[open + 1..close])
}

/// `comm/pid is trying to acquire lock:` → (comm, pid). comm may contain `/`.
fn task_of(line: &str) -> Option<TaskInfo> {
    let who = line.strip_suffix(TRYING)?;
    let slash = who.rfind('/')?;
    let pid = who[slash + 1..].parse().ok()?;
    Some(TaskInfo {
        comm: who[..slash].to_string(),
        pid,
        tid: pid,
    })
}

struct Entry {
    number: usize,
    name: String,
    stack: Vec<Frame>,
}

struct Parsed {
    task: TaskInfo,
    trying: String,
    holding: String,
    entries: Vec<Entry>,
}

fn kind_of(name: &str, stack: &[Frame]) -> (LockKind, NameSource) {
    if naming::LOCKDEP_PSEUDO_LOCKS.contains(&name) {
        return (LockKind::Pseudo, NameSource::Lockdep);
    }
    let rwsem = stack.iter().any(|f| {
        f.symbol
            .as_deref()
            .is_some_and(|s| s.starts_with("down_read") || s.starts_with("down_write"))
    });
    (
        if rwsem {
            LockKind::Rwsem
        } else {
            LockKind::Mutex
        },
        NameSource::Lockdep,
    )
}

/// Imports every circular-dependency report in `log` into `graph`, returning the cycles
/// found. Errors name the line: a report cut short or malformed, or no report at all.
pub fn import_lockdep(graph: &mut LockGraph, log: &str) -> Result<Vec<Cycle>> {
    let lines: Vec<&str> = log.lines().map(strip_prefix).collect();
    let mut cycles = Vec::new();
    let mut reports = 0;
    let mut i = 0;
    while i < lines.len() {
        if lines[i] == HEADER {
            let (parsed, next) = parse_report(&lines, i)?;
            cycles.extend(add_report(graph, parsed));
            reports += 1;
            i = next;
        } else {
            i += 1;
        }
    }
    if reports == 0 {
        return Err(Error::at(
            lines.len().max(1),
            format!("no \"{HEADER}\" report found in {} lines", lines.len()),
        ));
    }
    Ok(cycles)
}

fn parse_report(lines: &[&str], start: usize) -> Result<(Parsed, usize)> {
    let mut i = start + 1;
    let truncated = |at: usize, what: &str| {
        Error::at(
            at.min(lines.len()).max(1),
            format!("report starting at line {} ends before {what}", start + 1),
        )
    };
    // Header: task, then the lock lines.
    let task = loop {
        let line = *lines.get(i).ok_or_else(|| truncated(i, "the task line"))?;
        if line == HEADER {
            return Err(truncated(i + 1, "the task line"));
        }
        i += 1;
        if line.ends_with(TRYING) {
            break task_of(line)
                .ok_or_else(|| Error::at(i, format!("malformed task line `{line}`")))?;
        }
    };
    let lock_line = |i: usize| -> Result<String> {
        let line = lines.get(i).ok_or_else(|| truncated(i, "a lock line"))?;
        class_name(line).map(str::to_string).ok_or_else(|| {
            Error::at(
                i + 1,
                format!("expected `ADDR (class){{usage}}, at: …`, found `{line}`"),
            )
        })
    };
    let trying = lock_line(i)?;
    i += 1;
    while lines.get(i).is_some_and(|l| *l != HOLDING && *l != HEADER) {
        i += 1;
    }
    if lines.get(i) != Some(&HOLDING) {
        return Err(truncated(i + 1, "\"but task is already holding lock:\""));
    }
    let holding = lock_line(i + 1)?;
    i += 2;
    while lines.get(i).is_some_and(|l| *l != CHAIN && *l != HEADER) {
        i += 1;
    }
    if lines.get(i) != Some(&CHAIN) {
        return Err(truncated(i + 1, "the dependency chain"));
    }
    i += 1;
    let mut entries: Vec<Entry> = Vec::new();
    loop {
        let Some(&line) = lines.get(i) else {
            return Err(truncated(i + 1, "the end of the dependency chain"));
        };
        if line == HEADER {
            return Err(truncated(i + 1, "the end of the dependency chain"));
        }
        i += 1;
        if line == CHAIN_END {
            break;
        }
        if let Some(rest) = line.strip_prefix("-> #") {
            let number: usize = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| Error::at(i, format!("malformed chain entry `{line}`")))?;
            let name = class_name(rest)
                .ok_or_else(|| Error::at(i, format!("malformed chain entry `{line}`")))?;
            let expected = entries
                .last()
                .map_or(number, |last| last.number.wrapping_sub(1));
            if number != expected {
                return Err(Error::at(
                    i,
                    format!("chain entry #{number} where #{expected} was expected"),
                ));
            }
            entries.push(Entry {
                number,
                name: name.to_string(),
                stack: Vec::new(),
            });
        } else if let (Some(entry), Some(frame)) = (entries.last_mut(), Frame::parse(line)) {
            entry.stack.push(frame);
        }
        // Anything else inside the chain is console noise.
    }
    let chain_line = i;
    match (entries.first(), entries.last()) {
        (Some(first), Some(last)) if entries.len() >= 2 && last.number == 0 => {
            if first.name != holding || last.name != trying {
                return Err(Error::at(
                    chain_line,
                    format!(
                        "chain runs from `{}` to `{}` but the report names `{holding}` held and \
                         `{trying}` wanted",
                        first.name, last.name
                    ),
                ));
            }
        }
        _ => {
            return Err(Error::at(
                chain_line,
                "dependency chain has fewer than two entries or does not end at #0",
            ))
        }
    }
    entries.reverse();
    Ok((
        Parsed {
            task,
            trying,
            holding,
            entries,
        },
        i,
    ))
}

fn add_report(graph: &mut LockGraph, parsed: Parsed) -> Vec<Cycle> {
    debug_assert_eq!(parsed.entries[0].name, parsed.trying);
    let ids: Vec<_> = parsed
        .entries
        .iter()
        .map(|e| {
            let (kind, naming) = kind_of(&e.name, &e.stack);
            graph.class(
                ClassKey::name(&e.name),
                ClassInfo::new(&e.name, kind, naming),
            )
        })
        .collect();
    let n = ids.len();
    let mut cycles = Vec::new();
    // Chain edges first, the closing edge (the attempt that triggered the report) last.
    for k in (1..n).chain(std::iter::once(0)) {
        let is_closing = k == 0;
        cycles.extend(graph.add_dependency(Dependency {
            held: ids[(k + n - 1) % n],
            new: ids[k],
            task: if is_closing {
                parsed.task.clone()
            } else {
                TaskInfo::default()
            },
            new_stack: parsed.entries[k].stack.clone(),
            ..Dependency::default()
        }));
    }
    debug_assert_eq!(graph.name(ids[n - 1]), parsed.holding);
    cycles
}
