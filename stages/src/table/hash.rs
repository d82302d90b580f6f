//! The fast, non-cryptographic hash for the data stages' per-row work: row hashes for
//! duplicates, and looking up category texts. The standard library's SipHash resists flooding by
//! crafted keys, which nothing here needs, at several times the cost per value; profiles of
//! `normalize` showed it among the top entries. It is `foldhash` with a fixed seed (so a run's
//! hashes do not vary, though no output depends on them): measured against the hand hash it
//! replaced (`stages/examples/hash_cost.rs`), as fast for 8-byte values and twice as fast for
//! short texts and map lookups.

use foldhash::fast::FixedState;
use std::hash::{BuildHasher, Hasher};

/// Folds `x` into the hash `h`.
#[inline]
pub(crate) fn mix(h: u64, x: u64) -> u64 {
    FixedState::with_seed(h).hash_one(x)
}

/// The hash of a byte string, its length included.
#[inline]
pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = FixedState::default().build_hasher();
    h.write(bytes);
    h.finish()
}

/// Builds the hashers of maps keyed by text: `HashMap<&str, V, TextHash>`.
pub(crate) type TextHash = FixedState;

/// Codes for texts, in order of first appearance: the same text always gets the same code.
/// A handful of distinct texts (class labels, most categorical columns) are found by comparing
/// with each, which costs less than hashing; beyond [`Lookup::FEW`] a hash map takes over.
#[derive(Default)]
pub(crate) struct Lookup<'a> {
    names: Vec<&'a str>,
    index: std::collections::HashMap<&'a str, u32, TextHash>,
}

impl<'a> Lookup<'a> {
    const FEW: usize = 8;

    /// The code of `text`, a new one if it was not seen before.
    pub(crate) fn code(&mut self, text: &'a str) -> u32 {
        if self.names.len() <= Self::FEW {
            if let Some(code) = self.names.iter().position(|&n| n == text) {
                return code as u32;
            }
            if self.names.len() == Self::FEW {
                self.index = self.names.iter().copied().zip(0..).collect();
            }
        } else if let Some(&code) = self.index.get(text) {
            return code;
        }
        let code = self.names.len() as u32;
        self.names.push(text);
        if self.names.len() > Self::FEW {
            self.index.insert(text, code);
        }
        code
    }

    /// The texts seen, each at its code.
    pub(crate) fn into_names(self) -> Vec<String> {
        self.names.into_iter().map(String::from).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn texts_hash_by_content_and_length() {
        assert_eq!(hash_bytes(b"abc"), hash_bytes(&b"xabc"[1..]));
        assert_ne!(hash_bytes(b""), hash_bytes(b"\0"));
        assert_ne!(hash_bytes(b"abcdefgh"), hash_bytes(b"abcdefgh\0"));
        let map: HashMap<&str, usize, TextHash> =
            ["red", "green", "blue"].into_iter().zip(0..).collect();
        assert_eq!(map.get("green"), Some(&1));
        assert_eq!(map.get("gree"), None);
    }

    #[test]
    fn lookups_give_codes_in_order_of_first_appearance_past_the_few() {
        let texts: Vec<String> = (0..40).map(|i| format!("t{}", (i * 7) % 20)).collect();
        let mut lookup = Lookup::default();
        let codes: Vec<u32> = texts.iter().map(|t| lookup.code(t)).collect();
        let names = lookup.into_names();
        // Every text's name is itself, and first appearances count up from 0.
        for (t, &c) in texts.iter().zip(&codes) {
            assert_eq!(&names[c as usize], t);
        }
        assert_eq!(names.len(), 20);
        assert_eq!(&codes[..3], [0, 1, 2]);
        assert_eq!(codes[20], codes[0]);
    }
}
