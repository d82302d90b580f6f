//! A fast, non-cryptographic hash for the data stages' per-row work: row hashes for duplicates,
//! and looking up category texts. The standard library's SipHash resists flooding by crafted
//! keys, which nothing here needs, at several times the cost per value; profiles of `normalize`
//! showed it among the top entries.

use std::hash::BuildHasherDefault;

const K: u64 = 0x9E37_79B9_7F4A_7C15;

/// Folds `x` into the hash `h` (a 128-bit multiply, folded).
pub(crate) fn mix(h: u64, x: u64) -> u64 {
    let m = u128::from(h ^ x) * u128::from(K);
    ((m >> 64) as u64) ^ (m as u64)
}

/// The hash of a byte string, its length included.
pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        h = mix(h, u64::from_le_bytes(c.try_into().expect("8 bytes")));
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    mix(h, u64::from_le_bytes(tail))
}

/// A `Hasher` over [`hash_bytes`], for maps keyed by text.
#[derive(Default)]
pub(crate) struct TextHasher(u64);

impl std::hash::Hasher for TextHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = mix(self.0, hash_bytes(bytes));
    }
}

/// Builds [`TextHasher`]s: `HashMap<&str, V, TextHash>`.
pub(crate) type TextHash = BuildHasherDefault<TextHasher>;

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
}
