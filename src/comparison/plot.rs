//! `compare --plot`: accuracy against cost, a point per group with its 95% interval (the shape of
//! Wolfe & Kyrillidis's Fig. 3), as SVG.
use anyhow::{anyhow, Result};
use plotters::prelude::*;

use super::Comparison;

/// Series colours, distinct in print and on screen.
const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Final test accuracy (%) against GBitOps per group, with the accuracy's interval as an error
/// bar; triangular CPT schedules (…T, …TV, …TH) as triangles, the others as circles.
pub fn accuracy_vs_gbitops_svg(c: &Comparison) -> Result<String> {
    let pts: Vec<(usize, f64, f64, f64)> = c
        .groups
        .iter()
        .enumerate()
        .filter(|(_, g)| g.stats.final_acc.n > 0 && g.stats.gbitops.n > 0)
        .map(|(i, g)| {
            let s = &g.stats;
            (
                i,
                s.gbitops.mean,
                s.final_acc.mean * 100.0,
                s.final_acc.half_width.unwrap_or(0.0) * 100.0,
            )
        })
        .collect();
    if pts.is_empty() {
        return Err(anyhow!(
            "nothing to plot: no group has both an accuracy and a GBitOps figure"
        ));
    }
    let span = |lo: f64, hi: f64| {
        let pad = ((hi - lo) * 0.1).max(hi.abs() * 0.02).max(1e-9);
        (lo - pad)..(hi + pad)
    };
    let xs = span(
        pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min),
        pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max),
    );
    let ys = span(
        pts.iter().map(|p| p.2 - p.3).fold(f64::INFINITY, f64::min),
        pts.iter()
            .map(|p| p.2 + p.3)
            .fold(f64::NEG_INFINITY, f64::max),
    );
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(draw)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("final test accuracy vs training cost", ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(xs, ys)
            .map_err(draw)?;
        chart
            .configure_mesh()
            .x_desc("GBitOps (effective, whole run)")
            .y_desc("final test accuracy (%)")
            .draw()
            .map_err(draw)?;
        for &(i, x, y, h) in &pts {
            let color = COLORS[i % COLORS.len()];
            let label = c.groups[i].label.clone();
            chart
                .draw_series(std::iter::once(ErrorBar::new_vertical(
                    x,
                    y - h,
                    y,
                    y + h,
                    color.stroke_width(2),
                    10,
                )))
                .map_err(draw)?;
            let triangular = is_triangular(&label);
            let series = if triangular {
                chart
                    .draw_series(std::iter::once(TriangleMarker::new(
                        (x, y),
                        7,
                        color.filled(),
                    )))
                    .map_err(draw)?
            } else {
                chart
                    .draw_series(std::iter::once(Circle::new((x, y), 6, color.filled())))
                    .map_err(draw)?
            };
            series
                .label(label)
                .legend(move |(lx, ly)| Circle::new((lx + 10, ly), 5, color.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(draw)?;
        root.present().map_err(draw)?;
    }
    Ok(svg)
}

/// Whether a group label names a triangular CPT schedule.
fn is_triangular(label: &str) -> bool {
    label.split(", ").any(|kv| {
        kv.strip_prefix("precision.schedule.kind=")
            .is_some_and(|k| matches!(k, "CT" | "LT" | "ETV" | "ETH" | "RTV" | "RTH"))
    })
}

fn draw<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("cannot draw the plot: {e}")
}
