//! What a run reports (`Event`) and where it is recorded (`store`).
pub mod event;
pub mod store;
pub mod tensorboard;

pub use event::{EvalEvent, Event, RunStatus, StepEvent, Summary};
