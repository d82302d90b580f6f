//! `Engine` with a fake `Executor` whose stages write their outputs: stage selection, the errors
//! it names, and a whole run's verdicts, lock file and no-op rerun.

use super::*;
use crate::exec::{ExecControl, ExecOutcome, ProcessSpec};
use crate::validate::{load, LoadOptions};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Writes every output of the stage it is asked to run and exits 0, counting executions.
struct Writes {
    pipeline: Arc<Pipeline>,
    executions: AtomicUsize,
}

impl Executor for Writes {
    fn execute(&self, spec: &ProcessSpec, _: &ExecControl<'_>) -> std::io::Result<ExecOutcome> {
        self.executions.fetch_add(1, Ordering::SeqCst);
        let stage = self.pipeline.stage(&spec.env["SLUICE_STAGE"]).unwrap();
        for o in &stage.outputs {
            std::fs::write(o.path.to_abs(&self.pipeline.root), stage.id.0.as_bytes())?;
        }
        Ok(ExecOutcome {
            code: Some(0),
            signal: None,
            result: None,
            lost: None,
        })
    }
}

/// `prep` → `train` → `report`, and `other` on its own.
const PIPELINE: &str = r#"
stages:
  prep: {run: "fake", outputs: [o]}
  train: {run: "fake ${{ stages.prep.outputs.o }}", outputs: [o]}
  report: {run: "fake ${{ stages.train.outputs.o }}", outputs: [o]}
  other: {run: "fake", outputs: [o]}
"#;

struct Setup {
    _dir: tempfile::TempDir,
    engine: Engine,
    pipeline: Arc<Pipeline>,
    fake: Arc<Writes>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let file = root.join("sluice.yaml");
    std::fs::write(&file, PIPELINE).unwrap();
    let registry = StageRegistry::default();
    let pipeline = Arc::new(
        load(&LoadOptions {
            root: &root,
            file: &file,
            display: "sluice.yaml".into(),
            overrides: &[],
            registry: &registry,
            sweep: None,
        })
        .unwrap_or_else(|e| panic!("{e}")),
    );
    let fake = Arc::new(Writes {
        pipeline: pipeline.clone(),
        executions: AtomicUsize::new(0),
    });
    let mut engine = Engine::new(Workspace::open(&root).unwrap(), registry);
    engine.executor = fake.clone();
    Setup {
        _dir: dir,
        engine,
        pipeline,
        fake,
    }
}

fn names(p: &Pipeline, set: &BTreeSet<usize>) -> Vec<String> {
    set.iter().map(|&i| p.stages[i].id.0.clone()).collect()
}

fn selection(targets: &[&str], downstream: bool) -> Selection {
    Selection {
        targets: targets.iter().map(|t| t.to_string()).collect(),
        downstream,
    }
}

#[test]
fn a_target_brings_its_upstream_and_downstream_adds_what_depends_on_it() {
    let s = setup();
    let p = &s.pipeline;
    let all = s.engine.select(p, &Selection::default()).unwrap();
    assert_eq!(all.len(), 4);
    let mut got = names(
        p,
        &s.engine.select(p, &selection(&["train"], false)).unwrap(),
    );
    got.sort();
    assert_eq!(got, ["prep", "train"]);
    let mut got = names(
        p,
        &s.engine.select(p, &selection(&["train"], true)).unwrap(),
    );
    got.sort();
    assert_eq!(got, ["prep", "report", "train"]);
}

#[test]
fn an_unknown_stage_is_named_with_a_suggestion() {
    let s = setup();
    let err = s
        .engine
        .select(&s.pipeline, &selection(&["trian"], false))
        .unwrap_err();
    assert_eq!(err.to_string(), "unknown stage `trian`");
    assert!(
        err.help().is_some_and(|h| h.contains("train")),
        "{:?}",
        err.help()
    );
}

fn options(targets: &[&str], force: &[&str]) -> RunOptions {
    RunOptions {
        selection: selection(targets, false),
        force: force.iter().map(|f| f.to_string()).collect(),
        jobs: 2,
        gpus: Vec::new(),
        keep_going: false,
        wait: false,
        kill_grace: Duration::from_secs(5),
    }
}

fn run(s: &Setup, opts: RunOptions) -> Result<RunSummary, EngineError> {
    let (tx, _rx) = crossbeam_channel::unbounded();
    s.engine
        .run(s.pipeline.clone(), opts, tx, crossbeam_channel::never())
}

#[test]
fn forcing_a_stage_outside_the_selection_is_refused() {
    let s = setup();
    let err = run(&s, options(&["train"], &["other"])).unwrap_err();
    assert!(
        matches!(&err, EngineError::ForceOutsideSelection { name } if name == "other"),
        "{err}"
    );
    assert_eq!(s.fake.executions.load(Ordering::SeqCst), 0);
}

#[test]
fn a_run_writes_the_lock_and_a_second_run_does_nothing() {
    let s = setup();
    let first = run(&s, options(&[], &[])).unwrap();
    assert!(first.ok());
    assert_eq!(first.count(Outcome::Ran), 4);
    assert_eq!(s.fake.executions.load(Ordering::SeqCst), 4);
    let lock = LockFile::load(&s.pipeline.lock_path(), "").unwrap();
    let mut locked: Vec<&str> = lock.stages.keys().map(String::as_str).collect();
    locked.sort();
    assert_eq!(locked, ["other", "prep", "report", "train"]);

    let second = run(&s, options(&[], &[])).unwrap();
    assert_eq!(second.count(Outcome::UpToDate), 4);
    assert_eq!(s.fake.executions.load(Ordering::SeqCst), 4);

    // A deleted output comes back from the cache without running anything.
    std::fs::remove_file(
        s.pipeline.stages[0].outputs[0]
            .path
            .to_abs(&s.pipeline.root),
    )
    .unwrap();
    let third = run(&s, options(&[], &[])).unwrap();
    assert_eq!(third.count(Outcome::Restored), 1);
    assert_eq!(s.fake.executions.load(Ordering::SeqCst), 4);

    let forced = run(&s, options(&["train"], &["train"])).unwrap();
    assert_eq!(forced.count(Outcome::Ran), 1);
    assert_eq!(forced.count(Outcome::UpToDate), 1);
    assert_eq!(s.fake.executions.load(Ordering::SeqCst), 5);
}

#[test]
fn a_second_run_in_the_same_workspace_is_refused_without_wait() {
    let s = setup();
    let _held = s.engine.ws.lock_run(false, |_| {}).unwrap().unwrap();
    let err = run(&s, options(&[], &[])).unwrap_err();
    assert!(matches!(err, EngineError::Busy { pid: Some(_) }), "{err}");
    assert_eq!(s.fake.executions.load(Ordering::SeqCst), 0);
}
