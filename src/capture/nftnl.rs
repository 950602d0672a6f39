//! nftables over netlink: the `inet multimesh` table is programmed and
//! removed by multimesh itself, as one nf_tables batch (one transaction)
//! sent on a NETLINK_NETFILTER socket opened inside the pod netns — no
//! `nft` process. The expressions are the ones `nft` generates for the text
//! `nft::render_table` prints (see `nft --debug=netlink`), so `nft list`
//! shows exactly that text and CHECK keeps comparing text.
//!
//! Why: an `nft` exec costs ~4 ms of CPU per ADD and per DEL, and a process
//! that closes an nf_tables socket while a deleted table awaits its RCU
//! grace period waits for it holding the netns's nf_tables commit mutex —
//! the mutex a veth being unregistered in that netns (the delegate's DEL)
//! needs. Keeping the socket open until multimesh exits (after the
//! delegates) lets the kernel finish in the background.

use super::plan::{Chain, Family, Match, Plan, Rule, Target};
use super::Cidr;
use crate::error::{code, CniError, Result};
use crate::netns::NetNs;
use netlink_sys::{Socket, SocketAddr};
use std::sync::Mutex;

// linux/netlink.h, linux/netfilter/nfnetlink.h, linux/netfilter/nf_tables.h
const NETLINK_NETFILTER: i32 = 12;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NF_INET_PRE_ROUTING: u32 = 0;
const NF_INET_LOCAL_OUT: u32 = 3;
const NF_ACCEPT: u32 = 1;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFT_META_IIFNAME: u32 = 6;
const NFT_META_OIFNAME: u32 = 7;
const NFT_META_SKUID: u32 = 10;
const NFT_META_SKGID: u32 = 11;
const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFT_JUMP: i32 = -3;
const NFT_RETURN: i32 = -5;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_REDIR_REG_PROTO_MIN: u16 = 1;
const NFTA_REDIR_FLAGS: u16 = 3;
const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 2;
const IPPROTO_TCP: u8 = 6;
const IFNAMSIZ: usize = 16;

/// Sockets whose close is left to process exit (see the module doc).
static LINGER: Mutex<Vec<Socket>> = Mutex::new(Vec::new());

/// Netlink attribute writer over a byte buffer.
struct Buf(Vec<u8>);

impl Buf {
    fn put(&mut self, ty: u16, data: &[u8]) {
        let len = 4 + data.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(data);
        self.pad();
    }
    fn pad(&mut self) {
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
    }
    fn strz(&mut self, ty: u16, s: &str) {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.put(ty, &v);
    }
    fn be32(&mut self, ty: u16, v: u32) {
        self.put(ty, &v.to_be_bytes());
    }
    fn nest(&mut self, ty: u16, f: impl FnOnce(&mut Buf)) {
        let at = self.0.len();
        self.0.extend_from_slice(&[0, 0]);
        self.0.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        f(self);
        let len = (self.0.len() - at) as u16;
        self.0[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }
}

/// One nf_tables batch: BATCH_BEGIN, the messages, BATCH_END.
struct Batch {
    buf: Buf,
    seq: u32,
    /// What each acknowledged message does, by sequence number - 1.
    what: Vec<String>,
}

impl Batch {
    fn new() -> Batch {
        let mut b = Batch {
            buf: Buf(Vec::with_capacity(8192)),
            seq: 0,
            what: Vec::new(),
        };
        b.header(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, |_| {});
        b
    }

    fn header(&mut self, ty: u16, flags: u16, family: u8, f: impl FnOnce(&mut Buf)) {
        let at = self.buf.0.len();
        let seq = self.seq;
        self.seq += 1;
        let res_id: u16 = if family == 0 { NFNL_SUBSYS_NFTABLES } else { 0 };
        let v = &mut self.buf.0;
        v.extend_from_slice(&0u32.to_ne_bytes()); // length, set below
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(&flags.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        v.push(family); // nfgenmsg
        v.push(0); // NFNETLINK_V0
        v.extend_from_slice(&res_id.to_be_bytes());
        f(&mut self.buf);
        let len = (self.buf.0.len() - at) as u32;
        self.buf.0[at..at + 4].copy_from_slice(&len.to_ne_bytes());
    }

    /// An nf_tables message on the inet family, acknowledged.
    fn msg(&mut self, ty: u16, flags: u16, what: String, f: impl FnOnce(&mut Buf)) {
        self.msg_in(NFPROTO_INET, ty, flags, what, f)
    }

    /// An nf_tables message on `family`, acknowledged.
    fn msg_in(&mut self, family: u8, ty: u16, flags: u16, what: String, f: impl FnOnce(&mut Buf)) {
        self.what.push(what);
        self.header(
            (NFNL_SUBSYS_NFTABLES << 8) | ty,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            family,
            f,
        );
    }

    fn finish(mut self) -> (Vec<u8>, Vec<String>) {
        self.header(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, |_| {});
        (self.buf.0, self.what)
    }
}

fn chain_name(c: Chain) -> &'static str {
    super::nft::chain_name(c)
}

// ------------------------------------------------------------ expressions

fn expr(b: &mut Buf, name: &str, f: impl FnOnce(&mut Buf)) {
    b.nest(NFTA_LIST_ELEM, |b| {
        b.strz(NFTA_EXPR_NAME, name);
        b.nest(NFTA_EXPR_DATA, f);
    });
}

fn meta(b: &mut Buf, key: u32) {
    expr(b, "meta", |b| {
        b.be32(NFTA_META_DREG, NFT_REG_1);
        b.be32(NFTA_META_KEY, key);
    });
}

fn cmp(b: &mut Buf, op: u32, data: &[u8]) {
    expr(b, "cmp", |b| {
        b.be32(NFTA_CMP_SREG, NFT_REG_1);
        b.be32(NFTA_CMP_OP, op);
        b.nest(NFTA_CMP_DATA, |b| b.put(NFTA_DATA_VALUE, data));
    });
}

fn payload(b: &mut Buf, base: u32, offset: u32, len: u32) {
    expr(b, "payload", |b| {
        b.be32(NFTA_PAYLOAD_DREG, NFT_REG_1);
        b.be32(NFTA_PAYLOAD_BASE, base);
        b.be32(NFTA_PAYLOAD_OFFSET, offset);
        b.be32(NFTA_PAYLOAD_LEN, len);
    });
}

fn verdict(b: &mut Buf, code: i32, chain: Option<&str>) {
    expr(b, "immediate", |b| {
        b.be32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
        b.nest(NFTA_IMMEDIATE_DATA, |b| {
            b.nest(NFTA_DATA_VERDICT, |b| {
                b.be32(NFTA_VERDICT_CODE, code as u32);
                if let Some(c) = chain {
                    b.strz(NFTA_VERDICT_CHAIN, c);
                }
            })
        });
    });
}

fn redirect(b: &mut Buf, port: u16) {
    expr(b, "immediate", |b| {
        b.be32(NFTA_IMMEDIATE_DREG, NFT_REG_1);
        b.nest(NFTA_IMMEDIATE_DATA, |b| {
            b.put(NFTA_DATA_VALUE, &port.to_be_bytes())
        });
    });
    expr(b, "redir", |b| {
        b.be32(NFTA_REDIR_REG_PROTO_MIN, NFT_REG_1);
        b.be32(NFTA_REDIR_FLAGS, NF_NAT_RANGE_PROTO_SPECIFIED);
    });
}

fn l4proto_tcp(b: &mut Buf) {
    meta(b, NFT_META_L4PROTO);
    cmp(b, NFT_CMP_EQ, &[IPPROTO_TCP]);
}

fn ifname(b: &mut Buf, key: u32, name: &str) {
    meta(b, key);
    let mut v = [0u8; IFNAMSIZ];
    let n = name.len().min(IFNAMSIZ - 1);
    v[..n].copy_from_slice(&name.as_bytes()[..n]);
    cmp(b, NFT_CMP_EQ, &v);
}

/// `ip|ip6 saddr|daddr [!=] CIDR`, with the `meta nfproto` dependency nft
/// adds in an inet table (once per rule and family).
fn address(b: &mut Buf, c: &Cidr, dst: bool, op: u32, proto: &mut Option<Family>) {
    let fam = c.family();
    if *proto != Some(fam) {
        meta(b, NFT_META_NFPROTO);
        cmp(
            b,
            NFT_CMP_EQ,
            &[if fam == Family::V4 {
                NFPROTO_IPV4
            } else {
                NFPROTO_IPV6
            }],
        );
        *proto = Some(fam);
    }
    let (bytes, off): (Vec<u8>, u32) = match c.addr {
        std::net::IpAddr::V4(a) => (a.octets().to_vec(), if dst { 16 } else { 12 }),
        std::net::IpAddr::V6(a) => (a.octets().to_vec(), if dst { 24 } else { 8 }),
    };
    payload(b, NFT_PAYLOAD_NETWORK_HEADER, off, bytes.len() as u32);
    let bits = usize::from(c.len).min(bytes.len() * 8);
    if bits == bytes.len() * 8 {
        cmp(b, op, &bytes);
        return;
    }
    let mut mask = vec![0u8; bytes.len()];
    for (i, m) in mask.iter_mut().enumerate() {
        let have = bits.saturating_sub(i * 8).min(8);
        *m = if have == 0 { 0 } else { 0xffu8 << (8 - have) };
    }
    let net: Vec<u8> = bytes.iter().zip(&mask).map(|(a, m)| a & m).collect();
    let len = bytes.len() as u32;
    expr(b, "bitwise", |b| {
        b.be32(NFTA_BITWISE_SREG, NFT_REG_1);
        b.be32(NFTA_BITWISE_DREG, NFT_REG_1);
        b.be32(NFTA_BITWISE_LEN, len);
        b.nest(NFTA_BITWISE_MASK, |b| b.put(NFTA_DATA_VALUE, &mask));
        b.nest(NFTA_BITWISE_XOR, |b| {
            b.put(NFTA_DATA_VALUE, &vec![0u8; mask.len()])
        });
    });
    cmp(b, op, &net);
}

/// The expressions of one rule, in the order `nft::rule_text` writes its
/// parts (so nft would build the same rule from that text).
fn rule_exprs(b: &mut Buf, r: &Rule) {
    let mut proto: Option<Family> = None;
    for m in &r.matches {
        if let Match::Src(c) = m {
            address(b, c, false, NFT_CMP_EQ, &mut proto);
        }
    }
    for m in &r.matches {
        match m {
            Match::Dst(c) => address(b, c, true, NFT_CMP_EQ, &mut proto),
            Match::NotDst(c) => address(b, c, true, NFT_CMP_NEQ, &mut proto),
            _ => {}
        }
    }
    for m in &r.matches {
        if let Match::InIface(i) = m {
            ifname(b, NFT_META_IIFNAME, i);
        }
    }
    for m in &r.matches {
        if let Match::OutIface(i) = m {
            ifname(b, NFT_META_OIFNAME, i);
        }
    }
    let has_dport = r.matches.iter().any(|m| matches!(m, Match::Dport(_)));
    let tcp = r.matches.iter().any(|m| matches!(m, Match::Tcp))
        || matches!(r.target, Target::Redirect(_));
    let mut l4 = false;
    if tcp && !has_dport {
        l4proto_tcp(b);
        l4 = true;
    }
    for m in &r.matches {
        let (key, op, id) = match m {
            Match::Uid(u) => (NFT_META_SKUID, NFT_CMP_EQ, *u),
            Match::NotUid(u) => (NFT_META_SKUID, NFT_CMP_NEQ, *u),
            Match::Gid(g) => (NFT_META_SKGID, NFT_CMP_EQ, *g),
            Match::NotGid(g) => (NFT_META_SKGID, NFT_CMP_NEQ, *g),
            _ => continue,
        };
        meta(b, key);
        cmp(b, op, &id.to_ne_bytes());
    }
    for m in &r.matches {
        if let Match::Dport(p) = m {
            if !l4 {
                l4proto_tcp(b);
                l4 = true;
            }
            payload(b, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
            cmp(b, NFT_CMP_EQ, &p.to_be_bytes());
        }
    }
    match r.target {
        Target::Jump(c) => verdict(b, NFT_JUMP, Some(chain_name(c))),
        Target::Return => verdict(b, NFT_RETURN, None),
        Target::Redirect(p) => redirect(b, p),
        // Refused by `apply` (see `netlink_ready`).
        _ => {}
    }
}

fn table_msg(b: &mut Batch, ty: u16, flags: u16, what: &str) {
    b.msg(
        ty,
        flags,
        format!("{what} table inet {}", super::nft::TABLE),
        |b| b.strz(NFTA_TABLE_NAME, super::nft::TABLE),
    );
}

/// The batch `nft::render_apply` describes: create the table if needed,
/// flush its rules, (re)declare the chains, append the rules.
pub fn apply_batch(plan: &Plan) -> (Vec<u8>, Vec<String>) {
    let table = super::nft::TABLE;
    let mut b = Batch::new();
    table_msg(&mut b, NFT_MSG_NEWTABLE, NLM_F_CREATE, "add");
    b.msg(
        NFT_MSG_DELRULE,
        0,
        format!("flush table inet {table}"),
        |b| b.strz(NFTA_RULE_TABLE, table),
    );
    for c in plan.chains() {
        b.msg(
            NFT_MSG_NEWCHAIN,
            NLM_F_CREATE,
            format!("add chain {}", chain_name(c)),
            |b| {
                b.strz(NFTA_CHAIN_TABLE, table);
                b.strz(NFTA_CHAIN_NAME, chain_name(c));
                let hook = match c {
                    Chain::Prerouting => Some(NF_INET_PRE_ROUTING),
                    Chain::Output => Some(NF_INET_LOCAL_OUT),
                    _ => None,
                };
                if let Some(h) = hook {
                    b.nest(NFTA_CHAIN_HOOK, |b| {
                        b.be32(NFTA_HOOK_HOOKNUM, h);
                        b.be32(NFTA_HOOK_PRIORITY, (-100i32) as u32);
                    });
                    b.be32(NFTA_CHAIN_POLICY, NF_ACCEPT);
                    b.strz(NFTA_CHAIN_TYPE, "nat");
                }
            },
        );
    }
    let rules = super::nft::merged_rules(plan);
    let mut add_rule = |c: Chain, text: String, exprs: &dyn Fn(&mut Buf)| {
        b.msg(
            NFT_MSG_NEWRULE,
            NLM_F_CREATE | NLM_F_APPEND,
            format!("add rule {}: {text}", chain_name(c)),
            |b| {
                b.strz(NFTA_RULE_TABLE, table);
                b.strz(NFTA_RULE_CHAIN, chain_name(c));
                b.nest(NFTA_RULE_EXPRESSIONS, exprs);
            },
        )
    };
    for c in plan.chains() {
        if matches!(c, Chain::Prerouting | Chain::Output) && !plan.ipv6 {
            // The table is single-stack.
            add_rule(c, "meta nfproto ipv6 return".into(), &|b| {
                meta(b, NFT_META_NFPROTO);
                cmp(b, NFT_CMP_EQ, &[NFPROTO_IPV6]);
                verdict(b, NFT_RETURN, None);
            });
        }
        for r in rules.iter().filter(|r| r.chain == c) {
            add_rule(c, super::nft::rule_text(r), &|b| rule_exprs(b, r));
        }
    }
    b.finish()
}

/// Delete the table, also when it is not there (it is created first in
/// the same transaction).
pub fn remove_batch() -> (Vec<u8>, Vec<String>) {
    let mut b = Batch::new();
    table_msg(&mut b, NFT_MSG_NEWTABLE, NLM_F_CREATE, "add");
    table_msg(&mut b, NFT_MSG_DELTABLE, 0, "delete");
    b.finish()
}

// ------------------------------------------------------------------ I/O

fn err(msg: String) -> CniError {
    CniError::new(code::CAPTURE_APPLY, msg)
}

/// A NETLINK_NETFILTER socket (netlink-sys) created inside `ns` (on a
/// short-lived thread that entered it; the socket stays bound to that
/// netns).
fn socket_in(ns: &NetNs) -> Result<Socket> {
    ns.run(|| {
        let sock = Socket::new(NETLINK_NETFILTER as isize)?;
        sockopts(&sock)?;
        Ok::<Socket, std::io::Error>(sock)
    })?
    .map_err(|e| err(format!("nftables: netlink socket: {e}")))
}

/// Send one batch and read its acknowledgements; the first error names
/// the message that failed. The transaction is all or nothing.
fn transact(ns: &NetNs, batch: (Vec<u8>, Vec<String>)) -> Result<()> {
    let sock = socket_in(ns)?;
    let r = send_batch(&sock, batch);
    linger(sock);
    r
}

/// Closed at exit, not now: see the module doc.
fn linger(sock: Socket) {
    if let Ok(mut l) = LINGER.lock() {
        l.push(sock);
    }
}

/// Small acks (no echo of our messages) and a bounded wait for replies.
fn sockopts(sock: &Socket) -> std::io::Result<()> {
    use nix::sys::{socket, time::TimeVal};
    sock.set_cap_ack(true)?;
    let tv = TimeVal::new(super::TOOL_TIMEOUT.as_secs() as i64, 0);
    socket::setsockopt(sock, socket::sockopt::ReceiveTimeout, &tv)?;
    Ok(())
}

/// Send `buf` to the kernel.
fn send(sock: &Socket, buf: &[u8]) -> Result<()> {
    match sock.send_to(buf, &SocketAddr::new(0, 0), 0) {
        Ok(n) if n == buf.len() => Ok(()),
        Ok(n) => Err(err(format!(
            "nftables: netlink send: {n} of {} bytes sent",
            buf.len()
        ))),
        Err(e) => Err(err(format!("nftables: netlink send: {e}"))),
    }
}

/// Receive one datagram of replies.
fn recv(sock: &Socket, rbuf: &mut [u8]) -> Result<usize> {
    loop {
        match sock.recv(&mut &mut rbuf[..], 0) {
            Ok(n) => return Ok(n.min(rbuf.len())),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(err(format!("nftables: netlink receive: {e}"))),
        }
    }
}

/// Send one batch on `sock` and read its acknowledgements.
fn send_batch(sock: &Socket, batch: (Vec<u8>, Vec<String>)) -> Result<()> {
    let (buf, what) = batch;
    send(sock, &buf)?;
    // Acks are queued while the kernel processes the batch, i.e. before
    // sendto returns; every message asked for one (seq 1..=len).
    let mut acked = 0usize;
    let mut failure: Option<String> = None;
    let mut rbuf = vec![0u8; 65536];
    while acked < what.len() && failure.is_none() {
        let r = recv(sock, &mut rbuf)?;
        let mut data = &rbuf[..r];
        while data.len() >= 16 {
            let len = u32::from_ne_bytes(data[0..4].try_into().unwrap_or_default()) as usize;
            let ty = u16::from_ne_bytes(data[4..6].try_into().unwrap_or_default());
            let seq = u32::from_ne_bytes(data[8..12].try_into().unwrap_or_default());
            if len < 16 || len > data.len() {
                break;
            }
            if ty == NLMSG_ERROR && len >= 20 {
                let e = i32::from_ne_bytes(data[16..20].try_into().unwrap_or_default());
                if e == 0 {
                    acked += 1;
                } else if failure.is_none() {
                    let step = (seq as usize)
                        .checked_sub(1)
                        .and_then(|i| what.get(i))
                        .map_or("the batch", String::as_str);
                    failure = Some(format!(
                        "nftables: {step}: {}",
                        std::io::Error::from_raw_os_error(-e)
                    ));
                }
            }
            let adv = (len + 3) & !3;
            data = &data[adv.min(data.len())..];
        }
    }
    match failure {
        Some(f) => Err(err(f)),
        None => Ok(()),
    }
}

// ------------------------------------------- iptables-nft, over netlink

const NLMSG_DONE: u16 = 3;
const NLM_F_DUMP: u16 = 0x300;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFTA_RULE_HANDLE: u16 = 3;
const NFT_GOTO: i32 = -4;
const XT_TABLE: &str = "nat";

/// The attributes of a list, as (type without flags, payload).
fn attrs(mut d: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while d.len() >= 4 {
        let len = u16::from_ne_bytes([d[0], d[1]]) as usize;
        let ty = u16::from_ne_bytes([d[2], d[3]]) & 0x3fff;
        if len < 4 || len > d.len() {
            break;
        }
        out.push((ty, &d[4..len]));
        d = &d[((len + 3) & !3).min(d.len())..];
    }
    out
}

fn attr(d: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(d).into_iter().find(|(t, _)| *t == ty).map(|(_, v)| v)
}

fn attr_str(d: &[u8], ty: u16) -> Option<String> {
    let v = attr(d, ty)?;
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    Some(String::from_utf8_lossy(&v[..end]).into_owned())
}

/// The chain a rule jumps or goes to, if any.
fn rule_jump(rule: &[u8]) -> Option<String> {
    let exprs = attr(rule, NFTA_RULE_EXPRESSIONS)?;
    for (t, e) in attrs(exprs) {
        if t != NFTA_LIST_ELEM || attr_str(e, NFTA_EXPR_NAME).as_deref() != Some("immediate") {
            continue;
        }
        let v = attr(e, NFTA_EXPR_DATA)
            .and_then(|d| attr(d, NFTA_IMMEDIATE_DATA))
            .and_then(|d| attr(d, NFTA_DATA_VERDICT));
        let Some(v) = v else { continue };
        let code = attr(v, NFTA_VERDICT_CODE)
            .and_then(|c| c.try_into().ok())
            .map(|c: [u8; 4]| i32::from_be_bytes(c));
        if matches!(code, Some(NFT_JUMP) | Some(NFT_GOTO)) {
            return attr_str(v, NFTA_VERDICT_CHAIN);
        }
    }
    None
}

/// Dump chains or rules of `family`; the attribute lists of the replies.
fn dump(sock: &Socket, ty: u16, family: u8, table: Option<&str>) -> Result<Vec<Vec<u8>>> {
    let mut b = Batch {
        buf: Buf(Vec::new()),
        seq: 1,
        what: Vec::new(),
    };
    b.header(
        (NFNL_SUBSYS_NFTABLES << 8) | ty,
        NLM_F_REQUEST | NLM_F_DUMP,
        family,
        |b| {
            if let Some(t) = table {
                b.strz(NFTA_RULE_TABLE, t);
            }
        },
    );
    send(sock, &b.buf.0)?;
    let mut out = Vec::new();
    let mut rbuf = vec![0u8; 65536];
    loop {
        let r = recv(sock, &mut rbuf)?;
        let mut data = &rbuf[..r];
        while data.len() >= 16 {
            let len = u32::from_ne_bytes(data[0..4].try_into().unwrap_or_default()) as usize;
            let mty = u16::from_ne_bytes(data[4..6].try_into().unwrap_or_default());
            if len < 16 || len > data.len() {
                return Err(err("nftables: malformed netlink reply".into()));
            }
            match mty {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let e = data
                        .get(16..20)
                        .and_then(|x| x.try_into().ok())
                        .map_or(-libc::EIO, i32::from_ne_bytes);
                    if e == -libc::ENOENT {
                        return Ok(out); // no such table: nothing of ours
                    }
                    return Err(err(format!(
                        "nftables: list: {}",
                        std::io::Error::from_raw_os_error(-e)
                    )));
                }
                _ if len >= 20 => out.push(data[20..len].to_vec()),
                _ => {}
            }
            data = &data[((len + 3) & !3).min(data.len())..];
        }
    }
}

/// iptables-nft keeps its tables as nf_tables tables (`ip nat`, `ip6 nat`),
/// so multimesh's chains there can be removed over netlink too, with the
/// same effect as the `-D`/`-F`/`-X` restore and without the
/// `iptables-nft-restore` process (whose exit, right after a deletion,
/// holds the netns's nf_tables mutex for a grace period; see the module
/// doc): list the table's chains and rules, then one batch deletes the
/// jumps to ours (by handle), flushes ours and deletes them. Whatever of
/// ours is there is removed; nothing else is touched.
pub fn remove_xt(ns: &NetNs, prefix: &str, families: &[Family]) -> Result<()> {
    let sock = socket_in(ns)?;
    let r = families.iter().try_for_each(|f| {
        let family = if *f == Family::V6 {
            NFPROTO_IPV6
        } else {
            NFPROTO_IPV4
        };
        remove_xt_on(&sock, prefix, family)
    });
    linger(sock);
    r
}

fn remove_xt_on(sock: &Socket, prefix: &str, family: u8) -> Result<()> {
    let chains: Vec<String> = dump(sock, NFT_MSG_GETCHAIN, family, None)?
        .iter()
        .filter(|c| attr_str(c, NFTA_CHAIN_TABLE).as_deref() == Some(XT_TABLE))
        .filter_map(|c| attr_str(c, NFTA_CHAIN_NAME))
        .filter(|n| n.starts_with(prefix))
        .collect();
    let mut jumps: Vec<(String, [u8; 8])> = Vec::new();
    for r in dump(sock, NFT_MSG_GETRULE, family, Some(XT_TABLE))? {
        let Some(chain) = attr_str(&r, NFTA_RULE_CHAIN) else {
            continue;
        };
        if chain.starts_with(prefix) || !rule_jump(&r).is_some_and(|t| t.starts_with(prefix)) {
            continue;
        }
        if let Some(h) = attr(&r, NFTA_RULE_HANDLE).and_then(|h| h.try_into().ok()) {
            jumps.push((chain, h));
        }
    }
    if chains.is_empty() && jumps.is_empty() {
        return Ok(());
    }
    let mut b = Batch::new();
    // (message, what it does, chain, rule handle). The table attribute is
    // number 1 in rule and chain messages alike; the chain's differs.
    let mut steps: Vec<(u16, String, &str, Option<&[u8; 8]>)> = Vec::new();
    for (c, h) in &jumps {
        steps.push((
            NFT_MSG_DELRULE,
            format!("delete a jump from {c}"),
            c,
            Some(h),
        ));
    }
    for c in &chains {
        steps.push((NFT_MSG_DELRULE, format!("flush chain {c}"), c, None));
    }
    for c in &chains {
        steps.push((NFT_MSG_DELCHAIN, format!("delete chain {c}"), c, None));
    }
    for (ty, what, chain, handle) in steps {
        b.msg_in(family, ty, 0, what, |b| {
            b.strz(NFTA_RULE_TABLE, XT_TABLE);
            b.strz(
                if ty == NFT_MSG_DELCHAIN {
                    NFTA_CHAIN_NAME
                } else {
                    NFTA_RULE_CHAIN
                },
                chain,
            );
            if let Some(h) = handle {
                b.put(NFTA_RULE_HANDLE, h);
            }
        });
    }
    send_batch(sock, b.finish())
}

/// The options whose expressions this encoder has (REDIRECT capture).
fn netlink_ready(plan: &Plan) -> Result<()> {
    if plan.chains().len() > 6 {
        return Err(err(
            "nftables: interceptionMode TPROXY, dnsCapture and dropInvalid are not \
             programmed over netlink yet"
                .into(),
        ));
    }
    Ok(())
}

pub fn apply(plan: &Plan, ns: &NetNs) -> Result<()> {
    netlink_ready(plan)?;
    transact(ns, apply_batch(plan))
}

pub fn remove(ns: &NetNs) -> Result<()> {
    transact(ns, remove_batch())
}

/// The nftables backend: table `inet multimesh`, applied and removed in one
/// nf_tables netlink transaction ([`super::nftnl`]); read back with `nft`.
pub struct Nftables;

impl super::Driver for Nftables {
    fn render(&self, plan: &Plan) -> String {
        super::nft::render_table(plan)
    }

    /// One transaction: all or nothing.
    fn apply(&self, plan: &Plan, ns: &NetNs) -> std::result::Result<(), super::ApplyError> {
        apply(plan, ns).map_err(|error| super::ApplyError { error, clean: true })
    }

    /// The `inet` table is replaced in one transaction; a failed one leaves
    /// the single-stack table, so not clean.
    fn add_ipv6(&self, plan: &Plan, ns: &NetNs) -> std::result::Result<(), super::ApplyError> {
        apply(plan, ns).map_err(|error| super::ApplyError {
            error,
            clean: false,
        })
    }

    fn remove(&self, _plan: &Plan, ns: &NetNs) -> Result<()> {
        remove(ns)
    }

    fn check(&self, plan: &Plan, ns: &NetNs) -> Result<()> {
        super::nft::check(plan, ns)
    }

    fn describe(&self, ns: &NetNs) -> Result<Option<String>> {
        Ok(super::nft::list(ns)?
            .map(|t| format!("backend: nftables (table inet {})\n{t}", super::nft::TABLE)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{CaptureConfig, Profile};

    /// Walk a batch: (type, flags, seq, payload) per message.
    fn messages(buf: &[u8]) -> Vec<(u16, u16, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut d = buf;
        while !d.is_empty() {
            let len = u32::from_ne_bytes(d[0..4].try_into().unwrap()) as usize;
            assert!(
                len >= 20 && len <= d.len() && len.is_multiple_of(4),
                "bad length {len}"
            );
            let ty = u16::from_ne_bytes(d[4..6].try_into().unwrap());
            let flags = u16::from_ne_bytes(d[6..8].try_into().unwrap());
            let seq = u32::from_ne_bytes(d[8..12].try_into().unwrap());
            out.push((ty, flags, seq, d[20..len].to_vec()));
            d = &d[len..];
        }
        out
    }

    /// Every attribute list nests exactly to its end.
    fn check_attrs(mut d: &[u8]) {
        while !d.is_empty() {
            assert!(d.len() >= 4);
            let len = u16::from_ne_bytes(d[0..2].try_into().unwrap()) as usize;
            let ty = u16::from_ne_bytes(d[2..4].try_into().unwrap());
            assert!(
                len >= 4 && len <= d.len(),
                "attr length {len} of {}",
                d.len()
            );
            if ty & NLA_F_NESTED != 0 {
                check_attrs(&d[4..len]);
            }
            d = &d[((len + 3) & !3).min(d.len())..];
        }
    }

    #[test]
    fn batches_are_well_formed_and_one_transaction() {
        for profile in [Profile::Istio, Profile::Linkerd] {
            for ipv6 in [false, true] {
                let plan = Plan::new(&CaptureConfig::defaults(profile), ipv6);
                let (buf, what) = apply_batch(&plan);
                let msgs = messages(&buf);
                assert_eq!(msgs.first().unwrap().0, NFNL_MSG_BATCH_BEGIN);
                assert_eq!(msgs.last().unwrap().0, NFNL_MSG_BATCH_END);
                assert_eq!(msgs.len(), what.len() + 2);
                for (i, (ty, flags, seq, payload)) in msgs.iter().enumerate() {
                    assert_eq!(*seq as usize, i);
                    if i > 0 && i + 1 < msgs.len() {
                        assert_eq!(ty >> 8, NFNL_SUBSYS_NFTABLES);
                        assert!(flags & NLM_F_ACK != 0);
                        check_attrs(payload);
                    }
                }
                // table, flush, 6 chains, then one message per rule.
                let rules = msgs
                    .iter()
                    .filter(|m| m.0 == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE)
                    .count();
                let expect =
                    crate::capture::nft::merged_rules(&plan).len() + if ipv6 { 0 } else { 2 };
                assert_eq!(rules, expect);
                assert_eq!(what.len(), 2 + 6 + expect);
            }
        }
        let (buf, what) = remove_batch();
        assert_eq!(messages(&buf).len(), 4);
        assert_eq!(
            what,
            ["add table inet multimesh", "delete table inet multimesh"]
        );
    }

    #[test]
    fn jump_targets_are_read_back_from_rule_attributes() {
        let rule = |target: Option<&str>| {
            let mut b = Buf(Vec::new());
            b.strz(NFTA_RULE_TABLE, "nat");
            b.strz(NFTA_RULE_CHAIN, "OUTPUT");
            b.nest(NFTA_RULE_EXPRESSIONS, |b| {
                l4proto_tcp(b);
                match target {
                    Some(t) => verdict(b, NFT_JUMP, Some(t)),
                    None => verdict(b, NFT_RETURN, None),
                }
            });
            b.0
        };
        let r = rule(Some("MULTIMESH_OUTPUT"));
        assert_eq!(rule_jump(&r).as_deref(), Some("MULTIMESH_OUTPUT"));
        assert_eq!(attr_str(&r, NFTA_RULE_CHAIN).as_deref(), Some("OUTPUT"));
        assert_eq!(rule_jump(&rule(None)), None);
        // Truncated input yields nothing, not a panic.
        for n in 0..r.len() {
            let _ = rule_jump(&r[..n]);
        }
    }

    #[test]
    fn interface_names_are_padded_like_nft() {
        let mut b = Buf(Vec::new());
        ifname(&mut b, NFT_META_IIFNAME, "net1");
        let bytes = &b.0;
        // The cmp data is IFNAMSIZ bytes: the name, then zeros.
        let pos = bytes.windows(4).position(|w| w == b"net1").unwrap();
        assert!(bytes[pos + 4..pos + 16].iter().all(|&x| x == 0));
    }
}
