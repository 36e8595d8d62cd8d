//! `--max-overhead`: the CPU time locktrace's own programs take, as the kernel measures it
//! (`BPF_ENABLE_STATS`: each program's run time and run count), is held under a share of the
//! machine's busy CPU time (`/proc/stat`) by shedding work in a fixed, least-harmful order,
//! and given back when the load falls. Never silent: every change is logged, and the status
//! line, the JSON report (`overhead_budget`) and the metrics say what is shed and since when.
//!
//! The order, cheapest loss first:
//! 1. dependency checks at call sites quiet for a while (no new dependency for
//!    [`shed::QUIET_NS`]) sampled one in 4, then 16, then 64: known orders cost nothing
//!    there, and a new order that recurs is still found;
//! 2. then lock families switched off, the costliest first: their acquires are no longer
//!    recorded (their releases still are, so what was held stays right).
//!
//! What the kernel's run time does not include, the hook itself (a uprobe's trap, the
//! fentry trampoline), is not in the budget: `cargo xtask bench` prints it as the floor.
use std::{collections::HashMap, os::fd::OwnedFd, time::Instant};

use anyhow::{Context as _, Result};
use aya::Ebpf;
use serde::Serialize;
use tracer_common::{kind, shed};

use crate::attach::shed_links::{FamilyLink, HookRole};

/// Consecutive periods over budget before a step is shed (a burst alone sheds nothing).
const PERIODS_OVER: u32 = 2;
/// Consecutive periods in which a lighter level would fit before it is restored.
const PERIODS_UNDER: u32 = 2;
/// A lighter level is restored when its predicted share fits in this part of the budget.
const RESTORE_FRACTION: f64 = 0.5;
/// A shed this soon (periods) after a restore doubles the wait before the next restore: a
/// detached family shows no load, so giving it back is how its load is measured again.
const RELAPSE_PERIODS: u32 = 10;
/// The longest wait between restore attempts (periods).
const MAX_BACKOFF: u32 = 300;
/// The sampling steps, as `shed::SAMPLE_SHIFT` values (one in 4, 16, 64).
const SAMPLE_SHIFTS: [u32; 3] = [2, 4, 6];

/// `--max-overhead PERCENT|off`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MaxOverhead(pub Option<f64>);

pub fn parse_max_overhead(text: &str) -> Result<MaxOverhead, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(MaxOverhead(None));
    }
    let number = text.strip_suffix('%').unwrap_or(text);
    let percent: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a percentage (e.g. 5, 0.5%) or 'off'"))?;
    if !(percent > 0.0 && percent <= 100.0) {
        return Err(format!(
            "{text}: the budget must be above 0 and at most 100 percent"
        ));
    }
    Ok(MaxOverhead(Some(percent)))
}

/// One step of the shedding order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShedStep {
    /// Dependency checks at quiet call sites sampled one in `2^shift`.
    Sample(u32),
    /// Acquires of this lock kind ([`tracer_common::kind`]) not recorded.
    FamilyOff(u32),
}

impl std::fmt::Display for ShedStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShedStep::Sample(shift) => write!(
                f,
                "dependency checks at quiet call sites sampled 1 in {}",
                1u32 << shift
            ),
            ShedStep::FamilyOff(kind) => write!(f, "{} acquires not traced", kind_name(*kind)),
        }
    }
}

fn kind_name(lock_kind: u32) -> &'static str {
    match lock_kind {
        kind::MUTEX => "mutex",
        kind::RWSEM => "rwsem",
        kind::PSEUDO => "fs_reclaim/mmu_notifier",
        kind::PTHREAD_MUTEX => "pthread_mutex",
        kind::PTHREAD_RWLOCK => "pthread_rwlock",
        _ => "unknown",
    }
}

/// One measuring period.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Period {
    /// Run time of all of locktrace's programs.
    pub program_ns: u64,
    pub program_runs: u64,
    /// CPU time the whole machine was busy (not idle, not waiting for I/O).
    pub busy_ns: u64,
    /// Run time by lock kind, of the programs that belong to one kind's family.
    pub kind_ns: Vec<(u32, u64)>,
}

impl Period {
    /// The programs' share of the busy CPU time.
    pub fn share(&self) -> f64 {
        share(self.program_ns, self.busy_ns)
    }
}

/// `program_ns` as a share of `busy_ns`, which includes it (clamped: the two are read at
/// slightly different instants).
fn share(program_ns: u64, busy_ns: u64) -> f64 {
    program_ns as f64 / busy_ns.max(program_ns).max(1) as f64
}

/// What a period changed.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    Shed(ShedStep),
    /// The steps given back, the last shed first.
    Restored(Vec<ShedStep>),
    /// Over budget with every step shed: nothing more to give (said once).
    Exhausted,
}

/// The budget's decisions, free of any I/O: periods in, changes out.
#[derive(Debug)]
pub struct BudgetPolicy {
    budget: f64,
    steps: Vec<ShedStep>,
    /// Per level (number of steps shed), the cost of one program run measured there.
    ns_per_run: Vec<Option<f64>>,
    over: u32,
    under: u32,
    exhausted: bool,
    /// Periods observed, and the period of the last shed and of the last restore.
    period: u32,
    last_shed: u32,
    last_restore: Option<u32>,
    /// Periods to wait after a shed before a restore.
    backoff: u32,
}

impl BudgetPolicy {
    pub fn new(percent: f64) -> Self {
        Self {
            budget: percent / 100.0,
            steps: Vec::new(),
            ns_per_run: Vec::new(),
            over: 0,
            under: 0,
            exhausted: false,
            period: 0,
            last_shed: 0,
            last_restore: None,
            backoff: PERIODS_UNDER,
        }
    }

    pub fn steps(&self) -> &[ShedStep] {
        &self.steps
    }

    /// The `SHED` slots for the current steps.
    pub fn slots(&self) -> (u32, u32) {
        let mut shift = 0;
        let mut off = 0;
        for step in &self.steps {
            match *step {
                ShedStep::Sample(s) => shift = shift.max(s),
                ShedStep::FamilyOff(k) => off |= shed::family_bit(k),
            }
        }
        (shift, off)
    }

    /// Takes one period's figures; `sheddable`: the lock kinds traced in this session.
    pub fn observe(&mut self, period: &Period, sheddable: &[u32]) -> Option<Change> {
        self.period += 1;
        let level = self.steps.len();
        if self.ns_per_run.len() <= level {
            self.ns_per_run.resize(level + 1, None);
        }
        if period.program_runs > 0 {
            self.ns_per_run[level] = Some(period.program_ns as f64 / period.program_runs as f64);
        }
        if period.share() > self.budget {
            self.under = 0;
            self.over += 1;
            if self.over < PERIODS_OVER {
                return None;
            }
            self.over = 0;
            return match self.next_step(period, sheddable) {
                Some(step) => {
                    let relapse = self
                        .last_restore
                        .is_some_and(|restored| self.period - restored <= RELAPSE_PERIODS);
                    self.backoff = if relapse {
                        (self.backoff * 2).min(MAX_BACKOFF)
                    } else {
                        PERIODS_UNDER
                    };
                    self.last_shed = self.period;
                    self.steps.push(step);
                    Some(Change::Shed(step))
                }
                None if !self.exhausted => {
                    self.exhausted = true;
                    Some(Change::Exhausted)
                }
                None => None,
            };
        }
        self.over = 0;
        // One step at a time: a family given back shows its load again before the next.
        let Some(target) = level
            .checked_sub(1)
            .filter(|&lighter| self.fits(lighter, period))
        else {
            self.under = 0;
            return None;
        };
        self.under += 1;
        if self.under < PERIODS_UNDER || self.period - self.last_shed < self.backoff {
            return None;
        }
        self.under = 0;
        self.exhausted = false;
        self.last_restore = Some(self.period);
        let mut restored = self.steps.split_off(target);
        restored.reverse();
        Some(Change::Restored(restored))
    }

    /// Whether `level` would fit well inside the budget at this period's load.
    fn fits(&self, level: usize, period: &Period) -> bool {
        if period.program_runs == 0 {
            return true;
        }
        let Some(Some(ns_per_run)) = self.ns_per_run.get(level) else {
            return false;
        };
        let predicted_ns = ns_per_run * period.program_runs as f64;
        let others_ns = period.busy_ns.saturating_sub(period.program_ns) as f64;
        let share = predicted_ns / (others_ns + predicted_ns).max(1.0);
        share <= self.budget * RESTORE_FRACTION
    }

    fn next_step(&self, period: &Period, sheddable: &[u32]) -> Option<ShedStep> {
        let sampled = self
            .steps
            .iter()
            .filter(|step| matches!(step, ShedStep::Sample(_)))
            .count();
        if let Some(&shift) = SAMPLE_SHIFTS.get(sampled) {
            return Some(ShedStep::Sample(shift));
        }
        let cost = |lock_kind: u32| {
            period
                .kind_ns
                .iter()
                .filter(|(k, _)| *k == lock_kind)
                .map(|(_, ns)| ns)
                .sum::<u64>()
        };
        // A family whose programs cost nothing now would save nothing.
        sheddable
            .iter()
            .copied()
            .filter(|k| !self.steps.contains(&ShedStep::FamilyOff(*k)) && cost(*k) > 0)
            .max_by_key(|k| cost(*k))
            .map(ShedStep::FamilyOff)
    }
}

/// One change, as the report lists it.
#[derive(Clone, Debug, Serialize)]
pub struct BudgetEvent {
    /// Seconds since tracing started.
    pub at_s: f64,
    /// `shed`, `restored` or `exhausted`.
    pub action: &'static str,
    pub steps: Vec<String>,
    /// The programs' share of busy CPU time in the period that decided it, in percent.
    pub overhead_percent: f64,
}

/// The budget's part of the JSON report.
#[derive(Clone, Debug, Serialize)]
pub struct BudgetReport {
    pub budget_percent: f64,
    /// The programs' share of busy CPU time over the whole trace, in percent.
    pub overhead_percent: f64,
    /// The highest share of one period, in percent.
    pub max_period_overhead_percent: f64,
    /// The share over the last (up to) 10 s, in percent: what the budget holds once settled.
    pub recent_overhead_percent: f64,
    /// What was shed at the end (empty: full coverage).
    pub shed_at_end: Vec<String>,
    pub history: Vec<BudgetEvent>,
}

/// Totals read from the kernel at one instant.
#[derive(Clone, Default)]
struct Reading {
    /// Per program: run time (ns) and run count.
    programs: HashMap<String, (u64, u64)>,
    busy_ns: u64,
}

/// The live budget of a trace session.
pub struct OverheadBudget {
    /// Keeps the kernel's run-time statistics on for as long as the budget lives.
    _stats: OwnedFd,
    policy: BudgetPolicy,
    percent: f64,
    /// Program name -> the lock kinds whose families run it (from `links`).
    program_kinds: HashMap<String, Vec<u32>>,
    links: Vec<FamilyLink>,
    /// The lock kinds with links, which a `FamilyOff` step can take.
    sheddable: Vec<u32>,
    first: Reading,
    last: Reading,
    started: Instant,
    since: Option<Instant>,
    max_share: f64,
    /// Time families spent off, those given back; and since when each one off now is.
    family_off: std::time::Duration,
    off_since: HashMap<u32, Instant>,
    /// The last periods' program and busy time, newest last.
    recent: std::collections::VecDeque<(u64, u64)>,
    history: Vec<BudgetEvent>,
}

/// Periods in [`BudgetReport::recent_overhead_percent`].
const RECENT_PERIODS: usize = 10;

impl OverheadBudget {
    /// Starts measuring; `None` (with a warning saying so) where the kernel cannot measure
    /// program run time (before Linux 5.8, or not permitted): the trace goes on unbudgeted.
    pub fn start(ebpf: &Ebpf, percent: f64, links: Vec<FamilyLink>) -> Option<Self> {
        let stats = match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
            Ok(fd) => fd,
            Err(err) => {
                log::warn!(
                    "--max-overhead {percent}%: the kernel's program statistics are unavailable \
                     ({err}); tracing WITHOUT an overhead budget"
                );
                return None;
            }
        };
        let mut kinds: HashMap<String, Vec<u32>> = HashMap::new();
        for link in &links {
            let program_kinds = kinds.entry(link.program.to_string()).or_default();
            if !program_kinds.contains(&link.lock_kind) {
                program_kinds.push(link.lock_kind);
            }
        }
        let mut sheddable: Vec<u32> = links.iter().map(|link| link.lock_kind).collect();
        sheddable.sort_unstable();
        sheddable.dedup();
        let first = match read(ebpf) {
            Ok(reading) => reading,
            Err(err) => {
                log::warn!(
                    "--max-overhead {percent}%: {err:#}; tracing WITHOUT an overhead budget"
                );
                return None;
            }
        };
        log::info!(
            "overhead budget: {percent}% of busy CPU time for locktrace's programs \
             (`--max-overhead off` for none)"
        );
        Some(Self {
            _stats: stats,
            policy: BudgetPolicy::new(percent),
            percent,
            program_kinds: kinds,
            links,
            sheddable,
            last: first.clone(),
            first,
            started: Instant::now(),
            since: None,
            max_share: 0.0,
            family_off: std::time::Duration::ZERO,
            off_since: HashMap::new(),
            recent: std::collections::VecDeque::new(),
            history: Vec::new(),
        })
    }

    /// Reads the period that ended now, decides, and writes what to shed into the `SHED` map;
    /// `holds(kind)`: whether some task holds a lock of that kind now.
    pub fn tick(&mut self, ebpf: &mut Ebpf, holds: impl Fn(u32) -> bool) -> Result<()> {
        self.detach_idle_releases(ebpf, holds)?;
        let now = read(ebpf)?;
        let period = self.period(&self.last, &now);
        self.last = now;
        self.max_share = self.max_share.max(period.share());
        if self.recent.len() == RECENT_PERIODS {
            self.recent.pop_front();
        }
        self.recent.push_back((period.program_ns, period.busy_ns));
        let Some(change) = self.policy.observe(&period, &self.sheddable) else {
            return Ok(());
        };
        let at_s = self.started.elapsed().as_secs_f64();
        let overhead = 100.0 * period.share();
        let (action, steps) = match &change {
            Change::Shed(step) => {
                log::warn!(
                    "overhead budget: locktrace's programs took {overhead:.2}% of busy CPU time \
                     (budget {}%): shedding: {step}",
                    self.percent
                );
                self.since.get_or_insert_with(Instant::now);
                if let ShedStep::FamilyOff(lock_kind) = step {
                    self.off_since.insert(*lock_kind, Instant::now());
                    // Off first, so that no acquire half-runs while its hooks go.
                    self.apply(ebpf)?;
                    self.set_links(ebpf, *lock_kind, HookRole::Acquire, false)?;
                }
                ("shed", vec![step.to_string()])
            }
            Change::Restored(steps) => {
                for step in steps {
                    if let ShedStep::FamilyOff(lock_kind) = step {
                        if let Some(since) = self.off_since.remove(lock_kind) {
                            self.family_off += since.elapsed();
                        }
                        // Releases first: every lock taken once acquires record is released
                        // through a traced release.
                        self.set_links(ebpf, *lock_kind, HookRole::Release, true)?;
                        self.set_links(ebpf, *lock_kind, HookRole::Acquire, true)?;
                    }
                }
                let text: Vec<String> = steps.iter().map(ToString::to_string).collect();
                let left = self.shed_now();
                if left.is_empty() {
                    self.since = None;
                    log::warn!(
                        "overhead budget: load fell ({overhead:.2}% of busy CPU time): \
                         full coverage restored"
                    );
                } else {
                    log::warn!(
                        "overhead budget: load fell ({overhead:.2}%): restored {}; still shed: {}",
                        text.join(", "),
                        left.join(", ")
                    );
                }
                ("restored", text)
            }
            Change::Exhausted => {
                log::warn!(
                    "overhead budget: {overhead:.2}% of busy CPU time with every step shed \
                     (budget {}%): what is left is the hooks' own cost",
                    self.percent
                );
                ("exhausted", Vec::new())
            }
        };
        self.history.push(BudgetEvent {
            at_s,
            action,
            steps,
            overhead_percent: overhead,
        });
        self.apply(ebpf)
    }

    /// After a failure: everything given back as far as it can be (each failure logged), so
    /// that a budget that stops leaves no family off behind it.
    pub fn give_back_all(&mut self, ebpf: &mut Ebpf) {
        let kinds: Vec<u32> = self.links.iter().map(|link| link.lock_kind).collect();
        for lock_kind in kinds {
            for role in [HookRole::Release, HookRole::Acquire] {
                if let Err(err) = self.set_links(ebpf, lock_kind, role, true) {
                    log::warn!("{err:#}");
                }
            }
        }
        for (_, since) in self.off_since.drain() {
            self.family_off += since.elapsed();
        }
        self.policy = BudgetPolicy::new(self.percent);
        if let Err(err) = self.apply(ebpf) {
            log::warn!("overhead budget: clearing SHED: {err:#}");
        }
    }

    /// Detaches (`attached` false) or attaches the links of one family's side.
    fn set_links(
        &mut self,
        ebpf: &mut Ebpf,
        lock_kind: u32,
        role: HookRole,
        attached: bool,
    ) -> Result<()> {
        let mut changed = 0;
        for link in self
            .links
            .iter_mut()
            .filter(|link| link.lock_kind == lock_kind && link.role == role)
        {
            if link.is_attached() != attached {
                if attached {
                    link.attach(ebpf)
                } else {
                    link.detach(ebpf)
                }
                .with_context(|| {
                    format!("overhead budget: {} {}", link.program, kind_name(lock_kind))
                })?;
                changed += 1;
            }
        }
        if changed > 0 {
            log::info!(
                "overhead budget: {} {changed} {} {:?} hooks",
                if attached { "attached" } else { "detached" },
                kind_name(lock_kind),
                role
            );
        }
        Ok(())
    }

    /// A family switched off whose locks are all released: its release hooks can go too
    /// (no lock of it can be taken while it is off).
    fn detach_idle_releases(&mut self, ebpf: &mut Ebpf, holds: impl Fn(u32) -> bool) -> Result<()> {
        for step in self.policy.steps().to_vec() {
            let ShedStep::FamilyOff(lock_kind) = step else {
                continue;
            };
            let attached = self.links.iter().any(|link| {
                link.lock_kind == lock_kind && link.role == HookRole::Release && link.is_attached()
            });
            if attached && !holds(lock_kind) {
                self.set_links(ebpf, lock_kind, HookRole::Release, false)?;
            }
        }
        Ok(())
    }

    fn apply(&self, ebpf: &mut Ebpf) -> Result<()> {
        let (shift, off) = self.policy.slots();
        let map = ebpf.map_mut("SHED").context("the SHED map is missing")?;
        let mut slots = aya::maps::Array::<_, u32>::try_from(map).context("SHED")?;
        slots
            .set(shed::SAMPLE_SHIFT, shift, 0)
            .context("setting SHED")?;
        slots
            .set(shed::FAMILIES_OFF, off, 0)
            .context("setting SHED")
    }

    fn period(&self, before: &Reading, after: &Reading) -> Period {
        let mut period = Period {
            busy_ns: after.busy_ns.saturating_sub(before.busy_ns),
            ..Period::default()
        };
        for (name, &(ns, runs)) in &after.programs {
            let (ns_before, runs_before) = before.programs.get(name).copied().unwrap_or_default();
            let ns = ns.saturating_sub(ns_before);
            period.program_ns += ns;
            period.program_runs += runs.saturating_sub(runs_before);
            if let Some(kinds) = self.program_kinds.get(name) {
                // A program shared by families is split evenly between them.
                for lock_kind in kinds {
                    period.kind_ns.push((*lock_kind, ns / kinds.len() as u64));
                }
            }
        }
        period
    }

    /// The steps shed now, as the status line and report say them.
    pub fn shed_now(&self) -> Vec<String> {
        self.policy
            .steps()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// For the status line: the last period's share and what is shed, since when.
    pub fn status(&self) -> String {
        let mut text = format!(
            "overhead {:.2}% (budget {}%)",
            100.0 * self.last_share(),
            self.percent
        );
        let (shift, _) = self.policy.slots();
        let mut shed = Vec::new();
        if shift > 0 {
            shed.push(format!("quiet sites sampled 1/{}", 1u32 << shift));
        }
        for step in self.policy.steps() {
            if let ShedStep::FamilyOff(lock_kind) = step {
                shed.push(format!("{} off", kind_name(*lock_kind)));
            }
        }
        if let Some(since) = self.since.filter(|_| !shed.is_empty()) {
            text.push_str(&format!(
                "; SHED for {}s: {}",
                since.elapsed().as_secs(),
                shed.join(", ")
            ));
        }
        text
    }

    pub fn percent(&self) -> f64 {
        self.percent
    }

    /// Milliseconds lock families have been switched off so far, summed over families
    /// (`stats.budget_family_off_ms`).
    pub fn family_off_ms(&self) -> u64 {
        let now: std::time::Duration = self.off_since.values().map(Instant::elapsed).sum();
        u64::try_from((self.family_off + now).as_millis()).unwrap_or(u64::MAX)
    }

    /// The programs' share of busy CPU time in the last period.
    pub fn last_share(&self) -> f64 {
        self.recent
            .back()
            .map_or(0.0, |&(program_ns, busy_ns)| share(program_ns, busy_ns))
    }

    /// Number of steps shed now (0: full coverage).
    pub fn level(&self) -> usize {
        self.policy.steps().len()
    }

    pub fn report(&self) -> BudgetReport {
        let whole = self.period(&self.first, &self.last);
        BudgetReport {
            budget_percent: self.percent,
            overhead_percent: 100.0 * whole.share(),
            max_period_overhead_percent: 100.0 * self.max_share,
            recent_overhead_percent: {
                let (program_ns, busy_ns) = self
                    .recent
                    .iter()
                    .fold((0, 0), |(p, b), (dp, db)| (p + dp, b + db));
                100.0 * share(program_ns, busy_ns)
            },
            shed_at_end: self.shed_now(),
            history: self.history.clone(),
        }
    }
}

fn read(ebpf: &Ebpf) -> Result<Reading> {
    let mut programs = HashMap::new();
    for (name, program) in ebpf.programs() {
        // Programs not loaded (a family not attached) have no statistics.
        let Ok(info) = program.info() else {
            continue;
        };
        let ns = u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX);
        programs.insert(name.to_string(), (ns, info.run_count()));
    }
    Ok(Reading {
        programs,
        busy_ns: busy_cpu_ns()?,
    })
}

/// CPU time the machine has been busy since boot, from the `cpu` line of `/proc/stat`.
fn busy_cpu_ns() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    busy_from_stat(&stat).context("no cpu line in /proc/stat")
}

fn busy_from_stat(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map_while(|field| field.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(index, _)| *index != 3 && *index != 4)
        .map(|(_, ticks)| ticks)
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .ok()
        .filter(|hz| *hz > 0)
        .unwrap_or(100);
    Some(busy.saturating_mul(1_000_000_000 / hz))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn period(program_ns: u64, runs: u64, busy_ns: u64) -> Period {
        Period {
            program_ns,
            program_runs: runs,
            busy_ns,
            kind_ns: vec![(kind::MUTEX, program_ns / 4), (kind::RWSEM, program_ns / 2)],
        }
    }

    #[test]
    fn parses_percentages_and_off() {
        assert_eq!(parse_max_overhead("5"), Ok(MaxOverhead(Some(5.0))));
        assert_eq!(parse_max_overhead("0.5%"), Ok(MaxOverhead(Some(0.5))));
        assert_eq!(parse_max_overhead("OFF"), Ok(MaxOverhead(None)));
        for bad in ["0", "-1", "101", "five", "", "nan"] {
            assert!(parse_max_overhead(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn busy_time_leaves_out_idle_and_iowait() {
        let stat = "cpu  100 0 50 1000 7 3 2 1 0 0\ncpu0 1 2 3\n";
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        assert_eq!(busy_from_stat(stat), Some(156 * (1_000_000_000 / hz)));
    }

    #[test]
    fn sustained_overload_sheds_in_order_and_a_burst_does_not() {
        let mut policy = BudgetPolicy::new(5.0);
        let sheddable = [kind::MUTEX, kind::RWSEM];
        let hot = period(20_000_000, 100_000, 100_000_000);
        // One hot period, then a calm one: nothing shed.
        assert_eq!(policy.observe(&hot, &sheddable), None);
        assert_eq!(
            policy.observe(&period(1_000, 10, 100_000_000), &sheddable),
            None
        );
        let mut shed = Vec::new();
        for _ in 0..20 {
            if let Some(Change::Shed(step)) = policy.observe(&hot, &sheddable) {
                shed.push(step);
            }
        }
        assert_eq!(
            shed,
            [
                ShedStep::Sample(2),
                ShedStep::Sample(4),
                ShedStep::Sample(6),
                // rwsem's programs cost more than mutex's in `period`.
                ShedStep::FamilyOff(kind::RWSEM),
                ShedStep::FamilyOff(kind::MUTEX),
            ]
        );
        assert_eq!(
            policy.slots(),
            (
                6,
                shed::family_bit(kind::RWSEM) | shed::family_bit(kind::MUTEX)
            )
        );
    }

    #[test]
    fn restores_only_what_the_load_lets_fit() {
        let mut policy = BudgetPolicy::new(5.0);
        let sheddable = [kind::MUTEX];
        // 200 ns per run at full coverage: 20% of busy time.
        let full = period(20_000_000, 100_000, 100_000_000);
        policy.observe(&full, &sheddable);
        assert!(matches!(
            policy.observe(&full, &sheddable),
            Some(Change::Shed(_))
        ));
        // Sampling cut it to 100 ns per run, 10%: still over, shed again.
        let sampled = period(10_000_000, 100_000, 90_000_000);
        policy.observe(&sampled, &sheddable);
        assert!(matches!(
            policy.observe(&sampled, &sheddable),
            Some(Change::Shed(_))
        ));
        // At 20 ns per run (2%), within budget: full coverage would be 20% again, so
        // nothing is restored however long it stays so.
        let light = period(2_000_000, 100_000, 100_000_000);
        for _ in 0..10 {
            assert_eq!(policy.observe(&light, &sheddable), None);
        }
        assert_eq!(policy.steps().len(), 2);
        // The load falls to a hundredth: each lighter level fits, given back a step per two
        // periods, the last shed first.
        let idle = period(20_000, 1_000, 100_000_000);
        let mut restored = Vec::new();
        for _ in 0..4 {
            if let Some(Change::Restored(steps)) = policy.observe(&idle, &sheddable) {
                restored.extend(steps);
            }
        }
        assert_eq!(restored, [ShedStep::Sample(4), ShedStep::Sample(2)]);
        assert_eq!(policy.slots(), (0, 0));
    }

    #[test]
    fn a_restore_that_brings_the_load_back_waits_longer_each_time() {
        let mut policy = BudgetPolicy::new(5.0);
        let hot = period(20_000_000, 100_000, 100_000_000);
        // A detached family: its load is invisible, the period looks idle.
        let blind = period(0, 0, 100_000_000);
        let mut waits = Vec::new();
        for _ in 0..4 {
            while !matches!(policy.observe(&hot, &[kind::MUTEX]), Some(Change::Shed(_))) {}
            let mut waited = 0;
            while !matches!(
                policy.observe(&blind, &[kind::MUTEX]),
                Some(Change::Restored(_))
            ) {
                waited += 1;
            }
            waits.push(waited);
        }
        assert!(waits.windows(2).all(|pair| pair[1] > pair[0]), "{waits:?}");
    }

    #[test]
    fn over_budget_with_everything_shed_says_so_once() {
        let mut policy = BudgetPolicy::new(1.0);
        let hot = period(50_000_000, 100_000, 100_000_000);
        let mut changes = Vec::new();
        for _ in 0..30 {
            changes.extend(policy.observe(&hot, &[kind::MUTEX]));
        }
        assert_eq!(changes.len(), 5);
        assert_eq!(changes.last(), Some(&Change::Exhausted));
    }
}
