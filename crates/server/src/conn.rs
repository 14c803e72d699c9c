//! The accept loop and each connection's limits: a connection cap, hyper's header-read timeout
//! (with a timer), an idle timeout, a send timeout for clients that stop reading, and a cap on
//! requests in flight (503 beyond it; probes exempt).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{Request, Response};
use axum::response::IntoResponse;
use axum::Router;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use sconce_protocol::ApiError;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tower::ServiceExt;

use crate::http::HttpError;

/// The HTTP limits, from the `[server]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time to send a request's headers, from their first byte.
    pub header_read_timeout: Duration,
    /// Time to send a request's body.
    pub body_read_timeout: Duration,
    /// A connection with no request in flight and none arriving for this long is closed.
    pub idle_timeout: Duration,
    /// A write the client does not take within this long closes the connection (and so aborts
    /// the stream and frees its KV).
    pub send_timeout: Duration,
    pub max_connections: usize,
    pub max_concurrent_requests: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(30),
            max_connections: 4096,
            max_concurrent_requests: 1024,
        }
    }
}

/// Probes answer even when the request cap is reached.
fn is_probe(path: &str) -> bool {
    matches!(path, "/health" | "/ready" | "/metrics" | "/version")
}

/// Accepts connections until `close` resolves, then lets the open ones finish.
pub async fn serve_connections(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    close: impl Future<Output = ()>,
) -> io::Result<()> {
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let requests = Arc::new(Semaphore::new(limits.max_concurrent_requests.max(1)));
    let graceful = GracefulShutdown::new();
    tokio::pin!(close);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut close => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors and the like: keep serving the open connections.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(
                max_connections = limits.max_connections,
                "connection cap reached; closing a new connection"
            );
            continue;
        };
        spawn_connection(stream, app.clone(), requests.clone(), limits, &graceful, permit);
    }
    graceful.shutdown().await;
    Ok(())
}

fn spawn_connection(
    stream: TcpStream,
    app: Router,
    requests: Arc<Semaphore>,
    limits: HttpLimits,
    graceful: &GracefulShutdown,
    permit: OwnedSemaphorePermit,
) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request| handle(app.clone(), request, requests.clone(), activity.clone()))
    };
    let io = TokioIo::new(SendTimeout::new(stream, limits.send_timeout, activity.clone()));
    // hyper's own header timer counts idle time too, so it is only the backstop here.
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout + limits.idle_timeout)
        .serve_connection(io, service);
    let conn = graceful.watch(conn);
    tokio::spawn(async move {
        tokio::select! {
            result = conn => if let Err(error) = result {
                tracing::debug!(%error, "connection closed with an error");
            },
            () = activity.expired(limits) => tracing::debug!("idle or slow connection closed"),
        }
        drop(permit);
    });
}

/// One request: refused with 503 over the request cap; otherwise the app's response, whose
/// body holds the request's place until it is sent (or dropped).
async fn handle(
    app: Router,
    request: Request<Incoming>,
    requests: Arc<Semaphore>,
    activity: Arc<Activity>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let active = activity.start();
    let permit = if is_probe(request.uri().path()) {
        None
    } else {
        match requests.try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => return Ok(HttpError(ApiError::unavailable("too many requests in flight")).into_response()),
        }
    };
    let response = app.oneshot(request.map(Body::new)).await?;
    Ok(response.map(|body| Body::new(Held { body, _held: (active, permit) })))
}

/// What one connection is doing, for its header and idle deadlines.
struct Activity {
    in_flight: AtomicUsize,
    marks: Mutex<Marks>,
    /// Wakes the watchdog when a request's first bytes arrive.
    reading: Notify,
}

struct Marks {
    /// When the last request ended (or the connection opened).
    last_end: Instant,
    /// When the bytes of the next request started to arrive.
    reading_since: Option<Instant>,
}

impl Activity {
    fn new() -> Self {
        let marks = Marks { last_end: Instant::now(), reading_since: None };
        Self { in_flight: AtomicUsize::new(0), marks: Mutex::new(marks), reading: Notify::new() }
    }

    fn marks(&self) -> std::sync::MutexGuard<'_, Marks> {
        self.marks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes arrived: with no request in flight, they start the next request's head.
    fn note_read(&self) {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return;
        }
        let mut marks = self.marks();
        if marks.reading_since.is_none() {
            marks.reading_since = Some(Instant::now());
            self.reading.notify_one();
        }
    }

    /// The head is complete: a request is in flight until the guard drops.
    fn start(self: &Arc<Self>) -> Active {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.marks().reading_since = None;
        Active(self.clone())
    }

    /// Time left before the connection must close; `None` once it must.
    fn time_left(&self, limits: &HttpLimits) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Some(limits.idle_timeout.min(limits.header_read_timeout));
        }
        let marks = self.marks();
        let left = match marks.reading_since {
            Some(since) => limits.header_read_timeout.checked_sub(since.elapsed()),
            None => limits.idle_timeout.checked_sub(marks.last_end.elapsed()),
        };
        left.filter(|left| !left.is_zero())
    }

    /// Resolves once the connection idled, or took too long to send a request's headers.
    async fn expired(&self, limits: HttpLimits) {
        while let Some(wait) = self.time_left(&limits) {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.reading.notified() => {}
            }
        }
    }
}

/// A request in flight on its connection, until dropped.
struct Active(Arc<Activity>);

impl Drop for Active {
    fn drop(&mut self) {
        let mut marks = self.0.marks();
        marks.last_end = Instant::now();
        marks.reading_since = None;
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that holds `_held` until it is sent or dropped.
struct Held<T> {
    body: Body,
    _held: T,
}

impl<T: Send + Unpin + 'static> http_body::Body for Held<T> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A socket whose writes fail once one has waited `timeout` for the client to read.
/// Its reads are noted in the connection's activity.
struct SendTimeout {
    stream: TcpStream,
    timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
    activity: Arc<Activity>,
}

impl SendTimeout {
    fn new(stream: TcpStream, timeout: Duration, activity: Arc<Activity>) -> Self {
        Self { stream, timeout, stalled: None, activity }
    }

    /// After a write returned `Pending`: an error once it has been pending for the timeout.
    fn check<T>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let timeout = self.timeout;
        let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for SendTimeout {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.note_read();
        }
        polled
    }
}

impl AsyncWrite for SendTimeout {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.check(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.check(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_flush(cx);
        self.check(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
