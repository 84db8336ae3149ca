//! `sockit http`: a static file server for one folder.
//!
//! Connections come from the net layer ([`net::serve`]: allow/deny, `--max-conns`, per-address
//! limits, TLS, drain) and are served by its HTTP glue ([`net::serve_http`]: HTTP/1.1 keep-alive,
//! HTTP/2 over TLS by ALPN, header timeout, head limit, write deadline, graceful shutdown), the
//! same glue the chat's web page runs on.
//!
//! # Why not tower-http's `ServeDir`
//! The file serving is written here on hyper, not on `ServeDir`, because what `ServeDir` lacks is
//! most of the work (see the project's notes on static servers): it answers multi-range requests
//! with 416 instead of `multipart/byteranges`, has no directory listing (HTML or JSON), no symlink
//! policy (it follows symlinks out of the folder), no dotfile hiding, and no hook to refuse a path
//! before it is opened. Wrapping it would mean resolving every path twice (once here for the
//! policy, once inside it) and still writing ranges and listings beside it. What it has, strong
//! ETags, conditional requests, precompressed siblings and on-the-fly compression, is small on
//! top of hyper: [`range`] holds the RFC 9110 rules, and `async-compression` does the encoding.
//!
//! # Large files and sendfile
//! hyper writes `Bytes` and cannot be handed a file descriptor. On plain TCP over HTTP/1.1 a file
//! region larger than 64 KiB (a whole file or one range) is sent with `sendfile(2)` all the same:
//! its body is a run of placeholder chunks that the connection's stream in the net layer turns
//! into sendfile calls ([`net::sendfile`]), so its bytes go from the page cache to the socket
//! without a copy through user space, and hyper keeps doing the head, keep-alive, pipelining and
//! the write deadline. TLS and HTTP/2 (and `--no-sendfile`) read the file in 256 KiB chunks
//! (`body::FileBody`: on the async thread when the page cache holds them, `preadv2(RWF_NOWAIT)`,
//! on the blocking pool when not). Small files are read whole into the response. Multipart range
//! bodies use the chunk reader too (their part heads sit between the regions). As with nginx
//! without `aio`, a sendfile of bytes not in the page cache waits for the disk on the worker
//! thread.
//!
//! Every path is resolved by [`path`] (decode once, refuse `..`, NUL, backslashes, drive
//! letters, invalid UTF-8; canonicalize; refuse what lands outside the folder unless symlinks may
//! be followed; hide dotfiles), in one `openat2(2)` call when no symlink is on the way. The file
//! system work of a request (resolve, stat, open, read a small file) runs on the async thread, as
//! nginx does it in its event loop: a hop to the blocking pool and back cost more than the whole
//! request (bench/http.sh). Only listings, which read whole folders, go to the pool.

mod body;
pub mod listing;
pub mod log;
pub mod path;
pub mod range;

use std::borrow::Cow;
use std::convert::Infallible;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::{stream, StreamExt, TryStreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::BufReader;
use tokio_util::io::ReaderStream;
use tokio_util::sync::CancellationToken;

pub use log::{AccessLog, LogFormat, Record};
use path::{Direct, Policy, Refused, RelPath};
use range::{Condition, Ranges, Validators};

use crate::net::http::{http_refusals, security_headers, ALPN_H2_HTTP1};
use crate::net::{
    self, Endpoint, HttpConn, HttpOptions, HttpVersion, Listener, LocalAddr, NetError, PeerAddr,
    ServerOptions,
};

/// The tutorial web server's address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";

/// Files up to this size are read into memory in the request's blocking task (one hop to the
/// pool instead of one per chunk).
const SMALL_FILE: u64 = 64 * 1024;
/// Read size for larger files.
const CHUNK: usize = 256 * 1024;
/// Default smallest file compressed on the fly: below it, the headers outweigh the savings.
pub const DEFAULT_COMPRESS_MIN: u64 = 1024;
/// Default most entries one folder listing shows: a folder of millions of files would otherwise
/// cost a request that much memory and time.
pub const DEFAULT_MAX_LISTING: usize = 10_000;

/// A validated `sockit http` configuration.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub endpoint: Endpoint,
    /// The folder served.
    pub root: PathBuf,
    /// List folders without an index.html (HTML, or JSON when asked for).
    pub listing: bool,
    /// Serve (and list) dotfiles.
    pub hidden: bool,
    /// Let symlinks lead out of the folder.
    pub follow_symlinks: bool,
    /// Compress text on the fly for clients that accept it.
    pub compress: bool,
    /// Smallest file compressed on the fly.
    pub compress_min: u64,
    /// Most entries one listing shows (the first ones the folder yields, then sorted).
    pub max_listing: usize,
    /// Most ranges one request may ask for; more get the whole file.
    pub max_ranges: usize,
    /// Basic auth, `user:pass`.
    pub auth: Option<String>,
    /// Host names served besides the listener's own (`--web-host`); any other `Host` gets 421,
    /// so a page whose name is rebound to this machine cannot read the folder (DNS rebinding).
    pub hosts: Vec<String>,
    /// Access log, if any.
    pub access_log: Option<AccessLog>,
    /// Header timeout, head size, write timeout.
    pub http: HttpOptions,
    /// Connection limits, allow/deny, TLS.
    pub server: ServerOptions,
}

impl HttpConfig {
    /// Serves `root` on `endpoint` with the defaults.
    pub fn new(endpoint: Endpoint, root: PathBuf) -> Self {
        HttpConfig {
            endpoint,
            root,
            listing: true,
            hidden: false,
            follow_symlinks: false,
            compress: false,
            compress_min: DEFAULT_COMPRESS_MIN,
            max_listing: DEFAULT_MAX_LISTING,
            max_ranges: range::DEFAULT_MAX_RANGES,
            auth: None,
            hosts: Vec::new(),
            access_log: None,
            http: HttpOptions::default(),
            server: ServerOptions::default(),
        }
    }
}

/// What every request shares.
struct Shared {
    policy: Policy,
    listing: bool,
    compress: bool,
    compress_min: u64,
    max_listing: usize,
    max_ranges: usize,
    /// `Basic <base64(user:pass)>`'s token, compared in constant time.
    auth: Option<Vec<u8>>,
    /// Which `Host` values name this server.
    hosts: net::HostPolicy,
    log: Option<AccessLog>,
}

/// A bound file server.
#[derive(Debug)]
pub struct HttpServer {
    listener: Listener,
    shared: Arc<SharedDebug>,
    http: HttpOptions,
    server: ServerOptions,
}

/// [`Shared`] behind a Debug that shows no credentials.
struct SharedDebug(Shared);

impl std::fmt::Debug for SharedDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("root", &self.0.policy.root)
            .field("auth", &self.0.auth.is_some())
            .finish_non_exhaustive()
    }
}

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot serve {path}: {source}")]
    Root { path: PathBuf, source: io::Error },
    #[error("cannot serve {0}: not a folder")]
    NotADir(PathBuf),
    #[error("--auth takes user:pass")]
    Auth,
    #[error(transparent)]
    Net(#[from] NetError),
}

impl HttpServer {
    /// Checks the folder and binds the listener.
    pub async fn bind(config: HttpConfig) -> Result<Self, HttpError> {
        let root = std::fs::canonicalize(&config.root).map_err(|source| HttpError::Root {
            path: config.root.clone(),
            source,
        })?;
        if !root.is_dir() {
            return Err(HttpError::NotADir(config.root));
        }
        let auth = match &config.auth {
            None => None,
            Some(pair) if pair.contains(':') => {
                use base64::Engine;
                Some(
                    base64::engine::general_purpose::STANDARD
                        .encode(pair.as_bytes())
                        .into_bytes(),
                )
            }
            Some(_) => return Err(HttpError::Auth),
        };
        let mut server = config.server;
        // A request holds its socket and the file (or folder) it is served from.
        server.fds_per_conn = 2;
        if let Some(tls) = server.tls.take() {
            let alpn = if config.http.http2 {
                ALPN_H2_HTTP1
            } else {
                net::http::ALPN_HTTP1
            };
            server.tls = Some(tls.with_alpn(alpn));
        }
        http_refusals(&mut server);
        let listener = Listener::bind(&config.endpoint).await?;
        let hosts = net::HostPolicy::new(&listener.local_addr(), &config.hosts);
        Ok(HttpServer {
            listener,
            shared: Arc::new(SharedDebug(Shared {
                policy: Policy::new(root, config.follow_symlinks, config.hidden),
                listing: config.listing,
                compress: config.compress,
                compress_min: config.compress_min,
                max_listing: config.max_listing,
                max_ranges: config.max_ranges,
                auth,
                hosts,
                log: config.access_log,
            })),
            http: config.http,
            server,
        })
    }

    pub fn local_addr(&self) -> LocalAddr {
        self.listener.local_addr()
    }

    /// The folder served (canonical).
    pub fn root(&self) -> &Path {
        &self.shared.0.policy.root
    }

    /// Serves until `shutdown`, then drains.
    pub async fn run(self, shutdown: CancellationToken) {
        let shared = self.shared;
        let http = Arc::new(self.http);
        net::serve(self.listener, self.server, shutdown, move |conn| {
            let shared = shared.clone();
            let http = http.clone();
            async move {
                net::serve_http(conn, &http, move |info| {
                    hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        let info = info.clone();
                        async move { Ok::<_, Infallible>(handle(&shared.0, &info, req).await) }
                    })
                })
                .await
            }
        })
        .await;
    }
}

type Body = UnsyncBoxBody<Bytes, io::Error>;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

/// Serves one request and logs it.
async fn handle(shared: &Shared, conn: &HttpConn, req: Request<Incoming>) -> Response<Body> {
    // The clock is read only for a log line that reports the duration.
    let started = shared.log.as_ref().map(|_| std::time::Instant::now());
    let res = respond(shared, conn, &req).await;
    if let (Some(log), Some(started)) = (&shared.log, started) {
        let h = req.headers();
        let text = |name| {
            h.get(name)
                .map(|v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let remote = match &conn.peer {
            PeerAddr::Inet(a) => a.ip().to_string(),
            other => other.to_string(),
        };
        log.record(Record {
            time: chrono::Utc::now().to_rfc3339(),
            remote,
            user: shared.auth.as_ref().and_then(|_| basic_user(h)),
            method: req.method().to_string(),
            path: req
                .uri()
                .path_and_query()
                .map_or("/".into(), |p| p.as_str().to_string()),
            protocol: match conn.version {
                HttpVersion::Http2 => "HTTP/2.0",
                HttpVersion::Http1 if req.version() == hyper::Version::HTTP_10 => "HTTP/1.0",
                HttpVersion::Http1 => "HTTP/1.1",
            },
            status: res.status().as_u16(),
            bytes: res
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .or_else(|| hyper::body::Body::size_hint(res.body()).exact())
                .filter(|_| req.method() != Method::HEAD),
            referer: text(header::REFERER),
            user_agent: text(header::USER_AGENT),
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        });
    }
    res
}

/// The user name of a Basic credential (for the log; checked or not).
fn basic_user(h: &HeaderMap) -> Option<String> {
    use base64::Engine;
    let value = h.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    Some(text.split_once(':')?.0.to_string())
}

/// Whether the request carries the expected Basic credential. The comparison takes the same time
/// wherever the first difference is, so the password cannot be guessed byte by byte from timing
/// (only its encoded length shows).
fn authorized(h: &HeaderMap, expected: &[u8]) -> bool {
    let Some(value) = h.get(header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    let Some(space) = value.iter().position(|b| *b == b' ') else {
        return false;
    };
    if !value[..space].eq_ignore_ascii_case(b"basic") {
        return false;
    }
    let token = value[space + 1..].trim_ascii();
    let mut diff = u8::from(token.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        diff |= e ^ token.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// A small HTML page for errors (the tutorial server's 404 has a body).
fn error_page(status: StatusCode, detail: &str) -> Response<Body> {
    let reason = status.canonical_reason().unwrap_or("");
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{code} {reason}</title></head>\
<body><h1>{code} {reason}</h1><p>{detail}</p></body></html>\n",
        code = status.as_u16(),
        detail = listing::escape(detail),
    );
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    security_headers(h, listing::LISTING_CSP);
    res
}

async fn respond(shared: &Shared, conn: &HttpConn, req: &Request<Incoming>) -> Response<Body> {
    if let Err(refused) = shared.hosts.check_request(req.uri(), req.headers()) {
        tracing::info!(path = req.uri().path(), "request refused: {}", refused.0);
        return error_page(StatusCode::MISDIRECTED_REQUEST, &refused.0);
    }
    if let Some(expected) = &shared.auth {
        if !authorized(req.headers(), expected) {
            let mut res = error_page(
                StatusCode::UNAUTHORIZED,
                "this folder needs a user name and password",
            );
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"sockit\", charset=\"UTF-8\""),
            );
            return res;
        }
    }
    let head = match *req.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => {
            let mut res = error_page(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET and HEAD are served",
            );
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return res;
        }
    };
    let rel = match path::decode(req.uri().path()) {
        Ok(rel) => rel,
        Err(Refused::Bad(why)) => {
            tracing::debug!(path = req.uri().path(), "refused: {why}");
            return error_page(StatusCode::BAD_REQUEST, why);
        }
        Err(_) => return error_page(StatusCode::NOT_FOUND, "nothing here"),
    };
    let ask = Ask {
        rel,
        headers: req.headers(),
        query: req.uri().query(),
        head,
    };
    let opts = Opts {
        listing: shared.listing,
        compress: shared.compress,
        compress_min: shared.compress_min,
        max_listing: shared.max_listing,
        max_ranges: shared.max_ranges,
    };
    // Resolving, stat-ing, opening and reading a small file run right here on the async thread,
    // as nginx does them in its event loop: for a file in the page cache they take a few
    // microseconds, while a hop to the blocking pool and back (two thread wake-ups) cost more
    // than the whole request and were half the server's CPU at 1 KiB (bench/http.sh). The
    // price: a file system that stalls (a dead NFS mount) stalls this worker thread too. Only a
    // listing, which reads a whole folder, goes to the pool.
    let plan = match plan(&shared.policy, opts, &ask) {
        Plan::List(list) => {
            let policy = shared.policy.clone();
            match tokio::task::spawn_blocking(move || plan_listing(&policy, list)).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "listing task failed");
                    return error_page(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
                }
            }
        }
        other => other,
    };
    match plan {
        Plan::Error(status, detail) => error_page(status, detail),
        // A listing's own plan never asks for another listing.
        Plan::List(_) => error_page(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
        Plan::Ready(mut res, body) => {
            let body = match body {
                Payload::Empty => empty(),
                Payload::Bytes(b) => full(b),
                Payload::File { file, start, len } => file_body(conn, file, start, len),
                Payload::Multipart { parts, end } => multipart_body(parts, end),
                Payload::Compressed { file, encoding } => compressed_body(file, encoding),
            };
            let h = res.headers_mut();
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            let (parts, ()) = res.into_parts();
            Response::from_parts(parts, body)
        }
    }
}

/// What the file system part needs of the request.
struct Ask<'a> {
    rel: RelPath,
    headers: &'a HeaderMap,
    query: Option<&'a str>,
    head: bool,
}

/// A folder to list, and how (decided before the listing goes to the blocking pool).
struct ListAsk {
    dir: PathBuf,
    json: bool,
    sort: listing::Sort,
    /// The decoded request path, for the title.
    shown: String,
    head: bool,
    /// Most entries shown.
    max: usize,
}

#[derive(Clone, Copy)]
struct Opts {
    listing: bool,
    compress: bool,
    compress_min: u64,
    max_listing: usize,
    max_ranges: usize,
}

/// A response decided from the file system; its body is made afterwards.
enum Plan {
    Error(StatusCode, &'static str),
    Ready(Response<()>, Payload),
    /// A folder listing, to be read on the blocking pool.
    List(ListAsk),
}

enum Payload {
    Empty,
    Bytes(Bytes),
    File {
        file: File,
        start: u64,
        len: u64,
    },
    Multipart {
        parts: Vec<(Bytes, File, u64, u64)>,
        end: Bytes,
    },
    Compressed {
        file: File,
        encoding: Encoding,
    },
}

/// Content codings sockit makes or finds precompressed, in the server's order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Brotli,
    Zstd,
    Gzip,
}

impl Encoding {
    const ALL: [Encoding; 3] = [Encoding::Brotli, Encoding::Zstd, Encoding::Gzip];

    fn token(self) -> &'static str {
        match self {
            Encoding::Brotli => "br",
            Encoding::Zstd => "zstd",
            Encoding::Gzip => "gzip",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Encoding::Brotli => "br",
            Encoding::Zstd => "zst",
            Encoding::Gzip => "gz",
        }
    }
}

/// The codings the client accepts (q > 0), from Accept-Encoding.
fn accepted(h: &HeaderMap) -> Vec<Encoding> {
    let mut out = Vec::new();
    let mut star = false;
    let mut refused = Vec::new();
    for value in h.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let zero = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            match (name.as_str(), zero) {
                ("*", false) => star = true,
                (n, true) => refused.push(n.to_string()),
                (n, false) => {
                    if let Some(e) = Encoding::ALL.iter().find(|e| e.token() == n) {
                        out.push(*e);
                    }
                }
            }
        }
    }
    Encoding::ALL
        .into_iter()
        .filter(|e| !refused.iter().any(|r| r == e.token()) && (out.contains(e) || star))
        .collect()
}

/// Types worth compressing: text, and the structured text formats.
fn compressible(mime: &str) -> bool {
    let essence = mime.split(';').next().unwrap_or("").trim();
    essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence,
            "application/json"
                | "application/javascript"
                | "application/xml"
                | "application/wasm"
                | "image/svg+xml"
                | "application/x-javascript"
                | "application/toml"
                | "application/yaml"
        )
}

/// The Content-Type of a file: its extension's, with UTF-8 for text (what most text is now; a
/// browser guessing would show UTF-8 as Latin-1). Remembered per extension on each thread: the
/// guess (a search of mime_guess's table, a parse, a format) was 2% of a small file's request.
fn content_type(path: &Path) -> String {
    /// Extensions remembered per thread before the memory starts over (only files that exist
    /// are typed, but a folder may hold any number of extensions).
    const REMEMBERED: usize = 256;
    thread_local! {
        static TYPES: std::cell::RefCell<std::collections::HashMap<String, String>> = Default::default();
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    TYPES.with(|types| {
        let mut types = types.borrow_mut();
        if let Some(t) = types.get(&ext) {
            return t.clone();
        }
        let mime = mime_guess::from_ext(&ext).first_or_octet_stream();
        let essence = mime.essence_str();
        let t = if essence.starts_with("text/") || essence == "application/javascript" {
            format!("{essence}; charset=utf-8")
        } else {
            essence.to_string()
        };
        if types.len() >= REMEMBERED {
            types.clear();
        }
        types.insert(ext, t.clone());
        t
    })
}

fn set(h: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

/// Re-encodes decoded segments as a path (for redirects: never echoes the raw target).
fn encoded_path(rel: &RelPath) -> String {
    let mut out = String::from("/");
    for seg in &rel.segments {
        out.push_str(
            &percent_encoding::utf8_percent_encode(seg, percent_encoding::NON_ALPHANUMERIC)
                .to_string(),
        );
        out.push('/');
    }
    out
}

/// The file system part of a request: find the file, apply the conditionals, choose the
/// representation and the ranges, open and (small files) read.
fn plan(policy: &Policy, opts: Opts, ask: &Ask) -> Plan {
    let found = match path::resolve(policy, &ask.rel) {
        Ok(f) => f,
        Err(Refused::Outside) => {
            tracing::info!(path = ?ask.rel.segments, "refused: a symlink leads out of the folder");
            return Plan::Error(StatusCode::FORBIDDEN, "this path leads out of the folder");
        }
        Err(Refused::Bad(why)) => return Plan::Error(StatusCode::BAD_REQUEST, why),
        Err(Refused::NotFound) => return Plan::Error(StatusCode::NOT_FOUND, "nothing here"),
    };
    if found.meta.is_dir() {
        if !ask.rel.trailing_slash && !ask.rel.segments.is_empty() {
            let mut location = encoded_path(&ask.rel);
            if let Some(q) = ask.query {
                location.push('?');
                location.push_str(q);
            }
            let mut res = Response::new(());
            *res.status_mut() = StatusCode::MOVED_PERMANENTLY;
            set(res.headers_mut(), header::LOCATION, &location);
            return Plan::Ready(res, Payload::Empty);
        }
        let index = found.path.join("index.html");
        let mut rel = ask.rel.segments.join("/");
        if !rel.is_empty() {
            rel.push('/');
        }
        rel.push_str("index.html");
        match policy.open_direct(&rel) {
            Direct::Opened(file, meta) if meta.is_file() => {
                return plan_file(policy, opts, ask, "index.html", &index, meta, Some(file));
            }
            Direct::Opened(..) | Direct::NotFound => {}
            Direct::Fallback => {
                if let Ok(canonical) = std::fs::canonicalize(&index) {
                    if policy.admits(&canonical).is_ok() {
                        if let Ok(meta) = std::fs::metadata(&canonical) {
                            if meta.is_file() {
                                return plan_file(
                                    policy,
                                    opts,
                                    ask,
                                    "index.html",
                                    &canonical,
                                    meta,
                                    None,
                                );
                            }
                        }
                    }
                }
            }
        }
        if !opts.listing {
            return Plan::Error(StatusCode::FORBIDDEN, "folder listing is off");
        }
        let mut shown = String::from("/");
        for seg in &ask.rel.segments {
            shown.push_str(seg);
            shown.push('/');
        }
        return Plan::List(ListAsk {
            dir: found.path,
            json: wants_json(ask.headers),
            sort: listing::Sort::from_query(ask.query),
            shown,
            head: ask.head,
            max: opts.max_listing,
        });
    }
    if ask.rel.trailing_slash {
        return Plan::Error(StatusCode::NOT_FOUND, "nothing here");
    }
    let name = ask.rel.segments.last().map_or("", String::as_str);
    plan_file(policy, opts, ask, name, &found.path, found.meta, found.file)
}

fn wants_json(h: &HeaderMap) -> bool {
    h.get_all(header::ACCEPT).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',').any(|t| {
                let t = t.trim();
                t.starts_with("application/json") && !t.replace(' ', "").contains(";q=0")
            })
        })
    })
}

/// A file or folder that could not be opened: 403, unless the server is out of descriptors or
/// memory, which is the server's trouble and passes: 503, as nginx answers then.
fn cannot_open(e: &std::io::Error, forbidden: &'static str) -> Plan {
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM) => Plan::Error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is busy; try again shortly",
        ),
        _ => Plan::Error(StatusCode::FORBIDDEN, forbidden),
    }
}

fn plan_listing(policy: &Policy, ask: ListAsk) -> Plan {
    let (mut entries, cut) = match listing::read(&ask.dir, policy, ask.max) {
        Ok(e) => e,
        Err(e) => {
            tracing::info!(dir = %ask.dir.display(), error = %e, "cannot list");
            return cannot_open(&e, "this folder cannot be read");
        }
    };
    listing::sort(&mut entries, ask.sort);
    let mut res = Response::new(());
    let h = res.headers_mut();
    if cut {
        // JSON clients learn of the cut from this header; the page says it in words.
        h.insert(
            header::HeaderName::from_static("x-listing-truncated"),
            HeaderValue::from(ask.max),
        );
    }
    let body = if ask.json {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        listing::json(&entries)
    } else {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        security_headers(h, listing::LISTING_CSP);
        listing::html(&ask.shown, &entries, ask.sort, cut).into_bytes()
    };
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    set(h, header::CONTENT_LENGTH, &body.len().to_string());
    let payload = if ask.head {
        Payload::Empty
    } else {
        Payload::Bytes(Bytes::from(body))
    };
    Plan::Ready(res, payload)
}

/// A precompressed sibling.
type Sibling = (Encoding, PathBuf, std::fs::Metadata);

/// The precompressed sibling (`name.br`, `.zst`, `.gz`) the client accepts, if there is one (it
/// must be a regular file that the policy admits like the original), and whether there is any
/// sibling at all (then the answer varies with Accept-Encoding even when none is sent).
fn precompressed(policy: &Policy, path: &Path, accepts: &[Encoding]) -> (Option<Sibling>, bool) {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return (None, false);
    };
    let mut any = false;
    for enc in Encoding::ALL {
        let sibling = path.with_file_name(format!("{name}.{}", enc.suffix()));
        // One lstat first: most files have no sibling, and this is on every request's path.
        if std::fs::symlink_metadata(&sibling).is_err() {
            continue;
        }
        any = true;
        if !accepts.contains(&enc) {
            continue;
        }
        let Ok(canonical) = std::fs::canonicalize(&sibling) else {
            continue;
        };
        if policy.admits(&canonical).is_err() {
            continue;
        }
        if let Ok(meta) = std::fs::metadata(&canonical) {
            if meta.is_file() {
                return (Some((enc, canonical, meta)), true);
            }
        }
    }
    (None, any)
}

/// Serves the file at `path` (canonical; `opened` if the lookup opened it already) asked for as
/// `name`: the type follows the name asked for, as in nginx, so a symlink `page.html -> v2.txt`
/// is still HTML.
#[allow(clippy::too_many_arguments)]
fn plan_file(
    policy: &Policy,
    opts: Opts,
    ask: &Ask<'_>,
    name: &str,
    path: &Path,
    meta: std::fs::Metadata,
    opened: Option<File>,
) -> Plan {
    let h = ask.headers;
    let mime = content_type(Path::new(name));
    let accepts = accepted(h);
    let text = compressible(&mime);
    // Which representation: a precompressed sibling, the file compressed now, or the file.
    // A client that sends no Accept-Encoding at all gets the file without a look for siblings
    // (three lookups that were a fifth of a small request's system calls), as with nginx's
    // gzip_static; its answer then carries no `Vary: Accept-Encoding`, which is harmless: the
    // plain file is what every client accepts.
    let (sibling, has_siblings) = if h.contains_key(header::ACCEPT_ENCODING) {
        precompressed(policy, path, &accepts)
    } else {
        (None, false)
    };
    let (serve_path, meta, coding, on_the_fly, opened) = match sibling {
        Some((enc, p, m)) => (Cow::Owned(p), m, Some(enc), false, None),
        None => {
            let fly = opts.compress
                && text
                && meta.len() >= opts.compress_min
                && !accepts.is_empty()
                && h.get(header::RANGE).is_none();
            let enc = if fly { accepts.first().copied() } else { None };
            (Cow::Borrowed(path), meta, enc, enc.is_some(), opened)
        }
    };
    let len = meta.len();
    let modified = meta.modified().unwrap_or(UNIX_EPOCH);
    let variant = match (coding, on_the_fly) {
        (Some(e), true) => format!("{}-live", e.suffix()),
        (Some(e), false) => e.suffix().to_string(),
        (None, _) => String::new(),
    };
    let v = Validators::new(modified.min(SystemTime::now()), len, &variant);

    let mut res = Response::new(());
    {
        let rh = res.headers_mut();
        set(rh, header::ETAG, &v.etag);
        set(rh, header::LAST_MODIFIED, &v.last_modified());
        // Varies whenever another client could get another encoding of this path.
        if opts.compress && text || has_siblings {
            rh.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        }
    }
    match range::evaluate(h, &v) {
        Condition::Proceed => {}
        Condition::NotModified => {
            *res.status_mut() = StatusCode::NOT_MODIFIED;
            return Plan::Ready(res, Payload::Empty);
        }
        Condition::PreconditionFailed => {
            return Plan::Error(StatusCode::PRECONDITION_FAILED, "the file has changed")
        }
    }
    let rh = res.headers_mut();
    set(rh, header::CONTENT_TYPE, &mime);
    if let Some(e) = coding {
        set(rh, header::CONTENT_ENCODING, e.token());
    }
    let opened = match opened {
        Some(f) => Ok(f),
        None => File::open(&serve_path),
    };
    let mut file = match opened {
        Ok(f) => f,
        Err(e) => {
            tracing::info!(path = %serve_path.display(), error = %e, "cannot open");
            return cannot_open(&e, "this file cannot be read");
        }
    };
    if on_the_fly {
        let payload = if ask.head {
            Payload::Empty
        } else {
            Payload::Compressed {
                file,
                encoding: coding.unwrap_or(Encoding::Gzip),
            }
        };
        return Plan::Ready(res, payload);
    }
    rh.insert(
        header::ACCEPT_RANGES,
        HeaderValue::from_static(if opts.max_ranges == 0 {
            "none"
        } else {
            "bytes"
        }),
    );
    let ranges = match h.get(header::RANGE).and_then(|r| r.to_str().ok()) {
        Some(r) if range::if_range_holds(h, &v) => range::parse_ranges(r, len, opts.max_ranges),
        _ => Ranges::Whole,
    };
    match ranges {
        Ranges::Unsatisfiable => {
            *res.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            let rh = res.headers_mut();
            set(rh, header::CONTENT_RANGE, &format!("bytes */{len}"));
            rh.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            rh.remove(header::CONTENT_ENCODING);
            rh.remove(header::CONTENT_TYPE);
            Plan::Ready(res, Payload::Empty)
        }
        Ranges::Whole => {
            rh.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            if ask.head {
                return Plan::Ready(res, Payload::Empty);
            }
            if len <= SMALL_FILE {
                let mut buf = Vec::with_capacity(len as usize);
                if let Err(e) = (&mut file).take(len).read_to_end(&mut buf) {
                    tracing::info!(path = %serve_path.display(), error = %e, "cannot read");
                    return Plan::Error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "this file cannot be read",
                    );
                }
                if buf.len() as u64 != len {
                    // Shrunk under us: what was announced cannot be sent.
                    return Plan::Error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the file changed while read",
                    );
                }
                return Plan::Ready(res, Payload::Bytes(Bytes::from(buf)));
            }
            Plan::Ready(
                res,
                Payload::File {
                    file,
                    start: 0,
                    len,
                },
            )
        }
        Ranges::Some(list) if list.len() == 1 => {
            let (a, b) = list[0];
            *res.status_mut() = StatusCode::PARTIAL_CONTENT;
            let rh = res.headers_mut();
            set(rh, header::CONTENT_RANGE, &format!("bytes {a}-{b}/{len}"));
            set(rh, header::CONTENT_LENGTH, &(b - a + 1).to_string());
            let payload = if ask.head {
                Payload::Empty
            } else {
                Payload::File {
                    file,
                    start: a,
                    len: b - a + 1,
                }
            };
            Plan::Ready(res, payload)
        }
        Ranges::Some(list) => {
            let boundary = boundary(&v.etag);
            let part_type = mime.clone();
            *res.status_mut() = StatusCode::PARTIAL_CONTENT;
            let rh = res.headers_mut();
            set(
                rh,
                header::CONTENT_TYPE,
                &format!("multipart/byteranges; boundary={boundary}"),
            );
            let mut total = 0u64;
            let mut parts = Vec::with_capacity(list.len());
            for (i, (a, b)) in list.iter().enumerate() {
                let lead = if i == 0 { "" } else { "\r\n" };
                let mut head = format!("{lead}--{boundary}\r\ncontent-type: {part_type}\r\n");
                if let Some(e) = coding {
                    head.push_str(&format!("content-encoding: {}\r\n", e.token()));
                }
                head.push_str(&format!("content-range: bytes {a}-{b}/{len}\r\n\r\n"));
                total += head.len() as u64 + (b - a + 1);
                let part_file = match file.try_clone() {
                    Ok(f) => f,
                    Err(_) => {
                        return Plan::Error(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "out of file handles",
                        )
                    }
                };
                parts.push((Bytes::from(head), part_file, *a, b - a + 1));
            }
            // The body's part headers carry the coding; the whole is not encoded.
            rh.remove(header::CONTENT_ENCODING);
            let end = Bytes::from(format!("\r\n--{boundary}--\r\n"));
            total += end.len() as u64;
            set(rh, header::CONTENT_LENGTH, &total.to_string());
            let payload = if ask.head {
                Payload::Empty
            } else {
                Payload::Multipart { parts, end }
            };
            Plan::Ready(res, payload)
        }
    }
}

/// A multipart boundary that cannot occur in the parts: made from the ETag and the clock, and
/// long enough (RFC 2046 allows 70 characters) that a file containing it by chance is absurd.
fn boundary(etag: &str) -> String {
    use sha2::{Digest, Sha256};
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let digest = Sha256::digest(format!("{etag}{now}").as_bytes());
    format!("sockit-{}", hex::encode(&digest[..16]))
}

/// A file region's body: with sendfile where the connection can, else read in chunks.
fn file_body(conn: &HttpConn, file: File, start: u64, len: u64) -> Body {
    let file = Arc::new(file);
    match conn.file_body(file.clone(), start, len) {
        Some(body) => body.boxed_unsync(),
        None => body::FileBody::new(file, start, len, CHUNK).boxed_unsync(),
    }
}

fn multipart_body(parts: Vec<(Bytes, File, u64, u64)>, end: Bytes) -> Body {
    let body = stream::iter(parts)
        .flat_map(|(head, file, start, len)| {
            let part = body::FileBody::new(Arc::new(file), start, len, CHUNK);
            stream::once(async move { Ok::<_, io::Error>(head) }).chain(
                http_body_util::BodyStream::new(part)
                    .map_ok(|frame| frame.into_data().unwrap_or_default()),
            )
        })
        .chain(stream::once(async move { Ok(end) }));
    StreamBody::new(body.map_ok(Frame::data)).boxed_unsync()
}

fn compressed_body(file: File, encoding: Encoding) -> Body {
    use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder, ZstdEncoder};
    use async_compression::Level;
    let mut f = tokio::fs::File::from_std(file);
    f.set_max_buf_size(CHUNK);
    let reader = BufReader::with_capacity(64 * 1024, f);
    // Brotli's default (11) is for build steps, not for every request: level 4 compresses about
    // as well as gzip's default and as fast.
    let stream = match encoding {
        Encoding::Brotli => ReaderStream::with_capacity(
            Box::pin(BrotliEncoder::with_quality(reader, Level::Precise(4))) as _,
            CHUNK,
        ),
        Encoding::Zstd => ReaderStream::with_capacity(
            Box::pin(ZstdEncoder::new(reader))
                as std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>,
            CHUNK,
        ),
        Encoding::Gzip => {
            ReaderStream::with_capacity(Box::pin(GzipEncoder::new(reader)) as _, CHUNK)
        }
    };
    StreamBody::new(stream.map_ok(Frame::data)).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_compares_the_whole_token() {
        let expected = b"dXNlcjpwYXNz"; // user:pass
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, expected));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcjpwYXNz"),
        );
        assert!(authorized(&h, expected));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("basic  dXNlcjpwYXNz "),
        );
        assert!(authorized(&h, expected));
        for wrong in [
            "Basic dXNlcjpwYXN",
            "Basic dXNlcjpwYXNzAA",
            "Bearer dXNlcjpwYXNz",
            "Basic",
        ] {
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(wrong));
            assert!(!authorized(&h, expected), "{wrong}");
        }
        assert_eq!(
            basic_user(&{
                let mut h = HeaderMap::new();
                h.insert(
                    header::AUTHORIZATION,
                    HeaderValue::from_static("Basic dXNlcjpwYXNz"),
                );
                h
            })
            .as_deref(),
            Some("user")
        );
    }

    #[test]
    fn accept_encoding() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip, br;q=0.5"),
        );
        assert_eq!(accepted(&h), [Encoding::Brotli, Encoding::Gzip]);
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("*, br;q=0"),
        );
        assert_eq!(accepted(&h), [Encoding::Zstd, Encoding::Gzip]);
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        assert!(accepted(&h).is_empty());
    }
}
