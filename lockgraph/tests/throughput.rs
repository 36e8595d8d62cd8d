//! Ingest speed of repeated dependencies. Meaningful only optimised:
//! `cargo test -p lockgraph --release --test throughput -- --ignored`.

use std::time::Instant;

use lockgraph::*;

#[test]
#[ignore = "timing; run with --release"]
fn repeated_dependencies_ingest_at_5m_per_second() {
    let mut graph = LockGraph::new();
    let ids: Vec<ClassId> = (0..64)
        .map(|i| {
            graph.class(
                ClassKey::Id { source: 1, id: i },
                ClassInfo::new("lock", LockKind::Mutex, NameSource::InitName),
            )
        })
        .collect();
    const EVENTS: u64 = 10_000_000;
    let start = Instant::now();
    for i in 0..EVENTS {
        let held = ids[(i % 61) as usize];
        let new = ids[((i * 7) % 64) as usize];
        let dep = Dependency {
            held,
            new,
            timestamp_ns: i,
            guard: Some(Guard {
                class: ids[0],
                lock: 0x1000,
            }),
            ..Dependency::default()
        };
        std::hint::black_box(graph.add_dependency(dep));
    }
    let rate = EVENTS as f64 / start.elapsed().as_secs_f64();
    eprintln!(
        "{rate:.0} events/s; {} edges, {} cycles",
        graph.edge_count(),
        graph.cycles().len()
    );
    let total: u64 = graph.edges().map(|e| e.count).sum::<u64>()
        + graph.recursive().iter().map(|r| r.count).sum::<u64>();
    assert_eq!(total, EVENTS);
    assert!(rate >= 5e6, "{rate:.0} events/s");
}
