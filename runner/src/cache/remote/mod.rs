//! `RemoteStore`: a stage cache shared between machines, on S3, an HTTP server that takes PUT,
//! or a shared directory, through `object_store`. It sits behind the local cache
//! (`TieredStore`): records and blobs are fetched into `.sluice/cache` and restored from there,
//! and results are uploaded from there.
//!
//! The engine is synchronous (worker threads, rayon); the remote is async. The store owns a
//! small runtime and every call from the engine is a task on it that the calling thread waits
//! for (`block`): that works from any thread, including one inside another runtime, where
//! `Runtime::block_on` would panic. Uploads are tasks the run does not wait for until its end
//! (`finish_run`), so stages go on while results go up.
//!
//! A remote is a convenience, never a reason for a run to fail: the first failure (an
//! unreachable host, a refused write, a wrong password) is said once and the remote is left
//! alone for the rest of the run. `--remote-required` turns such failures into a failed run.

mod aws_files;
pub mod config;
mod connect;
mod describe;
mod record;
mod transfer;
pub mod url;

pub use connect::{RemoteError, AUTH_VAR, TOKEN_VAR};

use super::local::LocalStore;
use super::{RestoreError, StageRecord};
use crate::events::Event;
use crate::hash::{ContentHash, Hasher};
use connect::Clients;
use crossbeam_channel::Sender;
use dashmap::{DashMap, DashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use url::RemoteUrl;

/// Blob transfers at once, per run.
const TRANSFERS: usize = 8;

/// How a remote is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSettings {
    /// As configured; may hold user info (from the environment), so it is never shown.
    pub url: String,
    /// Upload results (false: read-only, e.g. on laptops).
    pub push: bool,
    /// Where the setting came from, for messages.
    pub origin: String,
}

/// What the remote did during one run.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RemoteSummary {
    pub url: String,
    /// Stages restored from records found only on the remote.
    pub restored: u64,
    pub fetched_blobs: u64,
    pub fetched_bytes: u64,
    pub pushed_records: u64,
    pub pushed_blobs: u64,
    pub pushed_bytes: u64,
    /// Why the remote was left alone for the rest of the run, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

#[derive(Default)]
struct Counters {
    restored: AtomicU64,
    fetched_blobs: AtomicU64,
    fetched_bytes: AtomicU64,
    pushed_records: AtomicU64,
    pushed_blobs: AtomicU64,
    pushed_bytes: AtomicU64,
}

impl Counters {
    fn pushed(&self) -> Moved {
        Moved {
            blobs: self.pushed_blobs.load(Ordering::Relaxed),
            bytes: self.pushed_bytes.load(Ordering::Relaxed),
        }
    }
    fn fetched(&self) -> Moved {
        Moved {
            blobs: self.fetched_blobs.load(Ordering::Relaxed),
            bytes: self.fetched_bytes.load(Ordering::Relaxed),
        }
    }
}

/// State shared with the upload tasks.
pub(crate) struct Shared {
    shown: String,
    /// Set by the first failure of the run; the remote is not used after it.
    broken: Mutex<Option<String>>,
    events: Mutex<Option<Sender<Event>>>,
    counters: Counters,
    /// Blobs a download proved corrupt on the remote: uploaded again even though they exist.
    repair: DashSet<ContentHash>,
}

impl Shared {
    fn is_broken(&self) -> bool {
        self.broken.lock().expect("not poisoned").is_some()
    }

    /// Records the run's first remote failure and says it once.
    pub(crate) fn fail(&self, what: &str, why: String) {
        let mut broken = self.broken.lock().expect("not poisoned");
        if broken.is_some() {
            return;
        }
        let message = format!(
            "remote cache {}: {what} failed ({why}); continuing without it",
            self.shown
        );
        tracing::debug!("{message}");
        *broken = Some(format!("{what} failed ({why})"));
        drop(broken);
        self.warn(message);
    }

    pub(crate) fn warn(&self, message: String) {
        if let Some(tx) = self.events.lock().expect("not poisoned").as_ref() {
            let _ = tx.send(Event::Warning {
                stage: None,
                message,
            });
        }
    }
}

pub struct RemoteStore {
    rt: Option<tokio::runtime::Runtime>,
    clients: Arc<Clients>,
    url: Arc<RemoteUrl>,
    push: bool,
    shared: Arc<Shared>,
    /// Keys whose record came from the remote this run, with its executable outputs.
    found: DashMap<ContentHash, Vec<String>>,
    pending: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    slots: Arc<tokio::sync::Semaphore>,
    /// Whether this run checked that the bucket exists (S3 answers a missing bucket like a
    /// missing object, which would make a misspelt bucket look like an empty cache).
    bucket_checked: std::sync::atomic::AtomicBool,
}

impl RemoteStore {
    /// Connects (without a request yet): parses the URL and finds credentials.
    pub fn open(settings: &RemoteSettings) -> Result<RemoteStore, RemoteError> {
        let url = RemoteUrl::parse(&settings.url)
            .map_err(|e| RemoteError::Config(format!("{} ({})", e, settings.origin)))?;
        let env = |k: &str| std::env::var(k).ok();
        let clients = connect::connect(&url, &env)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sluice-remote")
            .enable_all()
            .build()
            .map_err(|e| {
                RemoteError::Config(format!("cannot start the remote cache's runtime: {e}"))
            })?;
        Ok(RemoteStore {
            rt: Some(rt),
            clients: Arc::new(clients),
            shared: Arc::new(Shared {
                shown: url.shown.clone(),
                broken: Mutex::new(None),
                events: Mutex::new(None),
                counters: Counters::default(),
                repair: DashSet::new(),
            }),
            url: Arc::new(url),
            push: settings.push,
            found: DashMap::new(),
            pending: Mutex::new(Vec::new()),
            slots: Arc::new(tokio::sync::Semaphore::new(TRANSFERS)),
            bucket_checked: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The remote as sluice shows it (no credentials).
    pub fn shown(&self) -> &str {
        &self.url.shown
    }

    pub fn pushes(&self) -> bool {
        self.push
    }

    /// Runs `f` on the remote's runtime and waits for it, from any thread.
    fn block<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        let rt = self.rt.as_ref().expect("runtime lives until drop");
        futures::executor::block_on(rt.spawn(f)).expect("remote tasks do not panic")
    }

    /// Starts a run: warnings go to `events`, and the previous run's failure is forgotten.
    pub fn begin_run(&self, events: Sender<Event>) {
        *self.shared.events.lock().expect("not poisoned") = Some(events);
        *self.shared.broken.lock().expect("not poisoned") = None;
        self.found.clear();
        self.bucket_checked.store(false, Ordering::Relaxed);
    }

    /// On S3, once per run before the first lookup: one LIST of the prefix, which fails on a
    /// missing bucket where a GET would only say "not found".
    fn check_bucket(&self) -> bool {
        if !matches!(self.url.backend, url::Backend::S3 { .. })
            || self.bucket_checked.swap(true, Ordering::Relaxed)
        {
            return true;
        }
        let (clients, url) = (self.clients.clone(), self.url.clone());
        match self.block(async move { transfer::list_prefix(&clients, &url).await }) {
            Ok(()) => true,
            Err(why) => {
                self.shared.fail("checking the bucket", why);
                false
            }
        }
    }

    /// A failure to report at the start of a run (say, missing credentials).
    pub fn warn(&self, message: String) {
        self.shared.warn(message);
    }

    /// Waits for the run's uploads (or drops them, when the run was interrupted: records go up
    /// last, so a dropped upload leaves nothing on the remote that names a missing blob), then
    /// says what the remote did.
    pub fn finish_run(&self, interrupted: bool) -> RemoteSummary {
        let pending = std::mem::take(&mut *self.pending.lock().expect("not poisoned"));
        for handle in pending {
            if interrupted {
                handle.abort();
            } else {
                let _ = futures::executor::block_on(handle);
            }
        }
        let c = &self.shared.counters;
        let take = |a: &AtomicU64| a.swap(0, Ordering::Relaxed);
        let summary = RemoteSummary {
            url: self.url.shown.clone(),
            restored: take(&c.restored),
            fetched_blobs: take(&c.fetched_blobs),
            fetched_bytes: take(&c.fetched_bytes),
            pushed_records: take(&c.pushed_records),
            pushed_blobs: take(&c.pushed_blobs),
            pushed_bytes: take(&c.pushed_bytes),
            failed: self.shared.broken.lock().expect("not poisoned").clone(),
        };
        *self.shared.events.lock().expect("not poisoned") = None;
        summary
    }

    /// Whether `key`'s record came from the remote in this run.
    pub fn knows(&self, key: &ContentHash) -> bool {
        self.found.contains_key(key)
    }

    /// Drops what the run learnt about `key` (its remote record proved unusable).
    pub fn forget(&self, key: &ContentHash) {
        self.found.remove(key);
    }

    /// The remote's record for `key`, if it has a usable one. A miss is normal; any other
    /// failure disables the remote for the run.
    pub fn lookup(&self, key: &ContentHash) -> Option<StageRecord> {
        if self.shared.is_broken() || !self.check_bucket() {
            return None;
        }
        let (clients, url, key2) = (self.clients.clone(), self.url.clone(), *key);
        let got = self.block(async move { transfer::get_record(&clients, &url, &key2).await });
        match got {
            Ok(None) => None,
            Ok(Some(bytes)) => match record::parse(&bytes, key) {
                Ok(rec) => {
                    self.found.insert(*key, rec.exec);
                    Some(rec.record)
                }
                Err(why) => {
                    self.shared.warn(format!(
                        "remote cache {}: ignoring the record for key {}: {why}",
                        self.url.shown,
                        key.short()
                    ));
                    None
                }
            },
            Err(e) => {
                self.shared.fail("looking up a stage", e);
                None
            }
        }
    }

    /// Downloads into the local cache every blob of `rec` it lacks, each checked against its
    /// hash before it is filed.
    pub(crate) fn fetch_missing(
        &self,
        local: &LocalStore,
        rec: &StageRecord,
        hasher: &Hasher,
        cancel: &crate::cancel::CancelToken,
    ) -> Result<(), RestoreError> {
        let exec = self
            .found
            .get(&rec.key)
            .map(|e| e.clone())
            .unwrap_or_default();
        let wanted: Vec<transfer::Wanted> = transfer::blobs_with_modes(rec, &exec)
            .into_iter()
            .filter(|(hash, _)| !local.holds(hash, hasher))
            .map(|(hash, exec)| transfer::Wanted {
                hash,
                exec,
                dest: local.blob_path(&hash),
            })
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        if self.shared.is_broken() {
            return Err(RestoreError::Unavailable(
                "the remote cache failed earlier in this run".into(),
            ));
        }
        let (clients, url, shared) = (self.clients.clone(), self.url.clone(), self.shared.clone());
        let slots = self.slots.clone();
        let cancel = cancel.clone();
        let outcome = self.block(async move {
            // Dropping the transfers on a cancel removes their temporaries (`transfer::Temp`).
            tokio::select! {
                done = transfer::fetch_all(clients, url, shared, slots, wanted) => Some(done),
                () = cancelled(cancel) => None,
            }
        });
        let Some(outcome) = outcome else {
            return Err(RestoreError::Unavailable(
                "stopped while downloading".into(),
            ));
        };
        match outcome {
            Ok(filed) => {
                for (path, hash) in filed {
                    let _ = hasher.remember(&path, hash);
                }
                Ok(())
            }
            Err(transfer::FetchError::Corrupt(why)) => {
                Err(RestoreError::Corrupt(format!("remote {why}")))
            }
            Err(transfer::FetchError::Failed(why)) => {
                self.shared.fail("downloading a blob", why.clone());
                Err(RestoreError::Unavailable(format!("remote cache: {why}")))
            }
        }
    }

    /// Counts a stage restored from a remote record.
    pub fn count_restored(&self) {
        self.shared
            .counters
            .restored
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Checks, without downloading, that the remote has every blob of `rec` the local cache
    /// lacks (`status --remote`).
    pub(crate) fn verify(
        &self,
        local: &LocalStore,
        rec: &StageRecord,
        hasher: &Hasher,
    ) -> Result<(), RestoreError> {
        let missing: Vec<ContentHash> = transfer::blobs_with_modes(rec, &[])
            .into_iter()
            .map(|(h, _)| h)
            .filter(|h| !local.holds(h, hasher))
            .collect();
        let (clients, url) = (self.clients.clone(), self.url.clone());
        match self.block(async move { transfer::has_all(&clients, &url, missing).await }) {
            Ok(None) => Ok(()),
            Ok(Some(h)) => Err(RestoreError::Corrupt(format!(
                "the remote cache lacks blob {}",
                h.short()
            ))),
            Err(why) => {
                self.shared.fail("checking blobs", why.clone());
                Err(RestoreError::Unavailable(why))
            }
        }
    }

    /// The upload of `rec` (blobs from the local cache, then the record), as a task for the
    /// remote's runtime.
    fn push_task(
        &self,
        local: &LocalStore,
        rec: &StageRecord,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send + 'static {
        let job = transfer::PushJob::new(local, rec);
        let (clients, url, shared, slots) = (
            self.clients.clone(),
            self.url.clone(),
            self.shared.clone(),
            self.slots.clone(),
        );
        async move { transfer::push(&clients, &url, &shared, &slots, job).await }
    }

    /// Uploads `rec`'s blobs from the local cache, then the record, in the background. The run
    /// waits for it at its end (`finish_run`).
    pub(crate) fn push_later(&self, local: &LocalStore, rec: &StageRecord) {
        if !self.push || self.shared.is_broken() {
            return;
        }
        let (task, shared) = (self.push_task(local, rec), self.shared.clone());
        let rt = self.rt.as_ref().expect("runtime lives until drop");
        let handle = rt.spawn(async move {
            if let Err(why) = task.await {
                shared.fail("uploading results", why);
            }
        });
        self.pending.lock().expect("not poisoned").push(handle);
    }

    /// Uploads `rec` now (`sluice cache push`): the blobs the remote lacks, then the record.
    pub fn push_now(
        &self,
        local: &LocalStore,
        rec: &StageRecord,
    ) -> Result<transfer::Moved, String> {
        let before = self.shared.counters.pushed();
        self.block(self.push_task(local, rec))?;
        Ok(self.shared.counters.pushed().since(before))
    }

    /// Downloads `key`'s record and the blobs the local cache lacks, and files the record
    /// locally (`sluice cache pull`). `Ok(None)`: the remote does not have it.
    pub fn pull_now(
        &self,
        local: &LocalStore,
        key: &ContentHash,
        hasher: &Hasher,
    ) -> Result<Option<transfer::Moved>, String> {
        let (clients, url, k) = (self.clients.clone(), self.url.clone(), *key);
        let Some(bytes) =
            self.block(async move { transfer::get_record(&clients, &url, &k).await })?
        else {
            return Ok(None);
        };
        let rec = record::parse(&bytes, key)?;
        self.found.insert(*key, rec.exec.clone());
        let before = self.shared.counters.fetched();
        let never = crate::cancel::CancelToken::default();
        self.fetch_missing(local, &rec.record, hasher, &never)
            .map_err(|e| e.to_string())?;
        local
            .write_record(&rec.record)
            .map_err(|e| format!("cannot file the record locally: {e}"))?;
        Ok(Some(self.shared.counters.fetched().since(before)))
    }
}

/// A fake environment for the unit tests of the settings readers.
#[cfg(test)]
fn env_of<'a>(pairs: &'a [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |k: &str| {
        pairs
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    }
}

/// Resolves once `token` is cancelled (checked every 50 ms: the token is a plain atomic).
async fn cancelled(token: crate::cancel::CancelToken) {
    while !token.is_cancelled() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

impl Drop for RemoteStore {
    fn drop(&mut self) {
        // Never blocks, even when dropped inside another runtime.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

pub use transfer::Moved;
