//! Tables as the data stages see them: one [`Table`] (an Arrow `RecordBatch` plus the
//! workspace-relative name of the file it came from, for messages), the [`TableError`]s reading
//! and writing them can raise, and the column lookups the stages share.
//!
//! Every error names the file, and where it can the line or row and the column, because the
//! person reading it has to go and fix that file.

mod chunked;
pub(crate) mod hash;
pub(crate) mod io;
pub(crate) mod row_id;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use rayon::prelude::*;

/// A whole table in memory.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    pub(crate) batch: RecordBatch,
    /// The file it was read from, relative to the workspace when it lies inside it.
    pub(crate) source: String,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum TableError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` is neither a CSV nor a Parquet file")]
    UnknownFormat { path: String },
    #[error("`{path}`: column `{}` holds sluice's source row ids, which are whole numbers (Int64) with none missing", row_id::ROW_ID)]
    RowIdColumn { path: String },
    #[error("`{path}` is empty: a CSV file needs at least a header line")]
    NoHeader { path: String },
    #[error("`{path}` line 1: column `{column}` appears twice in the header")]
    DuplicateColumn { path: String, column: String },
    #[error("`{path}` line {line}: {detail}")]
    CsvLine {
        path: String,
        line: u64,
        detail: String,
    },
    #[error("`{path}`: {detail}")]
    Csv { path: String, detail: String },
    #[error("`{path}` is not a readable Parquet file: {source}")]
    Parquet {
        path: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("`{path}` has no column `{column}`{}", maybe(.suggestion))]
    UnknownColumn {
        path: String,
        column: String,
        available: Vec<String>,
        suggestion: Option<String>,
    },
    #[error("`{path}` row {row}: column `{column}` is empty; every row needs a {role}")]
    MissingKey {
        path: String,
        row: usize,
        column: String,
        role: &'static str,
    },
    #[error("`{path}`: column `{column}` has type {data_type}, which cannot be used as a {role}")]
    KeyType {
        path: String,
        column: String,
        data_type: DataType,
        role: &'static str,
    },
    #[error("cannot write `{path}`: {detail}")]
    Write { path: String, detail: String },
}

impl TableError {
    /// How to fix it, for the renderer to show apart from the message.
    pub(crate) fn hint(&self) -> Option<String> {
        match self {
            TableError::UnknownFormat { .. } => Some("name it `*.csv` or `*.parquet`".into()),
            TableError::RowIdColumn { .. } => Some(format!(
                "rename your column `{}`: the name is reserved",
                row_id::ROW_ID
            )),
            TableError::UnknownColumn { available, .. } => {
                Some(format!("its columns are {}", list(available)))
            }
            _ => None,
        }
    }
}

fn maybe(s: &Option<String>) -> String {
    s.as_ref().map(|s| format!("; {s}")).unwrap_or_default()
}

fn list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Table {
    pub(crate) fn rows(&self) -> usize {
        self.batch.num_rows()
    }

    /// The index of column `name`, or an error that lists the columns there are.
    pub(crate) fn column_index(&self, name: &str) -> Result<usize, TableError> {
        let schema = self.batch.schema();
        schema.index_of(name).map_err(|_| {
            let available: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
            TableError::UnknownColumn {
                path: self.source.clone(),
                column: name.to_string(),
                suggestion: sluice_runner::diag::did_you_mean(
                    name,
                    available.iter().map(String::as_str),
                ),
                available,
            }
        })
    }

    /// Column `name` as text, one key per row (`role` says what the key is for, in messages):
    /// class labels and group ids are compared by their text, so `1` in a CSV and `1` in a
    /// Parquet integer column are the same key. Empty values are errors, not a class of their
    /// own.
    pub(crate) fn keys(&self, name: &str, role: &'static str) -> Result<ArrayRef, TableError> {
        let column = self.batch.column(self.column_index(name)?);
        let text =
            arrow::compute::cast(column, &DataType::Utf8).map_err(|_| TableError::KeyType {
                path: self.source.clone(),
                column: name.to_string(),
                data_type: column.data_type().clone(),
                role,
            })?;
        if let Some(row) = text.logical_nulls().and_then(|n| n.iter().position(|v| !v)) {
            return Err(TableError::MissingKey {
                path: self.source.clone(),
                row: row + 1,
                column: name.to_string(),
                role,
            });
        }
        Ok(text)
    }
}

/// A table as it was read, in pieces (a Parquet file's row groups), never joined into one
/// batch: for stages that go through it a piece at a time or pick rows from it, which saves a
/// copy of the whole table (at 1 GB, `split` took 30 % less time and 0.7 GB less memory).
#[derive(Debug, Clone)]
pub(crate) struct Pieces {
    pub(crate) schema: SchemaRef,
    pub(crate) batches: Vec<RecordBatch>,
    /// The file it was read from, relative to the workspace when it lies inside it.
    pub(crate) source: String,
}

impl Pieces {
    pub(crate) fn read(path: &std::path::Path, display: &str) -> Result<Pieces, TableError> {
        let (schema, batches) = io::read_parts(path, display)?;
        Ok(Pieces {
            schema,
            batches,
            source: display.to_string(),
        })
    }

    pub(crate) fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// The index of column `name`, or an error that lists the columns there are.
    pub(crate) fn column_index(&self, name: &str) -> Result<usize, TableError> {
        Table {
            batch: RecordBatch::new_empty(self.schema.clone()),
            source: self.source.clone(),
        }
        .column_index(name)
    }

    /// Column `name` as [`Coded`] keys, one per row (`role` says what the keys are for, in
    /// messages), compared by their text as [`Table::keys`] does; never joined: each piece is
    /// coded on its own, on every core, and the pieces' codes are then mapped to codes in order
    /// of first appearance in the whole table. Errors name rows of the whole table (the first
    /// such row).
    pub(crate) fn coded(&self, name: &str, role: &'static str) -> Result<Coded, TableError> {
        let keys = self.keys(name, role)?;
        let mut codes = vec![0u32; self.rows()];
        let mut slices = Vec::with_capacity(keys.len());
        let mut rest = codes.as_mut_slice();
        for keys in &keys {
            let (mine, after) = rest.split_at_mut(keys.len());
            slices.push(mine);
            rest = after;
        }
        let local: Vec<_> = keys
            .par_iter()
            .zip(slices)
            .map(|(keys, codes)| {
                let mut lookup = hash::Lookup::default();
                for (code, key) in codes.iter_mut().zip(keys.as_string::<i32>().iter()) {
                    *code = lookup.code(key.unwrap_or_default());
                }
                (codes, lookup.into_names())
            })
            .collect();
        let mut lookup = hash::Lookup::default();
        let maps: Vec<Vec<u32>> = local
            .iter()
            .map(|(_, names)| names.iter().map(|n| lookup.code(n)).collect())
            .collect();
        let names = lookup.into_names();
        local
            .into_par_iter()
            .zip(maps)
            .filter(|(_, map)| map.iter().copied().ne(0..map.len() as u32))
            .for_each(|((codes, _), map)| {
                for code in codes.iter_mut() {
                    *code = map[*code as usize];
                }
            });
        Ok(Coded { codes, names })
    }

    /// Column `name` of every piece as text keys, as [`Table::keys`] makes them; errors name
    /// rows of the whole table.
    pub(crate) fn keys(&self, name: &str, role: &'static str) -> Result<Vec<ArrayRef>, TableError> {
        self.tables()
            .map(|(first, table)| {
                table.keys(name, role).map_err(|e| match e {
                    TableError::MissingKey {
                        path,
                        row,
                        column,
                        role,
                    } => TableError::MissingKey {
                        path,
                        row: row + first,
                        column,
                        role,
                    },
                    e => e,
                })
            })
            .collect()
    }

    /// Where each piece starts, in rows of the whole table; [`locate`] finds a row's piece.
    pub(crate) fn starts(&self) -> Vec<usize> {
        self.tables().map(|(first, _)| first).collect()
    }

    /// Each piece as a [`Table`], with the number of rows before it.
    pub(crate) fn tables(&self) -> impl Iterator<Item = (usize, Table)> + '_ {
        self.batches.iter().scan(0, |before, batch| {
            let first = *before;
            *before += batch.num_rows();
            Some((
                first,
                Table {
                    batch: batch.clone(),
                    source: self.source.clone(),
                },
            ))
        })
    }
}

/// Row `row` of a table in pieces that start at `starts` (see [`Pieces::starts`]) as its piece
/// and its row in that piece.
pub(crate) fn locate(starts: &[usize], row: usize) -> (usize, usize) {
    let piece = starts.partition_point(|&start| start <= row) - 1;
    (piece, row - starts[piece])
}

/// Keys (class labels, group ids) as small numbers: `names[codes[row]]` is row `row`'s key.
/// Hashing each key once here lets grouping and counting index arrays instead of hashing
/// strings again for every use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Coded {
    pub(crate) codes: Vec<u32>,
    /// In order of first appearance.
    pub(crate) names: Vec<String>,
}

impl Coded {
    pub(crate) fn of<'a>(keys: impl IntoIterator<Item = &'a str>) -> Coded {
        let mut lookup = hash::Lookup::default();
        let codes = keys.into_iter().map(|key| lookup.code(key)).collect();
        Coded {
            codes,
            names: lookup.into_names(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.codes.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }

    /// The codes in the sorted order of their names.
    pub(crate) fn sorted_codes(&self) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.names.len() as u32).collect();
        order.sort_by(|&a, &b| self.names[a as usize].cmp(&self.names[b as usize]));
        order
    }
}

/// While any is alive, memory the data stages free stays with the process for their next
/// allocations, also across stages: memory handed back and asked for again is fresh memory,
/// which the kernel must find and zero page by page (on the virtual machines sluice is measured
/// on, a gigabyte of fresh pages costs about a second; `split` and `normalize` reusing what
/// `clean` freed took 6 % off the tables pipeline). When the last one is dropped and no data
/// stage starts for [`IDLE`], the free memory goes back to the operating system, so that a
/// long-lived sluice (`watch`, or a pipeline that goes on to train) does not sit on gigabytes:
/// glibc alone would keep them (its threshold for mapping allocations rises as they are freed).
///
/// The tuning is process-wide and, once set, stays for the life of the process, so the library
/// never sets it on its own: a scope does nothing unless the binary opted in with
/// [`keep_freed_memory_for_data_stages`] before it was entered.
pub(crate) struct MemoryScope {
    /// Whether this scope counts (the process had opted in when it was entered).
    tuned: bool,
}

/// Whether the process opted into the data stages' allocator tuning.
static TUNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Opts this process into the data stages' allocator tuning (`table::MemoryScope`): from the first
/// data stage on, freed memory stays with the process for the next data stage (no allocation is
/// mapped on its own, and the heap is trimmed only past 1 GiB free or once data stages have been
/// idle for a while). Worth it in a process that runs data stages one after another (`sluice run`,
/// `sluice watch`); not in one that never runs them, or that must keep its footprint small
/// between requests (`sluice serve`), since the tuning outlives the stages.
pub fn keep_freed_memory_for_data_stages() {
    TUNED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// How long the free memory of finished data stages is kept for the next one: longer than
/// hashing a stage's outputs takes before its successor starts.
const IDLE: std::time::Duration = std::time::Duration::from_secs(2);

/// Data stages running, and how many have started so far (to tell whether one started and
/// ended while a trim was waiting).
static ACTIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl MemoryScope {
    pub(crate) fn enter() -> MemoryScope {
        if !TUNED.load(std::sync::atomic::Ordering::SeqCst) {
            return MemoryScope { tuned: false };
        }
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            static ONCE: std::sync::Once = std::sync::Once::new();
            // SAFETY: `mallopt` only changes a malloc tuning parameter; any value is valid.
            ONCE.call_once(|| unsafe {
                // Every allocation from the heap, trimmed only past 1 GiB free or once idle.
                libc::mallopt(libc::M_MMAP_MAX, 0);
                libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
            });
        }
        STARTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        ACTIVE.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        MemoryScope { tuned: true }
    }
}

impl Drop for MemoryScope {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::SeqCst;
        if !self.tuned || ACTIVE.fetch_sub(1, SeqCst) != 1 {
            return;
        }
        let started = STARTED.load(SeqCst);
        let trim = move || {
            std::thread::sleep(IDLE);
            if ACTIVE.load(SeqCst) == 0 && STARTED.load(SeqCst) == started {
                // SAFETY: `malloc_trim` only returns free heap memory to the operating system.
                #[cfg(all(target_os = "linux", target_env = "gnu"))]
                unsafe {
                    libc::malloc_trim(0);
                }
            }
        };
        // Without a thread (none to be had), trim now: memory back is the safe side.
        if std::thread::Builder::new()
            .name("sluice-trim".into())
            .spawn(trim)
            .is_err()
        {
            // SAFETY: as above.
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use std::sync::Arc;

    /// No test of this library opts in: a data stage run from a library that was not told to
    /// tune the allocator leaves it alone.
    #[test]
    fn memory_scopes_change_nothing_unless_the_process_opted_in() {
        let scope = MemoryScope::enter();
        assert!(!scope.tuned);
        assert_eq!(ACTIVE.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    fn table() -> Table {
        let batch = RecordBatch::try_from_iter([
            (
                "species",
                Arc::new(StringArray::from(vec![Some("a"), None])) as _,
            ),
            ("n", Arc::new(Int64Array::from(vec![1, 2])) as _),
        ])
        .unwrap();
        Table {
            batch,
            source: "t.csv".into(),
        }
    }

    #[test]
    fn unknown_columns_are_named_with_the_alternatives() {
        let e = table().column_index("specis").unwrap_err();
        assert_eq!(
            e.to_string(),
            "`t.csv` has no column `specis`; did you mean `species`?"
        );
        assert_eq!(e.hint().as_deref(), Some("its columns are `species`, `n`"));
    }

    #[test]
    fn coded_keys_name_rows_of_the_whole_table() {
        let a = RecordBatch::try_from_iter([(
            "k",
            Arc::new(StringArray::from(vec!["b", "a", "b"])) as _,
        )])
        .unwrap();
        let b = RecordBatch::try_from_iter([(
            "k",
            Arc::new(StringArray::from(vec![Some("c"), None])) as _,
        )])
        .unwrap();
        let schema = a.schema();
        let pieces = |batches: Vec<RecordBatch>| Pieces {
            schema: schema.clone(),
            batches,
            source: "t.parquet".into(),
        };
        let c = RecordBatch::try_from_iter([(
            "k",
            Arc::new(StringArray::from(vec!["a", "c", "b"])) as _,
        )])
        .unwrap();
        let coded = pieces(vec![a.clone(), b.slice(0, 1), c])
            .coded("k", "label")
            .unwrap();
        assert_eq!(coded.codes, [0, 1, 0, 2, 1, 2, 0]);
        assert_eq!(coded.names, ["b", "a", "c"]);
        assert_eq!(coded.sorted_codes(), [1, 0, 2]);
        let e = pieces(vec![a, b]).coded("k", "label").unwrap_err();
        assert_eq!(
            e.to_string(),
            "`t.parquet` row 5: column `k` is empty; every row needs a label"
        );
    }

    #[test]
    fn keys_are_text_and_empty_keys_are_errors() {
        let keys = table().keys("n", "group").unwrap();
        let keys: Vec<&str> = keys.as_string::<i32>().iter().flatten().collect();
        assert_eq!(keys, ["1", "2"]);
        let e = table().keys("species", "label").unwrap_err().to_string();
        assert_eq!(
            e,
            "`t.csv` row 2: column `species` is empty; every row needs a label"
        );
    }
}
