//! The mouse, as `Action`s: a pure function of the app's state, the terminal's size and the
//! event, reading the same layout functions the views draw with. A click on a tab shows its
//! view; on a Setup field, a row of Runs, Presets or Sweeps (a sweep or a point), or a panel,
//! picks it (`Action::Pick`); the wheel scrolls the list, the form, the preset's TOML or the
//! log, moves through sweeps and points, and zooms a chart (`Action::Wheel`). Nothing happens while a dialog, prompt, help or a field edit has the
//! keyboard.
use crossterm::event::{MouseButton, MouseEvent, MouseEventKind};
use ratatui::layout::{Position, Rect};

use super::action::{Action, InputMode, View};
use super::app::App;
use super::{compare, dashboard, presets, runs, setup, sweep, ui};

/// Rows one notch of the wheel scrolls text (the form, the TOML, the log); a list's selection
/// moves one row per notch.
pub const WHEEL_LINES: i32 = 3;

/// The action of mouse event `ev` on a terminal of `area`.
pub fn action(app: &App, area: Rect, ev: &MouseEvent) -> Option<Action> {
    // Help scrolls with the wheel; nothing else happens while something is open over a view.
    if app.overlay == Some(super::app::Overlay::Help) {
        return match ev.kind {
            MouseEventKind::ScrollDown => Some(Action::Wheel(0, WHEEL_LINES)),
            MouseEventKind::ScrollUp => Some(Action::Wheel(0, -WHEEL_LINES)),
            _ => None,
        };
    }
    if app.overlay.is_some() || app.input_mode() != InputMode::Normal {
        return None;
    }
    let at = Position::new(ev.column, ev.row);
    let (tabs, body, _) = ui::frame_areas(area);
    match ev.kind {
        MouseEventKind::Down(MouseButton::Left) if tabs.contains(at) => ui::tab_columns(tabs.x)
            .into_iter()
            .find(|(_, x, w)| (*x..*x + *w).contains(&at.x))
            .map(|(v, _, _)| Action::Show(v)),
        MouseEventKind::Down(MouseButton::Left) if body.contains(at) => click(app, body, at),
        MouseEventKind::ScrollDown if body.contains(at) => wheel(app, body, at, 1),
        MouseEventKind::ScrollUp if body.contains(at) => wheel(app, body, at, -1),
        _ => None,
    }
}

/// The panel of `rects` under `at`.
fn panel_at(rects: &[(usize, Rect)], at: Position) -> Option<usize> {
    rects.iter().find(|(_, r)| r.contains(at)).map(|(i, _)| *i)
}

fn click(app: &App, body: Rect, at: Position) -> Option<Action> {
    match app.view {
        View::Sweeps => {
            let s = &app.sweeps;
            if s.rows.is_empty() {
                return None;
            }
            let (list, table, _) = sweep::layout(body, s.points.len());
            if let Some(i) = ui::table_row_at(list, at, s.cursor, s.rows.len()) {
                return Some(Action::Pick(sweep::LIST, i));
            }
            ui::table_row_at(table, at, s.point_cursor, s.points.len())
                .map(|i| Action::Pick(sweep::POINTS, i))
        }
        View::Setup => {
            let (form, _) = setup::layout(body);
            if !form.contains(at) {
                return None;
            }
            setup::field_at(&app.setup, form, at.y).map(|i| Action::Pick(0, i))
        }
        View::Runs => {
            let h = &app.history;
            let (list, _) = runs::layout(body);
            ui::table_row_at(list, at, h.cursor, h.rows.len()).map(|i| Action::Pick(0, i))
        }
        View::Presets => {
            let p = &app.presets;
            let (list, _) = presets::layout(body);
            let rows = list.height.saturating_sub(2) as usize;
            let first = list.y + 1;
            if !list.contains(at) || at.y < first || at.y >= first + rows as u16 {
                return None;
            }
            let i = ui::list_offset(p.cursor, rows) + (at.y - first) as usize;
            (i < p.rows.len()).then_some(Action::Pick(0, i))
        }
        View::Dashboard => {
            app.current_slot()?;
            let rects = dashboard::panel_rects(body, app.dash.zoom, app.dash.focus);
            panel_at(&rects, at).map(|i| Action::Pick(i, 0))
        }
        View::Compare => {
            if app.compared_slots().len() < 2 {
                return None;
            }
            let rects = compare::panel_rects(body, app);
            panel_at(&rects, at).map(|i| Action::Pick(i, 0))
        }
    }
}

fn wheel(app: &App, body: Rect, at: Position, dir: i32) -> Option<Action> {
    match app.view {
        View::Sweeps => {
            let s = &app.sweeps;
            if s.rows.is_empty() {
                return None;
            }
            let (list, table, _) = sweep::layout(body, s.points.len());
            [(sweep::LIST, list), (sweep::POINTS, table)]
                .into_iter()
                .find(|(_, r)| r.contains(at))
                .map(|(panel, _)| Action::Wheel(panel, dir))
        }
        View::Setup => {
            let (form, _) = setup::layout(body);
            if !form.contains(at) {
                return None;
            }
            // Scrolled within the form's length: the offset it would draw at, clamped.
            let s = &app.setup;
            let inner = setup::form_inner(form);
            let rows = inner.height as usize;
            let (lines, focus) = setup::form_lines(s, inner.width as usize);
            let base = setup::form_offset(lines.len(), focus, rows, 0);
            let room = lines.len().saturating_sub(rows).saturating_sub(base) as i64;
            let now = (s.form_scroll as i64).min(room);
            let want = (now + i64::from(dir * WHEEL_LINES)).clamp(0, room);
            let d = want - s.form_scroll as i64;
            (d != 0).then_some(Action::Wheel(0, d as i32))
        }
        View::Runs => {
            let (list, _) = runs::layout(body);
            list.contains(at).then_some(Action::Wheel(0, dir))
        }
        View::Presets => {
            let (list, preview) = presets::layout(body);
            if list.contains(at) {
                Some(Action::Wheel(0, dir))
            } else {
                preview
                    .contains(at)
                    .then_some(Action::Wheel(1, dir * WHEEL_LINES))
            }
        }
        View::Dashboard => {
            app.current_slot()?;
            let rects = dashboard::panel_rects(body, app.dash.zoom, app.dash.focus);
            match panel_at(&rects, at) {
                Some(dashboard::LOG) => Some(Action::Wheel(dashboard::LOG, dir * WHEEL_LINES)),
                // A chart zooms its steps (all the view's charts together).
                Some(i) if dashboard::CHARTS.contains(&i) => Some(Action::Wheel(i, dir)),
                _ => None,
            }
        }
        View::Compare => {
            if app.compared_slots().len() < 2 {
                return None;
            }
            let rects = compare::panel_rects(body, app);
            panel_at(&rects, at)
                .filter(|i| *i < 3)
                .map(|i| Action::Wheel(i, dir))
        }
    }
}

/// Whether the mouse is captured: yes unless `CPTLAB_NO_MOUSE` is set to something other than
/// `0` or empty (then the terminal's own selection and scrolling work as usual).
pub fn enabled() -> bool {
    enabled_by(std::env::var_os("CPTLAB_NO_MOUSE").as_deref())
}

/// Whether the mouse is captured: not with `--no-mouse` (`no_mouse_flag`), nor with
/// `CPTLAB_NO_MOUSE` set; either one turns capture off.
pub fn capture(no_mouse_flag: bool) -> bool {
    !no_mouse_flag && enabled()
}

/// Whether the mouse is captured, given `CPTLAB_NO_MOUSE`'s value.
pub fn enabled_by(no_mouse: Option<&std::ffi::OsStr>) -> bool {
    !no_mouse.is_some_and(|v| !v.is_empty() && v != "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cptlab_no_mouse_turns_capture_off() {
        let v = |s: &str| Some(std::ffi::OsString::from(s));
        assert!(enabled_by(None));
        assert!(enabled_by(v("").as_deref()));
        assert!(enabled_by(v("0").as_deref()));
        assert!(!enabled_by(v("1").as_deref()));
        assert!(!enabled_by(v("yes").as_deref()));
        // The flag turns capture off whatever the variable says.
        assert!(!capture(true));
    }
}
