//! Chart widgets shared by the views: line charts with Braille markers (any 16-colour terminal
//! with a Unicode font draws them), step lines for bit widths, compact number labels.
use std::borrow::Cow;

use ratatui::layout::{Alignment, Rect};
use ratatui::style::{Color, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Chart, Dataset, GraphType, Paragraph};
use ratatui::Frame;

use super::ui::{panel_with, theme};

pub struct SeriesSpec<'a> {
    pub name: &'a str,
    pub data: Cow<'a, [(f64, f64)]>,
    pub color: Color,
}

pub fn line<'a>(name: &'a str, data: &'a [(f64, f64)], color: Color) -> SeriesSpec<'a> {
    SeriesSpec {
        name,
        data: Cow::Borrowed(data),
        color,
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
    SeriesSpec {
        name,
        data: Cow::Owned(out),
        color,
    }
}

pub struct Plot<'a> {
    pub title: &'a str,
    pub focused: bool,
    pub x: [f64; 2],
    pub y: [f64; 2],
    pub x_labels: Vec<String>,
    pub y_labels: Vec<String>,
    pub series: Vec<SeriesSpec<'a>>,
    /// Shown instead of the chart while there is nothing to draw.
    pub empty: &'a str,
}

pub fn draw(f: &mut Frame, area: Rect, p: &Plot) {
    // Series names go into the title in their colours: a legend box would hide the curves in
    // an 80×24 panel.
    let legend: Vec<Span<'static>> = if p.series.len() > 1 {
        p.series
            .iter()
            .filter(|s| !s.data.is_empty())
            .map(|s| Span::styled(format!("━{} ", s.name), Style::default().fg(s.color)))
            .collect()
    } else {
        Vec::new()
    };
    let block = panel_with(p.title, legend, p.focused);
    if p.series.iter().all(|s| s.data.is_empty()) {
        let inner = block.inner(area);
        f.render_widget(block, area);
        let mid = Rect {
            y: inner.y + inner.height / 2,
            height: 1.min(inner.height),
            ..inner
        };
        f.render_widget(
            Paragraph::new(Line::styled(p.empty, Style::default().fg(theme::DIM)))
                .alignment(Alignment::Center),
            mid,
        );
        return;
    }
    let datasets: Vec<Dataset> = p
        .series
        .iter()
        .map(|s| {
            Dataset::default()
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::default().fg(s.color))
                .data(&s.data)
        })
        .collect();
    let x = if p.x[1] > p.x[0] {
        p.x
    } else {
        [p.x[0], p.x[0] + 1.0]
    };
    let y = if p.y[1] > p.y[0] {
        p.y
    } else {
        [p.y[0] - 0.5, p.y[0] + 0.5]
    };
    let label_style = Style::default().fg(theme::DIM);
    let chart = Chart::new(datasets)
        .block(block)
        .x_axis(
            Axis::default()
                .bounds(x)
                .style(label_style)
                .labels(p.x_labels.iter().map(|l| Line::from(l.clone()))),
        )
        .y_axis(
            Axis::default()
                .bounds(y)
                .style(label_style)
                .labels(p.y_labels.iter().map(|l| Line::from(l.clone()))),
        )
        .legend_position(None);
    f.render_widget(chart, area);
}

/// y bounds around the data with a little headroom, never below `floor`.
pub fn bounds(lo: f64, hi: f64, floor: f64) -> [f64; 2] {
    let pad = ((hi - lo).abs() * 0.08).max(hi.abs() * 1e-3).max(1e-9);
    [(lo - pad).max(floor), hi + pad]
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

/// Y axis for losses: linear from 0 while the data spans little, log10 once it spans more than
/// a decade and a half (a loss falling from 2.3 to 1e-3 is otherwise a flat line at 0).
/// Transforms the series in place when it goes to log scale; returns bounds, labels and
/// whether the scale is logarithmic.
pub fn loss_axis(series: &mut [Vec<(f64, f64)>]) -> ([f64; 2], Vec<String>, bool) {
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
        return ([0.0, 1.0], vec!["0".into(), "1".into()], false);
    }
    if lo > 0.0 && hi / lo > 30.0 {
        for s in series.iter_mut() {
            for p in s.iter_mut() {
                p.1 = p.1.max(1e-12).log10();
            }
        }
        let b = [lo.log10() - 0.1, hi.log10() + 0.1];
        let labels = vec![short(10f64.powf(b[0])), short(10f64.powf(b[1]))];
        return (b, labels, true);
    }
    let b = bounds(lo, hi, 0.0);
    (b, vec![short(b[0]), short(b[1])], false)
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
    fn step_lines_hold_values() {
        let s = step_line("q", &[(0.0, 3.0), (5.0, 4.0)], Color::Cyan);
        assert_eq!(&*s.data, &[(0.0, 3.0), (5.0, 3.0), (5.0, 4.0)]);
    }
}
