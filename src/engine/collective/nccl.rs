//! NCCL collectives on CUDA tensors.
//!
//! **Loading.** cudarc's dynamic loader (`cudarc::nccl::sys::culib`) looks NCCL up only by the
//! names `libnccl.so`, `libnccl.so.13`, `.12`, `.11`, `.10`, `.9`, `.1` (and a few `libnccl64_*`
//! forms). torch's wheel ships `nvidia/nccl/lib/libnccl.so.2`, which matches none of them, and a
//! `dlopen(RTLD_GLOBAL)` of that file first does not help: glibc matches a later
//! `dlopen("libnccl.so")` against loaded objects by file name and SONAME (`libnccl.so.2`) only,
//! so cudarc's lookup would still fail and then panic. cudarc offers no path override. So NCCL's
//! entry points are resolved here, with `dlopen`/`dlsym`, from (in order):
//! 1. `CPTLAB_NCCL_LIBRARY`, a path, if set (and only it);
//! 2. the `libnccl.so.2` already in the process (`RTLD_NOLOAD`): torch's own, since the binary
//!    links `libtorch_cuda` (which needs it, found through torch's rpath to `nvidia/nccl/lib`);
//! 3. `libnccl.so.2`, then `libnccl.so`, through the normal library search path.
//!
//! cudarc provides the rest: NCCL's types and constants (`cudarc::nccl::sys`) and the CUDA driver
//! API (`cudarc::driver`: primary contexts, streams, events), checked with
//! `cudarc::driver::sys::is_culib_present()` before any use (its loader panics without libcuda).
//!
//! **Streams.** Tensors go to NCCL by `data_ptr()`: contiguous, on this rank's device, and never
//! owned by cudarc. Operations are enqueued on the device's legacy default stream, which is
//! torch's default stream (tch never switches streams): stream order alone puts them after the
//! kernels that produced their inputs and before those that read their outputs, and torch's
//! caching allocator reuses freed memory in that same order. So a call returns as soon as its
//! operation is queued; the host waits only where it reads a value (a `.to_device(Cpu)` on the
//! same stream). No `cuCtxSynchronize`, no polling after each call.
//!
//! **Faults.** Each queued operation records an event; a watchdog thread per rank follows them.
//! An operation older than the timeout, an asynchronous NCCL error, or an abort of the group
//! (any thread: a failed rank, the job) aborts the communicator (`ncclCommAbort`), which ends its
//! kernels, so a host blocked in a copy behind them returns; every later call returns
//! [`CollectiveError::Aborted`], and [`super::all_reduce_scalars`] checks the group after its read.
//!
//! **Initialisation.** In one process: one communicator per GPU (`ncclCommInitAll`). Across
//! processes: `ncclCommInitRankConfig` with `blocking = 0`, polled with `ncclCommGetAsyncError`
//! until ready, aborted at a deadline — a rank that died between the rendezvous and NCCL's init
//! makes the others fail with a timeout instead of hanging. Such communicators are non-blocking
//! throughout: a call that returns `ncclInProgress` is polled to completion before the next.
//!
//! **Exit.** Dropping a healthy rank ends with a barrier, then `ncclCommFinalize` (flushes the
//! rank's operations, waits for its peers) and `ncclCommDestroy`; abort only after an error, so a
//! normal exit never races a peer's last collective.
use std::collections::VecDeque;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cudarc::driver::{CudaContext, CudaEvent, CudaStream};
use cudarc::nccl::sys::{ncclDataType_t, ncclRedOp_t, ncclResult_t, ncclUniqueId};
use tch::{Device, Kind, Tensor};

use super::{
    check_scatter_gather, check_tensor, kind_name, AbortHandle, AbortTarget, Collective,
    CollectiveError, ReduceOp, Result, DEFAULT_TIMEOUT,
};

/// Environment variable naming the NCCL library file to use.
pub const NCCL_LIBRARY_ENV: &str = "CPTLAB_NCCL_LIBRARY";

/// Longest a rank waits for its peers when leaving the group normally.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(60);

/// Bytes of an NCCL unique id (what rank 0 hands to the others).
pub const UNIQUE_ID_BYTES: usize = 128;

type RawComm = *mut c_void;
type RawStream = *mut c_void;

type FnGetVersion = unsafe extern "C" fn(*mut c_int) -> c_int;
type FnGetUniqueId = unsafe extern "C" fn(*mut ncclUniqueId) -> c_int;
type FnCommInitRankConfig =
    unsafe extern "C" fn(*mut RawComm, c_int, ncclUniqueId, c_int, *mut NcclConfig) -> c_int;
type FnCommInitAll = unsafe extern "C" fn(*mut RawComm, c_int, *const c_int) -> c_int;
type FnComm = unsafe extern "C" fn(RawComm) -> c_int;
type FnCommGetAsyncError = unsafe extern "C" fn(RawComm, *mut c_int) -> c_int;
type FnGetErrorString = unsafe extern "C" fn(c_int) -> *const c_char;
type FnReduce = unsafe extern "C" fn(
    *const c_void,
    *mut c_void,
    usize,
    c_int,
    c_int,
    RawComm,
    RawStream,
) -> c_int;
type FnAllGather =
    unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, RawComm, RawStream) -> c_int;
type FnBroadcast = unsafe extern "C" fn(
    *const c_void,
    *mut c_void,
    usize,
    c_int,
    c_int,
    RawComm,
    RawStream,
) -> c_int;

/// `ncclConfig_t` as NCCL 2.14 laid it out (`NCCL_CONFIG_INITIALIZER`): NCCL reads `size`
/// bytes of it and takes its defaults for the fields later versions added.
#[repr(C)]
struct NcclConfig {
    size: usize,
    magic: std::ffi::c_uint,
    version: std::ffi::c_uint,
    blocking: c_int,
    cga_cluster_size: c_int,
    min_ctas: c_int,
    max_ctas: c_int,
    net_name: *const c_char,
}

/// NCCL_CONFIG_UNDEF_INT: "use NCCL's default".
const CONFIG_UNDEF: c_int = i32::MIN;

impl NcclConfig {
    fn non_blocking() -> NcclConfig {
        NcclConfig {
            size: std::mem::size_of::<NcclConfig>(),
            magic: 0xcafe_beef,
            version: 21400,
            blocking: 0,
            cga_cluster_size: CONFIG_UNDEF,
            min_ctas: CONFIG_UNDEF,
            max_ctas: CONFIG_UNDEF,
            net_name: std::ptr::null(),
        }
    }
}

/// NCCL's entry points, resolved once per process.
struct NcclLib {
    path: String,
    version: i32,
    get_unique_id: FnGetUniqueId,
    comm_init_rank_config: FnCommInitRankConfig,
    comm_init_all: FnCommInitAll,
    comm_abort: FnComm,
    comm_finalize: FnComm,
    comm_destroy: FnComm,
    comm_get_async_error: FnCommGetAsyncError,
    get_error_string: FnGetErrorString,
    all_reduce: FnReduce,
    reduce_scatter: FnReduce,
    all_gather: FnAllGather,
    broadcast: FnBroadcast,
}

static LIB: OnceLock<std::result::Result<NcclLib, String>> = OnceLock::new();

fn dl_error() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated thread-local string.
    unsafe {
        let e = libc::dlerror();
        if e.is_null() {
            "unknown error".into()
        } else {
            CStr::from_ptr(e).to_string_lossy().into_owned()
        }
    }
}

/// # Safety
/// `F` must be the function pointer type of the C symbol `name`.
unsafe fn symbol<F: Copy>(handle: *mut c_void, name: &str) -> std::result::Result<F, String> {
    let c = CString::new(name).expect("symbol name");
    let p = libc::dlsym(handle, c.as_ptr());
    if p.is_null() {
        return Err(format!("symbol {name} missing ({})", dl_error()));
    }
    assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
    Ok(std::mem::transmute_copy::<*mut c_void, F>(&p))
}

fn open_library() -> std::result::Result<(*mut c_void, String), String> {
    let mut tried = Vec::new();
    let candidates: Vec<(String, c_int)> = match std::env::var(NCCL_LIBRARY_ENV) {
        Ok(p) if !p.is_empty() => vec![(p, libc::RTLD_NOW)],
        _ => vec![
            ("libnccl.so.2".into(), libc::RTLD_NOW | libc::RTLD_NOLOAD),
            ("libnccl.so.2".into(), libc::RTLD_NOW),
            ("libnccl.so".into(), libc::RTLD_NOW),
        ],
    };
    for (name, flags) in candidates {
        let c = CString::new(name.clone()).map_err(|_| format!("bad library name {name:?}"))?;
        // SAFETY: plain dlopen of a library by name; the handle is never closed.
        let h = unsafe { libc::dlopen(c.as_ptr(), flags) };
        if !h.is_null() {
            return Ok((h, name));
        }
        let how = if flags & libc::RTLD_NOLOAD != 0 {
            " (already loaded)"
        } else {
            ""
        };
        tried.push(format!("{name}{how}: {}", dl_error()));
    }
    Err(format!(
        "libnccl not found (tried {}); torch's CUDA wheel ships it as nvidia/nccl/lib/libnccl.so.2, or set {NCCL_LIBRARY_ENV} to its path",
        tried.join("; ")
    ))
}

fn load() -> std::result::Result<NcclLib, String> {
    let (h, name) = open_library()?;
    // SAFETY: the types match NCCL's C declarations (nccl.h, 2.x); enums are passed as int.
    unsafe {
        let get_version: FnGetVersion = symbol(h, "ncclGetVersion")?;
        let mut version = 0;
        get_version(&mut version);
        // The file actually loaded, for messages.
        let mut info: libc::Dl_info = std::mem::zeroed();
        let path = if libc::dladdr(get_version as *const c_void, &mut info) != 0
            && !info.dli_fname.is_null()
        {
            CStr::from_ptr(info.dli_fname)
                .to_string_lossy()
                .into_owned()
        } else {
            name
        };
        if version < 21400 {
            return Err(format!(
                "{path} is NCCL {}, older than 2.14 (needed for non-blocking initialisation)",
                version_string(version)
            ));
        }
        Ok(NcclLib {
            path,
            version,
            get_unique_id: symbol(h, "ncclGetUniqueId")?,
            comm_init_rank_config: symbol(h, "ncclCommInitRankConfig")?,
            comm_init_all: symbol(h, "ncclCommInitAll")?,
            comm_abort: symbol(h, "ncclCommAbort")?,
            comm_finalize: symbol(h, "ncclCommFinalize")?,
            comm_destroy: symbol(h, "ncclCommDestroy")?,
            comm_get_async_error: symbol(h, "ncclCommGetAsyncError")?,
            get_error_string: symbol(h, "ncclGetErrorString")?,
            all_reduce: symbol(h, "ncclAllReduce")?,
            reduce_scatter: symbol(h, "ncclReduceScatter")?,
            all_gather: symbol(h, "ncclAllGather")?,
            broadcast: symbol(h, "ncclBroadcast")?,
        })
    }
}

fn version_string(v: i32) -> String {
    // NCCL ≥ 2.9 encodes major·10000 + minor·100 + patch.
    format!("{}.{}.{}", v / 10000, (v % 10000) / 100, v % 100)
}

fn lib() -> std::result::Result<&'static NcclLib, String> {
    LIB.get_or_init(load).as_ref().map_err(|e| e.clone())
}

impl NcclLib {
    fn check(&self, what: &str, code: c_int) -> Result<()> {
        if code == ncclResult_t::ncclSuccess as c_int {
            return Ok(());
        }
        Err(CollectiveError::Nccl(format!(
            "{what}: {}",
            self.describe(code)
        )))
    }

    fn describe(&self, code: c_int) -> String {
        // SAFETY: ncclGetErrorString returns a static string for any code.
        let s = unsafe { (self.get_error_string)(code) };
        let text = if s.is_null() {
            "unknown".into()
        } else {
            unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
        };
        format!("{text} (ncclResult {code})")
    }
}

/// The CUDA driver is loadable and initialises, with at least one device.
fn driver_status() -> std::result::Result<usize, String> {
    // SAFETY: only tries to dlopen the driver library; cudarc's loader panics without it.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(
            "libcuda (the NVIDIA driver library) was not found: no NVIDIA driver on this machine"
                .into(),
        );
    }
    cudarc::driver::result::init()
        .map_err(|e| format!("the CUDA driver did not initialise: {e}"))?;
    let n = cudarc::driver::result::device::get_count()
        .map_err(|e| format!("cannot count CUDA devices: {e}"))?;
    if n <= 0 {
        return Err("the CUDA driver sees no device".into());
    }
    Ok(n as usize)
}

fn nccl_kind(k: Kind) -> Result<c_int> {
    Ok(match k {
        Kind::Float => ncclDataType_t::ncclFloat32,
        Kind::Double => ncclDataType_t::ncclFloat64,
        Kind::Half => ncclDataType_t::ncclFloat16,
        Kind::BFloat16 => ncclDataType_t::ncclBfloat16,
        Kind::Int => ncclDataType_t::ncclInt32,
        Kind::Int64 => ncclDataType_t::ncclInt64,
        Kind::Int8 => ncclDataType_t::ncclInt8,
        Kind::Uint8 => ncclDataType_t::ncclUint8,
        other => {
            return Err(CollectiveError::Invalid(format!(
                "NCCL cannot reduce {} tensors",
                kind_name(other)
            )))
        }
    } as c_int)
}

fn nccl_op(op: ReduceOp) -> c_int {
    match op {
        ReduceOp::Sum => ncclRedOp_t::ncclSum as c_int,
        ReduceOp::Avg => ncclRedOp_t::ncclAvg as c_int,
    }
}

/// Abort state shared by the ranks of one process.
#[derive(Default)]
struct GroupAbort {
    aborted: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl AbortTarget for GroupAbort {
    fn abort(&self, reason: &str) {
        let mut r = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_none() {
            *r = Some(reason.to_string());
        }
        self.aborted.store(true, Ordering::SeqCst);
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

struct CommHandle(RawComm);
// SAFETY: an NCCL communicator may be used from any thread; calls on it are serialized by the
// mutex that holds it.
unsafe impl Send for CommHandle {}

/// An operation queued on the stream and not yet seen complete.
struct Pending {
    event: CudaEvent,
    op: &'static str,
    at: Instant,
}

/// What a rank shares with its watchdog thread.
struct RankState {
    rank: usize,
    ordinal: usize,
    lib: &'static NcclLib,
    ctx: Arc<CudaContext>,
    /// Null once aborted or destroyed.
    comm: Mutex<CommHandle>,
    abort: Arc<GroupAbort>,
    pending: Mutex<VecDeque<Pending>>,
    /// Events of completed operations, for reuse.
    spare: Mutex<Vec<CudaEvent>>,
    timeout: Mutex<Duration>,
    stop: AtomicBool,
}

impl RankState {
    fn timeout(&self) -> Duration {
        *self.timeout.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Aborts this rank's communicator (its kernels end); idempotent.
    fn abort_comm(&self) {
        let mut comm = self.comm.lock().unwrap_or_else(|e| e.into_inner());
        if !comm.0.is_null() {
            let _ = self.ctx.bind_to_thread();
            // SAFETY: a live communicator; no other call on it runs (the mutex is held).
            unsafe { (self.lib.comm_abort)(comm.0) };
            comm.0 = std::ptr::null_mut();
        }
    }

    /// Fails the whole group (in this process) and this communicator.
    fn fail(&self, reason: String) {
        self.abort.abort(&reason);
        self.abort_comm();
    }
}

/// Follows a rank's queued operations: completed events go back to the spare list; an operation
/// older than the timeout, an asynchronous NCCL error or an abort of the group aborts the
/// communicator.
fn watchdog(state: Arc<RankState>) {
    let _ = state.ctx.bind_to_thread();
    let mut last_async = Instant::now();
    while !state.stop.load(Ordering::SeqCst) {
        if state.abort.abort_reason().is_some() {
            state.abort_comm();
            return;
        }
        let mut failure = None;
        {
            let mut q = state.pending.lock().unwrap_or_else(|e| e.into_inner());
            while let Some(front) = q.front() {
                match front.event.try_is_complete() {
                    Ok(true) => {
                        let done = q.pop_front().expect("front exists");
                        state
                            .spare
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(done.event);
                    }
                    Ok(false) => {
                        let timeout = state.timeout();
                        if front.at.elapsed() > timeout {
                            failure = Some(
                                CollectiveError::Timeout {
                                    op: front.op,
                                    after: timeout,
                                    detail: format!(
                                        "rank {} on cuda:{}: a peer stopped answering",
                                        state.rank, state.ordinal
                                    ),
                                }
                                .to_string(),
                            );
                        }
                        break;
                    }
                    Err(e) => {
                        failure = Some(format!(
                            "rank {}: CUDA error while {} ran: {e}",
                            state.rank, front.op
                        ));
                        break;
                    }
                }
            }
        }
        if failure.is_none() && last_async.elapsed() > Duration::from_millis(50) {
            last_async = Instant::now();
            let comm = state.comm.lock().unwrap_or_else(|e| e.into_inner());
            if !comm.0.is_null() {
                let mut code: c_int = 0;
                // SAFETY: a live communicator (the mutex is held).
                unsafe { (state.lib.comm_get_async_error)(comm.0, &mut code) };
                if code != ncclResult_t::ncclSuccess as c_int
                    && code != ncclResult_t::ncclInProgress as c_int
                {
                    failure = Some(format!(
                        "rank {}: NCCL asynchronous error: {}",
                        state.rank,
                        state.lib.describe(code)
                    ));
                }
            }
        }
        if let Some(reason) = failure {
            state.fail(reason);
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// One rank of an NCCL communicator, bound to one CUDA device.
pub struct NcclCollective {
    rank: usize,
    world: usize,
    ordinal: usize,
    lib: &'static NcclLib,
    state: Arc<RankState>,
    stream: Arc<CudaStream>,
    /// Created with `ncclCommInitRankConfig(blocking = 0)`: calls may return `ncclInProgress`.
    non_blocking: bool,
    watchdog: Option<std::thread::JoinHandle<()>>,
    /// Operations queued so far.
    issued: u64,
    /// One element on the device, for `barrier`.
    scratch: Tensor,
}

impl NcclCollective {
    /// Whether NCCL can be used here: the CUDA driver loads and sees a device, and an NCCL
    /// library is found. The error says what is missing, e.g. "NCCL not available: libcuda (the
    /// NVIDIA driver library) was not found …". Never panics.
    pub fn available() -> std::result::Result<(), String> {
        let driver = driver_status();
        let nccl = lib();
        match (driver, nccl) {
            (Ok(_), Ok(_)) => Ok(()),
            (Err(d), Ok(l)) => Err(format!(
                "NCCL not available: {d} (libnccl {} found at {})",
                version_string(l.version),
                l.path
            )),
            (Ok(_), Err(n)) => Err(format!("NCCL not available: {n}")),
            (Err(d), Err(n)) => Err(format!("NCCL not available: {d}; {n}")),
        }
    }

    /// The NCCL library in use: (path, version "2.28.9"), without touching CUDA.
    pub fn library() -> std::result::Result<(String, String), String> {
        lib().map(|l| (l.path.clone(), version_string(l.version)))
    }

    /// A new unique id for [`NcclCollective::from_id`] (rank 0 creates it and hands the bytes to
    /// the others through the job's store).
    pub fn unique_id() -> Result<Vec<u8>> {
        let lib = lib().map_err(CollectiveError::Unavailable)?;
        let mut id = ncclUniqueId {
            internal: [0; UNIQUE_ID_BYTES],
        };
        // SAFETY: writes the 128-byte id.
        lib.check("ncclGetUniqueId", unsafe { (lib.get_unique_id)(&mut id) })?;
        Ok(id.internal.iter().map(|&c| c as u8).collect())
    }

    fn ordinal_of(device: Device) -> Result<usize> {
        match device {
            Device::Cuda(i) => Ok(i),
            other => Err(CollectiveError::Invalid(format!(
                "NCCL needs CUDA devices, not {other:?}"
            ))),
        }
    }

    fn check_available() -> Result<&'static NcclLib> {
        NcclCollective::available().map_err(|e| {
            CollectiveError::Unavailable(e.trim_start_matches("NCCL not available: ").to_string())
        })?;
        lib().map_err(CollectiveError::Unavailable)
    }

    fn wrap(
        lib: &'static NcclLib,
        comm: RawComm,
        rank: usize,
        world: usize,
        ordinal: usize,
        abort: Arc<GroupAbort>,
        non_blocking: bool,
    ) -> Result<NcclCollective> {
        let driver = |what: &str, e: cudarc::driver::DriverError| {
            CollectiveError::Nccl(format!("{what} on cuda:{ordinal}: {e}"))
        };
        let raw = comm;
        let fail = |e| {
            // SAFETY: the communicator was created above and is not used again.
            unsafe { (lib.comm_abort)(raw) };
            e
        };
        let ctx = CudaContext::new(ordinal).map_err(|e| fail(driver("CUDA context", e)))?;
        let stream = ctx.default_stream();
        let scratch = Tensor::zeros([1], (Kind::Float, Device::Cuda(ordinal)));
        let state = Arc::new(RankState {
            rank,
            ordinal,
            lib,
            ctx,
            comm: Mutex::new(CommHandle(comm)),
            abort,
            pending: Mutex::new(VecDeque::new()),
            spare: Mutex::new(Vec::new()),
            timeout: Mutex::new(DEFAULT_TIMEOUT),
            stop: AtomicBool::new(false),
        });
        let s = state.clone();
        let watchdog = std::thread::Builder::new()
            .name(format!("cptlab-nccl-watch-{rank}"))
            .spawn(move || watchdog(s))
            .map_err(|e| {
                state.abort_comm();
                CollectiveError::Nccl(format!("starting the NCCL watchdog: {e}"))
            })?;
        Ok(NcclCollective {
            rank,
            world,
            ordinal,
            lib,
            state,
            stream,
            non_blocking,
            watchdog: Some(watchdog),
            issued: 0,
            scratch,
        })
    }

    /// One process, several GPUs: one communicator per device (rank i on `devices[i]`), created
    /// together (`ncclCommInitAll`). Move each to its worker thread.
    pub fn group(devices: &[Device]) -> Result<Vec<NcclCollective>> {
        let lib = NcclCollective::check_available()?;
        let mut ordinals = Vec::new();
        for &d in devices {
            let o = NcclCollective::ordinal_of(d)?;
            if ordinals.contains(&o) {
                return Err(CollectiveError::Invalid(format!(
                    "cuda:{o} is listed twice: NCCL needs one rank per GPU"
                )));
            }
            ordinals.push(o);
        }
        if ordinals.is_empty() {
            return Err(CollectiveError::Invalid("no devices".into()));
        }
        // NCCL's initialisation and the contexts created below bind devices to this thread in
        // turn; torch derives its current device from the bound context, so the caller's is
        // restored afterwards.
        let previous = cudarc::driver::result::ctx::get_current().ok().flatten();
        let restore = || {
            let c = previous.unwrap_or(std::ptr::null_mut());
            // SAFETY: the context current on this thread a moment ago (or none).
            let _ = unsafe { cudarc::driver::result::ctx::set_current(c) };
        };
        let devlist: Vec<c_int> = ordinals.iter().map(|&o| o as c_int).collect();
        let mut comms: Vec<RawComm> = vec![std::ptr::null_mut(); devlist.len()];
        // SAFETY: comms has room for one communicator per device.
        let init = lib.check("ncclCommInitAll", unsafe {
            (lib.comm_init_all)(comms.as_mut_ptr(), devlist.len() as c_int, devlist.as_ptr())
        });
        if let Err(e) = init {
            restore();
            return Err(e);
        }
        let abort = Arc::new(GroupAbort::default());
        let world = ordinals.len();
        let mut out = Vec::with_capacity(world);
        let mut pending = comms.into_iter().enumerate();
        while let Some((rank, comm)) = pending.next() {
            match NcclCollective::wrap(lib, comm, rank, world, ordinals[rank], abort.clone(), false)
            {
                Ok(c) => out.push(c),
                Err(e) => {
                    for (_, rest) in pending.by_ref() {
                        // SAFETY: created above, never used.
                        unsafe { (lib.comm_abort)(rest) };
                    }
                    abort.abort(&format!("rank {rank}: {e}"));
                    restore();
                    return Err(e);
                }
            }
        }
        restore();
        Ok(out)
    }

    /// One rank of a communicator spanning processes (one process per GPU): every rank calls
    /// this with the bytes of rank 0's [`NcclCollective::unique_id`]. Initialisation is
    /// non-blocking and polled; if every rank has not joined within `init_timeout` (a rank died
    /// after the rendezvous, or cannot reach the others) the communicator is aborted and the
    /// error says so.
    pub fn from_id(
        id: &[u8],
        rank: usize,
        world: usize,
        device: Device,
        init_timeout: Duration,
    ) -> Result<NcclCollective> {
        let lib = NcclCollective::check_available()?;
        let ordinal = NcclCollective::ordinal_of(device)?;
        if id.len() != UNIQUE_ID_BYTES {
            return Err(CollectiveError::Invalid(format!(
                "an NCCL unique id has {UNIQUE_ID_BYTES} bytes, got {}",
                id.len()
            )));
        }
        if rank >= world {
            return Err(CollectiveError::Invalid(format!(
                "rank {rank} out of range for world size {world}"
            )));
        }
        let mut uid = ncclUniqueId {
            internal: [0; UNIQUE_ID_BYTES],
        };
        for (d, s) in uid.internal.iter_mut().zip(id) {
            *d = *s as c_char;
        }
        // NCCL creates the communicator on the calling thread's current device.
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| CollectiveError::Nccl(format!("CUDA context on cuda:{ordinal}: {e}")))?;
        ctx.bind_to_thread()
            .map_err(|e| CollectiveError::Nccl(format!("binding cuda:{ordinal}: {e}")))?;
        let mut comm: RawComm = std::ptr::null_mut();
        let mut config = NcclConfig::non_blocking();
        // SAFETY: writes one communicator; the config outlives the call.
        let code = unsafe {
            (lib.comm_init_rank_config)(&mut comm, world as c_int, uid, rank as c_int, &mut config)
        };
        if code != ncclResult_t::ncclInProgress as c_int {
            lib.check("ncclCommInitRankConfig", code)?;
        }
        if comm.is_null() {
            return Err(CollectiveError::Nccl(
                "ncclCommInitRankConfig returned no communicator".into(),
            ));
        }
        let deadline = Instant::now() + init_timeout;
        loop {
            let mut state: c_int = 0;
            // SAFETY: the communicator being initialised; polling it is how non-blocking init
            // is completed.
            unsafe { (lib.comm_get_async_error)(comm, &mut state) };
            if state == ncclResult_t::ncclSuccess as c_int {
                break;
            }
            if state != ncclResult_t::ncclInProgress as c_int {
                // SAFETY: not used again.
                unsafe { (lib.comm_abort)(comm) };
                return Err(CollectiveError::Nccl(format!(
                    "rank {rank}: NCCL initialisation failed: {}",
                    lib.describe(state)
                )));
            }
            if Instant::now() > deadline {
                // SAFETY: not used again.
                unsafe { (lib.comm_abort)(comm) };
                return Err(CollectiveError::Timeout {
                    op: "NCCL initialisation",
                    after: init_timeout,
                    detail: format!(
                        "rank {rank} of {world} on cuda:{ordinal}: not every rank joined (one died after the rendezvous, or cannot reach the others: check NCCL_SOCKET_IFNAME and the firewall)"
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        NcclCollective::wrap(
            lib,
            comm,
            rank,
            world,
            ordinal,
            Arc::new(GroupAbort::default()),
            true,
        )
    }

    /// Limit on how long one operation may take (default [`DEFAULT_TIMEOUT`]), enforced by the
    /// watchdog.
    pub fn set_timeout(&mut self, timeout: Duration) {
        *self.state.timeout.lock().unwrap_or_else(|e| e.into_inner()) = timeout;
    }

    pub fn device(&self) -> Device {
        Device::Cuda(self.ordinal)
    }

    fn check_device(&self, t: &Tensor, what: &str) -> Result<()> {
        check_tensor(t, what)?;
        if t.device() != Device::Cuda(self.ordinal) {
            return Err(CollectiveError::Invalid(format!(
                "{what} is on {:?}; this NCCL rank runs on cuda:{}",
                t.device(),
                self.ordinal
            )));
        }
        Ok(())
    }

    fn aborted(&self) -> Option<CollectiveError> {
        self.state.abort.abort_reason().map(|r| {
            self.state.abort_comm();
            CollectiveError::Aborted(r)
        })
    }

    /// Queues one operation on the stream: `call` gets the communicator and the stream. Returns
    /// once it is queued (and, on a non-blocking communicator, accepted), with its event handed
    /// to the watchdog.
    fn enqueue(
        &mut self,
        op: &'static str,
        call: impl FnOnce(RawComm, RawStream) -> c_int,
    ) -> Result<()> {
        if let Some(e) = self.aborted() {
            return Err(e);
        }
        if let Err(e) = self.state.ctx.bind_to_thread() {
            let e = CollectiveError::Nccl(format!("binding cuda:{}: {e}", self.ordinal));
            self.state.fail(format!("rank {}: {e}", self.rank));
            return Err(e);
        }
        let stream = self.stream.cu_stream() as RawStream;
        let outcome = {
            let comm = self.state.comm.lock().unwrap_or_else(|e| e.into_inner());
            if comm.0.is_null() {
                return Err(CollectiveError::Aborted(
                    "this NCCL communicator was aborted".into(),
                ));
            }
            let code = call(comm.0, stream);
            if code == ncclResult_t::ncclInProgress as c_int && self.non_blocking {
                self.settle(op, comm.0)
            } else {
                self.lib.check(op, code)
            }
        };
        if let Err(e) = outcome {
            self.state.fail(format!("rank {}: {e}", self.rank));
            return Err(e);
        }
        let spare = self
            .state
            .spare
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        let event = match spare {
            Some(ev) => Ok(ev),
            None => self.state.ctx.new_event(None),
        }
        .and_then(|ev| ev.record(&self.stream).map(|()| ev));
        match event {
            Ok(event) => {
                self.state
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back(Pending {
                        event,
                        op,
                        at: Instant::now(),
                    });
                self.issued += 1;
                Ok(())
            }
            Err(e) => {
                let e = CollectiveError::Nccl(format!("{op}: recording a CUDA event: {e}"));
                self.state.fail(format!("rank {}: {e}", self.rank));
                Err(e)
            }
        }
    }

    /// A non-blocking communicator answered `ncclInProgress`: polls until it has accepted the
    /// call (the caller holds the communicator's lock, so the watchdog cannot abort it
    /// meanwhile; this loop enforces the timeout and the group's abort itself).
    fn settle(&self, op: &'static str, comm: RawComm) -> Result<()> {
        let start = Instant::now();
        let timeout = self.state.timeout();
        loop {
            let mut code: c_int = 0;
            // SAFETY: a live communicator (its lock is held by the caller).
            unsafe { (self.lib.comm_get_async_error)(comm, &mut code) };
            if code == ncclResult_t::ncclSuccess as c_int {
                return Ok(());
            }
            if code != ncclResult_t::ncclInProgress as c_int {
                return Err(CollectiveError::Nccl(format!(
                    "{op}: {}",
                    self.lib.describe(code)
                )));
            }
            if let Some(r) = self.state.abort.abort_reason() {
                return Err(CollectiveError::Aborted(r));
            }
            if start.elapsed() > timeout {
                return Err(CollectiveError::Timeout {
                    op,
                    after: timeout,
                    detail: format!("rank {}: NCCL did not accept the call", self.rank),
                });
            }
            std::thread::yield_now();
        }
    }

    /// Waits on the host until every queued operation has completed (or the group is aborted:
    /// the watchdog enforces the timeout).
    fn drain(&self) -> Result<()> {
        loop {
            if let Some(r) = self.state.abort.abort_reason() {
                return Err(CollectiveError::Aborted(r));
            }
            let last_done = {
                let q = self.state.pending.lock().unwrap_or_else(|e| e.into_inner());
                match q.back() {
                    None => true,
                    Some(p) => p.event.try_is_complete().unwrap_or(false),
                }
            };
            if last_done {
                return Ok(());
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// Normal end: flush this rank's operations and destroy the communicator (finalize, then
    /// destroy); any failure on the way aborts instead.
    fn finish(&mut self) -> Result<()> {
        self.drain()?;
        let _ = self.state.ctx.bind_to_thread();
        let mut comm = self.state.comm.lock().unwrap_or_else(|e| e.into_inner());
        if comm.0.is_null() {
            return Ok(());
        }
        // SAFETY: a live communicator (lock held); after destroy it is never used again.
        let code = unsafe { (self.lib.comm_finalize)(comm.0) };
        let finalized = if code == ncclResult_t::ncclInProgress as c_int {
            self.settle("ncclCommFinalize", comm.0)
        } else {
            self.lib.check("ncclCommFinalize", code)
        };
        finalized?;
        // SAFETY: finalized; destroy frees the local resources.
        let code = unsafe { (self.lib.comm_destroy)(comm.0) };
        comm.0 = std::ptr::null_mut();
        self.lib.check("ncclCommDestroy", code)
    }
}

impl Drop for NcclCollective {
    fn drop(&mut self) {
        let healthy = self.state.abort.abort_reason().is_none() && !std::thread::panicking();
        if healthy {
            // Every rank ends here after its last collective: meet, then finalize. A peer that
            // never comes fails the barrier through the watchdog, within a minute at most. A
            // rank that never communicated (a job that failed while building its ranks, which
            // drops them one after another on one thread) has nothing to flush: no barrier.
            let limit = self.state.timeout().min(LEAVE_TIMEOUT);
            *self.state.timeout.lock().unwrap_or_else(|e| e.into_inner()) = limit;
            let ended = if self.world > 1 && self.issued > 0 {
                self.barrier().and_then(|()| self.finish())
            } else {
                self.finish()
            };
            if let Err(e) = ended {
                self.state
                    .fail(format!("rank {}: leaving the group: {e}", self.rank));
            }
        } else {
            if self.world > 1 {
                self.state
                    .abort
                    .abort(&format!("rank {} left the group", self.rank));
            }
            self.state.abort_comm();
        }
        self.state.stop.store(true, Ordering::SeqCst);
        if let Some(w) = self.watchdog.take() {
            let _ = w.join();
        }
        // The events belong to this rank's context: drop them with it bound.
        let _ = self.state.ctx.bind_to_thread();
        self.state
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.state
            .spare
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl Collective for NcclCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn backend(&self) -> &'static str {
        "nccl"
    }

    fn all_reduce(&mut self, t: &mut Tensor, op: ReduceOp) -> Result<()> {
        self.check_device(t, "all_reduce tensor")?;
        let dtype = nccl_kind(t.kind())?;
        let (p, n, lib) = (t.data_ptr(), t.numel(), self.lib);
        // SAFETY: p holds n elements of dtype on this device; torch frees or reuses the memory
        // only in stream order, after the operation.
        self.enqueue("ncclAllReduce", |comm, stream| unsafe {
            (lib.all_reduce)(p, p, n, dtype, nccl_op(op), comm, stream)
        })
    }

    fn reduce_scatter(&mut self, input: &Tensor, output: &mut Tensor, op: ReduceOp) -> Result<()> {
        check_scatter_gather("reduce_scatter", input, output, self.world, self.rank)?;
        self.check_device(input, "reduce_scatter input")?;
        let dtype = nccl_kind(input.kind())?;
        let (i, o, n, lib) = (
            input.data_ptr(),
            output.data_ptr(),
            output.numel(),
            self.lib,
        );
        // SAFETY: sizes and aliasing checked (NCCL allows output = chunk `rank` of input).
        self.enqueue("ncclReduceScatter", |comm, stream| unsafe {
            (lib.reduce_scatter)(i, o, n, dtype, nccl_op(op), comm, stream)
        })
    }

    fn all_gather(&mut self, input: &Tensor, output: &mut Tensor) -> Result<()> {
        check_scatter_gather("all_gather", output, input, self.world, self.rank)?;
        self.check_device(input, "all_gather input")?;
        let dtype = nccl_kind(input.kind())?;
        let (i, o, n, lib) = (input.data_ptr(), output.data_ptr(), input.numel(), self.lib);
        // SAFETY: sizes and aliasing checked (NCCL allows input = chunk `rank` of output).
        self.enqueue("ncclAllGather", |comm, stream| unsafe {
            (lib.all_gather)(i, o, n, dtype, comm, stream)
        })
    }

    fn broadcast(&mut self, t: &mut Tensor, root: usize) -> Result<()> {
        self.check_device(t, "broadcast tensor")?;
        if root >= self.world {
            return Err(CollectiveError::Invalid(format!(
                "broadcast root {root} is not a rank of a group of {}",
                self.world
            )));
        }
        let dtype = nccl_kind(t.kind())?;
        let (p, n, lib) = (t.data_ptr(), t.numel(), self.lib);
        // SAFETY: p holds n elements on this device.
        self.enqueue("ncclBroadcast", |comm, stream| unsafe {
            (lib.broadcast)(p, p, n, dtype, root as c_int, comm, stream)
        })
    }

    /// The one call that waits on the host: it returns once every rank has reached it.
    fn barrier(&mut self) -> Result<()> {
        let mut s = self.scratch.shallow_clone();
        self.all_reduce(&mut s, ReduceOp::Sum)?;
        self.drain()
    }

    fn abort_handle(&self) -> AbortHandle {
        AbortHandle::new(self.state.abort.clone())
    }

    fn check_read(&self) -> Result<()> {
        match self.state.abort.abort_reason() {
            Some(r) => Err(CollectiveError::Aborted(r)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_cuda_nccl_is_a_clear_error_not_a_panic() {
        match NcclCollective::available() {
            Ok(()) => eprintln!("CUDA and NCCL are available here; GPU tests run instead"),
            Err(e) => {
                assert!(e.starts_with("NCCL not available: "), "{e}");
                let e = NcclCollective::group(&[Device::Cuda(0)])
                    .err()
                    .expect("no group without CUDA");
                assert!(matches!(e, CollectiveError::Unavailable(_)), "{e}");
                assert!(e.to_string().contains("NCCL not available"), "{e}");
                let e = NcclCollective::from_id(
                    &[0; 128],
                    0,
                    1,
                    Device::Cuda(0),
                    Duration::from_secs(5),
                )
                .err()
                .expect("no communicator without CUDA");
                assert!(matches!(e, CollectiveError::Unavailable(_)), "{e}");
            }
        }
    }

    #[test]
    fn torch_wheel_nccl_is_found_without_cuda() {
        // The binary links libtorch_cuda, which loads libnccl.so.2 from the wheel: found here
        // even on a machine without a GPU. CPU-only torch builds have no NCCL: nothing to check.
        let Ok((path, version)) = NcclCollective::library() else {
            eprintln!("no NCCL in this build of torch");
            return;
        };
        assert!(version.starts_with("2."), "{version}");
        assert!(path.contains("nccl"), "{path}");
        let id = NcclCollective::unique_id().unwrap();
        assert_eq!(id.len(), UNIQUE_ID_BYTES);
        assert!(id.iter().any(|&b| b != 0));
    }

    #[test]
    fn bad_arguments_are_rejected_before_cuda() {
        if NcclCollective::available().is_ok() {
            let e = NcclCollective::group(&[Device::Cuda(0), Device::Cuda(0)])
                .err()
                .unwrap();
            assert!(e.to_string().contains("twice"), "{e}");
            let e = NcclCollective::from_id(&[1; 5], 0, 1, Device::Cuda(0), Duration::from_secs(5))
                .err()
                .unwrap();
            assert!(e.to_string().contains("128"), "{e}");
        }
        let e = NcclCollective::group(&[Device::Cpu]).err().unwrap();
        assert!(
            matches!(
                e,
                CollectiveError::Invalid(_) | CollectiveError::Unavailable(_)
            ),
            "{e}"
        );
    }

    /// Runs where CUDA and NCCL work: world 1 on cuda:0 gives what the local collective gives
    /// (and world 2 when there are two GPUs).
    #[test]
    fn nccl_matches_the_local_collective_on_gpu() {
        if let Err(e) = NcclCollective::available() {
            eprintln!("skipped: {e}");
            return;
        }
        let dev = Device::Cuda(0);
        let mut g = NcclCollective::group(&[dev]).unwrap();
        let c = &mut g[0];
        let x = Tensor::randn([1000], (Kind::Float, dev));
        let mut y = x.copy();
        c.all_reduce(&mut y, ReduceOp::Avg).unwrap();
        assert!(y.equal(&x));
        let mut out = Tensor::zeros([1000], (Kind::Float, dev));
        c.reduce_scatter(&x, &mut out, ReduceOp::Sum).unwrap();
        assert!(out.equal(&x));
        let mut out2 = Tensor::zeros([1000], (Kind::Float, dev));
        c.all_gather(&x, &mut out2).unwrap();
        assert!(out2.equal(&x));
        c.broadcast(&mut y, 0).unwrap();
        c.barrier().unwrap();
        let mut h = x.to_kind(Kind::BFloat16);
        c.all_reduce(&mut h, ReduceOp::Sum).unwrap();
        let handle = c.abort_handle();
        handle.abort("test");
        assert!(c.barrier().unwrap_err().is_abort());

        if tch::Cuda::device_count() >= 2 {
            let group = NcclCollective::group(&[Device::Cuda(0), Device::Cuda(1)]).unwrap();
            let threads: Vec<_> = group
                .into_iter()
                .map(|mut c| {
                    std::thread::spawn(move || {
                        let d = c.device();
                        let r = c.rank();
                        let mut t = Tensor::full([4096], (r + 1) as f64, (Kind::Float, d));
                        c.all_reduce(&mut t, ReduceOp::Sum).unwrap();
                        let full = Tensor::full([4096], (r + 1) as f64, (Kind::Float, d));
                        let mut shard = Tensor::zeros([2048], (Kind::Float, d));
                        c.reduce_scatter(&full, &mut shard, ReduceOp::Avg).unwrap();
                        let mut gathered = Tensor::zeros([4096], (Kind::Float, d));
                        c.all_gather(&shard, &mut gathered).unwrap();
                        (
                            t.mean(Kind::Float).double_value(&[]),
                            gathered.mean(Kind::Float).double_value(&[]),
                        )
                    })
                })
                .collect();
            for t in threads {
                let (sum, avg) = t.join().unwrap();
                assert_eq!(sum, 3.0);
                assert_eq!(avg, 1.5);
            }
        }
    }
}
