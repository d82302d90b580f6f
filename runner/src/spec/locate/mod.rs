//! `Index`: the line and column of every value and mapping key in a YAML document, found in one
//! pass and looked up by path.
//!
//! yaml_serde keeps no spans in `Value`, but it attaches the position of the event being read to
//! any error raised there. So one walk over the document asks for each node's position before
//! reading it: `deserialize_enum` looks at the next event without consuming it and, for a plain
//! (untagged) node, fails with that event's position. A failure is only a question asked; the
//! walk then reads the node normally. Only an alias is consumed by the question: its position is
//! the anchored node's, which lies before everything already seen, and that is how the walk tells
//! an alias from a node and knows not to read it again. Custom tags, the one other case the
//! question could not tell apart, never get here: `read_yaml` refuses them first.
//!
//! The walk that builds the index is in `walk.rs`; this file holds the paths and the lookups.

mod walk;

use crate::diag::Location;
use std::collections::HashMap;

/// One step of a path into a YAML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A path plus whether we want the mapping key itself (for "unknown key") or its value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct YPath {
    pub segs: Vec<Seg>,
    pub key: bool,
}

impl YPath {
    pub fn root() -> Self {
        YPath::default()
    }
    pub fn k(&self, key: &str) -> Self {
        self.with(Seg::Key(key.to_string()))
    }
    pub fn i(&self, idx: usize) -> Self {
        self.with(Seg::Index(idx))
    }
    /// The path one segment deeper. Sized for that segment up front: a clone then a push would
    /// allocate the segments twice, and validation builds a path for every field it reads.
    fn with(&self, seg: Seg) -> Self {
        let mut segs = Vec::with_capacity(self.segs.len() + 1);
        segs.extend_from_slice(&self.segs);
        segs.push(seg);
        YPath { segs, key: false }
    }
    /// The same path, but pointing at the mapping key rather than its value.
    pub fn key_of(&self) -> Self {
        let mut p = self.clone();
        p.key = true;
        p
    }
}

/// Positions of every node of one document, by path.
#[derive(Debug, Default)]
pub struct Index {
    root: Option<Pos>,
    /// Where each anchored node is, by its position, for paths that run through an alias;
    /// filled only when the document has aliases.
    anchors: HashMap<(usize, usize), Vec<Seg>>,
    /// Where the root value starts, for problems with the whole document.
    start: Option<Location>,
}

#[derive(Debug)]
struct Pos {
    at: Option<Location>,
    key_at: Option<Location>,
    kids: Kids,
}

#[derive(Debug)]
enum Kids {
    Leaf,
    /// An alias: its position is the anchored node's, and what lies below it is not indexed.
    Alias,
    Map(HashMap<String, Pos>),
    Seq(Vec<Pos>),
}

impl Index {
    /// The position of `path` (of its key, for `key_of` paths); `None` when the path is empty or
    /// not in the document. A path that runs through an alias ends at the anchored value.
    pub fn locate(&self, path: &YPath) -> Option<Location> {
        if path.segs.is_empty() {
            return None;
        }
        let root = self.root.as_ref()?;
        let mut segs: Vec<&Seg> = path.segs.iter().collect();
        let mut node = root;
        let mut i = 0;
        // Each alias on the way restarts the walk at its anchored node. Anchors come before
        // their aliases, so this ends; the bound only guards against a malformed index.
        let mut hops = 0;
        while i < segs.len() {
            if let Kids::Alias = node.kids {
                let at = node.at?;
                hops += 1;
                match self.anchors.get(&(at.line, at.column)) {
                    Some(anchor) if hops <= 64 => {
                        let rest = segs.split_off(i);
                        segs = anchor.iter().chain(rest).collect();
                        (node, i) = (root, 0);
                        continue;
                    }
                    _ => return node.at,
                }
            }
            node = match (&node.kids, segs[i]) {
                (Kids::Map(m), Seg::Key(k)) => m.get(k)?,
                (Kids::Seq(v), Seg::Index(n)) => v.get(*n)?,
                _ => return None,
            };
            i += 1;
        }
        if path.key {
            node.key_at.or(node.at)
        } else {
            node.at
        }
    }
}

impl Index {
    /// The position of `path`, or, when the path is not in the document (a required key left
    /// out, an item named by its text), of its nearest enclosing value that is, so that the
    /// problem still points into the file: a list itself, a mapping by its key (where a missing
    /// key would be added). The root is where the document's content starts.
    pub fn locate_enclosing(&self, path: &YPath) -> Option<Location> {
        if let found @ Some(_) = self.locate(path) {
            return found;
        }
        (1..path.segs.len())
            .rev()
            .find_map(|n| {
                let segs = path.segs[..n].to_vec();
                let key = !self.is_list(&segs);
                self.locate(&YPath { segs, key })
            })
            .or(self.start)
    }

    /// Whether `segs` (a path that runs through no alias) names a list.
    fn is_list(&self, segs: &[Seg]) -> bool {
        let mut node = self.root.as_ref();
        for seg in segs {
            node = match (node.map(|n| &n.kids), seg) {
                (Some(Kids::Map(m)), Seg::Key(k)) => m.get(k),
                (Some(Kids::Seq(v)), Seg::Index(i)) => v.get(*i),
                _ => None,
            };
        }
        matches!(node.map(|n| &n.kids), Some(Kids::Seq(_)))
    }
}

impl Index {
    /// The position of the first alias on `segs`, a path into the document with its aliases
    /// expanded: the mapping key it is the value of, or the list holding it. Without an alias on
    /// the path, the position of the deepest node found.
    pub fn locate_before_alias(&self, segs: &[Seg]) -> Option<Location> {
        let mut node = self.root.as_ref()?;
        let mut found = self.start;
        for seg in segs {
            let next = match (&node.kids, seg) {
                (Kids::Map(m), Seg::Key(k)) => m.get(k),
                (Kids::Seq(v), Seg::Index(n)) => v.get(*n),
                _ => None,
            };
            let Some(next) = next else {
                break;
            };
            if let Kids::Alias = next.kids {
                return next.key_at.or(found);
            }
            found = next.at.or(found);
            node = next;
        }
        found
    }
}

#[cfg(test)]
mod tests;
