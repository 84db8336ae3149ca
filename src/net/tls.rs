//! TLS with rustls for every TCP server and client.
//!
//! Servers use the given certificate and key, or make a self-signed certificate at start and print its
//! SHA-256 fingerprint (as ncat does with a throw-away key, but with SHA-256 rather than SHA-1).
//! Clients verify against the system roots or a CA file, can pin a fingerprint, and skip checks only
//! when told to with `--insecure`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::NetError;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The SHA-256 fingerprint of a DER certificate, as colon-separated upper-case hex (openssl's form).
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses a fingerprint written as hex, with or without colons and an optional `sha256:` prefix.
pub fn parse_fingerprint(text: &str) -> Result<Vec<u8>, NetError> {
    let trimmed = text.trim();
    let body = trimmed
        .strip_prefix("sha256:")
        .or_else(|| trimmed.strip_prefix("SHA256:"))
        .unwrap_or(trimmed);
    let hex_only: String = body.chars().filter(|c| *c != ':').collect();
    match hex::decode(&hex_only) {
        Ok(bytes) if bytes.len() == 32 => Ok(bytes),
        _ => Err(NetError::TlsConfig(format!(
            "{text:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed)"
        ))),
    }
}

/// A server's TLS identity: the acceptor and the fingerprint of its certificate.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
    fingerprint: String,
    self_signed: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("fingerprint", &self.fingerprint)
            .field("self_signed", &self.self_signed)
            .finish()
    }
}

impl ServerTls {
    /// Loads a PEM certificate chain and private key.
    pub fn from_pem_files(cert: &Path, key: &Path, alpn: &[&[u8]]) -> Result<Self, NetError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                NetError::TlsConfig(format!("cannot read certificate {}: {e}", cert.display()))
            })?;
        if chain.is_empty() {
            return Err(NetError::TlsConfig(format!(
                "no certificate found in {}",
                cert.display()
            )));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
            NetError::TlsConfig(format!("cannot read private key {}: {e}", key.display()))
        })?;
        Self::build(chain, key, false, alpn)
    }

    /// Makes a fresh self-signed certificate for `localhost`, the loopback addresses and `names`.
    pub fn self_signed(names: &[String], alpn: &[&[u8]]) -> Result<Self, NetError> {
        let mut sans = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
        sans.extend(names.iter().filter(|n| !n.is_empty()).cloned());
        sans.dedup();
        let made = rcgen::generate_simple_self_signed(sans)
            .map_err(|e| NetError::TlsConfig(format!("cannot make a certificate: {e}")))?;
        let der = made.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
        Self::build(vec![der], key, true, alpn)
    }

    /// Builds from files when both are given, else self-signed.
    pub fn from_options(
        cert: Option<&Path>,
        key: Option<&Path>,
        alpn: &[&[u8]],
    ) -> Result<Self, NetError> {
        match (cert, key) {
            (Some(c), Some(k)) => Self::from_pem_files(c, k, alpn),
            (None, None) => Self::self_signed(&[], alpn),
            _ => Err(NetError::TlsConfig(
                "--tls-cert and --tls-key go together; give both, or neither for a self-signed certificate".into(),
            )),
        }
    }

    fn build(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        self_signed: bool,
        alpn: &[&[u8]],
    ) -> Result<Self, NetError> {
        let fingerprint = fingerprint(&chain[0]);
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| NetError::TlsConfig(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| NetError::TlsConfig(format!("certificate and key do not fit: {e}")))?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            fingerprint,
            self_signed,
        })
    }

    /// The same identity offering `protocols` by ALPN (e.g. `h2` and `http/1.1`), most preferred
    /// first. For servers whose TLS was built by shared code (the command line's `--tls`) without
    /// knowing the protocol spoken over it.
    pub fn with_alpn(mut self, protocols: &[&[u8]]) -> Self {
        let mut config = rustls::ServerConfig::clone(self.acceptor.config());
        config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        self.acceptor = TlsAcceptor::from(Arc::new(config));
        self
    }

    /// The ALPN protocols offered, most preferred first.
    pub fn alpn(&self) -> &[Vec<u8>] {
        &self.acceptor.config().alpn_protocols
    }

    /// The acceptor to wrap accepted TCP streams with.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// SHA-256 fingerprint of the certificate, for clients to pin.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Whether the certificate was made at start (so clients need the fingerprint or `--insecure`).
    pub fn is_self_signed(&self) -> bool {
        self.self_signed
    }
}

/// How a client checks the server it talks to.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// Trust only the certificates in this PEM file instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Accept exactly the certificate with this SHA-256 fingerprint (hex, colons allowed).
    pub fingerprint: Option<String>,
    /// Accept any certificate. Only with an explicit `--insecure`.
    pub insecure: bool,
    /// The name to send (SNI) and check; defaults to the host connected to.
    pub server_name: Option<String>,
}

impl ClientTls {
    /// Builds the connector. Fails on unreadable CA files or malformed fingerprints.
    pub fn connector(&self) -> Result<TlsConnector, NetError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| NetError::TlsConfig(e.to_string()))?;
        let config = if self.insecure || self.fingerprint.is_some() {
            let pin = self
                .fingerprint
                .as_deref()
                .map(parse_fingerprint)
                .transpose()?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                    pin,
                    provider: provider(),
                }))
                .with_no_client_auth()
        } else {
            builder
                .with_root_certificates(self.roots()?)
                .with_no_client_auth()
        };
        Ok(TlsConnector::from(Arc::new(config)))
    }

    fn roots(&self) -> Result<rustls::RootCertStore, NetError> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| {
                        NetError::TlsConfig(format!("cannot read CA file {}: {e}", path.display()))
                    })?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(NetError::TlsConfig(format!(
                        "no usable CA certificate in {}",
                        path.display()
                    )));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
            }
        }
        Ok(roots)
    }

    /// Runs the client handshake over `tcp`, naming `target` in errors.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        host: &str,
        target: &str,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, NetError> {
        let connector = self.connector()?;
        let name_text = self.server_name.clone().unwrap_or_else(|| host.to_string());
        let name = ServerName::try_from(name_text.clone()).map_err(|_| {
            NetError::TlsConfig(format!("{name_text:?} is not a valid TLS server name"))
        })?;
        connector
            .connect(name, tcp)
            .await
            .map_err(|e| NetError::Tls {
                target: target.to_string(),
                reason: explain_tls_error(&e),
            })
    }
}

/// Turns a handshake error into a phrase for people (not rustls's enum names), with the flag that
/// would help.
pub fn explain_tls_error(err: &std::io::Error) -> String {
    if let Some(e) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        return explain_rustls(e);
    }
    let text = err.to_string();
    if text.contains("InvalidContentType") || text.contains("corrupt message") {
        format!("{text} (is the peer speaking TLS?)")
    } else {
        text
    }
}

const TRUST_HINT: &str =
    "trust it with --tls-ca FILE or --tls-fingerprint HEX, or skip checks with --insecure";

fn explain_rustls(err: &rustls::Error) -> String {
    use rustls::{CertificateError as C, Error as E};
    match err {
        E::InvalidCertificate(cert) => match cert {
            C::UnknownIssuer => format!(
                "the server's certificate is not signed by an authority this client trusts ({TRUST_HINT})"
            ),
            C::NotValidForName => "the server's certificate is not for this host name (connect by a name it has, or give it with --tls-servername NAME)".into(),
            C::NotValidForNameContext { expected, presented } => {
                let names: Vec<String> = presented.iter().map(|p| plain_name(p)).collect();
                let has = if names.is_empty() {
                    "names no host".to_string()
                } else {
                    format!("is for {}", names.join(", "))
                };
                format!(
                    "the server's certificate {has}, not {} (connect by one of those names, or give it with --tls-servername NAME)",
                    server_name_text(expected)
                )
            }
            C::Expired | C::ExpiredContext { .. } => "the server's certificate has expired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet (is this machine's clock right?)".into()
            }
            C::Revoked => "the server's certificate has been revoked".into(),
            C::BadEncoding => "the server's certificate cannot be parsed".into(),
            C::BadSignature => "the server's certificate has a bad signature".into(),
            C::Other(other) if other.to_string().contains("CaUsedAsEndEntity") => {
                "the server presented a CA certificate as its own certificate (serve a leaf certificate signed by that CA)".into()
            }
            other => format!("the server's certificate was refused ({})", words(&format!("{other:?}"))),
        },
        // The pinned-fingerprint check's own sentence.
        E::General(text) => text.clone(),
        E::InvalidMessage(_) | E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => {
            "the peer's answer is not TLS (is the peer speaking TLS?)".into()
        }
        E::AlertReceived(alert) => format!(
            "the peer refused the connection ({})",
            words(&format!("{alert:?}"))
        ),
        E::NoCertificatesPresented => "the server sent no certificate".into(),
        E::PeerIncompatible(why) => format!(
            "the peer supports no TLS version or cipher this client accepts ({})",
            words(&format!("{why:?}"))
        ),
        other => words(&other.to_string()),
    }
}

/// `DnsName("localhost")` -> `localhost`, `IpAddress(127.0.0.1)` -> `127.0.0.1`.
fn plain_name(presented: &str) -> String {
    let inner = presented
        .strip_prefix("DnsName(")
        .or_else(|| presented.strip_prefix("IpAddress("))
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or(presented);
    let inner = inner.trim_matches('"');
    match inner.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => inner.to_string(),
    }
}

fn server_name_text(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => "the name asked for".into(),
    }
}

/// An enum name as words: `HandshakeFailure` -> `handshake failure`.
fn words(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 && !out.ends_with([' ', '(']) {
                out.push(' ');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Accepts a certificate by fingerprint, or any certificate when no pin is set (`--insecure`).
/// Handshake signatures are still verified, so the peer must hold the certificate's key.
#[derive(Debug)]
struct PinnedVerifier {
    pin: Option<Vec<u8>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(pin) = &self.pin {
            let seen = Sha256::digest(end_entity.as_ref());
            if seen.as_slice() != pin.as_slice() {
                return Err(rustls::Error::General(format!(
                    "certificate fingerprint {} does not match the pinned one",
                    fingerprint(end_entity.as_ref())
                )));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
