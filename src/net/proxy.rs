//! Outgoing connections through a proxy, as ncat's `--proxy HOST:PORT --proxy-type http|socks5
//! [--proxy-auth USER:PASS]`: an HTTP proxy's `CONNECT` (RFC 9110 §9.3.6, Basic credentials) or a
//! SOCKS5 proxy (RFC 1928, username/password RFC 1929). The target's name is sent to the proxy as
//! it was given (the proxy resolves it, as ncat's default); TLS, when asked for, runs end to end
//! through the tunnel.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{ConnectOptions, Endpoint, NetError, Stream};

/// Longest HTTP response head accepted from a proxy.
const MAX_HEAD: usize = 16 * 1024;

/// The proxy's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// HTTP `CONNECT`.
    Http,
    /// SOCKS version 5.
    Socks5,
}

/// Where the proxy is and how to talk to it.
#[derive(Debug, Clone)]
pub struct Proxy {
    pub at: Endpoint,
    pub kind: ProxyKind,
    /// `user:password`.
    pub auth: Option<String>,
}

/// Connects to `target` through `proxy`, within `opts.timeout` for the whole exchange; speaks
/// TLS to the target over the tunnel when `opts.tls` is set.
pub async fn connect_via(
    proxy: &Proxy,
    target: &Endpoint,
    opts: &ConnectOptions,
) -> Result<Stream, NetError> {
    let attempt = connect_inner(proxy, target, opts);
    match opts.timeout {
        Some(after) => {
            tokio::time::timeout(after, attempt)
                .await
                .map_err(|_| NetError::ConnectTimeout {
                    target: format!("{target} through the proxy {}", proxy.at),
                    after,
                })?
        }
        None => attempt.await,
    }
}

async fn connect_inner(
    proxy: &Proxy,
    target: &Endpoint,
    opts: &ConnectOptions,
) -> Result<Stream, NetError> {
    let Endpoint::Inet { host, port } = target else {
        return Err(NetError::BadAddress {
            input: target.to_string(),
            reason: "a proxy connects to HOST:PORT, not a Unix socket".into(),
        });
    };
    let to_proxy = ConnectOptions {
        tls: None,
        timeout: None,
        ..opts.clone()
    };
    let Stream::Tcp(mut tcp) = super::connect(&proxy.at, &to_proxy).await? else {
        return Err(NetError::BadAddress {
            input: proxy.at.to_string(),
            reason: "the proxy must be a TCP address".into(),
        });
    };
    let refused = |reason: String| NetError::Proxy {
        proxy: proxy.at.to_string(),
        target: target.to_string(),
        reason,
    };
    let io_fail = |e: io::Error| refused(super::error::describe(&e));
    match proxy.kind {
        ProxyKind::Http => http_connect(&mut tcp, host, *port, proxy.auth.as_deref())
            .await
            .map_err(io_fail)?
            .map_err(refused)?,
        ProxyKind::Socks5 => socks5_connect(&mut tcp, host, *port, proxy.auth.as_deref())
            .await
            .map_err(io_fail)?
            .map_err(refused)?,
    }
    match &opts.tls {
        None => Ok(Stream::Tcp(tcp)),
        Some(tls) => tls
            .handshake(tcp, host, &target.to_string())
            .await
            .map(|s| Stream::TlsClient(Box::new(s))),
    }
}

/// `CONNECT host:port`; `Ok(Err(reason))` when the proxy answers with something other than 2xx.
async fn http_connect(
    tcp: &mut TcpStream,
    host: &str,
    port: u16,
    auth: Option<&str>,
) -> io::Result<Result<(), String>> {
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(auth) = auth {
        request.push_str(&format!(
            "Proxy-Authorization: Basic {}\r\n",
            base64(auth.as_bytes())
        ));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes()).await?;
    // Read the head byte by byte: what follows it is the target's, and must stay in the socket.
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tcp.read(&mut byte).await? == 0 {
            return Ok(Err(
                "the proxy closed the connection without answering".into()
            ));
        }
        head.push(byte[0]);
        if head.len() > MAX_HEAD {
            return Ok(Err("the proxy's answer is too long to be HTTP".into()));
        }
    }
    let text = String::from_utf8_lossy(&head);
    let status_line = text.lines().next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !version.starts_with("HTTP/") {
        return Ok(Err(
            "the proxy did not answer in HTTP (is it a SOCKS proxy? try --proxy-type socks5)"
                .into(),
        ));
    }
    match code.parse::<u16>() {
        Ok(200..=299) => Ok(Ok(())),
        Ok(407) => Ok(Err(format!(
            "{} (give or check --proxy-auth USER:PASS)",
            status_line.trim_start_matches(version).trim()
        ))),
        _ => Ok(Err(format!(
            "it answered {}",
            status_line.trim_start_matches(version).trim()
        ))),
    }
}

/// SOCKS5 CONNECT, with username/password when `auth` is given.
async fn socks5_connect(
    tcp: &mut TcpStream,
    host: &str,
    port: u16,
    auth: Option<&str>,
) -> io::Result<Result<(), String>> {
    let greeting: &[u8] = if auth.is_some() {
        &[5, 2, 0, 2]
    } else {
        &[5, 1, 0]
    };
    tcp.write_all(greeting).await?;
    let mut choice = [0u8; 2];
    tcp.read_exact(&mut choice).await?;
    if choice[0] != 5 {
        return Ok(Err("the proxy does not speak SOCKS5".into()));
    }
    match (choice[1], auth) {
        (0, _) => {}
        (2, Some(auth)) => {
            let (user, pass) = auth.split_once(':').unwrap_or((auth, ""));
            if user.len() > 255 || pass.len() > 255 {
                return Ok(Err(
                    "--proxy-auth: user and password are 255 bytes at most".into()
                ));
            }
            let mut msg = vec![1, user.len() as u8];
            msg.extend_from_slice(user.as_bytes());
            msg.push(pass.len() as u8);
            msg.extend_from_slice(pass.as_bytes());
            tcp.write_all(&msg).await?;
            let mut status = [0u8; 2];
            tcp.read_exact(&mut status).await?;
            if status[1] != 0 {
                return Ok(Err("the proxy refused the user name or password".into()));
            }
        }
        (2, None) | (0xff, None) => {
            return Ok(Err(
                "the proxy wants a user name and password (--proxy-auth USER:PASS)".into(),
            ))
        }
        _ => return Ok(Err("the proxy accepts none of our ways to log in".into())),
    }
    let mut request = vec![5, 1, 0];
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => {
            request.push(1);
            request.extend_from_slice(&ip.octets());
        }
        Ok(std::net::IpAddr::V6(ip)) => {
            request.push(4);
            request.extend_from_slice(&ip.octets());
        }
        Err(_) => {
            if host.len() > 255 {
                return Ok(Err("the host name is too long for SOCKS5".into()));
            }
            request.push(3);
            request.push(host.len() as u8);
            request.extend_from_slice(host.as_bytes());
        }
    }
    request.extend_from_slice(&port.to_be_bytes());
    tcp.write_all(&request).await?;
    let mut reply = [0u8; 4];
    tcp.read_exact(&mut reply).await?;
    if reply[1] != 0 {
        let why = match reply[1] {
            1 => "general failure",
            2 => "not allowed by its rules",
            3 => "network unreachable",
            4 => "host unreachable",
            5 => "connection refused",
            6 => "TTL expired",
            7 => "command not supported",
            8 => "address type not supported",
            _ => "unknown error",
        };
        return Ok(Err(format!("it answered: {why}")));
    }
    // The address the proxy bound: read and ignore.
    let rest = match reply[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut len = [0u8; 1];
            tcp.read_exact(&mut len).await?;
            len[0] as usize + 2
        }
        _ => return Ok(Err("the proxy's answer is not SOCKS5".into())),
    };
    let mut skip = vec![0u8; rest];
    tcp.read_exact(&mut skip).await?;
    Ok(Ok(()))
}

/// Standard base64 with padding, for Basic credentials.
fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for group in data.chunks(3) {
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].iter().enumerate() {
            if i <= group.len() {
                out.push(ABC[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_matches_rfc_4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
    }
}
