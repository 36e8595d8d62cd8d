//! The lockdep console-log parser must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let mut graph = lockgraph::LockGraph::new();
        let _ = lockgraph::import_lockdep(&mut graph, text);
    }
});
