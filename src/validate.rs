//! `multimesh validate`: run inside a pod (as the init container
//! `multimesh-validation`, or the first native sidecar) before the app, it
//! proves that the pod's outbound TCP is captured the way the mesh proxy
//! needs it.
//!
//! It listens where the proxy would (the profile's outbound port on
//! loopback), dials a TEST-NET address that nothing answers, and passes when
//! that connection arrives on its own listener carrying a random token it
//! sent (so it is its own connection, not someone else's listener), with
//! `SO_ORIGINAL_DST` equal to the address it dialed. Anything else is exit
//! status [`EXIT_NOT_CAPTURED`] (95, as linkerd's network validator) with
//! one line on stderr naming what is missing; the node agent reads that
//! exit code from the init container's status and repairs the pod.
//!
//! Families: the REDIRECT of locally generated traffic lands on 127.0.0.1
//! for IPv4 and on ::1 for IPv6, so the listener binds exactly those (never
//! a wildcard: nothing outside the pod can reach it). IPv4 is checked when
//! the pod has a route to the IPv4 target and IPv6 when it has one to the
//! IPv6 target (a dual-stack pod is checked in both, an IPv6-only pod in
//! IPv6 only); a pod with neither has nowhere to dial and fails. Whether a
//! route exists is asked of the kernel by connecting a UDP socket, which
//! sends nothing (capture never touches UDP anyway).
//!
//! The proxy's UID and GID are exempt from capture by design: run under
//! either, the check could only fail, so the validator refuses to run as
//! them (exit 95, "proxy UID"). Run as root (with CAP_SETUID/CAP_SETGID) it
//! also checks that exemption: a forked child switches to the proxy's UID
//! and GID and dials again, and that connection must not reach the
//! listener ("proxy UID not bypassed" otherwise). Every wait is bounded by
//! `--timeout`.

use crate::capture::{CaptureConfig, Profile};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{getsockopt, sockopt};
use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream,
    UdpSocket,
};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// The init container that runs the validator in a meshed pod: the node
/// agent finds a failed validation by this name and [`EXIT_NOT_CAPTURED`].
pub const INIT_CONTAINER: &str = "multimesh-validation";

/// Exit status when capture is missing or broken (the verdict the node
/// agent acts on). Usage errors and a check that could not run (its port
/// taken) exit 1: they say nothing about capture.
pub const EXIT_NOT_CAPTURED: i32 = 95;

/// `--timeout` default and upper bound, in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;
pub const MAX_TIMEOUT_SECS: u64 = 300;

/// What is dialed without `--connect`: TEST-NET-2 (RFC 5737) and the IPv6
/// documentation prefix (RFC 3849), never routed on the internet; port
/// 20001 is in no profile's exclusions.
pub const TARGET_V4: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 254), 20001));
pub const TARGET_V6: SocketAddr = SocketAddr::V6(SocketAddrV6::new(
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x254),
    20001,
    0,
    0,
));

/// After the connection is established, how long its arrival on a listener
/// is awaited (within `--timeout`). On loopback it is there at once; the
/// bound only decides how soon "wrong port" is reported.
const ARRIVAL_WAIT: Duration = Duration::from_secs(2);

const HELP: &str = "\
Usage: multimesh validate [--profile istio|linkerd] [--timeout SECONDS] [--port PORT]
                         [--connect IP:PORT] [--proxy-uid UID] [--proxy-gid GID]
Check, from inside a pod, that its outbound TCP is captured: listen on the
profile's outbound port on loopback, connect to a TEST-NET address, and pass
when the connection lands on that listener with its original destination.
Run it as the pod's init container `multimesh-validation`, as a user other
than the proxy's; run as root (CAP_SETUID, CAP_SETGID) it also checks that
the proxy's own connections bypass capture.

  --profile P      istio (default: outbound port 15001, proxy UID/GID 1337)
                   or linkerd (outbound port 4140, proxy UID 2102)
  --timeout S      bound on the whole check, 1-300 seconds (default 10)
  --port P         the outbound port capture redirects to (default: the profile's)
  --connect IP:P   the address to dial (default 198.51.100.254:20001, and
                   [2001:db8::254]:20001 when the pod has an IPv6 route); give
                   one the pod's capture covers if it narrows its outbound CIDRs
  --proxy-uid U    the proxy UID exempt from capture (default: the profile's)
  --proxy-gid G    the proxy GID exempt from capture (default: the profile's)

Exit status: 0 captured; 95 not captured, with one line on stderr naming what
is missing (no redirect, wrong port, original destination lost, proxy UID,
proxy UID not bypassed); 1 bad usage, or the check could not run.
";

/// The validator's options, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub profile: Profile,
    pub timeout: Duration,
    /// Where the validator listens: the capture's outbound port.
    pub port: u16,
    /// The profile's inbound port: a connection arriving there was
    /// redirected to the wrong one.
    pub inbound_port: u16,
    pub proxy_uid: u32,
    pub proxy_gid: Option<u32>,
    /// None: [`TARGET_V4`] and [`TARGET_V6`], each when routed.
    pub connect: Option<SocketAddr>,
}

impl Options {
    /// Parse the arguments after `validate`, strictly (lexopt): unknown
    /// options, stray arguments, missing or repeated values are errors.
    /// None: `--help`.
    pub fn parse(args: &[&str]) -> Result<Option<Options>, String> {
        let Some(f) = crate::flags::Flags::parse(
            args,
            &[
                "profile",
                "timeout",
                "port",
                "connect",
                "proxy-uid",
                "proxy-gid",
            ],
            &[],
        )?
        else {
            return Ok(None);
        };
        let [profile, timeout, port, connect, uid, gid] = [
            "profile",
            "timeout",
            "port",
            "connect",
            "proxy-uid",
            "proxy-gid",
        ]
        .map(|n| f.value(n).map(String::from));
        let profile = match profile.as_deref() {
            None | Some("istio") => Profile::Istio,
            Some("linkerd") => Profile::Linkerd,
            Some(p) => return Err(format!("--profile: {p:?} is not istio or linkerd")),
        };
        let defaults = CaptureConfig::defaults(profile);
        let timeout = match timeout {
            None => DEFAULT_TIMEOUT_SECS,
            Some(t) => number(&t, "--timeout", 1, MAX_TIMEOUT_SECS)?,
        };
        let port = match port {
            None => defaults.outbound_port,
            Some(p) => number(&p, "--port", 1, 65535)? as u16,
        };
        let connect = match connect {
            None => None,
            Some(c) => Some(target(&c)?),
        };
        // (uid_t)-1 means "no change", never an owner.
        let id = |v: &str, name: &str| number(v, name, 0, u32::MAX as u64 - 1).map(|n| n as u32);
        let proxy_uid = match uid {
            None => defaults.proxy_uid,
            Some(v) => id(&v, "--proxy-uid")?,
        };
        let proxy_gid = match gid {
            None => defaults.proxy_gid,
            Some(v) => Some(id(&v, "--proxy-gid")?),
        };
        Ok(Some(Options {
            profile,
            timeout: Duration::from_secs(timeout),
            port,
            inbound_port: defaults.inbound_port,
            proxy_uid,
            proxy_gid,
            connect,
        }))
    }
}

/// A decimal number in `min..=max`: digits only (no sign, no spaces).
fn number(s: &str, name: &str, min: u64, max: u64) -> Result<u64, String> {
    s.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| s.parse::<u64>().ok())
        .flatten()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("{name}: {s:?} is not a number from {min} to {max}"))
}

/// `--connect`: an IP literal and a port (`[v6]:port` for IPv6), an
/// address capture can apply to: not loopback, unspecified or multicast
/// (outbound capture leaves loopback alone).
fn target(s: &str) -> Result<SocketAddr, String> {
    let a: SocketAddr = s
        .parse()
        .map_err(|_| format!("--connect: {s:?} is not IP:PORT (or [IPv6]:PORT)"))?;
    let ip = a.ip();
    if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || a.port() == 0 {
        return Err(format!(
            "--connect: {s} is not an address outbound capture applies to"
        ));
    }
    if let IpAddr::V4(v4) = ip {
        if v4.is_broadcast() {
            return Err(format!(
                "--connect: {s} is not an address outbound capture applies to"
            ));
        }
    }
    Ok(a)
}

/// What is missing, as the one line of a failed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Running as the proxy's UID or GID, whose traffic is exempt.
    ProxyUser,
    /// Run as root, it connected as the proxy, and that was captured.
    ProxyNotBypassed,
    /// The connection was not redirected (refused, timed out, unreachable).
    NoRedirect,
    /// It was redirected, or answered, somewhere other than the listener.
    WrongPort,
    /// It reached the listener without the address it was dialed to.
    OriginalDestinationLost,
}

impl Missing {
    pub fn label(self) -> &'static str {
        match self {
            Missing::ProxyUser => "proxy UID",
            Missing::ProxyNotBypassed => "proxy UID not bypassed",
            Missing::NoRedirect => "no redirect",
            Missing::WrongPort => "wrong port",
            Missing::OriginalDestinationLost => "original destination lost",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub missing: Missing,
    pub detail: String,
}

impl Failure {
    fn new(missing: Missing, detail: impl Into<String>) -> Failure {
        Failure {
            missing,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.missing.label(), self.detail)
    }
}

pub fn main(args: &[&str]) -> i32 {
    let opts = match Options::parse(args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{HELP}");
            return 0;
        }
        Err(e) => {
            eprintln!("multimesh validate: {e}");
            return 1;
        }
    };
    match run(&opts) {
        Ok(Ok(p)) => {
            let join = |f: fn(&(SocketAddr, SocketAddr)) -> SocketAddr| {
                p.checked
                    .iter()
                    .map(|x| f(x).to_string())
                    .collect::<Vec<_>>()
                    .join(" and ")
            };
            println!(
                "multimesh validate: captured: {} reached the {} listener {} with its original destination{}",
                join(|x| x.0),
                opts.profile.name(),
                join(|x| x.1),
                if p.proxy_bypassed {
                    format!("; the proxy's UID {} bypasses capture", opts.proxy_uid)
                } else {
                    String::new()
                }
            );
            0
        }
        Ok(Err(f)) => {
            eprintln!("multimesh validate: {f}");
            EXIT_NOT_CAPTURED
        }
        Err(e) => {
            eprintln!("multimesh validate: {e}");
            1
        }
    }
}

/// A passed check.
#[derive(Debug)]
pub struct Passed {
    /// (target dialed, listener it reached with its original destination)
    pub checked: Vec<(SocketAddr, SocketAddr)>,
    /// Run as root: the proxy's own connections were checked to bypass.
    pub proxy_bypassed: bool,
}

/// The whole check. Ok(Ok(_)): every target passed; Ok(Err(failure)):
/// capture is missing; Err: the check could not run.
pub fn run(o: &Options) -> Result<Result<Passed, Failure>, String> {
    let deadline = Instant::now() + o.timeout;
    let as_root = nix::unistd::geteuid().is_root();
    if let Some(f) = proxy_identity(o) {
        return Ok(Err(f));
    }
    let candidates = match o.connect {
        Some(a) => vec![a],
        None => vec![TARGET_V4, TARGET_V6],
    };
    let targets: Vec<SocketAddr> = candidates.iter().copied().filter(routed).collect();
    if targets.is_empty() {
        let names: Vec<String> = candidates.iter().map(|a| a.ip().to_string()).collect();
        return Ok(Err(Failure::new(
            Missing::NoRedirect,
            format!(
                "no route to {}: the pod has no route its traffic could be redirected from",
                names.join(" or ")
            ),
        )));
    }
    let mut checked = Vec::new();
    for t in targets {
        match check(o, t, deadline, as_root)? {
            Ok(listener) => checked.push((t, listener)),
            Err(f) => return Ok(Err(f)),
        }
    }
    Ok(Ok(Passed {
        checked,
        proxy_bypassed: as_root,
    }))
}

/// Refuse to run as the proxy: its UID and GID are exempt from capture.
/// The socket owner capture matches is the effective (filesystem) UID/GID.
fn proxy_identity(o: &Options) -> Option<Failure> {
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    let profile = o.profile.name();
    if uid == o.proxy_uid {
        return Some(Failure::new(
            Missing::ProxyUser,
            format!(
                "running as UID {uid}, the {profile} proxy's, whose traffic is never captured (bypassed by design); run the validator as another user"
            ),
        ));
    }
    if o.proxy_gid == Some(gid) {
        return Some(Failure::new(
            Missing::ProxyUser,
            format!(
                "running as GID {gid}, the {profile} proxy's, whose traffic is never captured (bypassed by design); run the validator as another group"
            ),
        ));
    }
    None
}

/// Does the pod have a route to `a`? Connecting a UDP socket does the
/// kernel's route lookup and sends nothing.
fn routed(a: &SocketAddr) -> bool {
    let any: SocketAddr = match a {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    UdpSocket::bind(any).and_then(|s| s.connect(a)).is_ok()
}

fn loopback(a: &SocketAddr) -> IpAddr {
    match a {
        SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
        SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
    }
}

/// One target: listen, dial, see where the connection lands; `as_root`:
/// then dial as the proxy and see that it does not.
fn check(
    o: &Options,
    target: SocketAddr,
    deadline: Instant,
    as_root: bool,
) -> Result<Result<SocketAddr, Failure>, String> {
    let lo = loopback(&target);
    let own_addr = SocketAddr::new(lo, o.port);
    let own =
        TcpListener::bind(own_addr).map_err(|e| format!("cannot listen on {own_addr}: {e}"))?;
    // Best effort: the inbound port may be taken (a native sidecar proxy
    // already up); then a wrong redirect there is reported as any other.
    let wrong = (o.inbound_port != o.port)
        .then(|| TcpListener::bind(SocketAddr::new(lo, o.inbound_port)).ok())
        .flatten();
    for l in std::iter::once(&own).chain(wrong.as_ref()) {
        l.set_nonblocking(true)
            .map_err(|e| format!("listener on {lo}: {e}"))?;
    }
    let token = token()?;
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Ok(Err(no_redirect(target, ErrorKind::TimedOut, None, o)));
    }
    let mut conn = match TcpStream::connect_timeout(&target, left) {
        Ok(c) => c,
        Err(e) => return Ok(Err(no_redirect(target, e.kind(), Some(&e), o))),
    };
    // A write error means the peer is already gone: the listener below then
    // never sees the token, and that is the verdict.
    let _ = conn.set_write_timeout(Some(left));
    let _ = conn.write_all(token.as_bytes());
    let until = deadline.min(Instant::now() + ARRIVAL_WAIT);
    match arrival(&own, wrong.as_ref(), token.as_bytes(), until) {
        Some((true, accepted)) => {
            let orig = original_dst(&accepted, target.is_ipv6());
            if let Some(f) = judge_original(target, own_addr, orig) {
                return Ok(Err(f));
            }
            if !as_root {
                return Ok(Ok(own_addr));
            }
            Ok(match as_proxy(o, target, &own, wrong.as_ref(), deadline)? {
                None => Ok(own_addr),
                Some(to) => Err(Failure::new(
                    Missing::ProxyNotBypassed,
                    format!(
                        "a connection of the {} proxy's UID {}{} to {target} was redirected to {to}",
                        o.profile.name(),
                        o.proxy_uid,
                        o.proxy_gid.map(|g| format!(" and GID {g}")).unwrap_or_default()
                    ),
                )),
            })
        }
        Some((false, _)) => Ok(Err(Failure::new(
            Missing::WrongPort,
            format!(
                "{target} was redirected to {}, the {} inbound port, not to the outbound port {}",
                SocketAddr::new(lo, o.inbound_port),
                o.profile.name(),
                o.port
            ),
        ))),
        None => Ok(Err(Failure::new(
            Missing::WrongPort,
            format!(
                "{target} was answered, but not by the listener on {own_addr}: redirected to another port, or not redirected and answered by {target} itself"
            ),
        ))),
    }
}

/// Run as root, the validator can also act as the proxy: a forked child
/// switches to the proxy's UID (and GID) and dials `target` again; that
/// connection must not arrive on the validator's listeners. Returns where
/// it arrived, if it did. The child's connect is bounded by the time left
/// (at most [`ARRIVAL_WAIT`]), and so is the wait for it.
fn as_proxy(
    o: &Options,
    target: SocketAddr,
    own: &TcpListener,
    wrong: Option<&TcpListener>,
    deadline: Instant,
) -> Result<Option<SocketAddr>, String> {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult, Gid, Uid};
    let token = token()?;
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .min(ARRIVAL_WAIT);
    if wait.is_zero() {
        return Err(format!(
            "--timeout {}s ran out before the proxy's bypass was checked",
            o.timeout.as_secs()
        ));
    }
    // SAFETY: the validator is single-threaded (it starts no thread), so
    // the child is a full copy with no lock held elsewhere; it makes a few
    // system calls (set ids, connect, write) and leaves with _exit.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            let code = (|| {
                let gid = Gid::from_raw(o.proxy_gid.unwrap_or(0));
                let uid = Uid::from_raw(o.proxy_uid);
                if nix::unistd::setgroups(&[]).is_err()
                    || nix::unistd::setresgid(gid, gid, gid).is_err()
                    || nix::unistd::setresuid(uid, uid, uid).is_err()
                {
                    return PROXY_NO_IDS;
                }
                match TcpStream::connect_timeout(&target, wait) {
                    Ok(mut c) => {
                        let _ = c.write_all(token.as_bytes());
                        PROXY_CONNECTED
                    }
                    Err(_) => PROXY_NOT_CONNECTED,
                }
            })();
            // SAFETY: _exit ends the child at once, running nothing of the
            // parent's (no atexit handlers, no buffered output flushed twice).
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            let status = loop {
                match waitpid(child, None) {
                    Err(nix::Error::EINTR) => continue,
                    r => break r.map_err(|e| format!("wait for the proxy check: {e}"))?,
                }
            };
            match status {
                // Not even connected: not redirected to the listener, which
                // would have completed the handshake.
                WaitStatus::Exited(_, PROXY_NOT_CONNECTED) => Ok(None),
                WaitStatus::Exited(_, PROXY_CONNECTED) => {
                    let until = Instant::now() + wait;
                    Ok(arrival(own, wrong, token.as_bytes(), until)
                        .and_then(|(_, s)| s.local_addr().ok()))
                }
                WaitStatus::Exited(_, PROXY_NO_IDS) => Err(format!(
                    "running as root, but cannot switch to the proxy's UID {} to check its bypass (no CAP_SETUID/CAP_SETGID?)",
                    o.proxy_uid
                )),
                other => Err(format!("the proxy check ended with {other:?}")),
            }
        }
    }
}

/// The forked proxy check's exit codes.
const PROXY_CONNECTED: i32 = 0;
const PROXY_NOT_CONNECTED: i32 = 1;
const PROXY_NO_IDS: i32 = 2;

/// A random token for one connection (hex of 16 bytes from the kernel).
fn token() -> Result<String, String> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| "no randomness for the token".to_string())?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Wait (until `until`) for a connection carrying `token` on `own` (true)
/// or on `wrong` (false). Connections without the token are someone
/// else's and are dropped.
fn arrival(
    own: &TcpListener,
    wrong: Option<&TcpListener>,
    token: &[u8],
    until: Instant,
) -> Option<(bool, TcpStream)> {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let mut fds = vec![PollFd::new(own.as_fd(), PollFlags::POLLIN)];
        if let Some(w) = wrong {
            fds.push(PollFd::new(w.as_fd(), PollFlags::POLLIN));
        }
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        match poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) | Err(nix::Error::EINTR) => continue,
            Err(_) => return None,
            Ok(_) => {}
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| r.contains(PollFlags::POLLIN)))
            .collect();
        for (i, l) in std::iter::once(own).chain(wrong).enumerate() {
            if !ready[i] {
                continue;
            }
            let Ok((mut s, _)) = l.accept() else { continue };
            if carries(&mut s, token, until) {
                return Some((i == 0, s));
            }
        }
    }
}

/// Does `s` start with `token`? Read within the deadline.
fn carries(s: &mut TcpStream, token: &[u8], until: Instant) -> bool {
    let mut buf = vec![0u8; token.len()];
    let mut got = 0;
    if s.set_nonblocking(false).is_err() {
        return false;
    }
    while got < buf.len() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            return false;
        }
        match s.read(&mut buf[got..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got += n,
        }
    }
    buf == token
}

/// The destination before NAT (`SO_ORIGINAL_DST`, `IP6T_SO_ORIGINAL_DST`),
/// as conntrack recorded it for this connection.
fn original_dst(s: &TcpStream, v6: bool) -> nix::Result<SocketAddr> {
    if v6 {
        let sa = getsockopt(s, sockopt::Ip6tOriginalDst)?;
        Ok(SocketAddr::new(
            Ipv6Addr::from(sa.sin6_addr.s6_addr).into(),
            u16::from_be(sa.sin6_port),
        ))
    } else {
        let sa = getsockopt(s, sockopt::OriginalDst)?;
        Ok(SocketAddr::new(
            Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)).into(),
            u16::from_be(sa.sin_port),
        ))
    }
}

/// The verdict on a connection that reached the listener: None when its
/// original destination is the address dialed.
pub fn judge_original(
    dialed: SocketAddr,
    listener: SocketAddr,
    orig: nix::Result<SocketAddr>,
) -> Option<Failure> {
    match orig {
        Ok(a) if a == dialed => None,
        Ok(a) => Some(Failure::new(
            Missing::OriginalDestinationLost,
            format!("the connection to {dialed} reached {listener}, but its original destination reads {a}"),
        )),
        Err(nix::Error::ENOENT) => Some(Failure::new(
            Missing::OriginalDestinationLost,
            format!("the connection to {dialed} reached {listener} without NAT: it has no original destination (SO_ORIGINAL_DST)"),
        )),
        Err(e) => Some(Failure::new(
            Missing::OriginalDestinationLost,
            format!("the connection to {dialed} reached {listener}, but its original destination cannot be read: {e}"),
        )),
    }
}

/// The verdict on a connection that could not be established.
pub fn no_redirect(
    target: SocketAddr,
    kind: ErrorKind,
    err: Option<&std::io::Error>,
    o: &Options,
) -> Failure {
    let why = match kind {
        ErrorKind::ConnectionRefused => "was refused".to_string(),
        ErrorKind::TimedOut | ErrorKind::WouldBlock => {
            format!("timed out (--timeout {}s)", o.timeout.as_secs())
        }
        ErrorKind::NetworkUnreachable | ErrorKind::HostUnreachable => "is unreachable".to_string(),
        _ => match err {
            Some(e) => format!("failed: {e}"),
            None => format!("failed: {kind}"),
        },
    };
    Failure::new(
        Missing::NoRedirect,
        format!(
            "the connection to {target} {why}; it was not redirected to {}",
            SocketAddr::new(loopback(&target), o.port)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(a: &[&str]) -> Result<Options, String> {
        Options::parse(a).map(|o| o.expect("not --help"))
    }

    #[test]
    fn defaults_per_profile() {
        let o = parse(&[]).unwrap();
        assert_eq!(o.profile, Profile::Istio);
        assert_eq!(o.timeout, Duration::from_secs(DEFAULT_TIMEOUT_SECS));
        assert_eq!((o.port, o.inbound_port), (15001, 15006));
        assert_eq!((o.proxy_uid, o.proxy_gid), (1337, Some(1337)));
        assert_eq!(o.connect, None);
        let o = parse(&["--profile", "linkerd"]).unwrap();
        assert_eq!((o.port, o.inbound_port), (4140, 4143));
        assert_eq!((o.proxy_uid, o.proxy_gid), (2102, None));
        let o = parse(&[
            "--profile=linkerd",
            "--timeout=3",
            "--port",
            "4150",
            "--connect",
            "[2001:db8::9]:80",
            "--proxy-uid=1500",
            "--proxy-gid",
            "1501",
        ])
        .unwrap();
        assert_eq!(o.timeout, Duration::from_secs(3));
        assert_eq!(o.port, 4150);
        assert_eq!(o.connect, Some("[2001:db8::9]:80".parse().unwrap()));
        assert_eq!((o.proxy_uid, o.proxy_gid), (1500, Some(1501)));
        assert_eq!(Options::parse(&["--help"]).unwrap(), None);
        assert_eq!(Options::parse(&["--port", "1", "-h"]).unwrap(), None);
    }

    #[test]
    fn strict_and_bounded() {
        for (args, msg) in [
            (&["--bogus"][..], "unknown option --bogus"),
            (&["--port"], "missing argument for option '--port'"),
            (&["extra"], "unexpected argument"),
            (&["-x"], "invalid option '-x'"),
            (&["--port", "1", "--port", "2"], "--port given twice"),
            (&["--profile", "consul"], "not istio or linkerd"),
            (&["--timeout", "0"], "from 1 to 300"),
            (&["--timeout", "301"], "from 1 to 300"),
            (&["--timeout", "-1"], "from 1 to 300"),
            (&["--timeout", "1.5"], "from 1 to 300"),
            (&["--port", "0"], "from 1 to 65535"),
            (&["--port", "65536"], "from 1 to 65535"),
            (&["--port", " 80"], "from 1 to 65535"),
            (&["--proxy-uid", "4294967295"], "from 0 to 4294967294"),
            (&["--proxy-gid", "x"], "from 0 to 4294967294"),
            (&["--connect", "example.com:80"], "is not IP:PORT"),
            (&["--connect", "198.51.100.1"], "is not IP:PORT"),
            (&["--connect", "127.0.0.1:15001"], "capture applies to"),
            (&["--connect", "[::1]:80"], "capture applies to"),
            (&["--connect", "0.0.0.0:80"], "capture applies to"),
            (&["--connect", "224.0.0.1:80"], "capture applies to"),
            (&["--connect", "255.255.255.255:80"], "capture applies to"),
            (&["--connect", "198.51.100.1:0"], "capture applies to"),
        ] {
            let e = parse(args).unwrap_err();
            assert!(e.contains(msg), "{args:?}: {e}");
        }
        assert_eq!(
            parse(&["--timeout", "300"]).unwrap().timeout,
            Duration::from_secs(MAX_TIMEOUT_SECS)
        );
    }

    #[test]
    fn verdicts_name_what_is_missing() {
        let dialed: SocketAddr = "198.51.100.254:20001".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:15001".parse().unwrap();
        assert_eq!(judge_original(dialed, lo, Ok(dialed)), None);
        let f = judge_original(dialed, lo, Ok("198.51.100.7:20001".parse().unwrap())).unwrap();
        assert_eq!(f.missing, Missing::OriginalDestinationLost);
        assert!(
            f.to_string().starts_with("original destination lost: "),
            "{f}"
        );
        assert!(f.detail.contains("reads 198.51.100.7:20001"), "{f}");
        let f = judge_original(dialed, lo, Err(nix::Error::ENOENT)).unwrap();
        assert!(f.detail.contains("without NAT"), "{f}");
        let f = judge_original(dialed, lo, Err(nix::Error::ENOPROTOOPT)).unwrap();
        assert_eq!(f.missing, Missing::OriginalDestinationLost);

        let o = parse(&["--timeout", "4"]).unwrap();
        for (kind, why) in [
            (ErrorKind::ConnectionRefused, "was refused"),
            (ErrorKind::TimedOut, "timed out (--timeout 4s)"),
            (ErrorKind::NetworkUnreachable, "is unreachable"),
            (ErrorKind::HostUnreachable, "is unreachable"),
        ] {
            let f = no_redirect(dialed, kind, None, &o);
            assert_eq!(
                f.to_string(),
                format!(
                    "no redirect: the connection to {dialed} {why}; it was not redirected to {lo}"
                )
            );
        }
        let f = no_redirect(TARGET_V6, ErrorKind::ConnectionRefused, None, &o);
        assert!(f.detail.ends_with("redirected to [::1]:15001"), "{f}");
    }
}
