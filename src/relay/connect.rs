//! `sockit connect`: one outgoing connection relayed to stdin/stdout or a command.

use tokio_util::sync::CancellationToken;

use super::datagram::{command_options, connect_udp};
use super::exec::{self, ConnInfo};
use super::pump::{relay_stream, Sides};
use super::{Attach, Ended, Local, RelayOptions};
use crate::net::{self, ConnectOptions, Endpoint, NetError, PeerAddr, Proxy, Stream};

/// A validated `connect` configuration.
#[derive(Debug, Clone)]
pub struct ConnectConfig {
    pub endpoint: Endpoint,
    /// UDP instead of a stream.
    pub udp: bool,
    /// Timeout, source address and TLS of the connection (UDP uses the source only).
    pub connect: ConnectOptions,
    /// Connect through this proxy (streams only).
    pub proxy: Option<Proxy>,
    pub relay: RelayOptions,
}

/// Connects and relays until both sides are done. Connection failures come back as the net layer's
/// one-line errors (refused, unreachable, timed out, TLS peer rejected).
pub async fn connect(
    config: &ConnectConfig,
    attach: Attach,
    shutdown: CancellationToken,
) -> Result<Ended, NetError> {
    if config.udp {
        return connect_udp(
            &config.endpoint,
            config.connect.source,
            attach,
            &config.relay,
            &shutdown,
        )
        .await;
    }
    let attempt = async {
        match &config.proxy {
            Some(proxy) => net::connect_via(proxy, &config.endpoint, &config.connect).await,
            None => net::connect(&config.endpoint, &config.connect).await,
        }
    };
    let stream = tokio::select! {
        s = attempt => s?,
        _ = shutdown.cancelled() => return Ok(Ended::Interrupted),
    };
    let peer = config.endpoint.to_string();
    // ncat's line at -v, with the address actually reached.
    match (&config.proxy, stream.tcp().and_then(|s| s.peer_addr().ok())) {
        (Some(proxy), _) => tracing::info!("connected to {peer} through the proxy {}", proxy.at),
        (None, Some(addr)) => tracing::info!("connected to {addr}"),
        (None, None) => tracing::info!("connected to {peer}"),
    }
    match attach {
        Attach::Io(Local {
            input,
            output,
            flushed,
        }) => {
            let sides = Sides {
                input: input.into(),
                output,
                command: false,
            };
            let result = relay_stream(
                stream,
                sides,
                &config.relay,
                config.relay.crlf,
                &peer,
                &shutdown,
            )
            .await;
            if !matches!(result, Ok(Ended::Interrupted)) {
                flushed.wait().await;
            }
            result
        }
        Attach::Exec(spec) => {
            let info = ConnInfo::of_stream(&stream, &peer_addr(&stream));
            let session = exec::spawn(&spec, &info)?;
            let opts = command_options(&config.relay);
            let result = relay_stream(stream, session.sides, &opts, false, &peer, &shutdown).await;
            session.guard.finish().await;
            result
        }
    }
}

fn peer_addr(stream: &Stream) -> PeerAddr {
    match stream.tcp().and_then(|s| s.peer_addr().ok()) {
        Some(a) => PeerAddr::Inet(a),
        None => PeerAddr::Unix,
    }
}
