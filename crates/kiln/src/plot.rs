//! Learning curves: [`plot_history`] draws one panel per quantity of a [`History`]
//! (loss first, then each metric), with the training and `val_` curves on each.

use crate::error::{Error, Result};
use kiln_train::History;
use plotters::prelude::*;
use std::path::Path;

/// Writes the learning curves of `history` to `path` as SVG (the extension must be
/// `.svg`), atomically.
pub fn plot_history(history: &History, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let fail = |message: String| Error::Data { path: path.to_path_buf(), message };
    match path.extension().and_then(|e| e.to_str()) {
        Some("svg") => {}
        other => {
            return Err(fail(format!(
                "learning curves are written as SVG; give the file a .svg extension (got {other:?})"
            )));
        }
    }
    let mut quantities: Vec<&str> = history.keys().filter(|k| !k.starts_with("val_")).collect();
    quantities.sort_by_key(|k| (*k != "loss", *k));
    if quantities.is_empty() || history.is_empty() {
        return Err(fail(
            "the history is empty: fit for at least one epoch before plotting".into(),
        ));
    }
    let (w, h) = (520u32, 360u32 * quantities.len() as u32);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
        for (panel, key) in root.split_evenly((quantities.len(), 1)).iter().zip(&quantities) {
            let train = &history[*key];
            let val_key = format!("val_{key}");
            let val = &history[val_key.as_str()];
            let xs = |n: usize, validated: bool| -> Vec<f64> {
                if validated && n < history.epoch.len() {
                    history.validated.iter().map(|&e| e as f64 + 1.0).collect()
                } else {
                    history.epoch.iter().take(n).map(|&e| e as f64 + 1.0).collect()
                }
            };
            let all = train.iter().chain(val.iter()).copied().filter(|v| v.is_finite());
            let (lo, hi) =
                all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
            let pad = ((hi - lo) * 0.08).max(1e-6);
            let (x0, x1) = (
                history.epoch[0] as f64 + 1.0,
                (*history.epoch.last().expect("not empty") as f64 + 1.0)
                    .max(history.epoch[0] as f64 + 2.0),
            );
            let mut chart = ChartBuilder::on(panel)
                .caption(*key, ("sans-serif", 20))
                .margin(10)
                .x_label_area_size(35)
                .y_label_area_size(55)
                .build_cartesian_2d(x0..x1, (lo - pad)..(hi + pad))
                .map_err(|e| fail(e.to_string()))?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .y_desc(*key)
                .draw()
                .map_err(|e| fail(e.to_string()))?;
            let series = [(train, *key, BLUE, false), (val, val_key.as_str(), RED, true)];
            for (values, label, color, validated) in series {
                if values.is_empty() {
                    continue;
                }
                let pts: Vec<(f64, f64)> =
                    xs(values.len(), validated).into_iter().zip(values.iter().copied()).collect();
                chart
                    .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                    .map_err(|e| fail(e.to_string()))?
                    .label(label)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .border_style(BLACK)
                .background_style(WHITE.mix(0.8))
                .draw()
                .map_err(|e| fail(e.to_string()))?;
        }
        root.present().map_err(|e| fail(e.to_string()))?;
    }
    kiln_train::checkpoint::write_atomic(path, svg.as_bytes())?;
    Ok(())
}

/// `history.plot(path)`: the learning curves of a fit, as in DESIGN.md.
pub trait PlotHistory {
    /// See [`plot_history`].
    fn plot(&self, path: impl AsRef<Path>) -> Result<()>;
}

impl PlotHistory for History {
    fn plot(&self, path: impl AsRef<Path>) -> Result<()> {
        plot_history(self, path)
    }
}
