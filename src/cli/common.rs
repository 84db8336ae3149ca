//! Flags every server or client shares, and their conversion into the net layer's validated types.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use sockit::net::tls::{ClientTls, ServerTls};
use sockit::net::{AccessList, AddrLimits, ConnectOptions, Endpoint, IpList, ServerOptions};

/// Parses `30s`, `5m`, `250ms`, `1h`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
    }
    humantime::parse_duration(text).map_err(|_| {
        format!("{text:?} is not a duration (try 30s, 500ms, 5m or a number of seconds)")
    })
}

/// Parses a count that must be at least 1.
pub fn parse_count(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{text:?} is not a whole number of at least 1")),
    }
}

/// Parses a rate: a non-negative number per second (0 turns the limit off).
pub fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!(
            "{text:?} is not a rate (a number per second, 0 for no limit)"
        )),
    }
}

/// Parses a list of addresses and CIDRs, or `none` for an empty list.
pub fn parse_ip_list(text: &str) -> Result<IpList, String> {
    IpList::parse(text).map_err(|e| e.to_string())
}

/// Parses an endpoint (`HOST:PORT`, `[IPv6]:PORT`, `unix:PATH`, or a bare port on 127.0.0.1).
pub fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    Endpoint::parse_with_default_host(text, "127.0.0.1").map_err(|e| e.to_string())
}

/// Limits, access control and TLS of a server.
#[derive(Debug, Args, Clone)]
pub struct ServerArgs {
    /// Most connections served at once; one more is refused cleanly
    #[arg(short = 'm', long, value_name = "N", default_value = "10000", value_parser = parse_count)]
    pub max_conns: usize,

    /// Most connections one client address holds at once (an IPv6 /64 counts as one address;
    /// 0 = no limit; --limit-exempt addresses are not counted)
    #[arg(long, value_name = "N", default_value = "16")]
    pub max_conns_per_addr: usize,

    /// New connections per second one address may open, after a burst of --conn-burst
    /// (0 = no limit); a reconnect loop is refused until it slows down
    #[arg(long, value_name = "N", default_value = "2", value_parser = parse_rate)]
    pub conn_rate: f64,

    /// Connections one address may open at once before --conn-rate applies
    #[arg(long, value_name = "N", default_value = "20", value_parser = parse_count)]
    pub conn_burst: usize,

    /// Addresses the per-address limits do not apply to (comma list of addresses and CIDRs,
    /// or "none"); chat's per-address rate limit exempts them too
    #[arg(long, value_name = "LIST", default_value = "127.0.0.0/8,::1", value_parser = parse_ip_list)]
    pub limit_exempt: IpList,

    /// Close a connection after this long without traffic (30s, 5m; 0 = never)
    /// [default: never, chat 1h]
    #[arg(short = 'i', long, value_name = "TIME", value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,

    /// Admit only these clients (comma list of addresses and CIDRs, IPv4 and IPv6)
    #[arg(long, value_name = "LIST")]
    pub allow: Vec<String>,

    /// Refuse these clients (comma list of addresses and CIDRs); deny wins over allow
    #[arg(long, value_name = "LIST")]
    pub deny: Vec<String>,

    /// Admit only the clients listed in FILE (one or more entries per line, # comments)
    #[arg(long, value_name = "FILE")]
    pub allowfile: Option<PathBuf>,

    /// Refuse the clients listed in FILE
    #[arg(long, value_name = "FILE")]
    pub denyfile: Option<PathBuf>,

    /// Speak TLS; without --tls-cert/--tls-key a self-signed certificate is made and its
    /// SHA-256 fingerprint printed
    #[arg(long, visible_alias = "ssl")]
    pub tls: bool,

    /// PEM certificate chain for --tls
    #[arg(
        long,
        visible_alias = "ssl-cert",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls
    #[arg(
        long,
        visible_alias = "ssl-key",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// On shutdown, wait this long for connections to finish before closing them
    #[arg(long, value_name = "TIME", value_parser = parse_duration, default_value = "5s")]
    pub drain: Duration,

    /// With --tls: a client must finish its TLS handshake within this, or it is cut off (a
    /// handshake that stops halfway holds no slot for longer)
    #[arg(long, value_name = "TIME", value_parser = parse_duration, default_value = "10s")]
    pub handshake_timeout: Duration,
}

impl ServerArgs {
    /// Validates the flags and builds the server options (including the TLS identity, so a bad
    /// certificate fails before any socket opens).
    pub fn options(&self, tool: &str) -> Result<ServerOptions> {
        let mut access = AccessList::default();
        for list in &self.allow {
            access.allow(list)?;
        }
        for list in &self.deny {
            access.deny(list)?;
        }
        if let Some(f) = &self.allowfile {
            access.allow_file(f)?;
        }
        if let Some(f) = &self.denyfile {
            access.deny_file(f)?;
        }
        let tls = if self.tls || self.tls_cert.is_some() {
            let tls =
                ServerTls::from_options(self.tls_cert.as_deref(), self.tls_key.as_deref(), &[])?;
            if tls.is_self_signed() {
                super::log::say(&format!(
                    "sockit {tool}: TLS with a self-signed certificate, SHA-256 fingerprint {}",
                    tls.fingerprint()
                ));
            }
            Some(tls)
        } else {
            None
        };
        Ok(ServerOptions {
            max_conns: self.max_conns,
            per_addr: AddrLimits {
                max_conns: self.max_conns_per_addr,
                rate: self.conn_rate,
                burst: u32::try_from(self.conn_burst).unwrap_or(u32::MAX),
                exempt: self.limit_exempt.clone(),
            },
            idle_timeout: self.idle_timeout.filter(|d| !d.is_zero()),
            access,
            tls,
            drain: self.drain,
            handshake_timeout: self.handshake_timeout,
            ..ServerOptions::default()
        })
    }
}

/// How a client connects: timeout, source address, TLS checks.
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// Give up connecting after this long (10s, 500ms)
    #[arg(short = 'w', long = "wait", value_name = "TIME", value_parser = parse_duration)]
    pub connect_timeout: Option<Duration>,

    /// Connect from this local address
    #[arg(short = 's', long, value_name = "ADDR")]
    pub source: Option<IpAddr>,

    /// Speak TLS, verifying the server against the system roots (or --tls-ca / --tls-fingerprint)
    #[arg(long, visible_alias = "ssl")]
    pub tls: bool,

    /// Trust the CA certificates in this PEM file instead of the system roots
    #[arg(long, visible_alias = "ssl-trustfile", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// Accept only the certificate with this SHA-256 fingerprint (hex, colons allowed)
    #[arg(long, value_name = "HEX")]
    pub tls_fingerprint: Option<String>,

    /// The server name to ask for and check (defaults to the host connected to)
    #[arg(long, visible_alias = "ssl-servername", value_name = "NAME")]
    pub tls_servername: Option<String>,

    /// Accept any certificate: encryption without authentication
    #[arg(long)]
    pub insecure: bool,
}

impl ClientArgs {
    /// Validates the flags into connect options.
    pub fn options(&self) -> Result<ConnectOptions> {
        let wants_tls =
            self.tls || self.tls_ca.is_some() || self.tls_fingerprint.is_some() || self.insecure;
        let tls = if wants_tls {
            let tls = ClientTls {
                ca_file: self.tls_ca.clone(),
                fingerprint: self.tls_fingerprint.clone(),
                insecure: self.insecure,
                server_name: self.tls_servername.clone(),
            };
            // Build once now so a bad CA file or fingerprint is reported before connecting.
            tls.connector().context("invalid TLS options")?;
            Some(tls)
        } else {
            None
        };
        Ok(ConnectOptions {
            timeout: self.connect_timeout,
            source: self.source,
            tls,
        })
    }
}
