//! Cyclic precision schedules (CPT): the forward bit width for every optimizer step.
//!
//! The ten shapes are Wolfe & Kyrillidis's ("Better schedules for low precision training of deep
//! neural networks"), transcribed from their reference code
//! (github.com/wolfecameron/BetterPrecisionSchedules, `quant_scheds.py` and the training scripts):
//! for `N` steps and `n` cycles the cycle length is `T = floor(N/n) + 1`, and within a cycle
//! `z = (t mod T)/T`, `u = 1 - z`, `D = q_max - q_min`:
//!
//! | profile | growth | decay, vertical flip | decay, horizontal flip |
//! |---|---|---|---|
//! | cosine | `q_min + D/2·(1 - cos πz)` | `q_max - D/2·(1 - cos πz)` | (same) |
//! | linear | `q_min + D·z` | `q_max - D·z` | (same) |
//! | exponential | `q_max - D·e^(-4z)` | `q_min + D·e^(-4z)` | `q_max - D·e^(-4u)` |
//! | REX | `q_max - D·u/(0.1 + 0.9u)` | `q_min + D·u/(0.1 + 0.9u)` | `q_max - D·z/(0.1 + 0.9z)` |
//!
//! and the bit width is the value rounded half to even (`np.rint`).
//!
//! *Repeated* schedules (CR, LR, ER, RR) use the growth profile in every cycle. *Triangular*
//! ones use growth in odd cycles `k = floor(t/T)` and decay in even ones, exactly as the reference
//! code (`if num_period % 2 == 1: growth else: decay`): a triangular schedule starts at `q_max`
//! and decays first. `cpt` is Fu et al.'s original CPT: cosine growth, repeated, `T = floor(N/n)`.
use std::f64::consts::PI;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ScheduleError;

/// Config section the validation messages name.
pub const FIELD_PREFIX: &str = "precision_schedule";

/// Wolfe & Kyrillidis's grouping by training-cost savings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SavingsGroup {
    /// `static`: the reference the others save against.
    Baseline,
    Small,
    Medium,
    Large,
}

impl SavingsGroup {
    pub fn name(&self) -> &'static str {
        match self {
            SavingsGroup::Baseline => "baseline",
            SavingsGroup::Small => "small",
            SavingsGroup::Medium => "medium",
            SavingsGroup::Large => "large",
        }
    }
}

impl fmt::Display for SavingsGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which precision schedule. TOML names: `static`, `cpt`, `CR`, `CT`, `LR`, `LT`, `ER`, `ETV`,
/// `ETH`, `RR`, `RTV`, `RTH` (lowercase accepted too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PrecisionScheduleKind {
    #[serde(rename = "static", alias = "STATIC")]
    Static,
    #[serde(rename = "cpt", alias = "CPT")]
    Cpt,
    #[serde(rename = "CR", alias = "cr")]
    Cr,
    #[serde(rename = "CT", alias = "ct")]
    Ct,
    #[serde(rename = "LR", alias = "lr")]
    Lr,
    #[serde(rename = "LT", alias = "lt")]
    Lt,
    #[serde(rename = "ER", alias = "er")]
    Er,
    #[serde(rename = "ETV", alias = "etv")]
    Etv,
    #[serde(rename = "ETH", alias = "eth")]
    Eth,
    #[serde(rename = "RR", alias = "rr")]
    Rr,
    #[serde(rename = "RTV", alias = "rtv")]
    Rtv,
    #[serde(rename = "RTH", alias = "rth")]
    Rth,
    /// Static `q_min` inside the step window `[window_start, window_end)`, `q_max` elsewhere:
    /// Wolfe & Kyrillidis's critical-period (deficit) experiment, Table 1.
    #[serde(rename = "window", alias = "WINDOW")]
    Window,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Profile {
    Cosine,
    Linear,
    Exponential,
    Rex,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flip {
    Vertical,
    Horizontal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Static,
    Repeated(Profile),
    Triangular(Profile, Flip),
    /// Not cyclic: `q_min` inside a step window.
    Window,
}

impl PrecisionScheduleKind {
    pub const ALL: [PrecisionScheduleKind; 13] = [
        PrecisionScheduleKind::Static,
        PrecisionScheduleKind::Cpt,
        PrecisionScheduleKind::Cr,
        PrecisionScheduleKind::Ct,
        PrecisionScheduleKind::Lr,
        PrecisionScheduleKind::Lt,
        PrecisionScheduleKind::Er,
        PrecisionScheduleKind::Etv,
        PrecisionScheduleKind::Eth,
        PrecisionScheduleKind::Rr,
        PrecisionScheduleKind::Rtv,
        PrecisionScheduleKind::Rth,
        PrecisionScheduleKind::Window,
    ];

    /// The config name.
    pub fn name(&self) -> &'static str {
        use PrecisionScheduleKind::*;
        match self {
            Static => "static",
            Cpt => "cpt",
            Cr => "CR",
            Ct => "CT",
            Lr => "LR",
            Lt => "LT",
            Er => "ER",
            Etv => "ETV",
            Eth => "ETH",
            Rr => "RR",
            Rtv => "RTV",
            Rth => "RTH",
            Window => "window",
        }
    }

    /// Wolfe & Kyrillidis's savings group; `cpt` has CR's shape and is grouped with it.
    pub fn group(&self) -> SavingsGroup {
        use PrecisionScheduleKind::*;
        match self {
            // A window saves in proportion to its length, not by its shape.
            Static | Window => SavingsGroup::Baseline,
            Rr | Rth => SavingsGroup::Large,
            Cpt | Lr | Lt | Cr | Ct | Rtv | Etv => SavingsGroup::Medium,
            Er | Eth => SavingsGroup::Small,
        }
    }

    /// One line for listings.
    pub fn describe(&self) -> &'static str {
        use PrecisionScheduleKind::*;
        match self {
            Static => "q_max throughout (no cycling)",
            Cpt => "original CPT: cosine growth every cycle, T = floor(N/n)",
            Cr => "cosine growth every cycle",
            Ct => "cosine, triangular: decay in even cycles, growth in odd",
            Lr => "linear growth every cycle",
            Lt => "linear, triangular: decay in even cycles, growth in odd",
            Er => "exponential growth every cycle (fast rise, mostly high precision)",
            Etv => "exponential, triangular; decay is growth flipped vertically",
            Eth => "exponential, triangular; decay is growth flipped horizontally",
            Rr => "REX growth every cycle (slow rise, mostly low precision)",
            Rtv => "REX, triangular; decay is growth flipped vertically",
            Rth => "REX, triangular; decay is growth flipped horizontally",
            Window => "q_min inside [window_start, window_end), q_max elsewhere (deficit windows)",
        }
    }

    fn shape(&self) -> Shape {
        use PrecisionScheduleKind::*;
        use Profile::*;
        match self {
            Static => Shape::Static,
            Cpt | Cr => Shape::Repeated(Cosine),
            Lr => Shape::Repeated(Linear),
            Er => Shape::Repeated(Exponential),
            Rr => Shape::Repeated(Rex),
            // Cosine and linear decay are the same under either flip.
            Ct => Shape::Triangular(Cosine, Flip::Vertical),
            Lt => Shape::Triangular(Linear, Flip::Vertical),
            Etv => Shape::Triangular(Exponential, Flip::Vertical),
            Eth => Shape::Triangular(Exponential, Flip::Horizontal),
            Rtv => Shape::Triangular(Rex, Flip::Vertical),
            Rth => Shape::Triangular(Rex, Flip::Horizontal),
            Window => Shape::Window,
        }
    }

    fn valid_names() -> String {
        Self::ALL.map(|k| k.name()).join(", ")
    }
}

impl fmt::Display for PrecisionScheduleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PrecisionScheduleKind {
    type Err = ScheduleError;

    /// Case-insensitive.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        Self::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| ScheduleError::UnknownKind {
                got: s.to_string(),
                valid: Self::valid_names(),
            })
    }
}

/// A forward-precision schedule plus the (constant) backward precision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrecisionSchedule {
    pub kind: PrecisionScheduleKind,
    #[serde(default = "default_q_min")]
    pub q_min: u32,
    #[serde(default = "default_q_max")]
    pub q_max: u32,
    #[serde(default = "default_cycles")]
    pub cycles: u32,
    /// Bits for the backward pass (errors and gradients); None: `q_max`. Not cycled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q_bwd: Option<u32>,
    /// Steps run at `q_max` before cycling starts (critical-period experiments). The cyclic
    /// schedule is then laid over the remaining `N - delay_steps` steps, starting its first cycle
    /// at step `delay_steps`, so it still runs all its cycles.
    #[serde(default)]
    pub delay_steps: u64,
    /// `window`: the first step at `q_min`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub window_start: u64,
    /// `window`: the first step after the window (exclusive); required for `window`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_end: Option<u64>,
}

fn is_zero(x: &u64) -> bool {
    *x == 0
}

fn default_q_min() -> u32 {
    3
}
fn default_q_max() -> u32 {
    8
}
fn default_cycles() -> u32 {
    8
}

impl PrecisionSchedule {
    /// `kind` with the default bounds (3..8 bits, 8 cycles, no delay).
    pub fn new(kind: PrecisionScheduleKind) -> PrecisionSchedule {
        PrecisionSchedule {
            kind,
            q_min: default_q_min(),
            q_max: default_q_max(),
            cycles: default_cycles(),
            q_bwd: None,
            delay_steps: 0,
            window_start: 0,
            window_end: None,
        }
    }

    /// The backward precision in effect.
    pub fn q_bwd(&self) -> u32 {
        self.q_bwd.unwrap_or(self.q_max)
    }

    /// The unrounded schedule value `S(t)`; None where the step runs at `q_max` unconditionally.
    fn raw_at(&self, t: u64, total_steps: u64) -> Option<f64> {
        let shape = self.kind.shape();
        if shape == Shape::Window {
            let end = self.window_end.unwrap_or(0);
            return (self.window_start..end)
                .contains(&t)
                .then_some(f64::from(self.q_min));
        }
        if shape == Shape::Static || t < self.delay_steps {
            return None;
        }
        let t = t - self.delay_steps;
        let span = total_steps.saturating_sub(self.delay_steps);
        let cycles = u64::from(self.cycles.max(1));
        let period = match self.kind {
            PrecisionScheduleKind::Cpt => (span / cycles).max(1),
            _ => span / cycles + 1,
        };
        let (k, m) = (t / period, t % period);
        let (lo, hi) = (f64::from(self.q_min), f64::from(self.q_max));
        Some(match shape {
            Shape::Static | Shape::Window => unreachable!("handled above"),
            Shape::Repeated(p) => growth(p, m, period, lo, hi),
            Shape::Triangular(p, _) if k % 2 == 1 => growth(p, m, period, lo, hi),
            Shape::Triangular(p, flip) => decay(p, flip, m, period, lo, hi),
        })
    }

    /// Forward (weights and activations) bits for step `t` (0-based) of a `total_steps` run.
    pub fn q_fwd_at(&self, t: u64, total_steps: u64) -> u32 {
        match self.raw_at(t, total_steps) {
            None => self.q_max,
            Some(s) => {
                let (lo, hi) = (f64::from(self.q_min), f64::from(self.q_max));
                // The formulas stay within [lo, hi]; the clamp only guards rounding noise.
                s.round_ties_even().min(hi).max(lo) as u32
            }
        }
    }

    /// Backward bits for step `t`: constant, `q_bwd` (or `q_max`), also during the delay.
    pub fn q_bwd_at(&self, _t: u64, _total_steps: u64) -> u32 {
        self.q_bwd()
    }

    /// `q_fwd_at` for every step `0..total_steps`.
    pub fn curve(&self, total_steps: u64) -> Vec<u32> {
        (0..total_steps)
            .map(|t| self.q_fwd_at(t, total_steps))
            .collect()
    }

    /// Mean forward bits over the run (`q_max` for an empty run).
    pub fn mean_bits(&self, total_steps: u64) -> f64 {
        if total_steps == 0 {
            return f64::from(self.q_max);
        }
        let sum: u64 = (0..total_steps)
            .map(|t| u64::from(self.q_fwd_at(t, total_steps)))
            .sum();
        sum as f64 / total_steps as f64
    }

    /// Effective-BitOps cost relative to static q_max for the same steps, for a layer mix that is
    /// all quantized: per step cost ∝ q_fwd² + 2·q_fwd·q_bwd (forward weights×activations,
    /// backward counted as 2× forward, as Fu et al.'s and Wolfe & Kyrillidis's training scripts
    /// count it). The baseline keeps this schedule's `q_bwd`, so `static` is exactly 1 and the
    /// ratio measures what the forward schedule saves.
    pub fn cost_ratio_vs_static(&self, total_steps: u64) -> f64 {
        if total_steps == 0 {
            return 1.0;
        }
        let qb = f64::from(self.q_bwd());
        let cost = |q: f64| q * q + 2.0 * q * qb;
        let sum: f64 = (0..total_steps)
            .map(|t| cost(f64::from(self.q_fwd_at(t, total_steps))))
            .sum();
        sum / (total_steps as f64 * cost(f64::from(self.q_max)))
    }

    /// `1 ≤ q_min ≤ q_max ≤ 32`, `1 ≤ q_bwd ≤ 32`, `delay_steps < total_steps`, and for cyclic
    /// kinds `1 ≤ cycles ≤ total_steps - delay_steps`.
    pub fn validate(&self, total_steps: u64) -> Result<(), ScheduleError> {
        let field = |name: &str| format!("{FIELD_PREFIX}.{name}");
        if total_steps == 0 {
            return Err(ScheduleError::invalid(
                "total_steps",
                "≥ 1 to lay a precision schedule over",
                0,
            ));
        }
        if !(1..=32).contains(&self.q_max) {
            return Err(ScheduleError::invalid(
                field("q_max"),
                "in 1..=32 bits",
                self.q_max,
            ));
        }
        if !(1..=self.q_max).contains(&self.q_min) {
            return Err(ScheduleError::invalid(
                field("q_min"),
                format!("in 1..=q_max ({}) bits", self.q_max),
                self.q_min,
            ));
        }
        if let Some(b) = self.q_bwd {
            if !(1..=32).contains(&b) {
                return Err(ScheduleError::invalid(field("q_bwd"), "in 1..=32 bits", b));
            }
        }
        if self.delay_steps >= total_steps {
            return Err(ScheduleError::invalid(
                field("delay_steps"),
                format!("< the run's total steps ({total_steps})"),
                self.delay_steps,
            ));
        }
        if self.kind == PrecisionScheduleKind::Window {
            let Some(end) = self.window_end else {
                return Err(ScheduleError::invalid(
                    field("window_end"),
                    "set for a window schedule: the first step after the window",
                    "nothing",
                ));
            };
            if end <= self.window_start || end > total_steps {
                return Err(ScheduleError::invalid(
                    field("window_end"),
                    format!(
                        "in window_start + 1 ({}) ..= the run's total steps ({total_steps})",
                        self.window_start + 1
                    ),
                    end,
                ));
            }
            return Ok(());
        }
        if self.kind != PrecisionScheduleKind::Static {
            let span = total_steps - self.delay_steps;
            if self.cycles == 0 {
                return Err(ScheduleError::invalid(field("cycles"), "≥ 1", 0));
            }
            if u64::from(self.cycles) > span {
                let what = if self.delay_steps == 0 {
                    format!("the run's total steps ({span})")
                } else {
                    format!("the steps after delay_steps ({span})")
                };
                return Err(ScheduleError::invalid(
                    field("cycles"),
                    format!("≤ {what}"),
                    self.cycles,
                ));
            }
        }
        Ok(())
    }
}

// The profiles below follow `quant_scheds.py` operation for operation, so values that land
// exactly on .5 round the same way.

fn growth(p: Profile, m: u64, period: u64, lo: f64, hi: f64) -> f64 {
    let (m, period) = (m as f64, period as f64);
    let d = hi - lo;
    match p {
        Profile::Cosine => {
            let z = m / period;
            lo + 0.5 * d * (1.0 - (PI * z).cos())
        }
        Profile::Linear => lo + d * (m / period),
        Profile::Exponential => hi - d * (-4.0 * (m / period)).exp(),
        Profile::Rex => {
            let u = (period - m) / period;
            hi - d * rex(u)
        }
    }
}

fn decay(p: Profile, flip: Flip, m: u64, period: u64, lo: f64, hi: f64) -> f64 {
    let (m, period) = (m as f64, period as f64);
    let d = hi - lo;
    match (p, flip) {
        (Profile::Cosine, _) => {
            let z = m / period;
            hi - 0.5 * d * (1.0 - (PI * z).cos())
        }
        (Profile::Linear, _) => hi - d * (m / period),
        (Profile::Exponential, Flip::Vertical) => lo + d * (-4.0 * (m / period)).exp(),
        (Profile::Exponential, Flip::Horizontal) => {
            let u = 1.0 - m / period;
            hi - d * (-4.0 * u).exp()
        }
        (Profile::Rex, Flip::Vertical) => {
            let u = (period - m) / period;
            lo + d * rex(u)
        }
        (Profile::Rex, Flip::Horizontal) => {
            let z = 1.0 - (period - m) / period;
            hi - d * rex(z)
        }
    }
}

/// `x / (0.1 + 0.9x)`, with the reference's `1 - 0.9` (not exactly 0.1 in binary).
fn rex(x: f64) -> f64 {
    x / (1.0 - 0.9 + 0.9 * x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use PrecisionScheduleKind as K;

    fn sched(kind: K) -> PrecisionSchedule {
        PrecisionSchedule {
            kind,
            q_min: 3,
            q_max: 8,
            cycles: 2,
            q_bwd: None,
            delay_steps: 0,
            window_start: 0,
            window_end: None,
        }
    }

    /// q at the given steps for N = 100, n = 2, 3..8 bits: T = floor(100/2) + 1 = 51, D = 5.
    fn at(kind: K, ts: &[u64]) -> Vec<u32> {
        let s = sched(kind);
        ts.iter().map(|&t| s.q_fwd_at(t, 100)).collect()
    }

    const TS: [u64; 7] = [0, 10, 25, 50, 51, 60, 99];

    #[test]
    fn cosine_schedules_by_hand() {
        // CR: t=10: z=10/51, cos(0.616) = 0.8162 → 3 + 2.5·0.1838 = 3.46 → 3
        //     t=25: cos(0.4902π) = 0.0308 → 3 + 2.5·0.9692 = 5.42 → 5
        //     t=50: cos(0.9804π) = -0.9981 → 3 + 2.5·1.9981 = 7.995 → 8
        //     t=51: k=1, z=0 → 3; t=60: z=9/51 → 3.37 → 3; t=99: z=48/51 → 7.96 → 8
        assert_eq!(at(K::Cr, &TS), [3, 3, 5, 8, 3, 3, 8]);
        // CT: k=0 decays: t=0 → 8; t=10: 8 - 2.5·0.1838 = 7.54 → 8; t=25: 8 - 2.42 = 5.58 → 6;
        //     t=50: 8 - 4.995 = 3.005 → 3; k=1 grows as CR.
        assert_eq!(at(K::Ct, &TS), [8, 8, 6, 3, 3, 3, 8]);
    }

    #[test]
    fn linear_schedules_by_hand() {
        // LR: 3 + 5·m/51: t=10 → 3.98 → 4; t=25 → 5.45 → 5; t=50 → 7.90 → 8;
        //     t=60 (m=9) → 3.88 → 4; t=99 (m=48) → 7.71 → 8
        assert_eq!(at(K::Lr, &TS), [3, 4, 5, 8, 3, 4, 8]);
        // LT, k=0: 8 - 5·m/51: t=10 → 7.02 → 7; t=25 → 5.55 → 6; t=50 → 3.10 → 3
        assert_eq!(at(K::Lt, &TS), [8, 7, 6, 3, 3, 4, 8]);
    }

    #[test]
    fn exponential_schedules_by_hand() {
        // ER: 8 - 5·e^(-4m/51): t=10: e^-0.784 = 0.4564 → 5.72 → 6; t=25: e^-1.961 = 0.1407
        //     → 7.30 → 7; t=50: e^-3.92 = 0.0198 → 7.90 → 8; t=60 (m=9): e^-0.706 = 0.4937
        //     → 5.53 → 6; t=99 (m=48): e^-3.765 = 0.0232 → 7.88 → 8
        assert_eq!(at(K::Er, &TS), [3, 6, 7, 8, 3, 6, 8]);
        // ETV, k=0: 3 + 5·e^(-4z): t=0 → 8; t=10 → 5.28 → 5; t=25 → 3.70 → 4; t=50 → 3.10 → 3
        assert_eq!(at(K::Etv, &TS), [8, 5, 4, 3, 3, 6, 8]);
        // ETH, k=0: 8 - 5·e^(-4u): t=0: e^-4 = 0.0183 → 7.91 → 8; t=10: u=41/51, e^-3.216
        //     = 0.0401 → 7.80 → 8; t=25: u=26/51, e^-2.039 = 0.1302 → 7.35 → 7;
        //     t=50: u=1/51, e^-0.078 = 0.9245 → 3.38 → 3
        assert_eq!(at(K::Eth, &TS), [8, 8, 7, 3, 3, 6, 8]);
    }

    #[test]
    fn rex_schedules_by_hand() {
        // RR: 8 - 5·u/(0.1 + 0.9u), u = (51 - m)/51: t=10: u=0.8039 → 0.9762 → 3.12 → 3;
        //     t=25: u=0.5098 → 0.9123 → 3.44 → 3; t=50: u=1/51 → 0.1667 → 7.17 → 7;
        //     t=99 (m=48): u=3/51 → 0.3846 → 6.08 → 6
        assert_eq!(at(K::Rr, &TS), [3, 3, 3, 7, 3, 3, 6]);
        // RTV, k=0: 3 + 5·u/(0.1 + 0.9u): t=10 → 7.88 → 8; t=25 → 7.56 → 8; t=50 → 3.83 → 4
        assert_eq!(at(K::Rtv, &TS), [8, 8, 8, 4, 3, 3, 6]);
        // RTH, k=0: 8 - 5·z/(0.1 + 0.9z), z = m/51: t=10: z=0.1961 → 0.7092 → 4.45 → 4;
        //     t=25: z=0.4902 → 0.9058 → 3.47 → 3; t=50: z=0.9804 → 0.9980 → 3.01 → 3
        assert_eq!(at(K::Rth, &TS), [8, 4, 3, 3, 3, 3, 6]);
    }

    #[test]
    fn cpt_uses_floor_period() {
        // T = floor(100/2) = 50: t=25: z=0.5 → 3 + 2.5·1 = 5.5 → 6 (even); t=50 starts cycle 2.
        let s = sched(K::Cpt);
        let q: Vec<u32> = [0, 25, 49, 50, 75, 99]
            .iter()
            .map(|&t| s.q_fwd_at(t, 100))
            .collect();
        assert_eq!(q, [3, 6, 8, 3, 6, 8]);
        // CR's T = 51 puts step 50 at the top of cycle 0 instead.
        assert_eq!(sched(K::Cr).q_fwd_at(50, 100), 8);
    }

    #[test]
    fn static_is_constant_q_max() {
        let s = sched(K::Static);
        assert!(s.curve(100).iter().all(|&q| q == 8));
        assert_eq!(s.mean_bits(100), 8.0);
        assert_eq!(s.q_bwd_at(0, 100), 8);
    }

    #[test]
    fn rounds_half_to_even() {
        // LR over N = 98, n = 2: T = 50. t=15: 3 + 5·(15/50) = 4.5 exactly → 4 (half-away gives
        // 5); t=25: 3 + 5·0.5 = 5.5 → 6.
        let s = sched(K::Lr);
        assert_eq!(s.raw_at(15, 98), Some(4.5));
        assert_eq!(s.q_fwd_at(15, 98), 4);
        assert_eq!(s.raw_at(25, 98), Some(5.5));
        assert_eq!(s.q_fwd_at(25, 98), 6);
    }

    #[test]
    fn every_kind_stays_in_bounds() {
        for kind in K::ALL {
            for (n, cycles) in [(100, 2), (37, 5), (1000, 8), (8, 8), (1, 1)] {
                let s = PrecisionSchedule {
                    cycles,
                    ..sched(kind)
                };
                for q in s.curve(n) {
                    assert!((3..=8).contains(&q), "{kind} N={n}: {q}");
                }
            }
        }
    }

    #[test]
    fn triangular_schedules_alternate_decay_and_growth() {
        // N = 400, n = 4: T = 101; cycles k = 0..3.
        for kind in [K::Ct, K::Lt, K::Etv, K::Eth, K::Rtv, K::Rth] {
            let s = PrecisionSchedule {
                cycles: 4,
                ..sched(kind)
            };
            let curve = s.curve(400);
            for (k, cycle) in curve.chunks(101).enumerate() {
                let pairs = cycle.windows(2);
                if k % 2 == 0 {
                    assert_eq!(cycle[0], 8, "{kind} cycle {k} starts high");
                    assert!(
                        pairs.clone().all(|w| w[1] <= w[0]),
                        "{kind} cycle {k} decays"
                    );
                    assert_eq!(*cycle.last().unwrap(), 3, "{kind} cycle {k} ends low");
                } else {
                    assert_eq!(cycle[0], 3, "{kind} cycle {k} starts low");
                    assert!(
                        pairs.clone().all(|w| w[1] >= w[0]),
                        "{kind} cycle {k} grows"
                    );
                }
            }
        }
        // Repeated ones grow in every cycle.
        for kind in [K::Cr, K::Lr, K::Er, K::Rr] {
            let s = PrecisionSchedule {
                cycles: 4,
                ..sched(kind)
            };
            for cycle in s.curve(400).chunks(101) {
                assert_eq!(cycle[0], 3, "{kind}");
                assert!(cycle.windows(2).all(|w| w[1] >= w[0]), "{kind}");
            }
        }
    }

    #[test]
    fn delay_runs_full_precision_then_the_whole_schedule() {
        let s = PrecisionSchedule {
            delay_steps: 20,
            q_bwd: Some(6),
            ..sched(K::Cr)
        };
        let plain = sched(K::Cr);
        for t in 0..20 {
            assert_eq!(s.q_fwd_at(t, 120), 8);
            assert_eq!(s.q_bwd_at(t, 120), 6);
        }
        // From step 20 it is the undelayed schedule over the remaining 100 steps.
        for t in 20..120 {
            assert_eq!(s.q_fwd_at(t, 120), plain.q_fwd_at(t - 20, 100), "t={t}");
        }
        assert_eq!(s.q_fwd_at(20, 120), 3);
        assert_eq!(s.q_fwd_at(45, 120), 5);
    }

    #[test]
    fn mean_bits_and_cost_ratio() {
        // LR, N = 4, n = 1: T = 5, z = 0, .2, .4, .6 → 3, 4, 5, 6: mean 4.5.
        // Cost q² + 2·q·8: 57 + 80 + 105 + 132 = 374 over 4·(64 + 128) = 768.
        let s = PrecisionSchedule {
            cycles: 1,
            ..sched(K::Lr)
        };
        assert_eq!(s.curve(4), [3, 4, 5, 6]);
        assert_eq!(s.mean_bits(4), 4.5);
        assert!((s.cost_ratio_vs_static(4) - 374.0 / 768.0).abs() < 1e-15);
        assert_eq!(sched(K::Static).cost_ratio_vs_static(100), 1.0);
        let with_bwd = PrecisionSchedule {
            q_bwd: Some(4),
            ..sched(K::Static)
        };
        assert_eq!(with_bwd.cost_ratio_vs_static(100), 1.0);
        let cr = PrecisionSchedule::new(K::Cr);
        let r = cr.cost_ratio_vs_static(10_000);
        assert!(r < 1.0 && r > 0.3, "{r}");
        // Savings groups order the costs: large < medium < small (3..8 bits, 100 steps, 2 cycles).
        let cost = |k| sched(k).cost_ratio_vs_static(100);
        for large in [K::Rr, K::Rth] {
            for medium in [K::Lr, K::Lt, K::Cr, K::Ct, K::Rtv, K::Etv] {
                assert!(cost(large) < cost(medium), "{large} vs {medium}");
                for small in [K::Er, K::Eth] {
                    assert!(cost(medium) < cost(small), "{medium} vs {small}");
                }
            }
        }
    }

    /// `window` against its definition: q_min exactly on `[start, end)`, q_max elsewhere, its
    /// cost ratio the window's share of the run, and a window that does not fit is refused.
    #[test]
    fn window_is_q_min_inside_and_q_max_outside() {
        for (start, end, n) in [
            (0u64, 25u64, 100u64),
            (40, 60, 100),
            (99, 100, 100),
            (0, 7, 7),
        ] {
            let s = PrecisionSchedule {
                window_start: start,
                window_end: Some(end),
                ..sched(K::Window)
            };
            s.validate(n).unwrap();
            for (t, q) in s.curve(n).into_iter().enumerate() {
                let inside = (start..end).contains(&(t as u64));
                assert_eq!(q, if inside { 3 } else { 8 }, "[{start}, {end}) t={t}");
            }
            let qb = 8.0;
            let cost = |q: f64| q * q + 2.0 * q * qb;
            let share = (end - start) as f64 / n as f64;
            let want = share * cost(3.0) / cost(8.0) + (1.0 - share);
            assert!((s.cost_ratio_vs_static(n) - want).abs() < 1e-12);
        }
        let bad = |start, end: Option<u64>| PrecisionSchedule {
            window_start: start,
            window_end: end,
            ..sched(K::Window)
        };
        let e = bad(0, None).validate(100).unwrap_err().to_string();
        assert!(e.contains("precision_schedule.window_end"), "{e}");
        assert!(bad(10, Some(10)).validate(100).is_err());
        assert!(bad(0, Some(101)).validate(100).is_err());
        // The window fields round-trip and stay out of other kinds' TOML.
        let w = Wrapper {
            precision_schedule: bad(5, Some(9)),
        };
        let text = toml::to_string(&w).unwrap();
        assert!(text.contains("window_start = 5") && text.contains("window_end = 9"));
        assert_eq!(toml::from_str::<Wrapper>(&text).unwrap(), w);
        let cr = toml::to_string(&Wrapper {
            precision_schedule: sched(K::Cr),
        })
        .unwrap();
        assert!(!cr.contains("window"), "{cr}");
    }

    #[test]
    fn groups_names_and_descriptions() {
        assert_eq!(K::ALL.len(), 13);
        for k in K::ALL {
            assert_eq!(k.name().parse::<K>().unwrap(), k);
            assert_eq!(k.name().to_lowercase().parse::<K>().unwrap(), k);
            assert!(!k.describe().is_empty());
        }
        assert_eq!(K::Rth.group(), SavingsGroup::Large);
        assert_eq!(K::Etv.group(), SavingsGroup::Medium);
        assert_eq!(K::Eth.group(), SavingsGroup::Small);
        assert_eq!(K::Static.group(), SavingsGroup::Baseline);
        let e = "XYZ".parse::<K>().unwrap_err().to_string();
        assert!(e.contains("\"XYZ\""), "{e}");
        assert!(
            e.contains("static, cpt, CR, CT, LR, LT, ER, ETV, ETH, RR, RTV, RTH"),
            "{e}"
        );
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Wrapper {
        precision_schedule: PrecisionSchedule,
    }

    #[test]
    fn toml_defaults_names_and_round_trip() {
        let w: Wrapper = toml::from_str("[precision_schedule]\nkind = \"RTH\"\n").unwrap();
        assert_eq!(w.precision_schedule, PrecisionSchedule::new(K::Rth));
        let w: Wrapper =
            toml::from_str("[precision_schedule]\nkind = \"rth\"\nq_bwd = 6\ndelay_steps = 5\n")
                .unwrap();
        assert_eq!(w.precision_schedule.q_bwd(), 6);
        assert_eq!(w.precision_schedule.delay_steps, 5);
        for k in K::ALL {
            let w = Wrapper {
                precision_schedule: PrecisionSchedule {
                    q_bwd: Some(7),
                    ..PrecisionSchedule::new(k)
                },
            };
            let text = toml::to_string(&w).unwrap();
            assert!(text.contains(&format!("kind = \"{}\"", k.name())), "{text}");
            assert_eq!(toml::from_str::<Wrapper>(&text).unwrap(), w);
            let json = serde_json::to_string(&w).unwrap();
            assert_eq!(serde_json::from_str::<Wrapper>(&json).unwrap(), w);
        }
        let e = toml::from_str::<Wrapper>("[precision_schedule]\nkind = \"CR\"\nqmin = 2\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `qmin`"), "{e}");
        let e = toml::from_str::<Wrapper>("[precision_schedule]\nkind = \"XR\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `XR`"), "{e}");
    }

    #[track_caller]
    fn invalid(s: PrecisionSchedule, total: u64, needle: &str) {
        let e = s.validate(total).unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
    }

    #[test]
    fn validation_names_field_and_expectation() {
        let ok = sched(K::Cr);
        ok.validate(100).unwrap();
        invalid(
            PrecisionSchedule {
                q_min: 0,
                ..ok.clone()
            },
            100,
            "precision_schedule.q_min: must be in 1..=q_max (8) bits, got 0",
        );
        invalid(
            PrecisionSchedule {
                q_min: 9,
                ..ok.clone()
            },
            100,
            "precision_schedule.q_min: must be in 1..=q_max (8) bits, got 9",
        );
        invalid(
            PrecisionSchedule {
                q_max: 33,
                ..ok.clone()
            },
            100,
            "precision_schedule.q_max: must be in 1..=32 bits, got 33",
        );
        invalid(
            PrecisionSchedule {
                cycles: 0,
                ..ok.clone()
            },
            100,
            "precision_schedule.cycles: must be ≥ 1, got 0",
        );
        invalid(
            PrecisionSchedule {
                cycles: 101,
                ..ok.clone()
            },
            100,
            "precision_schedule.cycles: must be ≤ the run's total steps (100), got 101",
        );
        invalid(
            PrecisionSchedule {
                cycles: 90,
                delay_steps: 20,
                ..ok.clone()
            },
            100,
            "precision_schedule.cycles: must be ≤ the steps after delay_steps (80), got 90",
        );
        invalid(
            PrecisionSchedule {
                q_bwd: Some(0),
                ..ok.clone()
            },
            100,
            "precision_schedule.q_bwd: must be in 1..=32 bits, got 0",
        );
        invalid(
            PrecisionSchedule {
                delay_steps: 100,
                ..ok.clone()
            },
            100,
            "precision_schedule.delay_steps: must be < the run's total steps (100), got 100",
        );
        // A static schedule does not cycle, so its cycle count is not held to the run length.
        PrecisionSchedule {
            cycles: 500,
            ..sched(K::Static)
        }
        .validate(100)
        .unwrap();
    }

    proptest! {
        #[test]
        fn q_in_range_for_random_params(
            kind_idx in 0..12usize,
            q_min in 1u32..=32,
            width in 0u32..=31,
            cycles in 1u32..=40,
            extra in 0u64..2000,
            delay in 0u64..50,
        ) {
            let q_max = (q_min + width).min(32);
            let total = u64::from(cycles) + delay + extra;
            let s = PrecisionSchedule {
                kind: K::ALL[kind_idx],
                q_min,
                q_max,
                cycles,
                q_bwd: None,
                delay_steps: delay,
                window_start: 0,
                window_end: None,
            };
            prop_assert!(s.validate(total).is_ok());
            for (t, q) in s.curve(total).into_iter().enumerate() {
                prop_assert!((q_min..=q_max).contains(&q), "t={} q={}", t, q);
            }
            let r = s.cost_ratio_vs_static(total);
            prop_assert!(r > 0.0 && r <= 1.0 + 1e-12);
        }
    }
}
