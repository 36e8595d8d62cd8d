//! The traced process tree of `trace -- COMMAND` ([`FILTER_TREE`]): the daemon puts the
//! command's pid in [`TRACED_TASKS`] before it execs; a task forked by a traced thread group
//! joins at `sched_process_fork` (in the parent, before the child first runs, so that no
//! lock operation of the child is missed); a thread group leaves when its last thread exits.
//! Plain tracepoints: BTF raw tracepoints and fentry do not load everywhere.
//!
//! The fork record does not tell a new thread from a new process, so threads join too, by
//! their tid, and leave when they exit: the filter looks up thread groups only, and a
//! thread's entry is merely held while it lives.
//!
//! A thread group that took traced locks and exits before the daemon has read its maps
//! (a process that lives milliseconds) waits in its exit, its address space still whole on
//! Linux 6.16+, until the daemon's map reader has read them or [`TREE_EXIT_WAIT_NS`] have
//! passed: without its maps its frames and static locks could not be named.
use aya_ebpf::{
    bindings::BPF_RB_FORCE_WAKEUP,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_loop},
    macros::tracepoint,
    programs::TracePointContext,
};
use tracer_common::{counter, record, tree_state, TaskEvent};

use crate::maps::{
    count, global, global_u64, EVENTS, EXEC_OLD_PID_OFFSET, EXIT_GROUP_DEAD_OFFSET,
    FORK_CHILD_PID_OFFSET, TRACED_TASKS, TREE_EVENTS, TREE_EXIT_WAIT_NS,
};

/// The current task's thread group and thread ids.
#[inline(always)]
fn current_ids() -> (u32, u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    ((pid_tgid >> 32) as u32, pid_tgid as u32)
}

#[inline(always)]
fn traced(tgid: u32) -> bool {
    // SAFETY: a plain map lookup; the value is not read.
    unsafe { TRACED_TASKS.get(tgid) }.is_some()
}

#[tracepoint]
pub fn task_tree_fork(ctx: TracePointContext) -> u32 {
    let _ = try_fork(&ctx);
    0
}

fn try_fork(ctx: &TracePointContext) -> Option<()> {
    let (tgid, _) = current_ids();
    if !traced(tgid) {
        return None;
    }
    // SAFETY: a checked read of the tracepoint record at the offset its format gives.
    let child = unsafe { ctx.read_at::<i32>(global(&FORK_CHILD_PID_OFFSET) as usize) }.ok()?;
    if TRACED_TASKS.insert(child as u32, 0, 0).is_err() {
        count(counter::TRACED_TASKS_FULL);
    }
    Some(())
}

#[tracepoint]
pub fn task_tree_exit(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current_ids();
    if tid != tgid {
        // A thread's own entry, if it was created by a traced task.
        let _ = TRACED_TASKS.remove(tid);
    }
    let offset = global(&EXIT_GROUP_DEAD_OFFSET);
    let group_dead = if offset == u32::MAX {
        tid == tgid
    } else {
        // SAFETY: a checked read of the tracepoint record at the offset its format gives.
        unsafe { ctx.read_at::<u8>(offset as usize) }.is_ok_and(|dead| dead != 0)
    };
    if group_dead {
        wait_for_maps(tgid);
        let _ = TRACED_TASKS.remove(tgid);
    }
    0
}

/// The state of one [`wait_for_maps`].
struct ExitWait {
    tgid: u32,
    _pad: u32,
    deadline_ns: u64,
}

/// Until the daemon has read the exiting thread group's maps, or the deadline: only for a
/// group that took traced locks and whose maps the daemon has not read yet.
#[inline(always)]
fn wait_for_maps(tgid: u32) {
    let wait_ns = global_u64(&TREE_EXIT_WAIT_NS);
    // SAFETY: a plain map lookup of a `u32`.
    if wait_ns == 0 || unsafe { TRACED_TASKS.get(tgid) } != Some(&tree_state::LOCKED) {
        return;
    }
    let Some(mut entry) = TREE_EVENTS.reserve::<TaskEvent>(0) else {
        return;
    };
    entry.write(TaskEvent {
        record: record::EXITING,
        pid: tgid,
    });
    entry.submit(u64::from(BPF_RB_FORCE_WAKEUP));
    let mut wait = ExitWait {
        tgid,
        _pad: 0,
        // SAFETY: no preconditions.
        deadline_ns: unsafe { bpf_ktime_get_ns() } + wait_ns,
    };
    // SAFETY: the callback only reads `wait`, alive for the loop.
    unsafe {
        bpf_loop(
            1 << 23,
            exit_wait_step as *mut core::ffi::c_void,
            (&raw mut wait).cast(),
            0,
        );
    }
}

extern "C" fn exit_wait_step(_step: u64, context: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `context` is the `ExitWait` of `wait_for_maps`, alive for the loop.
    let wait = unsafe { &*context.cast::<ExitWait>() };
    // SAFETY: a plain map lookup of a `u32`.
    let mapped = unsafe { TRACED_TASKS.get(wait.tgid) } != Some(&tree_state::LOCKED);
    // SAFETY: no preconditions.
    if mapped || unsafe { bpf_ktime_get_ns() } >= wait.deadline_ns {
        1
    } else {
        0
    }
}

#[tracepoint]
pub fn task_tree_exec(ctx: TracePointContext) -> u32 {
    let _ = try_exec(&ctx);
    0
}

fn try_exec(ctx: &TracePointContext) -> Option<()> {
    let (tgid, _) = current_ids();
    if !traced(tgid) {
        return None;
    }
    // A thread other than the leader that execs takes the thread group's pid: its own tid
    // is gone without an exit.
    // SAFETY: a checked read of the tracepoint record at the offset its format gives.
    let old_pid = unsafe { ctx.read_at::<i32>(global(&EXEC_OLD_PID_OFFSET) as usize) }.ok()?;
    if old_pid as u32 != tgid {
        let _ = TRACED_TASKS.remove(old_pid as u32);
    }
    let Some(mut entry) = EVENTS.reserve::<TaskEvent>(0) else {
        count(counter::RINGBUF_DROPPED);
        return None;
    };
    entry.write(TaskEvent {
        record: record::EXEC,
        pid: tgid,
    });
    entry.submit(0);
    Some(())
}
