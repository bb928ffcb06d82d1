//! cptlab: train image classifiers with libtorch and compare precision schedules.
//!
//! Configuration flows in (`config`), events flow out (`telemetry`); workers (`engine`) never
//! touch the terminal and the front ends (`cli`) never touch tensors. Schedules are pure math.
// println!/eprintln! panic on a closed pipe (Rust ignores SIGPIPE): the program writes through
// `cli::output`, which treats EPIPE and ENOSPC as outcomes. Tests may print (clippy.toml).
#![warn(clippy::print_stdout, clippy::print_stderr)]
pub mod cli;
pub mod comparison;
pub mod config;
pub mod data;
pub mod engine;
pub mod files;
pub mod models;
pub mod quant;
pub mod schedule;
pub mod stats;
pub mod sweep;
pub mod telemetry;
pub mod tui;
