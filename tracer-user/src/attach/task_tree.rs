//! The traced process tree of `trace -- COMMAND` (`tracer-ebpf/src/task_tree.rs`): its
//! tracepoints, their record layouts on the running kernel, and the command's pid put in
//! the tree before the command may exec.
use std::fs;

use anyhow::{bail, Context as _, Result};
use aya::{maps::HashMap as BpfHashMap, programs::TracePoint, Ebpf};

use super::{kernel_globals, AttachReport};
use crate::bpf::KernelGlobals;

/// How long a traced process that took locks waits in its exit for the daemon to read its
/// maps, where it can (Linux 6.16+, whose `sched_process_exit` has `group_dead` and comes
/// before the address space is torn down): the map reader answers in well under a
/// millisecond unless the machine is overloaded.
const EXIT_WAIT_NS: u64 = 20_000_000;

/// (program, tracepoint category, tracepoint): all required, since a fork, exit or exec not
/// seen would trace the wrong processes.
const TASK_TREE_TABLE: &[(&str, &str, &str)] = &[
    ("task_tree_fork", "sched", "sched_process_fork"),
    ("task_tree_exit", "sched", "sched_process_exit"),
    ("task_tree_exec", "sched", "sched_process_exec"),
];

/// (tracepoint, record field, global holding its offset, whether the field may be absent:
/// `group_dead` is new in 6.16, and without it the group leader's exit stands for it).
const TASK_TREE_FIELDS: &[(&str, &str, &str, bool)] = &[
    (
        "sched_process_fork",
        "child_pid",
        "FORK_CHILD_PID_OFFSET",
        false,
    ),
    (
        "sched_process_exec",
        "old_pid",
        "EXEC_OLD_PID_OFFSET",
        false,
    ),
    (
        "sched_process_exit",
        "group_dead",
        "EXIT_GROUP_DEAD_OFFSET",
        true,
    ),
];

/// The programs' record offsets on this kernel, and whether exiting processes wait for the
/// daemon to read their maps.
pub fn globals(kernel: &mut KernelGlobals) -> Result<()> {
    let events = kernel_globals::tracefs_events();
    for &(event, field, global, optional) in TASK_TREE_FIELDS {
        let path = format!("{events}/sched/{event}/format");
        let offset = fs::read_to_string(&path)
            .ok()
            .and_then(|format| kernel_globals::format_field_offset(&format, field));
        match offset {
            Some(offset) => {
                kernel.u32s.push((global, offset));
                if field == "group_dead" {
                    kernel.u64s.push(("TREE_EXIT_WAIT_NS", EXIT_WAIT_NS));
                }
            }
            None if optional => kernel.notes.push(format!(
                "no {field} in {path}: a traced process that exits before its maps are read \
                 leaves its frames unnamed"
            )),
            None => bail!("tracing a process tree needs the {field} field of {path}"),
        }
    }
    Ok(())
}

/// Attaches the tree's tracepoints and puts `root` (the command, not yet exec'd) in it.
pub fn attach_task_tree(ebpf: &mut Ebpf, root: u32, report: &mut AttachReport) -> Result<()> {
    for &(program_name, category, name) in TASK_TREE_TABLE {
        let program: &mut TracePoint = ebpf
            .program_mut(program_name)
            .with_context(|| format!("program {program_name} missing from the object"))?
            .try_into()?;
        program
            .load()
            .with_context(|| format!("loading {program_name}"))?;
        program
            .attach(category, name)
            .with_context(|| format!("attaching tracepoint {category}:{name}"))?;
        report.attached(format!("tracepoint {category}:{name} (process tree)"));
    }
    let mut tree: BpfHashMap<_, u32, u32> = ebpf
        .map_mut("TRACED_TASKS")
        .context("the TRACED_TASKS map is missing")?
        .try_into()
        .context("TRACED_TASKS")?;
    tree.insert(root, 0, 0)
        .context("putting the command in the traced tree")?;
    Ok(())
}
