//! `--metrics ADDR` during a host trace: a scrape is OpenMetrics text with every family's
//! counters, and the figures follow the trace (the inversion shows as an unguarded cycle).
mod common;

use std::time::Duration;

use common::{assert_root, compile, metric_value as value, scrape, scratch_dir, Target, Tracer};

#[test]
fn a_scrape_shows_every_family_and_follows_the_trace() {
    assert_root();
    let dir = scratch_dir("metrics");
    let binary = compile(&dir, "two_locks", None);
    let target = Target::start(&binary, &["abba"]);
    let (tracer, stderr) =
        Tracer::start_capturing(&["--user", "--pid", &target.pid, "--metrics", "127.0.0.1:0"]);
    let addr = stderr
        .lines()
        .find_map(|line| line.strip_prefix("locktrace: metrics on http://"))
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no metrics address in:\n{stderr}"))
        .to_string();
    let before = scrape(&addr);
    assert!(before.starts_with("HTTP/1.1 200 OK"), "{before}");
    assert!(before.contains("application/openmetrics-text"));
    assert!(before.trim_end().ends_with("# EOF"), "{before}");
    for family in [
        "locktrace_lock_operations_total",
        "locktrace_dependency_checks_total",
        "locktrace_records_total",
        "locktrace_dropped_total",
        "locktrace_resynced_total",
        "locktrace_held_overflow_total",
        "locktrace_dependencies_lost_total",
        "locktrace_probe_misses_total",
        "locktrace_deadlocks_in_progress",
        "locktrace_recursive_findings",
        "locktrace_classes{kind=\"pthread_mutex\"}",
        "locktrace_classes{kind=\"mutex\"}",
        "locktrace_dependencies{kind=\"pthread_rwlock\"}",
        "locktrace_cycles{state=\"unguarded\"}",
    ] {
        assert!(
            value(&before, family).is_some(),
            "no {family} in:\n{before}"
        );
    }
    assert_eq!(
        value(&before, "locktrace_cycles{state=\"unguarded\"}"),
        Some(0.0)
    );
    target.go();
    let mut after = String::new();
    for _ in 0..100 {
        after = scrape(&addr);
        if value(&after, "locktrace_cycles{state=\"unguarded\"}") == Some(1.0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        value(&after, "locktrace_cycles{state=\"unguarded\"}"),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        value(&after, "locktrace_classes{kind=\"pthread_mutex\"}"),
        Some(2.0)
    );
    assert!(
        value(&after, "locktrace_lock_operations_total").unwrap() >= 8.0,
        "{after}"
    );
    let output = tracer.stop();
    assert!(output.status.success(), "{}", output.stderr);
    std::fs::remove_dir_all(&dir).ok();
}
