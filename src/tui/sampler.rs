//! Device sampling once a second on its own thread: GPU utilization and memory through NVML
//! (libnvidia-ml loaded at run time), and — always, since CPU runs have no NVML — each watched
//! process's CPU share and its `cptlab-worker-N` threads' busy share from /proc.
//!
//! A run's `cuda:N` is CUDA's numbering, which CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER
//! change; NVML always numbers every GPU of the machine in PCI order. The two are matched by
//! UUID ([`match_devices`]): CUDA's UUIDs come from the driver API (`cuDeviceGetUuid`, in this
//! process, whose environment a run started from here inherits). A MIG instance has no
//! utilization counter in NVML: it is reported as N/A with the reason.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::app::Msg;

pub const PERIOD: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq)]
pub struct GpuSample {
    /// CUDA's ordinal for this GPU (`cuda:N` in a run started with this environment), matched
    /// to NVML by UUID.
    pub index: u32,
    pub name: String,
    /// Percent of the last sample period with a kernel running.
    pub util: u32,
    pub mem_used: u64,
    pub mem_total: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProcSample {
    pub pid: u32,
    /// CPU time over wall time, in cores (2.0 = two cores busy).
    pub cores: f64,
    /// Each `cptlab-worker-N` thread's busy share (0..1), by thread name.
    pub workers: Vec<(String, f64)>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceSample {
    pub gpus: Vec<GpuSample>,
    pub procs: Vec<ProcSample>,
    /// Why there are no GPU figures (NVML missing), once.
    pub nvml_error: Option<String>,
}

/// Tells the sampler thread which processes to watch.
#[derive(Clone, Default)]
pub struct Watch(Arc<Mutex<Vec<u32>>>);

impl Watch {
    pub fn set(&self, pids: Vec<u32>) {
        *self.0.lock().expect("watch lock") = pids;
    }

    fn get(&self) -> Vec<u32> {
        self.0.lock().expect("watch lock").clone()
    }
}

/// Starts the sampler; it sends a sample each period while there is anything to report.
pub fn spawn(tx: UnboundedSender<Msg>) -> Watch {
    let watch = Watch::default();
    let w = watch.clone();
    let _ = std::thread::Builder::new()
        .name("cptlab-tui-sampler".into())
        .spawn(move || {
            let (nvml, mut nvml_error) = match nvml_wrapper::Nvml::init() {
                Ok(n) => (Some(n), None),
                Err(e) => (
                    None,
                    Some(format!("NVML unavailable ({e}): CPU figures only")),
                ),
            };
            // CUDA's devices do not change while the workbench runs: matched once.
            let matches = nvml.as_ref().map(|n| {
                let (matches, note) = cuda_matches(n);
                if let Some(note) = note {
                    nvml_error = Some(match nvml_error.take() {
                        Some(e) => format!("{e}; {note}"),
                        None => note,
                    });
                }
                matches
            });
            let mut cpu = CpuSampler::default();
            loop {
                let pids = w.get();
                let gpus = match (&nvml, &matches) {
                    (Some(n), Some(m)) => sample_gpus(n, m),
                    _ => Vec::new(),
                };
                let procs: Vec<ProcSample> = pids.iter().filter_map(|&p| cpu.sample(p)).collect();
                cpu.forget_except(&pids);
                if !gpus.is_empty() || !procs.is_empty() || nvml_error.is_some() {
                    let sample = DeviceSample {
                        gpus,
                        procs,
                        nvml_error: nvml_error.take(),
                    };
                    if tx.send(Msg::Devices(sample)).is_err() {
                        return;
                    }
                }
                std::thread::sleep(PERIOD);
            }
        });
    watch
}

fn sample_gpus(nvml: &nvml_wrapper::Nvml, matches: &[CudaMatch]) -> Vec<GpuSample> {
    matches
        .iter()
        .filter_map(|m| {
            let CudaMatch::Gpu { cuda, nvml: index } = *m else {
                return None;
            };
            let d = nvml.device_by_index(index).ok()?;
            let mem = d.memory_info().ok()?;
            Some(GpuSample {
                index: cuda,
                name: d.name().unwrap_or_default(),
                util: d.utilization_rates().map(|u| u.gpu).unwrap_or(0),
                mem_used: mem.used,
                mem_total: mem.total,
            })
        })
        .collect()
}

/// One NVML GPU as the matching needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct NvmlGpu {
    /// NVML's index (PCI order over the whole machine).
    pub index: u32,
    /// `GPU-…`.
    pub uuid: String,
    /// MIG mode is on.
    pub mig: bool,
    /// Its MIG instances' UUIDs (`MIG-…`).
    pub mig_uuids: Vec<String>,
}

/// Where CUDA's device `cuda` is in NVML.
#[derive(Debug, Clone, PartialEq)]
pub enum CudaMatch {
    /// A whole GPU: NVML's device `nvml`.
    Gpu { cuda: u32, nvml: u32 },
    /// A MIG instance (or a GPU in MIG mode): no utilization figure ("N/A") for the reason given.
    Mig {
        cuda: u32,
        nvml: u32,
        reason: String,
    },
    /// No NVML device has its UUID.
    Unmatched { cuda: u32, reason: String },
}

impl CudaMatch {
    pub fn cuda(&self) -> u32 {
        match self {
            CudaMatch::Gpu { cuda, .. }
            | CudaMatch::Mig { cuda, .. }
            | CudaMatch::Unmatched { cuda, .. } => *cuda,
        }
    }

    /// A line about this device for `doctor` and the dashboard's note.
    pub fn describe(&self, cuda_uuid: &str) -> String {
        match self {
            CudaMatch::Gpu { cuda, nvml } => format!("cuda:{cuda} = NVML gpu {nvml} ({cuda_uuid})"),
            CudaMatch::Mig { cuda, reason, .. } | CudaMatch::Unmatched { cuda, reason } => {
                format!("cuda:{cuda} utilization N/A: {reason}")
            }
        }
    }
}

/// The hex digits of a UUID, lower case, without the `GPU-`/`MIG-` prefix and dashes.
fn uuid_key(uuid: &str) -> String {
    let u = uuid.trim();
    let u = ["GPU-", "MIG-", "gpu-", "mig-"]
        .iter()
        .find_map(|p| u.strip_prefix(p))
        .unwrap_or(u);
    u.chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Matches CUDA's devices (index = CUDA ordinal, UUIDs as [`cuda_uuids`] gives them) to
/// NVML's. A pure function: CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER are already in the CUDA
/// side's order and selection.
pub fn match_devices(cuda: &[String], nvml: &[NvmlGpu]) -> Vec<CudaMatch> {
    cuda.iter()
        .enumerate()
        .map(|(i, u)| {
            let cuda = i as u32;
            let key = uuid_key(u);
            if let Some(g) = nvml.iter().find(|g| uuid_key(&g.uuid) == key) {
                if g.mig {
                    return CudaMatch::Mig {
                        cuda,
                        nvml: g.index,
                        reason: format!(
                            "NVML gpu {} ({}) is in MIG mode: NVML reports no utilization for MIG devices",
                            g.index, g.uuid
                        ),
                    };
                }
                return CudaMatch::Gpu {
                    cuda,
                    nvml: g.index,
                };
            }
            if let Some(g) = nvml
                .iter()
                .find(|g| g.mig_uuids.iter().any(|m| uuid_key(m) == key))
            {
                return CudaMatch::Mig {
                    cuda,
                    nvml: g.index,
                    reason: format!(
                        "a MIG instance ({u}) of NVML gpu {}: NVML reports no utilization for MIG devices",
                        g.index
                    ),
                };
            }
            CudaMatch::Unmatched {
                cuda,
                reason: format!("no NVML device has its UUID ({u})"),
            }
        })
        .collect()
}

/// CUDA's devices in CUDA's order (what `cuda:N` means to a process with this environment),
/// each as the UUID string NVML would print (`GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`; MIG
/// instances' UUIDs are matched on their hex digits). Through the driver API: no CUDA context
/// is created.
pub fn cuda_uuids() -> Result<Vec<String>, String> {
    use cudarc::driver::result;
    // cudarc's loader panics without libcuda: look first.
    // SAFETY: only tries to open the library.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("the CUDA driver (libcuda) is not installed".into());
    }
    result::init().map_err(|e| format!("cuInit: {e:?}"))?;
    let n = result::device::get_count().map_err(|e| format!("cuDeviceGetCount: {e:?}"))?;
    (0..n)
        .map(|i| {
            let dev = result::device::get(i).map_err(|e| format!("cuDeviceGet({i}): {e:?}"))?;
            let id = result::device::get_uuid(dev)
                .map_err(|e| format!("cuDeviceGetUuid({i}): {e:?}"))?;
            let b: Vec<u8> = id.bytes.iter().map(|&c| c as u8).collect();
            Ok(format_uuid(&b))
        })
        .collect()
}

/// 16 bytes as `GPU-` + 8-4-4-4-12 hex digits, NVML's spelling.
pub fn format_uuid(b: &[u8]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    if h.len() != 32 {
        return format!("GPU-{h}");
    }
    format!(
        "GPU-{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// NVML's GPUs with their MIG instances.
pub fn nvml_gpus(nvml: &nvml_wrapper::Nvml) -> Vec<NvmlGpu> {
    let n = nvml.device_count().unwrap_or(0);
    (0..n)
        .filter_map(|i| {
            let d = nvml.device_by_index(i).ok()?;
            let mig = d.mig_mode().is_ok_and(|m| m.current == 1);
            let mig_uuids = if mig {
                (0..d.mig_device_count().unwrap_or(0))
                    .filter_map(|k| d.mig_device_by_index(k).ok()?.uuid().ok())
                    .collect()
            } else {
                Vec::new()
            };
            Some(NvmlGpu {
                index: i,
                uuid: d.uuid().ok()?,
                mig,
                mig_uuids,
            })
        })
        .collect()
}

/// The matching for this process's environment, and a note for what is not shown.
fn cuda_matches(nvml: &nvml_wrapper::Nvml) -> (Vec<CudaMatch>, Option<String>) {
    let cuda = match cuda_uuids() {
        Ok(c) => c,
        Err(e) => {
            return (
                Vec::new(),
                Some(format!("GPU figures off: CUDA's devices unknown ({e})")),
            )
        }
    };
    let matches = match_devices(&cuda, &nvml_gpus(nvml));
    let notes: Vec<String> = matches
        .iter()
        .filter(|m| !matches!(m, CudaMatch::Gpu { .. }))
        .map(|m| m.describe(&cuda[m.cuda() as usize]))
        .collect();
    (matches, (!notes.is_empty()).then(|| notes.join("; ")))
}

/// CPU time (utime + stime, in clock ticks) of each thread since the previous sample.
#[derive(Default)]
struct CpuSampler {
    prev: HashMap<u32, (Instant, u64, HashMap<u32, u64>)>,
}

impl CpuSampler {
    fn sample(&mut self, pid: u32) -> Option<ProcSample> {
        let now = Instant::now();
        let threads = read_threads(pid)?;
        let total: u64 = threads.iter().map(|t| t.ticks).sum();
        let ticks: HashMap<u32, u64> = threads.iter().map(|t| (t.tid, t.ticks)).collect();
        let prev = self.prev.insert(pid, (now, total, ticks));
        let (t0, total0, ticks0) = prev?;
        let wall = now.duration_since(t0).as_secs_f64();
        if wall <= 0.0 {
            return None;
        }
        let hz = clock_ticks_per_second();
        let share = |d: u64| d as f64 / hz / wall;
        let mut workers: Vec<(String, f64)> = threads
            .iter()
            .filter(|t| t.name.starts_with("cptlab-worker"))
            .map(|t| {
                let before = ticks0.get(&t.tid).copied().unwrap_or(t.ticks);
                (
                    t.name.clone(),
                    share(t.ticks.saturating_sub(before)).min(1.0),
                )
            })
            .collect();
        workers.sort_by(|a, b| a.0.cmp(&b.0));
        Some(ProcSample {
            pid,
            cores: share(total.saturating_sub(total0)),
            workers,
        })
    }

    fn forget_except(&mut self, pids: &[u32]) {
        self.prev.retain(|p, _| pids.contains(p));
    }
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ThreadTicks {
    pub tid: u32,
    pub name: String,
    pub ticks: u64,
}

fn read_threads(pid: u32) -> Option<Vec<ThreadTicks>> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    Some(
        dir.flatten()
            .filter_map(|e| {
                let tid: u32 = e.file_name().to_str()?.parse().ok()?;
                let text = std::fs::read_to_string(e.path().join("stat")).ok()?;
                parse_stat(tid, &text)
            })
            .collect(),
    )
}

/// Parses `/proc/<pid>/task/<tid>/stat`: the name sits in parentheses (and may hold spaces or
/// parentheses itself), utime and stime are fields 14 and 15.
pub fn parse_stat(tid: u32, text: &str) -> Option<ThreadTicks> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state), so field n is rest[n - 3].
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some(ThreadTicks {
        tid,
        name,
        ticks: utime + stime,
    })
}

/// This thread's CPU seconds so far (utime + stime), for the workbench's own load figure.
pub fn thread_cpu_seconds(tid: u32) -> Option<f64> {
    let pid = std::process::id();
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    Some(parse_stat(tid, &text)?.ticks as f64 / clock_ticks_per_second())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(index: u32, uuid: &str) -> NvmlGpu {
        NvmlGpu {
            index,
            uuid: uuid.into(),
            mig: false,
            mig_uuids: Vec::new(),
        }
    }

    const A: &str = "GPU-0a1b2c3d-0000-1111-2222-333344445555";
    const B: &str = "GPU-ffeeddcc-0000-1111-2222-333344445555";
    const C: &str = "GPU-12345678-9abc-def0-1234-56789abcdef0";

    /// CUDA_VISIBLE_DEVICES=2,0 (or CUDA_DEVICE_ORDER=FASTEST_FIRST) reorders and hides GPUs on
    /// the CUDA side: cuda:0 is NVML's gpu 2, cuda:1 NVML's gpu 0, NVML's gpu 1 is not a
    /// CUDA device at all.
    #[test]
    fn cuda_devices_are_matched_to_nvml_by_uuid_not_by_index() {
        let nvml = [gpu(0, A), gpu(1, B), gpu(2, C)];
        let cuda = [C.to_uppercase(), A.to_string()];
        assert_eq!(
            match_devices(&cuda, &nvml),
            [
                CudaMatch::Gpu { cuda: 0, nvml: 2 },
                CudaMatch::Gpu { cuda: 1, nvml: 0 }
            ]
        );
        // All visible in PCI order: identity.
        let all: Vec<String> = [A, B, C].iter().map(|s| s.to_string()).collect();
        let m = match_devices(&all, &nvml);
        assert_eq!(
            m.iter()
                .map(|m| match m {
                    CudaMatch::Gpu { nvml, .. } => *nvml,
                    other => panic!("{other:?}"),
                })
                .collect::<Vec<_>>(),
            [0, 1, 2]
        );
    }

    #[test]
    fn mig_instances_and_unknown_uuids_say_why_they_have_no_figures() {
        let mig = "MIG-aaaabbbb-cccc-dddd-eeee-ffff00001111";
        let nvml = [
            gpu(0, A),
            NvmlGpu {
                index: 1,
                uuid: B.into(),
                mig: true,
                mig_uuids: vec![mig.into()],
            },
        ];
        // CUDA names the instance by its MIG UUID; the driver spells it like a GPU UUID.
        let cuda = [
            mig.replace("MIG-", "GPU-"),
            B.to_string(),
            C.to_string(),
            A.to_string(),
        ];
        let m = match_devices(&cuda, &nvml);
        match &m[0] {
            CudaMatch::Mig {
                cuda: 0,
                nvml: 1,
                reason,
            } => {
                assert!(reason.contains("MIG instance"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(&m[1], CudaMatch::Mig { cuda: 1, nvml: 1, reason } if reason.contains("MIG mode")),
            "{:?}",
            m[1]
        );
        match &m[2] {
            CudaMatch::Unmatched { cuda: 2, reason } => assert!(reason.contains(C), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(m[3], CudaMatch::Gpu { cuda: 3, nvml: 0 });
        assert!(m[0].describe(&cuda[0]).contains("N/A"));
    }

    #[test]
    fn driver_uuid_bytes_are_spelled_as_nvml_spells_them() {
        let b: Vec<u8> = (0u8..16).map(|i| i * 17).collect();
        let s = format_uuid(&b);
        assert_eq!(s, "GPU-00112233-4455-6677-8899-aabbccddeeff");
        assert_eq!(
            uuid_key(&s),
            uuid_key("GPU-00112233-4455-6677-8899-AABBCCDDEEFF")
        );
    }

    #[test]
    fn stat_names_with_spaces_and_parens_parse() {
        let line = "4242 (cptlab-worker-0) R 1 2 3 4 5 6 7 8 9 10 250 30 0 0 20 0 1 0";
        let t = parse_stat(4242, line).unwrap();
        assert_eq!(t.name, "cptlab-worker-0");
        assert_eq!(t.ticks, 280);
        let odd = "7 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 1 2 0";
        assert_eq!(parse_stat(7, odd).unwrap().name, "a (b) c");
        assert_eq!(parse_stat(7, odd).unwrap().ticks, 3);
    }

    #[test]
    fn own_process_is_sampled() {
        let mut s = CpuSampler::default();
        let me = std::process::id();
        assert!(
            s.sample(me).is_none(),
            "first sample only sets the baseline"
        );
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(30) {
            std::hint::black_box(0u64.wrapping_add(1));
        }
        let p = s.sample(me).unwrap();
        assert!(p.cores >= 0.0);
    }
}
