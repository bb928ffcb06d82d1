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
//! owned by cudarc. tch 0.24 does not expose torch's current stream, so each call first
//! synchronizes the device context (`cuCtxSynchronize`: every queued torch kernel has finished),
//! enqueues the NCCL operation on the context's legacy default stream (also torch's default
//! stream), records an event and polls it until done. Polling (not a blocking wait) keeps the
//! rank abortable: an abort (any thread), an NCCL asynchronous error or the timeout aborts the
//! communicator (`ncclCommAbort`) and returns an error instead of hanging. After a call returns,
//! the result is in the tensor and torch may use or free it.
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

/// Bytes of an NCCL unique id (what rank 0 hands to the others).
pub const UNIQUE_ID_BYTES: usize = 128;

type RawComm = *mut c_void;
type RawStream = *mut c_void;

type FnGetVersion = unsafe extern "C" fn(*mut c_int) -> c_int;
type FnGetUniqueId = unsafe extern "C" fn(*mut ncclUniqueId) -> c_int;
type FnCommInitRank = unsafe extern "C" fn(*mut RawComm, c_int, ncclUniqueId, c_int) -> c_int;
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

/// NCCL's entry points, resolved once per process.
struct NcclLib {
    path: String,
    version: i32,
    get_unique_id: FnGetUniqueId,
    comm_init_rank: FnCommInitRank,
    comm_init_all: FnCommInitAll,
    comm_abort: FnComm,
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
        if version < 21000 {
            return Err(format!(
                "{path} is NCCL {}, older than 2.10 (needed for the average reduction)",
                version_string(version)
            ));
        }
        Ok(NcclLib {
            path,
            version,
            get_unique_id: symbol(h, "ncclGetUniqueId")?,
            comm_init_rank: symbol(h, "ncclCommInitRank")?,
            comm_init_all: symbol(h, "ncclCommInitAll")?,
            comm_abort: symbol(h, "ncclCommAbort")?,
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
// SAFETY: an NCCL communicator may be used from any thread, one call at a time (guaranteed by
// `&mut self` on every use).
unsafe impl Send for CommHandle {}

/// One rank of an NCCL communicator, bound to one CUDA device.
pub struct NcclCollective {
    rank: usize,
    world: usize,
    ordinal: usize,
    lib: &'static NcclLib,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    event: CudaEvent,
    /// Null once aborted.
    comm: CommHandle,
    abort: Arc<GroupAbort>,
    timeout: Duration,
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
    /// the others, e.g. through the rendezvous).
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
        let event = ctx
            .new_event(None)
            .map_err(|e| fail(driver("CUDA event", e)))?;
        let scratch = Tensor::zeros([1], (Kind::Float, Device::Cuda(ordinal)));
        Ok(NcclCollective {
            rank,
            world,
            ordinal,
            lib,
            ctx,
            stream,
            event,
            comm: CommHandle(comm),
            abort,
            timeout: DEFAULT_TIMEOUT,
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
            match NcclCollective::wrap(lib, comm, rank, world, ordinals[rank], abort.clone()) {
                Ok(c) => out.push(c),
                Err(e) => {
                    for (_, rest) in pending.by_ref() {
                        // SAFETY: created above, never used.
                        unsafe { (lib.comm_abort)(rest) };
                    }
                    restore();
                    return Err(e);
                }
            }
        }
        restore();
        Ok(out)
    }

    /// One rank of a communicator spanning processes (one process per GPU, like torchrun):
    /// every rank calls this with the bytes of rank 0's [`NcclCollective::unique_id`]. Blocks
    /// until all `world` ranks have joined (NCCL's own initialisation has no timeout; the
    /// rendezvous has checked that every rank is there just before).
    pub fn from_id(id: &[u8], rank: usize, world: usize, device: Device) -> Result<NcclCollective> {
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
        // SAFETY: writes one communicator.
        lib.check("ncclCommInitRank", unsafe {
            (lib.comm_init_rank)(&mut comm, world as c_int, uid, rank as c_int)
        })?;
        NcclCollective::wrap(
            lib,
            comm,
            rank,
            world,
            ordinal,
            Arc::new(GroupAbort::default()),
        )
    }

    /// Limit on how long one operation may take (default [`DEFAULT_TIMEOUT`]).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
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

    fn abort_comm(&mut self) {
        if !self.comm.0.is_null() {
            // SAFETY: a live communicator, used by this thread only.
            unsafe { (self.lib.comm_abort)(self.comm.0) };
            self.comm.0 = std::ptr::null_mut();
        }
    }

    /// Fails the whole group (in this process) and this communicator.
    fn fail(&mut self, e: CollectiveError) -> CollectiveError {
        let reason = format!("rank {}: {e}", self.rank);
        self.abort.abort(&reason);
        self.abort_comm();
        e
    }

    /// Prepares a call: the group is alive, the context is current and every kernel torch has
    /// queued on this device has finished.
    fn begin(&mut self) -> Result<()> {
        if let Some(r) = self.abort.abort_reason() {
            self.abort_comm();
            return Err(CollectiveError::Aborted(r));
        }
        if self.comm.0.is_null() {
            return Err(CollectiveError::Aborted(
                "this NCCL communicator was aborted".into(),
            ));
        }
        let ordinal = self.ordinal;
        let sync = self
            .ctx
            .bind_to_thread()
            .and_then(|()| self.ctx.synchronize());
        sync.map_err(|e| {
            let e = CollectiveError::Nccl(format!("synchronizing cuda:{ordinal}: {e}"));
            self.fail(e)
        })
    }

    /// Checks an enqueue result, then waits (polling) for the operation to finish.
    fn finish(&mut self, op: &'static str, code: c_int) -> Result<()> {
        if let Err(e) = self.lib.check(op, code) {
            return Err(self.fail(e));
        }
        if let Err(e) = self.event.record(&self.stream) {
            let e = CollectiveError::Nccl(format!("{op}: recording a CUDA event: {e}"));
            return Err(self.fail(e));
        }
        let start = Instant::now();
        loop {
            match self.event.try_is_complete() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => {
                    let e = CollectiveError::Nccl(format!("{op}: CUDA error while waiting: {e}"));
                    return Err(self.fail(e));
                }
            }
            if let Some(r) = self.abort.abort_reason() {
                self.abort_comm();
                return Err(CollectiveError::Aborted(r));
            }
            let mut async_err: c_int = 0;
            // SAFETY: live communicator (begin checked it).
            unsafe { (self.lib.comm_get_async_error)(self.comm.0, &mut async_err) };
            if async_err != ncclResult_t::ncclSuccess as c_int
                && async_err != ncclResult_t::ncclInProgress as c_int
            {
                let e = CollectiveError::Nccl(format!(
                    "{op}: asynchronous error: {}",
                    self.lib.describe(async_err)
                ));
                return Err(self.fail(e));
            }
            let waited = start.elapsed();
            if waited > self.timeout {
                let e = CollectiveError::Timeout {
                    op,
                    after: self.timeout,
                    detail: format!("rank {} on cuda:{}", self.rank, self.ordinal),
                };
                return Err(self.fail(e));
            }
            if waited < Duration::from_micros(50) {
                std::hint::spin_loop();
            } else if waited < Duration::from_millis(2) {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }

    fn stream_ptr(&self) -> RawStream {
        self.stream.cu_stream() as RawStream
    }
}

impl Drop for NcclCollective {
    fn drop(&mut self) {
        if self.world > 1 {
            self.abort
                .abort(&format!("rank {} left the group", self.rank));
        }
        let _ = self.ctx.bind_to_thread();
        self.abort_comm();
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
        self.begin()?;
        let p = t.data_ptr();
        // SAFETY: p holds numel elements of dtype on this device, alive until `finish` returns.
        let code = unsafe {
            (self.lib.all_reduce)(
                p,
                p,
                t.numel(),
                dtype,
                nccl_op(op),
                self.comm.0,
                self.stream_ptr(),
            )
        };
        self.finish("ncclAllReduce", code)
    }

    fn reduce_scatter(&mut self, input: &Tensor, output: &mut Tensor, op: ReduceOp) -> Result<()> {
        check_scatter_gather("reduce_scatter", input, output, self.world, self.rank)?;
        self.check_device(input, "reduce_scatter input")?;
        let dtype = nccl_kind(input.kind())?;
        self.begin()?;
        // SAFETY: sizes and aliasing checked (NCCL allows output = chunk `rank` of input).
        let code = unsafe {
            (self.lib.reduce_scatter)(
                input.data_ptr(),
                output.data_ptr(),
                output.numel(),
                dtype,
                nccl_op(op),
                self.comm.0,
                self.stream_ptr(),
            )
        };
        self.finish("ncclReduceScatter", code)
    }

    fn all_gather(&mut self, input: &Tensor, output: &mut Tensor) -> Result<()> {
        check_scatter_gather("all_gather", output, input, self.world, self.rank)?;
        self.check_device(input, "all_gather input")?;
        let dtype = nccl_kind(input.kind())?;
        self.begin()?;
        // SAFETY: sizes and aliasing checked (NCCL allows input = chunk `rank` of output).
        let code = unsafe {
            (self.lib.all_gather)(
                input.data_ptr(),
                output.data_ptr(),
                input.numel(),
                dtype,
                self.comm.0,
                self.stream_ptr(),
            )
        };
        self.finish("ncclAllGather", code)
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
        self.begin()?;
        let p = t.data_ptr();
        // SAFETY: p holds numel elements on this device.
        let code = unsafe {
            (self.lib.broadcast)(
                p,
                p,
                t.numel(),
                dtype,
                root as c_int,
                self.comm.0,
                self.stream_ptr(),
            )
        };
        self.finish("ncclBroadcast", code)
    }

    fn barrier(&mut self) -> Result<()> {
        let mut s = self.scratch.shallow_clone();
        self.all_reduce(&mut s, ReduceOp::Sum)
    }

    fn abort_handle(&self) -> AbortHandle {
        AbortHandle::new(self.abort.clone())
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
                let e = NcclCollective::from_id(&[0; 128], 0, 1, Device::Cuda(0))
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
            let e = NcclCollective::from_id(&[1; 5], 0, 1, Device::Cuda(0))
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
