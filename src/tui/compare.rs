//! Compare (A/B): two runs' loss, accuracy and precision overlaid, and a table of headline
//! figures with the difference.
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};
use ratatui::Frame;

use super::action::Action;
use super::app::{App, Component, Reply, Request, RunId, RunSlot};
use super::charts::{self, Plot};
use super::dashboard::status_badge;
use super::run_data::{pct, RunData};
use super::ui::{panel, theme};

pub const PANELS: [&str; 4] = ["loss", "test accuracy", "precision", "table"];

#[derive(Debug, Clone, Default)]
pub struct CompareState {
    pub focus: usize,
    pub zoom: bool,
}

impl Component for CompareState {
    /// The pair shown.
    type Ctx<'a> = Option<(RunId, RunId)>;

    fn handle(&mut self, a: &Action, pair: Self::Ctx<'_>) -> Reply {
        let c = self;
        match a {
            Action::FocusNext => c.focus = (c.focus + 1) % PANELS.len(),
            Action::FocusPrev => c.focus = (c.focus + PANELS.len() - 1) % PANELS.len(),
            Action::Select => c.zoom = !c.zoom,
            Action::Key('w') if pair.is_some() => return Reply::Then(Request::SwapPair),
            Action::Key('w') => {}
            Action::Left | Action::Right => {
                // Open A or B in the Dashboard.
                if let Some((ra, rb)) = pair {
                    let id = if *a == Action::Left { ra } else { rb };
                    return Reply::Then(Request::Open(id));
                }
            }
            _ => return Reply::Ignored,
        }
        Reply::Done
    }
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let pair = app
        .pair
        .and_then(|(a, b)| Some((app.slot(a)?, app.slot(b)?)));
    let Some((a, b)) = pair else {
        let p = Paragraph::new(vec![
            Line::from(""),
            Line::from("No pair to compare."),
            Line::from(""),
            Line::from("Runs (5): space marks two runs, c compares them."),
            Line::from("Setup (1): c stores run A, change the setup, c again launches A and B"),
            Line::from("with the same seed, one after the other or side by side."),
        ])
        .centered()
        .block(panel("Compare", false));
        f.render_widget(p, area);
        return;
    };
    let [head, body] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    let tag = |s: &RunSlot, color, t: char| {
        let (badge, bc) = status_badge(&s.data.status);
        vec![
            Span::styled(format!(" {t} "), Style::default().fg(theme::BG).bg(color)),
            Span::styled(
                format!(" {} ", s.data.label),
                Style::default().add_modifier(Modifier::BOLD),
            ),
            Span::styled(badge.to_lowercase(), Style::default().fg(bc)),
            Span::raw("   "),
        ]
    };
    let mut spans = tag(a, theme::ACCENT, 'A');
    spans.extend(tag(b, theme::ACCENT_B, 'B'));
    f.render_widget(Line::from(spans), head);
    let st = &app.cmp;
    if st.zoom {
        draw_panel(f, body, &a.data, &b.data, st.focus, true);
        return;
    }
    let table_h = 10.min(body.height / 2).max(6);
    let [top, bottom] =
        Layout::vertical([Constraint::Min(0), Constraint::Length(table_h)]).areas(body);
    let t: [Rect; 3] = Layout::horizontal([
        Constraint::Ratio(1, 3),
        Constraint::Ratio(1, 3),
        Constraint::Ratio(1, 3),
    ])
    .areas(top);
    for (i, r) in t.into_iter().enumerate() {
        draw_panel(f, r, &a.data, &b.data, i, st.focus == i);
    }
    draw_panel(f, bottom, &a.data, &b.data, 3, st.focus == 3);
}

fn draw_panel(f: &mut Frame, r: Rect, a: &RunData, b: &RunData, i: usize, focused: bool) {
    let x_end = |d: &RunData| {
        d.total_steps()
            .or(d.last.as_ref().map(|l| l.step))
            .unwrap_or(1) as f64
    };
    let xmax = x_end(a).max(x_end(b)).max(1.0);
    match i {
        0 => {
            let w = r.width as usize * 2;
            let mut data = [
                charts::resample(&a.loss.points(), w),
                charts::resample(&b.loss.points(), w),
            ];
            let (y, y_labels, log) = charts::loss_axis(&mut data);
            let [pa, pb] = &data;
            charts::draw(
                f,
                r,
                &Plot {
                    title: if log {
                        "train loss (log)"
                    } else {
                        "train loss"
                    },
                    focused,
                    x: [0.0, xmax],
                    y,
                    y_labels,
                    x_labels: vec![],
                    series: vec![
                        charts::line("A", pa, theme::ACCENT),
                        charts::line("B", pb, theme::ACCENT_B),
                    ],
                    empty: "waiting for steps",
                },
            );
        }
        1 => {
            let acc = |d: &RunData| -> Vec<(f64, f64)> {
                d.evals
                    .iter()
                    .map(|e| (e.epoch as f64, e.test_acc * 100.0))
                    .collect()
            };
            let (pa, pb) = (acc(a), acc(b));
            let epochs = |d: &RunData| d.started.as_ref().map_or(1, |s| s.epochs);
            let emax = epochs(a).max(epochs(b)).max(1) as f64;
            charts::draw(
                f,
                r,
                &Plot {
                    title: "test accuracy",
                    focused,
                    x: [0.0, emax],
                    y: [0.0, 100.0],
                    y_labels: vec!["0".into(), "50".into(), "100%".into()],
                    x_labels: vec![],
                    series: vec![
                        charts::line("A", &pa, theme::ACCENT),
                        charts::line("B", &pb, theme::ACCENT_B),
                    ],
                    empty: "after the first epoch",
                },
            );
        }
        2 => {
            let w = (r.width as usize * 2).max(16);
            // Actual bits where the runs report them, else their planned curves.
            let bits = |d: &RunData| {
                let q = d.q_fwd.points();
                if q.is_empty() {
                    d.planned_bits(w)
                } else {
                    q
                }
            };
            let (pa, pb) = (bits(a), bits(b));
            let hi = pa.iter().chain(&pb).map(|p| p.1).fold(8.0, f64::max);
            charts::draw(
                f,
                r,
                &Plot {
                    title: "forward bits",
                    focused,
                    x: [0.0, xmax],
                    y: [0.0, hi + 1.0],
                    y_labels: vec!["0".into(), format!("{hi:.0}b")],
                    x_labels: vec![],
                    series: vec![
                        charts::step_line("A", &pa, theme::ACCENT),
                        charts::step_line("B", &pb, theme::ACCENT_B),
                    ],
                    empty: "known once the runs start",
                },
            );
        }
        _ => table(f, r, a, b, focused),
    }
}

/// The comparison rows: label, A, B, Δ.
pub fn rows(a: &RunData, b: &RunData) -> Vec<[String; 4]> {
    let acc_row = |label: &str, fa: Option<f64>, fb: Option<f64>| {
        let d = match (fa, fb) {
            (Some(x), Some(y)) if ((y - x) * 100.0).abs() < 0.005 => "=".into(),
            (Some(x), Some(y)) => format!("{:+.2} pt", (y - x) * 100.0),
            _ => "-".into(),
        };
        [label.to_string(), pct(fa), pct(fb), d]
    };
    let num = |x: Option<f64>, f: &dyn Fn(f64) -> String| x.map(f).unwrap_or_else(|| "-".into());
    let rel = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) if x != 0.0 && ((y / x - 1.0) * 100.0).abs() < 0.05 => "=".into(),
        (Some(x), Some(y)) if x != 0.0 => format!("{:+.1}%", (y / x - 1.0) * 100.0),
        _ => "-".into(),
    };
    let spe = (a.seconds_per_epoch(), b.seconds_per_epoch());
    let gbitops = |d: &RunData| {
        d.summary_number(&["gbitops", "gbitops_total"])
            .or(d.has_gbitops.then_some(d.gbitops))
    };
    let ratio = |d: &RunData| {
        d.summary_number(&["gbitops_ratio_vs_static", "gbitops_ratio"])
            .or_else(|| {
                // The plan's ratio, before the run reports one.
                let s = d.plan.schedule.as_ref()?;
                Some(s.cost_ratio_vs_static(d.total_steps()?))
            })
    };
    let skipped = |d: &RunData| {
        d.summary_number(&["skipped_steps", "skipped"])
            .or((d.skipped > 0).then_some(d.skipped as f64))
    };
    let opt = |d: &RunData| {
        d.summary_number(&["optimizer_state_bytes_per_rank", "optimizer_bytes_per_rank"])
    };
    let (ga, gb) = (gbitops(a), gbitops(b));
    let (ra, rb) = (ratio(a), ratio(b));
    let (ka, kb) = (skipped(a), skipped(b));
    let (oa, ob) = (opt(a), opt(b));
    let epochs = |d: &RunData| {
        format!(
            "{}/{}",
            d.evals.len(),
            d.started.as_ref().map_or(0, |s| s.epochs)
        )
    };
    vec![
        acc_row("final acc", a.final_acc(), b.final_acc()),
        acc_row("best acc", a.best_acc(), b.best_acc()),
        [
            "s / epoch".into(),
            num(spe.0, &|x| format!("{x:.2}")),
            num(spe.1, &|x| format!("{x:.2}")),
            rel(spe.0, spe.1),
        ],
        [
            "GBitOps".into(),
            num(ga, &charts::short),
            num(gb, &charts::short),
            rel(ga, gb),
        ],
        [
            "ratio vs static".into(),
            num(ra, &|x| format!("{x:.3}")),
            num(rb, &|x| format!("{x:.3}")),
            match (ra, rb) {
                (Some(x), Some(y)) if (y - x).abs() < 5e-4 => "=".into(),
                (Some(x), Some(y)) => format!("{:+.3}", y - x),
                _ => "-".into(),
            },
        ],
        [
            "skipped steps".into(),
            num(ka, &|x| format!("{x:.0}")),
            num(kb, &|x| format!("{x:.0}")),
            "".into(),
        ],
        [
            "optim bytes/rank".into(),
            num(oa, &charts::bytes),
            num(ob, &charts::bytes),
            rel(oa, ob),
        ],
        ["epochs".into(), epochs(a), epochs(b), "".into()],
    ]
}

fn table(f: &mut Frame, r: Rect, a: &RunData, b: &RunData, focused: bool) {
    let header = Row::new(vec![
        Cell::from(""),
        Cell::from("A").style(Style::default().fg(theme::ACCENT)),
        Cell::from("B").style(Style::default().fg(theme::ACCENT_B)),
        Cell::from("Δ (B − A)"),
    ])
    .style(Style::default().add_modifier(Modifier::BOLD));
    let body: Vec<Row> = rows(a, b)
        .into_iter()
        .enumerate()
        .map(|(i, [l, x, y, d])| {
            // Accuracy: up is better; time, cost and memory: down is better.
            let higher_better = i < 2;
            let up = d.starts_with('+');
            let down = d.starts_with('-') && d.len() > 1;
            let color = match (up, down) {
                (true, _) if higher_better => theme::GOOD,
                (true, _) => theme::BAD,
                (_, true) if higher_better => theme::BAD,
                (_, true) => theme::GOOD,
                _ => theme::FG,
            };
            Row::new(vec![
                Cell::from(l).style(Style::default().fg(theme::DIM)),
                Cell::from(x),
                Cell::from(y),
                Cell::from(d).style(Style::default().fg(color)),
            ])
        })
        .collect();
    let t = Table::new(
        body,
        [
            Constraint::Length(17),
            Constraint::Min(10),
            Constraint::Min(10),
            Constraint::Min(10),
        ],
    )
    .header(header)
    .block(panel("A / B", focused));
    f.render_widget(t, r);
}
