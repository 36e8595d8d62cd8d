//! Finding the cycles a new dependency closes: bounded searches over the class graph (a
//! cycle is reported once, by a stable id), and the fixed hashing both use.
use std::hash::{BuildHasherDefault, Hasher};

use super::*;

/// Longest cycle (in classes) searched for when a new edge closes one.
const MAX_CYCLE_LEN: usize = 32;
/// Cycles reported per new edge at most; the shortest come first.
const MAX_CYCLES_PER_EDGE: usize = 8;
/// Longer alternatives searched beyond the shortest cycle through a new edge.
const CYCLE_LEN_SLACK: usize = 2;
/// Bound on DFS steps per new edge, so a dense graph cannot stall ingest.
const CYCLE_SEARCH_BUDGET: usize = 20_000;

/// Fx-style hasher: fixed (no per-process seed), and fast on the small integer keys of
/// the ingest path.
#[derive(Clone, Copy, Default)]
pub(crate) struct FastHasher(u64);

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0.rotate_left(5) ^ value).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u32(&mut self, value: u32) {
        self.write_u64(u64::from(value));
    }
    fn write_usize(&mut self, value: usize) {
        self.write_u64(value as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// FNV-1a 64: fixed across runs and platforms, for ids people keep in suppress files.
pub(crate) fn fnv1a64(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hash = (hash ^ 0xff).wrapping_mul(0x0000_0100_0000_01b3);
        }
        for byte in part.bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// The id of a cycle over these class names, in dependency order.
pub fn cycle_id<S: AsRef<str>>(names: &[S]) -> String {
    let names: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
    let start = (0..names.len()).min_by_key(|&i| names[i]).unwrap_or(0);
    let rotated: Vec<&str> = names[start..]
        .iter()
        .chain(&names[..start])
        .copied()
        .collect();
    format!("cyc-{:016x}", fnv1a64(&rotated))
}

impl LockGraph {
    /// Cycles closed by the new edge `held → new`: simple paths `new ⇝ held`.
    pub(super) fn find_new_cycles(&mut self, held: ClassId, new: ClassId) -> Vec<Cycle> {
        let Some(dist) = self.distances_to(held, new) else {
            return Vec::new();
        };
        let shortest = dist[&new] as usize + 1;
        let limit = (shortest + CYCLE_LEN_SLACK)
            .min(MAX_CYCLE_LEN)
            .max(shortest);
        let mut paths = Vec::new();
        let mut path = vec![new];
        let mut on_path: HashSet<ClassId> = HashSet::from([new]);
        let mut budget = CYCLE_SEARCH_BUDGET;
        self.collect_paths(
            held,
            limit,
            &dist,
            &mut path,
            &mut on_path,
            &mut paths,
            &mut budget,
        );
        paths.sort_by(|a, b| {
            a.len()
                .cmp(&b.len())
                .then_with(|| self.names(a).cmp(&self.names(b)))
        });
        let mut found = Vec::new();
        for classes in paths {
            if found.len() == MAX_CYCLES_PER_EDGE {
                break;
            }
            if !self.is_strong(&classes) {
                continue;
            }
            let id = cycle_id(&self.names(&classes));
            if !self.cycle_ids.insert(id.clone()) {
                continue;
            }
            let guarded_by = self.cycle_guard(&classes);
            let cycle = Cycle {
                id,
                classes,
                guarded_by,
            };
            self.cycles.push(cycle.clone());
            found.push(cycle);
        }
        found
    }

    /// lockdep's strong cycle: one seen mode per edge such that no class is taken as a
    /// recursive reader by one edge and held for read by the next (`-(xR)->` then
    /// `-(Sy)->`), where two readers would pass each other.
    fn is_strong(&self, classes: &[ClassId]) -> bool {
        let n = classes.len();
        let Some(modes) = (0..n)
            .map(|i| {
                self.edge(classes[i], classes[(i + 1) % n])
                    .map(|edge| mode_pairs(edge.modes).collect::<Vec<_>>())
            })
            .collect::<Option<Vec<_>>>()
        else {
            return false;
        };
        // A class taken as a recursive reader, then held for read: the readers pass.
        let passes = |taken_recursive: bool, held: Mode| taken_recursive && held != Mode::Write;
        modes[0].iter().any(|&(first_held, first_new)| {
            // Whether the class between this edge and the next can have been taken as a
            // recursive reader, over the choices that are strong so far.
            let mut taken: HashSet<bool> = HashSet::from([first_new == Mode::RecursiveRead]);
            for edge in &modes[1..] {
                taken = edge
                    .iter()
                    .filter(|&&(held, _)| taken.iter().any(|&t| !passes(t, held)))
                    .map(|&(_, new)| new == Mode::RecursiveRead)
                    .collect();
            }
            taken.iter().any(|&t| !passes(t, first_held))
        })
    }

    pub(super) fn names(&self, classes: &[ClassId]) -> Vec<&str> {
        classes.iter().map(|&c| self.name(c)).collect()
    }

    /// Edge distances to `target` along dependency edges, from every node that reaches it
    /// within the cycle length bound; `None` if `from` does not reach it.
    fn distances_to(&self, target: ClassId, from: ClassId) -> Option<FastMap<ClassId, u32>> {
        let mut dist = FastMap::default();
        dist.insert(target, 0u32);
        let mut queue = VecDeque::from([target]);
        while let Some(node) = queue.pop_front() {
            let d = dist[&node];
            if d as usize + 1 >= MAX_CYCLE_LEN {
                continue;
            }
            for pred in self
                .graph
                .neighbors_directed(node.node(), Direction::Incoming)
            {
                let pred = ClassId(pred.index() as u32);
                if let std::collections::hash_map::Entry::Vacant(slot) = dist.entry(pred) {
                    slot.insert(d + 1);
                    queue.push_back(pred);
                }
            }
        }
        dist.contains_key(&from).then_some(dist)
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "recursive DFS state, kept private"
    )]
    fn collect_paths(
        &self,
        target: ClassId,
        limit: usize,
        dist: &FastMap<ClassId, u32>,
        path: &mut Vec<ClassId>,
        on_path: &mut HashSet<ClassId>,
        out: &mut Vec<Vec<ClassId>>,
        budget: &mut usize,
    ) {
        let last = *path.last().expect("path starts non-empty");
        if last == target {
            out.push(path.clone());
            return;
        }
        for next in self
            .graph
            .neighbors_directed(last.node(), Direction::Outgoing)
        {
            if *budget == 0 || out.len() >= MAX_CYCLES_PER_EDGE * 4 {
                return;
            }
            *budget -= 1;
            let next = ClassId(next.index() as u32);
            let Some(&d) = dist.get(&next) else { continue };
            // path.len() classes so far, plus `next`, plus d more to reach target.
            if path.len() + 1 + d as usize > limit || on_path.contains(&next) {
                continue;
            }
            path.push(next);
            on_path.insert(next);
            self.collect_paths(target, limit, dist, path, on_path, out, budget);
            on_path.remove(&next);
            path.pop();
        }
    }
}
