//! An input's `data` as JSON: [`decode_json`] walks the raw JSON text (flat, or nested as the
//! shape) with a serde visitor ([`Leaves`]) that appends each leaf straight into one typed
//! vector, never a `serde_json::Value` per element.

use super::shorten;
use super::tensor::{ByteStrings, DataType, Elements};
use serde::de::{self, DeserializeSeed, IgnoredAny, SeqAccess, Visitor};
use serde::Deserializer;
use serde_json::value::RawValue;
use std::fmt;

/// Decodes `data` (flat, or nested as the shape) straight into typed elements.
pub(super) fn decode_json(
    datatype: DataType,
    count: usize,
    data: &RawValue,
) -> Result<Elements, String> {
    let text = data.get();
    // Every element takes at least one byte of JSON text: a larger count cannot be right, and
    // is refused before anything is reserved for it.
    if count > text.len() {
        return Err(format!(
            "the shape says {count} elements, but `data` is {} bytes of JSON, too short to hold them",
            text.len()
        ));
    }
    let mut sink = match datatype {
        DataType::U8 => Elements::U8(Vec::with_capacity(count)),
        DataType::Bytes => Elements::Bytes(ByteStrings::with_capacity(count, 0)),
        _ => Elements::Numbers(Vec::with_capacity(count)),
    };
    let mut de = serde_json::Deserializer::from_str(text);
    Leaves {
        datatype,
        count,
        sink: &mut sink,
    }
    .deserialize(&mut de)
    .map_err(|e| e.to_string())?;
    if sink.len() != count {
        return Err(format!(
            "the shape says {count} elements, but `data` holds {}",
            sink.len()
        ));
    }
    Ok(sink)
}

/// Walks nested JSON arrays and appends each leaf to `sink` as `datatype` says; more leaves
/// than `count` stop the walk.
struct Leaves<'s> {
    datatype: DataType,
    count: usize,
    sink: &'s mut Elements,
}

impl Leaves<'_> {
    fn wrong<E: de::Error>(&self, shown: impl fmt::Display) -> E {
        E::custom(format!("{shown} is not a {} value", self.datatype.name()))
    }

    fn room<E: de::Error>(&self) -> Result<(), E> {
        if self.sink.len() >= self.count {
            return Err(E::custom(format!(
                "the shape says {} elements, but `data` holds more",
                self.count
            )));
        }
        Ok(())
    }

    fn number<E: de::Error>(&mut self, x: f64) -> Result<(), E> {
        self.room()?;
        match self.sink {
            Elements::Numbers(v) => v.push(x),
            _ => unreachable!("numbers go to a numbers sink"),
        }
        Ok(())
    }

    fn integer<E: de::Error>(&mut self, n: i128) -> Result<(), E> {
        self.room()?;
        let (lo, hi) = int_range(self.datatype);
        if !(lo..=hi).contains(&n) {
            return Err(self.wrong(n));
        }
        match self.sink {
            Elements::U8(v) => v.push(n as u8),
            Elements::Numbers(v) => v.push(n as f64),
            Elements::Bytes(_) => unreachable!("integers are never BYTES"),
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Leaves<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Leaves<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} values, in arrays", self.datatype.name())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (datatype, count) = (self.datatype, self.count);
        while seq
            .next_element_seed(Leaves {
                datatype,
                count,
                sink: &mut *self.sink,
            })?
            .is_some()
        {}
        Ok(())
    }

    /// `null` in a float tensor is a missing value (NaN), as in the binary form.
    fn visit_unit<E: de::Error>(mut self) -> Result<(), E> {
        match self.datatype {
            DataType::F32 | DataType::F64 => self.number(f64::NAN),
            _ => Err(self.wrong("null")),
        }
    }

    fn visit_bool<E: de::Error>(mut self, b: bool) -> Result<(), E> {
        match self.datatype {
            DataType::Bool => self.number(f64::from(u8::from(b))),
            _ => Err(self.wrong(b)),
        }
    }

    fn visit_u64<E: de::Error>(mut self, n: u64) -> Result<(), E> {
        match self.datatype {
            DataType::F32 | DataType::F64 => self.visit_f64(n as f64),
            DataType::Bool | DataType::Bytes => Err(self.wrong(n)),
            _ => self.integer(i128::from(n)),
        }
    }

    fn visit_i64<E: de::Error>(mut self, n: i64) -> Result<(), E> {
        match self.datatype {
            DataType::F32 | DataType::F64 => self.visit_f64(n as f64),
            DataType::Bool | DataType::Bytes => Err(self.wrong(n)),
            _ => self.integer(i128::from(n)),
        }
    }

    fn visit_f64<E: de::Error>(mut self, x: f64) -> Result<(), E> {
        match self.datatype {
            // A JSON number given for FP32 is what the client would have sent as float32.
            DataType::F32 => {
                let cast = x as f32;
                if cast.is_finite() {
                    self.number(f64::from(cast))
                } else {
                    let shown = serde_json::Value::from(x);
                    Err(E::custom(format!("{shown} is out of the range of FP32")))
                }
            }
            DataType::F64 => self.number(x),
            _ => Err(self.wrong(serde_json::Value::from(x))),
        }
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        match self.datatype {
            DataType::Bytes => {
                self.room()?;
                match self.sink {
                    Elements::Bytes(v) => v.push(s.as_bytes()),
                    _ => unreachable!("strings go to a BYTES sink"),
                }
                Ok(())
            }
            _ => Err(self.wrong(serde_json::Value::from(shorten(s)))),
        }
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Consumed so that the error is this one, not a parse error after it.
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Err(self.wrong("an object"))
    }
}

fn int_range(t: DataType) -> (i128, i128) {
    match t {
        DataType::I8 => (i8::MIN.into(), i8::MAX.into()),
        DataType::I16 => (i16::MIN.into(), i16::MAX.into()),
        DataType::I32 => (i32::MIN.into(), i32::MAX.into()),
        DataType::I64 => (i64::MIN.into(), i64::MAX.into()),
        DataType::U8 => (0, u8::MAX.into()),
        DataType::U16 => (0, u16::MAX.into()),
        DataType::U32 => (0, u32::MAX.into()),
        _ => (0, u64::MAX.into()),
    }
}
