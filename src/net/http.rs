//! HTTP on top of the accept loop: one accepted [`Conn`] served by hyper, with the limits every
//! sockit HTTP listener needs (the chat's web page and `sockit http` share this, so a fix to one is
//! a fix to both).
//!
//! - HTTP/1.1 with keep-alive, or HTTP/2 when TLS negotiated `h2` by ALPN (see [`ALPN_H2_HTTP1`]
//!   and [`super::tls::ServerTls::with_alpn`]). The protocol is chosen from ALPN, never by sniffing
//!   the first bytes: hyper-util's "auto" mode reads the preface before any timer runs, so a
//!   client that sends nothing would hold its slot for ever.
//! - A header read timeout (slowloris; in HTTP/1 it also bounds an idle keep-alive connection) and
//!   a head size limit (431 beyond it). HTTP/2 has no header timer in hyper, so an HTTP/2
//!   connection that starts no request for the same time is closed with GOAWAY.
//! - A write deadline under hyper ([`WriteDeadline`]): a client that stops reading is cut after
//!   the write timeout instead of holding its slot for ever.
//! - Graceful shutdown on the connection's shutdown token: the request in flight finishes, then
//!   the connection closes.
//! - Upgrades (WebSocket): an upgraded session registers with [`HttpConn::upgrade_token`], and the
//!   connection handler waits for it, so the net layer's slot and drain cover the whole session.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;

use super::sendfile::{self, FileSpans, Front};
use super::{Conn, PeerAddr, ServerOptions, Stream, WriteDeadline, WriteTimeout};

/// ALPN protocols for a server that speaks HTTP/2 and HTTP/1.1 over TLS, h2 preferred.
pub const ALPN_H2_HTTP1: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN for a server that speaks only HTTP/1.1 over TLS.
pub const ALPN_HTTP1: &[&[u8]] = &[b"http/1.1"];

/// Default header read timeout: a request whose head takes longer is dropped.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default largest request head (hyper answers 431 beyond it).
pub const DEFAULT_MAX_HEAD: usize = 16 * 1024;
/// Default write timeout: a response nobody reads for this long is cut (nginx `send_timeout`).
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Sent to a client refused because the server is full (instead of a protocol's own line): this
/// listener speaks HTTP.
pub const HTTP_BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
content-length: 38\r\nconnection: close\r\nretry-after: 5\r\n\r\nthe server is full; try again later.\r\n";

/// Sent to a client refused by a per-address limit (too many connections, or too fast).
pub const HTTP_TOO_MANY: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain\r\n\
content-length: 58\r\nconnection: close\r\nretry-after: 5\r\n\r\n\
too many connections from your address; try again later.\r\n";

/// Sets the refusal messages of an HTTP listener: 503 when full, 429 for a per-address limit. Over
/// TLS none: plain text is only readable before a handshake that never happened.
pub fn http_refusals(server: &mut ServerOptions) {
    let plain = server.tls.is_none();
    server.busy_message = plain.then(|| Bytes::from_static(HTTP_BUSY));
    server.addr_limit_message = plain.then(|| Bytes::from_static(HTTP_TOO_MANY));
}

/// The limits of one HTTP connection.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// A request head must arrive within this; also how long an idle keep-alive (HTTP/1) or
    /// request-less (HTTP/2) connection is kept.
    pub header_timeout: Duration,
    /// Largest request head, in bytes (HTTP/2: the header list).
    pub max_head: usize,
    /// A write that makes no progress for this long fails and ends the connection.
    pub write_timeout: Option<Duration>,
    /// Serve HTTP/2 when TLS negotiates `h2` (the TLS config must offer it by ALPN).
    pub http2: bool,
    /// HTTP/2: most requests in flight at once on one connection.
    pub max_streams: u32,
    /// On shutdown, how long the request in flight may take to finish.
    pub shutdown_grace: Duration,
    /// Plain TCP over HTTP/1: let handlers send file bodies with sendfile(2)
    /// ([`HttpConn::file_body`]).
    pub sendfile: bool,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_head: DEFAULT_MAX_HEAD,
            write_timeout: Some(DEFAULT_WRITE_TIMEOUT),
            http2: true,
            max_streams: 100,
            shutdown_grace: DEFAULT_HEADER_TIMEOUT,
            sendfile: true,
        }
    }
}

/// Which HTTP a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    Http1,
    Http2,
}

/// One HTTP connection as its request handlers see it.
#[derive(Debug)]
pub struct HttpConn {
    /// Who connected.
    pub peer: PeerAddr,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// The server's idle timeout, for upgraded sessions.
    pub idle_timeout: Option<Duration>,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// HTTP/1.1 or HTTP/2.
    pub version: HttpVersion,
    upgrades: TaskTracker,
    gone: CancellationToken,
    write_timeout: WriteTimeout,
    /// Plain TCP over HTTP/1: file regions to send with sendfile.
    spans: Option<Arc<FileSpans>>,
}

impl HttpConn {
    /// Held by an upgraded session (WebSocket) for as long as it runs: the connection handler,
    /// and with it the net layer's slot and drain, waits for it.
    pub fn upgrade_token(&self) -> TaskTrackerToken {
        self.upgrades.token()
    }

    /// Cancelled if the connection handler is dropped (the drain ran out): sessions stop too.
    pub fn gone(&self) -> CancellationToken {
        self.gone.clone()
    }

    /// A body for `len` bytes of `file` from `start` that leaves with sendfile(2), without a copy
    /// through user space; `None` where the connection cannot (TLS, HTTP/2, Unix sockets), and
    /// the caller sends the bytes itself.
    pub fn file_body(
        &self,
        file: Arc<std::fs::File>,
        start: u64,
        len: u64,
    ) -> Option<sendfile::SpanBody> {
        self.spans.as_ref().map(|s| s.body(file, start, len))
    }

    /// The stream's write deadline, to change once the connection is upgraded.
    pub fn write_timeout(&self) -> &WriteTimeout {
        &self.write_timeout
    }
}

/// When bytes last moved on a connection, for the idle close.
#[derive(Clone)]
struct LastActivity {
    start: Instant,
    millis: Arc<AtomicU64>,
}

impl LastActivity {
    fn new() -> Self {
        LastActivity {
            start: Instant::now(),
            millis: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.millis.store(ms, Ordering::Relaxed);
    }

    fn at(&self) -> Instant {
        self.start + Duration::from_millis(self.millis.load(Ordering::Relaxed))
    }
}

/// Completes when `last` is `timeout` old (never without a timeout); the caller checks again, as
/// bytes may have moved meanwhile.
async fn idle_after(last: &LastActivity, timeout: Option<Duration>) {
    match timeout {
        Some(d) => tokio::time::sleep_until(last.at() + d).await,
        None => std::future::pending().await,
    }
}

/// The connection's stream under hyper: notes when bytes last moved either way (bytes, not
/// requests: a long download on a connection that starts no new request is not idle), and, on
/// plain TCP over HTTP/1, sends the file regions that placeholder body bytes stand for with
/// sendfile (see [`sendfile`](super::sendfile)).
struct Activity {
    inner: WriteDeadline<Stream>,
    last: LastActivity,
    spans: Option<Arc<FileSpans>>,
}

impl Activity {
    fn moved(&self, r: &Poll<std::io::Result<usize>>) {
        if matches!(r, Poll::Ready(Ok(n)) if *n > 0) {
            self.last.touch();
        }
    }

    fn write(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let Activity { inner, spans, .. } = self;
        let r = match (spans, sendfile::front(bufs)) {
            (Some(spans), Front::Placeholder(want)) => inner.guard(cx, |s, cx| match &*s {
                Stream::Tcp(tcp) => spans.poll_send(tcp, cx, want),
                _ => Poll::Ready(Err(std::io::Error::other("sendfile needs plain TCP"))),
            }),
            (Some(_), Front::Ordinary(n)) => Pin::new(inner).poll_write_vectored(cx, &bufs[..n]),
            (None, _) => Pin::new(inner).poll_write_vectored(cx, bufs),
        };
        self.moved(&r);
        r
    }
}

impl AsyncRead for Activity {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.last.touch();
        }
        r
    }
}

impl AsyncWrite for Activity {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.spans.is_some() {
            return self.write(cx, &[std::io::IoSlice::new(data)]);
        }
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        self.moved(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.write(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves one accepted connection with hyper until it closes (and then waits for its upgraded
/// sessions). `make_service` gets the connection's description and returns the request handler.
pub async fn serve_http<S, B>(
    conn: Conn,
    opts: &HttpOptions,
    make_service: impl FnOnce(Arc<HttpConn>) -> S,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Conn {
        stream,
        peer,
        shutdown,
        idle_timeout,
    } = conn;
    let (tls, h2) = match &stream {
        Stream::TlsServer(s) => (true, s.get_ref().1.alpn_protocol() == Some(b"h2")),
        _ => (false, false),
    };
    let version = if h2 && opts.http2 {
        HttpVersion::Http2
    } else {
        HttpVersion::Http1
    };
    let spans =
        (matches!(stream, Stream::Tcp(_)) && version == HttpVersion::Http1 && opts.sendfile)
            .then(|| Arc::new(FileSpans::default()));
    let stream = WriteDeadline::new(stream, opts.write_timeout);
    let info = Arc::new(HttpConn {
        peer,
        shutdown: shutdown.clone(),
        idle_timeout,
        tls,
        version,
        upgrades: TaskTracker::new(),
        gone: CancellationToken::new(),
        write_timeout: stream.timeout(),
        spans: spans.clone(),
    });
    let _gone = info.gone.clone().drop_guard();
    let service = make_service(info.clone());
    match version {
        HttpVersion::Http1 => {
            // hyper's header read timeout bounds an idle keep-alive connection; the server's
            // idle timeout (`-i`), when set, is watched on the bytes themselves, as for HTTP/2.
            let last = LastActivity::new();
            // Vectored writes always: hyper then queues body chunks as they are instead of
            // copying them into its buffer, which placeholder bytes rely on.
            let vectored = spans.is_some();
            let io = TokioIo::new(Activity {
                inner: stream,
                last: last.clone(),
                spans,
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            if vectored {
                builder.writev(true);
            }
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(opts.header_timeout)
                .max_buf_size(opts.max_head.max(8192));
            let http = builder.serve_connection(io, service).with_upgrades();
            tokio::pin!(http);
            loop {
                tokio::select! {
                    r = http.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(peer = %info.peer, error = %e, "http connection ended");
                        }
                        break;
                    }
                    _ = shutdown.cancelled() => {
                        // Finish the request in flight, then close; an upgrade in flight completes.
                        http.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(opts.shutdown_grace, http).await;
                        break;
                    }
                    _ = idle_after(&last, idle_timeout) => {
                        if idle_timeout.is_some_and(|d| last.at() + d > Instant::now()) {
                            continue;
                        }
                        tracing::debug!(peer = %info.peer, "idle http connection closed");
                        http.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(opts.shutdown_grace, http).await;
                        break;
                    }
                }
            }
        }
        HttpVersion::Http2 => {
            let last = LastActivity::new();
            let io = TokioIo::new(Activity {
                inner: stream,
                last: last.clone(),
                spans: None,
            });
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .max_header_list_size(u32::try_from(opts.max_head).unwrap_or(u32::MAX))
                .max_concurrent_streams(opts.max_streams);
            let http = builder.serve_connection(io, service);
            tokio::pin!(http);
            let mut told = false;
            // An HTTP/2 connection without a byte either way for the header timeout, or for the
            // server's idle timeout when that is shorter, is closed.
            let quiet = idle_timeout.map_or(opts.header_timeout, |d| d.min(opts.header_timeout));
            loop {
                let idle_until = last.at() + quiet;
                tokio::select! {
                    r = http.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(peer = %info.peer, error = %e, "http/2 connection ended");
                        }
                        break;
                    }
                    _ = shutdown.cancelled() => {
                        http.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(opts.shutdown_grace, http.as_mut()).await;
                        break;
                    }
                    _ = tokio::time::sleep_until(idle_until) => {
                        if last.at() + quiet > Instant::now() {
                            continue;
                        }
                        // No byte either way for the header timeout (a client that never sends
                        // its preface, or an idle connection): first a GOAWAY, then, if the
                        // client still says nothing (hyper waits for its answer, and for a
                        // preface that never comes), the connection is dropped.
                        if told {
                            tracing::debug!(peer = %info.peer, "idle http/2 connection dropped");
                            break;
                        }
                        told = true;
                        last.touch();
                        http.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
    info.upgrades.close();
    info.upgrades.wait().await;
}

/// Adds the headers that keep a page of ours to itself: a content security policy (`csp`), no
/// MIME sniffing, no referrer.
pub fn security_headers(h: &mut HeaderMap, csp: &'static str) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// A plain-text response, for errors.
pub fn text_response(status: hyper::StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(text)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// A future that never fails, for services written as async functions.
pub type HttpFuture<B> = Pin<Box<dyn Future<Output = Result<Response<B>, Infallible>> + Send>>;
