//! Every built-in preset trains: each file in `presets/` runs ~20 optimizer steps on the synthetic
//! set, its schedule shortened the way a user would with `--set`, and must finish with a finite
//! loss that does not rise on average.
mod common;

use common::{losses, of_kind, run_ok, Home};

const STEPS: u64 = 20;

/// The built-in presets, read from the repository's `presets/` folder (what the binary embeds).
fn preset_names() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("presets");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            (p.extension()? == "toml").then(|| p.file_stem().unwrap().to_string_lossy().into())
        })
        .collect();
    names.sort();
    assert!(names.len() >= 5, "presets in {}: {names:?}", dir.display());
    names
}

/// `--set` overrides that fit the preset's step-count schedule fields into `STEPS` steps, read
/// from the preset's own TOML (`cptlab presets show`), as a user shortening a run would.
fn shorten(home: &Home, preset: &str) -> Vec<String> {
    let out = home
        .cmd()
        .args(["presets", "show", preset])
        .output()
        .unwrap();
    assert!(out.status.success(), "presets show {preset}");
    let table: toml::Table = String::from_utf8_lossy(&out.stdout).parse().unwrap();
    let mut sets = Vec::new();
    if let Some(toml::Value::Table(lr)) = table.get("lr_schedule") {
        for (key, value) in lr {
            let steps = match key.as_str() {
                "warmup_num_steps" | "cycle_first_step_size" | "step_size_up" => STEPS / 4,
                "cycle_second_step_size" | "step_size_down" | "decay_step_size" => STEPS / 4,
                "total_num_steps" | "t_max" => STEPS,
                _ => continue,
            };
            if value.is_integer() {
                sets.push(format!("lr_schedule.{key}={steps}"));
            }
        }
    }
    sets
}

#[test]
fn every_builtin_preset_trains() {
    let home = Home::new();
    for preset in preset_names() {
        let max_steps = STEPS.to_string();
        let mut args: Vec<String> = [
            "run",
            "--preset",
            &preset,
            "--data",
            "synthetic:640:128",
            "--max-steps",
            &max_steps,
            "--set",
            "train.log_every=1",
            "--json",
        ]
        .map(String::from)
        .to_vec();
        for s in shorten(&home, &preset) {
            args.push("--set".into());
            args.push(s);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let events = run_ok(&home, &args);
        assert_eq!(
            of_kind(&events, "finished").len(),
            1,
            "{preset}: no finished event ({args:?})"
        );
        let loss = losses(&events);
        assert_eq!(loss.len() as u64, STEPS, "{preset}: steps recorded");
        assert!(
            loss.iter().all(|l| l.is_finite()),
            "{preset}: non-finite loss {loss:?}"
        );
        // Non-increasing on average: the last third's mean is not above the first third's.
        let third = loss.len() / 3;
        let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
        let (first, last) = (mean(&loss[..third]), mean(&loss[loss.len() - third..]));
        assert!(
            last <= first * 1.01,
            "{preset}: loss rose on average, first third {first:.4} → last third {last:.4}: {loss:?}"
        );
    }
}
