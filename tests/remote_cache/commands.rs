//! `sluice cache push` and `sluice cache pull`: what the lock file names, moved between the
//! local cache and the remote.

use super::*;

/// A run with `--no-remote` uploads nothing; `cache push` then uploads what the lock names;
/// in a fresh clone (sources and lock file) `cache pull` fills the local cache without touching
/// the workspace, and `run --no-remote` restores everything from it.
fn push_pull_round_trip(backend: Backend) {
    let remote = remote_or_skip!(backend, "push_pull_round_trip");
    let ws = sources(PIPELINE);
    let r = remote.run(&ws, &["--no-remote"]);
    r.assert_ok();
    assert_ran_all(&r);
    assert!(
        remote.list().is_empty(),
        "--no-remote uploaded: {:?}",
        remote.list()
    );

    let push = remote.sluice(&ws, &["cache", "push"]);
    push.assert_ok();
    for stage in STAGES {
        assert!(
            push.stdout.contains(stage),
            "push names no {stage}:\n{}",
            push.stdout
        );
    }
    assert_eq!(records(&remote).len(), STAGES.len(), "{:?}", remote.list());

    let clone = clone_of(&ws, &["sluice.lock"]);
    let pull = remote.sluice(&clone, &["cache", "pull"]);
    pull.assert_ok();
    for stage in STAGES {
        assert!(
            pull.stdout.contains(stage),
            "pull names no {stage}:\n{}",
            pull.stdout
        );
    }
    assert!(
        !clone.exists("out"),
        "pull wrote outputs into the workspace"
    );
    let r = remote.run(&clone, &["--no-remote"]);
    assert_restored_all(&r);
    assert_same_outputs(&ws, &clone);

    // Pushing again moves nothing new and still succeeds.
    remote.sluice(&ws, &["cache", "push"]).assert_ok();
    assert_eq!(records(&remote).len(), STAGES.len());
}

#[test]
fn push_pull_round_trip_on_file() {
    push_pull_round_trip(Backend::File);
}

#[test]
fn push_pull_round_trip_on_nginx() {
    push_pull_round_trip(Backend::Nginx);
}

#[test]
fn push_pull_round_trip_on_s3() {
    push_pull_round_trip(Backend::S3);
}

/// `cache push` and `cache pull` with no remote configured say how to configure one (exit 2).
#[test]
fn cache_commands_without_a_remote_say_how_to_set_one() {
    let ws = sources(PIPELINE);
    output(isolated(&ws, &["run"])).assert_ok();
    for sub in ["push", "pull"] {
        let r = output(isolated(&ws, &["cache", sub]));
        assert_eq!(r.code, 2, "cache {sub}\n{}\n{}", r.stdout, r.stderr);
        assert!(
            r.stderr.contains("SLUICE_REMOTE_CACHE"),
            "cache {sub}: {}",
            r.stderr
        );
    }
}
