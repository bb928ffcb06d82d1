//! cptlab: train image classifiers with libtorch and compare precision schedules.
//!
//! Configuration flows in (`config`), events flow out (`telemetry`); workers (`engine`) never
//! touch the terminal and the front ends (`cli`) never touch tensors. Schedules are pure math.
pub mod cli;
pub mod config;
pub mod data;
pub mod engine;
pub mod files;
pub mod models;
pub mod quant;
pub mod schedule;
pub mod telemetry;
pub mod tui;
