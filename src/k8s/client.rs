//! A minimal, synchronous Kubernetes API client: HTTP/1.1 over TLS
//! (rustls) or plain TCP, one keep-alive connection per client, bounded
//! timeouts, a few retries for GETs; GET, PATCH, POST, DELETE, and watches
//! (a streaming GET on a connection of its own, read one event at a time,
//! each bounded; reconnecting is the caller's). It runs in the node's
//! network namespace: nothing here enters a pod netns.

use super::kubeconfig::{ApiConfig, Scheme};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// GET attempts (the first plus retries) on connection errors, 429, 5xx.
pub const GET_ATTEMPTS: u32 = 3;
/// Status line and header fields of one response, and the trailer of a
/// chunked one.
#[doc(hidden)]
pub const MAX_HEADER: usize = 64 * 1024;
/// Largest response body kept.
#[doc(hidden)]
pub const MAX_BODY: usize = 16 * 1024 * 1024;
/// Largest watch event (one JSON line: an object, which etcd caps at
/// 1.5 MiB, in its JSON form).
pub const MAX_WATCH_EVENT: usize = 4 * 1024 * 1024;
/// A watch's connection may stay silent this much longer than the
/// `timeoutSeconds` it asked the server for before it counts as broken.
pub const WATCH_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// Could not connect, TLS failed, timed out, connection dropped.
    #[error("API server unreachable: {0}")]
    Unreachable(String),
    /// The server answered with an error status (its Status message kept).
    #[error("API server answered {code} {reason}: {message}")]
    Status {
        code: u16,
        reason: String,
        message: String,
    },
    /// Not a usable answer (garbage, not JSON, too large).
    #[error("bad answer from the API server: {0}")]
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

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

/// The connection's byte stream; reads fail once `deadline` has passed
/// (set per response: the socket timeout bounds each read, this the whole
/// answer).
struct Timed {
    stream: Stream,
    deadline: Instant,
}

impl Read for Timed {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        if Instant::now() > self.deadline {
            return Err(std::io::Error::new(ErrorKind::TimedOut, "timed out"));
        }
        match &mut self.stream {
            Stream::Plain(s) => s.read(b),
            Stream::Tls(s) => s.read(b),
        }
    }
}

impl Stream {
    fn set_read_timeout(&self, d: Duration) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.set_read_timeout(Some(d)),
            Stream::Tls(s) => s.sock.set_read_timeout(Some(d)),
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
    /// Bytes read past one response stay buffered for the next.
    reader: BufReader<Timed>,
    /// Requests already answered on this connection.
    used: u32,
}

pub struct Client {
    cfg: ApiConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    conn: Option<Conn>,
    /// Requests sent (every attempt counts): for logs and benchmarks.
    pub requests: u32,
    /// How much longer than its `timeoutSeconds` a watch may stay silent
    /// (`WATCH_GRACE`).
    pub watch_grace: Duration,
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
        // kubeconfig::from_value refuses this already; never skip
        // verification when a CA was given.
        if cfg.ca_pem.is_some() {
            return Err(
                "insecure-skip-tls-verify together with a certificate authority is refused".into(),
            );
        }
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
    /// A client for `cfg`. Logs a warning (at error level, so it shows by
    /// default) when the server's certificate will not be verified.
    pub fn new(cfg: ApiConfig) -> Result<Client, String> {
        let tls = match cfg.scheme {
            Scheme::Https => Some(Arc::new(tls_config(&cfg)?)),
            Scheme::Http => None,
        };
        if cfg.insecure && cfg.scheme == Scheme::Https {
            log::error!("warning: kubeconfig sets insecure-skip-tls-verify: the certificate of the API server {} is not verified",
                cfg.authority());
        }
        Ok(Client {
            cfg,
            tls,
            conn: None,
            requests: 0,
            watch_grace: WATCH_GRACE,
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
            reader: BufReader::with_capacity(
                16 * 1024,
                Timed {
                    stream,
                    deadline: Instant::now() + IO_TIMEOUT,
                },
            ),
            used: 0,
        })
    }

    /// The request's bytes: head and body.
    fn request_bytes(
        &self,
        method: &str,
        path: &str,
        ctype: Option<&str>,
        body: &[u8],
    ) -> Result<Vec<u8>, ApiError> {
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
        Ok(wire)
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
        let wire = self.request_bytes(method, path, ctype, body)?;
        for attempt in 0..2 {
            let mut conn = match self.conn.take() {
                Some(c) => c,
                None => self.connect()?,
            };
            let reused = conn.used > 0;
            self.requests += 1;
            let stream = &mut conn.reader.get_mut().stream;
            let sent = stream.write_all(&wire).and_then(|_| stream.flush());
            let res = match sent {
                Ok(()) => {
                    conn.reader.get_mut().deadline = Instant::now() + IO_TIMEOUT;
                    parse_response(&mut conn.reader)
                }
                Err(e) => Err(ReadErr::Io(e.to_string(), true)),
            };
            match res {
                Ok(r) => {
                    conn.used += 1;
                    if r.keep_alive {
                        self.conn = Some(conn);
                    }
                    return Ok((r.status, r.body));
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

    fn json_request<T: DeserializeOwned>(
        &mut self,
        method: &str,
        path: &str,
        ctype: Option<&str>,
        body: &[u8],
    ) -> Result<T, ApiError> {
        let (status, body) = self.exchange(method, path, ctype, body)?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&body)
                .map_err(|e| ApiError::Invalid(format!("{method} {path}: not JSON: {e}")));
        }
        Err(status_error(status, &body))
    }

    /// GET with retries on connection errors, 429 and 5xx.
    pub fn get(&mut self, path: &str) -> Result<Value, ApiError> {
        self.get_as(path)
    }

    /// GET into a type of the caller's (a list's few fields, say: the
    /// rest of each object is skipped while parsing, never held).
    pub fn get_as<T: DeserializeOwned>(&mut self, path: &str) -> Result<T, ApiError> {
        let mut delay = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            match self.json_request("GET", path, None, b"") {
                Err(e) if e.is_retryable() && attempt < GET_ATTEMPTS => {
                    log::info!("GET {path} failed ({e}); retrying");
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

    /// POST a JSON object (one attempt).
    pub fn post(&mut self, path: &str, body: &[u8]) -> Result<Value, ApiError> {
        self.json_request("POST", path, Some("application/json"), body)
    }

    /// DELETE (one attempt).
    pub fn delete(&mut self, path: &str) -> Result<Value, ApiError> {
        self.json_request("DELETE", path, None, b"")
    }

    /// Start a watch: GET `path` (which asks for `watch=1` and
    /// `timeoutSeconds`, `timeout`) on a connection of its own. Reads may
    /// wait up to `timeout` + `watch_grace` in all: a silent watch then
    /// fails (Unreachable). An error status is
    /// the server's Status, as for other requests.
    pub fn watch(&mut self, path: &str, timeout: Duration) -> Result<Watch, ApiError> {
        let wire = self.request_bytes("GET", path, None, b"")?;
        let mut conn = self.connect()?;
        self.requests += 1;
        let limit = timeout + self.watch_grace;
        let stream = &mut conn.reader.get_mut().stream;
        let io = |e: std::io::Error| ApiError::Unreachable(e.to_string());
        stream.set_read_timeout(limit).map_err(io)?;
        stream
            .write_all(&wire)
            .and_then(|_| stream.flush())
            .map_err(io)?;
        conn.reader.get_mut().deadline = Instant::now() + limit;
        let head = loop {
            let h = read_head(&mut conn.reader)?;
            if h.status >= 200 || h.status == 101 {
                break h;
            }
        };
        if head.status != 200 {
            // The error's body is small: read it as a whole answer would be.
            let body = if head.chunked {
                read_chunked(&mut conn.reader)?
            } else if let Some(n) = head.length.filter(|n| *n <= MAX_BODY) {
                let mut b = Vec::new();
                read_exact_into(&mut conn.reader, &mut b, n, "the body")?;
                b
            } else {
                Vec::new()
            };
            return Err(status_error(head.status, &body));
        }
        Ok(Watch::over(Box::new(conn.reader), head.chunked))
    }
}

/// A server's error answer: its Status object's reason and message when
/// it sent one.
fn status_error(status: u16, body: &[u8]) -> ApiError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let msg = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let mut message = msg("message");
    if message.is_empty() {
        message = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    }
    ApiError::Status {
        code: status,
        reason: msg("reason"),
        message,
    }
}

/// A watch's body as a byte stream: chunked (what the API server sends)
/// or until the connection closes.
enum WatchBody {
    Chunked {
        r: Box<dyn BufRead + Send>,
        /// Bytes left in the current chunk.
        left: usize,
        first: bool,
        done: bool,
    },
    Plain(Box<dyn BufRead + Send>),
}

impl Read for WatchBody {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let bad = |e: ReadErr| match e {
            ReadErr::Io(m, _) => std::io::Error::new(ErrorKind::UnexpectedEof, m),
            ReadErr::Bad(m) => std::io::Error::new(ErrorKind::InvalidData, m),
        };
        match self {
            WatchBody::Plain(r) => r.read(out),
            WatchBody::Chunked {
                r,
                left,
                first,
                done,
            } => {
                if *done {
                    return Ok(0);
                }
                if *left == 0 {
                    if !*first {
                        let mut budget = 2;
                        if !read_line(r, &mut budget, "the end of a chunk")
                            .map_err(bad)?
                            .is_empty()
                        {
                            return Err(bad(ReadErr::Bad(
                                "chunk data not followed by CRLF".into(),
                            )));
                        }
                    }
                    *first = false;
                    let mut budget = MAX_CHUNK_LINE;
                    let line = read_line(r, &mut budget, "a chunk size line").map_err(bad)?;
                    *left = parse_chunk_size(&line).map_err(bad)?;
                    if *left == 0 {
                        *done = true;
                        let mut budget = MAX_HEADER;
                        while !read_line(r, &mut budget, "the chunked trailer")
                            .map_err(bad)?
                            .is_empty()
                        {}
                        return Ok(0);
                    }
                }
                let want = out.len().min(*left);
                let n = r.read(&mut out[..want])?;
                if n == 0 {
                    return Err(bad(ReadErr::Io(
                        "connection closed in a chunk".into(),
                        false,
                    )));
                }
                *left -= n;
                Ok(n)
            }
        }
    }
}

/// What happened to an object, as a watch reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
    /// Only a newer resourceVersion (the object carries nothing else).
    Bookmark,
}

/// An open watch (`Client::watch`).
pub struct Watch {
    lines: BufReader<WatchBody>,
}

impl Watch {
    /// A watch over a response body (after its head): chunked or until
    /// the end. Public for the tests.
    #[doc(hidden)]
    pub fn over(r: Box<dyn BufRead + Send>, chunked: bool) -> Watch {
        let body = if chunked {
            WatchBody::Chunked {
                r,
                left: 0,
                first: true,
                done: false,
            }
        } else {
            WatchBody::Plain(r)
        };
        Watch {
            lines: BufReader::with_capacity(64 * 1024, body),
        }
    }

    /// The next event, its object parsed as `T`; Ok(None) when the server
    /// ended the stream. An ERROR event is the Status it carries (410
    /// Gone: the version is too old, relist); an event longer than
    /// `MAX_WATCH_EVENT`, not JSON, of an unknown type, or whose object is
    /// not a `T` is Invalid. After any error the watch is done.
    pub fn next_event<T: DeserializeOwned>(&mut self) -> Result<Option<(EventType, T)>, ApiError> {
        loop {
            match self.lines.fill_buf() {
                Ok([]) => return Ok(None),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::InvalidData => {
                    return Err(ApiError::Invalid(e.to_string()))
                }
                Err(e) => return Err(ApiError::Unreachable(e.to_string())),
            }
            let mut budget = MAX_WATCH_EVENT;
            let line = read_line(&mut self.lines, &mut budget, "a watch event")?;
            if line.trim_ascii().is_empty() {
                continue;
            }
            #[derive(serde::Deserialize)]
            struct Event {
                #[serde(rename = "type")]
                kind: String,
                object: Value,
            }
            let ev: Event = serde_json::from_slice(&line)
                .map_err(|e| ApiError::Invalid(format!("watch event: {e}")))?;
            let kind = match ev.kind.as_str() {
                "ADDED" => EventType::Added,
                "MODIFIED" => EventType::Modified,
                "DELETED" => EventType::Deleted,
                "BOOKMARK" => EventType::Bookmark,
                "ERROR" => {
                    let code = ev
                        .object
                        .get("code")
                        .and_then(Value::as_u64)
                        .and_then(|c| u16::try_from(c).ok())
                        .unwrap_or(500);
                    let text = serde_json::to_vec(&ev.object).unwrap_or_default();
                    return Err(status_error(code, &text));
                }
                other => {
                    let shown: String = other.chars().take(32).collect();
                    return Err(ApiError::Invalid(format!(
                        "watch event of unknown type {shown:?}"
                    )));
                }
            };
            let obj = T::deserialize(ev.object)
                .map_err(|e| ApiError::Invalid(format!("watch event object: {e}")))?;
            return Ok(Some((kind, obj)));
        }
    }
}

enum ReadErr {
    /// I/O error; `true` when not a single byte of the response arrived.
    Io(String, bool),
    Bad(String),
}

impl From<ReadErr> for ApiError {
    fn from(e: ReadErr) -> ApiError {
        match e {
            ReadErr::Io(m, _) => ApiError::Unreachable(m),
            ReadErr::Bad(m) => ApiError::Invalid(m),
        }
    }
}

/// One HTTP response as [`read_response`] reads it.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// The connection can carry the next request.
    pub keep_alive: bool,
}

/// Read one HTTP/1.x response from `r`, e.g. a connection or a byte slice.
/// Malformed or oversized answers (status line, headers over
/// `MAX_HEADER`, Content-Length or chunk sizes that do not parse or add up
/// to more than `MAX_BODY`, framing errors) are `ApiError::Invalid`; a
/// connection that ends early or fails is `ApiError::Unreachable`. Never
/// panics, and never keeps more than `MAX_BODY` bytes of body. Public for
/// the tests and the fuzzer.
#[doc(hidden)]
pub fn read_response<R: BufRead + ?Sized>(r: &mut R) -> Result<Response, ApiError> {
    parse_response(r).map_err(ApiError::from)
}

/// Interim (1xx) responses skipped before the real one.
const MAX_INTERIM: usize = 8;
/// A chunk-size line (size and extensions).
const MAX_CHUNK_LINE: usize = 4096;

fn io_err(e: std::io::Error, nothing_yet: bool) -> ReadErr {
    ReadErr::Io(e.to_string(), nothing_yet)
}

fn parse_response<R: BufRead + ?Sized>(r: &mut R) -> Result<Response, ReadErr> {
    // Did anything arrive at all? (A reused connection closed by the server
    // between requests gives nothing; the caller then reconnects.)
    loop {
        match r.fill_buf() {
            Ok([]) => return Err(ReadErr::Io("connection closed".into(), true)),
            Ok(_) => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(e, true)),
        }
    }
    let mut interim = 0;
    loop {
        let head = read_head(r)?;
        if head.status == 101 {
            return Err(ReadErr::Bad("unexpected 101 Switching Protocols".into()));
        }
        if head.status < 200 {
            // 100 Continue and friends: no body, the real answer follows.
            interim += 1;
            if interim > MAX_INTERIM {
                return Err(ReadErr::Bad("too many interim (1xx) responses".into()));
            }
            continue;
        }
        let mut keep = head.keep_alive;
        let body = if head.status == 204 || head.status == 304 {
            Vec::new()
        } else if head.chunked {
            if head.length.is_some() {
                // Both framings: chunked wins (RFC 9112 6.3), and the
                // connection is not trusted for another request.
                keep = false;
            }
            read_chunked(r)?
        } else if let Some(n) = head.length {
            if n > MAX_BODY {
                return Err(ReadErr::Bad(format!(
                    "response too large (Content-Length {n}, at most {MAX_BODY})"
                )));
            }
            let mut body = Vec::new();
            read_exact_into(r, &mut body, n, "the body")?;
            body
        } else {
            // Until the server closes the connection.
            keep = false;
            read_to_close(r)?
        };
        return Ok(Response {
            status: head.status,
            body,
            keep_alive: keep,
        });
    }
}

struct Head {
    status: u16,
    length: Option<usize>,
    chunked: bool,
    keep_alive: bool,
}

/// Most header fields in one response head.
const MAX_HEADERS: usize = 100;

/// Status line and header fields, at most `MAX_HEADER` bytes in all, parsed
/// by httparse.
fn read_head<R: BufRead + ?Sized>(r: &mut R) -> Result<Head, ReadErr> {
    let mut budget = MAX_HEADER;
    let mut raw = Vec::new();
    loop {
        let line = read_line(r, &mut budget, "response header")?;
        let end = line.is_empty();
        raw.extend_from_slice(&line);
        raw.extend_from_slice(b"\r\n");
        if end {
            break;
        }
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut fields);
    match resp.parse(&raw) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(ReadErr::Bad("incomplete response header".into()))
        }
        Err(httparse::Error::Status | httparse::Error::Version) => {
            let first = raw.split(|&b| b == b'\r').next().unwrap_or_default();
            let shown: String = String::from_utf8_lossy(first).chars().take(80).collect();
            return Err(ReadErr::Bad(format!("bad status line {shown:?}")));
        }
        Err(e) => return Err(ReadErr::Bad(format!("malformed response header: {e}"))),
    }
    let status = resp.code.unwrap_or(0);
    if status < 100 {
        return Err(ReadErr::Bad(format!("bad status code {status}")));
    }
    let mut length: Option<usize> = None;
    let mut codings: Vec<String> = Vec::new();
    let mut keep = resp.version == Some(1);
    for h in resp.headers.iter() {
        let v = String::from_utf8_lossy(h.value);
        let v = v.trim_matches([' ', '\t']);
        match h.name.to_ascii_lowercase().as_str() {
            "content-length" => {
                let n = (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| v.parse::<usize>().ok())
                    .flatten()
                    .ok_or_else(|| ReadErr::Bad("bad Content-Length".into()))?;
                if length.is_some_and(|l| l != n) {
                    return Err(ReadErr::Bad("conflicting Content-Length headers".into()));
                }
                length = Some(n);
            }
            "transfer-encoding" => codings.extend(
                v.split(',')
                    .map(|c| c.trim_matches([' ', '\t']).to_ascii_lowercase())
                    .filter(|c| !c.is_empty()),
            ),
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
    let chunked = match codings.as_slice() {
        [] => false,
        [c] if c == "chunked" => true,
        _ => {
            return Err(ReadErr::Bad(format!(
                "unsupported Transfer-Encoding {:?}",
                codings.join(", ")
            )))
        }
    };
    Ok(Head {
        status,
        length,
        chunked,
        keep_alive: keep,
    })
}

/// One line without its LF (or CRLF); the bytes it takes, end included,
/// come out of `budget` (more than that is `Bad("<what> too long")`).
fn read_line<R: BufRead + ?Sized>(
    r: &mut R,
    budget: &mut usize,
    what: &str,
) -> Result<Vec<u8>, ReadErr> {
    let mut line = Vec::new();
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(e, false)),
        };
        if buf.is_empty() {
            return Err(ReadErr::Io(format!("connection closed in {what}"), false));
        }
        let (n, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        *budget = budget
            .checked_sub(n)
            .ok_or_else(|| ReadErr::Bad(format!("{what} too long")))?;
        line.extend_from_slice(&buf[..n]);
        r.consume(n);
        if done {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(line);
        }
    }
}

/// Append exactly `n` bytes from `r` to `out`.
fn read_exact_into<R: BufRead + ?Sized>(
    r: &mut R,
    out: &mut Vec<u8>,
    n: usize,
    what: &str,
) -> Result<(), ReadErr> {
    let want = u64::try_from(n).map_err(|_| ReadErr::Bad("response too large".into()))?;
    let got = Read::take(&mut *r, want)
        .read_to_end(out)
        .map_err(|e| io_err(e, false))?;
    if got != n {
        return Err(ReadErr::Io(format!("connection closed in {what}"), false));
    }
    Ok(())
}

fn read_chunked<R: BufRead + ?Sized>(r: &mut R) -> Result<Vec<u8>, ReadErr> {
    let mut body = Vec::new();
    loop {
        let mut budget = MAX_CHUNK_LINE;
        let line = read_line(r, &mut budget, "a chunk size line")?;
        let size = parse_chunk_size(&line)?;
        if size == 0 {
            break;
        }
        match body.len().checked_add(size) {
            Some(total) if total <= MAX_BODY => {}
            _ => {
                return Err(ReadErr::Bad(format!(
                    "response too large (chunk of {size} bytes after {}, at most {MAX_BODY})",
                    body.len()
                )))
            }
        }
        read_exact_into(r, &mut body, size, "a chunk")?;
        let mut budget = 2;
        if !read_line(r, &mut budget, "the end of a chunk")?.is_empty() {
            return Err(ReadErr::Bad("chunk data not followed by CRLF".into()));
        }
    }
    // Trailer fields (ignored) up to the empty line.
    let mut budget = MAX_HEADER;
    while !read_line(r, &mut budget, "the chunked trailer")?.is_empty() {}
    Ok(body)
}

/// `1*HEXDIG [ ; extensions ]`; overflow is an error. Not
/// `httparse::parse_chunk_size`: it reads an empty size line as 0 (a body
/// cut short would pass as complete) and refuses a size with more than 16
/// digits even when they are leading zeros (both in the unit tests below).
fn parse_chunk_size(line: &[u8]) -> Result<usize, ReadErr> {
    let bad = || ReadErr::Bad("bad chunk size".into());
    let end = line.iter().position(|&b| b == b';').unwrap_or(line.len());
    let digits = line[..end].trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(bad());
    }
    let digits = std::str::from_utf8(digits).map_err(|_| bad())?;
    usize::from_str_radix(digits, 16).map_err(|_| {
        ReadErr::Bad(format!(
            "response too large (chunk size {} overflows)",
            digits.chars().take(32).collect::<String>()
        ))
    })
}

/// A body without framing: everything until the server closes.
fn read_to_close<R: BufRead + ?Sized>(r: &mut R) -> Result<Vec<u8>, ReadErr> {
    let mut body = Vec::new();
    let cap = u64::try_from(MAX_BODY)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    match Read::take(&mut *r, cap).read_to_end(&mut body) {
        Ok(_) => {}
        // A TLS peer that closes without close_notify: rustls reports
        // UnexpectedEof. For a close-delimited body that is the end.
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(io_err(e, false)),
    }
    if body.len() > MAX_BODY {
        return Err(ReadErr::Bad(format!(
            "response too large (more than {MAX_BODY} bytes)"
        )));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(wire: &[u8]) -> Result<Response, ApiError> {
        read_response(&mut &wire[..])
    }

    /// The same answer when the bytes arrive one at a time.
    fn parse_slowly(wire: &[u8]) -> Result<Response, ApiError> {
        read_response(&mut BufReader::with_capacity(1, wire))
    }

    fn invalid(wire: &[u8], want: &str) {
        for r in [parse(wire), parse_slowly(wire)] {
            match r {
                Err(ApiError::Invalid(m)) => assert!(m.contains(want), "{m:?} lacks {want:?}"),
                other => panic!(
                    "{:?}: expected Invalid({want:?}), got {other:?}",
                    show(wire)
                ),
            }
        }
    }

    fn show(wire: &[u8]) -> String {
        String::from_utf8_lossy(&wire[..wire.len().min(200)]).into_owned()
    }

    #[test]
    fn content_length_body() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ncontent-length: 7\r\n\r\n{\"a\":1}";
        for r in [parse(wire), parse_slowly(wire)] {
            assert_eq!(
                r.unwrap(),
                Response {
                    status: 200,
                    body: b"{\"a\":1}".to_vec(),
                    keep_alive: true
                }
            );
        }
        // HTTP/1.0 closes unless told otherwise; Connection: close closes.
        let r = parse(b"HTTP/1.0 404 Not Found\r\nContent-Length: 2\r\n\r\nno").unwrap();
        assert_eq!((r.status, r.keep_alive), (404, false));
        let r = parse(b"HTTP/1.1 500 x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert_eq!((r.status, r.body.len(), r.keep_alive), (500, 0, false));
        // No reason phrase; a 100 Continue before the answer; 204 has no body.
        let r = parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201\r\nContent-Length: 1\r\n\r\nx")
            .unwrap();
        assert_eq!((r.status, &r.body[..]), (201, &b"x"[..]));
        let r = parse(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert_eq!((r.status, r.body.len(), r.keep_alive), (204, 0, true));
        // Same length twice is fine; different lengths are not.
        assert!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx").is_ok()
        );
        invalid(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
            "Content-Length",
        );
        for cl in ["-1", "+1", "1x", "", "0x10", "99999999999999999999999999"] {
            invalid(
                format!("HTTP/1.1 200 OK\r\nContent-Length: {cl}\r\n\r\n").as_bytes(),
                "Content-Length",
            );
        }
        invalid(
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", usize::MAX).as_bytes(),
            "too large",
        );
        invalid(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                MAX_BODY + 1
            )
            .as_bytes(),
            "too large",
        );
    }

    #[test]
    fn chunked_body() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            4\r\nWiki\r\n6;name=value;x=\"y\"\r\npedia \r\nE \r\nin \r\n\r\nchunks.\r\n\
            0;last\r\nExpires: never\r\nX-Trailer: 1\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext";
        for slow in [false, true] {
            let mut r: Box<dyn BufRead> = if slow {
                Box::new(BufReader::with_capacity(1, &wire[..]))
            } else {
                Box::new(&wire[..])
            };
            let a = read_response(&mut r).unwrap();
            assert_eq!(a.status, 200);
            assert_eq!(a.body, b"Wikipedia in \r\n\r\nchunks.");
            assert!(a.keep_alive);
            // The trailer was consumed entirely: the next answer is intact.
            let b = read_response(&mut r).unwrap();
            assert_eq!(b.body, b"next");
            assert!(matches!(
                read_response(&mut r),
                Err(ApiError::Unreachable(_))
            ));
        }
        // Empty chunked body, upper-case hex, bare LF line ends.
        let r = parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n").unwrap();
        assert!(r.body.is_empty());
        let r =
            parse(b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\nA\n0123456789\n0\n\n").unwrap();
        assert_eq!(r.body, b"0123456789");
        // Chunked wins over Content-Length, and the connection is not reused.
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n").unwrap();
        assert_eq!((&r.body[..], r.keep_alive), (&b"x"[..], false));
        invalid(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            "Transfer-Encoding",
        );
        for size in ["", "g", "-1", "+1", "0x1", " ", "1 2"] {
            invalid(
                format!(
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nx\r\n0\r\n\r\n"
                )
                .as_bytes(),
                "chunk size",
            );
        }
        // Data not followed by CRLF.
        invalid(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxy\r\n0\r\n\r\n",
            "chunk",
        );
        // A chunk-size line without end.
        let mut long = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;".to_vec();
        long.extend(std::iter::repeat_n(b'a', 2 * MAX_CHUNK_LINE));
        invalid(&long, "too long");
    }

    #[test]
    fn chunk_sizes_that_overflow_or_exceed_the_cap() {
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        // usize::MAX - 1 and friends: `body.len() + size` and `size + 2`
        // used to overflow (a panic, an abort in release).
        for size in [
            format!("{:x}", usize::MAX),
            format!("{:x}", usize::MAX - 1),
            format!("{:x}", usize::MAX - 2),
            format!("{:X}", usize::MAX / 2 + 1),
            "1".repeat(40),
            format!("00000000000000000000{:x}", usize::MAX),
        ] {
            for prefix in ["", "3\r\nabc\r\n"] {
                invalid(
                    format!("{head}{prefix}{size}\r\nabc\r\n0\r\n\r\n").as_bytes(),
                    "too large",
                );
            }
        }
        // Leading zeros are still a valid size.
        let r = parse(format!("{head}0000000000000000000000003\r\nabc\r\n0\r\n\r\n").as_bytes())
            .unwrap();
        assert_eq!(r.body, b"abc");
        // Larger than MAX_BODY alone, and in total.
        invalid(
            format!("{head}{:x}\r\nabc\r\n", MAX_BODY + 1).as_bytes(),
            "too large",
        );
        let half = MAX_BODY / 2 + 1;
        let mut wire = format!("{head}{half:x}\r\n").into_bytes();
        wire.extend(std::iter::repeat_n(b'x', half));
        wire.extend_from_slice(format!("\r\n{half:x}\r\n").as_bytes());
        assert!(matches!(parse(&wire), Err(ApiError::Invalid(m)) if m.contains("too large")));
        // Exactly MAX_BODY is fine.
        let mut wire = format!("{head}{MAX_BODY:x}\r\n").into_bytes();
        wire.extend(std::iter::repeat_n(b'x', MAX_BODY));
        wire.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(parse(&wire).unwrap().body.len(), MAX_BODY);
    }

    #[test]
    fn close_delimited_body() {
        let r = parse(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"until\": \"EOF\"}\r\n",
        )
        .unwrap();
        assert_eq!(r.body, b"{\"until\": \"EOF\"}\r\n");
        assert!(!r.keep_alive, "a close-delimited body ends the connection");
        let r = parse(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
        assert!(r.body.is_empty());
        // More than MAX_BODY before the close.
        let mut wire = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        wire.extend(std::iter::repeat_n(b'x', MAX_BODY + 1));
        assert!(matches!(parse(&wire), Err(ApiError::Invalid(m)) if m.contains("too large")));
    }

    #[test]
    fn truncated_answers() {
        for wire in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nTrailer: x\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n",
            b"HTTP/1.1 200 OK",
        ] {
            for r in [parse(wire), parse_slowly(wire)] {
                assert!(
                    matches!(r, Err(ApiError::Unreachable(ref m)) if m.contains("closed")),
                    "{}: {r:?}",
                    show(wire)
                );
            }
        }
        // Nothing at all: the caller may reconnect a reused connection.
        assert!(matches!(
            parse_response(&mut &b""[..]),
            Err(ReadErr::Io(_, true))
        ));
        assert!(matches!(
            parse_response(&mut &b"H"[..]),
            Err(ReadErr::Io(_, false))
        ));
    }

    #[test]
    fn bad_status_lines() {
        for line in [
            "HTTP/1.1",
            "HTTP/1.1 ",
            "HTTP/1.1 20",
            "HTTP/1.1 2000 OK",
            "HTTP/1.1 20x OK",
            "HTTP/1.1 -20 OK",
            "HTTP/2 200 OK",
            "HTTP/1.10 200 OK",
            "http/1.1 200 OK",
            "ICY 200 OK",
            "HTTP/1.1 099 Low",
            "HTTP/1.1 101 Switching Protocols",
            "HTTP/1.1 2é0 OK",
            "",
            "\u{0}\u{1}",
        ] {
            let wire = format!("{line}\r\nContent-Length: 0\r\n\r\n");
            for r in [parse(wire.as_bytes()), parse_slowly(wire.as_bytes())] {
                assert!(matches!(r, Err(ApiError::Invalid(_))), "{line:?}: {r:?}");
            }
        }
        invalid(b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "header");
        invalid(b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n", "header");
        invalid(b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", "header");
        // Endless interim answers.
        invalid(
            "HTTP/1.1 100 Continue\r\n\r\n".repeat(20).as_bytes(),
            "interim",
        );
    }

    #[test]
    fn oversized_headers() {
        // One endless line, many lines, and a long chunked trailer.
        let mut wire = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
        wire.extend(std::iter::repeat_n(b'a', MAX_HEADER + 1));
        invalid(&wire, "too long");
        let mut wire = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..(MAX_HEADER / 10) {
            wire.extend_from_slice(format!("X-{i:05}: y\r\n").as_bytes());
        }
        wire.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        invalid(&wire, "too long");
        let mut wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".to_vec();
        for _ in 0..(MAX_HEADER / 8) {
            wire.extend_from_slice(b"T: 1234\r\n");
        }
        wire.extend_from_slice(b"\r\n");
        invalid(&wire, "too long");
        // Just under the limit is fine.
        let mut wire = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
        wire.extend(std::iter::repeat_n(b'a', MAX_HEADER - 100));
        wire.extend_from_slice(b"\r\nContent-Length: 2\r\n\r\nok");
        assert_eq!(parse(&wire).unwrap().body, b"ok");
    }

    fn chunked(data: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = data;
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes[i % sizes.len()].min(rest.len());
            out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            out.extend_from_slice(&rest[..n]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[n..];
            i += 1;
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }

    fn watch_of(wire: Vec<u8>, chunked: bool) -> Watch {
        Watch::over(Box::new(std::io::Cursor::new(wire)), chunked)
    }

    #[test]
    fn watch_events_across_chunks() {
        let events = b"{\"type\":\"ADDED\",\"object\":{\"n\":1}}\n\n{\"type\":\"MODIFIED\",\"object\":{\"n\":2}}\n{\"type\":\"DELETED\",\"object\":{\"n\":3}}\n{\"type\":\"BOOKMARK\",\"object\":{\"n\":4}}\n";
        for sizes in [&[1usize][..], &[7, 3], &[events.len()]] {
            for slow in [false, true] {
                let wire = chunked(events, sizes);
                let mut w = if slow {
                    Watch::over(
                        Box::new(BufReader::with_capacity(1, std::io::Cursor::new(wire))),
                        true,
                    )
                } else {
                    watch_of(wire, true)
                };
                let mut got = Vec::new();
                while let Some((k, v)) = w.next_event::<Value>().unwrap() {
                    got.push((k, v["n"].as_u64().unwrap()));
                }
                assert_eq!(
                    got,
                    [
                        (EventType::Added, 1),
                        (EventType::Modified, 2),
                        (EventType::Deleted, 3),
                        (EventType::Bookmark, 4)
                    ]
                );
                assert!(w.next_event::<Value>().unwrap().is_none());
            }
        }
        // Not chunked: until the connection closes.
        let mut w = watch_of(events.to_vec(), false);
        assert_eq!(
            w.next_event::<Value>().unwrap().unwrap().0,
            EventType::Added
        );
    }

    /// A watch that goes silent fails once `timeout` + `watch_grace` has
    /// passed (the agent then relists after its back-off), never waits
    /// longer; the default grace is `WATCH_GRACE`, 30 s.
    #[test]
    fn a_silent_watch_is_dropped_after_the_grace() {
        use std::net::TcpListener;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let ev = b"{\"type\":\"ADDED\",\"object\":{\"n\":1}}\n";
            let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            out.extend_from_slice(format!("{:x}\r\n", ev.len()).as_bytes());
            out.extend_from_slice(ev);
            out.extend_from_slice(b"\r\n");
            c.write_all(&out).unwrap();
            // Silent, the connection open, until the test is done.
            let _ = done_rx.recv_timeout(Duration::from_secs(20));
        });
        let cfg = ApiConfig::test_loopback(port);
        let mut c = Client::new(cfg).unwrap();
        assert_eq!(c.watch_grace, WATCH_GRACE);
        assert_eq!(WATCH_GRACE, Duration::from_secs(30));
        c.watch_grace = Duration::from_millis(300);
        let start = Instant::now();
        let mut w = c.watch("/api/v1/pods?watch=1", Duration::ZERO).unwrap();
        let (k, v) = w.next_event::<Value>().unwrap().unwrap();
        assert_eq!((k, v["n"].as_u64()), (EventType::Added, Some(1)));
        let e = w.next_event::<Value>().unwrap_err();
        let waited = start.elapsed();
        assert!(matches!(e, ApiError::Unreachable(_)), "{e:?}");
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
        done_tx.send(()).unwrap();
        server.join().unwrap();
    }

    #[test]
    fn watch_errors() {
        // 410 Gone as an ERROR event.
        let gone = br#"{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired","message":"too old resource version: 5"}}
"#;
        let e = watch_of(chunked(gone, &[10]), true)
            .next_event::<Value>()
            .unwrap_err();
        assert_eq!(e.status(), Some(410));
        assert!(e.to_string().contains("Expired"), "{e}");
        // Unknown type, not JSON, wrong object shape.
        for (line, want) in [
            (
                &b"{\"type\":\"EXPLODED\",\"object\":{}}\n"[..],
                "unknown type",
            ),
            (b"not json\n", "watch event"),
            (b"{\"type\":\"ADDED\"}\n", "watch event"),
        ] {
            match watch_of(chunked(line, &[4]), true).next_event::<Value>() {
                Err(ApiError::Invalid(m)) => assert!(m.contains(want), "{m}"),
                other => panic!("{other:?}"),
            }
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Named {
            name: String,
        }
        match watch_of(
            chunked(b"{\"type\":\"ADDED\",\"object\":{\"name\":5}}\n", &[9]),
            true,
        )
        .next_event::<Named>()
        {
            Err(ApiError::Invalid(m)) => assert!(m.contains("object"), "{m}"),
            other => panic!("{other:?}"),
        }
        // An event longer than the bound, even when it never ends.
        let mut big = b"{\"type\":\"ADDED\",\"object\":{\"x\":\"".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_WATCH_EVENT));
        big.extend_from_slice(b"\"}}\n");
        match watch_of(chunked(&big, &[65536]), true).next_event::<Value>() {
            Err(ApiError::Invalid(m)) => assert!(m.contains("too long"), "{m}"),
            other => panic!("{other:?}"),
        }
        // A stream cut in the middle of an event or a chunk.
        let mut cut = chunked(b"{\"type\":\"ADDED\",\"object\":{}}\n", &[8]);
        cut.truncate(20);
        assert!(matches!(
            watch_of(cut, true).next_event::<Value>(),
            Err(ApiError::Unreachable(_))
        ));
        // A bad chunk size.
        assert!(matches!(
            watch_of(b"zz\r\n{}\r\n".to_vec(), true).next_event::<Value>(),
            Err(ApiError::Invalid(_))
        ));
    }
}
