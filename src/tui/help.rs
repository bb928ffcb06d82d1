//! Help (`?`): every key of the current view, then the global ones.
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};
use ratatui::Frame;

use super::action::View;
use super::ui::{centered, panel, theme};

pub const GLOBAL: &[(&str, &str)] = &[
    ("1–5", "Setup, Dashboard, Compare, Presets, Runs"),
    ("Tab S-Tab", "move the focus"),
    ("↑↓←→ hjkl", "move, change"),
    ("Enter", "select"),
    ("s", "start the run set up in Setup"),
    ("p", "pause / resume the open run"),
    ("x", "stop the open run (checkpoint, summary)"),
    ("c", "compare"),
    ("?", "this help"),
    ("q Esc", "back; quit (asks while a run is live)"),
    ("Ctrl-C", "quit (asks while a run is live)"),
];

pub fn keys(view: View) -> &'static [(&'static str, &'static str)] {
    match view {
        View::Setup => &[
            ("↑↓ Tab", "field"),
            ("←→ h l", "previous / next choice, step a number"),
            ("Enter", "edit the field (Enter keeps, Esc drops)"),
            ("s", "start the run"),
            ("c", "A/B: store A; again: launch A and B (same seed)"),
        ],
        View::Dashboard => &[
            ("Tab", "focus a panel"),
            ("Enter", "enlarge / restore the focused panel"),
            ("↑↓ PgUp PgDn", "scroll the log (when focused)"),
            ("←→", "previous / next open run"),
            ("p", "pause / resume"),
            ("x", "stop"),
            ("c", "compare the last two open runs"),
        ],
        View::Compare => &[
            ("Tab", "focus a panel"),
            ("Enter", "enlarge / restore the focused panel"),
            ("←→", "open A / B in the Dashboard"),
            ("w", "swap A and B"),
        ],
        View::Presets => &[
            ("↑↓", "preset"),
            ("Enter", "load into Setup"),
            ("n", "save the current setup as a new preset"),
            ("u", "duplicate the selected preset"),
            ("d", "delete the selected user preset"),
            ("Tab", "scroll the TOML instead"),
        ],
        View::Runs => &[
            ("↑↓", "run"),
            ("Enter", "open in the Dashboard (replay, or attach if live)"),
            ("space", "mark for Compare (two)"),
            ("c", "compare the marked runs"),
            ("e", "export steps.csv and evals.csv"),
            ("d", "delete (asks; not while live)"),
            ("r", "refresh"),
        ],
    }
}

pub fn draw(f: &mut Frame, area: Rect, view: View) {
    let key_style = Style::default()
        .fg(theme::ACCENT)
        .add_modifier(Modifier::BOLD);
    let row = |(k, d): &(&str, &str)| {
        Line::from(vec![
            Span::styled(format!("  {k:<13}"), key_style),
            Span::raw(d.to_string()),
        ])
    };
    let mut lines = vec![Line::styled(
        view.title(),
        Style::default().add_modifier(Modifier::BOLD),
    )];
    lines.extend(keys(view).iter().map(row));
    lines.push(Line::from(""));
    lines.push(Line::styled(
        "Everywhere",
        Style::default().add_modifier(Modifier::BOLD),
    ));
    lines.extend(GLOBAL.iter().map(row));
    let h = (lines.len() as u16 + 2).min(area.height);
    let r = centered(area, 66.min(area.width), h);
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines).block(panel("Help · ? or Esc closes", true)),
        r,
    );
}
