//! Writing NumPy `.npy` files: the format the trainer reads features and labels in.
//!
//! Only what the stages need: format version 1.0, little-endian `<f4` and `<i8`, C order. The
//! header is padded with spaces so that the data starts at a multiple of 64 bytes, as NumPy
//! itself writes it, which lets readers memory-map the data aligned.

use rayon::prelude::*;

const MAGIC: &[u8] = b"\x93NUMPY\x01\x00";
const ALIGN: usize = 64;

/// The element type of an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dtype {
    F32,
    I64,
}

impl Dtype {
    fn descr(self) -> &'static str {
        match self {
            Dtype::F32 => "<f4",
            Dtype::I64 => "<i8",
        }
    }
}

/// The header (magic, version, length, dictionary, padding, newline) for an array of `shape`.
fn header(dtype: Dtype, shape: &[usize]) -> Vec<u8> {
    let shape = match shape {
        [n] => format!("({n},)"),
        dims => format!(
            "({})",
            dims.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}",
        dtype.descr()
    );
    // magic + version (8 bytes) + the u16 length (2 bytes) + dictionary + padding + '\n'.
    let unpadded = MAGIC.len() + 2 + dict.len() + 1;
    dict.push_str(&" ".repeat((ALIGN - unpadded % ALIGN) % ALIGN));
    dict.push('\n');
    let mut out = MAGIC.to_vec();
    let len = u16::try_from(dict.len()).expect("a header for a few dimensions is short");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// `header` followed by `data`, each value little-endian.
fn with_data<const N: usize, T: Copy + Sync>(
    mut out: Vec<u8>,
    data: &[T],
    bytes: impl Fn(T) -> [u8; N] + Sync,
) -> Vec<u8> {
    let start = out.len();
    out.resize(start + data.len() * N, 0);
    out[start..]
        .par_chunks_mut(N << 16)
        .zip(data.par_chunks(1 << 16))
        .for_each(|(o, d)| {
            for (o, &x) in o.chunks_exact_mut(N).zip(d) {
                o.copy_from_slice(&bytes(x));
            }
        });
    out
}

/// A `[rows, cols]` float32 matrix, `data` in row-major order.
#[cfg(test)]
pub(crate) fn f32_matrix(rows: usize, cols: usize, data: &[f32]) -> Vec<u8> {
    debug_assert_eq!(rows * cols, data.len());
    with_data(header(Dtype::F32, &[rows, cols]), data, f32::to_le_bytes)
}

/// The header of a `[rows, cols]` float32 matrix, to be followed by [`write_values`] of its
/// rows in order: a matrix written a piece at a time, never whole in memory.
pub(crate) fn write_f32_header(
    out: &mut impl std::io::Write,
    rows: usize,
    cols: usize,
) -> std::io::Result<()> {
    out.write_all(&header(Dtype::F32, &[rows, cols]))
}

/// [`f32_matrix`] written to `out`.
#[cfg(test)]
pub(crate) fn write_f32_matrix(
    out: &mut impl std::io::Write,
    rows: usize,
    cols: usize,
    data: &[f32],
) -> std::io::Result<()> {
    write_f32_header(out, rows, cols)?;
    write_values(out, data)
}

/// An `[n]` vector of `f32` or `i64` written to `out` straight from `data`, without a copy.
pub(crate) fn write_vector<T: Element>(
    out: &mut impl std::io::Write,
    data: &[T],
) -> std::io::Result<()> {
    out.write_all(&header(T::DTYPE, &[data.len()]))?;
    write_values(out, data)
}

/// The element types the stages write.
pub(crate) trait Element: Copy + bytemuck::Pod {
    const DTYPE: Dtype;
    /// The value's little-endian bytes, for big-endian targets.
    #[cfg_attr(target_endian = "little", allow(dead_code))]
    fn le_bytes(self) -> Vec<u8>;
}

impl Element for f32 {
    const DTYPE: Dtype = Dtype::F32;
    fn le_bytes(self) -> Vec<u8> {
        self.to_le_bytes().to_vec()
    }
}

impl Element for i64 {
    const DTYPE: Dtype = Dtype::I64;
    fn le_bytes(self) -> Vec<u8> {
        self.to_le_bytes().to_vec()
    }
}

/// The values of `data`, little-endian, as they follow a header.
pub(crate) fn write_values<T: Element>(
    out: &mut impl std::io::Write,
    data: &[T],
) -> std::io::Result<()> {
    #[cfg(target_endian = "little")]
    {
        // On a little-endian target the values' bytes in memory are their little-endian bytes:
        // the data is written as it lies, without a copy (`Pod`: no padding, any bytes valid).
        out.write_all(bytemuck::cast_slice(data))
    }
    #[cfg(not(target_endian = "little"))]
    {
        let mut piece = Vec::new();
        for values in data.chunks(1 << 16) {
            piece.clear();
            piece.extend(values.iter().flat_map(|x| x.le_bytes()));
            out.write_all(&piece)?;
        }
        Ok(())
    }
}

/// A float32 array of any `shape` (at least two dimensions), `data` in C order.
pub(crate) fn f32_array(shape: &[usize], data: &[f32]) -> Vec<u8> {
    debug_assert_eq!(shape.iter().product::<usize>(), data.len());
    with_data(header(Dtype::F32, shape), data, f32::to_le_bytes)
}

/// A `[n]` float32 vector.
#[cfg(test)]
pub(crate) fn f32_vector(data: &[f32]) -> Vec<u8> {
    with_data(header(Dtype::F32, &[data.len()]), data, f32::to_le_bytes)
}

/// A `[n]` int64 vector.
pub(crate) fn i64_vector(data: &[i64]) -> Vec<u8> {
    with_data(header(Dtype::I64, &[data.len()]), data, i64::to_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_numpys_byte_for_byte() {
        let bytes = f32_matrix(2, 3, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5]);
        let mut written = Vec::new();
        write_f32_matrix(&mut written, 2, 3, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5]).unwrap();
        assert_eq!(written, bytes);
        // What `numpy.save` writes for `np.zeros((2, 3), '<f4')`: 118 header bytes padded to 128.
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        let mut expected = b"\x93NUMPY\x01\x00".to_vec();
        expected.extend_from_slice(&118u16.to_le_bytes());
        expected.extend_from_slice(dict.as_bytes());
        expected.extend(std::iter::repeat_n(b' ', 118 - dict.len() - 1));
        expected.push(b'\n');
        assert_eq!(expected.len(), 128);
        assert_eq!(&bytes[..128], expected.as_slice());
        assert_eq!(bytes.len(), 128 + 6 * 4);
        assert_eq!(&bytes[128 + 20..], 6.5f32.to_le_bytes());
    }

    #[test]
    fn vectors_have_a_one_element_shape_tuple_and_aligned_data() {
        let bytes = i64_vector(&[1, -2]);
        let mut written = Vec::new();
        write_vector(&mut written, &[1i64, -2]).unwrap();
        assert_eq!(written, bytes);
        let mut written = Vec::new();
        write_vector(&mut written, &[0.5f32, -2.0]).unwrap();
        assert_eq!(written, f32_vector(&[0.5, -2.0]));
        let text = String::from_utf8_lossy(&bytes[10..]);
        assert!(
            text.starts_with("{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }"),
            "{text}"
        );
        assert_eq!((bytes.len() - 16) % ALIGN, 0);
        assert_eq!(&bytes[bytes.len() - 8..], (-2i64).to_le_bytes());
        let empty = f32_matrix(0, 4, &[]);
        assert_eq!(empty.len() % ALIGN, 0);
        assert!(String::from_utf8_lossy(&empty).contains("'shape': (0, 4), }"));
        assert_eq!(f32_vector(&[]).len() % ALIGN, 0);
    }
}
