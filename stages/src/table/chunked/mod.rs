//! The parallel CSV reader: [`read`] cuts the file into chunks at record boundaries and reads
//! them on every core. One pass checks the shape of every record (its number of fields, UTF-8),
//! infers the column types from every value, exactly as arrow-csv's `infer_schema` does over the
//! whole file, and decodes each column as the type its values have looked like so far (`scan::Spec`).
//! Chunks whose columns all turn out to have been decoded as the file's types are done; the
//! others are read again and decoded under the file's schema, the way arrow-csv's `Decoder`
//! parses each value. The chunks come back as they are, one batch each (the stages work on them
//! piece by piece; [`join`] makes one batch a column at a time, so the whole table is never held
//! twice), and are read with `pread`, so the file is never held whole.
//!
//! It gives the same table as the sequential reader in `io`, or gives up ([`Outcome::Fallback`])
//! whenever anything is unusual (a malformed header or row, bytes that are not UTF-8, a value
//! that fails to decode): the sequential reader then produces the result or the error, with the
//! line number the person fixing the file needs.
//!
//! The pieces: `cuts` finds the chunks and reads each into a reused buffer, `fields` splits a
//! plain chunk at every `,` and `\n` (a SIMD search), `infer` gives each value's type bit as
//! arrow-csv would, `scan` is the first pass over a chunk (shapes, types, and the columns
//! decoded along the way) and `decode` the second, under the file's schema.
//!
//! These were one module, and so one codegen unit, in which the helpers the per-value loops
//! call were inlined into them. The helpers those loops now call in another file are
//! `#[inline]` for that reason: each codegen unit that calls one gets its own copy to inline,
//! as before the split.

mod cuts;
mod decode;
mod fields;
mod infer;
mod scan;

#[cfg(test)]
use arrow::array::ArrayRef;
use arrow::datatypes::{Field, Schema};
use arrow::record_batch::RecordBatch;
use cuts::{exact_cuts, header, newline_cuts, with_chunk, Chunk};
use decode::decode;
use infer::data_type;
use rayon::prelude::*;
use scan::{scan, speculated, Scan};
use std::fs::File;
use std::sync::Arc;

/// What reading a chunk at a time gave.
pub(super) enum Outcome {
    /// The file's schema and its chunks, in order, each one batch.
    Table(Arc<Schema>, Vec<RecordBatch>),
    /// Something is unusual: read the file sequentially, which reports it by line.
    Fallback,
}

/// The target size of one chunk. Large enough that per-chunk costs vanish, small enough that
/// the chunks being read at any moment take little memory.
pub(super) const CHUNK: usize = 16 << 20;

/// Reads the CSV file `file` of `size` bytes a chunk of about `chunk` bytes at a time.
pub(super) fn read(file: &File, size: u64, chunk: usize) -> Outcome {
    match try_read(file, size, chunk) {
        Some((schema, batches)) => Outcome::Table(schema, batches),
        None => Outcome::Fallback,
    }
}

fn try_read(file: &File, size: u64, chunk: usize) -> Option<(Arc<Schema>, Vec<RecordBatch>)> {
    let (names, start) = header(file, size)?;
    let width = names.len();
    let scan_all = |chunks: &[Chunk], quotes_ok: bool| -> Option<Vec<Scan>> {
        chunks
            .par_iter()
            .map(|&c| with_chunk(file, c, |bytes| scan(bytes, width, quotes_ok)))
            .collect()
    };
    let mut cuts = newline_cuts(file, start, size, chunk)?;
    let mut quotes_ok = cuts.len() == 1;
    let mut scans = scan_all(&cuts, quotes_ok)?;
    if scans.iter().any(|s| s.quoted) && !quotes_ok {
        cuts = exact_cuts(file, start, size, chunk)?;
        quotes_ok = true;
        scans = scan_all(&cuts, quotes_ok)?;
    }
    let mut packed = vec![0u16; width];
    for s in &scans {
        for (p, t) in packed.iter_mut().zip(&s.types) {
            *p |= t;
        }
    }
    let fields: Vec<Field> = names
        .iter()
        .zip(&packed)
        .map(|(name, &p)| Field::new(name, data_type(p), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    // Chunks whose first pass decoded every column as the file's type are done; the others
    // are read and decoded again.
    let decoded: Vec<RecordBatch> = cuts
        .into_par_iter()
        .zip(scans)
        .map(|(c, s)| match speculated(s.decoded, &schema, s.records) {
            Some(batch) => Some(batch),
            None => with_chunk(file, c, |bytes| decode(bytes, schema.clone(), s.records)),
        })
        .collect::<Option<Vec<_>>>()?;
    Some((schema, decoded))
}

/// The chunks' batches as one, joined a column at a time so that each column's pieces are freed
/// as soon as it is joined.
#[cfg(test)]
pub(super) fn join(schema: Arc<Schema>, batches: Vec<RecordBatch>) -> RecordBatch {
    if batches.len() == 1 {
        return batches.into_iter().next().expect("one batch");
    }
    if batches.is_empty() {
        return RecordBatch::new_empty(schema);
    }
    let mut pieces: Vec<Vec<ArrayRef>> =
        vec![Vec::with_capacity(batches.len()); schema.fields().len()];
    for batch in batches {
        for (i, column) in batch.columns().iter().enumerate() {
            pieces[i].push(column.clone());
        }
    }
    let columns: Vec<ArrayRef> = pieces
        .into_iter()
        .map(|p| {
            let refs: Vec<&dyn arrow::array::Array> = p.iter().map(|a| a.as_ref()).collect();
            arrow::compute::concat(&refs).expect("pieces of one column have one type")
        })
        .collect();
    RecordBatch::try_new(schema, columns).expect("columns match the schema")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the chunked reader gave a table (which must be the sequential reader's) rather
    /// than falling back.
    fn both(content: &[u8], chunk: usize) -> bool {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.csv");
        std::fs::write(&p, content).unwrap();
        let file = File::open(&p).unwrap();
        let sequential = super::super::io::read_csv_sequential(&p, "t.csv");
        match read(&file, content.len() as u64, chunk) {
            Outcome::Table(schema, batches) => {
                let batch = join(schema, batches);
                assert_eq!(
                    Some(&batch),
                    sequential.as_ref().ok(),
                    "{content:?} {chunk}"
                );
                true
            }
            Outcome::Fallback => false,
        }
    }

    #[test]
    fn chunked_reads_give_the_sequential_table() {
        let good: &[&[u8]] = &[
            b"a,b,c\n1,x,2\n2,y,3.5\n",
            b"a,b,c\n1,x,2\n2,y,3.5",
            b"a,b\r\n1,2\r\n\r\n3,4\r\n",
            b"a,b\n1,\"x\ny\"\n2,\"a,b\"\n3,\"\"\"q\"\n4,z\n",
            b"a,b\n,\n,\n",
            b"a,b\n",
            b"a,b",
            b"a,b\ntrue,2024-01-02\nFALSE,2024-01-03 04:05:06\n",
            b"a,b\n1,NaN\n2,inf\n,3\n4.5,x\n",
            b"a,b\n1,\n\n2,3\n\n",
            b"a,b\n\n1,",
            b"a\n1\n\n2\n",
            b"a,b\n1,x\n2.5,\n,3\n",
            b"a,b\n,\n1,\n-0,\n",
            b"a,b\n-0,1\n1.5,2\n",
            b"n,t\n-1,\xc3\xa9t\xc3\xa9\n+2,\n",
        ];
        for s in good {
            for chunk in [1, 2, 3, 5, 8, 1 << 20] {
                assert!(both(s, chunk), "fell back on {s:?} {chunk}");
            }
        }
        let bad: &[&[u8]] = &[
            b"a,b\n1,2\n3\n",
            b"a,b\n1,2\n3,4,5\n",
            b"a,b\n1,\xff\n",
            b"a,b\n1,2,\n",
            b"a,b\n1\n",
            b"a,a\n1,2\n",
            b"",
        ];
        for s in bad {
            for chunk in [1, 2, 3, 5, 8, 1 << 20] {
                assert!(!both(s, chunk), "no fallback on {s:?} {chunk}");
            }
        }
        let mut big = String::from("x,y,z\n");
        for i in 0..2000 {
            big.push_str(&format!("{i},{}.25,c{}\n", i % 7, i % 3));
        }
        big.push_str("1e3,,late\n");
        for chunk in [64, 1000, 4096] {
            assert!(both(big.as_bytes(), chunk));
        }
    }
}
