//! SGD, Adam and AdamW over one flat fp32 buffer, with `torch.optim`'s semantics.
//!
//! tch 0.24 exposes no `alpha`/`value` scalars on `add_`/`addcmul_`/`addcdiv_`, so scaled updates
//! are written as `addcmul_` with a 0-dim scalar tensor (one fused pass, no temporary), and Adam's
//! `-step_size` is folded into the denominator. Results agree with libtorch's own optimizers to
//! float rounding (see the tests).
use tch::{Device, Kind, Tensor};

use crate::config::OptimizerConfig;

pub struct FlatOptimizer {
    config: OptimizerConfig,
    /// Optimizer steps taken (torch's `state['step']`).
    step: u64,
    /// SGD: momentum buffer. Adam/AdamW: first moment.
    m: Option<Tensor>,
    /// Adam/AdamW: second moment.
    v: Option<Tensor>,
    /// Reused work space the size of the buffer (Adam's denominator).
    scratch: Option<Tensor>,
}

fn scalar(x: f64, device: Device) -> Tensor {
    Tensor::from(x as f32).to_device(device)
}

impl FlatOptimizer {
    pub fn new(config: &OptimizerConfig, len: i64, device: Device) -> FlatOptimizer {
        let zeros = || Tensor::zeros([len], (Kind::Float, device));
        let (m, v, scratch) = match config {
            OptimizerConfig::Sgd { momentum, .. } => (
                if *momentum != 0.0 {
                    Some(zeros())
                } else {
                    None
                },
                None,
                None,
            ),
            OptimizerConfig::Adam { .. } | OptimizerConfig::AdamW { .. } => {
                (Some(zeros()), Some(zeros()), Some(zeros()))
            }
        };
        FlatOptimizer {
            config: config.clone(),
            step: 0,
            m,
            v,
            scratch,
        }
    }

    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// Bytes of optimizer state held (what ZeRO-1 shards).
    pub fn state_bytes(&self) -> u64 {
        [&self.m, &self.v]
            .iter()
            .filter_map(|t| t.as_ref())
            .map(|t| t.numel() as u64 * 4)
            .sum()
    }

    /// One update of `params` from `grads` at learning rate `lr`. `grads` is used as work space.
    pub fn step(&mut self, params: &mut Tensor, grads: &mut Tensor, lr: f64) {
        tch::no_grad(|| self.step_inner(params, grads, lr));
    }

    fn step_inner(&mut self, p: &mut Tensor, g: &mut Tensor, lr: f64) {
        let dev = p.device();
        let first = self.step == 0;
        self.step += 1;
        match self.config {
            OptimizerConfig::Sgd {
                momentum,
                dampening,
                nesterov,
                weight_decay,
                ..
            } => {
                if weight_decay != 0.0 {
                    let _ = g.addcmul_(p, &scalar(weight_decay, dev));
                }
                if momentum != 0.0 {
                    let buf = self.m.as_mut().expect("momentum buffer");
                    if first {
                        // torch.optim.SGD: the buffer starts as the first gradient, undampened.
                        buf.copy_(g);
                    } else {
                        let _ = buf.g_mul_scalar_(momentum);
                        if dampening == 0.0 {
                            let _ = buf.g_add_(g);
                        } else {
                            let _ = buf.addcmul_(g, &scalar(1.0 - dampening, dev));
                        }
                    }
                    if nesterov {
                        let _ = g.addcmul_(buf, &scalar(momentum, dev));
                        let _ = p.addcmul_(g, &scalar(-lr, dev));
                    } else {
                        let _ = p.addcmul_(buf, &scalar(-lr, dev));
                    }
                } else {
                    let _ = p.addcmul_(g, &scalar(-lr, dev));
                }
            }
            OptimizerConfig::Adam {
                betas,
                eps,
                weight_decay,
                ..
            } => {
                if weight_decay != 0.0 {
                    let _ = g.addcmul_(p, &scalar(weight_decay, dev));
                }
                self.adam_update(p, g, lr, betas, eps);
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
                self.adam_update(p, g, lr, betas, eps);
            }
        }
    }

    fn adam_update(&mut self, p: &mut Tensor, g: &Tensor, lr: f64, betas: [f64; 2], eps: f64) {
        let (b1, b2) = (betas[0], betas[1]);
        let m = self.m.as_mut().expect("first moment");
        let v = self.v.as_mut().expect("second moment");
        let s = self.scratch.as_mut().expect("scratch");
        let t = self.step as i32;
        let bc1 = 1.0 - b1.powi(t);
        let bc2_sqrt = (1.0 - b2.powi(t)).sqrt();
        let step_size = lr / bc1;
        let _ = m.lerp_(g, 1.0 - b1);
        let _ = g.mul_out(s, g);
        let _ = v.lerp_(s, 1.0 - b2);
        // denom = sqrt(v)/bc2_sqrt + eps; p -= step_size·m/denom, as p += m / (denom·(-1/step_size)).
        let _ = v.sqrt_out(s);
        let _ = s.g_mul_scalar_(-1.0 / (bc2_sqrt * step_size));
        let _ = s.g_add_scalar_(-eps / step_size);
        let _ = p.addcdiv_(m, s);
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
        self.step = step.int64_value(&[]) as u64;
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::COptimizer;

    /// Runs `steps` updates with our optimizer and with libtorch's own on the same random
    /// parameters and gradients, and returns the largest relative difference.
    fn compare(ours: OptimizerConfig, mut theirs: COptimizer, lr: f64, steps: usize) -> f64 {
        tch::manual_seed(1);
        let n = 1000;
        let init = Tensor::randn([n], (Kind::Float, Device::Cpu));
        let mut p = init.copy();
        let reference = init.copy().set_requires_grad(true);
        theirs.add_parameters(&reference, 0).unwrap();
        let mut opt = FlatOptimizer::new(&ours, n, Device::Cpu);
        for _ in 0..steps {
            let g = Tensor::randn([n], (Kind::Float, Device::Cpu));
            let mut g_ours = g.copy();
            opt.step(&mut p, &mut g_ours, lr);
            theirs.zero_grad().unwrap();
            // d/dp sum(p·g) = g: hands libtorch's optimizer exactly our gradient.
            (&reference * &g).sum(Kind::Float).backward();
            theirs.step().unwrap();
        }
        let diff = (&p - &reference).abs().max().double_value(&[]);
        let scale = reference.abs().max().double_value(&[]);
        diff / scale
    }

    #[test]
    fn sgd_matches_libtorch() {
        for (momentum, dampening, nesterov, wd) in [
            (0.0, 0.0, false, 0.0),
            (0.9, 0.0, false, 5e-4),
            (0.9, 0.1, false, 0.0),
            (0.9, 0.0, true, 1e-2),
        ] {
            let cfg = OptimizerConfig::Sgd {
                lr: 0.1,
                momentum,
                dampening,
                nesterov,
                weight_decay: wd,
            };
            let theirs = COptimizer::sgd(0.1, momentum, dampening, wd, nesterov).unwrap();
            let rel = compare(cfg, theirs, 0.1, 5);
            assert!(
                rel < 1e-6,
                "sgd m={momentum} d={dampening} n={nesterov}: {rel}"
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
        let rel = compare(adam, theirs, 1e-2, 6);
        assert!(rel < 1e-5, "adam: {rel}");
        let adamw = OptimizerConfig::AdamW {
            lr: 1e-2,
            betas: [0.9, 0.99],
            eps: 1e-6,
            weight_decay: 0.1,
        };
        let theirs = COptimizer::adamw(1e-2, 0.9, 0.99, 0.1, 1e-6, false).unwrap();
        let rel = compare(adamw, theirs, 1e-2, 6);
        assert!(rel < 1e-5, "adamw: {rel}");
    }

    #[test]
    fn sgd_step_by_hand() {
        // p = 1, g = 2, lr 0.1, momentum 0.9: step 1 buf = 2 → p = 0.8; step 2 buf = 0.9·2 + 2 = 3.8 → p = 0.42.
        let cfg = OptimizerConfig::Sgd {
            lr: 0.1,
            momentum: 0.9,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        };
        let mut opt = FlatOptimizer::new(&cfg, 1, Device::Cpu);
        let mut p = Tensor::from_slice(&[1.0f32]);
        for expected in [0.8, 0.42] {
            let mut g = Tensor::from_slice(&[2.0f32]);
            opt.step(&mut p, &mut g, 0.1);
            assert!((p.double_value(&[0]) - expected).abs() < 1e-6);
        }
        assert_eq!(opt.state_bytes(), 4);
    }
}
