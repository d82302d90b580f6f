//! `sluice serve`: an Open Inference Protocol v2 server (the REST protocol of KServe and
//! Triton) over a model registry or one bundle. [`run`] loads every model version, listens,
//! polls the registry for new versions, and on SIGTERM or Ctrl-C stops accepting connections
//! and lets the requests in flight finish.
//!
//! Layout: `registry.rs` finds and loads bundles, `bundle.rs` turns raw request tensors into
//! features and model outputs into probabilities and class names, `protocol.rs` is the wire
//! format (JSON and Triton's binary-data extension), `routes.rs` the HTTP routes.

mod bundle;
mod error;
mod protocol;
mod registry;
mod routes;

use anyhow::{bail, Context as _};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use registry::{Catalog, Scanner, Source};
use routes::State;
use sluice_runner::stage::CancelToken;
use sluice_stages::pyenv::{self, Step};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

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

pub(crate) fn run(opts: Options) -> Result<(), ServeFailure> {
    let source =
        Source::open(&opts.target).map_err(|e| ServeFailure::Invalid(format!("error: {e}")))?;
    let lib = match pyenv::find_runtime() {
        Some(lib) => lib,
        None => pyenv::ensure_runtime(&CancelToken::default(), &mut |step| {
            if let Step::Phase(text) = step {
                eprintln!("{text}");
            }
        })
        .context("cannot fetch ONNX Runtime")?,
    };
    sluice_stages::infer::init(&lib).map_err(anyhow::Error::msg)?;

    let mut scanner = Scanner::new(source, opts.threads);
    let (catalog, failures) = scanner.scan(&Catalog::default());
    if let Some(f) = failures.first() {
        return Err(
            anyhow::anyhow!("cannot serve the bundle `{}`: {}", f.dir.display(), f.error).into(),
        );
    }
    if catalog.models.is_empty() {
        tracing::warn!("the registry holds no models yet; new ones are picked up as they appear");
    }

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
    let listener = match tokio::net::TcpListener::bind(opts.addr).await {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "cannot listen on {}: the address is in use\nhint: stop what holds it, or pick another with `--addr 127.0.0.1:PORT`",
            opts.addr
        ),
        Err(e) => bail!("cannot listen on {}: {e}", opts.addr),
    };
    let local = listener
        .local_addr()
        .context("cannot read the listening address")?;
    for line in catalog.describe() {
        eprintln!("serving {line}");
    }
    eprintln!("listening on http://{local}");

    let state = Arc::new(State {
        catalog: RwLock::new(Arc::new(catalog)),
        max_body: opts.max_body,
    });
    let poller = tokio::spawn(poll(state.clone(), scanner, opts.poll));

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = hyper::server::conn::http1::Builder::new();
    let shutdown = shutdown_signal();
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
                // Responses are small and written whole: Nagle would only add latency.
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let service = service_fn(move |req| routes::handle(state.clone(), req));
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!("connection closed: {e}");
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

/// Resolves on the first SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Checks the registry every `every` and swaps in a catalog with the versions that appeared
/// (loaded on a blocking thread, off the request path) and without those that went away.
async fn poll(state: Arc<State>, scanner: Scanner, every: Duration) {
    let scanner = Arc::new(std::sync::Mutex::new(scanner));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
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
        let Ok((catalog, failures)) = scanned else {
            continue;
        };
        for f in failures {
            tracing::error!("cannot load `{}`: {}", f.dir.display(), f.error);
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
