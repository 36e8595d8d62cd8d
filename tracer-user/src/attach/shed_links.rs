//! The links the overhead budget may take away and give back: a lock family's acquire-side
//! links (its acquires record nothing while the family is off anyway), and, once no task
//! holds a lock of the family any more, its release-side links. Class learning (init,
//! destroy) and task bookkeeping always stay.
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use aya::{
    programs::{
        fentry::FEntryLinkId,
        fexit::FExitLinkId,
        kprobe::KProbeLinkId,
        tp_btf::BtfTracePointLinkId,
        trace_point::TracePointLinkId,
        uprobe::{UProbeLinkId, UProbeScope},
        BtfTracePoint, FEntry, FExit, KProbe, TracePoint, UProbe,
    },
    Ebpf,
};

/// Which side of a lock operation a link serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookRole {
    Acquire,
    Release,
}

impl HookRole {
    /// The role of a lock-family program by name; `None`: class learning, never shed.
    pub fn of_program(program: &str) -> Option<HookRole> {
        if program.contains("init") || program.contains("destroy") || program.contains("register") {
            return None;
        }
        const RELEASES: [&str; 6] = [
            "unlock",
            "up_read",
            "up_write",
            "release",
            "downgrade",
            "_end",
        ];
        Some(if RELEASES.iter().any(|word| program.contains(word)) {
            HookRole::Release
        } else {
            HookRole::Acquire
        })
    }
}

/// How to attach the link again.
#[derive(Debug, Clone)]
pub enum Hook {
    Fentry,
    Fexit,
    Kprobe {
        function: String,
    },
    BtfTracepoint,
    Tracepoint {
        category: String,
        name: String,
    },
    Uprobe {
        symbol: String,
        target: PathBuf,
        pid: Option<std::num::NonZeroU32>,
    },
}

#[derive(Debug)]
enum LinkId {
    Fentry(FEntryLinkId),
    Fexit(FExitLinkId),
    Kprobe(KProbeLinkId),
    BtfTracepoint(BtfTracePointLinkId),
    Tracepoint(TracePointLinkId),
    Uprobe(UProbeLinkId),
}

/// One attached link of a lock family.
#[derive(Debug)]
pub struct FamilyLink {
    pub program: &'static str,
    pub lock_kind: u32,
    pub role: HookRole,
    hook: Hook,
    /// `None` while detached.
    link: Option<LinkId>,
}

macro_rules! program {
    ($ebpf:expr, $name:expr, $type:ty) => {{
        let program: &mut $type = $ebpf
            .program_mut($name)
            .with_context(|| format!("{} missing from the object", $name))?
            .try_into()?;
        program
    }};
}

impl FamilyLink {
    pub fn fentry(program: &'static str, lock_kind: u32, id: FEntryLinkId) -> Option<Self> {
        Self::new(program, lock_kind, Hook::Fentry, LinkId::Fentry(id))
    }

    pub fn fexit(program: &'static str, lock_kind: u32, id: FExitLinkId) -> Option<Self> {
        Self::new(program, lock_kind, Hook::Fexit, LinkId::Fexit(id))
    }

    pub fn kprobe(
        program: &'static str,
        lock_kind: u32,
        function: &str,
        id: KProbeLinkId,
    ) -> Option<Self> {
        let hook = Hook::Kprobe {
            function: function.to_string(),
        };
        Self::new(program, lock_kind, hook, LinkId::Kprobe(id))
    }

    pub fn btf_tracepoint(
        program: &'static str,
        lock_kind: u32,
        id: BtfTracePointLinkId,
    ) -> Option<Self> {
        Self::new(
            program,
            lock_kind,
            Hook::BtfTracepoint,
            LinkId::BtfTracepoint(id),
        )
    }

    pub fn tracepoint(
        program: &'static str,
        lock_kind: u32,
        category: &str,
        name: &str,
        id: TracePointLinkId,
    ) -> Option<Self> {
        let hook = Hook::Tracepoint {
            category: category.to_string(),
            name: name.to_string(),
        };
        Self::new(program, lock_kind, hook, LinkId::Tracepoint(id))
    }

    pub fn uprobe(
        program: &'static str,
        lock_kind: u32,
        hook: Hook,
        id: UProbeLinkId,
    ) -> Option<Self> {
        Self::new(program, lock_kind, hook, LinkId::Uprobe(id))
    }

    fn new(program: &'static str, lock_kind: u32, hook: Hook, link: LinkId) -> Option<Self> {
        Some(Self {
            program,
            lock_kind,
            role: HookRole::of_program(program)?,
            hook,
            link: Some(link),
        })
    }

    pub fn is_attached(&self) -> bool {
        self.link.is_some()
    }

    pub fn detach(&mut self, ebpf: &mut Ebpf) -> Result<()> {
        let Some(link) = self.link.take() else {
            return Ok(());
        };
        let name = self.program;
        match link {
            LinkId::Fentry(id) => program!(ebpf, name, FEntry).detach(id)?,
            LinkId::Fexit(id) => program!(ebpf, name, FExit).detach(id)?,
            LinkId::Kprobe(id) => program!(ebpf, name, KProbe).detach(id)?,
            LinkId::BtfTracepoint(id) => program!(ebpf, name, BtfTracePoint).detach(id)?,
            LinkId::Tracepoint(id) => program!(ebpf, name, TracePoint).detach(id)?,
            LinkId::Uprobe(id) => program!(ebpf, name, UProbe).detach(id)?,
        }
        Ok(())
    }

    pub fn attach(&mut self, ebpf: &mut Ebpf) -> Result<()> {
        if self.link.is_some() {
            return Ok(());
        }
        let name = self.program;
        let link = match &self.hook {
            Hook::Fentry => LinkId::Fentry(program!(ebpf, name, FEntry).attach()?),
            Hook::Fexit => LinkId::Fexit(program!(ebpf, name, FExit).attach()?),
            Hook::Kprobe { function } => {
                LinkId::Kprobe(program!(ebpf, name, KProbe).attach(function, 0)?)
            }
            Hook::BtfTracepoint => {
                LinkId::BtfTracepoint(program!(ebpf, name, BtfTracePoint).attach()?)
            }
            Hook::Tracepoint {
                category,
                name: event,
            } => LinkId::Tracepoint(program!(ebpf, name, TracePoint).attach(category, event)?),
            Hook::Uprobe {
                symbol,
                target,
                pid,
            } => {
                let scope = match pid {
                    Some(pid) => UProbeScope::OneProcess(*pid),
                    None => UProbeScope::AllProcesses,
                };
                LinkId::Uprobe(program!(ebpf, name, UProbe).attach(
                    symbol.as_str(),
                    target,
                    scope,
                )?)
            }
        };
        self.link = Some(link);
        Ok(())
    }
}
