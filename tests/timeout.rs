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
    let events = r.events();
    let f = events
        .iter()
        .find(|e| e["event"] == "stage_finished" && e["stage"] == "slow")
        .unwrap_or_else(|| panic!("no stage_finished for `slow`: {r:?}"));
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
        events.iter().any(|e| e["event"] == "warning"
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
