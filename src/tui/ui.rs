//! The frame: view tabs, the current view, the status line, and whatever overlay is open.
//! Colours are the 16 named ANSI colours only, so 16- and 256-colour terminals (and SSH) look
//! alike; no text anyone needs to read is in colour 8 (bright black, `DIM`), which vanishes on
//! many dark palettes: secondary text is the normal colour, faint (`theme::muted`).
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};
use ratatui::Frame;

use super::action::View;
use super::app::{App, Dialog, Overlay, PromptKind};
use super::setup::clip;

pub mod theme {
    use ratatui::style::{Color, Style};

    pub const FG: Color = Color::Reset;
    pub const BG: Color = Color::Black;
    /// Borders, axes and the raw loss under its smoothed curve: never text to be read.
    pub const DIM: Color = Color::DarkGray;
    pub const ACCENT: Color = Color::Cyan;
    pub const ACCENT_B: Color = Color::Magenta;
    pub const GOOD: Color = Color::Green;
    pub const WARN: Color = Color::Yellow;
    pub const BAD: Color = Color::Red;
    pub const LOSS: Color = Color::Yellow;
    pub const LR: Color = Color::Blue;
    pub const PRECISION: Color = Color::LightCyan;

    /// Secondary text (labels, hints): the terminal's own colour, faint.
    pub fn muted() -> Style {
        Style::default().add_modifier(ratatui::style::Modifier::DIM)
    }

    pub fn border(focused: bool) -> Style {
        if focused {
            Style::default().fg(ACCENT)
        } else {
            Style::default().fg(DIM)
        }
    }
}

/// A bordered panel; the focused one has an accent border.
pub fn panel(title: &str, focused: bool) -> Block<'static> {
    panel_with(title, Vec::new(), focused)
}

/// A panel whose title is followed by `extra` spans (a chart's colour legend).
pub fn panel_with(title: &str, extra: Vec<Span<'static>>, focused: bool) -> Block<'static> {
    let mut spans = vec![Span::styled(
        format!(" {title} "),
        if focused {
            Style::default()
                .fg(theme::ACCENT)
                .add_modifier(Modifier::BOLD)
        } else {
            // Explicitly the normal colour: the border's colour 8 would show through.
            Style::default().fg(theme::FG)
        },
    )];
    spans.extend(extra);
    Block::bordered()
        .title(Line::from(spans))
        .border_style(theme::border(focused))
}

/// The first row a list shows so that row `cursor` is visible in `rows` rows (what ratatui's
/// lists and tables do from offset 0), shared by drawing and the mouse.
pub fn list_offset(cursor: usize, rows: usize) -> usize {
    cursor.saturating_sub(rows.saturating_sub(1))
}

/// A bordered table with one header row: the screen row of its first body row, and how many
/// body rows it shows. Drawing and the mouse both read it, so a click picks what is drawn.
pub fn table_body(area: Rect) -> (u16, usize) {
    (area.y + 2, area.height.saturating_sub(3) as usize)
}

/// The row of a bordered table with a header (`len` rows, scrolled to show `cursor`, as
/// `list_offset` does) drawn at `at`, if a row is drawn there.
pub fn table_row_at(area: Rect, at: Position, cursor: usize, len: usize) -> Option<usize> {
    let (first, shown) = table_body(area);
    if !area.contains(at) || at.y < first || at.y >= first + shown as u16 {
        return None;
    }
    let i = list_offset(cursor, shown) + (at.y - first) as usize;
    (i < len).then_some(i)
}

/// The frame's three parts: the tab bar, the view, the status line.
pub fn frame_areas(area: Rect) -> (Rect, Rect, Rect) {
    let [tabs, body, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    (tabs, body, foot)
}

/// The tab bar's pieces: the badge, then each view's `N Title`, one space apart. Returns each
/// view's first column and width (for the mouse).
pub fn tab_columns(x0: u16) -> Vec<(View, u16, u16)> {
    let mut x = x0 + BADGE.chars().count() as u16;
    View::ALL
        .iter()
        .enumerate()
        .map(|(i, v)| {
            x += 1;
            let w = format!("{} {}", i + 1, v.title()).chars().count() as u16;
            let start = x;
            x += w;
            (*v, start, w)
        })
        .collect()
}

const BADGE: &str = " cptlab ";

/// A `w`×`h` rectangle in the middle of `area`.
pub fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

pub fn draw(f: &mut Frame, app: &App) {
    let area = f.area();
    let (tabs, body, foot) = frame_areas(area);
    draw_tabs(f, tabs, app);
    match app.view {
        View::Setup => super::setup::draw(f, body, &app.setup),
        View::Dashboard => super::dashboard::draw(f, body, app),
        View::Compare => super::compare::draw(f, body, app),
        View::Presets => super::presets::draw(f, body, app),
        View::Runs => super::runs::draw(f, body, app),
        View::Sweeps => super::sweep::draw(f, body, app),
    }
    draw_footer(f, foot, app);
    match &app.overlay {
        Some(Overlay::Help) => super::help::draw(f, area, app.view, app.help_scroll),
        Some(Overlay::Dialog(d)) => draw_dialog(f, area, app, d),
        Some(Overlay::Prompt(p)) => {
            let (title, hint) = match &p.kind {
                PromptKind::SavePreset => (
                    "Save the setup as preset".to_string(),
                    "Enter saves · Esc cancels",
                ),
                PromptKind::DuplicatePreset(from) => {
                    (format!("Duplicate {from} as"), "Enter saves · Esc cancels")
                }
                PromptKind::FilterRuns { .. } => (
                    "Filter runs (name, model, status…)".to_string(),
                    "applies as you type · Enter keeps · Esc undoes",
                ),
            };
            let mut lines = vec![
                Line::from(super::line_edit::spans(&p.input, Style::default())),
                Line::styled(hint, theme::muted()),
            ];
            if let Some(n) = &p.note {
                lines.push(Line::styled(n.clone(), Style::default().fg(theme::WARN)));
            }
            popup(f, area, &title, lines, 50);
        }
        None => {}
    }
}

fn draw_tabs(f: &mut Frame, r: Rect, app: &App) {
    let mut spans = vec![Span::styled(
        BADGE,
        Style::default()
            .fg(theme::BG)
            .bg(theme::ACCENT)
            .add_modifier(Modifier::BOLD),
    )];
    for (i, v) in View::ALL.iter().enumerate() {
        let style = if *v == app.view {
            Style::default()
                .fg(theme::ACCENT)
                .add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
        } else {
            Style::default()
        };
        spans.push(Span::raw(" "));
        spans.push(Span::styled(format!("{} {}", i + 1, v.title()), style));
    }
    let live = app
        .runs
        .iter()
        .filter(|s| s.data.status.is_active())
        .count();
    let used: usize = spans.iter().map(|s| s.content.chars().count()).sum();
    let mut right = if live > 0 {
        format!("● {live} live  ? help ")
    } else {
        "? help ".to_string()
    };
    // Six tabs and the live count fill 80 columns: the help hint gives way (? still works).
    if live > 0 && used + 1 + right.chars().count() > r.width as usize {
        right = format!("● {live} live ");
    }
    let pad = (r.width as usize)
        .saturating_sub(used + right.chars().count())
        .max(1);
    spans.push(Span::raw(" ".repeat(pad)));
    spans.push(Span::styled(
        right,
        if live > 0 {
            Style::default().fg(theme::GOOD)
        } else {
            theme::muted()
        },
    ));
    f.render_widget(Line::from(spans), r);
}

fn draw_footer(f: &mut Frame, r: Rect, app: &App) {
    let w = r.width as usize;
    let line = match &app.status {
        Some(s) => Line::styled(
            clip(&format!(" {}", s.text.lines().next().unwrap_or("")), w),
            Style::default().fg(if s.warn { theme::WARN } else { theme::FG }),
        ),
        None => Line::styled(
            clip(
                &format!(
                    " {}",
                    super::keys::footer_fit(app.view, w.saturating_sub(1))
                ),
                w,
            ),
            theme::muted(),
        ),
    };
    f.render_widget(line, r);
}

/// What `s` will start: the lines of the confirmation.
fn start_lines(app: &App, cfg: &crate::config::RunConfig) -> Vec<Line<'static>> {
    let c = &app.setup.check;
    let prec = match &cfg.precision.schedule {
        None => format!("{} (no CPT)", cfg.precision.mode.name()),
        Some(s) if s.kind == crate::schedule::PrecisionScheduleKind::Static => {
            format!("{} · static {} bits", cfg.precision.mode.name(), s.q_max)
        }
        Some(s) => format!(
            "{} · CPT {} {}–{} bits × {} cycles",
            cfg.precision.mode.name(),
            s.kind.name(),
            s.q_min,
            s.q_max,
            s.cycles
        ),
    };
    let threads = cfg
        .devices
        .threads
        .map_or_else(|| "auto".to_string(), |t| t.to_string());
    let est = if c.spe_estimated { " (est.)" } else { "" };
    let data = cfg.data.source.as_deref().unwrap_or("synthetic");
    let row = |k: &str, v: String| {
        Line::from(vec![
            Span::styled(format!(" {k:<10}"), theme::muted()),
            Span::raw(v),
        ])
    };
    let mut lines = vec![
        row("name", cfg.name.clone()),
        row("model", cfg.model.kind.name().to_string()),
        row("data", data.to_string()),
        row("precision", prec),
        row(
            "devices",
            format!(
                "{} · threads {threads} · ZeRO {}",
                cfg.devices.devices, cfg.devices.zero
            ),
        ),
        row(
            "length",
            format!(
                "{} epochs × {} steps = {} steps{est} · batch {}",
                cfg.train.epochs, c.steps_per_epoch, c.total_steps, cfg.train.batch_size
            ),
        ),
        row(
            "optimizer",
            format!(
                "{} lr {} · {}",
                cfg.optimizer.kind_name(),
                cfg.optimizer.lr(),
                cfg.lr_schedule.name()
            ),
        ),
        Line::from(""),
    ];
    lines.push(Line::from(vec![
        Span::styled(
            " y Enter ",
            Style::default()
                .fg(theme::ACCENT)
                .add_modifier(Modifier::BOLD),
        ),
        Span::raw("start   "),
        Span::styled(
            " n Esc ",
            Style::default()
                .fg(theme::ACCENT)
                .add_modifier(Modifier::BOLD),
        ),
        Span::raw("not now"),
    ]));
    lines
}

fn popup(f: &mut Frame, area: Rect, title: &str, lines: Vec<Line>, w: u16) {
    let w = w.min(area.width.saturating_sub(2)).max(20);
    let inner_w = w.saturating_sub(2).max(1) as usize;
    // Height after wrapping, roughly: enough for the longest lines.
    let h: usize = lines
        .iter()
        .map(|l| l.width().max(1).div_ceil(inner_w))
        .sum();
    let r = centered(area, w, h as u16 + 2);
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(panel(title, true)),
        r,
    );
}

fn draw_dialog(f: &mut Frame, area: Rect, app: &App, d: &Dialog) {
    let key = |k: &str, what: &str| {
        Line::from(vec![
            Span::styled(
                format!(" {k} "),
                Style::default()
                    .fg(theme::ACCENT)
                    .add_modifier(Modifier::BOLD),
            ),
            Span::raw(what.to_string()),
        ])
    };
    let yes_no = || key("y / n", "");
    let (title, lines): (String, Vec<Line>) = match d {
        Dialog::QuitUnsaved => {
            let s = &app.setup;
            let changed: Vec<&str> = s.changed_fields().iter().map(|f| f.label()).collect();
            let kept = if app.state_unsaved() {
                "They could not be written for the next start."
            } else {
                "They are remembered for the next start."
            };
            (
                "Quit with unsaved Setup changes?".into(),
                vec![
                    Line::from(format!(
                        "Setup differs from preset {} ({}).",
                        s.preset,
                        changed.join(", ")
                    )),
                    Line::from(kept),
                    Line::from(""),
                    key("y q", "quit"),
                    key("s", "save them as a preset first"),
                    key("Esc n", "stay"),
                ],
            )
        }
        Dialog::ConfirmStart(cfg) => ("Start this run?".into(), start_lines(app, cfg)),
        Dialog::LoadOverEdits { name, .. } => {
            let s = &app.setup;
            let changed: Vec<&str> = s.changed_fields().iter().map(|f| f.label()).collect();
            (
                format!("Load preset {name}?"),
                vec![
                    Line::from(format!(
                        "Setup has unsaved changes to preset {} ({}).",
                        s.preset,
                        changed.join(", ")
                    )),
                    Line::from(format!("Loading {name} replaces them.")),
                    yes_no(),
                ],
            )
        }
        Dialog::QuitLive => {
            let n = app.live_runs().len();
            (
                "Leave the workbench?".into(),
                vec![
                    Line::from(format!("{n} run(s) of this workbench are live.")),
                    Line::from(""),
                    key("x", "stop them (checkpoint and summary), then quit"),
                    key("d q", "detach: they finish headless and keep recording;"),
                    Line::from("    a later `cptlab` attaches from Runs"),
                    key("Esc", "stay"),
                ],
            )
        }
        Dialog::StopRun(id) => {
            let name = app.slot(*id).map(|s| s.title()).unwrap_or_default();
            (
                "Stop the run?".into(),
                vec![
                    Line::from(name),
                    Line::from("It saves a checkpoint and its summary (status stopped)."),
                    yes_no(),
                ],
            )
        }
        Dialog::DeleteRun { name, .. } => (
            "Delete the run?".into(),
            vec![
                Line::from(name.clone()),
                Line::from("Its directory, metrics and checkpoints are removed."),
                yes_no(),
            ],
        ),
        Dialog::DeletePreset(name) => (
            "Delete the preset?".into(),
            vec![Line::from(format!("user preset {name}")), yes_no()],
        ),
        Dialog::OverwritePreset {
            name,
            built_in: false,
            ..
        } => (
            "Overwrite?".into(),
            vec![
                Line::from(format!("A user preset named {name} exists.")),
                Line::from("Replace it with the current setup?"),
                yes_no(),
            ],
        ),
        Dialog::OverwritePreset { name, .. } => (
            "Shadow a built-in?".into(),
            vec![
                Line::from(format!("{name} is a built-in preset.")),
                Line::from("Save yours under its name (it is listed as user*; the built-in comes back when yours is deleted)?"),
                yes_no(),
            ],
        ),
        Dialog::AbMode => {
            let a = app
                .setup
                .ab_first
                .as_ref()
                .map(|a| a.summary.clone())
                .unwrap_or_default();
            (
                "Launch A and B (same seed)".into(),
                vec![
                    Line::from(format!("A: {a}")),
                    Line::from(format!("B: {}", app.setup.summary())),
                    Line::from(""),
                    key("1", "one after the other (all devices each)"),
                    key("2", "side by side on split devices"),
                    key("Esc", "not yet"),
                ],
            )
        }
    };
    let w = if matches!(d, Dialog::ConfirmStart(_)) {
        76
    } else {
        60
    };
    popup(f, area, &title, lines, w);
}
