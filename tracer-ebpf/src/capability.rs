//! An empty fentry program that `locktrace doctor` loads to learn whether this kernel
//! accepts BPF trampolines.
use aya_ebpf::{macros::fentry, programs::FEntryContext};

#[fentry(function = "do_nanosleep")]
pub fn capability_fentry(_ctx: FEntryContext) -> u32 {
    0
}
