//! Every view drawn at 80×24 and 160×48 from scripted event streams, compared with insta
//! snapshots (`INSTA_UPDATE=always cargo test --release --test tui_views` rewrites them).
mod tui_common;

use cptlab::tui::action::{Action, View};
use cptlab::tui::app::{App, Control, Msg};
use cptlab::tui::run_data::RunData;
use cptlab::tui::sampler::{DeviceSample, ProcSample};
use cptlab::tui::setup::Field;
use tui_common::*;

const SIZES: [(u16, u16); 2] = [(80, 24), (160, 48)];

fn snap(app: &App, name: &str) {
    for (w, h) in SIZES {
        insta::assert_snapshot!(format!("{name}_{w}x{h}"), render(app, w, h));
    }
}

/// A CR run half-way through epoch 2, driven by this workbench, with a minute of CPU samples.
fn live_app(home: &Home) -> App {
    let mut app = home.app();
    let cfg = config("cr-live", Some(cr()));
    let dir = write_run(&home.runs(), "20250101-120000-cr-live", &cfg, &[], None);
    let id = app.add_run(
        RunData::new("cr-live"),
        Control::Driven {
            pid: 4242,
            child: true,
            lock: None,
        },
        None,
    );
    for e in events(&dir, &cfg, SPE + SPE / 2, false, 0.0) {
        app.ingest(id, e);
    }
    for i in 0..60 {
        let x = i as f64;
        app.on_msg(Msg::Devices(DeviceSample {
            gpus: vec![],
            procs: vec![ProcSample {
                pid: 4242,
                cores: 1.6 + 0.3 * (x * 0.4).sin(),
                workers: vec![("cptlab-worker-0".into(), 0.8 + 0.15 * (x * 0.5).cos())],
            }],
            nvml_error: None,
        }));
    }
    app.current = Some(id);
    app.show(View::Dashboard);
    app
}

#[test]
fn setup_view() {
    let home = Home::new();
    let mut app = home.app();
    app.setup.set(Field::Cpt, "CR");
    app.setup.set(Field::Cycles, "4");
    snap(&app, "setup_cr");
}

#[test]
fn setup_picker_and_settings() {
    use cptlab::tui::setup::Row;
    let home = Home::new();
    let mut app = home.app();
    // A choice opens its list with the kinds' descriptions.
    app.setup.focus_row(Row::Field(Field::LrSchedule));
    app.update(Action::Select);
    assert!(app.setup.picker.is_some());
    snap(&app, "setup_picker");
    app.update(Action::Back);
    // The settings below the form's fields: one typed wrong, one changed, one being edited.
    app.setup.set_setting("train.label_smoothing", "lots");
    app.setup.set_setting("optimizer.nesterov", "true");
    app.setup.focus_row(Row::Setting("train.grad_clip".into()));
    app.update(Action::Select);
    for c in "1.0".chars() {
        app.update(Action::Input(c));
    }
    app.update(Action::Left);
    snap(&app, "setup_settings");
}

#[test]
fn setup_marks_invalid_fields_in_place() {
    let home = Home::new();
    let mut app = home.app();
    app.setup.set(Field::Batch, "0");
    app.setup.set(Field::Lr, "fast");
    app.update(Action::Start);
    assert!(app.take_commands().is_empty(), "start is refused");
    snap(&app, "setup_invalid");
}

#[test]
fn dashboard_mid_run() {
    let home = Home::new();
    let app = live_app(&home);
    snap(&app, "dashboard_live");
}

#[test]
fn dashboard_finished_replay() {
    let home = Home::new();
    let mut app = home.app();
    let cfg = config("static-8b", Some(static8()));
    let dir = home.runs().join("20250101-110000-static-8b");
    let ev = events(&dir, &cfg, u64::MAX, true, 0.0);
    write_run(&home.runs(), "20250101-110000-static-8b", &cfg, &ev, None);
    let id = app.open_dir(&dir);
    for e in ev {
        app.ingest(id, e);
    }
    app.current = Some(id);
    app.show(View::Dashboard);
    snap(&app, "dashboard_finished");
}

/// A recording of an older build (0-based step and eval epochs) reads as 1-based: the Dashboard
/// and Compare draw it exactly as this build's, mid-run and finished.
#[test]
fn an_older_builds_recording_draws_the_same_epochs() {
    let draw = |older: bool, upto: u64, view: View| -> Vec<String> {
        let home = Home::new();
        let mut app = home.app();
        let mut ids = Vec::new();
        for (name, better) in [("20250101-110000-a", 0.0), ("20250101-111000-b", 0.03)] {
            let cfg = config(name, Some(cr()));
            let dir = home.runs().join(name);
            let mut ev = events(&dir, &cfg, upto, upto == u64::MAX, better);
            if older {
                ev = as_older_build(&ev);
            }
            write_run(&home.runs(), name, &cfg, &ev, None);
            let id = app.open_dir(&dir);
            for e in ev {
                app.ingest(id, e);
            }
            ids.push(id);
        }
        app.current = Some(ids[0]);
        app.compared = ids.clone();
        app.show(view);
        SIZES.iter().map(|&(w, h)| render(&app, w, h)).collect()
    };
    for upto in [SPE + SPE / 2, u64::MAX] {
        for view in [View::Dashboard, View::Compare] {
            let new = draw(false, upto, view);
            assert!(
                new[1].contains(&format!(
                    "epoch {}/{EPOCHS}",
                    upto.min(SPE * EPOCHS).div_ceil(SPE)
                )) || view == View::Compare,
                "{}",
                new[1]
            );
            assert_eq!(draw(true, upto, view), new, "{view:?} after {upto} steps");
        }
    }
}

#[test]
fn dashboard_without_a_run() {
    let home = Home::new();
    let mut app = home.app();
    app.show(View::Dashboard);
    snap(&app, "dashboard_empty");
}

#[test]
fn compare_view() {
    let home = Home::new();
    let mut app = home.app();
    let mut ids = Vec::new();
    for (name, cpt, better) in [
        ("20250101-100000-static-8b", static8(), 0.0),
        ("20250101-100500-cr-3-8", cr(), 0.03),
    ] {
        let cfg = config(name, Some(cpt));
        let dir = home.runs().join(name);
        let ev = events(&dir, &cfg, u64::MAX, true, better);
        write_run(&home.runs(), name, &cfg, &ev, None);
        let id = app.open_dir(&dir);
        for e in ev {
            app.ingest(id, e);
        }
        ids.push(id);
    }
    app.compared = ids;
    app.show(View::Compare);
    snap(&app, "compare");
}

#[test]
fn presets_view() {
    let home = Home::new();
    let mut app = home.app();
    app.show(View::Presets);
    // n: save the setup under a name typed into the prompt (it starts with the setup's name).
    app.update(Action::Key('n'));
    for _ in 0.."demo".len() {
        app.update(Action::Backspace);
    }
    for c in "my-cr".chars() {
        app.update(Action::Input(c));
    }
    app.update(Action::Select);
    // Only some built-ins, so that adding presets to the repository does not move the
    // snapshot; the preview shows a built-in's file.
    app.presets
        .rows
        .retain(|p| matches!(p.name.as_str(), "lenet-sgd" | "my-cr" | "quickstart"));
    app.presets.cursor = 0;
    snap(&app, "presets");
}

#[test]
fn runs_view() {
    let home = Home::new();
    for (name, finish, pid) in [
        ("20250101-090000-static-8b", true, None),
        ("20250101-093000-cr-3-8", true, None),
        ("20250101-100000-interrupted", false, Some(DEAD_PID)),
        ("20250101-103000-headless", false, Some(std::process::id())),
    ] {
        let cfg = config(name, Some(cr()));
        let dir = home.runs().join(name);
        let ev = events(&dir, &cfg, if finish { u64::MAX } else { 40 }, finish, 0.0);
        write_run(&home.runs(), name, &cfg, &ev, pid);
    }
    // A live run left headless: the workbench opens on Runs and says so.
    let mut app = home.app();
    assert_eq!(app.view, View::Runs);
    app.update(Action::Down);
    app.update(Action::Key(' '));
    app.update(Action::Down);
    app.update(Action::Key(' '));
    snap(&app, "runs");
}

#[test]
fn help_overlay() {
    let home = Home::new();
    let mut app = live_app(&home);
    app.update(Action::Help);
    snap(&app, "help_dashboard");
}

#[test]
fn quit_while_live_asks() {
    let home = Home::new();
    let mut app = live_app(&home);
    app.update(Action::Quit);
    assert!(app.exit.is_none());
    snap(&app, "quit_dialog");
}

#[test]
fn quit_with_unsaved_setup_asks() {
    let home = Home::new();
    let mut app = home.app();
    app.setup.set(Field::Epochs, "5");
    app.setup.set(Field::Cpt, "CR");
    app.update(Action::Quit);
    assert!(app.exit.is_none());
    snap(&app, "quit_unsaved");
}

#[test]
fn start_shows_what_will_start() {
    let home = Home::new();
    let mut app = home.app();
    app.setup.set(Field::Cpt, "CR");
    app.setup.set(Field::Cycles, "4");
    app.update(Action::Start);
    assert!(
        app.take_commands().is_empty(),
        "nothing starts before the yes"
    );
    snap(&app, "setup_confirm_start");
}

/// A long error wraps at word boundaries under its field; one that names no field is listed
/// below the form with its line breaks; the form scrolls to what is focused, and the wheel
/// scrolls it further.
#[test]
fn setup_errors_wrap_and_scroll() {
    let home = Home::new();
    let mut app = home.app();
    app.setup
        .set(Field::Devices, "gpu:0,1 on the second node of the cluster");
    app.setup.set(Field::Lr, "-1");
    app.setup.set(Field::Momentum, "-0.5");
    app.setup.set(Field::WeightDecay, "-1");
    app.setup.check.general = Some(
        "train.label_smoothing = 1.5: a value in [0, 1)\ndata.eval_batch_size = 0: at least 1 \
         (the evaluation batch is separate from the training batch)"
            .into(),
    );
    // Devices focused: its whole error shows.
    while app.setup.focus() != Field::Devices {
        app.update(Action::Down);
    }
    snap(&app, "setup_long_errors");
    let err = app.setup.check.error(Field::Devices).unwrap().to_string();
    let wrapped = cptlab::tui::setup::wrap(&err, 41);
    assert!(wrapped.len() >= 2, "{wrapped:?}");
    for w in &wrapped {
        assert!(
            err.contains(w.as_str()),
            "{w:?} is not a run of whole words"
        );
    }
}

#[test]
fn compare_three_runs() {
    let home = Home::new();
    let mut app = home.app();
    let mut ids = Vec::new();
    for (name, cpt, better, lr) in [
        ("20250101-100000-static-8b", static8(), 0.0, 0.05),
        ("20250101-100500-cr-3-8", cr(), 0.03, 0.05),
        ("20250101-101000-cr-lr-0.1", cr(), 0.05, 0.1),
    ] {
        let mut cfg = config(name, Some(cpt));
        if let cptlab::config::OptimizerConfig::Sgd { lr: l, .. } = &mut cfg.optimizer {
            *l = lr;
        }
        let dir = home.runs().join(name);
        let ev = events(&dir, &cfg, u64::MAX, true, better);
        write_run(&home.runs(), name, &cfg, &ev, None);
        let id = app.open_dir(&dir);
        for e in ev {
            app.ingest(id, e);
        }
        ids.push(id);
    }
    app.compared = ids;
    app.show(View::Compare);
    // The config diff lists only what differs: beside the figures when there is room, under
    // them otherwise (the table enlarged with Enter).
    let wide = render(&app, 160, 48);
    snap(&app, "compare_three");
    app.update(Action::Pick(3, 0));
    app.update(Action::Select);
    let narrow = render(&app, 80, 24);
    for (frame, heading) in [(&wide, "config that differs"), (&narrow, "config differs")] {
        assert!(frame.contains(heading), "{frame}");
        assert!(frame.contains("optimizer.lr"), "{frame}");
        assert!(frame.contains("precision.schedule.kind"), "{frame}");
        assert!(!frame.contains("train.batch_size"), "{frame}");
    }
    snap(&app, "compare_three_table");
}

#[test]
fn runs_filtered() {
    let home = Home::new();
    for (name, cpt) in [
        ("20250101-090000-static-8b", Some(static8())),
        ("20250101-093000-cr-3-8", Some(cr())),
        ("20250101-100000-fp32", None),
    ] {
        let cfg = config(name, cpt);
        let dir = home.runs().join(name);
        let ev = events(&dir, &cfg, u64::MAX, true, 0.0);
        write_run(&home.runs(), name, &cfg, &ev, None);
    }
    let mut app = home.app();
    app.show(View::Runs);
    app.history.set_filter("8");
    app.update(Action::Key('o'));
    app.status = None;
    snap(&app, "runs_filtered");
}

/// No text is drawn in colour 8 (bright black: `Color::DarkGray`), which many dark palettes
/// make the background: only borders, axes and faint curves may use it.
#[test]
fn no_text_in_bright_black() {
    use ratatui::style::Color;
    let home = Home::new();
    let live = live_app(&home);
    let mut apps = vec![("dashboard", live)];
    for v in View::ALL {
        let mut app = home.app();
        app.setup.set(Field::Batch, "0");
        app.show(v);
        apps.push((v.title(), app));
    }
    let mut help = home.app();
    help.update(Action::Help);
    apps.push(("help", help));
    for (name, app) in apps {
        for (w, h) in SIZES {
            let buf = render_buffer(&app, w, h);
            for y in 0..h {
                for x in 0..w {
                    let c = &buf[(x, y)];
                    let text = c.symbol().chars().any(|ch| ch.is_alphanumeric());
                    assert!(
                        !(text && c.fg == Color::DarkGray),
                        "{name} {w}x{h}: {:?} at ({x}, {y}) is bright black",
                        c.symbol()
                    );
                }
            }
        }
    }
}

#[test]
fn dashboard_fp16_shows_the_loss_scale_and_skipped_steps() {
    let home = Home::new();
    let mut app = home.app();
    let mut cfg = config("fp16", None);
    cfg.precision.mode = cptlab::config::PrecisionMode::Fp16;
    let dir = write_run(&home.runs(), "20250101-130000-fp16", &cfg, &[], None);
    let id = app.add_run(RunData::new("fp16"), Control::None, None);
    for e in events(&dir, &cfg, 60, false, 0.0) {
        let mut raw = e.raw.clone();
        if let Some(step) = raw["step"].as_u64().filter(|_| raw["event"] == "step") {
            // An overflow at step 20 halves the scale.
            raw["loss_scale"] = serde_json::json!(if step < 20 { 65536.0 } else { 32768.0 });
            raw["skipped"] = serde_json::json!(step == 20);
        }
        app.ingest(id, ev(raw));
    }
    app.current = Some(id);
    app.show(View::Dashboard);
    snap(&app, "dashboard_fp16");
}

/// The loss on a log scale, the steps zoomed in twice (the middle half, then a quarter) and the
/// cursor a few steps right of the middle: its line down every chart, its readout in the header.
#[test]
fn dashboard_log_y_zoom_and_cursor() {
    let home = Home::new();
    let mut app = home.app();
    let cfg = config("cr-replay", Some(cr()));
    let dir = home.runs().join("20250101-110000-cr-replay");
    let ev = events(&dir, &cfg, u64::MAX, true, 0.0);
    write_run(&home.runs(), "20250101-110000-cr-replay", &cfg, &ev, None);
    let id = app.open_dir(&dir);
    for e in ev {
        app.ingest(id, e);
    }
    app.current = Some(id);
    app.show(View::Dashboard);
    for a in [
        Action::Key('y'),
        Action::Key('+'),
        Action::Key('i'),
        Action::Right,
        Action::Right,
        Action::Right,
    ] {
        assert!(app.update(a.clone()), "{a:?} is a Dashboard key");
    }
    app.status = None;
    snap(&app, "dashboard_log_zoom_cursor");
}

/// Compare with the cursor: each run's loss and accuracy at its step in the header.
#[test]
fn compare_with_the_cursor() {
    let home = Home::new();
    let mut app = home.app();
    let mut ids = Vec::new();
    for (name, cpt, better) in [
        ("20250101-100000-static-8b", static8(), 0.0),
        ("20250101-100500-cr-3-8", cr(), 0.03),
    ] {
        let cfg = config(name, Some(cpt));
        let dir = home.runs().join(name);
        let ev = events(&dir, &cfg, u64::MAX, true, better);
        write_run(&home.runs(), name, &cfg, &ev, None);
        let id = app.open_dir(&dir);
        for e in ev {
            app.ingest(id, e);
        }
        ids.push(id);
    }
    app.compared = ids;
    app.show(View::Compare);
    for a in [Action::Key('i'), Action::Key('-'), Action::Key('y')] {
        app.update(a);
    }
    app.status = None;
    snap(&app, "compare_cursor");
}

/// Live runs at different progress (A at step 70, B at step 40) and a finished one (C):
/// the table reads all three at step 40, the smallest last step of the live ones, and says
/// so; with the cursor on, at the cursor's step.
#[test]
fn compare_live_runs_at_the_same_step() {
    use cptlab::tui::compare::{common_step, rows_at};
    let home = Home::new();
    let mut app = home.app();
    let mut ids = Vec::new();
    let mut totals = Vec::new();
    for (name, upto, pid, better) in [
        ("20250101-120000-cr-a", 70, Some(4242), 0.0),
        ("20250101-120500-cr-b", 40, Some(4243), 0.03),
        ("20250101-110000-cr-done", u64::MAX, None, 0.05),
    ] {
        let cfg = config(name, Some(cr()));
        let dir = home.runs().join(name);
        let ev = events(&dir, &cfg, upto, pid.is_none(), better);
        write_run(&home.runs(), name, &cfg, &ev, None);
        // GBitOps of the first 40 steps, as the events carry them.
        let at40: f64 = ev
            .iter()
            .filter(|e| e.raw["event"] == "step" && e.raw["step"].as_u64() <= Some(40))
            .map(|e| e.raw["gbitops"].as_f64().unwrap())
            .sum();
        totals.push(at40);
        let id = match pid {
            Some(pid) => app.add_run(
                RunData::new(name),
                Control::Driven {
                    pid,
                    child: true,
                    lock: None,
                },
                None,
            ),
            None => app.open_dir(&dir),
        };
        for e in ev {
            app.ingest(id, e);
        }
        ids.push(id);
    }
    app.compared = ids.clone();
    app.show(View::Compare);
    let runs: Vec<&RunData> = ids.iter().map(|id| &app.slot(*id).unwrap().data).collect();
    assert_eq!(common_step(&runs, None), Some(40));
    let rows = rows_at(&runs, common_step(&runs, None));
    let row = |label: &str| {
        rows.iter()
            .find(|r| r.label == label)
            .unwrap()
            .values
            .clone()
    };
    // Epoch 1 ended at step 32: everyone's accuracy is that evaluation's, the finished run's
    // too (not its final 3-epoch figure).
    assert_eq!(row("test acc"), ["31.00%", "34.00%", "36.00%"]);
    assert_eq!(row("epochs"), ["1/3", "1/3", "1/3"]);
    let gbit: Vec<String> = totals
        .iter()
        .map(|g| cptlab::tui::charts::short(*g))
        .collect();
    assert_eq!(row("GBitOps"), gbit);
    // The scripted loss curve at step 40, each run shifted by its `better`.
    let loss40 = |better: f64| {
        let x = 40.0f64;
        format!(
            "{:.4}",
            2.3 * (-x / 30.0).exp() + 0.25 + 0.06 * (x * 0.7).sin() - better * 0.2
        )
    };
    assert_eq!(row("train loss"), [loss40(0.0), loss40(0.03), loss40(0.05)]);
    // No live run: each run's own figures.
    assert_eq!(common_step(&runs[2..], None), None);
    app.status = None;
    let shown = render(&app, 160, 48);
    assert!(shown.contains("runs against A · at step 40"), "{shown}");
    snap(&app, "compare_live_same_step");
    // The cursor sets the step.
    app.update(Action::Key('i'));
    let runs: Vec<&RunData> = ids.iter().map(|id| &app.slot(*id).unwrap().data).collect();
    let at = cptlab::tui::compare::table_step(&runs, &app.cmp.chart);
    assert!(at.is_some_and(|n| n != 40), "{at:?}");
    let shown = render(&app, 160, 48);
    assert!(
        shown.contains(&format!("at step {}", at.unwrap())),
        "{shown}"
    );
}
