//! The held-lock table and deadlocks in progress, as text.
use std::{collections::BTreeMap, fmt::Write as _};

use super::wait_for::{Deadlock, HeldLockInfo, HeldTable, TaskLocks};

/// A stack under its heading, indented as lockdep indents its frames.
pub fn push_stack(out: &mut String, frames: &[String]) {
    for frame in frames {
        let _ = writeln!(out, "       {frame}");
    }
}

fn duration(ns: u64) -> String {
    format!("{:.1} s", ns as f64 / 1e9)
}

/// The human table, in the spirit of lockdep's "Showing all locks held in the system".
pub fn render(table: &HeldTable) -> String {
    let mut out = String::new();
    let by_tid: BTreeMap<u32, &TaskLocks> =
        table.tasks.iter().map(|task| (task.tid, task)).collect();
    let _ = writeln!(
        out,
        "Showing all locks held or waited for ({} tasks):",
        table.tasks.len()
    );
    for task in &table.tasks {
        let _ = writeln!(out, "\n{}/{} (tid {}):", task.comm, task.pid, task.tid);
        for (index, held) in task.holding.iter().enumerate() {
            let mode = if held.read { "read" } else { "write" };
            let _ = writeln!(
                out,
                " #{index}: {} ({}, {mode}) held for {}, acquired at:",
                lock_label(held),
                held.kind,
                duration(held.for_ns)
            );
            push_stack(&mut out, &held.stack);
        }
        if let Some(waiting) = &task.waiting_for {
            let holders: Vec<String> = task
                .waiting_on
                .iter()
                .map(|tid| {
                    by_tid.get(tid).map_or(format!("tid {tid}"), |h| {
                        format!("{}/{} (tid {tid})", h.comm, h.pid)
                    })
                })
                .collect();
            let held_by = if holders.is_empty() {
                "a holder not traced".to_string()
            } else {
                holders.join(", ")
            };
            let _ = writeln!(
                out,
                " waiting for {} ({}) for {}, held by {held_by}; waiting at:",
                lock_label(waiting),
                waiting.kind,
                duration(waiting.for_ns)
            );
            push_stack(&mut out, &waiting.stack);
        }
    }
    for deadlock in &table.deadlocks {
        out.push_str(&render_deadlock(deadlock));
    }
    if table.deadlocks.is_empty() {
        let _ = writeln!(out, "\nno deadlock in progress");
    }
    out
}

/// `chop[2] of class init@set_table+0x1c`, or the class alone.
fn lock_label(lock: &HeldLockInfo) -> String {
    match &lock.instance {
        Some(instance) => format!("{instance} of class {}", lock.class),
        None => lock.class.clone(),
    }
}

pub fn render_deadlock(deadlock: &Deadlock) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n======================================================"
    );
    let _ = writeln!(
        out,
        "DEADLOCK IN PROGRESS: {} tasks wait for each other",
        deadlock.tasks.len()
    );
    let _ = writeln!(
        out,
        "------------------------------------------------------"
    );
    for task in &deadlock.tasks {
        let _ = writeln!(
            out,
            "{}/{} (tid {}) holds [{}] and waits for {}:",
            task.comm,
            task.pid,
            task.tid,
            task.holding.join(", "),
            task.waiting_for
        );
        push_stack(&mut out, &task.stack);
    }
    for task in &deadlock.blocked {
        let _ = writeln!(
            out,
            "blocked behind it: {}/{} (tid {}) waits for {}",
            task.comm, task.pid, task.tid, task.waiting_for
        );
    }
    out
}
