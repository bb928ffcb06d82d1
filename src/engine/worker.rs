//! One rank of a multi-process job (`cptlab worker`): find out which launcher started this
//! process ([`super::launcher`]), meet the other ranks through the job's c10d store and agree on
//! the config ([`super::rendezvous`]), build the rank's collective (Gloo for a CPU rank, NCCL for
//! a GPU rank, its unique id passed through the store) and start its training job. The front end
//! only follows the job it gets back (or prints the peers of a `--check`) and then calls
//! [`WorkerExit::leave`].
//!
//! Layout: one process per device. A CPU rank (`--devices cpu`) trains over Gloo with
//! `devices.threads` intra-op threads (default: this host's cores divided among the ranks on
//! it). A GPU rank (`--devices cuda`) uses the GPU numbered by its local rank, or `cuda:0` when
//! `CUDA_VISIBLE_DEVICES` leaves one.
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::config::paths::Paths;
use crate::config::{DeviceSpec, RunConfig};
use crate::engine::collective::gloo::{GlooCollective, GlooWatch, StoreOwner};
use crate::engine::collective::nccl::NcclCollective;
use crate::engine::collective::Collective;
use crate::engine::launcher::{Launch, StoreHost};
use crate::engine::rendezvous::{self, Agreement, PeerInfo};
use crate::engine::store::NO_GLOO;
use crate::engine::{Job, JobSpec};
use crate::telemetry::{RunStatus, Summary};

/// How a rank meets the others.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Only rendezvous: agree on the config with every rank, then stop.
    pub check: bool,
    /// How long to wait for every rank at the rendezvous (and for the collective to connect).
    pub rdzv_timeout: Duration,
    /// Limit on one collective operation: a rank that stops answering fails the others after
    /// at most this long.
    pub collective_timeout: Duration,
    /// `--local_rank=N` from the command line (DeepSpeed's launcher passes it).
    pub local_rank_arg: Option<usize>,
}

/// What a started rank is.
pub enum WorkerStart {
    /// `check`: the rendezvous completed; nothing trains.
    Checked {
        launch: Launch,
        /// The first 8 bytes of the agreed config's hash, in hex.
        config_hash: String,
        /// Every rank, in rank order.
        peers: Vec<PeerInfo>,
    },
    /// The rank's training job, to follow like any other; then [`WorkerExit::leave`].
    Training {
        launch: Launch,
        job: Job,
        exit: WorkerExit,
    },
}

/// What a rank does after its job ended: check out of the store (rank 0, when it serves the
/// store, waits for the others first, so none loses the store while reading an error from it).
pub struct WorkerExit {
    agreement: Agreement,
    rank: usize,
    watch: Option<GlooWatch>,
}

/// How long rank 0 keeps the store up for ranks still checking out.
const LEAVE_GRACE: Duration = Duration::from_secs(10);

impl WorkerExit {
    /// After the job: a rank that failed by itself posts why (its peers only saw it leave),
    /// then checks out of the store.
    pub fn leave(self, summary: &Summary) {
        if summary.status == RunStatus::Failed && !summary.aborted_by_peer {
            if let Some(w) = &self.watch {
                let error = summary.error.as_deref().unwrap_or("unknown error");
                w.post_failure(&format!("rank {} failed: {error}", self.rank));
            }
        }
        let gone = self.watch.as_ref().map(|w| w.gone()).unwrap_or_default();
        rendezvous::leave(&self.agreement, self.rank, &gone, LEAVE_GRACE);
    }
}

/// The device a rank trains on, checked against the layout `cptlab worker` supports.
enum RankDevice {
    Cpu,
    Cuda(tch::Device),
}

fn rank_device(launch: &Launch, spec: &DeviceSpec) -> Result<RankDevice> {
    match spec {
        DeviceSpec::Cpu { workers: 1 } => {
            if GlooCollective::available().is_err() {
                bail!("{NO_GLOO}");
            }
            Ok(RankDevice::Cpu)
        }
        DeviceSpec::Cpu { workers } => bail!(
            "devices = \"cpu:{workers}\": cptlab worker runs one CPU rank per process (--devices cpu); start {workers} processes instead (torchrun --nproc-per-node {workers} --no-python cptlab worker --devices cpu …)"
        ),
        DeviceSpec::Cuda(ids) if ids.len() == 1 => Ok(RankDevice::Cuda(cuda_device(launch, spec)?)),
        other => bail!(
            "devices = \"{other}\": cptlab worker drives one GPU per process (--devices cuda; the GPU is the local rank's); start one process per GPU (torchrun --nproc-per-node <GPUs per node>). One process per node driving all its GPUs is not supported yet"
        ),
    }
}

/// The GPU of a one-GPU-per-process rank: `cuda:LOCAL_RANK`, or `cuda:0` when only one is
/// visible (`CUDA_VISIBLE_DEVICES` set per process).
fn cuda_device(launch: &Launch, spec: &DeviceSpec) -> Result<tch::Device> {
    let count = tch::Cuda::device_count() as usize;
    if count == 0 {
        bail!(
            "devices = \"cuda\": this machine has no CUDA device that libtorch can use; use --devices cpu (Gloo)"
        );
    }
    let asked = match spec {
        DeviceSpec::Cuda(ids) => ids[0],
        _ => 0,
    };
    if asked != 0 {
        if launch.local_world_size.unwrap_or(1) > 1 {
            bail!(
                "devices = \"cuda:{asked}\" on every rank, but this node runs {} ranks: use --devices cuda (each rank takes the GPU of its local rank)",
                launch.local_world_size.unwrap_or(1)
            );
        }
        if asked >= count {
            bail!("cuda:{asked} does not exist: this process sees {count} CUDA device(s)");
        }
        return Ok(tch::Device::Cuda(asked));
    }
    if count == 1 {
        return Ok(tch::Device::Cuda(0));
    }
    if launch.local_rank >= count {
        bail!(
            "local rank {} has no GPU: this process sees {count} CUDA device(s) (start at most {count} processes per node, or give each its own CUDA_VISIBLE_DEVICES)",
            launch.local_rank
        );
    }
    Ok(tch::Device::Cuda(launch.local_rank))
}

/// Ranks on this host: what the launcher says, else those with this host's name.
fn local_ranks(launch: &Launch, peers: &[PeerInfo]) -> usize {
    launch.local_world_size.unwrap_or_else(|| {
        let me = peers.iter().find(|p| p.rank == launch.rank);
        me.map(|me| peers.iter().filter(|p| p.hostname == me.hostname).count())
            .unwrap_or(1)
            .max(1)
    })
}

/// Starts this process's rank from the launcher's environment and `CPTLAB_RDZV_TOKEN`.
pub fn start(mut config: RunConfig, paths: &Paths, opts: &WorkerOptions) -> Result<WorkerStart> {
    let launch = Launch::from_env(opts.local_rank_arg)?;
    let token = rendezvous::token_from_env()?;
    config.validate()?;
    // A rank without its device fails here, before the others wait for it.
    let device_kind = rank_device(&launch, &config.devices.devices)?;
    // Every rank resolves the data source the same way, so the configs compare equal.
    crate::engine::job::resolve_data_source(&mut config)?;
    let own = config.to_toml();
    let (store, serves) = rendezvous::open_store(&launch, opts.rdzv_timeout)?;
    let agreement = rendezvous::meet(&launch, store, serves, &token, &own, opts.rdzv_timeout)?;
    if opts.check {
        let hash = hex::encode(&rendezvous::config_hash(&agreement.config_toml)[..8]);
        let peers = agreement.peers.clone();
        rendezvous::leave(&agreement, launch.rank, &[], LEAVE_GRACE);
        return Ok(WorkerStart::Checked {
            launch,
            config_hash: hash,
            peers,
        });
    }
    let mut config =
        RunConfig::from_toml_str(&agreement.config_toml, "the config rank 0 handed out")?;
    let owner = StoreOwner {
        who: match launch.store {
            StoreHost::Agent { .. } => "torchrun's agent".into(),
            StoreHost::Rank0 => "rank 0".into(),
        },
        addr: agreement.store_addr.clone(),
    };
    let (device, collective, watch): (tch::Device, Box<dyn Collective>, Option<GlooWatch>) =
        match device_kind {
            RankDevice::Cpu => {
                if config.devices.threads.is_none() {
                    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                    let local = local_ranks(&launch, &agreement.peers);
                    config.devices.threads = Some((cores / local).max(1));
                }
                let me = &agreement.peers[launch.rank];
                let address = rendezvous::transport_address(me, &agreement.peers);
                let (c, w) = GlooCollective::connect(
                    &agreement.store,
                    launch.rank,
                    launch.world_size,
                    &address,
                    opts.collective_timeout,
                    owner,
                )?;
                (tch::Device::Cpu, Box::new(c), Some(w))
            }
            RankDevice::Cuda(device) => {
                let id = nccl_id(&agreement, launch.rank, opts.rdzv_timeout)?;
                let mut c = NcclCollective::from_id(
                    &id,
                    launch.rank,
                    launch.world_size,
                    device,
                    opts.rdzv_timeout,
                )?;
                c.set_timeout(opts.collective_timeout);
                (device, Box::new(c), None)
            }
        };
    let abort = collective.abort_handle();
    let spec = JobSpec {
        config,
        paths: paths.clone(),
    };
    let job = match Job::start_rank(spec, device, collective) {
        Ok(job) => job,
        Err(e) => {
            // The others are told why this rank will not train (they would otherwise only see
            // it leave), and rank 0 keeps the store up while they read it.
            abort.abort(&format!("rank {} failed to start: {e:#}", launch.rank));
            rendezvous::leave(&agreement, launch.rank, &[], LEAVE_GRACE);
            return Err(e);
        }
    };
    Ok(WorkerStart::Training {
        launch: launch.clone(),
        job,
        exit: WorkerExit {
            agreement,
            rank: launch.rank,
            watch,
        },
    })
}

/// Rank 0 creates the NCCL unique id and puts it in the store; the others read it.
fn nccl_id(agreement: &Agreement, rank: usize, timeout: Duration) -> Result<Vec<u8>> {
    let store = agreement
        .store
        .prefixed("nccl")
        .context("the store's nccl prefix")?;
    if rank == 0 {
        let id = NcclCollective::unique_id()?;
        store
            .set("unique_id", &id)
            .context("publishing the NCCL id")?;
        return Ok(id);
    }
    store.wait(&["unique_id"], timeout).with_context(|| {
        format!(
            "rank 0's NCCL id did not arrive within {}",
            rendezvous::seconds(timeout)
        )
    })?;
    store.get("unique_id").context("reading the NCCL id")
}
