//! The first column of the predictions, naming each test row's source so that a prediction joins
//! back to the raw data: `source_row`, the row's id in the table `split` read (`rows.npy` beside
//! the test features, see `table::row_id`), or for images `source_file`, the image's path
//! (`files.json`, which `normalize` writes in image mode).

use crate::arrays::{self, Array};
use crate::problems::relative;
use sluice_runner::{StageContext, StageError};
use std::path::Path;

/// The longest path a file system hands out (Linux's `PATH_MAX`), and what JSON's escapes can
/// make of it: a control character takes six bytes, plus quotes, comma and indent.
const MAX_PATH_BYTES: u64 = 4096;
const MAX_LISTED_BYTES: u64 = MAX_PATH_BYTES * 6 + 8;

/// Where each test row came from, in the test split's row order.
pub(super) enum Source {
    /// Row ids in the table `split` read.
    Rows(Vec<i64>),
    /// Workspace-relative image paths.
    Files(Vec<String>),
}

impl Source {
    fn column(&self) -> &'static str {
        match self {
            Source::Rows(_) => "source_row",
            Source::Files(_) => "source_file",
        }
    }

    /// Row `i`'s cell, quoted for CSV.
    fn cell(&self, i: usize) -> String {
        match self {
            Source::Rows(ids) => ids[i].to_string(),
            Source::Files(files) => super::csv_field(&files[i]),
        }
    }

    fn len(&self) -> usize {
        match self {
            Source::Rows(ids) => ids.len(),
            Source::Files(files) => files.len(),
        }
    }
}

/// The test rows' sources (`rows.npy` or `files.json`, which `normalize` writes beside the
/// features), or `None` for a test split without either.
pub(super) fn read(
    ctx: &StageContext<'_>,
    test: &Path,
    n: usize,
) -> Result<Option<Source>, StageError> {
    if let Some(ids) = rows(ctx, test, n)? {
        return Ok(Some(Source::Rows(ids)));
    }
    let path = test.join("files.json");
    if !path.exists() {
        return Ok(None);
    }
    let files = files(&path, &relative(&ctx.workspace, &path), n)?;
    Ok(Some(Source::Files(files)))
}

fn rows(ctx: &StageContext<'_>, test: &Path, n: usize) -> Result<Option<Vec<i64>>, StageError> {
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

/// `files.json` (`shown` in messages), checked to list one path per test row. Its size is
/// bounded by the row count before it is read, so that a stray large file is refused rather than
/// loaded.
fn files(path: &Path, shown: &str, n: usize) -> Result<Vec<String>, StageError> {
    let hint = "it is `normalize`'s list of each test image's file; run `normalize` again";
    let bytes = std::fs::metadata(path)
        .map_err(|e| format!("cannot read `{shown}`: {e}"))?
        .len();
    let most = 16 + n as u64 * MAX_LISTED_BYTES;
    if bytes > most {
        return Err(StageError::new(format!(
            "`{shown}` is {bytes} bytes, more than a list of {n} file paths can take ({most})"
        ))
        .hint(hint));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read `{shown}`: {e}"))?;
    let files: Vec<String> = serde_json::from_str(&text).map_err(|e| {
        StageError::new(format!("`{shown}` is not a JSON list of file paths: {e}")).hint(hint)
    })?;
    if files.len() != n {
        return Err(StageError::new(format!(
            "`{shown}` must list {n} files, one per test row; it lists {}",
            files.len()
        ))
        .hint(hint));
    }
    Ok(files)
}

/// `csv` with the source as its first column: each prediction's row in the table `split` read
/// or its image file, to join it back to the raw data. Records end at newlines outside quotes (a
/// class name or a file name may hold one).
pub(super) fn prepend(csv: &str, source: &Source) -> String {
    let mut out = String::with_capacity(csv.len() + source.len() * 8);
    out.push_str(source.column());
    out.push(',');
    let mut row = 0;
    let mut quoted = false;
    for (i, c) in csv.char_indices() {
        out.push(c);
        match c {
            '"' => quoted = !quoted,
            '\n' if !quoted && i + 1 < csv.len() && row < source.len() => {
                out.push_str(&source.cell(row));
                out.push(',');
                row += 1;
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
            prepend(csv, &Source::Rows(vec![41, 7])),
            "source_row,row,label,predicted\n41,0,\"a\nb\",x\n7,1,y,y\n"
        );
    }

    #[test]
    fn a_file_list_must_hold_one_path_per_row_and_stay_in_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("files.json");
        let message = |n| files(&path, "n/test/files.json", n).unwrap_err().message;
        std::fs::write(&path, "[\"t/a/1.png\", \"t/b/2.png\"]").unwrap();
        assert_eq!(files(&path, "x", 2).unwrap(), ["t/a/1.png", "t/b/2.png"]);
        assert_eq!(
            message(3),
            "`n/test/files.json` must list 3 files, one per test row; it lists 2"
        );
        std::fs::write(&path, "[1, 2]").unwrap();
        assert!(message(2).starts_with("`n/test/files.json` is not a JSON list of file paths"));
        std::fs::write(&path, vec![b' '; 16 + MAX_LISTED_BYTES as usize + 1]).unwrap();
        assert!(
            message(1).starts_with("`n/test/files.json` is 24601 bytes, more than a list of 1"),
            "{}",
            message(1)
        );
    }

    #[test]
    fn file_names_are_quoted_when_they_hold_a_comma_a_quote_or_a_newline() {
        let csv = "row,label,predicted\n0,a,a\n1,b,a\n2,b,b\n";
        let files = Source::Files(vec![
            "t/a/x,1.png".into(),
            "t/b/say \"hi\"\n.png".into(),
            "t/b/plain.png".into(),
        ]);
        assert_eq!(
            prepend(csv, &files),
            "source_file,row,label,predicted\n\"t/a/x,1.png\",0,a,a\n\
             \"t/b/say \"\"hi\"\"\n.png\",1,b,a\nt/b/plain.png,2,b,b\n"
        );
    }
}
