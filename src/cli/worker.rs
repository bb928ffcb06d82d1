//! `cptlab worker`: one rank of a multi-process job. The engine meets the other ranks
//! (`engine::worker`); this prints and follows.
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use super::follow::{follow_human, follow_json, Signals};
use super::output::outln;
use super::run::{build_config, ConfigArgs};
use super::{exit_code, EXIT_OK};
use crate::config::paths::Paths;
use crate::engine::worker::{self, WorkerOptions, WorkerStart};

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// One JSON object per event on stdout
    #[arg(long, help_heading = "Output")]
    pub json: bool,
    /// Only rendezvous: agree on the config with every rank, print the peers, exit
    #[arg(long, help_heading = "Rendezvous")]
    pub check: bool,
    /// Seconds to wait for every rank at the rendezvous
    #[arg(long, default_value_t = 300, value_parser = super::run::count(), help_heading = "Rendezvous")]
    pub rdzv_timeout: u64,
}

pub fn run(args: WorkerArgs, paths: &Paths) -> Result<i32> {
    let signals = Signals::install()?;
    let config = build_config(&args.config, paths)?;
    let opts = WorkerOptions {
        check: args.check,
        rdzv_timeout: Duration::from_secs(args.rdzv_timeout),
    };
    match worker::start(config, paths, &opts)? {
        WorkerStart::Checked {
            rank,
            world_size,
            config_hash,
            peers,
        } => {
            for p in &peers {
                outln!(
                    "rank {} (local {}) on {} at {}",
                    p.rank,
                    p.local_rank,
                    p.hostname,
                    p.addr
                )?;
            }
            outln!("rank {rank} of {world_size}: rendezvous complete, config {config_hash}")?;
            Ok(EXIT_OK)
        }
        WorkerStart::Training(job) => {
            let summary = if args.json {
                follow_json(job, &signals)
            } else {
                follow_human(job, &signals)
            };
            Ok(exit_code(summary.status))
        }
    }
}
