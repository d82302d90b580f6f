//! `sluice sweep`'s front end: the flags turned into the engine's `SweepOverrides`, `show`
//! (a finished or interrupted sweep's ranked trials, from its results.json), and the plot of a
//! sweep's results. Running a sweep and promoting a trial enter through `run_sweep` and
//! `promote`.

use crate::cli::{
    PruneArg, SweepArgs, SweepCommand, SweepDirectionArg, SweepMethodArg, SweepPromoteArgs,
    SweepRunArgs, SweepShowArgs,
};
use crate::{report, Failure, DEFAULT_PIPELINE};
use serde_json::Value as Json;
use sluice_runner::sweep::results::{self, SweepResults, TrialState};
use sluice_runner::sweep::spec::{Direction, Method, PruneChoice, SweepOverrides};
use sluice_runner::Workspace;
use sluice_stages::sweep_plot::{plot_sweep, Panel, X};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub(crate) fn sweep(cli: &crate::cli::Cli, args: &SweepArgs) -> Result<ExitCode, Failure> {
    match &args.command {
        Some(SweepCommand::Show(a)) => show(a),
        Some(SweepCommand::Promote(a)) => promote(cli, &PromoteRequest::from_args(a)),
        None => run_sweep(cli, &SweepRequest::from_args(&args.run)),
    }
}

/// `sluice sweep [PIPELINE] [flags]`, parsed.
// Read by `run_sweep` once it runs sweeps.
#[allow(dead_code)]
#[derive(Debug)]
pub(crate) struct SweepRequest {
    pub pipeline: PathBuf,
    /// Laid over the pipeline's `sweep:` section (`SweepSpec::apply`), or the whole sweep when
    /// it has none (`SweepSpec::from_overrides`).
    pub overrides: SweepOverrides,
    pub jobs: Option<usize>,
    pub dry_run: bool,
    pub json: bool,
}

impl SweepRequest {
    fn from_args(a: &SweepRunArgs) -> SweepRequest {
        SweepRequest {
            pipeline: a
                .pipeline
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_PIPELINE)),
            overrides: SweepOverrides {
                method: a.method.map(|m| match m {
                    SweepMethodArg::Grid => Method::Grid,
                    SweepMethodArg::Random => Method::Random,
                }),
                trials: a.trials,
                seed: a.seed,
                params: a.params.clone(),
                metric: a.metric.clone(),
                direction: a.direction.map(|d| match d {
                    SweepDirectionArg::Max => Direction::Max,
                    SweepDirectionArg::Min => Direction::Min,
                }),
                prune: a.prune.map(|p| match p {
                    PruneArg::Median => PruneChoice::Median,
                    PruneArg::None => PruneChoice::Off,
                }),
            },
            jobs: a.jobs,
            dry_run: a.dry_run,
            json: a.json,
        }
    }
}

/// Which trial `promote` sets the workspace to.
// Read by `promote` once it promotes.
#[allow(dead_code)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pick {
    Best,
    Trial(usize),
}

/// `sluice sweep promote [ID] [--trial N | --best]`, parsed.
#[allow(dead_code)]
#[derive(Debug)]
pub(crate) struct PromoteRequest {
    /// `None`: the latest sweep.
    pub id: Option<String>,
    pub pick: Pick,
}

impl PromoteRequest {
    fn from_args(a: &SweepPromoteArgs) -> PromoteRequest {
        PromoteRequest {
            id: a.id.clone(),
            pick: a.trial.map_or(Pick::Best, Pick::Trial),
        }
    }
}

pub(crate) fn run_sweep(
    _cli: &crate::cli::Cli,
    _request: &SweepRequest,
) -> Result<ExitCode, Failure> {
    Err(Failure::Runtime(anyhow::anyhow!(
        "`sluice sweep` is not implemented yet"
    )))
}

pub(crate) fn promote(
    _cli: &crate::cli::Cli,
    _request: &PromoteRequest,
) -> Result<ExitCode, Failure> {
    Err(Failure::Runtime(anyhow::anyhow!(
        "`sluice sweep promote` is not implemented yet"
    )))
}

/// The sweep `id` names, or the latest one; its directory.
pub(crate) fn find(ws: &Workspace, id: Option<&str>) -> Result<(String, PathBuf), Failure> {
    let known = results::known(ws);
    let id = match id {
        Some(id) => id.to_string(),
        None => known.last().cloned().ok_or_else(|| {
            invalid(
                "no sweep has results in this workspace",
                Some("run one with `sluice sweep PIPELINE`"),
            )
        })?,
    };
    if !known.contains(&id) {
        let hint = if known.is_empty() {
            "no sweep has results in this workspace; run one with `sluice sweep PIPELINE`"
                .to_string()
        } else {
            let mut latest_first = known.clone();
            latest_first.reverse();
            format!("known sweeps (latest first): {}", latest_first.join(", "))
        };
        return Err(invalid(
            &format!("no sweep `{id}` in this workspace"),
            Some(&hint),
        ));
    }
    let dir = results::sweeps_dir(ws).join(&id);
    Ok((id, dir))
}

fn invalid(message: &str, hint: Option<&str>) -> Failure {
    Failure::Invalid(format!("error: {}\n", report::with_hint(message, hint)))
}

fn show(args: &SweepShowArgs) -> Result<ExitCode, Failure> {
    let ws = crate::workspace()?;
    let (id, dir) = find(&ws, args.id.as_deref())?;
    let mut results = SweepResults::load(&dir).map_err(|e| Failure::Runtime(e.into()))?;
    // Ranked again so that results written before the sweep finished read the same way.
    results.rank();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&results).expect("results serialize")
        );
        return Ok(ExitCode::SUCCESS);
    }
    // Results written by a sweep that stopped before drawing, or by an older sluice, get their
    // plot here; a plot that cannot be drawn is not worth failing `show` for.
    let plot = dir.join("plot.png");
    if is_older(&plot, &dir.join("results.json")) {
        if let Err(e) = write_plot(&results, &plot) {
            eprintln!("warning: {e}");
        }
    }
    let rel = Path::new(".sluice").join("sweeps").join(&id);
    print!("{}\n{}", results.summary(), results.table());
    println!("\nresults: {}", rel.join("results.csv").display());
    if plot.exists() {
        println!("plot:    {}", rel.join("plot.png").display());
    }
    Ok(ExitCode::SUCCESS)
}

/// True when `file` is missing or was modified before `than`.
fn is_older(file: &Path, than: &Path) -> bool {
    let modified = |p: &Path| p.metadata().and_then(|m| m.modified()).ok();
    match (modified(file), modified(than)) {
        (Some(a), Some(b)) => a < b,
        _ => true,
    }
}

/// `plot.png`: the sweep's metric against each varied param, for every trial with a metric.
pub(crate) fn write_plot(results: &SweepResults, path: &Path) -> Result<(), String> {
    // In trial order, so that a categorical axis lists its values as the sweep met them.
    let mut trials: Vec<_> = results.trials.iter().collect();
    trials.sort_by_key(|t| t.trial);
    let panels: Vec<Panel> = results
        .varied
        .iter()
        .map(|param| Panel {
            param: param.clone(),
            points: trials
                .iter()
                .filter_map(|t| {
                    let metric = t.metric.filter(|m| m.is_finite())?;
                    let x = match t.params.get(param)? {
                        Json::Number(n) => X::Num(n.as_f64()?),
                        Json::String(s) => X::Label(s.clone()),
                        other => X::Label(other.to_string()),
                    };
                    Some((x, metric, t.state != TrialState::Done))
                })
                .collect(),
        })
        .collect();
    plot_sweep(path, &results.metric.name, &panels)
}
