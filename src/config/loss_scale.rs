//! `[precision.loss_scale]`: fp16 loss-scaling settings with DeepSpeed's `fp16` keys and
//! defaults, and their validation. The scaler itself (runtime state) is
//! `engine::loss_scale::LossScaler`, which reads this.
use super::{invalid, ConfigError};
use serde::{Deserialize, Serialize};

/// The `[precision.loss_scale]` settings, DeepSpeed's `fp16` keys and defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossScaleConfig {
    /// Static loss scale; 0 (the default) means dynamic scaling, as in DeepSpeed.
    pub loss_scale: f64,
    /// The dynamic scale starts at `2^initial_scale_power`.
    pub initial_scale_power: u32,
    /// Clean steps between scale increases.
    pub loss_scale_window: u64,
    /// Overflows tolerated before the scale is lowered (DeepSpeed's `delayed_shift`).
    pub hysteresis: u32,
    /// Refill the hysteresis on every clean step instead of only when the scale grows.
    pub consecutive_hysteresis: bool,
    /// The scale never goes below this.
    pub min_loss_scale: f64,
}

impl Default for LossScaleConfig {
    fn default() -> Self {
        LossScaleConfig {
            loss_scale: 0.0,
            initial_scale_power: 16,
            loss_scale_window: 1000,
            hysteresis: 2,
            consecutive_hysteresis: false,
            min_loss_scale: 1.0,
        }
    }
}

impl LossScaleConfig {
    /// Whether the scale adapts (`loss_scale == 0`).
    pub fn is_dynamic(&self) -> bool {
        self.loss_scale == 0.0
    }

    /// Checks the values; errors name the key (under `prefix`, e.g. `precision.loss_scale`),
    /// the value and what was expected, like the rest of `RunConfig::validate`.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{prefix}.{k}");
        if !(self.loss_scale.is_finite() && self.loss_scale >= 0.0) {
            return Err(invalid(
                &key("loss_scale"),
                self.loss_scale,
                "0 (dynamic) or a positive finite static scale",
            ));
        }
        if self.initial_scale_power > 127 {
            return Err(invalid(
                &key("initial_scale_power"),
                self.initial_scale_power,
                "at most 127 (2^power must fit in f32)",
            ));
        }
        if self.loss_scale_window == 0 {
            return Err(invalid(&key("loss_scale_window"), 0, "at least 1"));
        }
        if self.hysteresis == 0 {
            return Err(invalid(&key("hysteresis"), 0, "at least 1"));
        }
        if !(self.min_loss_scale.is_finite() && self.min_loss_scale > 0.0) {
            return Err(invalid(
                &key("min_loss_scale"),
                self.min_loss_scale,
                "a positive finite number",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_serde_and_validation() {
        let c: LossScaleConfig =
            toml::from_str("hysteresis = 4\nconsecutive_hysteresis = true").unwrap();
        assert_eq!(c.hysteresis, 4);
        assert!(c.consecutive_hysteresis);
        assert_eq!(c.loss_scale_window, 1000);
        assert!(toml::from_str::<LossScaleConfig>("window = 3").is_err());
        assert!(c.validate("precision.loss_scale").is_ok());
        let bad = LossScaleConfig {
            hysteresis: 0,
            ..Default::default()
        };
        let e = bad
            .validate("precision.loss_scale")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("invalid precision.loss_scale.hysteresis = 0"),
            "{e}"
        );
        let bad = LossScaleConfig {
            loss_scale: -1.0,
            ..Default::default()
        };
        assert!(bad
            .validate("p")
            .unwrap_err()
            .to_string()
            .contains("p.loss_scale"));
    }
}
