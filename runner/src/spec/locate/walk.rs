//! `Index::build`: the one walk over a YAML document that asks each node for its position
//! before reading it (the technique is described in `locate/mod.rs`).

use super::{Index, Kids, Pos, Seg};
use crate::diag::Location;
use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};
use std::collections::HashMap;
use std::fmt;

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
    /// The text of the key just read, set only by `Key` as it fails on purpose to report the
    /// key's position: the sign that a failure was the question, not a real error.
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
                    // `Key` records the key's text just before failing on purpose, so a key
                    // recorded tells the question from a real error.
                    let Some(key) = st.key.take() else {
                        return Err(e);
                    };
                    let Some(at) = located(&e) else {
                        return Err(e);
                    };
                    st.last = st.last.max(Some((at.line, at.column)));
                    (Some(at), Some(key))
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
        self.st.key = Some(crate::spec::yaml::key_text(&key));
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
