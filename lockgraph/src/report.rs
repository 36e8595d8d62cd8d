//! Sinks: the lockdep-style text report and the JSON report of a graph, with suppressions
//! applied.

use std::fmt::Write as _;

use crate::{
    graph::{ClassId, Cycle, DepEdge, Guard, LockGraph, RecursiveLock},
    model::{Frame, TaskInfo},
    naming,
    snapshot::{
        mode_names, ClassJson, CycleEdgeJson, CycleJson, EdgeJson, GuardJson, RecursiveJson,
        ReportJson, StatsJson,
    },
    suppressions::Suppressions,
};

/// A view of a graph with suppressions applied.
#[derive(Clone, Copy, Debug)]
pub struct Report<'a> {
    graph: &'a LockGraph,
    suppressions: &'a Suppressions,
}

impl LockGraph {
    pub fn report<'a>(&'a self, suppressions: &'a Suppressions) -> Report<'a> {
        Report {
            graph: self,
            suppressions,
        }
    }
}

fn at_frame(stack: &[Frame]) -> String {
    stack
        .iter()
        .find(|frame| {
            !frame
                .symbol
                .as_deref()
                .is_some_and(naming::is_locking_frame)
        })
        .or(stack.first())
        .map_or_else(|| "?".to_string(), Frame::to_string)
}

fn mode(read: bool) -> &'static str {
    if read {
        "read"
    } else {
        "write"
    }
}

fn lock_call(read: bool) -> &'static str {
    if read {
        "rlock"
    } else {
        "lock"
    }
}

fn task_label(task: &TaskInfo) -> String {
    if task.comm.is_empty() && task.pid == 0 {
        "a task".to_string()
    } else {
        format!("{}/{}", task.comm, task.pid)
    }
}

fn write_stack(out: &mut String, stack: &[Frame]) {
    if stack.is_empty() {
        out.push_str("       (no stack)\n");
    }
    for frame in stack {
        let _ = writeln!(out, "       {frame}");
    }
}

const RULE: &str = "======================================================";
const DASHES: &str = "------------------------------------------------------";

impl<'a> Report<'a> {
    fn names(&self, cycle: &Cycle) -> Vec<&'a str> {
        cycle.classes.iter().map(|&c| self.graph.name(c)).collect()
    }

    fn suppressed_by(&self, cycle: &Cycle) -> Option<&'a str> {
        self.suppressions
            .matching_rule(&cycle.id, &self.names(cycle))
    }

    /// Cycles that are neither guarded nor suppressed.
    pub fn unguarded_cycles(&self) -> impl Iterator<Item = &'a Cycle> + '_ {
        self.graph
            .cycles()
            .iter()
            .filter(move |c| c.guarded_by.is_none() && self.suppressed_by(c).is_none())
    }

    /// True iff an unguarded cycle is left after suppressions (`--fail-on-cycle`).
    pub fn has_unguarded_cycle(&self) -> bool {
        self.unguarded_cycles().next().is_some()
    }

    fn edge(&self, held: ClassId, new: ClassId) -> &'a DepEdge {
        self.graph
            .edge(held, new)
            .expect("cycle edges exist in the graph")
    }

    pub fn json(&self) -> ReportJson {
        let g = self.graph;
        let name = |id: ClassId| g.name(id).to_string();
        let guard_json = |guard: Guard| GuardJson {
            class: name(guard.class),
            lock: format!("{:#x}", guard.lock),
        };
        let classes = g
            .classes()
            .map(|(_, c)| ClassJson {
                name: c.name.clone(),
                kind: c.info.kind,
                naming: c.info.naming,
            })
            .collect();
        let edges = g
            .edges()
            .map(|e| EdgeJson {
                from: name(e.held),
                to: name(e.new),
                count: e.count,
                first_seen_ns: e.first_seen_ns,
                held_read: e.held_read,
                new_read: e.new_read,
                held_recursive: e.held_recursive,
                new_recursive: e.new_recursive,
                modes: mode_names(e.modes),
                comm: e.task.comm.clone(),
                pid: e.task.pid,
                tid: e.task.tid,
                new_stack: e.new_stack.clone(),
                held_stack: e.held_stack.clone(),
                guards: e.guards.iter().map(|guard| guard.map(guard_json)).collect(),
            })
            .collect();
        let cycles: Vec<CycleJson> = g
            .cycles()
            .iter()
            .map(|c| CycleJson {
                id: c.id.clone(),
                classes: c.classes.iter().map(|&id| name(id)).collect(),
                guarded_by: c.guarded_by.map(|guard| name(guard.class)),
                guard_lock: c.guarded_by.map(|guard| format!("{:#x}", guard.lock)),
                suppressed: self.suppressed_by(c).is_some(),
                edges: c
                    .edges()
                    .map(|(held, new)| {
                        let e = self.edge(held, new);
                        CycleEdgeJson {
                            from: name(held),
                            to: name(new),
                            count: e.count,
                            held_read: e.held_read,
                            new_read: e.new_read,
                        }
                    })
                    .collect(),
            })
            .collect();
        let recursive = g
            .recursive()
            .iter()
            .map(|r| RecursiveJson {
                class: name(r.class),
                count: r.count,
                first_seen_ns: r.first_seen_ns,
                held_read: r.held_read,
                new_read: r.new_read,
                comm: r.task.comm.clone(),
                pid: r.task.pid,
                tid: r.task.tid,
                new_stack: r.new_stack.clone(),
                held_stack: r.held_stack.clone(),
                nesting_annotation: r.nesting_annotation.clone(),
            })
            .collect();
        let stats = StatsJson {
            source: g.stats(),
            dependencies: g.edge_count() as u64,
            classes: g.class_count() as u64,
            cycles: cycles.len() as u64,
            unguarded_cycles: cycles
                .iter()
                .filter(|c| c.guarded_by.is_none() && !c.suppressed)
                .count() as u64,
            guarded_cycles: cycles.iter().filter(|c| c.guarded_by.is_some()).count() as u64,
            suppressed_cycles: cycles.iter().filter(|c| c.suppressed).count() as u64,
            recursive: g.recursive().iter().filter(|r| r.is_finding()).count() as u64,
        };
        ReportJson {
            schema: crate::SCHEMA_VERSION,
            classes,
            edges,
            cycles,
            recursive,
            stats,
        }
    }

    /// The summary line.
    pub fn summary(&self) -> String {
        let s = self.json().stats;
        format!(
            "summary: {} classes, {} dependencies, {} cycles ({} unguarded, {} guarded, \
             {} suppressed), {} recursive, {} events, {} dropped",
            s.classes,
            s.dependencies,
            s.cycles,
            s.unguarded_cycles,
            s.guarded_cycles,
            s.suppressed_cycles,
            s.recursive,
            s.source.events,
            s.source.dropped
        )
    }

    /// `coverage incomplete: …` when the source lost anything (the graph may then miss
    /// dependencies, and cycles through them).
    pub fn coverage(&self) -> Option<String> {
        let gaps = self.graph.stats().coverage_gaps();
        (!gaps.is_empty()).then(|| format!("coverage incomplete: {}", gaps.join(", ")))
    }

    /// The human report: one lockdep-style splat per unguarded cycle, then guarded cycles,
    /// recursive locking, suppressed cycles, and the summary line.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for cycle in self.unguarded_cycles() {
            self.write_circular(&mut out, cycle);
        }
        let guarded: Vec<&Cycle> = self
            .graph
            .cycles()
            .iter()
            .filter(|c| c.guarded_by.is_some() && self.suppressed_by(c).is_none())
            .collect();
        if !guarded.is_empty() {
            out.push_str(
                "guarded cycles (every occurrence of every edge ran under one and the same \
                 lock instance,\nheld exclusively outside both of the edge's locks, so they \
                 cannot run at once;\nlockdep, which has no guards, would report them):\n",
            );
            for cycle in guarded {
                let guard = cycle.guarded_by.expect("filtered on guard");
                let _ = writeln!(
                    out,
                    "  {} guarded by {} (instance {:#x}): {}",
                    cycle.id,
                    self.graph.name(guard.class),
                    guard.lock,
                    self.chain(cycle)
                );
                for (held, new) in cycle.edges() {
                    let e = self.edge(held, new);
                    let _ = writeln!(
                        out,
                        "    {} -> {} ({} -> {}, {}x, {}) at: {}",
                        self.graph.name(held),
                        self.graph.name(new),
                        mode(e.held_read),
                        mode(e.new_read),
                        e.count,
                        task_label(&e.task),
                        at_frame(&e.new_stack)
                    );
                }
            }
            out.push('\n');
        }
        for found in self.graph.recursive().iter().filter(|r| r.is_finding()) {
            self.write_recursive(&mut out, found);
        }
        let annotated: Vec<&RecursiveLock> = self
            .graph
            .recursive()
            .iter()
            .filter(|r| !r.is_finding())
            .collect();
        if !annotated.is_empty() {
            out.push_str(
                "nestings of one class that lockdep's annotations declare (compiled away on \
                 this kernel; no finding):\n",
            );
            for found in annotated {
                let _ = writeln!(
                    out,
                    "  {} at {}: {}",
                    self.graph.name(found.class),
                    at_frame(&found.new_stack),
                    found.nesting_annotation.as_deref().unwrap_or_default()
                );
            }
            out.push('\n');
        }
        let suppressed: Vec<(&Cycle, &str)> = self
            .graph
            .cycles()
            .iter()
            .filter_map(|c| self.suppressed_by(c).map(|rule| (c, rule)))
            .collect();
        if !suppressed.is_empty() {
            out.push_str("suppressed cycles:\n");
            for (cycle, rule) in suppressed {
                let _ = writeln!(
                    out,
                    "  {} ({}) by `{rule}`: {}",
                    cycle.id,
                    self.kind_label(cycle),
                    self.chain(cycle)
                );
            }
            out.push('\n');
        }
        if let Some(coverage) = self.coverage() {
            out.push_str(&coverage);
            out.push('\n');
        }
        out.push_str(&self.summary());
        out.push('\n');
        out
    }

    /// The lockdep-style splat of one cycle, as [`Report::text`] prints it for an unguarded
    /// one (the HTML page of a cycle shows it too).
    pub fn cycle_text(&self, cycle: &Cycle) -> String {
        let mut out = String::new();
        self.write_circular(&mut out, cycle);
        out
    }

    /// `unguarded`, `guarded by … (instance …)`, with `, suppressed by `RULE`` when a rule
    /// matches it.
    pub fn cycle_state(&self, cycle: &Cycle) -> String {
        match self.suppressed_by(cycle) {
            Some(rule) => format!("{}, suppressed by `{rule}`", self.kind_label(cycle)),
            None => self.kind_label(cycle),
        }
    }

    fn kind_label(&self, cycle: &Cycle) -> String {
        match cycle.guarded_by {
            Some(g) => format!(
                "guarded by {} (instance {:#x})",
                self.graph.name(g.class),
                g.lock
            ),
            None => "unguarded".to_string(),
        }
    }

    fn chain(&self, cycle: &Cycle) -> String {
        let mut names = self.names(cycle);
        names.push(names[0]);
        names.join(" --> ")
    }

    fn write_circular(&self, out: &mut String, cycle: &Cycle) {
        let g = self.graph;
        let n = cycle.classes.len();
        let (source, target) = (cycle.classes[0], cycle.classes[n - 1]);
        let closing = self.edge(target, source);
        let into_target = self.edge(cycle.classes[n - 2], target);
        let held_at = if closing.held_stack.is_empty() {
            &into_target.new_stack
        } else {
            &closing.held_stack
        };
        let _ = write!(
            out,
            "\n{RULE}\nWARNING: possible circular locking dependency detected\n{}\n{DASHES}\n\
             {} is trying to acquire lock:\n({}){{{}}}, at: {}\n\n\
             but task is already holding lock:\n({}){{{}}}, at: {}\n\n\
             which lock already depends on the new lock.\n\n\n\
             the existing dependency chain (in reverse order) is:\n",
            cycle.id,
            task_label(&closing.task),
            g.name(source),
            mode(closing.new_read),
            at_frame(&closing.new_stack),
            g.name(target),
            mode(closing.held_read),
            at_frame(held_at),
        );
        for k in (0..n).rev() {
            // Entry #k is where class k was taken while class k-1 (for #0: the held lock) was held.
            let held = cycle.classes[(k + n - 1) % n];
            let e = self.edge(held, cycle.classes[k]);
            let _ = writeln!(
                out,
                "\n-> #{k} ({}){{{}}}:",
                g.name(cycle.classes[k]),
                mode(e.new_read)
            );
            write_stack(out, &e.new_stack);
        }
        out.push_str("\nother info that might help us debug this:\n\n");
        let parent = cycle.classes[n - 2];
        if parent != source {
            let _ = write!(
                out,
                "Chain exists of:\n  {} --> {} --> {}\n\n",
                g.name(source),
                g.name(parent),
                g.name(target)
            );
        }
        let parent_read = self.edge(cycle.classes[(n + n - 3) % n], parent).new_read;
        let _ = write!(
            out,
            " Possible unsafe locking scenario:\n\n       CPU0                    \
             CPU1\n       ----                    ----\n  \
             {}({});\n                               \
             {}({});\n                               \
             {}({});\n  {}({});\n\n *** DEADLOCK ***\n\n",
            lock_call(closing.held_read),
            g.name(target),
            lock_call(parent_read),
            g.name(parent),
            lock_call(into_target.new_read),
            g.name(target),
            lock_call(closing.new_read),
            g.name(source),
        );
    }

    fn write_recursive(&self, out: &mut String, found: &RecursiveLock) {
        let name = self.graph.name(found.class);
        let rule = "============================================";
        let dashes = "--------------------------------------------";
        let _ = write!(
            out,
            "\n{rule}\nWARNING: possible recursive locking detected\n{dashes}\n\
             {} is trying to acquire lock:\n({name}){{{}}}, at: {}\n\n\
             but task is already holding lock:\n({name}){{{}}}, at: {}\n\n\
             other info that might help us debug this:\n \
             Possible unsafe locking scenario:\n\n       CPU0\n       ----\n  \
             {}({name});\n  {}({name});\n\n *** DEADLOCK ***\n\n \
             May be due to missing lock nesting notation\n\n",
            task_label(&found.task),
            mode(found.new_read),
            at_frame(&found.new_stack),
            mode(found.held_read),
            at_frame(&found.held_stack),
            lock_call(found.held_read),
            lock_call(found.new_read),
        );
        let _ = writeln!(
            out,
            "seen {} times; stack of the second acquisition:",
            found.count
        );
        write_stack(out, &found.new_stack);
        out.push_str("stack of the first acquisition:\n");
        write_stack(out, &found.held_stack);
        out.push('\n');
    }
}
