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
use sluice_runner::engine::{Engine, RunOptions, Selection};
use sluice_runner::sweep::drive::{self, SweepError};
use sluice_runner::sweep::expand::Layout;
use sluice_runner::sweep::promote::write_promoted;
use sluice_runner::sweep::results::{self, SweepResults, TrialState};
use sluice_runner::sweep::spec::SweepSpec;
use sluice_runner::sweep::spec::{Direction, Method, PruneChoice, SweepOverrides};
use sluice_runner::validate::{load_with, LoadError, LoadOptions, PromotedParams};
use sluice_runner::Event;
use sluice_runner::Workspace;
use sluice_stages::sweep_plot::{plot_sweep, Panel, X};
use std::collections::BTreeMap;
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
#[derive(Debug)]
pub(crate) struct SweepRequest {
    pub pipeline: PathBuf,
    /// Laid over the pipeline's `sweep:` section (`SweepSpec::apply`), or the whole sweep when
    /// it has none (`SweepSpec::from_overrides`).
    pub overrides: SweepOverrides,
    pub executor: Option<crate::cli::ExecutorArg>,
    pub jobs: Option<usize>,
    pub gpus: Option<usize>,
    pub dry_run: bool,
    pub json: bool,
    pub remote: crate::cli::RemoteArgs,
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
            executor: a.executor,
            jobs: a.jobs,
            gpus: a.gpus,
            dry_run: a.dry_run,
            json: a.json,
            remote: a.remote.clone(),
        }
    }
}

/// Which trial `promote` sets the workspace to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pick {
    Best,
    Trial(usize),
}

/// `sluice sweep promote [ID] [--trial N | --best]`, parsed.
#[derive(Debug)]
pub(crate) struct PromoteRequest {
    /// `None`: the latest sweep.
    pub id: Option<String>,
    pub pick: Pick,
    pub json: bool,
}

impl PromoteRequest {
    fn from_args(a: &SweepPromoteArgs) -> PromoteRequest {
        PromoteRequest {
            id: a.id.clone(),
            pick: a.trial.map_or(Pick::Best, Pick::Trial),
            json: a.json,
        }
    }
}

pub(crate) fn run_sweep(
    cli: &crate::cli::Cli,
    request: &SweepRequest,
) -> Result<ExitCode, Failure> {
    let ws = crate::workspace()?;
    let registry = sluice_stages::registry();
    let file = &request.pipeline;
    let display = file.display().to_string();
    if !file.exists() {
        return Err(invalid(
            &format!("pipeline file `{display}` not found"),
            None,
        ));
    }
    // A sweep explores the pipeline as written: an earlier promotion is not layered in.
    let load = |layout: Option<&Layout>| {
        load_with(
            &LoadOptions {
                root: &ws.root,
                file,
                display: display.clone(),
                overrides: &[],
                registry: &registry,
                sweep: layout,
            },
            PromotedParams::Ignore,
        )
    };
    let base = load(None).map_err(load_failure)?;
    let spec = match &base.sweep {
        Some(section) => {
            let mut spec = section.clone();
            spec.apply(&request.overrides)
                .map_err(|e| invalid(&e, None))?;
            spec
        }
        None => SweepSpec::from_overrides(&request.overrides).map_err(|e| {
            invalid(
                &format!("{display} has no `sweep:` section, and the command line does not make one: {e}"),
                Some("add a `sweep:` section (docs/sweeps.md), or give `--param NAME=SPEC` and `--metric STAGE.METRIC`"),
            )
        })?,
    };
    let mut engine = Engine::new(ws.clone(), registry.clone());
    let prep = drive::prepare(&engine, &base, spec, &|l| load(Some(l))).map_err(|e| match e {
        SweepError::Load(e) => load_failure(e),
        other => invalid(&other.to_string(), other.help().as_deref()),
    })?;
    let rel = Path::new(".sluice").join("sweeps").join(&prep.id);
    let mut notes = vec![format!(
        "sweep `{}`: {} trial(s) ({} over {}), {} stage(s) once, {} per trial; results in {}",
        prep.id,
        prep.trials.len(),
        prep.spec.method.as_str(),
        prep.spec.varied().join(", "),
        prep.split.shared.len(),
        prep.split.per_trial.len(),
        rel.display()
    )];
    if !prep.split.left_out.is_empty() {
        notes.push(format!(
            "not run by a sweep: {} (promote a trial to run them)",
            prep.split
                .left_out
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if prep.duplicates > 0 {
        notes.push(format!(
            "{} random draw(s) repeated an earlier trial and were dropped",
            prep.duplicates
        ));
    }
    if !prep.carried.is_empty() {
        notes.push(format!(
            "{} trial(s) pruned by an earlier run of this sweep stay pruned",
            prep.carried.len()
        ));
    }
    if sluice_runner::sweep::promote::promoted_path(&base.file).exists() {
        notes.push(format!(
            "{} is not applied: a sweep explores the pipeline as written",
            sluice_runner::sweep::promote::promoted_path(Path::new(&display)).display()
        ));
    }
    if request.dry_run {
        let planned = engine
            .plan(&prep.pipeline, &Selection::default(), &[])
            .map_err(crate::engine_failure)?;
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for p in &planned {
            *counts.entry(p.decision.label()).or_default() += 1;
        }
        if request.json {
            println!(
                "{}",
                serde_json::json!({
                    "sweep": prep.id,
                    "trials": prep.trials.iter().map(|t| serde_json::json!({"trial": t.n, "params": t.params})).collect::<Vec<_>>(),
                    "shared": prep.split.shared,
                    "per_trial": prep.split.per_trial,
                    "left_out": prep.split.left_out,
                    "stages": prep.pipeline.stages.len(),
                    "plan": counts,
                })
            );
        } else {
            for n in &notes {
                eprintln!("{n}");
            }
            let plan: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
            println!(
                "{} trial(s), {} stage(s): {}",
                prep.trials.len(),
                prep.pipeline.stages.len(),
                plan.join(", ")
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let executor = crate::executor_cmd::chosen(request.executor)?;
    crate::executor_cmd::install(&mut engine, executor, &prep.pipeline)?;
    crate::remote_cmd::attach(&mut engine, &base, &request.remote)?;
    let signals = crate::SignalChannel::install()?;
    let json = request.json;
    let (ev_tx, reporter) = crate::reporter(cli, json);
    for message in notes {
        let _ = ev_tx.send(Event::Notice { message });
    }
    for message in &prep.pipeline.warnings {
        let _ = ev_tx.send(Event::Warning {
            stage: None,
            message: message.trim_end().to_string(),
        });
    }
    let outcome = drive::run(
        &engine,
        &prep,
        RunOptions {
            selection: Selection::default(),
            force: Vec::new(),
            jobs: crate::executor_cmd::jobs(request.jobs, executor),
            gpus: crate::executor_cmd::gpus(&prep.pipeline, request.gpus, executor),
            keep_going: true,
            wait: true,
            kill_grace: std::time::Duration::from_secs(5),
        },
        ev_tx,
        signals.rx.clone(),
    );
    reporter.finish();
    signals.close();
    let (results, summary) = outcome.map_err(crate::engine_failure)?;
    let plot = prep.dir.join("plot.png");
    if let Err(e) = write_plot(&results, &plot) {
        eprintln!("warning: cannot draw the sweep's plot: {e}");
    }
    if json {
        let mut v = serde_json::to_value(&results).expect("results serialize");
        v["event"] = Json::from("sweep_finished");
        println!("{v}");
    } else {
        print!("{}\n{}", results.summary(), results.table());
        println!("\nresults: {}", rel.join("results.csv").display());
        if plot.exists() {
            println!("plot:    {}", rel.join("plot.png").display());
        }
        if summary.interrupted {
            println!("interrupted: run the same `sluice sweep` again to resume (finished trials restore from the cache)");
        } else if results.best.is_some() {
            println!(
                "promote the best trial with `sluice sweep promote {}`",
                prep.id
            );
        }
    }
    let failed = results.trials.iter().any(|t| t.state == TrialState::Failed);
    Ok(if summary.interrupted {
        ExitCode::from(crate::EXIT_INTERRUPTED)
    } else if failed || !summary.ok() {
        ExitCode::from(crate::EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

/// `sluice sweep promote`: the chosen trial's params into the promoted params file, then the
/// pipeline run as `sluice run` would: every trial stage restores from the cache (same keys),
/// and what a sweep leaves out (deploy) runs once.
pub(crate) fn promote(
    cli: &crate::cli::Cli,
    request: &PromoteRequest,
) -> Result<ExitCode, Failure> {
    let ws = crate::workspace()?;
    let (id, dir) = find(&ws, request.id.as_deref())?;
    let mut results = SweepResults::load(&dir).map_err(|e| Failure::Runtime(e.into()))?;
    results.rank();
    let n = match request.pick {
        Pick::Best => results.best.ok_or_else(|| {
            invalid(
                &format!("no trial of sweep `{id}` finished with a metric; nothing to promote"),
                Some("see `sluice sweep show` for why, or run the sweep again to resume it"),
            )
        })?,
        Pick::Trial(n) => n,
    };
    let Some(trial) = results.trials.iter().find(|t| t.trial == n) else {
        return Err(invalid(
            &format!("sweep `{id}` has no trial {n}"),
            Some(&format!(
                "its trials are numbered 1 to {}",
                results.trials.len()
            )),
        ));
    };
    if trial.state != TrialState::Done {
        return Err(invalid(
            &format!(
                "trial {n} of sweep `{id}` is {}, not done",
                trial.state.as_str()
            ),
            Some("promote a finished trial: `sluice sweep show` lists them"),
        ));
    }
    let file = results.pipeline_file.clone();
    if !file.exists() {
        return Err(invalid(
            &format!("the sweep's pipeline `{}` is gone", results.pipeline),
            None,
        ));
    }
    let written = write_promoted(&file, &id, n, &trial.params)
        .map_err(|e| Failure::Runtime(anyhow::anyhow!("cannot write the promoted params: {e}")))?;
    let shown: Vec<String> = trial
        .params
        .iter()
        .map(|(k, v)| format!("{k}={}", sluice_runner::spec::matrix::value_text(v)))
        .collect();
    eprintln!(
        "promoted trial {n} of sweep `{id}` ({}): params in {}",
        shown.join(", "),
        relative(&written, &ws.root).display()
    );
    let pipeline_arg = relative(&file, &std::env::current_dir().unwrap_or_default());
    crate::run_pipeline(cli, &pipeline_arg, request.json)
}

/// `path` relative to `base` when it lies inside it.
fn relative(path: &Path, base: &Path) -> PathBuf {
    path.strip_prefix(base)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| path.to_path_buf())
}

fn load_failure(e: LoadError) -> Failure {
    match e {
        LoadError::Invalid(d) => Failure::Invalid(d.render()),
        other => Failure::Invalid(format!("error: {}\n", sluice_runner::error::chain(&other))),
    }
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
