//! `plan_ahead` and `Checker::decide` over a real workspace: stages are "run" by writing their
//! outputs and filing the lock entry (and, where a test says so, the cache record) a run would
//! leave, and the decisions are read back with their reasons.

use super::*;
use crate::cache::{LocalStore, RECORD_FORMAT};
use crate::lock::{LockedOutput, LOCK_VERSION};
use crate::stage::StageRegistry;
use crate::validate::{load, LoadOptions};

/// `a` reads `data.txt` and `params.n`; `b` reads `a`'s output.
const PIPELINE: &str = r#"
params: {n: 1}
stages:
  a: {run: "cat ${{ inputs.d }} ${{ params.n }} > ${{ outputs.o }}", inputs: {d: data.txt}, outputs: [o]}
  b: {run: "cat ${{ stages.a.outputs.o }} > ${{ outputs.o }}", outputs: [o]}
"#;

struct World {
    dir: tempfile::TempDir,
    pipeline: Pipeline,
    hasher: Hasher,
    store: LocalStore,
    lock: LockFile,
}

fn load_pipeline(root: &std::path::Path, overrides: &[(String, String)]) -> Pipeline {
    load(&LoadOptions {
        root,
        file: &root.join("sluice.yaml"),
        display: "sluice.yaml".into(),
        overrides,
        registry: &StageRegistry::default(),
        sweep: None,
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

fn world(overrides: &[(String, String)]) -> World {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::write(root.join("data.txt"), "rows\n").unwrap();
    std::fs::write(root.join("sluice.yaml"), PIPELINE).unwrap();
    let pipeline = load_pipeline(&root, overrides);
    World {
        store: LocalStore::new(root.join(".sluice/cache")),
        hasher: Hasher::load(&root.join(".sluice/hashes.bin")),
        lock: LockFile {
            version: LOCK_VERSION,
            ..LockFile::default()
        },
        pipeline,
        dir,
    }
}

impl World {
    /// The same pipeline file loaded again, with other `--set` overrides.
    fn reload(&mut self, overrides: &[(String, String)]) {
        self.pipeline = load_pipeline(&self.pipeline.root, overrides);
    }

    fn idx(&self, stage: &str) -> usize {
        self.pipeline.stage(stage).unwrap().idx
    }

    fn out(&self, stage: &str) -> std::path::PathBuf {
        let s = self.pipeline.stage(stage).unwrap();
        s.outputs[0].path.to_abs(&self.pipeline.root)
    }

    /// Does what a successful run of `stage` leaves behind: its output, its lock entry and,
    /// with `cache`, its cache record.
    fn ran(&mut self, stage: &str, content: &str, cache: bool) {
        let s = self.pipeline.stage(stage).unwrap().clone();
        let out = self.out(stage);
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        std::fs::write(&out, content).unwrap();
        let fp =
            Fingerprint::compute(&s, &self.pipeline.root, &self.hasher, &Overlay::new()).unwrap();
        let key = fp.key();
        let o = &s.outputs[0];
        let hash = self.hasher.hash_path(&out).unwrap().unwrap().hash;
        self.lock.stages.insert(
            s.id.0.clone(),
            LockEntry {
                key,
                fingerprint: fp,
                output_hashes: [(
                    o.name.clone(),
                    LockedOutput {
                        path: o.path.clone(),
                        hash,
                    },
                )]
                .into(),
            },
        );
        if cache {
            let record = StageRecord {
                format: RECORD_FORMAT,
                stage: s.id.0.clone(),
                key,
                outputs: [(
                    o.name.clone(),
                    OutputRecord::new(o.path.clone(), hash, None),
                )]
                .into(),
            };
            self.store
                .store(&self.pipeline.root, &record, &self.hasher)
                .unwrap();
        }
    }

    /// Each selected stage's decision, as `status` words it.
    fn plan(&self, forced: &[&str]) -> Vec<(String, String)> {
        let all: BTreeSet<usize> = (0..self.pipeline.stages.len()).collect();
        let forced: BTreeSet<usize> = forced.iter().map(|s| self.idx(s)).collect();
        plan_ahead(
            &self.pipeline,
            &all,
            &forced,
            &self.lock,
            &self.store,
            &self.hasher,
        )
        .into_iter()
        .map(|p| {
            let said = match p.decision {
                Decision::Run(why) => format!("run: {why}"),
                d => d.label().to_string(),
            };
            (self.pipeline.stages[p.idx].id.0.clone(), said)
        })
        .collect()
    }
}

fn said(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn a_new_pipeline_runs_from_the_top_and_its_downstream_waits_on_it() {
    let w = world(&[]);
    assert_eq!(
        w.plan(&[]),
        said(&[
            ("a", "run: never run"),
            ("b", "run: upstream `a` is stale; never run")
        ])
    );
}

#[test]
fn stages_whose_outputs_match_the_lock_are_up_to_date() {
    let mut w = world(&[]);
    w.ran("a", "a1", false);
    w.ran("b", "b1", false);
    assert_eq!(
        w.plan(&[]),
        said(&[("a", "up to date"), ("b", "up to date")])
    );
}

#[test]
fn forcing_a_stage_reruns_it_and_stales_its_downstream() {
    let mut w = world(&[]);
    w.ran("a", "a1", false);
    w.ran("b", "b1", false);
    assert_eq!(
        w.plan(&["a"]),
        said(&[("a", "run: forced"), ("b", "run: upstream `a` is stale")])
    );
    assert_eq!(
        w.plan(&["b"]),
        said(&[("a", "up to date"), ("b", "run: forced")])
    );
}

#[test]
fn a_missing_or_edited_output_without_a_cache_entry_says_which() {
    let mut w = world(&[]);
    w.ran("a", "a1", false);
    w.ran("b", "b1", false);
    std::fs::write(w.out("b"), "edited by hand").unwrap();
    assert_eq!(
        w.plan(&[])[1],
        said(&[("b", "run: output `o` was modified")])[0]
    );
    std::fs::remove_file(w.out("b")).unwrap();
    assert_eq!(w.plan(&[])[1], said(&[("b", "run: output `o` missing")])[0]);
}

#[test]
fn a_deleted_output_with_a_cache_entry_is_restored_and_counts_downstream() {
    let mut w = world(&[]);
    w.ran("a", "a1", true);
    w.ran("b", "b1", false);
    std::fs::remove_file(w.out("a")).unwrap();
    // `b` is decided as if `a`'s output were back: the overlay carries the recorded hash.
    assert_eq!(
        w.plan(&[]),
        said(&[("a", "will restore"), ("b", "up to date")])
    );
}

#[test]
fn a_corrupt_cache_entry_is_not_promised_as_a_restore() {
    let mut w = world(&[]);
    w.ran("a", "a1", true);
    std::fs::remove_file(w.out("a")).unwrap();
    // `a1` is small, so its record keeps it inline: damage it there.
    let log = w.dir.path().join(".sluice/cache/records.log");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches(r#""text":"a1""#).count(), 1, "{text}");
    std::fs::write(&log, text.replace(r#""text":"a1""#, r#""text":"rot""#)).unwrap();
    let plan = w.plan(&[]);
    assert!(
        plan[0].1.starts_with("run: cache entry is corrupt ("),
        "{plan:?}"
    );
    assert_eq!(
        plan[1],
        said(&[("b", "run: upstream `a` is stale; never run")])[0]
    );
}

#[test]
fn a_changed_param_or_input_is_named_as_the_reason() {
    let mut w = world(&[]);
    w.ran("a", "a1", false);
    w.ran("b", "b1", false);
    w.reload(&[("n".to_string(), "2".to_string())]);
    assert_eq!(
        w.plan(&[]),
        said(&[
            ("a", "run: param `n` changed (1 → 2)"),
            ("b", "run: upstream `a` is stale")
        ])
    );
    w.reload(&[]);
    std::fs::write(w.dir.path().join("data.txt"), "other rows\n").unwrap();
    assert_eq!(
        w.plan(&[])[0],
        said(&[("a", "run: input `d` (data.txt) changed")])[0]
    );
    std::fs::remove_file(w.dir.path().join("data.txt")).unwrap();
    assert_eq!(
        w.plan(&[])[0],
        said(&[("a", "run: input `d` (data.txt) is missing")])[0]
    );
}

#[test]
fn a_stage_below_a_stale_one_also_names_its_own_changes() {
    let mut w = world(&[]);
    w.ran("a", "a1", false);
    w.ran("b", "b1", false);
    let yaml = std::fs::read_to_string(w.dir.path().join("sluice.yaml")).unwrap();
    std::fs::write(
        w.dir.path().join("sluice.yaml"),
        yaml.replace("cat ${{ stages.a", "cat  ${{ stages.a"),
    )
    .unwrap();
    w.reload(&[("n".to_string(), "2".to_string())]);
    assert_eq!(
        w.plan(&[]),
        said(&[
            ("a", "run: param `n` changed (1 → 2)"),
            (
                "b",
                "run: upstream `a` is stale; config (`with`/`run`) changed"
            )
        ])
    );
    let all: BTreeSet<usize> = (0..2).collect();
    let planned = plan_ahead(
        &w.pipeline,
        &all,
        &BTreeSet::new(),
        &w.lock,
        &w.store,
        &w.hasher,
    );
    let Decision::Run(reasons) = &planned[1].decision else {
        panic!("{:?}", planned[1].decision)
    };
    assert_eq!(reasons.first(), &RunReason::UpstreamWillRun("a".into()));
    assert_eq!(
        reasons.lines(),
        ["upstream `a` is stale", "config (`with`/`run`) changed"]
    );
}

#[test]
fn an_input_a_stale_upstream_has_not_written_yet_is_not_a_reason_of_its_own() {
    let mut w = world(&[]);
    w.ran("a", "a1", false);
    w.ran("b", "b1", false);
    std::fs::remove_file(w.out("a")).unwrap();
    assert_eq!(
        w.plan(&[]),
        said(&[
            ("a", "run: output `o` missing"),
            ("b", "run: upstream `a` is stale")
        ])
    );
}
