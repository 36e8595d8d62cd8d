//! `--metrics ADDR`: the live trace's figures as Prometheus/OpenMetrics text over HTTP, for
//! node_exporter-style scraping. Each scrape renders the session's state at that moment
//! (inside the event loop, so nothing is shared or locked); the response is written by a
//! task of its own so a slow client cannot stall tracing.
use std::{net::SocketAddr, time::Duration};

use anyhow::{Context as _, Result};
use lockgraph::{LockGraph, LockKind, Stats, Suppressions};
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

/// What one scrape reports, gathered by the event loop.
pub struct MetricsSnapshot<'a> {
    pub graph: &'a LockGraph,
    pub suppressions: &'a Suppressions,
    /// Source counters with the kernel's figures filled in (the summary's `stats`).
    pub stats: Stats,
    pub lock_operations: u64,
    pub dependency_checks: u64,
    pub traced_tasks_full: u64,
    pub deadlocks_in_progress: u64,
    pub deadlocks_detected: u64,
    pub long_holds: u64,
    pub budget: Option<BudgetMetrics>,
}

/// The overhead budget's state at a scrape.
pub struct BudgetMetrics {
    pub budget_percent: f64,
    /// The programs' share of busy CPU time in the last second.
    pub overhead_percent: f64,
    /// Shedding steps in force (0: full coverage).
    pub steps_shed: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let metric = Counter::<u64>::default();
    metric.inc_by(value);
    registry.register(name, help, metric);
}

fn gauge_f64(registry: &mut Registry, name: &str, help: &str, value: f64) {
    let metric = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    metric.set(value);
    registry.register(name, help, metric);
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let metric = Gauge::<i64>::default();
    metric.set(i64::try_from(value).unwrap_or(i64::MAX));
    registry.register(name, help, metric);
}

/// The OpenMetrics text of one scrape. Names are `locktrace_*`; every source counter of
/// [`Stats`] (each loss counter among them) is a counter of its own name.
pub fn render(snapshot: &MetricsSnapshot<'_>) -> Result<String> {
    let mut registry = Registry::with_prefix("locktrace");
    counter(
        &mut registry,
        "lock_operations",
        "Lock operations the probes saw (every traced family)",
        snapshot.lock_operations,
    );
    counter(
        &mut registry,
        "dependency_checks",
        "Acquires checked against the task's held locks",
        snapshot.dependency_checks,
    );
    counter(
        &mut registry,
        "traced_tasks_full",
        "Tasks forked in a traced tree NOT traced (its map was full)",
        snapshot.traced_tasks_full,
    );
    // Every source counter: events, records sent/dropped/resynced and each loss counter.
    let stats = serde_json::to_value(snapshot.stats)?;
    for (name, value) in stats.as_object().context("stats are an object")? {
        let help = format!("Source counter `{name}` (see the report's stats)");
        counter(&mut registry, name, &help, value.as_u64().unwrap_or(0));
    }

    let classes = Family::<KindLabel, Gauge<i64>>::default();
    let dependencies = Family::<KindLabel, Gauge<i64>>::default();
    for kind in LockKind::ALL {
        // Present at zero, so a dashboard sees every family from the first scrape.
        drop(classes.get_or_create(&KindLabel {
            kind: kind.as_str(),
        }));
        drop(dependencies.get_or_create(&KindLabel {
            kind: kind.as_str(),
        }));
    }
    let mut kind_of = std::collections::HashMap::new();
    for (id, class) in snapshot.graph.classes() {
        kind_of.insert(id, class.info.kind);
        classes
            .get_or_create(&KindLabel {
                kind: class.info.kind.as_str(),
            })
            .inc();
    }
    for edge in snapshot.graph.edges() {
        let kind = kind_of.get(&edge.new).copied().unwrap_or(LockKind::Unknown);
        dependencies
            .get_or_create(&KindLabel {
                kind: kind.as_str(),
            })
            .inc();
    }
    registry.register("classes", "Lock classes in the graph, by kind", classes);
    registry.register(
        "dependencies",
        "Lock-order dependencies in the graph, by the kind of the lock taken",
        dependencies,
    );

    let summary = snapshot.graph.report(snapshot.suppressions).json().stats;
    let cycles = Family::<StateLabel, Gauge<i64>>::default();
    for (state, count) in [
        ("unguarded", summary.unguarded_cycles),
        ("guarded", summary.guarded_cycles),
        ("suppressed", summary.suppressed_cycles),
    ] {
        cycles
            .get_or_create(&StateLabel { state })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
    registry.register(
        "cycles",
        "Lock-order cycles: unguarded ones are possible deadlocks",
        cycles,
    );
    gauge(
        &mut registry,
        "recursive_findings",
        "Possible recursive locking findings",
        summary.recursive,
    );
    gauge(
        &mut registry,
        "deadlocks_in_progress",
        "Deadlocks confirmed at the last check of who holds and waits for what",
        snapshot.deadlocks_in_progress,
    );
    counter(
        &mut registry,
        "deadlocks_detected",
        "Distinct deadlocks caught in progress since the start",
        snapshot.deadlocks_detected,
    );
    counter(
        &mut registry,
        "long_holds",
        "Locks seen held longer than --hold-threshold",
        snapshot.long_holds,
    );
    if let Some(budget) = &snapshot.budget {
        gauge_f64(
            &mut registry,
            "overhead_budget_percent",
            "--max-overhead: the share of busy CPU time allowed to locktrace's programs",
            budget.budget_percent,
        );
        gauge_f64(
            &mut registry,
            "overhead_percent",
            "Share of busy CPU time locktrace's programs took in the last second",
            budget.overhead_percent,
        );
        gauge(
            &mut registry,
            "shed_steps",
            "Overhead-budget shedding steps in force (0: full coverage)",
            budget.steps_shed,
        );
    }
    let mut text = String::new();
    encode(&mut text, &registry)?;
    Ok(text)
}

/// The listening socket, bound before the probes attach so a bad address fails first.
pub struct MetricsServer {
    listener: TcpListener,
}

impl MetricsServer {
    pub async fn bind(addr: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("--metrics: cannot listen on {addr}"))?;
        Ok(MetricsServer { listener })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    pub async fn accept(&self) -> std::io::Result<TcpStream> {
        self.listener.accept().await.map(|(stream, _)| stream)
    }
}

/// Answers one scrape with `body` (any path: there is one page), bounded in time.
pub fn respond(mut stream: TcpStream, body: String) {
    tokio::spawn(async move {
        let exchange = async {
            // The request line and headers; their contents do not matter.
            let mut request = [0u8; 4096];
            let mut read = 0;
            while read < request.len() {
                let n = stream.read(&mut request[read..]).await?;
                read += n;
                if n == 0 || request[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; \
                 version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: \
                 close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(body.as_bytes()).await?;
            stream.shutdown().await
        };
        // A client that stalls is dropped; tracing never waits for it.
        let _ = tokio::time::timeout(Duration::from_secs(10), exchange).await;
    });
}
