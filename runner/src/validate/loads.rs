//! The load cache: a validated [`Pipeline`] kept under `.sluice/loads/`, one file per pipeline
//! file, reused while nothing validation read has changed, so that a command on an unchanged
//! pipeline skips parsing and validating it (most of a no-op run of a large pipeline).
//!
//! Why a hit is exactly what a full load would give: validation is a function of
//! - the pipeline file's bytes, the path it was named by and its display name, the canonical
//!   workspace root, `--set`, and whether the promoted params file is layered (all in the
//!   [`Key`]);
//! - the promoted params file's bytes, or its absence (in the key);
//! - the code doing it: the sluice binary (its identity is in the key) and the built-in kinds
//!   registered in it (their names and versions are in the key);
//! - the filesystem and the environment, which validation reads only through
//!   [`super::probe::Probes`]: plugin command words that are files, what is at inputs no stage
//!   produces, whether outputs escape the workspace through links, passed-through environment
//!   variables. Every such question is stored with its answer and asked again before a hit.
//!
//! A validation change that reads anything else must put it in the key or ask it through a probe.
//!
//! What is not stored is rebuilt: the graph from its edges, `by_name` and `by_base` from the
//! stages, and each built-in stage's [`crate::stage::Prepared`] by its kind's `prepare` (typed
//! config cannot be written down). Sweeps (`LoadOptions::sweep`) and failed loads are never
//! cached: their results depend on a layout, or must be diagnosed afresh. The file is untrusted:
//! anything unreadable, oversized, of another format or key is a miss, never an error; failing
//! to write it never fails the load.

use super::probe::{Answer, Probes, Question};
use super::{LoadOptions, PromotedParams};
use crate::graph::StageGraph;
use crate::pipeline::{Pipeline, StageDef, StageKind};
use rayon::prelude::*;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bumped whenever the stored form or what the key covers changes.
const FORMAT_VERSION: u32 = 1;

/// A stored load larger than this is not read (10,000 stages take a few MiB).
const MAX_ENTRY_BYTES: u64 = 512 * 1024 * 1024;

/// BLAKE3 over everything validation reads besides its probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key([u8; 32]);

impl Key {
    /// The key of loading `source` (the pipeline file's text) as `opts` say; `None` where part
    /// of it cannot be read (the binary, the promoted file), and the load is then not cached.
    pub(crate) fn new(
        opts: &LoadOptions<'_>,
        promoted: PromotedParams,
        file: &Path,
        source: &str,
    ) -> Option<Key> {
        let mut h = Fields(blake3::Hasher::new());
        h.field(&FORMAT_VERSION.to_le_bytes());
        h.field(&binary_identity()?);
        let kinds: Vec<String> = opts
            .registry
            .names()
            .filter_map(|n| Some(format!("{n}@{}", opts.registry.get(n)?.version())))
            .collect();
        h.field(kinds.join(",").as_bytes());
        h.path(opts.root);
        h.path(opts.file);
        h.path(file);
        h.field(opts.display.as_bytes());
        h.field(source.as_bytes());
        h.field(&(opts.overrides.len() as u64).to_le_bytes());
        for (k, v) in opts.overrides {
            h.field(k.as_bytes());
            h.field(v.as_bytes());
        }
        match promoted {
            PromotedParams::Ignore => h.field(b"promoted: ignored"),
            PromotedParams::Layer => {
                let path = crate::sweep::promote::promoted_path(file);
                match crate::sweep::promote::read_bounded(&path).ok()? {
                    Some(bytes) => {
                        h.field(b"promoted: layered");
                        h.field(&bytes);
                    }
                    None => h.field(b"promoted: none"),
                }
            }
        }
        Some(Key(*h.0.finalize().as_bytes()))
    }

    fn hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

/// Length-prefixed fields, so that no two different inputs hash the same bytes.
struct Fields(blake3::Hasher);

impl Fields {
    fn field(&mut self, bytes: &[u8]) {
        self.0.update(&(bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    fn path(&mut self, p: &Path) {
        use std::os::unix::ffi::OsStrExt as _;
        self.field(p.as_os_str().as_bytes());
    }
}

/// The running binary as a file: device, inode, size and modification time. A rebuilt or
/// upgraded sluice may validate differently (a new check, another default, a kind's `prepare`
/// or `env_facts` changed) while every input is the same, so its loads must not be reused;
/// its path alone would not tell (`cargo build` writes the same path), but a new build is a new
/// file, with another inode or mtime.
fn binary_identity() -> Option<Vec<u8>> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata("/proc/self/exe").ok()?;
    let mut out = Vec::with_capacity(40);
    for n in [m.dev(), m.ino(), m.size()] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.extend_from_slice(&m.mtime().to_le_bytes());
    out.extend_from_slice(&m.mtime_nsec().to_le_bytes());
    Some(out)
}

/// Where the load of pipeline file `file` (absolute) is kept.
fn entry_path(root: &Path, file: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt as _;
    let name = blake3::hash(file.as_os_str().as_bytes()).to_hex();
    root.join(".sluice")
        .join("loads")
        .join(format!("{}.jsonl", &name[..16]))
}

/// The stored file's first line: everything but the stages, which follow one per line.
#[derive(serde::Serialize, serde::Deserialize)]
struct Header<'a> {
    format: u32,
    key: String,
    stages: usize,
    name: Cow<'a, str>,
    file: Cow<'a, Path>,
    display_file: Cow<'a, str>,
    root: Cow<'a, Path>,
    params: Cow<'a, BTreeMap<String, serde_json::Value>>,
    edges: Vec<(usize, usize)>,
    sweep: Cow<'a, Option<crate::sweep::spec::SweepSpec>>,
    warnings: Cow<'a, [String]>,
    promoted: Cow<'a, Option<crate::sweep::promote::Promoted>>,
    slurm_poll: Duration,
    cache: Cow<'a, crate::spec::cache::CacheSection>,
    probes: Cow<'a, [(Question, Answer)]>,
}

/// The pipeline stored for `key`, if there is one, every probe still holds and every built-in
/// stage's `with:` still prepares.
pub(crate) fn lookup(opts: &LoadOptions<'_>, file: &Path, key: &Key) -> Option<Pipeline> {
    let bytes = read_entry(&entry_path(opts.root, file))?;
    let text = std::str::from_utf8(&bytes).ok()?;
    let mut lines = text.split('\n');
    let header: Header<'_> = serde_json::from_str(lines.next()?).ok()?;
    if header.format != FORMAT_VERSION || header.key != key.hex() {
        return None;
    }
    if !Probes::still_hold(&header.probes, opts.root) {
        tracing::debug!("load cache: a probe's answer changed");
        return None;
    }
    let lines: Vec<&str> = lines.collect();
    if lines.len() != header.stages || header.root_differs(opts) {
        return None;
    }
    let mut stages: Vec<StageDef> = lines
        .par_iter()
        .map(|l| serde_json::from_str::<StageDef>(l).ok())
        .collect::<Option<_>>()?;
    // The indices later steps follow without checking: a file not written by this code must
    // not make them panic.
    let n = stages.len();
    let in_range = |s: &StageDef| s.inputs.iter().all(|i| i.producer.is_none_or(|p| p < n));
    if stages
        .iter()
        .enumerate()
        .any(|(i, s)| s.idx != i || !in_range(s))
        || header.edges.iter().any(|&(a, b)| a >= n || b >= n)
    {
        return None;
    }
    prepare_builtins(opts, &mut stages)?;
    let graph = StageGraph::build(n, &header.edges.iter().copied().collect()).ok()?;
    let (by_name, by_base) = indexes(&stages);
    if by_name.len() != n {
        return None;
    }
    Some(Pipeline {
        name: header.name.into_owned(),
        file: header.file.into_owned(),
        display_file: header.display_file.into_owned(),
        root: header.root.into_owned(),
        params: header.params.into_owned(),
        stages,
        graph,
        by_name,
        by_base,
        lock_file: None,
        sweep: header.sweep.into_owned(),
        warnings: header.warnings.into_owned(),
        promoted: header.promoted.into_owned(),
        slurm_poll: header.slurm_poll,
        cache: header.cache.into_owned(),
    })
}

impl Header<'_> {
    /// A stored load always has the caller's root (it is in the key); a file claiming another
    /// is not one this code wrote.
    fn root_differs(&self, opts: &LoadOptions<'_>) -> bool {
        self.root.as_ref() != opts.root
    }
}

/// The file's bytes, or `None` when it is missing, unreadable or too large.
fn read_entry(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read as _;
    let f = std::fs::File::open(path).ok()?;
    let mut bytes = Vec::new();
    f.take(MAX_ENTRY_BYTES + 1).read_to_end(&mut bytes).ok()?;
    (bytes.len() as u64 <= MAX_ENTRY_BYTES).then_some(bytes)
}

/// Each built-in stage's typed config, made again from its stored `with:` as the load made it.
fn prepare_builtins(opts: &LoadOptions<'_>, stages: &mut [StageDef]) -> Option<()> {
    for s in stages.iter_mut() {
        if let StageKind::Builtin { name, .. } = &s.kind {
            s.prepared = opts.registry.get(name)?.prepare(&s.with).ok()?;
        }
    }
    Some(())
}

/// `by_name` and `by_base` as validation builds them: instances in stage order.
fn indexes(stages: &[StageDef]) -> (HashMap<String, usize>, HashMap<String, Vec<usize>>) {
    let by_name = stages.iter().map(|s| (s.id.0.clone(), s.idx)).collect();
    let mut by_base: HashMap<String, Vec<usize>> = HashMap::new();
    for s in stages {
        by_base.entry(s.base.clone()).or_default().push(s.idx);
    }
    (by_name, by_base)
}

/// Stores a successful load and its probes, replacing the pipeline's earlier one. A failure
/// is logged and otherwise ignored: the cache only ever saves work.
pub(crate) fn store(opts: &LoadOptions<'_>, key: &Key, p: &Pipeline, probes: &Probes) {
    let path = entry_path(opts.root, &p.file);
    if let Err(why) = write_entry(&path, key, p, probes) {
        tracing::debug!(path = %path.display(), %why, "load cache: not written");
    }
}

fn write_entry(path: &Path, key: &Key, p: &Pipeline, probes: &Probes) -> Result<(), String> {
    let edges: BTreeSet<(usize, usize)> = (0..p.stages.len())
        .flat_map(|i| p.graph.deps(i).map(move |d| (d, i)))
        .collect();
    let header = Header {
        format: FORMAT_VERSION,
        key: key.hex(),
        stages: p.stages.len(),
        name: Cow::Borrowed(&p.name),
        file: Cow::Borrowed(&p.file),
        display_file: Cow::Borrowed(&p.display_file),
        root: Cow::Borrowed(&p.root),
        params: Cow::Borrowed(&p.params),
        edges: edges.into_iter().collect(),
        sweep: Cow::Borrowed(&p.sweep),
        warnings: Cow::Borrowed(&p.warnings),
        promoted: Cow::Borrowed(&p.promoted),
        slurm_poll: p.slurm_poll,
        cache: Cow::Borrowed(&p.cache),
        probes: Cow::Owned(
            probes
                .unique()
                .ok_or("an answer changed while the pipeline loaded")?,
        ),
    };
    let mut out = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    let lines: Vec<Vec<u8>> = p
        .stages
        .par_iter()
        .map(serde_json::to_vec)
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    out.reserve(lines.iter().map(|l| l.len() + 1).sum());
    for l in lines {
        out.push(b'\n');
        out.extend_from_slice(&l);
    }
    crate::atomic::write(path, &out).map_err(|e| e.to_string())
}
