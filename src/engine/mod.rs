//! Training: the job lifecycle, one worker's loop, the flat-buffer optimizer, checkpoints.
pub mod batch;
pub mod checkpoint;
pub mod control;
pub mod device;
pub mod flat;
pub mod job;
pub mod optim;
pub mod range_test;
pub mod recorder;
pub mod trainer;

pub use job::{Job, JobSpec};
