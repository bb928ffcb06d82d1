//! One rank of a multi-process job (`cptlab worker`): meet the other ranks, agree on the config
//! rank 0 resolved, build the rank's collective and start its training job. The front end only
//! follows the job it gets back (or prints the peers of a `--check`).
use std::time::Duration;

use anyhow::Result;

use crate::config::paths::Paths;
use crate::config::RunConfig;
use crate::engine::collective::nccl::NcclCollective;
use crate::engine::rendezvous::{self, PeerInfo, RendezvousEnv};
use crate::engine::{Job, JobSpec};

/// How a rank meets the others.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Only rendezvous: agree on the config with every rank, then stop.
    pub check: bool,
    /// How long to wait for every rank at the rendezvous.
    pub rdzv_timeout: Duration,
}

/// What a started rank is.
pub enum WorkerStart {
    /// `check`: the rendezvous completed; nothing trains.
    Checked {
        rank: usize,
        world_size: usize,
        /// The first 8 bytes of the agreed config's hash, in hex.
        config_hash: String,
        /// Every rank that arrived (rank 0 only; empty on the others).
        peers: Vec<PeerInfo>,
    },
    /// The rank's training job, to follow like any other.
    Training(Job),
}

/// Starts this process's rank from the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK,
/// MASTER_ADDR, MASTER_PORT, CPTLAB_RDZV_TOKEN): rank 0 hands out the NCCL id and its resolved
/// config; every other rank checks that config against its own.
pub fn start(mut config: RunConfig, paths: &Paths, opts: &WorkerOptions) -> Result<WorkerStart> {
    let env = RendezvousEnv::from_env()?;
    let token = rendezvous::token_from_env()?;
    // Every rank resolves the data source the same way, so the configs compare equal.
    crate::engine::job::resolve_data_source(&mut config)?;
    let own = config.to_toml();
    let (blob, agreed, peers) = if env.rank == 0 {
        let blob = if opts.check {
            Vec::new()
        } else {
            NcclCollective::unique_id()?
        };
        let peers = rendezvous::host(&env, &token, &blob, &own, opts.rdzv_timeout)?;
        (blob, own, peers)
    } else {
        let (blob, agreed) = rendezvous::join(
            &env,
            &token,
            Some(rendezvous::config_hash(&own)),
            opts.rdzv_timeout,
        )?;
        (blob, agreed, Vec::new())
    };
    if opts.check {
        return Ok(WorkerStart::Checked {
            rank: env.rank,
            world_size: env.world_size,
            config_hash: hex::encode(&rendezvous::config_hash(&agreed)[..8]),
            peers,
        });
    }
    let config = RunConfig::from_toml_str(&agreed, "the config rank 0 handed out")?;
    let device = tch::Device::Cuda(env.local_rank);
    let collective = NcclCollective::from_id(&blob, env.rank, env.world_size, device)?;
    let job = Job::start_rank(
        JobSpec {
            config,
            paths: paths.clone(),
        },
        device,
        Box::new(collective),
    )?;
    Ok(WorkerStart::Training(job))
}
