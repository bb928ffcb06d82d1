//! Collective communication between data-parallel ranks: one trait, three implementations.
//!
//! - [`local::LocalCollective`]: worker threads of one process over shared memory (CPU workers,
//!   CI, and world size 1 on any device). Deterministic: every element is summed in rank order
//!   0, 1, …, W−1 whichever thread does it, and the result is written to every rank, so all ranks
//!   hold bit-identical values and reruns reproduce them.
//! - [`nccl::NcclCollective`]: NCCL on CUDA devices, one process with several GPUs (one thread
//!   each) or one process per GPU across machines (unique id through the c10d store).
//! - [`gloo::GlooCollective`]: libtorch's `ProcessGroupGloo`, CPU ranks across processes (one
//!   rank per process, meeting through the c10d store, [`crate::engine::rendezvous`]).
//!
//! [`make_group`] builds the in-process groups (local, NCCL); a multi-process rank builds its
//! one collective in [`crate::engine::worker`].
//!
//! Every operation is collective: all ranks of the group must call the same operations in the
//! same order with tensors of the same kind and length. Tensors are contiguous and treated as
//! flat (their shape is ignored). A failed rank must not leave the others blocked: every
//! implementation hands out an [`AbortHandle`]; aborting (or dropping a rank's handle) makes every
//! pending and later operation of every rank return [`CollectiveError::Aborted`] within
//! milliseconds (local) or one polling interval (NCCL), and operations time out after a
//! configurable limit.
use std::sync::Arc;
use std::time::Duration;

use tch::{Device, Kind, Tensor};

pub mod gloo;
pub mod local;
pub mod nccl;

pub use gloo::GlooCollective;
pub use local::{LocalCollective, LocalGroup};
pub use nccl::NcclCollective;

/// How values from the ranks are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    /// Sum divided by the world size.
    Avg,
}

/// Default limit on how long one operation waits for the other ranks. Generous, because a rank
/// may legitimately be busy (evaluating, writing a checkpoint) while the others wait; a failed
/// rank is reported through abort, not through this limit.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CollectiveError {
    /// The group was aborted (a rank failed, left, or the job stopped it).
    #[error("collective aborted: {0}")]
    Aborted(String),
    #[error("collective {op} timed out after {after:?}: {detail}")]
    Timeout {
        op: &'static str,
        after: Duration,
        detail: String,
    },
    /// The ranks called different operations, or with different kinds or lengths.
    #[error("ranks disagree on a collective call: {0}")]
    Mismatch(String),
    /// A call this rank made is not valid (layout, device, kind, aliasing).
    #[error("invalid collective call: {0}")]
    Invalid(String),
    #[error("NCCL not available: {0}")]
    Unavailable(String),
    #[error("NCCL error: {0}")]
    Nccl(String),
    #[error("Gloo error: {0}")]
    Gloo(String),
}

impl CollectiveError {
    /// True when this error only reports that another rank (or the job) ended the group: the
    /// root cause is elsewhere.
    pub fn is_abort(&self) -> bool {
        matches!(self, CollectiveError::Aborted(_))
    }

    /// True when `e` (or any error it wraps) is an aborted collective: the rank that returned
    /// it was only woken by the group's abort.
    pub fn aborts(e: &anyhow::Error) -> bool {
        e.chain().any(|c| {
            c.downcast_ref::<CollectiveError>()
                .is_some_and(CollectiveError::is_abort)
        })
    }
}

pub type Result<T> = std::result::Result<T, CollectiveError>;

/// Collective operations of one rank.
pub trait Collective: Send {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// "local" or "nccl".
    fn backend(&self) -> &'static str;

    /// In place: every rank's `t` becomes the element-wise reduction over all ranks.
    fn all_reduce(&mut self, t: &mut Tensor, op: ReduceOp) -> Result<()>;

    /// `input` holds world × n elements, `output` n; rank r receives the reduction of chunk r
    /// (elements `r·n .. (r+1)·n`) over all ranks. `output` may be chunk r of `input` itself (in
    /// place, as NCCL allows); any other overlap is an error.
    fn reduce_scatter(&mut self, input: &Tensor, output: &mut Tensor, op: ReduceOp) -> Result<()>;

    /// `input` holds n elements, `output` world × n; every rank's output becomes the
    /// concatenation of all ranks' inputs in rank order. `input` may be chunk r of `output`
    /// (in place); any other overlap is an error.
    fn all_gather(&mut self, input: &Tensor, output: &mut Tensor) -> Result<()>;

    /// In place: every rank's `t` becomes rank `root`'s.
    fn broadcast(&mut self, t: &mut Tensor, root: usize) -> Result<()>;

    /// Returns once every rank has called it.
    fn barrier(&mut self) -> Result<()>;

    /// A handle that can abort the whole group from any thread (the job keeps one per worker).
    fn abort_handle(&self) -> AbortHandle;

    /// Called after the host read a value this rank's operations produced. Backends whose calls
    /// return before the operation completes (NCCL: queued on the stream) fail here if the
    /// group was aborted meanwhile, so garbage left by an aborted operation never passes for a
    /// value (a NaN loss read as divergence). Others complete within the call: nothing to do.
    fn check_read(&self) -> Result<()> {
        Ok(())
    }
}

/// What an abort handle acts on.
pub trait AbortTarget: Send + Sync {
    fn abort(&self, reason: &str);
    /// The first reason given, once aborted.
    fn abort_reason(&self) -> Option<String>;
}

/// Aborts a group from any thread; cheap to clone. The first reason wins.
#[derive(Clone)]
pub struct AbortHandle(Arc<dyn AbortTarget>);

impl AbortHandle {
    pub fn new(target: Arc<dyn AbortTarget>) -> AbortHandle {
        AbortHandle(target)
    }

    /// Makes every pending and later operation of every rank of the group fail.
    pub fn abort(&self, reason: &str) {
        self.0.abort(reason)
    }

    pub fn is_aborted(&self) -> bool {
        self.0.abort_reason().is_some()
    }

    pub fn reason(&self) -> Option<String> {
        self.0.abort_reason()
    }
}

impl std::fmt::Debug for AbortHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AbortHandle")
            .field("reason", &self.reason())
            .finish()
    }
}

/// Which implementation a group uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Threads over shared memory ([`LocalGroup`]).
    Local,
    /// NCCL ([`NcclCollective::group`]).
    Nccl,
}

/// One collective per worker (index = rank) for workers on `devices`, all in this process.
/// `backend: None` picks: CPU devices → local; one CUDA device → local (no NCCL needed: every
/// operation is then a no-op or a device copy); several CUDA devices → NCCL. CUDA devices with
/// the local backend at world size > 1 work but stage every call through host memory.
pub fn make_group(
    devices: &[Device],
    backend: Option<Backend>,
) -> Result<Vec<Box<dyn Collective>>> {
    if devices.is_empty() {
        return Err(CollectiveError::Invalid("no devices".into()));
    }
    let cuda = devices.iter().filter(|d| d.is_cuda()).count();
    if cuda != 0 && cuda != devices.len() {
        return Err(CollectiveError::Invalid(format!(
            "workers mix CPU and CUDA devices ({devices:?})"
        )));
    }
    let backend = backend.unwrap_or(if cuda > 1 {
        Backend::Nccl
    } else {
        Backend::Local
    });
    Ok(match backend {
        Backend::Local => LocalGroup::new(devices.len())
            .into_iter()
            .map(|c| Box::new(c) as Box<dyn Collective>)
            .collect(),
        Backend::Nccl => {
            if cuda == 0 {
                return Err(CollectiveError::Invalid(
                    "NCCL needs CUDA devices; CPU workers use the local backend".into(),
                ));
            }
            NcclCollective::group(devices)?
                .into_iter()
                .map(|c| Box::new(c) as Box<dyn Collective>)
                .collect()
        }
    })
}

/// All-reduces a few host numbers (e.g. a loss sum and a sample count) through a tensor on
/// `device` (the collective's device: NCCL needs GPU memory). Exact for `Sum` of values that
/// f64 represents exactly.
pub fn all_reduce_scalars(
    c: &mut dyn Collective,
    values: &mut [f64],
    op: ReduceOp,
    device: Device,
) -> Result<()> {
    if values.is_empty() || c.world_size() == 1 {
        return Ok(());
    }
    let mut t = Tensor::from_slice(values).to_device(device);
    c.all_reduce(&mut t, op)?;
    let host = t.to_device(Device::Cpu);
    c.check_read()?;
    let out = Vec::<f64>::try_from(&host)
        .map_err(|e| CollectiveError::Invalid(format!("reading reduced scalars: {e}")))?;
    values.copy_from_slice(&out);
    Ok(())
}

/// The mean of `value` over all ranks (e.g. each rank's mean loss over equal local batches
/// gives the mean over the global batch).
pub fn mean_across_ranks(c: &mut dyn Collective, value: f64, device: Device) -> Result<f64> {
    let mut v = [value];
    all_reduce_scalars(c, &mut v, ReduceOp::Avg, device)?;
    Ok(v[0])
}

pub(crate) fn kind_name(k: Kind) -> String {
    format!("{k:?}")
}

/// Checks what every implementation needs of a tensor argument.
pub(crate) fn check_tensor(t: &Tensor, what: &str) -> Result<()> {
    if !t.defined() {
        return Err(CollectiveError::Invalid(format!(
            "{what} is an undefined tensor"
        )));
    }
    if !t.is_contiguous() {
        return Err(CollectiveError::Invalid(format!(
            "{what} is not contiguous (shape {:?}, strides {:?})",
            t.size(),
            t.stride()
        )));
    }
    Ok(())
}

/// Byte ranges of two tensors overlap.
pub(crate) fn overlaps(a: &Tensor, b: &Tensor) -> bool {
    if a.numel() == 0 || b.numel() == 0 {
        return false;
    }
    let (a0, b0) = (a.data_ptr() as usize, b.data_ptr() as usize);
    let a1 = a0 + a.numel() * a.kind().elt_size_in_bytes();
    let b1 = b0 + b.numel() * b.kind().elt_size_in_bytes();
    a0 < b1 && b0 < a1
}

/// Checks the sizes and aliasing of a reduce-scatter or all-gather call: `big` has world × n
/// elements, `small` n, and if they overlap, `small` is exactly chunk `rank` of `big`.
pub(crate) fn check_scatter_gather(
    op: &str,
    big: &Tensor,
    small: &Tensor,
    world: usize,
    rank: usize,
) -> Result<()> {
    check_tensor(big, op)?;
    check_tensor(small, op)?;
    if big.kind() != small.kind() {
        return Err(CollectiveError::Invalid(format!(
            "{op}: input and output kinds differ ({} vs {})",
            kind_name(big.kind()),
            kind_name(small.kind())
        )));
    }
    if big.device() != small.device() {
        return Err(CollectiveError::Invalid(format!(
            "{op}: input and output are on different devices"
        )));
    }
    let n = small.numel();
    if big.numel() != n * world {
        return Err(CollectiveError::Invalid(format!(
            "{op}: the full buffer has {} elements, expected world size {world} × chunk {n} = {}",
            big.numel(),
            n * world
        )));
    }
    if overlaps(big, small) {
        let expect = big.data_ptr() as usize + rank * n * big.kind().elt_size_in_bytes();
        if small.data_ptr() as usize != expect {
            return Err(CollectiveError::Invalid(format!(
                "{op}: in-place use needs the chunk to be exactly chunk {rank} of the full buffer"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_group_picks_a_backend_or_explains() {
        let g = make_group(&[Device::Cpu, Device::Cpu], None).unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(
            (g[1].rank(), g[1].world_size(), g[1].backend()),
            (1, 2, "local")
        );
        let one_gpu = make_group(&[Device::Cuda(0)], None).unwrap();
        assert_eq!(one_gpu[0].backend(), "local");
        assert!(make_group(&[Device::Cpu, Device::Cuda(0)], None).is_err());
        assert!(make_group(&[Device::Cpu], Some(Backend::Nccl)).is_err());
        if NcclCollective::available().is_err() {
            let e = make_group(&[Device::Cuda(0), Device::Cuda(1)], None)
                .err()
                .unwrap();
            assert!(e.to_string().contains("NCCL not available"), "{e}");
        }
    }
}
