//! Where the chunks lie: the header, cuts after a newline near every multiple of the chunk size
//! (or, for files with quoted fields, at record boundaries found in order), and [`with_chunk`],
//! which reads one chunk into this thread's reused buffer.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// A byte range of the file holding whole records.
#[derive(Debug, Clone, Copy)]
pub(super) struct Chunk {
    start: u64,
    end: u64,
}

/// Calls `f` with the bytes of `chunk`, read into this thread's buffer: a fresh buffer per chunk
/// would have the kernel find and zero new pages for every one (a gigabyte of them per
/// gigabyte read), which cost more than reading.
pub(super) fn with_chunk<T>(
    file: &File,
    chunk: Chunk,
    f: impl FnOnce(&[u8]) -> Option<T>,
) -> Option<T> {
    thread_local! {
        static BUFFER: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    }
    // Taken out while in use, so that nothing run inside `f` can see it borrowed.
    let mut buf = BUFFER.take();
    buf.resize((chunk.end - chunk.start) as usize, 0);
    let result = match file.read_exact_at(&mut buf, chunk.start) {
        Ok(()) => f(&buf),
        Err(_) => None,
    };
    BUFFER.set(buf);
    result
}

/// The header's names and the byte offset where the data starts; `None` when the header is
/// unusual in any way (the sequential reader then reports it).
pub(super) fn header(file: &File, size: u64) -> Option<(Vec<String>, u64)> {
    let want = size.min(1 << 20) as usize;
    let mut prefix = vec![0u8; want];
    file.read_exact_at(&mut prefix, 0).ok()?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(prefix.as_slice());
    let names: Vec<String> = reader.headers().ok()?.iter().map(String::from).collect();
    let start = reader.position().byte();
    // The header must have ended inside the prefix, with its terminator.
    if (start as usize >= prefix.len() && (want as u64) < size) || names.is_empty() {
        return None;
    }
    let mut seen = std::collections::BTreeSet::new();
    if !names.iter().all(|n| seen.insert(n.as_str())) {
        return None;
    }
    Some((names, start))
}

/// Cuts `[start, size)` after a newline near every multiple of `chunk` bytes. Exact for files
/// without quotes; [`exact_cuts`] handles the others.
pub(super) fn newline_cuts(file: &File, start: u64, size: u64, chunk: usize) -> Option<Vec<Chunk>> {
    let mut cuts = vec![start];
    let mut at = start + chunk as u64;
    let mut window = vec![0u8; 1 << 16];
    while at < size {
        let len = ((size - at) as usize).min(window.len());
        file.read_exact_at(&mut window[..len], at).ok()?;
        match window[..len].iter().position(|&b| b == b'\n') {
            Some(i) => {
                let cut = at + i as u64 + 1;
                cuts.push(cut);
                at = cut + chunk as u64;
            }
            None => at += len as u64,
        }
    }
    Some(chunks(cuts, size))
}

fn chunks(mut cuts: Vec<u64>, size: u64) -> Vec<Chunk> {
    if cuts.last() != Some(&size) {
        cuts.push(size);
    }
    cuts.windows(2)
        .filter(|w| w[1] > w[0])
        .map(|w| Chunk {
            start: w[0],
            end: w[1],
        })
        .collect()
}

/// Cuts at record boundaries found by tokenizing the whole file in order: for files with
/// quoted fields, where a newline may lie inside a value.
pub(super) fn exact_cuts(file: &File, start: u64, size: u64, chunk: usize) -> Option<Vec<Chunk>> {
    let mut reader = csv_core::Reader::new();
    let mut cuts = vec![start];
    let mut buf = vec![0u8; 1 << 20];
    let mut output = vec![0u8; 1 << 16];
    let mut ends = vec![0usize; 1 << 12];
    let mut pos = start;
    let mut next = start + chunk as u64;
    while pos < size {
        let len = ((size - pos) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..len], pos).ok()?;
        let mut input = &buf[..len];
        while !input.is_empty() {
            let (result, nin, _, _) = reader.read_record(input, &mut output, &mut ends);
            input = &input[nin..];
            pos += nin as u64;
            match result {
                csv_core::ReadRecordResult::Record if pos >= next => {
                    cuts.push(pos);
                    next = pos + chunk as u64;
                }
                csv_core::ReadRecordResult::End => return None,
                _ => {}
            }
        }
    }
    Some(chunks(cuts, size))
}
