//! Reading the `.npy` arrays that `normalize` writes (`npy.rs` writes them): little-endian
//! float32 features, int64 or float32 labels, C order. Enough of the format for those files, with
//! errors that name the file and point at the stage that should have written it.
//!
//! The file is not trusted: the header length is bounded the way NumPy bounds it, and the element
//! count is multiplied out with overflow checks and compared with the file's size before anything
//! is allocated for the data, so a hostile or damaged header is an error, never a huge
//! allocation, an overflow or a panic.

use sluice_runner::StageError;
use std::io::Read;
use std::path::Path;

/// The element types sluice's arrays use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    I64,
}

impl Dtype {
    fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::I64 => 8,
        }
    }
}

/// The longest header read, in bytes: NumPy's own limit (`np.load`'s `max_header_size`), far above
/// what a few dimensions need, and far below the 4 GiB a version 2 header could claim.
const MAX_HEADER: usize = 10_000;

/// A header: element type and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Where the data starts.
    offset: usize,
}

impl Header {
    /// The data's length in bytes, `None` when the shape's product overflows.
    fn data_len(&self) -> Option<usize> {
        self.shape
            .iter()
            .try_fold(self.dtype.size(), |n, &d| n.checked_mul(d))
    }

    /// Checks that a file of `file_len` bytes holds exactly the data the header describes.
    fn check_len(&self, file_len: u64, shown: &str) -> Result<(), StageError> {
        let body = file_len.saturating_sub(self.offset as u64);
        match self.data_len() {
            Some(want) if want as u64 == body => Ok(()),
            Some(want) => Err(bad(
                shown,
                &format!(
                    "{body} bytes of data for shape {:?}, expected {want}",
                    self.shape
                ),
            )),
            None => Err(bad(
                shown,
                &format!("shape {:?} is too large to be an array", self.shape),
            )),
        }
    }
}

/// A whole array.
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    F32 { shape: Vec<usize>, data: Vec<f32> },
    I64 { shape: Vec<usize>, data: Vec<i64> },
}

impl Array {
    pub fn shape(&self) -> &[usize] {
        match self {
            Array::F32 { shape, .. } | Array::I64 { shape, .. } => shape,
        }
    }
}

fn bad(shown: &str, why: &str) -> StageError {
    StageError::new(format!("`{shown}`: {why}"))
        .hint("this should be a split directory written by `normalize` (features.npy, labels.npy)")
}

/// Reads the header of `path`; `shown` is the path as messages show it.
pub fn header(path: &Path, shown: &str) -> Result<Header, StageError> {
    let mut f = std::fs::File::open(path).map_err(|e| bad(shown, &format!("cannot open: {e}")))?;
    let mut head = [0u8; 12];
    f.read_exact(&mut head)
        .map_err(|_| bad(shown, "not a NumPy .npy file"))?;
    let h = parse_header(&head, &mut f, shown)?;
    let len = f
        .metadata()
        .map_err(|e| bad(shown, &format!("cannot read: {e}")))?
        .len();
    h.check_len(len, shown)?;
    Ok(h)
}

fn parse_header(head: &[u8; 12], rest: &mut impl Read, shown: &str) -> Result<Header, StageError> {
    if &head[..6] != b"\x93NUMPY" {
        return Err(bad(shown, "not a NumPy .npy file"));
    }
    let (len, start) = match head[6] {
        1 => (u16::from_le_bytes([head[8], head[9]]) as usize, 10),
        2 | 3 => (
            u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize,
            12,
        ),
        v => {
            return Err(bad(
                shown,
                &format!(".npy format version {v}; sluice reads versions 1 to 3"),
            ))
        }
    };
    if len > MAX_HEADER {
        return Err(bad(
            shown,
            &format!("a header of {len} bytes; NumPy writes at most {MAX_HEADER}"),
        ));
    }
    let mut text = head[start..].to_vec();
    let mut more = vec![0u8; len.saturating_sub(text.len())];
    rest.read_exact(&mut more)
        .map_err(|_| bad(shown, "truncated header"))?;
    text.extend(more);
    let text = String::from_utf8_lossy(&text);
    let field = |key: &str| {
        let at = text.find(&format!("'{key}'"))? + key.len() + 2;
        Some(text[at..].trim_start_matches([':', ' ']).to_string())
    };
    let descr = field("descr")
        .and_then(|s| s.split('\'').nth(1).map(str::to_string))
        .ok_or_else(|| bad(shown, "no dtype in the header"))?;
    let dtype = match descr.as_str() {
        "<f4" => Dtype::F32,
        "<i8" => Dtype::I64,
        other => {
            return Err(bad(
                shown,
                &format!("element type `{other}`; sluice reads float32 (<f4) and int64 (<i8)"),
            ))
        }
    };
    if field("fortran_order").is_some_and(|s| s.starts_with("True")) {
        return Err(bad(shown, "Fortran order; sluice reads C-order arrays"));
    }
    let shape = field("shape")
        .and_then(|s| {
            let inner = s.strip_prefix('(')?.split(')').next()?.to_string();
            inner
                .split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(|x| x.parse::<usize>().ok())
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| bad(shown, "no shape in the header"))?;
    Ok(Header {
        dtype,
        shape,
        offset: start + len,
    })
}

/// Reads a whole array.
pub fn read(path: &Path, shown: &str) -> Result<Array, StageError> {
    let bytes = std::fs::read(path).map_err(|e| bad(shown, &format!("cannot read: {e}")))?;
    if bytes.len() < 12 {
        return Err(bad(shown, "not a NumPy .npy file"));
    }
    let head: [u8; 12] = bytes[..12].try_into().expect("12 bytes");
    let h = parse_header(&head, &mut &bytes[12..], shown)?;
    h.check_len(bytes.len() as u64, shown)?;
    let body = &bytes[h.offset..];
    Ok(match h.dtype {
        Dtype::F32 => Array::F32 {
            shape: h.shape,
            data: body
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
        },
        Dtype::I64 => Array::I64 {
            shape: h.shape,
            data: body
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_npy_writes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f.npy");
        std::fs::write(&f, crate::npy::f32_matrix(2, 3, &[1., 2., 3., 4., 5., 6.])).unwrap();
        assert_eq!(
            read(&f, "f.npy").unwrap(),
            Array::F32 {
                shape: vec![2, 3],
                data: vec![1., 2., 3., 4., 5., 6.]
            }
        );
        let l = dir.path().join("l.npy");
        std::fs::write(&l, crate::npy::i64_vector(&[0, 2, 1])).unwrap();
        assert_eq!(header(&l, "l.npy").unwrap().shape, vec![3]);
        assert_eq!(
            read(&l, "l.npy").unwrap(),
            Array::I64 {
                shape: vec![3],
                data: vec![0, 2, 1]
            }
        );
        std::fs::write(&l, b"hello world, not npy").unwrap();
        assert!(read(&l, "l.npy")
            .unwrap_err()
            .message
            .contains("not a NumPy .npy file"));
    }

    /// A version 1 file: `dict` as the header, padded as NumPy pads it, then `data`.
    fn npy(version: u8, dict: &str, data: &[u8]) -> Vec<u8> {
        let mut out = b"\x93NUMPY".to_vec();
        out.extend([version, 0]);
        let mut text = dict.to_string();
        text.push('\n');
        if version == 1 {
            out.extend((text.len() as u16).to_le_bytes());
        } else {
            out.extend((text.len() as u32).to_le_bytes());
        }
        out.extend(text.as_bytes());
        out.extend(data);
        out
    }

    /// Both ways in, `read` and `header`, give the same error for the same bytes.
    fn both(bytes: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.npy");
        std::fs::write(&f, bytes).unwrap();
        let r = read(&f, "x.npy").unwrap_err();
        assert_eq!(header(&f, "x.npy").unwrap_err(), r);
        r.message
    }

    #[test]
    fn hostile_headers_are_errors_not_allocations_or_overflows() {
        // A version 2 header claiming 4 GiB, with nothing behind it.
        let mut huge = b"\x93NUMPY\x02\x00".to_vec();
        huge.extend(u32::MAX.to_le_bytes());
        let e = both(&huge);
        assert!(
            e.starts_with("`x.npy`: a header of 4294967295 bytes; NumPy writes at most 10000"),
            "{e}"
        );
        // A shape whose product overflows `usize`, and one that multiplies to 0 with a huge
        // factor, and one far larger than the file.
        let f =
            |shape: &str| format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
        let e = both(&npy(1, &f("(4294967296, 4294967296, 16)"), &[0; 16]));
        assert!(
            e.contains("shape [4294967296, 4294967296, 16] is too large to be an array"),
            "{e}"
        );
        let e = both(&npy(1, &f("(18446744073709551615, 2)"), &[]));
        assert!(e.contains("is too large to be an array"), "{e}");
        let e = both(&npy(1, &f("(1000000000000, 3)"), &[0; 12]));
        assert!(
            e.contains("12 bytes of data for shape [1000000000000, 3], expected 12000000000000"),
            "{e}"
        );
        // Data missing or extra; zero-sized arrays are fine.
        let e = both(&npy(1, &f("(2, 2)"), &[0; 12]));
        assert!(
            e.contains("12 bytes of data for shape [2, 2], expected 16"),
            "{e}"
        );
        let e = both(&npy(3, &f("(1,)"), &[0; 8]));
        assert!(
            e.contains("8 bytes of data for shape [1], expected 4"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.npy");
        std::fs::write(&p, npy(2, &f("(0, 5)"), &[])).unwrap();
        assert_eq!(read(&p, "e.npy").unwrap().shape(), [0, 5]);
        // A header longer than the file, an unknown version, an unparsable shape.
        let mut short = b"\x93NUMPY\x01\x00".to_vec();
        short.extend(9000u16.to_le_bytes());
        short.extend(b"{'descr'");
        assert!(both(&short).contains("truncated header"));
        let e = both(&npy(9, &f("(1,)"), &[0; 4]));
        assert!(
            e.contains(".npy format version 9; sluice reads versions 1 to 3"),
            "{e}"
        );
        let e = both(&npy(1, &f("(-1, 2)"), &[]));
        assert!(e.contains("no shape in the header"), "{e}");
    }
}
