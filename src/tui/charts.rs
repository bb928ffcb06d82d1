//! Chart widgets shared by the views: line charts drawn with Braille dots on a canvas, y axes
//! with ticks at round values (or at every bit level, or at decades for a log scale), x axes
//! with ticks and their unit (steps, epochs), and series that differ by a glyph as well as by
//! colour, so they stay apart in 16 colours and under `NO_COLOR`. Also compact number labels,
//! text bars and sparklines.
use std::borrow::Cow;

use ratatui::buffer::Buffer;
use ratatui::layout::{Alignment, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::canvas::{Canvas, Line as Segment};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::action::Action;
use super::ui::{panel_with, theme};

pub struct SeriesSpec<'a> {
    pub name: &'a str,
    pub data: Cow<'a, [(f64, f64)]>,
    pub color: Color,
    /// Printed along the curve (at every point of a sparse series), and in the legend.
    pub glyph: Option<char>,
    /// Drawn underneath the others in a faint colour, and left out of the legend (the raw loss
    /// under its smoothed curve).
    pub faint: bool,
    /// Points only: a glyph at each point, no line between them (the Sweeps scatter).
    pub scatter: bool,
}

impl<'a> SeriesSpec<'a> {
    pub fn glyph(mut self, g: char) -> SeriesSpec<'a> {
        self.glyph = Some(g);
        self
    }

    pub fn faint(mut self) -> SeriesSpec<'a> {
        self.faint = true;
        self
    }

    /// Drawn as a scatter: its glyph (set one) at every point, no line.
    pub fn scatter(mut self) -> SeriesSpec<'a> {
        self.scatter = true;
        self
    }
}

pub fn line<'a>(name: &'a str, data: &'a [(f64, f64)], color: Color) -> SeriesSpec<'a> {
    SeriesSpec {
        name,
        data: Cow::Borrowed(data),
        color,
        glyph: None,
        faint: false,
        scatter: false,
    }
}

/// A series that owns its points.
pub fn owned(name: &str, data: Vec<(f64, f64)>, color: Color) -> SeriesSpec<'_> {
    SeriesSpec {
        name,
        data: Cow::Owned(data),
        color,
        glyph: None,
        faint: false,
        scatter: false,
    }
}

/// A series drawn as steps (bit widths hold until the next change).
pub fn step_line<'a>(name: &'a str, data: &[(f64, f64)], color: Color) -> SeriesSpec<'a> {
    let mut out = Vec::with_capacity(data.len() * 2);
    for (i, p) in data.iter().enumerate() {
        if i > 0 {
            out.push((p.0, data[i - 1].1));
        }
        out.push(*p);
    }
    owned(name, out, color)
}

/// How the y axis is scaled and ticked (the ticks depend on the room, so they are chosen when
/// the chart is drawn).
#[derive(Debug, Clone, PartialEq)]
pub enum YAxis {
    /// Ticks at round values (steps of 1, 2, 2.5 or 5 × 10ᵏ); the bounds widen to the
    /// outermost ticks.
    Auto { lo: f64, hi: f64 },
    /// The data is log10 of the values: ticks at decades (and at 2 and 5 when few decades show).
    Log10 { lo: f64, hi: f64 },
    /// Discrete levels (bit widths): a tick at every level, where rows allow.
    Levels(Vec<f64>),
}

/// The x axis: from `min` (0 unless zoomed) to `max`, in `unit` (steps, epochs), ticks at
/// round values.
#[derive(Debug, Clone, PartialEq)]
pub struct XAxis {
    pub min: f64,
    pub max: f64,
    pub unit: &'static str,
    /// Ticks on whole numbers only (steps, epochs); else at round fractions too.
    pub whole: bool,
}

impl XAxis {
    pub fn steps(max: f64) -> XAxis {
        XAxis {
            min: 0.0,
            max,
            unit: "step",
            whole: true,
        }
    }

    pub fn epochs(max: f64) -> XAxis {
        XAxis {
            min: 0.0,
            max,
            unit: "epoch",
            whole: true,
        }
    }

    /// A measured quantity (GBitOps): ticks at round values of any size.
    pub fn measure(min: f64, max: f64, unit: &'static str) -> XAxis {
        XAxis {
            min,
            max,
            unit,
            whole: false,
        }
    }

    /// The part of the axis that `view` shows (the whole axis when not zoomed).
    pub fn in_view(mut self, view: &ChartView) -> XAxis {
        let full = self.max.max(1e-9);
        self.min = view.lo * full;
        self.max = view.hi * full;
        self
    }
}

/// How the loss chart's y axis is scaled (`y` steps through them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LossY {
    /// Linear while the data spans little, log once it spans more than a decade and a half.
    #[default]
    Auto,
    Log,
    Linear,
}

impl LossY {
    pub const ALL: [LossY; 3] = [LossY::Auto, LossY::Log, LossY::Linear];

    pub fn name(self) -> &'static str {
        match self {
            LossY::Auto => "auto",
            LossY::Log => "log",
            LossY::Linear => "linear",
        }
    }

    pub fn next(self) -> LossY {
        let i = LossY::ALL.iter().position(|m| *m == self).unwrap_or(0);
        LossY::ALL[(i + 1) % LossY::ALL.len()]
    }
}

/// The narrowest x window, as a share of the run (eight zoom steps).
pub const MIN_SPAN: f64 = 1.0 / 256.0;
/// Cursor moves per window width (one `←`/`→`).
pub const CURSOR_STEPS: f64 = 50.0;

/// What the user did to a view's charts: the loss's y scale, the x window (zoom and pan) and
/// the step cursor. Kept as shares of the whole run, so that every chart of the view (steps
/// or epochs, one run or eight) shows the same window, and a live run's growth does not move it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartView {
    pub loss_y: LossY,
    /// The x window, as shares of the run: `0 <= lo < hi <= 1`.
    pub lo: f64,
    pub hi: f64,
    /// The cursor, as a share of the run, while it is shown.
    pub cursor: Option<f64>,
}

impl Default for ChartView {
    fn default() -> ChartView {
        ChartView {
            loss_y: LossY::Auto,
            lo: 0.0,
            hi: 1.0,
            cursor: None,
        }
    }
}

impl ChartView {
    pub fn zoomed(&self) -> bool {
        self.lo > 0.0 || self.hi < 1.0
    }

    fn span(&self) -> f64 {
        self.hi - self.lo
    }

    /// Puts the window of width `span` around `centre`, inside the run.
    fn place(&mut self, centre: f64, span: f64) {
        let span = span.clamp(MIN_SPAN, 1.0);
        let lo = (centre - span / 2.0).clamp(0.0, 1.0 - span);
        self.lo = lo;
        self.hi = (lo + span).min(1.0);
    }

    /// The point zooming keeps in place: the cursor when it is in the window, else the middle.
    fn anchor(&self) -> f64 {
        match self.cursor {
            Some(c) if (self.lo..=self.hi).contains(&c) => c,
            _ => (self.lo + self.hi) / 2.0,
        }
    }

    /// `+`: half the window; `-`: twice it (`factor` 0.5 or 2).
    pub fn zoom(&mut self, factor: f64) {
        let a = self.anchor();
        let span = self.span() * factor;
        // Keep the anchor at the same place on the screen where the bounds allow.
        let left = if self.span() > 0.0 {
            (a - self.lo) / self.span()
        } else {
            0.5
        };
        self.place(a - left * span + span / 2.0, span);
    }

    /// `[` / `]`: a quarter of the window left (-1) or right (+1).
    pub fn pan(&mut self, dir: f64) {
        let span = self.span();
        let centre = (self.lo + self.hi) / 2.0 + dir * span / 4.0;
        self.place(centre, span);
    }

    /// `0`: the whole run again (the cursor and the y scale stay).
    pub fn reset(&mut self) {
        self.lo = 0.0;
        self.hi = 1.0;
    }

    /// `i`: shows the cursor in the middle of the window, or hides it.
    pub fn toggle_cursor(&mut self) {
        self.cursor = match self.cursor {
            Some(_) => None,
            None => Some((self.lo + self.hi) / 2.0),
        };
    }

    /// `←`/`→` with the cursor shown: one fiftieth of the window; the window follows the
    /// cursor past its edges.
    pub fn move_cursor(&mut self, dir: f64) {
        let Some(c) = self.cursor else { return };
        let c = (c + dir * self.span() / CURSOR_STEPS).clamp(0.0, 1.0);
        self.cursor = Some(c);
        if c < self.lo {
            let span = self.span();
            self.place(c + span / 2.0, span);
        } else if c > self.hi {
            let span = self.span();
            self.place(c - span / 2.0, span);
        }
    }

    /// The chart keys every chart view shares (`y`, `+`/`=`, `-`, `[`, `]`, `0`, `i`, and
    /// `←`/`→` while the cursor is shown, `Esc` hides it); false for any other action.
    pub fn handle(&mut self, a: &Action) -> bool {
        match a {
            Action::Key('y') => self.loss_y = self.loss_y.next(),
            Action::Key('+') | Action::Key('=') => self.zoom(0.5),
            Action::Key('-') => self.zoom(2.0),
            Action::Key('[') => self.pan(-1.0),
            Action::Key(']') => self.pan(1.0),
            Action::Key('0') => self.reset(),
            Action::Key('i') => self.toggle_cursor(),
            Action::Left if self.cursor.is_some() => self.move_cursor(-1.0),
            Action::Right if self.cursor.is_some() => self.move_cursor(1.0),
            Action::Back if self.cursor.is_some() => self.cursor = None,
            _ => return false,
        }
        true
    }

    /// The mouse wheel over a chart: up zooms in, down out.
    pub fn wheel(&mut self, notches: i32) {
        self.zoom(if notches < 0 { 0.5 } else { 2.0 });
    }

    /// The x window in data units, for an axis from 0 to `max`.
    pub fn window(&self, max: f64) -> (f64, f64) {
        (self.lo * max, self.hi * max)
    }

    /// The cursor in data units, for an axis from 0 to `max`.
    pub fn cursor_at(&self, max: f64) -> Option<f64> {
        self.cursor.map(|c| c * max)
    }

    /// What the title says of the view: "log"/"lin" when the y scale is forced, the zoom.
    pub fn title_note(&self) -> String {
        let mut s = String::new();
        if self.zoomed() {
            s.push_str(&format!(" ×{:.0}", 1.0 / self.span()));
        }
        s
    }
}

/// The points of `pts` (sorted by x) that fall in `[lo, hi]`, with the neighbour on each side
/// so that a curve reaches the window's edges.
pub fn in_window(pts: &[(f64, f64)], lo: f64, hi: f64) -> Vec<(f64, f64)> {
    let a = pts.partition_point(|p| p.0 < lo).saturating_sub(1);
    let b = (pts.partition_point(|p| p.0 <= hi) + 1).min(pts.len());
    if a >= b {
        return Vec::new();
    }
    pts[a..b].to_vec()
}

/// The point of `pts` (sorted by x) nearest to `x`.
pub fn nearest(pts: &[(f64, f64)], x: f64) -> Option<(f64, f64)> {
    let i = pts.partition_point(|p| p.0 < x);
    let after = pts.get(i).copied();
    let before = i.checked_sub(1).and_then(|j| pts.get(j).copied());
    match (before, after) {
        (Some(b), Some(a)) => Some(if x - b.0 <= a.0 - x { b } else { a }),
        (b, a) => b.or(a),
    }
}

/// The last point of `pts` (sorted by x) at or before `x`: a value that holds until the next
/// (bit widths, evaluations).
pub fn held(pts: &[(f64, f64)], x: f64) -> Option<(f64, f64)> {
    let i = pts.partition_point(|p| p.0 <= x);
    i.checked_sub(1).map(|j| pts[j])
}

/// Where a mark sits on a chart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MarkAt {
    /// At this y (in the chart's units, after any log transform).
    Y(f64),
    /// On the plot's top row (events without a value on the axis: loss-scale changes).
    Top,
    /// On the x axis (evaluations).
    Axis,
}

/// A glyph at one x of a chart: an evaluation, a skipped step, a loss-scale change.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub x: f64,
    pub at: MarkAt,
    pub glyph: char,
    pub color: Color,
}

/// What a chart shows beyond its series: the cursor's line, marks, and their legend entries.
#[derive(Debug, Clone, Default)]
pub struct Decor {
    pub cursor: Option<f64>,
    pub marks: Vec<Mark>,
    /// Extra legend entries (a mark's glyph and what it means).
    pub legend: Vec<(char, &'static str, Color)>,
}

pub struct Plot<'a> {
    pub title: &'a str,
    pub focused: bool,
    pub x: XAxis,
    pub y: YAxis,
    pub series: Vec<SeriesSpec<'a>>,
    /// Shown instead of the chart while there is nothing to draw.
    pub empty: &'a str,
}

/// Tick values from `start` to `end` by `step`.
fn tick_values(start: f64, end: f64, step: f64) -> Vec<f64> {
    let n = ((end - start) / step).round().max(0.0) as usize;
    (0..=n.min(1000)).map(|i| start + step * i as f64).collect()
}

/// Round ticks covering `[lo, hi]`, at most `n` of them: `(first, last, step)`, the step a
/// 1, 2, 2.5 or 5 × 10ᵏ.
pub fn nice_ticks(lo: f64, hi: f64, n: usize) -> (f64, f64, f64) {
    let n = n.max(2);
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        let pad = (lo.abs() * 0.1).max(0.5);
        (lo - pad, lo + pad)
    };
    let raw = (hi - lo) / (n - 1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    for m in [
        1.0, 2.0, 2.5, 5.0, 10.0, 20.0, 25.0, 50.0, 100.0, 200.0, 250.0, 500.0,
    ] {
        let step = m * mag;
        let start = (lo / step + 1e-9).floor() * step;
        let end = (hi / step - 1e-9).ceil() * step;
        if (((end - start) / step).round() as usize) < n {
            return (start, end, step);
        }
    }
    (lo, hi, hi - lo)
}

/// Decimals that show every multiple of `step` exactly.
fn decimals(step: f64) -> usize {
    let mut d = 0;
    while d < 6
        && ((step * 10f64.powi(d as i32)).round() - step * 10f64.powi(d as i32)).abs() > 1e-6
    {
        d += 1;
    }
    d
}

/// A tick's label: as many decimals as the step needs, thousands as k and millions as M.
pub fn tick_label(v: f64, step: f64) -> String {
    let fmt = |v: f64, step: f64| {
        let s = format!("{:.*}", decimals(step), v);
        if s.trim_start_matches('-')
            .chars()
            .all(|c| c == '0' || c == '.')
        {
            "0".to_string()
        } else {
            s
        }
    };
    if step >= 1e5 && v.abs() >= 1e6 {
        format!("{}M", fmt(v / 1e6, step / 1e6))
    } else if step >= 1e3 && v.abs() >= 1e3 {
        format!("{}k", fmt(v / 1e3, step / 1e3))
    } else {
        fmt(v, step)
    }
}

/// A decade's label: 1, 10, 0.1, 1e-3.
fn decade_label(v: f64) -> String {
    let x = 10f64.powf(v);
    if (1e-2..1e5).contains(&x) {
        let d = if x < 1.0 { (-v).ceil() as usize } else { 0 };
        format!("{x:.d$}")
    } else {
        format!("{x:.0e}")
    }
}

/// Bounds and `(value, label)` ticks for a y axis drawn over `rows` rows.
pub fn y_ticks(y: &YAxis, rows: usize) -> ([f64; 2], Vec<(f64, String)>) {
    let n = rows.div_ceil(2).clamp(2, 7);
    match y {
        YAxis::Auto { lo, hi } => {
            let (a, b, step) = nice_ticks(*lo, *hi, n);
            let ticks = tick_values(a, b, step)
                .into_iter()
                .map(|v| (v, tick_label(v, step)))
                .collect();
            ([a, b], ticks)
        }
        YAxis::Log10 { lo, hi } => {
            let (a, b) = (
                (lo + 1e-9).floor(),
                (hi - 1e-9).ceil().max(lo.floor() + 1.0),
            );
            let decades = (b - a).round() as usize;
            let every = decades.div_ceil(n.saturating_sub(1).max(1)).max(1);
            let mut ticks: Vec<(f64, String)> = (0..=decades)
                .step_by(every)
                .map(|i| a + i as f64)
                .map(|v| (v, decade_label(v)))
                .collect();
            if decades <= 1 && rows >= 6 {
                for k in 0..decades {
                    for m in [2.0f64, 5.0] {
                        let v = a + k as f64 + m.log10();
                        let x = 10f64.powf(v);
                        ticks.push((v, tick_label(x, x / m)));
                    }
                }
                ticks.sort_by(|p, q| p.0.total_cmp(&q.0));
            }
            ([a, b], ticks)
        }
        YAxis::Levels(levels) => {
            let mut lv: Vec<f64> = levels.iter().copied().filter(|v| v.is_finite()).collect();
            lv.sort_by(f64::total_cmp);
            lv.dedup();
            let (Some(&lo), Some(&hi)) = (lv.first(), lv.last()) else {
                return y_ticks(&YAxis::Auto { lo: 0.0, hi: 1.0 }, rows);
            };
            // Every level is offered; where two fall on one row the chart keeps the first
            // (the extremes go first, so the range always reads).
            let mut ticks = vec![(hi, format!("{hi:.0}"))];
            if lo != hi {
                ticks.push((lo, format!("{lo:.0}")));
            }
            if lv.len() > 2 {
                ticks.extend(lv[1..lv.len() - 1].iter().map(|v| (*v, format!("{v:.0}"))));
            }
            ([lo - 0.5, hi + 0.5], ticks)
        }
    }
}

/// `(value, label)` ticks for an x axis from `min` to `max`, `cols` cells wide.
pub fn x_ticks(x: &XAxis, cols: usize) -> Vec<(f64, String)> {
    let max = x.max.max(1e-9);
    let min = x.min.clamp(0.0, max);
    let width = tick_label(max, 1.0).chars().count().max(2) + 2;
    let n = (cols / width).clamp(2, 8);
    let (_, _, step) = nice_ticks(min, max, n);
    // Steps and epochs are whole numbers.
    let step = if x.whole { step.max(1.0).round() } else { step };
    let first = (min / step - 1e-9).ceil().max(0.0) * step;
    tick_values(first, (max / step + 1e-9).floor() * step, step)
        .into_iter()
        .map(|v| (v, tick_label(v, step)))
        .collect()
}

/// Where data falls on the screen: the same arithmetic as the canvas's Braille grid, so labels,
/// glyphs and curves agree.
struct Mapper {
    area: Rect,
    x: [f64; 2],
    y: [f64; 2],
}

impl Mapper {
    fn col(&self, x: f64) -> Option<u16> {
        let [l, r] = self.x;
        if !(l..=r).contains(&x) || r <= l {
            return None;
        }
        let res = f64::from(self.area.width) * 2.0 - 1.0;
        let dot = ((x - l) * res / (r - l)).round() as u16;
        Some(self.area.x + dot / 2)
    }

    fn row(&self, y: f64) -> Option<u16> {
        let [b, t] = self.y;
        if !(b - 1e-9..=t + 1e-9).contains(&y) || t <= b {
            return None;
        }
        let res = f64::from(self.area.height) * 4.0 - 1.0;
        let dot = ((t - y).max(0.0) * res / (t - b)).round() as u16;
        Some(self.area.y + (dot / 4).min(self.area.height.saturating_sub(1)))
    }
}

fn label_style() -> Style {
    theme::muted()
}

pub fn draw(f: &mut Frame, area: Rect, p: &Plot) {
    draw_decorated(f, area, p, &Decor::default());
}

/// `draw`, with the cursor's line and marks (`Decor`) over the curves.
pub fn draw_decorated(f: &mut Frame, area: Rect, p: &Plot, decor: &Decor) {
    // Series names go into the title, each with its glyph (or a line) in its colour: a legend
    // box would hide the curves in an 80×24 panel.
    let legend: Vec<Span<'static>> = p
        .series
        .iter()
        .filter(|s| !s.data.is_empty() && !s.faint && (s.glyph.is_some() || !s.name.is_empty()))
        .map(|s| {
            let mark = s.glyph.unwrap_or('━');
            // A series named by its glyph (Compare's A, B, …) shows it once.
            let name = if s.name == mark.to_string() {
                ""
            } else {
                s.name
            };
            // A letter glyph reads as a key: f=fwd.
            let sep = if mark.is_alphanumeric() && !name.is_empty() {
                "="
            } else {
                ""
            };
            Span::styled(format!("{mark}{sep}{name} "), Style::default().fg(s.color))
        })
        .collect();
    let mut legend = if p.series.iter().filter(|s| !s.faint).count() > 1 {
        legend
    } else {
        Vec::new()
    };
    for (g, name, color) in &decor.legend {
        if decor.marks.iter().any(|m| m.glyph == *g) {
            legend.push(Span::styled(
                format!("{g}{name} "),
                Style::default().fg(*color),
            ));
        }
    }
    let block = panel_with(p.title, legend, p.focused);
    let inner = block.inner(area);
    f.render_widget(block, area);
    if p.series.iter().all(|s| s.data.is_empty()) {
        let mid = Rect {
            y: inner.y + inner.height / 2,
            height: 1.min(inner.height),
            ..inner
        };
        f.render_widget(
            Paragraph::new(Line::styled(p.empty, label_style())).alignment(Alignment::Center),
            mid,
        );
        return;
    }
    if inner.width < 6 || inner.height < 3 {
        return;
    }
    // Rows: the plot, the x axis, the x labels.
    let plot_h = inner.height.saturating_sub(2);
    let (y, yt) = y_ticks(&p.y, plot_h as usize);
    let gutter = yt
        .iter()
        .map(|t| t.1.chars().count())
        .max()
        .unwrap_or(1)
        .max(p.x.unit.chars().count().min(5)) as u16;
    let gutter = gutter.min(inner.width / 3);
    let plot = Rect {
        x: inner.x + gutter + 1,
        y: inner.y,
        width: inner.width.saturating_sub(gutter + 1),
        height: plot_h,
    };
    let x = if p.x.max > p.x.min {
        [p.x.min, p.x.max]
    } else {
        [0.0, p.x.max.max(1e-9)]
    };
    let m = Mapper { area: plot, x, y };
    let buf = f.buffer_mut();
    let axis_style = Style::default().fg(theme::DIM);
    let axis_col = inner.x + gutter;
    for r in plot.y..plot.y + plot.height {
        buf.set_string(axis_col, r, "│", axis_style);
    }
    let axis_row = plot.y + plot.height;
    buf.set_string(axis_col, axis_row, "└", axis_style);
    buf.set_string(
        plot.x,
        axis_row,
        "─".repeat(plot.width as usize),
        axis_style,
    );
    let mut used_rows = Vec::new();
    for (v, label) in &yt {
        let Some(r) = m.row(*v) else { continue };
        if used_rows.contains(&r) {
            continue;
        }
        used_rows.push(r);
        let w = label.chars().count() as u16;
        let lx = axis_col.saturating_sub(w).max(inner.x);
        buf.set_stringn(lx, r, label, gutter as usize, label_style());
        buf.set_string(axis_col, r, "┤", axis_style);
    }
    // x labels, centred on their ticks, none overlapping; the unit under the y labels.
    let label_row = axis_row + 1;
    let unit_w = p.x.unit.chars().count() as u16;
    if unit_w <= gutter {
        buf.set_string(axis_col - unit_w, label_row, p.x.unit, label_style());
    }
    let mut next_free = plot.x;
    let right = plot.x + plot.width;
    for (v, label) in x_ticks(&p.x, plot.width as usize) {
        let Some(c) = m.col(v) else { continue };
        buf.set_string(c, axis_row, "┬", axis_style);
        let w = label.chars().count() as u16;
        let lx = c
            .saturating_sub(w / 2)
            .max(plot.x)
            .min(right.saturating_sub(w));
        if lx < next_free {
            continue;
        }
        buf.set_string(lx, label_row, &label, label_style());
        next_free = lx + w + 1;
    }
    let order: Vec<&SeriesSpec> = p
        .series
        .iter()
        .filter(|s| s.faint)
        .chain(p.series.iter().filter(|s| !s.faint))
        .collect();
    let canvas = Canvas::default()
        .marker(Marker::Braille)
        .x_bounds(x)
        .y_bounds(y)
        .paint(|ctx| {
            for s in order.iter().filter(|s| !s.scatter) {
                let color = if s.faint { theme::DIM } else { s.color };
                let pts: Vec<&(f64, f64)> = s
                    .data
                    .iter()
                    .filter(|p| p.0.is_finite() && p.1.is_finite())
                    .collect();
                if pts.len() == 1 {
                    let (px, py) = *pts[0];
                    ctx.draw(&Segment::new(px, py, px, py, color));
                }
                for w in pts.windows(2) {
                    ctx.draw(&Segment::new(w[0].0, w[0].1, w[1].0, w[1].1, color));
                }
                ctx.layer();
            }
        });
    f.render_widget(canvas, plot);
    let buf = f.buffer_mut();
    let marked: Vec<&SeriesSpec> = p.series.iter().filter(|s| s.glyph.is_some()).collect();
    for (k, s) in marked.iter().enumerate() {
        put_glyphs(buf, &m, s, k, marked.len());
    }
    put_decor(buf, &m, decor);
}

/// The marks, then the cursor: a line down the plot where nothing is drawn, and a caret on the
/// x axis.
fn put_decor(buf: &mut Buffer, m: &Mapper, decor: &Decor) {
    let area = m.area;
    let axis_row = area.y + area.height;
    for mk in &decor.marks {
        let Some(c) = m.col(mk.x) else { continue };
        let r = match mk.at {
            MarkAt::Y(y) if y.is_finite() => match m.row(y) {
                Some(r) => r,
                None => continue,
            },
            MarkAt::Y(_) | MarkAt::Top => area.y,
            MarkAt::Axis => axis_row,
        };
        let style = Style::default().fg(mk.color).add_modifier(Modifier::BOLD);
        buf[(c, r)].set_char(mk.glyph).set_style(style);
    }
    let Some(c) = decor.cursor.and_then(|x| m.col(x)) else {
        return;
    };
    let style = Style::default().fg(theme::ACCENT);
    for r in area.y..area.y + area.height {
        let cell = &mut buf[(c, r)];
        if cell.symbol() == " " || cell.symbol() == "\u{2800}" {
            cell.set_char('│').set_style(style);
        }
    }
    buf[(c, axis_row)]
        .set_char('▲')
        .set_style(style.add_modifier(Modifier::BOLD));
}

/// A series' glyph at each of its points when they are few (evaluations), else at evenly
/// spaced points, shifted per series so that overlaid curves keep their marks apart.
fn put_glyphs(buf: &mut Buffer, m: &Mapper, s: &SeriesSpec, k: usize, n: usize) {
    let Some(g) = s.glyph else { return };
    let pts: Vec<(f64, f64)> = s
        .data
        .iter()
        .copied()
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect();
    if pts.is_empty() {
        return;
    }
    let cols = usize::from(m.area.width).max(1);
    let every = (cols / 4).clamp(8, 24);
    let picks: Vec<(f64, f64)> = if s.scatter || pts.len() * 3 <= cols {
        pts
    } else {
        let marks = (cols / every).max(1);
        (0..marks)
            .map(|i| {
                let frac = (i as f64 + (k as f64 + 1.0) / (n as f64 + 1.0)) / marks as f64;
                pts[((pts.len() - 1) as f64 * frac).round() as usize]
            })
            .collect()
    };
    let style = Style::default().fg(s.color).add_modifier(Modifier::BOLD);
    for (x, y) in picks {
        if let (Some(c), Some(r)) = (m.col(x), m.row(y)) {
            buf[(c, r)].set_char(g).set_style(style);
        }
    }
}

/// TensorBoard's smoothing: an exponential moving average with weight `w` (0 leaves the
/// points as they are), debiased so the first points are not pulled towards zero.
pub fn ema(pts: &[(f64, f64)], w: f64) -> Vec<(f64, f64)> {
    if w <= 0.0 {
        return pts.to_vec();
    }
    let w = w.min(0.999);
    let mut last = 0.0;
    let mut n = 0i32;
    pts.iter()
        .map(|&(x, y)| {
            if !y.is_finite() {
                return (x, y);
            }
            n += 1;
            last = last * w + (1.0 - w) * y;
            (x, last / (1.0 - w.powi(n)))
        })
        .collect()
}

/// Y bounds for accuracies in percent: the data with a margin, within 0–100.
pub fn acc_axis(pts: impl IntoIterator<Item = f64>) -> YAxis {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for y in pts.into_iter().filter(|y| y.is_finite()) {
        lo = lo.min(y);
        hi = hi.max(y);
    }
    if !lo.is_finite() {
        return YAxis::Auto { lo: 0.0, hi: 100.0 };
    }
    let pad = ((hi - lo) * 0.15).max(2.0);
    YAxis::Auto {
        lo: (lo - pad).max(0.0),
        hi: (hi + pad).min(100.0),
    }
}

/// At most `n` points, each the mean of a run of neighbours: a chart is at most two Braille
/// dots per cell wide, and per-step losses drawn raw are a cloud, not a curve.
pub fn resample(pts: &[(f64, f64)], n: usize) -> Vec<(f64, f64)> {
    let n = n.max(1);
    if pts.len() <= n {
        return pts.to_vec();
    }
    (0..n)
        .map(|i| {
            let chunk = &pts[i * pts.len() / n..(i + 1) * pts.len() / n];
            let k = chunk.len().max(1) as f64;
            (
                chunk.iter().map(|p| p.0).sum::<f64>() / k,
                chunk.iter().map(|p| p.1).sum::<f64>() / k,
            )
        })
        .collect()
}

/// Y axis for losses: linear while the data spans little, log10 once it spans more than a
/// decade and a half (a loss falling from 2.3 to 1e-3 is otherwise a flat line at 0).
/// Transforms the series in place when it goes to log scale; returns the axis and whether it
/// is logarithmic.
pub fn loss_axis(series: &mut [Vec<(f64, f64)>]) -> (YAxis, bool) {
    loss_axis_as(series, LossY::Auto)
}

/// `loss_axis` with the scale the user chose (`y`): forced log (where every value is positive)
/// or linear, or chosen from the data.
pub fn loss_axis_as(series: &mut [Vec<(f64, f64)>], mode: LossY) -> (YAxis, bool) {
    let ys = || {
        series
            .iter()
            .flatten()
            .map(|p| p.1)
            .filter(|y| y.is_finite())
    };
    let lo = ys().fold(f64::INFINITY, f64::min);
    let hi = ys().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() {
        return (YAxis::Auto { lo: 0.0, hi: 1.0 }, false);
    }
    let log = match mode {
        LossY::Auto => lo > 0.0 && hi / lo > 30.0,
        // A loss at or below 0 has no place on a log axis: clamped to 1e-12 like the rest.
        LossY::Log => hi > 0.0,
        LossY::Linear => false,
    };
    if log {
        let lo = lo.max(1e-12);
        for s in series.iter_mut() {
            for p in s.iter_mut() {
                p.1 = p.1.max(1e-12).log10();
            }
        }
        return (
            YAxis::Log10 {
                lo: lo.log10(),
                hi: hi.log10(),
            },
            true,
        );
    }
    (
        YAxis::Auto {
            lo: lo.max(0.0),
            hi,
        },
        false,
    )
}

/// A number in at most about six characters: 0.05, 1.2e-4, 12.3k, 4.1M.
pub fn short(x: f64) -> String {
    let a = x.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1e9 {
        format!("{:.1}G", x / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", x / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", x / 1e3)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else if a >= 0.01 {
        format!("{x:.3}")
    } else {
        let s = format!("{x:.1e}");
        s.replace("e-0", "e-")
    }
}

/// h:mm:ss or m:ss.
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "-".into();
    }
    let s = secs.round() as u64;
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// Bytes as KiB/MiB/GiB.
pub fn bytes(b: f64) -> String {
    const K: f64 = 1024.0;
    if b >= K * K * K {
        format!("{:.1} GiB", b / (K * K * K))
    } else if b >= K * K {
        format!("{:.1} MiB", b / (K * K))
    } else if b >= K {
        format!("{:.1} KiB", b / K)
    } else {
        format!("{b:.0} B")
    }
}

/// A one-line text bar of `w` cells for a share in 0..1 (8 levels per cell).
pub fn bar(share: f64, w: usize) -> String {
    const PARTS: [char; 9] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉', '█'];
    let eighths = (share.clamp(0.0, 1.0) * (w * 8) as f64).round() as usize;
    let mut s = "█".repeat(eighths / 8);
    if !eighths.is_multiple_of(8) && s.chars().count() < w {
        s.push(PARTS[eighths % 8]);
    }
    let n = s.chars().count();
    s.push_str(&" ".repeat(w.saturating_sub(n)));
    s
}

/// A sparkline of the last `w` values as block characters, scaled to `max`.
pub fn spark(values: impl DoubleEndedIterator<Item = f64>, w: usize, max: f64) -> String {
    const LEVELS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let mut v: Vec<f64> = values.rev().take(w).collect();
    v.reverse();
    let max = if max > 0.0 { max } else { 1.0 };
    let mut s: String = v
        .iter()
        .map(|x| LEVELS[((x / max).clamp(0.0, 1.0) * 7.0).round() as usize])
        .collect();
    let n = s.chars().count();
    if n < w {
        s = " ".repeat(w - n) + &s;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_short() {
        assert_eq!(short(0.05), "0.050");
        assert_eq!(short(0.00012), "1.2e-4");
        assert_eq!(short(12345.0), "12.3k");
        assert_eq!(duration(3725.0), "1:02:05");
        assert_eq!(duration(65.0), "1:05");
        assert_eq!(bar(0.5, 4), "██  ");
        assert_eq!(bar(1.0, 3), "███");
        assert_eq!(spark([0.0, 1.0].into_iter(), 3, 1.0), " ▁█");
    }

    #[test]
    fn resampling_averages_neighbours() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, (i % 2) as f64)).collect();
        let r = resample(&pts, 5);
        assert_eq!(r.len(), 5);
        assert!(r.iter().all(|p| (p.1 - 0.5).abs() < 1e-12));
        assert_eq!(resample(&pts, 20), pts);
    }

    #[test]
    fn ticks_fall_on_round_values() {
        assert_eq!(nice_ticks(0.1, 2.7, 4), (0.0, 3.0, 1.0));
        assert_eq!(nice_ticks(0.0, 96.0, 5), (0.0, 100.0, 25.0));
        let (a, b, step) = nice_ticks(28.2, 61.8, 4);
        assert_eq!((a, b, step), (20.0, 80.0, 20.0));
        let (_, t) = y_ticks(
            &YAxis::Auto {
                lo: 0.103,
                hi: 2.69,
            },
            13,
        );
        let labels: Vec<&str> = t.iter().map(|t| t.1.as_str()).collect();
        assert_eq!(labels, ["0", "0.5", "1.0", "1.5", "2.0", "2.5", "3.0"]);
        assert_eq!(tick_label(20_000.0, 10_000.0), "20k");
        assert_eq!(tick_label(0.25, 0.05), "0.25");
        // A measured axis (GBitOps) ticks at round fractions, labelled as such.
        let g = x_ticks(&XAxis::measure(0.33, 1.05, "GBitOps"), 60);
        assert!(g.len() >= 3, "{g:?}");
        assert!(g.iter().all(|(v, _)| (0.33..=1.05).contains(v)), "{g:?}");
        assert!(g.iter().any(|(_, l)| l.contains('.')), "{g:?}");
        let x = x_ticks(&XAxis::steps(96.0), 40);
        assert_eq!(x.first().map(|t| t.0), Some(0.0));
        assert!(x.iter().all(|t| t.0 <= 96.0), "{x:?}");
        assert!(
            x.iter().all(|t| t.0 % 10.0 == 0.0 || t.0 % 25.0 == 0.0),
            "{x:?}"
        );
        // Decades on a log axis.
        let (b, t) = y_ticks(&YAxis::Log10 { lo: -3.0, hi: 0.36 }, 8);
        assert_eq!(b, [-3.0, 1.0]);
        assert_eq!(t.first().map(|t| t.1.as_str()), Some("1e-3"));
        // Every bit level, when the rows allow.
        let (_, t) = y_ticks(&YAxis::Levels(vec![3.0, 4.0, 8.0]), 8);
        assert_eq!(
            t.iter().map(|t| t.1.as_str()).collect::<Vec<_>>(),
            ["8", "3", "4"]
        );
    }

    #[test]
    fn ema_smooths_like_tensorboard() {
        let pts = [(0.0, 1.0), (1.0, 3.0), (2.0, 3.0)];
        assert_eq!(ema(&pts, 0.0), pts);
        let s = ema(&pts, 0.5);
        // Debiased: the first point is itself, not half of it.
        assert!((s[0].1 - 1.0).abs() < 1e-12);
        assert!((s[1].1 - (0.5 * 0.5 + 1.5) / 0.75).abs() < 1e-12, "{s:?}");
        assert!(s[2].1 < 3.0 && s[2].1 > s[1].1);
    }

    #[test]
    fn accuracy_scales_to_the_data_with_a_margin() {
        let YAxis::Auto { lo, hi } = acc_axis([31.0, 45.0, 59.0]) else {
            panic!()
        };
        assert!(
            lo > 20.0 && lo < 31.0 && hi > 59.0 && hi < 70.0,
            "{lo} {hi}"
        );
        assert_eq!(acc_axis([]), YAxis::Auto { lo: 0.0, hi: 100.0 });
    }

    #[test]
    fn step_lines_hold_values() {
        let s = step_line("q", &[(0.0, 3.0), (5.0, 4.0)], Color::Cyan);
        assert_eq!(&*s.data, &[(0.0, 3.0), (5.0, 3.0), (5.0, 4.0)]);
    }
}
