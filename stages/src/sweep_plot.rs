//! A sweep's `plot.png`: the metric against each varied param, one panel per param side by side
//! (four to a row). Numeric params get a number axis (logarithmic when the values span two
//! orders of magnitude or more), others one column per distinct value. Finished trials are
//! filled dots, pruned and unfinished ones hollow. Drawn like evaluate's plots (plotters into a
//! buffer, embedded font) and written atomically.

use crate::evaluate::plots::{err, fonts, FAMILY};
use plotters::prelude::*;
use std::path::Path;

/// One panel's horizontal position of a trial.
#[derive(Debug, Clone, PartialEq)]
pub enum X {
    Num(f64),
    Label(String),
}

/// The trials' values of one varied param: (x, metric, hollow). `hollow` marks a trial that was
/// pruned or did not finish.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub param: String,
    pub points: Vec<(X, f64, bool)>,
}

const PANEL: (u32, u32) = (400, 360);
/// The strip above the panels that says what the marks mean.
const LEGEND: u32 = 28;
const COLOR: RGBColor = RGBColor(31, 119, 180);
const PER_ROW: usize = 4;
/// Most distinct labels a categorical axis names; more are still drawn, unnamed.
const MAX_LABELS: usize = 24;

/// How one panel's x values become positions on a linear axis.
enum Axis {
    Linear,
    /// Positions are log10 of the values.
    Log,
    /// Positions are indices into the distinct labels, in first-seen order.
    Categories(Vec<String>),
}

impl Axis {
    fn for_points(points: &[(X, f64, bool)]) -> Axis {
        let nums: Option<Vec<f64>> = points
            .iter()
            .map(|(x, _, _)| match x {
                X::Num(v) if v.is_finite() => Some(*v),
                _ => None,
            })
            .collect();
        match nums {
            Some(v) if !v.is_empty() => {
                let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                if lo > 0.0 && hi / lo >= 100.0 {
                    Axis::Log
                } else {
                    Axis::Linear
                }
            }
            _ => {
                let mut labels: Vec<String> = Vec::new();
                for (x, _, _) in points {
                    let l = label(x);
                    if !labels.contains(&l) {
                        labels.push(l);
                    }
                }
                Axis::Categories(labels)
            }
        }
    }

    fn position(&self, x: &X) -> f64 {
        match (self, x) {
            (Axis::Linear, X::Num(v)) => *v,
            (Axis::Log, X::Num(v)) => v.log10(),
            (Axis::Categories(labels), x) => {
                let l = label(x);
                labels.iter().position(|c| *c == l).unwrap_or(0) as f64
            }
            _ => f64::NAN,
        }
    }
}

fn label(x: &X) -> String {
    match x {
        X::Num(v) => v.to_string(),
        X::Label(s) => s.clone(),
    }
}

/// `lo..hi` widened by 5% on each side, and to a visible width when every value is the same.
fn padded(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        return (0.0, 1.0);
    }
    let pad = if hi > lo {
        (hi - lo) * 0.05
    } else {
        (lo.abs() * 0.1).max(0.5)
    };
    (lo - pad, hi + pad)
}

/// Writes the plot to `path` (a PNG), replacing it atomically.
pub fn plot_sweep(path: &Path, metric: &str, panels: &[Panel]) -> Result<(), String> {
    fonts();
    let cols = panels.len().clamp(1, PER_ROW);
    let rows = panels.len().div_ceil(PER_ROW).max(1);
    let (w, h) = (PANEL.0 * cols as u32, LEGEND + PANEL.1 * rows as u32);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (legend, body) = root.split_vertically(LEGEND);
        draw_legend(&legend)?;
        let areas = body.split_evenly((rows, cols));
        let (ylo, yhi) = padded(panels.iter().flat_map(|p| p.points.iter().map(|q| q.1)));
        for (panel, area) in panels.iter().zip(&areas) {
            draw_panel(area, metric, panel, (ylo, yhi))?;
        }
        root.present().map_err(err)?;
    }
    let img = image::RgbImage::from_raw(w, h, buf).ok_or("the plot buffer has the wrong size")?;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| format!("cannot encode the plot: {e}"))?;
    sluice_runner::atomic::write(path, &png)
        .map_err(|e| format!("cannot write `{}`: {e}", path.display()))
}

fn draw_legend(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
) -> Result<(), String> {
    let font = (FAMILY, 13).into_font();
    let y = LEGEND as i32 / 2;
    area.draw(&Circle::new((16, y), 5, COLOR.filled()))
        .map_err(err)?;
    area.draw(&Text::new("done", (26, y - 4), font.clone()))
        .map_err(err)?;
    area.draw(&Circle::new((86, y), 6, COLOR.stroke_width(1)))
        .map_err(err)?;
    area.draw(&Text::new("pruned or unfinished", (96, y - 4), font))
        .map_err(err)?;
    Ok(())
}

fn draw_panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    metric: &str,
    panel: &Panel,
    (ylo, yhi): (f64, f64),
) -> Result<(), String> {
    let axis = Axis::for_points(&panel.points);
    let (xlo, xhi) = match &axis {
        Axis::Categories(labels) => (-0.5, labels.len().max(1) as f64 - 0.5),
        _ => padded(panel.points.iter().map(|(x, _, _)| axis.position(x))),
    };
    let caption = match axis {
        Axis::Log => format!("{metric} by {} (log scale)", panel.param),
        _ => format!("{metric} by {}", panel.param),
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FAMILY, 16))
        .margin(12)
        .x_label_area_size(34)
        .y_label_area_size(56)
        .build_cartesian_2d(xlo..xhi, ylo..yhi)
        .map_err(err)?;
    let x_label = |v: &f64| -> String {
        match &axis {
            Axis::Linear => tick(*v),
            Axis::Log => tick(10f64.powf(*v)),
            Axis::Categories(labels) => {
                let i = v.round();
                if (v - i).abs() < 1e-6 && i >= 0.0 {
                    labels
                        .get(i as usize)
                        .map(|l| l.chars().take(12).collect())
                        .unwrap_or_default()
                } else {
                    String::new()
                }
            }
        }
    };
    let x_ticks = match &axis {
        Axis::Categories(labels) => labels.len().min(MAX_LABELS),
        _ => 6,
    };
    chart
        .configure_mesh()
        .x_desc(panel.param.as_str())
        .y_desc(metric)
        .x_labels(x_ticks)
        .x_label_formatter(&x_label)
        .y_label_formatter(&|v| tick(*v))
        .label_style((FAMILY, 12))
        .draw()
        .map_err(err)?;
    let points: Vec<(f64, f64, bool)> = panel
        .points
        .iter()
        .map(|(x, y, hollow)| (axis.position(x), *y, *hollow))
        .filter(|(x, y, _)| x.is_finite() && y.is_finite())
        .collect();
    let done = points.iter().filter(|p| !p.2).map(|&(x, y, _)| (x, y));
    chart
        .draw_series(done.map(|p| Circle::new(p, 5, COLOR.filled())))
        .map_err(err)?;
    // A white disc under the ring, so that a hollow trial stays readable over a filled one.
    let hollow: Vec<(f64, f64)> = points
        .iter()
        .filter(|p| p.2)
        .map(|&(x, y, _)| (x, y))
        .collect();
    chart
        .draw_series(hollow.iter().map(|&p| Circle::new(p, 6, WHITE.filled())))
        .map_err(err)?;
    chart
        .draw_series(
            hollow
                .iter()
                .map(|&p| Circle::new(p, 6, COLOR.stroke_width(1))),
        )
        .map_err(err)?;
    Ok(())
}

/// An axis number: short, with no trailing zeros.
fn tick(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e5) {
        return format!("{v:.1e}");
    }
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panels() -> Vec<Panel> {
        vec![
            Panel {
                param: "lr".into(),
                points: vec![
                    (X::Num(0.1), 0.9, false),
                    (X::Num(0.001), 0.7, false),
                    (X::Num(0.01), 0.95, true),
                ],
            },
            Panel {
                param: "model".into(),
                points: vec![
                    (X::Label("mlp".into()), 0.9, false),
                    (X::Label("logistic".into()), 0.7, false),
                    (X::Label("mlp".into()), 0.95, true),
                ],
            },
            Panel {
                param: "hidden".into(),
                points: vec![(X::Num(8.0), 0.9, false), (X::Num(8.0), f64::NAN, true)],
            },
        ]
    }

    #[test]
    fn writes_a_png_with_one_panel_per_param() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plot.png");
        plot_sweep(&path, "accuracy", &panels()).unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        assert!((5_000..2_000_000).contains(&size), "{size} bytes");
        let img = image::open(&path).unwrap();
        assert_eq!((img.width(), img.height()), (3 * PANEL.0, LEGEND + PANEL.1));
        // Something besides the white background was drawn in every panel.
        let rgb = img.to_rgb8();
        for p in 0..3 {
            let inked = (p as u32 * PANEL.0..(p as u32 + 1) * PANEL.0)
                .flat_map(|x| (LEGEND..LEGEND + PANEL.1).map(move |y| (x, y)))
                .filter(|&(x, y)| rgb.get_pixel(x, y).0 != [255, 255, 255])
                .count();
            assert!(inked > 1_000, "panel {p}: {inked} pixels drawn");
        }

        // Five params wrap onto a second row.
        let mut five = panels();
        five.extend(panels().into_iter().take(2));
        plot_sweep(&path, "accuracy", &five).unwrap();
        let img = image::open(&path).unwrap();
        assert_eq!(
            (img.width(), img.height()),
            (4 * PANEL.0, LEGEND + 2 * PANEL.1)
        );
    }

    #[test]
    fn axes_follow_the_values() {
        assert!(matches!(Axis::for_points(&panels()[0].points), Axis::Log));
        assert!(matches!(
            Axis::for_points(&panels()[2].points),
            Axis::Linear
        ));
        match Axis::for_points(&panels()[1].points) {
            Axis::Categories(l) => assert_eq!(l, ["mlp", "logistic"]),
            _ => panic!("labels make categories"),
        }
        let mixed = [
            (X::Num(1.0), 0.5, false),
            (X::Label("a".into()), 0.5, false),
        ];
        assert!(matches!(Axis::for_points(&mixed), Axis::Categories(_)));
        assert!(matches!(
            Axis::for_points(&[(X::Num(-1.0), 0.0, false), (X::Num(1000.0), 0.0, false)]),
            Axis::Linear
        ));
    }

    #[test]
    fn no_points_still_draws() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plot.png");
        plot_sweep(&path, "loss", &[]).unwrap();
        plot_sweep(
            &path,
            "loss",
            &[Panel {
                param: "x".into(),
                points: vec![],
            }],
        )
        .unwrap();
        assert_eq!(image::open(&path).unwrap().width(), PANEL.0);
    }
}
