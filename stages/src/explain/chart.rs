//! The importance bar chart: one horizontal bar per raw column, most important on top, its
//! length the mean metric drop and a whisker of ± one standard deviation. Drawn by hand on the
//! canvas `evaluate`'s plots use (its `png` helper, embedded font), since a bar per name with
//! negative values is simpler drawn than fitted into a plotters chart.

use super::importance::Importance;
use crate::evaluate::plots::{err, png, DrawResult, FAMILY};
use plotters::prelude::*;
use std::path::Path;

const LABELS: i32 = 180;
const PLOT: i32 = 460;
const BAR: i32 = 26;
const TOP: i32 = 50;

/// Draws `ranked` (already in rank order) with `metric` named in the title.
pub(crate) fn bars(path: &Path, ranked: &[Importance], metric: &str) -> DrawResult<()> {
    let lo = ranked
        .iter()
        .map(|i| i.overall.mean - i.overall.std)
        .fold(0.0, f64::min);
    let hi = ranked
        .iter()
        .map(|i| i.overall.mean + i.overall.std)
        .fold(0.0, f64::max);
    let span = (hi - lo).max(1e-9);
    let x = |v: f64| LABELS + ((v - lo) / span * PLOT as f64).round() as i32;
    let height = TOP + BAR * ranked.len().max(1) as i32 + 40;
    png(path, ((LABELS + PLOT + 30) as u32, height as u32), |root| {
        root.draw(&Text::new(
            format!("Permutation importance (drop in {metric}, mean ± std)"),
            (10, 10),
            (FAMILY, 16).into_font(),
        ))
        .map_err(err)?;
        let zero = x(0.0);
        for (row, imp) in ranked.iter().enumerate() {
            let top = TOP + row as i32 * BAR;
            let name: String = imp.group.name.chars().take(22).collect();
            root.draw(&Text::new(
                name,
                (8, top + BAR / 2 - 7),
                (FAMILY, 13).into_font(),
            ))
            .map_err(err)?;
            let end = x(imp.overall.mean);
            root.draw(&Rectangle::new(
                [(zero.min(end), top + 4), (zero.max(end), top + BAR - 4)],
                RGBColor(70, 110, 200).filled(),
            ))
            .map_err(err)?;
            let (a, b) = (
                x(imp.overall.mean - imp.overall.std),
                x(imp.overall.mean + imp.overall.std),
            );
            let mid = top + BAR / 2;
            root.draw(&PathElement::new(
                [(a, mid), (b, mid)],
                BLACK.stroke_width(1),
            ))
            .map_err(err)?;
            for end in [a, b] {
                root.draw(&PathElement::new(
                    [(end, mid - 4), (end, mid + 4)],
                    BLACK.stroke_width(1),
                ))
                .map_err(err)?;
            }
        }
        let bottom = TOP + BAR * ranked.len() as i32;
        root.draw(&PathElement::new(
            [(zero, TOP - 4), (zero, bottom + 4)],
            BLACK.stroke_width(1),
        ))
        .map_err(err)?;
        // Zero and the ends, leaving out an end too close to zero for its label to fit.
        let ticks = [lo, 0.0, hi]
            .into_iter()
            .filter(|&v| v == 0.0 || (x(v) - zero).abs() > 60);
        for v in ticks {
            root.draw(&Text::new(
                format!("{v:.3}"),
                (x(v) - 16, bottom + 10),
                (FAMILY, 12).into_font(),
            ))
            .map_err(err)?;
        }
        Ok(())
    })
}
