//! Triton's binary-data extension on the way in: [`decode_binary`] turns an input's share of the
//! bytes after the JSON header into typed elements. Numbers are little-endian; each BYTES
//! element is a 4-byte little-endian length and then its bytes.

use super::tensor::{ByteStrings, DataType, Elements};

pub(super) fn decode_binary(
    datatype: DataType,
    count: usize,
    bytes: &[u8],
) -> Result<Elements, String> {
    let Some(size) = datatype.size() else {
        // Each element takes at least its 4-byte length: a larger count cannot be right, and
        // is refused before anything is reserved for it.
        if count > bytes.len() / 4 {
            return Err(format!(
                "the shape says {count} BYTES elements, but `binary_data_size` is {}, which holds at most {}",
                bytes.len(),
                bytes.len() / 4
            ));
        }
        let mut out = ByteStrings::with_capacity(count, bytes.len() - 4 * count);
        let mut rest = bytes;
        while !rest.is_empty() {
            let Some((len, tail)) = rest.split_first_chunk::<4>() else {
                return Err("a BYTES element's 4-byte length is cut short".into());
            };
            let len = u32::from_le_bytes(*len) as usize;
            if len > tail.len() {
                return Err(format!(
                    "a BYTES element says it has {len} bytes, but {} are left",
                    tail.len()
                ));
            }
            out.push(&tail[..len]);
            rest = &tail[len..];
        }
        if out.len() != count {
            return Err(format!(
                "the shape says {count} elements, but the binary data holds {}",
                out.len()
            ));
        }
        return Ok(Elements::Bytes(out));
    };
    let wanted = count.saturating_mul(size);
    if bytes.len() != wanted {
        return Err(format!(
            "the shape says {count} {} elements ({wanted} bytes), but `binary_data_size` is {}",
            datatype.name(),
            bytes.len()
        ));
    }
    fn le<const N: usize>(bytes: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
        bytes
            .chunks_exact(N)
            .map(|c| c.try_into().expect("chunks are N long"))
    }
    let numbers: Vec<f64> = match datatype {
        DataType::U8 => return Ok(Elements::U8(bytes.to_vec())),
        DataType::Bool => bytes.iter().map(|&b| f64::from(u8::from(b != 0))).collect(),
        DataType::I8 => bytes.iter().map(|&b| f64::from(b as i8)).collect(),
        DataType::U16 => le::<2>(bytes)
            .map(|b| f64::from(u16::from_le_bytes(b)))
            .collect(),
        DataType::I16 => le::<2>(bytes)
            .map(|b| f64::from(i16::from_le_bytes(b)))
            .collect(),
        DataType::U32 => le::<4>(bytes)
            .map(|b| f64::from(u32::from_le_bytes(b)))
            .collect(),
        DataType::I32 => le::<4>(bytes)
            .map(|b| f64::from(i32::from_le_bytes(b)))
            .collect(),
        DataType::U64 => le::<8>(bytes)
            .map(|b| u64::from_le_bytes(b) as f64)
            .collect(),
        DataType::I64 => le::<8>(bytes)
            .map(|b| i64::from_le_bytes(b) as f64)
            .collect(),
        DataType::F32 => le::<4>(bytes)
            .map(|b| f64::from(f32::from_le_bytes(b)))
            .collect(),
        DataType::F64 => le::<8>(bytes).map(f64::from_le_bytes).collect(),
        DataType::F16 | DataType::Bytes => unreachable!("refused or handled above"),
    };
    Ok(Elements::Numbers(numbers))
}
