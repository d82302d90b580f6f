//! Command-line arguments (clap derive).

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "sluice",
    version,
    about = "Declarative ML pipelines: a DAG of stages, run in parallel, cached by content",
    propagate_version = true
)]
pub struct Cli {
    /// Run as if sluice was started in DIR (the workspace)
    #[arg(short = 'C', long = "directory", value_name = "DIR", global = true)]
    pub dir: Option<PathBuf>,
    /// More log output (-v: debug, -vv: trace); RUST_LOG overrides
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Format of log lines on stderr
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// When to use colour (NO_COLOR is respected under `auto`)
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, global = true)]
    pub color: ColorChoice,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a pipeline's stages (all of them, or the named ones and what they need)
    Run(RunArgs),
    /// Show each stage as up to date, will restore, or stale, and why
    Status(StatusArgs),
    /// Run a pipeline, then rerun what each change to its inputs or its file affects
    Watch(WatchArgs),
    /// Print the stage graph
    Dag(DagArgs),
    /// Remove cache entries that no lock file refers to
    Gc(GcArgs),
    /// Move what a lock file names to or from the remote cache
    Cache(CacheArgs),
    /// Print the JSON Schema of the pipeline format
    Schema,
    /// Install the Python environment the train stage uses (the first train run does it too)
    Setup(SetupArgs),
    /// Print the latest metrics of every evaluate stage
    Metrics(MetricsArgs),
    /// Search over a pipeline's params: run the trials, rank them, show and promote the results
    Sweep(SweepArgs),
    /// Serve a model registry (or one bundle) over the Open Inference Protocol v2 (KServe, Triton)
    Serve(ServeArgs),
    /// Internal: the guardian that kills what a sluice started once that sluice has exited
    /// (started by sluice itself; see `sluice_runner::exec::guard`)
    #[command(name = "__guard", hide = true)]
    Guard(GuardArgs),
    /// Internal: runs one built-in stage from a job file, speaking the plugin protocol on stdout
    /// (started by sluice through a remote executor; see `sluice_runner::onestage`)
    #[command(name = "__stage", hide = true)]
    Stage(StageArgs),
}

#[derive(Args, Debug)]
pub struct StageArgs {
    /// The job file the submitting sluice wrote
    pub job: PathBuf,
}

#[derive(Args, Debug)]
pub struct GuardArgs {
    /// The sluice process watched over
    pub owner: i32,
    /// Its start time (clock ticks after boot), so a later run can find this guardian
    pub start: u64,
    /// Its process group, never killed as a whole
    pub pgid: i32,
}

#[derive(Args, Debug)]
pub struct MetricsArgs {
    /// The pipeline file (default: sluice.yaml)
    pub pipeline: Option<PathBuf>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
    /// Compare with the previous different evaluation
    #[arg(long)]
    pub diff: bool,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SweepArgs {
    #[command(subcommand)]
    pub command: Option<SweepCommand>,
    #[command(flatten)]
    pub run: SweepRunArgs,
}

#[derive(Subcommand, Debug)]
pub enum SweepCommand {
    /// Print a sweep's ranked trials again (default: the latest sweep)
    Show(SweepShowArgs),
    /// Set the workspace to one trial's params and run the pipeline (restored from the cache)
    Promote(SweepPromoteArgs),
}

/// `sluice sweep [PIPELINE]`: the sweep flags override the pipeline's `sweep:` section.
#[derive(Args, Debug)]
pub struct SweepRunArgs {
    /// The pipeline file (default: sluice.yaml)
    #[arg(value_name = "PIPELINE")]
    pub pipeline: Option<PathBuf>,
    /// How trials are chosen: every combination, or seeded random draws
    #[arg(long, value_enum)]
    pub method: Option<SweepMethodArg>,
    /// How many trials a random sweep draws
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub trials: Option<usize>,
    /// The random sweep's seed
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Vary a param: `a,b,c`, `choice:a,b`, `uniform:LO,HI`, `loguniform:LO,HI` or `int:LO,HI`
    /// (repeatable; replaces that param's spec in the pipeline)
    #[arg(long = "param", value_name = "NAME=SPEC", value_parser = name_spec)]
    pub params: Vec<(String, String)>,
    /// The metric to optimize, as STAGE.METRIC (e.g. evaluate.accuracy)
    #[arg(long, value_name = "S.M")]
    pub metric: Option<String>,
    /// Whether a larger metric is better (default: min for names with loss, error, rmse, mae or
    /// mse, else max)
    #[arg(long, value_enum)]
    pub direction: Option<SweepDirectionArg>,
    /// Stop trials whose validation metric falls behind the median of finished trials
    #[arg(long, value_enum)]
    pub prune: Option<PruneArg>,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Where stages run: here (local) or as Slurm batch jobs (slurm) (default: SLUICE_EXECUTOR, else local)
    #[arg(long, value_enum, value_name = "WHERE")]
    pub executor: Option<ExecutorArg>,
    /// How many stages may run at once (default: the number of CPUs; 100 with `--executor slurm`)
    #[arg(short, long, value_name = "N", value_parser = at_least_one)]
    pub jobs: Option<usize>,
    /// How many GPUs to hand out (default: detected from CUDA_VISIBLE_DEVICES or nvidia-smi)
    #[arg(long, value_name = "N")]
    pub gpus: Option<usize>,
    /// Print the trials and what would run; run nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Print events as JSON lines on stdout instead of the live display
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ExecutorArg {
    // Not doc comments: described values would switch `--help` to its long layout.
    // Child processes on this machine.
    Local,
    // Slurm batch jobs (`sbatch`); the workspace must be on a filesystem the nodes share.
    Slurm,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum SweepMethodArg {
    Grid,
    Random,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum SweepDirectionArg {
    Max,
    Min,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum PruneArg {
    Median,
    None,
}

#[derive(Args, Debug)]
pub struct SweepShowArgs {
    /// The sweep id (default: the latest sweep in this workspace)
    pub id: Option<String>,
    /// Print results.json
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SweepPromoteArgs {
    /// The sweep id (default: the latest sweep in this workspace)
    pub id: Option<String>,
    /// The trial to promote
    #[arg(long, value_name = "N", conflicts_with = "best", value_parser = at_least_one)]
    pub trial: Option<usize>,
    /// Promote the best trial (the default)
    #[arg(long)]
    pub best: bool,
    /// Print the promoting run's events as JSON lines on stdout instead of the live display
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A model registry (the `registry` of a `deploy` stage) or one bundle directory in it
    #[arg(value_name = "REGISTRY_OR_BUNDLE")]
    pub target: PathBuf,
    /// Address to listen on (port 0: any free port, printed at start)
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: std::net::SocketAddr,
    /// Largest request body accepted, in bytes (larger ones get 413)
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_body: usize,
    /// Worker threads, and inference sessions per model (default: the number of cores)
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Seconds between checks of the registry for new versions
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    pub poll: f64,
    /// Most connections open at once; one more is answered 503 and closed (kept under the
    /// open-file limit)
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Seconds a connection may take to send a request's headers, counted from its opening or
    /// its previous response (so also how long an idle keep-alive connection stays open)
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub header_timeout: f64,
    /// Seconds a request's body or response may go without a byte moving before the connection
    /// is closed
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub idle_timeout: f64,
}

#[derive(Args, Debug)]
pub struct SetupArgs {
    /// Also the CUDA builds: ONNX Runtime training with NVIDIA's CUDA 11.8 and cuDNN 8 wheels, and
    /// onnxruntime-gpu for evaluate with CUDA 13 and cuDNN 9 (needs only the NVIDIA driver),
    /// each checked by loading its CUDA provider
    #[arg(long)]
    pub cuda: bool,
}

/// The remote cache flags of the commands that run stages.
#[derive(Args, Debug, Clone, Default)]
pub struct RemoteArgs {
    /// Use no remote cache, whatever SLUICE_REMOTE_CACHE or the pipeline's `cache:` says
    #[arg(long, conflicts_with = "remote_required")]
    pub no_remote: bool,
    /// Fail the run when the remote cache fails (unreachable, refusing writes, no credentials)
    #[arg(long)]
    pub remote_required: bool,
}

#[derive(Args, Debug)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub command: CacheCommand,
}

#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// Upload every stage result the lock file names from the local cache to the remote one
    Push(CacheMoveArgs),
    /// Download every stage result the lock file names from the remote cache into the local one
    /// (the workspace is left alone: `sluice run` then restores them)
    Pull(CacheMoveArgs),
}

#[derive(Args, Debug)]
pub struct CacheMoveArgs {
    /// The pipeline file (default: sluice.yaml)
    pub pipeline: Option<PathBuf>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct PipelineArgs {
    /// Override a param: --set epochs=10 (repeatable; the value is read as YAML)
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub set: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The pipeline file (default: sluice.yaml), then stage names
    #[arg(value_name = "PIPELINE|STAGE")]
    pub args: Vec<String>,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Where stages run: here (local) or as Slurm batch jobs (slurm) (default: SLUICE_EXECUTOR, else local)
    #[arg(long, value_enum, value_name = "WHERE")]
    pub executor: Option<ExecutorArg>,
    /// How many stages may run at once (default: the number of CPUs; 100 with `--executor slurm`)
    #[arg(short, long, value_name = "N", value_parser = at_least_one)]
    pub jobs: Option<usize>,
    /// How many GPUs to hand out (default: detected from CUDA_VISIBLE_DEVICES or nvidia-smi)
    #[arg(long, value_name = "N")]
    pub gpus: Option<usize>,
    /// After a failure, still run everything that does not depend on it
    #[arg(short, long)]
    pub keep_going: bool,
    /// Also run the stages that depend on the named ones
    #[arg(long)]
    pub downstream: bool,
    /// Run STAGE even if it is up to date (repeatable)
    #[arg(long, value_name = "STAGE")]
    pub force: Vec<String>,
    /// Print what would run, restore or be skipped, and why; run nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Fail instead of waiting when another run holds the workspace
    #[arg(long)]
    pub no_wait: bool,
    /// Print events as JSON lines on stdout instead of the live display
    #[arg(long)]
    pub json: bool,
    /// Seconds between SIGTERM and SIGKILL when stopping a stage
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = seconds)]
    pub kill_grace: std::time::Duration,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// The pipeline file (default: sluice.yaml)
    #[arg(value_name = "PIPELINE")]
    pub pipeline_file: Option<PathBuf>,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Where stages run: here (local) or as Slurm batch jobs (slurm) (default: SLUICE_EXECUTOR, else local)
    #[arg(long, value_enum, value_name = "WHERE")]
    pub executor: Option<ExecutorArg>,
    /// How many stages may run at once (default: the number of CPUs; 100 with `--executor slurm`)
    #[arg(short, long, value_name = "N", value_parser = at_least_one)]
    pub jobs: Option<usize>,
    /// How many GPUs to hand out (default: detected from CUDA_VISIBLE_DEVICES or nvidia-smi)
    #[arg(long, value_name = "N")]
    pub gpus: Option<usize>,
    /// Milliseconds of quiet after a file event before its changes are handled
    #[arg(long, value_name = "MS", default_value_t = sluice_runner::watch::DEFAULT_DEBOUNCE.as_millis() as u64)]
    pub debounce: u64,
    /// Print events as JSON lines on stdout instead of the live display
    #[arg(long)]
    pub json: bool,
    /// Seconds between SIGTERM and SIGKILL when stopping a stage
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = seconds)]
    pub kill_grace: std::time::Duration,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The pipeline file (default: sluice.yaml), then stage names
    #[arg(value_name = "PIPELINE|STAGE")]
    pub args: Vec<String>,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Also look up in the remote cache the stages the local cache lacks (and check their blobs)
    #[arg(long, conflicts_with = "no_remote")]
    pub remote: bool,
    /// Never ask the remote cache (the default without `--remote`)
    #[arg(long)]
    pub no_remote: bool,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DagArgs {
    /// The pipeline file (default: sluice.yaml)
    pub pipeline: Option<PathBuf>,
    /// Output format: one line per stage with its upstream stages, Graphviz dot, or a Mermaid flowchart
    #[arg(long, value_enum, default_value_t = DagFormatArg::Text)]
    pub format: DagFormatArg,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum DagFormatArg {
    Text,
    Dot,
    Mermaid,
}

#[derive(Args, Debug)]
pub struct GcArgs {
    /// Say what would be removed; remove nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Also hash every cached file in full and remove the ones whose content does not match
    /// their hash, with the cache entries that name them
    #[arg(long)]
    pub verify: bool,
}

/// `--jobs`: a count of at least one, checked by clap so that every command (`run -n` too)
/// refuses `0` the same way.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => {
            Err("too large; it bounds how many stages run at once, e.g. `4`".into())
        }
        Err(_) => Err("expected a whole number, e.g. `4`".into()),
    }
}

/// `--param NAME=SPEC`: split at the first `=`; the SPEC is read by the sweep spec's parser.
fn name_spec(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, spec)) if !name.trim().is_empty() && !spec.trim().is_empty() => {
            Ok((name.trim().to_string(), spec.trim().to_string()))
        }
        _ => Err("expected NAME=SPEC, e.g. `lr=0.1,0.01` or `dropout=uniform:0,0.5`".into()),
    }
}

/// `--kill-grace`: seconds, finite and not negative (a day at most, so the duration is exact).
fn seconds(text: &str) -> Result<std::time::Duration, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=86_400.0).contains(&s) => {
            Ok(std::time::Duration::from_secs_f64(s))
        }
        _ => Err("expected a number of seconds from 0 to 86400, e.g. `5` or `0.5`".into()),
    }
}
