//! Reading a [`Table`] from CSV or Parquet and writing one as Parquet.
//!
//! CSV files are read whole: a first pass with the `csv` crate checks the shape of every record,
//! so that a malformed row is reported by its line in the file; then arrow-csv infers the schema
//! from all rows (not a sample, so a late `3.5` in an integer-looking column cannot fail the
//! decode) and decodes. Parquet files keep the schema they were written with. Outputs are always
//! Parquet with Snappy compression, the format every Arrow and pandas reader opens.

use super::{Table, TableError};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::path::Path;
use std::sync::Arc;

/// The file formats a table can be read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Csv,
    Parquet,
}

impl Format {
    /// Decided by the extension. A file without one is Parquet if it starts with Parquet's magic
    /// bytes: that is what another built-in stage writes to its default, extension-less output
    /// paths (`out/<pipeline>/<stage>/train`), and those must chain without renaming.
    pub(crate) fn of(path: &Path) -> Option<Format> {
        match path.extension() {
            Some(ext) => match ext.to_str()?.to_ascii_lowercase().as_str() {
                "csv" => Some(Format::Csv),
                "parquet" | "pq" => Some(Format::Parquet),
                _ => None,
            },
            None => {
                let mut magic = [0u8; 4];
                let mut file = std::fs::File::open(path).ok()?;
                std::io::Read::read_exact(&mut file, &mut magic).ok()?;
                (&magic == b"PAR1").then_some(Format::Parquet)
            }
        }
    }
}

/// Reads the table at `path`; `display` names it in errors.
pub(crate) fn read(path: &Path, display: &str) -> Result<Table, TableError> {
    let batch = match Format::of(path) {
        Some(Format::Csv) => read_csv(path, display)?,
        Some(Format::Parquet) => read_parquet(path, display)?,
        None => {
            return Err(TableError::UnknownFormat {
                path: display.to_string(),
            })
        }
    };
    Ok(Table {
        batch,
        source: display.to_string(),
    })
}

fn read_csv(path: &Path, display: &str) -> Result<RecordBatch, TableError> {
    let bytes = std::fs::read(path).map_err(|source| TableError::Read {
        path: display.to_string(),
        source,
    })?;
    check_csv_shape(&bytes, display)?;
    let csv_error = |e: arrow::error::ArrowError| TableError::Csv {
        path: display.to_string(),
        detail: e.to_string(),
    };
    let (schema, _) = arrow::csv::reader::Format::default()
        .with_header(true)
        .infer_schema(bytes.as_slice(), None)
        .map_err(csv_error)?;
    let schema = Arc::new(schema);
    let reader = arrow::csv::ReaderBuilder::new(schema.clone())
        .with_header(true)
        .build(bytes.as_slice())
        .map_err(csv_error)?;
    let batches = reader.collect::<Result<Vec<_>, _>>().map_err(csv_error)?;
    arrow::compute::concat_batches(&schema, &batches).map_err(csv_error)
}

/// Walks every record so that the first malformed one is reported by its line: a wrong number of
/// fields, or bytes that are not UTF-8. Also rejects a missing or ambiguous header.
fn check_csv_shape(bytes: &[u8], display: &str) -> Result<(), TableError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(bytes);
    let line_error = |e: csv::Error| match e.kind() {
        csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => TableError::CsvLine {
            path: display.to_string(),
            line: pos.as_ref().map_or(0, |p| p.line()),
            detail: format!("expected {expected_len} fields, found {len}"),
        },
        csv::ErrorKind::Utf8 { pos, err } => TableError::CsvLine {
            path: display.to_string(),
            line: pos.as_ref().map_or(0, |p| p.line()),
            detail: format!("field {} is not valid UTF-8", err.field() + 1),
        },
        _ => TableError::Csv {
            path: display.to_string(),
            detail: e.to_string(),
        },
    };
    let headers = reader.headers().map_err(line_error)?.clone();
    if headers.is_empty() {
        return Err(TableError::NoHeader {
            path: display.to_string(),
        });
    }
    let mut seen = std::collections::BTreeSet::new();
    for name in headers.iter() {
        if !seen.insert(name) {
            return Err(TableError::DuplicateColumn {
                path: display.to_string(),
                column: name.to_string(),
            });
        }
    }
    let mut record = csv::StringRecord::new();
    while reader.read_record(&mut record).map_err(line_error)? {}
    Ok(())
}

fn read_parquet(path: &Path, display: &str) -> Result<RecordBatch, TableError> {
    let file = std::fs::File::open(path).map_err(|source| TableError::Read {
        path: display.to_string(),
        source,
    })?;
    let parquet_error = |source| TableError::Parquet {
        path: display.to_string(),
        source,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_error)?;
    let schema = builder.schema().clone();
    let batches = builder
        .build()
        .map_err(parquet_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| parquet_error(e.into()))?;
    arrow::compute::concat_batches(&schema, &batches).map_err(|e| parquet_error(e.into()))
}

/// Writes `batch` to `path` as Parquet. A batch with no rows still gives a valid file that
/// carries the schema. Not atomic by itself: write into scratch space, see `staged`.
pub(crate) fn write_parquet(batch: &RecordBatch, path: &Path) -> Result<(), TableError> {
    let write_error = |detail: String| TableError::Write {
        path: path.display().to_string(),
        detail,
    };
    let file = std::fs::File::create(path).map_err(|e| write_error(e.to_string()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props))
        .map_err(|e| write_error(e.to_string()))?;
    if batch.num_rows() > 0 {
        writer
            .write(batch)
            .map_err(|e| write_error(e.to_string()))?;
    }
    writer.close().map_err(|e| write_error(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(content: &str) -> Result<Table, TableError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.csv");
        std::fs::write(&p, content).unwrap();
        read(&p, "data/t.csv")
    }

    #[test]
    fn reads_csv_with_inferred_types() {
        let t = csv("a,b,c\n1,x,2\n2,y,3.5\n").unwrap();
        assert_eq!(t.rows(), 2);
        let schema = t.batch.schema();
        let types: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| f.data_type().to_string())
            .collect();
        assert_eq!(types, ["Int64", "Utf8", "Float64"]);
    }

    #[test]
    fn a_malformed_row_is_named_by_its_line() {
        let e = csv("a,b,c\n1,2,3\n4,5\n").unwrap_err().to_string();
        assert_eq!(e, "`data/t.csv` line 3: expected 3 fields, found 2");
    }

    #[test]
    fn header_problems_are_errors() {
        assert!(matches!(csv(""), Err(TableError::NoHeader { .. })));
        let e = csv("a,b,a\n1,2,3\n").unwrap_err().to_string();
        assert_eq!(
            e,
            "`data/t.csv` line 1: column `a` appears twice in the header"
        );
    }

    #[test]
    fn parquet_round_trips_including_empty_tables() {
        let t = csv("a,b\n1,x\n2,y\n").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.parquet");
        write_parquet(&t.batch, &p).unwrap();
        let back = read(&p, "t.parquet").unwrap();
        assert_eq!(back.batch, t.batch);
        let empty = t.batch.slice(0, 0);
        write_parquet(&empty, &p).unwrap();
        let back = read(&p, "t.parquet").unwrap();
        assert_eq!(back.rows(), 0);
        assert_eq!(back.batch.schema(), t.batch.schema());
        // Default output paths have no extension; the content says Parquet.
        let bare = dir.path().join("train");
        std::fs::rename(&p, &bare).unwrap();
        assert_eq!(Format::of(&bare), Some(Format::Parquet));
    }

    #[test]
    fn other_extensions_are_refused() {
        let e = read(Path::new("x.txt"), "x.txt").unwrap_err().to_string();
        assert!(
            e.starts_with("`x.txt` is neither a CSV nor a Parquet file"),
            "{e}"
        );
    }
}
