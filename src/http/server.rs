//! The server loop: hyper-util's auto builder (HTTP/1.1 and h2c) with timers, a connection cap
//! and a bounded graceful shutdown.
//!
//! hyper times a request's headers (`header_read_timeout`); on HTTP/1.1 it also starts that
//! timer while a keep-alive connection waits for its next request. What hyper does not time, the
//! protocol sniffing before the first byte and an idle HTTP/2 connection, the watchdog here
//! closes: a connection that sends nothing within the header timeout, or that moves no byte
//! with no request in flight for the idle timeout.

use std::future::Future;
use std::io;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::ServiceExt;

use super::LiveRouter;

/// How the server treats connections: its timers, its cap and its shutdown grace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSettings {
    /// `server.header_timeout`: the longest a request's headers may take to arrive.
    pub header_timeout: Duration,
    /// `server.idle_timeout`: the longest a connection may stay silent with no request in flight.
    pub idle_timeout: Duration,
    /// `server.max_connections`: the most connections open at once; `None` sizes the cap from
    /// the descriptor limit when the server starts.
    pub max_connections: Option<NonZeroUsize>,
    /// `server.shutdown_grace`: how long open requests may take to finish once shutdown begins.
    pub shutdown_grace: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: None,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Descriptors kept free beyond those already open when the server starts: for Redis
/// reconnections, and the odd file.
const SPARE_DESCRIPTORS: usize = 8;

/// The cap when none is configured: the descriptor limit, less the descriptors already open and
/// a few spare, so that accepting a connection is never what runs out of descriptors.
pub fn default_max_connections() -> NonZeroUsize {
    let limit = descriptor_limit().unwrap_or(1024);
    let open = open_descriptors().unwrap_or(32);
    NonZeroUsize::new(limit.saturating_sub(open + SPARE_DESCRIPTORS)).unwrap_or(NonZeroUsize::MIN)
}

/// The soft limit on open descriptors, if the platform says.
fn descriptor_limit() -> Option<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    Some(usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX))
}

/// How many descriptors the process holds now (Linux; `None` elsewhere).
fn open_descriptors() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(Iterator::count)
}

/// Raises the soft descriptor limit to the hard one, as many servers do at startup, so the
/// connection cap is not held to a low default; returns the limit now in force.
pub fn raise_descriptor_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read or write only the struct they are given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Err(io::Error::last_os_error());
            }
            limit = raised;
        }
    }
    // rlim_t is u64 on Linux but not on every platform.
    #[allow(clippy::unnecessary_cast)]
    Ok(limit.rlim_cur as u64)
}

/// Serves `router` on `listener` under `settings` until `shutdown` completes, then drains open
/// connections for at most `settings.shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    router: impl Into<LiveRouter>,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_all(listener, router.into(), None, settings, shutdown).await
}

/// [`serve`], and `beside` (another listener and its router, like Envoy's rate limit service)
/// under the same connection cap, timers and grace: the cap is sized for the whole process.
pub async fn serve_all(
    listener: TcpListener,
    router: LiveRouter,
    beside: Option<(TcpListener, LiveRouter)>,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let cap = settings
        .max_connections
        .unwrap_or_else(default_max_connections);
    // One line says the service is up and how it treats connections; tests wait for it.
    tracing::info!(
        listen = %listener.local_addr()?,
        max_connections = cap,
        header_timeout = ?settings.header_timeout,
        idle_timeout = ?settings.idle_timeout,
        "tollgate is serving"
    );
    let permits = Arc::new(Semaphore::new(cap.get()));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let accepting = Accepting {
        settings: &settings,
        permits: &permits,
        builder: &builder,
        graceful: &graceful,
        stopped,
    };
    match beside {
        None => accepting.accept(listener, router).await,
        Some((other, other_router)) => {
            tokio::join!(
                accepting.accept(listener, router),
                accepting.accept(other, other_router)
            );
        }
    }
    let grace = settings.shutdown_grace;
    tokio::select! {
        () = graceful.shutdown() => Ok(()),
        () = tokio::time::sleep(grace) => {
            tracing::warn!(?grace, "open requests did not finish; exiting");
            Ok(())
        }
    }
}

/// What every listener's accept loop shares.
struct Accepting<'a> {
    settings: &'a ServerSettings,
    permits: &'a Arc<Semaphore>,
    builder: &'a Arc<auto::Builder<TokioExecutor>>,
    graceful: &'a GracefulShutdown,
    stopped: tokio::sync::watch::Receiver<bool>,
}

impl Accepting<'_> {
    /// Accepts connections on `listener` for `router` until shutdown, each under a permit.
    async fn accept(&self, listener: TcpListener, router: LiveRouter) {
        let mut stopped = self.stopped.clone();
        let shutdown = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        tokio::pin!(shutdown);
        let mut accept_failing = false;
        loop {
            // Past the cap the listener is not polled, so new connections wait in the kernel's
            // backlog, costing the process nothing.
            let permit = tokio::select! {
                permit = self.permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                () = &mut shutdown => break,
            };
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => {
                        accept_failing = false;
                        accepted
                    }
                    Err(error) if is_connection_error(&error) => continue,
                    Err(error) => {
                        // Out of descriptors or memory: say so once, not once per retry, and
                        // give open connections time to close.
                        if !accept_failing {
                            tracing::warn!(%error, "cannot accept connections; retrying every second");
                        }
                        accept_failing = true;
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                            () = &mut shutdown => break,
                        }
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let activity = Arc::new(Activity::new());
            let io = TokioIo::new(Watched {
                inner: stream,
                activity: activity.clone(),
            });
            let service = hyper::service::service_fn({
                let router = router.clone();
                let activity = activity.clone();
                move |request: hyper::Request<Incoming>| {
                    let mut request = request.map(Body::new);
                    // As axum::serve does: policies keyed by ip and trusted proxies read the peer.
                    request.extensions_mut().insert(ConnectInfo(peer));
                    let in_flight = activity.begin();
                    let router = router.current();
                    async move {
                        let response = router.oneshot(request).await;
                        drop(in_flight);
                        response
                    }
                }
            });
            let connection = self.builder.serve_connection(io, service).into_owned();
            let connection = self.graceful.watch(connection);
            let (header_timeout, idle_timeout) =
                (self.settings.header_timeout, self.settings.idle_timeout);
            tokio::spawn(async move {
                tokio::select! {
                    served = connection => {
                        if let Err(error) = served {
                            tracing::debug!(%peer, %error, "connection ended");
                        }
                    }
                    () = activity.silent_for(header_timeout, idle_timeout) => {
                        tracing::debug!(%peer, "connection closed: idle");
                    }
                }
                drop(permit);
            });
        }
        // Refuse new connections at once rather than leave them in the backlog.
        drop(listener);
    }
}

/// An error that concerns one connection only, after which accepting goes on at once.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// What the watchdog reads: when a byte last moved and how many requests are in flight.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    /// Milliseconds from `opened` to the last byte read or written; `u64::MAX` before any.
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Activity {
            opened: Instant::now(),
            last_ms: AtomicU64::new(u64::MAX),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Counts a request in flight until the guard drops.
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Completes when the connection has sent nothing within `first_byte`, or has moved no byte
    /// with no request in flight for `idle`.
    async fn silent_for(&self, first_byte: Duration, idle: Duration) {
        loop {
            if self.in_flight.load(Ordering::Relaxed) > 0 {
                // A request in flight is the handler's to time; look again an idle period later.
                tokio::time::sleep(idle).await;
                continue;
            }
            let deadline = match self.last_ms.load(Ordering::Relaxed) {
                u64::MAX => self.opened + first_byte,
                last => self.opened + Duration::from_millis(last) + idle,
            };
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            // Bytes that arrive meanwhile move the deadline without waking this task, so it
            // looks again within an idle period: a first byte may make the idle timer, not the
            // first-byte timer, the one that must close the connection.
            tokio::time::sleep_until(deadline.min(now + idle)).await;
        }
    }
}

/// A request in flight on a connection.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A TCP stream that records when a byte last moved, for the watchdog.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
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
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
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
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
