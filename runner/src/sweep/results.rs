//! `SweepResults`: every trial of one sweep with its params, state and metrics, ranked by the
//! sweep's metric. Written as `.sluice/sweeps/<id>/results.json` (read back by `sluice sweep
//! show` and `promote`) and `results.csv` (for spreadsheets), and rendered as a terminal table.

use super::spec::{Direction, Method};
use crate::workspace::Workspace;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A results file larger than this is refused rather than read into memory.
pub const MAX_RESULTS_BYTES: u64 = 64 * 1024 * 1024;
/// Rows `table` prints before pointing to the CSV file.
const TABLE_ROWS: usize = 40;

/// How a trial ended; the order is the ranking's order after the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialState {
    Done,
    /// Stopped early by the pruning rule: not a failure.
    Pruned,
    Failed,
    Cancelled,
    /// Not run (yet): the sweep was interrupted first.
    Pending,
}

impl TrialState {
    pub fn as_str(self) -> &'static str {
        match self {
            TrialState::Done => "done",
            TrialState::Pruned => "pruned",
            TrialState::Failed => "failed",
            TrialState::Cancelled => "cancelled",
            TrialState::Pending => "pending",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialResult {
    pub trial: usize,
    /// 1 for the best; set by `SweepResults::rank`.
    pub rank: usize,
    pub params: BTreeMap<String, Json>,
    pub state: TrialState,
    /// The sweep's metric, when the trial's metric stage finished and reported it.
    pub metric: Option<f64>,
    /// Every metric of the metric stage.
    pub metrics: BTreeMap<String, Json>,
    pub duration_ms: Option<u64>,
    /// Epochs the trial's training ran (fewer than asked when pruned).
    pub epochs: Option<u64>,
    /// Why it failed or was pruned.
    pub message: Option<String>,
}

/// The metric a sweep optimizes, as results.json spells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricGoal {
    pub stage: String,
    pub name: String,
    pub direction: Direction,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepResults {
    pub sweep: String,
    /// The pipeline file as the user named it (workspace-relative when it was).
    pub pipeline: String,
    pub pipeline_file: PathBuf,
    pub method: Method,
    pub metric: MetricGoal,
    /// The varied params, in the spec's order (the table's and the CSV's columns).
    pub varied: Vec<String>,
    pub interrupted: bool,
    /// The best done trial's number.
    pub best: Option<usize>,
    /// In rank order once ranked.
    pub trials: Vec<TrialResult>,
}

#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{}` is {size} bytes, more than the {MAX_RESULTS_BYTES} a sweep's results may take", path.display())]
    TooLarge { path: PathBuf, size: u64 },
    #[error("`{}` is not a sweep's results: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write `{}`: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `.sluice/sweeps`: one directory per sweep id.
pub fn sweeps_dir(ws: &Workspace) -> PathBuf {
    ws.dir.join("sweeps")
}

/// The ids of the sweeps in this workspace that have written results, oldest first.
pub fn known(ws: &Workspace) -> Vec<String> {
    let mut found: Vec<(std::time::SystemTime, String)> = Vec::new();
    let Ok(entries) = std::fs::read_dir(sweeps_dir(ws)) else {
        return Vec::new();
    };
    for e in entries.flatten() {
        let Ok(id) = e.file_name().into_string() else {
            continue;
        };
        if let Ok(modified) = e
            .path()
            .join("results.json")
            .metadata()
            .and_then(|m| m.modified())
        {
            found.push((modified, id));
        }
    }
    found.sort();
    found.into_iter().map(|(_, id)| id).collect()
}

/// The sweep whose results were written last.
pub fn latest(ws: &Workspace) -> Option<String> {
    known(ws).pop()
}

impl SweepResults {
    /// Orders the trials: done ones by the metric (per the direction, ties and missing values
    /// after, by trial number), then pruned, failed, cancelled and pending ones by number. Sets
    /// each `rank` and `best`.
    pub fn rank(&mut self) {
        let direction = self.metric.direction;
        let value = |t: &TrialResult| t.metric.filter(|m| m.is_finite());
        self.trials.sort_by(|a, b| {
            a.state.cmp(&b.state).then_with(|| {
                let by_metric = if a.state == TrialState::Done {
                    match (value(a), value(b)) {
                        (Some(x), Some(y)) => match direction {
                            Direction::Max => y.total_cmp(&x),
                            Direction::Min => x.total_cmp(&y),
                        },
                        (Some(_), None) => std::cmp::Ordering::Less,
                        (None, Some(_)) => std::cmp::Ordering::Greater,
                        (None, None) => std::cmp::Ordering::Equal,
                    }
                } else {
                    std::cmp::Ordering::Equal
                };
                by_metric.then(a.trial.cmp(&b.trial))
            })
        });
        for (i, t) in self.trials.iter_mut().enumerate() {
            t.rank = i + 1;
        }
        self.best = self
            .trials
            .first()
            .filter(|t| t.state == TrialState::Done && value(t).is_some())
            .map(|t| t.trial);
    }

    /// `results.json` and `results.csv` in `dir`, each written atomically.
    pub fn write(&self, dir: &Path) -> Result<(), ResultsError> {
        let json = serde_json::to_string_pretty(self).expect("results serialize") + "\n";
        for (name, text) in [("results.json", json), ("results.csv", self.csv())] {
            let path = dir.join(name);
            crate::atomic::write(&path, text.as_bytes())
                .map_err(|source| ResultsError::Write { path, source })?;
        }
        Ok(())
    }

    /// Reads `dir/results.json`.
    pub fn load(dir: &Path) -> Result<SweepResults, ResultsError> {
        use std::io::Read as _;
        let path = dir.join("results.json");
        let read = |source| ResultsError::Read {
            path: path.clone(),
            source,
        };
        let file = std::fs::File::open(&path).map_err(read)?;
        let size = file.metadata().map_err(read)?.len();
        if size > MAX_RESULTS_BYTES {
            return Err(ResultsError::TooLarge { path, size });
        }
        let mut text = String::new();
        // Bounded again while reading, in case the file grew after its size was taken.
        file.take(MAX_RESULTS_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(read)?;
        serde_json::from_str(&text).map_err(|source| ResultsError::Parse { path, source })
    }

    /// The names of the metrics besides the sweep's own that some trial reported as a scalar,
    /// sorted: the CSV's last columns.
    fn other_metrics(&self) -> Vec<String> {
        let mut names = BTreeSet::new();
        for t in &self.trials {
            for (k, v) in &t.metrics {
                if *k != self.metric.name && !v.is_object() && !v.is_array() {
                    names.insert(k.clone());
                }
            }
        }
        names.into_iter().collect()
    }

    /// rank, trial, state, the metric, each varied param, duration_s, epochs, other metrics.
    pub fn csv(&self) -> String {
        let others = self.other_metrics();
        let mut header: Vec<String> = ["rank", "trial", "state", &self.metric.name]
            .iter()
            .map(|s| s.to_string())
            .collect();
        header.extend(self.varied.iter().cloned());
        header.extend(["duration_s".to_string(), "epochs".to_string()]);
        header.extend(others.iter().cloned());
        let mut out = String::new();
        push_row(&mut out, &header);
        for t in &self.trials {
            let mut row = vec![
                t.rank.to_string(),
                t.trial.to_string(),
                t.state.as_str().to_string(),
                t.metric.map(|m| m.to_string()).unwrap_or_default(),
            ];
            row.extend(self.varied.iter().map(|p| cell(t.params.get(p))));
            row.push(
                t.duration_ms
                    .map(|ms| format!("{:.3}", ms as f64 / 1000.0))
                    .unwrap_or_default(),
            );
            row.push(t.epochs.map(|e| e.to_string()).unwrap_or_default());
            row.extend(others.iter().map(|m| cell(t.metrics.get(m))));
            push_row(&mut out, &row);
        }
        out
    }

    /// One line: the sweep, its pipeline, how many trials ended how, and the best.
    pub fn summary(&self) -> String {
        let mut counts: BTreeMap<TrialState, usize> = BTreeMap::new();
        for t in &self.trials {
            *counts.entry(t.state).or_default() += 1;
        }
        let states: Vec<String> = counts
            .iter()
            .map(|(s, n)| format!("{n} {}", s.as_str()))
            .collect();
        let mut line = format!(
            "sweep {} ({}, {} over {}): {} trial{}, {}",
            self.sweep,
            self.pipeline,
            self.method.as_str(),
            self.varied.join(", "),
            self.trials.len(),
            if self.trials.len() == 1 { "" } else { "s" },
            states.join(", ")
        );
        if self.interrupted {
            line.push_str(" (interrupted)");
        }
        line.push('\n');
        match self
            .best
            .and_then(|b| self.trials.iter().find(|t| t.trial == b))
        {
            Some(t) => {
                let _ = writeln!(
                    line,
                    "best: trial {} with {} {} ({} is better)",
                    t.trial,
                    self.metric.name,
                    t.metric.map(number).unwrap_or_default(),
                    match self.metric.direction {
                        Direction::Max => "higher",
                        Direction::Min => "lower",
                    }
                );
            }
            None => line.push_str("best: none (no trial finished with the metric)\n"),
        }
        line
    }

    /// An aligned table for a terminal: rank, trial, the varied params, the metric, state and
    /// duration; at most `TABLE_ROWS` rows, then how many more the CSV file has.
    pub fn table(&self) -> String {
        let mut header = vec!["rank".to_string(), "trial".to_string()];
        header.extend(self.varied.iter().cloned());
        header.extend([
            self.metric.name.clone(),
            "state".to_string(),
            "duration".to_string(),
        ]);
        // Numbers read best right-aligned; text (params that are names, states) left.
        let mut right = vec![true, true];
        right.extend(self.varied.iter().map(|p| {
            self.trials
                .iter()
                .all(|t| t.params.get(p).is_none_or(Json::is_number))
        }));
        right.extend([true, false, true]);
        let rows: Vec<Vec<String>> = self
            .trials
            .iter()
            .take(TABLE_ROWS)
            .map(|t| {
                let mut row = vec![t.rank.to_string(), t.trial.to_string()];
                row.extend(self.varied.iter().map(|p| text(t.params.get(p))));
                row.push(t.metric.map(number).unwrap_or_else(|| "-".into()));
                row.push(t.state.as_str().to_string());
                row.push(t.duration_ms.map(duration).unwrap_or_else(|| "-".into()));
                row
            })
            .collect();
        let widths: Vec<usize> = (0..header.len())
            .map(|c| {
                std::iter::once(&header)
                    .chain(&rows)
                    .map(|r| r[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&rows) {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c > 0 {
                    line.push_str("  ");
                }
                let pad = widths[c] - cell.chars().count();
                if right[c] {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        if self.trials.len() > TABLE_ROWS {
            let _ = writeln!(
                out,
                "… {} more (see results.csv)",
                self.trials.len() - TABLE_ROWS
            );
        }
        out
    }
}

/// A param or metric value as a table shows it: text without quotes, numbers as JSON has them.
fn text(v: Option<&Json>) -> String {
    match v {
        None | Some(Json::Null) => "-".into(),
        Some(Json::String(s)) => s.clone(),
        Some(Json::Number(n)) => match n.as_f64() {
            Some(f) if !n.is_i64() && !n.is_u64() => number(f),
            _ => n.to_string(),
        },
        Some(other) => other.to_string(),
    }
}

/// Four significant digits in plain notation where that reads well, else scientific.
fn number(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return x.to_string();
    }
    let magnitude = x.abs().log10().floor() as i32;
    if (-4..6).contains(&magnitude) {
        let decimals = (3 - magnitude).max(0) as usize;
        let s = format!("{x:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        format!("{x:.3e}")
    }
}

/// `850ms`, `12.3s`, `4m05s`, `2h03m`.
fn duration(ms: u64) -> String {
    let s = ms / 1000;
    if ms < 1000 {
        format!("{ms}ms")
    } else if s < 60 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    }
}

/// A CSV cell: full precision, text unquoted unless CSV needs the quotes.
fn cell(v: Option<&Json>) -> String {
    match v {
        None | Some(Json::Null) => String::new(),
        Some(Json::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn push_row(out: &mut String, cells: &[String]) {
    for (i, c) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if c.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&c.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(c);
        }
    }
    out.push('\n');
}

#[cfg(test)]
#[path = "results_tests.rs"]
mod tests;
