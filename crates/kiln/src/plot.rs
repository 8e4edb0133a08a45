//! Learning curves: [`plot_history`] draws one panel per quantity of a [`History`]
//! (loss first, then each metric), with the training and `val_` curves on each over
//! whole-numbered epochs, and marks the best epoch — the lowest `val_loss`, or the
//! lowest `loss` without validation: the one EarlyStopping's default restores — as SVG
//! (plotters) or PNG (the same SVG rasterized by resvg with a bundled font, with the
//! `png` cargo feature).

use crate::error::{Error, Result};
use kiln_train::History;
use plotters::prelude::*;
use std::path::Path;

/// DejaVu Sans (free license, see assets/LICENSE-DejaVu.txt), so PNG text renders the
/// same on every machine without system fonts.
#[cfg(feature = "png")]
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Writes the learning curves of `history` to `path`, atomically: SVG or PNG by the
/// file's extension.
pub fn plot_history(history: &History, path: impl AsRef<Path>) -> Result<()> {
    plot_history_at(history, path.as_ref())
}

fn plot_history_at(history: &History, path: &Path) -> Result<()> {
    let fail = |message: String| Error::Data { path: path.to_path_buf(), message };
    let png = match path.extension().and_then(|e| e.to_str()) {
        Some("svg") => false,
        Some("png") => true,
        other => {
            return Err(fail(format!(
                "learning curves are written as SVG or PNG; give the file a .svg or .png extension (got {other:?})"
            )));
        }
    };
    let mut quantities: Vec<&str> = history.keys().filter(|k| !k.starts_with("val_")).collect();
    quantities.sort_by_key(|k| (*k != "loss", *k));
    if quantities.is_empty() || history.is_empty() {
        return Err(fail(
            "the history is empty: fit for at least one epoch before plotting".into(),
        ));
    }
    // The best epoch (1-based), as EarlyStopping(monitor = "val_loss") would restore it,
    // falling back to the training loss without validation.
    let best = {
        let (values, epochs): (&[f64], Vec<usize>) = if history["val_loss"].is_empty() {
            (&history["loss"], history.epoch.clone())
        } else if history["val_loss"].len() < history.epoch.len() {
            (&history["val_loss"], history.validated.clone())
        } else {
            (&history["val_loss"], history.epoch.clone())
        };
        values
            .iter()
            .zip(epochs)
            .filter(|(v, _)| v.is_finite())
            .min_by(|a, b| a.0.total_cmp(b.0))
            .map(|(_, e)| e as i32 + 1)
    };
    let (w, h) = (520u32, 360u32 * quantities.len() as u32);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
        for (panel, key) in root.split_evenly((quantities.len(), 1)).iter().zip(&quantities) {
            let train = &history[*key];
            let val_key = format!("val_{key}");
            let val = &history[val_key.as_str()];
            let xs = |n: usize, validated: bool| -> Vec<i32> {
                if validated && n < history.epoch.len() {
                    history.validated.iter().map(|&e| e as i32 + 1).collect()
                } else {
                    history.epoch.iter().take(n).map(|&e| e as i32 + 1).collect()
                }
            };
            let all = train.iter().chain(val.iter()).copied().filter(|v| v.is_finite());
            let (lo, hi) =
                all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
            let pad = ((hi - lo) * 0.08).max(1e-6);
            // Whole epochs on the x axis, so its ticks are epoch numbers.
            let first = history.epoch[0] as i32 + 1;
            let last = (*history.epoch.last().expect("not empty") as i32 + 1).max(first + 1);
            let (x0, x1) = (first, last);
            let mut chart = ChartBuilder::on(panel)
                .caption(*key, ("sans-serif", 20))
                .margin(10)
                .x_label_area_size(35)
                .y_label_area_size(55)
                .build_cartesian_2d(x0..x1, (lo - pad)..(hi + pad))
                .map_err(|e| fail(e.to_string()))?;
            chart
                .configure_mesh()
                .x_labels(((x1 - x0 + 1) as usize).min(12))
                .x_label_formatter(&|e| e.to_string())
                .x_desc("epoch")
                .y_desc(*key)
                .draw()
                .map_err(|e| fail(e.to_string()))?;
            let series = [(train, *key, BLUE, false), (val, val_key.as_str(), RED, true)];
            for (values, label, color, validated) in series {
                if values.is_empty() {
                    continue;
                }
                let pts: Vec<(i32, f64)> =
                    xs(values.len(), validated).into_iter().zip(values.iter().copied()).collect();
                chart
                    .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                    .map_err(|e| fail(e.to_string()))?
                    .label(label)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
            }
            if let Some(b) = best {
                let (y0, y1) = (lo - pad, hi + pad);
                let mark = RGBColor(0, 140, 70);
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(b, y0), (b, y1)],
                        mark.stroke_width(2),
                    )))
                    .map_err(|e| fail(e.to_string()))?
                    .label(format!("best epoch {b}"))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], mark.stroke_width(2))
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
    if png {
        let bytes = rasterize(&svg, w, h).map_err(fail)?;
        kiln_train::checkpoint::write_atomic(path, &bytes)?;
    } else {
        kiln_train::checkpoint::write_atomic(path, svg.as_bytes())?;
    }
    Ok(())
}

/// Without the `png` feature: the sentence saying how to get PNG output.
#[cfg(not(feature = "png"))]
fn rasterize(_svg: &str, _w: u32, _h: u32) -> std::result::Result<Vec<u8>, String> {
    Err("PNG learning curves need kiln's `png` cargo feature (kiln = { features = [\"png\"] }); write a .svg file instead, or enable it".into())
}

/// Renders the SVG to PNG bytes with resvg and the bundled font.
#[cfg(feature = "png")]
fn rasterize(svg: &str, w: u32, h: u32) -> std::result::Result<Vec<u8>, String> {
    use resvg::{tiny_skia, usvg};
    let mut opt = usvg::Options::default();
    let db = opt.fontdb_mut();
    db.load_font_data(FONT.to_vec());
    db.set_sans_serif_family("DejaVu Sans");
    let tree =
        usvg::Tree::from_str(svg, &opt).map_err(|e| format!("cannot read the plot back: {e}"))?;
    let mut pixmap = tiny_skia::Pixmap::new(w, h).ok_or("the plot is too large to rasterize")?;
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap.encode_png().map_err(|e| format!("cannot encode PNG: {e}"))
}

/// `history.plot(path)`: the learning curves of a fit (loss and each metric, training and validation, per epoch).
pub trait PlotHistory {
    /// See [`plot_history`].
    fn plot(&self, path: impl AsRef<Path>) -> Result<()>;
}

impl PlotHistory for History {
    fn plot(&self, path: impl AsRef<Path>) -> Result<()> {
        plot_history(self, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history() -> History {
        let mut h = History::default();
        h.history.insert("loss".into(), vec![0.9, 0.5, 0.3]);
        h.history.insert("accuracy".into(), vec![0.6, 0.8, 0.9]);
        h.history.insert("val_loss".into(), vec![1.0, 0.7]);
        h.history.insert("val_accuracy".into(), vec![0.5, 0.7]);
        h.epoch = vec![0, 1, 2];
        h.validated = vec![0, 2];
        h
    }

    #[test]
    fn writes_svg_and_png_with_both_curves_and_rejects_other_formats() {
        let dir = std::env::temp_dir().join(format!("kiln-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let h = history();
        plot_history(&h, dir.join("c.svg")).unwrap();
        let svg = std::fs::read_to_string(dir.join("c.svg")).unwrap();
        for label in ["loss", "val_loss", "accuracy", "val_accuracy", "epoch", "best epoch 3"] {
            assert!(svg.contains(&format!(">\n{label}\n</text>")), "{label} missing");
        }
        // Whole-numbered epoch ticks only.
        for tick in ["1", "2", "3"] {
            assert!(svg.contains(&format!(">\n{tick}\n</text>")), "tick {tick} missing");
        }
        assert!(!svg.contains(">\n1.5\n</text>"), "a fractional epoch tick");
        if cfg!(feature = "png") {
            plot_history(&h, dir.join("c.png")).unwrap();
            let png = std::fs::read(dir.join("c.png")).unwrap();
            assert!(
                png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
                "{} bytes",
                png.len()
            );
        } else {
            let e = plot_history(&h, dir.join("c.png")).unwrap_err().to_string();
            assert!(e.contains("`png` cargo feature") && !dir.join("c.png").exists(), "{e}");
        }
        let e = plot_history(&h, dir.join("c.txt")).unwrap_err().to_string();
        assert!(e.contains("give the file a .svg or .png extension"), "{e}");
        assert!(plot_history(&History::default(), dir.join("e.svg")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
