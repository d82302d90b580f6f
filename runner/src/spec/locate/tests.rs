//! The index against a replay that deserializes the document once per path, and worked examples.

use super::*;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;

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
                let p = here.k(&crate::spec::yaml::key_text(k));
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
