//! The wait-for graph (task → lock → holder task) of a held-lock table, and the actual
//! deadlocks in it: cycles of tasks each waiting for a lock another one holds.
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct HeldLockInfo {
    pub class: String,
    /// The instance, for a user lock whose class has several (a lock array's element
    /// `chop[2]`, a heap lock `CLASS[0xADDRESS]`): which of them is held or wanted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
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

impl HeldLockInfo {
    /// The instance where it has a name of its own, else the class.
    pub fn name(&self) -> &str {
        self.instance.as_deref().unwrap_or(&self.class)
    }
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
        let mut parts: Vec<String> = self
            .tasks
            .iter()
            .map(|t| format!("{}:{}", t.tid, t.waiting_for))
            .collect();
        parts.sort();
        parts.join(",")
    }

    /// Identity of the very same waits: a real deadlock keeps every one of them forever.
    fn waits_key(&self) -> String {
        let mut parts: Vec<String> = self
            .tasks
            .iter()
            .map(|t| format!("{}:{}@{}", t.tid, t.waiting_for, t.wait_started_ns))
            .collect();
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
    current
        .deadlocks
        .retain(|deadlock| seen.contains(&deadlock.waits_key()));
    current
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct HeldTable {
    pub tasks: Vec<TaskLocks>,
    pub deadlocks: Vec<Deadlock>,
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
                if task
                    .waiting_on
                    .iter()
                    .any(|holder| members.contains(holder) || blocked.contains(holder))
                {
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
                holding: task
                    .holding
                    .iter()
                    .map(|held| held.name().to_string())
                    .collect(),
                waiting_for: waiting.map(|w| w.name().to_string()).unwrap_or_default(),
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::held::render;

    fn lock(class: &str, lock: u64) -> HeldLockInfo {
        HeldLockInfo {
            class: class.into(),
            instance: None,
            kind: "mutex",
            lock,
            read: false,
            for_ns: 1,
            since_ns: lock,
            stack: vec![],
        }
    }

    fn task(tid: u32, holding: &[(&str, u64)], waiting: Option<(&str, u64)>) -> TaskLocks {
        TaskLocks {
            pid: tid,
            tid,
            comm: format!("t{tid}"),
            holding: holding
                .iter()
                .map(|&(class, addr)| lock(class, addr))
                .collect(),
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
        assert_eq!(
            deadlocks[0]
                .blocked
                .iter()
                .map(|t| t.tid)
                .collect::<Vec<_>>(),
            [3]
        );
        assert_eq!(deadlocks[0].tasks[0].holding, ["a"]);
        assert_eq!(deadlocks[0].tasks[0].waiting_for, "b");
        assert!(render(&HeldTable { tasks, deadlocks }).contains("DEADLOCK IN PROGRESS"));
    }

    #[test]
    fn only_a_cycle_of_the_same_waits_seen_twice_is_confirmed() {
        let abba = || {
            link(vec![
                task(1, &[("a", 0xa)], Some(("b", 0xb))),
                task(2, &[("b", 0xb)], Some(("a", 0xa))),
            ])
        };
        let first = HeldTable {
            deadlocks: find_deadlocks(&abba()),
            tasks: abba(),
        };
        let second = HeldTable {
            deadlocks: find_deadlocks(&abba()),
            tasks: abba(),
        };
        assert_eq!(confirmed(&first, second).deadlocks.len(), 1);
        // A wait that started anew (different start) is not the same deadlock.
        let mut later = abba();
        later[0].waiting_for.as_mut().unwrap().since_ns = 99;
        let third = HeldTable {
            deadlocks: find_deadlocks(&later),
            tasks: later,
        };
        assert!(confirmed(&first, third).deadlocks.is_empty());
        assert!(confirmed(
            &HeldTable::default(),
            HeldTable {
                deadlocks: find_deadlocks(&abba()),
                tasks: abba()
            }
        )
        .deadlocks
        .is_empty());
    }

    #[test]
    fn plain_waiting_is_not_a_deadlock() {
        let tasks = link(vec![
            task(1, &[("a", 0xa)], None),
            task(2, &[], Some(("a", 0xa))),
        ]);
        assert!(find_deadlocks(&tasks).is_empty());
    }
}
