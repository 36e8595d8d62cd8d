//! Kernel lock tracing: the attach strategy (`--attach auto|fentry|kprobe`) applied to every
//! row of THE attach table ([`kernel_table`](super::kernel_table)); the load-time facts the
//! programs need are found by [`kernel_globals`](super::kernel_globals).
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

use anyhow::{bail, Result};
use aya::{
    programs::{BtfTracePoint, FEntry, FExit, KProbe, TracePoint},
    Btf, Ebpf,
};

use super::{
    kernel_globals::{tracefs_events, GFP_TYPE},
    kernel_table::{Family, Hook, KERNEL_ATTACH_TABLE},
    shed_links::FamilyLink,
    AttachReport,
};
use crate::{
    capabilities::{error_chain, Capabilities},
    kernel_btf,
};

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
    btf: Option<&'static Btf>,
    /// Programs loaded once and attached at several points (kprobes, the empty tracepoint).
    loaded_shared: HashSet<&'static str>,
    /// `bench-hooks --kernel`: every program replaced by an empty one.
    empty: Option<EmptyPrograms>,
    /// The lock kind of the table row being attached, and the links made for the budget.
    lock_kind: u32,
    links: Vec<FamilyLink>,
}

/// The empty programs of the object (`tracer-ebpf/src/empty_hooks.rs`), handed out one per
/// fentry/fexit/tp_btf slot (such a program is loaded for one target).
#[derive(Default)]
struct EmptyPrograms {
    fentry: usize,
    fexit: usize,
    btf: usize,
}

impl EmptyPrograms {
    fn next(counter: &mut usize, prefix: &str) -> &'static str {
        let name = format!("{prefix}{counter}");
        *counter += 1;
        // A handful of short names for the process's life: leaked, not cloned per call.
        Box::leak(name.into_boxed_str())
    }
}

impl Attacher<'_> {
    fn record(&mut self, link: Option<FamilyLink>) {
        if self.empty.is_none() {
            self.links.extend(link);
        }
    }

    /// The program to load in place of `program`: itself, or an empty one.
    fn program_for(&mut self, program: &'static str) -> &'static str {
        let Some(empty) = &mut self.empty else {
            return program;
        };
        if program.starts_with("fentry_") {
            EmptyPrograms::next(&mut empty.fentry, "empty_fentry_")
        } else if program.starts_with("fexit_") {
            EmptyPrograms::next(&mut empty.fexit, "empty_fexit_")
        } else if program.starts_with("btf_") {
            EmptyPrograms::next(&mut empty.btf, "empty_btf_")
        } else if program.starts_with("kretprobe_") {
            "empty_kretprobe"
        } else if program.starts_with("kprobe_") {
            "empty_kprobe"
        } else {
            "empty_tracepoint"
        }
    }

    fn fentry(
        &mut self,
        function: &str,
        fentry: &'static str,
        fexit: Option<&'static str>,
    ) -> Result<(), String> {
        let btf = self.btf.ok_or("no kernel BTF")?;
        let fentry = self.program_for(fentry);
        let fexit = fexit.map(|fexit| self.program_for(fexit));
        let program: &mut FEntry = self
            .ebpf
            .program_mut(fentry)
            .ok_or_else(|| format!("{fentry} missing from the object"))?
            .try_into()
            .map_err(|err| error_chain(&err))?;
        program
            .load(function, btf)
            .map_err(|err| format!("loading {fentry}: {}", error_chain(&err)))?;
        let id = program
            .attach()
            .map_err(|err| format!("attaching {fentry}: {}", error_chain(&err)))?;
        self.record(FamilyLink::fentry(fentry, self.lock_kind, id));
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
            let id = program
                .attach()
                .map_err(|err| format!("attaching {fexit}: {}", error_chain(&err)))?;
            self.record(FamilyLink::fexit(fexit, self.lock_kind, id));
        }
        Ok(())
    }

    fn kprobe(&mut self, function: &str, program_name: &'static str) -> Result<(), String> {
        let program_name = self.program_for(program_name);
        let program: &mut KProbe = self
            .ebpf
            .program_mut(program_name)
            .ok_or_else(|| format!("{program_name} missing from the object"))?
            .try_into()
            .map_err(|err| error_chain(&err))?;
        if self.loaded_shared.insert(program_name) {
            program
                .load()
                .map_err(|err| format!("loading {program_name}: {}", error_chain(&err)))?;
        }
        let id = program.attach(function, 0).map_err(|err| {
            format!(
                "attaching {program_name} to {function}: {}",
                error_chain(&err)
            )
        })?;
        self.record(FamilyLink::kprobe(
            program_name,
            self.lock_kind,
            function,
            id,
        ));
        Ok(())
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

    fn btf_tracepoint(&mut self, name: &str, program_name: &'static str) -> Result<(), String> {
        let btf = self.btf.ok_or("no kernel BTF")?;
        let program_name = self.program_for(program_name);
        let program: &mut BtfTracePoint = self
            .ebpf
            .program_mut(program_name)
            .ok_or_else(|| format!("{program_name} missing from the object"))?
            .try_into()
            .map_err(|err| error_chain(&err))?;
        program
            .load(name, btf)
            .map_err(|err| format!("loading {program_name}: {}", error_chain(&err)))?;
        let id = program
            .attach()
            .map_err(|err| format!("attaching {program_name}: {}", error_chain(&err)))?;
        self.record(FamilyLink::btf_tracepoint(program_name, self.lock_kind, id));
        Ok(())
    }

    fn tracepoint(
        &mut self,
        category: &str,
        name: &str,
        program_name: &'static str,
    ) -> Result<(), String> {
        let empty = self.empty.is_some();
        let program_name = self.program_for(program_name);
        let program: &mut TracePoint = self
            .ebpf
            .program_mut(program_name)
            .ok_or_else(|| format!("{program_name} missing from the object"))?
            .try_into()
            .map_err(|err| error_chain(&err))?;
        // The empty tracepoint program is one, attached to several tracepoints.
        if !empty || self.loaded_shared.insert(program_name) {
            program
                .load()
                .map_err(|err| format!("loading {program_name}: {}", error_chain(&err)))?;
        }
        let id = program
            .attach(category, name)
            .map_err(|err| error_chain(&err))?;
        self.record(FamilyLink::tracepoint(
            program_name,
            self.lock_kind,
            category,
            name,
            id,
        ));
        Ok(())
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
    attach_kernel_hooks(ebpf, mode, caps, report, false)
}

/// The same hooks with empty programs (`bench-hooks --kernel`): the benchmark's floor.
pub fn attach_empty_kernel_hooks(
    ebpf: &mut Ebpf,
    mode: AttachMode,
    caps: &Capabilities,
    report: &mut AttachReport,
) -> Result<()> {
    attach_kernel_hooks(ebpf, mode, caps, report, true)
}

fn attach_kernel_hooks(
    ebpf: &mut Ebpf,
    mode: AttachMode,
    caps: &Capabilities,
    report: &mut AttachReport,
    empty: bool,
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
        Some(kernel_btf::aya_btf().map_err(|err| anyhow::anyhow!("reading kernel BTF: {err}"))?)
    } else {
        None
    };
    // Our reader, for what aya's `Btf` does not expose (tracepoint prototypes).
    let kernel_btf = if use_fentry {
        kernel_btf::kernel_btf()
    } else {
        None
    };
    let mut attacher = Attacher {
        ebpf,
        btf,
        loaded_shared: HashSet::new(),
        empty: empty.then(EmptyPrograms::default),
        lock_kind: 0,
        links: Vec::new(),
    };
    let mut lock_ops = 0usize;
    let mut per_family: HashMap<&str, usize> = HashMap::new();
    for point in KERNEL_ATTACH_TABLE {
        let family = point.family.as_str();
        attacher.lock_kind = point.family.lock_kind();
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
    report.links.append(&mut attacher.links);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `bench-hooks --kernel` hands out one empty program per fentry, fexit and tp_btf slot
    /// of the table: the object must have enough of each.
    #[test]
    fn the_object_has_an_empty_program_for_every_table_slot() {
        let object = aya_obj::Object::parse(crate::bpf::TRACER_OBJECT).unwrap();
        let mut attacher_pool = EmptyPrograms::default();
        let mut wanted = Vec::new();
        for point in KERNEL_ATTACH_TABLE {
            match point.hook {
                Hook::Function { fexit, .. } => {
                    wanted.push(EmptyPrograms::next(
                        &mut attacher_pool.fentry,
                        "empty_fentry_",
                    ));
                    if fexit.is_some() {
                        wanted.push(EmptyPrograms::next(
                            &mut attacher_pool.fexit,
                            "empty_fexit_",
                        ));
                    }
                }
                Hook::Tracepoint { btf_program, .. } => {
                    if btf_program.is_some() {
                        wanted.push(EmptyPrograms::next(&mut attacher_pool.btf, "empty_btf_"));
                    }
                }
            }
        }
        wanted.extend(["empty_kprobe", "empty_kretprobe", "empty_tracepoint"]);
        for name in wanted {
            assert!(
                object.programs.contains_key(name),
                "{name} missing from the object"
            );
        }
    }
}
