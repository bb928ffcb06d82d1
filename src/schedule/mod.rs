//! Schedules: learning rate and quantization precision as pure functions of the optimizer step.
//!
//! Nothing here touches tensors; a whole run's curves can be computed (and plotted) before it
//! starts, and the training loop asks for one value per step.
pub mod lr;
pub mod precision;

pub use lr::{
    CyclicMode, CyclicScaleMode, LrContext, LrDefaults, LrSchedule, LrScheduleKind, MomentumKind,
    WarmupType,
};
pub use precision::{PrecisionSchedule, PrecisionScheduleKind, SavingsGroup};

/// A schedule that cannot run as configured. Messages name the config key, what was expected
/// and the value found.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    /// `lr_schedule.step_size_up: must be ≥ 1, got 0`
    #[error("{field}: must be {expected}, got {got}")]
    Invalid {
        field: String,
        expected: String,
        got: String,
    },
    /// A precision schedule name that does not exist.
    #[error("unknown precision schedule {got:?}: expected one of {valid}")]
    UnknownKind { got: String, valid: String },
    /// An LR schedule name that does not exist.
    #[error("unknown LR schedule {got:?}: expected one of {valid}")]
    UnknownLrKind { got: String, valid: String },
}

impl ScheduleError {
    pub(crate) fn invalid(
        field: impl Into<String>,
        expected: impl Into<String>,
        got: impl std::fmt::Display,
    ) -> ScheduleError {
        ScheduleError::Invalid {
            field: field.into(),
            expected: expected.into(),
            got: got.to_string(),
        }
    }

    /// The config key at fault (`None` for an unknown kind name).
    pub fn field(&self) -> Option<&str> {
        match self {
            ScheduleError::Invalid { field, .. } => Some(field),
            ScheduleError::UnknownKind { .. } | ScheduleError::UnknownLrKind { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_message_names_field_expectation_and_value() {
        let e = ScheduleError::invalid("lr_schedule.step_size_up", "≥ 1", 0);
        assert_eq!(
            e.to_string(),
            "lr_schedule.step_size_up: must be ≥ 1, got 0"
        );
        assert_eq!(e.field(), Some("lr_schedule.step_size_up"));
    }
}
