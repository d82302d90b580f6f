//! The `Stage` trait path, end to end through the engine: a built-in stage registered the way
//! `sluice-stages` does it, run, cached, validated, cancelled by a timeout, and failed by a panic.

use sluice_runner::stage::ConfigProblem;
use sluice_runner::{
    Engine, Event, LoadOptions, Outcome, Pipeline, Prepared, RunOptions, Selection, Stage,
    StageContext, StageError, StageRegistry, Workspace,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Upper-cases its `text` input and appends `suffix`; `with: {spin: true}` loops until
/// cancelled; `with: {panic: m}` writes half its output, then panics with `m` (a bug in a
/// built-in stage); `with: {fail: m}` fails with `m` and a hint. Counts its `prepare` calls.
#[derive(Default)]
struct Upper {
    prepared: Arc<AtomicUsize>,
}

/// `upper`'s `with:`, as its `prepare` reads it.
struct UpperConfig {
    spin: bool,
    panic: Option<String>,
    fail: Option<String>,
    suffix: String,
}

impl Stage for Upper {
    fn kind(&self) -> &'static str {
        "upper"
    }
    fn version(&self) -> u32 {
        1
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["text"]
    }
    fn prepare(&self, with: &serde_json::Value) -> Result<Prepared, Vec<ConfigProblem>> {
        self.prepared.fetch_add(1, Ordering::SeqCst);
        let problems: Vec<ConfigProblem> = with
            .as_object()
            .into_iter()
            .flat_map(|m| m.keys())
            .filter(|k| !["spin", "panic", "fail", "suffix"].contains(&k.as_str()))
            .map(|k| ConfigProblem {
                path: vec![k.clone()],
                message: format!("unknown option `{k}`"),
                help: Some("`upper` takes: spin, panic, fail, suffix".into()),
                at_key: true,
            })
            .collect();
        if !problems.is_empty() {
            return Err(problems);
        }
        let text = |key: &str| with.get(key).and_then(|v| v.as_str()).map(String::from);
        Ok(Prepared::new(UpperConfig {
            spin: with.get("spin").and_then(|v| v.as_bool()) == Some(true),
            panic: text("panic"),
            fail: text("fail"),
            suffix: text("suffix").unwrap_or_default(),
        }))
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageError> {
        let config = ctx.config::<UpperConfig>()?;
        if config.spin {
            while !ctx.cancel.is_cancelled() {
                std::thread::sleep(Duration::from_millis(5));
            }
            return Err("cancelled".into());
        }
        if let Some(message) = &config.fail {
            return Err(StageError::new(message).hint("write less"));
        }
        let text = std::fs::read_to_string(&ctx.inputs["text"]).map_err(|e| e.to_string())?;
        if let Some(message) = &config.panic {
            std::fs::write(&ctx.outputs["text"], &text[..text.len() / 2]).unwrap();
            panic!("{message}");
        }
        ctx.events
            .progress(1.0, Some(1.0), Some("files".into()), None);
        std::fs::write(&ctx.outputs["text"], text.to_uppercase() + &config.suffix)
            .map_err(|e| StageError::new(e.to_string()))
    }
}

fn registry() -> StageRegistry {
    registry_counting(Arc::default())
}

/// A registry whose `upper` counts its `prepare` calls in `prepared`.
fn registry_counting(prepared: Arc<AtomicUsize>) -> StageRegistry {
    let mut r = StageRegistry::default();
    r.register(Arc::new(Upper { prepared }));
    r
}

fn run(dir: &std::path::Path, yaml: &str) -> (Vec<Event>, bool) {
    run_with(dir, yaml, false)
}

fn run_with(dir: &std::path::Path, yaml: &str, keep_going: bool) -> (Vec<Event>, bool) {
    run_loaded(dir, yaml, keep_going, registry(), |_| {})
}

/// Loads `yaml` with `registry`, lets `edit` change the validated pipeline, and runs it.
fn run_loaded(
    dir: &std::path::Path,
    yaml: &str,
    keep_going: bool,
    registry: StageRegistry,
    edit: impl FnOnce(&mut Pipeline),
) -> (Vec<Event>, bool) {
    std::fs::write(dir.join("p.yaml"), yaml).unwrap();
    let ws = Workspace::open(dir).unwrap();
    let mut pipeline = sluice_runner::load(&LoadOptions {
        root: &ws.root,
        file: &dir.join("p.yaml"),
        display: "p.yaml".into(),
        overrides: &[],
        registry: &registry,
        sweep: None,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    edit(&mut pipeline);
    let engine = Engine::new(ws, registry);
    let (tx, rx) = crossbeam_channel::unbounded();
    let (_sig_tx, sig_rx) = crossbeam_channel::unbounded();
    let summary = engine
        .run(
            Arc::new(pipeline),
            RunOptions {
                selection: Selection::default(),
                force: Vec::new(),
                jobs: 2,
                gpus: Vec::new(),
                keep_going,
                wait: true,
                kill_grace: Duration::from_secs(1),
            },
            tx,
            sig_rx,
        )
        .unwrap();
    (rx.try_iter().collect(), summary.ok())
}

fn outcome(events: &[Event], stage: &str) -> Outcome {
    events
        .iter()
        .find_map(|e| match e {
            Event::StageFinished {
                stage: s, outcome, ..
            } if s == stage => Some(*outcome),
            _ => None,
        })
        .unwrap()
}

#[test]
fn a_builtin_stage_runs_is_cached_and_reports_progress() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "hello\n").unwrap();
    let yaml = "stages:\n  up: {uses: upper, inputs: {text: in.txt}}\n";
    let (events, ok) = run(dir.path(), yaml);
    assert!(ok);
    assert_eq!(outcome(&events, "up"), Outcome::Ran);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::StageProgress { unit: Some(u), .. } if u == "files")));
    // The default output path comes from the kind's declared outputs.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out/p/up/text")).unwrap(),
        "HELLO\n"
    );
    let (events, ok) = run(dir.path(), yaml);
    assert!(ok);
    assert_eq!(outcome(&events, "up"), Outcome::UpToDate);
}

#[test]
fn builtin_config_is_checked_before_running() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "x").unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "stages:\n  up: {uses: upper, inputs: {text: in.txt}, with: {spni: true}, outputs: {txt: a}}\n",
    )
    .unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let err = sluice_runner::load(&LoadOptions {
        root: &ws.root,
        file: &dir.path().join("p.yaml"),
        display: "p.yaml".into(),
        overrides: &[],
        registry: &registry(),
        sweep: None,
    })
    .unwrap_err()
    .to_string();
    // The caret is on the unknown key (column 52), not on its value (58).
    assert!(
        err.contains("stage `up`: unknown option `spni`") && err.contains("p.yaml:2:52"),
        "{err}"
    );
    assert!(
        err.contains("stage kind `upper` has no output `txt`")
            && err.contains("did you mean `text`?"),
        "{err}"
    );
}

#[test]
fn a_timeout_cancels_a_builtin_stage() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "x").unwrap();
    let (events, ok) = run(
        dir.path(),
        "stages:\n  up: {uses: upper, inputs: {text: in.txt}, with: {spin: true}, timeout: 200ms}\n",
    );
    assert!(!ok);
    assert_eq!(outcome(&events, "up"), Outcome::TimedOut);
}

fn message<'a>(events: &'a [Event], stage: &str) -> &'a str {
    events
        .iter()
        .find_map(|e| match e {
            Event::StageFinished {
                stage: s, message, ..
            } if s == stage => message.as_deref(),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no message for `{stage}` in {events:?}"))
}

/// A stage's hint travels apart from its message, to the event the reporters read.
#[test]
fn a_failed_builtin_stage_reports_its_hint_apart_from_its_message() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "x").unwrap();
    let (events, ok) = run(
        dir.path(),
        "stages:\n  up: {uses: upper, inputs: {text: in.txt}, with: {fail: too long}}\n",
    );
    assert!(!ok);
    let finished = events
        .iter()
        .find_map(|e| match e {
            Event::StageFinished {
                stage,
                outcome,
                message,
                hint,
                ..
            } if stage == "up" => Some((*outcome, message.clone(), hint.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        finished,
        (
            Outcome::Failed,
            Some("too long".to_string()),
            Some("write less".to_string())
        )
    );
}

/// A panic in a built-in stage fails that stage with the panic's message and location, drops its
/// partial output, and the run ends: other stages proceed under `--keep-going` and dependents
/// are skipped. Before, with two workers, the panicked worker never reported back and the run
/// waited forever; the run is on its own thread here so that a regression fails instead of
/// hanging the suite.
#[test]
fn a_panicking_builtin_stage_fails_and_the_run_ends() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "hello\n").unwrap();
    let yaml = "stages:\n  boom: {uses: upper, inputs: {text: in.txt}, with: {panic: 'row 3 is bad'}}\n  after: {uses: upper, inputs: {text: '${{ stages.boom.outputs.text }}'}}\n  other: {uses: upper, inputs: {text: in.txt}}\n";
    let (tx, rx) = std::sync::mpsc::channel();
    let path = dir.path().to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(run_with(&path, yaml, true));
    });
    let (events, ok) = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the run ends after a stage panicked");
    assert!(!ok);
    assert_eq!(outcome(&events, "boom"), Outcome::Failed);
    let m = message(&events, "boom");
    assert!(
        m.starts_with("panicked: row 3 is bad (at runner/tests/builtin.rs:"),
        "{m}"
    );
    assert!(!dir.path().join("out/p/boom/text").exists());
    assert_eq!(outcome(&events, "after"), Outcome::Skipped);
    assert_eq!(outcome(&events, "other"), Outcome::Ran);
}

/// `with:` is read once per stage when the pipeline loads, with its `${{ }}` substituted, and
/// that reading is what each run gets: running never reads it again.
#[test]
fn a_builtin_stage_runs_with_the_config_prepared_once_per_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "hello\n").unwrap();
    let yaml = "params: {mark: '!'}\nstages:\n  up: {uses: upper, inputs: {text: in.txt}, with: {suffix: '${{ params.mark }}'}}\n  again: {uses: upper, inputs: {text: '${{ stages.up.outputs.text }}'}, with: {suffix: '?'}}\n";
    let prepared = Arc::new(AtomicUsize::new(0));
    let (events, ok) = run_loaded(
        dir.path(),
        yaml,
        false,
        registry_counting(prepared.clone()),
        |_| {},
    );
    assert!(ok, "{events:?}");
    assert_eq!(outcome(&events, "again"), Outcome::Ran);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out/p/again/text")).unwrap(),
        "HELLO\n!?"
    );
    assert_eq!(prepared.load(Ordering::SeqCst), 2);
    let (events, ok) = run_loaded(
        dir.path(),
        yaml,
        false,
        registry_counting(prepared.clone()),
        |_| {},
    );
    assert!(ok);
    assert_eq!(outcome(&events, "again"), Outcome::UpToDate);
    assert_eq!(prepared.load(Ordering::SeqCst), 4);
}

/// A definition that reaches a run without its kind's prepared config (no load prepared it) is
/// a bug in sluice, and the stage says so instead of running on defaults.
#[test]
fn a_stage_without_its_prepared_config_fails_as_a_bug() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "x").unwrap();
    let (events, ok) = run_loaded(
        dir.path(),
        "stages:\n  up: {uses: upper, inputs: {text: in.txt}}\n",
        false,
        registry(),
        |p| p.stages[0].prepared = Prepared::nothing(),
    );
    assert!(!ok);
    assert_eq!(outcome(&events, "up"), Outcome::Failed);
    let m = message(&events, "up");
    assert!(
        m.starts_with("stage `up`: its `with:` was not prepared as `")
            && m.ends_with("UpperConfig` when the pipeline loaded"),
        "{m}"
    );
}
