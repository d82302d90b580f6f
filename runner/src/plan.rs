//! `Decision`: whether a stage is up to date, can be restored from the cache, or must run, and
//! why. The same logic serves `run` (decided as each stage becomes ready), `run --dry-run` and
//! `status` (decided ahead for the whole selection).

use crate::cache::{CacheStore, OutputRecord, RestoreError, StageRecord};
use crate::fingerprint::{Fingerprint, FingerprintError, Overlay};
use crate::hash::{ContentHash, Hasher};
use crate::lock::{LockEntry, LockFile};
use crate::pipeline::{Pipeline, StageDef};
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

/// One component of a fingerprint that differs from the last recorded run.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Kind {
        from: String,
        to: String,
    },
    Implementation(String),
    Version,
    Config,
    Param {
        name: String,
        from: Option<Json>,
        to: Option<Json>,
    },
    Input {
        name: String,
        path: String,
    },
    InputAdded(String),
    InputRemoved(String),
    Outputs,
    Env(String),
    Fact {
        name: String,
        from: Option<String>,
        to: Option<String>,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<Json>| {
            v.as_ref()
                .map(|v| v.to_string())
                .unwrap_or_else(|| "unset".into())
        };
        match self {
            Change::Kind { from, to } => write!(f, "kind changed ({from} → {to})"),
            Change::Implementation(file) => write!(f, "plugin file `{file}` changed"),
            Change::Version => write!(f, "`version` changed"),
            Change::Config => write!(f, "config (`with`/`run`) changed"),
            Change::Param { name, from, to } => {
                write!(f, "param `{name}` changed ({} → {})", show(from), show(to))
            }
            Change::Input { name, path } => match upstream_ref(name) {
                Some((stage, output)) => {
                    write!(f, "output `{output}` of `{stage}` ({path}) changed")
                }
                None => write!(f, "input `{name}` ({path}) changed"),
            },
            Change::InputAdded(n) => write!(f, "input `{n}` added"),
            Change::InputRemoved(n) => write!(f, "input `{n}` removed"),
            Change::Outputs => write!(f, "declared outputs changed"),
            Change::Env(n) => write!(f, "env `{n}` changed"),
            Change::Fact { name, from, to } => write!(
                f,
                "environment fact `{name}` changed ({} → {})",
                from.as_deref().unwrap_or("unset"),
                to.as_deref().unwrap_or("unset")
            ),
        }
    }
}

/// `stages.S.outputs.N` (an input implied by a reference) as `(S, N)`.
fn upstream_ref(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix("stages.")?;
    let (stage, output) = rest.split_once(".outputs.")?;
    Some((stage, output))
}

/// Why a stage must run.
#[derive(Debug, Clone, PartialEq)]
pub enum RunReason {
    NeverRun,
    Forced,
    Changed(Vec<Change>),
    OutputMissing(String),
    OutputModified(String),
    /// Only when planning ahead: an upstream stage will run, so this stage's inputs are unknown.
    UpstreamWillRun(String),
    CacheCorrupt(String),
    InputMissing(String),
    /// The stage refused its restored outputs (`Stage::after_restore`), saying why.
    RestoreRefused(String),
}

impl fmt::Display for RunReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunReason::NeverRun => f.write_str("never run"),
            RunReason::Forced => f.write_str("forced"),
            RunReason::Changed(changes) => {
                let parts: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
                if parts.is_empty() {
                    f.write_str("key changed")
                } else {
                    f.write_str(&parts.join(", "))
                }
            }
            RunReason::OutputMissing(n) => write!(f, "output `{n}` missing"),
            RunReason::OutputModified(n) => write!(f, "output `{n}` was modified"),
            RunReason::UpstreamWillRun(s) => write!(f, "upstream `{s}` is stale"),
            RunReason::CacheCorrupt(m) => write!(f, "cache entry is corrupt ({m})"),
            RunReason::InputMissing(m) => write!(f, "input {m} is missing"),
            RunReason::RestoreRefused(m) => write!(f, "cached result not usable: {m}"),
        }
    }
}

impl RunReason {
    /// One line per reason: the changes of `Changed` apart, so a list shows each on its own.
    fn lines(&self) -> Vec<String> {
        match self {
            RunReason::Changed(changes) if !changes.is_empty() => {
                changes.iter().map(|c| c.to_string()).collect()
            }
            r => vec![r.to_string()],
        }
    }
}

/// Every reason a stage must run, most decisive first: a stale upstream leads, because it alone
/// would make the stage run, and the stage's own changes follow so that none is hidden behind it.
/// Never empty.
#[derive(Debug, Clone, PartialEq)]
pub struct Reasons(Vec<RunReason>);

impl Reasons {
    /// The first reason; what `status --json` printed as `reason` before the list existed.
    pub fn first(&self) -> &RunReason {
        &self.0[0]
    }

    /// Each reason as its own line, a `Changed` split into its changes.
    pub fn lines(&self) -> Vec<String> {
        self.0.iter().flat_map(RunReason::lines).collect()
    }
}

impl From<RunReason> for Reasons {
    fn from(r: RunReason) -> Self {
        Reasons(vec![r])
    }
}

impl fmt::Display for Reasons {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub enum Decision {
    /// Outputs on disk match the key; carries their hashes.
    UpToDate(BTreeMap<String, OutputRecord>),
    Restore(StageRecord),
    Run(Reasons),
}

impl Decision {
    pub fn label(&self) -> &'static str {
        match self {
            Decision::UpToDate(_) => "up to date",
            Decision::Restore(_) => "will restore",
            Decision::Run(_) => "stale",
        }
    }
}

/// What deciding needs besides the stage: where outputs live, the hasher, and the cache.
pub struct Checker<'a> {
    pub root: &'a Path,
    pub hasher: &'a Hasher,
    pub store: &'a dyn CacheStore,
}

impl Checker<'_> {
    /// Decides one stage whose fingerprint is known. (`--force` is decided by the caller.)
    pub fn decide(
        &self,
        stage: &StageDef,
        fp: &Fingerprint,
        key: &ContentHash,
        lock: Option<&LockEntry>,
    ) -> Decision {
        let run = |why: RunReason| Decision::Run(why.into());
        let (root, hasher, store) = (self.root, self.hasher, self.store);
        let current = |out: &OutputRecord| -> Option<OutputRecord> {
            let h = hasher.hash_path(&out.path.to_abs(root)).ok()??;
            Some(OutputRecord::new(out.path.clone(), h.hash, h.tree))
        };
        // Where this stage keeps output `name`. Keys hash a sweep's paths without the sweep's
        // slot, so a lock entry or cache record may come from a run that wrote the same result
        // elsewhere (a sweep trial, or the plain run a trial is compared with): the record's
        // hashes hold, its paths are this stage's.
        let here = |name: &str| {
            stage
                .outputs
                .iter()
                .find(|o| o.name == name)
                .map(|o| &o.path)
        };
        // Fast path: the lock says this key produced these hashes, and they are on disk.
        if let Some(entry) = lock.filter(|e| &e.key == key) {
            let mut now = BTreeMap::new();
            let mut all = entry.output_hashes.len() == stage.outputs.len();
            for (name, locked) in &entry.output_hashes {
                let probe = OutputRecord::new(
                    here(name).unwrap_or(&locked.path).clone(),
                    locked.hash,
                    None,
                );
                match current(&probe) {
                    Some(c) if c.hash == locked.hash => {
                        now.insert(name.clone(), c);
                    }
                    _ => {
                        all = false;
                        break;
                    }
                }
            }
            if all {
                return Decision::UpToDate(now);
            }
        }
        // A record must name exactly this stage's outputs: one that names another path (from a
        // remote cache, say) is not put in place.
        let fits = |r: &StageRecord| {
            r.outputs.len() == stage.outputs.len() && r.outputs.keys().all(|n| here(n).is_some())
        };
        if let Some(mut record) = store.lookup(key).filter(fits) {
            for (name, out) in record.outputs.iter_mut() {
                if let Some(p) = here(name) {
                    out.path = p.clone();
                }
            }
            let mut now = BTreeMap::new();
            for (name, out) in &record.outputs {
                match current(out) {
                    Some(c) if c.hash == out.hash => {
                        now.insert(name.clone(), c);
                    }
                    _ => return Decision::Restore(record),
                }
            }
            return Decision::UpToDate(now);
        }
        match lock {
            None => run(RunReason::NeverRun),
            Some(entry) if &entry.key == key => {
                // Same key, outputs differ, nothing cached: say which output.
                for o in &stage.outputs {
                    match hasher.hash_path(&o.path.to_abs(root)).ok().flatten() {
                        None => return run(RunReason::OutputMissing(o.name.clone())),
                        Some(h)
                            if entry.output_hashes.get(&o.name).map(|l| l.hash) != Some(h.hash) =>
                        {
                            return run(RunReason::OutputModified(o.name.clone()))
                        }
                        _ => {}
                    }
                }
                run(RunReason::Changed(Vec::new()))
            }
            Some(entry) => run(RunReason::Changed(diff(&entry.fingerprint, fp))),
        }
    }
}

/// Which components of the fingerprint changed since `old`.
pub fn diff(old: &Fingerprint, new: &Fingerprint) -> Vec<Change> {
    let mut out = Vec::new();
    if old.kind != new.kind {
        out.push(Change::Kind {
            from: old.kind.clone(),
            to: new.kind.clone(),
        });
    }
    for (file, h) in &new.implementation {
        if old.implementation.get(file) != Some(h) {
            out.push(Change::Implementation(file.clone()));
        }
    }
    if old.version != new.version {
        out.push(Change::Version);
    }
    if old.config != new.config {
        out.push(Change::Config);
    }
    let names: BTreeSet<&String> = old.params.keys().chain(new.params.keys()).collect();
    for n in names {
        let (a, b) = (old.params.get(n), new.params.get(n));
        if a != b {
            out.push(Change::Param {
                name: n.clone(),
                from: a.cloned(),
                to: b.cloned(),
            });
        }
    }
    for (n, stamp) in &new.inputs {
        match old.inputs.get(n) {
            None => out.push(Change::InputAdded(n.clone())),
            Some(o) if o != stamp => out.push(Change::Input {
                name: n.clone(),
                path: stamp.path.to_string(),
            }),
            _ => {}
        }
    }
    for n in old.inputs.keys() {
        if !new.inputs.contains_key(n) {
            out.push(Change::InputRemoved(n.clone()));
        }
    }
    if old.outputs != new.outputs {
        out.push(Change::Outputs);
    }
    let env_names: BTreeSet<&String> = old.env.keys().chain(new.env.keys()).collect();
    for n in env_names {
        if old.env.get(n) != new.env.get(n) {
            out.push(Change::Env(n.clone()));
        }
    }
    let fact_names: BTreeSet<&String> = old.facts.keys().chain(new.facts.keys()).collect();
    for n in fact_names {
        if old.facts.get(n) != new.facts.get(n) {
            out.push(Change::Fact {
                name: n.clone(),
                from: old.facts.get(n).cloned(),
                to: new.facts.get(n).cloned(),
            });
        }
    }
    out
}

/// A stage's planned fate, decided ahead of running.
#[derive(Debug, Clone)]
pub struct Planned {
    pub idx: usize,
    pub decision: Decision,
    pub key: Option<ContentHash>,
}

/// Decides every selected stage in dependency order without running anything. Outputs that an
/// upstream stage would restore count with their recorded hashes; stages below one that must run
/// are reported as stale because of it.
pub fn plan_ahead(
    pipeline: &Pipeline,
    selection: &BTreeSet<usize>,
    forced: &BTreeSet<usize>,
    lock: &LockFile,
    store: &dyn CacheStore,
    hasher: &Hasher,
) -> Vec<Planned> {
    let checker = Checker {
        root: &pipeline.root,
        hasher,
        store,
    };
    let mut overlay = Overlay::new();
    let mut will_run: BTreeSet<usize> = BTreeSet::new();
    let mut out = Vec::new();
    for &idx in pipeline.graph.topo_order() {
        if !selection.contains(&idx) {
            continue;
        }
        let stage = &pipeline.stages[idx];
        let stale: BTreeSet<&str> = pipeline
            .graph
            .deps(idx)
            .filter(|d| will_run.contains(d))
            .map(|d| pipeline.stages[d].id.0.as_str())
            .collect();
        if !stale.is_empty() {
            let reasons = if forced.contains(&idx) {
                vec![RunReason::Forced]
            } else {
                let upstream = stale
                    .iter()
                    .map(|s| RunReason::UpstreamWillRun(s.to_string()));
                let own = own_reasons(&checker, stage, lock, &overlay, &stale);
                upstream.chain(own).collect()
            };
            will_run.insert(idx);
            out.push(Planned {
                idx,
                decision: Decision::Run(Reasons(reasons)),
                key: None,
            });
            continue;
        }
        let (decision, key) = match Fingerprint::compute(stage, &pipeline.root, hasher, &overlay) {
            Ok(fp) => {
                let key = fp.key();
                let d = if forced.contains(&idx) {
                    Decision::Run(RunReason::Forced.into())
                } else {
                    checker.decide(stage, &fp, &key, lock.stages.get(&stage.id.0))
                };
                // A run verifies blobs as it restores them; deciding ahead must not promise a
                // restore that would fail, so the blobs are checked here (a `stat` each when the
                // memo knows them unchanged).
                let d = match d {
                    Decision::Restore(rec) => match store.verify(&rec, hasher) {
                        Err(RestoreError::Corrupt(why)) => {
                            Decision::Run(RunReason::CacheCorrupt(why).into())
                        }
                        _ => Decision::Restore(rec),
                    },
                    d => d,
                };
                (d, Some(key))
            }
            Err(e) => (Decision::Run(missing_input(e).into()), None),
        };
        match &decision {
            Decision::Restore(rec) => {
                for o in rec.outputs.values() {
                    overlay.insert(o.path.clone(), o.hash);
                }
            }
            Decision::Run(_) => {
                will_run.insert(idx);
            }
            Decision::UpToDate(_) => {}
        }
        out.push(Planned { idx, decision, key });
    }
    out
}

/// Why a stage below a stale one would run even if its upstream reran to the same outputs: its
/// own changes, judged against its inputs as they are now. An input that a stale upstream has not
/// written yet is no reason of its own.
fn own_reasons(
    checker: &Checker<'_>,
    stage: &StageDef,
    lock: &LockFile,
    overlay: &Overlay,
    stale: &BTreeSet<&str>,
) -> Vec<RunReason> {
    let Some(entry) = lock.stages.get(&stage.id.0) else {
        return vec![RunReason::NeverRun];
    };
    match Fingerprint::compute(stage, checker.root, checker.hasher, overlay) {
        Ok(fp) => match checker.decide(stage, &fp, &fp.key(), Some(entry)) {
            Decision::Run(reasons) => reasons.0,
            Decision::UpToDate(_) | Decision::Restore(_) => Vec::new(),
        },
        Err(FingerprintError::MissingInput { name, .. })
            if upstream_ref(&name).is_some_and(|(s, _)| stale.contains(s)) =>
        {
            Vec::new()
        }
        Err(e) => vec![missing_input(e)],
    }
}

fn missing_input(e: FingerprintError) -> RunReason {
    match e {
        FingerprintError::MissingInput { name, path } => {
            RunReason::InputMissing(format!("`{name}` ({path})"))
        }
        e => RunReason::InputMissing(crate::error::chain(&e)),
    }
}

#[cfg(test)]
mod tests;
