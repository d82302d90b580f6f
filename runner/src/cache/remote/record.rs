//! A stage record as the remote keeps it: the local record plus which single-file outputs are
//! executable (locally that is the blob's mode, which an object store does not keep). Read from
//! the remote, a record is untrusted input: bounded in size, and refused unless it is for the
//! key asked, of this format, and its paths and directory hashes hold together.

use super::super::{readable_format, StageRecord, RECORD_FORMAT_INLINE};
use crate::hash::{tree_hash, ContentHash};
use std::path::{Component, Path};

/// A record larger than this is not one sluice wrote (a 100,000-file directory output is ~20 MB).
pub(crate) const MAX_RECORD: usize = 64 << 20;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct RemoteRecord {
    #[serde(flatten)]
    pub record: StageRecord,
    /// Names of single-file outputs whose file is executable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exec: Vec<String>,
}

/// Parses and checks a record fetched for `key`; the error says why it is unusable.
pub(crate) fn parse(bytes: &[u8], key: &ContentHash) -> Result<RemoteRecord, String> {
    if bytes.len() > MAX_RECORD {
        return Err(format!(
            "record is {} bytes, over the {} MiB bound",
            bytes.len(),
            MAX_RECORD >> 20
        ));
    }
    let rec: RemoteRecord =
        serde_json::from_slice(bytes).map_err(|e| format!("record does not parse: {e}"))?;
    let r = &rec.record;
    if !readable_format(r) {
        return Err(format!(
            "record format {} (this sluice reads up to {RECORD_FORMAT_INLINE})",
            r.format
        ));
    }
    if &r.key != key {
        return Err(format!(
            "record is filed under {} but is for {}",
            key.short(),
            r.key.short()
        ));
    }
    for (name, out) in &r.outputs {
        if !plain_relative(Path::new(out.path.as_str())) {
            return Err(format!(
                "output `{name}` has path `{}`, not inside the workspace",
                out.path
            ));
        }
        if let Some(inline) = &out.inline {
            if out.tree.is_some() {
                return Err(format!(
                    "output `{name}` is a directory with inline content"
                ));
            }
            inline
                .content(&out.hash)
                .map_err(|why| format!("output `{name}`: {why}"))?;
        }
        if let Some(tree) = &out.tree {
            if let Some(bad) = tree.iter().find(|e| !plain_relative(Path::new(&e.path))) {
                return Err(format!(
                    "output `{name}` has a file at `{}`, outside its directory",
                    bad.path
                ));
            }
            if tree_hash(tree) != out.hash {
                return Err(format!(
                    "output `{name}`'s file list does not match its hash"
                ));
            }
        }
    }
    if let Some(n) = rec
        .exec
        .iter()
        .find(|n| r.outputs.get(*n).is_none_or(|o| o.tree.is_some()))
    {
        return Err(format!(
            "record marks `{n}` executable, which is not a file output"
        ));
    }
    Ok(rec)
}

/// Relative, non-empty, and made of names only (no `..`, no root, no `.`).
fn plain_relative(p: &Path) -> bool {
    !p.as_os_str().is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{OutputRecord, RECORD_FORMAT};
    use crate::hash::{EntryKind, TreeEntry};
    use crate::paths::WorkPath;
    use std::collections::BTreeMap;

    fn record(path: &str, tree: Option<Vec<TreeEntry>>) -> StageRecord {
        let hash = tree
            .as_deref()
            .map(tree_hash)
            .unwrap_or_else(|| ContentHash::of(b"x"));
        StageRecord {
            format: RECORD_FORMAT,
            stage: "s".into(),
            key: ContentHash::of(b"k"),
            outputs: BTreeMap::from([(
                "o".to_string(),
                OutputRecord::new(
                    serde_json::from_value::<WorkPath>(serde_json::json!(path)).unwrap(),
                    hash,
                    tree,
                ),
            )]),
        }
    }

    fn bytes(r: &StageRecord, exec: &[&str]) -> Vec<u8> {
        serde_json::to_vec(&RemoteRecord {
            record: r.clone(),
            exec: exec.iter().map(|s| s.to_string()).collect(),
        })
        .unwrap()
    }

    #[test]
    fn a_sound_record_round_trips_with_its_exec_names() {
        let r = record("out/model.bin", None);
        let got = parse(&bytes(&r, &["o"]), &r.key).unwrap();
        assert_eq!(got.record, r);
        assert_eq!(got.exec, vec!["o".to_string()]);
    }

    #[test]
    fn hostile_records_are_refused() {
        let key = ContentHash::of(b"k");
        assert!(parse(&bytes(&record("../etc/passwd", None), &[]), &key)
            .unwrap_err()
            .contains("not inside"));
        assert!(parse(&bytes(&record("/etc/passwd", None), &[]), &key).is_err());
        let evil = vec![TreeEntry {
            path: "../../x".into(),
            kind: EntryKind::File,
            hash: ContentHash::of(b"x"),
        }];
        assert!(parse(&bytes(&record("out/d", Some(evil)), &[]), &key)
            .unwrap_err()
            .contains("outside"));
        let mut wrong = record("out/d", Some(vec![]));
        wrong.outputs.get_mut("o").unwrap().hash = ContentHash::of(b"other");
        assert!(parse(&bytes(&wrong, &[]), &key)
            .unwrap_err()
            .contains("does not match"));
        assert!(parse(
            &bytes(&record("a", None), &[]),
            &ContentHash::of(b"other key")
        )
        .is_err());
        assert!(parse(b"{\"format\": 1", &key).is_err());
        assert!(parse(&bytes(&record("a", None), &["nope"]), &key).is_err());
    }
}
