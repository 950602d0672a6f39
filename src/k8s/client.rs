//! A minimal, synchronous Kubernetes API client: HTTP/1.1 over TLS
//! (rustls) or plain TCP, one keep-alive connection per invocation, bounded
//! timeouts, a few retries for GETs. It runs in the node's network
//! namespace (multimesh never enters the pod netns itself).

use super::kubeconfig::{ApiConfig, Scheme};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// GET attempts (the first plus retries) on connection errors, 429, 5xx.
pub const GET_ATTEMPTS: u32 = 3;
const MAX_HEADER: usize = 64 * 1024;
const MAX_BODY: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// Could not connect, TLS failed, timed out, connection dropped.
    Unreachable(String),
    /// The server answered with an error status (its Status message kept).
    Status {
        code: u16,
        reason: String,
        message: String,
    },
    /// Not a usable answer (garbage, not JSON, too large).
    Invalid(String),
}

impl ApiError {
    pub fn is_retryable(&self) -> bool {
        match self {
            ApiError::Unreachable(_) => true,
            ApiError::Status { code, .. } => *code == 429 || *code >= 500,
            ApiError::Invalid(_) => false,
        }
    }
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Unreachable(m) => write!(f, "API server unreachable: {m}"),
            ApiError::Status {
                code,
                reason,
                message,
            } => write!(f, "API server answered {code} {reason}: {message}"),
            ApiError::Invalid(m) => write!(f, "bad answer from the API server: {m}"),
        }
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(b),
            Stream::Tls(s) => s.read(b),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(b),
            Stream::Tls(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    /// Requests already answered on this connection.
    used: u32,
}

pub struct Client {
    cfg: ApiConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    conn: Option<Conn>,
    /// Requests sent (every attempt counts): for logs and benchmarks.
    pub requests: u32,
}

/// Accepts any server certificate (`insecure-skip-tls-verify: true`), but
/// still checks the handshake signatures.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_config(cfg: &ApiConfig) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = if cfg.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(pem) = &cfg.ca_pem {
            for c in CertificateDer::pem_slice_iter(pem) {
                let c = c.map_err(|e| format!("certificate authority: {e}"))?;
                roots
                    .add(c)
                    .map_err(|e| format!("certificate authority: {e}"))?;
            }
        }
        if roots.is_empty() {
            return Err("no certificate authority for an https server (set certificate-authority(-data) or insecure-skip-tls-verify)".into());
        }
        builder.with_root_certificates(roots)
    };
    match &cfg.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("client certificate: {e}"))?;
            if chain.is_empty() {
                return Err("client certificate: no certificate in PEM".into());
            }
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("client key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))
        }
    }
}

impl Client {
    pub fn new(cfg: ApiConfig) -> Result<Client, String> {
        let tls = match cfg.scheme {
            Scheme::Https => Some(Arc::new(tls_config(&cfg)?)),
            Scheme::Http => None,
        };
        Ok(Client {
            cfg,
            tls,
            conn: None,
            requests: 0,
        })
    }

    fn connect(&self) -> Result<Conn, ApiError> {
        let addrs: Vec<SocketAddr> = (self.cfg.host.as_str(), self.cfg.port)
            .to_socket_addrs()
            .map_err(|e| ApiError::Unreachable(format!("resolve {}: {e}", self.cfg.host)))?
            .collect();
        let mut last = String::from("no address");
        let mut tcp = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = format!("connect {a}: {e}"),
            }
        }
        let tcp = tcp.ok_or(ApiError::Unreachable(last))?;
        let io = |e: std::io::Error| ApiError::Unreachable(e.to_string());
        tcp.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        tcp.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        let _ = tcp.set_nodelay(true);
        let stream = match &self.tls {
            None => Stream::Plain(tcp),
            Some(tls) => {
                let name = self
                    .cfg
                    .tls_server_name
                    .clone()
                    .unwrap_or_else(|| self.cfg.host.clone());
                let name = rustls::pki_types::ServerName::try_from(name)
                    .map_err(|e| ApiError::Unreachable(format!("TLS server name: {e}")))?;
                let conn = rustls::ClientConnection::new(tls.clone(), name)
                    .map_err(|e| ApiError::Unreachable(format!("TLS: {e}")))?;
                Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
            }
        };
        Ok(Conn {
            stream,
            buf: Vec::new(),
            used: 0,
        })
    }

    /// One request/response exchange. A reused keep-alive connection that
    /// turns out to be closed is replaced once.
    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        ctype: Option<&str>,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), ApiError> {
        let token = self.cfg.bearer().map_err(ApiError::Unreachable)?;
        let mut req = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: multimesh/{}\r\nAccept: application/json\r\n",
            self.cfg.base_path,
            self.cfg.authority(),
            env!("CARGO_PKG_VERSION")
        );
        if let Some(t) = &token {
            req.push_str("Authorization: Bearer ");
            req.push_str(t);
            req.push_str("\r\n");
        }
        if let Some(ct) = ctype {
            req.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        if method != "GET" || !body.is_empty() {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut wire = req.into_bytes();
        wire.extend_from_slice(body);
        for attempt in 0..2 {
            let mut conn = match self.conn.take() {
                Some(c) => c,
                None => self.connect()?,
            };
            let reused = conn.used > 0;
            self.requests += 1;
            let sent = conn
                .stream
                .write_all(&wire)
                .and_then(|_| conn.stream.flush());
            let res = match sent {
                Ok(()) => read_response(&mut conn),
                Err(e) => Err(ReadErr::Io(e.to_string(), true)),
            };
            match res {
                Ok((status, body, keep)) => {
                    conn.used += 1;
                    if keep {
                        self.conn = Some(conn);
                    }
                    return Ok((status, body));
                }
                // Nothing came back on a reused connection: the server
                // closed it between requests. Reconnect once.
                Err(ReadErr::Io(_, true)) if reused && attempt == 0 => continue,
                Err(ReadErr::Io(e, _)) => return Err(ApiError::Unreachable(e)),
                Err(ReadErr::Bad(e)) => return Err(ApiError::Invalid(e)),
            }
        }
        Err(ApiError::Unreachable("connection closed".into()))
    }

    fn json_request(
        &mut self,
        method: &str,
        path: &str,
        ctype: Option<&str>,
        body: &[u8],
    ) -> Result<Value, ApiError> {
        let (status, body) = self.exchange(method, path, ctype, body)?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&body)
                .map_err(|e| ApiError::Invalid(format!("{method} {path}: not JSON: {e}")));
        }
        // A Status object, if the server sent one.
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let msg = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let mut message = msg("message");
        if message.is_empty() {
            message = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        }
        Err(ApiError::Status {
            code: status,
            reason: msg("reason"),
            message,
        })
    }

    /// GET with retries on connection errors, 429 and 5xx.
    pub fn get(&mut self, path: &str) -> Result<Value, ApiError> {
        let mut delay = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            match self.json_request("GET", path, None, b"") {
                Err(e) if e.is_retryable() && attempt < GET_ATTEMPTS => {
                    crate::log::verbose(&format!("GET {path} failed ({e}); retrying"));
                    self.conn = None;
                    std::thread::sleep(delay);
                    delay *= 4;
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    /// PATCH (one attempt; the caller decides about retries).
    pub fn patch(&mut self, path: &str, ctype: &str, body: &[u8]) -> Result<Value, ApiError> {
        self.json_request("PATCH", path, Some(ctype), body)
    }
}

enum ReadErr {
    /// I/O error; `true` when not a single byte of the response arrived.
    Io(String, bool),
    Bad(String),
}

fn fill(conn: &mut Conn, deadline: Instant) -> Result<usize, ReadErr> {
    if Instant::now() > deadline {
        return Err(ReadErr::Io("timed out".into(), conn.buf.is_empty()));
    }
    let mut tmp = [0u8; 16 * 1024];
    match conn.stream.read(&mut tmp) {
        Ok(n) => {
            conn.buf.extend_from_slice(&tmp[..n]);
            Ok(n)
        }
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(1),
        Err(e) => Err(ReadErr::Io(e.to_string(), conn.buf.is_empty())),
    }
}

fn find(h: &[u8], needle: &[u8]) -> Option<usize> {
    h.windows(needle.len()).position(|w| w == needle)
}

/// Read one response: (status, body, connection reusable).
fn read_response(conn: &mut Conn) -> Result<(u16, Vec<u8>, bool), ReadErr> {
    let deadline = Instant::now() + IO_TIMEOUT;
    let head_end = loop {
        if let Some(i) = find(&conn.buf, b"\r\n\r\n") {
            break i;
        }
        if conn.buf.len() > MAX_HEADER {
            return Err(ReadErr::Bad("response header too large".into()));
        }
        if fill(conn, deadline)? == 0 {
            let empty = conn.buf.is_empty();
            return Err(ReadErr::Io("connection closed".into(), empty));
        }
    };
    let head = String::from_utf8_lossy(&conn.buf[..head_end]).into_owned();
    conn.buf.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let proto = parts.next().unwrap_or("");
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|_| proto.starts_with("HTTP/1."))
        .ok_or_else(|| ReadErr::Bad(format!("bad status line {status_line:?}")))?;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut keep = proto == "HTTP/1.1";
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                length = Some(
                    v.parse()
                        .map_err(|_| ReadErr::Bad("bad Content-Length".into()))?,
                )
            }
            "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
            "connection" => {
                let v = v.to_ascii_lowercase();
                if v.contains("close") {
                    keep = false
                } else if v.contains("keep-alive") {
                    keep = true
                }
            }
            _ => {}
        }
    }
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&conn.buf, b"\r\n") {
                    break i;
                }
                if fill(conn, deadline)? == 0 {
                    return Err(ReadErr::Io("connection closed in a chunk".into(), false));
                }
            };
            let size_txt = String::from_utf8_lossy(&conn.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_txt.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| ReadErr::Bad("bad chunk size".into()))?;
            conn.buf.drain(..line_end + 2);
            if body.len() + size > MAX_BODY {
                return Err(ReadErr::Bad("response too large".into()));
            }
            while conn.buf.len() < size + 2 {
                if fill(conn, deadline)? == 0 {
                    return Err(ReadErr::Io("connection closed in a chunk".into(), false));
                }
            }
            if size == 0 {
                // Trailers are not used by the API server; skip to the end.
                while find(&conn.buf, b"\r\n").is_none() {
                    if fill(conn, deadline)? == 0 {
                        break;
                    }
                }
                if let Some(i) = find(&conn.buf, b"\r\n") {
                    conn.buf.drain(..i + 2);
                }
                break;
            }
            body.extend_from_slice(&conn.buf[..size]);
            conn.buf.drain(..size + 2);
        }
        body
    } else if let Some(n) = length {
        if n > MAX_BODY {
            return Err(ReadErr::Bad("response too large".into()));
        }
        while conn.buf.len() < n {
            if fill(conn, deadline)? == 0 {
                return Err(ReadErr::Io("connection closed in the body".into(), false));
            }
        }
        conn.buf.drain(..n).collect()
    } else {
        // Until the server closes the connection.
        keep = false;
        loop {
            if conn.buf.len() > MAX_BODY {
                return Err(ReadErr::Bad("response too large".into()));
            }
            match fill(conn, deadline) {
                Ok(0) => break,
                Ok(_) => {}
                Err(ReadErr::Io(..)) if !conn.buf.is_empty() => break,
                Err(e) => return Err(e),
            }
        }
        std::mem::take(&mut conn.buf)
    };
    Ok((status, body, keep))
}
