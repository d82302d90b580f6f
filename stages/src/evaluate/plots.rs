//! `evaluate`'s PNG plots: the confusion matrix as a heatmap, the training curves from the
//! train stage's `history.json`, and the ROC curve for two classes. Drawn with plotters into an
//! RGB buffer and encoded by `image` (plotters' own encoder would pull a second `image`); text uses
//! an embedded DejaVu Sans, so no system fonts are needed.

use plotters::prelude::*;
use serde_json::Value;
use std::path::Path;
use std::sync::Once;

const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
pub(crate) const FAMILY: &str = "sans-serif";

pub(crate) fn fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a known-good TTF compiled in; failure would be a build defect.
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

pub(crate) type DrawResult<T> = Result<T, String>;

pub(crate) fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("cannot draw the plot: {e:?}")
}

/// Draws into a `w`×`h` RGB buffer with `draw`, then writes a PNG (`explain` draws its chart
/// through it too).
pub(crate) fn png(
    path: &Path,
    (w, h): (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> DrawResult<()>,
) -> DrawResult<()> {
    fonts();
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        draw(&root)?;
        root.present().map_err(err)?;
    }
    let img = image::RgbImage::from_raw(w, h, buf).ok_or("the plot buffer has the wrong size")?;
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| format!("cannot write `{}`: {e}", path.display()))
}

/// The confusion matrix: rows are true classes, columns predictions; darker is more.
pub fn confusion(path: &Path, labels: &[String], matrix: &[Vec<u64>]) -> DrawResult<()> {
    let k = labels.len().max(1);
    let cell = (440 / k as u32).clamp(24, 90);
    let margin = 130;
    let side = cell * k as u32;
    png(path, (side + margin + 30, side + margin + 40), |root| {
        root.draw(&Text::new(
            "Confusion matrix (rows: true, columns: predicted)",
            (10, 8),
            (FAMILY, 16).into_font(),
        ))
        .map_err(err)?;
        let max = matrix.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
        let (x0, y0) = (margin as i32, (margin - 60) as i32 + 40);
        for (t, row) in matrix.iter().enumerate() {
            for (p, &n) in row.iter().enumerate() {
                let shade = n as f64 / max;
                let level = (255.0 * (1.0 - 0.85 * shade)) as u8;
                let color = RGBColor(level, level, 255);
                let (x, y) = (x0 + p as i32 * cell as i32, y0 + t as i32 * cell as i32);
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell as i32, y + cell as i32)],
                    color.filled(),
                ))
                .map_err(err)?;
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell as i32, y + cell as i32)],
                    BLACK.stroke_width(1),
                ))
                .map_err(err)?;
                let text_color = if shade > 0.6 { WHITE } else { BLACK };
                root.draw(&Text::new(
                    n.to_string(),
                    (x + cell as i32 / 2 - 8, y + cell as i32 / 2 - 8),
                    (FAMILY, 14).into_font().color(&text_color),
                ))
                .map_err(err)?;
            }
        }
        for (i, name) in labels.iter().enumerate() {
            let short: String = name.chars().take(14).collect();
            root.draw(&Text::new(
                short.clone(),
                (8, y0 + i as i32 * cell as i32 + cell as i32 / 2 - 7),
                (FAMILY, 13).into_font(),
            ))
            .map_err(err)?;
            root.draw(&Text::new(
                short,
                (x0 + i as i32 * cell as i32 + 2, y0 - 20),
                (FAMILY, 12).into_font(),
            ))
            .map_err(err)?;
        }
        Ok(())
    })
}

/// Loss per epoch (train and validation) on the left, the validation metric on the right.
pub fn curves(path: &Path, history: &Value) -> DrawResult<()> {
    let epochs = history["epochs"].as_array().cloned().unwrap_or_default();
    let series = |key: &str| -> Vec<(f64, f64)> {
        epochs
            .iter()
            .filter_map(|e| Some((e["epoch"].as_f64()?, e[key].as_f64()?)))
            .collect()
    };
    let train = series("train_loss");
    let val = series("val_loss");
    let metric = if epochs.iter().any(|e| e.get("val_accuracy").is_some()) {
        "val_accuracy"
    } else {
        "val_rmse"
    };
    let quality = series(metric);
    let last = epochs.len().max(2) as f64;
    png(path, (900, 380), |root| {
        let (left, right) = root.split_horizontally(450);
        let losses: Vec<f64> = train
            .iter()
            .chain(&val)
            .map(|p| p.1)
            .filter(|v| v.is_finite())
            .collect();
        let hi = losses.iter().copied().fold(0.0, f64::max).max(1e-6) * 1.05;
        let mut chart = ChartBuilder::on(&left)
            .caption("Loss", (FAMILY, 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(1.0..last, 0.0..hi)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .label_style((FAMILY, 12))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(train.clone(), BLUE.stroke_width(2)))
            .map_err(err)?
            .label("train")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLUE));
        if !val.is_empty() {
            chart
                .draw_series(LineSeries::new(val.clone(), RED.stroke_width(2)))
                .map_err(err)?
                .label("validation")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RED));
        }
        chart
            .configure_series_labels()
            .label_font((FAMILY, 12))
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(err)?;
        let (lo, hi) = if metric == "val_accuracy" {
            (0.0, 1.0)
        } else {
            (
                0.0,
                quality.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-6) * 1.05,
            )
        };
        let mut chart = ChartBuilder::on(&right)
            .caption(metric, (FAMILY, 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(1.0..last, lo..hi)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .label_style((FAMILY, 12))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(quality.clone(), GREEN.stroke_width(2)))
            .map_err(err)?;
        Ok(())
    })
}

/// The ROC curve with the chance diagonal.
pub fn roc(path: &Path, points: &[(f64, f64)], auc: Option<f64>) -> DrawResult<()> {
    png(path, (460, 440), |root| {
        let title = match auc {
            Some(a) => format!("ROC curve (AUC {a:.3})"),
            None => "ROC curve".to_string(),
        };
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FAMILY, 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(45)
            .build_cartesian_2d(0.0..1.0, 0.0..1.0)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("false positive rate")
            .y_desc("true positive rate")
            .label_style((FAMILY, 12))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.3)))
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(points.to_vec(), BLUE.stroke_width(2)))
            .map_err(err)?;
        Ok(())
    })
}
