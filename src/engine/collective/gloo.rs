//! CPU collectives across processes: libtorch's own `c10d::ProcessGroupGloo` (through the C++
//! shim, `csrc/c10d.cpp`), one rank per process, meeting its peers through the job's c10d store.
//!
//! - **Numbers**: sums are Gloo's; `Avg` is the sum divided by the world size afterwards, as
//!   `torch.distributed` does on Gloo (which has no average). Two ranks give exactly what the
//!   in-process collective gives (a + b is commutative); more may differ in the last bit (Gloo's
//!   ring order). Reduce-scatter is an all-reduce of a copy and the rank's chunk, which is what
//!   Gloo's own `_reduce_scatter_base` does (whose work object never reports completion).
//! - **Waiting**: each operation is queued on Gloo's thread; the caller waits on a flag the
//!   operation's future raises (no polling of the work), in slices, checking the group's abort
//!   flag between them.
//! - **Faults**: a peer that dies closes its sockets and the pending operation fails at once; one
//!   that hangs fails it after the collective timeout (Gloo's own). The failing rank then finds
//!   out which rank it was: every process keeps a heartbeat counter in the store (a watch
//!   thread, once a second), and ranks whose counter stopped are named ("rank 1 stopped
//!   answering"). A rank that fails by itself (an error, a stop) posts its reason in the store;
//!   the watch threads of the others read it and abort their rank with it, so the run records
//!   the root cause, not "connection closed". After a failure the process group is leaked, not
//!   destroyed: its destructor would wait for a blocked operation.
use std::ffi::{c_char, c_int, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor};
use torch_sys::C_tensor;

use super::{
    check_scatter_gather, check_tensor, kind_name, AbortHandle, AbortTarget, Collective,
    CollectiveError, ReduceOp, Result,
};
use crate::engine::rendezvous::{rank_list, seconds};
use crate::engine::store::{self, CptStore, Store};

/// The default limit on one operation (`cptlab worker --collective-timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// How often each process beats (and reads the abort key).
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a rank without a heartbeat counts as gone.
const SILENCE: Duration = Duration::from_millis(2500);
/// Limit on the watch's store operations.
const STORE_OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Slices in which a waiting rank checks the abort flag.
const SLICE_MS: i64 = 20;

#[repr(C)]
struct CptGloo {
    _private: [u8; 0],
}
#[repr(C)]
struct CptWork {
    _private: [u8; 0],
}

extern "C" {
    fn cptlab_c10d_gloo_new(
        store: *const CptStore,
        rank: c_int,
        size: c_int,
        timeout_ms: i64,
        address: *const c_char,
        ifname: *const c_char,
        out: *mut *mut CptGloo,
    ) -> *mut c_char;
    fn cptlab_c10d_gloo_free(g: *mut CptGloo);
    fn cptlab_c10d_gloo_allreduce(
        g: *mut CptGloo,
        t: *mut C_tensor,
        out: *mut *mut CptWork,
    ) -> *mut c_char;
    fn cptlab_c10d_gloo_allgather(
        g: *mut CptGloo,
        input: *mut C_tensor,
        output: *mut C_tensor,
        out: *mut *mut CptWork,
    ) -> *mut c_char;
    fn cptlab_c10d_gloo_broadcast(
        g: *mut CptGloo,
        t: *mut C_tensor,
        root: c_int,
        out: *mut *mut CptWork,
    ) -> *mut c_char;
    fn cptlab_c10d_gloo_barrier(g: *mut CptGloo, out: *mut *mut CptWork) -> *mut c_char;
    fn cptlab_c10d_work_wait(w: *mut CptWork, timeout_ms: i64, err: *mut *mut c_char) -> c_int;
    fn cptlab_c10d_work_free(w: *mut CptWork);
}

/// Who serves the store, for messages when it is gone.
#[derive(Debug, Clone)]
pub struct StoreOwner {
    /// "rank 0" or "torchrun's agent".
    pub who: String,
    /// host:port.
    pub addr: String,
}

/// What the job learned about its ranks when a collective failed (read by the worker to leave
/// without waiting for ranks that are gone).
#[derive(Default)]
struct Diagnosis {
    /// Ranks named as gone.
    gone: Vec<usize>,
}

/// State shared by the rank, its watch thread and its abort handles.
struct Shared {
    rank: usize,
    world: usize,
    aborted: AtomicBool,
    reason: Mutex<Option<String>>,
    /// A connection for posting abort reasons and reading heartbeats.
    store: Mutex<Store>,
    owner: StoreOwner,
    stop: AtomicBool,
    diagnosis: Mutex<Diagnosis>,
}

impl Shared {
    fn set_reason(&self, reason: &str) -> bool {
        let mut r = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        let first = r.is_none();
        if first {
            *r = Some(reason.to_string());
        }
        self.aborted.store(true, Ordering::SeqCst);
        first
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Posts `reason` for the other ranks unless one is posted already.
    fn post(&self, reason: &str) {
        let s = self.store();
        if !s.check("abort").unwrap_or(true) {
            let _ = s.set("abort", reason.as_bytes());
        }
    }

    /// The reason another rank posted, if any.
    fn posted(&self) -> Option<String> {
        let s = self.store();
        if s.check("abort").ok()? {
            s.get("abort")
                .ok()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        } else {
            None
        }
    }

    fn heartbeats(&self) -> std::result::Result<Vec<i64>, store::StoreError> {
        let s = self.store();
        (0..self.world)
            .map(|r| s.add(&format!("hb/{r}"), 0))
            .collect()
    }

    /// Why a Gloo operation failed, in terms of ranks: a reason a peer posted, else the ranks
    /// whose heartbeat stopped, else the store's owner being gone.
    fn diagnose(&self, op: &str, error: &str) -> String {
        if let Some(posted) = self.posted() {
            return posted;
        }
        let before = self.heartbeats();
        std::thread::sleep(SILENCE);
        if let Some(posted) = self.posted() {
            return posted;
        }
        match (before, self.heartbeats()) {
            (Ok(a), Ok(b)) => {
                let gone: Vec<usize> = (0..self.world)
                    .filter(|&r| r != self.rank && a[r] == b[r])
                    .collect();
                if gone.is_empty() {
                    format!(
                        "{op} failed on rank {} while every rank is alive: {error}",
                        self.rank
                    )
                } else {
                    let msg = format!(
                        "{} stopped answering (no heartbeat for {}: killed, stopped, or its host is unreachable); {op} on rank {}: {error}",
                        rank_list(&gone),
                        seconds(SILENCE),
                        self.rank
                    );
                    self.diagnosis
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .gone = gone;
                    msg
                }
            }
            _ => {
                if self.owner.who == "rank 0" && self.rank != 0 {
                    self.diagnosis
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .gone = vec![0];
                }
                format!(
                    "{} stopped answering (the store it serves at {} is unreachable); {op} on rank {}: {error}",
                    self.owner.who, self.owner.addr, self.rank
                )
            }
        }
    }
}

impl AbortTarget for Shared {
    fn abort(&self, reason: &str) {
        if self.set_reason(reason) && self.world > 1 {
            self.post(reason);
        }
    }

    fn abort_reason(&self) -> Option<String> {
        if !self.aborted.load(Ordering::SeqCst) {
            return None;
        }
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Beats and listens for posted aborts until told to stop or the store is gone.
fn watch(shared: Arc<Shared>, conn: Store) {
    let key = format!("hb/{}", shared.rank);
    while !shared.stop.load(Ordering::SeqCst) {
        if conn.add(&key, 1).is_err() {
            return;
        }
        if shared.abort_reason().is_none() && conn.check("abort").unwrap_or(false) {
            if let Ok(r) = conn.get("abort") {
                shared.set_reason(&String::from_utf8_lossy(&r));
            }
        }
        std::thread::sleep(HEARTBEAT);
    }
}

/// What the worker keeps to read after the job: the ranks found gone.
#[derive(Clone)]
pub struct GlooWatch(Arc<Shared>);

impl GlooWatch {
    /// Tells the other ranks why this rank ended (a failure the collective did not see: an
    /// error in the trainer that ended its loop). Nothing happens if the group already has a
    /// reason.
    pub fn post_failure(&self, reason: &str) {
        self.0.abort(reason);
    }

    pub fn gone(&self) -> Vec<usize> {
        self.0
            .diagnosis
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .gone
            .clone()
    }
}

struct Pg(*mut CptGloo);
// SAFETY: a ProcessGroupGloo may be used from any thread; every use goes through `&mut self`.
unsafe impl Send for Pg {}

/// One rank of a Gloo process group spanning processes.
pub struct GlooCollective {
    rank: usize,
    world: usize,
    pg: Pg,
    shared: Arc<Shared>,
    timeout: Duration,
    /// False once an operation failed: the group is then leaked on drop.
    healthy: bool,
}

fn error_text(err: *mut c_char) -> String {
    // Reuses the store's conversion (message without backtrace).
    match store::check(err) {
        Ok(()) => String::new(),
        Err(e) => strip_gloo_location(&e.message),
    }
}

/// "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:547] Connection closed by peer …"
/// → "Connection closed by peer …".
fn strip_gloo_location(msg: &str) -> String {
    let t = msg.trim();
    if t.starts_with('[') {
        if let Some(i) = t.find("] ") {
            if t[..i].contains(".cc:") || t[..i].contains(".h:") {
                return t[i + 2..].to_string();
            }
        }
    }
    t.to_string()
}

impl GlooCollective {
    /// Whether this build can run Gloo; the error is [`store::NO_GLOO`].
    pub fn available() -> std::result::Result<(), String> {
        if store::GLOO_BUILT && store::shim_has_gloo() {
            Ok(())
        } else {
            Err(store::NO_GLOO.into())
        }
    }

    /// Rank `rank` of `world`, meeting the others through `store` (every rank calls this with
    /// the same store). The transport binds `address` (or the interface `GLOO_SOCKET_IFNAME`
    /// names). Blocks until every rank has connected, up to `timeout`, which also limits every
    /// later operation. Returns the collective and a handle to what it learns about failures.
    pub fn connect(
        store: &Store,
        rank: usize,
        world: usize,
        address: &str,
        timeout: Duration,
        owner: StoreOwner,
    ) -> Result<(GlooCollective, GlooWatch)> {
        GlooCollective::available().map_err(CollectiveError::Gloo)?;
        if rank >= world {
            return Err(CollectiveError::Invalid(format!(
                "rank {rank} out of range for world size {world}"
            )));
        }
        let pg_store = store
            .prefixed("gloo")
            .map_err(|e| CollectiveError::Gloo(format!("the store: {e}")))?;
        let addr = CString::new(address)
            .map_err(|_| CollectiveError::Invalid(format!("address {address:?}")))?;
        let ifname = std::env::var("GLOO_SOCKET_IFNAME").unwrap_or_default();
        let ifname = CString::new(ifname)
            .map_err(|_| CollectiveError::Invalid("GLOO_SOCKET_IFNAME has a NUL byte".into()))?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: the store outlives the call (the group keeps its own reference); writes one
        // process group.
        let err = unsafe {
            cptlab_c10d_gloo_new(
                pg_store.raw(),
                rank as c_int,
                world as c_int,
                timeout.as_millis().max(1) as i64,
                addr.as_ptr(),
                ifname.as_ptr(),
                &mut raw,
            )
        };
        if !err.is_null() {
            return Err(CollectiveError::Gloo(format!(
                "rank {rank} could not connect to its {} peers within {} (transport on {address}): {}",
                world - 1,
                seconds(timeout),
                error_text(err)
            )));
        }
        let connect = || {
            let mut c = store
                .connect_again()
                .map_err(|e| CollectiveError::Gloo(format!("a second store connection: {e}")))?;
            // A store whose host vanished must not hold up a failing rank's diagnosis.
            c.set_timeout(STORE_OP_TIMEOUT);
            Ok::<_, CollectiveError>(c)
        };
        let conn = connect()?;
        let watch_conn = connect()?;
        let shared = Arc::new(Shared {
            rank,
            world,
            aborted: AtomicBool::new(false),
            reason: Mutex::new(None),
            store: Mutex::new(conn),
            owner,
            stop: AtomicBool::new(false),
            diagnosis: Mutex::new(Diagnosis::default()),
        });
        if world > 1 {
            let s = shared.clone();
            std::thread::Builder::new()
                .name(format!("cptlab-gloo-watch-{rank}"))
                .spawn(move || watch(s, watch_conn))
                .map_err(|e| CollectiveError::Gloo(format!("starting the watch thread: {e}")))?;
        }
        Ok((
            GlooCollective {
                rank,
                world,
                pg: Pg(raw),
                shared: shared.clone(),
                timeout,
                healthy: true,
            },
            GlooWatch(shared),
        ))
    }

    fn check_cpu(&self, t: &Tensor, what: &str) -> Result<()> {
        check_tensor(t, what)?;
        if t.device() != Device::Cpu {
            return Err(CollectiveError::Invalid(format!(
                "{what} is on {:?}; Gloo ranks use CPU tensors",
                t.device()
            )));
        }
        match t.kind() {
            Kind::Float
            | Kind::Double
            | Kind::Half
            | Kind::BFloat16
            | Kind::Int
            | Kind::Int64
            | Kind::Int8
            | Kind::Uint8 => Ok(()),
            other => Err(CollectiveError::Invalid(format!(
                "Gloo cannot reduce {} tensors",
                kind_name(other)
            ))),
        }
    }

    /// Queues an operation (`start` calls the shim) and waits for it.
    fn run(
        &mut self,
        op: &'static str,
        start: impl FnOnce(*mut CptGloo, *mut *mut CptWork) -> *mut c_char,
    ) -> Result<()> {
        if let Some(r) = self.shared.abort_reason() {
            return Err(CollectiveError::Aborted(r));
        }
        if !self.healthy {
            return Err(CollectiveError::Aborted(
                "an earlier operation of this rank failed".into(),
            ));
        }
        let mut work = std::ptr::null_mut();
        let err = start(self.pg.0, &mut work);
        if !err.is_null() {
            return Err(CollectiveError::Invalid(format!(
                "{op}: {}",
                error_text(err)
            )));
        }
        let deadline = Instant::now() + self.timeout + Duration::from_secs(10);
        loop {
            let mut err = std::ptr::null_mut();
            // SAFETY: a live work; err receives a malloc'ed message on failure.
            let state = unsafe { cptlab_c10d_work_wait(work, SLICE_MS, &mut err) };
            match state {
                1 => {
                    // SAFETY: finished: nothing else refers to it.
                    unsafe { cptlab_c10d_work_free(work) };
                    return Ok(());
                }
                -1 => {
                    unsafe { cptlab_c10d_work_free(work) };
                    return Err(self.failed(op, &error_text(err)));
                }
                _ => {}
            }
            if let Some(r) = self.shared.abort_reason() {
                // The work still references its tensors (kept alive by libtorch) and may finish
                // or fail later: leak it with the group.
                self.healthy = false;
                return Err(CollectiveError::Aborted(r));
            }
            if Instant::now() > deadline {
                self.healthy = false;
                let e = format!("did not complete within {}", seconds(self.timeout));
                return Err(self.failed(op, &e));
            }
        }
    }

    /// A failed Gloo operation: finds out which rank caused it, tells the others, and returns
    /// the error (an abort: the root cause is another rank, or named in the message).
    fn failed(&mut self, op: &str, error: &str) -> CollectiveError {
        self.healthy = false;
        let reason = self.shared.diagnose(op, error);
        self.shared.abort(&reason);
        CollectiveError::Aborted(self.shared.abort_reason().unwrap_or(reason))
    }

    fn all_reduce_sum(&mut self, t: &mut Tensor) -> Result<()> {
        let p = t.as_mut_ptr();
        // SAFETY: p is a live tensor; the shim copies the handle (libtorch keeps the storage
        // alive for the work).
        self.run("all_reduce", |g, w| unsafe {
            cptlab_c10d_gloo_allreduce(g, p, w)
        })
    }

    /// Sum → average, in place (floating-point tensors; checked by the callers).
    fn average(&self, t: &mut Tensor) -> Result<()> {
        let _ = tch::no_grad(|| t.g_div_scalar_(self.world as f64));
        Ok(())
    }
}

impl Drop for GlooCollective {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if self.healthy {
            // SAFETY: no operation is pending (each call waits for its own).
            unsafe { cptlab_c10d_gloo_free(self.pg.0) };
        }
        // Else leaked: destroying it would wait for an operation blocked on a dead peer.
    }
}

impl Collective for GlooCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn backend(&self) -> &'static str {
        "gloo"
    }

    fn all_reduce(&mut self, t: &mut Tensor, op: ReduceOp) -> Result<()> {
        self.check_cpu(t, "all_reduce tensor")?;
        if op == ReduceOp::Avg && !t.is_floating_point() {
            return Err(CollectiveError::Invalid(format!(
                "an average of {} tensors",
                kind_name(t.kind())
            )));
        }
        self.all_reduce_sum(t)?;
        if op == ReduceOp::Avg {
            self.average(t)?;
        }
        Ok(())
    }

    fn reduce_scatter(&mut self, input: &Tensor, output: &mut Tensor, op: ReduceOp) -> Result<()> {
        check_scatter_gather("reduce_scatter", input, output, self.world, self.rank)?;
        self.check_cpu(input, "reduce_scatter input")?;
        if op == ReduceOp::Avg && !input.is_floating_point() {
            return Err(CollectiveError::Invalid(format!(
                "an average of {} tensors",
                kind_name(input.kind())
            )));
        }
        let n = output.numel() as i64;
        let mut buf = input.copy();
        self.all_reduce_sum(&mut buf)?;
        tch::no_grad(|| output.copy_(&buf.narrow(0, self.rank as i64 * n, n)));
        if op == ReduceOp::Avg {
            self.average(output)?;
        }
        Ok(())
    }

    fn all_gather(&mut self, input: &Tensor, output: &mut Tensor) -> Result<()> {
        check_scatter_gather("all_gather", output, input, self.world, self.rank)?;
        self.check_cpu(input, "all_gather input")?;
        let (i, o) = (input.as_ptr() as *mut C_tensor, output.as_mut_ptr());
        // SAFETY: live tensors; the shim copies the handles.
        self.run("all_gather", |g, w| unsafe {
            cptlab_c10d_gloo_allgather(g, i, o, w)
        })
    }

    fn broadcast(&mut self, t: &mut Tensor, root: usize) -> Result<()> {
        self.check_cpu(t, "broadcast tensor")?;
        if root >= self.world {
            return Err(CollectiveError::Invalid(format!(
                "broadcast root {root} is not a rank of a group of {}",
                self.world
            )));
        }
        let p = t.as_mut_ptr();
        // SAFETY: a live tensor; the shim copies the handle.
        self.run("broadcast", |g, w| unsafe {
            cptlab_c10d_gloo_broadcast(g, p, root as c_int, w)
        })
    }

    fn barrier(&mut self) -> Result<()> {
        // SAFETY: plain call on a live group.
        self.run("barrier", |g, w| unsafe { cptlab_c10d_gloo_barrier(g, w) })
    }

    fn abort_handle(&self) -> AbortHandle {
        AbortHandle::new(self.shared.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A world of `n` ranks as threads of this process, each with its own store connection
    /// (processes are tested end to end in tests/multiprocess.rs).
    fn group(n: usize, timeout: Duration) -> Vec<(GlooCollective, GlooWatch)> {
        store::quiet_c10_logs();
        let server = Store::serve(0, Duration::from_secs(20)).unwrap();
        let port = server.port();
        let owner = StoreOwner {
            who: "rank 0".into(),
            addr: format!("127.0.0.1:{port}"),
        };
        let server = Arc::new(server);
        let handles: Vec<_> = (0..n)
            .map(|r| {
                let owner = owner.clone();
                let server = server.clone();
                std::thread::spawn(move || {
                    let s = if r == 0 {
                        server.connect_again().unwrap()
                    } else {
                        Store::connect("127.0.0.1", port, Duration::from_secs(20)).unwrap()
                    };
                    GlooCollective::connect(&s, r, n, "127.0.0.1", timeout, owner).unwrap()
                })
            })
            .collect();
        let out = handles.into_iter().map(|h| h.join().unwrap()).collect();
        // Keep the server alive for the test's duration.
        std::mem::forget(server);
        out
    }

    #[test]
    fn without_gloo_the_error_says_how_to_get_it() {
        if GlooCollective::available().is_err() {
            assert_eq!(
                GlooCollective::available().unwrap_err(),
                "this build has no Gloo backend: install libgloo-dev and rebuild"
            );
        }
    }

    #[test]
    fn gloo_ranks_give_what_the_local_collective_gives() {
        if GlooCollective::available().is_err() {
            eprintln!("skipped: {}", store::NO_GLOO);
            return;
        }
        let world = 2;
        let ranks = group(world, Duration::from_secs(20));
        let mut locals = super::super::LocalGroup::new(world);
        let threads: Vec<_> = ranks
            .into_iter()
            .zip(locals.drain(..))
            .map(|((mut g, _w), mut l)| {
                std::thread::spawn(move || {
                    let r = g.rank();
                    tch::manual_seed(7 + r as i64);
                    let x = Tensor::randn([1000], (Kind::Float, Device::Cpu));
                    let mut out = Vec::new();
                    for c in [&mut g as &mut dyn Collective, &mut l] {
                        let mut a = x.copy();
                        c.all_reduce(&mut a, ReduceOp::Avg).unwrap();
                        let mut s = Tensor::zeros([500], (Kind::Float, Device::Cpu));
                        c.reduce_scatter(&x, &mut s, ReduceOp::Avg).unwrap();
                        // In place: the output is this rank's chunk of the input.
                        let inplace = x.copy();
                        let mut chunk = inplace.narrow(0, r as i64 * 500, 500);
                        c.reduce_scatter(&inplace, &mut chunk, ReduceOp::Sum)
                            .unwrap();
                        let mut gathered = Tensor::zeros([1000], (Kind::Float, Device::Cpu));
                        gathered.narrow(0, r as i64 * 500, 500).copy_(&s);
                        let mine = gathered.narrow(0, r as i64 * 500, 500);
                        c.all_gather(&mine, &mut gathered).unwrap();
                        let mut b = Tensor::from_slice(&[r as f64, 2.0 * r as f64]);
                        c.broadcast(&mut b, 1).unwrap();
                        c.barrier().unwrap();
                        out.push((a, s, chunk.copy(), gathered, b));
                    }
                    (out, g)
                })
            })
            .collect();
        for t in threads {
            let (out, _g) = t.join().unwrap();
            let (g, l) = (&out[0], &out[1]);
            assert!(g.0.equal(&l.0), "all_reduce avg");
            assert!(g.1.equal(&l.1), "reduce_scatter avg");
            assert!(g.2.equal(&l.2), "reduce_scatter in place");
            assert!(g.3.equal(&l.3), "all_gather in place");
            assert_eq!(Vec::<f64>::try_from(&g.4).unwrap(), vec![1.0, 2.0]);
        }
    }

    #[test]
    fn bad_calls_are_refused_before_gloo() {
        if GlooCollective::available().is_err() {
            return;
        }
        let mut g = group(1, Duration::from_secs(10)).remove(0).0;
        let e = g
            .broadcast(&mut Tensor::zeros([2], (Kind::Float, Device::Cpu)), 1)
            .unwrap_err();
        assert!(matches!(e, CollectiveError::Invalid(_)), "{e}");
        let mut bools = Tensor::zeros([2], (Kind::Bool, Device::Cpu));
        let e = g.all_reduce(&mut bools, ReduceOp::Sum).unwrap_err();
        assert!(e.to_string().contains("Gloo cannot reduce"), "{e}");
        let x = Tensor::ones([3], (Kind::Float, Device::Cpu));
        let mut y = x.copy();
        g.all_reduce(&mut y, ReduceOp::Avg).unwrap();
        assert!(y.equal(&x), "a world of one is the identity");
        let h = g.abort_handle();
        h.abort("test stop");
        let e = g.barrier().unwrap_err();
        assert!(e.is_abort() && e.to_string().contains("test stop"), "{e}");
    }

    #[test]
    fn gloo_locations_are_stripped_from_messages() {
        assert_eq!(
            strip_gloo_location(
                "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:547] Connection closed by peer [127.0.0.1]:1"
            ),
            "Connection closed by peer [127.0.0.1]:1"
        );
        assert_eq!(strip_gloo_location("[x] y"), "[x] y");
    }
}
