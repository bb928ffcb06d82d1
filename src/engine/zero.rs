//! The data-parallel optimizer step: ZeRO stage 0 (replicated optimizer state) and stage 1
//! (optimizer state sharded over the ranks, as DeepSpeed's ZeRO-1).
//!
//! Every rank holds the whole model in one flat fp32 buffer ([`FlatParams`], padded to
//! [`ShardLayout::pad_multiple`]) split into `world` equal contiguous shards; rank r owns shard r.
//!
//! - Stage 0: gradients are all-reduced (average); every rank steps the full buffer with full
//!   optimizer state. Replicas stay identical because every rank computes the same update.
//! - Stage 1: gradients are reduce-scattered (average) into the rank's own shard of the gradient
//!   buffer, the rank steps its shard with an optimizer created for the shard's length (state is
//!   1/world of stage 0's), and the updated shards are all-gathered back into every replica.
//!
//! World size 1 takes the same path (the collectives are then no-ops or local copies).
//! Global-norm clipping and overflow detection are agreed across ranks: under stage 0 the reduced
//! gradient is identical everywhere; under stage 1 the squares of the shard norms are
//! all-reduced (one scalar). An inf/NaN anywhere makes the global norm non-finite on every rank,
//! so every rank skips the update together.
//!
//! Checkpoints are consolidated: [`DataParallelOptimizer::full_state`] returns the state a
//! single [`FlatOptimizer`] over the unpadded parameters would have (names `step`, `m`, `v`), so a
//! checkpoint loads at any world size and stage, and at world size 1 it is the format the
//! single-device trainer already writes.
use std::ops::Range;
use std::time::Instant;

use anyhow::{ensure, Result};
use tch::{Device, Kind, Tensor};

use super::collective::{all_reduce_scalars, AbortHandle, Collective, ReduceOp};
use super::device::read_to_host;
use super::flat::FlatParams;
use super::optim::FlatOptimizer;
use crate::config::OptimizerConfig;

/// The stage is the config's (`devices.zero`, parsed at deserialization): one type from the
/// TOML to the sharding.
pub use crate::config::ZeroStage;

/// How the flat buffer splits over the ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardLayout {
    /// Elements that belong to parameters.
    pub len: i64,
    /// Buffer length: `len` rounded up to [`ShardLayout::pad_multiple`]`(world)`.
    pub padded: i64,
    pub world: usize,
    /// This rank.
    pub rank: usize,
}

impl ShardLayout {
    /// Shard lengths are multiples of this many elements (64 bytes) when world > 1, so shards
    /// start on aligned addresses (NCCL and vector loops prefer it).
    pub const ALIGN: i64 = 16;

    /// The multiple the flat buffers are padded to for `world` ranks (1 for a single rank:
    /// no padding).
    pub fn pad_multiple(world: usize) -> i64 {
        if world <= 1 {
            1
        } else {
            world as i64 * Self::ALIGN
        }
    }

    pub fn new(len: i64, world: usize, rank: usize) -> ShardLayout {
        assert!(world > 0 && rank < world, "rank {rank} of world {world}");
        assert!(len >= 0);
        let m = Self::pad_multiple(world);
        ShardLayout {
            len,
            padded: (len + m - 1) / m * m,
            world,
            rank,
        }
    }

    /// The layout of a flat buffer built with `FlatParams::with_padding(vs,
    /// ShardLayout::pad_multiple(world))`.
    pub fn for_flat(flat: &FlatParams, world: usize, rank: usize) -> Result<ShardLayout> {
        ensure!(
            world > 0 && rank < world,
            "rank {rank} out of range for world size {world}"
        );
        let layout = ShardLayout::new(flat.param_len(), world, rank);
        ensure!(
            flat.len() == layout.padded,
            "the flat buffer has {} elements; {} parameters over {world} ranks need {} (build it with FlatParams::with_padding(vs, ShardLayout::pad_multiple({world})))",
            flat.len(),
            layout.len,
            layout.padded
        );
        Ok(layout)
    }

    pub fn shard_len(&self) -> i64 {
        self.padded / self.world as i64
    }

    pub fn range_of(&self, rank: usize) -> Range<i64> {
        let n = self.shard_len();
        rank as i64 * n..(rank as i64 + 1) * n
    }

    /// This rank's shard.
    pub fn shard_range(&self) -> Range<i64> {
        self.range_of(self.rank)
    }

    /// Padding elements at the end of the buffer.
    pub fn padding(&self) -> i64 {
        self.padded - self.len
    }
}

/// What one step did.
#[derive(Debug, Default)]
pub struct StepOutcome {
    /// The global gradient norm before clipping, agreed by every rank (computed when clipping
    /// or checking overflow): a 0-dim f64 tensor on the device, so that nothing waits for it;
    /// read it ([`StepOutcome::grad_norm_value`]) only where a value is needed.
    pub grad_norm: Option<Tensor>,
    /// Some rank's gradient held inf or NaN: every rank skipped the update (the optimizer's
    /// step count did not advance).
    pub overflow: bool,
    /// Seconds in collectives (including waiting for slower ranks).
    pub t_comm: f64,
    /// Seconds in the local norm, clipping and optimizer update.
    pub t_opt: f64,
}

impl StepOutcome {
    /// The gradient norm on the host (a device read: tests and reports, not the step).
    pub fn grad_norm_value(&self) -> Option<f64> {
        self.grad_norm.as_ref().map(|t| t.double_value(&[]))
    }
}

/// One rank's optimizer in a data-parallel group: owns the collective and a [`FlatOptimizer`]
/// over the full buffer (stage 0) or this rank's shard (stage 1).
pub struct DataParallelOptimizer {
    stage: ZeroStage,
    layout: ShardLayout,
    opt: FlatOptimizer,
    coll: Box<dyn Collective>,
    device: Device,
}

impl DataParallelOptimizer {
    pub fn new(
        stage: ZeroStage,
        config: &OptimizerConfig,
        layout: ShardLayout,
        collective: Box<dyn Collective>,
        device: Device,
    ) -> Result<DataParallelOptimizer> {
        ensure!(
            collective.world_size() == layout.world && collective.rank() == layout.rank,
            "the collective is rank {} of {}, the shard layout rank {} of {}",
            collective.rank(),
            collective.world_size(),
            layout.rank,
            layout.world
        );
        let n = match stage {
            ZeroStage::Zero0 => layout.padded,
            ZeroStage::Zero1 => layout.shard_len(),
        };
        Ok(DataParallelOptimizer {
            stage,
            layout,
            opt: FlatOptimizer::new(config, n, device),
            coll: collective,
            device,
        })
    }

    pub fn stage(&self) -> ZeroStage {
        self.stage
    }

    pub fn layout(&self) -> &ShardLayout {
        &self.layout
    }

    pub fn rank(&self) -> usize {
        self.layout.rank
    }

    pub fn world_size(&self) -> usize {
        self.layout.world
    }

    /// Optimizer updates applied (skipped steps excluded).
    pub fn steps_taken(&self) -> u64 {
        self.opt.steps_taken()
    }

    /// Bytes of optimizer state this rank holds (what `optimizer_state_bytes_per_rank`
    /// reports).
    pub fn optimizer_state_bytes(&self) -> u64 {
        self.opt.state_bytes()
    }

    /// The collective, for the loop's own reductions (loss, metrics, buffers).
    pub fn collective(&mut self) -> &mut dyn Collective {
        self.coll.as_mut()
    }

    pub fn abort_handle(&self) -> AbortHandle {
        self.coll.abort_handle()
    }

    /// Makes every replica start from rank 0's parameters (as DDP does at construction).
    pub fn sync_parameters(&mut self, flat: &mut FlatParams) -> Result<()> {
        self.check_flat(flat)?;
        if self.layout.world > 1 {
            self.coll.broadcast(&mut flat.params, 0)?;
        }
        Ok(())
    }

    /// All-reduces host numbers through the collective (e.g. `[loss_sum, count]` with `Sum`).
    pub fn all_reduce_scalars(&mut self, values: &mut [f64], op: ReduceOp) -> Result<()> {
        all_reduce_scalars(self.coll.as_mut(), values, op, self.device)?;
        Ok(())
    }

    /// The mean of `value` over the ranks: each rank's mean loss over its (equal) local batch
    /// gives the mean over the global batch.
    pub fn mean_across_ranks(&mut self, value: f64) -> Result<f64> {
        let mut v = [value];
        self.all_reduce_scalars(&mut v, ReduceOp::Avg)?;
        Ok(v[0])
    }

    fn check_flat(&self, flat: &FlatParams) -> Result<()> {
        ensure!(
            flat.len() == self.layout.padded,
            "the flat buffer has {} elements, the shard layout expects {}",
            flat.len(),
            self.layout.padded
        );
        ensure!(
            flat.device() == self.device,
            "the flat buffer is on {:?}, the optimizer on {:?}",
            flat.device(),
            self.device
        );
        Ok(())
    }

    /// After backward (gradients of this rank's micro-batches accumulated in `flat.grads`):
    /// reduces the gradients over the ranks (average), computes the global norm when `clip` or
    /// `check_overflow` asks for it, skips the update on every rank if `check_overflow` and any
    /// rank's gradient held inf/NaN, clips to `clip` (as `torch.nn.utils.clip_grad_norm_`), steps
    /// at `lr` (and `momentum`, a schedule's override of SGD's momentum or Adam/AdamW's β1;
    /// None: the configured value), and (stage 1) gathers the updated parameters into every
    /// replica. `flat.grads` is used as work space: zero it before the next backward.
    pub fn step(
        &mut self,
        flat: &mut FlatParams,
        lr: f64,
        momentum: Option<f64>,
        clip: Option<f64>,
        check_overflow: bool,
    ) -> Result<StepOutcome> {
        self.check_flat(flat)?;
        let world = self.layout.world;
        let range = self.layout.shard_range();
        let (start, n) = (range.start, range.end - range.start);
        let mut out = StepOutcome::default();

        let t = Instant::now();
        let (mut params, mut grads) = match self.stage {
            ZeroStage::Zero0 => {
                if world > 1 {
                    self.coll.all_reduce(&mut flat.grads, ReduceOp::Avg)?;
                }
                (flat.params.shallow_clone(), flat.grads.shallow_clone())
            }
            ZeroStage::Zero1 => {
                let mut own = flat.grads.narrow(0, start, n);
                if world > 1 {
                    let full = flat.grads.shallow_clone();
                    self.coll.reduce_scatter(&full, &mut own, ReduceOp::Avg)?;
                }
                (flat.params.narrow(0, start, n), own)
            }
        };
        out.t_comm += t.elapsed().as_secs_f64();

        let t = Instant::now();
        // Collective time inside this section (the norm's all-reduce), counted as comm.
        let mut inner_comm = 0.0;
        if clip.is_some() || check_overflow {
            // Accumulated in f64: an f32 norm of millions of elements is off by ~1e-6 relative,
            // and the shard norms must combine to the full buffer's norm. Everything stays on
            // the device (the same f64 operations the host did before, so the same numbers).
            let local = tch::no_grad(|| grads.norm_scalaropt_dtype(2.0, Kind::Double));
            let norm = if self.stage == ZeroStage::Zero1 && world > 1 {
                let tc = Instant::now();
                let mut sq = (&local * &local).view([1]);
                self.coll.all_reduce(&mut sq, ReduceOp::Sum)?;
                inner_comm = tc.elapsed().as_secs_f64();
                sq.sqrt().view([])
            } else {
                local
            };
            if check_overflow {
                // fp16's skip decision is the one read per step (as GradScaler's).
                let v = read_to_host(&norm)?;
                self.coll.check_read()?;
                out.overflow = !v[0].is_finite();
            }
            out.grad_norm = Some(norm);
        }
        if !(check_overflow && out.overflow) {
            if let (Some(max), Some(norm)) = (clip, &out.grad_norm) {
                // As clip_grad_norm_: min(1, max / (norm + 1e-6)) on the device, no sync. The
                // division is max / (norm + 1e-6) in f64 as the host did it (torch's
                // reciprocal-then-multiply can differ in the last bit); a factor of exactly 1
                // leaves the gradients unchanged.
                tch::no_grad(|| {
                    let coef = Tensor::full([], max, (Kind::Double, self.device))
                        .g_div(&(norm + 1e-6))
                        .clamp_max(1.0);
                    let _ = grads.g_mul_(&coef);
                });
            }
            self.opt.step(&mut params, &mut grads, lr, momentum);
        }
        out.t_comm += inner_comm;
        out.t_opt = (t.elapsed().as_secs_f64() - inner_comm).max(0.0);
        if check_overflow && out.overflow {
            // Nobody stepped: the replicas are still identical, nothing to gather.
            return Ok(out);
        }

        if self.stage == ZeroStage::Zero1 && world > 1 {
            let t = Instant::now();
            self.coll.all_gather(&params, &mut flat.params)?;
            out.t_comm += t.elapsed().as_secs_f64();
        }
        Ok(out)
    }

    /// The optimizer state consolidated over the ranks, as one [`FlatOptimizer`] over the
    /// unpadded parameters would hold it (`step`, `m`, `v`; CPU tensors). Collective under
    /// stage 1: every rank must call it; every rank gets the full state.
    pub fn full_state(&mut self) -> Result<Vec<(String, Tensor)>> {
        let len = self.layout.len;
        let opt_len = match self.stage {
            ZeroStage::Zero0 => self.layout.padded,
            ZeroStage::Zero1 => self.layout.shard_len(),
        };
        let mut out = Vec::new();
        for (name, t) in self.opt.state() {
            if t.dim() != 1 || t.numel() as i64 != opt_len {
                out.push((name, t.to_device(Device::Cpu).copy()));
                continue;
            }
            let full = match self.stage {
                ZeroStage::Zero0 => t.shallow_clone(),
                ZeroStage::Zero1 if self.layout.world == 1 => t.shallow_clone(),
                ZeroStage::Zero1 => {
                    let mut buf = Tensor::zeros([self.layout.padded], (t.kind(), self.device));
                    self.coll.all_gather(&t, &mut buf)?;
                    buf
                }
            };
            out.push((name, full.narrow(0, 0, len).to_device(Device::Cpu).copy()));
        }
        Ok(out)
    }

    /// Loads a consolidated state ([`DataParallelOptimizer::full_state`] at any world size or
    /// stage, or a single-device [`FlatOptimizer::state`] over the unpadded parameters): each
    /// rank takes its part. Not collective.
    pub fn load_full_state(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        let len = self.layout.len;
        let range = self.layout.shard_range();
        let mut local = Vec::with_capacity(state.len());
        for (name, t) in state {
            if t.dim() != 1 {
                local.push((name.clone(), t.shallow_clone()));
                continue;
            }
            ensure!(
                t.numel() as i64 == len,
                "optimizer state {name} has {} elements; this model has {len} parameters",
                t.numel()
            );
            let padded = Tensor::zeros([self.layout.padded], (t.kind(), self.device));
            tch::no_grad(|| padded.narrow(0, 0, len).copy_(t));
            let piece = match self.stage {
                ZeroStage::Zero0 => padded,
                ZeroStage::Zero1 => padded.narrow(0, range.start, range.end - range.start),
            };
            local.push((name.clone(), piece));
        }
        self.opt.load_state(&local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::collective::LocalGroup;
    use tch::nn::{Init, VarStore};

    /// LeNet-5's parameter shapes for 3-channel 32×32 inputs: 62,006 parameters.
    const LENET: [&[i64]; 10] = [
        &[6, 3, 5, 5],
        &[6],
        &[16, 6, 5, 5],
        &[16],
        &[120, 400],
        &[120],
        &[84, 120],
        &[84],
        &[10, 84],
        &[10],
    ];
    const N: i64 = 62_006;

    fn sgd() -> OptimizerConfig {
        OptimizerConfig::Sgd {
            lr: 0.05,
            momentum: 0.9,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 5e-4,
        }
    }

    fn adam() -> OptimizerConfig {
        OptimizerConfig::Adam {
            lr: 1e-3,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 1e-4,
        }
    }

    fn adamw() -> OptimizerConfig {
        OptimizerConfig::AdamW {
            lr: 1e-3,
            betas: [0.9, 0.99],
            eps: 1e-8,
            weight_decay: 1e-2,
        }
    }

    struct Spec {
        world: usize,
        stage: ZeroStage,
        cfg: OptimizerConfig,
        lr: f64,
        /// The schedule's momentum override of each step (missing: None).
        momentum: Vec<Option<f64>>,
        clip: Option<f64>,
        check_overflow: bool,
        init: Tensor,
        state: Option<Vec<(String, Tensor)>>,
        /// grads[step][rank], unpadded.
        grads: Vec<Vec<Tensor>>,
    }

    struct RankResult {
        params: Tensor,
        outcomes: Vec<StepOutcome>,
        state_bytes: u64,
        steps_taken: u64,
        full_state: Vec<(String, Tensor)>,
    }

    fn run(spec: Spec) -> Vec<RankResult> {
        let group = LocalGroup::new(spec.world);
        let threads: Vec<_> = group
            .into_iter()
            .enumerate()
            .map(|(rank, coll)| {
                let init = spec.init.copy();
                let state: Option<Vec<(String, Tensor)>> = spec
                    .state
                    .as_ref()
                    .map(|s| s.iter().map(|(n, t)| (n.clone(), t.copy())).collect());
                let grads: Vec<Tensor> = spec.grads.iter().map(|g| g[rank].copy()).collect();
                let (world, stage, cfg, lr, clip, check) = (
                    spec.world,
                    spec.stage,
                    spec.cfg.clone(),
                    spec.lr,
                    spec.clip,
                    spec.check_overflow,
                );
                let momentum = spec.momentum.clone();
                std::thread::spawn(move || {
                    // One intra-op thread per worker, as CPU workers run (2 cores here).
                    tch::set_num_threads(1);
                    let vs = VarStore::new(Device::Cpu);
                    let root = vs.root();
                    for (i, s) in LENET.iter().enumerate() {
                        let _ = root.var(&format!("p{i}"), s, Init::Const(0.0));
                    }
                    let mut flat = FlatParams::with_padding(&vs, ShardLayout::pad_multiple(world));
                    tch::no_grad(|| flat.params.narrow(0, 0, N).copy_(&init));
                    let layout = ShardLayout::for_flat(&flat, world, rank).unwrap();
                    let mut dp = DataParallelOptimizer::new(
                        stage,
                        &cfg,
                        layout,
                        Box::new(coll),
                        Device::Cpu,
                    )
                    .unwrap();
                    if let Some(s) = state {
                        dp.load_full_state(&s).unwrap();
                    }
                    let mut outcomes = Vec::new();
                    for (i, g) in grads.into_iter().enumerate() {
                        flat.zero_grads();
                        tch::no_grad(|| flat.grads.narrow(0, 0, N).copy_(&g));
                        let m = momentum.get(i).copied().flatten();
                        outcomes.push(dp.step(&mut flat, lr, m, clip, check).unwrap());
                    }
                    let full_state = dp.full_state().unwrap();
                    assert!(flat.is_intact());
                    RankResult {
                        params: flat.params.narrow(0, 0, N).copy(),
                        outcomes,
                        state_bytes: dp.optimizer_state_bytes(),
                        steps_taken: dp.steps_taken(),
                        full_state,
                    }
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    }

    /// Per-rank gradients for `steps` steps at world 2, and their average (what one worker
    /// computing over the whole global batch would get): (g0 + g1) / 2 in fp32, which is what
    /// the collective's average computes.
    fn grads2(seed: i64, steps: usize) -> (Vec<Vec<Tensor>>, Vec<Vec<Tensor>>) {
        tch::manual_seed(seed);
        let mut per_rank = Vec::new();
        let mut mean = Vec::new();
        for _ in 0..steps {
            let g0 = Tensor::randn([N], (Kind::Float, Device::Cpu));
            let g1 = Tensor::randn([N], (Kind::Float, Device::Cpu)) * 3.0;
            mean.push(vec![(&g0 + &g1) / 2.0]);
            per_rank.push(vec![g0, g1]);
        }
        (per_rank, mean)
    }

    fn init(seed: i64) -> Tensor {
        tch::manual_seed(seed);
        Tensor::randn([N], (Kind::Float, Device::Cpu)) * 0.1
    }

    fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
        let d = (a - b).abs().max().double_value(&[]);
        d / b.abs().max().double_value(&[]).max(1e-30)
    }

    fn spec(world: usize, stage: ZeroStage, cfg: OptimizerConfig, grads: &[Vec<Tensor>]) -> Spec {
        Spec {
            world,
            stage,
            lr: cfg.lr(),
            cfg,
            momentum: Vec::new(),
            clip: None,
            check_overflow: false,
            init: init(7),
            state: None,
            grads: grads
                .iter()
                .map(|g| g.iter().map(|t| t.shallow_clone()).collect())
                .collect(),
        }
    }

    #[test]
    fn layout_pads_and_partitions() {
        let l = ShardLayout::new(N, 1, 0);
        assert_eq!((l.padded, l.shard_len(), l.padding()), (N, N, 0));
        for world in [2usize, 3, 4, 8] {
            let mut covered = 0;
            for rank in 0..world {
                let l = ShardLayout::new(N, world, rank);
                assert_eq!(l.padded % (world as i64 * ShardLayout::ALIGN), 0);
                assert!(l.padding() < world as i64 * ShardLayout::ALIGN);
                assert_eq!(l.shard_range().start, covered);
                covered = l.shard_range().end;
            }
            assert_eq!(covered, ShardLayout::new(N, world, 0).padded);
        }
    }

    #[test]
    fn one_worker_zero0_and_zero1_reach_the_same_parameters() {
        let (per_rank, mean) = grads2(11, 6);
        for cfg in [sgd(), adam(), adamw()] {
            let reference = run(spec(1, ZeroStage::Zero0, cfg.clone(), &mean));
            let one_z1 = run(spec(1, ZeroStage::Zero1, cfg.clone(), &mean));
            let z0 = run(spec(2, ZeroStage::Zero0, cfg.clone(), &per_rank));
            let z1 = run(spec(2, ZeroStage::Zero1, cfg.clone(), &per_rank));
            let want = &reference[0].params;
            assert!(one_z1[0].params.equal(want));
            for (name, res) in [("zero0", &z0), ("zero1", &z1)] {
                assert!(
                    res[0].params.equal(&res[1].params),
                    "{cfg:?} {name}: replicas differ"
                );
                let rel = rel_diff(&res[0].params, want);
                eprintln!(
                    "{cfg:?} {name}: max relative difference to one worker {rel:e} (bit-identical: {})",
                    res[0].params.equal(want)
                );
                assert!(rel < 1e-6, "{cfg:?} {name}: {rel}");
                assert_eq!(res[0].steps_taken, 6);
            }
            // Moving away from the start at all (the comparison is not vacuous).
            assert!(rel_diff(want, &init(7)) > 1e-3);
        }
    }

    /// A schedule's momentum (SGD momentum, Adam/AdamW β1) gives the same parameters at every
    /// world size and stage; SGD configured without momentum starts its buffer at the first
    /// step with one, on every shard alike, and the consolidated state carries it.
    #[test]
    fn momentum_schedule_is_the_same_at_every_world_size_and_stage() {
        let (per_rank, mean) = grads2(13, 5);
        let momentum = vec![None, Some(0.9), Some(0.85), Some(0.8), Some(0.85)];
        let plain_sgd = OptimizerConfig::Sgd {
            lr: 0.05,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 5e-4,
        };
        for cfg in [plain_sgd, sgd(), adam(), adamw()] {
            let with = |world, stage, grads: &[Vec<Tensor>]| {
                run(Spec {
                    momentum: momentum.clone(),
                    ..spec(world, stage, cfg.clone(), grads)
                })
            };
            let reference = with(1, ZeroStage::Zero0, &mean);
            let constant = run(spec(1, ZeroStage::Zero0, cfg.clone(), &mean));
            assert!(
                rel_diff(&reference[0].params, &constant[0].params) > 1e-6,
                "{cfg:?}: the momentum override changed nothing"
            );
            let want = &reference[0].params;
            for stage in [ZeroStage::Zero0, ZeroStage::Zero1] {
                let res = with(2, stage, &per_rank);
                let rel = rel_diff(&res[0].params, want);
                assert!(rel < 1e-6, "{cfg:?} {stage:?}: {rel}");
                assert!(res[0].params.equal(&res[1].params));
                let names: Vec<&str> = res[0].full_state.iter().map(|(n, _)| n.as_str()).collect();
                assert!(names.contains(&"m"), "{cfg:?} {stage:?}: {names:?}");
            }
        }
    }

    #[test]
    fn zero1_state_is_one_shard_plus_padding() {
        let (per_rank, _) = grads2(3, 1);
        for (cfg, tensors) in [(sgd(), 1u64), (adam(), 2)] {
            let z0 = run(spec(2, ZeroStage::Zero0, cfg.clone(), &per_rank));
            let z1 = run(spec(2, ZeroStage::Zero1, cfg.clone(), &per_rank));
            let l = ShardLayout::new(N, 2, 0);
            for r in 0..2 {
                assert_eq!(z0[r].state_bytes, tensors * 4 * l.padded as u64);
                assert_eq!(z1[r].state_bytes, tensors * 4 * l.shard_len() as u64);
            }
            assert_eq!(2 * z1[0].state_bytes, z0[0].state_bytes);
            assert!(l.padded - N < 32);
        }
    }

    #[test]
    fn clipping_uses_the_global_norm() {
        let (mut per_rank, _) = grads2(5, 3);
        // Make rank 0's half of the buffer dominate, so shard norms differ widely.
        for g in per_rank.iter_mut() {
            let big = g[0].narrow(0, 0, N / 2) * 50.0;
            tch::no_grad(|| g[0].narrow(0, 0, N / 2).copy_(&big));
        }
        let mean: Vec<Vec<Tensor>> = per_rank
            .iter()
            .map(|g| vec![(&g[0] + &g[1]) / 2.0])
            .collect();
        for cfg in [sgd(), adam()] {
            let mut runs = Vec::new();
            for (world, stage, grads) in [
                (1, ZeroStage::Zero0, &mean),
                (2, ZeroStage::Zero0, &per_rank),
                (2, ZeroStage::Zero1, &per_rank),
            ] {
                let mut s = spec(world, stage, cfg.clone(), grads);
                s.clip = Some(1.0);
                runs.push(run(s));
            }
            let want = &runs[0][0];
            let norm0 = want.outcomes[0].grad_norm_value().unwrap();
            assert!(norm0 > 10.0, "clipping is active: {norm0}");
            for res in &runs[1..] {
                for r in res {
                    for (a, b) in r.outcomes.iter().zip(&want.outcomes) {
                        let (a, b) = (a.grad_norm_value().unwrap(), b.grad_norm_value().unwrap());
                        assert!((a - b).abs() / b < 1e-6, "norm {a} vs {b}");
                    }
                    assert!(rel_diff(&r.params, &want.params) < 1e-6);
                }
            }
        }
    }

    /// Clipping happens on the device with the host formula's numbers: above `max` the
    /// gradients come out scaled by exactly `max / (norm + 1e-6)` (rounded to f32, as the
    /// host-side scalar multiply did), so their norm is `max`; below it they are untouched.
    #[test]
    fn clipping_scales_to_max_norm_and_leaves_small_gradients_alone() {
        for stage in [ZeroStage::Zero0, ZeroStage::Zero1] {
            for (scale, max) in [(50.0, 1.0), (1e-3, 1e3)] {
                let vs = VarStore::new(Device::Cpu);
                let _ = vs.root().var("w", &[N], Init::Const(0.0));
                let mut flat = FlatParams::with_padding(&vs, 1);
                // Deterministic (other tests seed the shared generator concurrently).
                let g = (Tensor::arange(N, (Kind::Float, Device::Cpu)) * 0.731).sin() * scale;
                tch::no_grad(|| flat.grads.copy_(&g));
                let layout = ShardLayout::for_flat(&flat, 1, 0).unwrap();
                let coll = LocalGroup::new(1).pop().unwrap();
                let mut dp =
                    DataParallelOptimizer::new(stage, &sgd(), layout, Box::new(coll), Device::Cpu)
                        .unwrap();
                let out = dp.step(&mut flat, 0.0, None, Some(max), false).unwrap();
                let before = g.norm_scalaropt_dtype(2.0, Kind::Double).double_value(&[]);
                assert_eq!(out.grad_norm_value(), Some(before), "{stage}");
                assert!(!out.overflow);
                let after = flat
                    .grads
                    .norm_scalaropt_dtype(2.0, Kind::Double)
                    .double_value(&[]);
                let coef = max / (before + 1e-6);
                if coef < 1.0 {
                    assert!(before > 10.0 * max, "clipping is exercised: {before}");
                    let want = &g * coef;
                    assert!(
                        flat.grads.equal(&want),
                        "{stage}: not the host formula's bits"
                    );
                    assert!(
                        (after - max).abs() < 1e-5 * max,
                        "{stage}: {after} vs {max}"
                    );
                } else {
                    assert!(flat.grads.equal(&g), "{stage}: small gradients changed");
                }
            }
        }
    }

    #[test]
    fn an_overflow_on_one_rank_makes_every_rank_skip() {
        let (per_rank, _) = grads2(9, 3);
        // Step 2: rank 1's gradient overflows in the part that rank 0 owns under zero1, so
        // rank 1's own shard is finite after the reduce-scatter; it must skip all the same.
        let _ = per_rank[1][1].narrow(0, 5, 1).fill_(f64::INFINITY);
        for stage in [ZeroStage::Zero0, ZeroStage::Zero1] {
            let mut s = spec(2, stage, adam(), &per_rank);
            s.check_overflow = true;
            let res = run(s);
            // The same run without step 2.
            let skipped: Vec<Vec<Tensor>> = [0, 2]
                .iter()
                .map(|&i| per_rank[i].iter().map(|t| t.shallow_clone()).collect())
                .collect();
            let mut s = spec(2, stage, adam(), &skipped);
            s.check_overflow = true;
            let without = run(s);
            for r in 0..2 {
                let o = &res[r].outcomes;
                assert!(
                    !o[0].overflow && o[1].overflow && !o[2].overflow,
                    "{stage} {o:?}"
                );
                assert!(!o[1].grad_norm_value().unwrap().is_finite());
                assert_eq!(res[r].steps_taken, 2);
                assert!(res[r].params.equal(&without[r].params), "{stage} rank {r}");
            }
        }
    }

    #[test]
    fn full_state_moves_between_world_sizes_and_stages() {
        let (per_rank, mean) = grads2(21, 6);
        for cfg in [adam(), sgd()] {
            // Uninterrupted references.
            let ref1 = run(spec(1, ZeroStage::Zero0, cfg.clone(), &mean));
            let ref2 = run(spec(2, ZeroStage::Zero1, cfg.clone(), &per_rank));
            // World 2 zero1 for 3 steps, then continue at world 1.
            let first = run(spec(2, ZeroStage::Zero1, cfg.clone(), &per_rank[..3]));
            let st = &first[0].full_state;
            for (n, t) in st {
                if n != "step" {
                    assert_eq!(
                        t.numel() as i64,
                        N,
                        "{n} is consolidated to the model's size"
                    );
                    assert!(t.equal(&first[1].full_state.iter().find(|x| &x.0 == n).unwrap().1));
                }
            }
            let mut s = spec(1, ZeroStage::Zero0, cfg.clone(), &mean[3..]);
            s.init = first[0].params.copy();
            s.state = Some(st.iter().map(|(n, t)| (n.clone(), t.copy())).collect());
            let cont1 = run(s);
            assert!(rel_diff(&cont1[0].params, &ref1[0].params) < 1e-6);
            assert_eq!(cont1[0].steps_taken, 6);
            // World 1 for 3 steps, then continue at world 2 under zero1 and under zero0.
            let first1 = run(spec(1, ZeroStage::Zero0, cfg.clone(), &mean[..3]));
            for stage in [ZeroStage::Zero1, ZeroStage::Zero0] {
                let mut s = spec(2, stage, cfg.clone(), &per_rank[3..]);
                s.init = first1[0].params.copy();
                s.state = Some(
                    first1[0]
                        .full_state
                        .iter()
                        .map(|(n, t)| (n.clone(), t.copy()))
                        .collect(),
                );
                let cont2 = run(s);
                for r in &cont2 {
                    assert!(rel_diff(&r.params, &ref2[0].params) < 1e-6, "{stage}");
                    assert_eq!(r.steps_taken, 6);
                }
            }
            // The consolidated state equals the single-worker state.
            for ((n1, a), (n2, b)) in ref1[0].full_state.iter().zip(&ref2[0].full_state) {
                assert_eq!(n1, n2);
                if n1 != "step" {
                    assert!(rel_diff(b, a) < 1e-5, "{n1}");
                } else {
                    assert!(a.equal(b));
                }
            }
        }
    }

    #[test]
    fn wrong_sizes_are_clear_errors() {
        let mut g = LocalGroup::new(1);
        let coll = g.pop().unwrap();
        let layout = ShardLayout::new(100, 1, 0);
        let mut dp = DataParallelOptimizer::new(
            ZeroStage::Zero1,
            &adam(),
            layout,
            Box::new(coll),
            Device::Cpu,
        )
        .unwrap();
        let bad = vec![
            ("step".to_string(), Tensor::from(3i64)),
            (
                "m".to_string(),
                Tensor::zeros([99], (Kind::Float, Device::Cpu)),
            ),
            (
                "v".to_string(),
                Tensor::zeros([99], (Kind::Float, Device::Cpu)),
            ),
        ];
        let e = dp.load_full_state(&bad).unwrap_err().to_string();
        assert!(e.contains("99") && e.contains("100"), "{e}");
        let mut g = LocalGroup::new(2);
        let e = DataParallelOptimizer::new(
            ZeroStage::Zero0,
            &adam(),
            ShardLayout::new(100, 2, 0),
            Box::new(g.pop().unwrap()),
            Device::Cpu,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("rank 1 of 2"), "{e}");
    }

    #[test]
    fn loss_mean_over_ranks() {
        let group = LocalGroup::new(3);
        let threads: Vec<_> = group
            .into_iter()
            .enumerate()
            .map(|(r, c)| {
                std::thread::spawn(move || {
                    let layout = ShardLayout::new(10, 3, r);
                    let mut dp = DataParallelOptimizer::new(
                        ZeroStage::Zero1,
                        &sgd(),
                        layout,
                        Box::new(c),
                        Device::Cpu,
                    )
                    .unwrap();
                    let mean = dp.mean_across_ranks(r as f64 + 1.0).unwrap();
                    let mut v = [r as f64, 1.0];
                    dp.all_reduce_scalars(&mut v, ReduceOp::Sum).unwrap();
                    (mean, v)
                })
            })
            .collect();
        for t in threads {
            let (mean, v) = t.join().unwrap();
            assert_eq!(mean, 2.0);
            assert_eq!(v, [3.0, 3.0]);
        }
    }

    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    }

    /// `cargo test --release --lib zero::tests::bench -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn bench_zero_steps() {
        // For scale: LeNet-5 forward + backward on one thread (tch's own layers, the same
        // shapes as the project's model).
        {
            use tch::nn::{self, Module, OptimizerConfig as _};
            tch::set_num_threads(1);
            let vs = VarStore::new(Device::Cpu);
            let p = vs.root();
            let net = nn::seq()
                .add(nn::conv2d(&p / "c1", 3, 6, 5, Default::default()))
                .add_fn(|x| x.relu().max_pool2d_default(2))
                .add(nn::conv2d(&p / "c2", 6, 16, 5, Default::default()))
                .add_fn(|x| x.relu().max_pool2d_default(2).flatten(1, -1))
                .add(nn::linear(&p / "f1", 400, 120, Default::default()))
                .add_fn(|x| x.relu())
                .add(nn::linear(&p / "f2", 120, 84, Default::default()))
                .add_fn(|x| x.relu())
                .add(nn::linear(&p / "f3", 84, 10, Default::default()));
            let mut sgd = nn::Sgd::default().build(&vs, 0.01).unwrap();
            for batch in [16i64, 64, 128] {
                let x = Tensor::randn([batch, 3, 32, 32], (Kind::Float, Device::Cpu));
                let y = Tensor::zeros([batch], (Kind::Int64, Device::Cpu));
                let mut v = Vec::new();
                for i in 0..60 {
                    let t0 = Instant::now();
                    sgd.zero_grad();
                    net.forward(&x).cross_entropy_for_logits(&y).backward();
                    if i >= 10 {
                        v.push(t0.elapsed().as_secs_f64() * 1e6);
                    }
                }
                println!(
                    "lenet forward+backward, batch {batch}, 1 thread: {:.0} µs",
                    median(v)
                );
            }
        }
        let steps = 300;
        tch::manual_seed(1);
        let g: Vec<Vec<Tensor>> = (0..steps)
            .map(|_| {
                let t = Tensor::randn([N], (Kind::Float, Device::Cpu));
                vec![t.copy(), t]
            })
            .collect();
        let g1: Vec<Vec<Tensor>> = g.iter().map(|v| vec![v[0].copy()]).collect();
        for cfg in [sgd(), adam()] {
            for (world, stage, grads) in [
                (1, ZeroStage::Zero0, &g1),
                (2, ZeroStage::Zero0, &g),
                (2, ZeroStage::Zero1, &g),
            ] {
                let res = run(spec(world, stage, cfg.clone(), grads));
                let o = &res[0].outcomes[20..];
                let total = median(o.iter().map(|o| o.t_comm + o.t_opt).collect());
                let comm = median(o.iter().map(|o| o.t_comm).collect());
                let opt = median(o.iter().map(|o| o.t_opt).collect());
                println!(
                    "{} world {world} {stage}: step {:.1} µs (comm {:.1}, opt {:.1}), state {} B/rank",
                    match cfg {
                        OptimizerConfig::Sgd { .. } => "sgd-momentum",
                        _ => "adam",
                    },
                    total * 1e6,
                    comm * 1e6,
                    opt * 1e6,
                    res[0].state_bytes
                );
            }
        }
    }
}
