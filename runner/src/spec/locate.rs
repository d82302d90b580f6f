//! Finds the line and column of a value (or a mapping key) in a YAML document, given its path.
//!
//! serde_yaml keeps no spans in `Value`, but it does attach the position of the event being
//! deserialized to any error raised there. So we walk the document with a `DeserializeSeed` that
//! follows the path and raises an error on arrival, and read the position off that error. It costs
//! a re-parse per located diagnostic, which only happens when the pipeline is invalid.

use crate::diag::Location;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
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

/// Locates `path` in `source`; `None` when the path is empty or not found.
pub fn locate(source: &str, path: &YPath) -> Option<Location> {
    if path.segs.is_empty() {
        return None;
    }
    let de = serde_yaml::Deserializer::from_str(source);
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

const HERE: &str = "located";

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
        let v = serde_yaml::Value::deserialize(d)?;
        Ok(match v {
            serde_yaml::Value::String(s) => s == self.0,
            other => serde_yaml::to_string(&other)
                .map(|s| s.trim() == self.0)
                .unwrap_or(false),
        })
    }
}

use serde::Deserialize;

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

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "name: x\nstages:\n  a:\n    run: echo hi\n    inputs: {t: foo.csv, u: bar}\n  b:\n    needs: [a, c]\n    run: |\n      echo\n";

    fn at(p: YPath) -> (usize, usize) {
        let l = locate(SRC, &p).unwrap();
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
    }
}
