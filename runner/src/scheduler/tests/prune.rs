//! `Control::Prune` through the real job path: a running stage stopped as pruned (nothing of it
//! kept: outputs, cache record, lock entry), stages pruned before they start, their downstream
//! skipped, and a run whose only non-successes are prunes counting as ok.

use super::*;
use crate::engine::RunSummary;

const WHY: &str = "val_loss 0.91 at epoch 5 is worse than the median 0.42 of 4 completed trials";

/// The cache's stage records: the lines of its record log.
fn cache_records(s: &Setup) -> Vec<String> {
    std::fs::read_to_string(s.ws.cache_dir().join("records.log"))
        .map(|text| text.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn summary(report: DispatchReport) -> RunSummary {
    RunSummary {
        run_id: "test-run".into(),
        stages: report.stages,
        interrupted: report.interrupted,
        duration: Duration::ZERO,
        deferred: report.deferred,
        remote: None,
        remote_required: false,
    }
}

#[test]
fn a_pruned_running_stage_is_stopped_and_leaves_nothing_behind() {
    let s = setup(
        r#"
stages:
  train: {run: "fake", outputs: [o]}
  evaluate: {run: "fake ${{ stages.train.outputs.o }}", outputs: [o]}
  other: {run: "fake", outputs: [o]}
"#,
    );
    let (fake, seen) = Fake::new(&s.pipeline, &[("train", Act::Hold), ("other", Act::Hold)]);
    let run = start(&s, &fake, Knobs::default());
    let mut both = [expect_started(&seen), expect_started(&seen)];
    both.sort();
    assert_eq!(both, ["other", "train"]);
    // What a trainer writes as it goes (a checkpoint, a half-written model) must not survive.
    let partial = s.pipeline.stage("train").unwrap().outputs[0]
        .path
        .to_abs(&s.pipeline.root);
    std::fs::write(&partial, "epoch 5 of 60").unwrap();
    run.control
        .send(Control::Prune(vec![(run.index("train"), WHY.into())]))
        .unwrap();
    assert_eq!(
        next(&seen),
        Seen::Stopped("train".into(), Some(CancelReason::Pruned))
    );
    assert_eq!(run.wait_finished("train"), Outcome::Pruned);
    // A prune is not a failure: without `--keep-going` the rest of the run carries on.
    fake.release("other");
    let ended = run.join();
    assert_eq!(
        ended.message("train"),
        format!("pruned: {WHY}; partial outputs removed")
    );
    assert_eq!(ended.outcome("evaluate"), Outcome::Skipped);
    assert_eq!(ended.message("evaluate"), "upstream `train` was pruned");
    assert_eq!(ended.outcome("other"), Outcome::Ran);
    assert!(
        !partial.exists(),
        "the pruned stage's partial output was kept"
    );
    let locked: Vec<&str> = ended
        .report
        .lock
        .stages
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(locked, ["other"]);
    let lock = LockFile::load(&s.pipeline.lock_path(), "").unwrap();
    assert!(!lock.stages.contains_key("train"));
    assert_eq!(cache_records(&s).len(), 1, "only `other` is cached");
    assert!(!fake
        .log
        .lock()
        .unwrap()
        .contains(&Seen::Started("evaluate".into())));
    let summary = summary(ended.report);
    assert!(summary.ok(), "prunes and their skips do not fail a run");
}

#[test]
fn stages_pruned_before_they_start_never_run_and_their_downstream_is_skipped() {
    // One slot, held by `a`: `b` waits for it, `y` is ready but has no slot.
    let s = setup(
        r#"
stages:
  a: {run: "fake", outputs: [o]}
  b: {run: "fake ${{ stages.a.outputs.o }}", outputs: [o]}
  c: {run: "fake ${{ stages.b.outputs.o }}", outputs: [o]}
  y: {run: "fake", outputs: [o]}
  z: {run: "fake ${{ stages.y.outputs.o }}", outputs: [o]}
"#,
    );
    let first = s.pipeline.graph.topo_order()[0];
    assert_eq!(
        s.pipeline.stages[first].id.0, "a",
        "the test needs `a` first"
    );
    let (fake, seen) = Fake::new(&s.pipeline, &[("a", Act::Hold)]);
    let run = start(
        &s,
        &fake,
        Knobs {
            jobs: 1,
            ..Knobs::default()
        },
    );
    assert_eq!(expect_started(&seen), "a");
    run.control
        .send(Control::Prune(vec![
            (run.index("b"), "b is hopeless".into()),
            (run.index("y"), String::new()),
        ]))
        .unwrap();
    assert_eq!(run.wait_finished("b"), Outcome::Pruned);
    fake.release("a");
    let ended = run.join();
    assert_eq!(ended.outcome("a"), Outcome::Ran);
    assert_eq!(ended.message("b"), "pruned: b is hopeless; not started");
    assert_eq!(ended.outcome("y"), Outcome::Pruned);
    assert_eq!(ended.message("y"), "pruned; not started");
    assert_eq!(ended.outcome("c"), Outcome::Skipped);
    assert_eq!(ended.message("c"), "upstream `b` was pruned");
    assert_eq!(ended.outcome("z"), Outcome::Skipped);
    assert_eq!(ended.message("z"), "upstream `y` was pruned");
    assert_eq!(fake.executions.load(Ordering::SeqCst), 1, "only `a` ran");
    assert!(summary(ended.report).ok());
}

#[test]
fn a_finished_stage_is_not_pruned() {
    let s = setup(
        r#"
stages:
  done: {run: "fake", outputs: [o]}
  after: {run: "fake ${{ stages.done.outputs.o }}", outputs: [o]}
  other: {run: "fake", outputs: [o]}
"#,
    );
    let (fake, _seen) = Fake::new(&s.pipeline, &[("other", Act::Hold)]);
    let run = start(&s, &fake, Knobs::default());
    assert_eq!(run.wait_finished("done"), Outcome::Ran);
    assert_eq!(run.wait_finished("after"), Outcome::Ran);
    // `other` holds the run open while the request arrives, too late for `done` and `after`.
    run.control
        .send(Control::Prune(vec![
            (run.index("done"), WHY.into()),
            (run.index("after"), WHY.into()),
        ]))
        .unwrap();
    fake.release("other");
    let ended = run.join();
    for stage in ["done", "after", "other"] {
        assert_eq!(ended.outcome(stage), Outcome::Ran, "{stage}");
    }
    assert_eq!(ended.report.lock.stages.len(), 3);
}

/// The dispatcher's own steps, without workers, so that the timeout is certain to come first:
/// a stage already stopped for another reason keeps that reason's verdict.
#[test]
fn a_timeout_given_before_the_prune_keeps_its_verdict() {
    let s = setup("stages:\n  slow: {run: \"fake\", outputs: [o], timeout: 1h}\n");
    let (fake, _seen) = Fake::new(&s.pipeline, &[]);
    let (ctx, opts, _events) = context(&s, &fake, Knobs::default());
    let (tx, rx) = unbounded::<Job>();
    let mut d = Dispatcher::new(ctx, opts, BTreeMap::new(), tx);
    d.step(false);
    let job = rx.try_recv().unwrap();
    job.cancel.cancel(CancelReason::TimedOut);
    d.control(Control::Prune(vec![(job.idx, WHY.into())]));
    assert!(d.pruning.is_empty());
    d.job_done(job.idx, JobResult::Cancelled { log_tail: vec![] });
    assert_eq!(d.done[&job.idx].outcome, Outcome::TimedOut);
}

#[test]
fn a_run_is_ok_with_prunes_and_skips_but_not_with_a_failure_cancellation_or_interrupt() {
    let report = |outcomes: &[Outcome], interrupted: bool| RunSummary {
        run_id: String::new(),
        stages: outcomes
            .iter()
            .enumerate()
            .map(|(i, &outcome)| {
                (
                    i,
                    StageReport {
                        outcome,
                        duration: Duration::ZERO,
                    },
                )
            })
            .collect(),
        interrupted,
        duration: Duration::ZERO,
        deferred: BTreeSet::new(),
        remote: None,
        remote_required: false,
    };
    use Outcome::*;
    assert!(report(&[Ran, Restored, UpToDate], false).ok());
    assert!(report(&[Ran, Pruned, Skipped, Pruned], false).ok());
    assert!(!report(&[Ran, Pruned, Skipped], true).ok());
    for bad in [Failed, TimedOut, Cancelled] {
        assert!(!report(&[Pruned, Skipped, bad], false).ok(), "{bad:?}");
        assert!(bad.is_failure() || bad == Cancelled);
    }
    assert!(!Pruned.is_success() && !Pruned.is_failure());
    assert_eq!(Pruned.label(), "pruned");
    assert_eq!(serde_json::to_string(&Pruned).unwrap(), "\"pruned\"");
}
