//! The command line. Every subcommand works without a terminal; output for machines with
//! `--json` (one JSON object per line). Everything printed goes through `output` (a closed pipe
//! ends a listing quietly and never stops a run); runs are followed by `follow`.
//!
//! Exit codes: 0 finished (or a listing whose reader closed the pipe), 1 failed or diverged
//! (and any other error), 2 a wrong command line (clap's code for usage errors, also used for
//! flags a command refuses), 130 a run stopped by a signal.
//!
//! One file per subcommand: its arguments (clap derive, grouped under help headings) and the
//! function that runs it. A new subcommand is a file here and a `Command` variant.
use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Result;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::paths::{PathOverrides, Paths};
use crate::telemetry::{Event, RunStatus};

pub mod bench;
pub mod compare;
pub mod completions;
pub mod doctor;
pub mod estimate;
pub mod follow;
pub mod output;
pub mod presets;
pub mod range_test;
pub mod run;
pub mod runs;
pub mod schedule;
pub mod sweep;
pub mod worker;

use output::{errln, OutputError};
pub use run::{build_config, ConfigArgs, RunArgs};

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
/// clap's exit code for usage errors.
pub const EXIT_USAGE: i32 = 2;
/// 128 + SIGINT, as a shell reports Ctrl-C; also for SIGTERM and SIGHUP.
pub const EXIT_STOPPED: i32 = 130;

/// How `cptlab run` and `cptlab worker` exit, from the run's final status.
pub fn exit_code(status: RunStatus) -> i32 {
    match status {
        RunStatus::Finished => EXIT_OK,
        RunStatus::Stopped => EXIT_STOPPED,
        RunStatus::Diverged | RunStatus::Failed => EXIT_FAILED,
    }
}

/// A wrong command line that clap cannot see (a flag a command refuses, a malformed `--set`):
/// exits with clap's code for usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub(crate) fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

#[derive(Debug, Parser)]
#[command(
    name = "cptlab",
    version,
    about = "Train image classifiers with libtorch and compare precision schedules"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    /// Preset loaded into the workbench's Setup view (TUI only; run has its own --preset)
    #[arg(long)]
    pub preset: Option<String>,
    /// Data for runs started from the workbench (TUI only; run has its own --data)
    #[arg(long, env = "CPTLAB_DATA", hide_env_values = true)]
    pub data: Option<String>,
    /// Leave the mouse to the terminal: its own selection and scrolling (TUI only; also
    /// CPTLAB_NO_MOUSE=1)
    #[arg(long)]
    pub no_mouse: bool,
    // DeepSpeed's launcher runs `PROGRAM --local_rank=N ARGS…`, so with `--no_python` the
    // flag arrives before the subcommand; only `worker` takes it.
    /// The local rank, as DeepSpeed's launcher passes it (cptlab worker only)
    #[arg(
        long = "local_rank",
        alias = "local-rank",
        value_name = "N",
        hide = true
    )]
    pub local_rank: Option<usize>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// Where runs are recorded [default: the user data dir]
    #[arg(long, global = true, hide_env_values = true, env = "CPTLAB_RUNS_DIR")]
    pub runs_dir: Option<PathBuf>,
    /// Where user presets live [default: the user config dir]
    #[arg(
        long,
        global = true,
        hide_env_values = true,
        env = "CPTLAB_PRESETS_DIR"
    )]
    pub presets_dir: Option<PathBuf>,
    /// Where decoded datasets are cached [default: the user cache dir]
    #[arg(long, global = true, hide_env_values = true, env = "CPTLAB_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

impl GlobalArgs {
    pub fn paths(&self) -> Paths {
        Paths::resolve(&PathOverrides {
            runs: self.runs_dir.clone(),
            presets: self.presets_dir.clone(),
            cache: self.cache_dir.clone(),
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train one run headless (progress bar on a terminal, JSON lines with --json)
    Run(RunArgs),
    /// Recorded runs
    #[command(subcommand)]
    Runs(runs::RunsCommand),
    /// Built-in and user presets
    #[command(subcommand)]
    Presets(presets::PresetsCommand),
    /// Torch, CUDA and thread settings, and where files live
    Doctor,
    /// CPT's precision range test: the lowest precision at which training makes progress
    RangeTest(range_test::RangeTestArgs),
    /// One rank of a multi-process job, started by torchrun, srun or DeepSpeed's launcher (or
    /// RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), with CPTLAB_RDZV_TOKEN (docs/MULTINODE.md)
    Worker(worker::WorkerArgs),
    /// Print an LR or precision schedule's curve (terminal plot, or CSV)
    #[command(subcommand)]
    Schedule(schedule::ScheduleCommand),
    /// A sweep: runs over the product of config values and seeds, resumable
    Sweep(sweep::SweepArgs),
    /// Runs grouped by what varies between them: means with 95% intervals over seeds, and
    /// seed-paired differences to a baseline group
    Compare(compare::CompareArgs),
    /// Seconds per epoch beside a PyTorch eager reference (see docs/BENCHMARKS.md)
    Bench(bench::BenchArgs),
    /// Memory per rank before a run: parameters, gradients, fp32 master copy, optimizer state
    /// under ZeRO 0 and 1, activations (measured by a CPU forward at micro-batch 2 and 4)
    Estimate(estimate::EstimateArgs),
    /// Shell completions (bash, zsh, fish) on stdout
    Completions(completions::CompletionsArgs),
    /// The man page (roff) on stdout
    #[command(hide = true)]
    Man,
}

/// The `tracing` subscriber: `CPTLAB_LOG` filters, stderr, never a panic on a closed stderr.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("CPTLAB_LOG"))
        .with_writer(|| output::TracingWriter)
        .log_internal_errors(false)
        .try_init();
}

/// The whole program: parses `args` (the first is the program name), runs the command, prints
/// any error on stderr, and returns the exit code.
pub fn entry<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let cli = match parse(&args) {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version are "errors" too, printed on stdout with code 0.
            let code = e.exit_code();
            if code != EXIT_OK && streams_events(&args) {
                let text = e.to_string();
                let first = text.lines().next().unwrap_or_default();
                print_failed_event(first.trim_start_matches("error: "));
            }
            // clap's own printing ignores a closed pipe.
            let _ = e.print();
            return code;
        }
    };
    let code = match main(cli) {
        Ok(code) => code,
        Err(e) => report(&e),
    };
    // What is still buffered (text without a final newline) must reach stdout too. A failure
    // the command already met was its to handle: a run only warns, and exits as the run ended.
    let unseen = output::stdout().is_open();
    match output::stdout().flush() {
        Err(e @ OutputError::Failed { .. }) if unseen && code == EXIT_OK => {
            let _ = errln!("error: {e}");
            EXIT_FAILED
        }
        _ => code,
    }
}

fn parse(args: &[OsString]) -> Result<Cli, clap::Error> {
    let matches = Cli::command().try_get_matches_from(args)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    if let (Some(Command::Run(run)), Some(("run", sub))) = (&mut cli.command, matches.subcommand())
    {
        run.given = given_flags(sub, "run");
    }
    Ok(cli)
}

/// The long names of the flags of subcommand `name` that the command line itself gave.
fn given_flags(m: &ArgMatches, name: &str) -> Vec<String> {
    let cmd = Cli::command();
    let Some(sub) = cmd.find_subcommand(name) else {
        return Vec::new();
    };
    sub.get_arguments()
        .filter(|a| {
            m.try_contains_id(a.get_id().as_str()).unwrap_or(false)
                && m.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine)
        })
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect()
}

/// Whether the command line asks for JSON events (`run`, `worker` or `range-test` with `--json`):
/// then even a usage error ends stdout with a `failed` event.
fn streams_events(args: &[OsString]) -> bool {
    if !args.iter().any(|a| a == "--json") {
        return false;
    }
    // The first word that is neither a flag nor the value of a top-level flag.
    let takes_value = [
        "--runs-dir",
        "--presets-dir",
        "--cache-dir",
        "--preset",
        "--data",
        "--local_rank",
        "--local-rank",
    ];
    let mut words = args.iter().skip(1);
    while let Some(w) = words.next() {
        let w = w.to_string_lossy();
        if takes_value.contains(&w.as_ref()) {
            words.next();
        } else if !w.starts_with('-') {
            return matches!(w.as_ref(), "run" | "worker" | "range-test");
        }
    }
    false
}

/// `{"event":"failed","error":…}` on stdout.
fn print_failed_event(error: &str) {
    let _ = output::stdout().json_line(&Event::Failed {
        error: error.to_string(),
        step: None,
    });
}

/// Prints a command's error and gives its exit code; a closed pipe is no error.
fn report(e: &anyhow::Error) -> i32 {
    if let Some(OutputError::Closed(_)) = OutputError::in_chain(e) {
        return EXIT_OK;
    }
    let _ = errln!("error: {e:#}");
    if e.chain().any(|c| c.is::<UsageError>()) {
        EXIT_USAGE
    } else {
        EXIT_FAILED
    }
}

/// Runs the parsed command line; returns the process exit code.
pub fn main(cli: Cli) -> Result<i32> {
    let paths = cli.global.paths();
    if let Some(n) = cli.local_rank {
        if !matches!(cli.command, Some(Command::Worker(_))) {
            return Err(usage(format!(
                "--local_rank={n} is for `cptlab worker` (DeepSpeed's launcher passes it)"
            )));
        }
    }
    if cli.command.is_none() {
        // Setup's memory line: the engine's estimate, handed to the TUI as a function.
        crate::tui::setup::set_memory_estimator(estimate::setup_figures);
    }
    match cli.command {
        None => crate::tui::run(
            &paths,
            crate::tui::TuiOptions {
                preset: cli.preset,
                data: cli.data,
                no_mouse: cli.no_mouse,
                // Probed here, once: the TUI never touches libtorch.
                machine: Some(crate::tui::setup::Machine {
                    cuda_devices: tch::Cuda::device_count().max(0) as usize,
                    cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
                }),
            },
        ),
        Some(Command::Run(args)) => run::run(args, &paths),
        Some(Command::Runs(c)) => runs::run(c, &paths).map(|()| EXIT_OK),
        Some(Command::Presets(c)) => presets::run(c, &paths).map(|()| EXIT_OK),
        Some(Command::Doctor) => doctor::run(&paths).map(|()| EXIT_OK),
        Some(Command::Sweep(args)) => {
            let json = args.json;
            with_failed_event(json, sweep::run(args, &paths))
        }
        Some(Command::Compare(args)) => compare::run(args, &paths).map(|()| EXIT_OK),
        Some(Command::Bench(args)) => bench::run(args, &paths).map(|()| EXIT_OK),
        Some(Command::Estimate(args)) => estimate::run(args, &paths).map(|()| EXIT_OK),
        Some(Command::Completions(args)) => completions::run(args).map(|()| EXIT_OK),
        Some(Command::Man) => completions::man().map(|()| EXIT_OK),
        Some(Command::RangeTest(args)) => {
            let json = args.json;
            with_failed_event(json, range_test::run(args, &paths)).map(|()| EXIT_OK)
        }
        Some(Command::Schedule(cmd)) => schedule::run(cmd).map(|()| EXIT_OK),
        Some(Command::Worker(mut args)) => {
            if let Some(n) = cli.local_rank {
                if args.local_rank.is_some_and(|m| m != n) {
                    return Err(usage(format!(
                        "--local_rank given twice: {n} before `worker`, {} after",
                        args.local_rank.unwrap_or_default()
                    )));
                }
                args.local_rank = Some(n);
            }
            let json = args.json;
            with_failed_event(json, worker::run(args, &paths))
        }
    }
}

/// Under `--json`, an error of a command that streams events ends its stdout with one `failed`
/// event (the run's own failures arrive as events and are not errors here).
pub(crate) fn with_failed_event<T>(json: bool, r: Result<T>) -> Result<T> {
    if let Err(e) = &r {
        let closed = matches!(OutputError::in_chain(e), Some(OutputError::Closed(_)));
        if json && !closed {
            print_failed_event(&format!("{e:#}"));
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_and_worker_share_one_exit_code_mapping() {
        // No wildcard: a new status does not compile until it has an exit code.
        for status in RunStatus::ALL {
            let expected = match status {
                RunStatus::Finished => 0,
                RunStatus::Stopped => 130,
                RunStatus::Diverged | RunStatus::Failed => 1,
            };
            assert_eq!(exit_code(status), expected, "{status}");
        }
    }

    #[test]
    fn only_run_worker_and_range_test_stream_events() {
        let v = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(streams_events(&v(&["cptlab", "run", "--json"])));
        assert!(streams_events(&v(&[
            "cptlab",
            "--runs-dir",
            "run",
            "worker",
            "--json"
        ])));
        assert!(!streams_events(&v(&["cptlab", "runs", "list", "--json"])));
        assert!(!streams_events(&v(&["cptlab", "run"])));
    }

    #[test]
    fn given_flags_are_the_command_lines_own() {
        let args = v(&[
            "cptlab",
            "run",
            "--max-steps",
            "5",
            "--set",
            "a=1",
            "--json",
        ]);
        let cli = parse(&args).unwrap();
        let Some(Command::Run(run)) = cli.command else {
            panic!()
        };
        // The order is the flags' declaration order, not the command line's.
        let mut given = run.given.clone();
        given.sort();
        assert_eq!(given, ["json", "max-steps", "set"]);
        // Negative numbers are values, for validation to judge.
        let cli = parse(&v(&["cptlab", "run", "--lr", "-0.1"])).unwrap();
        let Some(Command::Run(run)) = cli.command else {
            panic!()
        };
        assert_eq!(run.config.train.lr, Some(-0.1));
        let e = parse(&v(&["cptlab", "run", "--epochs", "18446744073709551615"])).unwrap_err();
        assert_eq!(e.exit_code(), EXIT_USAGE);
        assert!(e.to_string().contains("--epochs"), "{e}");
    }

    fn v(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }
}
