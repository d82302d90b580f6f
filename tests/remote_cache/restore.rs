//! Read-through: a fresh clone restores every stage from the remote and runs none, `status
//! --remote` says so beforehand, two workspaces pushing the same keys at once are both fine, and
//! a large S3 output goes up in parts and comes back whole.

use super::*;

/// A fresh clone (sources only, empty local cache) restores every stage from what the first
/// workspace pushed, byte for byte and with the executable bits, and runs nothing; `status
/// --remote` said it would. The clone's local cache then holds everything.
fn fresh_clone_restores_everything(backend: Backend) {
    let remote = remote_or_skip!(backend, "fresh_clone_restores_everything");
    let ws = sources(PIPELINE);
    let first = remote.run(&ws, &[]);
    first.assert_ok();
    assert_ran_all(&first);
    assert!(warnings(&first).is_empty(), "{:?}", warnings(&first));
    assert_eq!(records(&remote).len(), STAGES.len(), "{:?}", remote.list());
    let summary = &run_finished(&first)["remote"];
    assert_eq!(summary["pushed_records"], STAGES.len(), "{summary}");
    assert_eq!(summary["restored"], 0, "{summary}");

    let clone = clone_of(&ws, &[]);
    let status = remote.sluice(&clone, &["status", "--remote"]);
    status.assert_ok();
    for stage in STAGES {
        let line = status
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(stage))
            .unwrap_or_else(|| panic!("no status line for {stage}:\n{}", status.stdout));
        assert!(
            line.contains("will restore") && line.contains("remote"),
            "{line}"
        );
    }
    let status = remote.sluice(&clone, &["status", "--remote", "--json"]);
    status.assert_ok();
    let rows: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    for row in rows.as_array().unwrap() {
        assert_eq!(
            (&row["state"], &row["from"]),
            (&"restore".into(), &"remote".into()),
            "{row}"
        );
    }
    assert!(!clone.exists("out"), "status wrote outputs");

    let second = remote.run(&clone, &[]);
    assert_restored_all(&second);
    assert!(warnings(&second).is_empty(), "{:?}", warnings(&second));
    assert_eq!(run_finished(&second)["remote"]["restored"], STAGES.len());
    assert_same_outputs(&ws, &clone);

    // Both the events and the terminal say where each stage came from.
    for stage in STAGES {
        let said = second.events().into_iter().any(|e| {
            e["stage"] == stage
                && ["stage_log", "stage_finished"].contains(&e["event"].as_str().unwrap_or(""))
                && e["message"].as_str().is_some_and(|m| m.contains("remote"))
        });
        assert!(
            said,
            "no event says {stage} came from the remote:\n{}",
            second.stdout
        );
    }
    let human = clone_of(&ws, &[]);
    let r = remote.sluice(&human, &["run"]);
    r.assert_ok();
    let text = format!("{}{}", r.stdout, r.stderr);
    for stage in STAGES {
        let said = text.lines().any(|l| {
            l.contains("restored")
                && l.contains("remote")
                && l.split_whitespace().any(|w| w == stage)
        });
        assert!(
            said,
            "no line says {stage} was restored from the remote:\n{text}"
        );
    }

    // Kept locally: without the remote, the outputs come back from the clone's own cache.
    std::fs::remove_dir_all(clone.path("out")).unwrap();
    let third = remote.run(&clone, &["--no-remote"]);
    assert_restored_all(&third);
    assert!(run_finished(&third)
        .get("remote")
        .is_none_or(|r| r.is_null()));
    assert_same_outputs(&ws, &clone);
}

#[test]
fn fresh_clone_restores_everything_from_file() {
    fresh_clone_restores_everything(Backend::File);
}

#[test]
fn fresh_clone_restores_everything_from_nginx() {
    fresh_clone_restores_everything(Backend::Nginx);
}

#[test]
fn fresh_clone_restores_everything_from_s3() {
    fresh_clone_restores_everything(Backend::S3);
}

/// Two workspaces run the same pipeline at the same time against one remote: both push the same
/// keys (content-addressed, so the same bytes), both succeed, and a third clone restores it all.
fn two_workspaces_at_once(backend: Backend) {
    let remote = remote_or_skip!(backend, "two_workspaces_at_once");
    let a = sources(PIPELINE);
    let b = clone_of(&a, &[]);
    let spawn = |ws: &Ws| {
        remote
            .command(ws, &["run", "--json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn sluice")
    };
    let (ca, cb) = (spawn(&a), spawn(&b));
    for r in [wait_child(ca, LONG), wait_child(cb, LONG)] {
        r.assert_ok();
        // Whichever finished a stage first may have pushed it before the other looked it up.
        let outcomes = r.outcomes();
        assert_eq!(outcomes.len(), STAGES.len(), "{}", r.stdout);
        assert!(
            outcomes.values().all(|o| o == "ran" || o == "restored"),
            "{outcomes:?}"
        );
        assert!(remote_warnings(&r).is_empty(), "{:?}", remote_warnings(&r));
    }
    assert_eq!(records(&remote).len(), STAGES.len(), "{:?}", remote.list());
    let c = clone_of(&a, &[]);
    assert_restored_all(&remote.run(&c, &[]));
    assert_same_outputs(&a, &c);
    assert_same_outputs(&b, &c);
}

#[test]
fn two_workspaces_at_once_on_file() {
    two_workspaces_at_once(Backend::File);
}

#[test]
fn two_workspaces_at_once_on_nginx() {
    two_workspaces_at_once(Backend::Nginx);
}

#[test]
fn two_workspaces_at_once_on_s3() {
    two_workspaces_at_once(Backend::S3);
}

/// A 70 MiB output (over the 64 MiB multipart threshold) goes to S3 in parts and a fresh clone
/// gets the same bytes back. The content differs along the file, so parts put together in the
/// wrong order would not pass.
#[test]
fn large_s3_output_round_trips_in_parts() {
    let remote = remote_or_skip!(Backend::S3, "large_s3_output_round_trips_in_parts");
    const SIZE: usize = 70 << 20;
    let ws = Ws::new();
    ws.pipeline(&format!(
        "name: big\nstages:\n  big:\n    run: seq 1 20000000 | head -c {SIZE} > ${{{{ outputs.b }}}}\n    outputs: {{b: out/big.bin}}\n"
    ));
    remote.run(&ws, &[]).assert_ok();
    let bytes = std::fs::read(ws.path("out/big.bin")).unwrap();
    assert_eq!(bytes.len(), SIZE);
    let key = object_key(&bytes);
    let etag = remote
        .s3_etag(&key)
        .unwrap_or_else(|| panic!("{key} is not in the bucket: {:?}", remote.list()));
    assert!(
        etag.trim_matches('"').contains('-'),
        "not a multipart upload: ETag {etag}"
    );

    let clone = Ws::new();
    clone.write("sluice.yaml", &ws.read("sluice.yaml"));
    let r = remote.run(&clone, &[]);
    r.assert_ok();
    assert!(r.started().is_empty(), "{}", r.stdout);
    assert_eq!(r.outcomes()["big"], "restored");
    assert!(
        std::fs::read(clone.path("out/big.bin")).unwrap() == bytes,
        "out/big.bin differs"
    );
}
