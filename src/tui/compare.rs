//! Compare: 2–8 runs' loss, accuracy and precision overlaid (each run a colour and a letter,
//! A–H, drawn along its curves), and a table of headline figures against the first run (the
//! baseline) with the config fields that differ between them.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};
use ratatui::Frame;

use super::action::Action;
use super::app::{App, Component, Reply, Request, RunId};
use super::charts::{self, ChartView, Decor, Plot};
use super::dashboard::status_badge;
use super::run_data::{pct, RunData};
use super::setup::clip;
use super::ui::{panel, theme};
use crate::telemetry::event::EvalEvent;

pub const PANELS: [&str; 4] = ["loss", "test accuracy", "precision", "table"];
/// Each compared run's letter (also its glyph on the charts) and colour, in order.
pub const LETTERS: [char; 8] = ['A', 'B', 'C', 'D', 'E', 'F', 'G', 'H'];
pub const COLORS: [Color; 8] = [
    Color::Cyan,
    Color::Magenta,
    Color::Yellow,
    Color::Green,
    Color::Blue,
    Color::Red,
    Color::LightCyan,
    Color::LightMagenta,
];

#[derive(Debug, Clone, Default)]
pub struct CompareState {
    pub focus: usize,
    pub zoom: bool,
    /// The highlighted run (`←→`): `o` opens it, `w` makes it the baseline.
    pub sel: usize,
    /// The charts' y scale, x window and cursor (the Dashboard's keys).
    pub chart: ChartView,
}

impl Component for CompareState {
    /// The compared runs.
    type Ctx<'a> = &'a [RunId];

    fn handle(&mut self, a: &Action, ids: Self::Ctx<'_>) -> Reply {
        let c = self;
        let n = ids.len();
        if !(c.zoom && *a == Action::Back) && c.chart.handle(a) {
            if *a == Action::Key('y') {
                return Reply::Then(Request::Say(super::dashboard::loss_y_note(&c.chart), false));
            }
            return Reply::Done;
        }
        match a {
            Action::Wheel(i, d) if *i < 3 => c.chart.wheel(*d),
            Action::FocusNext => c.focus = (c.focus + 1) % PANELS.len(),
            Action::FocusPrev => c.focus = (c.focus + PANELS.len() - 1) % PANELS.len(),
            Action::Select => c.zoom = !c.zoom,
            Action::Back if c.zoom => c.zoom = false,
            Action::Pick(i, _) if *i < PANELS.len() => c.focus = *i,
            Action::Left | Action::Right => {
                if n > 0 {
                    let step = if *a == Action::Right { 1 } else { n - 1 };
                    c.sel = (c.sel.min(n - 1) + step) % n;
                }
            }
            Action::Key('o') => {
                if let Some(id) = ids.get(c.sel.min(n.saturating_sub(1))) {
                    return Reply::Then(Request::Open(*id));
                }
            }
            Action::Key('w') if n >= 2 => return Reply::Then(Request::Baseline(c.sel.min(n - 1))),
            Action::Key('w') => {}
            Action::Key('m') => return Reply::Then(Request::Smoothing),
            _ => return Reply::Ignored,
        }
        Reply::Done
    }
}

/// The panels' places (all four, or the zoomed one) below the one-line header; the table
/// gets the rows it needs, up to half the height.
pub fn panel_rects(area: Rect, app: &App) -> Vec<(usize, Rect)> {
    let [_, body] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    if app.cmp.zoom {
        return vec![(app.cmp.focus, body)];
    }
    let runs: Vec<&RunData> = app.compared_slots().iter().map(|s| &s.data).collect();
    let want = table_rows(&runs, table_step(&runs, &app.cmp.chart), body.width) as u16 + 2;
    let table_h = want.min(body.height / 2).max(6);
    let [top, bottom] =
        Layout::vertical([Constraint::Min(0), Constraint::Length(table_h)]).areas(body);
    let t: [Rect; 3] = Layout::horizontal([
        Constraint::Ratio(1, 3),
        Constraint::Ratio(1, 3),
        Constraint::Ratio(1, 3),
    ])
    .areas(top);
    let mut v: Vec<(usize, Rect)> = t.into_iter().enumerate().collect();
    v.push((3, bottom));
    v
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let slots = app.compared_slots();
    if slots.len() < 2 {
        let p = Paragraph::new(vec![
            Line::from(""),
            Line::from("Nothing to compare."),
            Line::from(""),
            Line::from("Runs (5): space marks 2–8 runs, c compares them."),
            Line::from("Setup (1): c stores run A, change the setup, c again launches A and B"),
            Line::from("with the same seed, one after the other or side by side."),
        ])
        .centered()
        .block(panel("Compare", false));
        f.render_widget(p, area);
        return;
    }
    let slots = &slots[..slots.len().min(LETTERS.len())];
    let [head, _] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    let st = &app.cmp;
    let sel = st.sel.min(slots.len() - 1);
    let mut spans = Vec::new();
    let name_w = (head.width as usize / slots.len())
        .saturating_sub(14)
        .max(6);
    for (i, s) in slots.iter().enumerate() {
        let (badge, bc) = status_badge(&s.data.status);
        let mut name = Style::default().add_modifier(Modifier::BOLD);
        if i == sel {
            name = name.add_modifier(Modifier::UNDERLINED);
        }
        spans.push(Span::styled(
            format!(" {} ", LETTERS[i]),
            Style::default().fg(theme::BG).bg(COLORS[i]),
        ));
        // Without its time stamp when the whole name does not fit.
        let label = if s.data.label.chars().count() > name_w {
            super::runs::short_name(&s.data.label)
        } else {
            &s.data.label
        };
        spans.push(Span::styled(format!(" {} ", clip(label, name_w)), name));
        spans.push(Span::styled(badge.to_lowercase(), Style::default().fg(bc)));
        spans.push(Span::raw("  "));
    }
    let data: Vec<&RunData> = slots.iter().map(|s| &s.data).collect();
    // With the cursor shown, the header reads each run's loss (and accuracy) at its step.
    let spans = match readout(&data, &st.chart, app.smoothing_weight()) {
        Some(r) => r,
        None => spans,
    };
    f.render_widget(Line::from(spans), head);
    for (i, r) in panel_rects(area, app) {
        draw_panel(f, r, app, &data, sel, i, st.zoom || st.focus == i);
    }
}

fn x_end(d: &RunData) -> f64 {
    d.total_steps()
        .or(d.last.as_ref().map(|l| l.step))
        .unwrap_or(1) as f64
}

/// The cursor's step, then each run's letter with its (smoothed) loss at that step and its
/// last test accuracy at or before it. None while the cursor is hidden.
pub fn readout(runs: &[&RunData], view: &ChartView, smooth: f64) -> Option<Vec<Span<'static>>> {
    let xmax = runs.iter().map(|d| x_end(d)).fold(1.0, f64::max);
    let x = view.cursor_at(xmax)?;
    let mut spans = vec![
        Span::styled(" ┴ ", Style::default().fg(theme::ACCENT)),
        Span::raw(format!("step {x:.0} ")),
    ];
    for (k, d) in runs.iter().enumerate() {
        let loss = charts::nearest(&charts::ema(&d.loss.points(), smooth), x)
            .map_or("-".into(), |p| charts::short(p.1));
        let acc = d
            .evals
            .iter()
            .rev()
            .find(|e| e.step as f64 <= x)
            .map_or("-".into(), |e| pct(Some(e.test_acc)));
        spans.push(Span::styled(
            format!(" {} ", LETTERS[k]),
            Style::default().fg(theme::BG).bg(COLORS[k]),
        ));
        spans.push(Span::raw(format!(" {loss} {acc} ")));
    }
    Some(spans)
}

fn draw_panel(
    f: &mut Frame,
    r: Rect,
    app: &App,
    runs: &[&RunData],
    sel: usize,
    i: usize,
    focused: bool,
) {
    let xmax = runs.iter().map(|d| x_end(d)).fold(1.0, f64::max);
    let name = |k: usize| &LETTERS_STR[k];
    let view = &app.cmp.chart;
    let (a, b) = view.window(xmax);
    let cursor = Decor {
        cursor: view.cursor_at(xmax),
        ..Decor::default()
    };
    match i {
        0 => {
            let w = r.width as usize * 2;
            let smooth = app.smoothing_weight();
            // Each run smoothed; the highlighted one's raw curve faint underneath.
            let mut data: Vec<Vec<(f64, f64)>> = runs
                .iter()
                .map(|d| {
                    let s = charts::ema(&d.loss.points(), smooth);
                    charts::resample(&charts::in_window(&s, a, b), w)
                })
                .collect();
            if smooth > 0.0 {
                let raw = charts::in_window(&runs[sel].loss.points(), a, b);
                data.push(charts::resample(&raw, w));
            }
            let (y, log) = charts::loss_axis_as(&mut data, view.loss_y);
            let mut series: Vec<charts::SeriesSpec> = data
                .iter()
                .take(runs.len())
                .enumerate()
                .map(|(k, pts)| charts::line(name(k), pts, COLORS[k]).glyph(LETTERS[k]))
                .collect();
            if smooth > 0.0 {
                if let Some(raw) = data.last() {
                    series.insert(0, charts::line("raw", raw, COLORS[sel]).faint());
                }
            }
            let mut title = String::from("train loss");
            if log {
                title.push_str(" log");
            }
            if view.loss_y == charts::LossY::Linear {
                title.push_str(" lin");
            }
            title.push_str(&view.title_note());
            if smooth > 0.0 && r.width >= 40 {
                title.push_str(&format!(" · ema {smooth}"));
            }
            charts::draw_decorated(
                f,
                r,
                &Plot {
                    title: &title,
                    focused,
                    x: charts::XAxis::steps(xmax).in_view(view),
                    y,
                    series,
                    empty: "waiting for steps",
                },
                &cursor,
            );
        }
        1 => {
            let acc: Vec<Vec<(f64, f64)>> = runs
                .iter()
                .map(|d| {
                    d.evals
                        .iter()
                        .map(|e| (e.epoch as f64, e.test_acc * 100.0))
                        .collect()
                })
                .collect();
            let emax = runs
                .iter()
                .map(|d| d.started.as_ref().map_or(1, |s| s.epochs))
                .max()
                .unwrap_or(1)
                .max(1) as f64;
            let series = acc
                .iter()
                .enumerate()
                .map(|(k, pts)| charts::line(name(k), pts, COLORS[k]).glyph(LETTERS[k]))
                .collect();
            let (ea, eb) = view.window(emax);
            let shown: Vec<f64> = acc
                .iter()
                .flat_map(|pts| charts::in_window(pts, ea, eb))
                .map(|p| p.1)
                .collect();
            let cursor = Decor {
                cursor: view.cursor_at(emax),
                ..Decor::default()
            };
            charts::draw_decorated(
                f,
                r,
                &Plot {
                    title: "test accuracy %",
                    focused,
                    x: charts::XAxis::epochs(emax).in_view(view),
                    y: charts::acc_axis(shown),
                    series,
                    empty: "after the first epoch",
                },
                &cursor,
            );
        }
        2 => {
            let w = (r.width as usize * 2).max(16);
            // Actual bits where the runs report them, else their planned curves.
            let bits: Vec<Vec<(f64, f64)>> = runs
                .iter()
                .map(|d| {
                    let q = d.q_fwd.points();
                    if q.is_empty() {
                        d.planned_bits(w)
                    } else {
                        q
                    }
                })
                .collect();
            let levels = bits.iter().flatten().map(|p| p.1.round()).collect();
            let series = bits
                .iter()
                .enumerate()
                .map(|(k, pts)| charts::step_line(name(k), pts, COLORS[k]).glyph(LETTERS[k]))
                .collect();
            charts::draw_decorated(
                f,
                r,
                &Plot {
                    title: "forward bits",
                    focused,
                    x: charts::XAxis::steps(xmax).in_view(view),
                    y: charts::YAxis::Levels(levels),
                    series,
                    empty: "known once the runs start",
                },
                &cursor,
            );
        }
        _ => table(f, r, runs, table_step(runs, view), focused),
    }
}

const LETTERS_STR: [&str; 8] = ["A", "B", "C", "D", "E", "F", "G", "H"];

/// One row of the table: a label, each run's value and its difference from the baseline
/// (empty for the baseline), and which way is better.
#[derive(Debug, Clone, PartialEq)]
pub struct TableRow {
    pub label: String,
    pub values: Vec<String>,
    pub deltas: Vec<String>,
    /// Some(true): higher is better; Some(false): lower is better; None: neither.
    pub better: Option<bool>,
}

/// The step the table reads every run at (`rows_at`): when any compared run is live, the
/// cursor's step while the cursor is shown, else the smallest last step among the live runs
/// (0 while one has none yet), so runs at different progress are compared at the same step;
/// finished runs are read there too. None when no run is live: each run's own figures.
pub fn common_step(runs: &[&RunData], cursor: Option<f64>) -> Option<u64> {
    if !runs.iter().any(|d| d.is_live()) {
        return None;
    }
    if let Some(x) = cursor {
        return Some(x.max(0.0).round() as u64);
    }
    runs.iter()
        .filter(|d| d.is_live())
        .map(|d| d.last.as_ref().map_or(0, |l| l.step))
        .min()
}

/// The step the Compare view's table reads the runs at (`common_step` with its cursor).
pub fn table_step(runs: &[&RunData], view: &ChartView) -> Option<u64> {
    let xmax = runs.iter().map(|d| x_end(d)).fold(1.0, f64::max);
    common_step(runs, view.cursor_at(xmax))
}

/// The figures compared, each run's own (the end of a finished run): final and best
/// accuracy, s/epoch, GBitOps and the ratio vs static, skipped steps, optimizer bytes per
/// rank, epochs; Δ against the first run.
pub fn rows(runs: &[&RunData]) -> Vec<TableRow> {
    rows_at(runs, None)
}

/// A run's planned effective-BitOps ratio vs static over its first `n` steps.
fn planned_ratio(d: &RunData, n: u64) -> Option<f64> {
    let s = d.plan.schedule.as_ref()?;
    let total = d.total_steps()?;
    let n = n.min(total);
    if n == 0 {
        return None;
    }
    let qb = f64::from(s.q_bwd());
    let cost = |q: u32| f64::from(q) * f64::from(q) + 2.0 * f64::from(q) * qb;
    let sum: f64 = (0..n).map(|t| cost(s.q_fwd_at(t, total))).sum();
    Some(sum / (n as f64 * cost(s.q_max)))
}

/// `rows` read at step `at` (`common_step`): the train loss, the test accuracy and best
/// accuracy of the evaluations up to it, their mean s/epoch, GBitOps and skipped steps so
/// far and the planned ratio over those steps. `None`: each run's own figures.
pub fn rows_at(runs: &[&RunData], at: Option<u64>) -> Vec<TableRow> {
    let acc_d = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) if ((y - x) * 100.0).abs() < 0.005 => "=".into(),
        (Some(x), Some(y)) => format!("{:+.2} pt", (y - x) * 100.0),
        _ => "-".into(),
    };
    let rel = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) if x != 0.0 && ((y / x - 1.0) * 100.0).abs() < 0.05 => "=".into(),
        (Some(x), Some(y)) if x != 0.0 => format!("{:+.1}%", (y / x - 1.0) * 100.0),
        _ => "-".into(),
    };
    let abs3 = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) if (y - x).abs() < 5e-4 => "=".into(),
        (Some(x), Some(y)) => format!("{:+.3}", y - x),
        _ => "-".into(),
    };
    let none = |_: Option<f64>, _: Option<f64>| String::new();
    let num = |x: Option<f64>, f: &dyn Fn(f64) -> String| x.map(f).unwrap_or_else(|| "-".into());
    // The evaluations a row may use: those up to the step, or all of them.
    let evals = |d: &RunData| -> Vec<EvalEvent> {
        d.evals
            .iter()
            .filter(|e| at.is_none_or(|n| e.step <= n))
            .cloned()
            .collect()
    };
    let loss = |d: &RunData| at.and_then(|n| d.at_step(n)).map(|p| p.loss);
    let final_acc = |d: &RunData| match at {
        Some(_) => evals(d).last().map(|e| e.test_acc),
        None => d.final_acc(),
    };
    let best_acc = |d: &RunData| match at {
        Some(_) => evals(d).iter().map(|e| e.test_acc).reduce(f64::max),
        None => d.best_acc(),
    };
    let per_epoch = |d: &RunData| match at {
        Some(_) => {
            let v = evals(d);
            (!v.is_empty()).then(|| v.iter().map(|e| e.epoch_seconds).sum::<f64>() / v.len() as f64)
        }
        None => d.seconds_per_epoch(),
    };
    let gbitops = |d: &RunData| match at {
        Some(n) if d.has_gbitops => d.at_step(n).map(|p| p.gbitops),
        Some(_) => None,
        None => d
            .summary_number(&["gbitops", "gbitops_total"])
            .or(d.has_gbitops.then_some(d.gbitops)),
    };
    let ratio = |d: &RunData| match at {
        Some(n) => planned_ratio(d, n),
        None => d
            .summary_number(&["gbitops_ratio_vs_static", "gbitops_ratio"])
            .or_else(|| {
                // The plan's ratio, before the run reports one.
                let s = d.plan.schedule.as_ref()?;
                Some(s.cost_ratio_vs_static(d.total_steps()?))
            }),
    };
    let skipped = |d: &RunData| match at {
        Some(n) => d.at_step(n).map(|p| p.skipped as f64),
        None => d
            .summary_number(&["skipped_steps", "skipped"])
            .or((d.skipped > 0).then_some(d.skipped as f64)),
    };
    let opt = |d: &RunData| {
        d.summary_number(&["optimizer_state_bytes_per_rank", "optimizer_bytes_per_rank"])
    };
    type Get<'f> = &'f dyn Fn(&RunData) -> Option<f64>;
    type Show<'f> = &'f dyn Fn(f64) -> String;
    type Diff<'f> = &'f dyn Fn(Option<f64>, Option<f64>) -> String;
    let row = |label: &str, get: Get, show: Show, diff: Diff, better: Option<bool>| {
        let xs: Vec<Option<f64>> = runs.iter().map(|d| get(d)).collect();
        TableRow {
            label: label.into(),
            values: xs.iter().map(|x| num(*x, show)).collect(),
            deltas: xs
                .iter()
                .enumerate()
                .map(|(i, x)| {
                    if i == 0 {
                        String::new()
                    } else {
                        diff(xs[0], *x)
                    }
                })
                .collect(),
            better,
        }
    };
    let acc_label = if at.is_some() {
        "test acc"
    } else {
        "final acc"
    };
    let mut out = Vec::new();
    if at.is_some() {
        // Live runs may have no evaluation yet: the loss at the step is what they share.
        out.push(row(
            "train loss",
            &loss,
            &|x| format!("{x:.4}"),
            &abs3,
            Some(false),
        ));
    }
    out.extend([
        row(acc_label, &final_acc, &|x| pct(Some(x)), &acc_d, Some(true)),
        row("best acc", &best_acc, &|x| pct(Some(x)), &acc_d, Some(true)),
        row(
            "s / epoch",
            &per_epoch,
            &|x| format!("{x:.2}"),
            &rel,
            Some(false),
        ),
        row("GBitOps", &gbitops, &charts::short, &rel, Some(false)),
        row(
            "ratio vs static",
            &ratio,
            &|x| format!("{x:.3}"),
            &abs3,
            Some(false),
        ),
        row(
            "skipped steps",
            &skipped,
            &|x| format!("{x:.0}"),
            &none,
            None,
        ),
        row("optim bytes/rank", &opt, &charts::bytes, &rel, Some(false)),
    ]);
    out.push(TableRow {
        label: "epochs".into(),
        values: runs
            .iter()
            .map(|d| {
                format!(
                    "{}/{}",
                    evals(d).len(),
                    d.started.as_ref().map_or(0, |s| s.epochs)
                )
            })
            .collect(),
        deltas: vec![String::new(); runs.len()],
        better: None,
    });
    out
}

/// The config fields whose values differ between the runs (a field one run lacks counts as
/// different), with each run's value. The run's name is left out: the header shows it.
pub fn config_diff(runs: &[&RunData]) -> Vec<(String, Vec<String>)> {
    let flat: Vec<_> = runs.iter().map(|d| &d.config).collect();
    crate::config::diff::differing(&flat)
        .into_iter()
        .map(|d| {
            let vals = d
                .values
                .into_iter()
                .map(|v| v.unwrap_or_else(|| "-".into()))
                .collect();
            (d.key, vals)
        })
        .collect()
}

/// The figures and the config diff side by side (on a wide screen, for up to four runs), or
/// one under the other.
fn side_by_side(n: usize, width: u16) -> bool {
    width >= 120 && n <= 4
}

/// Rows the table needs inside its border.
pub fn table_rows(runs: &[&RunData], at: Option<u64>, width: u16) -> usize {
    let figures = 1 + rows_at(runs, at).len();
    let diff = config_diff(runs).len();
    if side_by_side(runs.len(), width) {
        figures.max(1 + diff)
    } else {
        figures + 1 + diff
    }
}

fn table(f: &mut Frame, r: Rect, runs: &[&RunData], at: Option<u64>, focused: bool) {
    let n = runs.len();
    let pair = n == 2;
    let split = side_by_side(n, r.width);
    let (r, diff_area) = if split {
        let [a, b] = Layout::horizontal([Constraint::Min(0), Constraint::Percentage(40)]).areas(r);
        (a, Some(b))
    } else {
        (r, None)
    };
    let mut header = vec![Cell::from("")];
    for k in 0..n {
        header.push(Cell::from(LETTERS_STR[k]).style(Style::default().fg(COLORS[k])));
    }
    if pair {
        header.push(Cell::from("Δ (B − A)"));
    }
    let header = Row::new(header).style(Style::default().add_modifier(Modifier::BOLD));
    let label_w = 17u16;
    let delta_color = |d: &str, better: Option<bool>| {
        let up = d.starts_with('+');
        let down = d.starts_with('-') && d.len() > 1;
        match (better, up, down) {
            (Some(true), true, _) | (Some(false), _, true) => theme::GOOD,
            (Some(true), _, true) | (Some(false), true, _) => theme::BAD,
            _ => theme::FG,
        }
    };
    let mut body: Vec<Row> = Vec::new();
    for tr in rows_at(runs, at) {
        let mut cells = vec![Cell::from(tr.label.clone())];
        for (k, v) in tr.values.iter().enumerate() {
            let d = &tr.deltas[k];
            if pair || d.is_empty() || d == "-" {
                cells.push(Cell::from(v.clone()));
            } else {
                cells.push(Cell::from(Line::from(vec![
                    Span::raw(format!("{v} ")),
                    Span::styled(d.clone(), Style::default().fg(delta_color(d, tr.better))),
                ])));
            }
        }
        if pair {
            let d = tr.deltas[1].clone();
            let c = delta_color(&d, tr.better);
            cells.push(Cell::from(d).style(Style::default().fg(c)));
        }
        body.push(Row::new(cells));
    }
    let diff = config_diff(runs);
    let same = diff.is_empty() && runs.iter().all(|d| !d.config.is_empty());
    // The dotted keys are long (precision.schedule.delay_steps): as wide as the panel
    // leaves room for, beside a column per run.
    let room = diff_area.map_or(r.width, |a| a.width) as usize;
    let key_max = room.saturating_sub(2 + 10 * n).clamp(label_w as usize, 40);
    let key_w = diff
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(label_w as usize, key_max) as u16;
    let diff_rows: Vec<Row> = diff
        .iter()
        .map(|(k, vals)| {
            let mut cells = vec![Cell::from(clip(k, key_w as usize))];
            cells.extend(vals.iter().cloned().map(Cell::from));
            Row::new(cells)
        })
        .collect();
    if let Some(area) = diff_area {
        let mut header = vec![Cell::from("")];
        header.extend(
            (0..n).map(|k| Cell::from(LETTERS_STR[k]).style(Style::default().fg(COLORS[k]))),
        );
        let mut widths = vec![Constraint::Length(key_w)];
        widths.extend((0..n).map(|_| Constraint::Ratio(1, n as u32)));
        let mut rows = diff_rows;
        if same {
            rows.push(Row::new(vec![Cell::from("the same, seed included")]));
        }
        let t = Table::new(rows, widths)
            .header(Row::new(header).style(Style::default().add_modifier(Modifier::BOLD)))
            .block(panel("config that differs", focused));
        f.render_widget(t, area);
    } else if !diff_rows.is_empty() {
        // Inside the border, under the header.
        let room = r.height.saturating_sub(3) as usize;
        if body.len() + 1 + diff_rows.len() > room && room > 1 {
            // No room for the diff's rows (80×24): one line names what differs, in place
            // of the figures that do not fit.
            body.truncate(room - 1);
            body.push(Row::new(vec![Cell::from("")]));
            // The figures' labels are short: their column need not fit the keys.
            let t = Table::new(body, table_widths(true, label_w, key_w, n, pair))
                .header(header)
                .block(panel(&table_title(pair, at), focused));
            f.render_widget(t, r);
            let keys: Vec<&str> = diff.iter().map(|(k, _)| short_key(k)).collect();
            let last = Rect {
                x: r.x + 1,
                y: r.y + r.height.saturating_sub(2),
                width: r.width.saturating_sub(2),
                height: 1,
            };
            let line = clip(
                &format!("config differs: {}", keys.join(", ")),
                last.width as usize,
            );
            f.render_widget(Paragraph::new(line), last);
            return;
        }
        body.push(
            Row::new(vec![Cell::from("config differs")])
                .style(Style::default().add_modifier(Modifier::BOLD)),
        );
        body.extend(diff_rows);
    } else if same {
        body.push(Row::new(vec![
            Cell::from("config"),
            Cell::from("the same (seed included)"),
        ]));
    }
    let t = Table::new(body, table_widths(split, label_w, key_w, n, pair))
        .header(header)
        .block(panel(&table_title(pair, at), focused));
    f.render_widget(t, r);
}

/// A dotted config key without its table when it has one below it: `schedule.q_min` for
/// `precision.schedule.q_min`.
fn short_key(k: &str) -> &str {
    match k.split_once('.') {
        Some((_, rest)) if rest.contains('.') => rest,
        _ => k,
    }
}

fn table_widths(split: bool, label_w: u16, key_w: u16, n: usize, pair: bool) -> Vec<Constraint> {
    let cols = n + usize::from(pair);
    let first_w = if split { label_w } else { key_w };
    let mut widths = vec![Constraint::Length(first_w)];
    widths.extend((0..cols).map(|_| Constraint::Ratio(1, cols as u32)));
    widths
}

fn table_title(pair: bool, at: Option<u64>) -> String {
    let mut title = if pair {
        "A / B".to_string()
    } else {
        "runs against A".to_string()
    };
    if let Some(n) = at {
        // A live run is compared where all of them have been (or at the cursor).
        title.push_str(&format!(" · at step {n}"));
    }
    title
}
