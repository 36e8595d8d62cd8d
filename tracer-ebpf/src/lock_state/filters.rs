//! The current task and the load-time filters: `--pid`, `--tid`, the process tree of
//! `trace -- COMMAND`, the tracer's own thread group, `--comm` and `--module`.
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_stack,
        generated::bpf_get_current_comm as raw_get_current_comm,
    },
    EbpfContext,
};
use tracer_common::{held_state, tree_state, COMM_LEN};

use crate::maps::{
    armed, global, global_u64, FILTER_COMM, FILTER_MODULE_END, FILTER_MODULE_START, FILTER_PID,
    FILTER_SELF_TGID, FILTER_TID, FILTER_TREE, MODULE_FRAMES, MODULE_FRAMES_SCRATCH, TRACED_TASKS,
};

pub struct Task {
    pub pid: u32,
    pub tid: u32,
}

/// The current task, or `None` when tracing is not armed or a load-time filter (pid, the
/// traced process tree, the tracer itself, comm) excludes it.
#[inline(always)]
pub fn current_task() -> Option<Task> {
    if !armed() {
        return None;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let task = Task {
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
    };
    let filter = global(&FILTER_PID);
    if filter != 0 && filter != task.pid {
        return None;
    }
    let tid_filter = global(&FILTER_TID);
    if tid_filter != 0 && tid_filter != task.tid {
        return None;
    }
    if global(&FILTER_TREE) != 0 {
        let state = TRACED_TASKS.get_ptr_mut(task.pid)?;
        // SAFETY: a `u32` map value; racing writers all write the same.
        unsafe {
            if *state == tree_state::NEW {
                *state = tree_state::LOCKED;
            }
        }
    }
    if task.pid == global(&FILTER_SELF_TGID) {
        return None;
    }
    if !comm_matches() {
        return None;
    }
    Some(task)
}

/// The load-time `--comm` filter (an all-zero `FILTER_COMM` keeps every task). Both sides
/// are NUL-padded to `COMM_LEN` (the helper's buffer starts zeroed), so words compare.
#[inline(always)]
fn comm_matches() -> bool {
    // SAFETY: read-only global; volatile so the loader's value is read.
    let wanted: [u64; COMM_LEN / 8] = unsafe { core::ptr::read_volatile(&FILTER_COMM) };
    if wanted[0] == 0 {
        return true;
    }
    let mut comm = [0u64; COMM_LEN / 8];
    // SAFETY: the helper writes at most `COMM_LEN` bytes into the buffer.
    let ret = unsafe { raw_get_current_comm(comm.as_mut_ptr().cast(), COMM_LEN as u32) };
    ret == 0 && comm == wanted
}

/// Whether the `--module` filter is on; when it is, whether this acquire was made from
/// (within [`MODULE_FRAMES`] frames of) the module's text. Returns [`held_state::FROM_MODULE`]
/// or 0.
#[inline(always)]
pub fn module_bit<C: EbpfContext>(ctx: &C) -> u32 {
    let end = global_u64(&FILTER_MODULE_END);
    if end == 0 {
        return 0;
    }
    let start = global_u64(&FILTER_MODULE_START);
    // A per-CPU scratch buffer, not the stack: the deepest call chains need all 512 bytes.
    let Some(frames) = MODULE_FRAMES_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: the helper writes at most the buffer's size into this CPU's slot.
    let frames = unsafe {
        let len = bpf_get_stack(ctx.as_ptr(), frames.cast(), (MODULE_FRAMES * 8) as u32, 0);
        if len <= 0 {
            return 0;
        }
        &*frames
    };
    for frame in frames {
        if *frame >= start && *frame < end {
            return held_state::FROM_MODULE;
        }
    }
    0
}

/// A dependency is kept unless the `--module` filter is on and neither side came from it.
#[inline(always)]
pub(super) fn module_keeps(held_flags: u32, new_flags: u32) -> bool {
    global_u64(&FILTER_MODULE_END) == 0 || (held_flags | new_flags) & held_state::FROM_MODULE != 0
}
