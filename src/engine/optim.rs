//! SGD, Adam and AdamW over one flat fp32 buffer, with `torch.optim`'s semantics.
//!
//! tch 0.24 exposes no `alpha`/`value` scalars on `add_`/`addcmul_`/`addcdiv_`, so scaled updates
//! are written with a 0-dim scalar tensor: `addcmul_(x, c)` for `p += c·x`, and Adam's
//! `p.addcdiv_(m, denom, value=-step_size)` as `g = m·(-step_size)` (the gradient is work space by
//! then) followed by `p.addcdiv_(g, denom)`, the same products and quotients as torch's kernel.
//! Nothing is divided by the learning rate, so every intermediate is finite for any finite
//! lr ≥ 0 (and eps > 0): at lr 0 the parameters stay bit for bit as they were while the moments
//! and the step count advance, as in torch.
//!
//! A schedule may set the momentum of each step (PyTorch's `CyclicLR`, DeepSpeed's `OneCycle`):
//! SGD's `momentum` or Adam/AdamW's β1, read afresh every step as torch reads its param group.
//! The override is not optimizer state (it is a pure function of the step) and is not saved.
//! Results agree with libtorch's own optimizers to float rounding (see the tests).
//!
//! The 0-dim scalars live on the buffer's device, made once and refilled each step (`fill_`
//! passes the value as a kernel argument): no host→device copy and no synchronisation per step.
use tch::{Device, Kind, Tensor};

use crate::config::OptimizerConfig;

pub struct FlatOptimizer {
    config: OptimizerConfig,
    len: i64,
    device: Device,
    /// Optimizer steps taken (torch's `state['step']`).
    step: u64,
    /// SGD: momentum buffer, created at the first step with non-zero momentum (torch's
    /// `momentum_buffer`, None until then). Adam/AdamW: first moment.
    m: Option<Tensor>,
    /// Adam/AdamW: second moment.
    v: Option<Tensor>,
    /// Reused work space the size of the buffer (Adam's denominator).
    scratch: Option<Tensor>,
    /// The update's 0-dim fp32 scalars on the device, by role (see [`Scalar`]).
    scalars: Vec<Option<Tensor>>,
}

/// The roles of the 0-dim scalars an update multiplies by.
#[derive(Clone, Copy)]
enum Scalar {
    WeightDecay,
    OneMinusDampening,
    Momentum,
    NegLr,
    OneMinusBeta2,
    NegStepSize,
}

const SCALARS: usize = 6;

impl FlatOptimizer {
    pub fn new(config: &OptimizerConfig, len: i64, device: Device) -> FlatOptimizer {
        let zeros = || Tensor::zeros([len], (Kind::Float, device));
        let (m, v, scratch) = match config {
            OptimizerConfig::Sgd { .. } => (None, None, None),
            OptimizerConfig::Adam { .. } | OptimizerConfig::AdamW { .. } => {
                (Some(zeros()), Some(zeros()), Some(zeros()))
            }
        };
        FlatOptimizer {
            config: config.clone(),
            len,
            device,
            step: 0,
            m,
            v,
            scratch,
            scalars: (0..SCALARS).map(|_| None).collect(),
        }
    }

    /// The device scalar for `role`, set to `x` (as f32, like `Tensor::from(x as f32)`).
    fn scalar(&mut self, role: Scalar, x: f64, device: Device) -> Tensor {
        let slot = &mut self.scalars[role as usize];
        let t = slot.get_or_insert_with(|| Tensor::zeros([], (Kind::Float, device)));
        let _ = t.fill_(x);
        t.shallow_clone()
    }

    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// Bytes of optimizer state (what ZeRO-1 shards): what is held, counting SGD's momentum
    /// buffer from the start when momentum is configured (the first step creates it). A buffer
    /// that only a schedule's momentum asks for counts once it exists.
    pub fn state_bytes(&self) -> u64 {
        let elems = |t: &Option<Tensor>| t.as_ref().map_or(0, |t| t.numel() as u64);
        let m = match (&self.m, &self.config) {
            (None, OptimizerConfig::Sgd { momentum, .. }) if *momentum != 0.0 => self.len as u64,
            (m, _) => elems(m),
        };
        (m + elems(&self.v)) * 4
    }

    /// One update of `params` from `grads` at learning rate `lr`; `momentum` (a schedule's)
    /// replaces SGD's configured momentum or Adam/AdamW's β1 for this step (None: the
    /// configured value). `grads` is used as work space.
    pub fn step(
        &mut self,
        params: &mut Tensor,
        grads: &mut Tensor,
        lr: f64,
        momentum: Option<f64>,
    ) {
        tch::no_grad(|| self.step_inner(params, grads, lr, momentum));
    }

    fn step_inner(&mut self, p: &mut Tensor, g: &mut Tensor, lr: f64, momentum: Option<f64>) {
        let dev = p.device();
        self.step += 1;
        match self.config {
            OptimizerConfig::Sgd {
                momentum: configured,
                dampening,
                nesterov,
                weight_decay,
                ..
            } => {
                let momentum = momentum.unwrap_or(configured);
                let neg_lr = self.scalar(Scalar::NegLr, -lr, dev);
                let damp = (momentum != 0.0 && dampening != 0.0)
                    .then(|| self.scalar(Scalar::OneMinusDampening, 1.0 - dampening, dev));
                let mom = (momentum != 0.0 && nesterov)
                    .then(|| self.scalar(Scalar::Momentum, momentum, dev));
                if weight_decay != 0.0 {
                    let _ = g.addcmul_(p, &self.scalar(Scalar::WeightDecay, weight_decay, dev));
                }
                if momentum != 0.0 {
                    match self.m.as_mut() {
                        // torch.optim.SGD: the buffer starts as the gradient, undampened.
                        None => self.m = Some(g.copy()),
                        Some(buf) => {
                            let _ = buf.g_mul_scalar_(momentum);
                            match &damp {
                                None => {
                                    let _ = buf.g_add_(g);
                                }
                                Some(d) => {
                                    let _ = buf.addcmul_(g, d);
                                }
                            }
                        }
                    }
                    let buf = self.m.as_ref().expect("momentum buffer");
                    if let Some(mom) = &mom {
                        let _ = g.addcmul_(buf, mom);
                        let _ = p.addcmul_(g, &neg_lr);
                    } else {
                        let _ = p.addcmul_(buf, &neg_lr);
                    }
                } else {
                    let _ = p.addcmul_(g, &neg_lr);
                }
            }
            OptimizerConfig::Adam {
                betas,
                eps,
                weight_decay,
                ..
            } => {
                if weight_decay != 0.0 {
                    let _ = g.addcmul_(p, &self.scalar(Scalar::WeightDecay, weight_decay, dev));
                }
                let b1 = momentum.unwrap_or(betas[0]);
                self.adam_update(p, g, lr, [b1, betas[1]], eps);
            }
            OptimizerConfig::AdamW {
                betas,
                eps,
                weight_decay,
                ..
            } => {
                if weight_decay != 0.0 {
                    let _ = p.g_mul_scalar_(1.0 - lr * weight_decay);
                }
                let b1 = momentum.unwrap_or(betas[0]);
                self.adam_update(p, g, lr, [b1, betas[1]], eps);
            }
        }
    }

    /// torch's `_single_tensor_adam`, operation for operation: `m.lerp_(g, 1 - β1)`,
    /// `v.mul_(β2).addcmul_(g, g, value=1 - β2)`, bias corrections by `pow`, then
    /// `p.addcdiv_(m, sqrt(v)/sqrt(bc2) + eps, value=-lr/bc1)`.
    fn adam_update(&mut self, p: &mut Tensor, g: &mut Tensor, lr: f64, betas: [f64; 2], eps: f64) {
        let (b1, b2) = (betas[0], betas[1]);
        let dev = p.device();
        // Python: `1 - beta1 ** step`, `bias_correction2 ** 0.5` (C `pow`).
        let t = self.step as f64;
        let bc1 = 1.0 - b1.powf(t);
        let bc2_sqrt = (1.0 - b2.powf(t)).powf(0.5);
        let step_size = lr / bc1;
        let one_minus_b2 = self.scalar(Scalar::OneMinusBeta2, 1.0 - b2, dev);
        let neg_step_size = self.scalar(Scalar::NegStepSize, -step_size, dev);
        let m = self.m.as_mut().expect("first moment");
        let v = self.v.as_mut().expect("second moment");
        let s = self.scratch.as_mut().expect("scratch");
        let _ = m.lerp_(&*g, 1.0 - b1);
        // v·β2 + ((1 - β2)·g)·g, the products of torch's addcmul kernel.
        let _ = g.mul_out(s, &one_minus_b2);
        let _ = v.g_mul_scalar_(b2);
        let _ = v.addcmul_(&*s, &*g);
        // denom = sqrt(v)/bc2_sqrt + eps ≥ eps.
        let _ = v.sqrt_out(s);
        let _ = s.g_div_scalar_(bc2_sqrt);
        let _ = s.g_add_scalar_(eps);
        // p += (-step_size·m)/denom. The gradient is no longer needed: it holds -step_size·m.
        let _ = m.mul_out(g, &neg_step_size);
        let _ = p.addcdiv_(&*g, &*s);
    }

    /// Named state tensors for checkpoints.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("step".to_string(), Tensor::from(self.step as i64))];
        if let Some(m) = &self.m {
            out.push(("m".into(), m.shallow_clone()));
        }
        if let Some(v) = &self.v {
            out.push(("v".into(), v.shallow_clone()));
        }
        out
    }

    pub fn load_state(&mut self, state: &[(String, Tensor)]) -> anyhow::Result<()> {
        let find = |name: &str| state.iter().find(|(n, _)| n == name).map(|(_, t)| t);
        let step = find("step").ok_or_else(|| anyhow::anyhow!("optimizer state has no step"))?;
        let step = step.int64_value(&[]) as u64;
        let sgd = matches!(self.config, OptimizerConfig::Sgd { .. });
        let configured_momentum = match self.config {
            OptimizerConfig::Sgd { momentum, .. } => momentum != 0.0,
            _ => false,
        };
        if sgd {
            // The buffer exists once a step used momentum: in the checkpoint if it did.
            if find("m").is_some() {
                self.m
                    .get_or_insert_with(|| Tensor::zeros([self.len], (Kind::Float, self.device)));
            } else {
                anyhow::ensure!(
                    !(configured_momentum && step > 0),
                    "optimizer state has no m (SGD with momentum after {step} steps)"
                );
                self.m = None;
            }
        }
        for (name, slot) in [("m", &mut self.m), ("v", &mut self.v)] {
            if let Some(dst) = slot {
                let src =
                    find(name).ok_or_else(|| anyhow::anyhow!("optimizer state has no {name}"))?;
                anyhow::ensure!(
                    src.size() == dst.size(),
                    "optimizer state {name} has {:?} elements, the model needs {:?}",
                    src.size(),
                    dst.size()
                );
                tch::no_grad(|| dst.copy_(src));
            }
        }
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::COptimizer;

    /// One step's hyper-parameters as the schedule hands them over: lr and the momentum
    /// override (SGD momentum, Adam/AdamW β1).
    type Hyper = (f64, Option<f64>);

    fn ours_step(opt: &mut FlatOptimizer, p: &mut Tensor, g: &mut Tensor, h: Hyper) {
        opt.step(p, g, h.0, h.1);
    }

    /// The momentum libtorch's optimizer must be set to for a step: the override, or the
    /// configured value.
    fn configured_momentum(cfg: &OptimizerConfig) -> f64 {
        match cfg {
            OptimizerConfig::Sgd { momentum, .. } => *momentum,
            OptimizerConfig::Adam { betas, .. } | OptimizerConfig::AdamW { betas, .. } => betas[0],
        }
    }

    /// A gradient with exact zeros in every other element (unused parameters, the flat
    /// buffer's padding): there Adam's second moment stays 0.
    fn gradient(n: i64) -> Tensor {
        let g = Tensor::randn([n], (Kind::Float, Device::Cpu));
        let keep = Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(2);
        g * keep.to_kind(Kind::Float)
    }

    struct Compared {
        /// Largest |ours - theirs| / max |theirs| after the last step.
        rel: f64,
        /// Ours and theirs finite after every step.
        finite: bool,
        /// Steps at lr 0 left both parameter vectors bit for bit as they were.
        lr0_unchanged: bool,
    }

    /// Runs one update per entry of `hypers` with our optimizer and with libtorch's own on the
    /// same random parameters and gradients (lr and momentum set on libtorch's optimizer before
    /// each step, as a scheduler does), and compares.
    fn compare(ours: OptimizerConfig, mut theirs: COptimizer, hypers: &[Hyper]) -> Compared {
        tch::manual_seed(1);
        let n = 1000;
        let init = Tensor::randn([n], (Kind::Float, Device::Cpu));
        let mut p = init.copy();
        let reference = init.copy().set_requires_grad(true);
        theirs.add_parameters(&reference, 0).unwrap();
        let mut opt = FlatOptimizer::new(&ours, n, Device::Cpu);
        let mut out = Compared {
            rel: 0.0,
            finite: true,
            lr0_unchanged: true,
        };
        for &(lr, momentum) in hypers {
            let (before, before_ref) = (p.copy(), reference.detach().copy());
            let g = gradient(n);
            let mut g_ours = g.copy();
            ours_step(&mut opt, &mut p, &mut g_ours, (lr, momentum));
            theirs.set_learning_rate(lr).unwrap();
            theirs
                .set_momentum(momentum.unwrap_or(configured_momentum(&ours)))
                .unwrap();
            theirs.zero_grad().unwrap();
            // d/dp sum(p·g) = g: hands libtorch's optimizer exactly our gradient.
            (&reference * &g).sum(Kind::Float).backward();
            theirs.step().unwrap();
            let finite = |t: &Tensor| t.isfinite().all().int64_value(&[]) == 1;
            out.finite &= finite(&p) && finite(&reference.detach());
            if lr == 0.0 {
                out.lr0_unchanged &= p.equal(&before) && reference.detach().equal(&before_ref);
            }
        }
        let diff = (&p - &reference).abs().max().double_value(&[]);
        let scale = reference.abs().max().double_value(&[]);
        out.rel = diff / scale;
        out
    }

    fn constant(lr: f64, steps: usize) -> Vec<Hyper> {
        vec![(lr, None); steps]
    }

    fn sgd(lr: f64, momentum: f64, dampening: f64, nesterov: bool, wd: f64) -> OptimizerConfig {
        OptimizerConfig::Sgd {
            lr,
            momentum,
            dampening,
            nesterov,
            weight_decay: wd,
        }
    }

    #[test]
    fn sgd_matches_libtorch() {
        for (momentum, dampening, nesterov, wd) in [
            (0.0, 0.0, false, 0.0),
            (0.9, 0.0, false, 5e-4),
            (0.9, 0.1, false, 0.0),
            (0.9, 0.0, true, 1e-2),
        ] {
            let cfg = sgd(0.1, momentum, dampening, nesterov, wd);
            let theirs = COptimizer::sgd(0.1, momentum, dampening, wd, nesterov).unwrap();
            let c = compare(cfg, theirs, &constant(0.1, 5));
            assert!(
                c.rel < 1e-6,
                "sgd m={momentum} d={dampening} n={nesterov}: {}",
                c.rel
            );
        }
    }

    #[test]
    fn adam_and_adamw_match_libtorch() {
        let adam = OptimizerConfig::Adam {
            lr: 1e-2,
            betas: [0.8, 0.999],
            eps: 1e-8,
            weight_decay: 3e-2,
        };
        let theirs = COptimizer::adam(1e-2, 0.8, 0.999, 3e-2, 1e-8, false).unwrap();
        let c = compare(adam, theirs, &constant(1e-2, 6));
        assert!(c.rel < 1e-5, "adam: {}", c.rel);
        let adamw = OptimizerConfig::AdamW {
            lr: 1e-2,
            betas: [0.9, 0.99],
            eps: 1e-6,
            weight_decay: 0.1,
        };
        let theirs = COptimizer::adamw(1e-2, 0.9, 0.99, 0.1, 1e-6, false).unwrap();
        let c = compare(adamw, theirs, &constant(1e-2, 6));
        assert!(c.rel < 1e-5, "adamw: {}", c.rel);
    }

    /// Every optimizer at lr ∈ {0, 1e-40, 1e-12, 1e-3, 1} × weight decay ∈ {0, 1e-2}, with
    /// gradients that are exactly 0 in half the elements: finite, unchanged at lr 0 (bit for
    /// bit, like libtorch), and in agreement with libtorch.
    #[test]
    fn every_optimizer_is_finite_and_matches_libtorch_at_any_lr() {
        for lr in [0.0, 1e-40, 1e-12, 1e-3, 1.0] {
            for wd in [0.0, 1e-2] {
                let cases: Vec<(&str, OptimizerConfig, COptimizer, f64)> = vec![
                    (
                        "adam",
                        OptimizerConfig::Adam {
                            lr,
                            betas: [0.9, 0.999],
                            eps: 1e-8,
                            weight_decay: wd,
                        },
                        COptimizer::adam(lr, 0.9, 0.999, wd, 1e-8, false).unwrap(),
                        1e-5,
                    ),
                    (
                        "adamw",
                        OptimizerConfig::AdamW {
                            lr,
                            betas: [0.9, 0.999],
                            eps: 1e-8,
                            weight_decay: wd,
                        },
                        COptimizer::adamw(lr, 0.9, 0.999, wd, 1e-8, false).unwrap(),
                        1e-5,
                    ),
                    (
                        "sgd",
                        sgd(lr, 0.0, 0.0, false, wd),
                        COptimizer::sgd(lr, 0.0, 0.0, wd, false).unwrap(),
                        1e-6,
                    ),
                    (
                        "sgd-nesterov",
                        sgd(lr, 0.9, 0.0, true, wd),
                        COptimizer::sgd(lr, 0.9, 0.0, wd, true).unwrap(),
                        1e-6,
                    ),
                ];
                for (name, cfg, theirs, tol) in cases {
                    let c = compare(cfg, theirs, &constant(lr, 4));
                    let what = format!("{name} lr={lr} wd={wd}");
                    assert!(c.finite, "{what}: non-finite parameters");
                    assert!(c.lr0_unchanged, "{what}: lr 0 changed the parameters");
                    assert!(c.rel < tol, "{what}: {}", c.rel);
                }
            }
        }
    }

    /// A warmup from 0 (lr 0, then small values, as `warmup_lr` and `warmup_cosine_lr` give):
    /// the first step leaves the parameters as they are but still advances the moments and the
    /// step count, so the following steps agree with libtorch.
    #[test]
    fn adam_warmup_from_lr_zero_matches_libtorch() {
        let warmup: Vec<Hyper> = [0.0, 0.0, 1e-4, 2e-4, 5e-4, 1e-3, 1e-3]
            .iter()
            .map(|&lr| (lr, None))
            .collect();
        for wd in [0.0, 1e-2] {
            let adam = OptimizerConfig::Adam {
                lr: 1e-3,
                betas: [0.9, 0.999],
                eps: 1e-8,
                weight_decay: wd,
            };
            let theirs = COptimizer::adam(1e-3, 0.9, 0.999, wd, 1e-8, false).unwrap();
            let c = compare(adam, theirs, &warmup);
            assert!(c.finite && c.lr0_unchanged, "adam wd={wd}");
            assert!(c.rel < 1e-5, "adam wd={wd}: {}", c.rel);
            let adamw = OptimizerConfig::AdamW {
                lr: 1e-3,
                betas: [0.9, 0.99],
                eps: 1e-8,
                weight_decay: wd,
            };
            let theirs = COptimizer::adamw(1e-3, 0.9, 0.99, wd, 1e-8, false).unwrap();
            let c = compare(adamw, theirs, &warmup);
            assert!(c.finite && c.lr0_unchanged, "adamw wd={wd}");
            assert!(c.rel < 1e-5, "adamw wd={wd}: {}", c.rel);
        }
    }

    /// Bit for bit against `torch.optim.Adam`/`AdamW` (torch 2.11, CPU, the single-tensor path
    /// torch takes for CPU tensors) through a warmup that starts and pauses at lr 0, with
    /// gradients exactly 0 in a third of the elements. Bits from tests/reference/adam_bits.py.
    #[test]
    fn adam_and_adamw_match_torch_optim_bit_for_bit() {
        const P0: [u32; 16] = [
            0xbf901b85, 0xbf93808a, 0xbe804bd6, 0xbede255d, 0x3f594515, 0x3f312783, 0xbea1cc6d,
            0xc0075fc1, 0x3ea50138, 0xbfa1b4f4, 0x3eb330ff, 0x3e9dc3bb, 0x3df56f77, 0x3f9e6b93,
            0x3f8ef28e, 0xbe7d367c,
        ];
        const GRADS: [[u32; 16]; 4] = [
            [
                0x80000000, 0xbfd91446, 0x3f111004, 0x00000000, 0x3f194d8b, 0xbfc70d5b, 0x80000000,
                0x3fed2f4e, 0x3f400c6b, 0x80000000, 0xbe318eeb, 0x3e3be1a4, 0x00000000, 0x3fcb0d00,
                0x3f72409c, 0x80000000,
            ],
            [
                0x80000000, 0x3d016764, 0xbefc4028, 0x00000000, 0x3ee11fd0, 0x3de637d6, 0x00000000,
                0x3ee1df3c, 0xbdd187b9, 0x00000000, 0xbe944f53, 0x3d571217, 0x00000000, 0x40135755,
                0xbfbc04b7, 0x80000000,
            ],
            [
                0x80000000, 0x3f5f71de, 0x3f8715f4, 0x00000000, 0xbe6bdd10, 0xbec89408, 0x00000000,
                0xbeca5217, 0xbee47694, 0x00000000, 0x3fc2af75, 0x405a45ad, 0x80000000, 0xbf9df823,
                0x3fe8ecc2, 0x80000000,
            ],
            [
                0x80000000, 0x3f6b833f, 0x3f8e2f39, 0x00000000, 0xbfbd34ce, 0x40244d8b, 0x80000000,
                0x3eabcd4f, 0xbfd08dc1, 0x80000000, 0xbef5acd6, 0xbeffd642, 0x80000000, 0x3f8eb657,
                0xbe100c2c, 0x00000000,
            ],
        ];
        const LRS: [f64; 4] = [0.0, 0.001, 0.0, 0.003];
        // Adam(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
        const ADAM: [u32; 16] = [
            0xbf8f9873, 0xbf93772a, 0xbe8162ce, 0xbedc1920, 0x3f593fff, 0x3f312272, 0xbe9fc035,
            0xc00784de, 0x3ea57739, 0xbfa131e2, 0x3eb36604, 0x3e9c9d4a, 0x3ded3f07, 0x3f9e1559,
            0x3f8ee382, 0xbe791e14,
        ];
        // AdamW(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
        const ADAMW: [u32; 16] = [
            0xbf900cc3, 0xbf93694d, 0xbe8156e9, 0xbede0e9e, 0x3f592bae, 0x3f31116a, 0xbea1bbdb,
            0xc00777db, 0x3ea567fa, 0xbfa1a465, 0x3eb3555a, 0x3e9c8e78, 0x3df55655, 0x3f9e05a6,
            0x3f8ed5f7, 0xbe7d1c8e,
        ];
        let tensor = |b: &[u32]| {
            let f: Vec<f32> = b.iter().map(|&x| f32::from_bits(x)).collect();
            Tensor::from_slice(&f)
        };
        for (cfg, want) in [
            (
                OptimizerConfig::Adam {
                    lr: 1e-3,
                    betas: [0.9, 0.999],
                    eps: 1e-8,
                    weight_decay: 0.01,
                },
                ADAM,
            ),
            (
                OptimizerConfig::AdamW {
                    lr: 1e-3,
                    betas: [0.9, 0.999],
                    eps: 1e-8,
                    weight_decay: 0.1,
                },
                ADAMW,
            ),
        ] {
            let mut p = tensor(&P0);
            let mut opt = FlatOptimizer::new(&cfg, P0.len() as i64, Device::Cpu);
            for (g, lr) in GRADS.iter().zip(LRS) {
                ours_step(&mut opt, &mut p, &mut tensor(g), (lr, None));
            }
            let got: Vec<u32> = Vec::<f32>::try_from(&p)
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect();
            assert_eq!(got, want, "{cfg:?}");
        }
    }

    /// The lr 0 step still advanced the moments: a run whose first lr is 0 differs from one
    /// that skipped that step (the check above is not vacuous).
    #[test]
    fn adam_lr_zero_step_still_advances_the_state() {
        let cfg = OptimizerConfig::Adam {
            lr: 1e-3,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.0,
        };
        let mut opt = FlatOptimizer::new(&cfg, 3, Device::Cpu);
        let mut p = Tensor::from_slice(&[1.0f32, -2.0, 3.0]);
        let before = p.copy();
        let mut g = Tensor::from_slice(&[0.5f32, 0.0, -1.0]);
        ours_step(&mut opt, &mut p, &mut g, (0.0, None));
        assert!(p.equal(&before));
        assert_eq!(opt.steps_taken(), 1);
        let state = opt.state();
        let m = &state.iter().find(|(n, _)| n == "m").unwrap().1;
        let v = &state.iter().find(|(n, _)| n == "v").unwrap().1;
        // m = 0.1·g, v = 0.001·g².
        assert!(m.allclose(
            &Tensor::from_slice(&[0.05f32, 0.0, -0.1]),
            1e-6,
            1e-9,
            false
        ));
        assert!(v.allclose(
            &Tensor::from_slice(&[2.5e-4f32, 0.0, 1e-3]),
            1e-6,
            1e-12,
            false
        ));
    }

    /// Momentum set per step (a schedule's `momentum_at`): SGD's momentum and Adam/AdamW's β1
    /// follow it exactly as libtorch's optimizers do after `set_momentum`. SGD configured
    /// without momentum starts its buffer at the first step with momentum (torch's
    /// `momentum_buffer` is created lazily, as the raw gradient).
    #[test]
    fn momentum_override_matches_libtorch() {
        let steps: Vec<Hyper> = vec![
            (0.05, None),
            (0.05, Some(0.9)),
            (0.04, Some(0.85)),
            (0.03, Some(0.8)),
            (0.0, Some(0.85)),
            (0.02, Some(0.9)),
        ];
        for (momentum, dampening, nesterov) in [
            (0.0, 0.0, false),
            (0.9, 0.0, false),
            (0.9, 0.1, false),
            (0.9, 0.0, true),
        ] {
            let cfg = sgd(0.05, momentum, dampening, nesterov, 1e-3);
            let theirs = COptimizer::sgd(0.05, momentum, dampening, 1e-3, nesterov).unwrap();
            let c = compare(cfg, theirs, &steps);
            let what = format!("sgd m={momentum} d={dampening} n={nesterov}");
            assert!(c.finite && c.lr0_unchanged, "{what}");
            assert!(c.rel < 1e-6, "{what}: {}", c.rel);
        }
        let steps: Vec<Hyper> = steps.iter().map(|&(lr, m)| (lr / 10.0, m)).collect();
        let adam = OptimizerConfig::Adam {
            lr: 5e-3,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 1e-2,
        };
        let theirs = COptimizer::adam(5e-3, 0.9, 0.999, 1e-2, 1e-8, false).unwrap();
        let c = compare(adam, theirs, &steps);
        assert!(
            c.finite && c.lr0_unchanged && c.rel < 1e-5,
            "adam: {}",
            c.rel
        );
        let adamw = OptimizerConfig::AdamW {
            lr: 5e-3,
            betas: [0.9, 0.99],
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let theirs = COptimizer::adamw(5e-3, 0.9, 0.99, 0.1, 1e-8, false).unwrap();
        let c = compare(adamw, theirs, &steps);
        assert!(
            c.finite && c.lr0_unchanged && c.rel < 1e-5,
            "adamw: {}",
            c.rel
        );
    }

    /// The update's scalars are device tensors made at the first step and refilled in place
    /// after (no new tensor, hence no host→device copy, per step).
    #[test]
    fn scalars_are_made_once_and_refilled() {
        let cfg = OptimizerConfig::Adam {
            lr: 1e-3,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 1e-2,
        };
        let mut opt = FlatOptimizer::new(&cfg, 4, Device::Cpu);
        let mut p = Tensor::ones([4], (Kind::Float, Device::Cpu));
        let ptrs = |o: &FlatOptimizer| -> Vec<usize> {
            o.scalars
                .iter()
                .flatten()
                .map(|t| t.data_ptr() as usize)
                .collect()
        };
        ours_step(
            &mut opt,
            &mut p,
            &mut Tensor::ones([4], (Kind::Float, Device::Cpu)),
            (1e-3, None),
        );
        let first = ptrs(&opt);
        // Weight decay, 1 - β2 and -step_size.
        assert_eq!(first.len(), 3);
        ours_step(
            &mut opt,
            &mut p,
            &mut Tensor::ones([4], (Kind::Float, Device::Cpu)),
            (2e-3, None),
        );
        assert_eq!(ptrs(&opt), first);
        let step_size = opt.scalars[Scalar::NegStepSize as usize]
            .as_ref()
            .unwrap()
            .double_value(&[]);
        assert_eq!(step_size, (-2e-3 / (1.0 - 0.9f64.powi(2))) as f32 as f64);
    }

    #[test]
    fn sgd_step_by_hand() {
        // p = 1, g = 2, lr 0.1, momentum 0.9: step 1 buf = 2 → p = 0.8; step 2 buf = 0.9·2 + 2 = 3.8 → p = 0.42.
        let cfg = sgd(0.1, 0.9, 0.0, false, 0.0);
        let mut opt = FlatOptimizer::new(&cfg, 1, Device::Cpu);
        assert_eq!(opt.state_bytes(), 4);
        let mut p = Tensor::from_slice(&[1.0f32]);
        for expected in [0.8, 0.42] {
            let mut g = Tensor::from_slice(&[2.0f32]);
            ours_step(&mut opt, &mut p, &mut g, (0.1, None));
            assert!((p.double_value(&[0]) - expected).abs() < 1e-6);
        }
        assert_eq!(opt.state_bytes(), 4);
    }

    /// SGD's momentum buffer is part of the checkpoint once it exists, and absent before (a
    /// run without momentum whose schedule never set one).
    #[test]
    fn sgd_state_round_trips_with_and_without_a_buffer() {
        let plain = sgd(0.1, 0.0, 0.0, false, 0.0);
        let mut opt = FlatOptimizer::new(&plain, 2, Device::Cpu);
        let mut p = Tensor::from_slice(&[1.0f32, 2.0]);
        let mut g = Tensor::from_slice(&[1.0f32, 1.0]);
        ours_step(&mut opt, &mut p, &mut g, (0.1, None));
        assert_eq!(opt.state_bytes(), 0);
        let state = opt.state();
        assert!(state.iter().all(|(n, _)| n != "m"));
        let mut fresh = FlatOptimizer::new(&plain, 2, Device::Cpu);
        fresh.load_state(&state).unwrap();
        assert_eq!(fresh.steps_taken(), 1);
        // A momentum step creates the buffer; it then travels with the state.
        let mut g = Tensor::from_slice(&[1.0f32, -1.0]);
        ours_step(&mut opt, &mut p, &mut g, (0.1, Some(0.9)));
        assert_eq!(opt.state_bytes(), 8);
        let state = opt.state();
        let mut fresh = FlatOptimizer::new(&plain, 2, Device::Cpu);
        fresh.load_state(&state).unwrap();
        let loaded = fresh.state();
        assert_eq!(loaded.len(), state.len());
        for ((a, x), (b, y)) in loaded.iter().zip(&state) {
            assert!(a == b && x.equal(y), "{a} vs {b}");
        }
    }
}
