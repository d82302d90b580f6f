//! The SIMD field scan of a [`plain`] chunk (no quotes, no carriage returns): [`Delimiters`]
//! finds every `,` and `\n` 64 bytes at a time, [`records_of`] cuts the records' fields at them.

/// A field of a chunk already checked to be UTF-8 as a whole.
///
/// Fields are cut at `,` and `\n`, ASCII bytes that never occur inside a multi-byte UTF-8
/// sequence, so every field of a valid chunk is valid; checking each again was a measurable
/// share of reading a file.
#[inline]
pub(super) fn field_str(value: &[u8]) -> &str {
    debug_assert!(std::str::from_utf8(value).is_ok());
    // SAFETY: callers pass fields of a buffer that `std::str::from_utf8` accepted, cut at ASCII
    // bytes (see above).
    unsafe { std::str::from_utf8_unchecked(value) }
}

/// Whether `bytes` can be split at every `,` and `\n`: no quotes, no carriage returns.
pub(super) fn plain(bytes: &[u8]) -> bool {
    memchr::memchr2(b'"', b'\r', bytes).is_none()
}

/// Calls `each` with the fields of every record of a [`plain`] chunk, the way `csv_core` splits
/// it: records end at `\n`, the last may lack one, empty lines are skipped. `None` when a record
/// does not have `width` fields, or when `each` says so.
pub(super) fn records_of<'a>(
    bytes: &'a [u8],
    width: usize,
    mut each: impl FnMut(&[&'a [u8]]) -> Option<()>,
) -> Option<()> {
    let mut row: Vec<&[u8]> = Vec::with_capacity(width);
    let mut start = 0;
    let mut line_start = 0;
    for end in Delimiters::new(bytes) {
        if bytes[end] == b'\n' && end == line_start {
            start = end + 1;
            line_start = start;
            continue;
        }
        if row.len() == width {
            return None;
        }
        row.push(&bytes[start..end]);
        start = end + 1;
        if bytes[end] == b'\n' {
            if row.len() != width {
                return None;
            }
            each(&row)?;
            row.clear();
            line_start = start;
        }
    }
    if start < bytes.len() {
        if row.len() == width {
            return None;
        }
        row.push(&bytes[start..]);
        if row.len() != width {
            return None;
        }
        each(&row)?;
    } else if !row.is_empty() {
        // The last record ended with a delimiter and no newline: its last field is empty.
        row.push(&bytes[start..]);
        if row.len() != width {
            return None;
        }
        each(&row)?;
    }
    Some(())
}

/// The offsets of every `,` and `\n` in a chunk, in order. Found 64 bytes at a time as a bit
/// mask: fields are short, and searching from one delimiter to the next (`memchr2_iter`) spent
/// more on starting each search than on searching, four times as long over this benchmark's
/// CSV.
struct Delimiters<'a> {
    bytes: &'a [u8],
    /// Where the next block starts.
    next: usize,
    /// Where the block of `mask` starts, and its delimiters not yet returned.
    base: usize,
    mask: u64,
}

impl<'a> Delimiters<'a> {
    #[inline]
    fn new(bytes: &'a [u8]) -> Delimiters<'a> {
        Delimiters {
            bytes,
            next: 0,
            base: 0,
            mask: 0,
        }
    }
}

impl Iterator for Delimiters<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        while self.mask == 0 {
            if self.next >= self.bytes.len() {
                return None;
            }
            let end = (self.next + 64).min(self.bytes.len());
            self.base = self.next;
            self.mask = delimiter_mask(&self.bytes[self.next..end]);
            self.next = end;
        }
        let offset = self.mask.trailing_zeros() as usize;
        self.mask &= self.mask - 1;
        Some(self.base + offset)
    }
}

/// Bit `i` set where `block[i]` (at most 64 bytes) is `,` or `\n`.
#[inline]
fn delimiter_mask(block: &[u8]) -> u64 {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    if let Ok(block) = <&[u8; 64]>::try_from(block) {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
            _mm_set1_epi8,
        };
        let mut mask = 0u64;
        for (k, lane) in block.chunks_exact(16).enumerate() {
            // SAFETY: SSE2 is enabled (see `cfg`), and `lane` holds the 16 bytes read.
            let bits = unsafe {
                let v = _mm_loadu_si128(lane.as_ptr().cast::<__m128i>());
                let comma = _mm_cmpeq_epi8(v, _mm_set1_epi8(b',' as i8));
                let newline = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\n' as i8));
                _mm_movemask_epi8(_mm_or_si128(comma, newline))
            };
            mask |= u64::from(bits as u16) << (16 * k);
        }
        return mask;
    }
    block
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b',' || b == b'\n')
        .fold(0, |mask, (i, _)| mask | 1 << i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimiters_are_every_comma_and_newline() {
        let mut bytes: Vec<u8> = (0..300u32)
            .map(|i| match i % 7 {
                0 => b',',
                3 if i % 2 == 0 => b'\n',
                _ => b'a' + (i % 26) as u8,
            })
            .collect();
        bytes.extend_from_slice("é,\n".as_bytes());
        for len in [0, 1, 63, 64, 65, 128, 200, bytes.len()] {
            let want: Vec<usize> = memchr::memchr2_iter(b',', b'\n', &bytes[..len]).collect();
            assert_eq!(
                Delimiters::new(&bytes[..len]).collect::<Vec<_>>(),
                want,
                "{len}"
            );
        }
    }
}
