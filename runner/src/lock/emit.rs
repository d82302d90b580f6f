//! The lock file's YAML text, byte for byte what `yaml_serde::to_string` writes, made without
//! a general YAML emitter for the entries that allow it.
//!
//! A lock is rewritten during and at the end of every run that changed it, on the thread that
//! starts stages; at 10,000 stages yaml_serde took ~100 ms a write, most of it libyaml deciding
//! how to write each of ~150,000 scalars. Nearly every scalar of a lock is a hex digest, a
//! relative path or a short name, which YAML writes plain, so an entry made only of such
//! scalars is written here directly. Any other entry (parameters, a name with a space, a value
//! that reads as a number) is written by yaml_serde inside a one-entry document of the same
//! shape, so its bytes are what the whole document would hold; `tests` compares both writers
//! on generated entries.

use super::{LockEntry, LockFile, LockedOutput};
use crate::fingerprint::InputStamp;
use crate::hash::ContentHash;
use crate::paths::WorkPath;
use crate::small_map::SmallMap;
use std::collections::BTreeMap;
use std::fmt::Write;

/// `yaml_serde::to_string(lock)`.
pub(super) fn to_yaml(lock: &LockFile) -> Result<String, yaml_serde::Error> {
    if lock.promoted.is_some() || lock.stages.is_empty() || !plain(&lock.pipeline) {
        return yaml_serde::to_string(lock);
    }
    let mut out = String::with_capacity(64 + lock.stages.len() * 640);
    let _ = write!(
        out,
        "version: {}\npipeline: {}\nstages:\n",
        lock.version, lock.pipeline
    );
    for (name, entry) in &lock.stages {
        let mark = out.len();
        if write_entry(&mut out, name, entry).is_none() {
            out.truncate(mark);
            match entry_by_yaml_serde(name, entry)? {
                Some(text) => out.push_str(&text),
                None => return yaml_serde::to_string(lock),
            }
        }
    }
    Ok(out)
}

/// One entry as the whole document would hold it: yaml_serde writes `stages:` with only this
/// entry, and the `stages:` line is cut off. `None` if the text does not start that way.
fn entry_by_yaml_serde(name: &str, entry: &LockEntry) -> Result<Option<String>, yaml_serde::Error> {
    #[derive(serde::Serialize)]
    struct One<'a> {
        stages: BTreeMap<&'a str, &'a LockEntry>,
    }
    let text = yaml_serde::to_string(&One {
        stages: [(name, entry)].into(),
    })?;
    Ok(text.strip_prefix("stages:\n").map(str::to_string))
}

/// Whether yaml_serde writes `s` as a plain scalar, as a key or a value, judged conservatively:
/// `false` only costs the slower writer. Plain needs: no character YAML treats specially (the
/// alphabet here has none: no space, `:`, `#`, quote or bracket), no leading `-` or `.`
/// (indicators, `-1`, `.5`, `.inf`), a simple key's length limit (128), and a text that does
/// not read back as something else: every number, boolean or null spelled in this alphabet has
/// no letter but an exponent's `e`, a radix prefix's `x`/`o`/`b`, or is one of a few words.
fn plain(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 128 || matches!(b[0], b'-' | b'.') {
        return false;
    }
    if !b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'/' | b'-'))
    {
        return false;
    }
    if b.len() > 1 && b[0] == b'0' && matches!(b[1], b'x' | b'o' | b'b') {
        return false;
    }
    if !b
        .iter()
        .any(|c| c.is_ascii_alphabetic() && !matches!(c, b'e' | b'E'))
    {
        return false;
    }
    const WORDS: [&str; 12] = [
        "true", "false", "null", "inf", "infinity", "nan", "yes", "no", "on", "off", "y", "n",
    ];
    !WORDS.iter().any(|w| s.eq_ignore_ascii_case(w))
}

/// [`plain`] for a digest's 64 lowercase hex digits, without its three passes over them (a
/// large lock has ten digests an entry): only a radix prefix (`0b`) or the want of a letter
/// other than an exponent's `e` can make one read as a number.
fn plain_hex(b: &[u8]) -> bool {
    debug_assert!(b.len() == 64 && b.iter().all(u8::is_ascii_hexdigit));
    let answer = !b.starts_with(b"0b") && b.iter().any(|c| matches!(c, b'a'..=b'd' | b'f'));
    debug_assert_eq!(answer, plain(std::str::from_utf8(b).unwrap_or_default()));
    answer
}

/// Appends `name`'s entry at the indentation `stages:` gives it; `None` (with `out` partly
/// written) when a scalar of it is not plain or it has parameters, which this writer leaves to
/// yaml_serde.
fn write_entry(out: &mut String, name: &str, e: &LockEntry) -> Option<()> {
    let f = &e.fingerprint;
    is(f.params.is_empty() && plain(name) && plain(&f.kind))?;
    line(out, 2, name, None);
    hash_line(out, 4, "key", &e.key)?;
    line(out, 4, "kind", Some(&f.kind));
    if !f.implementation.is_empty() {
        line(out, 4, "implementation", None);
        for (k, h) in &f.implementation {
            is(plain(k))?;
            hash_line(out, 6, k, h)?;
        }
    }
    if let Some(v) = &f.version {
        is(plain(v))?;
        line(out, 4, "version", Some(v));
    }
    hash_line(out, 4, "config", &f.config)?;
    stamps(out, "inputs", &f.inputs)?;
    if f.outputs.is_empty() {
        out.push_str("    outputs: {}\n");
    } else {
        line(out, 4, "outputs", None);
        for (k, p) in f.outputs.iter() {
            is(plain(k) && plain(p.as_str()))?;
            line(out, 6, k, Some(p.as_str()));
        }
    }
    if !f.env.is_empty() {
        line(out, 4, "env", None);
        for (k, h) in &f.env {
            is(plain(k))?;
            hash_line(out, 6, k, h)?;
        }
    }
    if !f.facts.is_empty() {
        line(out, 4, "facts", None);
        for (k, v) in &f.facts {
            is(plain(k) && plain(v))?;
            line(out, 6, k, Some(v));
        }
    }
    stamps(out, "produced", &e.output_hashes)
}

fn is(ok: bool) -> Option<()> {
    ok.then_some(())
}

/// A path and hash per name (`inputs:`, `produced:`), at the entry's field indentation.
fn stamps<V: PathAndHash>(out: &mut String, field: &str, map: &SmallMap<String, V>) -> Option<()> {
    if map.is_empty() {
        let _ = writeln!(out, "    {field}: {{}}");
        return Some(());
    }
    line(out, 4, field, None);
    for (k, v) in map.iter() {
        is(plain(k) && plain(v.path().as_str()))?;
        line(out, 6, k, None);
        line(out, 8, "path", Some(v.path().as_str()));
        hash_line(out, 8, "hash", v.hash())?;
    }
    Some(())
}

trait PathAndHash {
    fn path(&self) -> &WorkPath;
    fn hash(&self) -> &ContentHash;
}

impl PathAndHash for InputStamp {
    fn path(&self) -> &WorkPath {
        &self.path
    }
    fn hash(&self) -> &ContentHash {
        &self.hash
    }
}

impl PathAndHash for LockedOutput {
    fn path(&self) -> &WorkPath {
        &self.path
    }
    fn hash(&self) -> &ContentHash {
        &self.hash
    }
}

/// `key:` alone (a mapping follows) or `key: value`, both already known to be plain.
fn line(out: &mut String, indent: usize, key: &str, value: Option<&str>) {
    out.extend(std::iter::repeat_n(' ', indent));
    out.push_str(key);
    out.push(':');
    if let Some(v) = value {
        out.push(' ');
        out.push_str(v);
    }
    out.push('\n');
}

/// `key: <hex>`; `None` for the rare digest that reads as a number (only digits and `e`),
/// which yaml_serde quotes.
fn hash_line(out: &mut String, indent: usize, key: &str, h: &ContentHash) -> Option<()> {
    let hex = blake3::Hash::from_bytes(h.0).to_hex();
    is(plain_hex(hex.as_bytes()))?;
    line(out, indent, key, Some(hex.as_str()));
    Some(())
}

#[cfg(test)]
mod tests;
