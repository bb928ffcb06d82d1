//! Key handling through the path the running app uses: `KeyEvent` → `Action::from_key` →
//! `App::update`, checking state and the commands queued for the supervisor (nothing is
//! spawned or signalled here).
mod tui_common;

use cptlab::tui::action::View;
use cptlab::tui::app::{App, Command, Control, Dialog, Msg, Overlay};
use cptlab::tui::process::{lock_holder, LOCK_FILE};
use cptlab::tui::run_data::{RunData, RunStatus};
use cptlab::tui::setup::Field;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use tui_common::*;

fn key(app: &mut App, code: KeyCode) {
    app.on_key(KeyEvent::new(code, KeyModifiers::NONE));
}

fn keys(app: &mut App, s: &str) {
    for c in s.chars() {
        key(app, KeyCode::Char(c));
    }
}

fn ctrl_c(app: &mut App) {
    app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
}

fn launches(cmds: &[Command]) -> Vec<(u64, cptlab::config::RunConfig)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Launch { run, config } => Some((*run, (**config).clone())),
            _ => None,
        })
        .collect()
}

/// Focuses `f` in the Setup form with Tab presses (Tab wraps).
fn focus(app: &mut App, f: Field) {
    for _ in 0..200 {
        if app.setup.focus() == f {
            return;
        }
        key(app, KeyCode::Tab);
    }
    panic!("{f:?} not reachable");
}

/// Starts the form's run (s, then y to the question) and reports its process as spawned.
fn start(app: &mut App) -> u64 {
    keys(app, "sy");
    let l = launches(&app.take_commands());
    assert_eq!(l.len(), 1, "one launch");
    let run = l[0].0;
    app.on_msg(Msg::Spawned { run, pid: 4242 });
    run
}

#[test]
fn number_keys_switch_views_and_q_quits() {
    let home = Home::new();
    let mut app = home.app();
    assert_eq!(app.view, View::Setup);
    for (c, v) in [
        ('2', View::Dashboard),
        ('3', View::Compare),
        ('4', View::Presets),
        ('5', View::Runs),
        ('1', View::Setup),
    ] {
        keys(&mut app, &c.to_string());
        assert_eq!(app.view, v);
    }
    keys(&mut app, "?");
    assert_eq!(app.overlay, Some(Overlay::Help));
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.overlay, None);
    // q closes help like a pager, and quits from a view.
    keys(&mut app, "?q");
    assert_eq!((app.overlay.clone(), app.exit), (None, None));
    keys(&mut app, "q");
    assert_eq!(
        app.exit,
        Some(0),
        "nothing live, Setup as loaded: q quits without asking"
    );
}

#[test]
fn editing_a_field_takes_letters_as_text() {
    let home = Home::new();
    let mut app = home.app();
    focus(&mut app, Field::Name);
    key(&mut app, KeyCode::Enter);
    for _ in 0.."demo".len() {
        key(&mut app, KeyCode::Backspace);
    }
    // s, q, p, x, c and digits are text while a field is edited.
    keys(&mut app, "sqpxc-1");
    assert!(app.take_commands().is_empty());
    assert_eq!(app.exit, None);
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.setup.value(Field::Name), "sqpxc-1");
    // Esc drops an edit.
    focus(&mut app, Field::Epochs);
    key(&mut app, KeyCode::Enter);
    keys(&mut app, "99");
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.setup.value(Field::Epochs), "3");
    // ←/→ step numbers and cycle choices; Tab wraps.
    keys(&mut app, "l");
    assert_eq!(app.setup.value(Field::Epochs), "4");
    focus(&mut app, Field::Optimizer);
    key(&mut app, KeyCode::Right);
    assert_eq!(app.setup.value(Field::Optimizer), "adam");
    assert!(!app.setup.visible().contains(&Field::Momentum));
}

#[test]
fn start_is_refused_until_the_form_is_valid_then_launches_what_it_shows() {
    let home = Home::new();
    let mut app = home.app();
    focus(&mut app, Field::Batch);
    key(&mut app, KeyCode::Enter);
    keys(&mut app, "x");
    key(&mut app, KeyCode::Enter);
    keys(&mut app, "s");
    assert!(app.take_commands().is_empty());
    assert_eq!(app.overlay, None, "nothing to confirm");
    assert!(app.status.as_ref().unwrap().warn);
    assert_eq!(app.view, View::Setup);
    key(&mut app, KeyCode::Enter);
    for _ in 0..10 {
        key(&mut app, KeyCode::Backspace);
    }
    keys(&mut app, "128");
    key(&mut app, KeyCode::Enter);
    app.setup.set(Field::Cpt, "RR");
    keys(&mut app, "s");
    assert!(
        matches!(app.overlay, Some(Overlay::Dialog(Dialog::ConfirmStart(_)))),
        "s asks first"
    );
    assert!(app.take_commands().is_empty());
    key(&mut app, KeyCode::Enter);
    let l = launches(&app.take_commands());
    assert_eq!(l.len(), 1);
    let cfg = &l[0].1;
    assert_eq!(cfg.train.batch_size, 128);
    assert_eq!(cfg.data.source.as_deref(), Some("synthetic:2048:512"));
    assert_eq!(
        cfg.precision.schedule.as_ref().map(|s| s.kind.name()),
        Some("RR")
    );
    assert_eq!(app.view, View::Dashboard);
    // Esc goes back to Setup, where s was pressed.
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.view, View::Setup);
}

#[test]
fn pause_resume_and_stop_signal_the_child() {
    let home = Home::new();
    let mut app = home.app();
    let run = start(&mut app);
    let dir = home.runs().join("20250101-000000-quickstart");
    let cfg = config("quickstart", None);
    write_run(&home.runs(), "20250101-000000-quickstart", &cfg, &[], None);
    for e in events(&dir, &cfg, 5, false, 0.0) {
        app.ingest(run, e);
    }
    // The driving workbench holds the run's lock.
    assert_eq!(lock_holder(&dir.join(LOCK_FILE)), Some(std::process::id()));
    keys(&mut app, "p");
    assert_eq!(
        app.take_commands(),
        vec![Command::Signal {
            pid: 4242,
            signal: libc::SIGSTOP
        }]
    );
    assert_eq!(app.slot(run).unwrap().data.status, RunStatus::Paused);
    keys(&mut app, "p");
    assert_eq!(
        app.take_commands(),
        vec![Command::Signal {
            pid: 4242,
            signal: libc::SIGCONT
        }]
    );
    keys(&mut app, "p");
    app.take_commands();
    // x asks first; n keeps it running; y stops (SIGCONT too, since it is paused).
    keys(&mut app, "x");
    assert_eq!(app.overlay, Some(Overlay::Dialog(Dialog::StopRun(run))));
    keys(&mut app, "n");
    assert!(app.take_commands().is_empty());
    keys(&mut app, "xy");
    assert_eq!(
        app.take_commands(),
        vec![
            Command::Signal {
                pid: 4242,
                signal: libc::SIGTERM
            },
            Command::Signal {
                pid: 4242,
                signal: libc::SIGCONT
            }
        ]
    );
    assert_eq!(app.slot(run).unwrap().data.status, RunStatus::Stopping);
    // The child exits: the lock goes.
    app.on_msg(Msg::Exited {
        run,
        code: Some(130),
        stderr: String::new(),
    });
    assert!(!dir.join(LOCK_FILE).exists());
}

#[test]
fn leaving_while_live_asks_and_detach_resumes_a_paused_run() {
    let home = Home::new();
    let mut app = home.app();
    let run = start(&mut app);
    app.ingest(
        run,
        ev(serde_json::json!({"event": "log", "level": "info", "message": "x"})),
    );
    app.slot_mut(run).unwrap().data.status = RunStatus::Training;
    keys(&mut app, "p");
    app.take_commands();
    keys(&mut app, "1q");
    assert_eq!(app.overlay, Some(Overlay::Dialog(Dialog::QuitLive)));
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.overlay, None);
    assert_eq!(app.exit, None);
    // Ctrl-C asks too; a second Ctrl-C detaches.
    ctrl_c(&mut app);
    assert_eq!(app.overlay, Some(Overlay::Dialog(Dialog::QuitLive)));
    ctrl_c(&mut app);
    assert_eq!(app.exit, Some(0));
    assert_eq!(
        app.take_commands(),
        vec![Command::Signal {
            pid: 4242,
            signal: libc::SIGCONT
        }],
        "a paused run is resumed before it is left headless"
    );
}

#[test]
fn quitting_with_x_stops_live_runs() {
    let home = Home::new();
    let mut app = home.app();
    let run = start(&mut app);
    app.slot_mut(run).unwrap().data.status = RunStatus::Training;
    keys(&mut app, "1q");
    keys(&mut app, "x");
    assert_eq!(app.exit, Some(0));
    assert_eq!(
        app.take_commands(),
        vec![Command::Signal {
            pid: 4242,
            signal: libc::SIGTERM
        }]
    );
}

#[test]
fn ab_pair_side_by_side_splits_the_cpu_with_one_seed() {
    let home = Home::new();
    let mut app = home.app();
    keys(&mut app, "c");
    assert!(app.setup.ab_first.is_some());
    app.setup.set(Field::Cpt, "CR");
    app.setup.set(Field::Seed, "7");
    keys(&mut app, "c");
    assert_eq!(app.overlay, Some(Overlay::Dialog(Dialog::AbMode)));
    keys(&mut app, "2");
    let l = launches(&app.take_commands());
    assert_eq!(l.len(), 2);
    let (a, b) = (&l[0].1, &l[1].1);
    assert_eq!(a.seed, b.seed, "matched seed");
    assert_eq!(a.seed, 42);
    assert_eq!((a.name.as_str(), b.name.as_str()), ("demo-a", "demo-b"));
    assert_eq!(a.devices.threads, Some(1), "two cores split in two");
    assert!(a.precision.schedule.is_none());
    assert_eq!(b.precision.schedule.as_ref().unwrap().kind.name(), "CR");
    assert_eq!(app.view, View::Compare);
    assert_eq!(app.compared, vec![l[0].0, l[1].0]);
}

#[test]
fn ab_pair_one_after_the_other_queues_b_until_a_ends() {
    let home = Home::new();
    let mut app = home.app();
    keys(&mut app, "c");
    app.setup.set(Field::Cpt, "RR");
    keys(&mut app, "c1");
    let l = launches(&app.take_commands());
    assert_eq!(l.len(), 1, "only A starts");
    let a = l[0].0;
    let b = app.compared[1];
    assert!(matches!(app.slot(b).unwrap().control, Control::Queued(_)));
    app.on_msg(Msg::Spawned { run: a, pid: 4242 });
    app.slot_mut(a).unwrap().data.status = RunStatus::Training;
    app.on_msg(Msg::Exited {
        run: a,
        code: Some(1),
        stderr: "error: boom".into(),
    });
    assert!(matches!(
        app.slot(a).unwrap().data.status,
        RunStatus::Failed(_)
    ));
    let l = launches(&app.take_commands());
    assert_eq!(l.len(), 1, "B starts when A ends");
    assert_eq!(l[0].0, b);
    assert_eq!(
        l[0].1.precision.schedule.as_ref().unwrap().kind.name(),
        "RR"
    );
}

#[test]
fn runs_view_marks_compares_exports_and_deletes() {
    let home = Home::new();
    let mut dirs = Vec::new();
    for name in ["20250101-090000-a", "20250101-093000-b"] {
        let cfg = config(name, None);
        let dir = home.runs().join(name);
        let ev = events(&dir, &cfg, u64::MAX, true, 0.0);
        dirs.push(write_run(&home.runs(), name, &cfg, &ev, None));
    }
    let live_cfg = config("live", None);
    let live = write_run(
        &home.runs(),
        "20250101-100000-live",
        &live_cfg,
        &[],
        Some(std::process::id()),
    );
    let mut app = home.app();
    assert_eq!(app.view, View::Runs, "a live run opens the Runs view");
    // The live run cannot be deleted.
    keys(&mut app, "d");
    assert_eq!(app.overlay, None);
    assert!(live.exists());
    // Mark two finished runs, compare them.
    keys(&mut app, "j ");
    keys(&mut app, "j ");
    keys(&mut app, "c");
    assert_eq!(app.view, View::Compare);
    let [a, b] = app.compared[..] else {
        panic!("{:?}", app.compared)
    };
    let follows: Vec<_> = app
        .take_commands()
        .into_iter()
        .filter(|c| matches!(c, Command::Follow { live: false, .. }))
        .collect();
    assert_eq!(follows.len(), 2, "finished runs replay from metrics.jsonl");
    assert_ne!(a, b);
    // Export CSV into the run directory.
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.view, View::Runs);
    keys(&mut app, "e");
    let csv = std::fs::read_to_string(dirs[0].join("steps.csv")).unwrap();
    assert!(csv.starts_with("step,epoch,loss"));
    assert_eq!(csv.lines().count(), 1 + (SPE * EPOCHS) as usize);
    assert!(dirs[0].join("evals.csv").is_file());
    // Delete asks; y deletes.
    keys(&mut app, "d");
    assert!(matches!(
        app.overlay,
        Some(Overlay::Dialog(Dialog::DeleteRun { .. }))
    ));
    keys(&mut app, "y");
    assert!(!dirs[0].exists());
    assert_eq!(app.history.rows.len(), 2);
}

#[test]
fn attaching_takes_the_lock_and_respects_another_workbench() {
    let home = Home::new();
    let cfg = config("live", None);
    let me = std::process::id();
    let dir = write_run(&home.runs(), "20250101-100000-live", &cfg, &[], Some(me));
    let mut app = home.app();
    // Enter on the live run attaches and drives it.
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.view, View::Dashboard);
    let slot = app.current_slot().unwrap().clone();
    assert!(matches!(
        slot.control,
        Control::Driven {
            child: false,
            pid,
            ..
        } if pid == me
    ));
    assert_eq!(lock_holder(&dir.join(LOCK_FILE)), Some(me));
    assert!(app.take_commands().contains(&Command::Follow {
        run: slot.id,
        dir: dir.clone(),
        live: true
    }));
    // Quitting releases the lock (detaching: the run was not started here).
    keys(&mut app, "q");
    ctrl_c(&mut app);
    keys(&mut app, "d");
    assert_eq!(app.exit, Some(0));
    assert!(!dir.join(LOCK_FILE).exists());

    // Another live workbench holds the lock: watch only, no control.
    // SAFETY: getppid has no preconditions.
    let other = unsafe { libc::getppid() } as u32;
    std::fs::write(dir.join(LOCK_FILE), format!(r#"{{"pid": {other}}}"#)).unwrap();
    let mut app = home.app();
    key(&mut app, KeyCode::Enter);
    assert!(matches!(
        app.current_slot().unwrap().control,
        Control::Watching { holder, .. } if holder == other
    ));
    keys(&mut app, "p");
    assert!(app
        .take_commands()
        .iter()
        .all(|c| !matches!(c, Command::Signal { .. })));

    // A lock from a dead process is stale: cleared and taken.
    std::fs::write(dir.join(LOCK_FILE), format!(r#"{{"pid": {DEAD_PID}}}"#)).unwrap();
    let mut app = home.app();
    key(&mut app, KeyCode::Enter);
    assert!(matches!(
        app.current_slot().unwrap().control,
        Control::Driven { .. }
    ));
    assert_eq!(lock_holder(&dir.join(LOCK_FILE)), Some(me));
}

#[test]
fn presets_save_never_overwrites_silently() {
    let home = Home::new();
    let mut app = home.app();
    keys(&mut app, "4");
    let save = |app: &mut App, name: &str| {
        keys(app, "n");
        for _ in 0..30 {
            key(app, KeyCode::Backspace);
        }
        keys(app, name);
        key(app, KeyCode::Enter);
    };
    save(&mut app, "mine");
    let path = home.paths().presets.join("mine.toml");
    assert!(path.is_file());
    // Same name again: asked first; n keeps the old file.
    app.setup.set(Field::Epochs, "9");
    save(&mut app, "mine");
    assert!(matches!(
        app.overlay,
        Some(Overlay::Dialog(Dialog::OverwritePreset { .. }))
    ));
    keys(&mut app, "n");
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("epochs = 3"));
    save(&mut app, "mine");
    keys(&mut app, "y");
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("epochs = 9"));
    // A name no file can carry: the prompt stays open with a valid one close to it.
    save(&mut app, "my run");
    match &app.overlay {
        Some(Overlay::Prompt(p)) => {
            assert_eq!(p.input.text(), "my-run");
            assert!(p
                .note
                .as_deref()
                .unwrap_or("")
                .contains("Enter saves as my-run"));
        }
        other => panic!("the prompt closed: {other:?}"),
    }
    assert!(!home.paths().presets.join("my run.toml").exists());
    key(&mut app, KeyCode::Enter);
    assert!(home.paths().presets.join("my-run.toml").is_file());
    // A built-in's name: asked first (the user preset would shadow it).
    save(&mut app, "vit-adam");
    assert!(matches!(
        app.overlay,
        Some(Overlay::Dialog(Dialog::OverwritePreset {
            built_in: true,
            ..
        }))
    ));
    keys(&mut app, "n");
    assert!(!home.paths().presets.join("vit-adam.toml").exists());
    save(&mut app, "vit-adam");
    keys(&mut app, "y");
    assert!(home.paths().presets.join("vit-adam.toml").is_file());
    // Duplicate the selected preset (mine) under a new name.
    let mine = app
        .presets
        .rows
        .iter()
        .position(|p| p.name == "mine")
        .unwrap();
    app.presets.cursor = mine;
    keys(&mut app, "u");
    for _ in 0..30 {
        key(&mut app, KeyCode::Backspace);
    }
    keys(&mut app, "mine-2");
    key(&mut app, KeyCode::Enter);
    assert!(home.paths().presets.join("mine-2.toml").is_file());
    // Built-ins cannot be deleted; user presets after a yes.
    let idx = |app: &App, n: &str| app.presets.rows.iter().position(|p| p.name == n).unwrap();
    app.presets.cursor = idx(&app, "quickstart");
    keys(&mut app, "d");
    assert_eq!(app.overlay, None);
    app.presets.cursor = idx(&app, "mine-2");
    keys(&mut app, "dy");
    assert!(!home.paths().presets.join("mine-2.toml").exists());
    // Enter loads a preset into Setup (the command-line data stays).
    app.presets.cursor = idx(&app, "lenet-sgd");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.view, View::Setup);
    assert_eq!(app.setup.preset, "lenet-sgd");
    let want = app.presets.store().load("lenet-sgd").unwrap();
    assert_eq!(
        app.setup.value(Field::Batch),
        want.train.batch_size.to_string()
    );
    assert_eq!(app.setup.value(Field::Data), "synthetic:2048:512");
}

#[test]
fn dashboard_keys_move_focus_zoom_and_switch_runs() {
    let home = Home::new();
    let mut app = home.app();
    let a = app.add_run(RunData::new("a"), Control::None, None);
    let b = app.add_run(RunData::new("b"), Control::None, None);
    app.current = Some(a);
    keys(&mut app, "2");
    key(&mut app, KeyCode::Tab);
    assert_eq!(app.dash.focus, 1);
    key(&mut app, KeyCode::BackTab);
    key(&mut app, KeyCode::BackTab);
    assert_eq!(app.dash.focus, 5);
    key(&mut app, KeyCode::Enter);
    assert!(app.dash.zoom);
    keys(&mut app, "l");
    assert_eq!(app.current, Some(b));
    // c with two runs open compares them.
    keys(&mut app, "c");
    assert_eq!(app.view, View::Compare);
    assert_eq!(app.compared, vec![a, b]);
    // p on a run that is not live says so and signals nothing.
    keys(&mut app, "p");
    assert!(app.take_commands().is_empty());
}

#[test]
fn hangup_detaches_and_exits() {
    let home = Home::new();
    let mut app = home.app();
    let run = start(&mut app);
    app.slot_mut(run).unwrap().data.status = RunStatus::Training;
    app.on_msg(Msg::Hangup);
    assert_eq!(app.exit, Some(0));
    assert!(
        app.take_commands()
            .iter()
            .all(|c| !matches!(c, Command::Signal { signal, .. } if *signal == libc::SIGTERM)),
        "a hang-up never stops a run"
    );
}

// ---- The key tables: help, footer and dispatch come from one declaration per view. ----

use cptlab::tui::action::{Action, InputMode};
use cptlab::tui::keys::{self, Binding, Hint, Key};

/// The key names a row's `shown` text lists: words such as `Tab`, `PgUp`, `Ctrl-C`, `space`;
/// runs of single keys such as `↑↓←→` or `hjkl`; ranges such as `1–5`.
fn names_in(shown: &str) -> Vec<String> {
    const WORDS: &[&str] = &[
        "Tab", "S-Tab", "Enter", "Esc", "PgUp", "PgDn", "Home", "End", "space", "Ctrl-C", "Ctrl-Z",
    ];
    let mut out = Vec::new();
    for w in shown.split_whitespace() {
        if WORDS.contains(&w) {
            out.push(w.to_string());
        } else if let Some((a, b)) = w.split_once('–') {
            let (a, b) = (a.chars().next().unwrap(), b.chars().next().unwrap());
            out.extend((a..=b).map(String::from));
        } else {
            out.extend(w.chars().map(String::from));
        }
    }
    out.sort();
    out.dedup();
    out
}

fn names_of(b: &Binding) -> Vec<String> {
    let mut v: Vec<String> = b.keys.iter().map(|(k, _)| keys::name(*k)).collect();
    v.sort();
    v.dedup();
    v
}

fn all_rows() -> Vec<(Option<View>, &'static Binding)> {
    let mut v: Vec<_> = keys::GLOBAL.iter().map(|b| (None, b)).collect();
    for view in View::ALL {
        v.extend(keys::of(view).rows().map(|b| (Some(view), b)));
    }
    v
}

#[test]
fn every_key_in_help_and_footer_dispatches_to_its_declared_action() {
    let home = Home::new();
    for (view, b) in all_rows() {
        let at = format!("{view:?} row {:?} ({})", b.shown, b.help);
        assert_eq!(
            names_in(b.shown),
            names_of(b),
            "{at}: help writes other keys than the row binds"
        );
        if let Hint::Keys(k, _) = b.hint {
            let listed = names_of(b);
            for n in names_in(k) {
                assert!(listed.contains(&n), "{at}: footer shows {n}, not bound");
            }
        }
        for (k, a) in b.keys {
            assert_eq!(
                Action::from_key(k.event(), InputMode::Normal),
                Some(a.clone()),
                "{at}: {} sends another action",
                keys::name(*k)
            );
        }
        // Through the running app's path too: the key reaches `update` as the declared action in
        // the view whose help lists it (the effect is the handlers' tests' business).
        let views = view.map_or(View::ALL.to_vec(), |v| vec![v]);
        for v in views {
            for (k, a) in b.keys {
                let mut by_key = home.app();
                by_key.show(v);
                let mut by_action = home.app();
                by_action.show(v);
                by_key.on_key(k.event());
                by_action.update(a.clone());
                let (ck, ca) = (by_key.take_commands(), by_action.take_commands());
                assert_eq!(
                    (by_key.view, &by_key.overlay, by_key.exit, ck),
                    (by_action.view, &by_action.overlay, by_action.exit, ca),
                    "{v:?}: {} does not do what {a:?} does",
                    keys::name(*k)
                );
            }
        }
    }
}

#[test]
fn a_key_sends_one_action_in_every_table() {
    let rows = all_rows();
    for (v1, b1) in &rows {
        for (k1, a1) in b1.keys {
            for (v2, b2) in &rows {
                for (k2, a2) in b2.keys {
                    if k1 == k2 {
                        assert_eq!(
                            a1,
                            a2,
                            "{} sends {a1:?} in {v1:?} but {a2:?} in {v2:?}",
                            keys::name(*k1)
                        );
                    }
                }
            }
        }
    }
    // A key no table lists does nothing in normal mode.
    for c in ['Y', 'Z', '!', 'b'] {
        assert_eq!(
            Action::from_key(Key::new(KeyCode::Char(c)).event(), InputMode::Normal),
            None
        );
    }
}

/// Every action, as the handlers could match it.
fn every_action() -> Vec<Action> {
    let mut v = vec![
        Action::Back,
        Action::Quit,
        Action::Interrupt,
        Action::Suspend,
        Action::First,
        Action::Last,
        Action::Pick(0, 0),
        Action::Pick(1, 0),
        Action::Wheel(0, 1),
        Action::Wheel(1, -1),
        Action::Wheel(5, 1),
        Action::Help,
        Action::FocusNext,
        Action::FocusPrev,
        Action::Up,
        Action::Down,
        Action::Left,
        Action::Right,
        Action::PageUp,
        Action::PageDown,
        Action::Select,
        Action::Start,
        Action::PauseResume,
        Action::Stop,
        Action::Compare,
        Action::Backspace,
        Action::Resize,
        Action::Input('a'),
    ];
    v.extend(View::ALL.map(Action::Show));
    v.extend((' '..='~').map(Action::Key));
    v
}

#[test]
fn every_action_a_view_answers_is_in_its_help_and_back() {
    let home = Home::new();
    let runs = home.runs();
    let (ca, cb) = (config("a", None), config("b", Some(cr())));
    let a = write_run(
        &runs,
        "a",
        &ca,
        &events(&runs.join("a"), &ca, SPE, true, 0.0),
        None,
    );
    let b = write_run(
        &runs,
        "b",
        &cb,
        &events(&runs.join("b"), &cb, SPE, true, 0.01),
        None,
    );
    let mut answered_anywhere = Vec::new();
    for v in View::ALL {
        let mut answered = Vec::new();
        for action in every_action() {
            // Two states, so that answers that depend on a focus are seen too.
            for focused in [false, true] {
                let mut app = home.app();
                let ida = app.open_dir(&a);
                let idb = app.open_dir(&b);
                app.current = Some(ida);
                app.compared = vec![ida, idb];
                app.show(v);
                app.dash.focus = if focused {
                    cptlab::tui::dashboard::PANELS.len() - 1
                } else {
                    0
                };
                app.presets.preview_focus = focused;
                if app.update(action.clone()) {
                    assert!(
                        keys::documents(v, &action),
                        "{v:?} answers {action:?}, but no key in its help sends it"
                    );
                    answered.push(action.clone());
                }
            }
        }
        // The other way round: what the view's own rows list, the view answers.
        for b in keys::of(v).rows() {
            for (k, a) in b.keys {
                assert!(
                    answered.contains(a),
                    "{v:?} help lists {} ({}), but the view ignores {a:?}",
                    keys::name(*k),
                    b.help
                );
            }
        }
        answered_anywhere.extend(answered);
    }
    for b in keys::GLOBAL {
        for (k, a) in b.keys {
            assert!(
                answered_anywhere.contains(a),
                "help lists {} ({}) everywhere, but no view answers {a:?}",
                keys::name(*k),
                b.help
            );
        }
    }
}

#[test]
fn help_and_footer_show_the_tables() {
    let home = Home::new();
    for v in View::ALL {
        let mut app = home.app();
        app.show(v);
        app.status = None;
        let frame = render(&app, 160, 48);
        let footer = frame.lines().last().unwrap_or("").trim().to_string();
        assert_eq!(footer, keys::footer(v), "{v:?} footer");
        for piece in footer.split("  ") {
            let (k, _) = piece.split_once(' ').unwrap();
            let row = keys::GLOBAL
                .iter()
                .chain(keys::of(v).rows())
                .find(|b| {
                    let l = hint_label(v, b);
                    b.hint != Hint::None && !l.is_empty() && piece.ends_with(l)
                })
                .unwrap_or_else(|| panic!("{v:?}: footer {piece:?} has no row"));
            for n in names_in(k) {
                assert!(names_of(row).contains(&n), "{v:?}: footer {piece:?}");
            }
        }
        app.update(Action::Help);
        let frame = render(&app, 160, 48);
        for b in keys::GLOBAL.iter().chain(keys::of(v).rows()) {
            let line = format!("{:<13}{}", b.shown, b.help);
            assert!(frame.contains(&line), "{v:?} help lacks {line:?}\n{frame}");
        }
    }
}

fn hint_label(v: View, b: &Binding) -> &'static str {
    match b.hint {
        Hint::None => "",
        Hint::Label(l) => l,
        Hint::Keys(_, _) if b.keys.iter().any(|(_, a)| *a == Action::Back) => {
            keys::of(v).back.unwrap_or("")
        }
        Hint::Keys(_, l) => l,
    }
}

// ---- Keys that never lose work. ----

fn esc(app: &mut App) {
    key(app, KeyCode::Esc);
}

fn ctrl_z(app: &mut App) {
    app.on_key(KeyEvent::new(KeyCode::Char('z'), KeyModifiers::CONTROL));
}

#[test]
fn esc_never_quits_on_any_view() {
    let home = Home::new();
    for v in View::ALL {
        let mut app = home.app();
        app.setup.set(Field::Epochs, "7");
        app.show(v);
        for _ in 0..5 {
            esc(&mut app);
        }
        assert_eq!(app.exit, None, "{v:?}: Esc quit");
        assert_eq!(app.view, v, "{v:?}: nowhere to go back to");
        assert_eq!(
            app.setup.value(Field::Epochs),
            "7",
            "{v:?}: Esc lost an edit"
        );
        // Nor in help, a prompt or a dialog: Esc closes them.
        keys(&mut app, "?");
        esc(&mut app);
        assert_eq!((app.overlay.clone(), app.exit), (None, None), "{v:?} help");
    }
    // Esc goes back where Enter or s came from, and cancels a stored A.
    let mut app = home.app();
    keys(&mut app, "c");
    assert!(app.setup.ab_first.is_some());
    esc(&mut app);
    assert!(app.setup.ab_first.is_none(), "Esc forgets A");
    let run = start(&mut app);
    assert_eq!(app.current, Some(run));
    assert_eq!(app.view, View::Dashboard);
    key(&mut app, KeyCode::Enter);
    assert!(app.dash.zoom);
    esc(&mut app);
    assert!(!app.dash.zoom, "Esc restores a zoomed panel first");
    assert_eq!(app.view, View::Dashboard);
    esc(&mut app);
    assert_eq!(app.view, View::Setup);
    esc(&mut app);
    assert_eq!(app.exit, None);
}

#[test]
fn q_asks_when_setup_has_unsaved_changes() {
    let home = Home::new();
    let mut app = home.app();
    assert!(!app.setup.modified());
    focus(&mut app, Field::Epochs);
    keys(&mut app, "l");
    assert!(app.setup.modified());
    assert_eq!(app.setup.changed_fields(), vec![Field::Epochs]);
    keys(&mut app, "q");
    assert_eq!(app.overlay, Some(Overlay::Dialog(Dialog::QuitUnsaved)));
    let frame = render(&app, 80, 24);
    assert!(
        frame.contains("Setup differs from preset demo (epochs)"),
        "{frame}"
    );
    esc(&mut app);
    assert_eq!((app.overlay.clone(), app.exit), (None, None));
    // s saves them as a preset first; then q quits without asking.
    keys(&mut app, "qs");
    assert!(matches!(app.overlay, Some(Overlay::Prompt(_))));
    for _ in 0..10 {
        key(&mut app, KeyCode::Backspace);
    }
    keys(&mut app, "four-epochs");
    key(&mut app, KeyCode::Enter);
    assert!(home.paths().presets.join("four-epochs.toml").is_file());
    assert_eq!(app.setup.preset, "four-epochs");
    assert!(!app.setup.modified(), "saved as a preset: nothing unsaved");
    keys(&mut app, "l");
    keys(&mut app, "q");
    // A second q in the question quits.
    keys(&mut app, "q");
    assert_eq!(app.exit, Some(0));
}

#[test]
fn ctrl_z_asks_the_loop_to_suspend_from_any_mode() {
    let home = Home::new();
    let mut app = home.app();
    ctrl_z(&mut app);
    assert!(app.suspend);
    app.suspend = false;
    // While a field is edited: the edit stays open, nothing typed.
    focus(&mut app, Field::Name);
    key(&mut app, KeyCode::Enter);
    keys(&mut app, "x");
    ctrl_z(&mut app);
    assert!(app.suspend);
    assert_eq!(app.setup.editing.as_ref().map(|e| e.text()), Some("demox"));
    key(&mut app, KeyCode::Enter);
    app.suspend = false;
    // In a dialog: it stays open.
    keys(&mut app, "s");
    ctrl_z(&mut app);
    assert!(app.suspend);
    assert!(matches!(
        app.overlay,
        Some(Overlay::Dialog(Dialog::ConfirmStart(_)))
    ));
    assert!(app.take_commands().is_empty());
    assert_eq!(app.exit, None);
}

#[test]
fn s_shows_what_will_start_and_asks_once() {
    let home = Home::new();
    let mut app = home.app();
    app.setup.set(Field::Cpt, "CR");
    app.setup.set(Field::Devices, "cpu:2");
    keys(&mut app, "s");
    let Some(Overlay::Dialog(Dialog::ConfirmStart(cfg))) = app.overlay.clone() else {
        panic!("{:?}", app.overlay)
    };
    assert_eq!(cfg.name, "demo");
    let frame = render(&app, 80, 24);
    for want in [
        "Start this run?",
        "demo",
        "lenet",
        "fp32 · CPT CR 3–8 bits",
        "cpu:2",
        "3 epochs × 32 steps = 96 steps",
    ] {
        assert!(frame.contains(want), "no {want:?} in\n{frame}");
    }
    // n (or Esc) starts nothing.
    keys(&mut app, "n");
    assert_eq!(app.overlay, None);
    assert!(app.take_commands().is_empty());
    assert_eq!(app.view, View::Setup);
    // y starts exactly that config, once.
    keys(&mut app, "sy");
    let l = launches(&app.take_commands());
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].1, *cfg);
    assert_eq!(app.view, View::Dashboard);
}

// ---- The remembered Setup. ----

/// The test setup as a user preset, so a remembered Setup can name it.
fn with_demo_preset(home: &Home) {
    std::fs::create_dir_all(home.paths().presets).unwrap();
    std::fs::write(home.paths().presets.join("demo.toml"), BASE).unwrap();
}

fn launch(home: &Home, preset: Option<&str>) -> App {
    App::new(
        home.paths(),
        &cptlab::tui::TuiOptions {
            preset: preset.map(str::to_string),
            data: Some("synthetic:2048:512".into()),
            ..Default::default()
        },
    )
}

#[test]
fn the_last_setup_is_remembered_across_launches() {
    let home = Home::new();
    with_demo_preset(&home);
    let mut app = launch(&home, Some("demo"));
    assert_eq!(app.setup.preset, "demo");
    app.setup.set(Field::Epochs, "5");
    app.setup.set(Field::Cpt, "RR");
    // Invalid text is remembered as typed.
    app.setup.set(Field::Seed, "forty-two");
    app.persist_state(false);
    let state = cptlab::tui::state::state_path(&home.paths());
    assert!(state.is_file(), "written on change");
    assert_eq!(state.parent(), home.runs().parent());
    keys(&mut app, "q");
    keys(&mut app, "y");
    app.persist_state(true);
    assert_eq!(app.exit, Some(0));

    let app = launch(&home, None);
    assert_eq!(app.setup.preset, "demo");
    assert_eq!(app.setup.value(Field::Epochs), "5");
    assert_eq!(app.setup.value(Field::Cpt), "RR");
    assert_eq!(app.setup.value(Field::Seed), "forty-two");
    assert!(app.setup.check.error(Field::Seed).is_some());
    assert!(app.setup.modified(), "still differs from preset demo");
    assert_eq!(
        app.setup.changed_fields(),
        vec![Field::Epochs, Field::Seed, Field::Cpt]
    );
    assert!(render(&app, 80, 24).contains("Setup · preset demo · modified"));
    assert_eq!(app.status, None);

    // --preset asks for a preset: that is what Setup shows.
    let app = launch(&home, Some("demo"));
    assert_eq!(app.setup.value(Field::Epochs), "3");
    assert!(!app.setup.modified());
    assert!(!render(&app, 80, 24).contains("modified"));
}

#[test]
fn a_corrupt_state_file_is_reported_and_ignored() {
    let home = Home::new();
    let state = cptlab::tui::state::state_path(&home.paths());
    for bad in [
        "version = 1\npreset = [",
        "version = 99\npreset = \"x\"\n",
        "\u{0}\u{1}",
    ] {
        std::fs::write(&state, bad).unwrap();
        let app = launch(&home, None);
        let s = app.status.clone().expect("a status line");
        assert!(s.warn, "{s:?}");
        assert!(s.text.contains("remembered Setup ignored"), "{s:?}");
        assert!(s.text.contains("tui-state.toml"), "{s:?}");
        assert!(app.setup.check.ok(), "the default preset instead");
        assert_eq!(app.exit, None);
    }
    // A state file that cannot be written is said, once, and never stops anything.
    std::fs::remove_file(&state).unwrap();
    std::fs::create_dir_all(state.join("in-the-way")).unwrap();
    let mut app = home.app();
    app.setup.set(Field::Epochs, "4");
    app.persist_state(false);
    let s = app.status.clone().unwrap();
    assert!(
        s.warn && s.text.contains("cannot remember the Setup"),
        "{s:?}"
    );
    assert!(app.state_unsaved());
}

#[test]
fn loading_a_preset_over_edits_asks_first() {
    let home = Home::new();
    let mut app = home.app();
    app.setup.set(Field::Epochs, "9");
    keys(&mut app, "4");
    let idx = app
        .presets
        .rows
        .iter()
        .position(|p| p.name == "lenet-sgd")
        .unwrap();
    app.presets.cursor = idx;
    key(&mut app, KeyCode::Enter);
    assert!(matches!(
        app.overlay,
        Some(Overlay::Dialog(Dialog::LoadOverEdits { ref name, .. })) if name == "lenet-sgd"
    ));
    keys(&mut app, "n");
    assert_eq!(app.setup.value(Field::Epochs), "9", "n keeps the edits");
    assert_eq!(app.view, View::Presets);
    key(&mut app, KeyCode::Enter);
    keys(&mut app, "y");
    assert_eq!(app.view, View::Setup);
    assert_eq!(app.setup.preset, "lenet-sgd");
    assert!(!app.setup.modified());
    // Without edits it loads at once.
    keys(&mut app, "4");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.overlay, None);
    assert_eq!(app.view, View::Setup);
}

#[test]
fn every_invalid_field_is_marked_at_once() {
    let home = Home::new();
    let mut app = home.app();
    app.setup.set(Field::Lr, "-1");
    app.setup.set(Field::Momentum, "-0.5");
    app.setup.set(Field::WeightDecay, "-1");
    app.setup.set(Field::Threads, "none");
    let c = &app.setup.check;
    for f in [
        Field::Lr,
        Field::Momentum,
        Field::WeightDecay,
        Field::Threads,
    ] {
        assert!(c.error(f).is_some(), "{f:?} unmarked: {:?}", c.errors);
    }
    keys(&mut app, "s");
    assert!(app
        .status
        .as_ref()
        .unwrap()
        .text
        .contains("fix the 4 marked field(s)"));
}

// ---- Runs: filter, sort, first and last. ----

fn runs_home() -> (Home, Vec<std::path::PathBuf>) {
    let home = Home::new();
    let mut dirs = Vec::new();
    for (i, (name, better)) in [
        ("20250101-090000-static-8b", 0.0),
        ("20250101-093000-cr-3-8", 0.05),
        ("20250101-100000-rr-2-8", 0.02),
        ("20250101-103000-adam", 0.0),
    ]
    .into_iter()
    .enumerate()
    {
        let cpt = (i % 2 == 1).then(cr);
        let cfg = config(name, cpt);
        let dir = home.runs().join(name);
        let ev = events(&dir, &cfg, u64::MAX, true, better);
        dirs.push(write_run(&home.runs(), name, &cfg, &ev, None));
    }
    (home, dirs)
}

fn shown(app: &App) -> Vec<String> {
    app.history
        .rows
        .iter()
        .map(|r| cptlab::tui::runs::short_name(&r.name).to_string())
        .collect()
}

#[test]
fn runs_filter_sort_and_jump() {
    let (home, _) = runs_home();
    let mut app = home.app();
    keys(&mut app, "5");
    assert_eq!(shown(&app), ["adam", "rr-2-8", "cr-3-8", "static-8b"]);
    // G / End: the last run; g / Home: the first.
    keys(&mut app, "G");
    assert_eq!(app.history.cursor, 3);
    key(&mut app, KeyCode::Home);
    assert_eq!(app.history.cursor, 0);
    key(&mut app, KeyCode::End);
    assert_eq!(app.history.cursor, 3);
    // / filters as it is typed; Enter keeps it; Esc in the list clears it.
    keys(&mut app, "/");
    assert_eq!(app.input_mode(), cptlab::tui::action::InputMode::Text);
    keys(&mut app, "-8");
    assert_eq!(shown(&app), ["rr-2-8", "cr-3-8", "static-8b"]);
    keys(&mut app, "b");
    assert_eq!(shown(&app), ["static-8b"]);
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.history.filter, "-8b");
    assert!(render(&app, 80, 24).contains("Runs · 1 of 4 · /-8b"));
    // Esc while typing undoes the typing, not the filter before it.
    keys(&mut app, "/");
    key(&mut app, KeyCode::Backspace);
    key(&mut app, KeyCode::Backspace);
    assert_eq!(shown(&app).len(), 4, "applied as typed");
    esc(&mut app);
    assert_eq!(app.history.filter, "-8b");
    assert_eq!(shown(&app), ["static-8b"]);
    esc(&mut app);
    assert_eq!(app.history.filter, "");
    assert_eq!(shown(&app).len(), 4);
    assert_eq!(
        app.view,
        View::Runs,
        "the first Esc only cleared the filter"
    );
    // Several words all have to match (name, config, status).
    app.history.set_filter("cpt finished");
    assert_eq!(shown(&app), ["adam", "cr-3-8"], "the CR runs");
    app.history.set_filter("");
    // o: newest, name, status, accuracy, time.
    keys(&mut app, "o");
    assert_eq!(shown(&app), ["adam", "cr-3-8", "rr-2-8", "static-8b"]);
    keys(&mut app, "oo");
    assert_eq!(shown(&app)[0], "cr-3-8", "best accuracy first");
    assert!(app.status.as_ref().unwrap().text.contains("accuracy"));
    // The cursor stays on its run through a sort.
    let on = app.history.selected().unwrap().dir.clone();
    keys(&mut app, "o");
    assert_eq!(app.history.selected().unwrap().dir, on);
}

#[test]
fn up_to_eight_runs_are_compared_in_the_order_marked() {
    let (home, dirs) = runs_home();
    let mut app = home.app();
    keys(&mut app, "5");
    // Mark three: adam (row 0), cr-3-8 (row 2), static-8b (row 3).
    keys(&mut app, " jj j ");
    assert_eq!(app.history.marked.len(), 3);
    assert_eq!(app.history.mark_of(&dirs[3]), Some('A'));
    assert_eq!(app.history.mark_of(&dirs[1]), Some('B'));
    assert_eq!(app.history.mark_of(&dirs[0]), Some('C'));
    keys(&mut app, "c");
    assert_eq!(app.view, View::Compare);
    assert_eq!(app.compared.len(), 3);
    let labels: Vec<String> = app
        .compared_slots()
        .iter()
        .map(|s| s.data.label.clone())
        .collect();
    assert_eq!(
        labels,
        [
            "20250101-103000-adam",
            "20250101-093000-cr-3-8",
            "20250101-090000-static-8b"
        ]
    );
    // → highlights B; w makes it the baseline; o opens it.
    key(&mut app, KeyCode::Right);
    assert_eq!(app.cmp.sel, 1);
    let b = app.compared[1];
    keys(&mut app, "w");
    assert_eq!(app.compared[0], b);
    keys(&mut app, "o");
    assert_eq!((app.view, app.current), (View::Dashboard, Some(b)));
    // At most eight marks.
    let mut app = home.app();
    keys(&mut app, "5");
    app.history.marked = (0..8).map(|i| home.runs().join(format!("x{i}"))).collect();
    keys(&mut app, " ");
    assert_eq!(app.history.marked.len(), 8);
    assert!(app.status.as_ref().unwrap().warn);
}

#[test]
fn m_steps_the_loss_smoothing() {
    let home = Home::new();
    let mut app = home.app();
    let a = app.add_run(RunData::new("a"), Control::None, None);
    app.current = Some(a);
    keys(&mut app, "2");
    assert_eq!(app.smoothing_weight(), 0.6, "TensorBoard's default");
    keys(&mut app, "m");
    assert_eq!(app.smoothing_weight(), 0.8);
    for _ in 0..4 {
        keys(&mut app, "m");
    }
    assert_eq!(app.smoothing_weight(), 0.0, "round to off");
}

// ---- The mouse, through the same Action path (synthetic events on a given layout). ----

/// The class: on every view with something to pick, some click in its body and some turn of
/// the wheel send an action, and every action the mouse sends there is one the view answers.
#[test]
fn every_view_answers_the_mouse_it_is_sent() {
    let (home, dirs) = runs_home();
    scripted_sweep(&home.runs(), "kinds", &["CR", "static"], 2, 4, false);
    let mut app = home.app();
    for view in View::ALL {
        app.update(Action::Show(view));
        match view {
            View::Dashboard => app.current = Some(app.open_dir(&dirs[0])),
            View::Compare => app.compared = dirs[..2].iter().map(|d| app.open_dir(d)).collect(),
            _ => {}
        }
        app.update(Action::Show(view));
        assert_eq!(app.view, view);
        // Every cell of the body (under the tabs, above the status line).
        let mut sent = Vec::new();
        for y in 1..23 {
            for x in 0..80 {
                for a in [click(&app, (x, y)), wheel(&app, (x, y), true)]
                    .into_iter()
                    .flatten()
                {
                    if !sent.contains(&a) {
                        sent.push(a);
                    }
                }
            }
        }
        let picks = sent.iter().filter(|a| matches!(a, Action::Pick(..)));
        assert!(picks.count() > 0, "{view:?}: no click picks anything");
        let wheels = sent.iter().filter(|a| matches!(a, Action::Wheel(..)));
        assert!(wheels.count() > 0, "{view:?}: the wheel does nothing");
        for a in sent {
            assert!(app.update(a.clone()), "{view:?} ignores the mouse's {a:?}");
            assert_eq!(app.view, view, "{a:?} left the view");
        }
    }
}

#[test]
fn mouse_clicks_tabs_rows_fields_and_panels() {
    let (home, _) = runs_home();
    let mut app = home.app();
    // Tabs.
    for (label, v) in [
        ("5 Runs", View::Runs),
        ("2 Dashboard", View::Dashboard),
        ("1 Setup", View::Setup),
    ] {
        assert_eq!(click_on(&mut app, label), Some(Action::Show(v)));
        assert_eq!(app.view, v);
    }
    assert_eq!(click(&app, (0, 0)), None, "the badge is no tab");
    // A Setup field: its label or its error line focuses it.
    assert_eq!(
        click_on(&mut app, "weight decay"),
        Some(Action::Pick(
            0,
            app.setup
                .visible()
                .iter()
                .position(|f| *f == Field::WeightDecay)
                .unwrap()
        ))
    );
    assert_eq!(app.setup.focus(), Field::WeightDecay);
    app.setup.set(Field::Batch, "0");
    click_on(&mut app, "a whole number ≥ 1");
    assert_eq!(app.setup.focus(), Field::Batch);
    assert_eq!(
        click(&app, spot(&app, "lr(t)")),
        None,
        "the previews pick nothing"
    );
    // A row of Runs; the wheel moves the cursor; below the rows nothing.
    keys(&mut app, "5");
    assert_eq!(click_on(&mut app, "cr-3-8"), Some(Action::Pick(0, 2)));
    assert_eq!(shown(&app)[app.history.cursor], "cr-3-8");
    let at = spot(&app, "cr-3-8");
    let a = wheel(&app, at, true).unwrap();
    app.update(a);
    assert_eq!(shown(&app)[app.history.cursor], "static-8b");
    assert_eq!(click(&app, (at.0, at.1 + 5)), None);
    // A panel of the Dashboard; the wheel over the log scrolls it.
    let a = app.add_run(RunData::new("a"), Control::None, None);
    for i in 0..40 {
        app.slot_mut(a)
            .unwrap()
            .data
            .note(cptlab::tui::run_data::LogKind::Info, format!("line {i}"));
    }
    app.current = Some(a);
    keys(&mut app, "2");
    assert_eq!(click_on(&mut app, "step time"), Some(Action::Pick(4, 0)));
    assert_eq!(app.dash.focus, 4);
    let log = spot(&app, "line 39");
    let up = wheel(&app, log, false).unwrap();
    assert_eq!(up, Action::Wheel(cptlab::tui::dashboard::LOG, -3));
    app.update(up);
    assert_eq!(app.dash.log_scroll, 3);
    assert!(render(&app, 80, 24).contains("line 36"));
    assert!(!render(&app, 80, 24).contains("line 39"));
    assert_eq!(wheel(&app, spot(&app, "step time"), false), None);
    // Presets: a row.
    keys(&mut app, "4");
    click_on(&mut app, "quickstart");
    assert_eq!(app.presets.selected().unwrap().name, "quickstart");
    // Nothing while a dialog or prompt has the keyboard.
    keys(&mut app, "u");
    assert!(matches!(app.overlay, Some(Overlay::Prompt(_))));
    assert_eq!(click(&app, spot(&app, "1 Setup")), None);
}

#[test]
fn a_click_on_a_scrolled_list_picks_the_row_drawn_there() {
    let home = Home::new();
    for i in 0..30 {
        let name = format!("20250101-{:06}-run{i:02}", 100000 + i);
        let cfg = config(&name, None);
        write_run(&home.runs(), &name, &cfg, &[], Some(DEAD_PID));
    }
    let mut app = home.app();
    keys(&mut app, "5G");
    assert_eq!(app.history.cursor, 29);
    // The first row on screen is not the first run: what is drawn there is what is picked.
    // Row 3: under the tabs, the border and the header.
    let frame = render(&app, 80, 24);
    let drawn = frame.lines().nth(3).unwrap().to_string();
    let Some(Action::Pick(0, i)) = click(&app, (10, 3)) else {
        panic!("no pick")
    };
    assert!(i > 0, "the list is scrolled");
    assert!(drawn.contains(&app.history.rows[i].name), "{drawn}");
    app.update(Action::Pick(0, i));
    assert_eq!(app.history.cursor, i);
}

#[test]
fn the_wheel_scrolls_a_long_setup_form_within_its_length() {
    let home = Home::new();
    let mut app = home.app();
    app.setup.check.general = Some((0..20).map(|i| format!("problem {i}\n")).collect());
    let form = (10, 10);
    assert_eq!(wheel(&app, form, false), None, "at the top already");
    let mut n = 0;
    while let Some(a) = wheel(&app, form, true) {
        app.update(a);
        n += 1;
        assert!(n < 50, "the wheel never stops");
    }
    assert!(render(&app, 80, 24).contains("problem 19"));
    assert!(
        !render(&app, 80, 24).contains(" name "),
        "scrolled past the top"
    );
    // A key brings the focus back into view.
    key(&mut app, KeyCode::Down);
    assert!(render(&app, 80, 24).contains("model"));
}

#[test]
fn help_scrolls_when_it_is_longer_than_the_terminal() {
    let home = Home::new();
    let mut app = home.app();
    keys(&mut app, "5?");
    let frame = render(&app, 80, 24);
    assert!(!frame.contains("Ctrl-Z"), "{frame}");
    assert!(frame.contains("↑↓ scroll"), "{frame}");
    for _ in 0..30 {
        key(&mut app, KeyCode::Down);
    }
    let frame = render(&app, 80, 24);
    assert!(frame.contains("Ctrl-Z"), "{frame}");
    assert!(frame.contains("wheel"), "{frame}");
    assert_eq!(
        app.overlay,
        Some(Overlay::Help),
        "arrows scroll, they do not close"
    );
    // The wheel too.
    let up = wheel(&app, (40, 12), false).unwrap();
    for _ in 0..20 {
        app.update(up.clone());
    }
    assert!(!render(&app, 80, 24).contains("Ctrl-Z"));
}

// ---- Charts you can read: log-y, zoom and pan, the cursor. ----

use cptlab::tui::charts::LossY;

/// Two finished runs opened from their directories (the first current), on the Dashboard.
fn charts_app(home: &Home) -> (App, u64, u64) {
    let mut app = home.app();
    let mut ids = Vec::new();
    for (name, better) in [("20250101-110000-a", 0.0), ("20250101-111000-b", 0.03)] {
        let cfg = config(name, Some(cr()));
        let dir = home.runs().join(name);
        let ev = events(&dir, &cfg, u64::MAX, true, better);
        write_run(&home.runs(), name, &cfg, &ev, None);
        let id = app.open_dir(&dir);
        for e in ev {
            app.ingest(id, e);
        }
        ids.push(id);
    }
    app.current = Some(ids[0]);
    app.show(View::Dashboard);
    (app, ids[0], ids[1])
}

#[test]
fn chart_keys_scale_zoom_pan_and_reset() {
    let home = Home::new();
    let (mut app, _, _) = charts_app(&home);
    assert_eq!(app.dash.chart.loss_y, LossY::Auto);
    keys(&mut app, "y");
    assert_eq!(app.dash.chart.loss_y, LossY::Log);
    assert!(
        app.status
            .as_ref()
            .unwrap()
            .text
            .contains("loss y axis: log"),
        "{:?}",
        app.status
    );
    let frame = render(&app, 160, 48);
    let title = frame.lines().find(|l| l.contains("┌ loss")).unwrap();
    assert!(title.contains(" log"), "the title says log: {title}");
    keys(&mut app, "y");
    assert_eq!(app.dash.chart.loss_y, LossY::Linear);
    keys(&mut app, "y");
    assert_eq!(app.dash.chart.loss_y, LossY::Auto, "round to auto");

    // + halves the window around its middle, ] pans a quarter right, [ back, - and 0 undo.
    keys(&mut app, "+");
    let c = &app.dash.chart;
    assert_eq!((c.lo, c.hi), (0.25, 0.75));
    keys(&mut app, "]");
    let c = &app.dash.chart;
    assert_eq!((c.lo, c.hi), (0.375, 0.875));
    keys(&mut app, "[[[[");
    let c = &app.dash.chart;
    assert_eq!((c.lo, c.hi), (0.0, 0.5), "panning stops at the start");
    keys(&mut app, "=");
    assert_eq!(app.dash.chart.hi - app.dash.chart.lo, 0.25, "= zooms too");
    keys(&mut app, "-");
    assert_eq!(app.dash.chart.hi - app.dash.chart.lo, 0.5);
    let frame = render(&app, 160, 48);
    assert!(frame.contains("×2"), "the zoom is in the title\n{frame}");
    keys(&mut app, "0");
    assert!(!app.dash.chart.zoomed());
    // Zooming never goes past the narrowest window, nor out past the whole run.
    keys(&mut app, &"+".repeat(20));
    assert!(app.dash.chart.hi - app.dash.chart.lo >= cptlab::tui::charts::MIN_SPAN);
    keys(&mut app, &"-".repeat(20));
    let c = &app.dash.chart;
    assert_eq!((c.lo, c.hi), (0.0, 1.0));

    // The same keys on Compare, with its own window.
    keys(&mut app, "c");
    assert_eq!(app.view, View::Compare);
    keys(&mut app, "+y");
    assert!(app.cmp.chart.zoomed());
    assert_eq!(app.cmp.chart.loss_y, LossY::Log);
    assert!(!app.dash.chart.zoomed());
}

#[test]
fn the_cursor_reads_out_a_step_and_arrows_move_it_until_esc() {
    let home = Home::new();
    let (mut app, a, b) = charts_app(&home);
    // Without the cursor, → is the next run.
    key(&mut app, KeyCode::Right);
    assert_eq!(app.current, Some(b));
    key(&mut app, KeyCode::Left);
    assert_eq!(app.current, Some(a));
    keys(&mut app, "i");
    assert_eq!(app.dash.chart.cursor, Some(0.5));
    // 96 steps: the cursor starts at step 48, in epoch 2, after epoch 1's evaluation.
    let frame = render(&app, 160, 48);
    let line = frame.lines().nth(2).unwrap();
    for want in [
        "step 48",
        "epoch 2",
        "loss ",
        "(ema ",
        "lr ",
        "q ",
        "test acc 31.00% (epoch 1)",
    ] {
        assert!(line.contains(want), "readout lacks {want:?}: {line}");
    }
    // With the cursor, arrows move it (a fiftieth of the window) and the run stays.
    for _ in 0..10 {
        key(&mut app, KeyCode::Right);
    }
    assert_eq!(app.current, Some(a));
    let c = app.dash.chart.cursor.unwrap();
    assert!((c - 0.7).abs() < 1e-9, "{c}");
    let frame = render(&app, 160, 48);
    assert!(frame.lines().nth(2).unwrap().contains("step 67"), "{frame}");
    // Zoomed in, the window follows the cursor past its edge.
    keys(&mut app, "++");
    for _ in 0..40 {
        key(&mut app, KeyCode::Right);
    }
    let ch = &app.dash.chart;
    let c = ch.cursor.unwrap();
    assert!(ch.lo <= c && c <= ch.hi, "{ch:?}");
    // Esc hides the cursor (and stays on the Dashboard); then → switches runs again.
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.dash.chart.cursor, None);
    assert_eq!(app.view, View::Dashboard);
    key(&mut app, KeyCode::Right);
    assert_eq!(app.current, Some(b));
    // Enlarged panel: Esc restores it first, the cursor stays.
    keys(&mut app, "i");
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Esc);
    assert!(!app.dash.zoom);
    assert!(app.dash.chart.cursor.is_some());
}

#[test]
fn compare_reads_every_run_at_the_cursor() {
    let home = Home::new();
    let (mut app, _, _) = charts_app(&home);
    keys(&mut app, "c");
    keys(&mut app, "i");
    let frame = render(&app, 160, 48);
    let head = frame.lines().nth(1).unwrap();
    assert!(head.contains("step 48"), "{head}");
    assert!(head.contains(" A ") && head.contains(" B "), "{head}");
    assert!(head.contains("31.00%") && head.contains("34.00%"), "{head}");
    // ←→ move the cursor rather than the highlight while it is shown.
    let sel = app.cmp.sel;
    key(&mut app, KeyCode::Right);
    assert_eq!(app.cmp.sel, sel);
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.cmp.chart.cursor, None);
    key(&mut app, KeyCode::Right);
    assert_ne!(app.cmp.sel, sel);
}

#[test]
fn the_wheel_over_a_chart_zooms_it() {
    let home = Home::new();
    let (mut app, _, _) = charts_app(&home);
    let at = spot(&app, "loss ");
    let a = wheel(&app, (at.0 + 4, at.1 + 3), false).expect("the wheel over the loss chart");
    app.update(a);
    assert!(app.dash.chart.zoomed(), "wheel up zooms in");
    let a = wheel(&app, (at.0 + 4, at.1 + 3), true).unwrap();
    app.update(a);
    assert!(!app.dash.chart.zoomed(), "wheel down zooms out");
}

#[test]
fn skipped_steps_and_loss_scale_changes_are_marked_from_the_events() {
    let home = Home::new();
    let mut app = home.app();
    let mut cfg = config("fp16", None);
    cfg.precision.mode = cptlab::config::PrecisionMode::Fp16;
    let dir = write_run(&home.runs(), "20250101-130000-fp16", &cfg, &[], None);
    let id = app.add_run(RunData::new("fp16"), Control::None, None);
    for e in events(&dir, &cfg, 60, false, 0.0) {
        let mut raw = e.raw.clone();
        if let Some(step) = raw["step"].as_u64().filter(|_| raw["event"] == "step") {
            // Events of ten steps each; the one ending at 30 skipped 3 and halved the scale.
            raw["loss_scale"] = serde_json::json!(if step < 30 { 65536.0 } else { 32768.0 });
            raw["steps"] = serde_json::json!(1);
            raw["skipped_steps"] = serde_json::json!(if step == 30 { 3 } else { 0 });
        }
        app.ingest(id, ev(raw));
    }
    let d = &app.slot(id).unwrap().data;
    assert_eq!(d.skip_marks.iter().copied().collect::<Vec<_>>(), [(30, 3)]);
    assert_eq!(
        d.scale_changes.iter().copied().collect::<Vec<_>>(),
        [(30, 65536.0, 32768.0)]
    );
    assert_eq!(d.skipped, 3);
    app.current = Some(id);
    app.show(View::Dashboard);
    let frame = render(&app, 160, 48);
    assert!(frame.contains('×') && frame.contains("×skipped"), "{frame}");
    assert!(frame.contains('▼') && frame.contains("▼scale"), "{frame}");
    // The cursor on the skipped step says so.
    keys(&mut app, "i");
    app.dash.chart.cursor = Some(30.0 / (SPE * EPOCHS) as f64);
    let frame = render(&app, 160, 48);
    let line = frame.lines().nth(2).unwrap();
    assert!(
        line.contains("step 30") && line.contains("3 skipped"),
        "{line}"
    );
    assert!(line.contains("scale 32.8k"), "{line}");
}

// ---- `e` on Setup: the whole config in $EDITOR. ----

#[test]
fn e_edits_the_whole_config_and_never_loses_a_bad_edit() {
    let home = Home::new();
    let mut app = home.app();
    keys(&mut app, "e");
    assert!(
        app.edit,
        "e hands the terminal to the editor (the loop runs it)"
    );
    app.edit = false;
    let path = cptlab::tui::editor::edit_path(&home.paths());
    // The editor is a sed script: what it changes, Setup takes.
    app.edit_config("sed -i 's/^lr = .*/lr = 0.2/'");
    assert_eq!(app.setup.value(Field::Lr), "0.2");
    assert!(app.setup.modified(), "marked modified");
    assert_eq!(app.setup.edit_error, None);
    assert!(!path.exists(), "a taken edit leaves no file");
    assert!(app.setup.check.ok());

    // An invalid value: not taken, shown in place naming the field, the text kept.
    app.edit_config("sed -i 's/^batch_size = .*/batch_size = 0/'");
    let e = app.setup.edit_error.clone().expect("the error is kept");
    assert!(
        e.contains("train.batch_size") && e.contains("at least 1"),
        "{e}"
    );
    assert_eq!(app.setup.value(Field::Batch), "64", "Setup unchanged");
    let frame = render(&app, 160, 48);
    assert!(frame.contains("edited config not taken"), "{frame}");
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("batch_size = 0"));

    // The next e reopens that text with the error on top (an editor that changes nothing
    // brings the same error back), and the user's edit is still there.
    app.edit_config("true");
    let kept = std::fs::read_to_string(&path).unwrap();
    assert!(
        kept.starts_with("# cptlab: error: invalid train.batch_size"),
        "{kept}"
    );
    assert!(
        kept.contains("batch_size = 0") && kept.contains("lr = 0.2"),
        "{kept}"
    );
    assert_eq!(
        kept.matches("# cptlab: error:").count(),
        1,
        "old errors shed"
    );
    // A TOML error names the line.
    app.edit_config("sed -i 's/^batch_size = 0/batch_size = = 0/'");
    let e = app.setup.edit_error.clone().unwrap();
    assert!(e.contains("setup-edit.toml") && e.contains("line"), "{e}");
    // Fixed: taken, and the file goes.
    app.edit_config("sed -i 's/^batch_size = = 0/batch_size = 32/'");
    assert_eq!(app.setup.edit_error, None);
    assert_eq!(app.setup.value(Field::Batch), "32");
    assert_eq!(app.setup.value(Field::Lr), "0.2");
    assert!(!path.exists());
    // An editor that fails leaves Setup as it was, and says so.
    app.edit_config("false");
    assert!(app.setup.edit_error.clone().unwrap().contains("exited"));
    assert_eq!(app.setup.value(Field::Batch), "32");
}

// ---- Setup checked against this machine. ----

#[test]
fn setup_marks_what_this_machine_cannot_do_all_at_once() {
    use cptlab::tui::setup::Machine;
    let home = Home::new();
    let mut app = home.app();
    app.setup.machine = Some(Machine {
        cuda_devices: 0,
        cores: 2,
    });
    app.setup.set(Field::Devices, "cuda:0");
    app.setup.set(Field::Mode, "fp16");
    let e = app
        .setup
        .check
        .error(Field::Devices)
        .unwrap_or_default()
        .to_string();
    assert!(e.contains("no CUDA device"), "{e}");
    // Start is refused, with the field marked in the form.
    keys(&mut app, "s");
    assert!(app.overlay.is_none() && app.take_commands().is_empty());
    assert!(render(&app, 160, 48).contains("no CUDA device"));

    // On the CPU: fp16 and too many threads are warnings, both shown, and start still asks.
    app.setup.set(Field::Devices, "cpu:2");
    app.setup.set(Field::Threads, "2");
    assert!(app.setup.check.ok(), "{:?}", app.setup.check.errors);
    let w = |f| app.setup.check.warning(f).unwrap_or_default().to_string();
    assert!(
        w(Field::Mode).contains("100× slower than bf16"),
        "{}",
        w(Field::Mode)
    );
    assert!(
        w(Field::Threads).contains("2 worker(s) × 2 thread(s) = 4"),
        "{}",
        w(Field::Threads)
    );
    let frame = render(&app, 160, 48);
    assert!(
        frame.contains("100× slower") && frame.contains("more than this"),
        "{frame}"
    );
    keys(&mut app, "s");
    assert!(matches!(
        app.overlay,
        Some(Overlay::Dialog(Dialog::ConfirmStart(_)))
    ));
    key(&mut app, KeyCode::Esc);

    // A GPU that is not there, on a machine with two.
    app.setup.machine = Some(Machine {
        cuda_devices: 2,
        cores: 2,
    });
    app.setup.set(Field::Devices, "cuda:0,3");
    let e = app
        .setup
        .check
        .error(Field::Devices)
        .unwrap_or_default()
        .to_string();
    assert!(
        e.contains("cuda:3 is not on this machine") && e.contains("2 GPU(s)"),
        "{e}"
    );
    app.setup.set(Field::Devices, "cuda:1");
    assert_eq!(app.setup.check.error(Field::Devices), None);
    assert_eq!(
        app.setup.check.warning(Field::Mode),
        None,
        "fp16 is fine on a GPU"
    );
}

// ---- Runs: clone a run's config, resume an incomplete run. ----

#[test]
fn runs_u_clones_a_config_and_r_resumes_an_incomplete_run() {
    let (home, dirs) = runs_home();
    // An interrupted run: events, no summary, no process.
    let cfg = config("20250101-110000-cut", Some(cr()));
    let dir = home.runs().join("20250101-110000-cut");
    let ev = events(&dir, &cfg, SPE + 3, false, 0.0);
    let cut = write_run(&home.runs(), "20250101-110000-cut", &cfg, &ev, None);
    let mut app = home.app();
    keys(&mut app, "5");
    let at = |app: &App, d: &std::path::Path| {
        app.history
            .rows
            .iter()
            .position(|r| r.dir == d)
            .expect("listed")
    };
    // u on a finished CR run: Setup holds its config, marked modified.
    app.history.cursor = at(&app, &dirs[1]);
    keys(&mut app, "u");
    assert_eq!(app.view, View::Setup);
    assert_eq!(app.setup.value(Field::Name), "20250101-093000-cr-3-8");
    assert_eq!(app.setup.value(Field::Cpt), "CR");
    assert!(app.setup.modified(), "marked modified");
    assert!(app.take_commands().is_empty(), "nothing starts");

    // r on a finished run refuses and says why; on the interrupted one it resumes.
    keys(&mut app, "5");
    app.history.cursor = at(&app, &dirs[0]);
    keys(&mut app, "r");
    assert!(app.take_commands().is_empty());
    assert!(app
        .status
        .as_ref()
        .unwrap()
        .text
        .contains("only an incomplete or stopped run"));
    app.history.cursor = at(&app, &cut);
    keys(&mut app, "r");
    let cmds = app.take_commands();
    assert!(
        matches!(&cmds[..], [Command::Resume { dir, .. }] if *dir == cut),
        "{cmds:?}"
    );
    assert_eq!(app.view, View::Dashboard);
    // R refreshes (the list re-read, nothing started).
    keys(&mut app, "5R");
    assert!(app.take_commands().is_empty());
    assert!(app.status.as_ref().unwrap().text.contains("run(s)"));
}

/// `r` resumes a run and its Dashboard shows the whole run: the recorded steps before the
/// last checkpoint (a resume cuts the rest), then the new session's, each step once.
#[test]
fn a_resumed_run_shows_its_whole_history_without_duplicated_steps() {
    let home = Home::new();
    let name = "20250101-110000-cut";
    let cfg = config(name, Some(cr()));
    let dir = home.runs().join(name);
    // Interrupted 3 steps after the checkpoint that ended epoch 1.
    let record = events(&dir, &cfg, SPE + 3, false, 0.0);
    write_run(&home.runs(), name, &cfg, &record, None);
    let mut app = home.app();
    keys(&mut app, "5");
    app.history.cursor = app.history.rows.iter().position(|r| r.dir == dir).unwrap();
    keys(&mut app, "r");
    assert!(matches!(&app.take_commands()[..], [Command::Resume { .. }]));
    let id = app.current.expect("the resumed run is shown");
    let d = &app.slot(id).unwrap().data;
    let steps = |d: &RunData| -> Vec<u64> { d.loss.points().iter().map(|p| p.0 as u64).collect() };
    assert_eq!(
        steps(d),
        (1..=SPE).collect::<Vec<_>>(),
        "up to the checkpoint"
    );
    assert_eq!(d.evals.len(), 1);
    assert_eq!(
        d.status,
        RunStatus::Starting,
        "not training before the child says so"
    );
    assert!(d.logs.iter().any(|l| l.text.contains("epoch 1 done")));
    // The child: started (resumed after epoch 1), then steps from the checkpoint on.
    let mut again = events(&dir, &cfg, SPE + 6, false, 0.0);
    again.retain(|e| match &e.event {
        cptlab::telemetry::event::Event::Step(s) => s.step > SPE,
        cptlab::telemetry::event::Event::Started(_) => true,
        _ => false,
    });
    for e in &mut again {
        if e.raw["event"] == "started" {
            e.raw["resumed_after_epoch"] = serde_json::json!(1);
            *e = ev(e.raw.clone());
        }
    }
    app.on_msg(Msg::Spawned { run: id, pid: 4242 });
    for e in again {
        app.ingest(id, e);
    }
    let d = &app.slot(id).unwrap().data;
    assert_eq!(
        steps(d),
        (1..=SPE + 6).collect::<Vec<_>>(),
        "each step once"
    );
    assert_eq!(d.status, RunStatus::Training);
    assert_eq!(d.last.as_ref().unwrap().step, SPE + 6);
    assert!(d
        .logs
        .iter()
        .any(|l| l.text.contains("resumed after epoch 1")));
}
