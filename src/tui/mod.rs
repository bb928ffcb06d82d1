//! The terminal workbench (setup, dashboard, compare, presets, runs, help).
use anyhow::Result;

use crate::config::paths::Paths;

/// What the command line hands the TUI.
#[derive(Debug, Clone, Default)]
pub struct TuiOptions {
    /// Preset loaded into Setup at start (default: quickstart).
    pub preset: Option<String>,
    /// Data source for new runs (`--data` or `CPTLAB_DATA`).
    pub data: Option<String>,
}

/// Runs the TUI until the user quits; returns the exit code.
pub fn run(_paths: &Paths, _opts: TuiOptions) -> Result<i32> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        eprintln!("cptlab: stdout is not a terminal; use `cptlab run` for headless training");
        return Ok(2);
    }
    anyhow::bail!("the terminal workbench is not built yet; use `cptlab run`")
}
