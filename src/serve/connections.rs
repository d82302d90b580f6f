//! Keeping idle and hostile clients from exhausting the server: [`Limits`] (how many connections
//! and how long each may wait), [`Slots`] (the count of open connections; one over the cap is
//! answered [`reject`]ed with a 503 and closed), [`Watched`] (a connection's socket, noting when
//! bytes last moved so that [`idle_for`] can close one that stalls) and [`raise_open_files`].
//!
//! Timeouts: hyper's header-read timeout covers the wait for a request's headers, both on a new
//! connection and between keep-alive requests; the idle timeout covers a request whose body or
//! response stops moving (a client that sends half a body, or never reads its answer).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Descriptors kept free of connections: the registry's files, the models, logs, and sockets
/// being rejected.
pub(crate) const RESERVED_FILES: u64 = 256 + MAX_LINGERING as u64;

/// Rejected connections read until the client closes, at most this long, so that the client
/// reads the 503 rather than a reset.
const LINGER: Duration = Duration::from_secs(1);

/// At most this many rejected connections linger; beyond it they are closed at once.
const MAX_LINGERING: usize = 1024;

/// How many connections the server holds and for how long.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_connections: usize,
    /// For a request's headers to arrive, from the connection's start or the previous response.
    pub header_timeout: Duration,
    /// For a body or a response to move at all.
    pub idle_timeout: Duration,
}

/// Raises the soft limit on open files to the hard one. Returns `(soft before, soft now)`.
pub(crate) fn raise_open_files() -> Option<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own. An unlimited hard limit can be refused
        // (the kernel's `nr_open` caps it); the soft limit then stays as it was.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        }
    }
    Some((before, limit.rlim_cur))
}

/// The open connections, counted against the cap.
pub(crate) struct Slots {
    open: AtomicUsize,
    lingering: AtomicUsize,
    max: usize,
}

/// One open connection's place under the cap, given back when dropped.
pub(crate) struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Slots {
    pub(crate) fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            open: AtomicUsize::new(0),
            lingering: AtomicUsize::new(0),
            max,
        })
    }

    /// A slot, or `None` when `max` connections are open.
    pub(crate) fn take(self: &Arc<Self>) -> Option<Slot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.clone()))
    }
}

/// Answers a connection over the cap with a 503 and closes it. The response fits the socket's
/// empty send buffer, so it is written without waiting; the socket then reads what the client
/// sent until it closes (at most [`LINGER`]), since closing with unread data would reset the
/// connection and the client could lose the 503.
pub(crate) fn reject(stream: TcpStream, slots: &Arc<Slots>) {
    let body = format!(
        "{{\"error\":\"the server has {} connections open, its limit (`--max-connections`); retry later\"}}",
        slots.max
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(response.as_bytes());
    let Ok(std) = stream.into_std() else {
        return;
    };
    let _ = std.shutdown(std::net::Shutdown::Write);
    if slots.lingering.fetch_add(1, Ordering::AcqRel) >= MAX_LINGERING {
        slots.lingering.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    let Ok(stream) = TcpStream::from_std(std) else {
        slots.lingering.fetch_sub(1, Ordering::AcqRel);
        return;
    };
    let slots = slots.clone();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + LINGER;
        let mut sink = [0u8; 4096];
        while let Ok(Ok(())) = tokio::time::timeout_at(deadline, stream.readable()).await {
            match stream.try_read(&mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
        slots.lingering.fetch_sub(1, Ordering::AcqRel);
    });
}

/// Milliseconds since the first call: a clock that fits an atomic.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// When bytes last moved on a connection.
#[derive(Clone)]
pub(crate) struct Activity(Arc<AtomicU64>);

impl Activity {
    pub(crate) fn new() -> Activity {
        Activity(Arc::new(AtomicU64::new(now_ms())))
    }

    fn touch(&self) {
        self.0.store(now_ms(), Ordering::Relaxed);
    }

    /// How long no bytes have moved.
    pub(crate) fn idle_for(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.0.load(Ordering::Relaxed)))
    }
}

/// A connection's socket that records each read and write that moved bytes.
pub(crate) struct Watched {
    pub stream: TcpStream,
    pub activity: Activity,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
