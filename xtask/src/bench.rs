//! `cargo xtask bench`: ratios measured side by side in one run, medians of alternating runs.
use std::process::Command;

use anyhow::{Context as _, Result};

use crate::{build, command_output, fuzz};

/// Rounds of each measurement; their median is reported.
const ROUNDS: usize = 5;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// One `locktrace bench-ingest` run: (events/s, peak RSS KiB).
fn ingest_once(binary: &std::path::Path, events: u64) -> Result<(f64, f64)> {
    let output = command_output(Command::new(binary).args(["bench-ingest", "--events", &events.to_string()]))?;
    let field = |name: &str| -> Result<f64> {
        output
            .split_whitespace()
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .with_context(|| format!("no {name} in `{output}`"))?
            .parse()
            .with_context(|| format!("bad {name} in `{output}`"))
    };
    Ok((field("events_per_s")?, field("peak_rss_kib")?))
}

pub fn bench() -> Result<()> {
    let binary = build()?;
    // Daemon ingest: 10^6 and 10^7 records alternating; equal peak RSS shows memory follows
    // classes and edges, not events.
    let (mut small_rate, mut small_rss, mut large_rate, mut large_rss) = (vec![], vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        let (rate, rss) = ingest_once(&binary, 1_000_000)?;
        small_rate.push(rate);
        small_rss.push(rss);
        let (rate, rss) = ingest_once(&binary, 10_000_000)?;
        large_rate.push(rate);
        large_rss.push(rss);
    }
    let (large_rate, large_rss, small_rss) = (median(&mut large_rate), median(&mut large_rss), median(&mut small_rss));
    println!("bench: daemon ingest, 10^7 records: {:.2e} events/s (median of {ROUNDS}; target >= 5e6)", large_rate);
    println!(
        "bench: daemon peak RSS: {:.1} MiB at 10^7 records vs {:.1} MiB at 10^6 (ratio {:.2})",
        large_rss / 1024.0,
        small_rss / 1024.0,
        large_rss / small_rss
    );
    println!("bench: 10^6-record ingest rate {:.2e} events/s", median(&mut small_rate));
    println!("bench: kernel overhead in the VM: not measured yet");
    fuzz(20)?;
    Ok(())
}
