//! The whole config from Setup, through the keys a user presses: every key of the config is a
//! row for every kind of every kind list (the form's own fields or a setting), a setting typed
//! reaches the config at its key or is marked on its row, another kind's settings are hidden and
//! come back, choice fields open a picker with the kinds' descriptions, and text edits like a
//! shell line.
mod tui_common;

use cptlab::config::{diff, OptimizerKind, PrecisionMode, RunConfig};
use cptlab::models::ModelKind;
use cptlab::schedule::{LrScheduleKind, PrecisionScheduleKind};
use cptlab::tui::app::App;
use cptlab::tui::setup::{Field, Row, SetupState, CPT_OFF};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use tui_common::*;

fn key(app: &mut App, code: KeyCode) {
    app.on_key(KeyEvent::new(code, KeyModifiers::NONE));
}

fn ctrl(app: &mut App, c: char) {
    app.on_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL));
}

fn typed(app: &mut App, s: &str) {
    for c in s.chars() {
        key(app, KeyCode::Char(c));
    }
}

fn focus(app: &mut App, row: &Row) {
    for _ in 0..300 {
        if app.setup.focus() == *row {
            return;
        }
        key(app, KeyCode::Tab);
    }
    panic!("{row:?} not reachable with Tab");
}

/// Every kind of every kind list, one at a time over the test preset.
fn variants() -> Vec<(Field, String)> {
    let mut v: Vec<(Field, String)> = Vec::new();
    v.extend(
        ModelKind::ALL
            .iter()
            .map(|k| (Field::Model, k.name().to_string())),
    );
    v.extend(
        OptimizerKind::ALL
            .iter()
            .map(|k| (Field::Optimizer, k.name().to_string())),
    );
    v.extend(
        LrScheduleKind::ALL
            .iter()
            .map(|k| (Field::LrSchedule, k.name().to_string())),
    );
    v.extend(
        PrecisionMode::ALL
            .iter()
            .map(|k| (Field::Mode, k.name().to_string())),
    );
    v.push((Field::Cpt, CPT_OFF.to_string()));
    v.extend(
        PrecisionScheduleKind::ALL
            .iter()
            .map(|k| (Field::Cpt, k.name().to_string())),
    );
    v
}

/// The config keys the rows reach: the visible fields' keys and every setting.
fn reachable(s: &SetupState) -> Vec<String> {
    s.rows()
        .iter()
        .map(|r| match r {
            Row::Field(f) => f.config_key().to_string(),
            Row::Setting(k) => k.clone(),
        })
        .collect()
}

/// The config the form makes, also when it is invalid (the settings' values show it).
fn config_of(s: &SetupState) -> RunConfig {
    s.check.config.clone().expect("a valid form")
}

#[test]
fn every_key_of_the_config_is_a_row_for_every_kind() {
    let home = Home::new();
    for (field, name) in variants() {
        let mut app = home.app();
        app.setup.set(field, name.clone());
        let s = &app.setup;
        let Some(cfg) = s.check.config.clone() else {
            // Some kinds need more than the test preset gives (e.g. a window's end): their
            // rows must still be there, and the error must sit on a row.
            assert!(
                !s.check.errors.is_empty() || !s.check.setting_errors.is_empty(),
                "{field:?}={name}: invalid without an error in place"
            );
            continue;
        };
        let rows = reachable(s);
        // Keys of another kind (the ViT's table for a CNN, the loss scaler without fp16) are
        // hidden by design; every key read under these kinds is a row.
        for key in diff::fields(&cfg)
            .into_keys()
            .filter(|k| cptlab::config::schema::applies(&cfg, k))
        {
            // The kind keys of tables are the form's kind fields.
            let covered = rows.contains(&key)
                || (key == "precision.schedule.kind"
                    && rows.iter().any(|r| r == "precision.schedule.kind"));
            assert!(
                covered,
                "{field:?}={name}: {key} is not reachable from Setup"
            );
        }
        let vit = cfg.model.kind == ModelKind::Vit;
        assert_eq!(
            rows.iter().any(|r| r.starts_with("model.vit.")),
            vit,
            "{field:?}={name}"
        );
        let fp16 = cfg.precision.mode.scales_loss();
        assert_eq!(
            rows.iter().any(|r| r.starts_with("precision.loss_scale.")),
            fp16,
            "{field:?}={name}"
        );
        // No row twice.
        let mut sorted = rows.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), rows.len(), "{field:?}={name}: {rows:?}");
    }
}

/// A different valid-looking text for a setting's value: the next choice, a number moved.
fn another(value: &str, choices: &[String]) -> Option<String> {
    if !choices.is_empty() {
        let i = choices.iter().position(|c| c == value).unwrap_or(0);
        return Some(choices[(i + 1) % choices.len()].clone());
    }
    if let Ok(n) = value.parse::<i64>() {
        return Some((n + 1).to_string());
    }
    if let Ok(x) = value.parse::<f64>() {
        return Some(format!("{}", if x == 0.0 { 0.5 } else { x * 0.5 }));
    }
    None
}

#[test]
fn a_setting_typed_reaches_the_config_or_is_marked_on_its_row() {
    let home = Home::new();
    let mut tried = 0;
    for (field, name) in variants() {
        let mut app = home.app();
        app.setup.set(field, name.clone());
        if app.setup.check.config.is_none() {
            continue;
        }
        let settings = app.setup.check.settings.clone();
        for st in settings {
            let Some(value) = st.value.clone() else {
                continue;
            };
            let Some(new) = another(&value, &st.choices) else {
                continue;
            };
            tried += 1;
            app.setup.set_setting(&st.key, new.clone());
            let s = &app.setup;
            match &s.check.config {
                Some(cfg) => {
                    let got = diff::fields(cfg).get(&st.key).cloned();
                    let want = cptlab::config::parse_value(&new);
                    let got_v = got.as_deref().map(cptlab::config::parse_value);
                    assert_eq!(
                        got_v.as_ref(),
                        Some(&want),
                        "{field:?}={name}: {} = {new} did not reach the config",
                        st.key
                    );
                    assert!(s.changed_settings().contains(&st.key), "{}", st.key);
                    assert!(s.modified());
                }
                None => assert!(
                    s.check.setting_error(&st.key).is_some()
                        || !s.check.errors.is_empty()
                        || s.check.general.is_some(),
                    "{field:?}={name}: {} = {new} made the form invalid with no error shown",
                    st.key
                ),
            }
            // Typed back, the config is what it was.
            app.setup.set_setting(&st.key, value.clone());
            assert!(
                app.setup.check.config.is_some(),
                "{field:?}={name}: {} back to {value} did not restore a valid form: {:?} {:?}",
                st.key,
                app.setup.check.errors,
                app.setup.check.setting_errors
            );
        }
    }
    assert!(tried > 100, "only {tried} settings tried");
}

#[test]
fn a_wrong_setting_is_marked_on_its_row_and_the_text_is_kept() {
    let home = Home::new();
    let mut app = home.app();
    app.setup.set_setting("train.label_smoothing", "lots");
    let s = &app.setup;
    assert!(s.check.config.is_none());
    let e = s.check.setting_error("train.label_smoothing").unwrap();
    assert!(e.contains("lots") && e.contains("expected"), "{e}");
    assert_eq!(s.setting_text("train.label_smoothing"), "lots");
    // A refused start counts it and brings it into view.
    app.update(cptlab::tui::action::Action::Start);
    assert_eq!(
        app.setup.focus(),
        Row::Setting("train.label_smoothing".into())
    );
    let status = app
        .status
        .as_ref()
        .map(|s| s.text.clone())
        .unwrap_or_default();
    assert!(status.contains("fix the 1 marked"), "{status}");
    assert!(render(&app, 80, 24).contains("label_smoothing"));
    // A value the validation refuses names the row too.
    app.setup.set_setting("train.label_smoothing", "1.5");
    assert!(app
        .setup
        .check
        .setting_error("train.label_smoothing")
        .is_some());
    // Unset optional keys take a value and lose it again with an empty text.
    app.setup.set_setting("train.label_smoothing", "0");
    app.setup.set_setting("train.grad_clip", "1.0");
    assert_eq!(config_of(&app.setup).train.grad_clip, Some(1.0));
    app.setup.set_setting("train.grad_clip", "");
    assert_eq!(config_of(&app.setup).train.grad_clip, None);
}

#[test]
fn another_kinds_settings_are_hidden_not_lost() {
    let home = Home::new();
    let mut app = home.app();
    app.setup.set_setting("optimizer.nesterov", "true");
    assert!(config_of(&app.setup).to_toml().contains("nesterov = true"));
    app.setup.set(Field::Optimizer, "adam");
    let nesterov = Row::Setting("optimizer.nesterov".into());
    assert!(!app.setup.rows().contains(&nesterov));
    assert!(!config_of(&app.setup).to_toml().contains("nesterov"));
    assert!(app
        .setup
        .rows()
        .contains(&Row::Setting("optimizer.betas".into())));
    app.setup.set(Field::Optimizer, "sgd");
    assert!(app.setup.rows().contains(&nesterov));
    assert_eq!(app.setup.setting_text("optimizer.nesterov"), "true");
    assert!(config_of(&app.setup).to_toml().contains("nesterov = true"));
    // Remembered across launches with the rest of the form.
    let saved = app.setup.fields();
    let mut again = home.app();
    again.setup.restore_fields(&saved, None);
    assert_eq!(again.setup.setting_text("optimizer.nesterov"), "true");
}

#[test]
fn choice_fields_open_a_picker_with_the_kinds_descriptions() {
    let home = Home::new();
    let mut app = home.app();
    focus(&mut app, &Row::Field(Field::Optimizer));
    key(&mut app, KeyCode::Enter);
    let p = app.setup.picker.clone().expect("a picker");
    let names: Vec<&str> = p.options.iter().map(|o| o.0.as_str()).collect();
    assert_eq!(
        names,
        OptimizerKind::ALL.map(|k| k.name()).to_vec(),
        "the kinds' own list"
    );
    for (o, k) in p.options.iter().zip(OptimizerKind::ALL) {
        assert_eq!(o.1, k.describe());
    }
    assert_eq!(p.options[p.cursor].0, "sgd", "opens on the value");
    // Letters are not commands while it is open; Esc keeps the value.
    typed(&mut app, "s");
    key(&mut app, KeyCode::Esc);
    assert!(app.setup.picker.is_none());
    assert_eq!(app.setup.value(Field::Optimizer), "sgd");
    assert!(app.take_commands().is_empty());
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Enter);
    assert_eq!(
        app.setup.value(Field::Optimizer),
        OptimizerKind::ALL[1].name()
    );
    // Every kind field's choices are described.
    for f in [
        Field::Model,
        Field::LrSchedule,
        Field::Mode,
        Field::Cpt,
        Field::Zero,
    ] {
        let opts = app.setup.options(&Row::Field(f));
        assert!(!opts.is_empty(), "{f:?}");
        for (name, desc) in &opts {
            assert!(!desc.is_empty(), "{f:?} {name} has no description");
        }
    }
    // A setting's enum too, from the config's own list.
    let row = Row::Setting("precision.channels_last".into());
    focus(&mut app, &row);
    key(&mut app, KeyCode::Enter);
    let p = app.setup.picker.clone().expect("a picker");
    assert_eq!(
        p.options.iter().map(|o| o.0.as_str()).collect::<Vec<_>>(),
        ["auto", "on", "off"]
    );
    assert!(p.options.iter().all(|o| !o.1.is_empty()));
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Enter);
    assert_eq!(
        config_of(&app.setup).precision.channels_last,
        cptlab::config::ChannelsLast::On
    );
}

#[test]
fn text_fields_edit_like_a_shell_line() {
    let home = Home::new();
    let mut app = home.app();
    focus(&mut app, &Row::Field(Field::Name));
    key(&mut app, KeyCode::Enter);
    ctrl(&mut app, 'u');
    typed(&mut app, "ab cd");
    ctrl(&mut app, 'w');
    ctrl(&mut app, 'a');
    typed(&mut app, "x");
    ctrl(&mut app, 'e');
    typed(&mut app, "y");
    key(&mut app, KeyCode::Home);
    key(&mut app, KeyCode::Delete);
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.setup.value(Field::Name), "ab y");
    // Tab completes a path in the data field; ~ is the home folder.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("cifar-10-batches-bin")).unwrap();
    focus(&mut app, &Row::Field(Field::Data));
    key(&mut app, KeyCode::Enter);
    ctrl(&mut app, 'u');
    typed(&mut app, &format!("{}/ci", dir.path().display()));
    key(&mut app, KeyCode::Tab);
    assert_eq!(
        app.setup.editing.as_ref().unwrap().text(),
        format!("{}/cifar-10-batches-bin/", dir.path().display())
    );
    ctrl(&mut app, 'u');
    typed(&mut app, "~/nowhere");
    key(&mut app, KeyCode::Enter);
    let home_dir = std::env::var("HOME").unwrap();
    assert_eq!(app.setup.value(Field::Data), format!("{home_dir}/nowhere"));
    assert!(
        app.setup.check.error(Field::Data).is_some(),
        "no such folder"
    );
}
