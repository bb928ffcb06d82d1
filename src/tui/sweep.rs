//! Sweeps: the sweep directories in the runs directory (`cptlab sweep FILE` records them) —
//! points done of total and the sweep's status; the selected sweep's points with their
//! headline figures, and accuracy against GBitOps, one glyph and colour per group of the
//! varied values. Live: each tick re-reads a sweep only when its files changed. Enter opens a
//! point's run in the Dashboard, `c` compares the marked points (or the done ones).
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState};
use ratatui::Frame;

use super::action::Action;
use super::app::{App, Component, Reply, Request, MAX_COMPARED};
use super::charts::{self, Plot, XAxis, YAxis};
use super::compare::COLORS;
use super::run_data::pct;
use super::setup::clip;
use super::ui::{panel, theme};
use crate::sweep::{self, PointStatus, SweepStatus, PLAN_FILE, PROGRESS_FILE};
use crate::telemetry::store::{self, SUMMARY_FILE};
use crate::telemetry::Summary;

/// Each group's glyph on the scatter (its colour is Compare's of the same index).
pub const GLYPHS: [char; 8] = ['●', '■', '▲', '◆', '✚', '✖', '○', '□'];

/// A file's length and modification time: a sweep is read again only when one changes.
type Stamp = Option<(u64, SystemTime)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// One point of the selected sweep, with its run's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct PointRow {
    pub index: usize,
    pub label: String,
    /// The label without its seed: the point's group on the scatter.
    pub group: String,
    pub status: PointStatus,
    pub run_dir: Option<PathBuf>,
    pub summary: Option<Summary>,
    pub error: Option<String>,
}

impl PointRow {
    /// Mean training seconds per epoch.
    pub fn seconds_per_epoch(&self) -> Option<f64> {
        let s = self.summary.as_ref()?;
        (!s.seconds_per_epoch.is_empty())
            .then(|| s.seconds_per_epoch.iter().sum::<f64>() / s.seconds_per_epoch.len() as f64)
    }
}

/// One sweep directory.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepRow {
    pub dir: PathBuf,
    pub name: String,
    /// The newest of its files' times (the list is newest first).
    pub modified: Option<SystemTime>,
    /// Its points and where they stand, or why it cannot be read.
    pub read: Result<sweep::Overview, String>,
}

impl SweepRow {
    pub fn total(&self) -> usize {
        self.read.as_ref().map_or(0, |o| o.points.len())
    }

    pub fn done(&self) -> usize {
        self.read.as_ref().map_or(0, |o| o.done())
    }

    pub fn status_text(&self) -> String {
        match &self.read {
            Ok(o) => o.status.to_string(),
            Err(e) => format!("unreadable: {e}"),
        }
    }
}

/// What a sweep's row was read from.
#[derive(Debug, Clone, PartialEq)]
struct SweepStamps {
    progress: Stamp,
    plan: Stamp,
    dir: Stamp,
}

/// The view's panels as `Action::Pick` and `Action::Wheel` number them.
pub const LIST: usize = 0;
pub const POINTS: usize = 1;

/// Which panel the keys move in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Focus {
    #[default]
    Sweeps,
    Points,
}

impl Focus {
    /// The focus of panel `LIST` or `POINTS`.
    fn of_panel(panel: usize) -> Focus {
        if panel == POINTS {
            Focus::Points
        } else {
            Focus::Sweeps
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct SweepsState {
    root: PathBuf,
    /// Every sweep directory, newest first.
    pub rows: Vec<SweepRow>,
    pub cursor: usize,
    pub focus: Focus,
    /// The selected sweep's points.
    pub points: Vec<PointRow>,
    pub point_cursor: usize,
    /// Run directories of points marked for Compare, in the order marked.
    pub marked: Vec<PathBuf>,
    /// Each sweep's files as last read, with the stamps they were read at.
    records: HashMap<PathBuf, (SweepStamps, Result<sweep::SweepRecord, String>)>,
    /// The summaries read, by run directory, with the stamp of `summary.json` they came from.
    summaries: HashMap<PathBuf, (Stamp, Option<Summary>)>,
}

/// The label without its seed (`a=1, seed=3` → `a=1`; a seed alone → `all`).
pub fn group_of(label: &str) -> String {
    match label.rsplit_once(", seed=") {
        Some((g, _)) => g.to_string(),
        None if label.starts_with("seed=") => "all".to_string(),
        None => label.to_string(),
    }
}

/// A label with each dotted key cut to its last part (`precision.schedule.kind=CR` →
/// `kind=CR`), for narrow tables and the scatter's legend.
pub fn short_label(label: &str) -> String {
    label
        .split(", ")
        .map(|part| match part.split_once('=') {
            Some((k, v)) => format!("{}={v}", k.rsplit('.').next().unwrap_or(k)),
            None => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl SweepsState {
    pub fn new(root: &Path) -> SweepsState {
        let mut s = SweepsState::default();
        s.refresh(root);
        s
    }

    /// Re-reads what changed in the runs directory's sweeps (a sweep whose files' lengths and
    /// times are as before is not read again, unless it is running: then only whether its
    /// process still runs is looked at again); true if anything shown changed.
    pub fn refresh(&mut self, root: &Path) -> bool {
        self.root = root.to_path_buf();
        let selected = self.selected().map(|r| r.dir.clone());
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|d| d.join(PLAN_FILE).exists() || d.join(PROGRESS_FILE).exists())
            .collect();
        dirs.sort();
        let mut rows = Vec::with_capacity(dirs.len());
        for dir in dirs {
            let now = SweepStamps {
                progress: stamp(&dir.join(PROGRESS_FILE)),
                plan: stamp(&dir.join(PLAN_FILE)),
                dir: stamp(&dir),
            };
            let old = self.rows.iter().find(|r| r.dir == dir);
            let same = self.records.get(&dir).is_some_and(|(s, _)| *s == now);
            let running = old.is_some_and(|r| {
                r.read
                    .as_ref()
                    .is_ok_and(|o| o.status == SweepStatus::Running)
            });
            let row = match old {
                Some(r) if same && !running => r.clone(),
                _ => {
                    if !same {
                        // Errors name the sweep's own files from inside it.
                        let rec = sweep::read_record(&dir)
                            .map_err(|e| e.to_string().replace(&format!("{}/", dir.display()), ""));
                        self.records.insert(dir.clone(), (now.clone(), rec));
                    }
                    row_of(&dir, &now, &self.records[&dir].1)
                }
            };
            rows.push(row);
        }
        // Newest first; names break ties.
        rows.sort_by(|a, b| b.modified.cmp(&a.modified).then(b.name.cmp(&a.name)));
        let changed = rows != self.rows;
        self.rows = rows;
        if let Some(i) = selected.and_then(|d| self.rows.iter().position(|r| r.dir == d)) {
            self.cursor = i;
        }
        self.cursor = self.cursor.min(self.rows.len().saturating_sub(1));
        self.records.retain(|d, _| d.exists());
        let points_changed = self.load_points();
        changed || points_changed
    }

    /// The selected sweep's points, each with its run's summary (read again only when its
    /// `summary.json` changed); true if they changed.
    fn load_points(&mut self) -> bool {
        let Some(Ok(o)) = self.rows.get(self.cursor).map(|r| &r.read) else {
            let changed = !self.points.is_empty();
            self.points.clear();
            return changed;
        };
        let mut points = Vec::with_capacity(o.points.len());
        for p in &o.points {
            let summary = p.run_dir.as_ref().and_then(|d| {
                let now = stamp(&d.join(SUMMARY_FILE));
                match self.summaries.get(d) {
                    Some((s, sum)) if *s == now => sum.clone(),
                    _ => {
                        let sum = store::read_summary_if_present(d).ok().flatten();
                        self.summaries.insert(d.clone(), (now, sum.clone()));
                        sum
                    }
                }
            });
            points.push(PointRow {
                index: p.index,
                group: group_of(&p.label),
                label: p.label.clone(),
                status: p.status,
                run_dir: p.run_dir.clone(),
                summary,
                error: p.error.clone(),
            });
        }
        let changed = points != self.points;
        self.points = points;
        self.point_cursor = self.point_cursor.min(self.points.len().saturating_sub(1));
        changed
    }

    pub fn selected(&self) -> Option<&SweepRow> {
        self.rows.get(self.cursor)
    }

    pub fn selected_point(&self) -> Option<&PointRow> {
        self.points.get(self.point_cursor)
    }

    /// The groups of the selected sweep's points, in the order they first appear.
    pub fn groups(&self) -> Vec<String> {
        let mut g: Vec<String> = Vec::new();
        for p in &self.points {
            if !g.contains(&p.group) {
                g.push(p.group.clone());
            }
        }
        g
    }

    /// The letter of a marked point (A for the first marked), if it is marked.
    pub fn mark_of(&self, dir: Option<&Path>) -> Option<char> {
        let i = self.marked.iter().position(|m| Some(m.as_path()) == dir)?;
        Some((b'A' + i as u8) as char)
    }

    fn move_cursor(&mut self, to: impl Fn(usize, usize) -> usize) {
        match self.focus {
            Focus::Sweeps => {
                let last = self.rows.len().saturating_sub(1);
                let next = to(self.cursor, last).min(last);
                if next != self.cursor {
                    self.cursor = next;
                    self.point_cursor = 0;
                    self.marked.clear();
                    self.load_points();
                }
            }
            Focus::Points => {
                let last = self.points.len().saturating_sub(1);
                self.point_cursor = to(self.point_cursor, last).min(last);
            }
        }
    }
}

fn row_of(dir: &Path, stamps: &SweepStamps, rec: &Result<sweep::SweepRecord, String>) -> SweepRow {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let modified = [&stamps.progress, &stamps.plan]
        .iter()
        .filter_map(|s| s.map(|(_, t)| t))
        .max();
    SweepRow {
        dir: dir.to_path_buf(),
        name,
        modified,
        read: rec.as_ref().map(|r| r.overview()).map_err(String::clone),
    }
}

impl Component for SweepsState {
    type Ctx<'a> = ();

    fn handle(&mut self, a: &Action, (): ()) -> Reply {
        match a {
            Action::Up => self.move_cursor(|c, _| c.saturating_sub(1)),
            Action::Down => self.move_cursor(|c, _| c + 1),
            Action::PageUp => self.move_cursor(|c, _| c.saturating_sub(10)),
            Action::PageDown => self.move_cursor(|c, _| c + 10),
            Action::First => self.move_cursor(|_, _| 0),
            Action::Last => self.move_cursor(|_, last| last),
            Action::FocusNext | Action::FocusPrev => {
                self.focus = match self.focus {
                    Focus::Sweeps => Focus::Points,
                    Focus::Points => Focus::Sweeps,
                }
            }
            Action::Back if self.focus == Focus::Points => self.focus = Focus::Sweeps,
            // A click on a sweep or a point selects it and moves the keys there; the wheel
            // moves through the list it is over.
            Action::Pick(panel @ (LIST | POINTS), i) => {
                self.focus = Focus::of_panel(*panel);
                self.move_cursor(|_, _| *i);
            }
            Action::Wheel(panel @ (LIST | POINTS), d) => {
                self.focus = Focus::of_panel(*panel);
                self.move_cursor(|c, _| (c as i64 + i64::from(*d)).max(0) as usize);
            }
            Action::Key('R') => {
                let root = self.root.clone();
                self.refresh(&root);
                return Reply::Then(Request::Say(format!("{} sweep(s)", self.rows.len()), false));
            }
            Action::Select => match self.focus {
                Focus::Sweeps if self.selected().is_some() => self.focus = Focus::Points,
                Focus::Sweeps => {
                    return Reply::Then(Request::Say(
                        "no sweep yet: `cptlab sweep FILE` records one".into(),
                        false,
                    ))
                }
                Focus::Points => {
                    let Some(p) = self.selected_point() else {
                        return Reply::Done;
                    };
                    return Reply::Then(match &p.run_dir {
                        Some(d) => Request::OpenDir(d.clone()),
                        None => Request::Say(
                            format!("point {} has no run yet ({})", p.index, p.status),
                            false,
                        ),
                    });
                }
            },
            Action::Key(' ') => {
                if self.focus == Focus::Sweeps {
                    self.focus = Focus::Points;
                }
                let Some(p) = self.selected_point() else {
                    return Reply::Done;
                };
                let Some(dir) = p.run_dir.clone() else {
                    return Reply::Then(Request::Say(
                        format!("point {} has no run to compare yet", p.index),
                        false,
                    ));
                };
                if let Some(i) = self.marked.iter().position(|m| *m == dir) {
                    self.marked.remove(i);
                } else if self.marked.len() >= MAX_COMPARED {
                    return Reply::Then(Request::Say(
                        format!("Compare takes up to {MAX_COMPARED} runs: unmark one first"),
                        true,
                    ));
                } else {
                    self.marked.push(dir);
                }
            }
            _ => return Reply::Ignored,
        }
        Reply::Done
    }
}

/// `c` in Sweeps: the marked points (in the order marked), else every done point of the
/// selected sweep — at most eight, as Compare takes; the status line says when more were left
/// out.
pub fn compare(app: &mut App) {
    let s = &app.sweeps;
    let (dirs, what): (Vec<PathBuf>, &str) = if s.marked.is_empty() {
        let done = s
            .points
            .iter()
            .filter(|p| p.status.is_done())
            .filter_map(|p| p.run_dir.clone())
            .collect();
        (done, "done points")
    } else {
        (s.marked.clone(), "marked points")
    };
    if dirs.len() < 2 {
        app.say(
            format!(
                "{} {what}: Compare needs 2–{MAX_COMPARED} (space marks points with runs)",
                dirs.len()
            ),
            true,
        );
        return;
    }
    let n = dirs.len();
    let dirs = &dirs[..n.min(MAX_COMPARED)];
    app.compared = dirs.iter().map(|d| app.open_dir(d)).collect();
    app.cmp = Default::default();
    app.open(super::action::View::Compare);
    if n > MAX_COMPARED {
        app.say(
            format!(
                "Compare takes up to {MAX_COMPARED} runs: the first {MAX_COMPARED} of {n} {what} (space marks others)"
            ),
            true,
        );
    }
}

/// The areas: the sweeps list, the points table, the scatter.
pub fn layout(area: Rect, points: usize) -> (Rect, Rect, Rect) {
    if area.width >= 120 {
        let [list, right] =
            Layout::horizontal([Constraint::Length(44), Constraint::Min(0)]).areas(area);
        let table_h = (points as u16 + 3).clamp(5, area.height / 2);
        let [table, chart] =
            Layout::vertical([Constraint::Length(table_h), Constraint::Min(0)]).areas(right);
        (list, table, chart)
    } else {
        let rest = area.height.saturating_sub(5);
        let table_h = (points as u16 + 3).clamp(4, rest / 2);
        let [list, table, chart] = Layout::vertical([
            Constraint::Length(5),
            Constraint::Length(table_h),
            Constraint::Min(0),
        ])
        .areas(area);
        (list, table, chart)
    }
}

fn sweep_color(r: &SweepRow) -> ratatui::style::Color {
    match &r.read {
        Ok(o) => match o.status {
            SweepStatus::Running => theme::ACCENT,
            SweepStatus::Finished => theme::GOOD,
            SweepStatus::Failed => theme::BAD,
            SweepStatus::Interrupted => theme::WARN,
        },
        Err(_) => theme::BAD,
    }
}

fn point_color(s: PointStatus) -> ratatui::style::Color {
    match s {
        PointStatus::Done | PointStatus::Skipped(crate::telemetry::RunStatus::Finished) => {
            theme::GOOD
        }
        PointStatus::Running => theme::ACCENT,
        PointStatus::Failed | PointStatus::Skipped(_) => theme::BAD,
        PointStatus::Interrupted => theme::WARN,
        PointStatus::Pending => theme::DIM,
    }
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let s = &app.sweeps;
    if s.rows.is_empty() {
        let p = Paragraph::new(vec![
            Line::from(""),
            Line::from("No sweeps yet."),
            Line::from(""),
            Line::from("Start one with `cptlab sweep FILE` (a TOML file of [set], [axes] and"),
            Line::from("seeds; see `cptlab sweep --help`): its points show here as they train."),
        ])
        .centered()
        .block(panel("Sweeps", true));
        f.render_widget(p, area);
        return;
    }
    let (list, table, chart) = layout(area, s.points.len());
    draw_list(f, list, s);
    draw_points(f, table, s);
    draw_scatter(f, chart, s);
}

fn draw_list(f: &mut Frame, area: Rect, s: &SweepsState) {
    let w = area.width.saturating_sub(2) as usize;
    let rows: Vec<Row> = s
        .rows
        .iter()
        .map(|r| {
            let count = match &r.read {
                Ok(_) => format!("{}/{}", r.done(), r.total()),
                Err(_) => "-".into(),
            };
            Row::new(vec![
                Cell::from(r.name.clone()),
                Cell::from(count),
                Cell::from(clip(&r.status_text(), w.saturating_sub(24).max(11)))
                    .style(Style::default().fg(sweep_color(r))),
            ])
        })
        .collect();
    let widths = [
        Constraint::Min(12),
        Constraint::Length(7),
        Constraint::Min(11),
    ];
    let title = format!("Sweeps · {}", s.rows.len());
    let t = Table::new(rows, widths)
        .header(
            Row::new(vec!["sweep", "done", "status"])
                .style(Style::default().add_modifier(Modifier::BOLD)),
        )
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .block(panel(&title, s.focus == Focus::Sweeps));
    let (_, shown) = super::ui::table_body(area);
    let mut state = TableState::default()
        .with_offset(super::ui::list_offset(s.cursor, shown))
        .with_selected(Some(s.cursor));
    f.render_stateful_widget(t, area, &mut state);
}

fn draw_points(f: &mut Frame, area: Rect, s: &SweepsState) {
    let Some(sel) = s.selected() else { return };
    let title = format!("{} · points", sel.name);
    if let Err(e) = &sel.read {
        let w = area.width.saturating_sub(2) as usize;
        let p = Paragraph::new(vec![Line::styled(
            clip(&format!("unreadable: {e}"), w),
            Style::default().fg(theme::BAD),
        )])
        .block(panel(&title, s.focus == Focus::Points));
        f.render_widget(p, area);
        return;
    }
    let wide = area.width >= 100;
    let header = if wide {
        vec![
            "", "point", "status", "final", "best", "GBitOps", "cost", "s/epoch",
        ]
    } else {
        vec![
            "", "point", "status", "final", "best", "GBitOps", "cost", "s/ep",
        ]
    };
    let rows: Vec<Row> = s
        .points
        .iter()
        .map(|p| {
            let sum = p.summary.as_ref();
            let mark = s.mark_of(p.run_dir.as_deref()).unwrap_or(' ');
            let label = if wide {
                p.label.clone()
            } else {
                short_label(&p.label)
            };
            Row::new(vec![
                Cell::from(mark.to_string()).style(Style::default().fg(theme::ACCENT_B)),
                Cell::from(label),
                Cell::from(p.status.to_string()).style(Style::default().fg(point_color(p.status))),
                Cell::from(pct(sum.and_then(|s| s.final_test_acc))),
                Cell::from(pct(sum.and_then(|s| s.best_test_acc))),
                Cell::from(
                    sum.and_then(|s| s.gbitops)
                        .map_or("-".into(), |g| format!("{g:.1}")),
                ),
                Cell::from(
                    sum.and_then(|s| s.gbitops_ratio_vs_static)
                        .map_or("-".into(), |r| format!("{r:.2}")),
                ),
                Cell::from(
                    p.seconds_per_epoch()
                        .map_or("-".into(), |x| format!("{x:.1}")),
                ),
            ])
        })
        .collect();
    let widths = [
        Constraint::Length(1),
        Constraint::Min(16),
        Constraint::Length(if wide { 11 } else { 8 }),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Length(5),
        Constraint::Length(if wide { 7 } else { 5 }),
    ];
    let t = Table::new(rows, widths)
        .column_spacing(1)
        .header(Row::new(header).style(Style::default().add_modifier(Modifier::BOLD)))
        .row_highlight_style(if s.focus == Focus::Points {
            Style::default().add_modifier(Modifier::REVERSED)
        } else {
            Style::default()
        })
        .block(panel(&title, s.focus == Focus::Points));
    let (_, shown) = super::ui::table_body(area);
    let mut state = TableState::default()
        .with_offset(super::ui::list_offset(s.point_cursor, shown))
        .with_selected(Some(s.point_cursor));
    f.render_stateful_widget(t, area, &mut state);
}

/// Bounds around `vals` with a margin, never empty.
fn padded(vals: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let m = if hi > lo {
        (hi - lo) * 0.08
    } else {
        (lo.abs() * 0.05).max(0.5)
    };
    (lo - m, hi + m)
}

/// The scatter's points: per group, (GBitOps, final accuracy in %) of its points that have both.
pub fn scatter_series(s: &SweepsState) -> Vec<(String, Vec<(f64, f64)>)> {
    s.groups()
        .into_iter()
        .map(|g| {
            let pts = s
                .points
                .iter()
                .filter(|p| p.group == g)
                .filter_map(|p| {
                    let sum = p.summary.as_ref()?;
                    Some((sum.gbitops?, sum.final_test_acc? * 100.0))
                })
                .collect();
            (g, pts)
        })
        .collect()
}

fn draw_scatter(f: &mut Frame, area: Rect, s: &SweepsState) {
    if area.height < 3 {
        return;
    }
    let groups = scatter_series(s);
    let names: Vec<String> = groups.iter().map(|(g, _)| short_label(g)).collect();
    let (x0, x1) = padded(groups.iter().flat_map(|(_, p)| p.iter().map(|q| q.0)));
    let (y0, y1) = padded(groups.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)));
    let series = groups
        .iter()
        .enumerate()
        .map(|(k, (_, pts))| {
            charts::owned(&names[k], pts.clone(), COLORS[k % COLORS.len()])
                .glyph(GLYPHS[k % GLYPHS.len()])
                .scatter()
        })
        .collect();
    let plot = Plot {
        title: "final accuracy % vs GBitOps",
        focused: false,
        x: XAxis::measure(x0.max(0.0), x1, "GBitOps"),
        y: YAxis::Auto {
            lo: y0.max(0.0),
            hi: y1.min(100.0),
        },
        series,
        empty: "no point has finished yet",
    };
    charts::draw(f, area, &plot);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_drop_the_seed_and_labels_shorten() {
        assert_eq!(
            group_of("precision.schedule.kind=CR, seed=3"),
            "precision.schedule.kind=CR"
        );
        assert_eq!(group_of("seed=3"), "all");
        assert_eq!(
            group_of("case=Adam, bf16, 2 workers, train.batch_size=16, seed=1"),
            "case=Adam, bf16, 2 workers, train.batch_size=16"
        );
        assert_eq!(
            short_label("precision.schedule.kind=CR, seed=3"),
            "kind=CR, seed=3"
        );
    }
}
