//! u8 batches (from `data`) to normalized float tensors on the worker's device.
//! Pixels travel as u8 (4× less to copy than f32, also to a GPU) and are normalized per batch
//! with one fused multiply-add.
//!
//! Training batches come from a [`Prefetcher`]: a thread that gathers and augments the next
//! micro-batches (a ring of [`PREFETCH_DEPTH`] in flight) while the current one trains, and
//! hands them over as host tensors, page-locked for a CUDA device so that the copy to the device
//! is non-blocking. On the CPU it is the same path without pinning, and without the thread when
//! no core is free for it. Batches are pure functions of (indices, positions, seed, epoch), so
//! prefetching changes no number.
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use crate::config::Normalize;
use crate::data::{fill_batch, Augment, Dataset, ImageShape};

/// Micro-batches prepared ahead of the one training (plus the one being filled).
pub const PREFETCH_DEPTH: usize = 2;

/// One micro-batch on the host: `pixels` N×C×H×W u8, `labels` N i64.
pub struct HostBatch {
    pub pixels: Tensor,
    pub labels: Tensor,
}

/// What the prefetch thread fills: one entry per micro-batch, in training order.
pub struct BatchPlan {
    /// Dataset indices of each micro-batch.
    pub indices: Vec<Vec<u32>>,
    /// Their positions in the epoch's order (augmentation is a hash of them).
    pub positions: Vec<Vec<u64>>,
}

/// Fills one epoch's micro-batches in plan order.
struct Filler {
    dataset: Arc<Dataset>,
    plan: BatchPlan,
    aug: Augment,
    seed: u64,
    epoch: u64,
    pin: bool,
    next: usize,
    pixels: Vec<u8>,
    labels: Vec<i64>,
}

impl Filler {
    /// The next micro-batch, None after the last.
    fn fill(&mut self) -> Option<Result<HostBatch, String>> {
        let (idx, pos) = (
            self.plan.indices.get(self.next)?,
            &self.plan.positions[self.next],
        );
        self.next += 1;
        let shape = self.dataset.shape;
        fill_batch(
            &self.dataset.train,
            &shape,
            idx,
            pos,
            &self.aug,
            self.seed,
            self.epoch,
            &mut self.pixels,
            &mut self.labels,
        );
        Some(host_batch(&self.pixels, &self.labels, &shape, self.pin))
    }
}

/// Fills the next micro-batches of an epoch while the current one trains: on a thread of its
/// own when a core is free for it (always for a GPU), else in the trainer's thread between
/// steps (the same batches: on a CPU whose cores all run libtorch's intra-op threads, a
/// further busy thread stalls their barriers: LeNet b16 at 2 threads ran 1.7–2.5× slower here).
pub struct Prefetcher {
    rx: Option<Receiver<Result<HostBatch, String>>>,
    handle: Option<JoinHandle<()>>,
    inline: Option<Filler>,
}

impl Prefetcher {
    /// Starts filling `plan`'s micro-batches of the training split for `epoch`. `pin` makes
    /// page-locked host tensors (for a CUDA device); `threaded` fills them on a thread.
    pub fn spawn(
        dataset: Arc<Dataset>,
        plan: BatchPlan,
        aug: Augment,
        (seed, epoch): (u64, u64),
        pin: bool,
        threaded: bool,
    ) -> Prefetcher {
        let mut filler = Filler {
            dataset,
            plan,
            aug,
            seed,
            epoch,
            pin,
            next: 0,
            pixels: Vec::new(),
            labels: Vec::new(),
        };
        if !threaded {
            return Prefetcher {
                rx: None,
                handle: None,
                inline: Some(filler),
            };
        }
        let (tx, rx) = sync_channel(PREFETCH_DEPTH);
        let handle = std::thread::Builder::new()
            .name("cptlab-prefetch".into())
            .spawn(move || {
                while let Some(batch) = filler.fill() {
                    // The trainer went away (a stop, an error): nothing more to fill.
                    if tx.send(batch).is_err() {
                        return;
                    }
                }
            })
            .expect("spawning the prefetch thread");
        Prefetcher {
            rx: Some(rx),
            handle: Some(handle),
            inline: None,
        }
    }

    /// The next micro-batch, in plan order.
    pub fn next_batch(&mut self) -> Result<HostBatch> {
        let got = match (&mut self.inline, &self.rx) {
            (Some(filler), _) => filler.fill(),
            (None, Some(rx)) => rx.recv().ok(),
            (None, None) => None,
        };
        match got {
            Some(Ok(b)) => Ok(b),
            Some(Err(e)) => anyhow::bail!("preparing a batch: {e}"),
            None => anyhow::bail!("internal: the batches ran out before the epoch did"),
        }
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        // Closing the channel first ends a thread blocked on a full ring.
        drop(self.rx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn host_batch(
    pixels: &[u8],
    labels: &[i64],
    s: &ImageShape,
    pin: bool,
) -> Result<HostBatch, String> {
    let n = labels.len() as i64;
    let x =
        Tensor::from_slice(pixels).view([n, s.channels as i64, s.height as i64, s.width as i64]);
    let y = Tensor::from_slice(labels);
    if !pin {
        return Ok(HostBatch {
            pixels: x,
            labels: y,
        });
    }
    let pinned = |t: &Tensor| crate::quant::pin_memory(t).map_err(|e| e.to_string());
    Ok(HostBatch {
        pixels: pinned(&x)?,
        labels: pinned(&y)?,
    })
}

pub struct BatchConverter {
    device: Device,
    shape: ImageShape,
    /// x·scale + shift per channel ([1, C, 1, 1]), applied to raw 0..255 values.
    scale: Tensor,
    shift: Tensor,
    resize: Option<i64>,
    /// The model's input type (fp32, or fp16/bf16 for a half-precision replica).
    kind: Kind,
    /// Batches in NHWC strides (`precision.channels_last`), as the conv weights are.
    channels_last: bool,
}

/// CIFAR-10 training-set channel statistics (on the 0..1 scale).
const CIFAR_MEAN: [f64; 3] = [0.4914, 0.4822, 0.4465];
const CIFAR_STD: [f64; 3] = [0.2470, 0.2435, 0.2616];

impl BatchConverter {
    pub fn new(
        device: Device,
        shape: ImageShape,
        normalize: Normalize,
        resize: Option<i64>,
    ) -> BatchConverter {
        let c = shape.channels;
        let (scale, shift): (Vec<f32>, Vec<f32>) = (0..c)
            .map(|i| match normalize {
                Normalize::Cifar => {
                    let (m, s) = (CIFAR_MEAN[i % 3], CIFAR_STD[i % 3]);
                    ((1.0 / (255.0 * s)) as f32, (-m / s) as f32)
                }
                Normalize::Half => ((1.0 / 127.5) as f32, -1.0),
                Normalize::Unit => ((1.0 / 255.0) as f32, 0.0),
            })
            .unzip();
        let channel = |v: Vec<f32>| {
            Tensor::from_slice(&v)
                .view([1, c as i64, 1, 1])
                .to_device(device)
        };
        let resize = resize.filter(|&r| r != shape.height as i64 || r != shape.width as i64);
        BatchConverter {
            device,
            shape,
            scale: channel(scale),
            shift: channel(shift),
            resize,
            kind: Kind::Float,
            channels_last: false,
        }
    }

    /// Converts batches to `kind` after normalizing (in fp32).
    pub fn with_kind(mut self, kind: Kind) -> BatchConverter {
        self.kind = kind;
        self
    }

    /// Hands batches over in channels_last strides (when `on`).
    pub fn with_channels_last(mut self, on: bool) -> BatchConverter {
        self.channels_last = on;
        self
    }

    /// `pixels`: N×C×H×W u8; `labels`: N class indices.
    pub fn convert(&self, pixels: &[u8], labels: &[i64]) -> (Tensor, Tensor) {
        let batch = host_batch(pixels, labels, &self.shape, false).expect("unpinned batch");
        self.convert_batch(&batch)
    }

    /// A prepared micro-batch to the device (non-blocking from pinned memory), normalized.
    pub fn convert_batch(&self, batch: &HostBatch) -> (Tensor, Tensor) {
        let mut x = batch
            .pixels
            .to_device_(self.device, Kind::Uint8, true, false);
        if self.channels_last {
            // Reorder the bytes once; the ops below keep their input's layout.
            x = to_channels_last(&x);
        }
        let x = x.to_kind(Kind::Float);
        let mut x = self.shift.addcmul(&x, &self.scale);
        if let Some(r) = self.resize {
            x = x.upsample_bilinear2d([r, r], false, None, None);
        }
        if self.kind != Kind::Float {
            x = x.to_kind(self.kind);
        }
        if self.channels_last && !super::flat::is_channels_last(&x) {
            x = to_channels_last(&x);
        }
        let y = batch
            .labels
            .to_device_(self.device, Kind::Int64, true, false);
        (x, y)
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn channels_last(&self) -> bool {
        self.channels_last
    }
}

/// `t` (N×C×H×W) with channels_last strides: `t.contiguous(memory_format=torch.channels_last)`.
pub fn to_channels_last(t: &Tensor) -> Tensor {
    t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The thread and the inline filler hand over the same batches, in plan order, and a
    /// prefetcher dropped mid-epoch (a stop) ends its thread.
    #[test]
    fn prefetched_batches_are_the_planned_ones_in_order() {
        let source = crate::data::DataSource::detect("synthetic:64:16").unwrap();
        let opts = crate::data::LoadOptions {
            seed: 1,
            image_size: None,
            cache_dir: None,
        };
        let dataset = Arc::new(crate::data::load(&source, &opts).unwrap());
        let aug = Augment {
            random_crop_padding: 2,
            horizontal_flip: true,
        };
        let plan = || BatchPlan {
            indices: (0..6u32)
                .map(|b| (b * 8..b * 8 + 8).rev().collect())
                .collect(),
            positions: (0..6u64).map(|b| (b * 8..b * 8 + 8).collect()).collect(),
        };
        let batches = |threaded: bool| {
            let mut p = Prefetcher::spawn(dataset.clone(), plan(), aug, (3, 1), false, threaded);
            let got: Vec<HostBatch> = (0..6).map(|_| p.next_batch().unwrap()).collect();
            assert!(p.next_batch().is_err(), "six planned, six given");
            got
        };
        let (threaded, inline) = (batches(true), batches(false));
        let (mut pixels, mut labels) = (Vec::new(), Vec::new());
        for (b, (t, i)) in threaded.iter().zip(&inline).enumerate() {
            let p = plan();
            fill_batch(
                &dataset.train,
                &dataset.shape,
                &p.indices[b],
                &p.positions[b],
                &aug,
                3,
                1,
                &mut pixels,
                &mut labels,
            );
            let want = host_batch(&pixels, &labels, &dataset.shape, false).unwrap();
            for got in [t, i] {
                assert!(got.pixels.equal(&want.pixels), "batch {b}");
                assert!(got.labels.equal(&want.labels), "batch {b}");
            }
        }
        let mut p = Prefetcher::spawn(dataset.clone(), plan(), aug, (3, 1), false, true);
        p.next_batch().unwrap();
        drop(p);
    }

    #[test]
    fn half_normalization_maps_to_minus_one_one() {
        let shape = ImageShape {
            channels: 3,
            height: 1,
            width: 2,
        };
        let conv = BatchConverter::new(Device::Cpu, shape, Normalize::Half, None);
        let (x, y) = conv.convert(&[0, 255, 0, 255, 0, 255], &[3]);
        assert_eq!(x.size(), [1, 3, 1, 2]);
        let v: Vec<f32> = x.flatten(0, -1).try_into().unwrap();
        for (got, want) in v.iter().zip([-1.0, 1.0, -1.0, 1.0, -1.0, 1.0]) {
            assert!((got - want).abs() < 1e-6, "{v:?}");
        }
        assert_eq!(y.int64_value(&[0]), 3);
        let conv = BatchConverter::new(Device::Cpu, shape, Normalize::Cifar, Some(4));
        let (x, _) = conv.convert(&[128; 6], &[0]);
        assert_eq!(x.size(), [1, 3, 4, 4]);
        let r = x.double_value(&[0, 0, 0, 0]);
        assert!((r - (128.0 / 255.0 - 0.4914) / 0.2470).abs() < 1e-4, "{r}");
    }

    /// channels_last batches hold the same values as NCHW ones, in NHWC strides, through
    /// normalization, resizing and the half conversion.
    #[test]
    fn channels_last_batches_hold_the_same_values() {
        let shape = ImageShape {
            channels: 3,
            height: 4,
            width: 5,
        };
        let pixels: Vec<u8> = (0..2 * 3 * 4 * 5).map(|i| (i * 7 % 256) as u8).collect();
        for (resize, kind) in [(None, Kind::Float), (Some(6), Kind::BFloat16)] {
            let conv = || BatchConverter::new(Device::Cpu, shape, Normalize::Cifar, resize);
            let (want, _) = conv().with_kind(kind).convert(&pixels, &[0, 1]);
            let (got, _) = conv()
                .with_kind(kind)
                .with_channels_last(true)
                .convert(&pixels, &[0, 1]);
            assert!(
                super::super::flat::is_channels_last(&got),
                "{:?}",
                got.stride()
            );
            assert!(!super::super::flat::is_channels_last(&want));
            assert!(got.equal(&want), "{resize:?} {kind:?}");
        }
    }
}
