//! Task lifetime: a thread's held-lock stack is dropped when it exits.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};

use crate::lock_state::forget_task;

#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    forget_task(bpf_get_current_pid_tgid() as u32);
    0
}
