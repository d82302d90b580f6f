//! The dispatcher driven through its real job path with a fake `Executor` (`harness::Fake`) in
//! place of processes: each `run:` stage records what it saw (when it started and ended, the
//! slots it was given, why it was stopped) and then succeeds, fails, or holds until the test
//! releases it or the dispatcher cancels it. Tests move the run along by waiting on what the fake reports and on
//! the engine's events, never on sleeps.

mod harness;
mod prune;

use super::*;
use crossbeam_channel::unbounded;
use harness::*;
use std::sync::atomic::Ordering;

#[test]
fn stages_start_after_their_upstream_and_in_topological_order() {
    // A diamond plus a chain, declared out of order.
    let s = setup(
        r#"
stages:
  d: {run: "fake ${{ stages.b.outputs.o }} ${{ stages.c.outputs.o }}", outputs: [o]}
  b: {run: "fake ${{ stages.a.outputs.o }}", outputs: [o]}
  c: {run: "fake ${{ stages.a.outputs.o }}", outputs: [o]}
  a: {run: "fake", outputs: [o]}
  y: {run: "fake ${{ stages.x.outputs.o }}", outputs: [o]}
  x: {run: "fake", outputs: [o]}
"#,
    );
    let (fake, _seen) = Fake::new(&s.pipeline, &[]);
    let run = start(&s, &fake, Knobs::default());
    let ended = run.join();
    assert!(ended.finished.values().all(|(o, _)| *o == Outcome::Ran));
    assert!(!ended.report.interrupted);
    let log = fake.log.lock().unwrap().clone();
    let at = |e: Seen| log.iter().position(|x| *x == e).unwrap();
    for stage in &s.pipeline.stages {
        for dep in s.pipeline.graph.deps(stage.idx) {
            let dep = &s.pipeline.stages[dep].id.0;
            assert!(
                at(Seen::Ended(dep.clone())) < at(Seen::Started(stage.id.0.clone())),
                "`{}` started before its upstream `{dep}` ended: {log:?}",
                stage.id
            );
        }
    }
    // Every successful stage is in the lock, which was written at the end.
    let lock = LockFile::load(&s.pipeline.lock_path(), "").unwrap();
    assert_eq!(lock.stages.len(), 6);
    assert_eq!(ended.report.lock.stages.len(), 6);
}

#[test]
fn with_one_slot_ready_stages_start_in_topological_position() {
    let s = setup(&format!("stages:\n{}", independent(5, "")));
    let (fake, _seen) = Fake::new(&s.pipeline, &[]);
    let run = start(
        &s,
        &fake,
        Knobs {
            jobs: 1,
            ..Knobs::default()
        },
    );
    run.join();
    let started: Vec<String> = fake
        .log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Seen::Started(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    let topo: Vec<String> = s
        .pipeline
        .graph
        .topo_order()
        .iter()
        .map(|&i| s.pipeline.stages[i].id.0.clone())
        .collect();
    assert_eq!(started, topo);
    assert_eq!(fake.load.lock().unwrap().peak_stages, 1);
}

#[test]
fn cpu_slots_are_never_exceeded() {
    // Six stages of two CPUs each on four slots: two at a time, though the worker pool has four
    // threads that could take them.
    let s = setup(&format!(
        "stages:\n{}",
        independent(6, ", resources: {cpus: 2}")
    ));
    let holds: Vec<(String, Act)> = (0..6).map(|i| (format!("s{i}"), Act::Hold)).collect();
    let holds: Vec<(&str, Act)> = holds.iter().map(|(s, a)| (s.as_str(), *a)).collect();
    let (fake, seen) = Fake::new(&s.pipeline, &holds);
    let run = start(
        &s,
        &fake,
        Knobs {
            jobs: 4,
            ..Knobs::default()
        },
    );
    drain_in_turn(&fake, &seen, 6, 2);
    let ended = run.join();
    assert!(ended.finished.values().all(|(o, _)| *o == Outcome::Ran));
    let load = fake.load.lock().unwrap();
    assert_eq!(
        load.peak_cpus, 4,
        "the slots were not all used, or overused"
    );
    assert_eq!(load.peak_stages, 2);
}

/// The slot arithmetic on its own, without workers: what `start_ready` hands out at once, and
/// what a finished stage gives back. Unlike the runs above, this cannot miss an extra start that
/// would have come a moment later.
#[test]
fn start_ready_hands_out_exactly_the_free_slots() {
    let s = setup(&format!(
        "stages:\n{}{}",
        "  g0: {run: \"fake\", outputs: [o], resources: {gpus: 1}}\n  \
           g1: {run: \"fake\", outputs: [o], resources: {gpus: 1}}\n  \
           g2: {run: \"fake\", outputs: [o], resources: {gpus: 1}}\n",
        independent(3, ", resources: {cpus: 2}"),
    ));
    let (fake, _seen) = Fake::new(&s.pipeline, &[]);
    let (ctx, opts, _events) = context(
        &s,
        &fake,
        Knobs {
            jobs: 6,
            gpus: 2,
            ..Knobs::default()
        },
    );
    let (tx, rx) = unbounded::<Job>();
    let mut d = Dispatcher::new(ctx, opts, BTreeMap::new(), tx);
    let name = |i: usize| s.pipeline.stages[i].id.0.clone();
    let handed = |rx: &crossbeam_channel::Receiver<Job>| -> Vec<(String, Vec<u32>)> {
        rx.try_iter().map(|j| (name(j.idx), j.gpus)).collect()
    };
    // Six slots and two devices, stages in written order: two g stages (one slot and one device
    // each; the third finds no device), then two of the s stages (four slots); the third does
    // not fit.
    let position = |n: &str| {
        let i = s.pipeline.stage(n).unwrap().idx;
        s.pipeline.graph.topo_order().iter().position(|&j| j == i)
    };
    d.step(false);
    let first = handed(&rx);
    assert!(first
        .windows(2)
        .all(|w| position(&w[0].0) < position(&w[1].0)));
    let (gs, ss): (Vec<_>, Vec<_>) = first.iter().partition(|(n, _)| n.starts_with('g'));
    assert_eq!(ss.len(), 2, "{first:?}");
    assert!(ss.iter().all(|(_, gpus)| gpus.is_empty()));
    let mut devices: Vec<u32> = gs.iter().flat_map(|(_, g)| g.clone()).collect();
    devices.sort();
    assert_eq!((gs.len(), devices), (2, vec![0, 1]), "{first:?}");
    assert_eq!(d.cpus_free, 0);
    assert!(d.gpus_free.is_empty());
    d.step(false);
    assert!(handed(&rx).is_empty(), "slots were handed out twice");
    let left = |prefix: char| {
        ["0", "1", "2"]
            .iter()
            .map(|n| format!("{prefix}{n}"))
            .find(|n| !first.iter().any(|(m, _)| m == n))
            .unwrap()
    };
    // A GPU stage ends: its slot and its device go to the last GPU stage, not to the last s
    // stage, which needs two slots.
    let (g, device) = gs[0].clone();
    d.job_done(
        s.pipeline.stage(&g).unwrap().idx,
        JobResult::Cancelled { log_tail: vec![] },
    );
    d.step(false);
    assert_eq!(handed(&rx), [(left('g'), device.clone())]);
    // A two-slot stage ends: the last s stage takes its slots.
    d.job_done(
        s.pipeline.stage(&ss[0].0).unwrap().idx,
        JobResult::Cancelled { log_tail: vec![] },
    );
    d.step(false);
    assert_eq!(handed(&rx), [(left('s'), vec![])]);
    assert_eq!(d.cpus_free, 0);
}

#[test]
fn a_stage_asking_more_cpus_than_jobs_takes_all_slots_and_still_runs() {
    let s = setup(&format!(
        "stages:\n{}",
        independent(3, ", resources: {cpus: 8}")
    ));
    let (fake, _seen) = Fake::new(&s.pipeline, &[]);
    let ended = start(&s, &fake, Knobs::default()).join();
    assert!(ended.finished.values().all(|(o, _)| *o == Outcome::Ran));
    assert_eq!(fake.load.lock().unwrap().peak_stages, 1);
}

#[test]
fn gpus_are_handed_out_one_stage_at_a_time() {
    // Four one-GPU stages and two GPUs on four CPU slots: two at a time, never sharing a device.
    let s = setup(&format!(
        "stages:\n{}",
        independent(4, ", resources: {gpus: 1}")
    ));
    let holds: Vec<(String, Act)> = (0..4).map(|i| (format!("s{i}"), Act::Hold)).collect();
    let holds: Vec<(&str, Act)> = holds.iter().map(|(s, a)| (s.as_str(), *a)).collect();
    let (fake, seen) = Fake::new(&s.pipeline, &holds);
    let run = start(
        &s,
        &fake,
        Knobs {
            jobs: 4,
            gpus: 2,
            ..Knobs::default()
        },
    );
    drain_in_turn(&fake, &seen, 4, 2);
    let ended = run.join();
    assert!(ended.finished.values().all(|(o, _)| *o == Outcome::Ran));
    let load = fake.load.lock().unwrap();
    assert_eq!(load.peak_stages, 2);
    assert_eq!(load.gpu_clash, None, "two running stages shared a GPU");
}

#[test]
fn a_stage_needing_more_gpus_than_exist_fails_without_executing() {
    let s = setup("stages:\n  big: {run: \"fake\", outputs: [o], resources: {gpus: 3}}\n");
    let (fake, _seen) = Fake::new(&s.pipeline, &[]);
    let ended = start(
        &s,
        &fake,
        Knobs {
            gpus: 1,
            ..Knobs::default()
        },
    )
    .join();
    assert_eq!(ended.outcome("big"), Outcome::Failed);
    assert_eq!(
        ended.message("big"),
        "needs 3 GPUs but 1 is available (see `--gpus`)"
    );
    assert_eq!(fake.executions.load(Ordering::SeqCst), 0);
}

/// `bad` fails while `slow` (independent) runs; `after` needs `bad`, `later` needs `slow`.
const FAILURE_PIPELINE: &str = r#"
stages:
  bad: {run: "fake", outputs: [o]}
  slow: {run: "fake", outputs: [o]}
  after: {run: "fake ${{ stages.bad.outputs.o }}", outputs: [o]}
  later: {run: "fake ${{ stages.slow.outputs.o }}", outputs: [o]}
"#;

#[test]
fn fail_fast_cancels_running_stages_and_skips_the_rest() {
    let s = setup(FAILURE_PIPELINE);
    let (fake, seen) = Fake::new(
        &s.pipeline,
        &[("bad", Act::HoldThenFail), ("slow", Act::Hold)],
    );
    let run = start(&s, &fake, Knobs::default());
    let mut both = [expect_started(&seen), expect_started(&seen)];
    both.sort();
    assert_eq!(both, ["bad", "slow"]);
    fake.release("bad");
    let ended = run.join();
    assert_eq!(ended.outcome("bad"), Outcome::Failed);
    assert_eq!(ended.message("bad"), "exited with code 1");
    assert_eq!(ended.outcome("slow"), Outcome::Cancelled);
    assert_eq!(
        ended.message("slow"),
        "cancelled (another stage failed); partial outputs removed"
    );
    for skipped in ["after", "later"] {
        assert_eq!(ended.outcome(skipped), Outcome::Skipped);
        assert_eq!(
            ended.message(skipped),
            "not started: the run stopped after a failure"
        );
    }
    assert!(!ended.report.interrupted);
    let log = fake.log.lock().unwrap().clone();
    assert!(log.contains(&Seen::Stopped(
        "slow".into(),
        Some(CancelReason::StageFailed)
    )));
    assert!(!log
        .iter()
        .any(|e| matches!(e, Seen::Started(s) if s == "after" || s == "later")));
    // Only what succeeded is in the lock: nothing here.
    assert!(ended.report.lock.stages.is_empty());
}

#[test]
fn keep_going_skips_only_the_failed_stages_downstream() {
    let s = setup(FAILURE_PIPELINE);
    let (fake, seen) = Fake::new(
        &s.pipeline,
        &[("bad", Act::HoldThenFail), ("slow", Act::Hold)],
    );
    let run = start(
        &s,
        &fake,
        Knobs {
            keep_going: true,
            ..Knobs::default()
        },
    );
    expect_started(&seen);
    expect_started(&seen);
    fake.release("bad");
    assert_eq!(run.wait_finished("bad"), Outcome::Failed);
    // The failure is settled before `slow` ends, so `slow` and `later` owe nothing to timing.
    fake.release("slow");
    let ended = run.join();
    assert_eq!(ended.outcome("bad"), Outcome::Failed);
    assert_eq!(ended.outcome("after"), Outcome::Skipped);
    assert_eq!(ended.message("after"), "upstream `bad` failed");
    assert_eq!(ended.outcome("slow"), Outcome::Ran);
    assert_eq!(ended.outcome("later"), Outcome::Ran);
    assert!(!fake
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, Seen::Stopped(..))));
    let locked: Vec<&str> = ended
        .report
        .lock
        .stages
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(locked, ["later", "slow"]);
}

#[test]
fn an_interrupt_cancels_running_stages_and_skips_the_rest() {
    let s = setup(
        r#"
stages:
  a: {run: "fake", outputs: [o]}
  b: {run: "fake", outputs: [o]}
  c: {run: "fake ${{ stages.a.outputs.o }}", outputs: [o]}
"#,
    );
    let (fake, seen) = Fake::new(&s.pipeline, &[("a", Act::Hold), ("b", Act::Hold)]);
    let run = start(&s, &fake, Knobs::default());
    expect_started(&seen);
    expect_started(&seen);
    run.signals.send(libc::SIGINT).unwrap();
    let mut stopped = [next(&seen), next(&seen)];
    stopped.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(
        stopped,
        [
            Seen::Stopped("a".into(), Some(CancelReason::Interrupt)),
            Seen::Stopped("b".into(), Some(CancelReason::Interrupt)),
        ]
    );
    let ended = run.join();
    assert!(ended.report.interrupted);
    for stage in ["a", "b"] {
        assert_eq!(ended.outcome(stage), Outcome::Cancelled);
        assert_eq!(ended.message(stage), "interrupted; partial outputs removed");
    }
    assert_eq!(ended.outcome("c"), Outcome::Skipped);
    assert_eq!(ended.message("c"), "not started: interrupted");
}

#[test]
fn a_second_signal_keeps_the_first_reason_and_still_ends_the_run() {
    let s = setup("stages:\n  a: {run: \"fake\", outputs: [o]}\n");
    let (fake, seen) = Fake::new(&s.pipeline, &[("a", Act::Hold)]);
    let run = start(&s, &fake, Knobs::default());
    expect_started(&seen);
    run.signals.send(libc::SIGINT).unwrap();
    run.signals.send(libc::SIGINT).unwrap();
    let ended = run.join();
    assert!(ended.report.interrupted);
    assert_eq!(ended.outcome("a"), Outcome::Cancelled);
    assert!(fake
        .log
        .lock()
        .unwrap()
        .contains(&Seen::Stopped("a".into(), Some(CancelReason::Interrupt))));
}

#[test]
fn a_stage_over_its_timeout_is_stopped_as_timed_out() {
    // `keep_going`, so that `fine` runs to the end whenever the timeout fires.
    let s = setup(
        r#"
stages:
  slow: {run: "fake", outputs: [o], timeout: 50ms}
  fine: {run: "fake", outputs: [o], timeout: 1h}
  next: {run: "fake ${{ stages.slow.outputs.o }}", outputs: [o]}
"#,
    );
    let (fake, _seen) = Fake::new(&s.pipeline, &[("slow", Act::Hold)]);
    let run = start(
        &s,
        &fake,
        Knobs {
            keep_going: true,
            ..Knobs::default()
        },
    );
    let ended = run.join();
    assert_eq!(ended.outcome("slow"), Outcome::TimedOut);
    assert_eq!(
        ended.message("slow"),
        "timed out after 50ms; its process group was killed"
    );
    assert!(fake
        .log
        .lock()
        .unwrap()
        .contains(&Seen::Stopped("slow".into(), Some(CancelReason::TimedOut))));
    assert!(ended.warnings.contains(&(
        Some("slow".into()),
        "timeout reached; stopping the stage".into()
    )));
    assert_eq!(ended.outcome("fine"), Outcome::Ran);
    assert_eq!(ended.outcome("next"), Outcome::Skipped);
    assert_eq!(ended.message("next"), "upstream `slow` failed");
}

#[test]
fn a_timeout_stops_the_run_like_a_failure_without_keep_going() {
    let s = setup(
        r#"
stages:
  slow: {run: "fake", outputs: [o], timeout: 50ms}
  other: {run: "fake", outputs: [o]}
"#,
    );
    let (fake, _seen) = Fake::new(&s.pipeline, &[("slow", Act::Hold), ("other", Act::Hold)]);
    let ended = start(&s, &fake, Knobs::default()).join();
    assert_eq!(ended.outcome("slow"), Outcome::TimedOut);
    assert_eq!(ended.outcome("other"), Outcome::Cancelled);
    assert!(fake.log.lock().unwrap().contains(&Seen::Stopped(
        "other".into(),
        Some(CancelReason::StageFailed)
    )));
}

#[test]
fn a_rerun_request_stops_the_running_stage_and_runs_it_again_with_its_downstream() {
    let s = setup(
        r#"
stages:
  a: {run: "fake", outputs: [o]}
  b: {run: "fake ${{ stages.a.outputs.o }}", outputs: [o]}
"#,
    );
    let (fake, seen) = Fake::new(&s.pipeline, &[("a", Act::Hold)]);
    let run = start(&s, &fake, Knobs::default());
    assert_eq!(expect_started(&seen), "a");
    run.control
        .send(Control::Rerun([run.index("a")].into()))
        .unwrap();
    assert_eq!(
        next(&seen),
        Seen::Stopped("a".into(), Some(CancelReason::Superseded))
    );
    assert_eq!(run.wait_finished("a"), Outcome::Cancelled);
    assert_eq!(expect_started(&seen), "a");
    fake.release("a");
    let ended = run.join();
    assert_eq!(ended.outcome("a"), Outcome::Ran);
    assert_eq!(ended.outcome("b"), Outcome::Ran);
    assert!(ended.report.deferred.is_empty());
}

#[test]
fn a_withdraw_request_drops_the_stage_and_its_downstream_from_the_run() {
    let s = setup(
        r#"
stages:
  a: {run: "fake", outputs: [o]}
  b: {run: "fake ${{ stages.a.outputs.o }}", outputs: [o]}
  c: {run: "fake", outputs: [o]}
"#,
    );
    let (fake, seen) = Fake::new(&s.pipeline, &[("a", Act::Hold), ("c", Act::Hold)]);
    let run = start(&s, &fake, Knobs::default());
    expect_started(&seen);
    expect_started(&seen);
    run.control
        .send(Control::Withdraw([run.index("a")].into()))
        .unwrap();
    assert_eq!(
        next(&seen),
        Seen::Stopped("a".into(), Some(CancelReason::Superseded))
    );
    assert_eq!(run.wait_finished("a"), Outcome::Cancelled);
    fake.release("c");
    let a = run.index("a");
    let b = run.index("b");
    let ended = run.join();
    assert_eq!(ended.outcome("c"), Outcome::Ran);
    assert_eq!(
        ended.message("a"),
        "definition changed; partial outputs removed"
    );
    assert!(!ended.finished.contains_key("b"));
    assert!(!ended.report.stages.contains_key(&a));
    assert!(!ended.report.stages.contains_key(&b));
}
