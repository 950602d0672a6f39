//! The agent's HTTP endpoints (tiny_http, one thread, no async runtime):
//! `/healthz` (the agent's main loop is alive), `/readyz` (installed and
//! watching the API server) and `/metrics` (OpenMetrics text). Anything
//! else is 404; only GET (and HEAD) are answered.

use super::Shared;
use std::sync::Arc;
use std::time::Duration;

/// The main loop must have ticked within this long for /healthz.
pub const STALL: Duration = Duration::from_secs(30);

/// Bind `addr` and serve on a thread of its own.
pub fn start(addr: std::net::SocketAddr, shared: Arc<Shared>) -> Result<(), String> {
    let server =
        tiny_http::Server::http(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            for req in server.incoming_requests() {
                respond(req, &shared);
            }
        })
        .map_err(|e| format!("cannot start the HTTP thread: {e}"))?;
    Ok(())
}

fn respond(req: tiny_http::Request, shared: &Shared) {
    use tiny_http::{Header, Method, Response};
    let text = |s: &str| Header::from_bytes("Content-Type", s).ok();
    let plain = text("text/plain; charset=utf-8");
    let (code, body, ctype) = if !matches!(req.method(), Method::Get | Method::Head) {
        (405, "method not allowed\n".to_string(), plain)
    } else {
        match req.url().split('?').next().unwrap_or("") {
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
                text("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            ),
            _ => (404, "not found\n".into(), plain),
        }
    };
    let mut r = Response::from_string(body).with_status_code(code);
    if let Some(h) = ctype {
        r = r.with_header(h);
    }
    let _ = req.respond(r);
}
