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

use crate::diag::Location;
use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};
use std::collections::HashMap;
use std::fmt;

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
        let mut p = self.clone();
        p.segs.push(Seg::Key(key.to_string()));
        p.key = false;
        p
    }
    pub fn i(&self, idx: usize) -> Self {
        let mut p = self.clone();
        p.segs.push(Seg::Index(idx));
        p.key = false;
        p
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
    /// Indexes `source`, which `read_yaml` has accepted (so it has no custom tags, duplicate keys
    /// or excessive nesting). Should reading fail anyway, nothing is found, and problems are
    /// reported without a position rather than not at all.
    pub fn build(source: &str) -> Index {
        let mut st = Walk {
            last: None,
            key: None,
            aliases: false,
        };
        // The root's own position is never asked for: an empty path locates nothing, and no
        // alias can name the root, which encloses it.
        let de = yaml_serde::Deserializer::from_str(source);
        let mut root = Pos {
            at: None,
            key_at: None,
            kids: Kids::Leaf,
        };
        if let Ok(kids) = (Node { st: &mut st }).deserialize(de) {
            root.kids = kids;
        }
        let mut index = Index {
            root: Some(root),
            anchors: HashMap::new(),
            start: content_start(source),
        };
        if st.aliases {
            let mut anchors = HashMap::new();
            if let Some(root) = &index.root {
                positions(root, &mut Vec::new(), &mut anchors);
            }
            index.anchors = anchors;
        }
        index
    }

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

/// Where the document's content starts: the first character that is not blank, not in a
/// comment, a directive or the `---` that opens the document. That is where the root value is,
/// which a problem with the whole document (a list instead of a mapping) points at.
fn content_start(source: &str) -> Option<Location> {
    for (i, line) in source.lines().enumerate() {
        let text = line.trim_start_matches('\u{feff}');
        let body = text.trim_start();
        if body.is_empty() || body.starts_with('#') || body.starts_with('%') || body == "---" {
            continue;
        }
        let column = line.chars().count() - body.chars().count() + 1;
        return Some(Location {
            line: i + 1,
            column,
        });
    }
    None
}

struct Walk {
    /// The position of the last event positioned: every node read after it starts later, while
    /// an alias reports its anchored node, which started earlier.
    last: Option<(usize, usize)>,
    /// The text of the key just read.
    key: Option<String>,
    /// Whether any alias was met.
    aliases: bool,
}

const HERE: &str = "sluice: position asked";

impl Walk {
    /// Asks for the next node's position through `ask` (which consumes nothing but an alias);
    /// returns the position and whether the node was an alias.
    fn ask<E: de::Error>(&mut self, asked: Result<(), E>) -> (Option<Location>, bool) {
        let Err(e) = asked else {
            return (None, false);
        };
        let Some(at) = located(&e) else {
            return (None, false);
        };
        let here = (at.line, at.column);
        if self.last.is_some_and(|last| here <= last) {
            self.aliases = true;
            return (Some(at), true);
        }
        self.last = Some(here);
        (Some(at), false)
    }
}

/// Records the path of every positioned node that is not an alias, outer nodes first: a block
/// mapping starts where its first key does, and the mapping is what an anchor names.
fn positions(node: &Pos, path: &mut Vec<Seg>, out: &mut HashMap<(usize, usize), Vec<Seg>>) {
    if let Kids::Alias = node.kids {
        return;
    }
    if let Some(at) = node.at {
        out.entry((at.line, at.column))
            .or_insert_with(|| path.clone());
    }
    match &node.kids {
        Kids::Map(m) => {
            for (k, kid) in m {
                path.push(Seg::Key(k.clone()));
                positions(kid, path, out);
                path.pop();
            }
        }
        Kids::Seq(items) => {
            for (i, kid) in items.iter().enumerate() {
                path.push(Seg::Index(i));
                positions(kid, path, out);
                path.pop();
            }
        }
        Kids::Leaf | Kids::Alias => {}
    }
}

/// The position yaml_serde put on an error raised by asking (our own error, or yaml_serde's
/// "invalid type" for a mapping or list), read through the generic error type: yaml_serde's own
/// error is the only one these visitors see.
fn located<E: de::Error>(e: &E) -> Option<Location> {
    position(&e.to_string())
}

/// The position at the end of an error's text: ` at line L column C`, or nothing at all for the
/// very start of the file (yaml_serde leaves line 1, column 1 out).
fn position(text: &str) -> Option<Location> {
    let Some(at) = text.rfind(" at line ") else {
        return Some(Location { line: 1, column: 1 });
    };
    let (line, column) = text[at + " at line ".len()..].split_once(" column ")?;
    Some(Location {
        line: line.parse().ok()?,
        column: column.parse().ok()?,
    })
}

/// Asks for a node's position: fails on arrival, consuming nothing.
struct Ask;

impl<'de> DeserializeSeed<'de> for Ask {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_enum("", &[], self)
    }
}

impl<'de> Visitor<'de> for Ask {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("anything")
    }
    fn visit_enum<A: EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(HERE))
    }
}

/// Reads one node (already positioned by its parent) and indexes what lies below it.
struct Node<'a> {
    st: &'a mut Walk,
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Kids;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Kids, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Kids;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Kids, E> {
        Ok(Kids::Leaf)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Kids, E> {
        Ok(Kids::Leaf)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Kids, E> {
        Ok(Kids::Leaf)
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Kids, E> {
        Ok(Kids::Leaf)
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Kids, E> {
        Ok(Kids::Leaf)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Kids, E> {
        Ok(Kids::Leaf)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Kids, E> {
        Ok(Kids::Leaf)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Kids, E> {
        Ok(Kids::Leaf)
    }
    fn visit_none<E: de::Error>(self) -> Result<Kids, E> {
        Ok(Kids::Leaf)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kids, A::Error> {
        let st = self.st;
        let mut items = Vec::new();
        loop {
            // Asking goes through `next_element_seed` too, which only counts elements twice;
            // yaml_serde compares that count with itself, so it does no harm.
            let asked = match seq.next_element_seed(Ask) {
                Ok(None) => break,
                Ok(Some(())) => Ok(()),
                Err(e) => Err(e),
            };
            let (at, alias) = st.ask(asked);
            let kids = if alias {
                Kids::Alias
            } else {
                match seq.next_element_seed(Node { st: &mut *st })? {
                    Some(kids) => kids,
                    None => break,
                }
            };
            items.push(Pos {
                at,
                key_at: None,
                kids,
            });
        }
        Ok(Kids::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kids, A::Error> {
        let st = self.st;
        let mut out = HashMap::new();
        loop {
            // A scalar key fails on arrival too, after it has been read whole: its text is kept
            // and its position read off the error.
            let (key_at, key) = match map.next_key_seed(Key { st: &mut *st }) {
                Ok(None) => break,
                Ok(Some(())) => (None, None),
                Err(e) => {
                    let text = e.to_string();
                    let Some(at) = text.contains(HERE).then(|| position(&text)).flatten() else {
                        return Err(e);
                    };
                    st.last = st.last.max(Some((at.line, at.column)));
                    (Some(at), st.key.take())
                }
            };
            let asked = map.next_value_seed(Ask);
            let (at, alias) = st.ask(asked);
            let kids = if alias {
                Kids::Alias
            } else {
                map.next_value_seed(Node { st: &mut *st })?
            };
            if let Some(key) = key {
                out.insert(key, Pos { at, key_at, kids });
            }
        }
        Ok(Kids::Map(out))
    }
}

/// Reads a mapping key: keeps a scalar's text and fails to report its position; reads a
/// complex key (a list or mapping as a key) whole and does not index it.
struct Key<'a> {
    st: &'a mut Walk,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Key<'_> {
    fn found<E: de::Error>(self, key: yaml_serde::Value) -> Result<(), E> {
        self.st.key = Some(super::yaml::key_text(&key));
        Err(E::custom(HERE))
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping key")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.found(v.into())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.found(v.into())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.found(v.into())
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<(), E> {
        self.found(yaml_serde::Value::String(v.to_string()))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<(), E> {
        self.found(yaml_serde::Value::String(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.found(v.into())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.found(yaml_serde::Value::String(v.to_string()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.found(yaml_serde::Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.found(yaml_serde::Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map
            .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
            .is_some()
        {}
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::IgnoredAny;
    use serde::Deserialize;

    const SRC: &str = "name: x\nstages:\n  a:\n    run: echo hi\n    inputs: {t: foo.csv, u: bar}\n  b:\n    needs: [a, c]\n    run: |\n      echo\n";

    fn at(p: YPath) -> (usize, usize) {
        let l = Index::build(SRC).locate(&p).unwrap();
        (l.line, l.column)
    }

    #[test]
    fn values_keys_and_sequence_items() {
        let stages = YPath::root().k("stages");
        assert_eq!(at(stages.k("a").k("run")), (4, 10));
        assert_eq!(at(stages.k("a").k("inputs").k("u")), (5, 29));
        assert_eq!(at(stages.k("a").k("inputs").k("u").key_of()), (5, 26));
        assert_eq!(at(stages.k("b").key_of()), (6, 3));
        assert_eq!(at(stages.k("b").k("needs").i(1)), (7, 16));
        assert_eq!(at(stages.k("b").k("run").key_of()), (8, 5));
        assert_eq!(Index::build(SRC).locate(&stages.k("zz")), None);
        let index = Index::build(SRC);
        let enclosing = |p: YPath| index.locate_enclosing(&p).map(|l| (l.line, l.column));
        assert_eq!(enclosing(stages.k("a").k("with").k("x")), Some((3, 3)));
        assert_eq!(enclosing(stages.k("b").k("needs").k("c")), Some((7, 12)));
        assert_eq!(enclosing(stages.k("b").k("run").key_of()), Some((8, 5)));
        assert_eq!(enclosing(YPath::root()), Some((1, 1)));
        let list = Index::build("# header\n\n---\n  - a\n");
        assert_eq!(
            list.locate_enclosing(&YPath::root())
                .map(|l| (l.line, l.column)),
            Some((4, 3))
        );
    }

    /// Every path of `v`, depth first.
    fn paths(v: &yaml_serde::Value, here: YPath, out: &mut Vec<YPath>) {
        match v {
            yaml_serde::Value::Mapping(m) => {
                for (k, val) in m {
                    let p = here.k(&super::super::yaml::key_text(k));
                    out.push(p.key_of());
                    out.push(p.clone());
                    paths(val, p, out);
                }
            }
            yaml_serde::Value::Sequence(items) => {
                for (i, val) in items.iter().enumerate() {
                    out.push(here.i(i));
                    paths(val, here.i(i), out);
                }
            }
            _ => {}
        }
    }

    /// The index agrees with replaying the document once per path (the way positions were
    /// found before), on documents mixing block and flow styles, quoting, empty values, block
    /// scalars, comments, non-string keys and anchors with aliases.
    #[test]
    fn agrees_with_a_replay_per_path() {
        let docs = [
            SRC,
            "a:\nb: 1\nc:\n  - \n  -\n  - x\nd: {e: , g, f: [1, 2]}\n",
            "'q k': \"v\"\n\"k2\": 'w'\n? complex\n: 3\n1: one\ntrue: yes\n~: nul\n",
            "# c\nx: |\n  text\n  more\ny: >-\n  folded\nz: [a, {b: c}, [d, e]]  # tail\n",
            "base: &b {k: 1, l: [2, 3]}\nuse: *b\nlist: [&i 7, *i, *b, 8]\nafter: {m: *i, n: 9}\n",
            "- a\n- b: [c, &x d]\n  e: *x\n- - f\n  - g\n",
            "base: &b\n  k: 1\n  l:\n    - 2\nuse: *b\nlst:\n  - *b\n  - &s x\n  - *s\n",
            "stages:\n  a: {run: echo, inptus: {}}\n  b:\n    uses: nope\n    with: {x: [1, 2, {y: z}]}\n",
        ];
        for doc in docs {
            let value: yaml_serde::Value = yaml_serde::from_str(doc).unwrap();
            let mut all = Vec::new();
            paths(&value, YPath::root(), &mut all);
            let index = Index::build(doc);
            for p in all {
                if !matches!(p.segs.last(), Some(Seg::Key(_))) && p.key {
                    continue;
                }
                let Some(want) = replay(doc, &p) else {
                    continue;
                };
                // The replay found keys by searching the text backwards from their value, and
                // fell back to the value's position for a key without a `:`, where the index has
                // the key's own.
                let line = doc.lines().nth(want.line - 1).unwrap();
                let text: String = line.chars().skip(want.column - 1).collect();
                let fell_back = match p.segs.last() {
                    Some(Seg::Key(name)) if p.key => !text
                        .trim_start_matches(['"', '\'', '?', ' '])
                        .starts_with(name.as_str()),
                    _ => false,
                };
                if !fell_back {
                    assert_eq!(index.locate(&p), Some(want), "{p:?} in {doc:?}");
                }
            }
        }
    }

    /// Locates `path` in `source`; `None` when the path is empty or not found.
    fn replay(source: &str, path: &YPath) -> Option<Location> {
        if path.segs.is_empty() {
            return None;
        }
        let de = yaml_serde::Deserializer::from_str(source);
        let err = Walk { segs: &path.segs }.deserialize(de).err()?;
        let loc = err.location()?;
        let value = Location {
            line: loc.line(),
            column: loc.column(),
        };
        if !path.key {
            return Some(value);
        }
        // Errors raised inside a key carry the previous event's position, so find the key's text
        // by searching back from its value instead.
        let Some(Seg::Key(name)) = path.segs.last() else {
            return Some(value);
        };
        find_key_before(source, name, value).or(Some(value))
    }

    fn find_key_before(source: &str, key: &str, value: Location) -> Option<Location> {
        let lines: Vec<&str> = source.lines().collect();
        let last = value.line.min(lines.len());
        for line_no in (1..=last).rev() {
            let text = lines[line_no - 1];
            let limit = if line_no == value.line {
                // Column is in characters; clamp to a char boundary.
                text.char_indices()
                    .nth(value.column.saturating_sub(1))
                    .map(|(i, _)| i)
                    .unwrap_or(text.len())
            } else {
                text.len()
            };
            let hay = &text[..limit];
            for candidate in [
                format!("{key}:"),
                format!("\"{key}\":"),
                format!("'{key}':"),
            ] {
                if let Some(pos) = hay.rfind(&candidate) {
                    let before_ok = pos == 0
                        || matches!(hay.as_bytes()[pos - 1], b' ' | b'{' | b',' | b'\t' | b'-');
                    if before_ok {
                        let column = hay[..pos].chars().count() + 1;
                        return Some(Location {
                            line: line_no,
                            column,
                        });
                    }
                }
            }
        }
        None
    }

    struct Walk<'a> {
        segs: &'a [Seg],
    }

    struct Here;

    const HERE: &str = "sluice: position asked";

    impl<'de> Visitor<'de> for Here {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("anything")
        }
        fn visit_map<A: MapAccess<'de>>(self, _m: A) -> Result<(), A::Error> {
            Err(de::Error::custom(HERE))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, _m: A) -> Result<(), A::Error> {
            Err(de::Error::custom(HERE))
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
            Err(E::custom(HERE))
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
            Err(E::custom(HERE))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
            Err(E::custom(HERE))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
            Err(E::custom(HERE))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
            Err(E::custom(HERE))
        }
        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            Err(E::custom(HERE))
        }
        fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
            Err(de::Error::custom(HERE))
        }
    }

    struct KeyIs<'a>(&'a str);

    impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
        type Value = bool;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
            let v = yaml_serde::Value::deserialize(d)?;
            Ok(match v {
                yaml_serde::Value::String(s) => s == self.0,
                other => yaml_serde::to_string(&other)
                    .map(|s| s.trim() == self.0)
                    .unwrap_or(false),
            })
        }
    }

    impl<'de> DeserializeSeed<'de> for Walk<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            if self.segs.is_empty() {
                d.deserialize_any(Here)
            } else {
                d.deserialize_any(self)
            }
        }
    }

    impl<'de> Visitor<'de> for Walk<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a mapping or sequence")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
            let Seg::Key(want) = &self.segs[0] else {
                return Ok(());
            };
            while let Some(hit) = m.next_key_seed(KeyIs(want))? {
                if hit {
                    return m.next_value_seed(Walk {
                        segs: &self.segs[1..],
                    });
                }
                m.next_value::<IgnoredAny>()?;
            }
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
            let Seg::Index(want) = self.segs[0] else {
                return Ok(());
            };
            let mut i = 0;
            loop {
                if i == want {
                    return s
                        .next_element_seed(Walk {
                            segs: &self.segs[1..],
                        })
                        .map(|_| ());
                }
                if s.next_element::<IgnoredAny>()?.is_none() {
                    return Ok(());
                }
                i += 1;
            }
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            Ok(())
        }
    }
}
