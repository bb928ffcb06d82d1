//! Every list of kinds has one source, `ALL`: each kind's default round-trips through TOML,
//! validates and gives finite values, and the CLI's possible values and the TUI's pickers are
//! `ALL`, in order.
use clap::CommandFactory;
use cptlab::config::presets::PresetStore;
use cptlab::config::{OptimizerConfig, OptimizerKind, PrecisionMode};
use cptlab::models::ModelKind;
use cptlab::schedule::{LrContext, LrDefaults, LrSchedule, LrScheduleKind, MomentumKind};
use cptlab::tui::setup::{choices, Field};
use serde::{Deserialize, Serialize};

/// A value under `key` of a TOML document, written out and read back.
fn toml_round_trip<T: Serialize + for<'de> Deserialize<'de>>(value: &T) -> T {
    #[derive(Serialize, Deserialize)]
    struct Doc<T> {
        v: T,
    }
    let text = toml::to_string(&Doc { v: value }).expect("serializes");
    toml::from_str::<Doc<T>>(&text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .v
}

fn possible_values(path: &[&str], arg: &str) -> Vec<String> {
    let mut cmd = cptlab::cli::Cli::command();
    for sub in path {
        cmd = cmd
            .find_subcommand(sub)
            .unwrap_or_else(|| panic!("subcommand {sub}"))
            .clone();
    }
    let a = cmd
        .get_arguments()
        .find(|a| a.get_id() == arg)
        .unwrap_or_else(|| panic!("{path:?} has no {arg}"));
    a.get_possible_values()
        .iter()
        .map(|p| p.get_name().to_string())
        .collect()
}

fn strings(v: Vec<&str>) -> Vec<String> {
    v.into_iter().map(str::to_string).collect()
}

#[test]
fn every_kind_of_every_list_round_trips_validates_and_is_listed_in_order() {
    // LR schedules, in a run of few steps and a longer one (100 epochs: goyal's default
    // milestones are the paper's 30, 60, 80).
    for (total_steps, steps_per_epoch, epochs) in [(200, 2, 100), (1000, 10, 100)] {
        let run = LrDefaults {
            base_lr: 0.1,
            total_steps,
            epochs,
        };
        for momentum in [MomentumKind::SgdMomentum, MomentumKind::AdamBeta1] {
            let ctx = LrContext {
                base_lr: 0.1,
                total_steps,
                steps_per_epoch,
                global_batch: 128,
                momentum,
            };
            for kind in LrScheduleKind::ALL {
                let s = LrSchedule::default_of(kind, &run);
                assert_eq!(s.kind(), kind);
                assert_eq!(s.name(), kind.name());
                assert_eq!(kind.name().parse::<LrScheduleKind>().unwrap(), kind);
                assert!(!kind.describe().is_empty());
                let back = toml_round_trip(&s);
                assert_eq!(back, s, "{kind}");
                assert_eq!(s.to_table()["kind"].as_str(), Some(kind.name()));
                back.validate(&ctx)
                    .unwrap_or_else(|e| panic!("{kind} over {total_steps} steps: {e}"));
                for step in 0..10 {
                    let lr = back.lr_at(step, &ctx);
                    assert!(lr.is_finite() && lr >= 0.0, "{kind} lr_at({step}) = {lr}");
                    if let Some(m) = back.momentum_at(step, &ctx) {
                        assert!(m.is_finite(), "{kind} momentum_at({step}) = {m}");
                    }
                }
            }
        }
    }
    assert!("nope".parse::<LrScheduleKind>().is_err());

    // Optimizers and precision modes, inside a whole config.
    let dir = tempfile::tempdir().unwrap();
    let base = PresetStore::new(dir.path()).load("quickstart").unwrap();
    for kind in OptimizerKind::ALL {
        let o = OptimizerConfig::default_of(kind, 0.05);
        assert_eq!(o.kind(), kind);
        assert_eq!(o.kind_name(), kind.name());
        assert_eq!(o.lr(), 0.05);
        assert_eq!(kind.name().parse::<OptimizerKind>().unwrap(), kind);
        assert_eq!(toml_round_trip(&o), o, "{kind}");
        let mut cfg = base.clone();
        cfg.optimizer = o;
        cfg.validate().unwrap_or_else(|e| panic!("{kind}: {e}"));
    }
    for mode in PrecisionMode::ALL {
        assert_eq!(mode.name().parse::<PrecisionMode>().unwrap(), mode);
        assert_eq!(toml_round_trip(&mode), mode);
        assert_eq!(
            serde_json::to_value(mode).unwrap().as_str(),
            Some(mode.name())
        );
        let mut cfg = base.clone();
        cfg.precision.mode = mode;
        cfg.validate()
            .unwrap_or_else(|e| panic!("{}: {e}", mode.name()));
    }
    for kind in ModelKind::ALL {
        assert_eq!(toml_round_trip(&kind), kind);
        assert_eq!(kind.name().parse::<ModelKind>().unwrap(), kind);
    }

    // The lists the front ends offer are `ALL`, in order.
    let lr_names = strings(LrScheduleKind::ALL.iter().map(|k| k.name()).collect());
    let opt_names = strings(OptimizerKind::ALL.iter().map(|k| k.name()).collect());
    let mode_names = strings(PrecisionMode::ALL.iter().map(|k| k.name()).collect());
    let model_names = strings(ModelKind::ALL.iter().map(|k| k.name()).collect());
    assert_eq!(strings(choices(Field::LrSchedule)), lr_names);
    assert_eq!(strings(choices(Field::Optimizer)), opt_names);
    assert_eq!(strings(choices(Field::Mode)), mode_names);
    assert_eq!(strings(choices(Field::Model)), model_names);
    assert_eq!(possible_values(&["schedule", "lr"], "name"), lr_names);
    assert_eq!(possible_values(&["run"], "optimizer"), opt_names);
    assert_eq!(possible_values(&["run"], "precision"), mode_names);
    assert_eq!(possible_values(&["run"], "model"), model_names);
}
