//! Reading the per-thread held-lock stacks the eBPF side keeps (`HELD`), with the class
//! names (`CLASS_NAMES`) and stacks (`STACKS`) they refer to, into a [`HeldTable`].
use std::collections::HashMap;

use aya::maps::{HashMap as BpfHashMap, MapData, StackTraceMap};
use lockgraph::{naming, Frame};
use tracer_common::{
    class_source, flags, held_state, HeldLock, HeldStack, CLASS_NAME_LEN, MAX_HELD_LOCKS,
};

use super::wait_for::{find_deadlocks, HeldLockInfo, HeldTable, TaskLocks};
use crate::{
    bpf, class_names,
    events::{c_str, lock_kind, lock_kind_name},
    stacks,
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
        Self {
            held,
            names,
            stacks,
        }
    }

    /// Whether some task's held-lock stack has a lock of `lock_kind` (a map that cannot be
    /// read counts as yes).
    pub fn holds_kind(&self, lock_kind: u32) -> bool {
        self.held.iter().any(|entry| {
            entry.map_or(true, |(_, stack)| {
                let depth = (stack.depth as usize).min(stack.locks.len());
                stack.locks[..depth]
                    .iter()
                    .any(|held| held.lock != 0 && held.kind == lock_kind)
            })
        })
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
        Self::open(
            newest.get("HELD").copied()?,
            newest.get("CLASS_NAMES").copied(),
            newest.get("STACKS").copied(),
        )
    }

    /// Second handles on the maps of our own loaded object (the event loop owns the first).
    pub fn of_object(ebpf: &aya::Ebpf) -> Option<Self> {
        let id = |name: &str| bpf::map_id(ebpf, name).ok();
        Self::open(id("HELD")?, id("CLASS_NAMES"), id("STACKS"))
    }

    fn open(held: u32, names: Option<u32>, stacks: Option<u32>) -> Option<Self> {
        let open = |id: u32| bpf::open_map(id).ok();
        let held = BpfHashMap::try_from(open(held)?).ok()?;
        let names = names
            .and_then(open)
            .and_then(|map| BpfHashMap::try_from(map).ok());
        let stacks = stacks
            .and_then(open)
            .and_then(|map| StackTraceMap::try_from(map).ok());
        Some(Self::new(held, names, stacks))
    }

    fn frames(&self, stack_id: i32) -> Vec<u64> {
        let (Some(stacks), Ok(id)) = (&self.stacks, u32::try_from(stack_id)) else {
            return Vec::new();
        };
        stacks
            .get(&id, 0)
            .map(|trace| trace.frames().iter().map(|frame| frame.ip).collect())
            .unwrap_or_default()
    }

    fn class_name(&self, class: u64) -> Option<String> {
        let name = self.names.as_ref()?.get(&class, 0).ok()?;
        Some(c_str(&name)).filter(|name| !name.is_empty())
    }
}

fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the struct we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

fn task_comm(tid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{tid}/comm"))
        .map(|comm| comm.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// x86-64's `futex` system call number.
const SYS_FUTEX: u64 = 202;
/// glibc's x86-64 `pthread_rwlock_t`, all of whose futex words lie in it; a mutex's only
/// futex word is its first (`__lock`): a condition variable placed right after it is not
/// it.
const PTHREAD_RWLOCK_BYTES: u64 = 56;

/// Whether thread `tid`, whose innermost acquire of `lock` has no return program, still
/// waits for it. A pthread lock: see [`blocked_on_futex`]. A kernel lock: the thread sleeps
/// and the first frame of its kernel stack (`/proc/TID/stack`, which leaves out the
/// scheduler's `__sched` functions: `mutex_lock`, `down_write` and their slow paths) is
/// the acquire's own call site, `caller` (its return address, symbolized). Unreadable
/// counts as waiting.
fn blocked_on(symbols: &mut Symbols, tid: u32, held: &HeldLock, frames: &[Frame]) -> bool {
    if is_user_kind(held.kind) {
        return blocked_on_futex(tid, held.lock, held.kind);
    }
    let Ok(text) = std::fs::read_to_string(format!("/proc/{tid}/stack")) else {
        return true;
    };
    // The entry's stack has the call site already (put back if the unwinder lost it);
    // symbolized on its own only when the stack is missing.
    match frames.iter().find(|frame| frame.addr == held.caller) {
        Some(caller) => sleeps_at(&text, caller),
        None => symbols
            .kernel_frames(&[held.caller])
            .pop()
            .is_none_or(|caller| sleeps_at(&text, &caller)),
    }
}

/// Whether the first line of a `/proc/TID/stack` text (`[<0>] FUNCTION+0xOFF/0xSIZE
/// [MODULE]`) is `frame`.
fn sleeps_at(stack: &str, frame: &Frame) -> bool {
    let Some(symbol) = frame.symbol.as_deref() else {
        return true;
    };
    let Some(top) = stack
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
    else {
        return false;
    };
    let Some((function, rest)) = top.split_once('+') else {
        return false;
    };
    let offset = rest
        .split('/')
        .next()
        .unwrap_or("")
        .trim_start_matches("0x");
    function == symbol && u64::from_str_radix(offset, 16).is_ok_and(|off| off == frame.offset)
}

/// Whether thread `tid` sleeps in a futex wait on a word of the lock at `lock`
/// (`/proc/TID/syscall`: the call's number, then its arguments, the first the futex
/// address): a waiter, not a thread that has the lock and does something else.
fn blocked_on_futex(tid: u32, lock: u64, kind: u32) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{tid}/syscall")) else {
        return true;
    };
    let mut fields = text.split_whitespace();
    let number = fields.next().and_then(|field| field.parse::<u64>().ok());
    let address = fields
        .next()
        .and_then(|field| u64::from_str_radix(field.trim_start_matches("0x"), 16).ok());
    match (number, address) {
        (Some(SYS_FUTEX), Some(address)) if kind == tracer_common::kind::PTHREAD_RWLOCK => {
            address >= lock && address < lock.saturating_add(PTHREAD_RWLOCK_BYTES)
        }
        (Some(SYS_FUTEX), Some(address)) => address == lock,
        _ => false,
    }
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
            let frames =
                stacks::stack_frames(symbols, scope, maps.frames(held.stack_id), held.caller);
            let class = class_name(maps, symbols, held, user.then_some(stack.pid), &frames);
            let info = HeldLockInfo {
                instance: instance_name(symbols, held, user.then_some(stack.pid), &class),
                class,
                kind: lock_kind_name(held.kind),
                lock: held.lock,
                read: held.flags & flags::NEW_READ != 0,
                for_ns: now.saturating_sub(held.acquired_ns),
                since_ns: held.acquired_ns,
                stack: frames.iter().map(Frame::to_string).collect(),
            };
            let waiting = held.flags & held_state::WAITING != 0
                && (held.flags & held_state::RETURN_INFERRED == 0
                    || blocked_on(symbols, tid, held, &frames));
            if waiting {
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
    let mut held_names: HashMap<u64, (String, Option<String>)> = HashMap::new();
    for task in &tasks {
        for held in &task.holding {
            held_names
                .entry(held.lock)
                .or_insert_with(|| (held.class.clone(), held.instance.clone()));
        }
    }
    for task in &mut tasks {
        if let Some(waiting) = &mut task.waiting_for {
            task.waiting_on = holders.get(&waiting.lock).cloned().unwrap_or_default();
            if let Some((class, instance)) = held_names.get(&waiting.lock) {
                waiting.class = class.clone();
                waiting.instance = instance.clone();
            }
        }
    }
    let deadlocks = find_deadlocks(&tasks);
    HeldTable { tasks, deadlocks }
}

/// A user lock's instance name when its class may have several instances (a class by
/// init site): `chop[2]` for a static lock, `CLASS[0xADDRESS]` for another, as the live
/// graph names the instances it orders.
fn instance_name(
    symbols: &mut Symbols,
    held: &HeldLock,
    user_pid: Option<u32>,
    class: &str,
) -> Option<String> {
    let pid = user_pid.filter(|_| held.class_source == class_source::INIT_SITE)?;
    Some(
        class_names::static_name(symbols, pid, held.lock, held.kind)
            .unwrap_or_else(|| naming::instance_of(class, held.lock)),
    )
}

/// A held lock's class name, as the live graph names it; `user_pid` is the owner of a user
/// lock.
fn class_name(
    maps: &HeldMaps,
    symbols: &mut Symbols,
    held: &HeldLock,
    user_pid: Option<u32>,
    frames: &[Frame],
) -> String {
    match (held.class_source, user_pid) {
        (class_source::INIT_SITE, Some(pid)) => class_names::init_site(symbols, pid, held.class),
        (class_source::PSEUDO, _) => class_names::pseudo_lock(held.class),
        (class_source::INIT_KEY, _) => {
            class_names::init_key(symbols, maps.class_name(held.class), held.class).0
        }
        _ => class_names::instance(symbols, user_pid.unwrap_or(0), held.lock, held.kind, frames).0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_thread_sleeping_at_its_acquire_call_site_is_waiting() {
        let caller = Frame {
            addr: 0,
            symbol: Some("lt_ledger_then_audit.constprop.0".into()),
            offset: 0x27,
            size: None,
            module: Some("lt_deadlock".into()),
        };
        // As the 6.12 guest prints a task blocked in mutex_lock (its __sched frames hidden).
        let waiting = "[<0>] lt_ledger_then_audit.constprop.0+0x27/0x50 [lt_deadlock]\n\
                       [<0>] lt_deadlock_ioctl+0x3e/0x50 [lt_deadlock]\n";
        assert!(sleeps_at(waiting, &caller));
        // Sleeping elsewhere after the acquire returned (msleep from the next line).
        let holding = "[<0>] lt_ledger_then_audit.constprop.0+0x31/0x50 [lt_deadlock]\n";
        assert!(!sleeps_at(holding, &caller));
        let running = "";
        assert!(!sleeps_at(running, &caller));
    }
}
