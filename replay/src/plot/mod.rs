//! PNG figures. Text uses the embedded DejaVu Sans (licence in `assets/`), so drawing needs no
//! system fonts.

use crate::attribute::{Attribution, PointAttribution};
use crate::kernels::compare::Comparison;
use crate::quadrature::sweep::RulePoint;
use epk_store::Samples;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use std::path::Path;

mod grouped;

pub use grouped::grouped_bars;

const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// Why a figure could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw {path}: {message}")]
pub struct PlotError {
    /// The file.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

fn fail(path: &Path, e: impl std::fmt::Display) -> PlotError {
    PlotError {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The font is a constant of this crate, checked by a unit test; without it text is
        // simply not drawn.
        let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Draws the ranked training points of `r`. Inputs with a two-dimensional shape (images) are
/// drawn as grey images under their values: the explained point on the left, then a row of the
/// largest positive and a row of the most negative. Other inputs get a bar chart.
pub fn attribution(
    path: &Path,
    r: &PointAttribution,
    point_input: &[f64],
    train: &Samples,
) -> Result<(), PlotError> {
    font();
    if train.input_shape.len() == 2 {
        images(path, r, point_input, train)
    } else {
        bars(path, r)
    }
}

fn title(r: &PointAttribution) -> String {
    format!(
        "held-out point {}{}: output {} = {:.4}  (b {:.3} + ΣA {:.3} + non-data {:.2e})",
        r.point,
        r.label.map_or(String::new(), |l| format!(", label {l}")),
        r.output,
        r.network,
        r.bias,
        r.data,
        r.nondata
    )
}

fn images(
    path: &Path,
    r: &PointAttribution,
    point_input: &[f64],
    train: &Samples,
) -> Result<(), PlotError> {
    let (h, w) = (train.input_shape[0], train.input_shape[1]);
    let cols = r.positive.len().max(r.negative.len()).max(1);
    let cell = (96 / h.max(w)).max(2) as i32; // pixel size of one input pixel
    let tile = (cell * w as i32, cell * h as i32);
    let pad = 14;
    let col_w = tile.0.max(110) + pad;
    let row_h = tile.1 + 60;
    let left = col_w + 40;
    let width = (left + cols as i32 * col_w + pad) as u32;
    let height = (50 + 2 * row_h + pad) as u32;
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(path, e))?;
    let text = |s: &str, x: i32, y: i32, size: i32, color: &RGBColor| {
        root.draw(&Text::new(
            s.to_string(),
            (x, y),
            ("sans-serif", size).into_font().color(color),
        ))
    };
    text(&title(r), pad, 10, 15, &BLACK).map_err(|e| fail(path, e))?;
    let range = |v: &[f64]| {
        let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        (lo, if hi > lo { hi } else { lo + 1.0 })
    };
    let draw_image = |v: &[f64], x0: i32, y0: i32| -> Result<(), PlotError> {
        let (lo, hi) = range(v);
        for (p, &val) in v.iter().enumerate() {
            let g = (255.0 * (1.0 - (val - lo) / (hi - lo))).round() as u8;
            let (px, py) = (x0 + (p % w) as i32 * cell, y0 + (p / w) as i32 * cell);
            root.draw(&Rectangle::new(
                [(px, py), (px + cell, py + cell)],
                RGBColor(g, g, g).filled(),
            ))
            .map_err(|e| fail(path, e))?;
        }
        Ok(())
    };
    draw_image(point_input, pad, 50 + 22).map_err(|e| fail(path, e))?;
    text("explained", pad, 50 + 4, 12, &BLACK).map_err(|e| fail(path, e))?;
    let green = RGBColor(0, 120, 0);
    let red = RGBColor(180, 0, 0);
    for (row, (list, color, name)) in [
        (&r.positive, &green, "largest positive"),
        (&r.negative, &red, "most negative"),
    ]
    .into_iter()
    .enumerate()
    {
        let y0 = 50 + row as i32 * row_h;
        text(name, left, y0 + 4, 12, color).map_err(|e| fail(path, e))?;
        for (c, a) in list.iter().enumerate() {
            let x0 = left + c as i32 * col_w;
            draw_image(train.input(a.index), x0, y0 + 22)?;
            let caption = caption(a);
            text(&caption, x0, y0 + 26 + tile.1, 11, color).map_err(|e| fail(path, e))?;
        }
    }
    root.present().map_err(|e| fail(path, e))
}

/// Each surrogate's logits against the network's, one panel per surrogate, points coloured by
/// class (Bell et al. Fig. 4): the exact path kernel machine lies on the diagonal.
pub fn scatter(path: &Path, c: &Comparison) -> Result<(), PlotError> {
    font();
    let panels = c.rows.len().max(1);
    let cols = panels.min(4);
    let rows = panels.div_ceil(cols);
    let root = BitMapBackend::new(path, (320 * cols as u32, 300 * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(path, e))?;
    let areas = root.split_evenly((rows, cols));
    let y: Vec<f64> = c.network.iter().copied().collect();
    let k = c.network.ncols().max(1);
    for (row, area) in c.rows.iter().zip(areas) {
        let x: Vec<f64> = row.logits.iter().copied().collect();
        let span = |v: &[f64]| {
            let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
            let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            if hi > lo {
                (lo, hi)
            } else {
                (lo - 1.0, lo + 1.0)
            }
        };
        let ((x0, x1), (y0, y1)) = (span(&x), span(&y));
        let mut chart = ChartBuilder::on(&area)
            .caption(
                format!(
                    "{} ({}): τ {} R² {}",
                    row.kernel,
                    row.form,
                    row.tau.map_or("-".into(), |t| format!("{t:.3}")),
                    row.r2.map_or("-".into(), |r| format!("{r:.4}"))
                ),
                ("sans-serif", 13),
            )
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(40)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| fail(path, e))?;
        chart
            .configure_mesh()
            .x_desc("surrogate logit")
            .y_desc("network logit")
            .label_style(("sans-serif", 10))
            .draw()
            .map_err(|e| fail(path, e))?;
        chart
            .draw_series(x.iter().zip(&y).enumerate().map(|(i, (&a, &b))| {
                let color = Palette99::pick(i % k).to_rgba();
                Circle::new((a, b), 2, color.filled())
            }))
            .map_err(|e| fail(path, e))?;
    }
    root.present().map_err(|e| fail(path, e))
}

/// Error against Jacobian evaluations per step per point, one labelled point per rule, on log
/// axes (Bell et al. Fig. 7). Errors below 1e-16 are drawn at 1e-16.
pub fn rules(path: &Path, points: &[RulePoint]) -> Result<(), PlotError> {
    font();
    let root = BitMapBackend::new(path, (760, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(path, e))?;
    let floor = 1e-16f64;
    let xmax = points
        .iter()
        .fold(1.0f64, |m, p| m.max(p.evals_per_step_per_point))
        * 2.0;
    let ymax = points.iter().fold(floor, |m, p| m.max(p.max_error)) * 10.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "kernel machine error vs Jacobian evaluations per step per point",
            ("sans-serif", 15),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d((0.5f64..xmax).log_scale(), (floor / 2.0..ymax).log_scale())
        .map_err(|e| fail(path, e))?;
    chart
        .configure_mesh()
        .x_desc("Jacobian evaluations per step per point")
        .y_desc("max |b + ΣA + N + R − f|")
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .draw()
        .map_err(|e| fail(path, e))?;
    for p in points {
        let at = (p.evals_per_step_per_point.max(0.5), p.max_error.max(floor));
        let color = if p.rule == "auto" {
            RGBColor(0, 120, 0)
        } else {
            RGBColor(30, 60, 180)
        };
        chart
            .draw_series(std::iter::once(Circle::new(at, 4, color.filled())))
            .map_err(|e| fail(path, e))?;
        chart
            .draw_series(std::iter::once(Text::new(
                p.rule.clone(),
                at,
                ("sans-serif", 12).into_font(),
            )))
            .map_err(|e| fail(path, e))?;
    }
    root.present().map_err(|e| fail(path, e))
}

/// The first held-out point's EPK attributions to its predicted class, one strip per training
/// class (Engel et al. Fig. 2): which classes push the prediction up, which down.
pub fn distribution(
    path: &Path,
    class: usize,
    values: &[f64],
    labels: &[i64],
) -> Result<(), PlotError> {
    font();
    let classes = labels.iter().copied().max().unwrap_or(0).max(0) as usize + 1;
    let root = BitMapBackend::new(path, (760, 90 + 40 * classes as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(path, e))?;
    let lim = values
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(f64::MIN_POSITIVE)
        * 1.05;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("held-out point 0: A[x, i, {class}] by training class"),
            ("sans-serif", 15),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(-lim..lim, -0.5f64..classes as f64 - 0.5)
        .map_err(|e| fail(path, e))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(classes)
        .y_label_formatter(&|y| format!("class {}", y.round()))
        .x_desc("EPK attribution A[x, i, k]")
        .draw()
        .map_err(|e| fail(path, e))?;
    chart
        .draw_series(values.iter().zip(labels).enumerate().map(|(i, (&v, &c))| {
            // A deterministic jitter spreads the strip.
            let jitter = ((i * 2654435761) % 1000) as f64 / 1000.0 * 0.6 - 0.3;
            Circle::new(
                (v, c as f64 + jitter),
                2,
                Palette99::pick(c.max(0) as usize).to_rgba().filled(),
            )
        }))
        .map_err(|e| fail(path, e))?;
    root.present().map_err(|e| fail(path, e))
}

/// One horizontal bar per layer: its part of a prediction.
pub fn layer_bars(
    path: &Path,
    title: &str,
    names: &[String],
    values: &[f64],
) -> Result<(), PlotError> {
    hbars(
        path,
        title,
        names,
        values,
        "Σ_i A[x, i, k] within the layer",
    )
}

/// One horizontal bar per named value, top to bottom, green when positive and red when not.
fn hbars(
    path: &Path,
    title: &str,
    names: &[String],
    values: &[f64],
    x_desc: &str,
) -> Result<(), PlotError> {
    font();
    let n = names.len().max(1);
    let root = BitMapBackend::new(path, (760, (90 + 34 * n) as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(path, e))?;
    let lim = values
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(f64::MIN_POSITIVE)
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 15))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(140)
        .build_cartesian_2d(-lim..lim, 0f64..n as f64)
        .map_err(|e| fail(path, e))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc(x_desc)
        .draw()
        .map_err(|e| fail(path, e))?;
    let row = |i: usize| (n - 1 - i) as f64;
    chart
        .draw_series(values.iter().enumerate().map(|(i, &v)| {
            let color = if v >= 0.0 {
                RGBColor(0, 120, 0)
            } else {
                RGBColor(180, 0, 0)
            };
            Rectangle::new([(0.0, row(i) + 0.2), (v, row(i) + 0.8)], color.filled())
        }))
        .map_err(|e| fail(path, e))?;
    for (i, name) in names.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(-lim, row(i) + 0.5));
        root.draw(&Text::new(
            name.clone(),
            (px - 130, py - 7),
            ("sans-serif", 13).into_font(),
        ))
        .map_err(|e| fail(path, e))?;
    }
    root.present().map_err(|e| fail(path, e))
}

/// Heat maps of values on a regular 2-D grid (`values[iy·nx + ix]`), one panel each, with the
/// training points drawn on top coloured by class (Bell et al. Figs. 3, 5).
pub fn heatmaps(
    path: &Path,
    (x0, x1, nx): (f64, f64, usize),
    (y0, y1, ny): (f64, f64, usize),
    panels: &[(String, Vec<f64>)],
    points: &[(f64, f64, i64)],
) -> Result<(), PlotError> {
    font();
    let cols = panels.len().max(1);
    let root = BitMapBackend::new(path, (380 * cols as u32, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(path, e))?;
    let (dx, dy) = ((x1 - x0) / nx as f64, (y1 - y0) / ny as f64);
    for ((title, values), area) in panels.iter().zip(root.split_evenly((1, cols))) {
        let lo = values.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let span = if hi > lo { hi - lo } else { 1.0 };
        let mut chart = ChartBuilder::on(&area)
            .caption(format!("{title}  [{lo:.2}, {hi:.2}]"), ("sans-serif", 13))
            .margin(8)
            .x_label_area_size(24)
            .y_label_area_size(30)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| fail(path, e))?;
        chart
            .configure_mesh()
            .disable_mesh()
            .label_style(("sans-serif", 10))
            .draw()
            .map_err(|e| fail(path, e))?;
        chart
            .draw_series(values.iter().enumerate().map(|(i, &v)| {
                let (ix, iy) = ((i % nx) as f64, (i / nx) as f64);
                let t = (v - lo) / span;
                // Blue (low) to yellow (high).
                let color = RGBColor(
                    (255.0 * t) as u8,
                    (200.0 * t + 30.0) as u8,
                    (200.0 * (1.0 - t)) as u8,
                );
                Rectangle::new(
                    [
                        (x0 + ix * dx, y0 + iy * dy),
                        (x0 + (ix + 1.0) * dx, y0 + (iy + 1.0) * dy),
                    ],
                    color.filled(),
                )
            }))
            .map_err(|e| fail(path, e))?;
        chart
            .draw_series(points.iter().map(|&(x, y, c)| {
                let color = [
                    RGBColor(220, 0, 0),
                    RGBColor(0, 150, 0),
                    RGBColor(255, 255, 255),
                ][c.rem_euclid(3) as usize];
                Circle::new((x, y), 3, color.filled().stroke_width(1))
            }))
            .map_err(|e| fail(path, e))?;
    }
    root.present().map_err(|e| fail(path, e))
}

fn caption(a: &Attribution) -> String {
    format!("#{} y={} {:+.2e}", a.index, a.label, a.value)
}

fn bars(path: &Path, r: &PointAttribution) -> Result<(), PlotError> {
    let items: Vec<&Attribution> = r.positive.iter().chain(r.negative.iter().rev()).collect();
    let names: Vec<String> = items
        .iter()
        .map(|a| format!("#{} (y={})", a.index, a.label))
        .collect();
    let values: Vec<f64> = items.iter().map(|a| a.value).collect();
    hbars(path, &title(r), &names, &values, "A[x, i, k]")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_embedded_font_parses() {
        assert!(
            plotters::style::register_font(
                "sans-serif",
                plotters::style::FontStyle::Normal,
                super::FONT
            )
            .is_ok()
        );
    }
}
