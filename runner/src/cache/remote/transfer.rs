//! The requests: a record down, blobs down (hashed while they stream, filed only when they match),
//! blobs and then their record up. Uploads read the local cache's blob files, which are
//! immutable, through a memory map: the same bytes as the output the stage wrote, never a file
//! a late process could still be changing, and no copy into memory first.

use super::connect::Clients;
use super::describe;
use super::record::{RemoteRecord, MAX_RECORD};
use super::url::RemoteUrl;
use super::Shared;
use crate::cache::local::{LocalStore, BLOB_MODE};
use crate::cache::StageRecord;
use crate::hash::{ContentHash, EntryKind};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Blobs this large go up in parts where the store supports it (S3).
const MULTIPART_FROM: u64 = 64 << 20;
/// Parts are a sixteenth of the blob, from 16 to 128 MiB (S3 allows 10,000 parts of 5 MiB to
/// 5 GiB): fewer, larger parts cost fewer requests and less assembly on the server.
fn part_size(len: usize) -> usize {
    (len / 16).clamp(16 << 20, 128 << 20)
}
/// Parts of one blob in flight at once.
const PARTS_AT_ONCE: usize = 4;

/// What one `cache push` or `cache pull` of a stage moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    pub blobs: u64,
    pub bytes: u64,
}

impl Moved {
    /// What moved since `before` was read off the same counters.
    pub(crate) fn since(self, before: Moved) -> Moved {
        Moved {
            blobs: self.blobs - before.blobs,
            bytes: self.bytes - before.bytes,
        }
    }
}

pub(crate) enum FetchError {
    /// A blob's content does not match its name: tampered with or truncated on the remote.
    Corrupt(String),
    /// The remote failed (network, refusal).
    Failed(String),
}

pub(crate) struct Wanted {
    pub hash: ContentHash,
    pub exec: bool,
    /// Its place in the local cache.
    pub dest: PathBuf,
}

fn object(key: String) -> ObjectPath {
    // `Path::from` splits on `/`; `Path::join` would escape it.
    ObjectPath::from(key)
}

/// Every blob of a record with whether it is executable (a symlink's target text is not).
/// Outputs kept inline in the record have none.
pub(crate) fn blobs_with_modes(rec: &StageRecord, exec: &[String]) -> Vec<(ContentHash, bool)> {
    let mut out: Vec<(ContentHash, bool)> = Vec::new();
    for (name, o) in rec.outputs.iter().filter(|(_, o)| o.inline.is_none()) {
        match &o.tree {
            None => out.push((o.hash, exec.contains(name))),
            Some(entries) => {
                out.extend(entries.iter().map(|e| (e.hash, e.kind == EntryKind::Exec)))
            }
        }
    }
    out.sort_by_key(|(h, _)| h.0);
    out.dedup_by_key(|(h, _)| h.0);
    out
}

pub(crate) async fn get_record(
    c: &Clients,
    url: &RemoteUrl,
    key: &ContentHash,
) -> Result<Option<Vec<u8>>, String> {
    let path = object(url.record_key(&key.hex()));
    let got = match c.meta.get(&path).await {
        Ok(g) => g,
        Err(e) if describe::is_miss(&e) => return Ok(None),
        Err(e) => return Err(describe::error(&e)),
    };
    let mut stream = got.into_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| describe::error(&e))?;
        if bytes.len() + chunk.len() > MAX_RECORD {
            return Err(format!(
                "the record for key {} is over {} MiB",
                key.short(),
                MAX_RECORD >> 20
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Some(bytes))
}

/// Lists the remote's prefix (one page): an error for a bucket that does not exist.
pub(crate) async fn list_prefix(c: &Clients, url: &RemoteUrl) -> Result<(), String> {
    let prefix = (!url.prefix.is_empty()).then(|| object(url.prefix.clone()));
    c.meta
        .list_with_delimiter(prefix.as_ref())
        .await
        .map(|_| ())
        .map_err(|e| {
            let why = describe::error(&e);
            // A missing bucket: "not found" alone would read as a missing object.
            if describe::is_miss(&e) || why.starts_with("404") {
                format!("{why}: the bucket does not exist")
            } else {
                why
            }
        })
}

/// Downloads `wanted` with at most `slots` transfers at once; the first failure ends it.
pub(crate) async fn fetch_all(
    c: Arc<Clients>,
    url: Arc<RemoteUrl>,
    shared: Arc<Shared>,
    slots: Arc<tokio::sync::Semaphore>,
    wanted: Vec<Wanted>,
) -> Result<Vec<(PathBuf, ContentHash)>, FetchError> {
    let tasks = wanted.into_iter().map(|w| {
        let (c, url, shared, slots) = (c.clone(), url.clone(), shared.clone(), slots.clone());
        async move {
            let _permit = slots.acquire_owned().await.expect("never closed");
            fetch_one(&c, &url, &shared, w).await
        }
    });
    futures::stream::iter(tasks)
        .buffer_unordered(super::TRANSFERS)
        .try_collect::<Vec<(PathBuf, ContentHash)>>()
        .await
}

async fn fetch_one(
    c: &Clients,
    url: &RemoteUrl,
    shared: &Shared,
    w: Wanted,
) -> Result<(PathBuf, ContentHash), FetchError> {
    let hex = w.hash.hex();
    let got = match c.bulk.get(&object(url.blob_key(&hex))).await {
        Ok(g) => g,
        Err(e) if describe::is_miss(&e) => {
            shared.repair.insert(w.hash);
            return Err(FetchError::Corrupt(format!(
                "blob {} is missing",
                w.hash.short()
            )));
        }
        Err(e) => return Err(FetchError::Failed(describe::error(&e))),
    };
    let dir = w
        .dest
        .parent()
        .expect("blob paths have a parent")
        .to_path_buf();
    std::fs::create_dir_all(&dir)
        .map_err(|e| FetchError::Failed(format!("cannot write the local cache: {e}")))?;
    let tmp = crate::atomic::temp_path_for(&w.dest);
    let result = stream_to(got, &tmp, &w).await;
    match result {
        Ok(size) => {
            shared
                .counters
                .fetched_blobs
                .fetch_add(1, Ordering::Relaxed);
            shared
                .counters
                .fetched_bytes
                .fetch_add(size, Ordering::Relaxed);
            Ok((w.dest, w.hash))
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            if let FetchError::Corrupt(_) = &e {
                shared.repair.insert(w.hash);
            }
            Err(e)
        }
    }
}

/// Streams a blob into `tmp` while hashing it; renames it into place only when it matches.
/// Hashing and writing happen on a blocking thread fed through a small queue, so the next
/// chunk is received while the last one is hashed and written (done in turn on one task, the
/// download ran at 77–89 % of curl's speed).
async fn stream_to(
    got: object_store::GetResult,
    tmp: &std::path::Path,
    w: &Wanted,
) -> Result<u64, FetchError> {
    let io = |e: std::io::Error| FetchError::Failed(format!("cannot write the local cache: {e}"));
    let file = std::fs::File::create(tmp).map_err(io)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(32);
    let sink = tokio::task::spawn_blocking(move || {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        while let Some(chunk) = rx.blocking_recv() {
            hasher.update(&chunk);
            size += chunk.len() as u64;
            out.write_all(&chunk)?;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        Ok::<_, std::io::Error>((file, ContentHash(*hasher.finalize().as_bytes()), size))
    });
    let mut stream = got.into_stream();
    let mut failed = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            // A closed queue means the writer failed; its error is reported below.
            Ok(bytes) => {
                if tx.send(bytes).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                failed = Some(FetchError::Failed(describe::error(&e)));
                break;
            }
        }
    }
    drop(tx);
    let written = sink
        .await
        .map_err(|e| FetchError::Failed(format!("the local cache writer stopped: {e}")))?;
    if let Some(e) = failed {
        return Err(e);
    }
    let (file, actual, size) = written.map_err(io)?;
    if actual != w.hash {
        return Err(FetchError::Corrupt(format!(
            "blob {} holds content {} ({size} bytes): tampered with or truncated",
            w.hash.short(),
            actual.short()
        )));
    }
    file.set_permissions(std::fs::Permissions::from_mode(
        BLOB_MODE[usize::from(w.exec)],
    ))
    .map_err(io)?;
    drop(file);
    std::fs::rename(tmp, &w.dest).map_err(io)?;
    Ok(size)
}

/// `None` when the remote has every blob; else the first it lacks.
pub(crate) async fn has_all(
    c: &Clients,
    url: &RemoteUrl,
    blobs: Vec<ContentHash>,
) -> Result<Option<ContentHash>, String> {
    for h in blobs {
        match c.meta.head(&object(url.blob_key(&h.hex()))).await {
            Ok(_) => {}
            Err(e) if describe::is_miss(&e) => return Ok(Some(h)),
            Err(e) => return Err(describe::error(&e)),
        }
    }
    Ok(None)
}

/// One record's upload, prepared on the calling thread (which has the local store).
pub(crate) struct PushJob {
    record: RemoteRecord,
    /// Blob hash, local file, size.
    blobs: Vec<(ContentHash, PathBuf, u64)>,
    /// A blob the local cache lacks: nothing is uploaded, since the record would name it.
    missing: Option<ContentHash>,
}

impl PushJob {
    pub(crate) fn new(local: &LocalStore, rec: &StageRecord) -> PushJob {
        let mut exec = Vec::new();
        let mut missing = None;
        let mut blobs = Vec::new();
        for (name, o) in &rec.outputs {
            if o.tree.is_none() && o.inline.is_none() {
                if let Ok(m) = std::fs::metadata(local.blob_path(&o.hash)) {
                    if m.permissions().mode() & 0o111 != 0 {
                        exec.push(name.clone());
                    }
                }
            }
        }
        for (hash, _) in blobs_with_modes(rec, &exec) {
            let path = local.blob_path(&hash);
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => blobs.push((hash, path, m.len())),
                _ => missing = missing.or(Some(hash)),
            }
        }
        PushJob {
            record: RemoteRecord {
                record: rec.clone(),
                exec,
            },
            blobs,
            missing,
        }
    }
}

/// Uploads a record's blobs (those the remote lacks, or holds damaged), then the record.
pub(crate) async fn push(
    c: &Arc<Clients>,
    url: &Arc<RemoteUrl>,
    shared: &Arc<Shared>,
    slots: &Arc<tokio::sync::Semaphore>,
    job: PushJob,
) -> Result<(), String> {
    if let Some(h) = job.missing {
        return Err(format!("the local cache lacks blob {}", h.short()));
    }
    let uploads = job.blobs.into_iter().map(|(hash, path, size)| {
        let (c, url, shared, slots) = (c.clone(), url.clone(), shared.clone(), slots.clone());
        async move {
            let _permit = slots.acquire_owned().await.expect("never closed");
            put_blob(&c, &url, &shared, hash, &path, size).await
        }
    });
    futures::stream::iter(uploads)
        .buffer_unordered(super::TRANSFERS)
        .try_collect::<Vec<()>>()
        .await?;
    // Last: a record on the remote always names blobs that are there.
    let bytes = serde_json::to_vec(&job.record).map_err(|e| e.to_string())?;
    let key = object(url.record_key(&job.record.record.key.hex()));
    c.meta
        .put(&key, PutPayload::from(bytes))
        .await
        .map_err(|e| describe::error(&e))?;
    shared
        .counters
        .pushed_records
        .fetch_add(1, Ordering::Relaxed);
    Ok(())
}

async fn put_blob(
    c: &Clients,
    url: &RemoteUrl,
    shared: &Shared,
    hash: ContentHash,
    path: &std::path::Path,
    size: u64,
) -> Result<(), String> {
    let key = object(url.blob_key(&hash.hex()));
    // Content-addressed: a blob of the right size is the right blob, unless a download proved
    // this one damaged.
    if !shared.repair.contains(&hash) {
        match c.meta.head(&key).await {
            Ok(meta) if meta.size == size => return Ok(()),
            Ok(_) => {}
            Err(e) if describe::is_miss(&e) => {}
            Err(e) => return Err(describe::error(&e)),
        }
    }
    let bytes = map(path).map_err(|e| format!("cannot read blob {}: {e}", hash.short()))?;
    if c.multipart && size >= MULTIPART_FROM {
        put_in_parts(&c.bulk, &key, bytes).await?;
    } else {
        c.bulk
            .put(&key, PutPayload::from(bytes))
            .await
            .map_err(|e| describe::error(&e))?;
    }
    shared.repair.remove(&hash);
    shared.counters.pushed_blobs.fetch_add(1, Ordering::Relaxed);
    shared
        .counters
        .pushed_bytes
        .fetch_add(size, Ordering::Relaxed);
    Ok(())
}

/// The file's bytes without copying them: a read-only map (an empty file maps to nothing).
fn map(path: &std::path::Path) -> std::io::Result<bytes::Bytes> {
    let file = std::fs::File::open(path)?;
    if file.metadata()?.len() == 0 {
        return Ok(bytes::Bytes::new());
    }
    // SAFETY: blobs are read-only files that sluice replaces by rename, never rewrites in place;
    // a blob changed under the map anyway would be uploaded with wrong bytes, which the reader's
    // hash check rejects.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    Ok(bytes::Bytes::from_owner(map))
}

async fn put_in_parts(
    store: &Arc<dyn ObjectStore>,
    key: &ObjectPath,
    bytes: bytes::Bytes,
) -> Result<(), String> {
    let mut upload = store
        .put_multipart(key)
        .await
        .map_err(|e| describe::error(&e))?;
    let part = part_size(bytes.len());
    let parts: Vec<_> = (0..bytes.len())
        .step_by(part)
        .map(|at| {
            upload.put_part(PutPayload::from(
                bytes.slice(at..(at + part).min(bytes.len())),
            ))
        })
        .collect();
    let sent = futures::stream::iter(parts)
        .buffer_unordered(PARTS_AT_ONCE)
        .try_collect::<Vec<()>>()
        .await;
    match sent {
        Ok(_) => upload
            .complete()
            .await
            .map(|_| ())
            .map_err(|e| describe::error(&e)),
        Err(e) => {
            let _ = upload.abort().await;
            Err(describe::error(&e))
        }
    }
}
