//! Import of lockdep reports as people paste them: kernel console or `dmesg` logs with or
//! without `[ 98.381122]` timestamps and printk caller ids (`[ T1234]`, `[ C0]`), syslog and
//! journal lines (`Dec 02 10:00:00 host kernel: `), mail quotes (`> `), the old
//! `[ INFO: … ]` headers, several reports per log among unrelated lines.
//!
//! - "possible circular locking dependency detected": lockdep prints the chain in reverse:
//!   `-> #0 (N)` is the lock the task was trying to take, `-> #k (Ck)` for k ≥ 1 carries the
//!   stack where `Ck` was taken while `C(k-1)` was held, and `#0`'s stack is where `N` was
//!   being taken while the "already holding" lock (the last entry, `#n`) was held. So the
//!   edges are `C(k-1) → Ck` and the closing edge `Cn → C0`.
//! - "possible recursive locking detected": the class taken while held, a recursive finding.
//! - irq lock inversion and inconsistent lock state: irq safety is not modelled; a note
//!   names the classes.
//!
//! A report cut short or garbled gives what it certainly says (the dependencies of the
//! chain entries read, the header's attempt) and a note naming the line, never a cycle the
//! report does not show whole.

use crate::{
    graph::{Cycle, Dependency, LockGraph},
    model::{ClassInfo, ClassKey, Frame, LockKind, NameSource, TaskInfo},
    naming, Error, Result,
};

const CIRCULAR: &str = "possible circular locking dependency detected";
const RECURSIVE: &str = "possible recursive locking detected";
const IRQ_INVERSION: &str = "possible irq lock inversion dependency detected";
const INCONSISTENT: &str = "inconsistent lock state";
const TRYING: &str = " is trying to acquire lock:";
const HOLDING: &str = "but task is already holding lock:";
const CHAIN: &str = "the existing dependency chain (in reverse order) is:";
const CHAIN_END: &str = "other info that might help us debug this:";

/// What an import found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockdepImport {
    /// Cycles the reports closed, in the order found.
    pub cycles: Vec<Cycle>,
    /// Reports recognised (of every kind).
    pub reports: usize,
    /// One line per report imported only in part, or not at all, and why.
    pub notes: Vec<String>,
}

/// The kind of report a header line starts, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReportKind {
    Circular,
    Recursive,
    IrqInversion,
    Inconsistent,
}

fn report_kind(line: &str) -> Option<ReportKind> {
    // `WARNING: …` today, `[ INFO: … ]` before 4.x; the first line of a syzbot title
    // ("possible deadlock in …") is no header.
    let header = line
        .strip_prefix("WARNING: ")
        .or_else(|| line.strip_prefix("[ INFO: "))
        .or_else(|| line.strip_prefix("INFO: "))?;
    let header = header
        .trim_end_matches(" ]")
        .trim_end_matches('!')
        .trim_end();
    match header {
        CIRCULAR => Some(ReportKind::Circular),
        RECURSIVE => Some(ReportKind::Recursive),
        IRQ_INVERSION => Some(ReportKind::IrqInversion),
        INCONSISTENT => Some(ReportKind::Inconsistent),
        _ => None,
    }
}

/// `[` + `inside` + `]` at the start of `line`, where `inside` passes `ok`: the rest.
fn bracketed(line: &str, ok: impl Fn(&str) -> bool) -> Option<&str> {
    let rest = line.strip_prefix('[')?;
    let end = rest.find(']')?;
    ok(&rest[..end]).then(|| &rest[end + 1..])
}

/// A printk timestamp: `   98.381122`.
fn is_timestamp(inside: &str) -> bool {
    let inside = inside.trim();
    !inside.is_empty() && inside.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// A printk caller id: `T1234` (task) or `C0` (CPU), space-padded.
fn is_caller_id(inside: &str) -> bool {
    let inside = inside.trim();
    inside.len() >= 2
        && matches!(inside.as_bytes()[0], b'T' | b'C')
        && inside[1..].bytes().all(|b| b.is_ascii_digit())
}

/// A syslog or journal line's `DATE HOST kernel: ` (`Dec  2 10:00:00 host kernel: `,
/// `2024-12-02T10:00:00.123+01:00 host kernel: `): the rest.
fn after_syslog(line: &str) -> Option<&str> {
    if let Some(rest) = line.strip_prefix("kernel: ") {
        // rsyslog forwarding without date or host.
        return Some(rest);
    }
    let at = line.find(" kernel: ")?;
    let head = &line[..at];
    let words: Vec<&str> = head.split_whitespace().collect();
    let looks_like_date = match words.as_slice() {
        [month, day, time, _host] => {
            month.len() == 3
                && month.bytes().all(|b| b.is_ascii_alphabetic())
                && day.bytes().all(|b| b.is_ascii_digit())
                && time.contains(':')
        }
        [stamp, _host] => stamp.len() >= 10 && stamp.as_bytes()[..4].iter().all(u8::is_ascii_digit),
        _ => false,
    };
    looks_like_date.then(|| &line[at + " kernel: ".len()..])
}

/// A log line without what logging added around lockdep's text: mail quotes, syslog and
/// journal prefixes, the console's `<N>` level, timestamps and caller ids.
fn clean_line(line: &str) -> &str {
    let mut line = line.trim();
    loop {
        let before = line;
        if let Some(rest) = line.strip_prefix('>') {
            line = rest.trim_start();
        }
        if let Some(rest) = after_syslog(line) {
            line = rest.trim_start();
        }
        if let Some(rest) = line.strip_prefix('<') {
            if let Some(end) = rest.find('>') {
                if end > 0 && rest[..end].bytes().all(|b| b.is_ascii_digit()) {
                    line = rest[end + 1..].trim_start();
                }
            }
        }
        if let Some(rest) = bracketed(line, is_timestamp).or_else(|| bracketed(line, is_caller_id))
        {
            line = rest.trim_start();
        }
        if line == before {
            return line.trim_end();
        }
    }
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

/// A stack frame as lockdep prints it: `__mutex_lock+0x134/0xc70`, with the old
/// `[<ffffffff810b0b8a>] ` address before it, a `[module]` or a syzbot `file.c:123` after.
/// Unreliable frames (`? …`) and anything else are `None`.
fn frame_of(line: &str) -> Option<Frame> {
    let mut line = line.trim();
    if line.starts_with("? ") {
        return None;
    }
    if let Some(rest) = line.strip_prefix("[<") {
        line = rest.split_once("] ")?.1.trim_start();
    }
    let mut words = line.split_whitespace();
    let function = words.next()?;
    if !function.contains("+0x") && !function.starts_with("0x") {
        return None;
    }
    match words.next() {
        // syzbot's `[inline]` marks an inlined frame, not a module.
        Some(module)
            if module.starts_with('[') && module.ends_with(']') && module != "[inline]" =>
        {
            Frame::parse(&format!("{function} {module}"))
        }
        _ => Frame::parse(function),
    }
}

/// The frame after a lock line's `, at: `.
fn at_frame(line: &str) -> Option<Frame> {
    frame_of(line.split_once(", at: ")?.1)
}

struct Entry {
    number: usize,
    name: String,
    stack: Vec<Frame>,
}

/// One report's lines, already cleaned, from its header to the next header or the end.
struct ReportLines<'a> {
    /// Line number (1-based) of `lines[0]`, the header.
    first: usize,
    lines: &'a [&'a str],
}

impl ReportLines<'_> {
    fn line_no(&self, index: usize) -> usize {
        self.first + index.min(self.lines.len().saturating_sub(1))
    }

    /// The index of the first line from `from` on that `is`.
    fn find(&self, from: usize, is: impl Fn(&str) -> bool) -> Option<usize> {
        (from..self.lines.len()).find(|&i| is(self.lines[i]))
    }
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

fn class_id(graph: &mut LockGraph, name: &str, stack: &[Frame]) -> crate::ClassId {
    let (kind, naming) = kind_of(name, stack);
    graph.class(ClassKey::name(name), ClassInfo::new(name, kind, naming))
}

/// Imports every lockdep report in `log` into `graph`. A log with no report at all is an
/// error naming its last line; a report that cannot be imported whole is a note.
pub fn import_lockdep(graph: &mut LockGraph, log: &str) -> Result<LockdepImport> {
    // rsyslog escapes the newlines inside a message as `#012`.
    let lines: Vec<&str> = log
        .lines()
        .flat_map(|line| line.split("#012"))
        .map(clean_line)
        .collect();
    let headers: Vec<(usize, ReportKind)> = lines
        .iter()
        .enumerate()
        .filter_map(|(i, line)| Some((i, report_kind(line)?)))
        .collect();
    if headers.is_empty() {
        return Err(Error::at(
            lines.len().max(1),
            format!("no lockdep report found in {} lines", lines.len()),
        ));
    }
    let mut import = LockdepImport::default();
    for (n, &(start, kind)) in headers.iter().enumerate() {
        let end = headers.get(n + 1).map_or(lines.len(), |&(next, _)| next);
        let report = ReportLines {
            first: start + 1,
            lines: &lines[start..end],
        };
        import.reports += 1;
        match kind {
            ReportKind::Circular => import_circular(graph, &report, &mut import),
            ReportKind::Recursive => import_recursive(graph, &report, &mut import),
            ReportKind::IrqInversion | ReportKind::Inconsistent => {
                // The header's locks: the class lines right after a line ending in `:`
                // ("just changed the state of lock:", "… takes:"), two or one of them.
                let wanted = if kind == ReportKind::IrqInversion {
                    2
                } else {
                    1
                };
                let classes: Vec<&str> = report
                    .lines
                    .windows(2)
                    .filter(|pair| pair[0].ends_with(':') && pair[1].contains("){"))
                    .filter_map(|pair| class_name(pair[1]))
                    .take(wanted)
                    .collect();
                let what = if kind == ReportKind::IrqInversion {
                    "irq lock inversion"
                } else {
                    "inconsistent lock state"
                };
                import.notes.push(format!(
                    "line {}: {what} report ({}): irq safety is not traced, nothing imported",
                    report.first,
                    classes.join(", ")
                ));
            }
        }
    }
    Ok(import)
}

/// The task line and the two lock lines of a circular or recursive report: (task, trying
/// lock's name and frame, holding lock's name and frame), and the index after them.
type Header = (TaskInfo, (String, Option<Frame>), (String, Option<Frame>));

fn parse_header(report: &ReportLines) -> std::result::Result<(Header, usize), String> {
    let task_at = report
        .find(1, |line| line.ends_with(TRYING))
        .ok_or("it ends before the task line")?;
    let task = task_of(report.lines[task_at])
        .ok_or_else(|| format!("malformed task line `{}`", report.lines[task_at]))?;
    let lock_line = |at: usize| -> std::result::Result<(String, Option<Frame>), String> {
        let line = report.lines.get(at).ok_or("it ends before a lock line")?;
        let name = class_name(line)
            .ok_or_else(|| format!("expected `ADDR (class){{usage}}, at: …`, found `{line}`"))?;
        Ok((name.to_string(), at_frame(line)))
    };
    let trying = lock_line(task_at + 1)?;
    let holding_at = report
        .find(task_at + 2, |line| line == HOLDING)
        .ok_or("it ends before \"but task is already holding lock:\"")?;
    let holding = lock_line(holding_at + 1)?;
    Ok(((task, trying, holding), holding_at + 2))
}

fn import_circular(graph: &mut LockGraph, report: &ReportLines, import: &mut LockdepImport) {
    let ((task, (trying, _), (holding, _)), next) = match parse_header(report) {
        Ok(parsed) => parsed,
        Err(why) => {
            import.notes.push(format!(
                "line {}: circular dependency report not imported: {why}",
                report.first
            ));
            return;
        }
    };
    let mut entries: Vec<Entry> = Vec::new();
    let mut problem: Option<(usize, String)> = None;
    let mut complete = false;
    match report.find(next, |line| line == CHAIN) {
        None => {
            problem = Some((
                report.lines.len(),
                "it ends before the dependency chain".into(),
            ))
        }
        Some(chain) => {
            for (i, &line) in report.lines.iter().enumerate().skip(chain + 1) {
                if line == CHAIN_END {
                    complete = true;
                    break;
                }
                if let Some(rest) = line.strip_prefix("-> #") {
                    let number = rest.split_whitespace().next().and_then(|n| n.parse().ok());
                    let (Some(number), Some(name)) = (number, class_name(rest)) else {
                        problem = Some((i, format!("malformed chain entry `{line}`")));
                        break;
                    };
                    let expected = entries
                        .last()
                        .map_or(number, |last: &Entry| last.number.wrapping_sub(1));
                    if number != expected {
                        problem = Some((
                            i,
                            format!("chain entry #{number} where #{expected} was expected"),
                        ));
                        break;
                    }
                    entries.push(Entry {
                        number,
                        name: name.to_string(),
                        stack: Vec::new(),
                    });
                } else if let (Some(entry), Some(frame)) = (entries.last_mut(), frame_of(line)) {
                    entry.stack.push(frame);
                }
                // Anything else inside the chain is console noise.
            }
            if problem.is_none() && !complete {
                problem = Some((
                    report.lines.len(),
                    "it ends before the end of the dependency chain".into(),
                ));
            }
        }
    }
    let whole = problem.is_none()
        && entries.len() >= 2
        && entries.last().is_some_and(|last| last.number == 0);
    let consistent = entries.first().is_none_or(|first| first.name == holding)
        && (!whole || entries.last().is_some_and(|last| last.name == trying));
    if whole && consistent {
        entries.reverse();
        import.cycles.extend(add_chain(graph, &entries, &task));
        return;
    }
    // What the report says for certain: the attempt of its header, and each chain entry
    // with its predecessor read (the entries are consecutive, so each names its edge).
    let mut added = 0;
    let trying_id = class_id(graph, &trying, &[]);
    let holding_id = class_id(graph, &holding, &[]);
    import.cycles.extend(graph.add_dependency(Dependency {
        held: holding_id,
        new: trying_id,
        task: task.clone(),
        ..Dependency::default()
    }));
    added += 1;
    if consistent {
        for pair in entries.windows(2) {
            let (later, earlier) = (&pair[0], &pair[1]);
            let held = class_id(graph, &earlier.name, &earlier.stack);
            let new = class_id(graph, &later.name, &later.stack);
            import.cycles.extend(graph.add_dependency(Dependency {
                held,
                new,
                new_stack: later.stack.clone(),
                ..Dependency::default()
            }));
            added += 1;
        }
    }
    let (at, why) = problem.unwrap_or_else(|| {
        (
            report.lines.len(),
            format!(
                "its chain runs from `{}` to `{}` but it names `{holding}` held and `{trying}` \
                 wanted",
                entries.first().map_or("", |e| e.name.as_str()),
                entries.last().map_or("", |e| e.name.as_str())
            ),
        )
    });
    let dependencies = if added == 1 {
        "dependency"
    } else {
        "dependencies"
    };
    import.notes.push(format!(
        "line {}: circular dependency report from line {} imported in part ({added} \
         {dependencies}, no cycle of its own): {why}",
        report.line_no(at),
        report.first
    ));
}

/// The chain's edges (entries in dependency order, `#0` first): chain edges first, the
/// closing edge (the attempt that triggered the report) last.
fn add_chain(graph: &mut LockGraph, entries: &[Entry], task: &TaskInfo) -> Vec<Cycle> {
    let ids: Vec<_> = entries
        .iter()
        .map(|e| class_id(graph, &e.name, &e.stack))
        .collect();
    let n = ids.len();
    let mut cycles = Vec::new();
    for k in (1..n).chain(std::iter::once(0)) {
        let is_closing = k == 0;
        cycles.extend(graph.add_dependency(Dependency {
            held: ids[(k + n - 1) % n],
            new: ids[k],
            task: if is_closing {
                task.clone()
            } else {
                TaskInfo::default()
            },
            new_stack: entries[k].stack.clone(),
            ..Dependency::default()
        }));
    }
    cycles
}

fn import_recursive(graph: &mut LockGraph, report: &ReportLines, import: &mut LockdepImport) {
    let ((task, (trying, trying_at), (holding, holding_at)), _) = match parse_header(report) {
        Ok(parsed) => parsed,
        Err(why) => {
            import.notes.push(format!(
                "line {}: recursive locking report not imported: {why}",
                report.first
            ));
            return;
        }
    };
    if trying != holding {
        import.notes.push(format!(
            "line {}: recursive locking report names two classes (`{holding}` held, \
             `{trying}` wanted): not imported",
            report.first
        ));
        return;
    }
    let class = class_id(graph, &trying, &[]);
    graph.add_dependency(Dependency {
        held: class,
        new: class,
        task,
        new_stack: trying_at.into_iter().collect(),
        held_stack: holding_at.into_iter().collect(),
        ..Dependency::default()
    });
}

/// The name of a `/proc/lockdep` class line, `KEY[ OPS: N][ FD: N BD: N USAGE]: NAME`
/// (the counts are space-padded after their colons; names may hold `: ` themselves).
fn proc_class_name(line: &str) -> Option<&str> {
    let (key, mut rest) = line.split_once([' ', ':'])?;
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if line.as_bytes()[key.len()] == b':' {
        rest = line[key.len()..].strip_prefix(':')?;
        return Some(rest.trim()).filter(|name| !name.is_empty());
    }
    loop {
        rest = rest.trim_start();
        let Some(label) = ["OPS:", "FD:", "BD:"]
            .into_iter()
            .find(|l| rest.starts_with(l))
        else {
            break;
        };
        rest = rest[label.len()..]
            .trim_start()
            .trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let name = match rest.strip_prefix(": ") {
        Some(name) => name,
        None => {
            let (usage, name) = rest.split_once(": ")?;
            if usage.contains(char::is_whitespace) {
                return None;
            }
            name
        }
    };
    Some(name.trim()).filter(|name| !name.is_empty())
}

/// Imports lockdep's whole graph as `/proc/lockdep` prints it: a line per class
/// (`KEY [OPS: N] FD: N BD: N USAGE: NAME`) followed by its direct dependencies
/// (` -> [KEY] NAME`), so that a lockdep box's graph merges and diffs with a trace. Classes
/// are keyed by name (with lockdep's `#N` and `/SUBCLASS`); their kind is not printed
/// (`unknown`, or `pseudo` for lockdep's pseudo-locks). Returns the cycles found (lockdep
/// keeps none: it reports one when it first closes, then turns itself off).
pub fn import_proc_lockdep(graph: &mut LockGraph, text: &str) -> Result<Vec<Cycle>> {
    let class = |graph: &mut LockGraph, name: &str| {
        let (kind, naming) = if naming::LOCKDEP_PSEUDO_LOCKS.contains(&name) {
            (LockKind::Pseudo, NameSource::Lockdep)
        } else {
            (LockKind::Unknown, NameSource::Lockdep)
        };
        graph.class(ClassKey::name(name), ClassInfo::new(name, kind, naming))
    };
    let mut cycles = Vec::new();
    let mut current = None;
    let mut classes = 0;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() || line.trim() == "all lock classes:" {
            continue;
        }
        if let Some(dependency) = line.trim_start().strip_prefix("-> [") {
            let held = current
                .ok_or_else(|| Error::at(number, "a dependency line before any class line"))?;
            let name = dependency
                .split_once("] ")
                .map(|(_, name)| name.trim())
                .filter(|name| !name.is_empty())
                .ok_or_else(|| {
                    Error::at(number, format!("expected ` -> [KEY] NAME`, found `{line}`"))
                })?;
            let new = class(graph, name);
            cycles.extend(graph.add_dependency(Dependency {
                held,
                new,
                ..Dependency::default()
            }));
            continue;
        }
        let name = proc_class_name(line).ok_or_else(|| {
            Error::at(
                number,
                format!(
                    "expected `KEY FD: N BD: N USAGE: NAME` or ` -> [KEY] NAME`, found `{line}`"
                ),
            )
        })?;
        current = Some(class(graph, name));
        classes += 1;
    }
    if classes == 0 {
        return Err(Error::at(
            text.lines().count().max(1),
            "no lock class found: not /proc/lockdep output",
        ));
    }
    Ok(cycles)
}
