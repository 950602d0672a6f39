//! mm-probe: TCP/UDP listener and client for capture tests and the demo.
//! Run inside a pod netns (`ip netns exec POD mm-probe ...`).
//!
//!   mm-probe listen --port P [--udp] [--transparent] [--bind IP] [--uid U]
//!                   [--gid G] [--count N] [--timeout SECS]
//!       Dual-stack listener (on IP when given; its socket U/G's). Prints "ready"
//!       once bound, then for each connection (or datagram) answers and
//!       prints one line: "served_by=P orig=ADDR peer=ADDR local=ADDR"
//!       where orig is SO_ORIGINAL_DST (the destination before a REDIRECT;
//!       "-" when not redirected) and local the accepted socket's address
//!       (a TPROXY'd connection's original destination). --transparent
//!       sets IP_TRANSPARENT (TCP), as a TPROXY proxy's listener does.
//!   mm-probe connect --addr A --port P [--udp] [--uid U] [--gid G] [--timeout SECS]
//!       Connects (as U/G when given), sends a line, prints the answer (UDP:
//!       followed by " from=ADDR", the answer's source address).

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn original_dst(fd: i32, v6: bool) -> Option<SocketAddr> {
    const SO_ORIGINAL_DST: libc::c_int = 80;
    unsafe {
        if v6 {
            let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            if libc::getsockopt(
                fd,
                libc::SOL_IPV6,
                SO_ORIGINAL_DST,
                &mut sa as *mut _ as *mut _,
                &mut len,
            ) == 0
            {
                let ip = std::net::Ipv6Addr::from(sa.sin6_addr.s6_addr);
                return Some(SocketAddr::new(IpAddr::V6(ip), u16::from_be(sa.sin6_port)));
            }
        } else {
            let mut sa: libc::sockaddr_in = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            if libc::getsockopt(
                fd,
                libc::SOL_IP,
                SO_ORIGINAL_DST,
                &mut sa as *mut _ as *mut _,
                &mut len,
            ) == 0
            {
                let ip = std::net::Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr));
                return Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(sa.sin_port)));
            }
        }
    }
    None
}

fn canonical(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        _ => a,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let timeout = Duration::from_secs(
        arg(&args, "--timeout")
            .and_then(|t| t.parse().ok())
            .unwrap_or(10),
    );
    let port: u16 = arg(&args, "--port")
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let udp = args.iter().any(|a| a == "--udp");
    match args.first().map(String::as_str) {
        Some("listen") => listen(port, udp, &args, timeout),
        Some("connect") => connect(port, udp, &args, timeout),
        _ => {
            eprintln!("usage: mm-probe listen|connect ...");
            std::process::exit(2);
        }
    }
}

fn listen(port: u16, udp: bool, args: &[String], timeout: Duration) {
    let count: usize = arg(args, "--count")
        .and_then(|c| c.parse().ok())
        .unwrap_or(1);
    let deadline = Instant::now() + timeout;
    let bind: SocketAddr = match arg(args, "--bind") {
        Some(a) => SocketAddr::new(a.parse().expect("--bind IP"), port),
        None => format!("[::]:{port}").parse().unwrap(),
    };
    let mut out = std::io::stdout();
    if udp {
        // The socket is the user's (the owner match sees its creator).
        drop_to(args);
        let s = UdpSocket::bind(bind).expect("bind udp");
        println!("ready");
        let _ = out.flush();
        for _ in 0..count {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            s.set_read_timeout(Some(left)).ok();
            let mut buf = [0u8; 512];
            let Ok((_, peer)) = s.recv_from(&mut buf) else {
                break;
            };
            let line = format!("served_by={port} orig=- peer={}", canonical(peer));
            let _ = s.send_to(line.as_bytes(), peer);
            println!("{line}");
            let _ = out.flush();
        }
        return;
    }
    // IP_TRANSPARENT needs CAP_NET_ADMIN: such a listener is root's.
    let l = if args.iter().any(|a| a == "--transparent") {
        transparent_listener(port)
    } else {
        drop_to(args);
        TcpListener::bind(bind).expect("bind tcp")
    };
    l.set_nonblocking(true).ok();
    println!("ready");
    let _ = out.flush();
    let mut served = 0;
    while served < count && Instant::now() < deadline {
        match l.accept() {
            Ok((mut c, peer)) => {
                c.set_nonblocking(false).ok();
                c.set_read_timeout(Some(Duration::from_secs(5))).ok();
                let local = c.local_addr().map(canonical).ok();
                let v6 = local.is_some_and(|a| a.is_ipv6());
                let orig = original_dst(c.as_raw_fd(), v6)
                    .map(canonical)
                    .filter(|o| Some(*o) != local)
                    .map(|o| o.to_string())
                    .unwrap_or_else(|| "-".into());
                let mut line = String::new();
                let _ = BufReader::new(&c).read_line(&mut line);
                let reply = format!(
                    "served_by={port} orig={orig} peer={} local={}",
                    canonical(peer),
                    local.map_or("-".to_string(), |a| a.to_string())
                );
                let _ = c.write_all(format!("{reply}\n").as_bytes());
                println!("{reply}");
                let _ = out.flush();
                served += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => {
                eprintln!("accept: {e}");
                break;
            }
        }
    }
}

/// Become --uid/--gid when given.
fn drop_to(args: &[String]) {
    if let Some(g) = arg(args, "--gid").and_then(|g| g.parse::<u32>().ok()) {
        unsafe {
            if libc::setgroups(0, std::ptr::null()) != 0 || libc::setresgid(g, g, g) != 0 {
                panic!("setgid failed");
            }
        }
    }
    if let Some(u) = arg(args, "--uid").and_then(|u| u.parse::<u32>().ok()) {
        unsafe {
            if libc::setresuid(u, u, u) != 0 {
                panic!("setuid failed");
            }
        }
    }
}

/// A dual-stack TCP listener on `port` with IP_TRANSPARENT (and
/// IPV6_TRANSPARENT) set before bind: it accepts connections TPROXY hands
/// it, whatever their destination address.
fn transparent_listener(port: u16) -> TcpListener {
    use std::os::fd::FromRawFd;
    unsafe {
        let fd = libc::socket(libc::AF_INET6, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let one: libc::c_int = 1;
        let zero: libc::c_int = 0;
        let set = |level, name, v: &libc::c_int| {
            let r = libc::setsockopt(
                fd,
                level,
                name,
                v as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            assert!(
                r == 0,
                "setsockopt {level}/{name}: {}",
                std::io::Error::last_os_error()
            );
        };
        set(libc::SOL_SOCKET, libc::SO_REUSEADDR, &one);
        set(libc::SOL_IPV6, libc::IPV6_V6ONLY, &zero);
        set(libc::SOL_IP, libc::IP_TRANSPARENT, &one);
        set(libc::SOL_IPV6, libc::IPV6_TRANSPARENT, &one);
        let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
        sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        sa.sin6_port = port.to_be();
        let r = libc::bind(
            fd,
            &sa as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        );
        assert!(r == 0, "bind: {}", std::io::Error::last_os_error());
        assert!(
            libc::listen(fd, 128) == 0,
            "listen: {}",
            std::io::Error::last_os_error()
        );
        TcpListener::from_raw_fd(fd)
    }
}

fn connect(port: u16, udp: bool, args: &[String], timeout: Duration) {
    let addr: IpAddr = arg(args, "--addr")
        .and_then(|a| a.parse().ok())
        .expect("--addr IP");
    drop_to(args);
    let to = SocketAddr::new(addr, port);
    if udp {
        let bind = if addr.is_ipv6() {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        };
        let s = UdpSocket::bind(bind).expect("bind");
        s.set_read_timeout(Some(timeout)).ok();
        s.send_to(b"hello\n", to).expect("send");
        let mut buf = [0u8; 512];
        match s.recv_from(&mut buf) {
            Ok((n, from)) => println!(
                "{} from={}",
                String::from_utf8_lossy(&buf[..n]),
                canonical(from)
            ),
            Err(e) => {
                eprintln!("recv: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let mut c = match TcpStream::connect_timeout(&to, timeout) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("connect {to}: {e}");
            std::process::exit(1);
        }
    };
    c.set_read_timeout(Some(timeout)).ok();
    let _ = c.write_all(b"hello\n");
    let mut line = String::new();
    match BufReader::new(&c).read_line(&mut line) {
        Ok(n) if n > 0 => print!("{line}"),
        _ => {
            eprintln!("no answer from {to}");
            std::process::exit(1);
        }
    }
}
