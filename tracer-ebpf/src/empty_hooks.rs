//! Programs that do nothing, for the benchmark's floor: `locktrace bench-hooks` puts them
//! exactly where `trace` hooks (the same attach table, each fentry/fexit/tp_btf slot taking
//! one of these pools, since such a program is loaded for one function), so that
//! `cargo xtask bench` can set the tracer's cost against the cost of hooking at all.
use aya_ebpf::{
    macros::{btf_tracepoint, fentry, fexit, kprobe, kretprobe, tracepoint, uprobe},
    programs::{
        BtfTracePointContext, FEntryContext, FExitContext, ProbeContext, RetProbeContext,
        TracePointContext,
    },
};

/// Where `trace --user` hooks a lock pair.
#[uprobe]
pub fn pthread_empty_hook(_ctx: ProbeContext) -> u32 {
    0
}

#[kprobe]
pub fn empty_kprobe(_ctx: ProbeContext) -> u32 {
    0
}

#[kretprobe]
pub fn empty_kretprobe(_ctx: RetProbeContext) -> u32 {
    0
}

#[tracepoint]
pub fn empty_tracepoint(_ctx: TracePointContext) -> u32 {
    0
}

macro_rules! empty_programs {
    ($attribute:ident, $context:ty: $($name:ident)*) => {
        $(
            #[$attribute]
            pub fn $name(_ctx: $context) -> u32 {
                0
            }
        )*
    };
}

// One per function of the kernel attach table (userspace checks the pools are big enough).
empty_programs!(fentry, FEntryContext:
    empty_fentry_0 empty_fentry_1 empty_fentry_2 empty_fentry_3 empty_fentry_4
    empty_fentry_5 empty_fentry_6 empty_fentry_7 empty_fentry_8 empty_fentry_9
    empty_fentry_10 empty_fentry_11 empty_fentry_12 empty_fentry_13 empty_fentry_14
    empty_fentry_15 empty_fentry_16 empty_fentry_17 empty_fentry_18 empty_fentry_19
    empty_fentry_20 empty_fentry_21 empty_fentry_22 empty_fentry_23 empty_fentry_24
    empty_fentry_25 empty_fentry_26 empty_fentry_27 empty_fentry_28 empty_fentry_29
    empty_fentry_30 empty_fentry_31 empty_fentry_32 empty_fentry_33 empty_fentry_34
    empty_fentry_35 empty_fentry_36 empty_fentry_37 empty_fentry_38 empty_fentry_39);
empty_programs!(fexit, FExitContext:
    empty_fexit_0 empty_fexit_1 empty_fexit_2 empty_fexit_3 empty_fexit_4
    empty_fexit_5 empty_fexit_6 empty_fexit_7 empty_fexit_8 empty_fexit_9
    empty_fexit_10 empty_fexit_11 empty_fexit_12 empty_fexit_13 empty_fexit_14
    empty_fexit_15 empty_fexit_16 empty_fexit_17 empty_fexit_18 empty_fexit_19);
empty_programs!(btf_tracepoint, BtfTracePointContext:
    empty_btf_0 empty_btf_1 empty_btf_2 empty_btf_3 empty_btf_4
    empty_btf_5 empty_btf_6 empty_btf_7);
