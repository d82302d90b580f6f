//! The `source_row` column of the predictions: each test row's id in the table `split` read
//! (`rows.npy` beside the test features, see `table::row_id`), so that a prediction joins back
//! to its row of the raw data.

use crate::arrays::{self, Array};
use crate::problems::relative;
use sluice_runner::{StageContext, StageError};
use std::path::Path;

/// The test rows' ids in the table `split` read (`rows.npy`, which `normalize` writes when the
/// split carries them), or `None` for a test split without them.
pub(super) fn read(
    ctx: &StageContext<'_>,
    test: &Path,
    n: usize,
) -> Result<Option<Vec<i64>>, StageError> {
    let path = test.join("rows.npy");
    if !path.exists() {
        return Ok(None);
    }
    let shown = relative(&ctx.workspace, &path);
    match arrays::read(&path, &shown)? {
        Array::I64 { shape, data } if shape == [n] => Ok(Some(data)),
        other => Err(format!(
            "`{shown}` must hold {n} int64 row ids, one per test row; it has shape {:?}",
            other.shape()
        )
        .into()),
    }
}

/// `csv` with `source_row` as its first column: each prediction's row in the table `split`
/// read, to join it back to the raw data. Records end at newlines outside quotes (a class name
/// may hold one).
pub(super) fn prepend(csv: &str, ids: &[i64]) -> String {
    let mut out = String::with_capacity(csv.len() + ids.len() * 8);
    out.push_str("source_row,");
    let mut ids = ids.iter();
    let mut quoted = false;
    for (i, c) in csv.char_indices() {
        out.push(c);
        match c {
            '"' => quoted = !quoted,
            '\n' if !quoted && i + 1 < csv.len() => {
                if let Some(id) = ids.next() {
                    out.push_str(&format!("{id},"));
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_record_gets_its_id_first_even_with_a_quoted_newline() {
        let csv = "row,label,predicted\n0,\"a\nb\",x\n1,y,y\n";
        assert_eq!(
            prepend(csv, &[41, 7]),
            "source_row,row,label,predicted\n41,0,\"a\nb\",x\n7,1,y,y\n"
        );
    }
}
