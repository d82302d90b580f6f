//! The up-to-date pre-pass: before any worker is involved, every stage that is up to date (and
//! whose upstream is) is settled from the lock and the files, wave by wave.

use super::lock_entry;
use crate::fingerprint::Overlay;
use crate::hash::ContentHash;
use crate::job::{check_up_to_date, RunCtx};
use crate::lock::LockEntry;
use crate::paths::WorkPath;
use std::collections::{BTreeMap, BTreeSet};

/// The stages the up-to-date pass settled, each with its lock entry when that changed (boxed:
/// nearly all are `None`, and 10,000 inline entries of a few hundred bytes showed in peak RSS).
pub(super) type Settled = BTreeMap<usize, Option<Box<LockEntry>>>;

/// Settles every stage that is up to date and whose upstream is too, wave by wave in dependency
/// order and in parallel within a wave, before any worker is involved: a no-op rerun then costs
/// no thread hand-offs and uses every core for its stat calls. Each settled stage comes with its
/// new lock entry, or `None` when the lock already holds exactly that entry (the common case,
/// compared on the workers so a no-op neither keeps nor compares every fingerprint afterwards).
pub(super) fn settle_up_to_date(
    ctx: &RunCtx,
    selection: &BTreeSet<usize>,
    forced: &BTreeSet<usize>,
) -> Settled {
    use rayon::prelude::*;
    let graph = &ctx.pipeline.graph;
    let stages = &ctx.pipeline.stages;
    let mut settled: Settled = BTreeMap::new();
    let mut pending: BTreeMap<usize, usize> = selection
        .iter()
        .map(|&i| (i, graph.deps(i).filter(|d| selection.contains(d)).count()))
        .collect();
    let mut wave: Vec<usize> = pending
        .iter()
        .filter(|(_, &n)| n == 0)
        .map(|(&i, _)| i)
        .collect();
    // Every file is hashed once per pass, as make stats it once: an input many stages share
    // (a dataset, a config) is looked at once, and an input an upstream stage produced takes
    // the hash that stage's check has just confirmed. The pass is one snapshot; a stage that
    // runs checks its inputs again as it starts and after it ends.
    let mut known: Overlay = {
        let shared: BTreeSet<&WorkPath> = selection
            .iter()
            .flat_map(|&i| stages[i].inputs.iter())
            .filter(|input| input.producer.is_none())
            .map(|input| &input.path)
            .collect();
        let shared: Vec<&WorkPath> = shared.into_iter().collect();
        shared
            .par_iter()
            .with_min_len(64)
            .filter_map(|&p| {
                let h = ctx.hasher.hash_path(&p.to_abs(&ctx.pipeline.root)).ok()??;
                Some((p.clone(), h.hash))
            })
            .collect()
    };
    while !wave.is_empty() {
        wave.retain(|i| !forced.contains(i));
        type Checked = (Vec<(WorkPath, ContentHash)>, Option<Box<LockEntry>>);
        let results: Vec<(usize, Option<Checked>)> = wave
            .par_iter()
            .map(|&i| {
                let settled = check_up_to_date(ctx, i, &known).map(|c| {
                    let produced = c
                        .outputs
                        .values()
                        .map(|o| (o.path.clone(), o.hash))
                        .collect();
                    let entry = lock_entry(c);
                    let locked = ctx.lock.stages.get(&stages[i].id.0);
                    (produced, (locked != Some(&entry)).then(|| Box::new(entry)))
                });
                (i, settled)
            })
            .collect();
        let mut next = Vec::new();
        for (i, completed) in results {
            let Some((produced, changed)) = completed else {
                continue;
            };
            known.extend(produced);
            settled.insert(i, changed);
            for dep in graph.dependents(i) {
                if let Some(n) = pending.get_mut(&dep) {
                    *n -= 1;
                    if *n == 0 {
                        next.push(dep);
                    }
                }
            }
        }
        wave = next;
    }
    settled
}
