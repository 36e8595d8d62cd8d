//! `locktrace bench-ingest`: the daemon's ingest path (ring-buffer record decode + lock
//! graph update) on synthetic dependency records, with peak RSS. Used by `cargo xtask bench`.
use std::{process::ExitCode, time::Instant};

use anyhow::Result;
use tracer_common::{class_source, kind, record, DependencyEvent};

use crate::{
    events::Record,
    ingest::{Ingest, StackSource},
};

struct NoStacks;

impl StackSource for NoStacks {
    fn frames(&self, _stack_id: i32) -> Vec<u64> {
        Vec::new()
    }
}

fn peak_rss_kib() -> i64 {
    // SAFETY: getrusage fills the struct we pass.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage.ru_maxrss
    }
}

/// Feeds `events` records over `classes` lock classes (a layered order, so no cycles) and
/// prints one `ingest:` line with events/s, graph size and peak RSS.
pub fn run(events: u64, classes: u64) -> Result<ExitCode> {
    let classes = classes.max(2);
    let mut ingest = Ingest::new();
    let mut bytes = [0u8; size_of::<DependencyEvent>()];
    let started = Instant::now();
    for index in 0..events {
        let held = index % (classes - 1);
        let new = held + 1 + (index / classes) % (classes - held - 1).max(1);
        let event = DependencyEvent {
            record: record::DEPENDENCY,
            flags: 0,
            held_class: 0x1000 + held,
            new_class: 0x1000 + new,
            guard_class: 0,
            guard_lock: 0,
            guard_kind: 0,
            guard_class_source: 0,
            held_lock: 0x1000 + held,
            new_lock: 0x1000 + new,
            held_caller: 0,
            new_caller: 0,
            timestamp_ns: index,
            held_kind: kind::MUTEX,
            new_kind: kind::MUTEX,
            held_class_source: class_source::INIT_KEY,
            new_class_source: class_source::INIT_KEY,
            held_stack_id: -1,
            new_stack_id: -1,
            pid: 1,
            tid: 1,
            comm: *b"bench\0\0\0\0\0\0\0\0\0\0\0",
        };
        // SAFETY: viewing a repr(C) integer-only value as bytes, as the ring buffer hands them.
        bytes.copy_from_slice(unsafe {
            std::slice::from_raw_parts(
                (&raw const event).cast::<u8>(),
                size_of::<DependencyEvent>(),
            )
        });
        if let Ok(Record::Dependency(event)) = Record::try_from(&bytes[..]) {
            ingest.on_dependency(&event, &NoStacks);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "ingest: events={events} seconds={seconds:.3} events_per_s={:.0} classes={} \
         dependencies={} peak_rss_kib={}",
        events as f64 / seconds,
        ingest.graph.class_count(),
        ingest.graph.edge_count(),
        peak_rss_kib()
    );
    Ok(ExitCode::SUCCESS)
}
