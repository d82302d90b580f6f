//! Reading the `.npy` arrays that `normalize` writes (`npy.rs` writes them): little-endian
//! float32 features, int64 or float32 labels, C order. Enough of the format for those files, with
//! errors that name the file and point at the stage that should have written it.

use std::io::Read;
use std::path::Path;

/// The element types sluice's arrays use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    I64,
}

/// A header: element type and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Where the data starts.
    offset: usize,
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

fn bad(shown: &str, why: &str) -> String {
    format!("`{shown}`: {why}\nhint: this should be a split directory written by `normalize` (features.npy, labels.npy)")
}

/// Reads the header of `path`; `shown` is the path as messages show it.
pub fn header(path: &Path, shown: &str) -> Result<Header, String> {
    let mut f = std::fs::File::open(path).map_err(|e| bad(shown, &format!("cannot open: {e}")))?;
    let mut head = [0u8; 12];
    f.read_exact(&mut head)
        .map_err(|_| bad(shown, "not a NumPy .npy file"))?;
    parse_header(&head, &mut f, shown)
}

fn parse_header(head: &[u8; 12], rest: &mut impl Read, shown: &str) -> Result<Header, String> {
    if &head[..6] != b"\x93NUMPY" {
        return Err(bad(shown, "not a NumPy .npy file"));
    }
    let (len, start) = match head[6] {
        1 => (u16::from_le_bytes([head[8], head[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize,
            12,
        ),
    };
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
pub fn read(path: &Path, shown: &str) -> Result<Array, String> {
    let bytes = std::fs::read(path).map_err(|e| bad(shown, &format!("cannot read: {e}")))?;
    if bytes.len() < 12 {
        return Err(bad(shown, "not a NumPy .npy file"));
    }
    let head: [u8; 12] = bytes[..12].try_into().expect("12 bytes");
    let h = parse_header(&head, &mut &bytes[12..], shown)?;
    let n: usize = h.shape.iter().product();
    let body = &bytes[h.offset.min(bytes.len())..];
    let want = n * 8 / if h.dtype == Dtype::F32 { 2 } else { 1 };
    if body.len() != want {
        return Err(bad(
            shown,
            &format!(
                "{} bytes of data for shape {:?}, expected {want}",
                body.len(),
                h.shape
            ),
        ));
    }
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
            .contains("not a NumPy .npy file"));
    }
}
