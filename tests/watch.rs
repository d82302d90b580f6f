//! `sluice watch` with the real binary and the real file watcher. Every wait is for an event
//! line (`--json`) or a file, with a generous timeout; what did *not* happen is checked after a
//! later change has been seen, never after a sleep.

mod common;

use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::{Arc, Mutex};

/// A running `sluice watch --json` and the events it has printed so far.
struct Watcher {
    child: Option<Child>,
    events: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<String>>,
}

impl Watcher {
    fn start(ws: &Ws, extra: &[&str]) -> Watcher {
        Watcher::start_env(ws, extra, &[])
    }

    fn start_env(ws: &Ws, extra: &[&str], env: &[(&str, &str)]) -> Watcher {
        let mut args = vec!["watch", "--json"];
        args.extend_from_slice(extra);
        let mut cmd = ws.command(&args);
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn sluice watch");
        let events = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let ev = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("bad event line {line}: {e}"));
                ev.lock().unwrap().push(v);
            }
        });
        let se = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = se.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Watcher {
            child: Some(child),
            events,
            stderr,
        }
    }

    fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// Waits for an event at or after position `from` that satisfies `pred`; returns its position.
    fn wait(&self, from: usize, what: &str, pred: impl Fn(&Value) -> bool) -> usize {
        let mut found = None;
        let ok = wait_for(LONG, || {
            let events = self.events.lock().unwrap();
            found = events[from.min(events.len())..]
                .iter()
                .position(&pred)
                .map(|p| p + from);
            found.is_some()
        });
        assert!(
            ok,
            "timed out waiting for {what}\nevents:\n{}\nstderr:\n{}",
            self.events()
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
            self.stderr.lock().unwrap()
        );
        found.unwrap()
    }

    /// Waits for the end of a round (`waiting`) at or after `from`.
    fn idle(&self, from: usize) -> usize {
        self.wait(from, "the end of a round", |e| e["event"] == "waiting")
    }

    /// Waits for a `changed` event of `path` at or after `from`.
    fn changed(&self, from: usize, path: &str) -> usize {
        self.wait(from, &format!("`{path}` changed"), |e| {
            e["event"] == "changed" && e["path"] == path
        })
    }

    /// Events in `from..to` of one kind.
    fn slice(&self, from: usize, to: usize, kind: &str) -> Vec<Value> {
        self.events()[from..to]
            .iter()
            .filter(|e| e["event"] == kind)
            .cloned()
            .collect()
    }

    fn started(&self, from: usize, to: usize) -> Vec<String> {
        self.slice(from, to, "stage_started")
            .iter()
            .map(|e| e["stage"].as_str().unwrap().to_string())
            .collect()
    }

    /// Ctrl-C; returns the exit code.
    fn interrupt(mut self) -> i32 {
        let child = self.child.take().unwrap();
        send_signal(&child, libc::SIGINT);
        let r = wait_child(child, LONG);
        r.code
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The stages of a `changed` event, sorted (the event lists them in a dependency order, which
/// leaves independent stages in either order).
fn names(v: &Value) -> Vec<String> {
    let mut n: Vec<String> = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

/// Replaces a file the way editors with atomic saves do: write a temporary file, rename it over.
fn save_atomically(ws: &Ws, rel: &str, content: &str) {
    let tmp = ws.path(&format!("{rel}.swp~"));
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, ws.path(rel)).unwrap();
}

const CHAIN: &str = r#"
stages:
  a: {run: "cat ${{ inputs.i }} > ${{ outputs.o }}", inputs: {i: data/a.txt}, outputs: [o]}
  b:
    run: "cat ${{ stages.a.outputs.o }} ${{ inputs.i }} > ${{ outputs.o }}"
    inputs: {i: data/b.txt}
    outputs: [o]
  c: {run: "cat ${{ stages.b.outputs.o }} > ${{ outputs.o }}", outputs: {o: out/c.txt}}
  side: {run: "cat ${{ inputs.i }} > ${{ outputs.o }}", inputs: {i: data/a.txt}, outputs: [o]}
"#;

/// `CHAIN` with `c` changed and `side` reading a new file.
const FIXED: &str = r#"
stages:
  a: {run: "cat ${{ inputs.i }} > ${{ outputs.o }}", inputs: {i: data/a.txt}, outputs: [o]}
  b:
    run: "cat ${{ stages.a.outputs.o }} ${{ inputs.i }} > ${{ outputs.o }}"
    inputs: {i: data/b.txt}
    outputs: [o]
  c: {run: "cat ${{ stages.b.outputs.o }} ${{ stages.b.outputs.o }} > ${{ outputs.o }}", outputs: {o: out/c.txt}}
  side: {run: "cat ${{ inputs.i }} > ${{ outputs.o }}", inputs: {i: data/new.txt}, outputs: [o]}
"#;

fn chain_ws() -> Ws {
    let ws = Ws::new();
    ws.write("data/a.txt", "a1\n")
        .write("data/b.txt", "b1\n")
        .pipeline(CHAIN);
    ws
}

#[test]
fn an_edit_in_the_middle_of_a_chain_reruns_exactly_the_stages_below_it() {
    let ws = chain_ws();
    let w = Watcher::start(&ws, &[]);
    let first = w.idle(0);
    assert_eq!(w.started(0, first).len(), 4);
    assert_eq!(ws.read("out/c.txt"), "a1\nb1\n");

    ws.write("data/b.txt", "b2\n");
    let at = w.changed(first, "data/b.txt");
    assert_eq!(names(&w.events()[at]), ["b", "c"]);
    let end = w.idle(at);
    assert_eq!(w.started(at, end), ["b", "c"]);
    assert_eq!(ws.read("out/c.txt"), "a1\nb2\n");
    let finished = w.slice(at, end, "run_finished");
    assert_eq!(finished.len(), 1, "one round, one summary");
    assert_eq!(finished[0]["ran"], 2);
    assert_eq!(w.interrupt(), 130);
}

/// A write the kernel reports finished (closed after writing, or an atomic save renamed into
/// place) is handled at once, not after the quiet period: with an hour of debounce, the change is
/// still seen and its stages run. (The next change within the hour would be a burst and wait, so
/// each way of writing gets its own watcher.)
#[test]
fn a_finished_write_starts_its_round_without_waiting_for_the_debounce() {
    type Save = fn(&Ws);
    let ways: [(&str, Save); 2] = [
        ("closed after writing", |ws| {
            ws.write("data/b.txt", "b2\n");
        }),
        ("renamed into place", |ws| {
            save_atomically(ws, "data/b.txt", "b2\n")
        }),
    ];
    for (how, save) in ways {
        let ws = chain_ws();
        let w = Watcher::start(&ws, &["--debounce", "3600000"]);
        let first = w.idle(0);
        save(&ws);
        let at = w.changed(first, "data/b.txt");
        let end = w.idle(at);
        assert_eq!(w.started(at, end), ["b", "c"], "{how}");
        assert_eq!(ws.read("out/c.txt"), "a1\nb2\n", "{how}");
        assert_eq!(w.interrupt(), 130, "{how}");
    }
}

#[test]
fn the_same_bytes_saved_again_or_a_touch_rerun_nothing() {
    let ws = chain_ws();
    let w = Watcher::start(&ws, &[]);
    let first = w.idle(0);
    // Identical bytes through a new file, then a touch: content unchanged.
    ws.write("data/a.txt", "a1\n");
    let f = std::fs::File::options()
        .append(true)
        .open(ws.path("data/b.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now()).unwrap();
    drop(f);
    // A real change afterwards: once it is seen, the earlier ones have been handled too.
    ws.write("data/b.txt", "b2\n");
    let at = w.changed(first, "data/b.txt");
    let changes = w.slice(first, at + 1, "changed");
    assert_eq!(changes.len(), 1, "only the real change counts: {changes:?}");
    let end = w.idle(at);
    assert_eq!(w.started(first, end), ["b", "c"]);
    assert_eq!(w.interrupt(), 130);
}

#[test]
fn an_atomic_rename_over_save_is_seen_and_outputs_never_trigger() {
    let ws = chain_ws();
    let w = Watcher::start(&ws, &[]);
    let first = w.idle(0);
    save_atomically(&ws, "data/a.txt", "a2\n");
    let at = w.changed(first, "data/a.txt");
    assert_eq!(names(&w.events()[at]), ["a", "b", "c", "side"]);
    let end = w.idle(at);
    assert_eq!(ws.read("out/c.txt"), "a2\nb1\n");
    // The round wrote outputs; a second atomic save must be the next change, not the outputs.
    save_atomically(&ws, "data/a.txt", "a3\n");
    let next = w.wait(end, "the next change", |e| e["event"] == "changed");
    assert_eq!(w.events()[next]["path"], "data/a.txt");
    w.idle(next);
    assert_eq!(ws.read("out/c.txt"), "a3\nb1\n");
    // Deleted, then created again.
    std::fs::remove_file(ws.path("data/b.txt")).unwrap();
    let gone = w.changed(next, "data/b.txt");
    let failed = w.idle(gone);
    ws.write("data/b.txt", "b9\n");
    let back = w.changed(failed, "data/b.txt");
    w.idle(back);
    assert_eq!(ws.read("out/c.txt"), "a3\nb9\n");
    assert_eq!(w.interrupt(), 130);
}

#[test]
fn a_change_during_a_long_stage_cancels_and_restarts_it_while_others_carry_on() {
    let ws = Ws::new();
    ws.write("data/in.txt", "v1\n")
        .write("data/other.txt", "o\n");
    ws.pipeline(
        r#"
stages:
  slow:
    run: "echo $$ >> pids; cat ${{ inputs.i }} > ${{ outputs.o }}; touch started-$(cat ${{ inputs.i }}); while [ ! -f release ]; do sleep 0.05; done"
    inputs: {i: data/in.txt}
    outputs: {o: out/slow.txt}
  after: {run: "cat ${{ stages.slow.outputs.o }} > ${{ outputs.o }}", outputs: {o: out/after.txt}}
  steady:
    run: "touch steady-started; while [ ! -f release ]; do sleep 0.05; done; cat ${{ inputs.i }} > ${{ outputs.o }}"
    inputs: {i: data/other.txt}
    outputs: [o]
"#,
    );
    let w = Watcher::start(&ws, &["--jobs", "2", "--kill-grace", "5"]);
    assert!(wait_for(LONG, || ws.exists("started-v1")
        && ws.exists("steady-started")));
    ws.write("data/in.txt", "v2\n");
    let at = w.changed(0, "data/in.txt");
    assert_eq!(names(&w.events()[at]), ["after", "slow"]);
    assert!(
        wait_for(LONG, || ws.exists("started-v2")),
        "slow never started again"
    );
    let cancelled = w.wait(at, "slow cancelled", |e| {
        e["event"] == "stage_finished" && e["stage"] == "slow"
    });
    assert_eq!(w.events()[cancelled]["outcome"], "cancelled");
    let first_pid: i32 = ws.read("pids").lines().next().unwrap().parse().unwrap();
    // SAFETY: signal 0 only checks for existence.
    assert!(
        wait_for(LONG, || unsafe { libc::kill(first_pid, 0) } != 0),
        "the cancelled stage's process survived"
    );
    ws.write("release", "");
    let end = w.idle(at);
    let done: Vec<(String, String)> = w
        .slice(0, end, "stage_finished")
        .iter()
        .map(|e| {
            (
                e["stage"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let steady: Vec<_> = done.iter().filter(|(s, _)| s == "steady").collect();
    assert_eq!(
        steady,
        [&("steady".to_string(), "ran".to_string())],
        "the unaffected stage ran once, uninterrupted"
    );
    assert_eq!(ws.read("out/after.txt"), "v2\n");
    assert_eq!(w.slice(0, end, "run_finished").len(), 1, "all in one round");
    assert_eq!(w.interrupt(), 130);
}

#[test]
fn an_invalid_pipeline_edit_is_reported_and_a_fix_reruns_what_changed() {
    let ws = chain_ws();
    let w = Watcher::start(&ws, &[]);
    let first = w.idle(0);
    ws.pipeline(&CHAIN.replace(
        "outputs: {o: out/c.txt}}",
        "outputs: {o: out/c.txt}, bogus: 1}",
    ));
    let bad = w.wait(first, "the invalid edit", |e| {
        e["event"] == "pipeline_invalid"
    });
    assert!(
        w.events()[bad]["errors"]
            .as_str()
            .unwrap()
            .contains("bogus"),
        "{}",
        w.events()[bad]
    );
    // Watching goes on with the last good pipeline.
    ws.write("data/b.txt", "b2\n");
    let at = w.changed(bad, "data/b.txt");
    let end = w.idle(at);
    assert_eq!(w.started(at, end), ["b", "c"]);

    // The fix changes `c` and points `side` at a new input, which is then watched.
    ws.write("data/new.txt", "n1\n");
    ws.pipeline(FIXED);
    let fix = w.changed(end, "sluice.yaml");
    assert_eq!(names(&w.events()[fix]), ["c", "side"]);
    let end = w.idle(fix);
    let mut started = w.started(fix, end);
    started.sort();
    assert_eq!(started, ["c", "side"]);
    assert_eq!(ws.read("out/c.txt"), "a1\nb2\na1\nb2\n");
    ws.write("data/new.txt", "n2\n");
    let at = w.changed(end, "data/new.txt");
    assert_eq!(names(&w.events()[at]), ["side"]);
    w.idle(at);
    assert_eq!(w.interrupt(), 130);
}

#[test]
fn ctrl_c_while_idle_exits_130_and_polling_works_where_events_do_not() {
    let ws = chain_ws();
    let w = Watcher::start_env(&ws, &[], &[("SLUICE_WATCH_POLL", "1")]);
    let first = w.idle(0);
    let watching = w.wait(0, "the watch set", |e| e["event"] == "watching");
    assert!(w.events()[watching]["polled"].as_u64().unwrap() > 0);
    assert_eq!(w.events()[watching]["native"], 0);
    ws.write("data/b.txt", "b2\n");
    let at = w.changed(first, "data/b.txt");
    w.idle(at);
    assert_eq!(ws.read("out/c.txt"), "a1\nb2\n");
    assert_eq!(w.interrupt(), 130);
}

// --- The image pipeline ---------------------------------------------------------------------

fn image(ws: &Ws, class: usize, i: u32) {
    let bytes = png(6, 6, |x, y| {
        [
            (x * 40 + i * 3) as u8,
            (y * 40 + class as u32 * 90) as u8,
            (i * 30) as u8,
        ]
    });
    let name = ["cat", "dog"][class];
    let p = ws.path(&format!("data/pets/{name}/{i:02}.png"));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

const PETS: &str = r#"
stages:
  c:
    uses: clean
    inputs: {images: data/pets}
  s:
    uses: split
    inputs: {images: "${{ stages.c.outputs.table }}"}
    with: {ratios: {train: 0.5, val: 0.25, test: 0.25}, seed: 7}
  n:
    uses: normalize
    inputs:
      train: ${{ stages.s.outputs.train }}
      val: ${{ stages.s.outputs.val }}
      test: ${{ stages.s.outputs.test }}
    with: {size: [4, 4]}
"#;

#[test]
fn a_new_image_in_a_class_folder_reruns_the_image_pipeline_from_clean() {
    let ws = Ws::new();
    for class in 0..2 {
        for i in 0..6 {
            image(&ws, class, i);
        }
    }
    ws.pipeline(PETS);
    let w = Watcher::start(&ws, &[]);
    let first = w.idle(0);
    assert_eq!(w.started(0, first), ["c", "s", "n"]);
    image(&ws, 1, 7);
    let at = w.changed(first, "data/pets");
    assert_eq!(names(&w.events()[at]), ["c", "n", "s"]);
    let end = w.idle(at);
    assert_eq!(w.started(at, end), ["c", "s", "n"]);
    let finished = w.slice(at, end, "run_finished");
    assert_eq!(finished[0]["ok"], true, "{:?}", w.events());
    // Removing it again restores every stage from the cache instead of running it.
    std::fs::remove_file(ws.path("data/pets/dog/07.png")).unwrap();
    let at = w.changed(end, "data/pets");
    let end = w.idle(at);
    assert!(w.started(at, end).is_empty());
    let finished = w.slice(at, end, "run_finished");
    assert_eq!(finished[0]["restored"], 3);
    assert_eq!(w.interrupt(), 130);
}

/// A `clean` stage dropping `drop`, writing its report to `out/report.json`.
fn clean_dropping(drop: &str) -> String {
    format!(
        "stages:\n  c:\n    uses: clean\n    inputs: {{table: data/t.csv}}\n    outputs: {{table: out/t.parquet, report: out/report.json}}\n    with: {{drop_columns: [{drop}]}}\n"
    )
}

/// The columns the last `clean` run dropped, as its report says.
fn dropped(ws: &Ws) -> Value {
    let report: Value = serde_json::from_str(&ws.read("out/report.json")).unwrap();
    report["drop_columns"]["dropped"].clone()
}

/// An edit of a built-in stage's `with:` reruns it with the new options: the reloaded
/// definition carries its own prepared config, not the one the first load made.
#[test]
fn an_edit_of_a_builtin_stages_with_reruns_it_with_the_new_options() {
    let ws = Ws::new();
    ws.write("data/t.csv", "a,b\n1,2\n3,4\n")
        .pipeline(&clean_dropping("b"));
    let w = Watcher::start(&ws, &[]);
    let first = w.idle(0);
    assert_eq!(w.started(0, first), ["c"]);
    assert_eq!(dropped(&ws), serde_json::json!(["b"]));
    ws.pipeline(&clean_dropping("a"));
    let at = w.changed(first, "sluice.yaml");
    assert_eq!(names(&w.events()[at]), ["c"]);
    let end = w.idle(at);
    assert_eq!(w.started(at, end), ["c"]);
    assert_eq!(dropped(&ws), serde_json::json!(["a"]));
    assert_eq!(w.interrupt(), 130);
}

#[test]
fn ctrl_c_during_a_round_kills_the_running_stage_and_exits_130() {
    let ws = Ws::new();
    ws.write("data/in.txt", "v1\n");
    ws.pipeline(
        r#"
stages:
  slow:
    run: "echo $$ > pid; cat ${{ inputs.i }} > ${{ outputs.o }}; touch started; while true; do sleep 0.05; done"
    inputs: {i: data/in.txt}
    outputs: {o: out/slow.txt}
"#,
    );
    let w = Watcher::start(&ws, &["--kill-grace", "5"]);
    assert!(wait_for(LONG, || ws.exists("started")));
    let pid: i32 = ws.read("pid").trim().parse().unwrap();
    assert_eq!(w.interrupt(), 130);
    // SAFETY: signal 0 only checks for existence.
    assert!(
        wait_for(LONG, || unsafe { libc::kill(pid, 0) } != 0),
        "the stage's process survived Ctrl-C"
    );
    assert!(!ws.exists("out/slow.txt"), "partial output must be removed");
}

#[test]
fn a_pipeline_edit_during_a_round_stops_the_changed_stage_and_runs_its_new_definition() {
    let ws = Ws::new();
    let slow = |n: u32| {
        format!(
            r#"
stages:
  slow:
    run: "touch started-{n}; while [ ! -f release ]; do sleep 0.05; done; echo {n} > ${{{{ outputs.o }}}}"
    outputs: {{o: out/slow.txt}}
"#
        )
    };
    ws.pipeline(&slow(1));
    let w = Watcher::start(&ws, &["--kill-grace", "5"]);
    assert!(wait_for(LONG, || ws.exists("started-1")));
    ws.pipeline(&slow(2));
    let at = w.changed(0, "sluice.yaml");
    assert_eq!(names(&w.events()[at]), ["slow"]);
    let stopped = w.wait(at, "slow stopped", |e| {
        e["event"] == "stage_finished" && e["stage"] == "slow"
    });
    assert_eq!(w.events()[stopped]["outcome"], "cancelled");
    assert!(
        wait_for(LONG, || ws.exists("started-2")),
        "the new definition never started"
    );
    ws.write("release", "");
    let end = w.idle(stopped);
    assert_eq!(w.started(stopped, end), ["slow"]);
    assert_eq!(ws.read("out/slow.txt"), "2\n");
    assert_eq!(w.interrupt(), 130);
}

#[test]
fn a_promotion_written_or_deleted_while_watching_reruns_the_stages_it_changes() {
    let ws = Ws::new();
    ws.pipeline(
        r#"
params: {lr: 0.1, seed: 1}
stages:
  fit: {run: "echo lr=${{ params.lr }} > ${{ outputs.o }}", outputs: {o: out/fit.txt}}
  other: {run: "echo seed=${{ params.seed }} > ${{ outputs.o }}", outputs: {o: out/other.txt}}
"#,
    );
    let w = Watcher::start(&ws, &[]);
    let first = w.idle(0);
    assert_eq!(ws.read("out/fit.txt"), "lr=0.1\n");

    // What `sluice sweep promote` writes beside the pipeline.
    save_atomically(
        &ws,
        "sluice.promoted.yaml",
        "sweep: s-1\ntrial: 2\nparams: {lr: 0.01}\n",
    );
    let at = w.changed(first, "sluice.yaml");
    assert_eq!(names(&w.events()[at]), ["fit"]);
    let end = w.idle(at);
    assert_eq!(w.started(at, end), ["fit"]);
    assert_eq!(ws.read("out/fit.txt"), "lr=0.01\n");

    std::fs::remove_file(ws.path("sluice.promoted.yaml")).unwrap();
    let at = w.changed(end, "sluice.yaml");
    let end = w.idle(at);
    // The first round's result, from the cache.
    let finished = w.slice(at, end, "stage_finished");
    assert_eq!(finished.len(), 1, "{finished:?}");
    assert_eq!(
        (&finished[0]["stage"], &finished[0]["outcome"]),
        (&Value::from("fit"), &Value::from("restored"))
    );
    assert_eq!(ws.read("out/fit.txt"), "lr=0.1\n");
    let warnings = w.slice(at, end, "warning");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0]["message"]
            .as_str()
            .unwrap()
            .contains("lr 0.01 -> 0.1"),
        "{warnings:?}"
    );
    assert_eq!(w.interrupt(), 130);
}

#[test]
fn watch_reruns_matrix_instances_one_by_one() {
    let ws = Ws::new();
    let pipeline = |values: &str| {
        format!(
            r#"
stages:
  gen:
    matrix: {{n: [{values}]}}
    inputs: {{i: data/in.txt}}
    run: "(cat ${{{{ inputs.i }}}}; echo n=${{{{ matrix.n }}}}) > ${{{{ outputs.o }}}}"
    outputs: [o]
  all: {{run: "cat ${{{{ stages.gen.outputs.o[*] }}}} > ${{{{ outputs.o }}}}", outputs: [o]}}
"#
        )
    };
    ws.write("data/in.txt", "x\n").pipeline(&pipeline("1, 2"));
    let w = Watcher::start(&ws, &[]);
    let first = w.idle(0);
    // A new matrix value: its instance and the gather run, the others stay.
    ws.pipeline(&pipeline("1, 2, 3"));
    let at = w.changed(first, "sluice.yaml");
    assert_eq!(names(&w.events()[at]), ["all", "gen@n=3"]);
    let end = w.idle(at);
    let mut started = w.started(at, end);
    started.sort();
    assert_eq!(started, ["all", "gen@n=3"]);
    assert_eq!(ws.read("out/sluice/all/o"), "x\nn=1\nx\nn=2\nx\nn=3\n");
    // An input every instance reads reruns them all.
    ws.write("data/in.txt", "y\n");
    let at = w.changed(end, "data/in.txt");
    assert_eq!(
        names(&w.events()[at]),
        ["all", "gen@n=1", "gen@n=2", "gen@n=3"]
    );
    w.idle(at);
    assert_eq!(w.interrupt(), 130);
}
