//! What the eBPF side counts and keeps, as the daemon reads it: the per-CPU counters and the
//! in-kernel dependency set, which the daemon re-reads after drops and drains before it
//! fills. Handles of their own (opened by map id), apart from those the event loop and the
//! held-lock reader hold.
use std::os::fd::AsFd as _;

use anyhow::{Context as _, Result};
use aya::maps::{HashMap as BpfHashMap, Map, MapData, PerCpuArray};
use lockgraph::Stats;
use tracer_common::{capacity, counter, DependencyKey, DependencySeen, HeldStack, UserLock};

use crate::bpf;

/// One of the bounded LRU maps whose evictions are counted.
pub struct LruMap {
    /// The map's name in the object.
    pub map: &'static str,
    /// Its name for `--map-capacity`.
    pub option: &'static str,
    pub default_capacity: u32,
    created: u32,
    removed: Option<u32>,
    evicted: fn(&mut Stats) -> &mut u64,
}

/// The LRU maps: what each one's eviction loses is in [`Stats`]' field of it.
pub const LRU_MAPS: [LruMap; 4] = [
    LruMap {
        map: "HELD",
        option: "held-tasks",
        default_capacity: capacity::HELD_TASKS,
        created: counter::HELD_TASKS_CREATED,
        removed: Some(counter::HELD_TASKS_REMOVED),
        evicted: |stats| &mut stats.held_tasks_evicted,
    },
    LruMap {
        map: "LOCK_CLASS",
        option: "lock-classes",
        default_capacity: capacity::LOCK_CLASSES,
        created: counter::LOCK_CLASSES_CREATED,
        removed: None,
        evicted: |stats| &mut stats.lock_classes_evicted,
    },
    LruMap {
        map: "USER_LOCK_CLASS",
        option: "user-lock-classes",
        default_capacity: capacity::USER_LOCK_CLASSES,
        created: counter::USER_LOCK_CLASSES_CREATED,
        removed: Some(counter::USER_LOCK_CLASSES_REMOVED),
        evicted: |stats| &mut stats.user_lock_classes_evicted,
    },
    LruMap {
        map: "CLASS_NAMES",
        option: "class-names",
        default_capacity: capacity::CLASS_NAMES,
        created: counter::CLASS_NAMES_CREATED,
        removed: Some(counter::CLASS_NAMES_REMOVED),
        evicted: |stats| &mut stats.class_names_evicted,
    },
];

/// Free entries each CPU may keep aside in a BPF LRU map (the kernel's
/// `LOCAL_FREE_TARGET`): no entry is evicted before the map has handed out all but these.
const LRU_LOCAL_FREE: u64 = 128;

/// Counts an LRU map's live entries.
trait LiveEntries {
    fn live(&self) -> u64;
}

impl<K: aya::Pod, V: aya::Pod> LiveEntries for BpfHashMap<MapData, K, V> {
    fn live(&self) -> u64 {
        self.keys().filter(Result::is_ok).count() as u64
    }
}

/// An LRU map as the daemon watches it.
struct WatchedLru {
    spec: &'static LruMap,
    capacity: u32,
    map: Box<dyn LiveEntries + Send>,
}

/// Counter values, indexed by [`counter`].
pub struct Counters(Vec<u64>);

impl Counters {
    pub fn get(&self, index: u32) -> u64 {
        self.0.get(index as usize).copied().unwrap_or(0)
    }
}

pub struct KernelState {
    counters: PerCpuArray<MapData, u64>,
    lru_maps: Vec<WatchedLru>,
    /// The object's programs, for the kernel's count of runs it skipped.
    programs: Vec<std::os::fd::OwnedFd>,
    cpus: u64,
    dependencies: BpfHashMap<MapData, DependencyKey, DependencySeen>,
    /// Entries the daemon removed from the dependency set (its occupancy is what the
    /// kernel inserted minus these).
    forgotten: u64,
    pub drains: u64,
    last_map_full: u64,
}

/// A handle of our own on one of the object's maps.
fn open(ebpf: &aya::Ebpf, name: &str) -> Result<Map> {
    bpf::open_map(bpf::map_id(ebpf, name)?).with_context(|| format!("opening {name}"))
}

fn hash_map<K: aya::Pod, V: aya::Pod>(
    ebpf: &aya::Ebpf,
    name: &str,
) -> Result<BpfHashMap<MapData, K, V>> {
    BpfHashMap::try_from(open(ebpf, name)?).with_context(|| format!("{name}: not a hash map"))
}

impl KernelState {
    /// `capacities`: the LRU maps' sizes as loaded (by [`LruMap::option`]; default if absent).
    pub fn of_object(ebpf: &aya::Ebpf, capacities: &[(String, u32)]) -> Result<Self> {
        let counters = PerCpuArray::try_from(open(ebpf, "COUNTERS")?).context("COUNTERS")?;
        let mut lru_maps = Vec::new();
        for spec in &LRU_MAPS {
            let map: Box<dyn LiveEntries + Send> = match spec.map {
                "HELD" => Box::new(hash_map::<u32, HeldStack>(ebpf, spec.map)?),
                "USER_LOCK_CLASS" => Box::new(hash_map::<UserLock, u64>(ebpf, spec.map)?),
                "CLASS_NAMES" => Box::new(hash_map::<u64, [u8; tracer_common::CLASS_NAME_LEN]>(
                    ebpf, spec.map,
                )?),
                _ => Box::new(hash_map::<u64, u64>(ebpf, spec.map)?),
            };
            let capacity = capacities
                .iter()
                .find(|(option, _)| option == spec.option)
                .map_or(spec.default_capacity, |&(_, capacity)| capacity);
            lru_maps.push(WatchedLru {
                spec,
                capacity,
                map,
            });
        }
        let programs = ebpf
            .programs()
            .filter_map(|(_, program)| program.fd().ok()?.as_fd().try_clone_to_owned().ok())
            .collect();
        Ok(Self {
            counters,
            lru_maps,
            programs,
            cpus: aya::util::nr_cpus().map_or(1, |n| n as u64),
            dependencies: hash_map(ebpf, "DEPENDENCIES")?,
            forgotten: 0,
            drains: 0,
            last_map_full: 0,
        })
    }

    /// Every per-CPU counter, summed.
    pub fn counters(&self) -> Counters {
        Counters(
            (0..counter::COUNT)
                .map(|index| self.counter(index))
                .collect(),
        )
    }

    /// One per-CPU counter, summed (one map read).
    pub fn counter(&self, index: u32) -> u64 {
        self.counters
            .get(&index, 0)
            .map_or(0, |values| values.iter().sum())
    }

    /// Every entry of the dependency set.
    pub fn dependencies(&self) -> Vec<(DependencyKey, DependencySeen)> {
        self.dependencies.iter().filter_map(Result::ok).collect()
    }

    /// Whether the set should be drained now: half full (entries the kernel created minus
    /// those the daemon removed: one counter read), or it refused a dependency since the
    /// last look (`counters`, when at hand).
    pub fn wants_drain(&mut self, counters: Option<&Counters>) -> bool {
        let inserted = match counters {
            Some(counters) => counters.get(counter::DEPENDENCIES_INSERTED),
            None => self.counter(counter::DEPENDENCIES_INSERTED),
        };
        if inserted.saturating_sub(self.forgotten) >= u64::from(capacity::DEPENDENCIES / 2) {
            return true;
        }
        let Some(counters) = counters else {
            return false;
        };
        let full = counters.get(counter::DEPENDENCY_MAP_FULL);
        let refused = full > self.last_map_full;
        self.last_map_full = full;
        refused
    }

    /// Removes `entries` (read by [`KernelState::dependencies`] and given to the graph) from
    /// the set: the kernel forgets what the daemon has, and a dependency that occurs again
    /// is sent again as new (the graph merges it).
    pub fn forget(&mut self, entries: &[(DependencyKey, DependencySeen)]) {
        for (key, _) in entries {
            if self.dependencies.remove(key).is_ok() {
                self.forgotten += 1;
            }
        }
        self.drains += 1;
    }

    /// Entries each LRU map created against its capacity (what sizes them): `held-tasks
    /// 57/8192, …`.
    pub fn map_use(&self, counters: &Counters) -> String {
        self.lru_maps
            .iter()
            .map(|watched| {
                format!(
                    "{} {}/{}",
                    watched.spec.option,
                    counters.get(watched.spec.created),
                    watched.capacity
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The kernel side's `counters` in [`Stats`]' terms, with what the LRU maps evicted (an
    /// entry created and neither removed nor live was evicted; live entries are counted only
    /// once a map may have evicted at all) and the probe runs the kernel skipped.
    pub fn fill_stats(&self, counters: &Counters, stats: &mut Stats) {
        for watched in &self.lru_maps {
            let created = counters.get(watched.spec.created);
            let may_have_evicted =
                created + LRU_LOCAL_FREE * self.cpus >= u64::from(watched.capacity);
            let evicted = if may_have_evicted {
                let removed = watched.spec.removed.map_or(0, |index| counters.get(index));
                created.saturating_sub(removed + watched.map.live())
            } else {
                0
            };
            *(watched.spec.evicted)(stats) = evicted;
        }
        stats.probe_misses = self.programs.iter().map(bpf::recursion_misses).sum();
        stats.return_missed = counters.get(counter::RETURN_MISSED);
        stats.foreign_releases = counters.get(counter::RELEASED_BY_OTHER);
        stats.events = counters.get(counter::LOCK_OPS);
        stats.dropped = counters.get(counter::RINGBUF_DROPPED);
        stats.held_overflow = counters.get(counter::HELD_OVERFLOW);
        stats.dependency_set_full = counters.get(counter::DEPENDENCY_MAP_FULL);
        stats.dependencies_lost = counters.get(counter::DEPENDENCY_LOST);
        stats.dependency_set_drains = self.drains;
        stats.unmatched_releases = counters.get(counter::UNMATCHED_RELEASE);
        stats.budget_checks_skipped = counters.get(counter::BUDGET_CHECKS_SKIPPED);
        stats.budget_acquires_skipped = counters.get(counter::BUDGET_ACQUIRES_SKIPPED);
    }
}
