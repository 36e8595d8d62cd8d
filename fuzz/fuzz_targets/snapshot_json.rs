//! Loading a snapshot (and the suppression file parser) must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(graph) = lockgraph::LockGraph::from_snapshot_json(text) {
            let _ = lockgraph::to_dot(&graph);
        }
        let _ = lockgraph::Suppressions::parse(text);
    }
});
