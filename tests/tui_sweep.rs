//! The Sweeps view: a real sweep recorded by `cptlab sweep` listed with its points and their
//! figures, Enter and `c` into the Dashboard and Compare, torn and broken progress files, and
//! snapshots of a scripted sweep at 80×24 and 160×48.
mod tui_common;

use std::path::{Path, PathBuf};

use cptlab::sweep::{PointStatus, SweepStatus};
use cptlab::tui::action::{Action, View};
use cptlab::tui::app::App;
use cptlab::tui::sweep::Focus;
use tui_common::*;

const SWEEP: &str = r#"
name = "tiny"
seeds = 2
[set]
"data.source" = "synthetic:256:64"
"train.batch_size" = 32
"train.epochs" = 1
"devices.threads" = 1
[axes]
"precision.schedule.kind" = ["CR", "static"]
"#;

/// Runs `cptlab sweep` on `SWEEP` in `home`, as a user would.
fn run_sweep(home: &Home) -> PathBuf {
    let file = home.dir.path().join("tiny.toml");
    std::fs::write(&file, SWEEP).unwrap();
    let out = home.cmd().arg("sweep").arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    home.runs().join("tiny")
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

fn compared_dirs(app: &App) -> Vec<PathBuf> {
    app.compared_slots()
        .iter()
        .map(|s| s.data.dir.clone().unwrap())
        .collect()
}

#[test]
fn a_real_sweep_lists_its_points_opens_them_and_compares_them() {
    let home = Home::new();
    let dir = run_sweep(&home);
    let mut app = home.app();
    app.update(Action::Show(View::Sweeps));
    let s = &app.sweeps;
    assert_eq!(s.rows.len(), 1);
    let row = &s.rows[0];
    assert_eq!(row.name, "tiny");
    assert_eq!((row.done(), row.total()), (4, 4));
    assert_eq!(row.read.as_ref().unwrap().status, SweepStatus::Finished);
    // One row per point, in the plan's order, each with its summary's figures.
    assert_eq!(s.points.len(), 4);
    for (i, p) in s.points.iter().enumerate() {
        assert_eq!(p.index, i);
        assert_eq!(p.status, PointStatus::Done);
        let want = summary(p.run_dir.as_ref().unwrap());
        let got = p.summary.as_ref().unwrap();
        assert_eq!(want["name"], format!("tiny-p{i:03}"));
        assert_eq!(got.final_test_acc, want["final_test_acc"].as_f64());
        assert_eq!(got.best_test_acc, want["best_test_acc"].as_f64());
        assert_eq!(got.gbitops, want["gbitops"].as_f64());
        assert_eq!(
            got.gbitops_ratio_vs_static,
            want["gbitops_ratio_vs_static"].as_f64()
        );
        assert!(got.gbitops.is_some(), "a CPT sweep counts GBitOps");
    }
    assert!(s.points[0]
        .label
        .starts_with("precision.schedule.kind=CR, seed="));
    assert!(s.points[3]
        .label
        .starts_with("precision.schedule.kind=static, seed="));
    assert_eq!(s.points[0].group, "precision.schedule.kind=CR");
    assert_eq!(s.groups().len(), 2);
    let frame = render(&app, 160, 48);
    assert!(frame.contains("4/4"), "{frame}");
    assert!(frame.contains("finished"), "{frame}");
    let acc = cptlab::tui::run_data::pct(s.points[2].summary.as_ref().unwrap().final_test_acc);
    assert!(frame.contains(&acc), "{acc}\n{frame}");

    // Enter goes into the points; Enter on the third opens its run in the Dashboard.
    app.update(Action::Select);
    assert_eq!(app.sweeps.focus, Focus::Points);
    app.update(Action::Down);
    app.update(Action::Down);
    let third = app.sweeps.points[2].run_dir.clone().unwrap();
    app.update(Action::Select);
    assert_eq!(app.view, View::Dashboard);
    assert_eq!(
        app.current_slot().unwrap().data.dir.as_deref(),
        Some(third.as_path())
    );
    // Esc comes back to the sweep.
    app.update(Action::Back);
    assert_eq!(app.view, View::Sweeps);

    // c with nothing marked: every done point, in order.
    app.update(Action::Compare);
    assert_eq!(app.view, View::Compare);
    let all: Vec<PathBuf> = app
        .sweeps
        .points
        .iter()
        .map(|p| p.run_dir.clone().unwrap())
        .collect();
    assert_eq!(compared_dirs(&app), all);

    // Marked points, in the order marked.
    app.update(Action::Show(View::Sweeps));
    app.update(Action::Last);
    app.update(Action::Key(' '));
    app.update(Action::First);
    app.update(Action::Key(' '));
    app.update(Action::Compare);
    assert_eq!(app.view, View::Compare);
    assert_eq!(compared_dirs(&app), vec![all[3].clone(), all[0].clone()]);

    // A torn last line (kill -9 mid-write) still lists, with the same counts.
    let progress = dir.join("sweep.jsonl");
    let mut text = std::fs::read_to_string(&progress).unwrap();
    text.push_str(r#"{"event":"point_sta"#);
    std::fs::write(&progress, &text).unwrap();
    app.update(Action::Show(View::Sweeps));
    let row = &app.sweeps.rows[0];
    assert!(row.read.is_ok(), "{:?}", row.read);
    assert_eq!((row.done(), row.total()), (4, 4));

    // A broken line before the end: unreadable, saying why, and nothing panics.
    std::fs::write(&progress, format!("{{\"event\":\n{text}")).unwrap();
    app.update(Action::Key('R'));
    let row = &app.sweeps.rows[0];
    let why = row.status_text();
    assert!(
        why.starts_with("unreadable: ") && why.contains("sweep.jsonl:1"),
        "{why}"
    );
    assert!(app.sweeps.points.is_empty());
    let frame = render(&app, 80, 24);
    assert!(frame.contains("unreadable"), "{frame}");
}

#[test]
fn snapshots_of_a_live_sweep_and_an_older_one() {
    let home = Home::new();
    let runs = home.runs();
    scripted_sweep(&runs, "cpt-kinds", &["CR", "RTV", "static"], 2, 4, true);
    scripted_sweep(&runs, "lr-old", &["CR"], 2, 2, false);
    // A directory that looks like a sweep but has no plan.
    std::fs::create_dir_all(runs.join("broken")).unwrap();
    std::fs::write(runs.join("broken/sweep.jsonl"), "").unwrap();
    for (d, t) in [
        ("lr-old", 1_700_000_000),
        ("broken", 1_700_000_100),
        ("cpt-kinds", 1_700_000_200),
    ] {
        for f in ["plan.toml", "sweep.jsonl"] {
            if runs.join(d).join(f).exists() {
                set_mtime(&runs.join(d).join(f), t);
            }
        }
    }
    let mut app = home.app();
    app.update(Action::Show(View::Sweeps));
    let names: Vec<&str> = app.sweeps.rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["cpt-kinds", "broken", "lr-old"], "newest first");
    let live = &app.sweeps.rows[0];
    assert_eq!(live.read.as_ref().unwrap().status, SweepStatus::Running);
    assert_eq!((live.done(), live.total()), (4, 6));
    let st: Vec<PointStatus> = app.sweeps.points.iter().map(|p| p.status).collect();
    use PointStatus as P;
    assert_eq!(
        st,
        [P::Done, P::Done, P::Done, P::Done, P::Running, P::Pending]
    );
    assert!(app.sweeps.rows[1].status_text().starts_with("unreadable: "));
    assert_eq!(
        app.sweeps.rows[2].read.as_ref().unwrap().status,
        SweepStatus::Finished
    );
    app.status = None;
    app.update(Action::Select);
    app.update(Action::Down);
    for (w, h) in [(80, 24), (160, 48)] {
        insta::assert_snapshot!(format!("sweeps_live_{w}x{h}"), render(&app, w, h));
    }
    // The scatter has one glyph per group, at each finished point.
    let frame = render(&app, 160, 48);
    for g in ['●', '■'] {
        assert!(frame.contains(g), "{g}\n{frame}");
    }

    // Live: the running point ends; the next tick shows it without R.
    scripted_sweep(&runs, "cpt-kinds", &["CR", "RTV", "static"], 2, 5, true);
    app.on_tick();
    let live = &app.sweeps.rows[0];
    assert_eq!((live.done(), live.total()), (5, 6));
    assert_eq!(app.sweeps.points[4].status, P::Done);

    // A finished sweep whose files keep their length and time is not read again; once the
    // time moves, it is.
    let old = runs.join("lr-old/sweep.jsonl");
    let len = std::fs::metadata(&old).unwrap().len() as usize;
    std::fs::write(&old, "x".repeat(len - 1) + "\n").unwrap();
    set_mtime(&old, 1_700_000_000);
    app.on_tick();
    let row = app.sweeps.rows.iter().find(|r| r.name == "lr-old").unwrap();
    assert_eq!(row.read.as_ref().unwrap().status, SweepStatus::Finished);
    set_mtime(&old, 1_700_000_001);
    app.on_tick();
    let row = app.sweeps.rows.iter().find(|r| r.name == "lr-old").unwrap();
    // One garbage line, the last: torn, so nothing started (the plan's points are pending).
    assert_eq!(row.done(), 0, "{:?}", row.read);
}

#[test]
fn the_empty_view_says_how_to_start_a_sweep() {
    let home = Home::new();
    let mut app = home.app();
    app.update(Action::Show(View::Sweeps));
    app.status = None;
    for (w, h) in [(80, 24), (160, 48)] {
        let frame = render(&app, w, h);
        assert!(frame.contains("cptlab sweep FILE"), "{frame}");
        insta::assert_snapshot!(format!("sweeps_empty_{w}x{h}"), frame);
    }
    // Every key the view lists answers without a sweep, and nothing panics.
    for a in [
        Action::Up,
        Action::Down,
        Action::Select,
        Action::Key(' '),
        Action::Compare,
        Action::Key('R'),
        Action::FocusNext,
    ] {
        app.update(a);
    }
}

#[test]
fn compare_takes_eight_of_more_done_points_and_says_so() {
    let home = Home::new();
    let runs = home.runs();
    scripted_sweep(&runs, "wide", &["CR", "static"], 5, 10, false);
    let mut app = home.app();
    app.update(Action::Show(View::Sweeps));
    assert_eq!(app.sweeps.rows[0].done(), 10);
    app.update(Action::Compare);
    assert_eq!(app.view, View::Compare);
    assert_eq!(app.compared.len(), 8);
    let all: Vec<PathBuf> = app.sweeps.points[..8]
        .iter()
        .map(|p| p.run_dir.clone().unwrap())
        .collect();
    assert_eq!(compared_dirs(&app), all);
    let said = app.status.as_ref().unwrap().text.clone();
    assert!(said.contains("up to 8") && said.contains("of 10"), "{said}");
    // Fewer than two: refused, saying why.
    let home = Home::new();
    scripted_sweep(&home.runs(), "one", &["CR"], 2, 1, false);
    let mut app = home.app();
    app.update(Action::Show(View::Sweeps));
    app.update(Action::Compare);
    assert_eq!(app.view, View::Sweeps);
    assert!(app.status.as_ref().unwrap().text.contains("Compare needs"));
}

#[test]
fn clicks_pick_sweeps_and_points_and_the_wheel_moves_through_them() {
    use cptlab::tui::sweep::{LIST, POINTS};
    let home = Home::new();
    let runs = home.runs();
    scripted_sweep(&runs, "cpt-kinds", &["CR", "RTV", "static"], 2, 6, false);
    scripted_sweep(&runs, "lr-old", &["CR"], 2, 2, false);
    for f in ["plan.toml", "sweep.jsonl"] {
        set_mtime(&runs.join("lr-old").join(f), 1_700_000_000);
    }
    let mut app = home.app();
    app.update(Action::Show(View::Sweeps));
    assert_eq!(app.sweeps.rows[1].name, "lr-old");
    // A click on a sweep drawn in the list selects it, with its points.
    assert_eq!(click_on(&mut app, "lr-old"), Some(Action::Pick(LIST, 1)));
    assert_eq!(app.sweeps.selected().unwrap().name, "lr-old");
    assert_eq!(app.sweeps.points.len(), 2);
    assert_eq!(app.sweeps.focus, Focus::Sweeps);
    click_on(&mut app, "cpt-kinds");
    assert_eq!(app.sweeps.points.len(), 6);
    // A click on a point's row (short labels at 80 columns) selects it and moves the keys
    // there; Enter opens what was clicked.
    assert_eq!(
        click_on(&mut app, "kind=RTV, seed=1"),
        Some(Action::Pick(POINTS, 3))
    );
    assert_eq!(app.sweeps.focus, Focus::Points);
    assert_eq!(app.sweeps.point_cursor, 3);
    let fourth = app.sweeps.points[3].run_dir.clone().unwrap();
    app.update(Action::Select);
    assert_eq!(app.view, View::Dashboard);
    assert_eq!(
        app.current_slot().unwrap().data.dir.as_deref(),
        Some(fourth.as_path())
    );
    app.update(Action::Back);
    assert_eq!(app.view, View::Sweeps);
    // The wheel over the points moves through them, within their number.
    let over_points = spot(&app, "kind=CR, seed=0");
    for _ in 0..10 {
        let a = wheel(&app, over_points, true).unwrap();
        assert_eq!(a, Action::Wheel(POINTS, 1));
        app.update(a);
    }
    assert_eq!(app.sweeps.point_cursor, 5);
    // Over the list it moves through the sweeps, and the keys go there.
    let a = wheel(&app, spot(&app, "cpt-kinds"), true).unwrap();
    app.update(a);
    assert_eq!(app.sweeps.focus, Focus::Sweeps);
    assert_eq!(app.sweeps.selected().unwrap().name, "lr-old");
    // Headers and borders pick nothing.
    assert_eq!(click(&app, spot(&app, "status")), None);
    assert_eq!(click(&app, (0, 1)), None, "the list's corner");
}
