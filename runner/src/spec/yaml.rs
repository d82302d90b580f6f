//! `read_yaml`: YAML text to a `yaml_serde::Value` within bounds, so that nothing a pipeline file
//! (or a `--set` value) holds can exhaust the stack or memory.
//!
//! yaml_serde already refuses more than 128 nested collections and limits alias jumps to a
//! hundred per event, but a hundred jumps per event still let a one-megabyte file with two
//! aliased lists expand to billions of values. So the value is built here, by a visitor that
//! counts nesting and values as it goes, stops at [`MAX_DEPTH`] and [`MAX_VALUES`] with the
//! position where the limit was crossed, and turns whole numbers that do not fit in 64 bits
//! into a problem at their path instead of yaml_serde's "invalid type: integer ... as u128".

use super::locate::{Index, Seg};
use crate::diag::Location;
use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};
use std::fmt;
use yaml_serde::{Mapping, Number, Value};

/// The deepest nesting of mappings and lists a pipeline file may use. Real pipelines nest five
/// or six levels; everything that walks a value recursively (substitution, hashing, the
/// stage kinds' checks) stays far from the stack's end at this depth.
pub const MAX_DEPTH: usize = 64;

/// The most values (scalars, mappings and lists, counted after aliases are expanded) one
/// document may hold: room for a pipeline of 100,000 stages, not for an alias bomb.
pub const MAX_VALUES: usize = 2_000_000;

/// The largest pipeline file read, in bytes. yaml_serde holds every event of a document in
/// memory before building the value, about a hundred bytes per event.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// How deep `[` and `{` may nest in the text before the YAML parser sees it. libyaml keeps a
/// candidate key per open bracket and looks at up to 1,024 of them for every token, so a file
/// of nothing but `[` takes minutes to read; yaml_serde refuses the value beyond 128 levels
/// anyway. Brackets inside strings and comments are counted too, which errs on the safe side:
/// no pipeline leaves 128 of them open.
const MAX_BRACKETS: usize = 128;

const DEPTH_HELP: &str =
    "a pipeline needs only a few levels of mappings and lists; flatten this value";

/// Where the text first opens more than [`MAX_BRACKETS`] brackets without closing them.
fn brackets_too_deep(source: &str) -> Option<Location> {
    let (mut depth, mut line, mut column) = (0usize, 1, 0);
    for c in source.chars() {
        column += 1;
        match c {
            '\n' => {
                line += 1;
                column = 0;
            }
            '[' | '{' => {
                depth += 1;
                if depth > MAX_BRACKETS {
                    return Some(Location { line, column });
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// Why a document cannot be used at all; the first such problem stops reading.
#[derive(Debug, Clone)]
pub struct Fatal {
    pub message: String,
    pub location: Option<Location>,
    pub help: Option<String>,
}

/// A whole number too large for 64 bits, found at `path`. It stands as null in the value, and
/// problems that other checks find at `path` are not reported: they would only repeat this one.
#[derive(Debug, Clone)]
pub struct TooLarge {
    pub path: Vec<Seg>,
    pub text: String,
}

impl TooLarge {
    pub fn message(&self) -> String {
        format!(
            "the number `{}` is too large: whole numbers go from {} to {}",
            self.text,
            i64::MIN,
            u64::MAX
        )
    }

    pub fn help(&self) -> String {
        format!("if it is meant as text, quote it: `\"{}\"`", self.text)
    }
}

/// Reads one YAML document. Numbers too large for 64 bits are returned beside the value.
pub fn read_yaml(source: &str) -> Result<(Value, Vec<TooLarge>), Fatal> {
    if let Some(location) = brackets_too_deep(source) {
        return Err(Fatal {
            message: format!(
                "values nest deeper than {MAX_DEPTH} levels (`[` and `{{` open more than {MAX_BRACKETS} deep)"
            ),
            location: Some(location),
            help: Some(DEPTH_HELP.to_string()),
        });
    }
    let mut state = State::default();
    let de = yaml_serde::Deserializer::from_str(source);
    let root = Node {
        st: &mut state,
        taken: None,
    };
    match root.deserialize(de) {
        Ok(v) => Ok((v, state.too_large)),
        Err(e) => Err(fatal(&e, &state, source)),
    }
}

/// Why the visitor stopped reading; yaml_serde puts the position on the error it raised.
#[derive(Debug, Clone)]
enum Stop {
    Deep,
    Values,
    Tag(String),
    DuplicateKey(String),
}

fn fatal(e: &yaml_serde::Error, state: &State, source: &str) -> Fatal {
    let msg = e.to_string();
    // libyaml's reader (control characters, bad encoding) gives no line and column, only
    // " at position N", a byte offset; yaml_serde then reports the start of the file.
    let offset = msg.find(" at position ").and_then(|i| {
        msg[i + " at position ".len()..]
            .split(' ')
            .next()?
            .parse()
            .ok()
    });
    let mut location = match offset {
        Some(offset) => Some(location_of(source, offset)),
        None => e.location().map(|l| Location {
            line: l.line(),
            column: l.column(),
        }),
    };
    if state.stop.is_none() && msg.contains("more than one document") {
        return Fatal {
            message: "the file holds more than one YAML document".to_string(),
            location: second_document(source),
            help: Some("a pipeline is one document: remove the `---` line and merge the stages, or keep the second pipeline in its own file".to_string()),
        };
    }
    let too_many = || {
        (
            format!("the file expands to more than {MAX_VALUES} values"),
            Some("aliases (`*name`) repeat the value they name; a pipeline this large is not meant to be written by hand or by aliases".to_string()),
        )
    };
    let (message, help) = match &state.stop {
        Some(Stop::Deep) => (
            format!("values nest deeper than {MAX_DEPTH} levels"),
            Some(DEPTH_HELP.to_string()),
        ),
        Some(Stop::Tag(tag)) => (
            format!("YAML tag `!{tag}` is not supported"),
            Some("remove the tag; quote the value to make it text".to_string()),
        ),
        Some(Stop::DuplicateKey(key)) => (
            format!("duplicate key `{key}`"),
            Some("a key may appear once in a mapping; remove or rename one of them".to_string()),
        ),
        // yaml_serde's own limits, in case they are met before ours.
        None if msg.contains("recursion limit exceeded") => (
            format!("values nest deeper than {MAX_DEPTH} levels"),
            Some(DEPTH_HELP.to_string()),
        ),
        Some(Stop::Values) => {
            location = alias_being_expanded(source, state).or(location);
            too_many()
        }
        None if msg.contains("repetition limit exceeded") => {
            location = alias_being_expanded(source, state).or(location);
            too_many()
        }
        None => {
            // yaml_serde appends " at line X column Y" (libyaml's reader " at position N"); the
            // location is rendered separately.
            let msg = match msg.find(" at line ").or_else(|| msg.find(" at position ")) {
                Some(i) => msg[..i].to_string(),
                None => msg,
            };
            let help = msg.contains("control characters").then(|| {
                "remove the character; in a double-quoted string, write it as an escape (`\\t`, `\\x07`)".to_string()
            });
            (format!("invalid YAML: {msg}"), help)
        }
    };
    Fatal {
        message,
        location,
        help,
    }
}

/// yaml_serde names no position for its own alias limit, and for ours the position of a node
/// copied by an alias, which is the anchored one; the alias that was being expanded is what the
/// user wrote and can change.
fn alias_being_expanded(source: &str, state: &State) -> Option<Location> {
    let at = state.failed_at.as_deref().unwrap_or_default();
    Index::build(source).locate_before_alias(at)
}

/// Where the second document starts: the first `---` line after some content (yaml_serde
/// refuses a second document without saying where it is).
fn second_document(source: &str) -> Option<Location> {
    let mut content = false;
    for (i, line) in source.lines().enumerate() {
        let body = line.trim();
        let marker =
            line.starts_with("---") && line[3..].chars().next().is_none_or(char::is_whitespace);
        if marker && content {
            return Some(Location {
                line: i + 1,
                column: 1,
            });
        }
        content |= !marker && !body.is_empty() && !body.starts_with('#');
    }
    None
}

/// The line and column (in characters) of byte `offset` of `source`.
pub(crate) fn location_of(source: &str, offset: usize) -> Location {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Location {
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
    }
}

#[derive(Default)]
struct State {
    depth: usize,
    values: usize,
    path: Vec<Seg>,
    too_large: Vec<TooLarge>,
    stop: Option<Stop>,
    /// The path being read when reading failed, the innermost one.
    failed_at: Option<Vec<Seg>>,
}

impl State {
    /// Notes where reading failed, the innermost path first (the outer levels see the error as it
    /// passes through them).
    fn failed<T, E>(&mut self, r: Result<T, E>) -> Result<T, E> {
        if r.is_err() && self.failed_at.is_none() {
            self.failed_at = Some(self.path.clone());
        }
        r
    }

    /// Ends reading; the error only carries the position, `stop` says why.
    fn stop<E: de::Error>(&mut self, why: Stop) -> E {
        self.stop = Some(why);
        E::custom("sluice stopped reading")
    }

    fn count<E: de::Error>(&mut self) -> Result<(), E> {
        self.values += 1;
        if self.values > MAX_VALUES {
            return Err(self.stop(Stop::Values));
        }
        Ok(())
    }

    fn deeper<E: de::Error>(&mut self) -> Result<(), E> {
        self.count()?;
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.stop(Stop::Deep));
        }
        Ok(())
    }

    /// A number too large for 64 bits stands as null; the problem is reported at its path.
    fn too_large(&mut self, text: String) -> Value {
        self.too_large.push(TooLarge {
            path: self.path.clone(),
            text,
        });
        Value::Null
    }
}

/// Reads one value. As a mapping key, `taken` holds the keys before it, so that a duplicate is
/// refused while its own position is at hand.
struct Node<'a> {
    st: &'a mut State,
    taken: Option<&'a Mapping>,
}

impl Node<'_> {
    fn scalar<E: de::Error>(self, v: Value) -> Result<Value, E> {
        self.st.count()?;
        if self.taken.is_some_and(|m| m.contains_key(&v)) {
            return Err(self.st.stop(Stop::DuplicateKey(key_text(&v))));
        }
        Ok(v)
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.scalar(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.scalar(Value::Number(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.scalar(Value::Number(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        match i64::try_from(v) {
            Ok(v) => self.visit_i64(v),
            Err(_) => {
                let null = self.st.too_large(v.to_string());
                self.scalar(null)
            }
        }
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => {
                let null = self.st.too_large(v.to_string());
                self.scalar(null)
            }
        }
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.scalar(Value::Number(Number::from(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.scalar(Value::String(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.scalar(Value::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.scalar(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let st = self.st;
        st.deeper()?;
        let mut items = Vec::new();
        loop {
            st.path.push(Seg::Index(items.len()));
            let next = seq.next_element_seed(Node {
                st: &mut *st,
                taken: None,
            });
            let next = st.failed(next);
            st.path.pop();
            match next? {
                Some(v) => items.push(v),
                None => break,
            }
        }
        st.depth -= 1;
        Ok(Value::Sequence(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let st = self.st;
        st.deeper()?;
        let mut out = Mapping::new();
        loop {
            let key = map.next_key_seed(Node {
                st: &mut *st,
                taken: Some(&out),
            })?;
            let Some(key) = key else { break };
            st.path.push(Seg::Key(key_text(&key)));
            let value = map.next_value_seed(Node {
                st: &mut *st,
                taken: None,
            });
            let value = st.failed(value);
            st.path.pop();
            out.insert(key, value?);
        }
        st.depth -= 1;
        Ok(Value::Mapping(out))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        // Reading the tag's name consumes nothing, and the error ends reading anyway.
        let (tag, _contents): (String, _) = data.variant()?;
        Err(self.st.stop(Stop::Tag(tag)))
    }
}

/// The text a key contributes to a path, the way validation names it.
pub(crate) fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        other => yaml_serde::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fatal_of(src: &str) -> Fatal {
        read_yaml(src).expect_err("an error")
    }

    #[test]
    fn reads_what_yaml_serde_reads() {
        let src = "a: 1\nb: [x, 2.5, true, ~]\nc: {d: &x e, f: *x}\n";
        let (v, big) = read_yaml(src).unwrap();
        let direct: Value = yaml_serde::from_str(src).unwrap();
        assert_eq!(v, direct);
        assert!(big.is_empty());
    }

    #[test]
    fn deep_nesting_stops_at_the_limit() {
        let src = format!("a: {}{}", "[".repeat(100), "]".repeat(100));
        let f = fatal_of(&src);
        assert_eq!(f.message, "values nest deeper than 64 levels");
        assert_eq!(f.location.map(|l| (l.line, l.column)), Some((1, 67)));
        let src = format!("a: {}{}", "[".repeat(1_000_000), "]".repeat(1_000_000));
        let f = fatal_of(&src);
        assert_eq!(
            f.message,
            "values nest deeper than 64 levels (`[` and `{` open more than 128 deep)"
        );
        assert_eq!(f.location.map(|l| (l.line, l.column)), Some((1, 132)));
        let mut block = String::new();
        for i in 0..200 {
            block.push_str(&format!("{}k:\n", "  ".repeat(i)));
        }
        assert_eq!(
            fatal_of(&block).message,
            "values nest deeper than 64 levels"
        );
    }

    #[test]
    fn alias_bombs_stop_at_the_value_limit() {
        let mut src = String::from("a: &a [");
        src.push_str(&vec!["x"; 2000].join(","));
        src.push_str("]\nb: [");
        src.push_str(&vec!["*a"; 2000].join(","));
        src.push_str("]\n");
        let f = fatal_of(&src);
        assert_eq!(f.message, "the file expands to more than 2000000 values");
        let mut laughs = String::from("l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..10 {
            let p = i - 1;
            laughs.push_str(&format!(
                "l{i}: &l{i} [*l{p},*l{p},*l{p},*l{p},*l{p},*l{p},*l{p},*l{p},*l{p}]\n"
            ));
        }
        let f = fatal_of(&laughs);
        assert_eq!(f.message, "the file expands to more than 2000000 values");
        // Located at the list of aliases being expanded, not at what they copy.
        let line = f.location.expect("a location").line;
        assert!(laughs.lines().nth(line - 1).unwrap().contains("[*l"));
    }

    #[test]
    fn numbers_beyond_64_bits_are_located_problems() {
        let src =
            "a: 18446744073709551615\nb: {c: 18446744073709551616}\nd: [-9223372036854775809]\n";
        let (v, big) = read_yaml(src).unwrap();
        assert_eq!(v["a"].as_u64(), Some(u64::MAX));
        assert_eq!(v["b"]["c"], Value::Null);
        let found: Vec<_> = big
            .iter()
            .map(|t| (t.text.as_str(), t.path.clone()))
            .collect();
        assert_eq!(
            found,
            [
                (
                    "18446744073709551616",
                    vec![Seg::Key("b".into()), Seg::Key("c".into())]
                ),
                (
                    "-9223372036854775809",
                    vec![Seg::Key("d".into()), Seg::Index(0)]
                ),
            ]
        );
        assert_eq!(
            big[0].message(),
            "the number `18446744073709551616` is too large: whole numbers go from -9223372036854775808 to 18446744073709551615"
        );
    }

    #[test]
    fn duplicate_keys_are_refused_where_they_repeat() {
        let f = fatal_of("stages:\n  a: {run: x}\n  b: {run: y}\n  a: {run: z}\n");
        assert_eq!(f.message, "duplicate key `a`");
        assert_eq!(f.location.map(|l| (l.line, l.column)), Some((4, 3)));
        let f = fatal_of("x: {1: a, 1: b}\n");
        assert_eq!(f.message, "duplicate key `1`");
    }

    #[test]
    fn tags_are_refused() {
        let f = fatal_of("a: !secret x\n");
        assert_eq!(f.message, "YAML tag `!secret` is not supported");
        assert_eq!(f.location.map(|l| (l.line, l.column)), Some((1, 4)));
        // Core tags are YAML's own and change only how a scalar is read.
        let (v, _) = read_yaml("a: !!str 12\n").unwrap();
        assert_eq!(v["a"], Value::String("12".into()));
    }

    #[test]
    fn control_characters_are_located_where_they_are() {
        let f = fatal_of("a: 1\nbé: \"x\u{7}y\"\n");
        assert_eq!(
            f.message,
            "invalid YAML: control characters are not allowed"
        );
        assert_eq!(f.location.map(|l| (l.line, l.column)), Some((2, 7)));
    }

    #[test]
    fn a_second_document_is_located() {
        let f = fatal_of("# c\n---\na: 1\n--- # two\nb: 2\n");
        assert_eq!(f.message, "the file holds more than one YAML document");
        assert_eq!(f.location.map(|l| (l.line, l.column)), Some((4, 1)));
    }

    /// `fatal` recognises yaml_serde's errors by their text; each text it looks for, straight
    /// from yaml_serde, so a release that rewords one fails here rather than in a user's message.
    #[test]
    fn yaml_serde_error_texts_are_the_ones_matched() {
        let text = |src: &str| {
            yaml_serde::from_str::<Value>(src)
                .expect_err("an error")
                .to_string()
        };
        assert!(text("a: 1\n---\nb: 2\n").contains("more than one document"));
        assert!(text(&"[".repeat(200)).contains("recursion limit exceeded"));
        let mut laughs = String::from("l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..10 {
            let p = i - 1;
            laughs.push_str(&format!(
                "l{i}: &l{i} [*l{p},*l{p},*l{p},*l{p},*l{p},*l{p},*l{p},*l{p},*l{p}]\n"
            ));
        }
        assert!(text(&laughs).contains("repetition limit exceeded"));
        let control = text("a: 1\nb: \"x\u{7}y\"\n");
        assert!(control.contains("control characters"), "{control}");
        assert!(control.contains(" at position 10"), "{control}");
        let syntax = text("a: [1\n");
        assert!(syntax.contains(" at line 2 column 1"), "{syntax}");
    }
}
