//! The `sluice` binary: parses arguments, loads the pipeline, calls the engine, renders its
//! events, and maps the outcome to an exit code. No engine logic lives here.

mod cli;
mod executor_cmd;
mod gpus;
mod metrics;
mod remote_cmd;
mod report;
mod serve;
mod setup;
mod stage_cmd;
mod sweep_cmd;
mod watch_cmd;

use anyhow::Context as _;
use clap::Parser;
use cli::{Cli, Command, DagFormatArg, LogFormat, PipelineArgs};
use sluice_runner::cache::{CacheStore, GcOptions, GcStats};
use sluice_runner::plan::{Decision, Planned};
use sluice_runner::render::{render_dag, DagFormat};
use sluice_runner::{
    Engine, EngineError, Event, LoadError, LoadOptions, Pipeline, RunOptions, Selection,
    StageError, Workspace,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Exit codes: one mapping, here.
const EXIT_FAILED: u8 = 1;
const EXIT_INVALID: u8 = 2;
const EXIT_INTERRUPTED: u8 = 130;

const DEFAULT_PIPELINE: &str = "sluice.yaml";

/// Errors classified at the edge.
enum Failure {
    /// The pipeline or the command line is wrong: exit 2.
    Invalid(String),
    /// Something went wrong while working: exit 1.
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(e)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Guard(g) = &cli.command {
        return match sluice_runner::exec::guard::serve(g.owner, g.start, g.pgid) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::from(EXIT_FAILED),
        };
    }
    // Every process this sluice starts is killed when it exits, by a guardian running this
    // same executable (`/proc/self/exe` stays valid even if the file is replaced meanwhile).
    sluice_runner::exec::guard::enable(Path::new("/proc/self/exe"));
    serve::memory::tune();
    init_logging(&cli);
    if matches!(
        cli.command,
        Command::Metrics(_) | Command::Schema | Command::Dag(_) | Command::Status(_)
    ) {
        // Commands that only print: `sluice status --json | head` ends quietly when `head`
        // closes the pipe, like other Unix tools, instead of panicking in `println!`. Not for
        // commands that start processes: a stage closing its stdin early must not kill sluice.
        // SAFETY: restoring a signal's default disposition before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    if let Some(dir) = &cli.dir {
        if let Err(e) = std::env::set_current_dir(dir) {
            eprintln!("error: cannot enter `{}`: {e}", dir.display());
            return ExitCode::from(EXIT_INVALID);
        }
    }
    let outcome = dispatch(&cli);
    // Every temporary this process made is in place or gone: the next run need not look for them.
    sluice_runner::atomic::retire();
    match outcome {
        Ok(code) => code,
        Err(Failure::Invalid(text)) => {
            eprint!("{text}");
            if !text.ends_with('\n') {
                eprintln!();
            }
            ExitCode::from(EXIT_INVALID)
        }
        Err(Failure::Runtime(e)) => {
            let hint = e.chain().find_map(|cause| {
                cause
                    .downcast_ref::<EngineError>()
                    .and_then(EngineError::help)
                    .or_else(|| cause.downcast_ref::<StageError>()?.hint.clone())
            });
            eprintln!(
                "error: {}",
                report::with_hint(&format!("{e:#}"), hint.as_deref())
            );
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let default = if cli.quiet {
        "error"
    } else {
        match cli.verbose {
            // `serve` logs each request at info.
            0 if matches!(cli.command, Command::Serve(_)) => "warn,sluice=info",
            0 => "warn",
            1 => "debug",
            _ => "trace",
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(report::color_enabled(cli.color));
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn dispatch(cli: &Cli) -> Result<ExitCode, Failure> {
    match &cli.command {
        Command::Metrics(args) => {
            let file = args
                .pipeline
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_PIPELINE));
            let (_, pipeline) = open(&file, &[])?;
            print_promoted(&pipeline);
            if !metrics::print(&pipeline, args.json, args.diff) {
                return Err(Failure::Invalid(format!(
                    "error: `{}` has no evaluate stage\n",
                    pipeline.display_file
                )));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Setup(args) => {
            setup::run(args.cuda)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema => {
            let schema = sluice_runner::schema::pipeline_schema(&sluice_stages::registry());
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).expect("schemas serialize")
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Dag(args) => {
            let file = args
                .pipeline
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_PIPELINE));
            let (_, pipeline) = open(&file, &[])?;
            print_promoted(&pipeline);
            let format = match args.format {
                DagFormatArg::Text => DagFormat::Text,
                DagFormatArg::Dot => DagFormat::Dot,
                DagFormatArg::Mermaid => DagFormat::Mermaid,
            };
            print!("{}", render_dag(&pipeline, format));
            Ok(ExitCode::SUCCESS)
        }
        Command::Gc(args) => {
            let engine = Engine::new(workspace()?, sluice_stages::registry());
            let stats = engine
                .gc(GcOptions {
                    dry_run: args.dry_run,
                    verify: args.verify,
                })
                .map_err(|e| Failure::Runtime(e.into()))?;
            print!("{}", gc_report(&stats, args.dry_run, args.verify));
            Ok(ExitCode::SUCCESS)
        }
        Command::Cache(args) => remote_cmd::cache(args),
        Command::Status(args) => {
            let (file, stages) = split_args(&args.args);
            let (mut engine, pipeline) = open(&file, &overrides(&args.pipeline)?)?;
            print_warnings(&pipeline);
            // Without `--remote`, status stays off the network.
            if args.remote {
                let remote = cli::RemoteArgs {
                    no_remote: false,
                    remote_required: true,
                };
                remote_cmd::attach_as(&mut engine, &pipeline, &remote, "--remote")?;
            }
            let planned = engine
                .plan(
                    &pipeline,
                    &Selection {
                        targets: stages,
                        downstream: false,
                    },
                    &[],
                )
                .map_err(engine_failure)?;
            print_plan(&pipeline, &planned, engine.store.as_ref(), args.json, false);
            Ok(ExitCode::SUCCESS)
        }
        // The data stages run one after another in these processes: keeping the memory one frees
        // for the next is worth its process-wide allocator setting (see the function). `serve`
        // runs no data stage and must not sit on freed memory between requests.
        Command::Run(args) => {
            sluice_stages::keep_freed_memory_for_data_stages();
            run(cli, args)
        }
        Command::Watch(args) => {
            sluice_stages::keep_freed_memory_for_data_stages();
            watch_cmd::watch(cli, args)
        }
        Command::Serve(args) => serve(args),
        Command::Sweep(args) => sweep_cmd::sweep(cli, args),
        // Handled in `main`, before anything else happens.
        Command::Guard(_) => Ok(ExitCode::SUCCESS),
        // The same allocator setting as `run`, so the stage performs as it does in-process.
        Command::Stage(args) => {
            sluice_stages::keep_freed_memory_for_data_stages();
            stage_cmd::run_stage(&args.job)
        }
    }
}

fn serve(args: &cli::ServeArgs) -> Result<ExitCode, Failure> {
    for (flag, value) in [
        ("--poll", args.poll),
        ("--header-timeout", args.header_timeout),
        ("--idle-timeout", args.idle_timeout),
    ] {
        if !(value.is_finite() && value > 0.0 && value < 1e9) {
            return Err(Failure::Invalid(format!(
                "error: `{flag}` must be a positive number of seconds"
            )));
        }
    }
    if args.max_connections == 0 {
        return Err(Failure::Invalid(
            "error: `--max-connections` must be at least 1".into(),
        ));
    }
    if args.threads == Some(0) {
        return Err(Failure::Invalid(
            "error: `--threads` must be at least 1".into(),
        ));
    }
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    serve::run(serve::Options {
        target: args.target.clone(),
        addr: args.addr,
        max_body: args.max_body,
        threads,
        poll: Duration::from_secs_f64(args.poll),
        limits: serve::Limits {
            max_connections: args.max_connections,
            header_timeout: Duration::from_secs_f64(args.header_timeout),
            idle_timeout: Duration::from_secs_f64(args.idle_timeout),
        },
    })
    .map_err(|e| match e {
        serve::ServeFailure::Invalid(text) => Failure::Invalid(text),
        serve::ServeFailure::Runtime(e) => Failure::Runtime(e),
    })?;
    Ok(ExitCode::SUCCESS)
}

fn run(cli: &Cli, args: &cli::RunArgs) -> Result<ExitCode, Failure> {
    let (file, stages) = split_args(&args.args);
    let (mut engine, pipeline) = open(&file, &overrides(&args.pipeline)?)?;
    let selection = Selection {
        targets: stages,
        downstream: args.downstream,
    };
    let executor = executor_cmd::chosen(args.executor)?;
    if args.dry_run {
        print_warnings(&pipeline);
        let planned = engine
            .plan(&pipeline, &selection, &args.force)
            .map_err(engine_failure)?;
        print_plan(&pipeline, &planned, engine.store.as_ref(), args.json, true);
        return Ok(ExitCode::SUCCESS);
    }
    executor_cmd::install(&mut engine, executor, &pipeline)?;
    remote_cmd::attach(&mut engine, &pipeline, &args.remote)?;
    let jobs = executor_cmd::jobs(args.jobs, executor);
    let kill_grace = args.kill_grace;
    let gpus = executor_cmd::gpus(&pipeline, args.gpus, executor);
    let signals = SignalChannel::install()?;
    let sig_rx = signals.rx.clone();

    let (ev_tx, reporter) = reporter(cli, args.json);
    // Validation's warnings and the promotion's notice go with the run's events: in `--json`
    // they are events too.
    if let Some(p) = &pipeline.promoted {
        let _ = ev_tx.send(Event::Notice {
            message: p.notice(&pipeline.params),
        });
    }
    for message in &pipeline.warnings {
        let _ = ev_tx.send(Event::Warning {
            stage: None,
            message: message.trim_end().to_string(),
        });
    }
    let result = engine.run(
        Arc::new(pipeline),
        RunOptions {
            selection,
            force: args.force.clone(),
            jobs,
            gpus,
            keep_going: args.keep_going,
            wait: !args.no_wait,
            kill_grace,
        },
        ev_tx,
        sig_rx,
    );
    reporter.finish();
    signals.close();
    let summary = result.map_err(engine_failure)?;
    Ok(if summary.interrupted {
        ExitCode::from(EXIT_INTERRUPTED)
    } else if summary.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    })
}

/// `--jobs`, defaulting to the number of CPUs.
/// `sluice run PIPELINE` with no other flags (what `sweep promote` runs after writing the
/// promoted params).
fn run_pipeline(cli: &Cli, file: &Path, json: bool) -> Result<ExitCode, Failure> {
    run(
        cli,
        &cli::RunArgs {
            args: vec![file.display().to_string()],
            pipeline: PipelineArgs { set: Vec::new() },
            remote: cli::RemoteArgs::default(),
            executor: None,
            jobs: None,
            gpus: None,
            keep_going: false,
            downstream: false,
            force: Vec::new(),
            dry_run: false,
            no_wait: false,
            json,
            kill_grace: Duration::from_secs(5),
        },
    )
}

/// The events' channel and the thread that shows them: JSON lines on stdout with `--json`, the
/// live display otherwise. [`Reporter::finish`] once every sender is dropped.
fn reporter(cli: &Cli, json: bool) -> (crossbeam_channel::Sender<Event>, Reporter) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let style = report::Style::for_cli(cli, json);
    let thread = std::thread::spawn(move || {
        if json {
            report::json(rx)
        } else {
            report::human(rx, style)
        }
    });
    (tx, Reporter(thread))
}

/// The thread that shows the events (see `report::batches` for why it must be woken to end).
struct Reporter(std::thread::JoinHandle<()>);

impl Reporter {
    /// Shows what is left and waits for it; call it once every sender has been dropped.
    fn finish(self) {
        self.0.thread().unpark();
        let _ = self.0.join();
    }
}

fn jobs(arg: Option<usize>) -> usize {
    arg.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}

/// The GPUs to hand out. Asking nvidia-smi costs tens of milliseconds on a GPU host: only when a
/// stage wants a GPU.
fn gpus_for(pipeline: &Pipeline, arg: Option<usize>) -> Vec<String> {
    if arg.is_some() || pipeline.stages.iter().any(|s| s.gpus > 0) {
        gpus::detect(arg)
    } else {
        Vec::new()
    }
}

/// SIGINT and SIGTERM as messages, for the engine's dispatcher (or the watch loop).
struct SignalChannel {
    rx: crossbeam_channel::Receiver<i32>,
    handle: signal_hook::iterator::Handle,
    thread: std::thread::JoinHandle<()>,
}

impl SignalChannel {
    fn install() -> Result<SignalChannel, Failure> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ])
        .context("cannot install signal handlers")?;
        let handle = signals.handle();
        let thread = std::thread::spawn(move || {
            for s in signals.forever() {
                if tx.send(s).is_err() {
                    break;
                }
            }
        });
        Ok(SignalChannel { rx, handle, thread })
    }

    fn close(self) {
        self.handle.close();
        let _ = self.thread.join();
    }
}

fn engine_failure(e: EngineError) -> Failure {
    match e {
        EngineError::UnknownStage { .. } | EngineError::ForceOutsideSelection { .. } => {
            Failure::Invalid(format!(
                "error: {}\n",
                report::with_hint(&e.to_string(), e.help().as_deref())
            ))
        }
        other => Failure::Runtime(other.into()),
    }
}

/// `[PIPELINE] [STAGE...]`: the first word is the pipeline when it names a YAML file.
fn split_args(args: &[String]) -> (PathBuf, Vec<String>) {
    match args.first() {
        Some(first)
            if first.ends_with(".yaml")
                || first.ends_with(".yml")
                || Path::new(first).is_file() =>
        {
            (PathBuf::from(first), args[1..].to_vec())
        }
        _ => (PathBuf::from(DEFAULT_PIPELINE), args.to_vec()),
    }
}

fn overrides(args: &PipelineArgs) -> Result<Vec<(String, String)>, Failure> {
    args.set
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
            _ => Err(Failure::Invalid(format!(
                "error: {}\n",
                report::with_hint(
                    &format!("`--set {kv}` is not NAME=VALUE"),
                    Some("e.g. `--set epochs=10`")
                )
            ))),
        })
        .collect()
}

fn workspace() -> Result<Workspace, Failure> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let ws = Workspace::open(&cwd)
        .with_context(|| format!("cannot open workspace `{}`", cwd.display()))?;
    sluice_runner::atomic::announce_temporaries_in(&ws.writers_dir());
    Ok(ws)
}

fn open(file: &Path, overrides: &[(String, String)]) -> Result<(Engine, Pipeline), Failure> {
    let ws = workspace()?;
    let registry = sluice_stages::registry();
    let display = file.display().to_string();
    if !file.exists() {
        let hint = (file == Path::new(DEFAULT_PIPELINE)).then_some(
            "name a pipeline file (e.g. `sluice run pipelines/quickstart.yaml`) or create sluice.yaml",
        );
        return Err(Failure::Invalid(format!(
            "error: {}\n",
            report::with_hint(&format!("pipeline file `{display}` not found"), hint)
        )));
    }
    let started = std::time::Instant::now();
    let pipeline = sluice_runner::load(&LoadOptions {
        root: &ws.root,
        file,
        display,
        overrides,
        registry: &registry,
        sweep: None,
    })
    .map_err(|e| match e {
        LoadError::Invalid(d) => Failure::Invalid(d.render()),
        other => Failure::Invalid(format!("error: {}\n", sluice_runner::error::chain(&other))),
    })?;
    tracing::debug!(
        stages = pipeline.stages.len(),
        ms = started.elapsed().as_millis() as u64,
        "pipeline loaded and validated"
    );
    let mut engine = Engine::new(ws, registry);
    stage_cmd::choose_debug_executor(&mut engine);
    Ok((engine, pipeline))
}

/// The promotion's notice, on stderr: every command that loads a pipeline says where its params
/// came from when they are not all its own.
fn print_promoted(pipeline: &Pipeline) {
    if let Some(p) = &pipeline.promoted {
        eprintln!("note: {}", p.notice(&pipeline.params));
    }
}

/// The promotion's notice and validation's warnings on stderr, for commands that show no run
/// events.
pub(crate) fn print_warnings(pipeline: &Pipeline) {
    print_promoted(pipeline);
    for message in &pipeline.warnings {
        eprintln!("warning: {message}");
    }
}

fn print_plan(
    pipeline: &Pipeline,
    planned: &[Planned],
    store: &dyn CacheStore,
    json: bool,
    dry_run: bool,
) {
    let remote = |d: &Decision| matches!(d, Decision::Restore(r) if store.is_remote(&r.key));
    if json {
        let rows: Vec<serde_json::Value> = planned
            .iter()
            .map(|p| {
                let (state, reasons) = state_of(&p.decision, remote(&p.decision));
                // `reason` is the first of `reasons`, as it was before the list existed.
                let (reason, reasons) = match &p.decision {
                    Decision::Run(why) => (Some(why.first().to_string()), why.lines()),
                    _ => (reasons.clone(), reasons.into_iter().collect()),
                };
                let stage = &pipeline.stages[p.idx];
                let mut row = serde_json::json!({
                    "stage": stage.id.0,
                    "state": state,
                    "reason": reason,
                    "reasons": reasons,
                    "key": p.key.map(|k| k.hex()),
                });
                if remote(&p.decision) {
                    row["from"] = "remote".into();
                }
                // A matrix instance also says which stage it is an instance of, and its values.
                if !stage.bindings.is_empty() {
                    row["base"] = stage.base.clone().into();
                    row["matrix"] = stage
                        .bindings
                        .iter()
                        .cloned()
                        .collect::<serde_json::Map<_, _>>()
                        .into();
                }
                row
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("plain JSON")
        );
        return;
    }
    let width = planned
        .iter()
        .map(|p| pipeline.stages[p.idx].id.0.len())
        .max()
        .unwrap_or(5)
        .max(5);
    println!(
        "{:<width$}  {:<13}  reason",
        "stage",
        if dry_run { "plan" } else { "state" }
    );
    for p in planned {
        let (_, reason) = state_of(&p.decision, remote(&p.decision));
        let label = match (&p.decision, dry_run) {
            (Decision::UpToDate(_), _) => "up to date",
            (Decision::Restore(_), true) => "would restore",
            (Decision::Restore(_), false) => "will restore",
            (Decision::Run(_), true) => "would run",
            (Decision::Run(_), false) => "stale",
        };
        println!(
            "{:<width$}  {label:<13}  {}",
            pipeline.stages[p.idx].id.0,
            reason.unwrap_or_default()
        );
    }
}

/// The state word of `--json` and the reason text, every reason joined.
fn state_of(d: &Decision, remote: bool) -> (&'static str, Option<String>) {
    match d {
        Decision::UpToDate(_) => ("up_to_date", None),
        Decision::Restore(_) if remote => {
            ("restore", Some("outputs are in the remote cache".into()))
        }
        Decision::Restore(_) => ("restore", Some("outputs are in the cache".into())),
        Decision::Run(reason) => ("stale", Some(reason.to_string())),
    }
}

/// `gc`'s summary: one line, plus one for verification and one for leftovers when they apply.
fn gc_report(stats: &GcStats, dry_run: bool, verify: bool) -> String {
    let plural = |n: usize, one: &'static str, many: &'static str| if n == 1 { one } else { many };
    let verb = if dry_run { "would remove" } else { "removed" };
    let mut text = format!(
        "{verb} {} cache entr{} and {} blob{} ({}); kept {} entr{}\n",
        stats.records_removed,
        plural(stats.records_removed, "y", "ies"),
        stats.blobs_removed,
        plural(stats.blobs_removed, "", "s"),
        indicatif::HumanBytes(stats.bytes_freed),
        stats.records_kept,
        plural(stats.records_kept, "y", "ies"),
    );
    if verify {
        text += &format!(
            "verified {} blob{}: {} corrupt; {} entr{} named a corrupt or missing blob ({})\n",
            stats.blobs_verified,
            plural(stats.blobs_verified, "", "s"),
            stats.blobs_corrupt,
            stats.records_corrupt,
            plural(stats.records_corrupt, "y", "ies"),
            if dry_run {
                "would be removed"
            } else {
                "removed"
            },
        );
    }
    if stats.temps_removed > 0 {
        text += &format!(
            "{verb} {} temporary file{} left by killed runs\n",
            stats.temps_removed,
            plural(stats.temps_removed, "", "s"),
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gc_report_gives_freed_bytes_in_binary_units() {
        let stats = |bytes_freed| GcStats {
            records_removed: 2,
            blobs_removed: 1,
            bytes_freed,
            records_kept: 1,
            ..GcStats::default()
        };
        assert_eq!(
            gc_report(&stats(10), false, false),
            "removed 2 cache entries and 1 blob (10 B); kept 1 entry\n"
        );
        assert_eq!(
            gc_report(&stats(3 * 1024 * 1024 / 2), true, false),
            "would remove 2 cache entries and 1 blob (1.50 MiB); kept 1 entry\n"
        );
    }
}
