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

/// The help's lines for `view`.
fn lines(view: View) -> Vec<Line<'static>> {
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
    lines.push(Line::from(""));
    lines.push(Line::styled(
        "Mouse",
        Style::default().add_modifier(Modifier::BOLD),
    ));
    lines.extend(keys::MOUSE.iter().map(|&(k, d)| row((k, d))));
    lines
}

/// The first line shown when the help is scrolled by `scroll` in `rows` rows.
pub fn offset(view: View, rows: usize, scroll: usize) -> usize {
    scroll.min(lines(view).len().saturating_sub(rows))
}

pub fn draw(f: &mut Frame, area: Rect, view: View, scroll: usize) {
    let lines = lines(view);
    let n = lines.len();
    let h = (n as u16 + 2).min(area.height);
    let r = centered(area, 66.min(area.width), h);
    let rows = r.height.saturating_sub(2) as usize;
    let off = offset(view, rows, scroll);
    let title = if rows < n {
        "Help · ↑↓ scroll · ? or Esc closes"
    } else {
        "Help · ? or Esc closes"
    };
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines)
            .scroll((off as u16, 0))
            .block(panel(title, true)),
        r,
    );
    if off + rows < n {
        let x = r.x + r.width.saturating_sub(2);
        f.buffer_mut().set_string(
            x,
            r.y + r.height.saturating_sub(1),
            "▼",
            theme::border(true),
        );
    }
}
