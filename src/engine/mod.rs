//! Training: the job lifecycle, one worker's loop, the flat-buffer optimizer, checkpoints.
pub mod batch;
pub mod checkpoint;
pub mod collective;
pub mod control;
pub mod device;
pub mod flat;
pub mod job;
pub mod launcher;
pub mod loss_scale;
pub mod memory;
pub mod optim;
pub mod range_test;
pub mod recorder;
pub mod rendezvous;
pub mod store;
pub mod torch_error;
pub mod trainer;
pub mod worker;
pub mod zero;

pub use job::{Job, JobSpec, Sinks};
