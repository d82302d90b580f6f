//! Edges between stages: `needs:`, each input linked to the stage producing it (or to the outputs
//! inside an input directory), inputs that exist nowhere, and finally the sealed graph, which
//! refuses a cycle and names it as a path.

use super::probe;
use super::probe::{Answer, InputState, Question};
use super::stages::Known;
use super::Validator;
use crate::diag::did_you_mean;
use crate::graph::StageGraph;
use crate::paths::WorkPath;
use crate::pipeline::{Input, StageDef};
use crate::spec::raw::RawStage;
use crate::spec::YPath;
use rayon::prelude::*;
use std::collections::{BTreeSet, HashMap};

/// `(from, to)`: stage `to` runs after stage `from`, by index.
pub(super) type Edges = BTreeSet<(usize, usize)>;

/// One input as `link_inputs` found it: stage index, input index, the stage producing it, the
/// stages writing inside it, and what is at its path when neither (`None` when either).
type Link = (usize, usize, Option<usize>, Vec<usize>, Option<InputState>);

impl Validator<'_, '_> {
    /// An edge into stage `idx` from each stage it `needs:`: every instance of a matrix stage
    /// that agrees with this stage's bindings.
    pub(super) fn needs(&mut self, idx: usize, s: &RawStage, known: &Known<'_>, edges: &mut Edges) {
        for (i, n) in s.needs.iter().enumerate() {
            match known.by_base.get(n) {
                Some(instances) => {
                    for &d in instances {
                        if crate::spec::matrix::agree(&s.bindings, &known.stages[d].bindings) {
                            edges.insert((d, idx));
                        }
                    }
                }
                None => {
                    let help = did_you_mean(n, known.stage_names.iter().map(String::as_str));
                    self.problems.push(
                        &s.path.k("needs").i(i),
                        format!("stage `{}` needs unknown stage `{n}`", s.base),
                        help,
                    );
                }
            }
        }
    }

    /// Connects each input to the stage producing it, or checks that it exists. `input_at` holds,
    /// stage by stage and in the order of its inputs, where a problem with each input points.
    pub(super) fn link_inputs(
        &mut self,
        stages: &mut [StageDef],
        input_at: &[Vec<YPath>],
        edges: &mut Edges,
    ) {
        // Output path → producing stage; an input is produced by the stage owning the input's
        // path or its nearest ancestor (a file inside a directory output).
        let producers: HashMap<&str, usize> = stages
            .iter()
            .flat_map(|s| s.outputs.iter().map(move |o| (o.path.as_str(), s.idx)))
            .collect();
        let producer_of = |p: &WorkPath| -> Option<usize> {
            let mut cur = p.as_str();
            loop {
                if let Some(&i) = producers.get(cur) {
                    return Some(i);
                }
                cur = &cur[..cur.rfind('/')?];
            }
        };
        // Outputs that lie inside an input directory: reading the directory needs them first.
        let mut sorted: Vec<(&str, usize)> = producers.iter().map(|(p, i)| (*p, *i)).collect();
        sorted.sort();
        let inside_of = |p: &WorkPath| -> Vec<usize> {
            let prefix = format!("{}/", p.as_str());
            let start = sorted.partition_point(|(q, _)| *q < prefix.as_str());
            sorted[start..]
                .iter()
                .take_while(|(q, _)| q.starts_with(&prefix))
                .map(|(_, i)| *i)
                .collect()
        };
        // Each input is looked up, and an input no stage produces `lstat`ed, on every core: in
        // a pipeline of tens of thousands of inputs this is most of validation's time. What
        // is found is then recorded in stage order, so problems come out as they always did.
        let root = self.opts.root;
        let links: Vec<Link> = stages
            .par_iter()
            .flat_map_iter(|s| {
                s.inputs.iter().enumerate().map(move |(k, input)| {
                    let producer = producer_of(&input.path);
                    let contained = inside_of(&input.path);
                    let state = (producer.is_none() && contained.is_empty())
                        .then(|| probe::input_state(&input.path, root));
                    (s.idx, k, producer, contained, state)
                })
            })
            .collect();
        for (idx, k, producer, contained, state) in links {
            let s = &mut stages[idx];
            if let Some(state) = state {
                self.probes.push(
                    Question::Input(s.inputs[k].path.clone()),
                    Answer::Input(state),
                );
            }
            let ypath = &input_at[idx][k];
            if contained.contains(&s.idx) || producer == Some(s.idx) {
                let input = &s.inputs[k];
                self.problems.push(
                    ypath,
                    format!("stage `{}` reads its own output through input `{}` (`{}`)", s.id, input.name, input.path),
                    Some("a stage cannot read what it writes; keep outputs out of its input directories".into()),
                );
                continue;
            }
            for &c in &contained {
                edges.insert((c, s.idx));
            }
            match producer {
                Some(p) => {
                    s.inputs[k].producer = Some(p);
                    edges.insert((p, s.idx));
                }
                None => match state {
                    None | Some(InputState::Plain | InputState::Link) => {}
                    Some(InputState::Missing | InputState::BrokenLink) => {
                        self.missing_input(&s.inputs[k], s, ypath)
                    }
                },
            }
        }
    }

    /// An input no stage produces that is not there, or only as a link that leads nowhere:
    /// says which (the stage could not read it either way). Only a refused load looks further
    /// than the probe did, and a refused load is never cached.
    fn missing_input(&mut self, input: &Input, s: &StageDef, ypath: &YPath) {
        let abs = input.path.to_abs(self.opts.root);
        let found = std::fs::symlink_metadata(&abs);
        // A link that leads nowhere (dangling, or in a loop) is as good as missing: the stage
        // could not read it.
        if let (Ok(_), Err(e)) = (&found, std::fs::metadata(&abs)) {
            let target = std::fs::read_link(&abs).unwrap_or_default();
            let what = if e.raw_os_error() == Some(libc::ELOOP) {
                format!("that loops back to itself (through `{}`)", target.display())
            } else {
                format!("to `{}`, which does not exist", target.display())
            };
            self.problems.push(
                ypath,
                format!(
                    "input `{}` of stage `{}` (`{}`) is a symbolic link {what}",
                    input.name, s.base, input.path
                ),
                Some("fix or remove the link, or point the input at the data itself".into()),
            );
        } else if found.is_err() {
            self.problems.push(
                ypath,
                format!(
                    "input `{}` of stage `{}` (`{}`) does not exist and no stage produces it",
                    input.name, s.base, input.path
                ),
                Some("check the path, or add the stage that writes it".into()),
            );
        }
    }

    /// The acyclic stage graph, or a problem naming the cycle as a path of stages.
    pub(super) fn seal(
        &mut self,
        raw: &[RawStage],
        stages: &[StageDef],
        edges: &Edges,
    ) -> Option<StageGraph> {
        match StageGraph::build(stages.len(), edges) {
            Ok(g) => Some(g),
            Err(cycle) => {
                let names: Vec<&str> = cycle.iter().map(|&i| stages[i].id.0.as_str()).collect();
                let first = cycle.first().copied().unwrap_or(0);
                self.problems.push(
                    &raw[first].path.key_of(),
                    format!("the stages form a cycle: {}", names.join(" → ")),
                    Some(
                        "a stage cannot depend, directly or through others, on its own outputs"
                            .into(),
                    ),
                );
                None
            }
        }
    }
}
