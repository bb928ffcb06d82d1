//! One rank of a multi-process job (`cptlab worker`): find out which launcher started this
//! process ([`super::launcher`]), meet the other ranks through the job's c10d store and agree on
//! the config ([`super::rendezvous`]), build the rank's collective (Gloo for a CPU rank, NCCL for
//! a GPU rank, its unique id passed through the store) and start its training job. The front end
//! only follows the job it gets back (or prints the peers of a `--check`) and then calls
//! [`WorkerExit::leave`].
//!
//! Layouts (`--devices`):
//! - one process per device: `cpu` (a Gloo rank with `devices.threads` intra-op threads,
//!   default this host's cores divided among the ranks on it) or `cuda` (the GPU numbered by the
//!   local rank, or `cuda:0` when `CUDA_VISIBLE_DEVICES` leaves one);
//! - one process driving several ranks as threads: `cpu:N`, `cuda:all` or `cuda:0,1,…` (one
//!   task per node, e.g. `torchrun --nproc-per-node 1`). Each thread is a rank of its own in
//!   the job's collective; process p's threads are the global ranks after those of processes
//!   0..p (each process posts its count to the store), so with equal counts the global rank is
//!   node rank × local devices + thread index.
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
    /// This process's rank among the launched processes (the store's check-out is per process).
    rank: usize,
    /// One per Gloo rank this process drives.
    watches: Vec<GlooWatch>,
}

/// How long rank 0 keeps the store up for ranks still checking out.
const LEAVE_GRACE: Duration = Duration::from_secs(10);

impl WorkerExit {
    /// After the job: a rank that failed by itself posts why (its peers only saw it leave),
    /// then checks out of the store.
    pub fn leave(self, summary: &Summary) {
        if summary.status == RunStatus::Failed && !summary.aborted_by_peer {
            let error = summary.error.as_deref().unwrap_or("unknown error");
            for w in &self.watches {
                w.post_failure(&format!("rank {} failed: {error}", self.rank));
            }
        }
        let mut gone: Vec<usize> = self.watches.iter().flat_map(|w| w.gone()).collect();
        gone.sort_unstable();
        gone.dedup();
        rendezvous::leave(&self.agreement, self.rank, &gone, LEAVE_GRACE);
    }
}

/// The devices of this process's ranks, checked against the layouts `cptlab worker` supports.
enum RankDevices {
    /// `cpu` or `cpu:N`: N CPU ranks, each a Gloo rank of its own.
    Cpu(usize),
    /// One GPU per process, or every GPU listed (or visible) as a rank of its own.
    Cuda(Vec<tch::Device>),
}

impl RankDevices {
    fn len(&self) -> usize {
        match self {
            RankDevices::Cpu(n) => *n,
            RankDevices::Cuda(d) => d.len(),
        }
    }
}

fn rank_devices(launch: &Launch, spec: &DeviceSpec) -> Result<RankDevices> {
    match spec {
        // One GPU per process (its local rank's, as `cuda` means), else one CPU rank.
        DeviceSpec::Auto => rank_devices(launch, &super::device::on_this_machine(spec)),
        DeviceSpec::Cpu { workers } => {
            if GlooCollective::available().is_err() {
                bail!("{NO_GLOO}");
            }
            Ok(RankDevices::Cpu(*workers))
        }
        DeviceSpec::Cuda(ids) if ids.len() == 1 => {
            Ok(RankDevices::Cuda(vec![cuda_device(launch, spec)?]))
        }
        DeviceSpec::Cuda(ids) => node_gpus(launch, spec, Some(ids)),
        DeviceSpec::CudaAll => node_gpus(launch, spec, None),
    }
}

/// `cuda:all` or `cuda:0,1,…`: this process drives the GPUs itself, one rank per GPU; only
/// with one process per node (several would train on the same GPUs).
fn node_gpus(launch: &Launch, spec: &DeviceSpec, ids: Option<&[usize]>) -> Result<RankDevices> {
    let per_node = launch.local_world_size.unwrap_or(1);
    if per_node > 1 {
        bail!(
            "devices = \"{spec}\" drives the node's GPUs from one process, but this node runs {per_node} processes: start one per node (torchrun --nproc-per-node 1), or one per GPU with --devices cuda"
        );
    }
    let count = tch::Cuda::device_count() as usize;
    if count == 0 {
        bail!(
            "devices = \"{spec}\": this machine has no CUDA device that libtorch can use; use --devices cpu (Gloo)"
        );
    }
    let ids: Vec<usize> = match ids {
        Some(ids) => {
            if let Some(bad) = ids.iter().find(|&&i| i >= count) {
                bail!("cuda:{bad} does not exist: this process sees {count} CUDA device(s)");
            }
            ids.to_vec()
        }
        None => (0..count).collect(),
    };
    Ok(RankDevices::Cuda(
        ids.into_iter().map(tch::Device::Cuda).collect(),
    ))
}

/// This process's first global rank and the job's world size, when each process drives
/// `local` ranks: every process posts its count; a process's ranks follow those of the
/// processes before it.
fn global_ranks(
    agreement: &Agreement,
    launch: &Launch,
    local: usize,
    timeout: Duration,
) -> Result<(usize, usize)> {
    if launch.world_size == 1 {
        return Ok((0, local));
    }
    let store = agreement
        .store
        .prefixed("layout")
        .context("the store's layout prefix")?;
    store
        .set(
            &format!("ranks/{}", launch.rank),
            local.to_string().as_bytes(),
        )
        .context("posting this process's rank count")?;
    let keys: Vec<String> = (0..launch.world_size)
        .map(|p| format!("ranks/{p}"))
        .collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    store.wait(&refs, timeout).with_context(|| {
        format!(
            "the other processes' rank counts did not arrive within {}",
            rendezvous::seconds(timeout)
        )
    })?;
    let mut counts = Vec::with_capacity(keys.len());
    for key in &keys {
        let raw = store.get(key).with_context(|| format!("reading {key}"))?;
        let n: usize = String::from_utf8_lossy(&raw)
            .parse()
            .with_context(|| format!("{key} in the store is not a count"))?;
        counts.push(n);
    }
    let first = counts[..launch.rank].iter().sum();
    Ok((first, counts.iter().sum()))
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

/// One rank of this process: its device and collective.
type RankCollective = (tch::Device, Box<dyn Collective>);

/// Starts this process's rank from the launcher's environment and `CPTLAB_RDZV_TOKEN`.
pub fn start(mut config: RunConfig, paths: &Paths, opts: &WorkerOptions) -> Result<WorkerStart> {
    let launch = Launch::from_env(opts.local_rank_arg)?;
    let token = rendezvous::token_from_env()?;
    config.validate()?;
    // A rank without its device fails here, before the others wait for it.
    let devices = rank_devices(&launch, &config.devices.devices)?;
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
    let (first, world) = global_ranks(&agreement, &launch, devices.len(), opts.rdzv_timeout)?;
    let ranks: Vec<usize> = (first..first + devices.len()).collect();
    // Every rank of this process connects in a thread of its own: a group's constructor
    // returns only once all its ranks have joined, this process's other ranks among them.
    let (ranks, watches): (Vec<RankCollective>, Vec<GlooWatch>) = match &devices {
        RankDevices::Cpu(_) => {
            if config.devices.threads.is_none() {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                let local = local_ranks(&launch, &agreement.peers) * devices.len();
                config.devices.threads = Some((cores / local).max(1));
            }
            let me = &agreement.peers[launch.rank];
            let address = rendezvous::transport_address(me, &agreement.peers);
            let connected = connect_each(&ranks, |rank| {
                // A connection of its own: a c10d store client serialises its calls, so
                // one rank's blocking wait for a peer's address would hold up this
                // process's other rank posting its own.
                let own;
                let store = if devices.len() > 1 {
                    own = agreement.store.connect_again()?;
                    &own
                } else {
                    &agreement.store
                };
                GlooCollective::connect(
                    store,
                    rank,
                    world,
                    &address,
                    opts.collective_timeout,
                    owner.clone(),
                )
                .map_err(anyhow::Error::from)
            })?;
            connected
                .into_iter()
                .map(|(c, w)| ((tch::Device::Cpu, Box::new(c) as Box<dyn Collective>), w))
                .unzip()
        }
        RankDevices::Cuda(gpus) => {
            let id = nccl_id(&agreement, launch.rank, opts.rdzv_timeout)?;
            let gpu_of: Vec<(usize, tch::Device)> =
                ranks.iter().copied().zip(gpus.iter().copied()).collect();
            let connected = connect_each(&gpu_of, |(rank, device)| {
                // This thread's CUDA calls (the main thread's when one GPU per process:
                // it then builds the replica) go to the rank's GPU, not to cuda:0.
                crate::quant::set_current_device(device)
                    .map_err(|e| anyhow::anyhow!("rank {rank}: selecting {device:?}: {e}"))?;
                let mut c = NcclCollective::from_id(&id, rank, world, device, opts.rdzv_timeout)?;
                c.set_timeout(opts.collective_timeout);
                Ok((device, Box::new(c) as Box<dyn Collective>))
            })?;
            (connected, Vec::new())
        }
    };
    let aborts: Vec<_> = ranks.iter().map(|(_, c)| c.abort_handle()).collect();
    let spec = JobSpec {
        config,
        paths: paths.clone(),
    };
    let job = match Job::start_ranks(spec, ranks) {
        Ok(job) => job,
        Err(e) => {
            // The others are told why this rank will not train (they would otherwise only see
            // it leave), and rank 0 keeps the store up while they read it.
            for abort in &aborts {
                abort.abort(&format!("rank {} failed to start: {e:#}", launch.rank));
            }
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
            watches,
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

/// Runs `connect` for every item at once, one thread each, and returns the results in order;
/// the first error wins (the other connections then time out or fail with it).
fn connect_each<I, T>(items: &[I], connect: impl Fn(I) -> Result<T> + Sync) -> Result<Vec<T>>
where
    I: Copy + Send + Sync,
    T: Send,
{
    if let [one] = items {
        return Ok(vec![connect(*one)?]);
    }
    let connect = &connect;
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .iter()
            .map(|&item| s.spawn(move || connect(item)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("connecting a rank panicked")))
            })
            .collect()
    })
}
