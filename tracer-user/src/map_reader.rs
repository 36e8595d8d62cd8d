//! `trace -- COMMAND`'s map reader: a thread of its own that reads the maps of traced
//! processes waiting in their exit (`record::EXITING` on the task-tree ring) and lets them
//! go (`tree_state::MAPPED`), so that a process that lived milliseconds still has its
//! frames and static locks named. A thread, not the event loop: symbolizing a record there
//! can take longer than a process may be kept waiting.
use std::{
    os::fd::AsRawFd as _,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
};

use anyhow::{Context as _, Result};
use aya::{
    maps::{HashMap as BpfHashMap, MapData, RingBuf},
    Ebpf,
};
use tracer_common::{record, tree_state, TaskEvent};

use crate::{bpf, process_maps};

/// How long the thread sleeps in `poll` between two looks at its stop flag.
const POLL_MS: i32 = 100;

pub struct MapReader {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl MapReader {
    pub fn start(ebpf: &mut Ebpf) -> Result<Self> {
        let ring = RingBuf::try_from(
            ebpf.take_map("TREE_EVENTS")
                .context("the TREE_EVENTS map is missing")?,
        )
        .context("TREE_EVENTS")?;
        let tasks: BpfHashMap<MapData, u32, u32> =
            BpfHashMap::try_from(bpf::open_map(bpf::map_id(ebpf, "TRACED_TASKS")?)?)
                .context("TRACED_TASKS")?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = thread::Builder::new()
            .name("map-reader".into())
            .spawn({
                let stop = stop.clone();
                move || read_maps(ring, tasks, &stop)
            })
            .context("starting the map reader")?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for MapReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn read_maps(
    mut ring: RingBuf<MapData>,
    mut tasks: BpfHashMap<MapData, u32, u32>,
    stop: &AtomicBool,
) {
    const BPF_EXIST: u64 = 2;
    let mut poll = libc::pollfd {
        fd: ring.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut poll, 1, POLL_MS) };
        while let Some(item) = ring.next() {
            if item.len() < size_of::<TaskEvent>() {
                continue;
            }
            // SAFETY: length checked; an integer-only `repr(C)` record.
            let event: TaskEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            if event.record != record::EXITING {
                continue;
            }
            process_maps::first_sight(event.pid);
            // It may have stopped waiting (and be gone from the map): no entry is created.
            let _ = tasks.insert(event.pid, tree_state::MAPPED, BPF_EXIST);
        }
    }
}
