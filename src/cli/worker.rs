//! `cptlab worker`: one rank of a multi-process job, started by torchrun, srun, DeepSpeed's
//! launcher or plain variables. The engine meets the other ranks (`engine::worker`); this prints
//! and follows, and exits with the codes of `cptlab run`.
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use super::follow::{follow_human, follow_json, Signals};
use super::output::{errln, outln};
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
    /// Seconds to wait for every rank at the rendezvous (and for the collective to connect)
    #[arg(long, default_value_t = 300, value_parser = super::run::count(), help_heading = "Rendezvous")]
    pub rdzv_timeout: u64,
    /// Seconds one collective operation may wait for the other ranks: a rank that stops
    /// answering fails the others after this long at most
    #[arg(long, default_value_t = 60, value_parser = super::run::count(), help_heading = "Rendezvous")]
    pub collective_timeout: u64,
    /// The local rank, as DeepSpeed's launcher passes it (checked against LOCAL_RANK)
    #[arg(
        long = "local_rank",
        alias = "local-rank",
        value_name = "N",
        help_heading = "Rendezvous"
    )]
    pub local_rank: Option<usize>,
}

pub fn run(args: WorkerArgs, paths: &Paths) -> Result<i32> {
    let signals = Signals::install()?;
    let config = build_config(&args.config, paths)?;
    let opts = WorkerOptions {
        check: args.check,
        rdzv_timeout: Duration::from_secs(args.rdzv_timeout),
        collective_timeout: Duration::from_secs(args.collective_timeout),
        local_rank_arg: args.local_rank,
    };
    match worker::start(config, paths, &opts)? {
        WorkerStart::Checked {
            launch,
            config_hash,
            peers,
        } => {
            outln!("{}", launch.describe())?;
            for line in crate::engine::rendezvous::describe_peers(&peers).values() {
                outln!("{line}")?;
            }
            outln!(
                "rank {} of {}: rendezvous complete, config {config_hash}",
                launch.rank,
                launch.world_size
            )?;
            Ok(EXIT_OK)
        }
        WorkerStart::Training { launch, job, exit } => {
            // The run header: where this rank sits (stderr under --json: stdout is events).
            if args.json {
                let _ = errln!("cptlab worker: {}", launch.describe());
            } else {
                outln!("{}", launch.describe())?;
            }
            let summary = if args.json {
                follow_json(job, &signals)
            } else {
                follow_human(job, &signals)
            };
            exit.leave(&summary);
            Ok(exit_code(summary.status))
        }
    }
}
