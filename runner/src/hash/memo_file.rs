//! The hash memo's file, `.sluice/hashes.bin`: `MemoWriter` encodes it and `decode_memo` reads
//! it back, in a binary layout of fixed-size fields (see `MemoWriter`).

use super::{ContentHash, Stamp};
use std::path::{Path, PathBuf};

/// The memo file's first bytes: its format, then its version.
const MEMO_MAGIC: &[u8; 12] = b"sluice-memo\0";
const MEMO_VERSION: u32 = 2;
/// Bytes of one entry besides its path: length, dev, ino, size, mtime, ctime, hash.
const MEMO_FIXED: usize = 4 + 8 * 3 + 16 * 2 + 32;

/// The memo file: `MEMO_MAGIC`, the version and the entry count, then each entry as its path's
/// length and bytes followed by fixed-size little-endian fields. A binary layout because the
/// memo is read by every run, no-op reruns included, and parsing it as JSON (hex digests, a
/// map per stamp) cost a large pipeline tens of milliseconds. Written entry by entry; the count
/// in the header is filled in by `finish`.
pub(super) struct MemoWriter {
    out: Vec<u8>,
    count: u64,
}

impl MemoWriter {
    pub(super) fn with_capacity(entries: usize) -> MemoWriter {
        let mut out = Vec::with_capacity(MEMO_MAGIC.len() + 12 + entries * (MEMO_FIXED + 48));
        out.extend_from_slice(MEMO_MAGIC);
        out.extend_from_slice(&MEMO_VERSION.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
        MemoWriter { out, count: 0 }
    }

    pub(super) fn push(&mut self, path: &Path, st: &Stamp, hash: &ContentHash) {
        use std::os::unix::ffi::OsStrExt;
        let p = path.as_os_str().as_bytes();
        let out = &mut self.out;
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(p);
        out.extend_from_slice(&st.dev.to_le_bytes());
        out.extend_from_slice(&st.ino.to_le_bytes());
        out.extend_from_slice(&st.size.to_le_bytes());
        out.extend_from_slice(&st.mtime_ns.to_le_bytes());
        out.extend_from_slice(&st.ctime_ns.to_le_bytes());
        out.extend_from_slice(&hash.0);
        self.count += 1;
    }

    pub(super) fn finish(mut self) -> Vec<u8> {
        let at = MEMO_MAGIC.len() + 4;
        self.out[at..at + 8].copy_from_slice(&self.count.to_le_bytes());
        self.out
    }
}

/// `MemoWriter`'s file read back; `None` for anything else (another version, a cut-off file).
pub(super) fn decode_memo(bytes: &[u8]) -> Option<Vec<(PathBuf, Stamp, ContentHash)>> {
    use std::os::unix::ffi::OsStrExt;
    struct Reader<'a>(&'a [u8]);
    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            let (head, rest) = self.0.split_at_checked(n)?;
            self.0 = rest;
            Some(head)
        }
        fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
            self.take(N)?.try_into().ok()
        }
    }
    let mut r = Reader(bytes);
    if r.take(MEMO_MAGIC.len())? != MEMO_MAGIC || u32::from_le_bytes(r.array()?) != MEMO_VERSION {
        return None;
    }
    let count = u64::from_le_bytes(r.array()?) as usize;
    // Every entry takes at least `MEMO_FIXED` bytes: a damaged count cannot reserve more than
    // the file could hold.
    let mut entries = Vec::with_capacity(count.min(bytes.len() / MEMO_FIXED));
    for _ in 0..count {
        let len = u32::from_le_bytes(r.array()?) as usize;
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(r.take(len)?));
        let stamp = Stamp {
            dev: u64::from_le_bytes(r.array()?),
            ino: u64::from_le_bytes(r.array()?),
            size: u64::from_le_bytes(r.array()?),
            mtime_ns: i128::from_le_bytes(r.array()?),
            ctime_ns: i128::from_le_bytes(r.array()?),
        };
        entries.push((path, stamp, ContentHash(r.array()?)));
    }
    r.0.is_empty().then_some(entries)
}
