//! Killing sluice outright (SIGKILL): no process it started may survive it, a later run never
//! starts beside an earlier run's processes, and the next run recovers byte for byte.
//!
//! `kill_harness` is the standing reliability check: a 31-stage DAG with multi-MB deterministic
//! outputs, SIGKILLed at random times in four ways, then rerun and checked. It runs
//! `SLUICE_KILL_TRIALS` trials (default 30, the CI variant, about a minute on 2 cores) from seed
//! `SLUICE_KILL_SEED` (default fixed; the seed is printed). A long run:
//! `SLUICE_KILL_TRIALS=1000 cargo test --release --test kill kill_harness -- --nocapture`.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn alive(pid: i32) -> bool {
    // A zombie has exited; only its parent's wait is missing.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().chars().next()))
        .flatten()
        .is_some_and(|state| state != 'Z')
}

fn pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Live processes whose environment names `root` as their workspace: every stage process of a
/// run there (sluice sets `SLUICE_WORKSPACE` for each), and nothing else.
fn stage_processes(root: &Path) -> Vec<i32> {
    let want = format!(
        "SLUICE_WORKSPACE={}",
        std::fs::canonicalize(root).unwrap().display()
    );
    pids()
        .into_iter()
        .filter(|&p| {
            std::fs::read(format!("/proc/{p}/environ"))
                .map(|env| env.split(|&b| b == 0).any(|kv| kv == want.as_bytes()))
                .unwrap_or(false)
                && alive(p)
        })
        .collect()
}

/// Kills whatever stage processes a failed test leaves in `ws`, so none lingers for minutes.
struct Reaper<'a>(&'a Ws);

impl Drop for Reaper<'_> {
    fn drop(&mut self) {
        for p in stage_processes(self.0.root()) {
            sigkill(p);
        }
    }
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Every live descendant of `pid`.
fn descendants(pid: i32) -> Vec<i32> {
    let parents: Vec<(i32, i32)> = pids()
        .into_iter()
        .filter_map(|p| Some((p, parent_of(p)?)))
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}

fn is_guardian(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.split(|&b| b == 0).any(|a| a == b"__guard"))
        .unwrap_or(false)
}

/// The guardian sluice `pid` started (it starts one before its first stage).
fn guardian_of(pid: i32) -> Option<i32> {
    descendants(pid).into_iter().find(|&p| is_guardian(p))
}

fn sigkill(pid: i32) {
    // SAFETY: kill(2) on a pid; no memory involved.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// Whether some process holds the workspace's run lock (tried without waiting).
fn run_lock_held(ws: &Ws) -> bool {
    let file = std::fs::File::open(ws.path(".sluice/run.lock")).unwrap();
    // SAFETY: flock on a descriptor we own; closing it releases what we took.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) != 0 }
}

/// `sluice ARGS` in a process group of its own, as `setsid sluice ...` would start it.
fn spawn_detached(ws: &Ws, args: &[&str]) -> Child {
    ws.command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn sluice")
}

fn sha256(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}

/// Stage name → state, from `sluice status --json`.
fn states(ws: &Ws) -> BTreeMap<String, String> {
    let r = ws.sluice(&["status", "--json"]);
    assert_eq!(r.code, 0, "status failed: {}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["stage"].as_str().unwrap().to_string(),
                s["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn assert_all_up_to_date(ws: &Ws, context: &str) {
    let states = states(ws);
    let stale: Vec<_> = states.iter().filter(|(_, s)| *s != "up_to_date").collect();
    assert!(stale.is_empty(), "{context}: not up to date: {stale:?}");
}

/// The issue's repro: `sluice run --force r`, SIGKILLed mid-stage, used to leave `sh` (and its
/// `sleep`) running; they overwrote `data/r.bin` after the next run restored it.
#[test]
fn a_killed_sluice_takes_its_stage_processes_with_it() {
    let ws = Ws::new();
    ws.pipeline(
        r#"
name: orphan
stages:
  r:
    run: "echo $$ > r.pid; if [ -f hold ]; then sleep 600 & echo $! > sleep.pid; touch started; wait; fi; head -c 1000000 /dev/urandom > ${{ outputs.o }}"
    outputs: {o: data/r.bin}
  h: {run: "sha256sum ${{ stages.r.outputs.o }} | cut -c1-64 > ${{ outputs.o }}", outputs: {o: data/h.txt}}
"#,
    );
    let _reaper = Reaper(&ws);
    ws.run(&[]).assert_ok();
    ws.write("hold", "");
    let mut sluice = spawn_detached(&ws, &["run", "--force", "r"]);
    assert!(
        wait_for(LONG, || ws.exists("started")),
        "the stage never started"
    );
    let sh: i32 = ws.read("r.pid").trim().parse().unwrap();
    let sleep: i32 = ws.read("sleep.pid").trim().parse().unwrap();
    assert!(alive(sh) && alive(sleep));
    sigkill(sluice.id() as i32);
    let _ = sluice.wait();
    assert!(
        wait_for(LONG, || !alive(sh) && !alive(sleep)),
        "stage processes outlived the killed sluice (sh alive: {}, sleep alive: {})",
        alive(sh),
        alive(sleep)
    );
    assert!(stage_processes(ws.root()).is_empty());

    std::fs::remove_file(ws.path("hold")).unwrap();
    ws.run(&[]).assert_ok();
    assert_eq!(
        ws.read("data/h.txt").trim(),
        sha256(&ws.path("data/r.bin")),
        "h.txt must describe the r.bin on disk"
    );
    assert_all_up_to_date(&ws, "after the rerun");
}

/// A stage process that keeps no descriptor of sluice's (so the run lock does not find it)
/// still dies with a killed sluice: the guardian kills the groups sluice registered in the
/// table it shares with it.
#[test]
fn a_stage_process_that_closed_every_descriptor_dies_with_a_killed_sluice() {
    let ws = Ws::new();
    // The stage's own process closes every descriptor above stderr (the run lock among them)
    // and becomes a shell that starts the sleep: nothing in the group holds the lock.
    ws.write(
        "hold.py",
        "import os\nos.closerange(3, 65536)\n\
         os.execvp('sh', ['sh', '-c', 'sleep 600 & echo $! > sleep.pid; touch started; wait'])\n",
    );
    ws.pipeline(
        r#"
name: orphan
stages:
  r:
    run: "exec python3 hold.py"
    outputs: {o: data/r.bin}
"#,
    );
    let _reaper = Reaper(&ws);
    let mut sluice = spawn_detached(&ws, &["run"]);
    assert!(
        wait_for(LONG, || ws.exists("started")),
        "the stage never started"
    );
    let sleep: i32 = ws.read("sleep.pid").trim().parse().unwrap();
    assert!(run_lock_held(&ws), "sluice holds the run lock");
    sigkill(sluice.id() as i32);
    let _ = sluice.wait();
    assert!(
        wait_for(LONG, || !alive(sleep)),
        "a stage process outlived the killed sluice"
    );
}

/// While a run's stage process lives, no other run may start: not beside a live sluice, and
/// not after sluice and its guardian were both killed (the stage process still holds the run
/// lock; the next run kills it before it starts).
#[test]
fn a_later_run_never_starts_beside_an_earlier_runs_stage_processes() {
    let ws = Ws::new();
    // The first execution of `slow` blocks until killed; later ones finish at once.
    ws.pipeline(
        r#"
stages:
  slow:
    run: "if [ ! -f once ]; then touch once; echo $$ > slow.pid; touch started; while true; do sleep 0.05; done; fi; echo done > ${{ outputs.o }}"
    outputs: {o: out/slow.txt}
"#,
    );
    let _reaper = Reaper(&ws);
    let mut first = spawn_detached(&ws, &["run"]);
    assert!(wait_for(LONG, || ws.exists("started")));
    let stage: i32 = ws.read("slow.pid").trim().parse().unwrap();

    let second = ws.run(&["--no-wait"]);
    assert_ne!(second.code, 0, "a second run started beside the first");
    assert!(
        second.stderr.contains(&format!(
            "another sluice run holds this workspace (pid {})",
            first.id()
        )),
        "{}",
        second.stderr
    );

    // Kill the guardian, then sluice: nothing is left to stop the stage, which lives on.
    let guardian = guardian_of(first.id() as i32).expect("sluice started a guardian");
    sigkill(guardian);
    assert!(wait_for(LONG, || !alive(guardian)));
    sigkill(first.id() as i32);
    let _ = first.wait();
    assert!(alive(stage), "the stage should have been orphaned");
    assert!(
        run_lock_held(&ws),
        "the orphaned stage must keep the run lock held"
    );

    let third = ws.run(&["--no-wait"]);
    third.assert_ok();
    let warned = third.events().into_iter().any(|e| {
        e["event"] == "warning"
            && e["message"]
                .as_str()
                .unwrap_or("")
                .contains("ended without stopping its stage processes")
    });
    assert!(warned, "no warning about the leftovers: {}", third.stdout);
    assert!(
        !alive(stage),
        "the next run started beside a leftover stage"
    );
    assert_eq!(ws.read("out/slow.txt"), "done\n");
    assert!(stage_processes(ws.root()).is_empty());
}

// ---------------------------------------------------------------------------------------------
// The kill harness.

/// splitmix64: a small seeded generator, enough to pick kill times and modes reproducibly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// 31 stages: a sentinel that lingers during killed runs, 4 slow sources writing 2 MB in chunks, 12 stages fanning out from pairs of
/// sources, 8 fanning in from three of those, 4 from two of those, a stage with two outputs
/// and a final fan-in. Every output is a deterministic function of its inputs (`yes` seeded
/// with a hash of them), so a rerun must reproduce the reference byte for byte.
fn harness_pipeline() -> (String, Vec<String>) {
    let mut y = String::from("name: kill-harness\nstages:\n");
    let mut outputs = Vec::new();
    // Lingers while `.linger` exists (during the runs the harness kills), so that a stage
    // process is certainly alive at every kill and would outlive sluice without the guardian.
    y += "  sentinel:\n    run: \"if [ -f .linger ]; then touch .lingering; sleep 600; fi; echo ok > ${{ outputs.o }}\"\n    outputs: {o: out/sentinel.txt}\n";
    outputs.push("out/sentinel.txt".into());
    // A stage that hashes its inputs and writes `mb` MB derived from the hash.
    let derive = |name: &str, ins: &[String], mb: u32, slow: bool| -> String {
        let refs: Vec<String> = ins
            .iter()
            .map(|s| format!("${{{{ stages.{s}.outputs.o }}}}"))
            .collect();
        format!(
            "  {name}:\n    run: \"h=$(cat {} | sha256sum | cut -c1-64); {}yes \\\"$h-{name}\\\" | head -c {} > ${{{{ outputs.o }}}}\"\n    outputs: {{o: out/{name}.bin}}\n",
            refs.join(" "),
            if slow { "sleep 0.1; " } else { "" },
            mb * 1_000_000
        )
    };
    for k in 0..4 {
        y += &format!(
            "  src{k}:\n    run: \"for i in 1 2 3 4; do yes src{k}-$i | head -c 500000; sleep 0.03; done > ${{{{ outputs.o }}}}\"\n    outputs: {{o: out/src{k}.bin}}\n"
        );
        outputs.push(format!("out/src{k}.bin"));
    }
    for j in 0..12 {
        let ins = [format!("src{}", j % 4), format!("src{}", (j + 1) % 4)];
        y += &derive(&format!("a{j}"), &ins, 1, j % 5 == 0);
        outputs.push(format!("out/a{j}.bin"));
    }
    for j in 0..8 {
        let ins: Vec<String> = (0..3).map(|d| format!("a{}", (j + d * 4) % 12)).collect();
        y += &derive(&format!("b{j}"), &ins, 2, j % 3 == 0);
        outputs.push(format!("out/b{j}.bin"));
    }
    for j in 0..4 {
        let ins = [format!("b{}", 2 * j), format!("b{}", 2 * j + 1)];
        y += &derive(&format!("c{j}"), &ins, 1, false);
        outputs.push(format!("out/c{j}.bin"));
    }
    y += "  pair:\n    run: \"cat ${{ stages.c0.outputs.o }} > ${{ outputs.x }}; sleep 0.05; cat ${{ stages.c1.outputs.o }} > ${{ outputs.y }}\"\n    outputs: {x: out/pair-x.bin, y: out/pair-y.bin}\n";
    outputs.push("out/pair-x.bin".into());
    outputs.push("out/pair-y.bin".into());
    y += "  all:\n    run: \"cat ${{ stages.pair.outputs.x }} ${{ stages.pair.outputs.y }} ${{ stages.c2.outputs.o }} ${{ stages.c3.outputs.o }} | sha256sum > ${{ outputs.o }}\"\n    outputs: {o: out/all.txt}\n";
    outputs.push("out/all.txt".into());
    (y, outputs)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum KillMode {
    /// SIGKILL to sluice alone.
    Sluice,
    /// SIGKILL to sluice's process group (as a terminal's hangup would reach it).
    Group,
    /// SIGKILL to sluice and every stage process at once.
    Everything,
    /// SIGKILL to the guardian, then to sluice: stage processes survive, holding the run lock,
    /// and the next run must kill them before it starts (the safety net).
    SluiceAndGuardian,
}

/// What the killed run is asked to do, so kills land in every phase.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// No cache, no outputs: every stage runs.
    Cold,
    /// Outputs deleted, cache kept: stages are restored.
    Restore,
    /// A few stages forced.
    Force,
}

/// Temporary files (`.<name>.sluice-tmp-*`) anywhere in the workspace.
fn leftover_temp_files(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().contains(".sluice-tmp-") {
                found.push(p.clone());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(p);
            }
        }
    }
    found
}

/// A rerun removes the temporary files a killed run left (runner/src/leftovers.rs).
fn assert_no_temp_files(ws: &Ws, context: &str) -> usize {
    let left = leftover_temp_files(ws.root());
    assert!(left.is_empty(), "{context}: temporary files left: {left:?}");
    left.len()
}

fn remove_outputs(ws: &Ws, outputs: &[String]) {
    for o in outputs {
        let _ = std::fs::remove_file(ws.path(o));
    }
}

fn trials() -> usize {
    std::env::var("SLUICE_KILL_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
}

#[test]
fn kill_harness() {
    let seed: u64 = std::env::var("SLUICE_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_261_206);
    let trials = trials();
    eprintln!("kill harness: {trials} trials, seed {seed}");
    let mut rng = Rng(seed);
    let (yaml, outputs) = harness_pipeline();

    // The reference: one undisturbed run.
    let reference = Ws::new();
    reference.pipeline(&yaml);
    reference.run(&["--jobs", "6"]).assert_ok();
    let expected: Vec<Vec<u8>> = outputs
        .iter()
        .map(|o| std::fs::read(reference.path(o)).unwrap())
        .collect();

    let ws = Ws::new();
    ws.pipeline(&yaml);
    let _reaper = Reaper(&ws);
    // How long each kind of run takes undisturbed here, so kill times fall inside the runs.
    let t = Instant::now();
    ws.run(&[]).assert_ok();
    let cold = t.elapsed();
    remove_outputs(&ws, &outputs);
    let t = Instant::now();
    ws.run(&[]).assert_ok();
    let restore = t.elapsed();
    let t = Instant::now();
    ws.run(&[
        "--force", "src1", "--force", "a3", "--force", "b5", "--force", "a9",
    ])
    .assert_ok();
    let force = t.elapsed();
    eprintln!(
        "kill harness: undisturbed runs: cold {cold:?}, restore {restore:?}, force {force:?}"
    );
    let mut kills: BTreeMap<KillMode, usize> = BTreeMap::new();
    let mut finished_first = 0;
    let mut temp_files = 0;
    let mut rerun_time = Duration::ZERO;
    let started = Instant::now();
    let modes = [
        KillMode::Sluice,
        KillMode::Group,
        KillMode::Everything,
        KillMode::SluiceAndGuardian,
    ];
    for trial in 0..trials {
        let mode = modes[trial % modes.len()];
        let start = match rng.below(4) {
            0 | 1 => Start::Cold,
            2 => Start::Restore,
            _ => Start::Force,
        };
        let mut args: Vec<String> = ["run", "--jobs", "6", "--force", "sentinel"]
            .map(String::from)
            .to_vec();
        match start {
            Start::Cold => {
                let _ = std::fs::remove_dir_all(ws.path(".sluice/cache"));
                remove_outputs(&ws, &outputs);
            }
            Start::Restore => remove_outputs(&ws, &outputs),
            Start::Force => {
                for _ in 0..4 {
                    let s = match rng.below(3) {
                        0 => format!("src{}", rng.below(4)),
                        1 => format!("a{}", rng.below(12)),
                        _ => format!("b{}", rng.below(8)),
                    };
                    args.push("--force".into());
                    args.push(s);
                }
            }
        }
        let span = match start {
            Start::Cold => cold,
            Start::Restore => restore,
            Start::Force => force,
        };
        let delay = Duration::from_micros(rng.below(span.as_micros() as u64 + 1));
        let context = format!("trial {trial} ({mode:?}, {start:?}, kill after {delay:?})");
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        ws.write(".linger", "");
        let _ = std::fs::remove_file(ws.path(".lingering"));
        let mut sluice = spawn_detached(&ws, &argv);
        let pid = sluice.id() as i32;
        // The random delay is the point: the kill lands wherever it lands.
        std::thread::sleep(delay);
        if sluice.try_wait().unwrap().is_some() {
            finished_first += 1;
        }
        match mode {
            KillMode::Sluice => sigkill(pid),
            KillMode::Group => unsafe {
                // SAFETY: kill(2) on the group we created for this sluice.
                libc::kill(-pid, libc::SIGKILL);
            },
            KillMode::Everything => {
                let stages: Vec<i32> = descendants(pid)
                    .into_iter()
                    .filter(|&p| !is_guardian(p))
                    .collect();
                sigkill(pid);
                for p in stages {
                    sigkill(p);
                }
            }
            KillMode::SluiceAndGuardian => {
                // Kill once a stage process surely lives (the sentinel), to orphan it; the
                // guardian is started before the first stage.
                assert!(
                    wait_for(LONG, || ws.exists(".lingering")),
                    "{context}: the sentinel never started"
                );
                let mut guardian = None;
                assert!(
                    wait_for(LONG, || {
                        guardian = guardian_of(pid);
                        guardian.is_some()
                    }),
                    "{context}: no guardian"
                );
                let guardian = guardian.unwrap();
                sigkill(guardian);
                assert!(wait_for(LONG, || !alive(guardian)));
                sigkill(pid);
            }
        }
        let _ = sluice.wait();
        *kills.entry(mode).or_default() += 1;

        if mode == KillMode::SluiceAndGuardian {
            // The sentinel lingers, orphaned, and keeps the workspace.
            assert!(
                !stage_processes(ws.root()).is_empty(),
                "{context}: the sentinel should have survived"
            );
            assert!(
                run_lock_held(&ws),
                "{context}: leftovers must hold the run lock"
            );
        } else {
            assert!(
                wait_for(LONG, || stage_processes(ws.root()).is_empty()),
                "{context}: stage processes outlived sluice: {:?}",
                stage_processes(ws.root())
            );
        }

        std::fs::remove_file(ws.path(".linger")).unwrap();
        let t = Instant::now();
        let r = ws.run(&["--jobs", "6"]);
        rerun_time += t.elapsed();
        assert_eq!(
            r.code, 0,
            "{context}: the rerun failed\n{}\n{}",
            r.stdout, r.stderr
        );
        if mode == KillMode::SluiceAndGuardian {
            let took_over = r.events().into_iter().any(|e| {
                e["event"] == "warning"
                    && e["message"]
                        .as_str()
                        .unwrap_or("")
                        .contains("ended without stopping its stage processes")
            });
            assert!(
                took_over,
                "{context}: the rerun did not report the leftovers"
            );
        }
        for (o, want) in outputs.iter().zip(&expected) {
            let got = std::fs::read(ws.path(o))
                .unwrap_or_else(|e| panic!("{context}: cannot read {o}: {e}"));
            assert!(got == *want, "{context}: {o} differs from the reference");
        }
        let lock = ws.read("sluice.lock");
        let parsed: yaml_serde::Value = yaml_serde::from_str(&lock)
            .unwrap_or_else(|e| panic!("{context}: the lock file does not parse: {e}"));
        assert_eq!(
            parsed["stages"].as_mapping().map(|m| m.len()),
            Some(31),
            "{context}: the lock file lacks stages"
        );
        assert_all_up_to_date(&ws, &context);
        assert!(
            stage_processes(ws.root()).is_empty(),
            "{context}: processes left after the rerun"
        );
        assert!(!run_lock_held(&ws), "{context}: the run lock is still held");
        temp_files += assert_no_temp_files(&ws, &context);
    }
    eprintln!(
        "kill harness: {:?} in all, {rerun_time:?} of it in reruns",
        started.elapsed()
    );
    eprintln!(
        "kill harness: {trials} trials; kills {kills:?}; {finished_first} runs finished before \
         their kill; every rerun exited 0 with byte-identical outputs, a parsing lock file, every \
         stage up to date and no stage process left; {temp_files} temporary files left over"
    );
}

/// Corrupted cache objects are detected and repaired: a later run restores or reruns from
/// good data, and the cache holds good objects again.
#[test]
fn corrupted_cache_objects_are_detected_and_repaired() {
    let (yaml, outputs) = harness_pipeline();
    let reference = Ws::new();
    reference.pipeline(&yaml);
    reference.run(&[]).assert_ok();
    let ws = Ws::new();
    ws.pipeline(&yaml);
    ws.run(&[]).assert_ok();

    // Corrupt every third object in place (they are read-only; make them writable first).
    let mut objects = Vec::new();
    let mut dirs = vec![ws.path(".sluice/cache/objects")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            } else {
                objects.push(e.path());
            }
        }
    }
    objects.sort();
    assert!(objects.len() >= 20, "{} objects", objects.len());
    for o in objects.iter().step_by(3) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(o, std::fs::Permissions::from_mode(0o644));
        let mut bytes = std::fs::read(o).unwrap();
        bytes[0] ^= 0xff;
        std::fs::write(o, bytes).unwrap();
    }
    let differ = |ws: &Ws| -> Vec<&String> {
        outputs
            .iter()
            .filter(|o| std::fs::read(ws.path(o)).ok() != std::fs::read(reference.path(o)).ok())
            .collect()
    };
    // Workspace outputs are files of their own, never the cache's inodes: damaging the cache
    // leaves them intact, and a run with every output in place is up to date.
    let r = ws.run(&[]);
    r.assert_ok();
    assert!(r.started().is_empty(), "ran stages: {:?}", r.started());
    assert!(differ(&ws).is_empty(), "outputs changed: {:?}", differ(&ws));
    // Restoring needs the damaged objects: each is detected, its stage reruns, and the fresh
    // output replaces the damaged object.
    remove_outputs(&ws, &outputs);
    let r = ws.run(&[]);
    r.assert_ok();
    assert!(
        !r.started().is_empty(),
        "no stage reran although a third of the cache was damaged"
    );
    assert!(
        differ(&ws).is_empty(),
        "after the repair run: {:?}",
        differ(&ws)
    );
    assert_all_up_to_date(&ws, "after the repair run");
    // The cache holds good objects again: restoring everything from it runs nothing.
    remove_outputs(&ws, &outputs);
    let r = ws.run(&[]);
    r.assert_ok();
    assert!(
        r.started().is_empty(),
        "restoring ran stages: {:?}",
        r.started()
    );
    assert!(
        differ(&ws).is_empty(),
        "restored from the cache: {:?}",
        differ(&ws)
    );
    assert_all_up_to_date(&ws, "after restoring");
}
