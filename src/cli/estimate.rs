//! `cptlab estimate`: memory per rank for a config, before any run (`engine::memory` computes
//! it; see there for the method).
use anyhow::Result;
use clap::Args;

use super::output::outln;
use super::run::{build_config, ConfigArgs};
use crate::config::paths::Paths;
use crate::engine::memory::{self, human_bytes, MemoryEstimate};

#[derive(Debug, Args)]
pub struct EstimateArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Classes of the dataset (the classifier's width; the data is not read)
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(i64).range(1..=100_000), help_heading = "Estimate")]
    pub classes: i64,
    /// One JSON object on stdout
    #[arg(long, help_heading = "Output")]
    pub json: bool,
}

pub fn run(args: EstimateArgs, paths: &Paths) -> Result<()> {
    let cfg = build_config(&args.config, paths)?;
    let e = memory::estimate(&cfg, args.classes, 3)?;
    if args.json {
        outln!("{}", serde_json::to_string(&e)?)?;
        return Ok(());
    }
    for line in table(&e) {
        outln!("{line}")?;
    }
    Ok(())
}

/// The table `cptlab estimate` prints: one row per buffer, ZeRO 0 and 1 side by side.
pub fn table(e: &MemoryEstimate) -> Vec<String> {
    let used = |s: u8| if e.zero_stage == s { " (used)" } else { "" };
    let mut out = vec![
        format!(
            "memory per rank: {} ({} parameters), {}, {}, world size {}, micro-batch {} at {}×{}",
            e.model,
            e.params,
            e.precision_mode,
            e.optimizer,
            e.world_size,
            e.micro_batch,
            e.input_size,
            e.input_size
        ),
        format!(
            "{:<22} {:>14} {:>14}",
            "",
            format!("zero 0{}", used(0)),
            format!("zero 1{}", used(1))
        ),
    ];
    let rows: [(&str, u64, u64); 7] = [
        ("parameters", e.parameters_bytes, e.parameters_bytes),
        ("gradients", e.gradients_bytes, e.gradients_bytes),
        ("fp32 master copy", e.master_bytes, e.master_bytes),
        (
            "optimizer state",
            e.optimizer_state_bytes_zero0,
            e.optimizer_state_bytes_zero1,
        ),
        ("optimizer work space", e.scratch_at(0), e.scratch_at(1)),
        ("activations", e.activations_bytes, e.activations_bytes),
        ("total", e.total_at(0), e.total_at(1)),
    ];
    for (name, z0, z1) in rows {
        out.push(format!(
            "{name:<22} {:>14} {:>14}",
            human_bytes(z0),
            human_bytes(z1)
        ));
    }
    out.push(format!(
        "activations: measured by a CPU forward at micro-batch 2 and 4 ({} per sample)",
        human_bytes(e.activations_bytes_per_sample)
    ));
    out
}

/// The workbench's Setup figures (totals under both stages) for `cfg`, CIFAR-10's 10 classes.
pub fn setup_figures(
    cfg: &crate::config::RunConfig,
) -> std::result::Result<crate::tui::setup::MemoryFigures, String> {
    let e = memory::estimate(cfg, 10, 3).map_err(|e| format!("{e:#}"))?;
    Ok(crate::tui::setup::MemoryFigures {
        total_zero0: e.total_at(0),
        total_zero1: e.total_at(1),
        stage: e.zero_stage,
    })
}
