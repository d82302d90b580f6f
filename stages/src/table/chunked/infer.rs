//! Column type inference, value by value, as arrow-csv's `infer_schema` does it: fast checks on
//! ASCII bytes for the common values ([`plain_number`], [`classify`]), arrow-csv's own patterns
//! for the others, and the type bits packed per column ([`data_type`], [`Kind`]).

use arrow::datatypes::{DataType, TimeUnit};
use regex::RegexSet;
use std::sync::LazyLock;

/// arrow-csv's inference patterns, in its order (`arrow_csv::reader::REGEX_SET`), for the values
/// the fast checks below do not settle.
static PATTERNS: LazyLock<RegexSet> = LazyLock::new(|| {
    RegexSet::new([
        r"(?i)^(true)$|^(false)$(?-i)",
        r"^[+-]?(\d+)$",
        r"^[+-]?((\d*\.\d+|\d+\.\d*)([eE][-+]?\d+)?|\d+([eE][-+]?\d+))$",
        r"^\d{4}-\d\d-\d\d$",
        r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[^\d\.].*)?$",
        r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\.\d{1,3}(?:[^\d].*)?$",
        r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\.\d{1,6}(?:[^\d].*)?$",
        r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\.\d{1,9}(?:[^\d].*)?$",
    ])
    .expect("the patterns compile")
});

const BOOLEAN: u16 = 1;
const INTEGER: u16 = 1 << 1;
const FLOAT: u16 = 1 << 2;
pub(super) const UTF8: u16 = 1 << 8;

/// The set of types a column's values have looked like, as arrow-csv's `InferredDataType`
/// packs it; `UTF8` absorbs everything.
pub(super) fn data_type(packed: u16) -> DataType {
    match packed {
        0 => DataType::Null,
        1 => DataType::Boolean,
        2 => DataType::Int64,
        4 | 6 => DataType::Float64,
        b if b != 0 && (b & !0b11111000) == 0 => match b.leading_zeros() {
            8 => DataType::Timestamp(TimeUnit::Nanosecond, None),
            9 => DataType::Timestamp(TimeUnit::Microsecond, None),
            10 => DataType::Timestamp(TimeUnit::Millisecond, None),
            11 => DataType::Timestamp(TimeUnit::Second, None),
            _ => DataType::Date32,
        },
        _ => DataType::Utf8,
    }
}

/// `^[+-]?[0-9]+$` on ASCII bytes.
#[inline]
fn is_integer(b: &[u8]) -> bool {
    let digits = match b.first() {
        Some(b'+' | b'-') => &b[1..],
        _ => b,
    };
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

/// arrow-csv's decimal pattern on ASCII bytes:
/// `^[+-]?((\d*\.\d+|\d+\.\d*)([eE][-+]?\d+)?|\d+([eE][-+]?\d+))$`.
#[inline]
fn is_decimal(b: &[u8]) -> bool {
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    let whole = digits(&mut i);
    let point = i < b.len() && b[i] == b'.';
    if point {
        i += 1;
        if whole + digits(&mut i) == 0 {
            return false;
        }
    } else if whole == 0 {
        return false;
    }
    let mut exponent = false;
    if i < b.len() && matches!(b[i], b'e' | b'E') {
        i += 1;
        if i < b.len() && matches!(b[i], b'+' | b'-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
        exponent = true;
    }
    i == b.len() && (point || exponent)
}

/// The type bit of one non-empty value, as arrow-csv's `InferredDataType::update` sets it.
#[inline]
pub(super) fn classify(value: &str) -> u16 {
    let b = value.as_bytes();
    if b.first() == Some(&b'"') {
        return UTF8;
    }
    if b.is_ascii() {
        // Exact for ASCII; anything else goes through the patterns themselves.
        if is_integer(b) {
            return if b.len() >= 19 && value.parse::<i64>().is_err() {
                UTF8
            } else {
                INTEGER
            };
        }
        if is_decimal(b) {
            return FLOAT;
        }
        if b.eq_ignore_ascii_case(b"true") || b.eq_ignore_ascii_case(b"false") {
            return BOOLEAN;
        }
    }
    slow_classify(value)
}

fn slow_classify(value: &str) -> u16 {
    if let Some(m) = PATTERNS.matches(value).into_iter().next() {
        if m == 1 && value.len() >= 19 && value.parse::<i64>().is_err() {
            UTF8
        } else {
            1 << m
        }
    } else if matches!(value, "NaN" | "nan" | "inf" | "-inf") {
        FLOAT
    } else {
        UTF8
    }
}

/// A number written plainly, the way most numeric CSV columns are: an optional `-`, then at
/// most 15 digits, with a `.` between two of them or none; with the type bit [`classify`] gives
/// it. Anything else is `None` and goes the general way.
///
/// Exact: the digits make an integer below 2^53 and the `.` a power of ten up to 10^14, both
/// exact as `f64`, so one division rounds correctly, as arrow's parser (correctly rounded
/// too) does. Scanning once here replaces the integer check, the decimal check and the parse.
#[inline]
pub(super) fn plain_number(b: &[u8]) -> Option<(f64, u16)> {
    let (negative, digits) = match b.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, b),
    };
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    let (mut mantissa, mut count, mut point) = (0u64, 0usize, None);
    for (i, &c) in digits.iter().enumerate() {
        match c {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(c - b'0');
                count += 1;
            }
            b'.' if point.is_none() => point = Some(i),
            _ => return None,
        }
    }
    if count > 15 {
        return None;
    }
    let (x, bit) = match point {
        None => (mantissa as f64, INTEGER),
        // `1.` and `.5` are decimals too, but left to the general way.
        Some(i) if i == 0 || i == digits.len() - 1 => return None,
        Some(i) => (mantissa as f64 / POWERS_OF_TEN[digits.len() - 1 - i], FLOAT),
    };
    Some((if negative { -x } else { x }, bit))
}

const POWERS_OF_TEN: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// What [`data_type`] of a packed set of types is, for the types decoded during the first pass;
/// looked up per value, so without building a `DataType` each time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Int,
    Float,
    Text,
    Other,
}

impl Kind {
    #[inline]
    pub(super) fn of(packed: u16) -> Kind {
        static KINDS: LazyLock<Vec<Kind>> = LazyLock::new(|| {
            (0..=(UTF8 | (UTF8 - 1)))
                .map(|p| match data_type(p) {
                    DataType::Int64 => Kind::Int,
                    DataType::Float64 => Kind::Float,
                    DataType::Utf8 => Kind::Text,
                    _ => Kind::Other,
                })
                .collect()
        });
        KINDS
            .get(usize::from(packed))
            .copied()
            .unwrap_or(Kind::Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::compute::kernels::cast_utils::Parser;
    use arrow::datatypes::Float64Type;

    #[test]
    fn kinds_agree_with_data_types() {
        for packed in 0..=(UTF8 | (UTF8 - 1)) {
            let want = match data_type(packed) {
                DataType::Int64 => Kind::Int,
                DataType::Float64 => Kind::Float,
                DataType::Utf8 => Kind::Text,
                _ => Kind::Other,
            };
            assert_eq!(Kind::of(packed), want, "{packed:#b}");
        }
        assert_eq!(Kind::of(UTF8 | INTEGER), Kind::Text);
        assert_eq!(Kind::of(INTEGER | FLOAT), Kind::Float);
    }

    #[test]
    fn plain_numbers_are_what_arrow_parses_and_classifies() {
        let mut samples: Vec<String> = [
            "0",
            "-0",
            "0.0",
            "-0.0",
            "1",
            "-1",
            "12.5",
            "0.1",
            "0.3",
            "-50.1234",
            "007",
            "1.",
            ".5",
            "-",
            ".",
            "1.2.3",
            "+1",
            "1e5",
            "12a",
            "",
            "-.5",
            "123456789012345",
            "1234567890123456",
            "12345678.9012345",
            "1234567890.12345",
            "0.000000000000001",
            "999999999999999",
            "9999999999999.99",
            "4503599627370497",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Random decimals like the benchmark's: 1 to 15 digits, the point anywhere inside.
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let digits = 1 + (seed % 15) as usize;
            let mut s: String = (0..digits)
                .map(|i| char::from(b'0' + ((seed >> (4 + 3 * i)) % 10) as u8))
                .collect();
            let point = (seed >> 60) as usize % (digits + 1);
            if point > 0 && point < digits {
                s.insert(point, '.');
            }
            if seed & 1 == 1 {
                s.insert(0, '-');
            }
            samples.push(s);
        }
        let mut fast = 0;
        for s in &samples {
            if let Some((x, bit)) = plain_number(s.as_bytes()) {
                fast += 1;
                let want = Float64Type::parse(s).unwrap();
                assert_eq!(x.to_bits(), want.to_bits(), "{s:?}");
                assert_eq!(bit, classify(s), "{s:?}");
            }
        }
        assert!(fast > 15_000, "{fast}");
        for s in [
            "1.",
            ".5",
            "+1",
            "1e5",
            "1234567890123456",
            "-",
            "",
            "1.2.3",
        ] {
            assert_eq!(plain_number(s.as_bytes()), None, "{s:?}");
        }
    }

    #[test]
    fn fast_checks_agree_with_the_patterns() {
        let samples = [
            "1",
            "-1",
            "+1",
            "12a",
            "1.",
            ".5",
            ".",
            "-.5e3",
            "1e5",
            "1E+5",
            "1e",
            "e5",
            "1.5e-",
            "+",
            "-",
            "1.2.3",
            "true",
            "FALSE",
            "True",
            "tru",
            "0x1",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "00000000000000000001",
            "1 ",
            " 1",
            "NaN",
            "inf",
            "-inf",
            "nan",
            "2024-01-02",
            "2024-01-02 03:04:05",
            "2024-01-02T03:04:05.123",
            "2024-01-02T03:04:05.123456",
            "abc",
            "\"x",
            "1,5",
        ];
        for s in samples {
            assert_eq!(classify(s), slow_classify(s), "{s:?}");
        }
    }
}
