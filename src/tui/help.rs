//! Help (`?`): every key of the current view, then the global ones, read from the key tables
//! (`keys`) that dispatch them.
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};
use ratatui::Frame;

use super::action::View;
use super::keys;
use super::ui::{centered, panel, theme};

pub fn draw(f: &mut Frame, area: Rect, view: View) {
    let key_style = Style::default()
        .fg(theme::ACCENT)
        .add_modifier(Modifier::BOLD);
    let row = |(k, d): (&str, &str)| {
        Line::from(vec![
            Span::styled(format!("  {k:<13}"), key_style),
            Span::raw(d.to_string()),
        ])
    };
    let mut lines = vec![Line::styled(
        view.title(),
        Style::default().add_modifier(Modifier::BOLD),
    )];
    lines.extend(keys::help_rows(view).map(row));
    lines.push(Line::from(""));
    lines.push(Line::styled(
        "Everywhere",
        Style::default().add_modifier(Modifier::BOLD),
    ));
    lines.extend(keys::global_rows().map(row));
    let h = (lines.len() as u16 + 2).min(area.height);
    let r = centered(area, 66.min(area.width), h);
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines).block(panel("Help · ? or Esc closes", true)),
        r,
    );
}
