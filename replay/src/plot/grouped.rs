//! Grouped bars: one group per category (a layer), one bar per series (an input) in it.

use super::{PlotError, fail, font};
use plotters::prelude::*;
use std::path::Path;

/// Draws `values[series][category]` as vertical bars, grouped by category along the x axis,
/// one colour per series with a legend: e.g. each layer's part of a prediction, for a text
/// and its edits.
pub fn grouped_bars(
    path: &Path,
    title: &str,
    categories: &[String],
    series: &[String],
    values: &[Vec<f64>],
    y_desc: &str,
) -> Result<(), PlotError> {
    font();
    let (nc, ns) = (categories.len().max(1), series.len().max(1));
    let lim = values
        .iter()
        .flatten()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(f64::MIN_POSITIVE)
        * 1.15;
    let root = BitMapBackend::new(path, ((120 + 90 * nc) as u32, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..nc as f64, -lim..lim)
        .map_err(|e| fail(path, e))?;
    let label = |x: &f64| {
        let k = x.floor() as usize;
        let centred = (x - k as f64 - 0.5).abs() < 1e-9;
        match categories.get(k) {
            Some(name) if centred => name.clone(),
            _ => String::new(),
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_labels(2 * nc + 1)
        .x_label_formatter(&label)
        .y_desc(y_desc)
        .draw()
        .map_err(|e| fail(path, e))?;
    let width = 0.8 / ns as f64;
    for (s, name) in series.iter().enumerate() {
        let color = Palette99::pick(s).to_rgba();
        let row = values.get(s).map_or(&[][..], Vec::as_slice);
        let left = |c: usize| c as f64 + 0.1 + s as f64 * width;
        chart
            .draw_series(row.iter().enumerate().map(|(c, &v)| {
                Rectangle::new([(left(c), 0.0), (left(c) + width, v)], color.filled())
            }))
            .map_err(|e| fail(path, e))?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(|e| fail(path, e))?;
    root.present().map_err(|e| fail(path, e))
}
