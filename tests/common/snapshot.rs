//! Snapshot files: the whole text a command printed, masked where it changes from run to run, kept
//! in a file next to the test and compared byte for byte. Shared by the bad-pipeline corpus (a
//! `.snap` beside each fixture under `tests/corpus/`) and the CLI snapshots (`tests/snapshots/`,
//! written by `tests/cli_snapshots.rs`).
//!
//! `SLUICE_BLESS=1 cargo test --test NAME` rewrites the snapshots that differ instead of failing;
//! review the diff (`git diff tests/`) before committing it. A missing snapshot fails, printing
//! what it would hold, so a new one is never recorded unseen.
//!
//! No snapshot crate: the format is the one the corpus has always had (`exit: N`, then
//! `--- stdout` and `--- stderr`), and the masking is a handful of regexes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Whether this run was asked to rewrite snapshots (`SLUICE_BLESS=1`).
pub fn blessing() -> bool {
    std::env::var_os("SLUICE_BLESS").is_some_and(|v| v == "1")
}

/// What changes from run to run in sluice's output, and what it is shown as: run ids (which also
/// name log files), durations, and thread ids in a panic message.
const MASKS: [(&str, &str); 3] = [
    (r"\d{8}T\d{6}\.\d{3}Z-\d+", "[RUN]"),
    (r"\b\d+\.\d+s\b", "[TIME]"),
    (r"thread '([^']*)' \(\d+\)", "thread '$1' [ID]"),
];

/// `text` with every workspace root in `roots` (as given, and canonical: macOS's `/tmp` is a
/// link) shown as `[WS]`, then [`MASKS`] applied, then `extra` (pattern, replacement) pairs.
pub fn mask(text: &str, roots: &[&Path], extra: &[(&str, &str)]) -> String {
    let mut text = text.to_string();
    for root in roots {
        let mut forms = vec![root.to_string_lossy().into_owned()];
        if let Ok(c) = root.canonicalize() {
            forms.push(c.to_string_lossy().into_owned());
        }
        for form in forms {
            text = text.replace(&form, "[WS]");
        }
    }
    for (pattern, with) in MASKS.iter().chain(extra) {
        text = regex::Regex::new(pattern)
            .unwrap()
            .replace_all(&text, *with)
            .into_owned();
    }
    text
}

/// Appends a command's outcome in the snapshot format: `status` (`exit: 0`, `signal: 9`), then
/// each of stdout and stderr that is not empty under its own `--- name` line, newline-terminated.
pub fn push_outcome(text: &mut String, status: &str, stdout: &str, stderr: &str) {
    writeln!(text, "{status}").unwrap();
    for (name, body) in [("stdout", stdout), ("stderr", stderr)] {
        if !body.is_empty() {
            writeln!(text, "--- {name}").unwrap();
            text.push_str(body);
            if !body.ends_with('\n') {
                text.push('\n');
            }
        }
    }
}

/// Compares `got` with the snapshot file `path`. When they differ and `bless` is set the file is
/// rewritten and the comparison passes; otherwise the error says how they differ (or, without a
/// snapshot, what it would hold).
pub fn compare(path: &Path, got: &str, bless: bool) -> Result<(), String> {
    let want = std::fs::read_to_string(path).ok();
    if want.as_deref() == Some(got) {
        return Ok(());
    }
    if bless {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, got)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        return Ok(());
    }
    Err(match want {
        Some(want) => format!("output differs from its snapshot:\n{}", diff(&want, got)),
        None => format!("no snapshot yet; got:\n{}", indent(got)),
    })
}

/// [`compare`] for a test that checks one snapshot: panics with the difference, naming the file
/// and how to bless it.
pub fn assert_snapshot(path: &Path, got: &str) {
    if let Err(e) = compare(path, got, blessing()) {
        panic!(
            "{}: {e}\n(SLUICE_BLESS=1 rewrites it; review the diff before committing)",
            path.display()
        );
    }
}

/// Where the CLI snapshot `name` lives: `tests/snapshots/NAME.snap`.
pub fn cli_snapshot(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.snap"))
}

pub fn indent(text: &str) -> String {
    text.lines().map(|l| format!("      | {l}\n")).collect()
}

/// A line diff in the snapshot's order: `-` lines only in the snapshot, `+` lines only in the
/// output, and up to two unchanged lines around each change (longer unchanged runs are elided).
/// The part between the common first and last lines is matched by longest common subsequence,
/// quadratic in its length; past [`DIFF_CELLS`] it is shown whole, removed then added, so that a
/// runaway output cannot exhaust memory. At most [`DIFF_LINES`] lines are printed.
pub fn diff(want: &str, got: &str) -> String {
    let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    let prefix = w.iter().zip(&g).take_while(|(a, b)| a == b).count();
    let suffix = w[prefix..]
        .iter()
        .rev()
        .zip(g[prefix..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let (wm, gm) = (&w[prefix..w.len() - suffix], &g[prefix..g.len() - suffix]);
    let mut lines: Vec<(char, &str)> = w[..prefix].iter().map(|l| (' ', *l)).collect();
    if wm.len().saturating_mul(gm.len()) > DIFF_CELLS {
        lines.extend(wm.iter().map(|l| ('-', *l)));
        lines.extend(gm.iter().map(|l| ('+', *l)));
    } else {
        lines.extend(lcs_diff(wm, gm));
    }
    lines.extend(w[w.len() - suffix..].iter().map(|l| (' ', *l)));
    if lines.iter().all(|(m, _)| *m == ' ') {
        return "      (the same lines: they differ in line endings or the final newline)\n".into();
    }
    let near_change = |k: usize| {
        let lo = k.saturating_sub(2);
        let hi = (k + 2).min(lines.len() - 1);
        lines[lo..=hi].iter().any(|(m, _)| *m != ' ')
    };
    let mut out = String::new();
    let (mut printed, mut elided) = (0, false);
    for (k, (mark, line)) in lines.iter().enumerate() {
        if printed == DIFF_LINES {
            writeln!(out, "      ... ({} more lines)", lines.len() - k).unwrap();
            break;
        }
        if near_change(k) {
            writeln!(out, "      {mark} {line}").unwrap();
            printed += 1;
            elided = false;
        } else if !elided {
            writeln!(out, "      ...").unwrap();
            elided = true;
        }
    }
    out
}

/// The most cells of the longest-common-subsequence table [`diff`] builds (32 MB of them).
const DIFF_CELLS: usize = 4_000_000;

/// The most lines [`diff`] prints.
const DIFF_LINES: usize = 400;

/// `w` and `g` aligned by their longest common subsequence, removed lines before added ones.
fn lcs_diff<'t>(w: &[&'t str], g: &[&'t str]) -> Vec<(char, &'t str)> {
    // lcs[i][j]: the length of the longest common subsequence of w[i..] and g[j..].
    let mut lcs = vec![vec![0usize; g.len() + 1]; w.len() + 1];
    for i in (0..w.len()).rev() {
        for j in (0..g.len()).rev() {
            lcs[i][j] = if w[i] == g[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut lines = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < w.len() || j < g.len() {
        if i < w.len() && j < g.len() && w[i] == g[j] {
            lines.push((' ', w[i]));
            i += 1;
            j += 1;
        } else if i < w.len() && (j == g.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            lines.push(('-', w[i]));
            i += 1;
        } else {
            lines.push(('+', g[j]));
            j += 1;
        }
    }
    lines
}

/// What differs between two runs of the same commands on the same files, beyond [`MASKS`]:
/// content hashes (cache keys, which change with the key format on purpose and are pinned by
/// `tests/lock_golden.rs` instead) and the `duration_ms` of `--json` events.
pub const CLI_MASKS: [(&str, &str); 2] = [
    (r"\b[0-9a-f]{64}\b", "[HASH]"),
    (r#""duration_ms":\d+"#, r#""duration_ms":[TIME]"#),
];

/// A session of `sluice` commands in one workspace, recorded as a terminal transcript: each
/// command line (`$ sluice ...`), its exit code and output, and notes on what the test changed
/// between commands (`# ...`). [`Transcript::check`] masks it and compares it with its snapshot.
pub struct Transcript<'a> {
    ws: &'a super::Ws,
    text: String,
}

impl<'a> Transcript<'a> {
    pub fn new(ws: &'a super::Ws) -> Transcript<'a> {
        Transcript {
            ws,
            text: String::new(),
        }
    }

    /// Runs `sluice ARGS...` in the workspace and records it.
    pub fn sluice(&mut self, args: &[&str]) -> super::Run {
        let run = self.ws.sluice(args);
        let line: Vec<String> = args
            .iter()
            .map(|a| {
                if a.contains([' ', '"', '\'']) {
                    format!("'{a}'")
                } else {
                    a.to_string()
                }
            })
            .collect();
        if !self.text.is_empty() {
            self.text.push('\n');
        }
        writeln!(self.text, "$ sluice {}", line.join(" ")).unwrap();
        push_outcome(
            &mut self.text,
            &format!("exit: {}", run.code),
            &run.stdout,
            &run.stderr,
        );
        run
    }

    /// Records what the test did between commands.
    pub fn note(&mut self, what: &str) {
        if !self.text.is_empty() {
            self.text.push('\n');
        }
        writeln!(self.text, "# {what}").unwrap();
    }

    /// The masked transcript.
    pub fn text(&self) -> String {
        mask(&self.text, &[self.ws.root()], &CLI_MASKS)
    }

    /// Compares the transcript with `tests/snapshots/NAME.snap` (see [`assert_snapshot`]).
    pub fn check(self, name: &str) {
        assert_snapshot(&cli_snapshot(name), &self.text());
    }
}
