//! The JSON-lines trace parser (recordings, hand-written traces) must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(graph) = lockgraph::replay(data) {
        let _ = graph.report(&lockgraph::Suppressions::default()).text();
    }
});
