//! `compare --plot` / `--plot-curves`: accuracy against cost, a point per group with its 95%
//! interval (the shape of Wolfe & Kyrillidis's Fig. 3), and training curves per group (mean ± 95%
//! interval over seeds as a band), as SVG or PNG (picked by the file's extension).
//!
//! PNG text is rendered with DejaVu Sans compiled into the binary (the `dejavu` crate, registered
//! with plotters' `ab_glyph` renderer), so no system font is needed; SVG text is drawn by the
//! viewer, the embedded font only measures it.
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::{Comparison, Curves};

/// Series colours, distinct in print and on screen (Tableau 10, then two more: a CPT sweep has
/// twelve groups).
const COLORS: [RGBColor; 12] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 0),
    RGBColor(255, 215, 0),
];

/// The font family every plot's text uses.
const FONT: &str = "sans-serif";

/// A plot's file format, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Svg,
    Png,
}

impl Format {
    /// `.svg` or `.png` (any case); anything else is an error naming the path.
    pub fn of(path: &Path) -> Result<Format> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("svg") => Ok(Format::Svg),
            Some("png") => Ok(Format::Png),
            _ => bail!(
                "{}: a plot is written as .svg or .png (picked by the extension)",
                path.display()
            ),
        }
    }
}

/// Registers the embedded font once (plotters looks fonts up by family name).
fn fonts() -> Result<()> {
    static LOADED: OnceLock<bool> = OnceLock::new();
    let ok = *LOADED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    if !ok {
        bail!("cannot load the embedded DejaVu Sans font");
    }
    Ok(())
}

const SIZE_SCATTER: (u32, u32) = (900, 560);
const SIZE_CURVES: (u32, u32) = (1200, 520);

/// Renders `draw` into a file format's bytes.
fn render(
    format: Format,
    size: (u32, u32),
    draw: impl Fn(DrawingArea<SVGBackend, Shift>) -> Result<()>,
    draw_png: impl Fn(DrawingArea<BitMapBackend, Shift>) -> Result<()>,
) -> Result<Vec<u8>> {
    fonts()?;
    match format {
        Format::Svg => {
            let mut svg = String::new();
            draw(SVGBackend::with_string(&mut svg, size).into_drawing_area())?;
            Ok(svg.into_bytes())
        }
        Format::Png => {
            let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
            draw_png(BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area())?;
            let img = image::RgbImage::from_raw(size.0, size.1, rgb)
                .ok_or_else(|| anyhow!("cannot draw the plot: the bitmap has the wrong size"))?;
            let mut out = std::io::Cursor::new(Vec::new());
            img.write_to(&mut out, image::ImageFormat::Png)
                .map_err(|e| anyhow!("cannot encode the plot as PNG: {e}"))?;
            Ok(out.into_inner())
        }
    }
}

/// Final test accuracy (%) against GBitOps per group (see [`accuracy_vs_gbitops_svg`]) in the
/// given format.
pub fn accuracy_vs_gbitops(c: &Comparison, format: Format) -> Result<Vec<u8>> {
    let pts = scatter_points(c)?;
    render(
        format,
        SIZE_SCATTER,
        |root| draw_scatter(root, c, &pts),
        |root| draw_scatter(root, c, &pts),
    )
}

/// Final test accuracy (%) against GBitOps per group, with the accuracy's interval as an error
/// bar; triangular CPT schedules (…T, …TV, …TH) as triangles, the others as circles.
pub fn accuracy_vs_gbitops_svg(c: &Comparison) -> Result<String> {
    let bytes = accuracy_vs_gbitops(c, Format::Svg)?;
    String::from_utf8(bytes).map_err(|_| anyhow!("cannot draw the plot: SVG is not UTF-8"))
}

/// (group, GBitOps, accuracy %, half width %) of every group with both figures.
fn scatter_points(c: &Comparison) -> Result<Vec<(usize, f64, f64, f64)>> {
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
    Ok(pts)
}

fn span(lo: f64, hi: f64) -> std::ops::Range<f64> {
    let pad = ((hi - lo) * 0.1).max(hi.abs() * 0.02).max(1e-9);
    (lo - pad)..(hi + pad)
}

fn draw_scatter<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    c: &Comparison,
    pts: &[(usize, f64, f64, f64)],
) -> Result<()> {
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
    root.fill(&WHITE).map_err(draw)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("final test accuracy vs training cost", (FONT, 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(xs, ys)
        .map_err(draw)?;
    chart
        .configure_mesh()
        .label_style((FONT, 13))
        .x_desc("GBitOps (effective, whole run)")
        .y_desc("final test accuracy (%)")
        .draw()
        .map_err(draw)?;
    for &(i, x, y, h) in pts {
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
        // The legend shows the marker the point has.
        if is_triangular(&label) {
            chart
                .draw_series(std::iter::once(TriangleMarker::new(
                    (x, y),
                    7,
                    color.filled(),
                )))
                .map_err(draw)?
                .label(label)
                .legend(move |(lx, ly)| TriangleMarker::new((lx + 10, ly), 6, color.filled()));
        } else {
            chart
                .draw_series(std::iter::once(Circle::new((x, y), 6, color.filled())))
                .map_err(draw)?
                .label(label)
                .legend(move |(lx, ly)| Circle::new((lx + 10, ly), 5, color.filled()));
        }
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(draw)?;
    root.present().map_err(draw)?;
    Ok(())
}

/// Training loss against epochs (left) and test accuracy against epochs (right), one line per
/// group: the mean over its seeds, with a band of the 95% interval where a point has two or
/// more seeds.
pub fn curves(c: &Curves, format: Format) -> Result<Vec<u8>> {
    if c.groups
        .iter()
        .all(|g| g.loss.is_empty() && g.test_acc.is_empty())
    {
        bail!("nothing to plot: no run recorded a step or an evaluation");
    }
    render(
        format,
        SIZE_CURVES,
        |root| draw_curves(root, c),
        |root| draw_curves(root, c),
    )
}

fn draw_curves<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, c: &Curves) -> Result<()> {
    root.fill(&WHITE).map_err(draw)?;
    let (left, right) = root.split_horizontally(root.dim_in_pixel().0 / 2);
    panel(
        &left,
        c,
        "training loss (mean ± 95% CI over seeds)",
        "loss",
        |g| &g.loss,
        1.0,
    )?;
    panel(
        &right,
        c,
        "test accuracy (mean ± 95% CI over seeds)",
        "test accuracy (%)",
        |g| &g.test_acc,
        100.0,
    )?;
    root.present().map_err(draw)?;
    Ok(())
}

type Series = Vec<(f64, crate::stats::Estimate)>;

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    c: &Curves,
    caption: &str,
    y_desc: &str,
    series: impl Fn(&super::GroupCurves) -> &Series,
    k: f64,
) -> Result<()> {
    let all: Vec<(f64, f64, f64)> = c
        .groups
        .iter()
        .flat_map(|g| series(g).iter())
        .filter(|(_, e)| e.n > 0 && e.mean.is_finite())
        .map(|(x, e)| {
            let h = e.half_width.filter(|h| h.is_finite()).unwrap_or(0.0);
            (*x, (e.mean - h) * k, (e.mean + h) * k)
        })
        .collect();
    if all.is_empty() {
        return Ok(());
    }
    let xs = span(
        all.iter().map(|p| p.0).fold(f64::INFINITY, f64::min),
        all.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max),
    );
    let ys = span(
        all.iter().map(|p| p.1).fold(f64::INFINITY, f64::min),
        all.iter().map(|p| p.2).fold(f64::NEG_INFINITY, f64::max),
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 17))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(xs, ys)
        .map_err(draw)?;
    chart
        .configure_mesh()
        .label_style((FONT, 12))
        .x_desc("epochs")
        .y_desc(y_desc)
        .draw()
        .map_err(draw)?;
    for (i, g) in c.groups.iter().enumerate() {
        let pts: Vec<&(f64, crate::stats::Estimate)> = series(g)
            .iter()
            .filter(|(_, e)| e.n > 0 && e.mean.is_finite())
            .collect();
        if pts.is_empty() {
            continue;
        }
        let color = COLORS[i % COLORS.len()];
        // The band: upper edge left to right, lower edge back.
        let band: Vec<(f64, f64)> = pts
            .iter()
            .map(|(x, e)| (*x, (e.mean + e.half_width.unwrap_or(0.0)) * k))
            .chain(
                pts.iter()
                    .rev()
                    .map(|(x, e)| (*x, (e.mean - e.half_width.unwrap_or(0.0)) * k)),
            )
            .collect();
        if pts
            .iter()
            .any(|(_, e)| e.half_width.is_some_and(|h| h > 0.0))
        {
            chart
                .draw_series(std::iter::once(Polygon::new(
                    band,
                    color.mix(0.18).filled(),
                )))
                .map_err(draw)?;
        }
        let line: Vec<(f64, f64)> = pts.iter().map(|(x, e)| (*x, e.mean * k)).collect();
        let marks = line.len() <= 12;
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
            .map_err(draw)?
            .label(g.label.clone())
            .legend(move |(lx, ly)| {
                PathElement::new(vec![(lx, ly), (lx + 18, ly)], color.stroke_width(2))
            });
        if marks {
            chart
                .draw_series(line.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(draw)?;
        }
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 11))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(draw)?;
    Ok(())
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
