//! The record log: every stage record the local cache holds, one line each, in
//! `.sluice/cache/records.log`: `<key hex> <record JSON>\n`, or `<key hex> -\n` for a record
//! dropped after it proved corrupt. A later line for a key replaces an earlier one.
//!
//! Records were files of their own (`stages/<key>.json`); on ext4 the new file cost more than the
//! stage's own output, so a cold run of small stages spent most of its system time making them.
//! Appending costs no inode. Lookups go through an index of key → line built on the first
//! lookup by scanning the log for keys (records are parsed only when asked for) and kept
//! up to date by this process's own appends; a miss checks the file's size and identity and
//! scans what other processes added, or rescans a log `gc` replaced.
//!
//! Crash safety: a line is written with one `write` on an `O_APPEND` descriptor after the blobs
//! it names are in place. A run killed in the middle leaves a line without its newline, which no
//! reader takes (a cut JSON object does not parse, and a line is only read up to its newline);
//! the next writer ends it with a newline before its own first line. Records from older versions
//! (`stages/<key>.json`) are still read, and `gc` moves the ones it keeps into the log.

use super::{readable_format, StageRecord};
use crate::atomic;
use crate::hash::ContentHash;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// `<64 hex digits><space>`.
const PREFIX: usize = 65;
/// How much of the log a scan reads at a time.
const CHUNK: usize = 1 << 20;
/// A longer line is not one sluice wrote (a 100,000-file directory output is ~20 MB); it is
/// skipped, never buffered whole.
const MAX_LINE: usize = 64 << 20;
/// The most keys indexed (~60 bytes each): far more records than any workspace keeps after a
/// `gc`, and a bound on what a damaged or hostile log can make sluice allocate. Records past it
/// are not found (their stages run again), and a warning says to run `sluice gc`.
const MAX_KEYS: usize = 1 << 22;

pub(crate) struct RecordLog {
    path: PathBuf,
    /// Where older versions filed records, one file each.
    legacy: PathBuf,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The log, open for reading and appending, once it exists.
    file: Option<Opened>,
    /// Key → its latest line; `None` until the first lookup (a run that only stores never
    /// scans the log).
    index: Option<HashMap<ContentHash, Slot>>,
    /// How far the log has been indexed: the end of its last complete line seen.
    scanned: u64,
    /// Whether the legacy directory existed when first looked at.
    legacy: Option<bool>,
}

struct Opened {
    file: File,
    id: (u64, u64),
}

#[derive(Clone, Copy)]
struct Slot {
    offset: u64,
    /// The line's length with its newline.
    len: u64,
}

fn identity(m: &fs::Metadata) -> (u64, u64) {
    (m.dev(), m.ino())
}

impl RecordLog {
    pub(crate) fn new(cache_dir: &Path) -> RecordLog {
        RecordLog {
            path: cache_dir.join("records.log"),
            legacy: cache_dir.join("stages"),
            state: Mutex::new(State::default()),
        }
    }

    fn legacy_path(&self, key: &ContentHash) -> PathBuf {
        self.legacy.join(format!("{}.json", key.hex()))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves at worst an index missing a line: a miss.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `record` (its blobs must already be in place).
    pub(crate) fn append(&self, record: &StageRecord) -> io::Result<()> {
        let json = serde_json::to_vec(record).map_err(io::Error::other)?;
        let mut line = Vec::with_capacity(PREFIX + json.len() + 1);
        line.extend_from_slice(record.key.hex().as_bytes());
        line.push(b' ');
        line.extend_from_slice(&json);
        line.push(b'\n');
        self.write_line(&record.key, &line)
    }

    /// Drops `key`'s record: a line saying so, and the legacy file if there is one.
    pub(crate) fn forget(&self, key: &ContentHash) {
        let _ = fs::remove_file(self.legacy_path(key));
        if self.path.exists() {
            let line = format!("{} -\n", key.hex());
            let _ = self.write_line(key, line.as_bytes());
        }
    }

    fn write_line(&self, key: &ContentHash, line: &[u8]) -> io::Result<()> {
        let mut st = self.state();
        let opened = match st.file.take() {
            Some(o) => o,
            // Lines other processes wrote before are indexed on the next miss (`refresh`);
            // this process's own are indexed as they are written.
            None => self.open_for_append()?,
        };
        let result = (|| {
            let mut f = &opened.file;
            f.write_all(line)?;
            // With `O_APPEND` the position is the end of what this write added.
            f.stream_position()
        })();
        st.file = Some(opened);
        let end = result?;
        let offset = end - line.len() as u64;
        let tombstone = line.ends_with(b" -\n");
        if let Some(index) = st.index.as_mut() {
            if tombstone {
                index.remove(key);
            } else {
                index.insert(
                    *key,
                    Slot {
                        offset,
                        len: line.len() as u64,
                    },
                );
            }
        }
        if st.scanned == offset {
            st.scanned = end;
        }
        Ok(())
    }

    /// Opens (creating) the log for appending, and ends a line a killed writer left without
    /// its newline, so that the next line is not glued to it.
    fn open_for_append(&self) -> io::Result<Opened> {
        let file = match open_rw(&self.path, true) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(self.path.parent().expect("the log is inside the cache"))?;
                open_rw(&self.path, true)?
            }
            other => other?,
        };
        let meta = file.metadata()?;
        if meta.len() > 0 {
            let mut last = [0u8];
            file.read_exact_at(&mut last, meta.len() - 1)?;
            if last[0] != b'\n' {
                (&file).write_all(b"\n")?;
            }
        }
        Ok(Opened {
            id: identity(&meta),
            file,
        })
    }

    /// The record for `key`, if the log (or a legacy file) has one that parses, is of a format
    /// this sluice reads and is for `key`.
    pub(crate) fn lookup(&self, key: &ContentHash) -> Option<StageRecord> {
        let mut st = self.state();
        let mut slot = self.indexed(&mut st).get(key).copied();
        // A miss may be a line another process added since; a hit may be in a log `gc` has
        // since replaced (the record is then dropped, or elsewhere in the new log).
        if (slot.is_none() || !self.still_current(&st)) && self.refresh(&mut st) {
            slot = st.index.as_ref().and_then(|i| i.get(key).copied());
        }
        if let Some(slot) = slot {
            let file = &st.file.as_ref()?.file;
            return read_line(file, slot).and_then(|line| parse_line(&line, key));
        }
        if *st.legacy.get_or_insert_with(|| self.legacy.is_dir()) {
            return record_for(&fs::read(self.legacy_path(key)).ok()?, key);
        }
        None
    }

    /// Whether no record is held: no log or an empty one, and no legacy files.
    pub(crate) fn is_empty(&self) -> bool {
        fs::metadata(&self.path).map_or(true, |m| m.len() == 0) && !self.legacy.is_dir()
    }

    /// Whether the open log is still the one at the log's path.
    fn still_current(&self, st: &State) -> bool {
        let open = st.file.as_ref().map(|o| o.id);
        open.is_some() && fs::metadata(&self.path).ok().map(|m| identity(&m)) == open
    }

    /// The index, built by a full scan the first time.
    fn indexed<'a>(&self, st: &'a mut State) -> &'a HashMap<ContentHash, Slot> {
        if st.index.is_none() {
            self.rescan(st);
        }
        st.index.get_or_insert_with(HashMap::new)
    }

    /// Catches up with lines other processes appended, or rescans a log replaced since it was
    /// opened. True when anything new was indexed.
    fn refresh(&self, st: &mut State) -> bool {
        let Ok(meta) = fs::metadata(&self.path) else {
            return false;
        };
        match &st.file {
            Some(o) if o.id == identity(&meta) => {
                if meta.len() <= st.scanned {
                    return false;
                }
                let from = st.scanned;
                let index = st.index.get_or_insert_with(HashMap::new);
                st.scanned = scan(&o.file, from, index, MAX_KEYS);
                true
            }
            _ => {
                self.rescan(st);
                true
            }
        }
    }

    fn rescan(&self, st: &mut State) {
        st.file = open_rw(&self.path, false).ok().and_then(|file| {
            let id = identity(&file.metadata().ok()?);
            Some(Opened { file, id })
        });
        let mut index = HashMap::new();
        st.scanned = match &st.file {
            Some(o) => scan(&o.file, 0, &mut index, MAX_KEYS),
            None => 0,
        };
        st.index = Some(index);
    }

    /// Every record held, the log's over a legacy file's for the same key (`gc`).
    pub(crate) fn all(&self) -> Vec<StageRecord> {
        let mut st = self.state();
        self.rescan(&mut st);
        let mut found: HashMap<ContentHash, StageRecord> = HashMap::new();
        if let Ok(rd) = fs::read_dir(&self.legacy) {
            for entry in rd.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(key) = name.strip_suffix(".json").and_then(ContentHash::parse) else {
                    continue;
                };
                if let Some(rec) = fs::read(entry.path())
                    .ok()
                    .and_then(|b| record_for(&b, &key))
                {
                    found.insert(key, rec);
                }
            }
        }
        if let (Some(o), Some(index)) = (&st.file, &st.index) {
            for (key, slot) in index {
                if let Some(rec) = read_line(&o.file, *slot).and_then(|l| parse_line(&l, key)) {
                    found.insert(*key, rec);
                }
            }
        }
        found.into_values().collect()
    }

    /// The record files older versions left (`replace` removes them).
    pub(crate) fn legacy_files(&self) -> Vec<PathBuf> {
        fs::read_dir(&self.legacy)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        !atomic::is_temp_name(&p.file_name().unwrap_or_default().to_string_lossy())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Replaces the log with exactly `kept` (atomically) and removes the legacy files (`gc`).
    pub(crate) fn replace(&self, kept: &[&StageRecord]) -> io::Result<()> {
        let mut st = self.state();
        let mut bytes = Vec::new();
        for rec in kept {
            bytes.extend_from_slice(rec.key.hex().as_bytes());
            bytes.push(b' ');
            serde_json::to_writer(&mut bytes, rec).map_err(io::Error::other)?;
            bytes.push(b'\n');
        }
        if kept.is_empty() && !self.path.exists() {
            // Nothing to keep and no log: do not make one.
        } else {
            atomic::write(&self.path, &bytes)?;
        }
        for path in self.legacy_files() {
            fs::remove_file(path)?;
        }
        let _ = fs::remove_dir(&self.legacy);
        *st = State::default();
        Ok(())
    }
}

/// The log for reading and appending; made when `create` says so.
fn open_rw(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(create)
        .open(path)
}

/// Indexes the complete lines of `file` from `from`, up to `max_keys` keys; returns the end of
/// the last line read.
fn scan(file: &File, from: u64, index: &mut HashMap<ContentHash, Slot>, max_keys: usize) -> u64 {
    let mut warned = false;
    let mut buf = vec![0u8; CHUNK];
    // Where the line being read starts in the file, and how much of it `buf` holds.
    let (mut line_start, mut filled) = (from, 0usize);
    // The start of a line over `MAX_LINE` being skipped to its newline.
    let mut skipping: Option<u64> = None;
    loop {
        if filled == buf.len() {
            if buf.len() < MAX_LINE {
                buf.resize((buf.len() * 2).min(MAX_LINE), 0);
            } else {
                skipping.get_or_insert(line_start);
                line_start += filled as u64;
                filled = 0;
            }
        }
        let n = match file.read_at(&mut buf[filled..], line_start + filled as u64) {
            Ok(0) | Err(_) => return skipping.unwrap_or(line_start),
            Ok(n) => n,
        };
        let mut consumed = 0usize;
        let mut searched = filled;
        filled += n;
        while let Some(nl) = buf[searched..filled].iter().position(|&b| b == b'\n') {
            let end = searched + nl + 1;
            let line = &buf[consumed..end];
            if skipping.take().is_none() {
                if let Some(key) = line_key(line) {
                    if &line[PREFIX..] == b"-\n" {
                        index.remove(&key);
                    } else if index.len() < max_keys || index.contains_key(&key) {
                        let offset = line_start + consumed as u64;
                        let len = line.len() as u64;
                        index.insert(key, Slot { offset, len });
                    } else if !std::mem::replace(&mut warned, true) {
                        tracing::warn!(
                            "the cache's record log holds over {max_keys} records; the rest are \
                             not looked up (their stages run again): run `sluice gc`"
                        );
                    }
                }
            }
            consumed = end;
            searched = end;
        }
        buf.copy_within(consumed..filled, 0);
        filled -= consumed;
        line_start += consumed as u64;
    }
}

fn line_key(line: &[u8]) -> Option<ContentHash> {
    if line.len() < PREFIX + 2 || line[PREFIX - 1] != b' ' {
        return None;
    }
    ContentHash::parse(std::str::from_utf8(&line[..PREFIX - 1]).ok()?)
}

fn read_line(file: &File, slot: Slot) -> Option<Vec<u8>> {
    let len = usize::try_from(slot.len).ok()?;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, slot.offset).ok()?;
    buf.ends_with(b"\n").then_some(buf)
}

fn parse_line(line: &[u8], key: &ContentHash) -> Option<StageRecord> {
    if line_key(line).as_ref() != Some(key) {
        return None;
    }
    record_for(&line[PREFIX..line.len() - 1], key)
}

/// The record in `json`, if it parses, is of a format this sluice reads, and is for `key`.
fn record_for(json: &[u8], key: &ContentHash) -> Option<StageRecord> {
    let rec: StageRecord = serde_json::from_slice(json).ok()?;
    (readable_format(&rec) && &rec.key == key).then_some(rec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{OutputRecord, RECORD_FORMAT};
    use crate::paths::WorkPath;
    use std::collections::BTreeMap;

    fn record(key: &[u8], content: &[u8]) -> StageRecord {
        let path = serde_json::from_value::<WorkPath>(serde_json::json!("out/a")).unwrap();
        StageRecord {
            format: RECORD_FORMAT,
            stage: "s".into(),
            key: ContentHash::of(key),
            outputs: BTreeMap::from([(
                "o".to_string(),
                OutputRecord::new(path, ContentHash::of(content), None),
            )]),
        }
    }

    #[test]
    fn records_are_found_by_key_and_a_later_line_wins() {
        let dir = tempfile::tempdir().unwrap();
        let log = RecordLog::new(dir.path());
        assert!(log.lookup(&ContentHash::of(b"k")).is_none());
        assert!(
            !dir.path().join("records.log").exists(),
            "a lookup makes no log"
        );
        let (a, b) = (record(b"k", b"one"), record(b"j", b"two"));
        log.append(&a).unwrap();
        log.append(&b).unwrap();
        assert_eq!(log.lookup(&a.key), Some(a.clone()));
        let a2 = record(b"k", b"three");
        log.append(&a2).unwrap();
        assert_eq!(log.lookup(&a.key), Some(a2.clone()));
        // A fresh reader (another process) sees the same.
        let other = RecordLog::new(dir.path());
        assert_eq!(other.lookup(&a.key), Some(a2));
        assert_eq!(other.lookup(&b.key), Some(b));
        log.forget(&a.key);
        assert!(log.lookup(&a.key).is_none());
        assert!(RecordLog::new(dir.path()).lookup(&a.key).is_none());
    }

    #[test]
    fn lines_another_process_appends_are_found_on_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let (mine, theirs) = (RecordLog::new(dir.path()), RecordLog::new(dir.path()));
        let (a, b) = (record(b"a", b"1"), record(b"b", b"2"));
        mine.append(&a).unwrap();
        assert_eq!(mine.lookup(&a.key), Some(a.clone()));
        theirs.append(&b).unwrap();
        assert_eq!(mine.lookup(&b.key), Some(b));
        // A replaced log (`gc` in another process) is read again from the start.
        theirs.replace(&[]).unwrap();
        assert!(mine.lookup(&a.key).is_none());
    }

    #[test]
    fn a_line_cut_by_a_kill_is_never_read_and_the_next_line_is_not_glued_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.log");
        let (a, b, c) = (record(b"a", b"1"), record(b"b", b"2"), record(b"c", b"3"));
        RecordLog::new(dir.path()).append(&a).unwrap();
        RecordLog::new(dir.path()).append(&b).unwrap();
        let full = fs::read(&path).unwrap();
        let start = full.iter().position(|&x| x == b'\n').unwrap() + 1;
        // Every cut inside `b`'s line: `a` stays, `b` is not taken, `c` appended after it is.
        for cut in start..full.len() {
            fs::write(&path, &full[..cut]).unwrap();
            let reader = RecordLog::new(dir.path());
            assert_eq!(reader.lookup(&a.key), Some(a.clone()), "cut at {cut}");
            assert!(reader.lookup(&b.key).is_none(), "cut at {cut}");
            RecordLog::new(dir.path()).append(&c).unwrap();
            let reader = RecordLog::new(dir.path());
            assert_eq!(reader.lookup(&c.key), Some(c.clone()), "cut at {cut}");
            // Only the newline missing: the record was whole, and is taken once ended.
            let whole = cut == full.len() - 1;
            assert_eq!(reader.lookup(&b.key).is_some(), whole, "cut at {cut}");
        }
    }

    #[test]
    fn empty_only_without_a_record_anywhere() {
        let dir = tempfile::tempdir().unwrap();
        let log = RecordLog::new(dir.path());
        assert!(log.is_empty(), "no log yet");
        fs::write(dir.path().join("records.log"), b"").unwrap();
        assert!(log.is_empty(), "an empty log");
        log.append(&record(b"a", b"1")).unwrap();
        assert!(!log.is_empty());
        let other = tempfile::tempdir().unwrap();
        fs::create_dir(other.path().join("stages")).unwrap();
        assert!(!RecordLog::new(other.path()).is_empty(), "legacy records");
    }

    #[test]
    fn garbage_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let a = record(b"a", b"1");
        let b = record(b"b", b"2");
        let mut text = b"not a record\n\n{}\n".to_vec();
        // A line filed under another key than its record's, and one of a future format.
        let mut wrong = b.clone();
        wrong.key = a.key;
        text.extend(format!("{} ", b.key.hex()).as_bytes());
        text.extend(serde_json::to_vec(&wrong).unwrap());
        text.push(b'\n');
        let mut future = a.clone();
        future.format = 99;
        text.extend(format!("{} ", a.key.hex()).as_bytes());
        text.extend(serde_json::to_vec(&future).unwrap());
        text.extend(b"\n\0\0\0\n");
        fs::write(dir.path().join("records.log"), &text).unwrap();
        let log = RecordLog::new(dir.path());
        assert!(log.lookup(&a.key).is_none() && log.lookup(&b.key).is_none());
        log.append(&a).unwrap();
        assert_eq!(RecordLog::new(dir.path()).lookup(&a.key), Some(a));
    }

    #[test]
    fn an_overlong_line_is_skipped_without_being_held_whole() {
        let dir = tempfile::tempdir().unwrap();
        let a = record(b"a", b"1");
        let mut text = format!("{} ", a.key.hex()).into_bytes();
        text.resize(MAX_LINE + 10, b'x');
        text.push(b'\n');
        let b = record(b"b", b"2");
        text.extend(format!("{} ", b.key.hex()).as_bytes());
        text.extend(serde_json::to_vec(&b).unwrap());
        text.push(b'\n');
        fs::write(dir.path().join("records.log"), &text).unwrap();
        let log = RecordLog::new(dir.path());
        assert!(log.lookup(&a.key).is_none());
        assert_eq!(log.lookup(&b.key), Some(b));
    }

    #[test]
    fn the_index_stops_at_its_bound_and_keeps_updating_the_keys_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let log = RecordLog::new(dir.path());
        let recs: Vec<StageRecord> = (0..4u8).map(|i| record(&[i], &[i])).collect();
        for r in &recs {
            log.append(r).unwrap();
        }
        let again = record(&[0], b"newer");
        log.append(&again).unwrap();
        let file = File::open(dir.path().join("records.log")).unwrap();
        let mut index = HashMap::new();
        scan(&file, 0, &mut index, 2);
        assert_eq!(index.len(), 2);
        assert!(index.contains_key(&recs[0].key) && index.contains_key(&recs[1].key));
        assert!(!index.contains_key(&recs[2].key));
        // Key 0's later line still replaced its earlier one.
        let slot = index[&recs[0].key];
        assert_eq!(
            parse_line(&read_line(&file, slot).unwrap(), &recs[0].key),
            Some(again)
        );
    }

    #[test]
    fn records_of_older_versions_are_read_and_moved_into_the_log_by_replace() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (record(b"old", b"1"), record(b"new", b"2"));
        fs::create_dir_all(dir.path().join("stages")).unwrap();
        let file = dir.path().join(format!("stages/{}.json", old.key.hex()));
        fs::write(&file, serde_json::to_vec_pretty(&old).unwrap()).unwrap();
        let log = RecordLog::new(dir.path());
        log.append(&new).unwrap();
        assert_eq!(log.lookup(&old.key), Some(old.clone()));
        let mut all = log.all();
        all.sort_by_key(|r| r.stage.clone() + &r.key.hex());
        assert_eq!(all.len(), 2);
        log.replace(&[&old]).unwrap();
        assert!(!file.exists() && !dir.path().join("stages").exists());
        let fresh = RecordLog::new(dir.path());
        assert_eq!(fresh.lookup(&old.key), Some(old));
        assert!(fresh.lookup(&new.key).is_none());
    }
}
