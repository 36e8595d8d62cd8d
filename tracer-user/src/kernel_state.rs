//! What the eBPF side counts and keeps, as the daemon reads it: the per-CPU counters and the
//! in-kernel dependency set, which the daemon re-reads after drops and drains before it
//! fills. Handles of their own (opened by map id), apart from those the event loop and the
//! held-lock reader hold.
use anyhow::{Context as _, Result};
use aya::maps::{HashMap as BpfHashMap, Map, MapData, PerCpuArray};
use lockgraph::Stats;
use tracer_common::{capacity, counter, DependencyKey, DependencySeen};

use crate::bpf;

/// Counter values, indexed by [`counter`].
pub struct Counters(Vec<u64>);

impl Counters {
    pub fn get(&self, index: u32) -> u64 {
        self.0.get(index as usize).copied().unwrap_or(0)
    }
}

pub struct KernelState {
    counters: PerCpuArray<MapData, u64>,
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
    pub fn of_object(ebpf: &aya::Ebpf) -> Result<Self> {
        let counters = PerCpuArray::try_from(open(ebpf, "COUNTERS")?).context("COUNTERS")?;
        Ok(Self {
            counters,
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

    /// The kernel side's `counters` in [`Stats`]' terms.
    pub fn fill_stats(&self, counters: &Counters, stats: &mut Stats) {
        stats.events = counters.get(counter::LOCK_OPS);
        stats.dropped = counters.get(counter::RINGBUF_DROPPED);
        stats.held_overflow = counters.get(counter::HELD_OVERFLOW);
        stats.dependency_set_full = counters.get(counter::DEPENDENCY_MAP_FULL);
        stats.dependencies_lost = counters.get(counter::DEPENDENCY_LOST);
        stats.dependency_set_drains = self.drains;
        stats.unmatched_releases = counters.get(counter::UNMATCHED_RELEASE);
    }
}
