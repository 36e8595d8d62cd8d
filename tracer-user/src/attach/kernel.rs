//! Kernel lock tracing: THE attach table (every probe point of every kernel family), the
//! attach strategy (`--attach auto|fentry|kprobe`) and the load-time facts the kernel
//! programs need (tracepoint field offsets, gfp bits, `task_struct.flags`, `--module` range).
//!
//! Strategy: fentry/fexit when the kernel has BTF and BPF trampolines work, kprobe/kretprobe
//! otherwise (`auto` also falls back per function when an fentry load fails). A function
//! missing on this kernel (not in `/proc/kallsyms`) is skipped with a note, never an error:
//! `optional` only says whether that is expected (lockdep-only `_nested` variants) or worth a
//! warning.
use std::{
    collections::{HashMap, HashSet},
    fs,
    path::Path,
};

use anyhow::{bail, Context as _, Result};
use aya::{
    programs::{BtfTracePoint, FEntry, FExit, KProbe, TracePoint},
    Btf, Ebpf,
};

use super::{
    btf::KernelBtf,
    kernel_globals::{tracefs_events, GFP_TYPE},
    AttachReport,
};
use crate::capabilities::{error_chain, Capabilities};

/// `--attach`: how kernel functions are probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AttachMode {
    /// fentry/fexit when BTF trampolines work, else kprobe/kretprobe (per function).
    #[default]
    Auto,
    /// fentry/fexit only.
    Fentry,
    /// kprobe/kretprobe only.
    Kprobe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Mutex,
    Rwsem,
    Reclaim,
    MmuNotifier,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Mutex => "mutex",
            Family::Rwsem => "rwsem",
            Family::Reclaim => "fs_reclaim",
            Family::MmuNotifier => "mmu_notifier",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Hook {
    /// A kernel function: entry program, optional return program, for each attach kind.
    Function {
        function: &'static str,
        fentry: &'static str,
        fexit: Option<&'static str>,
        kprobe: &'static str,
        kretprobe: Option<&'static str>,
    },
    /// A stable tracepoint (`category:name`) and its program; `btf_program`, the same as a
    /// BTF raw tracepoint (`tp_btf`), preferred in fentry mode: no trace record is built.
    Tracepoint {
        category: &'static str,
        name: &'static str,
        program: &'static str,
        btf_program: Option<&'static str>,
    },
}

#[derive(Debug, Clone, Copy)]
pub struct ProbePoint {
    pub family: Family,
    pub hook: Hook,
    /// Missing on some kernels by design (lockdep-only functions, renamed tracepoints).
    pub optional: bool,
}

const fn func(
    family: Family,
    function: &'static str,
    fentry: &'static str,
    fexit: Option<&'static str>,
    kprobe: &'static str,
    kretprobe: Option<&'static str>,
    optional: bool,
) -> ProbePoint {
    ProbePoint {
        family,
        hook: Hook::Function {
            function,
            fentry,
            fexit,
            kprobe,
            kretprobe,
        },
        optional,
    }
}

const fn tp(
    family: Family,
    category: &'static str,
    name: &'static str,
    program: &'static str,
    btf_program: Option<&'static str>,
    optional: bool,
) -> ProbePoint {
    ProbePoint {
        family,
        hook: Hook::Tracepoint {
            category,
            name,
            program,
            btf_program,
        },
        optional,
    }
}

use Family::{MmuNotifier, Mutex, Reclaim, Rwsem};
const VOID: Option<&str> = Some("kretprobe_acquire_void");
const ZERO_OK: Option<&str> = Some("kretprobe_acquire_zero_ok");
const ONE_OK: Option<&str> = Some("kretprobe_acquire_one_ok");

/// Every kernel probe point. Class learning (init) first, then releases, then acquires, so
/// that a lock is never seen acquired by a program whose release is not attached yet.
#[rustfmt::skip]
pub const KERNEL_ATTACH_TABLE: &[ProbePoint] = &[
    // family, kernel function, fentry program, fexit program, kprobe program, kretprobe
    // program, optional
    func(Mutex, "__mutex_init", "fentry_mutex_init", None, "kprobe_mutex_init", None, false),
    func(Rwsem, "__init_rwsem", "fentry_init_rwsem", None, "kprobe_init_rwsem", None, false),
    func(Mutex, "mutex_unlock", "fentry_mutex_unlock", None, "kprobe_mutex_release", None, false),
    func(Rwsem, "up_read", "fentry_up_read", None, "kprobe_rwsem_release", None, false),
    func(Rwsem, "up_write", "fentry_up_write", None, "kprobe_rwsem_release", None, false),
    func(Rwsem, "downgrade_write", "fentry_downgrade_write", None, "kprobe_downgrade_write", None,
        false),
    func(Mutex, "mutex_lock", "fentry_mutex_lock", Some("fexit_mutex_lock"), "kprobe_mutex_acquire",
        VOID, false),
    func(Mutex, "mutex_lock_interruptible", "fentry_mutex_lock_interruptible",
        Some("fexit_mutex_lock_interruptible"), "kprobe_mutex_acquire", ZERO_OK, false),
    func(Mutex, "mutex_lock_killable", "fentry_mutex_lock_killable",
        Some("fexit_mutex_lock_killable"), "kprobe_mutex_acquire", ZERO_OK, false),
    func(Mutex, "mutex_lock_io", "fentry_mutex_lock_io", Some("fexit_mutex_lock_io"),
        "kprobe_mutex_acquire", VOID, false),
    func(Mutex, "mutex_trylock", "fentry_mutex_trylock", Some("fexit_mutex_trylock"),
        "kprobe_mutex_trylock", ONE_OK, false),
    func(Mutex, "mutex_lock_nested", "fentry_mutex_lock_nested", Some("fexit_mutex_lock_nested"),
        "kprobe_mutex_acquire_nested", VOID, true),
    func(Mutex, "mutex_lock_interruptible_nested", "fentry_mutex_lock_interruptible_nested",
        Some("fexit_mutex_lock_interruptible_nested"), "kprobe_mutex_acquire_nested", ZERO_OK,
        true),
    func(Mutex, "mutex_lock_killable_nested", "fentry_mutex_lock_killable_nested",
        Some("fexit_mutex_lock_killable_nested"), "kprobe_mutex_acquire_nested", ZERO_OK, true),
    func(Mutex, "mutex_lock_io_nested", "fentry_mutex_lock_io_nested",
        Some("fexit_mutex_lock_io_nested"), "kprobe_mutex_acquire_nested", VOID, true),
    func(Mutex, "_mutex_lock_nest_lock", "fentry_mutex_lock_nest_lock",
        Some("fexit_mutex_lock_nest_lock"), "kprobe_mutex_acquire", VOID, true),
    func(Rwsem, "down_read", "fentry_down_read", Some("fexit_down_read"), "kprobe_rwsem_read", VOID,
        false),
    func(Rwsem, "down_read_interruptible", "fentry_down_read_interruptible",
        Some("fexit_down_read_interruptible"), "kprobe_rwsem_read", ZERO_OK, false),
    func(Rwsem, "down_read_killable", "fentry_down_read_killable", Some("fexit_down_read_killable"),
        "kprobe_rwsem_read", ZERO_OK, false),
    func(Rwsem, "down_read_trylock", "fentry_down_read_trylock", Some("fexit_down_read_trylock"),
        "kprobe_rwsem_read_trylock", ONE_OK, false),
    func(Rwsem, "down_write", "fentry_down_write", Some("fexit_down_write"), "kprobe_rwsem_write",
        VOID, false),
    func(Rwsem, "down_write_killable", "fentry_down_write_killable",
        Some("fexit_down_write_killable"), "kprobe_rwsem_write", ZERO_OK, false),
    func(Rwsem, "down_write_trylock", "fentry_down_write_trylock", Some("fexit_down_write_trylock"),
        "kprobe_rwsem_write_trylock", ONE_OK, false),
    func(Rwsem, "down_read_nested", "fentry_down_read_nested", Some("fexit_down_read_nested"),
        "kprobe_rwsem_read_nested", VOID, true),
    func(Rwsem, "down_read_killable_nested", "fentry_down_read_killable_nested",
        Some("fexit_down_read_killable_nested"), "kprobe_rwsem_read_nested", ZERO_OK, true),
    func(Rwsem, "down_write_nested", "fentry_down_write_nested", Some("fexit_down_write_nested"),
        "kprobe_rwsem_write_nested", VOID, true),
    func(Rwsem, "down_write_killable_nested", "fentry_down_write_killable_nested",
        Some("fexit_down_write_killable_nested"), "kprobe_rwsem_write_nested", ZERO_OK, true),
    func(Rwsem, "_down_write_nest_lock", "fentry_down_write_nest_lock",
        Some("fexit_down_write_nest_lock"), "kprobe_rwsem_write", VOID, true),
    func(MmuNotifier, "__mmu_notifier_invalidate_range_start", "fentry_mmu_invalidate_range_start",
        Some("fexit_mmu_invalidate_range_start"), "kprobe_mmu_invalidate_range_start",
        Some("kretprobe_mmu_invalidate_range_start"), false),
    func(MmuNotifier, "__mmu_notifier_register", "fentry_mmu_notifier_register", None,
        "kprobe_mmu_notifier_register", None, false),
    func(Reclaim, "fs_reclaim_release", "fentry_fs_reclaim_release", None,
        "kprobe_fs_reclaim_release", None, true),
    func(Reclaim, "fs_reclaim_acquire", "fentry_fs_reclaim_acquire", None,
        "kprobe_fs_reclaim_acquire", None, true),
    // family, category, tracepoint, classic program, BTF raw tracepoint program, optional
    tp(Reclaim, "vmscan", "mm_vmscan_direct_reclaim_end", "tp_direct_reclaim_end", None, false),
    tp(Reclaim, "vmscan", "mm_vmscan_direct_reclaim_begin", "tp_direct_reclaim_begin", None, false),
    tp(Reclaim, "kmem", "kmalloc", "tp_kmalloc", Some("btf_kmalloc"), false),
    tp(Reclaim, "kmem", "kmalloc_node", "tp_kmalloc_node", Some("btf_kmalloc_node"), true),
    tp(Reclaim, "kmem", "kmem_cache_alloc", "tp_kmem_cache_alloc", Some("btf_kmem_cache_alloc"),
        false),
    tp(Reclaim, "kmem", "kmem_cache_alloc_node", "tp_kmem_cache_alloc_node",
        Some("btf_kmem_cache_alloc_node"), true),
    tp(Reclaim, "kmem", "mm_page_alloc", "tp_mm_page_alloc", Some("btf_mm_page_alloc"), false),
];

/// Every program name of the table with the function its fentry/fexit form (or the
/// tracepoint its tp_btf form) is loaded for (`None`: kprobe/kretprobe/tracepoint programs,
/// loaded without a target).
pub fn table_programs() -> Vec<(&'static str, Option<&'static str>)> {
    let mut programs = Vec::new();
    for point in KERNEL_ATTACH_TABLE {
        match point.hook {
            Hook::Function {
                function,
                fentry,
                fexit,
                kprobe,
                kretprobe,
            } => {
                programs.push((fentry, Some(function)));
                if let Some(fexit) = fexit {
                    programs.push((fexit, Some(function)));
                }
                programs.push((kprobe, None));
                if let Some(kretprobe) = kretprobe {
                    programs.push((kretprobe, None));
                }
            }
            Hook::Tracepoint {
                name,
                program,
                btf_program,
                ..
            } => {
                programs.push((program, None));
                if let Some(btf_program) = btf_program {
                    programs.push((btf_program, Some(name)));
                }
            }
        }
    }
    let mut seen = HashSet::new();
    programs.retain(|(name, _)| seen.insert(*name));
    programs
}

fn kallsyms_functions() -> HashSet<String> {
    let Ok(kallsyms) = fs::read_to_string("/proc/kallsyms") else {
        return HashSet::new();
    };
    kallsyms
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _address = fields.next()?;
            let kind = fields.next()?;
            let name = fields.next()?;
            matches!(kind, "t" | "T").then(|| name.to_string())
        })
        .collect()
}

/// What one function row ended up as.
enum Probed {
    Fentry,
    Kprobe,
}

struct Attacher<'a> {
    ebpf: &'a mut Ebpf,
    btf: Option<Btf>,
    loaded_kprobes: HashSet<&'static str>,
}

impl Attacher<'_> {
    fn fentry(&mut self, function: &str, fentry: &str, fexit: Option<&str>) -> Result<(), String> {
        let btf = self.btf.as_ref().ok_or("no kernel BTF")?;
        let program: &mut FEntry = self
            .ebpf
            .program_mut(fentry)
            .ok_or_else(|| format!("{fentry} missing from the object"))?
            .try_into()
            .map_err(|err| error_chain(&err))?;
        program
            .load(function, btf)
            .map_err(|err| format!("loading {fentry}: {}", error_chain(&err)))?;
        program
            .attach()
            .map_err(|err| format!("attaching {fentry}: {}", error_chain(&err)))?;
        if let Some(fexit) = fexit {
            let program: &mut FExit = self
                .ebpf
                .program_mut(fexit)
                .ok_or_else(|| format!("{fexit} missing from the object"))?
                .try_into()
                .map_err(|err| error_chain(&err))?;
            program
                .load(function, btf)
                .map_err(|err| format!("loading {fexit}: {}", error_chain(&err)))?;
            program
                .attach()
                .map_err(|err| format!("attaching {fexit}: {}", error_chain(&err)))?;
        }
        Ok(())
    }

    fn kprobe(&mut self, function: &str, program_name: &'static str) -> Result<(), String> {
        let program: &mut KProbe = self
            .ebpf
            .program_mut(program_name)
            .ok_or_else(|| format!("{program_name} missing from the object"))?
            .try_into()
            .map_err(|err| error_chain(&err))?;
        if self.loaded_kprobes.insert(program_name) {
            program
                .load()
                .map_err(|err| format!("loading {program_name}: {}", error_chain(&err)))?;
        }
        program.attach(function, 0).map(drop).map_err(|err| {
            format!(
                "attaching {program_name} to {function}: {}",
                error_chain(&err)
            )
        })
    }

    fn kprobes(
        &mut self,
        function: &str,
        kprobe: &'static str,
        kretprobe: Option<&'static str>,
    ) -> Result<(), String> {
        // The kretprobe first: probes on one address run newest first, so the entry probe
        // then runs before the kretprobe swaps the return address for its trampoline, and
        // reads the real caller at `[sp]` (the key of the call site's stack), not the
        // trampoline.
        if let Some(kretprobe) = kretprobe {
            self.kprobe(function, kretprobe)?;
        }
        self.kprobe(function, kprobe)
    }

    fn btf_tracepoint(&mut self, name: &str, program_name: &str) -> Result<(), String> {
        let btf = self.btf.as_ref().ok_or("no kernel BTF")?;
        let program: &mut BtfTracePoint = self
            .ebpf
            .program_mut(program_name)
            .ok_or_else(|| format!("{program_name} missing from the object"))?
            .try_into()
            .map_err(|err| error_chain(&err))?;
        program
            .load(name, btf)
            .map_err(|err| format!("loading {program_name}: {}", error_chain(&err)))?;
        program
            .attach()
            .map(drop)
            .map_err(|err| format!("attaching {program_name}: {}", error_chain(&err)))
    }

    fn tracepoint(&mut self, category: &str, name: &str, program_name: &str) -> Result<(), String> {
        let program: &mut TracePoint = self
            .ebpf
            .program_mut(program_name)
            .ok_or_else(|| format!("{program_name} missing from the object"))?
            .try_into()
            .map_err(|err| error_chain(&err))?;
        program
            .load()
            .map_err(|err| format!("loading {program_name}: {}", error_chain(&err)))?;
        program
            .attach(category, name)
            .map(drop)
            .map_err(|err| error_chain(&err))
    }
}

/// Attach every kernel probe point of [`KERNEL_ATTACH_TABLE`] this kernel has. Fails only
/// when no lock-operation probe could be attached at all.
pub fn attach_kernel_probes(
    ebpf: &mut Ebpf,
    mode: AttachMode,
    caps: &Capabilities,
    report: &mut AttachReport,
) -> Result<()> {
    let use_fentry = match mode {
        AttachMode::Fentry => {
            if !caps.fentry.available {
                bail!(
                    "--attach fentry: BPF trampolines are not usable here ({})",
                    caps.fentry.detail
                );
            }
            true
        }
        AttachMode::Kprobe => {
            if !caps.kprobes.available {
                bail!("--attach kprobe: {}", caps.kprobes.detail);
            }
            false
        }
        AttachMode::Auto => caps.fentry.available,
    };
    let kprobe_fallback = mode == AttachMode::Auto && caps.kprobes.available;
    if !use_fentry && !caps.kprobes.available {
        bail!(
            "kernel locks cannot be traced here: fentry ({}) and kprobes ({}) are both unavailable",
            caps.fentry.detail,
            caps.kprobes.detail
        );
    }
    let functions = kallsyms_functions();
    let btf = if use_fentry {
        Some(Btf::from_sys_fs().context("reading kernel BTF")?)
    } else {
        None
    };
    // Our reader, for what aya's `Btf` does not expose (tracepoint prototypes).
    let kernel_btf = if use_fentry {
        KernelBtf::from_sys_fs()
    } else {
        None
    };
    let mut attacher = Attacher {
        ebpf,
        btf,
        loaded_kprobes: HashSet::new(),
    };
    let mut lock_ops = 0usize;
    let mut per_family: HashMap<&str, usize> = HashMap::new();
    for point in KERNEL_ATTACH_TABLE {
        let family = point.family.as_str();
        let expected = if point.optional {
            "optional, absent on this kernel"
        } else {
            "absent on this kernel"
        };
        match point.hook {
            Hook::Function {
                function,
                fentry,
                fexit,
                kprobe,
                kretprobe,
            } => {
                if !functions.is_empty() && !functions.contains(function) {
                    report.skipped(
                        format!("{family}: {function}"),
                        format!("not in /proc/kallsyms ({expected})"),
                    );
                    if !point.optional {
                        log::warn!(
                            "kernel function {function} not found: {family} tracing is incomplete"
                        );
                    }
                    continue;
                }
                let probed = if use_fentry {
                    match attacher.fentry(function, fentry, fexit) {
                        Ok(()) => Ok(Probed::Fentry),
                        Err(err) if kprobe_fallback => {
                            log::info!("fentry on {function} failed ({err}); using kprobes");
                            attacher
                                .kprobes(function, kprobe, kretprobe)
                                .map(|()| Probed::Kprobe)
                        }
                        Err(err) => Err(err),
                    }
                } else {
                    attacher
                        .kprobes(function, kprobe, kretprobe)
                        .map(|()| Probed::Kprobe)
                };
                match probed {
                    Ok(how) => {
                        let how = match (how, fexit.is_some() || kretprobe.is_some()) {
                            (Probed::Fentry, true) => "fentry+fexit",
                            (Probed::Fentry, false) => "fentry",
                            (Probed::Kprobe, true) => "kprobe+kretprobe",
                            (Probed::Kprobe, false) => "kprobe",
                        };
                        report.attached(format!("{family}: {how} {function}"));
                        *per_family.entry(family).or_default() += 1;
                        if matches!(point.family, Family::Mutex | Family::Rwsem) {
                            lock_ops += 1;
                        }
                    }
                    Err(err) => report.skipped(format!("{family}: {function}"), err),
                }
            }
            Hook::Tracepoint {
                category,
                name,
                program,
                btf_program,
            } => {
                let what = format!("{family}: tracepoint {category}:{name}");
                if !Path::new(tracefs_events())
                    .join(category)
                    .join(name)
                    .exists()
                {
                    report.skipped(what, format!("no such tracepoint ({expected})"));
                    continue;
                }
                // As a BTF raw tracepoint when fentry is in use and the program can find its
                // argument (kernel_globals set the index from the same prototype).
                let btf_program = btf_program.filter(|_| {
                    kernel_btf
                        .as_ref()
                        .is_some_and(|btf| btf.tracepoint_arg_index(name, GFP_TYPE).is_some())
                });
                let attached = match btf_program {
                    Some(btf_program) => match attacher.btf_tracepoint(name, btf_program) {
                        Ok(()) => Ok(format!("{family}: tp_btf {category}:{name}")),
                        Err(err) => {
                            log::info!(
                                "tp_btf {name} failed ({err}); using the classic tracepoint"
                            );
                            attacher
                                .tracepoint(category, name, program)
                                .map(|()| what.clone())
                        }
                    },
                    None => attacher
                        .tracepoint(category, name, program)
                        .map(|()| what.clone()),
                };
                match attached {
                    Ok(how) => {
                        report.attached(how);
                        *per_family.entry(family).or_default() += 1;
                    }
                    Err(err) => report.skipped(what, err),
                }
            }
        }
    }
    if lock_ops == 0 {
        bail!("no kernel mutex/rwsem probe could be attached (see the skipped list)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_programs_are_unique_fentry_per_function() {
        let mut fentry = HashSet::new();
        for point in KERNEL_ATTACH_TABLE {
            if let Hook::Function {
                fentry: entry,
                fexit,
                ..
            } = point.hook
            {
                assert!(
                    fentry.insert(entry),
                    "{entry} used twice: an fentry program has one target"
                );
                if let Some(fexit) = fexit {
                    assert!(fentry.insert(fexit), "{fexit} used twice");
                }
            }
        }
    }
}
