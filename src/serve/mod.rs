//! `sluice serve`: an Open Inference Protocol v2 server (the REST protocol of KServe and
//! Triton) over a model registry or one bundle. [`run`] loads every model version, listens,
//! polls the registry for new versions, and on SIGTERM or Ctrl-C stops accepting connections
//! and lets the requests in flight finish.
//!
//! Layout: `registry.rs` finds and loads bundles, `bundle.rs` turns raw request tensors into
//! features and model outputs into probabilities and class names, `protocol/` is the wire
//! format (JSON and Triton's binary-data extension), `routes.rs` the HTTP routes,
//! `connections.rs` the connection cap and timeouts, `memory.rs` giving memory back.

mod bundle;
mod connections;
mod error;
pub(crate) mod memory;
mod protocol;
mod registry;
mod routes;

use anyhow::{bail, Context as _};
pub(crate) use connections::Limits;
use connections::{Activity, Slots, Watched};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use registry::{Catalog, Scanner, Source};
use routes::State;
use sluice_runner::stage::CancelToken;
use sluice_runner::StageError;
use sluice_stages::pyenv::{self, Step};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// When this many fewer connections are open than at the last peak, memory is given back.
const CROWD: usize = 1000;

/// How long requests in flight get after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(10);

/// What `sluice serve` was asked to do.
pub(crate) struct Options {
    pub target: PathBuf,
    pub addr: SocketAddr,
    pub max_body: usize,
    /// Runtime worker threads, and sessions per model.
    pub threads: usize,
    /// How often the registry is checked for new versions.
    pub poll: Duration,
    pub limits: Limits,
}

/// Why serving failed: the arguments (exit 2) or the work (exit 1).
pub(crate) enum ServeFailure {
    Invalid(String),
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for ServeFailure {
    fn from(e: anyhow::Error) -> Self {
        ServeFailure::Runtime(e)
    }
}

pub(crate) fn run(mut opts: Options) -> Result<(), ServeFailure> {
    // The mmap threshold is pinned by `main` for every command (`memory::tune`).
    let source = Source::open(&opts.target).map_err(|e| {
        ServeFailure::Invalid(format!(
            "error: {}",
            crate::report::with_hint(&e.message, Some(&e.hint))
        ))
    })?;
    let lib = match pyenv::find_runtime() {
        Some(lib) => lib,
        None => pyenv::ensure_runtime(&CancelToken::default(), &mut |step| {
            if let Step::Phase(text) = step {
                eprintln!("{text}");
            }
        })
        .map_err(StageError::from)
        .context("cannot fetch ONNX Runtime")?,
    };
    sluice_stages::infer::init(&lib).map_err(anyhow::Error::from)?;

    let mut scanner = Scanner::new(source, opts.threads);
    let scan = scanner
        .scan(&Catalog::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(e) = scan.unlisted.first() {
        return Err(anyhow::anyhow!("{e}").into());
    }
    let (catalog, failures) = (scan.catalog, scan.failures);
    if let Some(f) = failures.first() {
        let context = format!("cannot serve the bundle `{}`", f.dir.display());
        return Err(anyhow::Error::from(f.error.clone()).context(context).into());
    }
    if catalog.models.is_empty() {
        tracing::warn!("the registry holds no models yet; new ones are picked up as they appear");
    }
    limit_connections(&mut opts.limits);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.threads)
        .enable_io()
        .enable_time()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(opts, scanner, catalog))?;
    Ok(())
}

async fn serve(opts: Options, scanner: Scanner, catalog: Catalog) -> anyhow::Result<()> {
    let listener = match listen(opts.addr) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            return Err(anyhow::Error::from(
                StageError::new(format!(
                    "cannot listen on {}: the address is in use",
                    opts.addr
                ))
                .hint("stop what holds it, or pick another with `--addr 127.0.0.1:PORT`"),
            ))
        }
        Err(e) => bail!("cannot listen on {}: {e}", opts.addr),
    };
    let local = listener
        .local_addr()
        .context("cannot read the listening address")?;
    for line in catalog.describe() {
        eprintln!("serving {line}");
    }
    let shutdown = shutdown_signal();
    eprintln!("listening on http://{local}");

    let state = Arc::new(State {
        catalog: RwLock::new(Arc::new(catalog)),
        max_body: opts.max_body,
    });

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let limits = opts.limits;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let slots = Slots::new(limits.max_connections);
    let poller = tokio::spawn(poll(state.clone(), scanner, opts.poll, slots.clone()));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little, keep serving.
                        tracing::warn!("cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some(slot) = slots.take() else {
                    connections::reject(stream, &slots);
                    continue;
                };
                // Responses are small and written whole: Nagle would only add latency.
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let service = service_fn(move |req| routes::handle(state.clone(), req));
                let activity = Activity::new();
                let io = Watched { stream, activity: activity.clone() };
                let conn = graceful.watch(builder.serve_connection(TokioIo::new(io), service));
                tokio::spawn(async move {
                    let _slot = slot;
                    tokio::pin!(conn);
                    loop {
                        let quiet = activity.idle_for();
                        let left = limits.idle_timeout.saturating_sub(quiet);
                        tokio::select! {
                            done = &mut conn => {
                                if let Err(e) = done {
                                    tracing::debug!("connection closed: {e}");
                                }
                                break;
                            }
                            () = tokio::time::sleep(left) => {
                                if activity.idle_for() >= limits.idle_timeout {
                                    tracing::debug!("closing a connection idle for {:?}", limits.idle_timeout);
                                    break;
                                }
                            }
                        }
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    poller.abort();
    eprintln!("shutting down: finishing the requests in flight");
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after {DRAIN:?}; stopping anyway");
    }
    Ok(())
}

/// Connections the kernel queues for `accept`. Larger than tokio's 1,024, so that a burst of
/// new connections (a thousand clients reconnecting at once) is queued rather than dropped
/// before the server sees it; the kernel caps it at `net.core.somaxconn`.
const BACKLOG: u32 = 8192;

/// A listening socket on `addr` with a [`BACKLOG`]-long queue.
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As `TcpListener::bind` does: a restarted server can listen while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// A future that resolves on the first SIGTERM or Ctrl-C. The handlers are installed here, when
/// this is called, not when the future is first polled: a signal that arrives between "listening"
/// and the accept loop's first look at the future would otherwise kill the process outright.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
}

/// Checks the registry every `every` and swaps in a catalog with the versions that appeared
/// (loaded on a blocking thread, off the request path) and without those that went away.
///
/// It also gives memory back after many connections closed (a burst of idle clients leaves
/// their buffers in malloc's free lists otherwise).
async fn poll(state: Arc<State>, scanner: Scanner, every: Duration, slots: Arc<Slots>) {
    let scanner = Arc::new(std::sync::Mutex::new(scanner));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    // The last listing error logged, so that one that persists is logged once.
    let mut unreadable: Option<String> = None;
    // The most connections open since memory was last given back.
    let mut crowd = 0;
    loop {
        ticks.tick().await;
        let open = slots.open();
        if open + CROWD < crowd {
            memory::give_back();
            crowd = open;
        }
        crowd = crowd.max(open);
        let current = state
            .catalog
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let scanner = scanner.clone();
        let scanned = tokio::task::spawn_blocking(move || {
            let mut s = scanner.lock().unwrap_or_else(|p| p.into_inner());
            s.scan(&current)
        })
        .await;
        let scan = match scanned {
            Ok(Ok(scan)) => scan,
            Ok(Err(e)) => {
                // Keep serving what is loaded: an unreadable registry is not an empty one.
                let text = e.to_string();
                if unreadable.as_deref() != Some(&text) {
                    tracing::error!("{text}; still serving the models already loaded");
                    unreadable = Some(text);
                }
                continue;
            }
            Err(_) => continue,
        };
        let problems: Vec<String> = scan.unlisted.iter().map(|u| u.to_string()).collect();
        let text = (!problems.is_empty()).then(|| problems.join("; "));
        if text != unreadable {
            match &text {
                Some(t) => tracing::error!("{t}; still serving the versions already loaded"),
                None => tracing::info!("the registry can be listed again"),
            }
            unreadable = text;
        }
        let (catalog, failures) = (scan.catalog, scan.failures);
        for f in failures {
            tracing::error!(
                "cannot load `{}`: {}",
                f.dir.display(),
                crate::report::with_hint(&f.error.message, f.error.hint.as_deref())
            );
        }
        let old = state
            .catalog
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let (before, after) = (old.describe(), catalog.describe());
        if before != after {
            for line in &after {
                tracing::info!("serving {line}");
            }
            *state.catalog.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(catalog);
        }
    }
}

/// Raises the open-file limit and keeps the connection cap under it, with room for the files
/// the server itself opens; says what it did.
fn limit_connections(limits: &mut Limits) {
    let Some((before, now)) = connections::raise_open_files() else {
        return;
    };
    if now > before {
        eprintln!("raised the open-file limit from {before} to {now}");
    }
    // Under a low limit (1024 is common), half of it stays for the server's own files.
    let room = now
        .saturating_sub(connections::RESERVED_FILES.min(now / 2))
        .max(1);
    if limits.max_connections as u64 > room {
        tracing::warn!(
            "the open-file limit is {now}: serving at most {room} connections, not {} (`--max-connections`)",
            limits.max_connections
        );
        limits.max_connections = room as usize;
    }
    eprintln!(
        "at most {} connections; headers within {:?}, stalled connections closed after {:?}",
        limits.max_connections, limits.header_timeout, limits.idle_timeout
    );
}
