//! Plain data: lock classes, stack frames and the dependency record sources hand in.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What kind of lock a class is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockKind {
    Mutex,
    Rwsem,
    /// A lockdep pseudo-lock such as `fs_reclaim`.
    Pseudo,
    PthreadMutex,
    PthreadRwlock,
    /// A lock whose kind the source does not say (a class from `/proc/lockdep`).
    Unknown,
}

impl LockKind {
    /// Every kind, in declaration order.
    pub const ALL: [LockKind; 6] = [
        Self::Mutex,
        Self::Rwsem,
        Self::Pseudo,
        Self::PthreadMutex,
        Self::PthreadRwlock,
        Self::Unknown,
    ];

    /// The name used in reports and JSON (`mutex`, `pthread_rwlock`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mutex => "mutex",
            Self::Rwsem => "rwsem",
            Self::Pseudo => "pseudo",
            Self::PthreadMutex => "pthread_mutex",
            Self::PthreadRwlock => "pthread_rwlock",
            Self::Unknown => "unknown",
        }
    }

    /// A user-space lock (class ids are addresses within one process).
    pub fn is_user(self) -> bool {
        matches!(self, Self::PthreadMutex | Self::PthreadRwlock)
    }
}

/// Where a class's name came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NameSource {
    /// The name argument of `__mutex_init`/`__init_rwsem`, as lockdep names classes.
    InitName,
    /// The function whose `pthread_mutex_init`/`pthread_rwlock_init` call initialised the
    /// lock (user locks: one class per initialisation site).
    InitSite,
    /// The symbol of a static lock.
    Symbol,
    /// Named after the function that takes it (no better name known).
    AcquireSite,
    /// One instance of a user-space class whose instances were nested in each other,
    /// tracked on its own (a heap lock: its class and address, `init@f+0x1c[0x5581c2a0]`;
    /// a static one is named by [`NameSource::Symbol`], `chop[2]`).
    Instance,
    /// A fixed pseudo-lock name.
    Pseudo,
    /// Imported from a lockdep report.
    Lockdep,
    /// Written by hand in a trace.
    Given,
}

/// Identity of a lock class as chosen by the source that reports it.
///
/// Two different keys are two different classes even when their names are equal; the
/// graph then disambiguates the display names with lockdep's `#N` suffix.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ClassKey {
    /// A numeric id within a numbering scheme (`source`, e.g. a `class_source` tag).
    Id { source: u32, id: u64 },
    /// A class known only by its name (traces, lockdep imports, snapshots).
    Name(String),
}

impl ClassKey {
    /// Shorthand for [`ClassKey::Name`].
    pub fn name(name: impl Into<String>) -> Self {
        ClassKey::Name(name.into())
    }
}

/// Description of a class as a source knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassInfo {
    pub name: String,
    pub kind: LockKind,
    pub naming: NameSource,
}

impl ClassInfo {
    pub fn new(name: impl Into<String>, kind: LockKind, naming: NameSource) -> Self {
        ClassInfo {
            name: name.into(),
            kind,
            naming,
        }
    }
}

/// One stack frame.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Frame {
    pub addr: u64,
    pub symbol: Option<String>,
    /// Offset of `addr` within `symbol`.
    pub offset: u64,
    /// Size of the symbol, printed after the offset as lockdep does (`+0x4d5/0xbe0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    pub module: Option<String>,
}

impl Frame {
    /// A frame known only by its address.
    pub fn addr(addr: u64) -> Self {
        Frame {
            addr,
            ..Frame::default()
        }
    }

    /// A symbolized frame.
    pub fn symbol(name: impl Into<String>, offset: u64) -> Self {
        Frame {
            symbol: Some(name.into()),
            offset,
            ..Frame::default()
        }
    }

    /// Parses lockdep's frame syntax: `name+0xOFF/0xSIZE [module]`, `name+0xOFF` or `0xADDR`.
    pub fn parse(text: &str) -> Option<Frame> {
        let text = text.trim();
        let (body, module) = match text.strip_suffix(']') {
            Some(rest) => {
                let open = rest.rfind('[')?;
                (rest[..open].trim_end(), Some(rest[open + 1..].to_string()))
            }
            None => (text, None),
        };
        if body.is_empty() || body.contains(char::is_whitespace) {
            return None;
        }
        if let Some(hex) = body.strip_prefix("0x") {
            let addr = u64::from_str_radix(hex, 16).ok()?;
            return Some(Frame {
                addr,
                module,
                ..Frame::default()
            });
        }
        let (name, offsets) = match body.rfind('+') {
            Some(plus) => (&body[..plus], Some(&body[plus + 1..])),
            None => (body, None),
        };
        if name.is_empty() {
            return None;
        }
        let (mut offset, mut size) = (0, None);
        if let Some(offsets) = offsets {
            let (off, sz) = match offsets.split_once('/') {
                Some((off, sz)) => (off, Some(sz)),
                None => (offsets, None),
            };
            offset = parse_hex(off)?;
            size = match sz {
                Some(sz) => Some(parse_hex(sz)?),
                None => None,
            };
        }
        Some(Frame {
            addr: 0,
            symbol: Some(name.to_string()),
            offset,
            size,
            module,
        })
    }
}

fn parse_hex(text: &str) -> Option<u64> {
    u64::from_str_radix(text.strip_prefix("0x")?, 16).ok()
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.symbol {
            Some(name) => {
                write!(f, "{name}+{:#x}", self.offset)?;
                if let Some(size) = self.size {
                    write!(f, "/{size:#x}")?;
                }
            }
            None => write!(f, "{:#x}", self.addr)?,
        }
        if let Some(module) = &self.module {
            write!(f, " [{module}]")?;
        }
        Ok(())
    }
}

/// Task that produced a dependency.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TaskInfo {
    pub comm: String,
    pub pid: u32,
    pub tid: u32,
}

/// Counters the caller keeps about its source (events read, records lost). One type for the
/// live summary, the report's `stats`, snapshots and the `stats` line of recordings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Stats {
    /// Lock operations the source saw.
    pub events: u64,
    /// Records the source lost (recovered by resync where it can).
    pub dropped: u64,
    /// Dependency records the source delivered (after in-kernel dedup).
    pub records: u64,
    /// Dependencies recovered by re-reading the source's own set after drops.
    pub resynced: u64,
    /// Acquires not tracked as held because the task's held-lock stack was full: their own
    /// dependencies are made, those from them to the locks taken inside them are missing.
    pub held_overflow: u64,
    /// New dependencies the source's own set could not keep (it was full): sent, but not
    /// recoverable if their record was dropped ([`Stats::dependencies_lost`] counts those).
    pub dependency_set_full: u64,
    /// Occurrences of new dependencies neither kept nor delivered (set full and record
    /// dropped): what the graph may lack for good.
    pub dependencies_lost: u64,
    /// Times the daemon read the source's dependency set and emptied it of what it had, so
    /// that it never fills.
    pub dependency_set_drains: u64,
    /// Releases of locks the source did not see taken (taken before tracing started, or on a
    /// path it does not trace). No dependency is lost by it, so it is no coverage gap.
    pub unmatched_releases: u64,
    /// Locks released while their acquire had not returned as far as the source saw (the
    /// return probe was missed): held all along, they were no dependency source.
    pub return_missed: u64,
    /// Probe runs the kernel skipped (a program already running on that CPU: BPF's
    /// recursion protection): lock operations not seen at all.
    pub probe_misses: u64,
    /// Threads whose held-lock stacks the bounded per-thread map evicted (their held locks
    /// forgotten).
    pub held_tasks_evicted: u64,
    /// Lock instances whose class the bounded lock → class map evicted (traced afterwards as
    /// a class of their own: a class split).
    pub lock_classes_evicted: u64,
    /// The same for user-space locks.
    pub user_lock_classes_evicted: u64,
    /// Locks released by a thread other than the one holding them (a normal pthread mutex
    /// unlocked by another thread: undefined behaviour glibc lets through). The holder no
    /// longer holds it; nothing is lost.
    pub foreign_releases: u64,
    /// Class names evicted from the kernel's cache of names sent. The name is sent again at
    /// the class's next initialisation, so nothing is lost (`locktrace held` may show an
    /// address meanwhile).
    pub class_names_evicted: u64,
    /// A recording's last line cut short (the writer was killed mid-record): skipped,
    /// every complete record before it replayed.
    pub truncated_records: u64,
    /// Dependency checks the overhead budget skipped (sampled at call sites quiet for a
    /// while): a dependency first made there meanwhile may be missing.
    pub budget_checks_skipped: u64,
    /// Acquires not tracked because the overhead budget had switched their lock family off.
    pub budget_acquires_skipped: u64,
    /// Milliseconds lock families spent switched off by the overhead budget (summed over
    /// families): their hooks are detached then, so no acquire of theirs is even counted.
    pub budget_family_off_ms: u64,
}

impl Stats {
    /// Adds another source's counters (merging snapshots, replaying recordings).
    pub fn add(&mut self, other: &Stats) {
        let Stats {
            events,
            dropped,
            records,
            resynced,
            held_overflow,
            dependency_set_full,
            dependencies_lost,
            dependency_set_drains,
            unmatched_releases,
            return_missed,
            probe_misses,
            held_tasks_evicted,
            lock_classes_evicted,
            user_lock_classes_evicted,
            foreign_releases,
            class_names_evicted,
            truncated_records,
            budget_checks_skipped,
            budget_acquires_skipped,
            budget_family_off_ms,
        } = *other;
        self.events += events;
        self.dropped += dropped;
        self.records += records;
        self.resynced += resynced;
        self.held_overflow += held_overflow;
        self.dependency_set_full += dependency_set_full;
        self.dependencies_lost += dependencies_lost;
        self.dependency_set_drains += dependency_set_drains;
        self.unmatched_releases += unmatched_releases;
        self.return_missed += return_missed;
        self.probe_misses += probe_misses;
        self.held_tasks_evicted += held_tasks_evicted;
        self.lock_classes_evicted += lock_classes_evicted;
        self.user_lock_classes_evicted += user_lock_classes_evicted;
        self.foreign_releases += foreign_releases;
        self.class_names_evicted += class_names_evicted;
        self.truncated_records += truncated_records;
        self.budget_checks_skipped += budget_checks_skipped;
        self.budget_acquires_skipped += budget_acquires_skipped;
        self.budget_family_off_ms += budget_family_off_ms;
    }

    /// What the source could not see or keep, so that dependencies may be missing or
    /// classes split, one phrase each (empty: nothing).
    pub fn coverage_gaps(&self) -> Vec<String> {
        let gaps = [
            (
                self.held_overflow,
                "acquires not tracked (held-lock stack full)",
            ),
            (
                self.dependencies_lost,
                "new dependencies lost (dependency set full and record dropped)",
            ),
            (
                self.return_missed,
                "acquire returns missed (locks held but not tracked as held)",
            ),
            (
                self.probe_misses,
                "probe runs skipped by the kernel (lock operations not seen)",
            ),
            (
                self.held_tasks_evicted,
                "threads' held locks forgotten (held-lock map full)",
            ),
            (
                self.lock_classes_evicted,
                "kernel lock classes forgotten (lock-class map full: classes split)",
            ),
            (
                self.user_lock_classes_evicted,
                "user lock classes forgotten (user-lock-class map full: classes split)",
            ),
            (
                self.truncated_records,
                "recording cut mid-record (last line skipped)",
            ),
            (
                self.budget_checks_skipped,
                "dependency checks skipped by the overhead budget (quiet call sites sampled)",
            ),
            (
                self.budget_acquires_skipped,
                "acquires not tracked (lock family switched off by the overhead budget)",
            ),
            (
                self.budget_family_off_ms,
                "ms with a lock family switched off by the overhead budget (its locks untraced)",
            ),
        ];
        gaps.into_iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect()
    }
}

/// Removes lockdep's `#N` instance suffix: `&vmm->mutex#3` → `&vmm->mutex`.
pub fn strip_lockdep_suffix(name: &str) -> &str {
    match name.rfind('#') {
        Some(hash)
            if hash > 0
                && hash + 1 < name.len()
                && name[hash + 1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            &name[..hash]
        }
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_kind_names_match_their_json_form() {
        for kind in LockKind::ALL {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
    }

    #[test]
    fn frame_round_trips_lockdep_syntax() {
        for text in [
            "nvkm_uvmm_mthd+0x4d5/0xbe0 [nouveau]",
            "__mutex_lock+0x134/0xc70",
            "fs_reclaim_acquire.part.101+0x29/0x30",
            "0xffffffff81000000",
            "foo+0x10",
        ] {
            let frame = Frame::parse(text).unwrap_or_else(|| panic!("{text} did not parse"));
            assert_eq!(frame.to_string(), text);
        }
        let frame = Frame::parse("nvkm_uvmm_mthd+0x4d5/0xbe0 [nouveau]").unwrap();
        assert_eq!(frame.symbol.as_deref(), Some("nvkm_uvmm_mthd"));
        assert_eq!((frame.offset, frame.size), (0x4d5, Some(0xbe0)));
        assert_eq!(frame.module.as_deref(), Some("nouveau"));
        assert!(Frame::parse("not a frame").is_none());
        assert!(Frame::parse("foo+zz").is_none());
        assert!(Frame::parse("").is_none());
    }

    #[test]
    fn strips_only_numeric_suffix() {
        assert_eq!(strip_lockdep_suffix("&vmm->mutex#3"), "&vmm->mutex");
        assert_eq!(strip_lockdep_suffix("&vmm->mutex"), "&vmm->mutex");
        assert_eq!(strip_lockdep_suffix("a#b"), "a#b");
        assert_eq!(strip_lockdep_suffix("x#"), "x#");
        assert_eq!(strip_lockdep_suffix("#1"), "#1");
    }
}
