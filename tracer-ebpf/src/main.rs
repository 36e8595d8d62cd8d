//! locktrace's eBPF programs: one probe family per file, all feeding the shared held-lock
//! bookkeeping in [`lock_state`].
#![no_std]
#![no_main]

mod capability;
mod empty_hooks;
mod klock;
mod lock_state;
mod maps;
mod mmu_notifier;
mod mutex;
mod pthread;
mod reclaim;
mod rwsem;
mod task;
mod task_tree;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL: bpf_probe_read_kernel and friends are GPL-only helpers.
#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
