//! Production safety on the host: nothing seen is lost when the ring buffer overflows (the
//! in-kernel dependency set is re-read).
mod common;

use std::collections::BTreeSet;

use common::{assert_root, compile, edge_pairs, scratch_dir, Target, Tracer, TracerOutput};

/// Runs `tests/programs/PROGRAM.c` under `trace --user --max-overhead off --pid` (plus `extra` options) until it
/// exits; the scratch directory, what the tracer printed (it must have succeeded) and its
/// JSON report.
fn trace_program(
    name: &str,
    program: &str,
    extra: &[&str],
) -> (std::path::PathBuf, TracerOutput, serde_json::Value) {
    assert_root();
    let dir = scratch_dir(name);
    let binary = compile(&dir, program, None);
    let target = Target::start(&binary, &[]);
    let json_path = dir.join("report.json");
    // Unbudgeted: these tests account for every dependency, which the default budget's
    // shedding would (reportedly) thin on their long busy loops.
    let mut args = vec!["--user", "--max-overhead", "off", "--pid", &target.pid];
    args.extend_from_slice(extra);
    args.extend(["--report-json", json_path.to_str().unwrap()]);
    let tracer = Tracer::start(&args);
    target.go();
    let output = tracer.stop();
    assert!(output.status.success(), "{}", output.stderr);
    let report = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    (dir, output, report)
}

#[test]
fn a_tiny_ring_buffer_drops_records_but_no_dependency() {
    let (dir, _, report) = trace_program("resync", "many_locks", &["--ringbuf-kib", "4"]);
    let stats = &report["stats"];
    assert!(
        stats["dropped"].as_u64().unwrap() > 0,
        "the burst should overflow 4 KiB: {stats}"
    );
    assert!(stats["resynced"].as_u64().unwrap() > 0, "{stats}");
    // 48 locks, every ordered pair: 48 * 47 / 2 dependencies, all present.
    let edges: BTreeSet<(String, String)> = edge_pairs(&report);
    assert_eq!(edges.len(), 48 * 47 / 2, "{stats}");
    assert_eq!(stats["dependencies"].as_u64(), Some(48 * 47 / 2));
    assert!(report["cycles"].as_array().unwrap().is_empty());
    std::fs::remove_dir_all(&dir).ok();
}

/// 100,001 distinct dependencies, more than the 65,536 the in-kernel set holds: the daemon
/// drains the set as it fills, so every dependency reaches the graph, or the report says
/// exactly how many did not (each occurs once here, so lost occurrences are lost
/// dependencies), and the one inverted pair is a cycle unless one of its edges was lost.
#[test]
fn more_dependencies_than_the_kernel_set_holds_are_kept_or_counted() {
    let (dir, output, report) = trace_program("many-deps", "many_dependencies", &[]);
    let stats = &report["stats"];
    let dependencies = stats["dependencies"].as_u64().unwrap();
    let lost = stats["dependencies_lost"].as_u64().unwrap();
    assert_eq!(dependencies + lost, 100_001, "{stats}");
    assert!(
        stats["dependency_set_drains"].as_u64().unwrap() > 0 || lost > 0,
        "65,536 entries cannot hold 100,001 dependencies undrained: {stats}"
    );
    let coverage_line = output.stderr.contains("coverage incomplete");
    assert_eq!(coverage_line, lost > 0, "{}", output.stderr);
    if lost == 0 {
        assert_eq!(stats["unguarded_cycles"].as_u64(), Some(1), "{stats}");
        let cycle = &report["cycles"][0];
        assert_eq!(
            cycle["classes"].as_array().map(Vec::len),
            Some(2),
            "{cycle}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// 50 nested mutexes, two beyond the held-lock stack: both counted as not tracked, their
/// releases expected (no unmatched release, no return missed), and nothing left held (the
/// pair taken afterwards gets no dependency from a stale entry).
#[test]
fn acquires_beyond_the_held_stack_are_counted_and_their_releases_expected() {
    let (dir, output, report) = trace_program("deep-nesting", "deep_nesting", &[]);
    let stats = &report["stats"];
    assert_eq!(stats["held_overflow"].as_u64(), Some(2), "{stats}");
    assert_eq!(stats["unmatched_releases"].as_u64(), Some(0), "{stats}");
    assert_eq!(stats["return_missed"].as_u64(), Some(0), "{stats}");
    // m[i] -> m[i+1] for the 48 tracked, m[47] -> m[48] and m[47] -> m[49] (the two beyond
    // the stack depend on the innermost tracked lock), then a -> b.
    assert_eq!(stats["dependencies"].as_u64(), Some(47 + 2 + 1), "{stats}");
    let line = output
        .stderr
        .lines()
        .rfind(|line| line.starts_with("locktrace: coverage incomplete"))
        .unwrap_or_else(|| panic!("no coverage line: {}", output.stderr));
    assert!(line.contains("2 acquires not tracked"), "{line}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Maps made smaller than the workload: 1,064 user locks initialised for 256 lock -> class
/// entries, 65 threads with a held-lock stack (64 holding a lock at once) for 16. What the
/// maps evicted is counted, in the JSON, the summary's coverage line and the report text.
#[test]
fn what_full_lru_maps_evict_is_counted_and_shown() {
    let dir = scratch_dir("evictions");
    let text_path = dir.join("report.txt");
    let (dir, output, report) = trace_program(
        "evictions",
        "many_instances",
        &[
            "--map-capacity",
            "user-lock-classes=256",
            "--map-capacity",
            "held-tasks=16",
            "--report-text",
            text_path.to_str().unwrap(),
        ],
    );
    let stats = &report["stats"];
    let classes_evicted = stats["user_lock_classes_evicted"].as_u64().unwrap();
    assert!(
        (1_064 - 256..=1_064).contains(&classes_evicted),
        "1,064 entries created in 256: {stats}"
    );
    let tasks_evicted = stats["held_tasks_evicted"].as_u64().unwrap();
    assert!(
        (64 - 16..=65).contains(&tasks_evicted),
        "64 threads holding a lock at once in 16 entries: {stats}"
    );
    let line = output
        .stderr
        .lines()
        .rfind(|line| line.starts_with("locktrace: coverage incomplete"))
        .unwrap_or_else(|| panic!("no coverage line: {}", output.stderr));
    assert!(
        line.contains(&format!("{classes_evicted} user lock classes forgotten")),
        "{line}"
    );
    assert!(
        line.contains(&format!("{tasks_evicted} threads' held locks forgotten")),
        "{line}"
    );
    let text = std::fs::read_to_string(dir.join("report.txt")).unwrap();
    let in_text = text
        .lines()
        .find(|line| line.starts_with("coverage incomplete"))
        .unwrap_or_else(|| panic!("no coverage line in the report: {text}"));
    assert!(in_text.contains("user lock classes forgotten"), "{in_text}");
    std::fs::remove_dir_all(&dir).ok();
}
