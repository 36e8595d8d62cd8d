//! What every report-producing command (live `trace`, offline `report`, `import-lockdep`)
//! takes: report outputs, suppressions, `--fail-on-cycle`; and reading an input file or `-`.
use std::{
    fs,
    io::Read as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use clap::Args;
use lockgraph::Suppressions;

/// What every report-producing command can write.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Write the JSON report here (schema in the README).
    #[arg(long, value_name = "FILE")]
    pub report_json: Option<PathBuf>,
    /// Write the text report (lockdep-style splats) here; `report` and `import-lockdep`
    /// print it on stdout otherwise.
    #[arg(long, value_name = "FILE")]
    pub report_text: Option<PathBuf>,
    /// Write the graph as DOT.
    #[arg(long, value_name = "FILE")]
    pub dot: Option<PathBuf>,
    /// Cycle ids or class-name globs judged benign.
    #[arg(long, value_name = "FILE")]
    pub suppress: Option<PathBuf>,
    /// Exit with status 3 when an unguarded cycle was found.
    #[arg(long)]
    pub fail_on_cycle: bool,
}

/// The text of a file, or of standard input for `-`.
pub fn read_input(path: &Path) -> Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
        return Ok(text);
    }
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", path.display()))
}

pub fn load_suppressions(path: Option<&Path>) -> Result<Suppressions> {
    let Some(path) = path else {
        return Ok(Suppressions::default());
    };
    let text = read_input(path)?;
    Suppressions::parse(&text).with_context(|| format!("{}", path.display()))
}
