//! fp16 loss scaling with DeepSpeed's semantics (`deepspeed/runtime/fp16/loss_scaler.py`,
//! `DynamicLossScaler.update_scale`) and its configuration keys and defaults (the `fp16`
//! section: `loss_scale`, `initial_scale_power`, `loss_scale_window`, `hysteresis`,
//! `consecutive_hysteresis`, `min_loss_scale`).
//!
//! Per optimizer step: scale the loss by [`LossScaler::scale`], run backward, check the
//! gradients with [`has_overflow`], unscale (divide by the scale the step used) and step unless
//! [`LossScaler::update`] says to skip. A skipped step does not advance the LR schedule.
//!
//! The dynamic rule, with `iter` counting `update` calls from 0 and `last_overflow` starting at
//! -1:
//! - overflow: the step is skipped. If `hysteresis == 1` or the remaining hysteresis is 1, the
//!   scale halves (never below `min_loss_scale`; an overflow already *at* the minimum is
//!   [`LossScaleError::AtMinimum`]); otherwise the remaining hysteresis drops by one.
//!   `last_overflow = iter`.
//! - no overflow: with `consecutive_hysteresis` the remaining hysteresis is refilled. With
//!   `stable = iter - last_overflow - 1`, if `stable > 0` and `stable % loss_scale_window == 0`
//!   the scale doubles (and without `consecutive_hysteresis` the hysteresis is refilled then).
//!   So the first growth comes on the update after `loss_scale_window` clean steps, and again
//!   every `loss_scale_window` clean steps after that.
//!
//! Static scaling (`loss_scale > 0`) never changes the scale; overflowing steps are still
//! skipped (DeepSpeed's fp16 optimizer does the same: it logs "Using static loss scale").
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

pub use crate::config::LossScaleConfig;

/// DeepSpeed's `scale_factor` (not configurable there either).
pub const SCALE_FACTOR: f64 = 2.0;

/// What to do with the step whose gradients were just checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepDecision {
    /// Skip the optimizer step (and do not advance the LR schedule).
    pub skip: bool,
    /// The scale for the next step.
    pub scale_after: f64,
}

/// The run cannot continue.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LossScaleError {
    /// DeepSpeed: "Current loss scale already at minimum - cannot decrease scale anymore.
    /// Exiting run."
    #[error(
        "gradient overflow at step {step} with the loss scale already at its minimum \
         ({scale}, precision.loss_scale.min_loss_scale): cannot decrease the scale anymore; \
         lower the learning rate, clip gradients or use bf16"
    )]
    AtMinimum { step: u64, scale: f64 },
}

/// Loss scaler state; serde for checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    config: LossScaleConfig,
    cur_scale: f64,
    cur_iter: u64,
    /// `None`: no overflow yet (DeepSpeed's -1).
    last_overflow_iter: Option<u64>,
    cur_hysteresis: u32,
    /// Steps skipped so far.
    skipped: u64,
}

impl LossScaler {
    /// A scaler at its initial state. Call [`LossScaleConfig::validate`] first.
    pub fn new(config: LossScaleConfig) -> LossScaler {
        let cur_scale = if config.is_dynamic() {
            2f64.powi(config.initial_scale_power as i32)
        } else {
            config.loss_scale
        };
        LossScaler {
            cur_hysteresis: config.hysteresis,
            config,
            cur_scale,
            cur_iter: 0,
            last_overflow_iter: None,
            skipped: 0,
        }
    }

    /// The scale to multiply this step's loss by (and divide its gradients by).
    pub fn scale(&self) -> f64 {
        self.cur_scale
    }

    /// Steps skipped so far.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// `update` calls so far.
    pub fn iterations(&self) -> u64 {
        self.cur_iter
    }

    /// Overflows still tolerated before the scale drops.
    pub fn hysteresis_left(&self) -> u32 {
        self.cur_hysteresis
    }

    pub fn config(&self) -> &LossScaleConfig {
        &self.config
    }

    /// Records whether this step's gradients overflowed and returns what to do with it.
    pub fn update(&mut self, overflow: bool) -> Result<StepDecision, LossScaleError> {
        let c = &self.config;
        if !c.is_dynamic() {
            self.cur_iter += 1;
            self.skipped += u64::from(overflow);
            return Ok(StepDecision {
                skip: overflow,
                scale_after: self.cur_scale,
            });
        }
        if overflow {
            if c.hysteresis == 1 || self.cur_hysteresis == 1 {
                if self.cur_scale == c.min_loss_scale {
                    return Err(LossScaleError::AtMinimum {
                        step: self.cur_iter,
                        scale: self.cur_scale,
                    });
                }
                self.cur_scale = (self.cur_scale / SCALE_FACTOR).max(c.min_loss_scale);
            } else {
                self.cur_hysteresis -= 1;
            }
            self.last_overflow_iter = Some(self.cur_iter);
            self.skipped += 1;
        } else {
            if c.consecutive_hysteresis {
                self.cur_hysteresis = c.hysteresis;
            }
            // DeepSpeed: (cur_iter - last_overflow_iter) - 1 with last_overflow_iter = -1.
            let stable = match self.last_overflow_iter {
                None => self.cur_iter,
                Some(last) => self.cur_iter - last - 1,
            };
            if stable > 0 && stable % c.loss_scale_window == 0 {
                if !c.consecutive_hysteresis {
                    self.cur_hysteresis = c.hysteresis;
                }
                self.cur_scale *= SCALE_FACTOR;
            }
        }
        self.cur_iter += 1;
        Ok(StepDecision {
            skip: overflow,
            scale_after: self.cur_scale,
        })
    }
}

/// Whether `grads` holds an inf or NaN: one reduction (a sum in f32, non-finite exactly when an
/// element is, for gradient magnitudes far below f32's range) and one host sync for the answer.
/// DeepSpeed's `_has_inf_or_nan` uses the same sum. Measured against `!isfinite().all()` (which
/// also writes a bool tensor) in `tests::overflow_check_cost`.
pub fn has_overflow(grads: &Tensor) -> bool {
    let s = tch::no_grad(|| grads.sum(Kind::Float));
    !s.double_value(&[]).is_finite()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn dynamic(window: u64, hysteresis: u32, consecutive: bool) -> LossScaler {
        LossScaler::new(LossScaleConfig {
            initial_scale_power: 4,
            loss_scale_window: window,
            hysteresis,
            consecutive_hysteresis: consecutive,
            ..Default::default()
        })
    }

    /// Runs `n` updates with overflows at the given iterations; returns (skip, scale_after).
    fn run(s: &mut LossScaler, n: u64, overflows: &[u64]) -> Vec<(bool, f64)> {
        (0..n)
            .map(|i| {
                let d = s.update(overflows.contains(&i)).unwrap();
                (d.skip, d.scale_after)
            })
            .collect()
    }

    #[test]
    fn defaults_are_deepspeeds() {
        let c = LossScaleConfig::default();
        assert!(c.is_dynamic());
        assert_eq!(
            (c.initial_scale_power, c.loss_scale_window, c.hysteresis),
            (16, 1000, 2)
        );
        assert!(!c.consecutive_hysteresis);
        assert_eq!(c.min_loss_scale, 1.0);
        assert_eq!(LossScaler::new(c).scale(), 65536.0);
    }

    #[test]
    fn growth_after_each_clean_window() {
        // window 3, no overflow. stable = iter at iters 0,1,2,3,...; growth where stable > 0
        // and stable % 3 == 0: iters 3 and 6. Scale 16 → 32 after iter 3 → 64 after iter 6.
        let mut s = dynamic(3, 2, false);
        let got: Vec<f64> = run(&mut s, 8, &[]).into_iter().map(|d| d.1).collect();
        assert_eq!(got, [16.0, 16.0, 16.0, 32.0, 32.0, 32.0, 64.0, 64.0]);
        assert_eq!(s.skipped(), 0);
    }

    #[test]
    fn hysteresis_two_delays_the_first_halving() {
        // window 3, hysteresis 2, consecutive false:
        // iter 0 overflow: hysteresis 2 → 1, scale stays 16, last = 0, skip.
        // iter 1 overflow: hysteresis is 1 → halve 16 → 8, last = 1, skip.
        // iter 2 overflow: hysteresis still 1 (refilled only on growth) → 8 → 4, last = 2.
        // iter 3 clean: stable = 3-2-1 = 0 → nothing. iter 4: 1. iter 5: 2.
        // iter 6: stable 3 → grow 4 → 8, hysteresis refilled to 2.
        // iter 7 overflow: hysteresis 2 → 1, scale 8, last = 7.
        // iter 8 clean: stable 0. iter 9 overflow: hysteresis 1 → halve 8 → 4, last = 9.
        let mut s = dynamic(3, 2, false);
        let got = run(&mut s, 10, &[0, 1, 2, 7, 9]);
        let expect = [
            (true, 16.0),
            (true, 8.0),
            (true, 4.0),
            (false, 4.0),
            (false, 4.0),
            (false, 4.0),
            (false, 8.0),
            (true, 8.0),
            (false, 8.0),
            (true, 4.0),
        ];
        assert_eq!(got, expect);
        assert_eq!(s.skipped(), 5);
        assert_eq!(s.iterations(), 10);
    }

    #[test]
    fn consecutive_hysteresis_refills_on_every_clean_step() {
        // window 100, hysteresis 2, consecutive true:
        // iter 0 overflow: hysteresis 2 → 1, scale 16. iter 1 clean: refill to 2.
        // iter 2 overflow: 2 → 1 again, scale still 16. iter 3 overflow: 1 → halve to 8.
        // iter 4 clean: refill. iter 5 overflow: 2 → 1, scale 8.
        // Without consecutive hysteresis iter 2 would already halve (hysteresis stays 1).
        let mut s = dynamic(100, 2, true);
        let got = run(&mut s, 6, &[0, 2, 3, 5]);
        let expect = [
            (true, 16.0),
            (false, 16.0),
            (true, 16.0),
            (true, 8.0),
            (false, 8.0),
            (true, 8.0),
        ];
        assert_eq!(got, expect);
        assert_eq!(s.hysteresis_left(), 1);
        let mut s = dynamic(100, 2, false);
        let got: Vec<f64> = run(&mut s, 4, &[0, 2, 3])
            .into_iter()
            .map(|d| d.1)
            .collect();
        assert_eq!(got, [16.0, 16.0, 8.0, 4.0]);
    }

    #[test]
    fn consecutive_hysteresis_growth_keeps_window_from_last_overflow() {
        // window 2, hysteresis 1, consecutive true. iter 0 overflow: 16 → 8, last = 0.
        // iters 1,2: stable 0,1; iter 3: stable 2 → 16; iter 5: stable 4 → 32.
        let mut s = dynamic(2, 1, true);
        let got: Vec<f64> = run(&mut s, 6, &[0]).into_iter().map(|d| d.1).collect();
        assert_eq!(got, [8.0, 8.0, 8.0, 16.0, 16.0, 32.0]);
    }

    #[test]
    fn overflow_at_minimum_is_an_error() {
        // min 4, hysteresis 1, start 16: iter 0 → 8, iter 1 → 4 (= min), iter 2: error.
        let mut s = LossScaler::new(LossScaleConfig {
            initial_scale_power: 4,
            hysteresis: 1,
            min_loss_scale: 4.0,
            ..Default::default()
        });
        assert_eq!(s.update(true).unwrap().scale_after, 8.0);
        assert_eq!(s.update(true).unwrap().scale_after, 4.0);
        let err = s.update(true).unwrap_err();
        assert_eq!(
            err,
            LossScaleError::AtMinimum {
                step: 2,
                scale: 4.0
            }
        );
        assert!(err.to_string().contains("min_loss_scale"), "{err}");
        // A scale above the minimum clamps to it rather than overshooting: 1 → max(0.5, 0.75).
        let mut s = LossScaler::new(LossScaleConfig {
            loss_scale: 0.0,
            initial_scale_power: 0,
            hysteresis: 1,
            min_loss_scale: 0.75,
            ..Default::default()
        });
        assert_eq!(s.update(true).unwrap().scale_after, 0.75);
        assert!(s.update(true).is_err());
    }

    #[test]
    fn hysteresis_spent_then_at_minimum_errors_on_the_next_overflow() {
        // Default min 1, start 2^1, hysteresis 2: iter 0 hysteresis 2 → 1; iter 1 2 → 1 (min);
        // iter 2: at minimum with hysteresis 1 → error.
        let mut s = LossScaler::new(LossScaleConfig {
            initial_scale_power: 1,
            ..Default::default()
        });
        assert_eq!(s.update(true).unwrap().scale_after, 2.0);
        assert_eq!(s.update(true).unwrap().scale_after, 1.0);
        assert!(s.update(true).is_err());
    }

    #[test]
    fn static_scale_skips_overflows_and_never_moves() {
        let mut s = LossScaler::new(LossScaleConfig {
            loss_scale: 128.0,
            ..Default::default()
        });
        let got = run(&mut s, 5, &[1, 2, 3]);
        assert!(got.iter().all(|d| d.1 == 128.0));
        let skips: Vec<bool> = got.iter().map(|d| d.0).collect();
        assert_eq!(skips, [false, true, true, true, false]);
        assert_eq!(s.skipped(), 3);
    }

    #[test]
    fn state_round_trips_through_serde() {
        let mut s = dynamic(3, 2, false);
        run(&mut s, 5, &[1]);
        let json = serde_json::to_string(&s).unwrap();
        let mut back: LossScaler = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        // The restored scaler continues identically.
        for i in 0..10 {
            assert_eq!(back.update(i == 4), s.update(i == 4));
        }
    }

    #[test]
    fn overflow_detection() {
        let g = Tensor::randn([1000], (Kind::Float, Device::Cpu));
        assert!(!has_overflow(&g));
        let _ = g.get(10).fill_(f64::INFINITY);
        assert!(has_overflow(&g));
        let _ = g.get(10).fill_(f64::NAN);
        assert!(has_overflow(&g));
        let _ = g.get(10).fill_(f64::NEG_INFINITY);
        assert!(has_overflow(&g));
        let h = Tensor::full([100], 60000.0, (Kind::Half, Device::Cpu));
        assert!(!has_overflow(&h), "sum accumulates in f32");
        let _ = h.get(0).fill_(f64::INFINITY);
        assert!(has_overflow(&h));
    }

    /// Median time of `!isfinite().all()` vs the f32 sum on a 1M-element buffer.
    /// `cargo test --release --lib overflow_check_cost -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn overflow_check_cost() {
        let g = Tensor::randn([1 << 20], (Kind::Float, Device::Cpu));
        let time = |f: &dyn Fn() -> bool| {
            let mut v: Vec<f64> = (0..201)
                .map(|_| {
                    let t = std::time::Instant::now();
                    assert!(!f());
                    t.elapsed().as_secs_f64() * 1e6
                })
                .collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let all = time(&|| !bool::try_from(g.isfinite().all()).unwrap());
        let sum = time(&|| has_overflow(&g));
        println!("1M f32: !isfinite().all() {all:.0} µs, sum-is-finite {sum:.0} µs");
    }
}
