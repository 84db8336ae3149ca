//! `sockit chat --web`: the chat in a browser. One HTTP listener serves the page at `/` (HTML, JS
//! and CSS compiled into the binary; nothing is fetched from elsewhere) and a WebSocket at `/ws`
//! whose clients are members of the same hub as the TCP clients.
//!
//! Connections are accepted by the net layer ([`net::serve`]), so allow/deny, `--max-conns`, TLS
//! (the page then loads over https and the socket is wss) and the shutdown drain work as for every
//! other sockit server; each accepted stream is handed to hyper, which routes requests through an
//! axum [`Router`] and upgrades `/ws` requests ([`gateway`] runs the chat session over the socket).
//! Every request is first checked for a `Host` that names this listener ([`host`], against DNS
//! rebinding); `/ws` then checks the page's `Origin` ([`origin`], against cross-site pages).

mod gateway;
mod origin;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::service::TowerToHyperService;
use tokio_util::sync::CancellationToken;

pub use crate::net::{parse_host_name, HostPolicy};
pub use origin::{Origin, OriginPolicy};

use super::hub::ChatHub;
use super::ChatSettings;
use crate::net::http::{http_refusals, security_headers, serve_http};
use crate::net::{
    self, Conn, Endpoint, HttpConn, HttpOptions, Listener, LocalAddr, NetError, ServerOptions,
};

/// Where `--web` listens when given no address (clear of echo 9001/9002, chat 9003, http 8080,
/// recv 6000 and daytime 9999).
pub const DEFAULT_WEB_ADDR: &str = "127.0.0.1:9080";

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");
const ICON_SVG: &str = include_str!("assets/icon.svg");

/// The page may load only its own script and style and talk only to its own server.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A validated `--web` configuration. TLS and the connection limits are the chat server's own
/// ([`super::ChatConfig::server`]).
#[derive(Debug, Clone)]
pub struct WebConfig {
    pub endpoint: Endpoint,
    /// Page origins allowed to open the WebSocket besides the server's own.
    pub origins: OriginPolicy,
    /// Host names served besides the listener's own (`--web-host`; the hosts of `origins` are
    /// served too).
    pub hosts: Vec<String>,
    /// A request head must arrive within this (slowloris); also the idle keep-alive time.
    pub header_timeout: Duration,
}

/// The bound web listener.
#[derive(Debug)]
pub struct WebGateway {
    listener: Listener,
    origins: OriginPolicy,
    hosts: Arc<HostPolicy>,
    server: ServerOptions,
    header_timeout: Duration,
}

/// What every request handler shares.
struct Web {
    hub: ChatHub,
    settings: Arc<ChatSettings>,
    origins: OriginPolicy,
    tls: bool,
    header_timeout: Duration,
}

#[derive(Clone)]
struct AppState {
    web: Arc<Web>,
    conn: Arc<HttpConn>,
}

impl WebGateway {
    /// Binds the web listener with the chat server's limits and TLS.
    pub async fn bind(config: WebConfig, server: &ServerOptions) -> Result<Self, NetError> {
        let listener = Listener::bind(&config.endpoint).await?;
        let names = config.hosts.iter().map(String::as_str);
        let hosts = HostPolicy::new(&listener.local_addr(), names.chain(config.origins.hosts()));
        let mut server = server.clone();
        // The chat's plain-text "server full" line would be noise to a browser.
        http_refusals(&mut server);
        Ok(WebGateway {
            listener,
            origins: config.origins,
            hosts: Arc::new(hosts),
            server,
            header_timeout: config.header_timeout,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> LocalAddr {
        self.listener.local_addr()
    }

    /// Whether the page is served over https (and the socket is wss).
    pub fn is_tls(&self) -> bool {
        self.server.tls.is_some()
    }

    /// Serves the page and the WebSocket until `shutdown`; WebSocket clients are told the server
    /// is stopping and get a close frame.
    pub async fn run(self, hub: ChatHub, settings: Arc<ChatSettings>, shutdown: CancellationToken) {
        let web = Arc::new(Web {
            hub,
            settings,
            origins: self.origins,
            tls: self.server.tls.is_some(),
            header_timeout: self.header_timeout,
        });
        let router = routes(self.hosts);
        net::serve(self.listener, self.server, shutdown, move |conn| {
            serve_conn(conn, router.clone(), web.clone())
        })
        .await;
    }
}

fn routes(hosts: Arc<HostPolicy>) -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route(
            "/icon.svg",
            get(|| async { asset("image/svg+xml", ICON_SVG) }),
        )
        .route("/ws", get(websocket))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        // Outside every route and the fallback: no request for a foreign name gets anything.
        .layer(middleware::from_fn_with_state(hosts, check_host))
}

/// Serves only requests whose `Host` names this listener (see [`host`]); 421 Misdirected Request
/// otherwise, the status for "not a name this server answers to".
async fn check_host(State(hosts): State<Arc<HostPolicy>>, req: Request, next: Next) -> Response {
    if req.headers().get_all(header::HOST).iter().nth(1).is_some() {
        return (StatusCode::BAD_REQUEST, "more than one Host header\n").into_response();
    }
    if let Err(refused) = hosts.check_request(req.uri(), req.headers()) {
        tracing::info!(path = req.uri().path(), "request refused: {}", refused.0);
        let mut res = (StatusCode::MISDIRECTED_REQUEST, format!("{}\n", refused.0)).into_response();
        res.headers_mut().insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        return res;
    }
    next.run(req).await
}

/// Serves one accepted connection with the net layer's HTTP glue (header timeout, head limit,
/// write deadline, graceful shutdown, upgrades); the WebSocket session, if any, is waited for.
async fn serve_conn(conn: Conn, router: Router<AppState>, web: Arc<Web>) {
    // hyper waits on a full socket for as long as it takes: without a deadline, a client that
    // pipelines requests and never reads the answers keeps its slot for ever. The page is
    // HTTP/1.1 only (the WebSocket needs it), so HTTP/2 is off even if TLS offered it.
    let opts = HttpOptions {
        write_timeout: Some(web.settings.write_timeout),
        header_timeout: web.header_timeout,
        http2: false,
        // The page serves no files.
        sendfile: false,
        ..HttpOptions::default()
    };
    serve_http(conn, &opts, move |info| {
        TowerToHyperService::new(router.with_state(AppState { web, conn: info }))
    })
    .await;
}

/// A static file with the headers that keep the page to itself.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    security_headers(h, CSP);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

/// `/ws`: checks the Origin, then turns the connection into a chat session.
async fn websocket(
    State(st): State<AppState>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let text = |name| headers.get(name).map(|v| v.to_str().unwrap_or("\u{FFFD}"));
    if let Err(refused) = st
        .web
        .origins
        .check(text(header::ORIGIN), text(header::HOST), st.web.tls)
    {
        tracing::info!(peer = %st.conn.peer, "websocket refused: {}", refused.0);
        return (StatusCode::FORBIDDEN, format!("{}\n", refused.0)).into_response();
    }
    let web = st.web.clone();
    let conn = st.conn.clone();
    // The session counts as a task of this connection from now on; if the upgrade fails, the
    // callback (and with it the token) is dropped.
    let token = conn.upgrade_token();
    let cutoff = web.settings.flood_cutoff();
    upgrade
        .max_message_size(cutoff)
        .max_frame_size(cutoff)
        // Small buffers: idle browser tabs are many, and chat messages are short.
        .read_buffer_size(8 * 1024)
        .write_buffer_size(8 * 1024)
        .on_upgrade(move |socket| async move {
            let _token = token;
            // The session has the same write timeout, and when it fires it tells the client and
            // the room why; the stream's own stays as a backstop, just after it.
            let settings = &web.settings;
            conn.write_timeout()
                .set(Some(settings.write_timeout + settings.flush_timeout));
            gateway::run(
                socket,
                web.hub.clone(),
                web.settings.clone(),
                gateway::Link {
                    peer: conn.peer.clone(),
                    shutdown: conn.shutdown.clone(),
                    gone: conn.gone(),
                    idle_timeout: conn.idle_timeout,
                },
            )
            .await;
        })
}
