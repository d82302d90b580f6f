//! A stage's `timeout:`: the stage is stopped, and the run says that the timeout stopped it
//! (not a generic cancellation), in the event stream, the stage's log and the exit code.

mod common;

use common::*;
use std::time::Duration;

const SLEEPER: &str = r#"
stages:
  slow:
    run: "sleep 30; echo late > ${{ outputs.o }}"
    outputs: [o]
    timeout: 1s
"#;

/// Long enough for a loaded machine; far shorter than the stage's `sleep 30` would take if the
/// timeout did not stop it, so a missing timeout fails the test instead of passing late.
const GUARD: Duration = Duration::from_secs(25);

#[test]
fn a_run_stage_past_its_timeout_is_reported_as_timed_out() {
    let ws = Ws::new();
    ws.pipeline(SLEEPER);
    let child = ws.spawn(&["run", "--json", "--kill-grace", "1"]);
    let r = wait_child(child, GUARD);
    assert_eq!(r.code, 1, "{r:?}");
    let f = r.finished("slow");
    assert_eq!(f["outcome"], "timed_out", "{f}");
    let message = f["message"].as_str().unwrap();
    assert!(message.contains("timed out after 1s"), "{f}");
    assert!(!message.contains("cancelled"), "{f}");
    let tail: Vec<&str> = f["log_tail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        tail.iter()
            .any(|l| l.contains("[sluice] stopped: timed out after 1s")),
        "the stage's log must name the timeout: {tail:?}"
    );
    assert!(
        !tail.iter().any(|l| l.contains("cancelled or timed out")),
        "{tail:?}"
    );
    assert!(
        r.events().iter().any(|e| e["event"] == "warning"
            && e["stage"] == "slow"
            && e["message"].as_str().unwrap().contains("timeout")),
        "{r:?}"
    );
    assert!(!ws.exists("out/sluice/slow/o"));
}

#[test]
fn the_human_report_names_the_timeout() {
    let ws = Ws::new();
    ws.pipeline(SLEEPER);
    let child = ws.spawn(&["run", "--kill-grace", "1"]);
    let r = wait_child(child, GUARD);
    assert_eq!(r.code, 1, "{r:?}");
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(all.contains("timed out after 1s"), "{all}");
}

/// A stage with a timeout that a user stops is interrupted, not timed out: the token keeps the
/// reason it was stopped for.
#[test]
fn ctrl_c_before_the_timeout_reports_an_interrupt() {
    let ws = Ws::new();
    ws.pipeline(
        r#"
stages:
  slow:
    run: "touch started; sleep 30; echo late > ${{ outputs.o }}"
    outputs: [o]
    timeout: 10m
"#,
    );
    let child = ws.spawn(&["run", "--json", "--kill-grace", "1"]);
    assert!(
        wait_for(GUARD, || ws.exists("started")),
        "the stage never started"
    );
    send_signal(&child, libc::SIGINT);
    let r = wait_child(child, GUARD);
    assert_eq!(r.code, 130, "{r:?}");
    let f = r.finished("slow");
    assert_eq!(f["outcome"], "cancelled", "{f}");
    let message = f["message"].as_str().unwrap();
    assert!(message.starts_with("interrupted"), "{f}");
    assert!(!message.contains("timed out"), "{f}");
}

/// Fail-fast stops a sibling that has a timeout of its own; it says so rather than blaming the
/// timeout.
#[test]
fn a_failing_sibling_cancels_with_its_own_reason() {
    let ws = Ws::new();
    ws.pipeline(
        r#"
stages:
  slow:
    run: "touch started; sleep 30; echo late > ${{ outputs.o }}"
    outputs: [o]
    timeout: 10m
  bad:
    run: "until [ -f started ]; do sleep 0.1; done; exit 3"
    outputs: [o]
"#,
    );
    let child = ws.spawn(&["run", "--json", "--jobs", "2", "--kill-grace", "1"]);
    let r = wait_child(child, GUARD);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.outcomes()["bad"], "failed", "{r:?}");
    let f = r.finished("slow");
    assert_eq!(f["outcome"], "cancelled", "{f}");
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains("another stage failed"),
        "{f}"
    );
}
