//! Presets: built-in and the user's; load into Setup, save the setup under a name, duplicate,
//! delete. Saving never overwrites without a yes.
use std::path::{Path, PathBuf};

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{List, ListItem, ListState, Paragraph, Wrap};
use ratatui::Frame;

use super::action::{Action, View};
use super::app::{App, Component, Dialog, Overlay, Prompt, PromptKind, Reply, Request};
use super::line_edit::LineEdit;
use super::setup::clip;
use super::ui::{panel, theme};
use crate::config::presets::{Origin, PresetEntry, PresetStore};
use crate::config::RunConfig;

#[derive(Debug, Clone)]
pub struct PresetsState {
    dir: PathBuf,
    pub rows: Vec<PresetEntry>,
    pub cursor: usize,
    /// Tab moves the keys to the TOML pane (↑↓ scroll it).
    pub preview_focus: bool,
    pub scroll: u16,
}

impl PresetsState {
    pub fn new(dir: &Path) -> PresetsState {
        let mut s = PresetsState {
            dir: dir.to_path_buf(),
            rows: Vec::new(),
            cursor: 0,
            preview_focus: false,
            scroll: 0,
        };
        s.refresh();
        s
    }

    pub fn store(&self) -> PresetStore {
        PresetStore::new(&self.dir)
    }

    pub fn refresh(&mut self) {
        self.rows = self.store().list();
        self.cursor = self.cursor.min(self.rows.len().saturating_sub(1));
    }

    pub fn selected(&self) -> Option<&PresetEntry> {
        self.rows.get(self.cursor)
    }

    fn select(&mut self, name: &str) {
        if let Some(i) = self.rows.iter().position(|p| p.name == name) {
            self.cursor = i;
            self.scroll = 0;
        }
    }
}

fn origin(p: &PresetEntry) -> &'static str {
    match p.origin {
        Origin::BuiltIn => "built-in",
        Origin::User(_) if p.shadows_built_in => "user*",
        Origin::User(_) => "user",
    }
}

impl Component for PresetsState {
    type Ctx<'a> = ();

    fn handle(&mut self, a: &Action, (): ()) -> Reply {
        let n = self.rows.len();
        let p = self;
        match a {
            Action::FocusNext | Action::FocusPrev => p.preview_focus = !p.preview_focus,
            Action::Back if p.preview_focus => p.preview_focus = false,
            Action::Pick(0, i) if *i < n => {
                p.cursor = *i;
                p.preview_focus = false;
                p.scroll = 0;
            }
            Action::Wheel(0, d) => {
                p.cursor =
                    (p.cursor as i64 + i64::from(*d)).clamp(0, n.saturating_sub(1) as i64) as usize;
                p.scroll = 0;
            }
            Action::Wheel(_, d) => {
                p.scroll =
                    (i64::from(p.scroll) + i64::from(*d)).clamp(0, i64::from(u16::MAX)) as u16
            }
            Action::Up if p.preview_focus => p.scroll = p.scroll.saturating_sub(1),
            Action::Down if p.preview_focus => p.scroll += 1,
            Action::Up => {
                p.cursor = p.cursor.saturating_sub(1);
                p.scroll = 0;
            }
            Action::Down => {
                p.cursor = (p.cursor + 1).min(n.saturating_sub(1));
                p.scroll = 0;
            }
            Action::Select => {
                if let Some(entry) = p.selected().cloned() {
                    return Reply::Then(Request::LoadPreset(Box::new(entry)));
                }
            }
            Action::Key('n') => return Reply::Then(Request::SavePreset),
            Action::Key('u') => {
                if let Some(entry) = p.selected() {
                    let from = entry.name.clone();
                    return Reply::Then(Request::Overlay(Overlay::Prompt(Prompt {
                        input: LineEdit::new(format!("{from}-copy")),
                        note: None,
                        kind: PromptKind::DuplicatePreset(from),
                    })));
                }
            }
            Action::Key('d') => {
                if let Some(entry) = p.selected() {
                    return Reply::Then(match entry.origin {
                        Origin::BuiltIn => {
                            Request::Say("built-in presets cannot be deleted".into(), true)
                        }
                        Origin::User(_) => Request::Overlay(Overlay::Dialog(Dialog::DeletePreset(
                            entry.name.clone(),
                        ))),
                    });
                }
            }
            _ => return Reply::Ignored,
        }
        Reply::Done
    }
}

/// Enter: loads a preset into Setup (keeping `--data`) and shows Setup; asks first when that
/// would replace unsaved edits.
pub fn ask_load(app: &mut App, entry: PresetEntry) {
    match entry.config {
        Ok(cfg) if app.setup.modified() => {
            app.overlay = Some(Overlay::Dialog(Dialog::LoadOverEdits {
                name: entry.name,
                config: Box::new(cfg),
            }));
        }
        Ok(cfg) => load_config(app, &entry.name, cfg),
        Err(e) => app.say(format!("{} does not load: {e}", entry.name), true),
    }
}

/// Loads `cfg` (preset `name`) into Setup and shows it.
pub fn load_config(app: &mut App, name: &str, cfg: RunConfig) {
    let data = app.data_override.clone();
    app.setup.load(cfg, name, data.as_deref());
    app.show(View::Setup);
    app.say(format!("loaded preset {name} into Setup"), false);
}

/// `n`: asks for a name to save the current setup under.
pub fn ask_save(app: &mut App) {
    if app.setup.check.config.is_none() {
        app.say("Setup has invalid fields: fix them before saving", true);
        return;
    }
    let input = app.setup.value(super::setup::Field::Name).to_string();
    app.overlay = Some(Overlay::Prompt(Prompt {
        kind: PromptKind::SavePreset,
        input: LineEdit::new(input),
        note: None,
    }));
}

pub fn submit_prompt(app: &mut App, mut p: Prompt) {
    let name = p.input.text().trim().to_string();
    // A name no file can carry: the prompt stays open with a valid one close to it (or the
    // text as typed, when nothing usable is left), saying why.
    if let Err(e) = crate::config::presets::validate_name(&name) {
        let why = match &e {
            crate::config::ConfigError::Invalid { expected, .. } => expected.clone(),
            other => other.to_string(),
        };
        p.note = Some(match crate::config::presets::suggest_name(&name) {
            Some(s) => {
                p.input = LineEdit::new(s.clone());
                format!("{name:?} cannot name a preset ({why}); Enter saves as {s}")
            }
            None => format!("{name:?} cannot name a preset: {why}"),
        });
        app.overlay = Some(Overlay::Prompt(p));
        return;
    }
    let config = match &p.kind {
        PromptKind::SavePreset => match app.setup.check.config.clone() {
            Some(c) => c,
            None => {
                app.say("Setup has invalid fields: fix them before saving", true);
                return;
            }
        },
        PromptKind::DuplicatePreset(from) => match app.presets.store().load(from) {
            Ok(c) => c,
            Err(e) => {
                app.say(e.to_string(), true);
                return;
            }
        },
        PromptKind::FilterRuns { .. } => return,
    };
    let from_setup = p.kind == PromptKind::SavePreset;
    save(app, &name, &config, false);
    if from_setup && app.overlay.is_none() {
        adopt(app, &name, &config);
    }
}

/// Setup now matches the preset it was saved as: that is its preset, not "modified".
pub fn adopt(app: &mut App, name: &str, config: &RunConfig) {
    let saved = app
        .presets
        .rows
        .iter()
        .any(|p| p.name == name && matches!(p.origin, Origin::User(_)));
    if saved && app.setup.check.config.as_ref() == Some(config) {
        let data = app.data_override.clone();
        app.setup.preset = name.to_string();
        app.setup.set_pristine_from(config, data.as_deref());
    }
}

/// Saves a user preset; an existing one is only replaced after the user says yes.
pub fn save(app: &mut App, name: &str, config: &RunConfig, overwrite: bool) {
    let store = app.presets.store();
    let exists = app
        .presets
        .rows
        .iter()
        .any(|p| p.name == name && matches!(p.origin, Origin::User(_)));
    let built_in = !exists && crate::config::presets::is_built_in(name);
    if (exists || built_in) && !overwrite {
        app.overlay = Some(Overlay::Dialog(Dialog::OverwritePreset {
            name: name.to_string(),
            config: Box::new(config.clone()),
            built_in,
        }));
        return;
    }
    match store.save(name, config, overwrite) {
        Ok(_) => {
            app.presets.refresh();
            app.presets.select(name);
            app.say(format!("saved preset {name}"), false);
        }
        Err(e) => app.say(e.to_string(), true),
    }
}

pub fn delete(app: &mut App, name: &str) {
    match app.presets.store().delete(name) {
        Ok(()) => {
            app.presets.refresh();
            app.say(format!("deleted preset {name}"), false);
        }
        Err(e) => app.say(e.to_string(), true),
    }
}

/// The list's area and the preview's beside it.
pub fn layout(area: Rect) -> (Rect, Rect) {
    let [left, right] =
        Layout::horizontal([Constraint::Length(list_width(area)), Constraint::Min(0)]).areas(area);
    (left, right)
}

fn list_width(area: Rect) -> u16 {
    if area.width >= 120 {
        44
    } else {
        32
    }
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let p = &app.presets;
    let list_w = list_width(area);
    let (left, right) = layout(area);
    let items: Vec<ListItem> = p
        .rows
        .iter()
        .map(|e| {
            let bad = e.config.is_err();
            let name_w = (list_w as usize).saturating_sub(14);
            let mut spans = vec![
                Span::raw(format!("{:<name_w$} ", clip(&e.name, name_w))),
                Span::styled(origin(e), theme::muted()),
            ];
            if bad {
                spans.push(Span::styled(" ✗", Style::default().fg(theme::BAD)));
            }
            ListItem::new(Line::from(spans))
        })
        .collect();
    let list = List::new(items)
        .block(panel("Presets", !p.preview_focus))
        .highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    let rows = left.height.saturating_sub(2) as usize;
    let mut state = ListState::default()
        .with_offset(super::ui::list_offset(p.cursor, rows))
        .with_selected(Some(p.cursor));
    f.render_stateful_widget(list, left, &mut state);

    let Some(sel) = p.selected() else {
        f.render_widget(panel("preset", p.preview_focus), right);
        return;
    };
    let mut lines: Vec<Line> = Vec::new();
    match &sel.config {
        Ok(c) if !c.description.is_empty() => {
            lines.push(Line::styled(
                c.description.clone(),
                Style::default().add_modifier(Modifier::BOLD),
            ));
            lines.push(Line::from(""));
        }
        Err(e) => {
            lines.push(Line::styled(
                format!("✗ {e}"),
                Style::default().fg(theme::BAD),
            ));
            lines.push(Line::from(""));
        }
        _ => {}
    }
    let text = p.store().text(&sel.name).unwrap_or_default();
    lines.extend(
        text.lines()
            .filter(|l| !l.starts_with("description"))
            .map(|l| {
                let style = if l.starts_with('[') {
                    Style::default().fg(theme::ACCENT)
                } else {
                    Style::default()
                };
                Line::styled(l.to_string(), style)
            }),
    );
    let title = format!("{} · {}", sel.name, origin(sel));
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .scroll((p.scroll, 0))
            .block(panel(&title, p.preview_focus)),
        right,
    );
}
