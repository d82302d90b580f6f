//! The Slurm executor against a real Slurm cluster (`tests/slurm/start.sh` starts a single-node
//! one; CI's `.ci/run` does). Every test first checks that a cluster takes jobs and, where none
//! does, prints `SKIPPED: slurm tests: <why>` and passes: a machine without Slurm is not a
//! failure of sluice. The test cluster runs without accounting storage, so every test here that
//! passes shows `sacct` is not needed; the shimmed one also shows it is never called.

mod common;

use common::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// How long a test waits for the cluster: generous, because the one test node may be busy with
/// other jobs (other test binaries, a benchmark) and runs two jobs at a time.
const BUSY: Duration = Duration::from_secs(240);

/// Whether a Slurm cluster takes jobs here; `Err` says why not.
fn cluster() -> Result<(), String> {
    let script = repo().join("tests/slurm/start.sh");
    if script.exists() {
        let out = Command::new(&script)
            .arg("--check")
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        return if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "tests/slurm/start.sh --check: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        };
    }
    let out = Command::new("sinfo")
        .args(["-h", "-o", "%a %t"])
        .output()
        .map_err(|e| format!("no `sinfo` ({e})"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let usable = text.lines().any(|l| {
        let mut w = l.split_whitespace();
        w.next() == Some("up")
            && w.next()
                .is_some_and(|s| ["idle", "mix", "alloc"].contains(&s))
    });
    if out.status.success() && usable {
        Ok(())
    } else {
        Err(format!(
            "no partition up with a usable node: {}",
            text.trim()
        ))
    }
}

macro_rules! need_cluster {
    () => {
        if let Err(why) = cluster() {
            println!("SKIPPED: slurm tests: {why}");
            return;
        }
    };
}

/// A pipeline name no other test (or earlier run) shares, so that `squeue -n` finds only this
/// test's jobs.
fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// Jobs in the queue named `sluice:PIPELINE:STAGE`.
fn queued(pipeline: &str, stage: &str) -> Vec<String> {
    let out = Command::new("squeue")
        .args([
            "-h",
            "-n",
            &format!("sluice:{pipeline}:{stage}"),
            "-o",
            "%i",
        ])
        .output()
        .expect("squeue");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The Slurm job ids a stage's log says it submitted.
fn submitted(ws: &Ws, stage: &str) -> Vec<u64> {
    let logs = ws.path(".sluice/logs");
    let mut ids = Vec::new();
    for run in std::fs::read_dir(logs).unwrap().flatten() {
        let Ok(text) = std::fs::read_to_string(run.path().join(format!("{stage}.log"))) else {
            continue;
        };
        ids.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("[slurm] submitted job "))
                .filter_map(|n| n.trim().parse::<u64>().ok()),
        );
    }
    ids
}

/// A directory with `sbatch` and `sacct` shims that log each call (to `calls`) before running
/// the real `sbatch` (`sacct` just fails): put first on PATH, it counts submissions and proves
/// `sacct` unused.
fn shims(ws: &Ws) -> (PathBuf, String) {
    let dir = ws.path("shims");
    let log = ws.path("calls");
    let real = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v sbatch"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    ws.write(
        "shims/sbatch",
        &format!(
            "#!/bin/sh\n[ \"$1\" = --version ] || echo sbatch >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            real.trim()
        ),
    );
    ws.write(
        "shims/sacct",
        &format!("#!/bin/sh\necho sacct >> '{}'\nexit 1\n", log.display()),
    );
    for f in ["sbatch", "sacct"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
    (dir, path)
}

fn to_run(out: std::process::Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn calls(ws: &Ws, what: &str) -> usize {
    std::fs::read_to_string(ws.path("calls"))
        .unwrap_or_default()
        .lines()
        .filter(|l| *l == what)
        .count()
}

/// A `run:` stage and the example plugin, one feeding the other.
fn mixed_pipeline(ws: &Ws, name: &str) {
    std::fs::create_dir_all(ws.path("plugins")).unwrap();
    std::fs::copy(
        repo().join("examples/plugins/featurize.py"),
        ws.path("plugins/featurize.py"),
    )
    .unwrap();
    std::fs::copy(repo().join("examples/data/iris.csv"), ws.path("iris.csv")).unwrap();
    ws.pipeline(&format!(
        r#"
name: {name}
plugins:
  featurize: {{command: [python3, plugins/featurize.py]}}
executor:
  slurm: {{poll: 1s}}
stages:
  copy:
    run: head -n 60 iris.csv > out/iris.csv
    inputs: {{t: iris.csv}}
    outputs: {{t: out/iris.csv}}
    resources: {{memory: 200M}}
  features:
    uses: featurize
    inputs: {{table: out/iris.csv}}
    outputs: {{table: out/features.csv}}
    with: {{columns: [petal_length, petal_width], ratio: [petal_length, petal_width]}}
"#
    ));
}

#[test]
fn run_and_plugin_stages_match_a_local_run_and_a_rerun_submits_nothing() {
    need_cluster!();
    // Accounting storage is off in the test cluster: the run below cannot lean on `sacct`.
    let config = Command::new("scontrol")
        .args(["show", "config"])
        .output()
        .unwrap();
    let accounting = String::from_utf8_lossy(&config.stdout)
        .lines()
        .find(|l| l.starts_with("AccountingStorageType"))
        .map(str::to_string)
        .unwrap_or_default();
    if !accounting.contains("accounting_storage/none") {
        println!("note: this cluster keeps accounting ({accounting}); the sacct shim still shows it unused");
    }
    let name = unique("mixed");
    let (local, cluster) = (Ws::new(), Ws::new());
    mixed_pipeline(&local, &name);
    mixed_pipeline(&cluster, &name);
    local.run(&["--executor", "local"]).assert_ok();
    let (_, path) = shims(&cluster);
    let run = |ws: &Ws| {
        to_run(
            ws.command(&["run", "--json", "--executor", "slurm"])
                .env("PATH", &path)
                .output()
                .unwrap(),
        )
    };
    let r = run(&cluster);
    r.assert_ok();
    assert_eq!(r.started(), ["copy", "features"]);
    for f in ["out/iris.csv", "out/features.csv"] {
        assert_eq!(local.read(f), cluster.read(f), "{f} differs");
    }
    // The same keys and hashes: the cache and the lock do not depend on where stages ran.
    assert_eq!(local.read("sluice.lock"), cluster.read("sluice.lock"));
    // One probe and one job per stage; each job's output is in its stage log.
    assert_eq!(calls(&cluster, "sbatch"), 3);
    assert_eq!(submitted(&cluster, "features").len(), 1);
    let log = std::fs::read_dir(cluster.path(".sluice/logs"))
        .unwrap()
        .flatten()
        .map(|d| std::fs::read_to_string(d.path().join("features.log")).unwrap_or_default())
        .collect::<String>();
    assert!(
        log.contains("[metric]"),
        "the plugin's metrics are relayed: {log}"
    );

    let again = run(&cluster);
    again.assert_ok();
    assert!(again.started().is_empty(), "{again:?}");
    assert_eq!(
        calls(&cluster, "sbatch"),
        3,
        "a no-op rerun submits nothing"
    );
    assert_eq!(calls(&cluster, "sacct"), 0, "sacct is never asked");
}

#[test]
fn a_job_scancelled_from_outside_is_reported_with_its_slurm_state() {
    need_cluster!();
    let name = unique("scancel");
    let ws = Ws::new();
    ws.pipeline(&format!(
        "name: {name}\nexecutor:\n  slurm: {{poll: 1s}}\nstages:\n  slow:\n    run: echo started; sleep 300; touch out/x\n    outputs: {{x: out/x}}\n"
    ));
    let child = ws.spawn(&["run", "--executor", "slurm"]);
    assert!(
        wait_for(BUSY, || !queued(&name, "slow").is_empty()),
        "the job never reached the queue"
    );
    let id = queued(&name, "slow").remove(0);
    assert!(Command::new("scancel").arg(&id).status().unwrap().success());
    let r = wait_child(child, BUSY);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains(&format!("Slurm ended job {id} in state CANCELLED")),
        "{}",
        r.stderr
    );
}

#[test]
fn a_job_over_its_time_limit_is_reported_as_timeout() {
    need_cluster!();
    let name = unique("timelimit");
    let ws = Ws::new();
    // `--time=1` (a minute) from the pipeline's own sbatch arguments, which come last and win
    // over the limit sluice derives from the stage's timeout.
    ws.pipeline(&format!(
        "name: {name}\nexecutor:\n  slurm: {{poll: 1s}}\n  stages:\n    slow: {{sbatch_args: [\"--time=1\"]}}\nstages:\n  slow:\n    run: echo started; sleep 600; touch out/x\n    outputs: {{x: out/x}}\n"
    ));
    let r = wait_child(
        ws.spawn(&["run", "--executor", "slurm"]),
        Duration::from_secs(240),
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("in state TIMEOUT (it reached its --time limit)"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("started"),
        "the log tail is the job's output: {}",
        r.stderr
    );
}

#[test]
fn ctrl_c_leaves_none_of_the_runs_jobs_in_the_queue() {
    need_cluster!();
    let name = unique("ctrlc");
    let ws = Ws::new();
    ws.pipeline(&format!(
        "name: {name}\nstages:\n  a:\n    run: sleep 300; touch out/a\n    outputs: {{a: out/a}}\n  b:\n    run: sleep 300; touch out/b\n    outputs: {{b: out/b}}\n"
    ));
    let child = ws.spawn(&["run", "--executor", "slurm"]);
    assert!(
        wait_for(BUSY, || !queued(&name, "a").is_empty()
            && !queued(&name, "b").is_empty()),
        "the jobs never reached the queue"
    );
    send_signal(&child, libc::SIGINT);
    let r = wait_child(child, BUSY);
    assert_eq!(r.code, 130, "{r:?}");
    assert!(queued(&name, "a").is_empty() && queued(&name, "b").is_empty());
    assert!(!ws.exists("out/a") && !ws.exists("out/b"));
}

#[test]
fn a_killed_sluice_leaves_nothing_in_the_queue() {
    need_cluster!();
    let name = unique("sigkill");
    let ws = Ws::new();
    ws.pipeline(&format!(
        "name: {name}\nstages:\n  a:\n    run: sleep 300; touch out/a\n    outputs: {{a: out/a}}\n"
    ));
    let child = ws.spawn(&["run", "--executor", "slurm"]);
    assert!(
        wait_for(BUSY, || !queued(&name, "a").is_empty()),
        "the job never reached the queue"
    );
    send_signal(&child, libc::SIGKILL);
    let _ = wait_child(child, BUSY);
    // The guardian scancels what sluice registered once sluice is gone.
    assert!(
        wait_for(BUSY, || queued(&name, "a").is_empty()),
        "the job outlived a killed sluice"
    );
}

#[test]
fn a_gpu_stage_asks_slurm_for_the_gres() {
    need_cluster!();
    let name = unique("gpu");
    let ws = Ws::new();
    ws.pipeline(&format!(
        "name: {name}\nstages:\n  g:\n    run: echo \"$CUDA_VISIBLE_DEVICES\" > out/g\n    outputs: {{g: out/g}}\n    resources: {{gpus: 1, cpus: 1}}\n"
    ));
    ws.run(&["--executor", "slurm"]).assert_ok();
    let ids = submitted(&ws, "g");
    assert_eq!(ids.len(), 1);
    let out = Command::new("scontrol")
        .args(["show", "job", &ids[0].to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("gres:gpu:1") || text.contains("gres/gpu:1"),
        "{text}"
    );
}

#[test]
fn sbatch_refusing_a_partition_is_shown_verbatim() {
    need_cluster!();
    let ws = Ws::new();
    ws.pipeline(&format!(
        "name: {}\nexecutor:\n  slurm: {{partition: no-such-partition}}\nstages:\n  a:\n    run: touch out/a\n    outputs: {{a: out/a}}\n",
        unique("badpart")
    ));
    let r = ws.run(&["--executor", "slurm"]);
    assert_eq!(r.code, 1);
    let f = r.failure("a");
    assert!(f.contains("sbatch refused the job"), "{f}");
    assert!(
        f.contains("invalid partition specified: no-such-partition"),
        "{f}"
    );
}

#[test]
fn a_local_stage_runs_here_without_a_job() {
    need_cluster!();
    let ws = Ws::new();
    ws.pipeline(&format!(
        "name: {}\nexecutor:\n  stages:\n    a: {{local: true}}\nstages:\n  a:\n    run: touch out/a\n    outputs: {{a: out/a}}\n",
        unique("local")
    ));
    let (_, path) = shims(&ws);
    let r = to_run(
        ws.command(&["run", "--json", "--executor", "slurm"])
            .env("PATH", &path)
            .output()
            .unwrap(),
    );
    r.assert_ok();
    assert_eq!(calls(&ws, "sbatch"), 0);
}

#[test]
fn without_sbatch_the_error_says_what_to_install() {
    // No cluster needed: the point is its absence.
    let ws = Ws::new();
    ws.pipeline("stages:\n  a:\n    run: touch out/a\n    outputs: {a: out/a}\n");
    let r = to_run(
        ws.command(&["run", "--executor", "slurm"])
            .env("PATH", "/nonexistent")
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("`sbatch` is not on PATH"), "{}", r.stderr);
    assert!(
        r.stderr.contains("run without `--executor slurm`"),
        "{}",
        r.stderr
    );
}

#[test]
fn executor_settings_and_memory_leave_keys_alone() {
    // A cluster run and a local run share the cache: what only says where and with how much
    // memory a stage runs is no part of its key.
    let ws = Ws::new();
    let stages = "stages:\n  a:\n    run: echo hi > out/a\n    outputs: {a: out/a}\n";
    ws.pipeline(stages);
    ws.run(&[]).assert_ok();
    ws.pipeline(&format!(
        "executor:\n  slurm: {{partition: gpu, account: lab, qos: high, sbatch_args: [\"--constraint=x\"], poll: 5s}}\n  stages:\n    a: {{partition: big}}\n{}    resources: {{memory: 4G}}\n",
        stages
    ));
    let r = ws.run(&[]);
    r.assert_ok();
    assert!(r.started().is_empty(), "nothing reruns: {r:?}");
    assert_eq!(r.outcomes()["a"], "up_to_date");
}

/// `clean` → `split` → `normalize` from pipelines/iris.yaml.
fn builtin_pipeline(ws: &Ws, name: &str) {
    ws.copy_from_repo("examples/data/iris.csv");
    let iris = std::fs::read_to_string(repo().join("pipelines/iris.yaml")).unwrap();
    let stages = iris
        .split("\n  train:")
        .next()
        .unwrap()
        .replace("name: iris", &format!("name: {name}"));
    ws.pipeline(&stages);
}

#[test]
fn built_in_stages_run_on_a_node_and_match_a_local_run() {
    need_cluster!();
    // Built-in stages reach a node as `sluice __stage JOB.json` (the one-stage mode).
    let name = unique("builtin");
    let (local, cluster) = (Ws::new(), Ws::new());
    builtin_pipeline(&local, &name);
    builtin_pipeline(&cluster, &name);
    local.run(&["--executor", "local"]).assert_ok();
    let r = cluster.run(&["--executor", "slurm"]);
    r.assert_ok();
    assert_eq!(r.started(), ["clean", "split", "normalize"]);
    for stage in ["clean", "split", "normalize"] {
        assert_eq!(submitted(&cluster, stage).len(), 1, "{stage} ran as a job");
    }
    assert_eq!(local.read("sluice.lock"), cluster.read("sluice.lock"));
    for f in [
        "out/iris/clean.json",
        "out/iris/split.json",
        "out/iris/preprocess.json",
    ] {
        assert_eq!(local.read(f), cluster.read(f), "{f} differs");
    }
}

#[test]
fn training_evaluation_and_deploy_run_on_a_node_too() {
    need_cluster!();
    // The whole iris pipeline: train's Python worker starts on the node, evaluate loads ONNX
    // Runtime there, deploy publishes from there; the submitter keys, checks and stores.
    let name = unique("iris");
    let (local, cluster) = (Ws::new(), Ws::new());
    for ws in [&local, &cluster] {
        ws.copy_from_repo("examples/data/iris.csv");
        let iris = std::fs::read_to_string(repo().join("pipelines/iris.yaml"))
            .unwrap()
            .replace("name: iris", &format!("name: {name}"))
            .replace("epochs: 60", "epochs: 5")
            .replace("\">= 0.8\"", "\">= 0.0\"");
        ws.pipeline(&iris);
    }
    local.run(&["--executor", "local"]).assert_ok();
    let r = cluster.run(&["--executor", "slurm"]);
    r.assert_ok();
    for stage in ["train", "evaluate", "deploy"] {
        assert_eq!(submitted(&cluster, stage).len(), 1, "{stage} ran as a job");
    }
    // Per-epoch metrics came back live from the node.
    assert!(
        r.events()
            .iter()
            .any(|e| e["event"] == "stage_metric" && e["stage"] == "train" && e["step"] == 5),
        "{}",
        r.stdout
    );
    // Same predictions, same metrics, one published version.
    for f in ["out/iris/metrics.json", "out/iris/predictions.csv"] {
        assert_eq!(local.read(f), cluster.read(f), "{f} differs");
    }
    // (`name: iris` was replaced everywhere, the deploy stage's registry name included.)
    assert!(cluster.exists(&format!("models/{name}/1/model.onnx")));
    assert!(!cluster.exists(&format!("models/{name}/2")));
    // A rerun submits nothing.
    let again = cluster.run(&["--executor", "slurm"]);
    again.assert_ok();
    assert!(again.started().is_empty(), "{:?}", again.started());
}

#[test]
fn a_workspace_the_nodes_do_not_share_is_refused_with_a_hint() {
    need_cluster!();
    // A node that sees another directory at the workspace's path: an `sbatch` shim moves the
    // probe job's paths elsewhere, as a node-local disk would, so its status file never
    // appears here.
    let ws = Ws::new();
    let name = unique("unshared");
    ws.pipeline(&format!(
        "name: {name}\nstages:\n  a: {{run: \"echo hi > ${{{{ outputs.o }}}}\", outputs: [o]}}\n"
    ));
    let real = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v sbatch"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let elsewhere = ws.path("node-local");
    let root = ws.root().canonicalize().unwrap();
    ws.write(
        "shims/sbatch",
        &format!(
            "#!/bin/sh\nfor a; do last=$a; done\ncase $last in */.probe/*) mkdir -p '{e}' && sed -i \"s#{r}/.sluice#{e}#g\" \"$last\";; esac\nexec '{real}' \"$@\"\n",
            e = elsewhere.display(),
            r = root.display(),
            real = real.trim()
        ),
    );
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            ws.path("shims/sbatch"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }
    let path = format!(
        "{}:{}",
        ws.path("shims").display(),
        std::env::var("PATH").unwrap()
    );
    let r = to_run(
        ws.command(&["run", "--executor", "slurm"])
            .env("PATH", path)
            .output()
            .unwrap(),
    );
    assert_ne!(r.code, 0, "{}", r.stderr);
    let text = format!("{}{}", r.stdout, r.stderr);
    assert!(text.contains("filesystem"), "{text}");
    assert!(
        !ws.exists(&format!("out/{name}/a/o")),
        "the stage did not run"
    );
    assert!(queued(&name, "a").is_empty());
}

#[test]
fn a_sweep_runs_its_trials_as_jobs() {
    need_cluster!();
    let ws = Ws::new();
    let name = unique("sweep");
    ws.pipeline(&format!(
        r#"
name: {name}
params: {{n: 1}}
sweep: {{params: {{n: [1, 2, 3]}}, metric: fit.v}}
stages:
  fit:
    run: |
      echo '{{"v": ${{{{ params.n }}}}}}' > ${{{{ outputs.m }}}}
    outputs: {{m: out/m.json}}
"#
    ));
    let r = ws.sluice(&["sweep", "--executor", "slurm", "--json"]);
    r.assert_ok();
    for n in 1..=3 {
        assert_eq!(
            submitted(&ws, &format!("fit@trial={n}")).len(),
            1,
            "trial {n}"
        );
    }
    let done = r
        .events()
        .into_iter()
        .find(|e| e["event"] == "sweep_finished")
        .unwrap();
    assert_eq!(done["best"], 3);
}

#[test]
fn the_display_shows_where_a_job_runs() {
    need_cluster!();
    // A job that runs for three polls: the live display (a progress message, in `--json` a
    // `stage_progress` event) says it is running and on which node.
    let ws = Ws::new();
    let name = unique("display");
    ws.pipeline(&format!(
        "name: {name}\nexecutor:\n  slurm: {{poll: 1s}}\nstages:\n  a: {{run: \"sleep 3; echo hi > ${{{{ outputs.o }}}}\", outputs: [o]}}\n"
    ));
    let r = ws.run(&["--executor", "slurm"]);
    r.assert_ok();
    let node =
        String::from_utf8(Command::new("hostname").arg("-s").output().unwrap().stdout).unwrap();
    assert!(
        r.events().iter().any(|e| e["event"] == "stage_progress"
            && e["stage"] == "a"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("running on") && m.contains(node.trim()))),
        "{}",
        r.stdout
    );
    // The run's job directory went with the run; the log keeps what the job said.
    let jobs = std::fs::read_dir(ws.path(".sluice/slurm"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(jobs, 0, "job directories left behind");
}
