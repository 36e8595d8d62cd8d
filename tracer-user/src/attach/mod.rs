//! Attaching probe families. Each family's table says which program goes where and which
//! attach points are optional; what could not be attached is reported, never hidden.
pub mod kernel;
mod kernel_globals;
pub mod kernel_table;
pub mod pthread;
pub mod shed_links;
pub mod task;
pub mod task_tree;

use std::{fmt, path::PathBuf};

use anyhow::{bail, Result};
use aya::Ebpf;

use self::kernel::AttachMode;
use crate::{
    bpf::{self, LoadOptions},
    capabilities,
};

/// What a trace session attached, and what it could not, with the reason.
#[derive(Debug, Default)]
pub struct AttachReport {
    pub attached: Vec<String>,
    pub skipped: Vec<(String, String)>,
    /// The lock families' links, which the overhead budget may detach and attach again.
    pub links: Vec<shed_links::FamilyLink>,
}

impl AttachReport {
    pub fn attached(&mut self, what: impl Into<String>) {
        let what = what.into();
        log::debug!("attached {what}");
        self.attached.push(what);
    }

    pub fn skipped(&mut self, what: impl Into<String>, why: impl fmt::Display) {
        self.skipped.push((what.into(), why.to_string()));
    }
}

/// Loads the object with the user's filters and this kernel's facts, attaching nothing.
pub fn load_object(options: &LoadOptions) -> Result<Ebpf> {
    let mut kernel = kernel_globals::kernel_globals(options.module.as_deref())?;
    if options.tree {
        task_tree::globals(&mut kernel)?;
    }
    for note in &kernel.notes {
        log::debug!("kernel probes: {note}");
    }
    log::debug!("kernel facts read");
    bpf::load(options, &kernel)
}

/// Which probe families to attach, and where.
pub struct Probes {
    pub kernel: bool,
    pub user: bool,
    pub attach: AttachMode,
    pub pid: Option<u32>,
    pub binary: Option<PathBuf>,
    /// `trace -- COMMAND`: the command's pid (started, not yet exec'd), the root of the
    /// traced process tree (the object is loaded with [`LoadOptions::tree`]).
    pub tree_root: Option<u32>,
}

/// Loads the object and attaches what this kernel allows, saying plainly what it could not.
/// Returns the object and the number of probes attached, for the caller to announce once it
/// is ready to take events (`locktrace: attached N probes`, which harnesses wait for).
pub fn load_and_attach(
    options: &LoadOptions,
    probes: &Probes,
) -> Result<(Ebpf, usize, Vec<shed_links::FamilyLink>)> {
    let mut ebpf = load_object(options)?;
    log::debug!("eBPF object loaded");
    let caps = capabilities::probe(Some(&mut ebpf));
    log::debug!("capabilities probed");
    let mut report = AttachReport::default();
    task::attach_task_probes(&mut ebpf, &mut report)?;
    if let Some(root) = probes.tree_root {
        task_tree::attach_task_tree(&mut ebpf, root, &mut report)?;
    }
    // Task bookkeeping alone traces no lock.
    let bookkeeping = report.attached.len();
    if probes.kernel {
        let attached = kernel::attach_kernel_probes(&mut ebpf, probes.attach, &caps, &mut report);
        match attached {
            // With --user too, user locks are still worth tracing: say so and go on.
            Err(err) if probes.user => report.skipped("kernel lock probes", format!("{err:#}")),
            other => other?,
        }
        log::debug!("kernel probes attached");
    }
    if probes.user {
        let target = pthread::pthread_target(probes.binary.as_deref(), probes.pid)?;
        pthread::attach_pthread_probes(&mut ebpf, &target, probes.pid, &mut report)?;
    }
    for (what, why) in &report.skipped {
        log::warn!("not attached: {what}: {why}");
    }
    if report.attached.len() <= bookkeeping {
        bail!("no lock probe could be attached (see `locktrace doctor`)");
    }
    crate::bpf::set_armed(&mut ebpf, true)?;
    Ok((ebpf, report.attached.len(), report.links))
}
