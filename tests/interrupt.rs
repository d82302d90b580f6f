//! Killing a run: Ctrl-C cancels cleanly (process groups killed, partial outputs removed, exit
//! 130); a run killed outright leaves nothing a later run accepts, and the next run recovers.

mod common;

use common::*;

const SLOW: &str = r#"
stages:
  fast: {run: "echo f > ${{ outputs.o }}", outputs: [o]}
  slow:
    run: "echo partial > ${{ outputs.o }}; echo $$ > slow.pid; touch started; if [ -f hold ]; then sleep 60; fi; echo complete >> ${{ outputs.o }}"
    outputs: {o: out/slow.txt}
    needs: [fast]
  after: {run: "cat ${{ stages.slow.outputs.o }} > ${{ outputs.o }}", outputs: [o]}
"#;

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn ctrl_c_kills_running_stages_and_keeps_no_partial_output() {
    let ws = Ws::new();
    ws.write("hold", "").pipeline(SLOW);
    let child = ws.spawn(&["run", "--json", "--kill-grace", "2"]);
    assert!(
        wait_for(LONG, || ws.exists("started")),
        "the slow stage never started"
    );
    let stage_pid: i32 = ws.read("slow.pid").trim().parse().unwrap();
    send_signal(&child, libc::SIGINT);
    let r = wait_child(child, LONG);
    assert_eq!(r.code, 130, "stderr: {}", r.stderr);
    let o = r.outcomes();
    assert_eq!(o["fast"], "ran");
    assert_eq!(o["slow"], "cancelled");
    assert_eq!(o["after"], "skipped");
    assert!(!ws.exists("out/slow.txt"), "partial output must be removed");
    assert!(
        wait_for(LONG, || !alive(stage_pid)),
        "the stage's process survived Ctrl-C"
    );
    let finished = r
        .events()
        .into_iter()
        .find(|e| e["event"] == "run_finished")
        .unwrap();
    assert_eq!(finished["interrupted"], true);

    // The next run recovers: fast is up to date, slow runs from scratch.
    std::fs::remove_file(ws.path("hold")).unwrap();
    let again = ws.run(&[]);
    again.assert_ok();
    assert_eq!(again.started(), ["slow", "after"]);
    assert_eq!(ws.read("out/slow.txt"), "partial\ncomplete\n");
}

#[test]
fn a_second_ctrl_c_kills_at_once() {
    let ws = Ws::new();
    // This stage survives SIGTERM, so only the escalation to SIGKILL can stop it. Its trap
    // records the SIGTERM: the sign that sluice has handled the first Ctrl-C.
    ws.pipeline(
        r#"
stages:
  stubborn:
    run: "trap 'touch got_term' TERM; echo $$ > pid; touch started; while true; do sleep 0.1; done"
    outputs: [o]
"#,
    );
    let child = ws.spawn(&["run", "--json", "--kill-grace", "600"]);
    assert!(wait_for(LONG, || ws.exists("started")));
    send_signal(&child, libc::SIGINT);
    let pid: i32 = ws.read("pid").trim().parse().unwrap();
    assert!(
        wait_for(LONG, || ws.exists("got_term")),
        "the first Ctrl-C never reached the stage as SIGTERM"
    );
    assert!(alive(pid), "the stage must outlive its SIGTERM");
    send_signal(&child, libc::SIGINT);
    let r = wait_child(child, LONG);
    assert_eq!(r.code, 130, "{}", r.stderr);
    assert!(wait_for(LONG, || !alive(pid)));
}

#[test]
fn a_run_killed_outright_leaves_nothing_a_later_run_accepts() {
    let ws = Ws::new();
    ws.write("hold", "").pipeline(SLOW);
    let mut child = ws.spawn(&["run", "--json"]);
    assert!(wait_for(LONG, || ws.exists("started")));
    child.kill().unwrap(); // SIGKILL: sluice gets no chance to clean up.
    let _ = child.wait();
    // Its guardian kills the stage's process group; nobody has to stop it by hand.
    let pid: i32 = ws.read("slow.pid").trim().parse().unwrap();
    assert!(
        wait_for(LONG, || !alive(pid)),
        "the stage's process outlived the killed sluice"
    );
    assert_eq!(
        ws.read("out/slow.txt"),
        "partial\n",
        "the killed stage left a partial output"
    );

    std::fs::remove_file(ws.path("hold")).unwrap();
    let status = ws.sluice(&["status"]);
    assert!(status.stdout.contains("slow   stale"), "{}", status.stdout);
    let r = ws.run(&[]);
    r.assert_ok();
    assert!(
        r.started().contains(&"slow".to_string()),
        "the partial output must not be accepted"
    );
    assert_eq!(ws.read("out/slow.txt"), "partial\ncomplete\n");
}
