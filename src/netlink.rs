//! Route netlink (NETLINK_ROUTE), synchronously: a socket that sends one
//! request at a time and reads every part of its answer, in the style of
//! netavark's `src/network/netlink.rs`. Messages are built and parsed by
//! `netlink-packet-route`; the socket is `netlink-sys`'s plain blocking one.
//!
//! A netlink socket talks to the network namespace it was created in, so the
//! pod-side helpers ([`link_names`], [`existing_links`]) open it on a
//! [`NetNs::run`] thread that has entered the pod netns; the calling thread
//! never changes namespace.

use crate::error::{code, CniError, Result};
use crate::netns::NetNs;
use netlink_packet_core::{
    NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE,
    NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_EXCL, NLM_F_MULTIPART, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkExtentMask, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, SocketAddr};
use std::fmt;
use std::io;
use std::net::IpAddr;

/// Receive buffer. The kernel sizes a dump's datagrams by the largest
/// buffer the socket has read with, capped at 32 KiB (unless one message is
/// larger), and never below NLMSG_GOODSIZE (8 KiB with 4 KiB pages). A
/// larger datagram grows the buffer (`recv` peeks at its length first).
const RECV_BUF: usize = 32 * 1024;

/// A dump the kernel flags as interrupted (the table changed while it was
/// read) is read again, this many times at most.
const DUMP_ATTEMPTS: usize = 3;

/// What can go wrong talking to the kernel.
#[derive(Debug)]
pub enum Error {
    /// A socket call failed (what, the error).
    Io(&'static str, io::Error),
    /// The kernel answered the request with NLMSG_ERROR.
    Kernel(io::Error),
    /// An answer that does not parse, or is cut short.
    Decode(String),
    /// The kernel flagged a dump inconsistent (NLM_F_DUMP_INTR): it changed
    /// while it was being read. Read it again.
    DumpInterrupted,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(what, e) => write!(f, "netlink {what}: {e}"),
            Error::Kernel(e) => write!(f, "netlink request refused: {e}"),
            Error::Decode(e) => write!(f, "netlink answer: {e}"),
            Error::DumpInterrupted => write!(f, "netlink dump interrupted by concurrent changes"),
        }
    }
}

impl std::error::Error for Error {}

/// A NETLINK_ROUTE socket connected to the kernel, bound to the network
/// namespace of the thread that opened it.
pub struct Socket {
    socket: netlink_sys::Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Socket {
    /// Open a socket in the calling thread's network namespace.
    pub fn open() -> std::result::Result<Socket, Error> {
        let mut socket =
            netlink_sys::Socket::new(NETLINK_ROUTE).map_err(|e| Error::Io("socket", e))?;
        let kernel = SocketAddr::new(0, 0);
        // Port 0: the kernel picks a free port id.
        socket.bind(&kernel).map_err(|e| Error::Io("bind", e))?;
        socket
            .connect(&kernel)
            .map_err(|e| Error::Io("connect", e))?;
        Ok(Socket {
            socket,
            seq: 0,
            buf: vec![0; RECV_BUF],
        })
    }

    /// Send `msg` with NLM_F_REQUEST | `flags` and read its whole answer:
    /// every part of a dump up to NLMSG_DONE, or up to the ACK when
    /// NLM_F_ACK is asked for, or the single reply otherwise.
    pub fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> std::result::Result<Vec<RouteNetlinkMessage>, Error> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut out = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut out);
        let sent = self
            .socket
            .send(&out, 0)
            .map_err(|e| Error::Io("send", e))?;
        if sent != out.len() {
            return Err(Error::Io(
                "send",
                io::Error::new(io::ErrorKind::WriteZero, "short send"),
            ));
        }
        let mut replies = Vec::new();
        let mut interrupted = false;
        loop {
            let n = self.recv()?;
            let mut datagram = &self.buf[..n];
            while !datagram.is_empty() {
                let part = parse::<RouteNetlinkMessage>(datagram)?;
                datagram = part.rest;
                let msg = part.msg;
                if msg.header.sequence_number != self.seq {
                    // The tail of an earlier request this socket gave up on.
                    continue;
                }
                interrupted |= msg.header.flags & NLM_F_DUMP_INTR != 0;
                match msg.payload {
                    NetlinkPayload::Done(_) => {
                        return finish(replies, interrupted);
                    }
                    NetlinkPayload::Error(e) => match e.code {
                        Some(_) => return Err(Error::Kernel(e.to_io())),
                        // An ACK (error code 0).
                        None => return finish(replies, interrupted),
                    },
                    NetlinkPayload::InnerMessage(m) => {
                        replies.push(m);
                        let multipart = msg.header.flags & NLM_F_MULTIPART != 0;
                        if !multipart && flags & (NLM_F_ACK | NLM_F_DUMP) == 0 {
                            return Ok(replies);
                        }
                    }
                    NetlinkPayload::Overrun(_) => {
                        return Err(Error::Decode("NLMSG_OVERRUN".into()));
                    }
                    // Noop, and whatever later versions add.
                    _ => {}
                }
            }
        }
    }

    /// Read one datagram into the buffer, growing it first if the datagram
    /// would not fit; its length.
    fn recv(&mut self) -> std::result::Result<usize, Error> {
        // MSG_PEEK | MSG_TRUNC: the next datagram's full length, left queued.
        let len = self.recv_flags(libc::MSG_PEEK | libc::MSG_TRUNC)?;
        if len > self.buf.len() {
            self.buf.resize(len, 0);
        }
        let n = self.recv_flags(0)?;
        if n != len {
            return Err(Error::Decode(format!(
                "datagram of {n} bytes where {len} were announced"
            )));
        }
        Ok(n)
    }

    fn recv_flags(&mut self, flags: libc::c_int) -> std::result::Result<usize, Error> {
        loop {
            match self.socket.recv(&mut &mut self.buf[..], flags) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Io("recv", e)),
            }
        }
    }

    /// Every link in this socket's netns (RTM_GETLINK dump, without stats).
    pub fn dump_links(&mut self) -> std::result::Result<Vec<LinkMessage>, Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut msg = LinkMessage::default();
            msg.attributes
                .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
            match self.request(RouteNetlinkMessage::GetLink(msg), NLM_F_DUMP) {
                Ok(replies) => {
                    return replies
                        .into_iter()
                        .map(|m| match m {
                            RouteNetlinkMessage::NewLink(l) => Ok(l),
                            other => Err(Error::Decode(format!(
                                "unexpected message type {} in a link dump",
                                netlink_packet_core::NetlinkSerializable::message_type(&other)
                            ))),
                        })
                        .collect();
                }
                Err(Error::DumpInterrupted) if attempt < DUMP_ATTEMPTS => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Socket {
    /// Every route of `family` in this socket's netns (RTM_GETROUTE dump).
    pub fn dump_routes(
        &mut self,
        family: AddressFamily,
    ) -> std::result::Result<Vec<RouteMessage>, Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut msg = RouteMessage::default();
            msg.header.address_family = family;
            match self.request(RouteNetlinkMessage::GetRoute(msg), NLM_F_DUMP) {
                Ok(replies) => {
                    return Ok(replies
                        .into_iter()
                        .filter_map(|m| match m {
                            RouteNetlinkMessage::NewRoute(r) => Some(r),
                            _ => None,
                        })
                        .collect())
                }
                Err(Error::DumpInterrupted) if attempt < DUMP_ATTEMPTS => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Replace the default route of `gw`'s family in the main table by one
    /// via `gw` on the link `oif` (what `ip route flush exact 0.0.0.0/0`
    /// then `ip route add default via GW dev IF` do).
    pub fn set_default_route(&mut self, oif: u32, gw: IpAddr) -> std::result::Result<(), Error> {
        let family = match gw {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        let table = |r: &RouteMessage| {
            r.attributes
                .iter()
                .find_map(|a| match a {
                    RouteAttribute::Table(t) => Some(*t),
                    _ => None,
                })
                .unwrap_or(r.header.table.into())
        };
        for r in self.dump_routes(family)? {
            if r.header.destination_prefix_length == 0
                && r.header.kind == RouteType::Unicast
                && table(&r) == u32::from(RouteHeader::RT_TABLE_MAIN)
            {
                self.request(RouteNetlinkMessage::DelRoute(r), NLM_F_ACK)?;
            }
        }
        let mut msg = RouteMessage::default();
        msg.header.address_family = family;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        msg.attributes.push(RouteAttribute::Oif(oif));
        self.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )?;
        Ok(())
    }
}

impl Socket {
    /// Every address in this socket's netns (RTM_GETADDR dump, both
    /// families).
    pub fn dump_addresses(&mut self) -> std::result::Result<Vec<AddressMessage>, Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let msg = AddressMessage::default();
            match self.request(RouteNetlinkMessage::GetAddress(msg), NLM_F_DUMP) {
                Ok(replies) => {
                    return Ok(replies
                        .into_iter()
                        .filter_map(|m| match m {
                            RouteNetlinkMessage::NewAddress(a) => Some(a),
                            _ => None,
                        })
                        .collect())
                }
                Err(Error::DumpInterrupted) if attempt < DUMP_ATTEMPTS => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// One interface of a netns, as `inspect` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Interface {
    pub name: String,
    pub up: bool,
    /// `address/prefix`, the kernel's order.
    pub addresses: Vec<String>,
}

/// The interfaces of `ns` with their state and addresses (one link dump,
/// one address dump). Errors are code 105 (NETNS).
pub fn interfaces(ns: &NetNs) -> Result<Vec<Interface>> {
    let found = ns.run(|| -> std::result::Result<Vec<Interface>, Error> {
        let mut sock = Socket::open()?;
        let links = sock.dump_links()?;
        let addrs = sock.dump_addresses()?;
        Ok(links
            .iter()
            .map(|l| Interface {
                name: link_name(l).unwrap_or("?").to_string(),
                up: l.header.flags.contains(LinkFlags::Up),
                addresses: addrs
                    .iter()
                    .filter(|a| a.header.index == l.header.index)
                    .filter_map(|a| {
                        let ip = a.attributes.iter().find_map(|x| match x {
                            AddressAttribute::Address(ip) => Some(*ip),
                            _ => None,
                        })?;
                        Some(format!("{ip}/{}", a.header.prefix_len))
                    })
                    .collect(),
            })
            .collect())
    })?;
    found.map_err(|e| {
        CniError::new(
            code::NETNS,
            format!("cannot list the interfaces in the pod netns: {e}"),
        )
    })
}

/// In netns `ns`, give each `(ifname, gateway)` the default route of the
/// gateway's family (`default-route` of the networks annotation). Ok(Err)
/// carries the kernel's refusal of one of them (the pod's request, code
/// 110 to the caller); Err is the netns itself failing (105).
pub fn set_default_routes(
    ns: &NetNs,
    routes: Vec<(String, IpAddr)>,
) -> Result<std::result::Result<(), String>> {
    let done = ns.run(
        move || -> std::result::Result<std::result::Result<(), String>, Error> {
            let mut sock = Socket::open()?;
            let links = sock.dump_links()?;
            for (ifname, gw) in routes {
                let Some(oif) = links
                    .iter()
                    .find(|l| link_name(l) == Some(ifname.as_str()))
                    .map(|l| l.header.index)
                else {
                    return Ok(Err(format!("default-route {gw}: no interface {ifname}")));
                };
                match sock.set_default_route(oif, gw) {
                    Ok(()) => {}
                    Err(Error::Kernel(e)) => {
                        return Ok(Err(format!("default-route {gw} via {ifname}: {e}")))
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(Ok(()))
        },
    )?;
    done.map_err(|e| CniError::new(code::NETNS, format!("default-route: {e}")))
}

fn finish(
    replies: Vec<RouteNetlinkMessage>,
    interrupted: bool,
) -> std::result::Result<Vec<RouteNetlinkMessage>, Error> {
    if interrupted {
        Err(Error::DumpInterrupted)
    } else {
        Ok(replies)
    }
}

/// One message of a datagram, and the rest of the datagram.
pub struct Parsed<'a, I> {
    pub msg: NetlinkMessage<I>,
    pub rest: &'a [u8],
}

/// Parse the first netlink message of `buf` (a datagram of any netlink
/// protocol whose messages are `I`); what follows it (aligned).
pub fn parse<I: NetlinkDeserializable>(buf: &[u8]) -> std::result::Result<Parsed<'_, I>, Error> {
    let msg = NetlinkMessage::<I>::deserialize(buf).map_err(|e| Error::Decode(e.to_string()))?;
    let len = msg.header.length as usize;
    if len < 16 || len > buf.len() {
        return Err(Error::Decode(format!(
            "message length {len} in a {}-byte datagram",
            buf.len()
        )));
    }
    // NLMSG_ALIGN: the next message starts on a 4-byte boundary.
    let next = ((len + 3) & !3).min(buf.len());
    Ok(Parsed {
        msg,
        rest: &buf[next..],
    })
}

/// The interface name of a link message, if it carries one.
pub fn link_name(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

/// The names of `wanted` that are among `present`, in `wanted`'s order.
pub fn present_among(wanted: &[String], present: &[String]) -> Vec<String> {
    wanted
        .iter()
        .filter(|w| present.iter().any(|p| p == *w))
        .cloned()
        .collect()
}

/// All interface names in network namespace `ns` (lo included), in the
/// kernel's (ifindex) order. One RTM_GETLINK dump on a socket opened by a
/// thread inside `ns`. Errors are code 105 (NETNS).
pub fn link_names(ns: &NetNs) -> Result<Vec<String>> {
    let names = ns.run(|| -> std::result::Result<Vec<String>, Error> {
        let mut sock = Socket::open()?;
        let links = sock.dump_links()?;
        Ok(links
            .iter()
            .filter_map(|l| link_name(l).map(String::from))
            .collect())
    })?;
    names.map_err(|e| {
        CniError::new(
            code::NETNS,
            format!("cannot list the interfaces in the pod netns: {e}"),
        )
    })
}

/// The names of `wanted` that already exist in `ns` (one dump), in
/// `wanted`'s order. Errors are code 105 (NETNS).
pub fn existing_links(ns: &NetNs, wanted: &[String]) -> Result<Vec<String>> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    Ok(present_among(wanted, &link_names(ns)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{DoneMessage, ErrorMessage, NLMSG_DONE};
    use std::num::NonZeroI32;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    /// A kernel-style message: header flags and seq set, finalized, bytes.
    fn bytes(payload: NetlinkPayload<RouteNetlinkMessage>, flags: u16, seq: u32) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut m = NetlinkMessage::new(header, payload);
        m.finalize();
        let mut b = vec![0u8; m.buffer_len()];
        m.serialize(&mut b);
        b
    }

    fn link(name: &str, index: u32) -> LinkMessage {
        let mut l = LinkMessage::default();
        l.header.index = index;
        l.attributes.push(LinkAttribute::IfName(name.into()));
        l
    }

    #[test]
    fn present_among_keeps_wanted_order_and_exact_names() {
        let present = s(&["lo", "eth0", "net1", "net10"]);
        assert_eq!(
            present_among(&s(&["net2", "net1", "eth0", "net"]), &present),
            s(&["net1", "eth0"])
        );
        assert!(present_among(&[], &present).is_empty());
        assert!(present_among(&s(&["eth0"]), &[]).is_empty());
    }

    #[test]
    fn link_name_reads_ifla_ifname() {
        assert_eq!(link_name(&link("net1", 3)), Some("net1"));
        assert_eq!(link_name(&LinkMessage::default()), None);
    }

    #[test]
    fn a_datagram_of_several_messages_parses_in_order() {
        let mut dgram = bytes(
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link("lo", 1))),
            NLM_F_MULTIPART,
            7,
        );
        dgram.extend(bytes(
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link("eth0", 2))),
            NLM_F_MULTIPART,
            7,
        ));
        dgram.extend(bytes(
            NetlinkPayload::Done(DoneMessage::default()),
            NLM_F_MULTIPART,
            7,
        ));
        let mut rest = &dgram[..];
        let mut seen = vec![];
        while !rest.is_empty() {
            let p = parse::<RouteNetlinkMessage>(rest).unwrap();
            rest = p.rest;
            seen.push(match p.msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
                    link_name(&l).unwrap().to_string()
                }
                NetlinkPayload::Done(_) => "DONE".into(),
                other => panic!("{other:?}"),
            });
            assert_eq!(p.msg.header.sequence_number, 7);
        }
        assert_eq!(seen, ["lo", "eth0", "DONE"]);
        assert_eq!(
            NetlinkPayload::<RouteNetlinkMessage>::Done(DoneMessage::default()).message_type(),
            NLMSG_DONE
        );
    }

    #[test]
    fn nlmsg_error_carries_the_errno_and_zero_is_an_ack() {
        let mut e = ErrorMessage::default();
        e.code = NonZeroI32::new(-libc::EPERM);
        let b = bytes(NetlinkPayload::Error(e), 0, 1);
        match parse::<RouteNetlinkMessage>(&b).unwrap().msg.payload {
            NetlinkPayload::Error(e) => {
                assert_eq!(e.to_io().raw_os_error(), Some(libc::EPERM));
                let shown = Error::Kernel(e.to_io()).to_string();
                assert!(shown.contains("refused"), "{shown}");
            }
            other => panic!("{other:?}"),
        }
        let ack = bytes(NetlinkPayload::Error(ErrorMessage::default()), 0, 1);
        match parse::<RouteNetlinkMessage>(&ack).unwrap().msg.payload {
            NetlinkPayload::Error(e) => assert!(e.code.is_none()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn truncated_or_garbage_answers_are_decode_errors() {
        let b = bytes(
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link("eth0", 2))),
            0,
            1,
        );
        assert!(matches!(
            parse::<RouteNetlinkMessage>(&b[..b.len() - 4]),
            Err(Error::Decode(_))
        ));
        assert!(matches!(
            parse::<RouteNetlinkMessage>(&[1, 2, 3]),
            Err(Error::Decode(_))
        ));
    }

    #[test]
    fn finish_reports_an_interrupted_dump() {
        assert!(matches!(finish(vec![], true), Err(Error::DumpInterrupted)));
        assert!(finish(vec![], false).unwrap().is_empty());
    }

    /// The calling thread's own netns: the socket works without NetNs.
    #[test]
    fn dumps_the_current_netns() {
        let mut sock = Socket::open().unwrap();
        let links = sock.dump_links().unwrap();
        assert!(
            links.iter().any(|l| link_name(l) == Some("lo")),
            "{links:?}"
        );
        // The socket can be used again: sequence numbers move on. A buffer
        // smaller than a datagram grows to fit it.
        sock.buf = vec![0; 64];
        let again = sock.dump_links().unwrap();
        assert_eq!(links, again);
        assert!(sock.buf.len() > 64);
    }
}
