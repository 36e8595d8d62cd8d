//! Who holds what, now: the per-thread held-lock stacks the eBPF side keeps (`HELD`), turned
//! into a held-lock table, a wait-for graph (task → lock → holder task) and the actual
//! deadlocks in it — cycles of tasks each waiting for a lock another one holds.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt::Write as _,
};

use aya::maps::{HashMap as BpfHashMap, Map, MapData, StackTraceMap};
use lockgraph::Frame;
use serde::Serialize;
use tracer_common::{class_source, flags, held_state, pseudo, HeldLock, HeldStack, CLASS_NAME_LEN, MAX_HELD_LOCKS};

use crate::{
    events::{c_str, lock_kind, lock_kind_name},
    symbols::Symbols,
};

const MAP_NAMES: [&str; 3] = ["HELD", "CLASS_NAMES", "STACKS"];

/// The maps a held-lock snapshot reads: from our own loaded object, or found by id in a
/// running `locktrace trace`.
pub struct HeldMaps {
    held: BpfHashMap<MapData, u32, HeldStack>,
    names: Option<BpfHashMap<MapData, u64, [u8; CLASS_NAME_LEN]>>,
    stacks: Option<StackTraceMap<MapData>>,
}

impl HeldMaps {
    pub fn new(
        held: BpfHashMap<MapData, u32, HeldStack>,
        names: Option<BpfHashMap<MapData, u64, [u8; CLASS_NAME_LEN]>>,
        stacks: Option<StackTraceMap<MapData>>,
    ) -> Self {
        Self { held, names, stacks }
    }

    /// The maps of the most recently started `locktrace trace` on this machine, if any.
    pub fn of_running_trace() -> Option<Self> {
        let mut newest: HashMap<&'static str, u32> = HashMap::new();
        for info in aya::maps::loaded_maps().filter_map(Result::ok) {
            for name in MAP_NAMES {
                if info.name_as_str() == Some(name) {
                    let id = newest.entry(name).or_insert(0);
                    *id = (*id).max(info.id());
                }
            }
        }
        Self::open(newest.get("HELD").copied()?, newest.get("CLASS_NAMES").copied(), newest.get("STACKS").copied())
    }

    /// Second handles on the maps of our own loaded object (the event loop owns the first).
    pub fn of_object(ebpf: &aya::Ebpf) -> Option<Self> {
        let id = |name: &str| -> Option<u32> {
            let data = match ebpf.map(name)? {
                Map::HashMap(data) | Map::LruHashMap(data) | Map::StackTraceMap(data) => data,
                _ => return None,
            };
            data.info().ok().map(|info| info.id())
        };
        Self::open(id("HELD")?, id("CLASS_NAMES"), id("STACKS"))
    }

    fn open(held: u32, names: Option<u32>, stacks: Option<u32>) -> Option<Self> {
        let open = |id: u32| -> Option<Map> { Map::from_map_data(MapData::from_id(id).ok()?).ok() };
        let held = BpfHashMap::try_from(open(held)?).ok()?;
        let names = names.and_then(open).and_then(|map| BpfHashMap::try_from(map).ok());
        let stacks = stacks.and_then(open).and_then(|map| StackTraceMap::try_from(map).ok());
        Some(Self::new(held, names, stacks))
    }

    fn frames(&self, stack_id: i32) -> Vec<u64> {
        let (Some(stacks), Ok(id)) = (&self.stacks, u32::try_from(stack_id)) else {
            return Vec::new();
        };
        stacks.get(&id, 0).map(|trace| trace.frames().iter().map(|frame| frame.ip).collect()).unwrap_or_default()
    }

    fn class_name(&self, class: u64) -> Option<String> {
        let name = self.names.as_ref()?.get(&class, 0).ok()?;
        Some(c_str(&name)).filter(|name| !name.is_empty())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct HeldLockInfo {
    pub class: String,
    pub kind: &'static str,
    #[serde(skip)]
    pub lock: u64,
    pub read: bool,
    /// How long it has been held (or waited for).
    pub for_ns: u64,
    /// When it was taken (or the wait began), monotonic ns.
    #[serde(skip)]
    pub since_ns: u64,
    pub stack: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskLocks {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub holding: Vec<HeldLockInfo>,
    pub waiting_for: Option<HeldLockInfo>,
    /// Tids holding the lock this task waits for.
    pub waiting_on: Vec<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadlockTask {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub holding: Vec<String>,
    pub waiting_for: String,
    pub stack: Vec<String>,
    /// How long it has been waiting.
    pub waiting_ns: u64,
    /// When the wait started (monotonic ns): the same wait seen again is the same deadlock.
    #[serde(skip)]
    pub wait_started_ns: u64,
}

/// A cycle in the wait-for graph: every task in it waits for a lock another one holds.
#[derive(Debug, Clone, Serialize)]
pub struct Deadlock {
    pub tasks: Vec<DeadlockTask>,
    /// Tasks not in the cycle, waiting (directly or through others) on its locks.
    pub blocked: Vec<DeadlockTask>,
}

impl Deadlock {
    /// Identity for "already reported": the tids and the classes they wait for.
    pub fn key(&self) -> String {
        let mut parts: Vec<String> = self.tasks.iter().map(|t| format!("{}:{}", t.tid, t.waiting_for)).collect();
        parts.sort();
        parts.join(",")
    }

    /// Identity of the very same waits: a real deadlock keeps every one of them forever.
    fn waits_key(&self) -> String {
        let mut parts: Vec<String> =
            self.tasks.iter().map(|t| format!("{}:{}@{}", t.tid, t.waiting_for, t.wait_started_ns)).collect();
        parts.sort();
        parts.join(",")
    }
}

/// Keeps the deadlocks of `current` that `previous` (taken a moment earlier) already had
/// with the very same waits. The held stacks are read one task at a time, so a single
/// snapshot can show a cycle of waits that never coexisted (or a recursive mutex caught
/// between its entry and return probes); a deadlock does not go away.
pub fn confirmed(previous: &HeldTable, mut current: HeldTable) -> HeldTable {
    let seen: BTreeSet<String> = previous.deadlocks.iter().map(Deadlock::waits_key).collect();
    current.deadlocks.retain(|deadlock| seen.contains(&deadlock.waits_key()));
    current
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct HeldTable {
    pub tasks: Vec<TaskLocks>,
    pub deadlocks: Vec<Deadlock>,
}

fn monotonic_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime fills the struct we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

fn task_comm(tid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{tid}/comm"))
        .map(|comm| comm.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

fn is_user_kind(kind: u32) -> bool {
    lock_kind(kind).is_ok_and(lockgraph::LockKind::is_user)
}

/// Reads every thread's held-lock stack and builds the table and its deadlocks.
pub fn snapshot(maps: &HeldMaps, symbols: &mut Symbols) -> HeldTable {
    let now = monotonic_ns();
    let mut tasks = Vec::new();
    let stacks: Vec<(u32, HeldStack)> = maps.held.iter().filter_map(Result::ok).collect();
    for (tid, stack) in stacks {
        let depth = (stack.depth as usize).min(MAX_HELD_LOCKS);
        let mut task = TaskLocks {
            pid: stack.pid,
            tid,
            comm: task_comm(tid),
            holding: Vec::new(),
            waiting_for: None,
            waiting_on: Vec::new(),
        };
        for held in &stack.locks[..depth] {
            if held.lock == 0 {
                continue;
            }
            let user = is_user_kind(held.kind);
            let scope = if user { stack.pid } else { 0 };
            let frames = crate::ingest::stack_frames(symbols, scope, maps.frames(held.stack_id), held.caller);
            let info = HeldLockInfo {
                class: class_name(maps, symbols, held, user.then_some(stack.pid), &frames),
                kind: lock_kind_name(held.kind),
                lock: held.lock,
                read: held.flags & flags::NEW_READ != 0,
                for_ns: now.saturating_sub(held.acquired_ns),
                since_ns: held.acquired_ns,
                stack: frames.iter().map(Frame::to_string).collect(),
            };
            if held.flags & held_state::WAITING != 0 {
                task.waiting_for = Some(info);
            } else {
                task.holding.push(info);
            }
        }
        if !task.holding.is_empty() || task.waiting_for.is_some() {
            tasks.push(task);
        }
    }
    tasks.sort_by_key(|task| (task.pid, task.tid));
    // Wait-for edges: a waiter waits on every task holding that lock instance.
    let mut holders: HashMap<u64, Vec<u32>> = HashMap::new();
    for task in &tasks {
        for held in &task.holding {
            holders.entry(held.lock).or_default().push(task.tid);
        }
    }
    // A lock named after its acquisition site gets the holder's name in the waiter's line too.
    let mut held_names: HashMap<u64, String> = HashMap::new();
    for task in &tasks {
        for held in &task.holding {
            held_names.entry(held.lock).or_insert_with(|| held.class.clone());
        }
    }
    for task in &mut tasks {
        if let Some(waiting) = &mut task.waiting_for {
            task.waiting_on = holders.get(&waiting.lock).cloned().unwrap_or_default();
            if let Some(name) = held_names.get(&waiting.lock) {
                waiting.class = name.clone();
            }
        }
    }
    let deadlocks = find_deadlocks(&tasks);
    HeldTable { tasks, deadlocks }
}

/// A held lock's class name, as `ingest` names it; `user_pid` is the owner of a user lock.
fn class_name(maps: &HeldMaps, symbols: &mut Symbols, held: &HeldLock, user_pid: Option<u32>, frames: &[Frame]) -> String {
    let (class, lock) = (held.class, held.lock);
    if let (class_source::INIT_SITE, Some(pid)) = (held.class_source, user_pid) {
        return crate::ingest::init_site_name(symbols, pid, class);
    }
    match held.class_source {
        class_source::PSEUDO if class == pseudo::FS_RECLAIM => "fs_reclaim".into(),
        class_source::PSEUDO if class == pseudo::MMU_NOTIFIER_INVALIDATE_RANGE_START => {
            "mmu_notifier_invalidate_range_start".into()
        }
        class_source::INIT_KEY => maps.class_name(class).unwrap_or_else(|| format!("class@{class:#x}")),
        _ => {
            let symbol = match user_pid {
                Some(pid) => symbols.user_data_symbol(pid, lock),
                None => symbols.kernel_data_symbol(lock),
            };
            if let Some((symbol, offset)) = symbol {
                return if offset == 0 { symbol } else { format!("{symbol}+{offset:#x}") };
            }
            crate::ingest::acquisition_site(frames)
                .map_or_else(|| format!("lock@{lock:#x}"), |site| format!("lock@{site}"))
        }
    }
}

/// Cycles of the wait-for graph (task → holder of the lock it waits for), each once, with
/// the tasks blocked behind them.
pub fn find_deadlocks(tasks: &[TaskLocks]) -> Vec<Deadlock> {
    let by_tid: BTreeMap<u32, &TaskLocks> = tasks.iter().map(|task| (task.tid, task)).collect();
    let mut graph = petgraph::graphmap::DiGraphMap::<u32, ()>::new();
    for task in tasks {
        graph.add_node(task.tid);
        for &holder in &task.waiting_on {
            graph.add_edge(task.tid, holder, ());
        }
    }
    let mut deadlocks = Vec::new();
    for component in petgraph::algo::tarjan_scc(&graph) {
        let is_cycle = component.len() > 1 || graph.contains_edge(component[0], component[0]);
        if !is_cycle {
            continue;
        }
        let members: BTreeSet<u32> = component.iter().copied().collect();
        // Everyone who reaches the cycle by waiting is blocked behind it.
        let mut blocked = BTreeSet::new();
        let mut changed = true;
        while changed {
            changed = false;
            for task in tasks {
                if members.contains(&task.tid) || blocked.contains(&task.tid) {
                    continue;
                }
                if task.waiting_on.iter().any(|holder| members.contains(holder) || blocked.contains(holder)) {
                    blocked.insert(task.tid);
                    changed = true;
                }
            }
        }
        let describe = |tid: &u32| {
            let task = by_tid[tid];
            let waiting = task.waiting_for.as_ref();
            DeadlockTask {
                pid: task.pid,
                tid: task.tid,
                comm: task.comm.clone(),
                holding: task.holding.iter().map(|held| held.class.clone()).collect(),
                waiting_for: waiting.map(|w| w.class.clone()).unwrap_or_default(),
                stack: waiting.map(|w| w.stack.clone()).unwrap_or_default(),
                waiting_ns: waiting.map_or(0, |w| w.for_ns),
                wait_started_ns: waiting.map_or(0, |w| w.since_ns),
            }
        };
        deadlocks.push(Deadlock {
            tasks: members.iter().map(describe).collect(),
            blocked: blocked.iter().map(describe).collect(),
        });
    }
    deadlocks
}

/// A stack under its heading, indented as lockdep indents its frames.
pub fn push_stack(out: &mut String, frames: &[String]) {
    for frame in frames {
        let _ = writeln!(out, "       {frame}");
    }
}

fn duration(ns: u64) -> String {
    format!("{:.1} s", ns as f64 / 1e9)
}

/// The human table, in the spirit of lockdep's "Showing all locks held in the system".
pub fn render(table: &HeldTable) -> String {
    let mut out = String::new();
    let by_tid: BTreeMap<u32, &TaskLocks> = table.tasks.iter().map(|task| (task.tid, task)).collect();
    let _ = writeln!(out, "Showing all locks held or waited for ({} tasks):", table.tasks.len());
    for task in &table.tasks {
        let _ = writeln!(out, "\n{}/{} (tid {}):", task.comm, task.pid, task.tid);
        for (index, held) in task.holding.iter().enumerate() {
            let mode = if held.read { "read" } else { "write" };
            let _ = writeln!(
                out,
                " #{index}: {} ({}, {mode}) held for {}, acquired at:",
                held.class,
                held.kind,
                duration(held.for_ns)
            );
            push_stack(&mut out, &held.stack);
        }
        if let Some(waiting) = &task.waiting_for {
            let holders: Vec<String> = task
                .waiting_on
                .iter()
                .map(|tid| by_tid.get(tid).map_or(format!("tid {tid}"), |h| format!("{}/{} (tid {tid})", h.comm, h.pid)))
                .collect();
            let held_by = if holders.is_empty() { "a holder not traced".to_string() } else { holders.join(", ") };
            let _ = writeln!(
                out,
                " waiting for {} ({}) for {}, held by {held_by}; waiting at:",
                waiting.class,
                waiting.kind,
                duration(waiting.for_ns)
            );
            push_stack(&mut out, &waiting.stack);
        }
    }
    for deadlock in &table.deadlocks {
        out.push_str(&render_deadlock(deadlock));
    }
    if table.deadlocks.is_empty() {
        let _ = writeln!(out, "\nno deadlock in progress");
    }
    out
}

pub fn render_deadlock(deadlock: &Deadlock) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n======================================================");
    let _ = writeln!(out, "DEADLOCK IN PROGRESS: {} tasks wait for each other", deadlock.tasks.len());
    let _ = writeln!(out, "------------------------------------------------------");
    for task in &deadlock.tasks {
        let _ = writeln!(
            out,
            "{}/{} (tid {}) holds [{}] and waits for {}:",
            task.comm,
            task.pid,
            task.tid,
            task.holding.join(", "),
            task.waiting_for
        );
        push_stack(&mut out, &task.stack);
    }
    for task in &deadlock.blocked {
        let _ = writeln!(
            out,
            "blocked behind it: {}/{} (tid {}) waits for {}",
            task.comm, task.pid, task.tid, task.waiting_for
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(class: &str, lock: u64) -> HeldLockInfo {
        HeldLockInfo { class: class.into(), kind: "mutex", lock, read: false, for_ns: 1, since_ns: lock, stack: vec![] }
    }

    fn task(tid: u32, holding: &[(&str, u64)], waiting: Option<(&str, u64)>) -> TaskLocks {
        TaskLocks {
            pid: tid,
            tid,
            comm: format!("t{tid}"),
            holding: holding.iter().map(|&(class, addr)| lock(class, addr)).collect(),
            waiting_for: waiting.map(|(class, addr)| lock(class, addr)),
            waiting_on: Vec::new(),
        }
    }

    fn link(mut tasks: Vec<TaskLocks>) -> Vec<TaskLocks> {
        let mut holders: HashMap<u64, Vec<u32>> = HashMap::new();
        for task in &tasks {
            for held in &task.holding {
                holders.entry(held.lock).or_default().push(task.tid);
            }
        }
        for task in &mut tasks {
            if let Some(waiting) = &task.waiting_for {
                task.waiting_on = holders.get(&waiting.lock).cloned().unwrap_or_default();
            }
        }
        tasks
    }

    #[test]
    fn abba_is_a_deadlock_and_the_third_task_is_blocked_behind_it() {
        let tasks = link(vec![
            task(1, &[("a", 0xa)], Some(("b", 0xb))),
            task(2, &[("b", 0xb)], Some(("a", 0xa))),
            task(3, &[], Some(("a", 0xa))),
            task(4, &[("c", 0xc)], None),
        ]);
        let deadlocks = find_deadlocks(&tasks);
        assert_eq!(deadlocks.len(), 1);
        let tids: Vec<u32> = deadlocks[0].tasks.iter().map(|t| t.tid).collect();
        assert_eq!(tids, [1, 2]);
        assert_eq!(deadlocks[0].blocked.iter().map(|t| t.tid).collect::<Vec<_>>(), [3]);
        assert_eq!(deadlocks[0].tasks[0].holding, ["a"]);
        assert_eq!(deadlocks[0].tasks[0].waiting_for, "b");
        assert!(render(&HeldTable { tasks, deadlocks }).contains("DEADLOCK IN PROGRESS"));
    }

    #[test]
    fn only_a_cycle_of_the_same_waits_seen_twice_is_confirmed() {
        let abba = || link(vec![task(1, &[("a", 0xa)], Some(("b", 0xb))), task(2, &[("b", 0xb)], Some(("a", 0xa)))]);
        let first = HeldTable { deadlocks: find_deadlocks(&abba()), tasks: abba() };
        let second = HeldTable { deadlocks: find_deadlocks(&abba()), tasks: abba() };
        assert_eq!(confirmed(&first, second).deadlocks.len(), 1);
        // A wait that started anew (different start) is not the same deadlock.
        let mut later = abba();
        later[0].waiting_for.as_mut().unwrap().since_ns = 99;
        let third = HeldTable { deadlocks: find_deadlocks(&later), tasks: later };
        assert!(confirmed(&first, third).deadlocks.is_empty());
        assert!(confirmed(&HeldTable::default(), HeldTable { deadlocks: find_deadlocks(&abba()), tasks: abba() }).deadlocks.is_empty());
    }

    #[test]
    fn plain_waiting_is_not_a_deadlock() {
        let tasks = link(vec![task(1, &[("a", 0xa)], None), task(2, &[], Some(("a", 0xa)))]);
        assert!(find_deadlocks(&tasks).is_empty());
    }
}

/// `locktrace held`: print who holds and waits for which traced lock, once or `--watch`.
#[derive(Debug, clap::Args)]
pub struct HeldArgs {
    /// Print JSON (`tasks[]`, `deadlocks[]`) instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Refresh every second, in place, until interrupted.
    #[arg(long)]
    pub watch: bool,
    /// Without a running `locktrace trace`: also trace pthread locks (uprobes on libc).
    #[arg(long)]
    pub user: bool,
    /// Without a running `locktrace trace`: seconds to trace before the first table (locks
    /// taken before locktrace attached are not known).
    #[arg(long, default_value_t = 2, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub settle: u64,
}

pub fn run(args: &HeldArgs) -> anyhow::Result<std::process::ExitCode> {
    use anyhow::Context as _;
    let privileges = crate::capabilities::privileges();
    if !privileges.available {
        anyhow::bail!("reading held locks needs root or CAP_BPF + CAP_PERFMON ({})", privileges.detail);
    }
    // Our own probes, if we have to attach: kept alive for as long as we print.
    let mut own = None;
    let maps = match HeldMaps::of_running_trace() {
        Some(maps) => {
            eprintln!("locktrace held: reading the state of the running locktrace trace");
            maps
        }
        None => {
            crate::capabilities::ensure_tracefs();
            let probes = crate::trace::Probes {
                kernel: true,
                user: args.user,
                attach: crate::attach::kernel::AttachMode::Auto,
                pid: None,
                binary: None,
            };
            let (ebpf, attached) = crate::trace::load_and_attach(&crate::bpf::LoadOptions::default(), &probes)?;
            eprintln!("locktrace: attached {attached} probes");
            eprintln!(
                "locktrace held: no running trace; traced for {} s (locks taken before that are not shown)",
                args.settle
            );
            std::thread::sleep(std::time::Duration::from_secs(args.settle));
            let maps = HeldMaps::of_object(&ebpf).context("the held-lock map is missing")?;
            own = Some(ebpf);
            maps
        }
    };
    let mut symbols = Symbols::new();
    let mut previous = snapshot(&maps, &mut symbols);
    loop {
        // A deadlock must show the same waits in two snapshots a second apart.
        std::thread::sleep(std::time::Duration::from_secs(1));
        let current = snapshot(&maps, &mut symbols);
        let table = confirmed(&previous, current.clone());
        previous = current;
        let text = if args.json { serde_json::to_string_pretty(&table)? + "\n" } else { render(&table) };
        if args.watch {
            // Home and clear, then the table: a refresh in place, like top.
            print!("\x1b[H\x1b[2J{text}");
        } else {
            print!("{text}");
        }
        use std::io::Write as _;
        std::io::stdout().flush()?;
        if !args.watch {
            break;
        }
    }
    drop(own);
    Ok(std::process::ExitCode::SUCCESS)
}
