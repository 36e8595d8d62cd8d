//! User-space pthread locks: uprobes on the libc (or static binary) the target uses.
use std::{
    fs,
    num::NonZeroU32,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, Context as _, Result};
use aya::{
    programs::{uprobe::UProbeScope, UProbe},
    Ebpf,
};

use super::{shed_links, AttachReport};

/// (program in the object, symbol it is attached to, optional on this libc?)
const PTHREAD_ATTACH_TABLE: &[(&str, &str, bool)] = &[
    // Initialisation first: a lock initialised once tracing starts is never seen without
    // its class.
    ("pthread_lock_init", "pthread_mutex_init", false),
    ("pthread_lock_init", "pthread_rwlock_init", true),
    ("pthread_lock_destroy", "pthread_mutex_destroy", true),
    ("pthread_lock_destroy", "pthread_rwlock_destroy", true),
    ("pthread_mutex_lock", "pthread_mutex_lock", false),
    ("pthread_mutex_timedlock", "pthread_mutex_timedlock", true),
    ("pthread_mutex_timedlock", "pthread_mutex_clocklock", true),
    ("pthread_mutex_trylock", "pthread_mutex_trylock", false),
    ("pthread_mutex_unlock", "pthread_mutex_unlock", false),
    ("pthread_rwlock_rdlock", "pthread_rwlock_rdlock", true),
    (
        "pthread_rwlock_timedrdlock",
        "pthread_rwlock_timedrdlock",
        true,
    ),
    ("pthread_rwlock_wrlock", "pthread_rwlock_wrlock", true),
    (
        "pthread_rwlock_timedwrlock",
        "pthread_rwlock_timedwrlock",
        true,
    ),
    ("pthread_rwlock_tryrdlock", "pthread_rwlock_tryrdlock", true),
    ("pthread_rwlock_trywrlock", "pthread_rwlock_trywrlock", true),
    ("pthread_rwlock_unlock", "pthread_rwlock_unlock", true),
];

/// Acquire functions whose return tells whether the lock was taken: those that may fail.
/// The untimed locks have none (one probe hit less per acquire): their task's next lock
/// operation shows they returned, and `held` tells a waiter from a holder by whether the
/// task sleeps in a futex wait on the lock (`/proc/TID/syscall`).
const PTHREAD_RETURN_TABLE: &[(&str, bool)] = &[
    ("pthread_mutex_timedlock", true),
    ("pthread_mutex_clocklock", true),
    ("pthread_mutex_trylock", false),
    ("pthread_rwlock_timedrdlock", true),
    ("pthread_rwlock_timedwrlock", true),
    ("pthread_rwlock_tryrdlock", true),
    ("pthread_rwlock_trywrlock", true),
];

/// The lock kind a pthread program's acquires record, for the overhead budget (`None`: the
/// init/destroy bookkeeping, shared by both kinds).
pub fn program_kind(program_name: &str) -> Option<u32> {
    if program_name.starts_with("pthread_mutex_") {
        Some(tracer_common::kind::PTHREAD_MUTEX)
    } else if program_name.starts_with("pthread_rwlock_") {
        Some(tracer_common::kind::PTHREAD_RWLOCK)
    } else {
        None
    }
}

/// Where the pthread functions live: `--binary`, else the libc mapped by `pid` (or by us).
pub fn pthread_target(binary: Option<&Path>, pid: Option<u32>) -> Result<PathBuf> {
    if let Some(binary) = binary {
        return Ok(binary.to_path_buf());
    }
    let maps_path = match pid {
        Some(pid) => format!("/proc/{pid}/maps"),
        None => "/proc/self/maps".to_string(),
    };
    let maps = fs::read_to_string(&maps_path).with_context(|| format!("reading {maps_path}"))?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| {
            Path::new(path)
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("libc.so") || name.starts_with("libc-"))
        })
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("no libc mapped in {maps_path}; pass --binary for a static program"))
}

/// Whether `path` is glibc or a program linked against it (its symbol versions name
/// `GLIBC_2.*`): the uprobes may then read glibc's `pthread_mutex_t` fields.
pub fn is_glibc(path: &Path) -> bool {
    const MARK: &[u8] = b"GLIBC_2.";
    fs::read(path).is_ok_and(|bytes| bytes.windows(MARK.len()).any(|window| window == MARK))
}

pub fn attach_pthread_probes(
    ebpf: &mut Ebpf,
    target: &Path,
    pid: Option<u32>,
    report: &mut AttachReport,
) -> Result<()> {
    let scope = match pid.and_then(NonZeroU32::new) {
        Some(pid) => UProbeScope::OneProcess(pid),
        None => UProbeScope::AllProcesses,
    };
    let mut loaded = std::collections::HashSet::new();
    let entries = PTHREAD_ATTACH_TABLE.iter().copied();
    let returns = PTHREAD_RETURN_TABLE
        .iter()
        .map(|&(symbol, optional)| ("pthread_acquire_ret", symbol, optional));
    for (program_name, symbol, optional) in entries.chain(returns) {
        let program: &mut UProbe = ebpf
            .program_mut(program_name)
            .with_context(|| format!("program {program_name} missing from the object"))?
            .try_into()?;
        if loaded.insert(program_name) {
            program
                .load()
                .with_context(|| format!("loading {program_name}"))?;
        }
        let what = format!(
            "{} {symbol} in {}",
            probe_kind(program_name),
            target.display()
        );
        match program.attach(symbol, target, scope) {
            Ok(id) => {
                report.attached(what);
                // The return probe's kind is its function's.
                let kind_of = if program_name == "pthread_acquire_ret" {
                    symbol
                } else {
                    program_name
                };
                if let Some(lock_kind) = program_kind(kind_of) {
                    let hook = shed_links::Hook::Uprobe {
                        symbol: symbol.to_string(),
                        target: target.to_path_buf(),
                        pid: pid.and_then(NonZeroU32::new),
                    };
                    report.links.extend(shed_links::FamilyLink::uprobe(
                        program_name,
                        lock_kind,
                        hook,
                        id,
                    ));
                }
            }
            Err(err) if optional => report.skipped(what, err),
            Err(err) => return Err(err).with_context(|| format!("attaching {what}")),
        }
    }
    Ok(())
}

/// The hooks `trace --user` puts on a lock operation (an entry uprobe on
/// `pthread_mutex_lock` and one on `pthread_mutex_unlock`), each running the empty program:
/// the floor the bench measures the tracer against.
pub fn attach_empty_hooks(ebpf: &mut Ebpf, target: &Path, pid: NonZeroU32) -> Result<usize> {
    let program: &mut UProbe = ebpf
        .program_mut("pthread_empty_hook")
        .context("program pthread_empty_hook missing from the object")?
        .try_into()?;
    program.load().context("loading pthread_empty_hook")?;
    let symbols: Vec<&str> = PTHREAD_ATTACH_TABLE
        .iter()
        .filter(|(name, _, _)| *name == "pthread_mutex_lock" || *name == "pthread_mutex_unlock")
        .map(|&(_, symbol, _)| symbol)
        .collect();
    for symbol in &symbols {
        program
            .attach(*symbol, target, UProbeScope::OneProcess(pid))
            .with_context(|| format!("attaching the empty hook to {symbol}"))?;
    }
    Ok(symbols.len())
}

fn probe_kind(program_name: &str) -> &'static str {
    if program_name.ends_with("_ret") {
        "uretprobe"
    } else {
        "uprobe"
    }
}
