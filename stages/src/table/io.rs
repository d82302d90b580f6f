//! Reading a table from CSV or Parquet and writing one as Parquet.
//!
//! CSV files are read in chunks on every core (`chunked`): a first pass checks the shape of every
//! record and infers the schema from all rows (not a sample, so a late `3.5` in an
//! integer-looking column cannot fail the decode), a second decodes. When anything is wrong, the
//! file is read again in order: a pass with the `csv` crate checks the shape of every record, so
//! that a malformed row is reported by its line in the file; then arrow-csv infers and decodes. Parquet files keep the schema they were written with. Outputs are always
//! Parquet, Snappy-compressed except for float columns (random-looking bytes that Snappy shrinks
//! only to about 77 %, at about 15 % of the table stages' time); both Parquet reading and
//! writing spread the work over every core.

use super::TableError;
use crate::staged::OutputFile;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder};
use parquet::arrow::arrow_writer::{compute_leaves, ArrowLeafColumn, ArrowRowGroupWriterFactory};
use parquet::arrow::{add_encoded_arrow_schema_to_metadata, ArrowSchemaConverter};
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;
use rayon::prelude::*;
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
    /// bytes: a table output the user named without an extension, or a default output path
    /// from before defaults had `.parquet` (`out/<pipeline>/<stage>/train`).
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

/// Reads the table at `path` as one batch; `display` names it in errors.
#[cfg(test)]
pub(crate) fn read(path: &Path, display: &str) -> Result<super::Table, TableError> {
    let (schema, batches) = read_parts(path, display)?;
    Ok(super::Table {
        batch: super::chunked::join(schema, batches),
        source: display.to_string(),
    })
}

/// Reads the table at `path` as the pieces it was read in (a CSV file's chunks, a Parquet
/// file's row groups), not joined into one batch: the stages go through them piece by piece,
/// which saves a copy of the whole table. The schema comes with them, as there may be no pieces
/// at all.
pub(crate) fn read_parts(
    path: &Path,
    display: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>), TableError> {
    match Format::of(path) {
        Some(Format::Csv) => read_csv(path, display),
        Some(Format::Parquet) => read_parquet_parts(path, display),
        None => Err(TableError::UnknownFormat {
            path: display.to_string(),
        }),
    }
}

/// Reads a CSV file a chunk at a time on every core (`chunked`), or, when that finds anything
/// unusual, in one pass in order, which reports the problem by its line.
fn read_csv(path: &Path, display: &str) -> Result<(SchemaRef, Vec<RecordBatch>), TableError> {
    let file = std::fs::File::open(path).map_err(|source| TableError::Read {
        path: display.to_string(),
        source,
    })?;
    let size = file
        .metadata()
        .map_err(|source| TableError::Read {
            path: display.to_string(),
            source,
        })?
        .len();
    match super::chunked::read(&file, size, super::chunked::CHUNK) {
        super::chunked::Outcome::Table(schema, batches) => Ok((schema, batches)),
        super::chunked::Outcome::Fallback => {
            let batch = read_csv_sequential(path, display)?;
            Ok((batch.schema(), vec![batch]))
        }
    }
}

/// The whole file in memory, its shape checked record by record, then inferred and decoded.
pub(super) fn read_csv_sequential(path: &Path, display: &str) -> Result<RecordBatch, TableError> {
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
            line: pos.as_ref().map_or(0, |p| line_of(bytes, p)),
            detail: format!("expected {expected_len} fields, found {len}"),
        },
        csv::ErrorKind::Utf8 { pos, err } => TableError::CsvLine {
            path: display.to_string(),
            line: pos.as_ref().map_or(0, |p| line_of(bytes, p)),
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

/// The line in the file where the record at `pos` starts, counted from the bytes: the `csv`
/// crate's own line count lags one behind on every CRLF line ending (it ends the record at the
/// `\r` and counts the `\n` only when the next record is read).
fn line_of(bytes: &[u8], pos: &csv::Position) -> u64 {
    let mut at = (pos.byte() as usize).min(bytes.len());
    let mut line = 1 + memchr::memchr_iter(b'\n', &bytes[..at]).count() as u64;
    // A record the reader sees as starting on the rest of the previous line's terminator.
    while let Some(&b @ (b'\r' | b'\n')) = bytes.get(at) {
        line += u64::from(b == b'\n');
        at += 1;
    }
    line
}

/// Reads the row groups on every core, each into one batch.
fn read_parquet_parts(
    path: &Path,
    display: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>), TableError> {
    let open = || {
        std::fs::File::open(path).map_err(|source| TableError::Read {
            path: display.to_string(),
            source,
        })
    };
    let parquet_error = |source| TableError::Parquet {
        path: display.to_string(),
        source,
    };
    let metadata =
        ArrowReaderMetadata::load(&open()?, Default::default()).map_err(parquet_error)?;
    let schema = metadata.schema().clone();
    let groups = metadata.metadata().num_row_groups();
    let batches = (0..groups)
        .into_par_iter()
        .map(|group| {
            let rows = metadata.metadata().row_group(group).num_rows().max(1) as usize;
            let batches =
                ParquetRecordBatchReaderBuilder::new_with_metadata(open()?, metadata.clone())
                    .with_row_groups(vec![group])
                    .with_batch_size(rows)
                    .build()
                    .map_err(parquet_error)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| parquet_error(e.into()))?;
            arrow::compute::concat_batches(&schema, &batches).map_err(|e| parquet_error(e.into()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((schema, batches))
}

/// Rows per Parquet row group at most: arrow-rs's default.
pub(crate) const ROW_GROUP: usize = 1024 * 1024;

/// Writes `batch` to `path` as Parquet. A batch with no rows still gives a valid file that
/// carries the schema. Not atomic by itself: write into scratch space, see `staged`.
#[cfg(test)]
pub(crate) fn write_parquet(batch: &RecordBatch, path: &Path) -> Result<(), TableError> {
    let mut out = ParquetOut::create(path, batch.schema())?;
    out.write(batch)?;
    out.finish()
}

/// A Parquet file being written a batch at a time, in row groups of [`ROW_GROUP`] rows (the
/// last one fewer) whose columns are encoded on every core. Callers that select rows (a
/// filter, a split's share) pass them a piece at a time, so the selection is never copied
/// whole.
///
/// Float columns are written without dictionary encoding: their values rarely repeat, and
/// trying a dictionary first was most of the time spent writing them.
pub(crate) struct ParquetOut {
    writer: SerializedFileWriter<std::io::BufWriter<OutputFile>>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    groups: usize,
    path: String,
    /// Rows per row group: [`ROW_GROUP`] (fewer in tests).
    group_rows: usize,
    /// Rows given to `write` and not yet in a row group: fewer than `group_rows`.
    pending: Vec<RecordBatch>,
    pending_rows: usize,
}

impl ParquetOut {
    pub(crate) fn create(path: &Path, schema: SchemaRef) -> Result<ParquetOut, TableError> {
        let display = path.display().to_string();
        let write_error = |detail: String| TableError::Write {
            path: display.clone(),
            detail,
        };
        let file = OutputFile::create(path).map_err(|e| write_error(e.to_string()))?;
        let mut props = WriterProperties::builder().set_compression(Compression::SNAPPY);
        for field in schema.fields() {
            if matches!(
                field.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Binary | DataType::LargeBinary
            ) {
                // Min / max statistics of text compare every value's bytes (about 4 % of
                // `clean`); nothing reads them back, and Parquet readers do not need them.
                let column = ColumnPath::from(field.name().as_str());
                props = props.set_column_statistics_enabled(column, EnabledStatistics::None);
            }
            if field.data_type().is_floating() {
                let column = ColumnPath::from(field.name().as_str());
                props = props
                    .set_column_dictionary_enabled(column.clone(), false)
                    .set_column_compression(column, Compression::UNCOMPRESSED);
            }
        }
        let mut props = props.build();
        add_encoded_arrow_schema_to_metadata(&schema, &mut props);
        let props = Arc::new(props);
        let parquet_schema = ArrowSchemaConverter::new()
            .with_coerce_types(props.coerce_types())
            .convert(&schema)
            .map_err(|e| write_error(e.to_string()))?;
        let writer = SerializedFileWriter::new(
            std::io::BufWriter::with_capacity(1 << 20, file),
            parquet_schema.root_schema_ptr(),
            props,
        )
        .map_err(|e| write_error(e.to_string()))?;
        let factory = ArrowRowGroupWriterFactory::new(&writer, schema.clone());
        Ok(ParquetOut {
            writer,
            factory,
            schema,
            groups: 0,
            path: display,
            group_rows: ROW_GROUP,
            pending: Vec::new(),
            pending_rows: 0,
        })
    }

    fn error(&self, e: impl std::fmt::Display) -> TableError {
        TableError::Write {
            path: self.path.clone(),
            detail: e.to_string(),
        }
    }

    /// Appends the rows of `batch`, which has the file's schema. Rows are gathered into row
    /// groups of [`ROW_GROUP`] rows however they come (a table read in 16 MB chunks, say), and
    /// written when one is full: the batches are only referenced until then, never copied.
    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<(), TableError> {
        let mut rest = batch.clone();
        while self.pending_rows + rest.num_rows() >= self.group_rows {
            let take = self.group_rows - self.pending_rows;
            self.pending.push(rest.slice(0, take));
            rest = rest.slice(take, rest.num_rows() - take);
            self.flush()?;
        }
        if rest.num_rows() > 0 {
            self.pending_rows += rest.num_rows();
            self.pending.push(rest);
        }
        Ok(())
    }

    /// Writes the pending batches as one row group, its columns encoded on every core.
    fn flush(&mut self) -> Result<(), TableError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batches = std::mem::take(&mut self.pending);
        self.pending_rows = 0;
        // Each leaf column's pieces, in order.
        let mut leaves: Vec<Vec<ArrowLeafColumn>> = Vec::new();
        for batch in &batches {
            let mut leaf = 0;
            for (field, column) in self.schema.fields().iter().zip(batch.columns()) {
                for piece in compute_leaves(field, column).map_err(|e| self.error(e))? {
                    if leaves.len() == leaf {
                        leaves.push(Vec::with_capacity(batches.len()));
                    }
                    leaves[leaf].push(piece);
                    leaf += 1;
                }
            }
        }
        let writers = self
            .factory
            .create_column_writers(self.groups)
            .map_err(|e| self.error(e))?;
        let chunks = writers
            .into_par_iter()
            .zip(leaves)
            .map(|(mut writer, pieces)| {
                for piece in &pieces {
                    writer.write(piece)?;
                }
                writer.close()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.error(e))?;
        let path = &self.path;
        let error = |e: parquet::errors::ParquetError| TableError::Write {
            path: path.clone(),
            detail: e.to_string(),
        };
        let mut row_group = self.writer.next_row_group().map_err(error)?;
        for chunk in chunks {
            chunk.append_to_row_group(&mut row_group).map_err(error)?;
        }
        row_group.close().map_err(error)?;
        self.groups += 1;
        Ok(())
    }

    /// Writes the last row group and the footer, and closes the file.
    pub(crate) fn finish(mut self) -> Result<(), TableError> {
        self.flush()?;
        let path = self.path;
        self.writer.close().map_err(|e| TableError::Write {
            path,
            detail: e.to_string(),
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(content: &str) -> Result<super::super::Table, TableError> {
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
    fn crlf_files_name_the_same_lines() {
        let e = csv("a,b,c\r\n1,2,3\r\n4,5\r\n6,7,8\r\n")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "`data/t.csv` line 3: expected 3 fields, found 2");
        let e = csv("a,b,c\r\n4,5\r\n").unwrap_err().to_string();
        assert_eq!(e, "`data/t.csv` line 2: expected 3 fields, found 2");
        let e = csv("a,b,c\n\n1,2,3\n4,5\n").unwrap_err().to_string();
        assert_eq!(e, "`data/t.csv` line 4: expected 3 fields, found 2");
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
    fn row_groups_are_gathered_from_batches_of_any_size() {
        let t = csv("a,b\n1,x\n2,y\n3,z\n4,\n5,v\n6,w\n7,u\n8,t\n9,s\n")
            .unwrap()
            .batch;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.parquet");
        let mut out = ParquetOut::create(&p, t.schema()).unwrap();
        out.group_rows = 4;
        for (start, len) in [(0, 3), (3, 0), (3, 4), (7, 2)] {
            out.write(&t.slice(start, len)).unwrap();
        }
        out.finish().unwrap();
        let (_, groups) = read_parts(&p, "t.parquet").unwrap();
        let sizes: Vec<usize> = groups.iter().map(RecordBatch::num_rows).collect();
        assert_eq!(sizes, [4, 4, 1]);
        assert_eq!(read(&p, "t.parquet").unwrap().batch, t);
    }

    #[test]
    fn floats_are_stored_plain_and_uncompressed_other_columns_snappy() {
        let t = csv("f,s,i\n1.5,x,1\n2.5,y,2\n").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.parquet");
        write_parquet(&t.batch, &p).unwrap();
        let reader =
            parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&p).unwrap())
                .unwrap();
        let group = parquet::file::reader::FileReader::metadata(&reader)
            .row_group(0)
            .clone();
        let codecs: Vec<Compression> = group.columns().iter().map(|c| c.compression()).collect();
        assert_eq!(
            codecs,
            [
                Compression::UNCOMPRESSED,
                Compression::SNAPPY,
                Compression::SNAPPY
            ]
        );
        assert!(!group
            .column(0)
            .encodings()
            .any(|e| e == parquet::basic::Encoding::RLE_DICTIONARY));
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
