//! Dashboard: one run live or replayed — progress, loss, accuracy, precision over time, devices,
//! step-time breakdown, log, and per-class accuracy at the end.
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{LineGauge, Paragraph};
use ratatui::Frame;

use super::action::Action;
use super::app::{App, Component, Control, Reply, Request, RunId, RunSlot};
use super::charts::{self, ChartView, Decor, Mark, MarkAt, Plot};
use super::run_data::{pct, LogKind, RunData, RunStatus};
use super::setup::clip;
use super::ui::{panel, theme};

pub const PANELS: [&str; 6] = [
    "loss",
    "test accuracy",
    "precision",
    "devices",
    "step time",
    "log",
];
pub const LOG: usize = 5;

#[derive(Debug, Clone, Default)]
pub struct DashState {
    pub focus: usize,
    pub zoom: bool,
    /// Lines scrolled back from the newest log line.
    pub log_scroll: usize,
    /// The charts' y scale, x window and cursor (`y`, `+`/`-`, `[`/`]`, `0`, `i`).
    pub chart: ChartView,
}

/// The Dashboard's charts, by panel index (the wheel zooms them).
pub const CHARTS: [usize; 3] = [0, 1, 2];

impl Component for DashState {
    /// The open runs and the one shown.
    type Ctx<'a> = (&'a [RunSlot], Option<RunId>);

    fn handle(&mut self, a: &Action, (runs, current): Self::Ctx<'_>) -> Reply {
        let d = self;
        // An enlarged panel goes back first; then the chart keys (Esc hides the cursor, ←→
        // move it while it is shown).
        if !(d.zoom && *a == Action::Back) && d.chart.handle(a) {
            if *a == Action::Key('y') {
                return Reply::Then(Request::Say(loss_y_note(&d.chart), false));
            }
            return Reply::Done;
        }
        match a {
            Action::Wheel(i, n) if CHARTS.contains(i) => d.chart.wheel(*n),
            Action::FocusNext => d.focus = (d.focus + 1) % PANELS.len(),
            Action::FocusPrev => d.focus = (d.focus + PANELS.len() - 1) % PANELS.len(),
            Action::Select => d.zoom = !d.zoom,
            Action::Back if d.zoom => d.zoom = false,
            Action::Pick(i, _) if *i < PANELS.len() => d.focus = *i,
            // The wheel scrolls the log wherever the focus is (down: towards the newest line).
            Action::Wheel(LOG, n) => {
                d.log_scroll = (d.log_scroll as i64 - i64::from(*n)).max(0) as usize
            }
            Action::Key('m') => return Reply::Then(Request::Smoothing),
            Action::Up if d.focus == LOG => d.log_scroll += 1,
            Action::Down if d.focus == LOG => d.log_scroll = d.log_scroll.saturating_sub(1),
            Action::PageUp if d.focus == LOG => d.log_scroll += 10,
            Action::PageDown if d.focus == LOG => d.log_scroll = d.log_scroll.saturating_sub(10),
            Action::Left | Action::Right => {
                // Several runs open (an A/B pair, runs opened from history): step through them.
                let n = runs.len();
                if n == 0 {
                    return Reply::Done;
                }
                let i = current
                    .and_then(|c| runs.iter().position(|s| s.id == c))
                    .unwrap_or(0);
                let j = if *a == Action::Right {
                    (i + 1) % n
                } else {
                    (i + n - 1) % n
                };
                d.log_scroll = 0;
                return Reply::Then(Request::Current(runs[j].id));
            }
            _ => return Reply::Ignored,
        }
        Reply::Done
    }
}

/// What the status line says when `y` changes the loss chart's scale.
pub fn loss_y_note(view: &ChartView) -> String {
    format!("loss y axis: {} (y: auto, log, linear)", view.loss_y.name())
}

/// Where each panel is drawn (all six, or the zoomed one), for drawing and the mouse.
pub fn panel_rects(area: Rect, zoom: bool, focus: usize) -> Vec<(usize, Rect)> {
    let [_, body] = Layout::vertical([Constraint::Length(2), Constraint::Min(0)]).areas(area);
    if zoom {
        return vec![(focus, body)];
    }
    let [top, bottom] =
        Layout::vertical([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(body);
    let thirds = [
        Constraint::Ratio(1, 3),
        Constraint::Ratio(1, 3),
        Constraint::Ratio(1, 3),
    ];
    let t: [Rect; 3] = Layout::horizontal(thirds).areas(top);
    let b: [Rect; 3] = Layout::horizontal(thirds).areas(bottom);
    t.into_iter().chain(b).enumerate().collect()
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let Some(slot) = app.current_slot() else {
        let p = Paragraph::new(vec![
            Line::from(""),
            Line::from("No run open."),
            Line::from(""),
            Line::from(
                "Press 1 for Setup and s to start one, or 5 for Runs to open a past or live run.",
            ),
        ])
        .centered()
        .block(panel("Dashboard", false));
        f.render_widget(p, area);
        return;
    };
    let [head, _] = Layout::vertical([Constraint::Length(2), Constraint::Min(0)]).areas(area);
    draw_header(f, head, app, slot);
    let st = &app.dash;
    for (i, r) in panel_rects(area, st.zoom, st.focus) {
        draw_panel(f, r, app, slot, i, st.zoom || st.focus == i);
    }
}

fn draw_header(f: &mut Frame, area: Rect, app: &App, slot: &RunSlot) {
    let d = &slot.data;
    let [l1, l2] = Layout::vertical([Constraint::Length(1), Constraint::Length(1)]).areas(area);
    let (badge, color) = status_badge(&d.status);
    let mut spans = vec![
        Span::styled(
            format!(" {badge} "),
            Style::default()
                .fg(theme::BG)
                .bg(color)
                .add_modifier(Modifier::BOLD),
        ),
        Span::styled(
            format!(" {}", slot.title()),
            Style::default().add_modifier(Modifier::BOLD),
        ),
    ];
    if let Some(s) = &d.started {
        spans.push(Span::styled(
            format!(
                " · {} {} params · {} · {} ×{}t",
                s.model,
                charts::short(s.params as f64),
                s.dataset,
                s.devices.join(","),
                s.threads
            ),
            theme::muted(),
        ));
    }
    match &slot.control {
        Control::Watching { holder, .. } => spans.push(Span::styled(
            format!(" · watching (pid {holder} drives)"),
            Style::default().fg(theme::WARN),
        )),
        Control::Driven { child: false, .. } => {
            spans.push(Span::styled(" · attached", theme::muted()))
        }
        _ => {}
    }
    if app.runs.len() > 1 {
        let i = app.runs.iter().position(|s| s.id == slot.id).unwrap_or(0);
        spans.push(Span::styled(
            format!("  ◂ {}/{} ▸", i + 1, app.runs.len()),
            theme::muted(),
        ));
    }
    f.render_widget(Line::from(spans), l1);

    if let Some(text) = readout(d, &app.dash.chart, app.smoothing_weight()) {
        let line = Line::from(vec![
            Span::styled(" ┴ ", Style::default().fg(theme::ACCENT)),
            Span::raw(clip(&text, l2.width.saturating_sub(3) as usize)),
        ]);
        f.render_widget(line, l2);
        return;
    }
    let total = d.total_steps().unwrap_or(0);
    let done = d.last.as_ref().map_or(0, |l| l.step);
    let ratio = if total > 0 {
        (done as f64 / total as f64).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let epochs = d.started.as_ref().map_or(0, |s| s.epochs);
    let epoch = d
        .last
        .as_ref()
        .map_or(0, |l| l.epoch)
        .max(d.evals.len() as u64)
        .min(epochs.max(1));
    let eta = match (&d.status, d.eta_seconds()) {
        (RunStatus::Training, Some(e)) => format!(" · ETA {}", charts::duration(e)),
        _ => String::new(),
    };
    let rate = d
        .rate_ema
        .map(|r| format!(" · {} img/s", charts::short(r)))
        .unwrap_or_default();
    let label = format!(
        "epoch {epoch}/{epochs} · step {done}/{total} {:.0}%{eta}{rate}",
        ratio * 100.0
    );
    // The text gets the room it needs; the gauge takes the rest.
    let text_w = (label.chars().count() as u16 + 2).min(l2.width.saturating_sub(8));
    let [g, txt] = Layout::horizontal([Constraint::Min(6), Constraint::Length(text_w)]).areas(l2);
    f.render_widget(
        LineGauge::default()
            .ratio(ratio)
            .filled_style(Style::default().fg(theme::ACCENT))
            .unfilled_style(Style::default().fg(theme::DIM))
            .label(""),
        g,
    );
    f.render_widget(Line::from(format!(" {label}")), txt);
}

pub fn status_badge(s: &RunStatus) -> (String, ratatui::style::Color) {
    let c = match s {
        RunStatus::Training | RunStatus::Starting => theme::GOOD,
        RunStatus::Paused | RunStatus::Stopping | RunStatus::Queued => theme::WARN,
        RunStatus::Ended(crate::telemetry::RunStatus::Finished) => theme::ACCENT,
        RunStatus::Ended(_) | RunStatus::Incomplete => theme::WARN,
        RunStatus::Failed(_) => theme::BAD,
    };
    (s.label().to_uppercase(), c)
}

fn draw_panel(f: &mut Frame, r: Rect, app: &App, slot: &RunSlot, i: usize, focused: bool) {
    let d = &slot.data;
    let view = &app.dash.chart;
    match i {
        0 => loss_chart(f, r, d, app.smoothing_weight(), view, focused),
        1 => acc_chart(f, r, d, view, focused),
        2 => precision_chart(f, r, d, view, focused),
        3 if d.per_class().is_empty() => devices(f, r, app, slot, focused),
        3 => per_class(f, r, d, focused),
        4 => step_time(f, r, d, focused),
        _ => log(f, r, d, app.dash.log_scroll, focused),
    }
}

fn x_end(d: &RunData) -> f64 {
    d.total_steps()
        .or(d.last.as_ref().map(|l| l.step))
        .unwrap_or(1)
        .max(1) as f64
}

/// The values at the cursor, on one line: the step nearest to it, its epoch, the raw and
/// smoothed loss, the lr, the bit widths and loss scale in force, whether it was skipped, and
/// the last evaluation at or before it. None while the cursor is hidden.
pub fn readout(d: &RunData, view: &ChartView, smooth: f64) -> Option<String> {
    let x = view.cursor_at(x_end(d))?;
    let raw = d.loss.points();
    let Some((sx, loss)) = charts::nearest(&raw, x) else {
        return Some(format!("step {x:.0}: no steps recorded yet"));
    };
    let step = sx.round().max(0.0);
    let mut parts = vec![format!("step {step:.0}")];
    if let Some(spe) = d
        .started
        .as_ref()
        .map(|s| s.steps_per_epoch)
        .filter(|n| *n > 0)
    {
        let epoch = (step as u64).saturating_sub(1) / spe + 1;
        parts.push(format!("epoch {epoch}"));
    }
    let mut l = format!("loss {}", charts::short(loss));
    if smooth > 0.0 {
        if let Some((_, e)) = charts::nearest(&charts::ema(&raw, smooth), sx) {
            l.push_str(&format!(" (ema {})", charts::short(e)));
        }
    }
    parts.push(l);
    if let Some((_, lr)) = charts::nearest(&d.lr.points(), sx) {
        parts.push(format!("lr {}", charts::short(lr)));
    }
    if let Some((_, q)) = charts::held(&d.q_fwd.points(), sx) {
        let mut t = format!("q {q:.0}");
        if let Some((_, b)) = charts::held(&d.q_bwd.points(), sx) {
            t.push_str(&format!("/{b:.0}"));
        }
        parts.push(t);
    }
    if let Some((_, ls)) = charts::held(&d.loss_scale.points(), sx) {
        parts.push(format!("scale {}", charts::short(ls)));
    }
    if let Some((_, n)) = d.skip_marks.iter().find(|(s, _)| *s as f64 == step) {
        parts.push(format!("{n} skipped"));
    }
    match d.evals.iter().rev().find(|e| e.step as f64 <= step) {
        Some(e) => parts.push(format!(
            "test acc {} (epoch {})",
            pct(Some(e.test_acc)),
            e.epoch
        )),
        None => parts.push("no eval yet".into()),
    }
    Some(parts.join(" · "))
}

/// The training loss, smoothed (TensorBoard's EMA, weight `smooth`) over the raw curve drawn
/// faint, the test loss at each evaluation (◆), skipped steps (×) and loss-scale changes (▼▲),
/// in the window, y scale and cursor of `view`.
pub fn loss_chart(
    f: &mut Frame,
    r: Rect,
    d: &RunData,
    smooth: f64,
    view: &ChartView,
    focused: bool,
) {
    let end = x_end(d);
    let (a, b) = view.window(end);
    let test: Vec<(f64, f64)> = d
        .evals
        .iter()
        .map(|e| (e.step as f64, e.test_loss))
        .filter(|p| p.1.is_finite())
        .collect();
    let test = charts::in_window(&test, a, b);
    let w = r.width as usize * 2;
    let raw_all = d.loss.points();
    let raw = charts::in_window(&raw_all, a, b);
    let smoothed = charts::resample(&charts::in_window(&charts::ema(&raw_all, smooth), a, b), w);
    // A skipped step sits on the curve (a non-finite loss: at the top).
    let skips: Vec<(f64, f64)> = d
        .skip_marks
        .iter()
        .map(|(s, _)| *s as f64)
        .filter(|x| (a..=b).contains(x))
        .map(|x| (x, charts::nearest(&raw, x).map_or(f64::NAN, |p| p.1)))
        .collect();
    let mut data = [charts::resample(&raw, w), smoothed, test, skips];
    let (y, log) = charts::loss_axis_as(&mut data, view.loss_y);
    let mut title = match d.last.as_ref() {
        Some(l) => format!("loss {}", charts::short(l.loss)),
        None => "loss".into(),
    };
    title.push_str(if log { " log" } else { "" });
    if view.loss_y == charts::LossY::Linear {
        title.push_str(" lin");
    }
    title.push_str(&view.title_note());
    if smooth > 0.0 && r.width >= 40 {
        title.push_str(&format!(" · ema {smooth}"));
    }
    let [raw, smoothed, test, skips] = &data;
    let mut series = Vec::new();
    if smooth > 0.0 {
        series.push(charts::line("raw", raw, theme::LOSS).faint());
        series.push(charts::line("train", smoothed, theme::LOSS));
    } else {
        series.push(charts::line("train", raw, theme::LOSS));
    }
    if !test.is_empty() {
        series.push(charts::line("test", test, theme::ACCENT_B).glyph('◆'));
    }
    // Every evaluation marked (the series' glyphs thin out on a crowded chart).
    let mut marks: Vec<Mark> = test
        .iter()
        .map(|&(x, y)| Mark {
            x,
            at: MarkAt::Y(y),
            glyph: '◆',
            color: theme::ACCENT_B,
        })
        .collect();
    marks.extend(d.scale_changes.iter().filter_map(|&(s, from, to)| {
        let x = s as f64;
        (a..=b).contains(&x).then_some(Mark {
            x,
            at: MarkAt::Top,
            glyph: if to < from { '▼' } else { '▲' },
            color: theme::WARN,
        })
    }));
    marks.extend(skips.iter().map(|&(x, y)| Mark {
        x,
        at: MarkAt::Y(y),
        glyph: '×',
        color: theme::BAD,
    }));
    let decor = Decor {
        cursor: view.cursor_at(end),
        marks,
        legend: vec![
            ('×', "skipped", theme::BAD),
            ('▼', "scale", theme::WARN),
            ('▲', "scale", theme::WARN),
        ],
    };
    charts::draw_decorated(
        f,
        r,
        &Plot {
            title: &title,
            focused,
            x: charts::XAxis::steps(end).in_view(view),
            y,
            series,
            empty: "waiting for the first step",
        },
        &decor,
    );
}

pub fn acc_chart(f: &mut Frame, r: Rect, d: &RunData, view: &ChartView, focused: bool) {
    let pts: Vec<(f64, f64)> = d
        .evals
        .iter()
        .map(|e| (e.epoch as f64, e.test_acc * 100.0))
        .collect();
    let epochs = d.started.as_ref().map_or(1, |s| s.epochs).max(1) as f64;
    let title = match (d.final_acc(), d.best_acc()) {
        (Some(a), Some(b)) if r.width >= 36 && a != b => {
            format!("test acc {} (best {})", pct(Some(a)), pct(Some(b)))
        }
        (Some(a), _) => format!("test acc {}", pct(Some(a))),
        _ => "test accuracy %".into(),
    };
    let (a, b) = view.window(epochs);
    let shown: Vec<f64> = charts::in_window(&pts, a, b).iter().map(|p| p.1).collect();
    let decor = Decor {
        cursor: view.cursor_at(epochs),
        ..Decor::default()
    };
    charts::draw_decorated(
        f,
        r,
        &Plot {
            title: &title,
            focused,
            x: charts::XAxis::epochs(epochs).in_view(view),
            y: charts::acc_axis(shown),
            series: vec![charts::line("acc", &pts, theme::GOOD).glyph('●')],
            empty: "after the first epoch",
        },
        &decor,
    );
}

/// Planned and actual bit widths (a tick at every level shown), and fp16's loss scale as log2
/// on the same axis.
pub fn precision_chart(f: &mut Frame, r: Rect, d: &RunData, view: &ChartView, focused: bool) {
    let w = (r.width as usize * 2).max(16);
    let planned = d.planned_bits(w);
    let q_fwd = d.q_fwd.points();
    let q_bwd = d.q_bwd.points();
    // fp16's loss scale on the same axis as log2: 65536 sits at 16.
    let scale: Vec<(f64, f64)> = d
        .loss_scale
        .points()
        .into_iter()
        .map(|(x, y)| (x, y.max(1.0).log2()))
        .collect();
    let levels: Vec<f64> = planned
        .iter()
        .chain(&q_fwd)
        .chain(&q_bwd)
        .chain(&scale)
        .map(|p| p.1.round())
        .collect();
    let plan_name = d.plan.describe();
    let mut title = if r.width >= 44 {
        format!("precision · {plan_name}")
    } else {
        plan_name
    };
    if let Some(l) = &d.last {
        if let Some(q) = l.q_fwd {
            title.push_str(&format!(" · q {q:.0}"));
            if let Some(b) = l.q_bwd {
                title.push_str(&format!("/{b:.0}"));
            }
        }
        if let Some(ls) = l.loss_scale {
            title.push_str(&format!(" · scale {}", charts::short(ls)));
        }
    }
    let mut series = vec![charts::step_line("plan", &planned, theme::FG).glyph('·')];
    if !q_fwd.is_empty() {
        series.push(charts::step_line("fwd", &q_fwd, theme::PRECISION).glyph('f'));
    }
    if !q_bwd.is_empty() {
        series.push(charts::step_line("bwd", &q_bwd, theme::ACCENT_B).glyph('b'));
    }
    if !scale.is_empty() {
        series.push(charts::step_line("log2 scale", &scale, theme::WARN).glyph('s'));
    }
    let end = x_end(d);
    let decor = Decor {
        cursor: view.cursor_at(end),
        ..Decor::default()
    };
    charts::draw_decorated(
        f,
        r,
        &Plot {
            title: &title,
            focused,
            x: charts::XAxis::steps(end).in_view(view),
            y: charts::YAxis::Levels(levels),
            series,
            empty: "plan known once the run starts",
        },
        &decor,
    );
}

fn devices(f: &mut Frame, r: Rect, app: &App, slot: &RunSlot, focused: bool) {
    let block = panel("devices", focused);
    let inner = block.inner(r);
    f.render_widget(block, r);
    let w = inner.width as usize;
    let spark_w = w.saturating_sub(18).max(4);
    let d = &slot.data;
    let mut lines: Vec<Line> = Vec::new();
    let gpu_ids: Vec<u32> = d
        .started
        .as_ref()
        .map(|s| {
            s.devices
                .iter()
                .filter_map(|x| x.strip_prefix("cuda:")?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let live = d.status.is_active();
    let pid = match slot.control {
        Control::Driven { pid, .. } | Control::Watching { pid, .. } => Some(pid),
        _ => None,
    };
    if live && !gpu_ids.is_empty() && !app.devices.gpus.is_empty() {
        for (idx, g) in &app.devices.gpus {
            if !gpu_ids.contains(idx) {
                continue;
            }
            let util = g.util.back().copied().unwrap_or(0.0);
            lines.push(Line::from(vec![
                Span::raw(format!("gpu{idx} util ")),
                Span::styled(
                    charts::spark(g.util.iter().copied(), spark_w, 1.0),
                    Style::default().fg(theme::GOOD),
                ),
                Span::raw(format!(" {:>3.0}%", util * 100.0)),
            ]));
            lines.push(Line::from(vec![
                Span::raw("     mem  "),
                Span::styled(
                    charts::spark(g.mem.iter().copied(), spark_w, 1.0),
                    Style::default().fg(theme::ACCENT),
                ),
                Span::raw(format!(
                    " {}",
                    charts::bytes(g.mem_used as f64).replace(" GiB", "G")
                )),
            ]));
        }
    } else if let (true, Some(h)) = (live, pid.and_then(|p| app.devices.procs.get(&p))) {
        for (name, hist) in &h.workers {
            let share = hist.back().copied().unwrap_or(0.0);
            let short = name.replace("cptlab-worker-", "worker ");
            lines.push(Line::from(vec![
                Span::raw(format!("{:<9}", clip(&short, 9))),
                Span::styled(
                    charts::spark(hist.iter().copied(), spark_w, 1.0),
                    Style::default().fg(theme::GOOD),
                ),
                Span::raw(format!(" {:>4.0}%", share * 100.0)),
            ]));
        }
        let cores = h.cores.back().copied().unwrap_or(0.0);
        let max = app.cores.max(1) as f64;
        lines.push(Line::from(vec![
            Span::raw("process  "),
            Span::styled(
                charts::spark(h.cores.iter().copied(), spark_w, max),
                Style::default().fg(theme::ACCENT),
            ),
            Span::raw(format!(" {cores:>4.1}c")),
        ]));
    } else if live {
        lines.push(Line::styled("sampling…", theme::muted()));
    } else {
        lines.push(Line::styled("not live: no device figures", theme::muted()));
    }
    if let Some(rate) = d.rate_ema {
        let max = d.rate.iter().copied().fold(0.0, f64::max);
        lines.push(Line::from(vec![
            Span::raw("img/s    "),
            Span::styled(
                charts::spark(d.rate.iter().copied(), spark_w, max),
                Style::default().fg(theme::LOSS),
            ),
            Span::raw(format!(" {:>5}", charts::short(rate))),
        ]));
    }
    if let (Some(n), true) = (&app.devices.nvml_note, !gpu_ids.is_empty()) {
        lines.push(Line::styled(clip(n, w), theme::muted()));
    }
    if let Some(m) = memory_line(d) {
        // Narrow: the same two figures in compact units, rather than one cut off.
        let m = match memory_line_short(d) {
            Some(short) if m.chars().count() > w => short,
            _ => m,
        };
        lines.push(Line::raw(clip(&m, w)));
    }
    f.render_widget(Paragraph::new(lines), inner);
}

/// "memory: estimate X / measured Y (rss)": `cptlab estimate`'s total per rank from the
/// `started` event beside the newest measured peak (None before either is known).
pub fn memory_line(d: &RunData) -> Option<String> {
    let est = d.started.as_ref().and_then(|s| s.memory_estimate_bytes);
    let measured = d.peak_memory;
    if est.is_none() && measured.is_none() {
        return None;
    }
    let est = est.map_or("?".into(), |b| charts::bytes(b as f64));
    let measured = measured.map_or("?".into(), |(b, k)| {
        format!("{} ({k})", charts::bytes(b as f64))
    });
    Some(format!("memory: estimate {est} / measured {measured}"))
}

/// `memory_line` for a narrow panel: "mem 4.9M est / 509M rss".
fn memory_line_short(d: &RunData) -> Option<String> {
    let compact = |b: u64| {
        let s = charts::bytes(b as f64);
        let (num, unit) = s.split_once(' ').unwrap_or((&s, ""));
        let num = match num.parse::<f64>() {
            Ok(x) if x >= 100.0 => format!("{x:.0}"),
            _ => num.to_string(),
        };
        format!("{num}{}", unit.trim_end_matches("iB"))
    };
    let est = d.started.as_ref().and_then(|s| s.memory_estimate_bytes);
    if est.is_none() && d.peak_memory.is_none() {
        return None;
    }
    let est = est.map_or("?".into(), compact);
    let measured = d
        .peak_memory
        .map_or("?".into(), |(b, k)| format!("{} {k}", compact(b)));
    Some(format!("mem {est} est / {measured}"))
}

fn per_class(f: &mut Frame, r: Rect, d: &RunData, focused: bool) {
    let block = panel("per-class accuracy", focused);
    let inner = block.inner(r);
    f.render_widget(block, r);
    let classes = d.per_class();
    let rows = inner.height.max(1) as usize;
    let cols = classes.len().div_ceil(rows).max(1);
    let col_w = inner.width as usize / cols;
    let longest = classes
        .iter()
        .map(|c| c.class.chars().count())
        .max()
        .unwrap_or(4);
    // name, a bar when there is room, and " 45.2%" (" 45%" when narrow).
    let pct_w = if col_w >= longest + 8 { 7 } else { 5 };
    let name_w = longest.min(col_w.saturating_sub(pct_w + 1).max(3));
    let bar_w = col_w.saturating_sub(name_w + pct_w + 2);
    let bar_w = if bar_w >= 3 { bar_w } else { 0 };
    let mut lines: Vec<Line> = vec![Line::default(); rows.min(classes.len())];
    for (i, c) in classes.iter().enumerate() {
        let color = if c.acc >= 0.5 {
            theme::GOOD
        } else {
            theme::WARN
        };
        let line = &mut lines[i % rows];
        line.spans
            .push(Span::raw(format!("{:<name_w$} ", clip(&c.class, name_w))));
        if bar_w > 0 {
            line.spans.push(Span::styled(
                charts::bar(c.acc, bar_w),
                Style::default().fg(color),
            ));
        }
        let p = if pct_w == 7 {
            format!("{:>5.1}% ", c.acc * 100.0)
        } else {
            format!("{:>3.0}% ", c.acc * 100.0)
        };
        line.spans.push(Span::styled(p, Style::default().fg(color)));
    }
    f.render_widget(Paragraph::new(lines), inner);
}

fn step_time(f: &mut Frame, r: Rect, d: &RunData, focused: bool) {
    let total = d.step_time.unwrap_or(0.0);
    let title = if total > 0.0 {
        format!("step time {:.1} ms", total * 1e3)
    } else {
        "step time".into()
    };
    let block = panel(&title, focused);
    let inner = block.inner(r);
    f.render_widget(block, r);
    let names = ["data", "forward", "backward", "comm", "optimizer"];
    let colors = [
        theme::LR,
        theme::ACCENT,
        theme::PRECISION,
        theme::WARN,
        theme::GOOD,
    ];
    let sum: f64 = d.breakdown.iter().sum();
    // "forward   " + bar + " 123.4ms 45%"
    let bar_w = (inner.width as usize).saturating_sub(10 + 13);
    let mut lines: Vec<Line> = names
        .iter()
        .zip(d.breakdown)
        .zip(colors)
        .map(|((n, t), c)| {
            let share = if sum > 0.0 { t / sum } else { 0.0 };
            Line::from(vec![
                Span::raw(format!("{n:<10}")),
                Span::styled(charts::bar(share, bar_w), Style::default().fg(c)),
                Span::raw(format!("{:>6.1}ms{:>4.0}%", t * 1e3, share * 100.0)),
            ])
        })
        .collect();
    if d.skipped > 0 {
        lines.push(Line::styled(
            format!("skipped steps {}", d.skipped),
            Style::default().fg(theme::WARN),
        ));
    }
    if d.has_gbitops {
        lines.push(Line::from(format!(
            "GBitOps so far {}",
            charts::short(d.gbitops)
        )));
    }
    f.render_widget(Paragraph::new(lines), inner);
}

fn log(f: &mut Frame, r: Rect, d: &RunData, scroll: usize, focused: bool) {
    let block = panel("log", focused);
    let inner = block.inner(r);
    f.render_widget(block, r);
    let rows = inner.height as usize;
    let n = d.logs.len();
    let scroll = scroll.min(n.saturating_sub(rows));
    let end = n - scroll;
    let w = inner.width as usize;
    // Long lines wrap (the accuracy at the end of "epoch 3 done: …" is what matters), and
    // the newest whole entries up to `end` fill the panel from the bottom.
    let mut lines: Vec<Line> = Vec::new();
    for l in d.logs.iter().take(end).rev() {
        if lines.len() >= rows {
            break;
        }
        let color = match l.kind {
            LogKind::Info => theme::FG,
            LogKind::Warn => theme::WARN,
            LogKind::Error => theme::BAD,
            LogKind::Note => theme::ACCENT,
        };
        let style = Style::default().fg(color);
        let wrapped = wrap_log(&l.text, w);
        // Whole entries only (the newest one even when it alone is too long).
        if !lines.is_empty() && lines.len() + wrapped.len() > rows {
            break;
        }
        for (i, part) in wrapped.into_iter().enumerate().rev() {
            let text = if i == 0 { part } else { format!("  {part}") };
            lines.push(Line::styled(clip(&text, w), style));
        }
    }
    lines.truncate(rows);
    lines.reverse();
    f.render_widget(Paragraph::new(lines), inner);
}

/// `text` in rows of `w` columns, the first full width and the rest under a 2-column indent,
/// broken at spaces (a word longer than a row is cut across rows).
pub fn wrap_log(text: &str, w: usize) -> Vec<String> {
    let w = w.max(4);
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    let width = |out: &Vec<String>| if out.is_empty() { w } else { w - 2 };
    for word in text.split(' ') {
        let mut word = word.to_string();
        loop {
            let room = width(&out);
            let len = cur.chars().count();
            let need = word.chars().count() + usize::from(len > 0);
            if len + need <= room {
                if len > 0 {
                    cur.push(' ');
                }
                cur.push_str(&word);
                break;
            }
            if len > 0 {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            // A word wider than a row.
            let head: String = word.chars().take(room).collect();
            word = word.chars().skip(room).collect();
            out.push(head);
            if word.is_empty() {
                break;
            }
        }
    }
    if !cur.is_empty() || out.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod memory_line_tests {
    use super::*;

    #[test]
    fn log_lines_wrap_at_spaces_under_an_indent() {
        let t = "epoch 3 done: test acc 99.95%, test loss 0.0011, 2.6s";
        let w = wrap_log(t, 28);
        assert_eq!(
            w,
            [
                "epoch 3 done: test acc",
                "99.95%, test loss 0.0011,",
                "2.6s"
            ]
        );
        assert!(w.iter().skip(1).all(|l| l.chars().count() <= 26));
        assert_eq!(wrap_log("abcdefghij", 6), ["abcdef", "ghij"]);
        assert_eq!(wrap_log("", 10), [""]);
    }
    use crate::telemetry::event::{MemoryKind, StartedEvent};

    #[test]
    fn the_memory_line_puts_the_estimate_beside_the_measured_peak() {
        let mut d = RunData::new("r");
        assert_eq!(memory_line(&d), None);
        d.peak_memory = Some((3 << 20, MemoryKind::Rss));
        assert_eq!(
            memory_line(&d).unwrap(),
            "memory: estimate ? / measured 3.0 MiB (rss)"
        );
        let started: StartedEvent = serde_json::from_value(serde_json::json!({
            "run_dir": "d", "name": "n", "model": "lenet", "params": 1, "dataset": "s",
            "classes": [], "train_size": 1, "test_size": 1, "steps_per_epoch": 1,
            "total_steps": 1, "epochs": 1, "devices": ["cpu"], "threads": 1,
            "memory_estimate_bytes": 2048
        }))
        .unwrap();
        d.started = Some(started);
        d.peak_memory = Some((5 << 30, MemoryKind::Cuda));
        assert_eq!(
            memory_line(&d).unwrap(),
            "memory: estimate 2.0 KiB / measured 5.0 GiB (cuda)"
        );
        // Narrow panels: the same two figures, compact.
        assert_eq!(memory_line_short(&d).unwrap(), "mem 2.0K est / 5.0G cuda");
        d.peak_memory = Some((509 << 20, MemoryKind::Rss));
        assert_eq!(memory_line_short(&d).unwrap(), "mem 2.0K est / 509M rss");
    }
}
