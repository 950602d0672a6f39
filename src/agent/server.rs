//! The agent's HTTP endpoints: `/healthz` (the agent's main loop is
//! alive), `/readyz` (installed and watching the API server) and
//! `/metrics` (OpenMetrics text). Anything else is 404; methods other than
//! GET and HEAD are 405.
//!
//! HTTP/1.1 on one thread, no async runtime: each connection is read
//! (its request head parsed by httparse, at most `MAX_REQUEST` bytes,
//! within `IO_TIMEOUT`), answered with a Content-Length body and closed.
//! The clients are the kubelet's probes and a Prometheus scraper, one
//! request at a time; a slow client holds the others up by at most
//! `IO_TIMEOUT`.

use super::Shared;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// The main loop must have ticked within this long for /healthz.
pub const STALL: Duration = Duration::from_secs(30);
/// Largest request head read.
pub const MAX_REQUEST: usize = 8 * 1024;
/// Read and write timeout of a connection.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Most header fields in a request.
const MAX_HEADERS: usize = 32;

/// Bind `addr` and serve on a thread of its own.
pub fn start(addr: SocketAddr, shared: Arc<Shared>) -> Result<(), String> {
    start_with(addr, shared, IO_TIMEOUT)
}

/// `start`, each connection's reads and writes bounded by `io_timeout`.
fn start_with(addr: SocketAddr, shared: Arc<Shared>, io_timeout: Duration) -> Result<(), String> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                serve(conn, &shared, io_timeout);
            }
        })
        .map_err(|e| format!("cannot start the HTTP thread: {e}"))?;
    Ok(())
}

/// Read one request head: its method and path; else the status to answer
/// (400; 431 past `MAX_REQUEST` bytes or `MAX_HEADERS` fields), or 0 when
/// the client is gone or silent (no answer).
fn read_request(conn: &mut TcpStream) -> Result<(String, String), u16> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = conn.read(&mut chunk).map_err(|_| 0u16)?;
        if n == 0 {
            return Err(0);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut fields);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let method = req.method.unwrap_or("").to_string();
                let path = req.path.unwrap_or("").to_string();
                return Ok((method, path));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST => {}
            Ok(httparse::Status::Partial) => return Err(431),
            Err(httparse::Error::TooManyHeaders) => return Err(431),
            Err(_) => return Err(400),
        }
    }
}

fn serve(mut conn: TcpStream, shared: &Shared, io_timeout: Duration) {
    let _ = conn.set_read_timeout(Some(io_timeout));
    let _ = conn.set_write_timeout(Some(io_timeout));
    let plain = "text/plain; charset=utf-8";
    let (head_only, code, body, ctype) = match read_request(&mut conn) {
        Err(0) => return,
        Err(code) => (false, code, "bad request\n".to_string(), plain),
        Ok((method, path)) => {
            let (code, body, ctype) = answer(&method, &path, shared);
            (method == "HEAD", code, body, ctype)
        }
    };
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    let _ = conn.write_all(&out);
}

/// (status, body, content type) for a request.
fn answer(method: &str, path: &str, shared: &Shared) -> (u16, String, &'static str) {
    let plain = "text/plain; charset=utf-8";
    if method != "GET" && method != "HEAD" {
        return (405, "method not allowed\n".into(), plain);
    }
    match path.split('?').next().unwrap_or("") {
        "/healthz" | "/livez" => {
            if shared.alive(STALL) {
                (200, "ok\n".into(), plain)
            } else {
                (503, "main loop stalled\n".into(), plain)
            }
        }
        "/readyz" => match shared.not_ready() {
            None => (200, "ok\n".into(), plain),
            Some(why) => (503, format!("{why}\n"), plain),
        },
        "/metrics" => (
            200,
            shared.metrics.encode(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        _ => (404, "not found\n".into(), plain),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    fn request(addr: SocketAddr, raw: &[u8]) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = c.write_all(raw);
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        out
    }

    #[test]
    fn endpoints_and_bad_requests() {
        let shared = Arc::new(Shared::new());
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        start(addr, shared.clone()).unwrap();
        let r = request(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\nok\n"),
            "{r}"
        );
        let r = request(addr, b"GET /readyz HTTP/1.1\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 503") && r.contains("not installed"),
            "{r}"
        );
        shared
            .installed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        shared
            .watching
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let r = request(addr, b"GET /readyz?verbose HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        let r = request(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(
            r.contains("openmetrics-text") && r.ends_with("# EOF\n"),
            "{r}"
        );
        let r = request(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(r.ends_with("\r\n\r\n"), "{r}");
        assert!(request(addr, b"POST /healthz HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(request(addr, b"GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(request(addr, b"\x00\x01 garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
        // A head larger than the bound, and one that never ends.
        let mut big = b"GET /healthz HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_REQUEST));
        assert!(request(addr, &big).starts_with("HTTP/1.1 431"));
        // A client that sends nothing and leaves; the server goes on.
        drop(TcpStream::connect(addr).unwrap());
        assert!(request(addr, b"GET /healthz HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
        // Header fields: MAX_HEADERS (32) are read, one more is 431.
        assert_eq!(MAX_HEADERS, 32);
        assert_eq!(MAX_REQUEST, 8 * 1024);
        let with_fields = |n: usize| {
            let mut r = b"GET /healthz HTTP/1.1\r\n".to_vec();
            for i in 0..n {
                r.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
            }
            r.extend_from_slice(b"\r\n");
            request(addr, &r)
        };
        let r = with_fields(MAX_HEADERS);
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        let r = with_fields(MAX_HEADERS + 1);
        assert!(r.starts_with("HTTP/1.1 431"), "{r}");
        // The main loop's heartbeat: within STALL (30 s) alive, past it
        // /healthz is 503.
        assert_eq!(STALL, Duration::from_secs(30));
        let now = super::super::now_secs();
        // (One second of margin: a clock tick between store and check.)
        shared
            .heartbeat
            .store(now - STALL.as_secs() + 1, Ordering::SeqCst);
        assert!(request(addr, b"GET /healthz HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
        shared
            .heartbeat
            .store(now - STALL.as_secs() - 2, Ordering::SeqCst);
        let r = request(addr, b"GET /livez HTTP/1.1\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 503") && r.contains("stalled"),
            "{r}"
        );
    }

    /// A client that sends part of a head and goes silent is dropped
    /// after the I/O timeout, unanswered, and the next one is served (the
    /// agent's `IO_TIMEOUT`, 5 s).
    #[test]
    fn a_silent_client_is_dropped_after_the_timeout() {
        assert_eq!(IO_TIMEOUT, Duration::from_secs(5));
        let shared = Arc::new(Shared::new());
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        start_with(addr, shared, Duration::from_millis(300)).unwrap();
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let start = std::time::Instant::now();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        let waited = start.elapsed();
        assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
        assert!(request(addr, b"GET /healthz HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
    }
}
