//! In-process collectives: worker threads of one process exchange tensors through shared memory.
//!
//! Each operation is two rendezvous of all ranks (a barrier) around a data phase:
//!
//! 1. every rank publishes, in its own slot, the operation, kind, length and the raw addresses of
//!    its contiguous CPU tensors, then arrives at the barrier;
//! 2. after the barrier every rank checks that all slots describe the same call (else every rank
//!    returns [`CollectiveError::Mismatch`] and the group is aborted: no memory is touched), then
//!    works on its own disjoint part of every rank's memory: for all-reduce, rank r reduces chunk
//!    r of all ranks' buffers and writes the result into chunk r of every buffer; for
//!    reduce-scatter, rank r reduces chunk r into its own output; for all-gather and broadcast,
//!    rank r copies the peers' data into its own output;
//! 3. a second barrier: nobody returns (and lets its caller modify or free a buffer) while a peer
//!    still reads or writes it.
//!
//! Sums run in rank order 0, 1, …, W−1 for every element, whichever thread computes it, and the
//! one result is written to every rank: all ranks hold bit-identical values and reruns reproduce
//! them regardless of thread timing. No allocation per operation (a stack block of 2048 values
//! accumulates), except for staged calls (CUDA tensors or half-precision kinds at world size > 1
//! go through a temporary CPU fp32 copy).
//!
//! The barrier spins briefly (the peers are usually a few microseconds apart), then yields, then
//! sleeps on a condition variable. Abort (a handle, or a rank's handle being dropped) wakes every
//! waiter at once; a wait longer than the group's timeout aborts the group and names the ranks
//! that never arrived. Slots are double-buffered by the parity of the operation count, so a fast
//! rank publishing its next call never disturbs a slow rank still checking the current one.
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor};

use super::{
    check_scatter_gather, check_tensor, kind_name, AbortHandle, AbortTarget, Collective,
    CollectiveError, ReduceOp, Result, DEFAULT_TIMEOUT,
};

/// Values accumulated per block (on the stack).
const BLOCK: usize = 2048;
/// Chunk boundaries of the all-reduce work split are multiples of this many elements (cache
/// lines stay with one thread).
const ALIGN: usize = 16;
/// Pure spinning before yielding, then yielding before sleeping. The spin is short on purpose:
/// when the machine is busy, two ranks can share one core, and a spinning rank then only delays
/// the peer it waits for (30 µs of spin measured 95 µs per 62k all-reduce on 2 shared cores,
/// 3 µs measured 20 µs); yielding is nearly as fast as spinning when the core is free.
const SPIN: Duration = Duration::from_micros(3);
const YIELD: Duration = Duration::from_micros(300);

/// Constructor of a group of in-process ranks.
pub struct LocalGroup;

impl LocalGroup {
    /// One handle per rank (rank i at index i), with [`DEFAULT_TIMEOUT`]. Move each handle to
    /// its worker thread.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(world: usize) -> Vec<LocalCollective> {
        LocalGroup::with_timeout(world, DEFAULT_TIMEOUT)
    }

    /// As [`LocalGroup::new`], with a limit on how long one operation waits for the others.
    pub fn with_timeout(world: usize, timeout: Duration) -> Vec<LocalCollective> {
        assert!(world > 0, "a group needs at least one rank");
        let slots = || (0..world).map(|_| Slot::default()).collect::<Vec<_>>();
        let shared = Arc::new(Shared {
            world,
            timeout,
            slots: [slots(), slots()],
            gate: Mutex::new(Gate::default()),
            cv: Condvar::new(),
            generation: AtomicU64::new(0),
            aborted: AtomicBool::new(false),
            arrived: (0..world).map(|_| AtomicU64::new(0)).collect(),
        });
        (0..world)
            .map(|rank| LocalCollective {
                rank,
                shared: shared.clone(),
                seq: 0,
                srcs: vec![0; world],
            })
            .collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    AllReduce = 1,
    ReduceScatter = 2,
    AllGather = 3,
    Broadcast = 4,
    Barrier = 5,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::AllReduce => "all_reduce",
            Op::ReduceScatter => "reduce_scatter",
            Op::AllGather => "all_gather",
            Op::Broadcast => "broadcast",
            Op::Barrier => "barrier",
        }
    }
}

/// What one rank published for one call. Written by its owner before the first barrier of the
/// call, read by everyone between the two barriers (the barriers order the accesses, so relaxed
/// atomics suffice).
#[derive(Default)]
struct Slot {
    seq: AtomicU64,
    /// Op code | element kind << 8 | reduce op << 16 | root << 32.
    code: AtomicU64,
    len: AtomicU64,
    src: AtomicUsize,
}

#[derive(Default)]
struct Gate {
    /// Ranks arrived in the current generation.
    count: usize,
    generation: u64,
    reason: Option<String>,
}

struct Shared {
    world: usize,
    timeout: Duration,
    slots: [Vec<Slot>; 2],
    gate: Mutex<Gate>,
    cv: Condvar,
    /// Mirror of `gate.generation` for lock-free spinning.
    generation: AtomicU64,
    aborted: AtomicBool,
    /// Per rank: 1 + the generation it last arrived at (timeout diagnostics only).
    arrived: Vec<AtomicU64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn abort_with(&self, reason: String) {
        let mut g = self.lock();
        if g.reason.is_none() {
            g.reason = Some(reason);
        }
        self.aborted.store(true, Ordering::SeqCst);
        drop(g);
        self.cv.notify_all();
    }

    /// Barrier. `interruptible` = false for the closing barrier of a data phase: peers that
    /// passed the opening barrier may still be reading or writing this rank's memory, and they
    /// never block before arriving, so waiting for them is bounded and returning early (on an
    /// abort) would let the caller free memory a peer still touches.
    fn wait(&self, rank: usize, op: Op, interruptible: bool) -> Result<()> {
        let mut g = self.lock();
        if interruptible {
            if let Some(r) = &g.reason {
                return Err(CollectiveError::Aborted(r.clone()));
            }
        }
        let gen = g.generation;
        self.arrived[rank].store(gen + 1, Ordering::Relaxed);
        g.count += 1;
        if g.count == self.world {
            g.count = 0;
            g.generation = gen + 1;
            self.generation.store(gen + 1, Ordering::Release);
            drop(g);
            self.cv.notify_all();
            return Ok(());
        }
        drop(g);
        let start = Instant::now();
        loop {
            if self.generation.load(Ordering::Acquire) != gen {
                return Ok(());
            }
            if interruptible && self.aborted.load(Ordering::Relaxed) {
                break;
            }
            let waited = start.elapsed();
            if waited < SPIN {
                for _ in 0..64 {
                    std::hint::spin_loop();
                }
            } else if waited < YIELD {
                std::thread::yield_now();
            } else {
                break;
            }
        }
        let mut g = self.lock();
        loop {
            if g.generation != gen {
                return Ok(());
            }
            if interruptible {
                if let Some(r) = &g.reason {
                    return Err(CollectiveError::Aborted(r.clone()));
                }
            }
            let waited = start.elapsed();
            if interruptible && waited >= self.timeout {
                let missing: Vec<usize> = (0..self.world)
                    .filter(|&r| self.arrived[r].load(Ordering::Relaxed) != gen + 1)
                    .collect();
                let detail = format!("rank {rank} waited for ranks {missing:?}");
                if g.reason.is_none() {
                    g.reason = Some(format!(
                        "{} timed out after {:?} ({detail})",
                        op.name(),
                        self.timeout
                    ));
                }
                self.aborted.store(true, Ordering::SeqCst);
                drop(g);
                self.cv.notify_all();
                return Err(CollectiveError::Timeout {
                    op: op.name(),
                    after: self.timeout,
                    detail,
                });
            }
            let slice = if interruptible {
                self.timeout - waited
            } else {
                Duration::from_secs(1)
            };
            g = self
                .cv
                .wait_timeout(g, slice)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl AbortTarget for Shared {
    fn abort(&self, reason: &str) {
        self.abort_with(reason.to_string());
    }

    fn abort_reason(&self) -> Option<String> {
        if !self.aborted.load(Ordering::SeqCst) {
            return None;
        }
        self.lock().reason.clone()
    }
}

/// One rank of an in-process group. Dropping it aborts the group (a rank that leaves, normally
/// or by panicking, can never again take part, so waiting for it would hang the others).
pub struct LocalCollective {
    rank: usize,
    shared: Arc<Shared>,
    /// Calls made (all ranks must agree).
    seq: u64,
    /// Every rank's published source address for the current call (filled after the opening
    /// barrier; kept to avoid an allocation per call).
    srcs: Vec<usize>,
}

impl Drop for LocalCollective {
    fn drop(&mut self) {
        if self.shared.world > 1 {
            let how = if std::thread::panicking() {
                "panicked"
            } else {
                "left the group"
            };
            self.shared.abort_with(format!("rank {} {how}", self.rank));
        }
    }
}

/// Element types reduced natively.
trait Elem: Copy + Default + std::ops::AddAssign + std::ops::DivAssign {
    fn from_count(n: usize) -> Self;
}
impl Elem for f32 {
    fn from_count(n: usize) -> f32 {
        n as f32
    }
}
impl Elem for f64 {
    fn from_count(n: usize) -> f64 {
        n as f64
    }
}

fn native_code(t: &Tensor) -> Option<u64> {
    if t.device() != Device::Cpu {
        return None;
    }
    match t.kind() {
        Kind::Float => Some(1),
        Kind::Double => Some(2),
        _ => None,
    }
}

/// The kind a non-native tensor is staged through, if any.
fn staging_kind(k: Kind) -> Result<Kind> {
    match k {
        Kind::Float | Kind::Half | Kind::BFloat16 => Ok(Kind::Float),
        Kind::Double => Ok(Kind::Double),
        other => Err(CollectiveError::Invalid(format!(
            "the local collective reduces floating-point tensors (f32, f64, f16, bf16), not {}",
            kind_name(other)
        ))),
    }
}

fn stage(t: &Tensor) -> Result<Tensor> {
    let k = staging_kind(t.kind())?;
    Ok(t.to_device(Device::Cpu).to_kind(k).contiguous().copy())
}

fn copy_back(dst: &mut Tensor, src: &Tensor) {
    tch::no_grad(|| dst.copy_(src));
}

fn chunk_range(n: usize, world: usize, rank: usize) -> (usize, usize) {
    let per = n.div_ceil(world).div_ceil(ALIGN) * ALIGN;
    let lo = (rank * per).min(n);
    (lo, (lo + per).min(n))
}

/// Reduces `n` elements at `src_off` of every source (rank order) and writes the result at
/// `dst_off` of every destination.
///
/// # Safety
/// Every source and destination range is valid for `T`; no other thread accesses the
/// destination ranges, nor writes the source ranges, meanwhile. A destination may equal a
/// source range exactly.
unsafe fn reduce_range<T: Elem>(
    srcs: &[usize],
    src_off: usize,
    dsts: &[usize],
    dst_off: usize,
    n: usize,
    avg: Option<usize>,
) {
    let mut acc = [T::default(); BLOCK];
    let div = avg.map(T::from_count);
    let mut done = 0;
    while done < n {
        let m = (n - done).min(BLOCK);
        let a = &mut acc[..m];
        {
            let s0 = std::slice::from_raw_parts((srcs[0] as *const T).add(src_off + done), m);
            a.copy_from_slice(s0);
        }
        for &s in &srcs[1..] {
            let sl = std::slice::from_raw_parts((s as *const T).add(src_off + done), m);
            for (x, y) in a.iter_mut().zip(sl) {
                *x += *y;
            }
        }
        if let Some(w) = div {
            for x in a.iter_mut() {
                *x /= w;
            }
        }
        for &d in dsts {
            let dl = std::slice::from_raw_parts_mut((d as *mut T).add(dst_off + done), m);
            dl.copy_from_slice(a);
        }
        done += m;
    }
}

impl LocalCollective {
    /// Writes this rank's slot for the next call (`self.seq`).
    fn publish(&self, op: Op, code: u64, len: usize, src: usize) {
        let slot = &self.shared.slots[(self.seq % 2) as usize][self.rank];
        slot.seq.store(self.seq, Ordering::Relaxed);
        slot.code.store(op as u64 | code, Ordering::Relaxed);
        slot.len.store(len as u64, Ordering::Relaxed);
        slot.src.store(src, Ordering::Relaxed);
    }

    /// Every rank's slot for the current call describes the same call. All ranks read the same
    /// slots, so all reach the same verdict.
    fn verify(&self, op: Op) -> Result<()> {
        let slots = &self.shared.slots[(self.seq % 2) as usize];
        let describe = |r: usize| {
            let s = &slots[r];
            let code = s.code.load(Ordering::Relaxed);
            let name = match code & 0xff {
                1 => "all_reduce",
                2 => "reduce_scatter",
                3 => "all_gather",
                4 => "broadcast",
                5 => "barrier",
                _ => "?",
            };
            let kind = match (code >> 8) & 0xff {
                1 => "f32",
                2 => "f64",
                _ => "-",
            };
            format!(
                "rank {r}: call #{} {name} of {} {kind} elements (op {}, root {})",
                s.seq.load(Ordering::Relaxed),
                s.len.load(Ordering::Relaxed),
                (code >> 16) & 0xff,
                code >> 32
            )
        };
        let key = |r: usize| {
            let s = &slots[r];
            (
                s.seq.load(Ordering::Relaxed),
                s.code.load(Ordering::Relaxed),
                s.len.load(Ordering::Relaxed),
            )
        };
        let first = key(0);
        if let Some(bad) = (1..self.shared.world).find(|&r| key(r) != first) {
            let msg = format!("{}; {}", describe(0), describe(bad));
            self.shared
                .abort_with(format!("mismatched collective calls ({msg})"));
            return Err(CollectiveError::Mismatch(format!(
                "in {} ({msg})",
                op.name()
            )));
        }
        Ok(())
    }

    /// Publish, barrier, verify, `work`, closing barrier.
    fn run(
        &mut self,
        op: Op,
        code: u64,
        len: usize,
        src: usize,
        work: impl FnOnce(&Self),
    ) -> Result<()> {
        self.publish(op, code, len, src);
        let opened = self.shared.wait(self.rank, op, true);
        let verified = opened.and_then(|()| self.verify(op));
        let out = match verified {
            Ok(()) => {
                let slots = &self.shared.slots[(self.seq % 2) as usize];
                for (a, s) in self.srcs.iter_mut().zip(slots) {
                    *a = s.src.load(Ordering::Relaxed);
                }
                work(self);
                self.shared.wait(self.rank, op, false)
            }
            Err(e) => Err(e),
        };
        self.seq += 1;
        out
    }

    fn avg(&self, op: ReduceOp) -> Option<usize> {
        match op {
            ReduceOp::Sum => None,
            ReduceOp::Avg => Some(self.shared.world),
        }
    }

    fn reduce_code(op: ReduceOp) -> u64 {
        match op {
            ReduceOp::Sum => 1 << 16,
            ReduceOp::Avg => 2 << 16,
        }
    }
}

impl Collective for LocalCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.shared.world
    }

    fn backend(&self) -> &'static str {
        "local"
    }

    fn all_reduce(&mut self, t: &mut Tensor, op: ReduceOp) -> Result<()> {
        check_tensor(t, "all_reduce tensor")?;
        let world = self.shared.world;
        if world == 1 {
            return Ok(());
        }
        let Some(kind) = native_code(t) else {
            let mut tmp = stage(t)?;
            self.all_reduce(&mut tmp, op)?;
            copy_back(t, &tmp);
            return Ok(());
        };
        let n = t.numel();
        let ptr = t.data_ptr() as usize;
        let avg = self.avg(op);
        let code = kind << 8 | Self::reduce_code(op);
        self.run(Op::AllReduce, code, n, ptr, |me| {
            let (lo, hi) = chunk_range(n, world, me.rank);
            let bufs = &me.srcs;
            // SAFETY: every rank's buffer holds n elements of this kind (verified); chunk
            // lo..hi of every buffer is touched only by this rank until the closing barrier.
            unsafe {
                if kind == 1 {
                    reduce_range::<f32>(bufs, lo, bufs, lo, hi - lo, avg)
                } else {
                    reduce_range::<f64>(bufs, lo, bufs, lo, hi - lo, avg)
                }
            }
        })
    }

    fn reduce_scatter(&mut self, input: &Tensor, output: &mut Tensor, op: ReduceOp) -> Result<()> {
        let world = self.shared.world;
        check_scatter_gather("reduce_scatter", input, output, world, self.rank)?;
        if world == 1 {
            if input.data_ptr() != output.data_ptr() {
                copy_back(output, input);
            }
            return Ok(());
        }
        let (Some(kind), Some(_)) = (native_code(input), native_code(output)) else {
            let tin = stage(input)?;
            let mut tout = stage(output)?;
            self.reduce_scatter(&tin, &mut tout, op)?;
            copy_back(output, &tout);
            return Ok(());
        };
        let n = output.numel();
        let avg = self.avg(op);
        let code = kind << 8 | Self::reduce_code(op);
        let (src, dst) = (input.data_ptr() as usize, output.data_ptr() as usize);
        self.run(Op::ReduceScatter, code, n, src, |me| {
            let srcs = &me.srcs;
            let off = me.rank * n;
            // SAFETY: inputs hold world·n elements, outputs n (verified); chunk `rank` of every
            // input is read only by this rank, and this rank's output is written only by it
            // (it is either disjoint from every input or exactly chunk `rank` of its own).
            unsafe {
                if kind == 1 {
                    reduce_range::<f32>(srcs, off, &[dst], 0, n, avg)
                } else {
                    reduce_range::<f64>(srcs, off, &[dst], 0, n, avg)
                }
            }
        })
    }

    fn all_gather(&mut self, input: &Tensor, output: &mut Tensor) -> Result<()> {
        let world = self.shared.world;
        check_scatter_gather("all_gather", output, input, world, self.rank)?;
        if world == 1 {
            if input.data_ptr() != output.data_ptr() {
                copy_back(output, input);
            }
            return Ok(());
        }
        let (Some(kind), Some(_)) = (native_code(input), native_code(output)) else {
            let tin = stage(input)?;
            let mut tout = stage(output)?;
            self.all_gather(&tin, &mut tout)?;
            copy_back(output, &tout);
            return Ok(());
        };
        let n = input.numel();
        let bytes = n * if kind == 1 { 4 } else { 8 };
        let (src, dst) = (input.data_ptr() as usize, output.data_ptr() as usize);
        self.run(Op::AllGather, kind << 8, n, src, |me| {
            for s in 0..world {
                let from = me.srcs[s];
                let to = dst + s * bytes;
                if from != to && bytes > 0 {
                    // SAFETY: rank s's input holds n elements and is not written during the
                    // call (it is disjoint from every output chunk but chunk s of rank s's
                    // own output, which nobody writes); chunk s of this rank's output is
                    // written only by this rank and does not overlap the input (checked).
                    unsafe {
                        std::ptr::copy_nonoverlapping(from as *const u8, to as *mut u8, bytes)
                    };
                }
            }
        })
    }

    fn broadcast(&mut self, t: &mut Tensor, root: usize) -> Result<()> {
        check_tensor(t, "broadcast tensor")?;
        let world = self.shared.world;
        if root >= world {
            return Err(CollectiveError::Invalid(format!(
                "broadcast root {root} is not a rank of a group of {world}"
            )));
        }
        if world == 1 {
            return Ok(());
        }
        let Some(kind) = native_code(t) else {
            let mut tmp = stage(t)?;
            self.broadcast(&mut tmp, root)?;
            copy_back(t, &tmp);
            return Ok(());
        };
        let n = t.numel();
        let bytes = n * if kind == 1 { 4 } else { 8 };
        let ptr = t.data_ptr() as usize;
        let code = kind << 8 | (root as u64) << 32;
        self.run(Op::Broadcast, code, n, ptr, |me| {
            if me.rank != root && bytes > 0 {
                let from = me.srcs[root];
                // SAFETY: both buffers hold n elements (verified); the root's is only read.
                unsafe { std::ptr::copy_nonoverlapping(from as *const u8, ptr as *mut u8, bytes) };
            }
        })
    }

    fn barrier(&mut self) -> Result<()> {
        if self.shared.world == 1 {
            return Ok(());
        }
        self.publish(Op::Barrier, 0, 0, 0);
        let out = self
            .shared
            .wait(self.rank, Op::Barrier, true)
            .and_then(|()| self.verify(Op::Barrier));
        self.seq += 1;
        out
    }

    fn abort_handle(&self) -> AbortHandle {
        AbortHandle::new(self.shared.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    /// Runs `f(rank, handle)` on one thread per rank and returns the results in rank order.
    fn on_ranks<T: Send + 'static>(
        group: Vec<LocalCollective>,
        f: impl Fn(usize, &mut LocalCollective) -> T + Send + Sync + 'static,
    ) -> Vec<T> {
        let f = Arc::new(f);
        let handles: Vec<_> = group
            .into_iter()
            .enumerate()
            .map(|(r, mut c)| {
                let f = f.clone();
                thread::spawn(move || {
                    tch::set_num_threads(1);
                    f(r, &mut c)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    fn data(rank: usize, n: usize, salt: u64) -> Vec<f32> {
        // Values with many significant bits, so summation order matters.
        (0..n)
            .map(|i| {
                let x = (i as u64 * 2654435761 + rank as u64 * 40503 + salt * 97) % 100_003;
                (x as f32 / 7.3).sin() * 1e3 / (1.0 + rank as f32 * 0.37)
            })
            .collect()
    }

    fn expected_sum(world: usize, n: usize, salt: u64, avg: bool) -> Vec<f32> {
        let mut acc = data(0, n, salt);
        for r in 1..world {
            for (a, b) in acc.iter_mut().zip(data(r, n, salt)) {
                *a += b;
            }
        }
        if avg {
            for a in acc.iter_mut() {
                *a /= world as f32;
            }
        }
        acc
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn all_reduce_is_exact_rank_ordered_and_equal_on_every_rank() {
        for world in 1..=4 {
            for n in [0usize, 1, 3, 17, 1000, 5000, 62_006] {
                for avg in [false, true] {
                    let out = on_ranks(LocalGroup::new(world), move |r, c| {
                        let mut t = Tensor::from_slice(&data(r, n, 1));
                        let op = if avg { ReduceOp::Avg } else { ReduceOp::Sum };
                        c.all_reduce(&mut t, op).unwrap();
                        Vec::<f32>::try_from(&t).unwrap()
                    });
                    let want = if world == 1 {
                        data(0, n, 1)
                    } else {
                        expected_sum(world, n, 1, avg)
                    };
                    for (r, got) in out.iter().enumerate() {
                        assert_eq!(bits(got), bits(&want), "world {world} n {n} rank {r}");
                    }
                }
            }
        }
    }

    #[test]
    fn reruns_are_bit_identical() {
        let run = || {
            on_ranks(LocalGroup::new(3), |r, c| {
                let mut out = Vec::new();
                for step in 0..20 {
                    let mut t = Tensor::from_slice(&data(r, 4099, step));
                    c.all_reduce(&mut t, ReduceOp::Avg).unwrap();
                    out.extend(bits(&Vec::<f32>::try_from(&t).unwrap()));
                }
                out
            })
        };
        let a = run();
        assert_eq!(a, run());
        assert!(a.iter().all(|x| *x == a[0]));
    }

    #[test]
    fn reduce_scatter_and_all_gather_out_of_place_and_in_place() {
        for world in [1usize, 2, 3] {
            let n = 37;
            let out = on_ranks(LocalGroup::new(world), move |r, c| {
                let full = Tensor::from_slice(&data(r, n * world, 2));
                // Out of place.
                let mut shard = Tensor::zeros([n as i64], (Kind::Float, Device::Cpu));
                c.reduce_scatter(&full, &mut shard, ReduceOp::Sum).unwrap();
                let rs = Vec::<f32>::try_from(&shard).unwrap();
                // In place: the output is chunk r of the input.
                let buf = full.copy();
                let mut own = buf.narrow(0, (r * n) as i64, n as i64);
                c.reduce_scatter(&buf, &mut own, ReduceOp::Sum).unwrap();
                let rs_in_place = Vec::<f32>::try_from(&own).unwrap();
                // All-gather out of place, then in place into `buf`.
                let mut gathered = Tensor::zeros([(n * world) as i64], (Kind::Float, Device::Cpu));
                c.all_gather(&shard, &mut gathered).unwrap();
                let mut buf2 = buf.copy();
                let own2 = buf2.narrow(0, (r * n) as i64, n as i64);
                c.all_gather(&own2, &mut buf2).unwrap();
                (
                    rs,
                    rs_in_place,
                    Vec::<f32>::try_from(&gathered).unwrap(),
                    Vec::<f32>::try_from(&buf2).unwrap(),
                )
            });
            let total = if world == 1 {
                data(0, n * world, 2)
            } else {
                expected_sum(world, n * world, 2, false)
            };
            for (r, (rs, rs_ip, g, g_ip)) in out.iter().enumerate() {
                assert_eq!(bits(rs), bits(&total[r * n..(r + 1) * n]), "w{world} r{r}");
                assert_eq!(bits(rs_ip), bits(rs));
                assert_eq!(bits(g), bits(&total), "gather w{world} r{r}");
                assert_eq!(bits(g_ip), bits(&total), "in-place gather w{world} r{r}");
            }
        }
    }

    #[test]
    fn broadcast_barrier_doubles_and_half_kinds() {
        let out = on_ranks(LocalGroup::new(3), |r, c| {
            let mut t = Tensor::from_slice(&[r as f64 + 0.5, 2.0 * r as f64]);
            c.broadcast(&mut t, 2).unwrap();
            let b = Vec::<f64>::try_from(&t).unwrap();
            c.barrier().unwrap();
            let mut d = Tensor::from_slice(&[r as f64 + 0.25; 5]);
            c.all_reduce(&mut d, ReduceOp::Sum).unwrap();
            let d = Vec::<f64>::try_from(&d).unwrap();
            let mut h = Tensor::from_slice(&[1.5f32 * (r + 1) as f32; 9]).to_kind(Kind::BFloat16);
            c.all_reduce(&mut h, ReduceOp::Avg).unwrap();
            assert_eq!(h.kind(), Kind::BFloat16);
            let h = Vec::<f32>::try_from(&h.to_kind(Kind::Float)).unwrap();
            let mut x = Tensor::from_slice(&[0.5f32 * r as f32; 4]).to_kind(Kind::Half);
            c.all_reduce(&mut x, ReduceOp::Sum).unwrap();
            let x = Vec::<f32>::try_from(&x.to_kind(Kind::Float)).unwrap();
            (b, d, h, x)
        });
        for (b, d, h, x) in out {
            assert_eq!(b, vec![2.5, 4.0]);
            assert_eq!(d, vec![0.75 + 3.0; 5]);
            assert_eq!(h, vec![3.0; 9]);
            assert_eq!(x, vec![1.5; 4]);
        }
    }

    #[test]
    fn mismatched_calls_fail_on_every_rank_without_touching_memory() {
        let out = on_ranks(LocalGroup::new(2), |r, c| {
            let mut t = Tensor::ones([10 + 2 * r as i64], (Kind::Float, Device::Cpu));
            let e = c.all_reduce(&mut t, ReduceOp::Sum).unwrap_err();
            let untouched = t.sum(Kind::Float).double_value(&[]) == (10 + 2 * r) as f64;
            // The group is now aborted: later calls fail at once.
            let later = c.barrier().unwrap_err();
            (e, untouched, later)
        });
        for (e, untouched, later) in out {
            assert!(matches!(e, CollectiveError::Mismatch(_)), "{e}");
            assert!(e.to_string().contains("rank 1"), "{e}");
            assert!(untouched);
            assert!(later.is_abort(), "{later}");
        }
    }

    #[test]
    fn abort_releases_blocked_ranks_quickly() {
        let mut group = LocalGroup::new(3);
        let handle = group[0].abort_handle();
        let _idle = group.pop().unwrap(); // rank 2 never calls: ranks 0 and 1 block.
        let t0 = Instant::now();
        let waiters: Vec<_> = group
            .into_iter()
            .map(|mut c| {
                thread::spawn(move || {
                    let mut t = Tensor::ones([100], (Kind::Float, Device::Cpu));
                    c.all_reduce(&mut t, ReduceOp::Sum)
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(100));
        handle.abort("rank 2 failed: out of memory");
        for w in waiters {
            let e = w.join().unwrap().unwrap_err();
            assert!(e.is_abort(), "{e}");
            assert!(e.to_string().contains("out of memory"), "{e}");
        }
        assert!(t0.elapsed() < Duration::from_secs(2));
        assert!(handle.is_aborted());
    }

    #[test]
    fn a_rank_that_drops_out_or_panics_fails_the_others() {
        let out = on_ranks(LocalGroup::new(2), |r, c| {
            if r == 1 {
                thread::sleep(Duration::from_millis(50));
                return None; // handle dropped by on_ranks' thread when it exits
            }
            Some(c.barrier())
        });
        // on_ranks' closure borrows the handle; the thread owns it and drops it on exit.
        let e = out[0].clone().unwrap().unwrap_err();
        assert!(e.to_string().contains("rank 1 left the group"), "{e}");

        let mut group = LocalGroup::new(2);
        let c1 = group.pop().unwrap();
        let mut c0 = group.pop().unwrap();
        let panicker = thread::spawn(move || {
            let _c = c1;
            thread::sleep(Duration::from_millis(50));
            panic!("worker failed");
        });
        let e = c0.barrier().unwrap_err();
        assert!(e.to_string().contains("rank 1 panicked"), "{e}");
        assert!(panicker.join().is_err());
    }

    #[test]
    fn timeout_names_the_missing_rank() {
        let mut group = LocalGroup::with_timeout(3, Duration::from_millis(300));
        let _c2 = group.pop().unwrap();
        let t0 = Instant::now();
        let out = on_ranks(group, |_, c| c.barrier());
        assert!(t0.elapsed() < Duration::from_secs(3));
        let timeouts: Vec<_> = out
            .iter()
            .filter_map(|r| match r {
                Err(CollectiveError::Timeout { detail, .. }) => Some(detail.clone()),
                _ => None,
            })
            .collect();
        assert!(!timeouts.is_empty(), "{out:?}");
        assert!(timeouts[0].contains("[2]"), "{timeouts:?}");
        assert!(out.iter().all(|r| r.is_err()));
    }

    #[test]
    fn bad_arguments_are_errors() {
        let mut g = LocalGroup::new(1);
        let c = &mut g[0];
        let t = Tensor::zeros([4, 4], (Kind::Float, Device::Cpu));
        let mut tt = t.tr();
        assert!(matches!(
            c.all_reduce(&mut tt, ReduceOp::Sum),
            Err(CollectiveError::Invalid(_))
        ));
        let full = Tensor::zeros([10], (Kind::Float, Device::Cpu));
        let mut out = Tensor::zeros([3], (Kind::Float, Device::Cpu));
        assert!(c.reduce_scatter(&full, &mut out, ReduceOp::Sum).is_err());
        let mut g2 = LocalGroup::new(2);
        let full = Tensor::zeros([10], (Kind::Float, Device::Cpu));
        let mut wrong_chunk = full.narrow(0, 5, 5);
        // Rank 0's in-place output must be chunk 0.
        assert!(matches!(
            g2[0].reduce_scatter(&full, &mut wrong_chunk, ReduceOp::Sum),
            Err(CollectiveError::Invalid(_))
        ));
        let mut ints = Tensor::zeros([3], (Kind::Int64, Device::Cpu));
        assert!(matches!(
            g2[0].all_reduce(&mut ints, ReduceOp::Sum),
            Err(CollectiveError::Invalid(_))
        ));
        assert!(g2[0].broadcast(&mut out, 2).is_err());
    }

    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    }

    /// `cargo test --release --lib collective::local::tests::bench -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn bench_local_collectives() {
        // The data phase alone: one thread reducing half of two 62k buffers (what each of two
        // ranks does per all-reduce), no barriers.
        let a = data(0, 62_006, 1);
        let b = data(1, 62_006, 1);
        let bufs = [a.as_ptr() as usize, b.as_ptr() as usize];
        let mut v = Vec::new();
        for _ in 0..3000 {
            let t0 = Instant::now();
            // SAFETY: both buffers hold 62,006 elements; only this thread touches them.
            unsafe { reduce_range::<f32>(&bufs, 0, &bufs, 0, 31_008, Some(2)) };
            v.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        println!(
            "local data phase, 31k of 2×62k f32 on one thread: {:.1} µs",
            median(v)
        );
        for (n, iters) in [(62_006usize, 3000usize), (11_000_000, 40)] {
            for world in [1usize, 2] {
                let out = on_ranks(LocalGroup::new(world), move |r, c| {
                    let mut t = Tensor::from_slice(&data(r, n, 3));
                    let shard = n.div_ceil(world) as i64;
                    let mut full =
                        Tensor::zeros([shard * world as i64], (Kind::Float, Device::Cpu));
                    let mut times = vec![Vec::new(); 4];
                    for i in 0..iters + 5 {
                        let t0 = Instant::now();
                        c.all_reduce(&mut t, ReduceOp::Avg).unwrap();
                        let t1 = Instant::now();
                        let buf = full.shallow_clone();
                        let mut own = full.narrow(0, r as i64 * shard, shard);
                        c.reduce_scatter(&buf, &mut own, ReduceOp::Avg).unwrap();
                        let t2 = Instant::now();
                        c.all_gather(&own, &mut full).unwrap();
                        let t3 = Instant::now();
                        c.barrier().unwrap();
                        let t4 = Instant::now();
                        if i >= 5 {
                            for (k, (a, b)) in [(t0, t1), (t1, t2), (t2, t3), (t3, t4)]
                                .into_iter()
                                .enumerate()
                            {
                                times[k].push((b - a).as_secs_f64() * 1e6);
                            }
                        }
                    }
                    times.into_iter().map(median).collect::<Vec<f64>>()
                });
                let m = &out[0];
                println!(
                    "local world {world} n {n}: all_reduce {:.1} µs, reduce_scatter {:.1} µs, all_gather {:.1} µs (rs+ag {:.1}), barrier {:.1} µs",
                    m[0],
                    m[1],
                    m[2],
                    m[1] + m[2],
                    m[3]
                );
            }
        }
    }
}
