//! Symbolized stacks as reports show them: the probe's caller put back where an unwinder
//! loses it, the tracer's own frames dropped, user stacks cut where the frame-pointer walk
//! left the process's code.
use lockgraph::{naming, Frame};

use crate::{process_maps, symbols::Symbols};

/// A user stack with the lock function's caller put back: the frame-pointer walk from the
/// entry of a function that keeps no frame pointer (glibc's `pthread_mutex_lock`) goes from
/// it straight to its caller's caller. `caller` is the return address the probe read from
/// `[sp]` (0: none); it becomes the second frame unless the stack already has it.
pub fn with_caller(mut addrs: Vec<u64>, caller: u64) -> Vec<u64> {
    if caller != 0 && !addrs.is_empty() && !addrs.contains(&caller) {
        addrs.insert(1, caller);
    }
    addrs
}

/// Symbolized frames of a stack (`scope`: 0 for the kernel, else the process), with the
/// probe's `caller` put back where the unwinder lost it (see [`with_caller`]); kernel
/// stacks without our own probe's frames; user stacks up to their first frame outside the
/// process's executable mappings (see [`process_maps::executable_prefix`]).
pub fn stack_frames(symbols: &mut Symbols, scope: u32, addrs: Vec<u64>, caller: u64) -> Vec<Frame> {
    if addrs.is_empty() {
        return Vec::new();
    }
    if scope != 0 {
        let addrs = process_maps::executable_prefix(scope, with_caller(addrs, caller));
        return symbols.user_frames(scope, &addrs);
    }
    // Trimmed first: the caller belongs right after the lock function.
    let frames = without_tracer_frames(symbols.kernel_frames(&addrs));
    let addrs: Vec<u64> = frames.iter().map(|frame| frame.addr).collect();
    let with = with_caller(addrs.clone(), caller);
    if with.len() == addrs.len() {
        return frames;
    }
    without_tracer_frames(symbols.kernel_frames(&with))
}

/// Drops the frames our own probes add (the BPF program, its trampoline, ftrace's
/// trampoline, and unsymbolizable JIT addresses before the first real frame), so a stack
/// starts at the lock function as lockdep's do.
fn without_tracer_frames(frames: Vec<Frame>) -> Vec<Frame> {
    let is_tracer = |frame: &Frame| frame.symbol.as_deref().is_some_and(naming::is_tracer_frame);
    let first_real = frames
        .iter()
        .position(|frame| frame.symbol.is_some() && !is_tracer(frame));
    match first_real {
        Some(start) => frames
            .into_iter()
            .skip(start)
            .filter(|frame| !is_tracer(frame))
            .collect(),
        None => frames,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracer_frames_are_dropped_from_kernel_stacks() {
        let frames = vec![
            Frame::addr(0xffff_ffff_c000_1000),
            Frame::symbol("bpf_prog_6deef7357e7b4530_fentry_mutex_lock", 0x40),
            Frame::symbol("bpf_trampoline_6442491092", 0x4f),
            Frame::symbol("mutex_lock", 0x5),
            Frame::symbol("nvkm_uvmm_mthd", 0x4d5),
        ];
        let kept: Vec<_> = without_tracer_frames(frames)
            .into_iter()
            .filter_map(|f| f.symbol)
            .collect();
        assert_eq!(kept, ["mutex_lock", "nvkm_uvmm_mthd"]);
        // An allocation seen at a BTF raw tracepoint starts at the allocator.
        let frames = vec![
            Frame::symbol("bpf_prog_0123456789abcdef_btf_kmalloc", 0x40),
            Frame::symbol("bpf_trace_run6", 0xa2),
            Frame::symbol("__kmalloc_cache_noprof", 0x244),
            Frame::symbol("nvkm_vma_tail", 0x35),
        ];
        let kept: Vec<_> = without_tracer_frames(frames)
            .into_iter()
            .filter_map(|f| f.symbol)
            .collect();
        assert_eq!(kept, ["__kmalloc_cache_noprof", "nvkm_vma_tail"]);
    }

    #[test]
    fn the_caller_becomes_the_second_frame_once() {
        assert_eq!(with_caller(vec![0x10, 0x30], 0x20), [0x10, 0x20, 0x30]);
        assert_eq!(
            with_caller(vec![0x10, 0x20, 0x30], 0x20),
            [0x10, 0x20, 0x30]
        );
        assert_eq!(with_caller(vec![0x10], 0x20), [0x10, 0x20]);
        assert_eq!(with_caller(vec![0x10, 0x30], 0), [0x10, 0x30]);
        assert!(with_caller(Vec::new(), 0x20).is_empty());
    }
}
